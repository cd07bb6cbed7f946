//! The account module's one error type and its transient/permanent
//! classification; it does not choose protocol reply texts (sessions map
//! the class to a reply).

use std::io;
use std::path::PathBuf;

use super::name::{NameError, UserName};

/// What can go wrong while loading, querying or editing the account files.
/// A wrong password or an unknown user is not an error: those are
/// `Ok(None)` / `Resolution::Unknown`.
#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    /// A file could not be read, written, locked or renamed.
    #[error("{op} {path}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A file is larger than spate is willing to hold in memory.
    #[error("{path} is larger than {max} bytes")]
    TooLarge { path: PathBuf, max: u64 },
    /// A name given on the command line or in the configuration.
    #[error("invalid name {text:?}: {source}")]
    InvalidName {
        text: String,
        #[source]
        source: NameError,
    },
    #[error("user {0} already exists")]
    UserExists(UserName),
    #[error("no user {0}")]
    NoSuchUser(UserName),
    /// A new password that cannot be stored (empty, too long, control
    /// characters).
    #[error("password refused: {0}")]
    BadPassword(&'static str),
    /// Hashing or verifying failed inside the hash function (memory, RNG),
    /// not because the password was wrong.
    #[error("password hash computation failed: {0}")]
    Hash(String),
    /// Alias expansion went past a bound (depth or number of targets): a
    /// configuration mistake, answered with a temporary failure so no mail
    /// is lost while the administrator fixes it.
    #[error("alias {alias} cannot be expanded: {reason}")]
    AliasExpansion {
        alias: UserName,
        reason: &'static str,
    },
}

impl AccountError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        AccountError::Io {
            op,
            path: path.into(),
            source,
        }
    }

    /// Transient failures may succeed when retried (SMTP 4xx, IMAP
    /// `[UNAVAILABLE]`); the rest are refusals that retrying will not fix.
    pub fn is_transient(&self) -> bool {
        match self {
            AccountError::Io { .. }
            | AccountError::TooLarge { .. }
            | AccountError::Hash(_)
            | AccountError::AliasExpansion { .. } => true,
            AccountError::InvalidName { .. }
            | AccountError::UserExists(_)
            | AccountError::NoSuchUser(_)
            | AccountError::BadPassword(_) => false,
        }
    }
}
