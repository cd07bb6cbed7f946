//! The aliases file (`/etc/aliases` syntax) parsed into `Aliases`, and
//! bounded recursive expansion of one alias. It refuses to know which
//! names are users or which domains are local: the caller (the directory)
//! classifies addresses, and refuses pipes, files and `:include:`.
//!
//! Syntax: `name: target, target, ...`; `#` starts a comment line; a line
//! starting with a space or tab continues the previous entry. A target is
//! a local name (`alice`) or an address (`alice@example.test`,
//! `someone@elsewhere.example`); an address in a local domain is expanded
//! like a local name.

use std::collections::HashMap;
use std::path::Path;

use super::error::AccountError;
use super::name::UserName;
use super::users::read_bounded;

/// Largest aliases file read.
pub const MAX_FILE_SIZE: u64 = 64 << 20;
/// Deepest chain of aliases followed (`a: b`, `b: c`, ... ); deeper is a
/// configuration mistake and fails the expansion.
pub const MAX_DEPTH: usize = 10;
/// Most distinct results of one expansion (Postfix's
/// `virtual_alias_expansion_limit` is 1000 too).
pub const MAX_RESULTS: usize = 1000;
/// Longest address target (RFC 5321 4.5.3.1.3 path minus the brackets).
pub const MAX_ADDRESS: usize = 254;

/// One target of an alias as written in the file.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum AliasTarget {
    /// A local name: another alias or a user.
    Name(UserName),
    /// A full address `local@domain`, domain lower-cased.
    Address(String),
}

/// How the caller sees an address target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AddressKind {
    /// In a local domain, naming this local name (an alias or a user).
    Local(UserName),
    /// In a local domain, but no such name: the target is dropped.
    LocalUnknown,
    /// Elsewhere: the mail is forwarded.
    Remote,
}

/// A result of expanding an alias.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Leaf {
    /// A local name that is not an alias (or refers back to an alias on
    /// the current path, the `root: root, other` idiom): the caller
    /// delivers to the user of that name, if there is one.
    Name(UserName),
    /// An address outside the local domains.
    Address(String),
    /// A local address that names nothing, kept for the warning.
    Dropped(String),
}

/// Every alias of the file by lower-cased name.
#[derive(Debug, Default)]
pub struct Aliases {
    map: HashMap<UserName, Vec<AliasTarget>>,
    warnings: Vec<String>,
}

impl Aliases {
    /// Parses an aliases file's text. Never fails as a whole: a bad entry
    /// or target is skipped and reported in [`Aliases::warnings`]. A name
    /// that appears twice keeps its first entry, as in Postfix.
    pub fn parse(text: &str) -> Aliases {
        let mut aliases = Aliases::default();
        let mut entry: Option<(usize, String)> = None;
        for (number, line) in text.lines().enumerate() {
            let number = number + 1;
            let line = line.strip_suffix('\r').unwrap_or(line);
            if line.trim_start().starts_with('#') {
                continue;
            }
            if line.starts_with([' ', '\t']) && !line.trim().is_empty() {
                match &mut entry {
                    Some((_, text)) => {
                        text.push(' ');
                        text.push_str(line.trim());
                    }
                    None => aliases.warnings.push(format!(
                        "aliases line {number}: continuation line without an entry"
                    )),
                }
                continue;
            }
            if let Some((start, text)) = entry.take() {
                aliases.add_entry(start, &text);
            }
            if !line.trim().is_empty() {
                entry = Some((number, line.to_owned()));
            }
        }
        if let Some((start, text)) = entry {
            aliases.add_entry(start, &text);
        }
        aliases
    }

    /// Reads and parses an aliases file.
    pub fn load(path: &Path) -> Result<Aliases, AccountError> {
        Ok(Aliases::parse(&read_bounded(path, MAX_FILE_SIZE)?))
    }

    fn add_entry(&mut self, number: usize, text: &str) {
        let Some((name, targets)) = text.split_once(':') else {
            self.warnings
                .push(format!("aliases line {number}: no ':' after the name"));
            return;
        };
        let name = match UserName::parse(name.trim()) {
            Ok(name) => name,
            Err(e) => {
                self.warnings.push(format!(
                    "aliases line {number}: bad alias name {name:?}: {e}"
                ));
                return;
            }
        };
        let mut parsed = Vec::new();
        for target in targets.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            match parse_target(target) {
                Ok(target) if parsed.contains(&target) => {}
                Ok(target) => parsed.push(target),
                Err(reason) => self.warnings.push(format!(
                    "aliases line {number}: {name}: target {target:?} ignored: {reason}"
                )),
            }
        }
        if parsed.is_empty() {
            self.warnings.push(format!(
                "aliases line {number}: {name} has no usable target"
            ));
            return;
        }
        if self.map.contains_key(&name) {
            self.warnings.push(format!(
                "aliases line {number}: {name} appears again; the first entry counts"
            ));
            return;
        }
        self.map.insert(name, parsed);
    }

    pub fn get(&self, name: &UserName) -> Option<&[AliasTarget]> {
        self.map.get(name).map(Vec::as_slice)
    }

    pub fn contains(&self, name: &UserName) -> bool {
        self.map.contains_key(name)
    }

    /// Every alias name, in no particular order.
    pub fn names(&self) -> impl Iterator<Item = &UserName> {
        self.map.keys()
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Problems found while parsing, one sentence each.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// Expands `name` recursively: `None` if it is not an alias, else its
    /// leaves in first-seen order without duplicates. `classify` tells
    /// local addresses from remote ones. A name met again on its own path
    /// is a leaf (so `alice: alice, alice@elsewhere.example` keeps a copy
    /// for alice, and a pure loop `a: b`, `b: a` ends at names that are no
    /// user). Deeper than [`MAX_DEPTH`] or more than [`MAX_RESULTS`]
    /// leaves fails with [`AccountError::AliasExpansion`].
    pub fn expand(
        &self,
        name: &UserName,
        classify: &dyn Fn(&str) -> AddressKind,
    ) -> Result<Option<Vec<Leaf>>, AccountError> {
        if !self.map.contains_key(name) {
            return Ok(None);
        }
        let mut walk = Walk {
            aliases: self,
            classify,
            root: name,
            path: Vec::new(),
            out: Vec::new(),
        };
        walk.name(name)?;
        Ok(Some(walk.out))
    }
}

/// The state of one expansion.
struct Walk<'a> {
    aliases: &'a Aliases,
    classify: &'a dyn Fn(&str) -> AddressKind,
    root: &'a UserName,
    path: Vec<UserName>,
    out: Vec<Leaf>,
}

impl Walk<'_> {
    fn name(&mut self, name: &UserName) -> Result<(), AccountError> {
        let Some(targets) = self.aliases.map.get(name) else {
            return self.leaf(Leaf::Name(name.clone()));
        };
        if self.path.contains(name) {
            return self.leaf(Leaf::Name(name.clone()));
        }
        if self.path.len() >= MAX_DEPTH {
            return Err(self.fail("it nests more than 10 aliases deep"));
        }
        self.path.push(name.clone());
        for target in targets {
            match target {
                AliasTarget::Name(next) => self.name(next)?,
                AliasTarget::Address(address) => match (self.classify)(address) {
                    AddressKind::Local(next) => self.name(&next)?,
                    AddressKind::LocalUnknown => self.leaf(Leaf::Dropped(address.clone()))?,
                    AddressKind::Remote => self.leaf(Leaf::Address(address.clone()))?,
                },
            }
        }
        self.path.pop();
        Ok(())
    }

    fn leaf(&mut self, leaf: Leaf) -> Result<(), AccountError> {
        if self.out.contains(&leaf) {
            return Ok(());
        }
        if self.out.len() >= MAX_RESULTS {
            return Err(self.fail("it has more than 1000 targets"));
        }
        self.out.push(leaf);
        Ok(())
    }

    fn fail(&self, reason: &'static str) -> AccountError {
        AccountError::AliasExpansion {
            alias: self.root.clone(),
            reason,
        }
    }
}

/// Parses one target: a local name or an address.
fn parse_target(text: &str) -> Result<AliasTarget, &'static str> {
    if text.starts_with('|') || text.starts_with('/') || text.starts_with(":include:") {
        return Err("pipes, files and :include: are not supported");
    }
    let text = text
        .strip_prefix('<')
        .and_then(|t| t.strip_suffix('>'))
        .unwrap_or(text);
    let Some((local, domain)) = text.rsplit_once('@') else {
        return UserName::parse(text)
            .map(AliasTarget::Name)
            .map_err(|_| "not a valid local name");
    };
    if text.len() > MAX_ADDRESS {
        return Err("address too long");
    }
    let local_ok = !local.is_empty()
        && local.len() <= 64
        && local
            .bytes()
            .all(|b| b.is_ascii_graphic() && !b"<>()[]\\,;:@\"".contains(&b));
    let domain_ok = !domain.is_empty()
        && domain.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    if !(local_ok && domain_ok) {
        return Err("not a valid address");
    }
    Ok(AliasTarget::Address(format!(
        "{local}@{}",
        domain.to_ascii_lowercase()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> UserName {
        UserName::parse(s).unwrap()
    }

    /// Addresses in example.test are local; `ghost` names nothing.
    fn classify(address: &str) -> AddressKind {
        match address.rsplit_once('@') {
            Some(("ghost", "example.test")) => AddressKind::LocalUnknown,
            Some((local, "example.test")) => AddressKind::Local(n(local)),
            _ => AddressKind::Remote,
        }
    }

    fn expand(aliases: &Aliases, name: &str) -> Vec<Leaf> {
        aliases.expand(&n(name), &classify).unwrap().unwrap()
    }

    fn name(s: &str) -> Leaf {
        Leaf::Name(n(s))
    }

    #[test]
    fn file_syntax() {
        let aliases = Aliases::parse(
            "# system aliases\n\
             postmaster: root\n\
             Root: alice,\n  bob ,\n\tcarol@Example.TEST\n\
             \n\
             team: alice, <dave@Elsewhere.Example>, alice\n\
             pipe: |/usr/bin/vacation, alice\n\
             bad name: alice\n\
             empty:\n\
             nocolon\n\
             postmaster: bob\n",
        );
        assert_eq!(aliases.len(), 4, "{aliases:#?}");
        assert_eq!(
            aliases.get(&n("root")).unwrap(),
            &[
                AliasTarget::Name(n("alice")),
                AliasTarget::Name(n("bob")),
                AliasTarget::Address("carol@example.test".into()),
            ]
        );
        assert_eq!(
            aliases.get(&n("team")).unwrap(),
            &[
                AliasTarget::Name(n("alice")),
                AliasTarget::Address("dave@elsewhere.example".into()),
            ]
        );
        assert_eq!(
            aliases.get(&n("pipe")).unwrap(),
            &[AliasTarget::Name(n("alice"))]
        );
        let warnings = aliases.warnings().join("\n");
        for needle in [
            "line 8: pipe: target \"|/usr/bin/vacation\"",
            "line 9: bad alias name",
            "line 10: empty has no usable target",
            "line 11: no ':'",
            "line 12: postmaster appears again",
        ] {
            assert!(warnings.contains(needle), "{needle} not in {warnings}");
        }
    }

    #[test]
    fn expansion_is_recursive_and_deduplicated() {
        let aliases = Aliases::parse(
            "postmaster: root\n\
             root: alice, admins\n\
             admins: alice@example.test, bob, ghost@example.test, ops@remote.example\n\
             both: admins, root\n",
        );
        assert_eq!(
            expand(&aliases, "postmaster"),
            vec![
                name("alice"),
                name("bob"),
                Leaf::Dropped("ghost@example.test".into()),
                Leaf::Address("ops@remote.example".into()),
            ]
        );
        assert_eq!(expand(&aliases, "both").len(), 4);
        assert_eq!(aliases.expand(&n("alice"), &classify).unwrap(), None);
    }

    #[test]
    fn loops_end_at_the_name_met_again() {
        let aliases = Aliases::parse(
            "a: b\n\
             b: a, x@remote.example\n\
             alice: alice, alice@remote.example\n\
             me: me\n",
        );
        assert_eq!(
            expand(&aliases, "a"),
            vec![name("a"), Leaf::Address("x@remote.example".into())]
        );
        assert_eq!(
            expand(&aliases, "alice"),
            vec![name("alice"), Leaf::Address("alice@remote.example".into())]
        );
        assert_eq!(expand(&aliases, "me"), vec![name("me")]);
    }

    #[test]
    fn depth_is_bounded() {
        // a0 -> a1 -> ... -> a10 -> user: eleven aliases deep.
        let text: String = (0..=10).map(|i| format!("a{i}: a{}\n", i + 1)).collect();
        let aliases = Aliases::parse(&text);
        assert!(matches!(
            aliases.expand(&n("a0"), &classify),
            Err(AccountError::AliasExpansion { .. })
        ));
        // Ten deep is fine.
        assert_eq!(expand(&aliases, "a1"), vec![name("a11")]);
    }

    #[test]
    fn width_is_bounded() {
        let targets: Vec<String> = (0..MAX_RESULTS + 1).map(|i| format!("u{i}")).collect();
        let aliases = Aliases::parse(&format!("big: {}\n", targets.join(", ")));
        assert!(matches!(
            aliases.expand(&n("big"), &classify),
            Err(AccountError::AliasExpansion { .. })
        ));
    }
}
