//! The spool's one error type and its transient/permanent classification;
//! it does not choose SMTP reply texts (the session maps classes to replies).

use std::io;
use std::path::PathBuf;

use super::id::SpoolId;

/// Everything that can go wrong in the spool. Callers mostly need the class:
/// [`SpoolError::is_transient`] failures are answered with a 4xx and retried,
/// permanent ones are bugs or damaged data that retrying will not fix.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// Preallocation hit ENOSPC before any byte of the record was written,
    /// so nothing half-written exists (the session answers 452 4.3.1).
    #[error("spool disk full while preallocating {path}")]
    DiskFull {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The fdatasync that would have made the message durable failed; the
    /// segment is retired and the message is not kept (the session answers
    /// 451). A String rather than the io::Error because one failed sync is
    /// reported to every message of its batch.
    #[error("fdatasync of {path} failed ({detail}); the message was not kept")]
    SyncFailed { path: PathBuf, detail: String },
    /// Any other I/O failure while opening, writing, mapping or deleting.
    #[error("spool I/O error while {op} {path}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A record on disk failed its checksum or does not decode.
    #[error("corrupt spool record {id}: {detail}")]
    Corrupt { id: SpoolId, detail: &'static str },
    /// The id names no live message of this spool (already finished, never
    /// stored here, or belonging to a shard this spool did not adopt).
    #[error("no live message {0} in this spool")]
    UnknownMessage(SpoolId),
    /// The configuration cannot work (caught at open, never at runtime).
    #[error("invalid spool configuration: {0}")]
    Config(&'static str),
    /// All 2^24 segment numbers of a shard directory are used up.
    #[error("segment sequence numbers of shard {0} exhausted")]
    SequenceExhausted(u8),
    /// `close` was called; the spool accepts no more writes.
    #[error("spool is closed")]
    Closed,
}

impl SpoolError {
    /// Disk full is the one error with its own reply (452 4.3.1), so the
    /// session asks for it by name.
    pub fn is_disk_full(&self) -> bool {
        matches!(self, SpoolError::DiskFull { .. })
    }

    /// Transient failures may succeed when retried (4xx); everything else is
    /// permanent (a bug, bad configuration or damaged data).
    pub fn is_transient(&self) -> bool {
        match self {
            SpoolError::DiskFull { .. }
            | SpoolError::SyncFailed { .. }
            | SpoolError::Io { .. }
            | SpoolError::Closed => true,
            SpoolError::Corrupt { .. }
            | SpoolError::UnknownMessage(_)
            | SpoolError::Config(_)
            | SpoolError::SequenceExhausted(_) => false,
        }
    }

    /// The complement of [`SpoolError::is_transient`], for readability at
    /// call sites that map to 5xx.
    pub fn is_permanent(&self) -> bool {
        !self.is_transient()
    }

    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        SpoolError::Io {
            op,
            path: path.into(),
            source,
        }
    }
}

/// Error of `SpoolId::from_str`: the text is not 16 hex digits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid spool id {0:?}: expected 16 hexadecimal digits")]
pub struct ParseSpoolIdError(pub String);
