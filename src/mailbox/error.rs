//! The mailbox store's one error type and its transient/permanent
//! classification; it does not choose SMTP, POP3 or IMAP reply texts.

use std::io;
use std::path::PathBuf;

use super::id::Uid;

/// Which kind of name was refused, for the error text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameKind {
    User,
    Folder,
}

impl std::fmt::Display for NameKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            NameKind::User => "user",
            NameKind::Folder => "folder",
        })
    }
}

/// Everything the mailbox store refuses or fails at. Callers mostly need
/// the class: local delivery defers on [`MailboxError::is_transient`] and
/// bounces otherwise; IMAP and POP3 answer NO/-ERR either way.
#[derive(Debug, thiserror::Error)]
pub enum MailboxError {
    /// A user or folder name that could escape the user's directory, clash
    /// with the Maildir++ layout, or is not allowed by IMAP.
    #[error("invalid {kind} name {name:?}: {reason}")]
    InvalidName {
        kind: NameKind,
        name: String,
        reason: &'static str,
    },
    /// The user has no Maildir yet (see `MailStore::ensure_user`).
    #[error("no mailbox for user {0}")]
    UserNotFound(String),
    /// The folder does not exist.
    #[error("no folder {0}")]
    FolderNotFound(String),
    /// CREATE or RENAME onto a folder that exists.
    #[error("folder {0} already exists")]
    FolderExists(String),
    /// The UID names no message of the folder (expunged, or never there).
    #[error("no message with UID {uid} in {folder}")]
    NoSuchMessage { uid: Uid, folder: String },
    /// Another session holds the user's exclusive lock (POP3 `[IN-USE]`).
    #[error("mailbox is in use by another session")]
    InUse,
    /// An operation the store refuses on principle (deleting INBOX,
    /// renaming a folder into its own child).
    #[error("not permitted: {0}")]
    NotPermitted(&'static str),
    /// A filesystem call failed.
    #[error("mailbox I/O error while {op} {path}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl MailboxError {
    /// Transient failures may succeed later: every I/O error (a full or
    /// failing disk, and also a permission problem, which an administrator
    /// fixes without the sender's help; Postfix's local delivery defers
    /// these too) and a busy mailbox. Names, missing users and folders and
    /// refused operations are permanent.
    pub fn is_transient(&self) -> bool {
        match self {
            MailboxError::Io { .. } | MailboxError::InUse => true,
            MailboxError::InvalidName { .. }
            | MailboxError::UserNotFound(_)
            | MailboxError::FolderNotFound(_)
            | MailboxError::FolderExists(_)
            | MailboxError::NoSuchMessage { .. }
            | MailboxError::NotPermitted(_) => false,
        }
    }

    /// The complement of [`MailboxError::is_transient`].
    pub fn is_permanent(&self) -> bool {
        !self.is_transient()
    }

    /// ENOSPC or EDQUOT: the one I/O failure with its own replies (SMTP
    /// 452 4.3.1, IMAP `[OVERQUOTA]`/`[LIMIT]`).
    pub fn is_disk_full(&self) -> bool {
        match self {
            MailboxError::Io { source, .. } => {
                matches!(
                    source.raw_os_error(),
                    Some(libc::ENOSPC) | Some(libc::EDQUOT)
                ) || source.kind() == io::ErrorKind::StorageFull
                    || source.kind() == io::ErrorKind::QuotaExceeded
            }
            _ => false,
        }
    }

    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        MailboxError::Io {
            op,
            path: path.into(),
            source,
        }
    }
}

/// Shorthand for the module's results.
pub type Result<T, E = MailboxError> = std::result::Result<T, E>;
