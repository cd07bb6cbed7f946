//! RFC 7162 CONDSTORE and QRESYNC for the selected state, sans-IO: which
//! extensions a connection enabled, which UIDs a `VANISHED (EARLIER)`
//! names (from the folder's bounded expunge history, or every UID the
//! client may know that is gone when the history cannot tell), the
//! sequence-match floor of a QRESYNC SELECT, and the `VANISHED` and
//! `HIGHESTMODSEQ` responses. It refuses to read folders or decide when
//! responses may be sent: [`super::selected`] does.

use std::num::NonZeroU32;

use super::command::{SearchKey, SeqNumber, SeqRange, SequenceSet};
use super::response::{write_code, Code};
use crate::mailbox::{ExpungeHistory, ModSeq, Uid};

/// Numbers a client's `seq-match-data` set may expand to; past it the
/// match data is ignored (it only narrows a reply, RFC 7162 3.2.5.2).
pub const MAX_MATCH_PAIRS: usize = 10_000;

/// What the client enabled on this connection (RFC 7162 3.1 "CONDSTORE
/// enabling commands", 3.2.3 ENABLE QRESYNC); it lasts until logout.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Enabled {
    /// MODSEQ (and UID) in every untagged FETCH, HIGHESTMODSEQ on SELECT.
    pub condstore: bool,
    /// VANISHED instead of EXPUNGE; QRESYNC select parameter and the
    /// VANISHED FETCH modifier allowed. Implies `condstore`.
    pub qresync: bool,
}

/// Whether any of `criteria` (at any depth) is a MODSEQ key: the SEARCH
/// is then a CONDSTORE enabling command and its reply ends with
/// `(MODSEQ n)` (RFC 7162 3.1.5).
pub fn has_modseq_key(criteria: &[SearchKey<'_>]) -> bool {
    criteria.iter().any(|key| match key {
        SearchKey::ModSeq { .. } => true,
        SearchKey::Not(inner) => has_modseq_key(std::slice::from_ref(inner)),
        SearchKey::Or(a, b) => {
            has_modseq_key(std::slice::from_ref(a)) || has_modseq_key(std::slice::from_ref(b))
        }
        SearchKey::And(keys) => has_modseq_key(keys),
        _ => false,
    })
}

/// `1:<uid_next - 1>`: the UIDs a client may know when it names none
/// (RFC 7162 3.2.5.1); `None` for a folder that never had a message.
pub fn all_uids(uid_next: Uid) -> Option<SequenceSet> {
    let last = NonZeroU32::new(uid_next.get().saturating_sub(1))?;
    Some(SequenceSet::Ranges(vec![SeqRange {
        start: SeqNumber::Value(NonZeroU32::MIN),
        end: SeqNumber::Value(last),
    }]))
}

/// The UIDs of `set` below `uid_next` and above `floor` that are not in
/// `present` (sorted), as sorted disjoint `(low, high)` ranges. `*` is
/// the last UID handed out. The result has at most one range more than
/// `present` has UIDs per range of `set`, however large the set.
pub fn absent_ranges(
    set: &SequenceSet,
    uid_next: Uid,
    floor: u32,
    present: &[Uid],
) -> Vec<(u32, u32)> {
    let SequenceSet::Ranges(ranges) = set else {
        return Vec::new();
    };
    let last = uid_next.get().saturating_sub(1);
    let mut wanted: Vec<(u32, u32)> = ranges
        .iter()
        .map(|r| r.resolve(last))
        .map(|(lo, hi)| (lo.max(floor.saturating_add(1)), hi.min(last)))
        .filter(|(lo, hi)| lo <= hi)
        .collect();
    wanted.sort_unstable();
    let mut merged: Vec<(u32, u32)> = Vec::with_capacity(wanted.len());
    for (lo, hi) in wanted {
        match merged.last_mut() {
            Some(prev) if lo <= prev.1.saturating_add(1) => prev.1 = prev.1.max(hi),
            _ => merged.push((lo, hi)),
        }
    }
    let mut out = Vec::new();
    for (lo, hi) in merged {
        // u64: the UID after u32::MAX must not wrap or saturate.
        let mut next = u64::from(lo);
        let start = present.partition_point(|u| u.get() < lo);
        for uid in present[start..].iter().map(|u| u.get()) {
            if uid > hi {
                break;
            }
            if u64::from(uid) > next {
                out.push((next as u32, uid - 1));
            }
            next = u64::from(uid) + 1;
        }
        if next <= u64::from(hi) {
            out.push((next as u32, hi));
        }
    }
    out
}

/// The UIDs a `VANISHED (EARLIER)` names for a client that knew `set` at
/// modseq `since`, as ranges: the expunges after `since` the history
/// remembers, or, when it cannot tell (RFC 7162 3.2.6: a modseq older
/// than what the server remembers), every UID of `set` above `floor` that
/// is gone. UIDs still in the view (`present`) are never named: their
/// expunge is reported by a plain VANISHED when it may be.
pub fn vanished_since(
    history: &ExpungeHistory,
    since: ModSeq,
    set: &SequenceSet,
    uid_next: Uid,
    floor: u32,
    present: &[Uid],
) -> Vec<(u32, u32)> {
    let Some(uids) = history.since(since) else {
        return absent_ranges(set, uid_next, floor, present);
    };
    let last = uid_next.get().saturating_sub(1);
    let mut out: Vec<(u32, u32)> = Vec::new();
    for uid in uids {
        if !set.contains(uid.get(), last) || present.binary_search(&uid).is_ok() {
            continue;
        }
        let n = uid.get();
        match out.last_mut() {
            Some(prev) if prev.1.checked_add(1) == Some(n) => prev.1 = n,
            _ => out.push((n, n)),
        }
    }
    out
}

/// RFC 7162 3.2.5.2: the highest UID of the client's (sequence number,
/// UID) pairs that still match the view (`uid_at(seq)`): the client knows
/// every expunge up to it. 0 when none match or the data is unusable
/// (sets of different lengths, or too long).
pub fn seq_match_floor(
    seqs: &SequenceSet,
    uids: &SequenceSet,
    largest_seq: u32,
    largest_uid: u32,
    uid_at: impl Fn(u32) -> Option<Uid>,
) -> u32 {
    let (Some(seqs), Some(uids)) = (expand(seqs, largest_seq), expand(uids, largest_uid)) else {
        return 0;
    };
    if seqs.len() != uids.len() {
        return 0;
    }
    seqs.iter()
        .zip(&uids)
        .filter(|&(&seq, &uid)| uid_at(seq).is_some_and(|u| u.get() == uid))
        .map(|(_, &uid)| uid)
        .max()
        .unwrap_or(0)
}

/// The numbers of `set` in the order given; `None` past
/// [`MAX_MATCH_PAIRS`].
fn expand(set: &SequenceSet, largest: u32) -> Option<Vec<u32>> {
    let SequenceSet::Ranges(ranges) = set else {
        return None;
    };
    let mut out = Vec::new();
    for range in ranges {
        let (lo, hi) = range.resolve(largest);
        let count = usize::try_from(hi - lo).ok()?.checked_add(1)?;
        if out.len() + count > MAX_MATCH_PAIRS {
            return None;
        }
        out.extend(lo..=hi);
    }
    Some(out)
}

/// `* VANISHED [(EARLIER) ]uid-set` (RFC 7162 3.2.10); nothing for no
/// UIDs.
pub fn write_vanished(out: &mut Vec<u8>, earlier: bool, ranges: &[(u32, u32)]) {
    if ranges.is_empty() {
        return;
    }
    out.extend_from_slice(b"* VANISHED ");
    if earlier {
        out.extend_from_slice(b"(EARLIER) ");
    }
    for (i, &(lo, hi)) in ranges.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(lo.to_string().as_bytes());
        if hi != lo {
            out.push(b':');
            out.extend_from_slice(hi.to_string().as_bytes());
        }
    }
    out.extend_from_slice(b"\r\n");
}

/// `* OK [HIGHESTMODSEQ n] Highest` (RFC 7162 3.1.2.1).
pub fn write_highest_modseq(out: &mut Vec<u8>, highest: ModSeq) {
    out.extend_from_slice(b"* OK ");
    write_code(out, &Code::HighestModSeq(highest.get()));
    out.extend_from_slice(b" Highest\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::imap::parse_command;
    use crate::imap::CommandBody;

    fn uid(n: u32) -> Uid {
        Uid::new(n).unwrap()
    }

    fn uids(ns: &[u32]) -> Vec<Uid> {
        ns.iter().map(|&n| uid(n)).collect()
    }

    /// The set of a `UID FETCH <set> UID`.
    fn set(text: &str) -> SequenceSet {
        let line = format!("a UID FETCH {text} UID");
        match parse_command(line.as_bytes()).unwrap().body {
            CommandBody::Fetch { set, .. } => set,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn absent_ranges_subtract_present_uids_within_uid_next() {
        let present = uids(&[2, 4, 5, 9]);
        assert_eq!(
            absent_ranges(&set("1:*"), uid(11), 0, &present),
            vec![(1, 1), (3, 3), (6, 8), (10, 10)]
        );
        // Overlapping, unordered ranges; past UIDNEXT is cut.
        assert_eq!(
            absent_ranges(&set("7:100,3:6"), uid(11), 0, &present),
            vec![(3, 3), (6, 8), (10, 10)]
        );
        // A floor from sequence-match data hides what the client knows.
        assert_eq!(
            absent_ranges(&set("1:*"), uid(11), 5, &present),
            vec![(6, 8), (10, 10)]
        );
        assert!(absent_ranges(&set("1:*"), uid(1), 0, &[]).is_empty());
        // Huge sets cost what the present UIDs cost.
        assert_eq!(
            absent_ranges(&set("1:4294967295"), Uid::MAX, 0, &present).len(),
            4
        );
    }

    #[test]
    fn vanished_uses_history_or_everything_gone_when_truncated() {
        let history = ExpungeHistory {
            floor: ModSeq::new(10),
            entries: vec![
                (uid(3), ModSeq::new(11)),
                (uid(6), ModSeq::new(12)),
                (uid(7), ModSeq::new(12)),
            ],
        };
        let present = uids(&[2, 4, 5, 9]);
        let all = set("1:*");
        assert_eq!(
            vanished_since(&history, ModSeq::new(11), &all, uid(11), 0, &present),
            vec![(6, 7)]
        );
        assert_eq!(
            vanished_since(&history, ModSeq::new(10), &set("1:6"), uid(11), 0, &present),
            vec![(3, 3), (6, 6)]
        );
        // Older than the history: every UID of the set that is gone.
        assert_eq!(
            vanished_since(&history, ModSeq::new(9), &all, uid(11), 0, &present),
            vec![(1, 1), (3, 3), (6, 8), (10, 10)]
        );
        // A UID still in the view is not named.
        assert_eq!(
            vanished_since(&history, ModSeq::new(10), &all, uid(11), 0, &uids(&[3])),
            vec![(6, 7)]
        );
    }

    #[test]
    fn seq_match_floor_is_the_highest_matching_pair() {
        let view = uids(&[3, 6, 9, 12]);
        let at = |seq: u32| view.get(seq as usize - 1).copied();
        // RFC 7162 3.2.5.2: 2->6 matches, 4->13 does not.
        assert_eq!(seq_match_floor(&set("1:2,4"), &set("3,6,13"), 4, 13, at), 6);
        assert_eq!(seq_match_floor(&set("1"), &set("2"), 4, 13, at), 0);
        assert_eq!(
            seq_match_floor(&set("1:2"), &set("3"), 4, 13, at),
            0,
            "lengths differ"
        );
        assert_eq!(
            seq_match_floor(&set("1:*"), &set("1:*"), 4_000_000, 4_000_000, at),
            0
        );
    }

    #[test]
    fn modseq_keys_are_found_at_any_depth() {
        let found = |text: &str| {
            let line = format!("a SEARCH {text}");
            match parse_command(line.as_bytes()).unwrap().body {
                CommandBody::Search { criteria, .. } => has_modseq_key(&criteria),
                other => panic!("{other:?}"),
            }
        };
        assert!(found("SEEN (OR NOT MODSEQ 3 ALL)"));
        assert!(!found("SEEN (OR NOT LARGER 3 ALL)"));
    }

    #[test]
    fn vanished_response_forms() {
        let mut out = Vec::new();
        write_vanished(&mut out, true, &[(1, 3), (7, 7)]);
        write_vanished(&mut out, false, &[(9, 9)]);
        write_vanished(&mut out, false, &[]);
        assert_eq!(out, b"* VANISHED (EARLIER) 1:3,7\r\n* VANISHED 9\r\n");
    }
}
