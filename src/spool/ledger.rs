//! In-memory bookkeeping for reclaim: which messages of each segment are
//! still live, which segments hold Finished markers that other segments'
//! messages depend on, which hold delivery state of messages still live,
//! and which segments may therefore be deleted. It
//! never touches a file; the spool deletes what it names.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use crate::chunked::ChunkedMap;

use super::id::{SegmentId, SpoolId};

#[derive(Default, Debug)]
struct Entry {
    /// Live messages by offset, with their record crc (quoted by markers);
    /// offsets come nearly in order, which a `ChunkedMap` keeps in 8 bytes
    /// and a little each (a hash map took about 19).
    live: ChunkedMap<u32, u32>,
    /// Records reserved in this segment whose commit has not finished: the
    /// segment may not go while a marker in it could still become durable.
    in_flight: u32,
    /// Segments of this spool holding messages that markers in this segment
    /// finished: this segment must outlive them, or they would resurrect.
    targets: BTreeSet<SegmentId>,
    /// The same for segments of shard directories this spool does not own;
    /// their deletion is checked on disk.
    foreign_targets: BTreeSet<SegmentId>,
    /// Live messages whose delivery state (outcomes, deferrals) this
    /// segment holds: it must stay while they are live, or a restart would
    /// retry finished recipients. Once they finish, the state is moot and
    /// pins nothing (unlike a marker, which must outlive its target).
    pins: HashSet<SpoolId>,
    active: bool,
}

/// Reclaim state of every segment this spool owns.
#[derive(Default, Debug)]
pub(crate) struct Ledger {
    segments: BTreeMap<SegmentId, Entry>,
}

impl Ledger {
    pub(crate) fn add_segment(&mut self, seg: SegmentId) {
        self.segments.entry(seg).or_default();
    }

    pub(crate) fn set_active(&mut self, seg: SegmentId, active: bool) {
        self.segments.entry(seg).or_default().active = active;
    }

    pub(crate) fn add_live(&mut self, id: SpoolId, crc: u32) {
        let e = self.segments.entry(id.segment()).or_default();
        e.live.insert(id.offset(), crc);
    }

    /// The record crc of a live message, `None` if it is not live here.
    pub(crate) fn live_crc(&self, id: SpoolId) -> Option<u32> {
        self.segments
            .get(&id.segment())
            .and_then(|e| e.live.get(&id.offset()).copied())
    }

    /// Whether `id` is a live message of a segment this spool owns.
    pub(crate) fn is_live(&self, id: SpoolId) -> bool {
        self.live_crc(id).is_some()
    }

    /// Notes that `holder` holds delivery state of the live message `id`.
    pub(crate) fn pin(&mut self, holder: SegmentId, id: SpoolId) {
        if holder != id.segment() {
            self.segments.entry(holder).or_default().pins.insert(id);
        }
    }

    pub(crate) fn begin_write(&mut self, seg: SegmentId) {
        self.segments.entry(seg).or_default().in_flight += 1;
    }

    pub(crate) fn end_write(&mut self, seg: SegmentId) {
        if let Some(e) = self.segments.get_mut(&seg) {
            e.in_flight = e.in_flight.saturating_sub(1);
        }
    }

    /// Records that a durable marker in `holder` finished `id`. Returns
    /// false if `id` was not live (finished twice: harmless).
    pub(crate) fn finish(&mut self, id: SpoolId, holder: SegmentId) -> bool {
        let target = id.segment();
        let was_live = self
            .segments
            .get_mut(&target)
            .is_some_and(|e| e.live.remove(&id.offset()).is_some());
        if was_live && target != holder {
            self.segments
                .entry(holder)
                .or_default()
                .targets
                .insert(target);
        }
        was_live
    }

    /// Notes, at recovery, that a marker in `holder` finished a message in
    /// `target`, a segment this spool owns (`owned`) or not.
    pub(crate) fn add_dependency(&mut self, holder: SegmentId, target: SegmentId, owned: bool) {
        if holder == target {
            return;
        }
        let e = self.segments.entry(holder).or_default();
        if owned {
            e.targets.insert(target);
        } else {
            e.foreign_targets.insert(target);
        }
    }

    /// Segments that can be deleted now: not active, nothing live or in
    /// flight, no state of a live message, and every segment they hold
    /// markers for already gone.
    /// `foreign_exists` asks the disk about segments of other shards.
    pub(crate) fn reclaimable(&self, foreign_exists: impl Fn(SegmentId) -> bool) -> Vec<SegmentId> {
        self.segments
            .iter()
            .filter(|(_, e)| {
                !e.active
                    && e.live.is_empty()
                    && e.in_flight == 0
                    && e.pins.iter().all(|m| !self.is_live(*m))
                    && e.targets.iter().all(|t| !self.segments.contains_key(t))
                    && e.foreign_targets.iter().all(|t| !foreign_exists(*t))
            })
            .map(|(s, _)| *s)
            .collect()
    }

    /// The shard directories of the other shards' segments that markers in
    /// `seg` finished messages of: before `seg` goes, the removal of those
    /// segments must be durable, not only out of sight (an unlinked file
    /// whose directory was not yet fsynced comes back after a power cut,
    /// and without the marker its messages would come back with it).
    pub(crate) fn foreign_dirs(&self, seg: SegmentId) -> BTreeSet<u8> {
        self.segments
            .get(&seg)
            .map(|e| e.foreign_targets.iter().map(|t| t.shard).collect())
            .unwrap_or_default()
    }

    /// Forgets a deleted segment.
    pub(crate) fn remove(&mut self, seg: SegmentId) {
        self.segments.remove(&seg);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(seq: u32) -> SegmentId {
        SegmentId { shard: 0, seq }
    }
    fn id(seq: u32, off: u32) -> SpoolId {
        SpoolId::new(seg(seq), off).expect("small seq")
    }

    #[test]
    fn marker_holder_outlives_target() {
        let mut l = Ledger::default();
        l.add_segment(seg(1));
        l.add_segment(seg(2));
        l.set_active(seg(3), true);
        l.add_live(id(1, 0), 11);
        l.add_live(id(2, 0), 22);
        // seg 2's message finished by a marker in seg 2 itself; seg 1's by a
        // marker in seg 2.
        assert!(l.finish(id(2, 0), seg(2)));
        assert!(l.finish(id(1, 0), seg(2)));
        assert!(!l.finish(id(1, 0), seg(2)));
        // seg 2 must wait for seg 1
        assert_eq!(l.reclaimable(|_| false), vec![seg(1)]);
        l.remove(seg(1));
        assert_eq!(l.reclaimable(|_| false), vec![seg(2)]);
    }

    #[test]
    fn state_pins_only_while_its_message_is_live() {
        let mut l = Ledger::default();
        l.add_segment(seg(1));
        l.add_segment(seg(2));
        l.add_live(id(1, 0), 11);
        l.add_live(id(1, 64), 12);
        // seg 2 holds a deferral of id(1, 0) and nothing else
        l.pin(seg(2), id(1, 0));
        assert!(l.reclaimable(|_| false).is_empty());
        // its message finishes (marker in seg 1 itself): seg 2 may go at
        // once, although seg 1 still holds a live message
        assert!(l.finish(id(1, 0), seg(1)));
        assert_eq!(l.reclaimable(|_| false), vec![seg(2)]);
        l.remove(seg(2));
        assert!(l.finish(id(1, 64), seg(1)));
        assert_eq!(l.reclaimable(|_| false), vec![seg(1)]);
    }

    #[test]
    fn in_flight_and_foreign_pin() {
        let mut l = Ledger::default();
        l.add_segment(seg(1));
        l.begin_write(seg(1));
        assert!(l.reclaimable(|_| false).is_empty());
        l.end_write(seg(1));
        let foreign = SegmentId { shard: 9, seq: 4 };
        l.add_dependency(seg(1), foreign, false);
        assert!(l.reclaimable(|_| true).is_empty());
        assert_eq!(l.reclaimable(|_| false), vec![seg(1)]);
    }
}
