//! A per-folder file of data derived from each message (the IMAP server
//! keeps parsed MIME structures there, so a FETCH of thousands of
//! messages does not parse them again, across sessions and restarts). It
//! holds opaque bytes per UID and never interprets them.
//!
//! Valid for one UIDVALIDITY (in the header); records are appended
//! without fsync, each in one `write` on an `O_APPEND` descriptor, with a
//! CRC-32C, because losing the file only costs parsing again: a torn or
//! damaged tail ends the read, a wrong header starts the file anew.
//! Entries of expunged messages are dropped when the file is rewritten,
//! which happens when they outnumber the live ones.
//!
//! Layout: `spatec1\n`, UIDVALIDITY (u32 LE), then records of UID (u32
//! LE), length (u32 LE), CRC-32C of the UID bytes and the payload (u32
//! LE), payload.

use std::collections::{HashMap, HashSet};
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::Path;

use super::durable;
use super::error::{MailboxError, Result};
use super::id::{Uid, UidValidity};

/// The file in each folder directory.
pub(crate) const CACHE_FILE: &str = "spate-cache";
const MAGIC: &[u8; 8] = b"spatec1\n";
const HEADER_LEN: usize = MAGIC.len() + 4;
const RECORD_HEADER_LEN: usize = 12;
/// Largest payload kept; bigger ones are not cached (parsed each time).
pub const MAX_ENTRY: usize = 1 << 20;
/// Files larger than this are not read (and are rewritten on the next
/// append): a bound on what one session loads.
const MAX_FILE: u64 = 256 << 20;

/// What a read found.
#[derive(Debug, Default)]
pub struct CachedData {
    /// The wanted entries (the last record of a UID wins).
    pub entries: HashMap<Uid, Vec<u8>>,
    /// Records in the file, wanted or not.
    pub records: usize,
}

/// The entries of `wanted` UIDs, for this UIDVALIDITY; an empty result
/// when the file is missing, belongs to another UIDVALIDITY or is too big.
pub(crate) fn read(dir: &Path, validity: UidValidity, wanted: &HashSet<Uid>) -> Result<CachedData> {
    let path = dir.join(CACHE_FILE);
    match fs::metadata(&path) {
        Ok(meta) if meta.len() > MAX_FILE => return Ok(CachedData::default()),
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(CachedData::default()),
        Err(e) => return Err(MailboxError::io("reading", path, e)),
    }
    let Some(bytes) = durable::read_optional(&path)? else {
        return Ok(CachedData::default());
    };
    Ok(parse(&bytes, validity, wanted))
}

fn parse(bytes: &[u8], validity: UidValidity, wanted: &HashSet<Uid>) -> CachedData {
    let mut loaded = CachedData::default();
    if !header_matches(bytes, validity) {
        return loaded;
    }
    let mut rest = &bytes[HEADER_LEN..];
    while rest.len() >= RECORD_HEADER_LEN {
        let word = |i: usize| u32::from_le_bytes([rest[i], rest[i + 1], rest[i + 2], rest[i + 3]]);
        let (uid, len, crc) = (word(0), word(4) as usize, word(8));
        if len > MAX_ENTRY || rest.len() < RECORD_HEADER_LEN + len {
            break; // torn tail
        }
        let payload = &rest[RECORD_HEADER_LEN..RECORD_HEADER_LEN + len];
        if checksum(uid, payload) != crc {
            break; // damaged: nothing after it is trusted
        }
        loaded.records += 1;
        if let Some(uid) = Uid::new(uid).filter(|u| wanted.contains(u)) {
            loaded.entries.insert(uid, payload.to_vec());
        }
        rest = &rest[RECORD_HEADER_LEN + len..];
    }
    loaded
}

fn header_matches(bytes: &[u8], validity: UidValidity) -> bool {
    bytes.len() >= HEADER_LEN
        && &bytes[..MAGIC.len()] == MAGIC
        && bytes[MAGIC.len()..HEADER_LEN] == validity.get().to_le_bytes()
}

fn checksum(uid: u32, payload: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(&uid.to_le_bytes()), payload)
}

fn encode(out: &mut Vec<u8>, uid: Uid, payload: &[u8]) {
    out.extend_from_slice(&uid.get().to_le_bytes());
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&checksum(uid.get(), payload).to_le_bytes());
    out.extend_from_slice(payload);
}

fn header(validity: UidValidity) -> Vec<u8> {
    let mut out = MAGIC.to_vec();
    out.extend_from_slice(&validity.get().to_le_bytes());
    out
}

/// Appends `entries` (payloads over [`MAX_ENTRY`] are skipped). The file
/// is started anew when it is missing, of another UIDVALIDITY or too big;
/// `keep` (the live UIDs), when given, rewrites it with only their
/// entries plus the new ones.
pub(crate) fn append(
    dir: &Path,
    validity: UidValidity,
    entries: &[(Uid, Vec<u8>)],
    keep: Option<&HashSet<Uid>>,
) -> Result<()> {
    let path = dir.join(CACHE_FILE);
    let mut fresh = match fs::metadata(&path) {
        Ok(meta) => meta.len() > MAX_FILE || meta.len() < HEADER_LEN as u64,
        Err(e) if e.kind() == io::ErrorKind::NotFound => true,
        Err(e) => return Err(MailboxError::io("reading", path, e)),
    };
    if !fresh {
        let mut head = [0u8; HEADER_LEN];
        let read = fs::File::open(&path).and_then(|mut f| io::Read::read_exact(&mut f, &mut head));
        fresh = read.is_err() || !header_matches(&head, validity);
    }
    let mut records = Vec::new();
    for (uid, payload) in entries.iter().filter(|(_, p)| p.len() <= MAX_ENTRY) {
        encode(&mut records, *uid, payload);
    }
    if fresh || keep.is_some() {
        let mut whole = header(validity);
        if let (false, Some(keep)) = (fresh, keep) {
            for (uid, payload) in read(dir, validity, keep)?.entries {
                encode(&mut whole, uid, &payload);
            }
        }
        whole.extend_from_slice(&records);
        return durable::replace_file(dir, CACHE_FILE, &whole);
    }
    if records.is_empty() {
        return Ok(());
    }
    let mut file = OpenOptions::new()
        .append(true)
        .open(&path)
        .map_err(|e| MailboxError::io("opening", &path, e))?;
    file.write_all(&records)
        .map_err(|e| MailboxError::io("appending to", &path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uid(n: u32) -> Uid {
        Uid::new(n).expect("non-zero")
    }

    fn all(n: u32) -> HashSet<Uid> {
        (1..=n).map(uid).collect()
    }

    #[test]
    fn append_read_and_validity() {
        let dir = tempfile::tempdir().unwrap();
        let v1 = UidValidity::new(5).unwrap();
        append(dir.path(), v1, &[(uid(1), b"one".to_vec())], None).unwrap();
        append(
            dir.path(),
            v1,
            &[(uid(2), b"two".to_vec()), (uid(3), vec![0; MAX_ENTRY + 1])],
            None,
        )
        .unwrap();
        let loaded = read(dir.path(), v1, &all(3)).unwrap();
        assert_eq!(loaded.records, 2, "the oversized one was not written");
        assert_eq!(loaded.entries[&uid(2)], b"two");
        let only_one: HashSet<Uid> = [uid(1)].into();
        assert_eq!(read(dir.path(), v1, &only_one).unwrap().entries.len(), 1);
        // Another UIDVALIDITY: nothing, and the next append starts anew.
        let v2 = UidValidity::new(6).unwrap();
        assert!(read(dir.path(), v2, &all(3)).unwrap().entries.is_empty());
        append(dir.path(), v2, &[(uid(1), b"new".to_vec())], None).unwrap();
        assert_eq!(
            read(dir.path(), v2, &all(3)).unwrap().entries[&uid(1)],
            b"new"
        );
        assert!(read(dir.path(), v1, &all(3)).unwrap().entries.is_empty());
    }

    #[test]
    fn torn_or_damaged_tail_is_ignored_and_rewrite_keeps_live() {
        let dir = tempfile::tempdir().unwrap();
        let v = UidValidity::new(5).unwrap();
        let entries: Vec<(Uid, Vec<u8>)> = (1..=4).map(|n| (uid(n), vec![n as u8; 10])).collect();
        append(dir.path(), v, &entries, None).unwrap();
        let path = dir.path().join(CACHE_FILE);
        let mut bytes = fs::read(&path).unwrap();
        bytes.truncate(bytes.len() - 3);
        fs::write(&path, &bytes).unwrap();
        assert_eq!(read(dir.path(), v, &all(4)).unwrap().records, 3);
        bytes[HEADER_LEN + RECORD_HEADER_LEN + 22 + 2] ^= 0xff; // in record 2's payload
        fs::write(&path, &bytes).unwrap();
        assert_eq!(read(dir.path(), v, &all(4)).unwrap().records, 1);
        let keep: HashSet<Uid> = [uid(1)].into();
        append(dir.path(), v, &[(uid(9), b"nine".to_vec())], Some(&keep)).unwrap();
        let loaded = read(dir.path(), v, &all(9)).unwrap();
        assert_eq!(loaded.records, 2);
        assert!(loaded.entries.contains_key(&uid(1)) && loaded.entries.contains_key(&uid(9)));
        // Garbage is an empty cache, never an error.
        fs::write(&path, b"garbage").unwrap();
        assert!(read(dir.path(), v, &all(9)).unwrap().entries.is_empty());
    }
}
