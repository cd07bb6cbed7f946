//! The per-folder UID index file format (`spate-uidlist`): parsing,
//! salvaging what survives damage, and writing. Pure: no I/O, no locking
//! (see `folder`).
//!
//! ```text
//! spate-uidlist 1 V<uidvalidity> N<next uid> M<highest modseq> C<count> B<bytes>
//! <uid> M<modseq> S<size> :<base file name>
//! ...
//! ```
//!
//! Fields are a letter and a value separated by spaces, in any order;
//! readers skip letters they do not know, so later versions can add
//! fields (keywords, GUIDs) without breaking this one. Lines are sorted by
//! UID. `C` and `B` (message count and byte total) are a cache for quota
//! checks, which read only the header line; a full parse recomputes them.
//! `S` is the size (from the `,S=` of the name, or a stat for messages
//! that other tools dropped in), so quota never needs a stat.

use std::collections::HashSet;

use super::id::{ModSeq, Uid, UidValidity};

/// First word of the header line.
const MAGIC: &str = "spate-uidlist";
/// The format version this code writes and reads.
const VERSION: &str = "1";

/// One indexed message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexEntry {
    pub uid: Uid,
    pub modseq: ModSeq,
    pub size: u64,
    pub base: String,
}

/// A folder's UID index in memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UidIndex {
    pub validity: UidValidity,
    /// The UID the next new message gets. `None` once `u32::MAX` was
    /// handed out: the folder then has to be renumbered.
    pub next_uid: Option<Uid>,
    pub highest_modseq: ModSeq,
    /// Sorted by UID, strictly increasing, bases unique.
    pub entries: Vec<IndexEntry>,
}

/// The outcome of reading an index file.
#[derive(Debug)]
pub enum Parsed {
    /// The header survived: UIDs can be kept. `damaged` counts lines that
    /// were dropped (their files get new UIDs, which never reuse old ones
    /// because the header's next UID survived), so the file should be
    /// rewritten.
    Intact { index: UidIndex, damaged: usize },
    /// The header is unreadable or of another version: nothing can be
    /// trusted, the folder needs a new UIDVALIDITY.
    Lost,
}

/// The header's cached totals, for quota.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Totals {
    pub messages: u64,
    pub bytes: u64,
}

impl UidIndex {
    /// An empty index for a new folder or a renumbered one.
    pub fn new(validity: UidValidity) -> UidIndex {
        UidIndex {
            validity,
            next_uid: Some(Uid::FIRST),
            highest_modseq: ModSeq::default(),
            entries: Vec::new(),
        }
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
        self.entries.push(IndexEntry {
            uid,
            modseq: self.highest_modseq,
            size,
            base,
        });
        Some(uid)
    }

    /// The file's bytes.
    pub fn serialize(&self) -> Vec<u8> {
        let totals = self.totals();
        // The next UID is written as 0 once exhausted; parse maps 0 back.
        let next = self.next_uid.map_or(0, Uid::get);
        let mut out = format!(
            "{MAGIC} {VERSION} V{} N{next} M{} C{} B{}\n",
            self.validity, self.highest_modseq, totals.messages, totals.bytes
        );
        for e in &self.entries {
            out.push_str(&format!(
                "{} M{} S{} :{}\n",
                e.uid, e.modseq, e.size, e.base
            ));
        }
        out.into_bytes()
    }

    /// Reads a whole file, keeping every line that is well formed and
    /// consistent and dropping the rest (never panics on any input).
    pub fn parse(bytes: &[u8]) -> Parsed {
        let mut lines = bytes.split_inclusive(|&b| b == b'\n');
        let Some(header) = lines.next().and_then(complete_line).and_then(parse_header) else {
            return Parsed::Lost;
        };
        let (validity, mut next_uid, mut highest_modseq) = header;
        let mut entries: Vec<IndexEntry> = Vec::new();
        let mut bases = HashSet::new();
        let mut damaged = 0;
        for line in lines {
            let entry = complete_line(line).and_then(parse_entry);
            let Some(entry) = entry else {
                damaged += 1;
                continue;
            };
            let in_order = entries.last().is_none_or(|last| last.uid < entry.uid);
            if !in_order || bases.contains(&entry.base) {
                damaged += 1;
                continue;
            }
            // A UID at or past the header's next UID means the header is
            // stale; move it past so the UID is never handed out again.
            if next_uid.is_some_and(|n| entry.uid >= n) {
                next_uid = entry.uid.next();
                damaged += 1;
            }
            if entry.modseq > highest_modseq {
                highest_modseq = entry.modseq;
                damaged += 1;
            }
            bases.insert(entry.base.clone());
            entries.push(entry);
        }
        Parsed::Intact {
            index: UidIndex {
                validity,
                next_uid,
                highest_modseq,
                entries,
            },
            damaged,
        }
    }

    /// The cached totals from the header line alone.
    pub fn read_totals(bytes: &[u8]) -> Option<Totals> {
        let end = memchr::memchr(b'\n', bytes)?;
        let line = std::str::from_utf8(&bytes[..end]).ok()?;
        let mut words = line.split(' ');
        if words.next()? != MAGIC || words.next()? != VERSION {
            return None;
        }
        let mut totals = Totals::default();
        for field in words {
            match field.split_at_checked(1)? {
                ("C", v) => totals.messages = v.parse().ok()?,
                ("B", v) => totals.bytes = v.parse().ok()?,
                _ => {}
            }
        }
        Some(totals)
    }
}

/// The text of a line that ends in `\n` and is UTF-8; a last line without
/// `\n` is a torn write and does not count.
fn complete_line(line: &[u8]) -> Option<&str> {
    let text = line.strip_suffix(b"\n")?;
    std::str::from_utf8(text).ok()
}

/// Validity, next UID and highest modseq from the header.
fn parse_header(line: &str) -> Option<(UidValidity, Option<Uid>, ModSeq)> {
    let mut words = line.split(' ');
    if words.next()? != MAGIC || words.next()? != VERSION {
        return None;
    }
    let (mut validity, mut next, mut modseq) = (None, None, ModSeq::default());
    for field in words {
        match field.split_at_checked(1)? {
            ("V", v) => validity = UidValidity::new(v.parse().ok()?),
            // 0 is written once the UID space is exhausted.
            ("N", v) => next = Some(Uid::new(v.parse().ok()?)),
            ("M", v) => modseq = ModSeq::new(v.parse().ok()?),
            _ => {}
        }
    }
    Some((validity?, next?, modseq))
}

/// One message line: `<uid> <fields> :<base>`.
fn parse_entry(line: &str) -> Option<IndexEntry> {
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
    Some(IndexEntry {
        uid,
        modseq: modseq?,
        size: size?,
        base: base.to_owned(),
    })
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

    #[test]
    fn round_trip_and_totals() {
        let index = sample();
        let bytes = index.serialize();
        assert_eq!(
            String::from_utf8(bytes.clone()).unwrap(),
            "spate-uidlist 1 V1700000000 N3 M2 C2 B30\n1 M1 S10 :1.a.host,S=10\n2 M2 S20 :2.b.host,S=20\n"
        );
        match UidIndex::parse(&bytes) {
            Parsed::Intact {
                index: back,
                damaged,
            } => {
                assert_eq!(back, index);
                assert_eq!(damaged, 0);
            }
            Parsed::Lost => panic!("lost"),
        }
        assert_eq!(
            UidIndex::read_totals(&bytes),
            Some(Totals {
                messages: 2,
                bytes: 30
            })
        );
    }

    #[test]
    fn damage_is_salvaged_or_lost() {
        let mut bytes = sample().serialize();
        bytes.extend_from_slice(b"garbage line\n\xff\xfe\n3 M3 S5 :torn");
        let Parsed::Intact { index, damaged } = UidIndex::parse(&bytes) else {
            panic!("lost");
        };
        assert_eq!(index.entries.len(), 2);
        assert_eq!(damaged, 3);
        assert_eq!(index.next_uid, Uid::new(3));

        // A line past the header's next UID pushes it on.
        let text = "spate-uidlist 1 V5 N2 M1\n1 M1 S1 :a\n7 M9 S1 :b\n";
        let Parsed::Intact { index, .. } = UidIndex::parse(text.as_bytes()) else {
            panic!("lost");
        };
        assert_eq!(index.next_uid, Uid::new(8));
        assert_eq!(index.highest_modseq, ModSeq::new(9));

        for lost in [
            &b""[..],
            b"\xff\x00garbage",
            b"spate-uidlist 2 V1 N1\n",
            b"spate-uidlist 1 V0 N1\n",
        ] {
            assert!(matches!(UidIndex::parse(lost), Parsed::Lost), "{lost:?}");
        }
    }
}
