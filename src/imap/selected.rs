//! The selected state of a session (RFC 3501 6.4): opening a mailbox with SELECT/EXAMINE,
//! keeping the view in step with the store (EXPUNGE, EXISTS, RECENT, FETCH FLAGS updates), and
//! the commands that work on its messages: FETCH, STORE, SEARCH, COPY, MOVE, EXPUNGE, CLOSE.
//! It refuses to handle commands of other states, tagged status lines for success, or
//! authentication: the session does.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Read};
use std::sync::Arc;
use std::time::SystemTime;

use super::command::{
    FetchAttribute, FetchItems, Flag, Qresync, SearchKey, SeqNumber, SequenceSet, SortKey,
    StoreAction, ThreadAlgorithm,
};
use super::condstore::{self, Enabled};
use super::fetch::{self, Fetched};
use super::flag::{self as flag, defined_flags, flags_of, imap_flags, keyword_names};
use super::mime::MessageStructure;
use super::reply::Say;
use super::response::{write_code, write_flags, write_untagged_status, Code, Status};
use super::search::{self, Candidate, Largest, Message};
use super::sort;
use super::thread::{self, ThreadMessage};
use super::view::{SelectedView, Update};
use crate::mailbox::{
    ExpungeHistory, Flag as MaildirFlag, Flags, Folder, FolderName, KeywordTable, MailboxError,
    ModSeq, Stamp, Uid,
};

/// Why a selected-state command did not complete.
#[derive(Debug)]
pub enum Failure {
    /// The client's error: tagged BAD.
    Bad(Say),
    /// Refused: tagged NO with a code.
    No(Code<'static>, Say),
    Store(MailboxError),
}

impl From<MailboxError> for Failure {
    fn from(e: MailboxError) -> Self {
        Failure::Store(e)
    }
}

/// RFC 4315 3 COPYUID: the destination's UIDVALIDITY and the UIDs,
/// pairwise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyUid {
    pub validity: u32,
    pub source: Vec<u32>,
    pub destination: Vec<u32>,
}

/// A FETCH under way (see [`Selected::fetch_begin`]): the messages it has
/// still to write and what it needs to write them, kept in the session
/// between the parts of a long reply.
#[derive(Debug)]
pub struct FetchCursor {
    uid_command: bool,
    attrs: Vec<FetchAttribute<'static>>,
    needs: fetch::Needs,
    /// (sequence number, UID) in sequence order; `next` is the first not
    /// written.
    targets: Vec<(u32, Uid)>,
    next: usize,
    /// The messages this FETCH marked `\Seen`: their responses carry
    /// FLAGS (and UID and MODSEQ under CONDSTORE, RFC 7162 3.2.4).
    marked: HashSet<Uid>,
    condstore: bool,
    complete: bool,
}

impl FetchCursor {
    /// UID FETCH: the updates that follow may report expunges.
    pub fn uid_command(&self) -> bool {
        self.uid_command
    }

    /// Every message could be read; false when some had gone (the caller
    /// answers `OK [EXPUNGEISSUED]`).
    pub fn complete(&self) -> bool {
        self.complete
    }
}

/// Size and internal date of a message, from the last snapshot.
#[derive(Debug, Clone, Copy)]
struct Info {
    size: u64,
    internal_date: SystemTime,
}

/// An open mailbox: the folder, this session's view of it, and what was
/// learnt about its messages.
#[derive(Debug)]
pub struct Selected {
    pub name: FolderName,
    pub folder: Folder,
    pub view: SelectedView,
    info: HashMap<Uid, Info>,
    /// The folder's keyword names as this session last announced them.
    keywords: Arc<KeywordTable>,
    /// Parsed structures by UID (UIDs never come back within one
    /// UIDVALIDITY, so an entry never goes stale); at most
    /// `max_structures`, emptied when full.
    structures: HashMap<Uid, Arc<MessageStructure>>,
    max_structures: usize,
    /// Structures parsed by this FETCH, for the folder's on-disk cache.
    parsed: Vec<(Uid, Vec<u8>)>,
    /// Records the on-disk cache held when last read.
    disk_records: usize,
    /// The folder's change stamp when it was last scanned, if it was
    /// settled then (see [`Stamp::settled_now`]).
    scanned: Option<Stamp>,
    /// The last sync could not report expunges: the next that may must
    /// compare, even if the folder did not change.
    expunges_held: bool,
    /// RFC 7162: what the connection enabled (it changes while selected
    /// when a CONDSTORE enabling command runs).
    pub enabled: Enabled,
    /// The folder's highest modseq as of the last sync.
    highest_modseq: ModSeq,
    /// The folder's remembered expunges as of the last sync.
    expunged: Arc<ExpungeHistory>,
}

impl Selected {
    /// SELECT or EXAMINE (RFC 3501 6.3.1/6.3.2): takes this session's
    /// `\Recent` messages (not for EXAMINE, which changes nothing) and
    /// writes the untagged responses; the caller writes the tagged OK with
    /// [`Selected::access_code`].
    pub fn open(
        name: FolderName,
        folder: Folder,
        read_only: bool,
        max_structures: usize,
        enabled: Enabled,
        out: &mut Vec<u8>,
    ) -> Result<Selected, MailboxError> {
        let taken = if read_only {
            Vec::new()
        } else {
            folder.take_recent()?
        };
        // Taken before the scan: a change during it makes the next differ.
        let scanned = Stamp::settled_now(folder.path());
        let snap = folder.snapshot()?;
        let recent: Vec<Uid> = if read_only {
            snap.messages
                .iter()
                .filter(|m| m.recent)
                .map(|m| m.uid)
                .collect()
        } else {
            taken
        };
        let view = SelectedView::new(
            snap.uid_validity,
            snap.uid_next,
            &snap.messages,
            &recent,
            read_only,
        );
        let info = snap
            .messages
            .iter()
            .map(|m| {
                let info = Info {
                    size: m.size,
                    internal_date: m.internal_date,
                };
                (m.uid, info)
            })
            .collect();
        write_defined_flags(out, &snap.keywords);
        write_count(out, view.len(), "EXISTS");
        write_count(out, view.recent_count(), "RECENT");
        if let Some(seq) = view.first_unseen() {
            write_untagged_status(out, Status::Ok, Some(&Code::Unseen(seq)), "First unseen");
        }
        write_permanent_flags(out, &snap.keywords, read_only);
        let validity = Code::UidValidity(view.uid_validity.get());
        write_untagged_status(out, Status::Ok, Some(&validity), "UIDs valid");
        let next = Code::UidNext(view.uid_next.get());
        write_untagged_status(out, Status::Ok, Some(&next), "Predicted next UID");
        if enabled.condstore {
            // RFC 7162 3.1.2.1.
            condstore::write_highest_modseq(out, snap.highest_modseq);
        }
        Ok(Selected {
            name,
            folder,
            view,
            info,
            keywords: Arc::clone(&snap.keywords),
            structures: HashMap::new(),
            max_structures,
            parsed: Vec::new(),
            disk_records: 0,
            scanned,
            expunges_held: false,
            enabled,
            highest_modseq: snap.highest_modseq,
            expunged: Arc::clone(&snap.expunged),
        })
    }

    /// The folder's highest modseq as this session last saw it.
    pub fn highest_modseq(&self) -> ModSeq {
        self.highest_modseq
    }

    /// A CONDSTORE enabling command ran (RFC 7162 3.1): the first one
    /// while a mailbox is selected reports its HIGHESTMODSEQ.
    pub fn enable_condstore(&mut self, out: &mut Vec<u8>) {
        if !self.enabled.condstore {
            self.enabled.condstore = true;
            condstore::write_highest_modseq(out, self.highest_modseq);
        }
    }

    /// The QRESYNC select parameter (RFC 7162 3.2.5), after the usual
    /// SELECT responses: when the UIDVALIDITY is the client's, the UIDs
    /// it knew that are gone (`VANISHED (EARLIER)`), then the flags of
    /// the messages changed since its modseq.
    pub fn qresync(&self, out: &mut Vec<u8>, params: &Qresync) {
        if params.uid_validity.get() != self.view.uid_validity.get() {
            return;
        }
        let since = ModSeq::new(params.modseq);
        let uid_next = self.view.uid_next;
        let last_uid = uid_next.get().saturating_sub(1);
        let Some(known) = params
            .known_uids
            .clone()
            .or_else(|| condstore::all_uids(uid_next))
        else {
            return;
        };
        let present = self.view.uids();
        // RFC 7162 3.2.5.2: only needed when the history cannot tell.
        let floor = match (&params.seq_match, self.expunged.since(since)) {
            (Some((seqs, uids)), None) => {
                condstore::seq_match_floor(seqs, uids, self.view.len(), last_uid, |seq| {
                    self.view.get(seq).map(|e| e.uid)
                })
            }
            _ => 0,
        };
        let vanished =
            condstore::vanished_since(&self.expunged, since, &known, uid_next, floor, &present);
        condstore::write_vanished(out, true, &vanished);
        for (seq, entry) in self.view.iter() {
            if entry.modseq > since && known.contains(entry.uid.get(), last_uid) {
                let flags = imap_flags(entry.flags, entry.recent, &self.keywords);
                write_flags_fetch(
                    out,
                    seq,
                    Some(entry.uid),
                    Some(flags.as_slice()),
                    Some(entry.modseq),
                );
            }
        }
    }

    /// UID FETCH's VANISHED modifier (RFC 7162 3.2.6): the UIDs of `set`
    /// expunged since `since`, as `VANISHED (EARLIER)`, before any FETCH.
    pub fn write_vanished_earlier(&self, out: &mut Vec<u8>, set: &SequenceSet, since: u64) {
        let present = self.view.uids();
        let vanished = condstore::vanished_since(
            &self.expunged,
            ModSeq::new(since),
            set,
            self.view.uid_next,
            0,
            &present,
        );
        condstore::write_vanished(out, true, &vanished);
    }

    /// Tells the client the folder's flags changed (new keywords).
    fn announce_keywords(&mut self, out: &mut Vec<u8>, keywords: Arc<KeywordTable>) {
        write_defined_flags(out, &keywords);
        write_permanent_flags(out, &keywords, self.view.read_only);
        self.keywords = keywords;
    }

    /// `[READ-WRITE]` or `[READ-ONLY]` for the tagged OK.
    pub fn access_code(&self) -> Code<'static> {
        if self.view.read_only {
            Code::ReadOnly
        } else {
            Code::ReadWrite
        }
    }

    /// Brings the view up to date and writes the updates (RFC 3501 7.4.1:
    /// `allow_expunge` is false while answering FETCH, STORE or SEARCH).
    pub fn sync(&mut self, out: &mut Vec<u8>, allow_expunge: bool) -> Result<(), MailboxError> {
        // Rescanning a big folder (a readdir and a stat per message) for
        // every command is the cost to avoid: skip it while nothing changed.
        let unchanged = self.scanned.is_some() && Stamp::read(self.folder.path()) == self.scanned;
        if unchanged && !(self.expunges_held && allow_expunge) {
            return Ok(());
        }
        let taken = if self.view.read_only {
            Vec::new()
        } else {
            self.folder.take_recent()?
        };
        self.scanned = Stamp::settled_now(self.folder.path());
        let snap = self.folder.snapshot()?;
        self.highest_modseq = self.highest_modseq.max(snap.highest_modseq);
        self.expunged = Arc::clone(&snap.expunged);
        let new_recent: Vec<Uid> = if self.view.read_only {
            snap.messages
                .iter()
                .filter(|m| m.recent)
                .map(|m| m.uid)
                .collect()
        } else {
            taken
        };
        for m in &snap.messages {
            self.info.insert(
                m.uid,
                Info {
                    size: m.size,
                    internal_date: m.internal_date,
                },
            );
        }
        if snap.keywords != self.keywords {
            // RFC 3501 7.2.6: the defined flags changed (another session
            // added a keyword).
            self.announce_keywords(out, Arc::clone(&snap.keywords));
        }
        let updates = self
            .view
            .sync(snap.uid_next, &snap.messages, &new_recent, allow_expunge);
        self.expunges_held = self.view.len() as usize > snap.messages.len();
        let mut expunged = false;
        // RFC 7162 3.2.10.2: under QRESYNC one `VANISHED` for the batch.
        let mut vanished: Vec<(u32, u32)> = Vec::new();
        for update in updates {
            if !matches!(update, Update::Expunge(..)) && !vanished.is_empty() {
                // Expunges come first in a batch: they are reported
                // before the counts and flags that follow them.
                let ranges = merge_ranges(std::mem::take(&mut vanished));
                condstore::write_vanished(out, false, &ranges);
            }
            match update {
                Update::Expunge(seq, uid) => {
                    expunged = true;
                    if self.enabled.qresync {
                        vanished.push((uid.get(), uid.get()));
                    } else {
                        write_count(out, seq, "EXPUNGE");
                    }
                }
                Update::Exists(n) => write_count(out, n, "EXISTS"),
                Update::Recent(n) => write_count(out, n, "RECENT"),
                Update::Flags { uid, flags, .. } => {
                    // Sequence numbers as they are after every expunge
                    // of this batch, which were written before.
                    if let Some(seq) = self.view.seq_of(uid) {
                        let entry = self.view.get(seq);
                        let recent = entry.is_some_and(|e| e.recent);
                        let modseq = entry.map(|e| e.modseq).filter(|_| self.enabled.condstore);
                        let flags = imap_flags(flags, recent, &self.keywords);
                        write_flags_fetch(out, seq, Some(uid), Some(flags.as_slice()), modseq);
                    }
                }
            }
        }
        condstore::write_vanished(out, false, &merge_ranges(vanished));
        if expunged || self.info.len() > self.view.len() as usize {
            let view = &self.view;
            self.info.retain(|uid, _| view.seq_of(*uid).is_some());
            self.structures.retain(|uid, _| view.seq_of(*uid).is_some());
        }
        Ok(())
    }

    /// The bytes of the messages a set names (for COPY's quota check).
    pub fn bytes_of(&self, set: &SequenceSet, uid: bool) -> Result<u64, Failure> {
        Ok(self
            .resolve(set, uid)?
            .iter()
            .filter_map(|(_, uid)| self.info.get(uid))
            .map(|info| info.size)
            .sum())
    }

    /// The messages a set names, as (sequence number, UID), in sequence
    /// order. Sequence numbers past the last message are the client's
    /// error (BAD); UIDs that do not exist are skipped (RFC 3501 6.4.8).
    pub fn resolve(&self, set: &SequenceSet, uid: bool) -> Result<Vec<(u32, Uid)>, Failure> {
        let SequenceSet::Ranges(ranges) = set else {
            return Err(Failure::Bad(Say::SavedResultUnsupported));
        };
        if uid {
            let largest = self.view.max_uid().map_or(0, Uid::get);
            return Ok(self
                .view
                .iter()
                .filter(|(_, e)| set.contains(e.uid.get(), largest))
                .map(|(seq, e)| (seq, e.uid))
                .collect());
        }
        let largest = self.view.len();
        let too_big = |n: SeqNumber| matches!(n, SeqNumber::Value(v) if v.get() > largest);
        if ranges.iter().any(|r| too_big(r.start) || too_big(r.end)) {
            return Err(Failure::Bad(Say::InvalidSequence));
        }
        Ok(self
            .view
            .iter()
            .filter(|(seq, _)| set.contains(*seq, largest))
            .map(|(seq, e)| (seq, e.uid))
            .collect())
    }

    fn structure(&mut self, uid: Uid, raw: &[u8]) -> Arc<MessageStructure> {
        if let Some(s) = self.structures.get(&uid) {
            if s.raw_len == raw.len() {
                return Arc::clone(s);
            }
        }
        let parsed = Arc::new(MessageStructure::parse(raw));
        self.parsed.push((uid, parsed.to_cache_bytes()));
        if self.structures.len() >= self.max_structures {
            self.structures.clear();
        }
        if self.max_structures > 0 {
            self.structures.insert(uid, Arc::clone(&parsed));
        }
        parsed
    }

    /// Takes the structures of `targets` that are not in memory from the
    /// folder's on-disk cache (kept by earlier sessions), as far as
    /// `max_structures` allows. A missing or unreadable cache only means
    /// parsing.
    fn load_cached_structures(&mut self, targets: &[(u32, Uid)]) {
        let room = self.max_structures.saturating_sub(self.structures.len());
        let missing: HashSet<Uid> = targets
            .iter()
            .map(|&(_, uid)| uid)
            .filter(|uid| !self.structures.contains_key(uid))
            .take(room)
            .collect();
        if missing.is_empty() {
            return;
        }
        let cached = match self.folder.cached_data(self.view.uid_validity, &missing) {
            Ok(cached) => cached,
            Err(e) => {
                tracing::debug!(error = %e, "structure cache not read");
                return;
            }
        };
        self.disk_records = cached.records;
        for (uid, bytes) in cached.entries {
            // A stale or foreign entry is parsed again, never trusted.
            if let Ok(structure) = MessageStructure::from_cache_bytes(&bytes) {
                self.structures.insert(uid, Arc::new(structure));
            }
        }
    }

    /// Appends what this FETCH parsed to the on-disk cache, rewriting it
    /// without expunged messages when they make up most of it.
    fn keep_parsed_structures(&mut self) {
        if self.parsed.is_empty() {
            return;
        }
        let parsed = std::mem::take(&mut self.parsed);
        let live = self.view.len() as usize;
        let records = self.disk_records + parsed.len();
        let compact: Option<HashSet<Uid>> =
            (records > 2 * live + 64).then(|| self.view.iter().map(|(_, e)| e.uid).collect());
        self.disk_records = if compact.is_some() {
            live.min(records)
        } else {
            records
        };
        if let Err(e) =
            self.folder
                .keep_cached_data(self.view.uid_validity, &parsed, compact.as_ref())
        {
            tracing::debug!(error = %e, "structure cache not written");
        }
    }

    /// FETCH / UID FETCH (RFC 3501 6.4.5, 6.4.8), its first step: checks
    /// the items and the set, sets `\Seen` on every message a body item
    /// reads, and returns the cursor [`Selected::fetch_part`] writes the
    /// responses from. Nothing is written yet.
    pub fn fetch_begin(
        &mut self,
        uid_command: bool,
        set: &SequenceSet,
        items: FetchItems<'_>,
        changed_since: Option<u64>,
    ) -> Result<FetchCursor, Failure> {
        let mut attrs = items.expand();
        if !attrs.iter().all(fetch::supported) {
            return Err(Failure::Bad(Say::UnsupportedItem));
        }
        let mut targets = self.resolve(set, uid_command)?;
        if let Some(since) = changed_since {
            // RFC 7162 3.1.4.1: only messages changed since, and MODSEQ is
            // implied.
            let since = ModSeq::new(since);
            targets.retain(|&(seq, _)| self.view.get(seq).is_some_and(|e| e.modseq > since));
            if !attrs.contains(&FetchAttribute::ModSeq) {
                attrs.push(FetchAttribute::ModSeq);
            }
        }
        let needs = fetch::needs(&attrs);
        // RFC 3501 6.4.5: fetching a body sets \Seen, and the FETCH
        // response then carries FLAGS.
        let mut marked: HashSet<Uid> = HashSet::new();
        if needs.sets_seen && !self.view.read_only {
            let unseen: Vec<Uid> = targets
                .iter()
                .filter_map(|&(seq, _)| self.view.get(seq))
                .filter(|e| !e.flags.contains(MaildirFlag::Seen))
                .map(|e| e.uid)
                .collect();
            if !unseen.is_empty() {
                // Added to the flags on disk now, not to the view's copy
                // (another session may have changed them since).
                let done = self
                    .folder
                    .update_flags(&unseen, |_, now| now.with(MaildirFlag::Seen))?;
                for update in done {
                    self.view.set_flags(update.uid, update.flags, update.modseq);
                    marked.insert(update.uid);
                }
            }
        }
        if needs.structure {
            self.load_cached_structures(&targets);
        }
        Ok(FetchCursor {
            uid_command,
            attrs: attrs.into_iter().map(FetchAttribute::into_owned).collect(),
            needs,
            targets,
            next: 0,
            marked,
            condstore: self.enabled.condstore,
            complete: true,
        })
    }

    /// Writes the responses of `cursor`'s next messages, until it has
    /// written at least `part` bytes or none is left (true then). Between parts the
    /// view must not change (no sync): the sequence numbers are the
    /// command's. A message that can no longer be read is skipped and
    /// counted (see [`FetchCursor::complete`]).
    pub fn fetch_part(&mut self, out: &mut Vec<u8>, cursor: &mut FetchCursor, part: usize) -> bool {
        let needs = cursor.needs;
        let start = out.len();
        while out.len() - start < part {
            let Some(&(seq, uid)) = cursor.targets.get(cursor.next) else {
                break;
            };
            cursor.next += 1;
            let Some(entry) = self.view.get(seq).copied() else {
                continue;
            };
            let cached = self.structures.get(&uid).cloned();
            let want_raw = needs.raw || (needs.structure && cached.is_none());
            let raw = if want_raw {
                match self.folder.read(uid) {
                    Ok(raw) => Some(raw),
                    Err(e) => {
                        if e.is_transient() {
                            tracing::warn!(error = %e, "FETCH cannot read a message");
                        }
                        cursor.complete = false;
                        continue;
                    }
                }
            } else {
                None
            };
            let structure = match (&raw, cached) {
                _ if !needs.structure => None,
                (Some(raw), _) => Some(self.structure(uid, raw)),
                (None, cached) => cached,
            };
            let info = self.info.get(&uid).copied().unwrap_or(Info {
                size: 0,
                internal_date: SystemTime::UNIX_EPOCH,
            });
            let flags = imap_flags(entry.flags, entry.recent, &self.keywords);
            let message = Fetched {
                seq,
                uid: uid.get(),
                flags: &flags,
                size: info.size,
                internal_date: info.internal_date,
                modseq: entry.modseq.get(),
                raw: raw.as_deref(),
                structure: structure.as_deref(),
            };
            let marked = cursor.marked.contains(&uid);
            // RFC 7162 3.1.4.2: a FETCH that set \Seen reports the new
            // MODSEQ under CONDSTORE. Not the UID that 3.2.4 also names:
            // this is the answer to the client's FETCH, which names the
            // message; Dovecot adds none, and imapclient's live test
            // requires that.
            let add_uid = cursor.uid_command && !needs.uid;
            let add_flags = marked && !needs.flags;
            let add_modseq = marked && cursor.condstore && !needs.modseq;
            fetch::write_fetch(out, &message, &cursor.attrs, add_uid, add_flags, add_modseq);
        }
        self.keep_parsed_structures();
        cursor.next >= cursor.targets.len()
    }

    /// STORE / UID STORE (RFC 3501 6.4.6). New keywords are defined in
    /// the folder first (and announced with FLAGS); `\Recent` is not
    /// stored and is ignored. With UNCHANGEDSINCE (RFC 7162 3.1.3) the
    /// messages changed since are left alone and returned (sequence
    /// numbers, or UIDs for UID STORE) for the `[MODIFIED]` code.
    #[allow(clippy::too_many_arguments)]
    pub fn store(
        &mut self,
        out: &mut Vec<u8>,
        uid_command: bool,
        set: &SequenceSet,
        action: StoreAction,
        silent: bool,
        flags: &[Flag<'_>],
        unchanged_since: Option<u64>,
    ) -> Result<Vec<u32>, Failure> {
        if self.view.read_only {
            return Err(Failure::No(Code::ReadOnly, Say::ReadOnly));
        }
        let targets = self.resolve(set, uid_command)?;
        let names = keyword_names(flags);
        if names.iter().any(|n| self.keywords.slot(n).is_none()) {
            if names.iter().any(|n| !crate::mailbox::valid_keyword(n)) {
                return Err(Failure::No(Code::Cannot, Say::InvalidKeyword));
            }
            let table = self.folder.define_keywords(&names)?;
            if names.iter().any(|n| table.slot(n).is_none()) {
                return Err(Failure::No(Code::Limit, Say::TooManyKeywords));
            }
            self.announce_keywords(out, Arc::new(table));
        }
        let given = flags_of(flags, &self.keywords);
        let keywords = Arc::clone(&self.keywords);
        let apply = |old: Flags| match action {
            StoreAction::Add => flag::add(old, given),
            StoreAction::Remove => flag::remove(old, given),
            StoreAction::Replace => flag::replace_visible(old, flags, &keywords),
        };
        // What the client expects each message to end with: the change
        // applied to the flags it last saw.
        let mut expected: HashMap<Uid, Flags> = HashMap::with_capacity(targets.len());
        for &(seq, uid) in &targets {
            if let Some(entry) = self.view.get(seq) {
                expected.insert(uid, apply(entry.flags));
            }
        }
        let uids: Vec<Uid> = targets
            .iter()
            .map(|&(_, uid)| uid)
            .filter(|uid| expected.contains_key(uid))
            .collect();
        // The change is applied to each message's flags as they are on
        // disk now, under the folder's lock: another session's STORE since
        // this view last synced must not be undone (RFC 3501 6.4.6 names
        // the flags to add or remove, not the resulting set).
        let since = unchanged_since.map(ModSeq::new);
        let (done, modified) = if uids.is_empty() {
            (Vec::new(), Vec::new())
        } else {
            self.folder
                .update_flags_unchanged_since(&uids, since, |_, now| apply(now))?
        };
        for update in &done {
            self.view.set_flags(update.uid, update.flags, update.modseq);
            self.highest_modseq = self.highest_modseq.max(update.modseq);
        }
        let condstore = self.enabled.condstore;
        for update in done {
            let Some(seq) = self.view.seq_of(update.uid) else {
                continue;
            };
            // .SILENT still reports flags that differ from what the
            // client asked for: someone else changed them meanwhile.
            let as_asked = expected.get(&update.uid) == Some(&update.flags);
            // RFC 7162 3.1.3: a conditional STORE reports each message
            // it stored, MODSEQ at least, even when silent.
            if silent && as_asked && since.is_none() {
                continue;
            }
            let recent = self.view.get(seq).is_some_and(|e| e.recent);
            let flags = imap_flags(update.flags, recent, &self.keywords);
            let show_flags = !silent || !as_asked;
            write_flags_fetch(
                out,
                seq,
                (uid_command || condstore).then_some(update.uid),
                show_flags.then_some(flags.as_slice()),
                condstore.then_some(update.modseq),
            );
        }
        let mut failed: Vec<u32> = if uid_command {
            modified.iter().map(|u| u.get()).collect()
        } else {
            modified
                .iter()
                .filter_map(|&u| self.view.seq_of(u))
                .collect()
        };
        failed.sort_unstable();
        Ok(failed)
    }

    /// SEARCH / UID SEARCH (RFC 3501 6.4.4): `* SEARCH n...`.
    /// With a MODSEQ key, a non-empty result ends with the highest
    /// modseq of the messages found (RFC 7162 3.1.6).
    pub fn search(&mut self, out: &mut Vec<u8>, uid_command: bool, criteria: &[SearchKey<'_>]) {
        let hits = self.matching(criteria);
        write_numbers(
            out,
            "SEARCH",
            hits.iter()
                .map(|&(seq, uid)| if uid_command { uid.get() } else { seq }),
            self.highest_of(criteria, &hits),
        );
    }

    /// The highest modseq of `hits` when `criteria` has a MODSEQ key.
    fn highest_of(&self, criteria: &[SearchKey<'_>], hits: &[(u32, Uid)]) -> Option<ModSeq> {
        if !condstore::has_modseq_key(criteria) {
            return None;
        }
        hits.iter()
            .filter_map(|&(seq, _)| self.view.get(seq).map(|e| e.modseq))
            .max()
    }

    /// SORT / UID SORT (RFC 5256 3): the matches in the order of `keys`,
    /// ties broken by sequence number.
    pub fn sort(
        &mut self,
        out: &mut Vec<u8>,
        uid_command: bool,
        keys: &[SortKey],
        criteria: &[SearchKey<'_>],
    ) {
        let hits = self.matching(criteria);
        // RFC 7162 3.1.9: SORT reports the highest modseq as SEARCH does.
        let highest = self.highest_of(criteria, &hits);
        let needs_content = keys.iter().any(|k| sort::needs_header(k.by));
        let mut entries: Vec<(u32, Uid, sort::Values)> = hits
            .into_iter()
            .map(|(seq, uid)| {
                let info = self.info.get(&uid);
                let raw = needs_content.then(|| self.folder.read(uid).ok()).flatten();
                let values = sort::Values::new(
                    info.map_or(0, |i| i.size),
                    info.map_or(SystemTime::UNIX_EPOCH, |i| i.internal_date),
                    raw.as_deref(),
                );
                (seq, uid, values)
            })
            .collect();
        entries.sort_by(|a, b| sort::compare(keys, &a.2, &b.2).then(a.0.cmp(&b.0)));
        write_numbers(
            out,
            "SORT",
            entries
                .iter()
                .map(|&(seq, uid, _)| if uid_command { uid.get() } else { seq }),
            highest,
        );
    }

    /// THREAD / UID THREAD (RFC 5256 3): the matches as `* THREAD`.
    pub fn thread(
        &mut self,
        out: &mut Vec<u8>,
        uid_command: bool,
        algorithm: ThreadAlgorithm,
        criteria: &[SearchKey<'_>],
    ) {
        let messages: Vec<ThreadMessage> = self
            .matching(criteria)
            .into_iter()
            .map(|(seq, uid)| {
                let internal_date = self
                    .info
                    .get(&uid)
                    .map_or(SystemTime::UNIX_EPOCH, |i| i.internal_date);
                // A message that cannot be read threads as one with no
                // header: alone, dated by its internal date.
                let raw = read_header(&self.folder, uid);
                let number = if uid_command { uid.get() } else { seq };
                ThreadMessage::new(number, seq, internal_date, &raw)
            })
            .collect();
        thread::thread(algorithm, &messages).write(out);
    }

    /// The messages matching `criteria`, as (sequence number, UID).
    fn matching(&self, criteria: &[SearchKey<'_>]) -> Vec<(u32, Uid)> {
        let largest = Largest {
            seq: self.view.len(),
            uid: self.view.max_uid().map_or(0, Uid::get),
        };
        let mut hits = Vec::new();
        let folder = &self.folder;
        for (seq, entry) in self.view.iter() {
            let info = self.info.get(&entry.uid);
            let candidate = Candidate {
                seq,
                uid: entry.uid.get(),
                flags: entry.flags,
                recent: entry.recent,
                size: info.map_or(0, |i| i.size),
                internal_date: info.map_or(SystemTime::UNIX_EPOCH, |i| i.internal_date),
                modseq: entry.modseq.get(),
            };
            let uid = entry.uid;
            let mut load = || folder.read(uid).ok();
            let mut message = Message::new(candidate, &self.keywords, &mut load);
            if search::matches_all(criteria, &mut message, largest) {
                hits.push((seq, uid));
            }
        }
        hits
    }

    /// The UIDs of messages now marked `\Deleted` in the store (within
    /// `set` for UID EXPUNGE).
    fn deleted(&self, set: Option<&SequenceSet>) -> Result<Vec<Uid>, MailboxError> {
        let largest = self.view.max_uid().map_or(0, Uid::get);
        Ok(self
            .folder
            .snapshot()?
            .messages
            .iter()
            .filter(|m| m.flags.contains(MaildirFlag::Trashed))
            .filter(|m| set.is_none_or(|s| s.contains(m.uid.get(), largest)))
            .map(|m| m.uid)
            .collect())
    }

    /// EXPUNGE / UID EXPUNGE (RFC 3501 6.4.3, RFC 4315 2.1): removes the
    /// messages; the sync that follows reports them.
    /// Returns how many were removed.
    pub fn expunge(&mut self, set: Option<&SequenceSet>) -> Result<usize, Failure> {
        if self.view.read_only {
            return Err(Failure::No(Code::ReadOnly, Say::ReadOnly));
        }
        if matches!(set, Some(SequenceSet::Saved)) {
            return Err(Failure::Bad(Say::SavedResultUnsupported));
        }
        let uids = self.deleted(set)?;
        if uids.is_empty() {
            return Ok(0);
        }
        Ok(self.folder.expunge(&uids)?.len())
    }

    /// CLOSE (RFC 3501 6.4.2): expunges silently when read-write.
    pub fn close(self) -> Result<(), MailboxError> {
        if !self.view.read_only {
            let uids = self.deleted(None)?;
            if !uids.is_empty() {
                self.folder.expunge(&uids)?;
            }
        }
        Ok(())
    }

    /// COPY / MOVE and their UID forms (RFC 3501 6.4.7, RFC 6851,
    /// RFC 4315 COPYUID). Returns the `[COPYUID]` values; for MOVE the caller
    /// sends them untagged before the expunges (RFC 6851 4.3).
    pub fn transfer(
        &mut self,
        uid_command: bool,
        set: &SequenceSet,
        dest: &Folder,
        remove: bool,
    ) -> Result<Option<CopyUid>, Failure> {
        if remove && self.view.read_only {
            return Err(Failure::No(Code::ReadOnly, Say::ReadOnly));
        }
        let targets = self.resolve(set, uid_command)?;
        let mut uids: Vec<Uid> = targets.iter().map(|&(_, uid)| uid).collect();
        uids.sort();
        if uids.is_empty() {
            return Ok(None);
        }
        let pairs = if remove {
            self.folder.move_to(&uids, dest)?
        } else {
            self.folder.copy_to(&uids, dest)?
        };
        if pairs.is_empty() {
            return Ok(None);
        }
        Ok(Some(CopyUid {
            validity: dest.snapshot()?.uid_validity.get(),
            source: pairs.iter().map(|(s, _)| s.get()).collect(),
            destination: pairs.iter().map(|(_, d)| d.get()).collect(),
        }))
    }
}

/// The most of a message's header THREAD reads.
const HEADER_MAX: u64 = 256 * 1024;

/// The header block of a stored message, up to and with its blank line
/// ([`HEADER_MAX`] at most; nothing when it cannot be read): threading
/// needs no body, and attachments can be large.
fn read_header(folder: &Folder, uid: Uid) -> Vec<u8> {
    let Ok(file) = folder.open(uid) else {
        return Vec::new();
    };
    let mut reader = BufReader::new(file.take(HEADER_MAX));
    let mut header = Vec::new();
    loop {
        let start = header.len();
        match reader.read_until(b'\n', &mut header) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        if matches!(&header[start..], b"\r\n" | b"\n") {
            break;
        }
    }
    header
}

/// `* n NAME`.
fn write_count(out: &mut Vec<u8>, n: u32, name: &str) {
    out.extend_from_slice(b"* ");
    out.extend_from_slice(n.to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// `* NAME n n n...[ (MODSEQ m)]`.
fn write_numbers(
    out: &mut Vec<u8>,
    name: &str,
    numbers: impl Iterator<Item = u32>,
    modseq: Option<ModSeq>,
) {
    out.extend_from_slice(b"* ");
    out.extend_from_slice(name.as_bytes());
    for n in numbers {
        out.push(b' ');
        out.extend_from_slice(n.to_string().as_bytes());
    }
    if let Some(modseq) = modseq {
        // RFC 7162 7 `search-sort-mod-seq`: "(MODSEQ n)", no inner
        // parentheses (unlike FETCH's).
        out.extend_from_slice(b" (MODSEQ ");
        out.extend_from_slice(modseq.get().to_string().as_bytes());
        out.push(b')');
    }
    out.extend_from_slice(b"\r\n");
}

/// `* FLAGS (...)`: the flags the folder defines.
fn write_defined_flags(out: &mut Vec<u8>, keywords: &KeywordTable) {
    out.extend_from_slice(b"* FLAGS ");
    write_flags(out, &defined_flags(keywords));
    out.extend_from_slice(b"\r\n");
}

/// `* OK [PERMANENTFLAGS (...)]`: none when read-only; `\*` while the
/// folder has free keyword slots.
fn write_permanent_flags(out: &mut Vec<u8>, keywords: &KeywordTable, read_only: bool) {
    let defined = defined_flags(keywords);
    let permanent = Code::PermanentFlags {
        flags: if read_only { &[] } else { &defined },
        allow_keywords: !read_only && !keywords.is_full(),
    };
    write_untagged_status(out, Status::Ok, Some(&permanent), "Flags permitted");
}

/// `* seq FETCH ([UID u ][FLAGS (...) ][MODSEQ (m)])`.
fn write_flags_fetch(
    out: &mut Vec<u8>,
    seq: u32,
    uid: Option<Uid>,
    flags: Option<&[Flag<'_>]>,
    modseq: Option<ModSeq>,
) {
    out.extend_from_slice(b"* ");
    out.extend_from_slice(seq.to_string().as_bytes());
    out.extend_from_slice(b" FETCH (");
    let mut items = 0;
    let mut sep = |out: &mut Vec<u8>| {
        if items > 0 {
            out.push(b' ');
        }
        items += 1;
    };
    if let Some(uid) = uid {
        sep(out);
        out.extend_from_slice(b"UID ");
        out.extend_from_slice(uid.get().to_string().as_bytes());
    }
    if let Some(flags) = flags {
        sep(out);
        out.extend_from_slice(b"FLAGS ");
        write_flags(out, flags);
    }
    if let Some(modseq) = modseq {
        sep(out);
        fetch::write_modseq(out, modseq.get());
    }
    out.extend_from_slice(b")\r\n");
}

/// Sorted single UIDs as ranges of consecutive ones.
fn merge_ranges(mut uids: Vec<(u32, u32)>) -> Vec<(u32, u32)> {
    uids.sort_unstable();
    let mut out: Vec<(u32, u32)> = Vec::with_capacity(uids.len());
    for (lo, hi) in uids {
        match out.last_mut() {
            Some(prev) if prev.1.checked_add(1) == Some(lo) => prev.1 = hi,
            _ => out.push((lo, hi)),
        }
    }
    out
}

/// `* OK [COPYUID ...] text` (MOVE sends it untagged, RFC 6851 4.3).
pub fn write_copyuid_untagged(out: &mut Vec<u8>, copied: &CopyUid) {
    out.extend_from_slice(b"* OK ");
    write_code(
        out,
        &Code::CopyUid {
            validity: copied.validity,
            source: &copied.source,
            destination: &copied.destination,
        },
    );
    out.extend_from_slice(b" Moved\r\n");
}
