//! The `UserName` newtype: a user or alias name parsed from untrusted text
//! (login, address local part, a line of a file) into a form that is safe as
//! a mailbox directory name. It refuses to decide whether the name exists.

use std::fmt;

/// Longest local part (RFC 5321 4.5.3.1.1), and so the longest bare name.
pub const MAX_LOCAL_PART: usize = 64;
/// Longest `local@domain` name: still one path component (NAME_MAX 255).
pub const MAX_NAME: usize = 255;

/// Why a text is not a user name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("the name is empty")]
    Empty,
    #[error("the local part is longer than {MAX_LOCAL_PART} characters")]
    LocalPartTooLong,
    #[error("the name is longer than {MAX_NAME} characters")]
    TooLong,
    #[error("character {0:?} is not allowed (letters, digits, '.', '-', '_', '+' only)")]
    BadChar(char),
    #[error("the name must not start with '.', '-' or '+'")]
    BadStart,
    #[error("the domain part is empty or not a domain")]
    BadDomain,
}

/// A user (or alias) name: lowercase letters (UTF-8 ones too: RFC 6531/
/// 6532 mailboxes such as `jörg`, since SMTPUTF8 is announced), digits,
/// `.`, `-`, `_` and `+`, not starting with `.`, `-` or `+`, at most 64
/// octets (RFC 6531 3.3 keeps RFC 5321's limit in octets); optionally
/// followed by `@domain` (an ASCII domain, for a name that belongs to one
/// local domain only). Parsing lowercases (Unicode lowercase in the local
/// part), so names compare case-insensitively as RFC 5321 allows for local
/// mailboxes and every MTA in practice does. Names are not normalised
/// (NFC): a client that sends another form of `ö` names another user.
///
/// Because of these rules a `UserName` is always one safe path component:
/// no `/`, no NUL, never `.` or `..`, no leading dot (hidden file) and no
/// leading `-` (mistaken for an option by shell tools).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UserName(String);

impl UserName {
    /// Parses `text`, lowercasing it.
    pub fn parse(text: &str) -> Result<UserName, NameError> {
        if text.is_empty() {
            return Err(NameError::Empty);
        }
        if text.len() > MAX_NAME {
            return Err(NameError::TooLong);
        }
        let (local, domain) = match text.split_once('@') {
            Some((local, domain)) => (local, Some(domain)),
            None => (text, None),
        };
        check_local(local)?;
        if let Some(domain) = domain {
            check_domain(domain)?;
        }
        Ok(UserName(match domain {
            Some(domain) => format!("{}@{}", local.to_lowercase(), domain.to_ascii_lowercase()),
            None => local.to_lowercase(),
        }))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The part before `@` (the whole name when it has no domain).
    pub fn local_part(&self) -> &str {
        self.0.split_once('@').map_or(&self.0, |(local, _)| local)
    }

    /// The domain of a `local@domain` name.
    pub fn domain(&self) -> Option<&str> {
        self.0.split_once('@').map(|(_, domain)| domain)
    }
}

fn check_local(local: &str) -> Result<(), NameError> {
    let first = local.chars().next().ok_or(NameError::Empty)?;
    if local.len() > MAX_LOCAL_PART {
        return Err(NameError::LocalPartTooLong);
    }
    if matches!(first, '.' | '-' | '+') {
        return Err(NameError::BadStart);
    }
    // Beyond ASCII only letters and digits: no spaces, punctuation,
    // controls or direction marks, so the name stays one plain path
    // component and reads as what it is.
    let allowed =
        |c: char| c.is_alphanumeric() || (c.is_ascii() && matches!(c, '.' | '-' | '_' | '+'));
    match local.chars().find(|&c| !allowed(c)) {
        Some(c) => Err(NameError::BadChar(c)),
        None => Ok(()),
    }
}

fn check_domain(domain: &str) -> Result<(), NameError> {
    let labels_ok = domain.split('.').all(|label| {
        !label.is_empty()
            && !label.starts_with('-')
            && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    });
    if labels_ok {
        Ok(())
    } else {
        Err(NameError::BadDomain)
    }
}

impl fmt::Display for UserName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for UserName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "UserName({:?})", self.0)
    }
}

impl std::str::FromStr for UserName {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        UserName::parse(s)
    }
}

impl TryFrom<String> for UserName {
    type Error = NameError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        UserName::parse(&s)
    }
}

impl<'de> serde::Deserialize<'de> for UserName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        UserName::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn good_names_parse_lowercased() {
        for (text, want) in [
            ("alice", "alice"),
            ("Alice.Smith", "alice.smith"),
            ("bob_2-x", "bob_2-x"),
            ("carol+lists", "carol+lists"),
            ("Dave@Example.TEST", "dave@example.test"),
            ("_svc", "_svc"),
            ("Jörg", "jörg"),
            ("ÄNNE@Example.TEST", "änne@example.test"),
        ] {
            assert_eq!(UserName::parse(text).unwrap().as_str(), want, "{text}");
        }
        let n = UserName::parse("dave@example.test").unwrap();
        assert_eq!(n.local_part(), "dave");
        assert_eq!(n.domain(), Some("example.test"));
        assert_eq!(UserName::parse("x").unwrap().domain(), None);
    }

    #[test]
    fn unsafe_names_are_refused() {
        let long = "a".repeat(65);
        for text in [
            "",
            "../x",
            "a/b",
            ".hidden",
            ".",
            "..",
            "a\0b",
            "-rf",
            "+tag",
            "a b",
            "a:b",
            "a\u{202e}b",
            "ü\u{a0}x",
            "j\u{f6}rg@b\u{fc}cher.example",
            "a@",
            "a@b/c",
            "a@.b",
            "a@b..c",
            "@b",
            "a@b@c",
            long.as_str(),
        ] {
            assert!(UserName::parse(text).is_err(), "{text:?} was accepted");
        }
        assert_eq!(UserName::parse(&long), Err(NameError::LocalPartTooLong));
        assert_eq!(UserName::parse("a/b"), Err(NameError::BadChar('/')));
        assert_eq!(UserName::parse(".x"), Err(NameError::BadStart));
        assert!(UserName::parse(&"a".repeat(64)).is_ok());
    }
}
