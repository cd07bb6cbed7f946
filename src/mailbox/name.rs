//! User and folder names: what is allowed, and how a folder name maps to
//! its Maildir++ directory. It refuses every name that could leave the
//! user's directory; it does not touch the filesystem.
//!
//! Folder names are given and returned as UTF-8 with `/` as the hierarchy
//! separator ("Archive/2024"). On disk, a folder is the directory
//! `.<component>.<component>` under the user's Maildir, each component in
//! modified UTF-7 (RFC 3501 5.1.3), as Dovecot's default Maildir++ layout
//! and Courier store them, so both (and mutt, which reads the directory
//! names) see the same folders. Because `.` separates components on disk,
//! a component cannot contain `.`: Dovecot's Maildir++ layout refuses it
//! the same way.

use std::fmt;
use std::str::FromStr;

use super::error::{MailboxError, NameKind, Result};
use super::utf7;

/// Longest user name in bytes (a file name component).
const MAX_USER_LEN: usize = 255;
/// Longest on-disk folder directory name (NAME_MAX).
const MAX_FOLDER_DIR_LEN: usize = 255;

/// A user whose Maildir is `<mailbox_dir>/<name>`. Checked so it is exactly
/// one path component that is neither hidden nor special; case and
/// `user@domain` forms are left as given (the account layer canonicalises).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UserName(String);

impl UserName {
    pub fn new(name: &str) -> Result<UserName> {
        let bad = |reason| {
            Err(MailboxError::InvalidName {
                kind: NameKind::User,
                name: name.to_owned(),
                reason,
            })
        };
        if name.is_empty() {
            return bad("empty");
        }
        if name.len() > MAX_USER_LEN {
            return bad("longer than 255 bytes");
        }
        if name.starts_with('.') {
            return bad("starts with '.'");
        }
        if let Some(reason) = forbidden_char(name, &['/', '\\']) {
            return bad(reason);
        }
        Ok(UserName(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for UserName {
    type Err = MailboxError;
    fn from_str(s: &str) -> Result<Self> {
        UserName::new(s)
    }
}

impl fmt::Display for UserName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The reason text when `s` holds NUL, a control character or one of
/// `extra`.
fn forbidden_char(s: &str, extra: &[char]) -> Option<&'static str> {
    for c in s.chars() {
        if c == '\0' {
            return Some("contains NUL");
        }
        if c.is_control() {
            return Some("contains a control character");
        }
        if extra.contains(&c) {
            return Some(match c {
                '/' => "contains '/'",
                '\\' => "contains '\\'",
                '.' => "a component contains '.' (the on-disk hierarchy separator)",
                '*' | '%' => "contains an IMAP LIST wildcard",
                _ => "contains a forbidden character",
            });
        }
    }
    None
}

/// A folder of a user's mailbox: "INBOX" (the Maildir itself) or a
/// `/`-separated path of non-empty components. INBOX is matched without
/// regard to case, also as the first component ("inbox/x" is "INBOX/x"),
/// as IMAP requires.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FolderName(String);

impl FolderName {
    /// The hierarchy separator callers see.
    pub const SEPARATOR: char = '/';

    /// INBOX, the top of the Maildir.
    pub fn inbox() -> FolderName {
        FolderName("INBOX".to_owned())
    }

    /// Checks a name: no empty components (so no leading, trailing or
    /// doubled `/`), no `.`, `..`, no `.`, NUL, control characters or
    /// LIST wildcards (`*`, `%`) in a component, and an on-disk form that
    /// fits a directory name.
    pub fn new(name: &str) -> Result<FolderName> {
        let bad = |reason| {
            Err(MailboxError::InvalidName {
                kind: NameKind::Folder,
                name: name.to_owned(),
                reason,
            })
        };
        if name.is_empty() {
            return bad("empty");
        }
        if name.starts_with('/') {
            return bad("starts with '/'");
        }
        let mut canonical = String::with_capacity(name.len());
        for (i, component) in name.split('/').enumerate() {
            if component.is_empty() {
                return bad("empty component");
            }
            if component == "." || component == ".." {
                return bad("'.' or '..' component");
            }
            if let Some(reason) = forbidden_char(component, &['.', '*', '%']) {
                return bad(reason);
            }
            if i == 0 && component.eq_ignore_ascii_case("INBOX") {
                canonical.push_str("INBOX");
            } else {
                if i > 0 {
                    canonical.push('/');
                }
                canonical.push_str(component);
            }
        }
        let folder = FolderName(canonical);
        if folder
            .dir_name()
            .is_some_and(|d| d.len() > MAX_FOLDER_DIR_LEN)
        {
            return bad("too long");
        }
        Ok(folder)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn is_inbox(&self) -> bool {
        self.0 == "INBOX"
    }

    /// The components, outermost first.
    pub fn components(&self) -> impl Iterator<Item = &str> {
        self.0.split('/')
    }

    /// The parent folder name, if this one is nested.
    pub fn parent(&self) -> Option<FolderName> {
        self.0
            .rsplit_once('/')
            .map(|(parent, _)| FolderName(parent.to_owned()))
    }

    /// True when `self` is strictly below `ancestor` in the hierarchy.
    pub fn is_descendant_of(&self, ancestor: &FolderName) -> bool {
        self.0.len() > ancestor.0.len()
            && self.0.starts_with(&ancestor.0)
            && self.0.as_bytes()[ancestor.0.len()] == b'/'
    }

    /// The Maildir++ directory name (`.A.B`, components in modified
    /// UTF-7); `None` for INBOX, which is the user's Maildir itself.
    pub fn dir_name(&self) -> Option<String> {
        if self.is_inbox() {
            return None;
        }
        let mut dir = String::with_capacity(self.0.len() + 1);
        for component in self.components() {
            dir.push('.');
            dir.push_str(&utf7::encode(component));
        }
        Some(dir)
    }

    /// The folder a Maildir++ directory name stands for; `None` for names
    /// that are not folders (no leading `.`, `.`, `..`, empty components,
    /// not canonical modified UTF-7, or an invalid name), which listing
    /// skips.
    pub fn from_dir_name(dir: &str) -> Option<FolderName> {
        let rest = dir.strip_prefix('.')?;
        if rest.is_empty() {
            return None;
        }
        let mut name = String::with_capacity(rest.len());
        for (i, component) in rest.split('.').enumerate() {
            if i > 0 {
                name.push('/');
            }
            name.push_str(&utf7::decode(component)?);
        }
        let folder = FolderName::new(&name).ok()?;
        // A directory like ".inbox" decodes to INBOX; only the canonical
        // spelling maps back, so two directories never share a name.
        (folder.dir_name().as_deref() == Some(dir)).then_some(folder)
    }
}

impl FromStr for FolderName {
    type Err = MailboxError;
    fn from_str(s: &str) -> Result<Self> {
        FolderName::new(s)
    }
}

impl fmt::Display for FolderName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folder_names_map_to_maildirplusplus() {
        let f = FolderName::new("Archive/2024").unwrap();
        assert_eq!(f.dir_name().unwrap(), ".Archive.2024");
        assert_eq!(FolderName::from_dir_name(".Archive.2024").unwrap(), f);
        let f = FolderName::new("Entwürfe").unwrap();
        assert_eq!(f.dir_name().unwrap(), ".Entw&APw-rfe");
        assert_eq!(FolderName::from_dir_name(".Entw&APw-rfe").unwrap(), f);
        assert!(FolderName::new("inbox").unwrap().is_inbox());
        assert_eq!(FolderName::new("inbox/Sub").unwrap().as_str(), "INBOX/Sub");
        assert_eq!(FolderName::new("inbox").unwrap().dir_name(), None);
    }

    #[test]
    fn traversal_and_junk_refused() {
        for bad in [
            "",
            "..",
            "../x",
            "/etc",
            "a/../../b",
            "a//b",
            "a/",
            "a/./b",
            "a\0b",
            "a.b",
            ".hidden",
            "a\nb",
            "a*",
            "50%",
            "\u{7f}",
        ] {
            assert!(FolderName::new(bad).is_err(), "{bad:?} accepted");
        }
        // A backslash is an ordinary character in a folder name (Dovecot
        // allows it; IMAP quotes it).
        assert_eq!(FolderName::new("foo\\bar").unwrap().as_str(), "foo\\bar");
        for bad in [
            "", ".", "..", "../x", "/etc", "a/b", "a\0", "a\\b", ".x", "a\tb",
        ] {
            assert!(UserName::new(bad).is_err(), "{bad:?} accepted");
        }
        assert!(UserName::new("alice@example.test").is_ok());
        assert!(FolderName::new(&"x".repeat(300)).is_err());
    }

    #[test]
    fn dir_names_that_are_not_folders() {
        for d in [
            "cur", ".", "..", "..x", ".a..b", ".a.", ".&AGE-", ".INBOX.&", ".inbox",
        ] {
            assert_eq!(FolderName::from_dir_name(d), None, "{d:?}");
        }
        assert_eq!(
            FolderName::from_dir_name(".INBOX.x").unwrap().as_str(),
            "INBOX/x"
        );
    }

    #[test]
    fn hierarchy_helpers() {
        let a = FolderName::new("A").unwrap();
        let ab = FolderName::new("A/B").unwrap();
        let abc = FolderName::new("AB").unwrap();
        assert!(ab.is_descendant_of(&a));
        assert!(!abc.is_descendant_of(&a));
        assert!(!a.is_descendant_of(&a));
        assert_eq!(ab.parent().unwrap(), a);
    }
}
