//! Folder snapshots shared by every session of one store, valid while the
//! folder's change stamp (the times of `new/`, `cur/`, the UID index and
//! the keyword names)
//! stays the same, so opening an unchanged folder costs three `stat`s
//! instead of two directory listings, an index parse and a `stat` per
//! message. It does no other I/O and never decides what a folder holds:
//! `Folder::snapshot` fills it, and drops what it cannot trust.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use super::folder::{Snapshot, INDEX_FILE};
use super::keywords::KEYWORDS_FILE;

/// What changes whenever a folder's messages, flags or index change: the
/// modification times of `new/` and `cur/` (deliveries, flag renames,
/// expunges) and of the UID index with its length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    new: SystemTime,
    cur: SystemTime,
    index: SystemTime,
    index_len: u64,
    /// `dovecot-keywords`, when the folder has one.
    keywords: Option<SystemTime>,
}

/// A stamp younger than this may hide a second change within the same
/// timestamp tick (kernel file times are coarse, whole seconds on some
/// filesystems), so it is not trusted.
const SETTLE: Duration = Duration::from_secs(1);

impl Stamp {
    /// The folder's stamp now; `None` when a part is missing (no index
    /// yet, or the folder is gone).
    pub fn read(dir: &Path) -> Option<Stamp> {
        let modified = |p: PathBuf| std::fs::metadata(p).and_then(|m| m.modified()).ok();
        let index = std::fs::metadata(dir.join(INDEX_FILE)).ok()?;
        Some(Stamp {
            new: modified(dir.join("new"))?,
            cur: modified(dir.join("cur"))?,
            index: index.modified().ok()?,
            index_len: index.len(),
            keywords: modified(dir.join(KEYWORDS_FILE)),
        })
    }

    /// The stamp to remember for a scan starting now: only one whose
    /// times are all older than [`SETTLE`], so any later change gives a
    /// different one (as Dovecot treats recent directory times as dirty).
    pub fn settled_now(dir: &Path) -> Option<Stamp> {
        Stamp::read(dir).filter(|s| s.settled(SystemTime::now()))
    }

    /// Old enough that an equal stamp later means "nothing changed".
    pub fn settled(&self, now: SystemTime) -> bool {
        [
            Some(self.new),
            Some(self.cur),
            Some(self.index),
            self.keywords,
        ]
        .iter()
        .flatten()
        .all(|t| now.duration_since(*t).is_ok_and(|age| age >= SETTLE))
    }
}

/// The last snapshot of each folder, bounded by the messages they hold in
/// all; the least recently used go first.
#[derive(Debug)]
pub(crate) struct SnapshotCache {
    inner: Mutex<Entries>,
    /// Most messages held over all folders.
    budget: usize,
}

#[derive(Debug, Default)]
struct Entries {
    by_dir: HashMap<PathBuf, Entry>,
    messages: usize,
    clock: u64,
}

#[derive(Debug)]
struct Entry {
    /// The settled stamp read before the snapshot was taken, or `None`
    /// when the folder was changing then: such an entry still lends its
    /// internal dates to the next snapshot but is never served whole.
    stamp: Option<Stamp>,
    snapshot: Arc<Snapshot>,
    used: u64,
}

impl SnapshotCache {
    pub(crate) fn new(budget: usize) -> SnapshotCache {
        SnapshotCache {
            inner: Mutex::new(Entries::default()),
            budget,
        }
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, Entries> {
        // The map stays consistent across a panic elsewhere: every
        // change below is a single insert or remove.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The snapshot of `dir` if it was taken at exactly this stamp.
    pub(crate) fn fresh(&self, dir: &Path, stamp: &Stamp) -> Option<Arc<Snapshot>> {
        let mut entries = self.entries();
        entries.clock += 1;
        let clock = entries.clock;
        let entry = entries.by_dir.get_mut(dir)?;
        if entry.stamp.as_ref() != Some(stamp) {
            return None;
        }
        entry.used = clock;
        Some(Arc::clone(&entry.snapshot))
    }

    /// The last snapshot of `dir`, fresh or not (to reuse what cannot
    /// have changed, such as internal dates).
    pub(crate) fn last(&self, dir: &Path) -> Option<Arc<Snapshot>> {
        self.entries()
            .by_dir
            .get(dir)
            .map(|e| Arc::clone(&e.snapshot))
    }

    /// Remembers `snapshot` of `dir`, taken after `stamp` was read.
    pub(crate) fn put(&self, dir: &Path, stamp: Option<Stamp>, snapshot: Arc<Snapshot>) {
        let size = snapshot.messages.len();
        if size > self.budget {
            self.forget(dir);
            return;
        }
        let mut entries = self.entries();
        entries.clock += 1;
        let used = entries.clock;
        let entry = Entry {
            stamp,
            snapshot,
            used,
        };
        if let Some(old) = entries.by_dir.insert(dir.to_path_buf(), entry) {
            entries.messages -= old.snapshot.messages.len();
        }
        entries.messages += size;
        while entries.messages > self.budget {
            let Some(oldest) = entries
                .by_dir
                .iter()
                .filter(|(d, _)| d.as_path() != dir)
                .min_by_key(|(_, e)| e.used)
                .map(|(d, _)| d.clone())
            else {
                break;
            };
            if let Some(gone) = entries.by_dir.remove(&oldest) {
                entries.messages -= gone.snapshot.messages.len();
            }
        }
    }

    /// Drops what is known of `dir` (and of folders below it).
    pub(crate) fn forget(&self, dir: &Path) {
        let mut entries = self.entries();
        let gone: Vec<PathBuf> = entries
            .by_dir
            .keys()
            .filter(|d| d.starts_with(dir))
            .cloned()
            .collect();
        for d in gone {
            if let Some(e) = entries.by_dir.remove(&d) {
                entries.messages -= e.snapshot.messages.len();
            }
        }
    }

    /// Messages held now (for tests and metrics).
    #[cfg(test)]
    pub(crate) fn held(&self) -> usize {
        self.entries().messages
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mailbox::{ModSeq, Uid, UidValidity};

    fn snapshot(messages: usize) -> Arc<Snapshot> {
        let info = |n: usize| crate::mailbox::MessageInfo {
            uid: Uid::new(n as u32 + 1).expect("non-zero"),
            size: 10,
            flags: crate::mailbox::Flags::empty(),
            recent: false,
            internal_date: SystemTime::UNIX_EPOCH,
            modseq: ModSeq::new(1),
            path: PathBuf::from(format!("/m/{n}")),
        };
        Arc::new(Snapshot {
            uid_validity: UidValidity::new(7).expect("non-zero"),
            uid_next: Uid::new(messages as u32 + 1).expect("non-zero"),
            highest_modseq: ModSeq::new(1),
            messages: (0..messages).map(info).collect(),
            expunged: Arc::default(),
            keywords: Arc::default(),
        })
    }

    fn stamp(secs: u64) -> Stamp {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(secs);
        Stamp {
            new: t,
            cur: t,
            index: t,
            index_len: 1,
            keywords: None,
        }
    }

    #[test]
    fn served_only_at_the_same_stamp() {
        let cache = SnapshotCache::new(100);
        let dir = Path::new("/mail/u/INBOX");
        cache.put(dir, Some(stamp(1)), snapshot(3));
        assert!(cache.fresh(dir, &stamp(1)).is_some());
        assert!(cache.fresh(dir, &stamp(2)).is_none());
        assert!(cache.fresh(Path::new("/mail/u/.Sent"), &stamp(1)).is_none());
        // Unsettled: lends dates, never served whole.
        cache.put(dir, None, snapshot(4));
        assert!(cache.fresh(dir, &stamp(1)).is_none());
        assert_eq!(cache.last(dir).map(|s| s.messages.len()), Some(4));
        assert_eq!(cache.held(), 4);
    }

    #[test]
    fn bounded_by_messages_least_recently_used_first() {
        let cache = SnapshotCache::new(10);
        let (a, b, c) = (Path::new("/a"), Path::new("/b"), Path::new("/c"));
        cache.put(a, Some(stamp(1)), snapshot(4));
        cache.put(b, Some(stamp(1)), snapshot(4));
        assert!(cache.fresh(a, &stamp(1)).is_some()); // a is now the newer
        cache.put(c, Some(stamp(1)), snapshot(4));
        assert!(cache.last(b).is_none(), "b was least recently used");
        assert!(cache.last(a).is_some() && cache.last(c).is_some());
        assert_eq!(cache.held(), 8);
        // A folder bigger than the whole budget is not kept.
        cache.put(a, Some(stamp(2)), snapshot(11));
        assert!(cache.last(a).is_none());
        assert_eq!(cache.held(), 4);
    }

    #[test]
    fn forget_drops_a_folder_and_those_below() {
        let cache = SnapshotCache::new(100);
        cache.put(Path::new("/u/.A"), Some(stamp(1)), snapshot(1));
        cache.put(Path::new("/u/.A/sub"), Some(stamp(1)), snapshot(1));
        cache.put(Path::new("/u/.B"), Some(stamp(1)), snapshot(1));
        cache.forget(Path::new("/u/.A"));
        assert_eq!(cache.held(), 1);
    }
}
