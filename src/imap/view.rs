//! One IMAP session's view of its selected mailbox: message sequence
//! numbers, their UIDs, flags and `\Recent`, and the untagged updates
//! (EXPUNGE, EXISTS, RECENT, FETCH FLAGS) that bring the view up to date
//! with a newer snapshot of the folder. Sans-IO: it reads no files and
//! decides nothing about when an update may be sent; the session tells it
//! whether expunges may be reported now (RFC 3501 7.4.1: not during FETCH,
//! STORE or SEARCH, since sequence numbers must not move under a client).

use std::collections::{BTreeMap, HashSet};

use crate::mailbox::{Flags, MessageInfo, ModSeq, Uid, UidValidity};

/// One message as this session knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ViewEntry {
    pub uid: Uid,
    pub flags: Flags,
    pub modseq: ModSeq,
    /// `\Recent` for this session (RFC 3501 2.3.2): it took the message
    /// out of `new/`.
    pub recent: bool,
}

/// An untagged response the session owes the client, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Update {
    /// `* n EXPUNGE` (or its UID in `* VANISHED`, RFC 7162 3.2.10.2): the
    /// message at sequence number `n` is gone; later numbers shift down by
    /// one at once.
    Expunge(u32, Uid),
    /// `* n EXISTS`.
    Exists(u32),
    /// `* n RECENT`.
    Recent(u32),
    /// `* n FETCH (UID u FLAGS (...))`: another session changed flags.
    Flags { seq: u32, uid: Uid, flags: Flags },
}

/// See the module header.
#[derive(Debug, Clone)]
pub struct SelectedView {
    pub uid_validity: UidValidity,
    pub uid_next: Uid,
    pub read_only: bool,
    messages: Vec<ViewEntry>,
}

impl SelectedView {
    /// The view right after SELECT/EXAMINE: `messages` in UID order (as a
    /// snapshot lists them); `recent` the UIDs this session took from
    /// `new/`.
    pub fn new(
        uid_validity: UidValidity,
        uid_next: Uid,
        messages: &[MessageInfo],
        recent: &[Uid],
        read_only: bool,
    ) -> Self {
        let recent: HashSet<Uid> = recent.iter().copied().collect();
        SelectedView {
            uid_validity,
            uid_next,
            read_only,
            messages: messages
                .iter()
                .map(|m| ViewEntry {
                    uid: m.uid,
                    flags: m.flags,
                    modseq: m.modseq,
                    recent: recent.contains(&m.uid),
                })
                .collect(),
        }
    }

    pub fn len(&self) -> u32 {
        u32::try_from(self.messages.len()).unwrap_or(u32::MAX)
    }

    pub fn is_empty(&self) -> bool {
        self.messages.is_empty()
    }

    pub fn recent_count(&self) -> u32 {
        let n = self.messages.iter().filter(|m| m.recent).count();
        u32::try_from(n).unwrap_or(u32::MAX)
    }

    /// The first message without `\Seen` (for `[UNSEEN n]`).
    pub fn first_unseen(&self) -> Option<u32> {
        self.messages
            .iter()
            .position(|m| !m.flags.contains(crate::mailbox::Flag::Seen))
            .map(seq_of_index)
    }

    /// The message at sequence number `seq` (1-based).
    pub fn get(&self, seq: u32) -> Option<&ViewEntry> {
        let index = usize::try_from(seq).ok()?.checked_sub(1)?;
        self.messages.get(index)
    }

    /// The sequence number of `uid`, if the view has it.
    pub fn seq_of(&self, uid: Uid) -> Option<u32> {
        self.messages
            .binary_search_by_key(&uid, |m| m.uid)
            .ok()
            .map(seq_of_index)
    }

    /// Every message as (sequence number, entry).
    pub fn iter(&self) -> impl Iterator<Item = (u32, &ViewEntry)> {
        self.messages
            .iter()
            .enumerate()
            .map(|(i, m)| (seq_of_index(i), m))
    }

    /// The UIDs in the view, ascending.
    pub fn uids(&self) -> Vec<Uid> {
        self.messages.iter().map(|m| m.uid).collect()
    }

    /// The highest UID in the view (for `*` in UID sets, RFC 3501 6.4.8).
    pub fn max_uid(&self) -> Option<Uid> {
        self.messages.last().map(|m| m.uid)
    }

    /// Records flags this session itself set (STORE), so the next sync
    /// does not report them back as another session's change.
    pub fn set_flags(&mut self, uid: Uid, flags: Flags, modseq: ModSeq) {
        if let Ok(i) = self.messages.binary_search_by_key(&uid, |m| m.uid) {
            self.messages[i].flags = flags;
            self.messages[i].modseq = modseq;
        }
    }

    /// Brings the view up to `messages` (a newer snapshot in UID order) and
    /// returns the updates to send, in order. `new_recent` are UIDs this
    /// session has just taken from `new/`. With `allow_expunge` false the
    /// removed messages stay in the view (flag changes and new messages
    /// are still reported) until a later sync may expunge them.
    pub fn sync(
        &mut self,
        uid_next: Uid,
        messages: &[MessageInfo],
        new_recent: &[Uid],
        allow_expunge: bool,
    ) -> Vec<Update> {
        let mut updates = Vec::new();
        let current: BTreeMap<Uid, &MessageInfo> = messages.iter().map(|m| (m.uid, m)).collect();
        if allow_expunge {
            // Highest first would need no renumbering, but ascending order
            // with shifting numbers is what clients see from most servers;
            // both are correct (RFC 3501 7.4.1).
            let mut index = 0;
            while index < self.messages.len() {
                if current.contains_key(&self.messages[index].uid) {
                    index += 1;
                } else {
                    let gone = self.messages.remove(index);
                    updates.push(Update::Expunge(seq_of_index(index), gone.uid));
                }
            }
        }
        for (i, entry) in self.messages.iter_mut().enumerate() {
            let Some(now) = current.get(&entry.uid) else {
                continue;
            };
            if now.flags != entry.flags {
                entry.flags = now.flags;
                updates.push(Update::Flags {
                    seq: seq_of_index(i),
                    uid: entry.uid,
                    flags: now.flags,
                });
            }
            entry.modseq = now.modseq;
        }
        let known_max = self.max_uid();
        let recent: HashSet<Uid> = new_recent.iter().copied().collect();
        let mut added = false;
        for m in messages {
            if known_max.is_some_and(|max| m.uid <= max) {
                continue;
            }
            self.messages.push(ViewEntry {
                uid: m.uid,
                flags: m.flags,
                modseq: m.modseq,
                recent: recent.contains(&m.uid),
            });
            added = true;
        }
        if added {
            updates.push(Update::Exists(self.len()));
            updates.push(Update::Recent(self.recent_count()));
        }
        if uid_next > self.uid_next {
            self.uid_next = uid_next;
        }
        updates
    }
}

fn seq_of_index(index: usize) -> u32 {
    u32::try_from(index + 1).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::time::SystemTime;

    use super::*;
    use crate::mailbox::Flag;

    fn uid(n: u32) -> Uid {
        Uid::new(n).unwrap()
    }

    fn info(n: u32, flags: Flags) -> MessageInfo {
        MessageInfo {
            uid: uid(n),
            size: 100,
            flags,
            recent: false,
            internal_date: SystemTime::UNIX_EPOCH,
            modseq: ModSeq::new(u64::from(n)),
            path: PathBuf::from(format!("cur/{n}")),
        }
    }

    fn view(uids: &[u32]) -> SelectedView {
        let messages: Vec<_> = uids.iter().map(|&n| info(n, Flags::empty())).collect();
        SelectedView::new(
            UidValidity::new(7).unwrap(),
            uid(uids.last().copied().unwrap_or(0) + 1),
            &messages,
            &[],
            false,
        )
    }

    #[test]
    fn sequence_numbers_follow_uid_order() {
        let v = view(&[3, 5, 9]);
        assert_eq!(v.len(), 3);
        assert_eq!(v.seq_of(uid(5)), Some(2));
        assert_eq!(v.seq_of(uid(4)), None);
        assert_eq!(v.get(3).map(|e| e.uid), Some(uid(9)));
        assert_eq!(v.get(0), None);
        assert_eq!(v.get(4), None);
        assert_eq!(v.first_unseen(), Some(1));
    }

    #[test]
    fn expunges_renumber_as_they_are_reported() {
        let mut v = view(&[1, 2, 3, 4, 5]);
        let now: Vec<_> = [1, 3, 5].iter().map(|&n| info(n, Flags::empty())).collect();
        let updates = v.sync(uid(6), &now, &[], true);
        // UID 2 is at 2; after it goes, UID 4 is at 3.
        assert_eq!(
            updates,
            vec![Update::Expunge(2, uid(2)), Update::Expunge(3, uid(4))]
        );
        assert_eq!(v.len(), 3);
        assert_eq!(v.seq_of(uid(5)), Some(3));
    }

    #[test]
    fn expunges_wait_while_not_allowed_but_new_mail_and_flags_show() {
        let mut v = view(&[1, 2]);
        let seen = Flags::empty().with(Flag::Seen);
        let now = vec![info(1, seen), info(3, Flags::empty())];
        let updates = v.sync(uid(4), &now, &[uid(3)], false);
        assert_eq!(
            updates,
            vec![
                Update::Flags {
                    seq: 1,
                    uid: uid(1),
                    flags: seen
                },
                Update::Exists(3),
                Update::Recent(1),
            ]
        );
        assert_eq!(v.seq_of(uid(2)), Some(2), "kept until expunges may be sent");
        let updates = v.sync(uid(4), &now, &[], true);
        assert_eq!(updates, vec![Update::Expunge(2, uid(2))]);
        assert_eq!(v.seq_of(uid(3)), Some(2));
        assert!(v.get(2).unwrap().recent);
    }

    #[test]
    fn own_flag_changes_are_not_reported_back() {
        let mut v = view(&[1]);
        let flagged = Flags::empty().with(Flag::Flagged);
        v.set_flags(uid(1), flagged, ModSeq::new(9));
        let updates = v.sync(uid(2), &[info(1, flagged)], &[], true);
        assert!(updates.is_empty(), "{updates:?}");
    }

    #[test]
    fn an_unchanged_mailbox_owes_nothing() {
        let mut v = view(&[1, 2]);
        let now = vec![info(1, Flags::empty()), info(2, Flags::empty())];
        assert!(v.sync(uid(3), &now, &[], true).is_empty());
        let mut empty = view(&[]);
        assert!(empty.sync(uid(1), &[], &[], true).is_empty());
        assert_eq!(empty.max_uid(), None);
    }
}
