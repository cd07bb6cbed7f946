//! The per-folder UID index file format (`spate-uidlist`): parsing,
//! salvaging what survives damage, and the bytes of a change (appended
//! records) or of the whole file (compaction). Pure: no I/O, no locking
//! (see `folder`).
//!
//! Version 2, written by this code: a header, then records appended in
//! the order changes were made, so a change costs a few appended bytes,
//! not a rewrite of the file.
//! ```text
//! spate-uidlist 2 V<uidvalidity> N<next uid> M<highest modseq> E<floor>
//! <uid> M<modseq> S<size> :<base file name>    message indexed
//! =<uid> M<modseq>                             its modseq changed (flags)
//! -<uid> M<modseq>                             it was expunged
//! ```
//! Expunges are remembered with their modseq for QRESYNC (RFC 7162
//! 3.2.5.1, 3.2.6: VANISHED (EARLIER) needs the UIDs expunged since a
//! client's modseq): the last [`EXPUNGE_HISTORY`] of them, in memory as an
//! [`ExpungeHistory`] and in the file as `-` lines (a compaction writes the
//! remembered ones after the live messages). `E` is the history's floor:
//! expunges at or below it may have been forgotten (dropped to keep the
//! history bounded, or written by a version without history: a file with
//! no `E` field knows nothing older than its header's `M`). Modseqs start
//! at 1, so an empty folder's highest modseq is a valid positive value and
//! every change moves it past anything a client has seen.
//! The header is written only when the file is written whole (created,
//! rebuilt, renumbered, compacted); the next UID and highest modseq are the
//! header's values pushed on by the records (an indexed UID at or past `N`
//! moves it past; every `M` raises the highest modseq). UIDs of `:` lines
//! only increase through the file, even across expunges, so a UID is never
//! handed out twice. A whole rewrite (compaction) lists the live messages
//! sorted by UID with their current modseq: it happens when superseded
//! lines outnumber live ones (and at least [`COMPACT_MIN_DEAD`]), after
//! damage, and on the first change to a version 1 file.
//!
//! Version 1 (still read): the same header with `C<count> B<bytes>`
//! totals, and only `:` lines sorted by UID.
//!
//! Fields are a letter and a value separated by spaces, in any order;
//! readers skip letters they do not know, so later versions can add
//! fields (keywords, GUIDs). `S` is the size (from the `,S=` of the name,
//! or a stat for messages that other tools dropped in), so quota never
//! needs a stat. A last line without its `\n` is a torn append (a crash
//! mid-write) and is ignored; the next change then rewrites the file whole
//! instead of appending after it. Other damaged lines are dropped (their
//! files get new UIDs at the next sync) and the file is rewritten.

use std::collections::HashSet;

use super::id::{ModSeq, Uid, UidValidity};

/// First word of the header line.
const MAGIC: &str = "spate-uidlist";
/// The format version this code writes.
const VERSION: u32 = 2;
/// The older version it still reads (converted on its first change).
const VERSION_1: u32 = 1;
/// Superseded lines tolerated before a compaction regardless of folder
/// size, so small folders are not rewritten on every few changes.
pub const COMPACT_MIN_DEAD: usize = 1024;
/// Expunged UIDs remembered per folder with their modseq; older ones are
/// forgotten (the history's floor rises past them).
pub const EXPUNGE_HISTORY: usize = 4096;

/// The expunges a folder remembers (RFC 7162 3.2.7: "the server MUST
/// remember the incremented mod-sequence and corresponding UID"),
/// bounded: complete only for changes above `floor`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExpungeHistory {
    /// Expunges with a modseq at or below this may be missing.
    pub floor: ModSeq,
    /// (UID, modseq of its expunge), in the order they happened (so by
    /// modseq, ascending).
    pub entries: Vec<(Uid, ModSeq)>,
}

impl ExpungeHistory {
    /// The UIDs expunged after `since`, sorted; `None` when the history
    /// cannot tell (some may have been forgotten): the caller then treats
    /// every UID it cannot see as possibly expunged (RFC 7162 3.2.6).
    pub fn since(&self, since: ModSeq) -> Option<Vec<Uid>> {
        if since < self.floor {
            return None;
        }
        let mut uids: Vec<Uid> = self
            .entries
            .iter()
            .filter(|&&(_, m)| m > since)
            .map(|&(uid, _)| uid)
            .collect();
        uids.sort_unstable();
        uids.dedup();
        Some(uids)
    }

    fn push(&mut self, uid: Uid, modseq: ModSeq) {
        self.entries.push((uid, modseq));
    }

    /// Forgets the oldest expunges past the bound, raising the floor to
    /// the modseq of the last one forgotten (and forgetting the others of
    /// that modseq too, so the floor stays exact).
    fn trim(&mut self) {
        if self.entries.len() <= EXPUNGE_HISTORY {
            return;
        }
        let excess = self.entries.len() - EXPUNGE_HISTORY;
        let floor = self.entries[excess - 1].1;
        self.floor = self.floor.max(floor);
        self.entries.retain(|&(_, m)| m > floor);
    }
}

/// One indexed message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexEntry {
    pub uid: Uid,
    pub modseq: ModSeq,
    pub size: u64,
    pub base: String,
}

/// A folder's UID index in memory, with the changes made to it since it
/// was read and not yet written.
#[derive(Debug, Clone)]
pub struct UidIndex {
    pub validity: UidValidity,
    /// The UID the next new message gets. `None` once `u32::MAX` was
    /// handed out: the folder then has to be renumbered.
    pub next_uid: Option<Uid>,
    pub highest_modseq: ModSeq,
    /// Recent expunges, for QRESYNC.
    expunged: ExpungeHistory,
    /// Sorted by UID, strictly increasing, bases unique. Change it only
    /// through the methods below, which record what to append.
    entries: Vec<IndexEntry>,
    /// Record lines in the file (as read, plus those appended since).
    lines: usize,
    /// Record lines for the changes not yet written.
    pending: String,
    pending_lines: usize,
    /// The file cannot be appended to (missing, version 1, torn last
    /// line): the next write rewrites it whole.
    no_append: bool,
    /// The file must be rewritten even without changes (damaged lines,
    /// rebuilt or renumbered index).
    stale: bool,
}

/// The outcome of reading an index file.
#[derive(Debug)]
pub enum Parsed {
    /// The header survived: UIDs can be kept. `damaged` counts lines that
    /// were dropped (their files get new UIDs, which never reuse old ones
    /// because the next UID survived), so the file will be rewritten.
    Intact { index: UidIndex, damaged: usize },
    /// The header is unreadable or of an unknown version: nothing can be
    /// trusted, the folder needs a new UIDVALIDITY.
    Lost,
}

/// How to bring the file up to date with the index in memory.
#[derive(Debug, PartialEq, Eq)]
pub enum IndexWrite {
    /// Nothing changed.
    None,
    /// Append these bytes (whole lines) to the file.
    Append(Vec<u8>),
    /// Replace the file with these bytes.
    Rewrite(Vec<u8>),
}

/// Message count and byte total, for quota.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Totals {
    pub messages: u64,
    pub bytes: u64,
}

impl UidIndex {
    /// An empty index for a new folder or a renumbered one; written whole
    /// on the next write.
    pub fn new(validity: UidValidity) -> UidIndex {
        UidIndex {
            validity,
            next_uid: Some(Uid::FIRST),
            highest_modseq: ModSeq::FIRST,
            expunged: ExpungeHistory {
                floor: ModSeq::FIRST,
                entries: Vec::new(),
            },
            entries: Vec::new(),
            lines: 0,
            pending: String::new(),
            pending_lines: 0,
            no_append: true,
            stale: true,
        }
    }

    /// The indexed messages, sorted by UID.
    pub fn entries(&self) -> &[IndexEntry] {
        &self.entries
    }

    /// The expunges remembered, for QRESYNC.
    pub fn expunged(&self) -> &ExpungeHistory {
        &self.expunged
    }

    /// Consumes the index, for renumbering.
    pub fn into_entries(self) -> Vec<IndexEntry> {
        self.entries
    }

    pub fn totals(&self) -> Totals {
        Totals {
            messages: self.entries.len() as u64,
            bytes: self.entries.iter().map(|e| e.size).sum(),
        }
    }

    /// The entry of `uid`, found by binary search (entries are sorted).
    pub fn position(&self, uid: Uid) -> Option<usize> {
        self.entries.binary_search_by_key(&uid, |e| e.uid).ok()
    }

    /// Indexes a new message under the next UID with a fresh modseq;
    /// `None` when the UID space is used up.
    pub fn push(&mut self, base: String, size: u64) -> Option<Uid> {
        let uid = self.next_uid?;
        self.next_uid = uid.next();
        self.highest_modseq = self.highest_modseq.next();
        let entry = IndexEntry {
            uid,
            modseq: self.highest_modseq,
            size,
            base,
        };
        self.record(&entry_line(&entry));
        self.entries.push(entry);
        Some(uid)
    }

    /// Gives the message at `pos` a fresh modseq (its flags changed) and
    /// returns it.
    pub fn bump(&mut self, pos: usize) -> ModSeq {
        self.highest_modseq = self.highest_modseq.next();
        let entry = &mut self.entries[pos];
        entry.modseq = self.highest_modseq;
        let line = format!("={} M{}\n", entry.uid, entry.modseq);
        self.record(&line);
        self.highest_modseq
    }

    /// Drops the messages whose UIDs are in `gone` under one new folder
    /// modseq; how many were dropped.
    pub fn remove(&mut self, gone: &HashSet<Uid>) -> usize {
        if !self.entries.iter().any(|e| gone.contains(&e.uid)) {
            return 0;
        }
        self.highest_modseq = self.highest_modseq.next();
        let modseq = self.highest_modseq;
        let mut lines = String::new();
        let before = self.entries.len();
        let expunged = &mut self.expunged;
        self.entries.retain(|e| {
            if gone.contains(&e.uid) {
                lines.push_str(&format!("-{} M{modseq}\n", e.uid));
                expunged.push(e.uid, modseq);
                false
            } else {
                true
            }
        });
        self.expunged.trim();
        let removed = before - self.entries.len();
        self.pending.push_str(&lines);
        self.pending_lines += removed;
        removed
    }

    /// Whether anything needs writing.
    pub fn is_dirty(&self) -> bool {
        self.stale || !self.pending.is_empty()
    }

    /// What to write to bring the file up to date: the pending records
    /// appended, or the whole file when it cannot be appended to or when
    /// superseded lines would outnumber live ones.
    pub fn write(&self) -> IndexWrite {
        if self.stale {
            return IndexWrite::Rewrite(self.serialize());
        }
        if self.pending.is_empty() {
            return IndexWrite::None;
        }
        let live = self.entries.len() + self.expunged.entries.len();
        let dead = (self.lines + self.pending_lines).saturating_sub(live);
        if self.no_append || dead > COMPACT_MIN_DEAD.max(self.entries.len()) {
            IndexWrite::Rewrite(self.serialize())
        } else {
            IndexWrite::Append(self.pending.clone().into_bytes())
        }
    }

    /// Records that `write` was carried out: the file now matches.
    pub fn written(&mut self, done: &IndexWrite) {
        match done {
            IndexWrite::None => {}
            IndexWrite::Append(_) => self.lines += self.pending_lines,
            IndexWrite::Rewrite(_) => {
                self.lines = self.entries.len() + self.expunged.entries.len();
                self.no_append = false;
                self.stale = false;
            }
        }
        self.pending.clear();
        self.pending_lines = 0;
    }

    /// The whole file: header, the live messages sorted by UID, then the
    /// remembered expunges.
    pub fn serialize(&self) -> Vec<u8> {
        // The next UID is written as 0 once exhausted; parse maps 0 back.
        let next = self.next_uid.map_or(0, Uid::get);
        let mut out = format!(
            "{MAGIC} {VERSION} V{} N{next} M{} E{}\n",
            self.validity, self.highest_modseq, self.expunged.floor
        );
        for e in &self.entries {
            out.push_str(&entry_line(e));
        }
        for (uid, modseq) in &self.expunged.entries {
            out.push_str(&format!("-{uid} M{modseq}\n"));
        }
        out.into_bytes()
    }

    fn record(&mut self, line: &str) {
        self.pending.push_str(line);
        self.pending_lines += 1;
    }

    /// Reads a whole file (version 1 or 2), applying every record that is
    /// well formed and consistent and dropping the rest (never panics on
    /// any input).
    pub fn parse(bytes: &[u8]) -> Parsed {
        let mut lines = bytes.split_inclusive(|&b| b == b'\n');
        let Some(Header {
            version,
            validity,
            next_uid,
            highest_modseq,
            floor,
        }) = lines.next().and_then(complete_line).and_then(parse_header)
        else {
            return Parsed::Lost;
        };
        let highest_modseq = highest_modseq.max(ModSeq::FIRST);
        let mut index = UidIndex {
            validity,
            next_uid,
            highest_modseq,
            // Without `E`, the file knows nothing of expunges before its
            // header was written.
            expunged: ExpungeHistory {
                floor: floor.unwrap_or(highest_modseq),
                entries: Vec::new(),
            },
            entries: Vec::new(),
            lines: 0,
            pending: String::new(),
            pending_lines: 0,
            no_append: version != VERSION,
            stale: false,
        };
        // Expunged entries are only marked while reading (removing each
        // from the vector would cost O(n) per record).
        let mut gone: Vec<bool> = Vec::new();
        let mut bases: HashSet<&str> = HashSet::new();
        let mut last_added: Option<Uid> = None;
        let mut damaged = 0;
        for line in lines {
            if !line.ends_with(b"\n") {
                // Only the last piece can lack its `\n`: a torn append.
                index.no_append = true;
                continue;
            }
            index.lines += 1;
            let Some(text) = complete_line(line) else {
                damaged += 1;
                continue;
            };
            let applied = match (version, text.as_bytes().first()) {
                (VERSION, Some(b'-' | b'=')) => parse_change(text).is_some_and(|(kind, uid, m)| {
                    let Some(pos) = index.position(uid).filter(|&p| !gone[p]) else {
                        // An expunge remembered by a compaction: a UID
                        // that was handed out and is not live.
                        let handed_out = index.next_uid.is_none_or(|n| uid < n);
                        if kind == b'-' && handed_out && index.position(uid).is_none_or(|p| gone[p])
                        {
                            index.expunged.push(uid, m);
                            index.highest_modseq = index.highest_modseq.max(m);
                            return true;
                        }
                        return false;
                    };
                    if kind == b'-' {
                        gone[pos] = true;
                        bases.remove(index.entries[pos].base.as_str());
                        index.expunged.push(uid, m);
                    } else {
                        index.entries[pos].modseq = m;
                    }
                    index.highest_modseq = index.highest_modseq.max(m);
                    true
                }),
                _ => parse_entry(text).is_some_and(|(entry, base)| {
                    if last_added.is_some_and(|last| last >= entry.uid) || bases.contains(base) {
                        return false;
                    }
                    // A version 1 header is rewritten with each change,
                    // so a line past it means the header is stale; in
                    // version 2 the records always run ahead of it.
                    let past_next = index.next_uid.is_some_and(|n| entry.uid >= n);
                    let past_modseq = entry.modseq > index.highest_modseq;
                    if version == VERSION_1 && (past_next || past_modseq) {
                        damaged += 1;
                    }
                    if past_next {
                        index.next_uid = entry.uid.next();
                    }
                    index.highest_modseq = index.highest_modseq.max(entry.modseq);
                    last_added = Some(entry.uid);
                    bases.insert(base);
                    index.entries.push(entry);
                    gone.push(false);
                    true
                }),
            };
            if !applied {
                damaged += 1;
            }
        }
        if gone.iter().any(|&g| g) {
            let mut flags = gone.into_iter();
            index.entries.retain(|_| !flags.next().unwrap_or(false));
        }
        // Already in modseq order unless a hand-edited file says otherwise;
        // trimming relies on the order.
        index.expunged.entries.sort_by_key(|&(_, m)| m);
        index.expunged.trim();
        index.stale = damaged > 0;
        Parsed::Intact { index, damaged }
    }
}

/// The line of one indexed message.
fn entry_line(e: &IndexEntry) -> String {
    format!("{} M{} S{} :{}\n", e.uid, e.modseq, e.size, e.base)
}

/// The text of a line that ends in `\n` and is UTF-8; a last line without
/// `\n` is a torn write and does not count.
fn complete_line(line: &[u8]) -> Option<&str> {
    let text = line.strip_suffix(b"\n")?;
    std::str::from_utf8(text).ok()
}

/// What the header line says.
struct Header {
    version: u32,
    validity: UidValidity,
    next_uid: Option<Uid>,
    highest_modseq: ModSeq,
    /// `E`: the expunge history's floor (absent before it was written).
    floor: Option<ModSeq>,
}

/// Version, validity, next UID, highest modseq and history floor from the
/// header.
fn parse_header(line: &str) -> Option<Header> {
    let mut words = line.split(' ');
    if words.next()? != MAGIC {
        return None;
    }
    let version = match words.next()? {
        "1" => VERSION_1,
        "2" => VERSION,
        _ => return None,
    };
    let (mut validity, mut next, mut modseq) = (None, None, ModSeq::default());
    let mut floor = None;
    for field in words {
        match field.split_at_checked(1)? {
            ("V", v) => validity = UidValidity::new(v.parse().ok()?),
            // 0 is written once the UID space is exhausted.
            ("N", v) => next = Some(Uid::new(v.parse().ok()?)),
            ("M", v) => modseq = ModSeq::new(v.parse().ok()?),
            ("E", v) => floor = Some(ModSeq::new(v.parse().ok()?)),
            _ => {}
        }
    }
    Some(Header {
        version,
        validity: validity?,
        next_uid: next?,
        highest_modseq: modseq,
        floor,
    })
}

/// One message line: `<uid> <fields> :<base>`; the entry and its base
/// borrowed from the line.
fn parse_entry(line: &str) -> Option<(IndexEntry, &str)> {
    let (fields, base) = line.split_once(" :")?;
    if base.is_empty() || base.contains(':') || base.starts_with('.') {
        return None;
    }
    let mut words = fields.split(' ');
    let uid = Uid::new(words.next()?.parse().ok()?)?;
    let (mut modseq, mut size) = (None, None);
    for field in words {
        match field.split_at_checked(1)? {
            ("M", v) => modseq = Some(ModSeq::new(v.parse().ok()?)),
            ("S", v) => size = Some(v.parse().ok()?),
            _ => {}
        }
    }
    let entry = IndexEntry {
        uid,
        modseq: modseq?,
        size: size?,
        base: base.to_owned(),
    };
    Some((entry, base))
}

/// A change line: `-<uid> M<modseq>` or `=<uid> M<modseq>`; its kind
/// (the first byte), UID and modseq.
fn parse_change(line: &str) -> Option<(u8, Uid, ModSeq)> {
    let kind = *line.as_bytes().first()?;
    let mut words = line[1..].split(' ');
    let uid = Uid::new(words.next()?.parse().ok()?)?;
    let mut modseq = None;
    for field in words {
        if let ("M", v) = field.split_at_checked(1)? {
            modseq = Some(ModSeq::new(v.parse().ok()?));
        }
    }
    Some((kind, uid, modseq?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> UidIndex {
        let mut index = UidIndex::new(UidValidity::new(1_700_000_000).unwrap());
        index.push("1.a.host,S=10".into(), 10);
        index.push("2.b.host,S=20".into(), 20);
        index
    }

    fn intact(bytes: &[u8]) -> (UidIndex, usize) {
        match UidIndex::parse(bytes) {
            Parsed::Intact { index, damaged } => (index, damaged),
            Parsed::Lost => panic!("lost: {:?}", String::from_utf8_lossy(bytes)),
        }
    }

    fn same(a: &UidIndex, b: &UidIndex) {
        assert_eq!(a.validity, b.validity);
        assert_eq!(a.next_uid, b.next_uid);
        assert_eq!(a.highest_modseq, b.highest_modseq);
        assert_eq!(a.entries(), b.entries());
    }

    fn apply(file: &mut Vec<u8>, index: &mut UidIndex) -> &'static str {
        let w = index.write();
        let kind = match &w {
            IndexWrite::None => "none",
            IndexWrite::Append(b) => {
                file.extend_from_slice(b);
                "append"
            }
            IndexWrite::Rewrite(b) => {
                *file = b.clone();
                "rewrite"
            }
        };
        index.written(&w);
        kind
    }

    #[test]
    fn round_trip_and_totals() {
        let mut index = sample();
        let mut file = Vec::new();
        assert_eq!(apply(&mut file, &mut index), "rewrite", "new: whole");
        assert_eq!(
            String::from_utf8(file.clone()).unwrap(),
            "spate-uidlist 2 V1700000000 N3 M3 E1\n1 M2 S10 :1.a.host,S=10\n2 M3 S20 :2.b.host,S=20\n"
        );
        let (back, damaged) = intact(&file);
        same(&back, &index);
        assert_eq!(damaged, 0);
        assert_eq!(
            back.totals(),
            Totals {
                messages: 2,
                bytes: 30
            }
        );
        assert_eq!(apply(&mut file, &mut index), "none");
    }

    #[test]
    fn changes_are_appended_and_replayed() {
        let mut index = sample();
        let mut file = Vec::new();
        apply(&mut file, &mut index);
        let uid3 = index.push("3.c.host".into(), 5).unwrap();
        index.bump(0);
        index.remove(&HashSet::from([Uid::new(2).unwrap()]));
        assert_eq!(apply(&mut file, &mut index), "append");
        let text = String::from_utf8(file.clone()).unwrap();
        assert!(
            text.ends_with(":2.b.host,S=20\n3 M4 S5 :3.c.host\n=1 M5\n-2 M6\n"),
            "{text}"
        );
        let (back, damaged) = intact(&file);
        assert_eq!(damaged, 0);
        same(&back, &index);
        assert_eq!(back.entries().len(), 2);
        assert_eq!(back.entries()[0].modseq, ModSeq::new(5));
        assert_eq!(back.entries()[1].uid, uid3);
        assert_eq!(back.next_uid, Uid::new(4));
        assert_eq!(back.highest_modseq, ModSeq::new(6));
        assert_eq!(back.expunged(), index.expunged());
        assert_eq!(
            back.expunged().since(ModSeq::new(5)),
            Some(vec![Uid::new(2).unwrap()])
        );

        // An expunged UID is never handed out again, even when it was the
        // highest.
        let mut back = back;
        back.remove(&HashSet::from([uid3]));
        apply(&mut file, &mut back);
        let (mut again, _) = intact(&file);
        assert_eq!(again.next_uid, Uid::new(4));
        assert_eq!(again.push("4.d".into(), 1), Uid::new(4));
    }

    #[test]
    fn compaction_when_dead_lines_outnumber_live() {
        let mut index = sample();
        let mut file = Vec::new();
        apply(&mut file, &mut index);
        let mut rewrites = 0;
        for _ in 0..3 * COMPACT_MIN_DEAD {
            index.bump(1);
            if apply(&mut file, &mut index) == "rewrite" {
                rewrites += 1;
                let (back, _) = intact(&file);
                same(&back, &index);
                assert_eq!(file.iter().filter(|&&b| b == b'\n').count(), 3);
            }
        }
        assert_eq!(rewrites, 2);
        let (back, damaged) = intact(&file);
        assert_eq!(damaged, 0);
        same(&back, &index);
    }

    #[test]
    fn torn_last_line_is_ignored_and_forces_a_rewrite() {
        let mut index = sample();
        let mut file = Vec::new();
        apply(&mut file, &mut index);
        let clean = file.clone();
        file.extend_from_slice(b"3 M3 S5 :3.c.ho");
        let (mut back, damaged) = intact(&file);
        assert_eq!(damaged, 0);
        same(&back, &index);
        assert_eq!(apply(&mut file, &mut back), "none", "read only: untouched");
        back.push("3.c.host".into(), 5);
        assert_eq!(apply(&mut file, &mut back), "rewrite");
        let text = String::from_utf8(file.clone()).unwrap();
        assert!(
            !text.contains("3.c.ho\n") && text.ends_with(":3.c.host\n"),
            "{text}"
        );
        assert_eq!(intact(&file).0.entries().len(), 3);
        assert!(clean.len() < file.len());
    }

    #[test]
    fn version_1_is_read_and_converted_on_change() {
        let v1 = "spate-uidlist 1 V1700000000 N3 M3 C2 B30\n1 M2 S10 :1.a.host,S=10\n2 M3 S20 :2.b.host,S=20\n";
        let (mut index, damaged) = intact(v1.as_bytes());
        assert_eq!(damaged, 0);
        same(&index, &sample());
        let mut file = v1.as_bytes().to_vec();
        assert_eq!(apply(&mut file, &mut index), "none");
        index.bump(0);
        assert_eq!(apply(&mut file, &mut index), "rewrite");
        assert!(file.starts_with(b"spate-uidlist 2 V1700000000 N3 M4 E3\n"));
    }

    #[test]
    fn damage_is_salvaged_or_lost() {
        let mut index = sample();
        let mut bytes = Vec::new();
        apply(&mut bytes, &mut index);
        bytes.extend_from_slice(
            b"garbage line\n\xff\xfe\n-9 M3\n=9 M3\n2 M3 S1 :again\n3 M3 S1 :1.a.host,S=10\n",
        );
        let (mut index, damaged) = intact(&bytes);
        assert_eq!(index.entries().len(), 2);
        assert_eq!(damaged, 6);
        assert_eq!(index.next_uid, Uid::new(3));
        assert_eq!(apply(&mut bytes, &mut index), "rewrite");

        // A line past a version 1 header's next UID pushes it on.
        let text = "spate-uidlist 1 V5 N2 M1\n1 M1 S1 :a\n7 M9 S1 :b\n";
        let (index, _) = intact(text.as_bytes());
        assert_eq!(index.next_uid, Uid::new(8));
        assert_eq!(index.highest_modseq, ModSeq::new(9));

        for lost in [
            &b""[..],
            b"\xff\x00garbage",
            b"spate-uidlist 3 V1 N1\n",
            b"spate-uidlist 2 V0 N1\n",
            b"spate-uidlist 2 V1 N1",
        ] {
            assert!(matches!(UidIndex::parse(lost), Parsed::Lost), "{lost:?}");
        }
    }

    #[test]
    fn expunge_history_survives_compaction_and_is_bounded() {
        let mut index = UidIndex::new(UidValidity::new(9).unwrap());
        let mut file = Vec::new();
        let total = EXPUNGE_HISTORY + 10;
        for n in 0..total {
            index.push(format!("{n}.x"), 1);
        }
        apply(&mut file, &mut index);
        let before = index.highest_modseq;
        // One expunge per change: each gets its own modseq.
        for n in 1..=total {
            let uid = Uid::new(u32::try_from(n).unwrap()).unwrap();
            index.remove(&HashSet::from([uid]));
            apply(&mut file, &mut index);
        }
        let history = index.expunged();
        assert_eq!(history.entries.len(), EXPUNGE_HISTORY);
        // The ten oldest were forgotten: asking from before them cannot be
        // answered, asking from after them can.
        assert_eq!(history.floor, ModSeq::new(before.get() + 10));
        assert_eq!(history.since(before), None);
        let known = history.since(history.floor).unwrap();
        assert_eq!(known.len(), EXPUNGE_HISTORY);
        assert_eq!(known[0], Uid::new(11).unwrap());
        // The file (compacted along the way) gives the same history.
        let (back, damaged) = intact(&file);
        assert_eq!(damaged, 0);
        assert_eq!(back.expunged(), index.expunged());
        assert_eq!(back.highest_modseq, index.highest_modseq);
        assert!(back.entries().is_empty());
        // Written whole, it still does.
        let (again, _) = intact(&back.serialize());
        assert_eq!(again.expunged(), index.expunged());
    }

    #[test]
    fn a_file_without_history_floor_knows_nothing_before_its_header() {
        let text = "spate-uidlist 2 V5 N4 M7\n1 M2 S1 :a\n-3 M8\n";
        let (index, damaged) = intact(text.as_bytes());
        assert_eq!(damaged, 0);
        assert_eq!(index.expunged().floor, ModSeq::new(7));
        assert_eq!(index.expunged().since(ModSeq::new(6)), None);
        assert_eq!(
            index.expunged().since(ModSeq::new(7)),
            Some(vec![Uid::new(3).unwrap()])
        );
        // An expunge of a UID never handed out is damage.
        let (_, damaged) = intact(b"spate-uidlist 2 V5 N4 M7 E1\n-9 M8\n");
        assert_eq!(damaged, 1);
        // An empty folder's highest modseq is positive.
        let (empty, _) = intact(b"spate-uidlist 2 V5 N1 M0\n");
        assert_eq!(empty.highest_modseq, ModSeq::FIRST);
    }
}
