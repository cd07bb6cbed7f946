//! The queue's one error type. It does not choose SMTP replies or log.

use crate::spool::SpoolId;

use super::schedule::AttemptId;

/// What the scheduler and the ready queues refuse. None of these is
/// transient: they are caller bugs (a report for a message or attempt that
/// is not current) or bad configuration caught at construction.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueueError {
    /// The message is not queued (finished, removed, or never inserted).
    #[error("no message {0} in the queue")]
    UnknownMessage(SpoolId),
    /// A report for an attempt the queue has already given up on (its
    /// deadline passed and the message was rescheduled): ignore it, the
    /// message has a newer attempt or retry time.
    #[error("attempt {attempt} of message {id} is not current")]
    StaleAttempt { id: SpoolId, attempt: AttemptId },
    /// Retry timing that cannot work (zero or inverted bounds).
    #[error("invalid retry policy: {0}")]
    Policy(&'static str),
    /// Ready-queue limits that would never let anything out (zeros).
    #[error("invalid ready-queue limits: {0}")]
    Limits(&'static str),
    /// A destination was built from an empty host set.
    #[error("a destination needs at least one host")]
    NoHosts,
}

impl QueueError {
    /// Always false: retrying the same call cannot succeed. Kept so every
    /// module's errors answer the same question the same way.
    pub fn is_transient(&self) -> bool {
        false
    }
}
