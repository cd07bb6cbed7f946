//! The recipient directory: users, aliases and local domains combined to
//! answer "who gets mail for local@domain", "may this login use that
//! password", "may this user send as that address" and "how large may
//! this mailbox grow". It refuses to deliver, to speak SMTP (callers map
//! `Unknown` to 550 5.1.1) or to reload itself: the server builds a new
//! `Directory` with [`Directory::load`] and swaps its `Arc` on SIGHUP.
//!
//! Resolution of `local@domain`, domain in `[local] domains`:
//! 1. The local part is compared case-insensitively.
//! 2. The first known name (alias first, then user) among `local@domain`
//!    (a name for this domain only), `local` (the same for every local
//!    domain), and, when the local part has a `+` and the full name is
//!    unknown, the same two with the `+tag` removed (subaddressing:
//!    `alice+lists@` is alice's unless `alice+lists` itself exists).
//! 3. Failing that, the `catch_all` name, if configured.
//! 4. Otherwise `Unknown`.
//!
//! An alias expands recursively (see `aliases`); a leaf that names no user
//! is dropped. `postmaster` (RFC 5321 4.5.1) resolves like any name (an
//! alias or a user), then, failing that, to `[local] postmaster` (a user
//! or alias name, or an address), then the catch-all. The bare
//! `<Postmaster>` (no domain, which RFC 5321 4.5.1 requires us to accept)
//! resolves as `postmaster@` the first local domain. When none of these
//! exists it is `Unknown` like any other name, so it is refused at RCPT
//! (550 5.1.1) rather than accepted and bounced later, and
//! [`Directory::warnings`] says so at load time; the configuration is not
//! refused, because a relay-only host without mailboxes is valid.

use super::aliases::{AddressKind, Aliases, Leaf};
use super::error::AccountError;
use super::name::UserName;
use super::quota::ByteSize;
use super::users::{User, UserDb};
use crate::config::Local;

/// Where mail for one local recipient goes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Target {
    /// The mailbox of this user.
    Mailbox(UserName),
    /// Forward to this address outside the local domains.
    Forward(String),
}

/// The answer for one local recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolution {
    /// No such recipient (SMTP: 550 5.1.1 at RCPT time). Also the answer
    /// for a domain that is not local: route first, resolve second.
    Unknown,
    /// At least one target, without duplicates, in alias order.
    Targets(Vec<Target>),
}

/// Users, aliases and local domains, loaded once and read concurrently.
#[derive(Debug)]
pub struct Directory {
    users: UserDb,
    aliases: Aliases,
    domains: Vec<String>,
    catch_all: Option<UserName>,
    /// `[local] postmaster`: where postmaster mail goes when no alias or
    /// user of that name exists.
    postmaster: Option<String>,
    quota: ByteSize,
    warnings: Vec<String>,
}

impl Directory {
    /// Reads `users_file` and `aliases_file` (each optional: absent means
    /// nobody / no aliases) and combines them with the configuration.
    pub fn load(local: &Local) -> Result<Directory, AccountError> {
        let users = match &local.users_file {
            Some(path) => UserDb::load(path)?,
            None => UserDb::default(),
        };
        let aliases = match &local.aliases_file {
            Some(path) => Aliases::load(path)?,
            None => Aliases::default(),
        };
        Ok(Directory::new(
            users,
            aliases,
            local.domains.clone(),
            local.catch_all.clone(),
            local.quota,
        )
        .with_postmaster(local.postmaster.clone()))
    }

    /// Sets `[local] postmaster` (a user or alias name, or an address).
    pub fn with_postmaster(mut self, postmaster: Option<String>) -> Directory {
        self.postmaster = postmaster;
        self.warnings = self.check();
        self
    }

    /// Combines parsed parts. Domains are compared case-insensitively and
    /// without a trailing dot. `quota` of 0 is unlimited.
    pub fn new(
        users: UserDb,
        aliases: Aliases,
        domains: Vec<String>,
        catch_all: Option<UserName>,
        quota: ByteSize,
    ) -> Directory {
        let domains = domains
            .iter()
            .map(|d| d.trim_end_matches('.').to_ascii_lowercase())
            .collect();
        let mut directory = Directory {
            users,
            aliases,
            domains,
            catch_all,
            postmaster: None,
            quota,
            warnings: Vec::new(),
        };
        directory.warnings = directory.check();
        directory
    }

    /// Everything worth a line in the startup log: bad lines of either
    /// file, aliases that cannot expand or name nobody, a catch-all that
    /// names nobody, and a `postmaster` that does not resolve.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    fn check(&self) -> Vec<String> {
        let mut warnings: Vec<String> = self.users.warnings().to_vec();
        warnings.extend_from_slice(self.aliases.warnings());
        let mut names: Vec<&UserName> = self.aliases.names().collect();
        names.sort();
        for name in names {
            match self.targets_of(name) {
                Ok((targets, dropped)) => {
                    if !dropped.is_empty() {
                        warnings.push(format!(
                            "alias {name}: no such user: {}",
                            dropped.join(", ")
                        ));
                    }
                    if targets.is_empty() {
                        warnings.push(format!("alias {name} delivers nowhere"));
                    }
                }
                Err(e) => warnings.push(e.to_string()),
            }
        }
        if let Some(catch_all) = &self.catch_all {
            if !matches!(self.targets_of(catch_all), Ok((t, _)) if !t.is_empty()) {
                warnings.push(format!("catch_all {catch_all} names no user or alias"));
            }
        }
        if let Some(domain) = self.domains.first() {
            if self.resolve("postmaster", domain).ok() == Some(Resolution::Unknown) {
                warnings.push(format!(
                    "postmaster@{domain} does not resolve (RFC 5321 4.5.1 requires it), \
                     so mail to it is refused (550 5.1.1): add an alias `postmaster: USER`, \
                     a user postmaster or `[local] postmaster`"
                ));
            }
        }
        warnings
    }

    pub fn users(&self) -> &UserDb {
        &self.users
    }

    pub fn aliases(&self) -> &Aliases {
        &self.aliases
    }

    /// Whether mail for `domain` ends here.
    pub fn is_local_domain(&self, domain: &str) -> bool {
        let domain = domain.trim_end_matches('.');
        self.domains.iter().any(|d| d.eq_ignore_ascii_case(domain))
    }

    /// Who gets mail for `local_part@domain` (see the module doc for the
    /// order). `Err` only when an alias cannot be expanded (a transient
    /// configuration problem).
    pub fn resolve(&self, local_part: &str, domain: &str) -> Result<Resolution, AccountError> {
        self.resolve_with(local_part, domain, true)
    }

    fn resolve_with(
        &self,
        local_part: &str,
        domain: &str,
        catch_all: bool,
    ) -> Result<Resolution, AccountError> {
        let postmaster = local_part.eq_ignore_ascii_case("postmaster");
        // RFC 5321 4.5.1: the bare `<Postmaster>` is ours, in every domain.
        let domain = match self.domains.first() {
            Some(first) if postmaster && domain.is_empty() => first.as_str(),
            _ => domain,
        };
        if !self.is_local_domain(domain) {
            return Ok(Resolution::Unknown);
        }
        let name = match self.known_name(local_part, domain) {
            Some(name) => name,
            None if postmaster && self.postmaster.is_some() => {
                return self.postmaster_targets();
            }
            None => match (&self.catch_all, catch_all) {
                (Some(name), true) => name.clone(),
                _ => return Ok(Resolution::Unknown),
            },
        };
        let (targets, _) = self.targets_of(&name)?;
        Ok(if targets.is_empty() {
            Resolution::Unknown
        } else {
            Resolution::Targets(targets)
        })
    }

    /// Where `[local] postmaster` leads: a local name or local address
    /// through the directory (never back to the postmaster setting), any
    /// other address forwarded.
    fn postmaster_targets(&self) -> Result<Resolution, AccountError> {
        let Some(postmaster) = &self.postmaster else {
            return Ok(Resolution::Unknown);
        };
        let name = match postmaster.rsplit_once('@') {
            Some((_, domain)) if !self.is_local_domain(domain) => {
                return Ok(Resolution::Targets(vec![Target::Forward(
                    postmaster.clone(),
                )]));
            }
            Some((local, domain)) => self.known_name(local, domain),
            None => UserName::parse(postmaster).ok(),
        };
        let Some(name) = name else {
            return Ok(Resolution::Unknown);
        };
        let (targets, _) = self.targets_of(&name)?;
        Ok(if targets.is_empty() {
            Resolution::Unknown
        } else {
            Resolution::Targets(targets)
        })
    }

    /// Step 2 of the resolution: the first alias or user name that
    /// `local_part@domain` can mean, without the catch-all.
    fn known_name(&self, local_part: &str, domain: &str) -> Option<UserName> {
        // As UserName::parse folds it (Unicode lowercase: RFC 6531 local
        // parts).
        let local = local_part.to_lowercase();
        let domain = domain.trim_end_matches('.').to_ascii_lowercase();
        let base = local
            .split_once('+')
            .map(|(base, _)| base)
            .filter(|b| !b.is_empty());
        let found = [Some(local.as_str()), base]
            .into_iter()
            .flatten()
            .flat_map(|l| [format!("{l}@{domain}"), l.to_owned()])
            .filter_map(|text| UserName::parse(&text).ok())
            .find(|name| self.aliases.contains(name) || self.users.contains(name));
        found
    }

    /// The user a leaf name delivers to: the user of that name, or the
    /// user without the `+tag`.
    fn user_of(&self, name: &UserName) -> Option<UserName> {
        if self.users.contains(name) {
            return Some(name.clone());
        }
        let (base, _) = name.local_part().split_once('+')?;
        let base = match name.domain() {
            Some(domain) => format!("{base}@{domain}"),
            None => base.to_owned(),
        };
        UserName::parse(&base)
            .ok()
            .filter(|b| self.users.contains(b))
    }

    /// The targets of a known name, and the leaves dropped for naming no
    /// user.
    fn targets_of(&self, name: &UserName) -> Result<(Vec<Target>, Vec<String>), AccountError> {
        let classify = |address: &str| match address.rsplit_once('@') {
            Some((local, domain)) if self.is_local_domain(domain) => {
                match self.known_name(local, domain) {
                    Some(name) => AddressKind::Local(name),
                    None => AddressKind::LocalUnknown,
                }
            }
            _ => AddressKind::Remote,
        };
        let leaves = match self.aliases.expand(name, &classify)? {
            Some(leaves) => leaves,
            None => vec![Leaf::Name(name.clone())],
        };
        let mut targets = Vec::new();
        let mut dropped = Vec::new();
        for leaf in leaves {
            let target = match leaf {
                Leaf::Name(name) => match self.user_of(&name) {
                    Some(user) => Target::Mailbox(user),
                    None => {
                        dropped.push(name.to_string());
                        continue;
                    }
                },
                Leaf::Address(address) => Target::Forward(address),
                Leaf::Dropped(address) => {
                    dropped.push(address);
                    continue;
                }
            };
            if !targets.contains(&target) {
                targets.push(target);
            }
        }
        Ok((targets, dropped))
    }

    /// Checks a login (`alice`, or `alice@example.test` for any local
    /// domain, or a `name@domain` user's full name) and password. The work
    /// is the same for unknown names (see [`UserDb::verify`]).
    pub fn authenticate(
        &self,
        login: &str,
        password: &[u8],
    ) -> Result<Option<&User>, AccountError> {
        let name = UserName::parse(login).ok().and_then(|name| {
            if self.users.contains(&name) {
                return Some(name);
            }
            name.domain().filter(|d| self.is_local_domain(d))?;
            UserName::parse(name.local_part())
                .ok()
                .filter(|bare| self.users.contains(bare))
        });
        self.users.verify_name(name.as_ref(), password)
    }

    /// Whether an authenticated `user` may use `address` as its envelope
    /// sender: its own name as an address, `user@` any local domain (with
    /// or without `+tag`), or an alias in a local domain that expands to
    /// exactly this user and nobody else. The catch-all does not count:
    /// it would let its user send as anyone in the local domains.
    pub fn owns_address(&self, user: &UserName, address: &str) -> bool {
        if address.eq_ignore_ascii_case(user.as_str()) {
            return true;
        }
        let Some((local, domain)) = address.rsplit_once('@') else {
            return false;
        };
        match self.resolve_with(local, domain, false) {
            Ok(Resolution::Targets(targets)) => {
                targets.len() == 1 && targets[0] == Target::Mailbox(user.clone())
            }
            _ => false,
        }
    }

    /// The mailbox size limit of `user` in bytes, `None` for unlimited:
    /// the user's `userdb_quota_rule=*:storage=SIZE` extra field if any
    /// (0 there means unlimited for this user), else `[local] quota`.
    pub fn quota_for(&self, user: &UserName) -> Option<u64> {
        self.users
            .get(user)
            .and_then(User::quota)
            .unwrap_or(self.quota)
            .limit()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const USERS: &str = "\
alice:{PLAIN}a::::::userdb_quota_rule=*:storage=10M
bob:{PLAIN}b
carol:{PLAIN}c::::::userdb_quota_rule=*:storage=0
dave+special:{PLAIN}d
erin@two.test:{PLAIN}e
";
    const ALIASES: &str = "\
postmaster: root
root: alice
sales: alice, bob
info@two.test: carol
fwd: someone@remote.example, bob@example.test
ghosts: nobody, ghost@example.test
Tricky: alice+news
loop1: loop2
loop2: loop1
";

    fn n(s: &str) -> UserName {
        UserName::parse(s).unwrap()
    }

    fn directory(catch_all: Option<&str>) -> Directory {
        Directory::new(
            UserDb::parse(USERS),
            Aliases::parse(ALIASES),
            vec!["Example.TEST.".into(), "two.test".into()],
            catch_all.map(n),
            ByteSize(1 << 30),
        )
    }

    fn mailboxes(names: &[&str]) -> Resolution {
        Resolution::Targets(names.iter().map(|s| Target::Mailbox(n(s))).collect())
    }

    fn resolve(d: &Directory, local: &str, domain: &str) -> Resolution {
        d.resolve(local, domain).unwrap()
    }

    #[test]
    fn users_resolve_in_every_local_domain_case_insensitively() {
        let d = directory(None);
        assert_eq!(resolve(&d, "alice", "example.test"), mailboxes(&["alice"]));
        assert_eq!(resolve(&d, "ALICE", "Example.Test."), mailboxes(&["alice"]));
        assert_eq!(resolve(&d, "alice", "two.test"), mailboxes(&["alice"]));
        assert_eq!(resolve(&d, "alice", "remote.example"), Resolution::Unknown);
        assert_eq!(resolve(&d, "nobody", "example.test"), Resolution::Unknown);
        assert_eq!(resolve(&d, "a/b", "example.test"), Resolution::Unknown);
        // A domain-qualified user exists only in its domain.
        assert_eq!(
            resolve(&d, "erin", "two.test"),
            mailboxes(&["erin@two.test"])
        );
        assert_eq!(resolve(&d, "erin", "example.test"), Resolution::Unknown);
    }

    #[test]
    fn aliases_expand_to_mailboxes_and_forwards() {
        let d = directory(None);
        assert_eq!(
            resolve(&d, "Postmaster", "example.test"),
            mailboxes(&["alice"])
        );
        assert_eq!(
            resolve(&d, "sales", "two.test"),
            mailboxes(&["alice", "bob"])
        );
        assert_eq!(resolve(&d, "info", "two.test"), mailboxes(&["carol"]));
        assert_eq!(resolve(&d, "info", "example.test"), Resolution::Unknown);
        assert_eq!(
            resolve(&d, "fwd", "example.test"),
            Resolution::Targets(vec![
                Target::Forward("someone@remote.example".into()),
                Target::Mailbox(n("bob")),
            ])
        );
        assert_eq!(resolve(&d, "ghosts", "example.test"), Resolution::Unknown);
        assert_eq!(resolve(&d, "loop1", "example.test"), Resolution::Unknown);
        assert_eq!(resolve(&d, "tricky", "example.test"), mailboxes(&["alice"]));
    }

    #[test]
    fn subaddresses_fall_back_to_the_user() {
        let d = directory(None);
        assert_eq!(
            resolve(&d, "alice+lists", "example.test"),
            mailboxes(&["alice"])
        );
        assert_eq!(resolve(&d, "Bob+X+Y", "example.test"), mailboxes(&["bob"]));
        assert_eq!(
            resolve(&d, "sales+eu", "example.test"),
            mailboxes(&["alice", "bob"])
        );
        // A name with a + that exists is itself.
        assert_eq!(
            resolve(&d, "dave+special", "example.test"),
            mailboxes(&["dave+special"])
        );
        assert_eq!(resolve(&d, "dave", "example.test"), Resolution::Unknown);
        assert_eq!(resolve(&d, "+tag", "example.test"), Resolution::Unknown);
        assert_eq!(
            resolve(&d, "nobody+tag", "example.test"),
            Resolution::Unknown
        );
    }

    #[test]
    fn catch_all_takes_the_rest() {
        let d = directory(Some("sales"));
        assert_eq!(
            resolve(&d, "whoever", "example.test"),
            mailboxes(&["alice", "bob"])
        );
        assert_eq!(resolve(&d, "bob", "example.test"), mailboxes(&["bob"]));
        assert_eq!(
            resolve(&d, "whoever", "remote.example"),
            Resolution::Unknown
        );
        assert!(d.warnings().iter().all(|w| !w.contains("catch_all")));
        let d = directory(Some("nobody"));
        assert_eq!(resolve(&d, "whoever", "example.test"), Resolution::Unknown);
        assert!(d.warnings().iter().any(|w| w.contains("catch_all nobody")));
    }

    #[test]
    fn warnings_name_the_problems() {
        let d = directory(None);
        let w = d.warnings().join("\n");
        assert!(
            w.contains("alias ghosts: no such user: nobody, ghost@example.test"),
            "{w}"
        );
        assert!(w.contains("alias ghosts delivers nowhere"), "{w}");
        assert!(w.contains("alias loop1 delivers nowhere"), "{w}");
        assert!(!w.contains("postmaster"), "{w}");
        let bare = Directory::new(
            UserDb::parse(USERS),
            Aliases::default(),
            vec!["example.test".into()],
            None,
            ByteSize(0),
        );
        assert!(bare
            .warnings()
            .iter()
            .any(|w| w.contains("postmaster@example.test")));
    }

    #[test]
    fn postmaster_resolves_to_an_alias_a_setting_or_nobody() {
        // An alias `postmaster` wins, and the bare <Postmaster> is the same.
        let d = directory(None);
        assert_eq!(resolve(&d, "PostMaster", ""), mailboxes(&["alice"]));
        assert_eq!(resolve(&d, "postmaster", "two.test"), mailboxes(&["alice"]));
        let bare = |postmaster: Option<&str>| {
            Directory::new(
                UserDb::parse(USERS),
                Aliases::default(),
                vec!["example.test".into(), "two.test".into()],
                None,
                ByteSize(0),
            )
            .with_postmaster(postmaster.map(str::to_owned))
        };
        // Nothing configured: unknown (refused at RCPT), with a warning.
        let none = bare(None);
        assert_eq!(resolve(&none, "Postmaster", ""), Resolution::Unknown);
        assert_eq!(
            resolve(&none, "postmaster", "example.test"),
            Resolution::Unknown
        );
        assert!(none.warnings().iter().any(|w| w.contains("postmaster")));
        // `[local] postmaster` as a user name, a local address, a remote one.
        let by_name = bare(Some("bob"));
        assert_eq!(resolve(&by_name, "Postmaster", ""), mailboxes(&["bob"]));
        assert_eq!(
            resolve(&by_name, "postmaster", "two.test"),
            mailboxes(&["bob"])
        );
        assert!(!by_name.warnings().iter().any(|w| w.contains("postmaster")));
        assert_eq!(
            resolve(&by_name, "nobody", "example.test"),
            Resolution::Unknown
        );
        let by_address = bare(Some("Carol@Example.test"));
        assert_eq!(
            resolve(&by_address, "postmaster", ""),
            mailboxes(&["carol"])
        );
        let remote = bare(Some("noc@remote.example"));
        assert_eq!(
            resolve(&remote, "postmaster", "example.test"),
            Resolution::Targets(vec![Target::Forward("noc@remote.example".into())])
        );
        // A setting that names nobody resolves to nobody, never loops.
        let ghost = bare(Some("ghost"));
        assert_eq!(resolve(&ghost, "postmaster", ""), Resolution::Unknown);
        let own = bare(Some("postmaster@example.test"));
        assert_eq!(resolve(&own, "postmaster", ""), Resolution::Unknown);
        // Domain-less names other than postmaster are never local.
        assert_eq!(resolve(&by_name, "bob", ""), Resolution::Unknown);
    }

    #[test]
    fn too_deep_aliases_fail_transiently() {
        let text: String = (0..12).map(|i| format!("a{i}: a{}\n", i + 1)).collect();
        let d = Directory::new(
            UserDb::parse("a12:{PLAIN}x\n"),
            Aliases::parse(&text),
            vec!["example.test".into()],
            None,
            ByteSize(0),
        );
        let e = d.resolve("a0", "example.test").unwrap_err();
        assert!(e.is_transient());
        assert!(d
            .warnings()
            .iter()
            .any(|w| w.contains("alias a0 cannot be expanded")));
        assert_eq!(
            d.resolve("a5", "example.test").unwrap(),
            mailboxes(&["a12"])
        );
    }

    #[test]
    fn authentication_accepts_local_domain_logins() {
        let d = directory(None);
        assert_eq!(
            d.authenticate("alice", b"a").unwrap().unwrap().name(),
            &n("alice")
        );
        assert!(d
            .authenticate("Alice@Example.Test", b"a")
            .unwrap()
            .is_some());
        assert!(d
            .authenticate("alice@remote.example", b"a")
            .unwrap()
            .is_none());
        assert!(d.authenticate("alice", b"b").unwrap().is_none());
        assert!(d.authenticate("erin@two.test", b"e").unwrap().is_some());
        assert!(d.authenticate("erin", b"e").unwrap().is_none());
        assert!(d.authenticate("sales", b"a").unwrap().is_none());
    }

    #[test]
    fn users_own_their_addresses_and_exclusive_aliases() {
        let d = directory(Some("alice"));
        let alice = n("alice");
        assert!(d.owns_address(&alice, "alice@example.test"));
        assert!(d.owns_address(&alice, "Alice@TWO.test"));
        assert!(d.owns_address(&alice, "alice+lists@example.test"));
        assert!(d.owns_address(&alice, "postmaster@example.test"));
        assert!(d.owns_address(&alice, "alice"));
        assert!(!d.owns_address(&alice, "sales@example.test"));
        assert!(!d.owns_address(&alice, "bob@example.test"));
        assert!(!d.owns_address(&alice, "alice@remote.example"));
        // The catch-all does not make every address alice's.
        assert!(!d.owns_address(&alice, "whoever@example.test"));
        assert!(!d.owns_address(&n("erin@two.test"), "erin@example.test"));
        assert!(d.owns_address(&n("erin@two.test"), "erin@two.test"));
    }

    #[test]
    fn quotas_come_from_the_user_or_the_default() {
        let d = directory(None);
        assert_eq!(d.quota_for(&n("alice")), Some(10 << 20));
        assert_eq!(d.quota_for(&n("bob")), Some(1 << 30));
        assert_eq!(d.quota_for(&n("carol")), None);
        let unlimited = Directory::new(
            UserDb::parse(USERS),
            Aliases::default(),
            vec![],
            None,
            ByteSize(0),
        );
        assert_eq!(unlimited.quota_for(&n("bob")), None);
    }

    #[test]
    fn load_reads_the_configured_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("users"), USERS).unwrap();
        std::fs::write(dir.path().join("aliases"), ALIASES).unwrap();
        let config = crate::config::Config::parse(&format!(
            "spool_dir = \"/tmp/unused\"\n[[listener]]\naddress = \"127.0.0.1:0\"\nprotocol = \"smtp\"\n\
             [local]\ndomains = [\"example.test\"]\n\
             users_file = {:?}\naliases_file = {:?}\ncatch_all = \"Bob\"\nquota = \"2G\"\n",
            dir.path().join("users"),
            dir.path().join("aliases"),
        ))
        .unwrap();
        let d = Directory::load(&config.local).unwrap();
        assert_eq!(
            d.resolve("sales", "example.test").unwrap(),
            mailboxes(&["alice", "bob"])
        );
        assert_eq!(
            d.resolve("zzz", "example.test").unwrap(),
            mailboxes(&["bob"])
        );
        assert_eq!(d.quota_for(&n("bob")), Some(2 << 30));
        let mut broken = config.local.clone();
        broken.aliases_file = Some(dir.path().join("missing"));
        assert!(matches!(
            Directory::load(&broken),
            Err(AccountError::Io { .. })
        ));
    }
}
