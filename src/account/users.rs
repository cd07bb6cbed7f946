//! The users file, Dovecot passwd-file style, parsed into a `UserDb`:
//! lookup by name and password verification that takes as long whether or
//! not the user exists. It refuses to write the file (see `edit`) and
//! knows nothing of domains or aliases (see `directory`).
//!
//! A line is `name:{SCHEME}secret[:uid:gid:gecos:home:shell:extra_fields]`.
//! `#` lines and blank lines are ignored. `extra_fields` is the rest of the
//! line (it may contain `:`), space-separated `key=value` pairs such as
//! `userdb_quota_rule=*:storage=100M`.

use std::collections::HashMap;
use std::path::Path;

use super::error::AccountError;
use super::name::UserName;
use super::quota::{self, ByteSize};
use super::scheme::Secret;

/// Largest users file read (a million users fit comfortably).
pub const MAX_FILE_SIZE: u64 = 256 << 20;
/// Longest line of the users file.
pub const MAX_LINE: usize = 8192;

/// One non-comment line split into its fields, borrowed from the text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PasswdLine<'a> {
    /// The name as written (not yet parsed).
    pub name: &'a str,
    /// The password field: `{SCHEME}secret`.
    pub password: &'a str,
    /// Everything after the password field, without the leading `:`.
    pub rest: Option<&'a str>,
}

impl<'a> PasswdLine<'a> {
    /// Splits a line; `None` for comments, blank lines and lines without
    /// a `:` after the name.
    pub fn split(line: &'a str) -> Option<PasswdLine<'a>> {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            return None;
        }
        let (name, after) = line.split_once(':')?;
        let (password, rest) = match after.split_once(':') {
            Some((password, rest)) => (password, Some(rest)),
            None => (after, None),
        };
        Some(PasswdLine {
            name,
            password,
            rest,
        })
    }

    /// Whether the line holds an entry (is not blank or a comment).
    pub fn is_entry(line: &str) -> bool {
        let line = line.trim();
        !line.is_empty() && !line.starts_with('#')
    }
}

/// One user: name, stored secret and the optional passwd-file fields.
#[derive(Debug, Clone)]
pub struct User {
    name: UserName,
    secret: Secret,
    /// uid, gid, gecos, home, shell: kept as written, empty when absent.
    fields: [String; 5],
    extra: Vec<(String, String)>,
    quota: Option<ByteSize>,
}

impl User {
    fn from_line(line: &PasswdLine<'_>) -> Result<User, String> {
        let name = UserName::parse(line.name.trim())
            .map_err(|e| format!("bad user name {:?}: {e}", line.name))?;
        let mut fields: [String; 5] = Default::default();
        let mut extra = Vec::new();
        if let Some(rest) = line.rest {
            let mut parts = rest.splitn(6, ':');
            for field in fields.iter_mut() {
                *field = parts.next().unwrap_or_default().to_owned();
            }
            if let Some(extras) = parts.next() {
                extra = extras
                    .split_ascii_whitespace()
                    .map(|kv| match kv.split_once('=') {
                        Some((k, v)) => (k.to_owned(), v.to_owned()),
                        None => (kv.to_owned(), String::new()),
                    })
                    .collect();
            }
        }
        let quota = extra
            .iter()
            .filter(|(k, _)| k == "userdb_quota_rule" || k == "quota_rule")
            .find_map(|(_, v)| quota::storage_rule(v));
        Ok(User {
            name,
            secret: Secret::parse(line.password),
            fields,
            extra,
            quota,
        })
    }

    pub fn name(&self) -> &UserName {
        &self.name
    }

    /// The stored secret (its `Debug` does not show it).
    pub fn secret(&self) -> &Secret {
        &self.secret
    }

    pub fn uid(&self) -> Option<&str> {
        self.field(0)
    }

    pub fn gid(&self) -> Option<&str> {
        self.field(1)
    }

    pub fn gecos(&self) -> Option<&str> {
        self.field(2)
    }

    pub fn home(&self) -> Option<&str> {
        self.field(3)
    }

    pub fn shell(&self) -> Option<&str> {
        self.field(4)
    }

    fn field(&self, i: usize) -> Option<&str> {
        self.fields
            .get(i)
            .map(String::as_str)
            .filter(|s| !s.is_empty())
    }

    /// An extra field (`key=value` after the shell field) by key.
    pub fn extra(&self, key: &str) -> Option<&str> {
        self.extra
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The storage limit of a `userdb_quota_rule=*:storage=SIZE` (or
    /// `quota_rule=`) extra field; `Some(ByteSize(0))` means unlimited.
    pub fn quota(&self) -> Option<ByteSize> {
        self.quota
    }
}

/// Every user of the users file, by lower-cased name.
#[derive(Debug)]
pub struct UserDb {
    users: HashMap<UserName, User>,
    dummy: Secret,
    warnings: Vec<String>,
}

impl Default for UserDb {
    fn default() -> Self {
        UserDb {
            users: HashMap::new(),
            dummy: Secret::dummy(),
            warnings: Vec::new(),
        }
    }
}

impl UserDb {
    /// Parses a users file's text. Never fails as a whole: a bad line is
    /// skipped and reported in [`UserDb::warnings`], so one typo does not
    /// lock every user out. A name that appears twice keeps its first line.
    pub fn parse(text: &str) -> UserDb {
        let mut db = UserDb::default();
        for (number, line) in text.lines().enumerate() {
            let number = number + 1;
            if line.len() > MAX_LINE {
                db.warnings
                    .push(format!("users line {number}: longer than {MAX_LINE} bytes"));
                continue;
            }
            let Some(fields) = PasswdLine::split(line) else {
                if PasswdLine::is_entry(line) {
                    db.warnings
                        .push(format!("users line {number}: no ':' after the name"));
                }
                continue;
            };
            match User::from_line(&fields) {
                Ok(user) => {
                    if let Secret::Unusable { scheme, reason } = &user.secret {
                        db.warnings.push(format!(
                            "users line {number}: {} cannot log in: {{{scheme}}}: {reason}",
                            user.name
                        ));
                    }
                    if db.users.contains_key(&user.name) {
                        db.warnings.push(format!(
                            "users line {number}: {} appears again; the first line counts",
                            user.name
                        ));
                        continue;
                    }
                    db.users.insert(user.name.clone(), user);
                }
                Err(e) => db.warnings.push(format!("users line {number}: {e}")),
            }
        }
        db.dummy = db.pick_dummy();
        db
    }

    /// The secret unknown names are checked against: one of the users'
    /// own, of the scheme most of them use (the slower scheme on a tie),
    /// so a failed login for an unknown name costs what one for a real
    /// name costs. With only `{PLAIN}` users an argon2 dummy would make
    /// unknown names the slow ones (16-100 ms against under 1 ms). The
    /// argon2 dummy stays when no user has a usable secret.
    fn pick_dummy(&self) -> Secret {
        fn rank(secret: &Secret) -> Option<usize> {
            match secret {
                Secret::Argon2(_) => Some(0),
                Secret::ShaCrypt(_) => Some(1),
                Secret::Plain(_) => Some(2),
                Secret::Unusable { .. } => None,
            }
        }
        let mut counts = [0usize; 3];
        for user in self.users.values() {
            if let Some(r) = rank(&user.secret) {
                counts[r] += 1;
            }
        }
        let Some(best) = (0..3)
            .filter(|&r| counts[r] > 0)
            .max_by_key(|&r| (counts[r], std::cmp::Reverse(r)))
        else {
            return Secret::dummy();
        };
        // The first name of that scheme: the same dummy on every load.
        self.users
            .values()
            .filter(|u| rank(&u.secret) == Some(best))
            .min_by(|a, b| a.name.cmp(&b.name))
            .map_or_else(Secret::dummy, |u| u.secret.clone())
    }

    /// Reads and parses a users file; a file that does not exist yet has
    /// no users (`spate user add` creates it).
    pub fn load(path: &Path) -> Result<UserDb, AccountError> {
        match read_bounded(path, MAX_FILE_SIZE) {
            Ok(text) => Ok(UserDb::parse(&text)),
            Err(AccountError::Io { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                Ok(UserDb::default())
            }
            Err(e) => Err(e),
        }
    }

    pub fn get(&self, name: &UserName) -> Option<&User> {
        self.users.get(name)
    }

    pub fn contains(&self, name: &UserName) -> bool {
        self.users.contains_key(name)
    }

    pub fn len(&self) -> usize {
        self.users.len()
    }

    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// Every user, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = &User> {
        self.users.values()
    }

    /// Problems found while parsing (bad lines, unusable secrets,
    /// duplicates), one sentence each, for the startup log.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// Checks a login name and password. `Ok(None)` for an unknown or
    /// malformed name, a wrong password, or a user whose secret cannot be
    /// used; the work done is the same in each case (a dummy of the users'
    /// most common scheme is verified when there is no real secret, see
    /// `pick_dummy`), so a client cannot learn
    /// which names exist from the answer's timing. `Err` only when the hash
    /// function failed.
    pub fn verify(&self, name: &str, password: &[u8]) -> Result<Option<&User>, AccountError> {
        let name = UserName::parse(name).ok();
        self.verify_name(name.as_ref(), password)
    }

    /// [`UserDb::verify`] for a name already parsed (`None`: no such name).
    pub fn verify_name(
        &self,
        name: Option<&UserName>,
        password: &[u8],
    ) -> Result<Option<&User>, AccountError> {
        let Some(user) = name.and_then(|n| self.users.get(n)) else {
            // The verdict is thrown away: the dummy may be a real user's.
            self.dummy.verify(password)?;
            return Ok(None);
        };
        if let Secret::Unusable { scheme, reason } = &user.secret {
            tracing::warn!(user = %user.name, scheme, reason, "login refused: password scheme unusable");
            self.dummy.verify(password)?;
            return Ok(None);
        }
        Ok(user.secret.verify(password)?.then_some(user))
    }
}

/// Reads a whole text file of at most `max` bytes.
pub(crate) fn read_bounded(path: &Path, max: u64) -> Result<String, AccountError> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|e| AccountError::io("opening", path, e))?;
    let mut text = String::new();
    file.take(max + 1)
        .read_to_string(&mut text)
        .map_err(|e| AccountError::io("reading", path, e))?;
    if text.len() as u64 > max {
        return Err(AccountError::TooLarge {
            path: path.to_owned(),
            max,
        });
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "\
# spate users
alice:{PLAIN}wonderland:1000:1000:Alice Liddell:/home/alice:/bin/sh:userdb_quota_rule=*:storage=100M userdb_mail=maildir:~/Mail

  # indented comment
Bob:{PLAIN}builder
carol:{SHA512-CRYPT}$6$abc$IdWKNKTJEb8LxY7CGg8YBXlvtfZzFw7Mp/r6niK9YB2mdvgY..TKjv1T..8RadRt2qvUHYRLr/TsVArtr91iR1::::::
dave:{MD5}1a1dc91c907325c69271ddf0c944bc72
../evil:{PLAIN}x
no-colon-line
alice:{PLAIN}second
eve@example.test:{PLAIN}apple
";

    #[test]
    fn dovecot_lines_parse_with_extra_fields() {
        let db = UserDb::parse(FILE);
        assert_eq!(db.len(), 5, "{db:#?}");
        let alice = db.get(&UserName::parse("alice").unwrap()).unwrap();
        assert_eq!(alice.uid(), Some("1000"));
        assert_eq!(alice.gid(), Some("1000"));
        assert_eq!(alice.gecos(), Some("Alice Liddell"));
        assert_eq!(alice.home(), Some("/home/alice"));
        assert_eq!(alice.shell(), Some("/bin/sh"));
        assert_eq!(alice.extra("userdb_mail"), Some("maildir:~/Mail"));
        assert_eq!(alice.quota(), Some(ByteSize(100 << 20)));
        let carol = db.get(&UserName::parse("carol").unwrap()).unwrap();
        assert_eq!(carol.home(), None);
        assert_eq!(carol.quota(), None);
        assert_eq!(carol.secret().scheme(), "SHA512-CRYPT");
        assert!(db.contains(&UserName::parse("bob").unwrap()));
        assert!(db.contains(&UserName::parse("eve@example.test").unwrap()));
        let warnings = db.warnings().join("\n");
        for needle in [
            "line 7: dave",
            "line 8: bad user name",
            "line 9",
            "line 10: alice",
        ] {
            assert!(warnings.contains(needle), "{needle} not in {warnings}");
        }
    }

    #[test]
    fn verify_checks_passwords() {
        let db = UserDb::parse(FILE);
        let alice = db.verify("alice", b"wonderland").unwrap().unwrap();
        assert_eq!(alice.name().as_str(), "alice");
        assert!(db.verify("ALICE", b"wonderland").unwrap().is_some());
        assert!(db.verify("alice", b"second").unwrap().is_none());
        assert!(db.verify("bob", b"builder").unwrap().is_some());
        assert!(db.verify("carol", b"secret").unwrap().is_some());
        assert!(db.verify("carol", b"Secret").unwrap().is_none());
        assert!(db.verify("eve@example.test", b"apple").unwrap().is_some());
    }

    #[test]
    fn unknown_users_schemes_and_names_never_log_in() {
        let db = UserDb::parse(FILE);
        assert!(db.verify("nobody", b"x").unwrap().is_none());
        assert!(db.verify("dave", b"x").unwrap().is_none());
        assert!(db.verify("../evil", b"x").unwrap().is_none());
        assert!(db.verify("", b"").unwrap().is_none());
        assert!(db.verify("a\0b", b"x").unwrap().is_none());
    }

    #[test]
    fn unknown_user_costs_a_real_hash() {
        // The dummy hash must be a real argon2 verification, not a shortcut:
        // compare against a known user with an argon2id hash.
        let field = super::super::scheme::NewPassword::parse("pw")
            .unwrap()
            .hash()
            .unwrap();
        let db = UserDb::parse(&format!("real:{field}\n"));
        // The fastest of a few runs, so a busy machine does not decide.
        let time = |name: &str| {
            (0..5)
                .map(|_| {
                    let start = std::time::Instant::now();
                    assert!(db.verify(name, b"wrong").unwrap().is_none());
                    start.elapsed()
                })
                .min()
                .unwrap()
        };
        let (real, unknown) = (time("real"), time("ghost"));
        assert!(
            unknown * 4 > real && real * 4 > unknown,
            "real {real:?} unknown {unknown:?}"
        );
    }

    /// The dummy follows the users' scheme: with `{PLAIN}` users an
    /// unknown name is as fast as a known one, not an argon2 slower.
    #[test]
    fn the_dummy_has_the_users_scheme() {
        let plain = UserDb::parse("a:{PLAIN}x\nb:{PLAIN}y\n");
        assert_eq!(plain.dummy.scheme(), "PLAIN");
        assert_eq!(UserDb::default().dummy.scheme(), "ARGON2ID");
        let field = super::super::scheme::NewPassword::parse("pw")
            .unwrap()
            .hash()
            .unwrap();
        let tie = UserDb::parse(&format!("a:{{PLAIN}}x\nb:{field}\nc:{{NOPE}}z\n"));
        assert_eq!(tie.dummy.scheme(), "ARGON2ID");
        assert_eq!(UserDb::parse("c:{NOPE}z\n").dummy.scheme(), "ARGON2ID");
        // Verifying the dummy never logs anyone in, even with the password
        // of the user it was taken from.
        assert!(plain.verify("ghost", b"x").unwrap().is_none());
        assert!(plain.verify("a", b"x").unwrap().is_some());
    }

    #[test]
    fn oversized_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users");
        std::fs::write(&path, "a:{PLAIN}b\n").unwrap();
        assert!(read_bounded(&path, 5).is_err());
        assert_eq!(read_bounded(&path, 11).unwrap(), "a:{PLAIN}b\n");
    }

    #[test]
    fn a_missing_file_has_no_users() {
        let dir = tempfile::tempdir().unwrap();
        let db = UserDb::load(&dir.path().join("users")).unwrap();
        assert_eq!(db.len(), 0);
        assert!(
            UserDb::load(dir.path()).is_err(),
            "a directory is not a users file"
        );
    }
}
