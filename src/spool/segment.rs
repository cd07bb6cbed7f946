//! One segment open for appending: where the next record goes, how far the
//! file is preallocated, and whether it is retired. It refuses to decide
//! when to roll over or what a failure means for messages (see `shard`).

use std::cell::{Cell, RefCell};
use std::io;
use std::path::PathBuf;
use std::rc::Rc;

use crate::metrics::Latency;

use super::commit::GroupCommit;
use super::error::SpoolError;
use super::id::SegmentId;
use super::io::SegmentFile;

/// Maps an I/O error, keeping ENOSPC recognisable as disk full.
pub(crate) fn classify(op: &'static str, path: &std::path::Path, e: io::Error) -> SpoolError {
    if e.raw_os_error() == Some(libc::ENOSPC) || e.kind() == io::ErrorKind::StorageFull {
        SpoolError::DiskFull {
            path: path.to_owned(),
            source: e,
        }
    } else {
        SpoolError::io(op, path, e)
    }
}

/// A segment being appended to, shared (Rc) by the writers that reserved
/// space in it, which may outlive its time as the active segment.
pub(crate) struct Segment<F> {
    pub id: SegmentId,
    pub path: PathBuf,
    pub file: Rc<F>,
    commit: GroupCommit,
    next: Cell<u64>,
    allocated: Cell<u64>,
    retired: Cell<bool>,
}

impl<F: SegmentFile + 'static> Segment<F> {
    pub(crate) fn new(id: SegmentId, path: PathBuf, file: F) -> Self {
        Segment {
            id,
            path,
            file: Rc::new(file),
            commit: GroupCommit::default(),
            next: Cell::new(0),
            allocated: Cell::new(0),
            retired: Cell::new(false),
        }
    }

    /// Retired segments are never appended to again: after a failed sync
    /// or write, what the kernel holds for this file cannot be trusted.
    pub(crate) fn is_retired(&self) -> bool {
        self.retired.get() || self.commit.failed()
    }

    pub(crate) fn retire(&self) {
        self.retired.set(true);
    }

    /// Whether a record of `len` bytes may go here. An empty segment takes
    /// any record, so a message larger than a segment gets one of its own.
    pub(crate) fn fits(&self, len: u64, segment_size: u64) -> bool {
        !self.is_retired() && (self.next.get() == 0 || self.next.get() + len <= segment_size)
    }

    /// Makes every write that completed before this call durable (group
    /// commit); fails for good once a sync of this file failed.
    pub(crate) async fn commit(&self, latency: &RefCell<Latency>) -> Result<(), SpoolError> {
        self.commit
            .commit(&self.file, latency)
            .await
            .map_err(|f| SpoolError::SyncFailed {
                path: self.path.clone(),
                detail: f.detail,
            })
    }

    /// Reserves `len` bytes and returns their offset, preallocating first:
    /// disk full surfaces here, before any byte of the record is written.
    /// The caller holds the spool's gate, so reservations do not interleave.
    pub(crate) async fn reserve(
        &self,
        len: u64,
        chunk: u64,
        segment_size: u64,
    ) -> Result<u64, SpoolError> {
        let offset = self.next.get();
        let end = offset + len;
        if end > self.allocated.get() {
            let target = end.next_multiple_of(chunk).min(segment_size).max(end);
            self.file
                .allocate(target)
                .await
                .map_err(|e| classify("preallocating", &self.path, e))?;
            self.allocated.set(target);
        }
        self.next.set(end);
        Ok(offset)
    }

    /// Writes a whole buffer at `pos`. Any failure, including a short
    /// write (the buffer is consumed by io_uring, so there is no retry),
    /// retires the segment.
    pub(crate) async fn write(&self, buf: Vec<u8>, pos: u64) -> Result<(), SpoolError> {
        let len = buf.len();
        let result = match self.file.write_at(buf, pos).await {
            Ok(n) if n == len => return Ok(()),
            Ok(n) => Err(io::Error::new(
                io::ErrorKind::WriteZero,
                format!("short write: {n} of {len} bytes"),
            )),
            Err(e) => Err(e),
        };
        self.retire();
        result.map_err(|e| classify("writing", &self.path, e))
    }
}
