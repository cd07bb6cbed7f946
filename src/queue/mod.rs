//! The per-core queue: every message this core holds in its spool and has
//! not finished, with what is next for it. It owns no I/O; the delivery
//! layer will take its work from here.

use std::collections::BTreeMap;

use crate::spool::SpoolId;

/// What the queue knows of one message without reading the spool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueEntry {
    pub size: u64,
    pub recipients: usize,
    /// Seconds since the Unix epoch.
    pub received_at: u64,
}

/// Messages in spool order (ids grow with segment and offset).
#[derive(Debug, Default)]
pub struct Queue {
    entries: BTreeMap<SpoolId, QueueEntry>,
    bytes: u64,
}

impl Queue {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn insert(&mut self, id: SpoolId, entry: QueueEntry) {
        self.bytes += entry.size;
        if let Some(old) = self.entries.insert(id, entry) {
            self.bytes -= old.size;
        }
    }

    pub fn remove(&mut self, id: SpoolId) -> Option<QueueEntry> {
        let entry = self.entries.remove(&id)?;
        self.bytes -= entry.size;
        Some(entry)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Bytes of message data held.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    pub fn iter(&self) -> impl Iterator<Item = (SpoolId, &QueueEntry)> {
        self.entries.iter().map(|(id, e)| (*id, e))
    }
}
