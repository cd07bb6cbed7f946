//! The durable on-disk spool: per-shard append-only segment files of
//! typed, versioned, checksummed records, group commit, recovery and
//! reclaim. This file only maps the modules and exports the API; it holds
//! no logic.
//!
//! Modules, each with one job:
//! - `id`: `SpoolId` / `SegmentId` and their text forms
//! - `record`: record and payload byte formats
//! - `state`: per-message delivery state (outcomes, deferrals) and its fold
//! - `scan`: classifying the bytes of one segment (records, damage, end)
//! - `recovery`: reading shard directories back, quarantine
//! - `ledger`: what is live and which segments may be deleted
//! - `io`: the I/O seam (traits) and the glommio implementation
//! - `commit`: group commit and single-thread wait primitives
//! - `segment`: one segment open for appending
//! - `shard`: `Spool`, tying the above together for one core
//! - `reader`: reading messages through mmap, offline `scan_dir`
//! - `layout`: file and directory names
//! - `lock`: one server per spool (`SpoolLock`)
//! - `private`: spool directories 0700, files 0600, the server's umask
//! - `error`: `SpoolError`

mod commit;
mod error;
mod id;
mod io;
mod layout;
mod ledger;
mod lock;
mod private;
mod reader;
// Visible to the crate for the fuzz targets (`crate::fuzz::spool`), which
// drive the record format and recovery's survey on arbitrary bytes.
pub(crate) mod record;
pub(crate) mod recovery;
pub(crate) mod scan;
mod segment;
mod shard;
mod state;

#[cfg(test)]
mod fake;
#[cfg(test)]
mod sim;
#[cfg(test)]
mod tests;

pub use error::{ParseSpoolIdError, SpoolError};
pub use id::{SegmentId, SpoolId, TRACE_ID_LEN};
pub use io::{GlommioSegmentFile, GlommioStore, SegmentFile, SegmentStore};
pub use layout::disk_usage;
pub use lock::{SpoolLock, SpoolLockError};
pub use private::{make_private, restrict_umask, PrivacyError};
pub use reader::{scan_dir, QueuedMessage, StoredMessage};
pub use record::FinishReason;
pub use shard::{RecoveredMessage, Spool, SpoolConfig};
pub use state::{Deferred, DeliveryState, OutcomeKind, RecipientOutcome, MAX_STATE_TEXT};
