//! The durable event log: append-only segment files of checksummed,
//! numbered records under the events directory, and each endpoint's
//! acknowledged sequence number beside them. It stores and reads bytes;
//! it does not know what an event means or where it is posted.
//!
//! A segment is named by the first sequence number it holds
//! (`00000000000000000042.log`). A record is a 16-byte header (sequence
//! number u64, payload length u32, CRC-32C of both and the payload u32,
//! little-endian) and the payload (one JSON object). Only the last
//! segment can end torn (a crash mid-append): opening the log cuts it at
//! its last whole record. A segment is deleted once every endpoint has
//! acknowledged all of it.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{BufReader, ErrorKind, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// Bytes before each record's payload.
pub const HEADER_LEN: usize = 16;
/// The largest payload a record may hold (an event is far smaller).
pub const MAX_PAYLOAD: usize = 1 << 20;

/// Why the log could not be used.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("event log {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("event of {0} bytes is over the record limit")]
    TooLarge(usize),
}

impl LogError {
    fn io(path: &Path) -> impl FnOnce(std::io::Error) -> LogError + '_ {
        move |source| LogError::Io {
            path: path.to_owned(),
            source,
        }
    }
}

/// One record as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub seq: u64,
    pub payload: Vec<u8>,
}

/// Appends `payload` as record `seq` to `out`.
pub fn encode(seq: u64, payload: &[u8], out: &mut Vec<u8>) -> Result<(), LogError> {
    let len = u32::try_from(payload.len())
        .ok()
        .filter(|&len| len as usize <= MAX_PAYLOAD)
        .ok_or(LogError::TooLarge(payload.len()))?;
    let mut crc = crc32c::crc32c(&seq.to_le_bytes());
    crc = crc32c::crc32c_append(crc, &len.to_le_bytes());
    crc = crc32c::crc32c_append(crc, payload);
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(payload);
    Ok(())
}

/// What the start of `bytes` holds.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    /// A whole record of `len` bytes.
    Record(Record, usize),
    /// Too few bytes for a whole record (the end, or a torn tail).
    Short,
    /// A header or checksum that does not hold: corrupt or torn.
    Corrupt,
}

/// Reads the record at the start of `bytes`.
pub fn decode(bytes: &[u8]) -> Decoded {
    let Some(header) = bytes.get(..HEADER_LEN) else {
        return Decoded::Short;
    };
    let field = |at: usize, n: usize| &header[at..at + n];
    let seq = u64::from_le_bytes(field(0, 8).try_into().unwrap_or_default());
    let len_bytes: [u8; 4] = field(8, 4).try_into().unwrap_or_default();
    let crc = u32::from_le_bytes(field(12, 4).try_into().unwrap_or_default());
    let len = u32::from_le_bytes(len_bytes) as usize;
    if len > MAX_PAYLOAD {
        return Decoded::Corrupt;
    }
    let Some(payload) = bytes.get(HEADER_LEN..HEADER_LEN + len) else {
        return Decoded::Short;
    };
    let mut expected = crc32c::crc32c(&seq.to_le_bytes());
    expected = crc32c::crc32c_append(expected, &len_bytes);
    expected = crc32c::crc32c_append(expected, payload);
    if expected != crc {
        return Decoded::Corrupt;
    }
    let record = Record {
        seq,
        payload: payload.to_vec(),
    };
    Decoded::Record(record, HEADER_LEN + len)
}

/// The segment file holding records from `first_seq` on.
fn segment_path(dir: &Path, first_seq: u64) -> PathBuf {
    dir.join(format!("{first_seq:020}.log"))
}

/// The segments in `dir`: first sequence number -> size in bytes.
pub fn list_segments(dir: &Path) -> Result<BTreeMap<u64, u64>, LogError> {
    let mut segments = BTreeMap::new();
    for entry in std::fs::read_dir(dir).map_err(LogError::io(dir))? {
        let entry = entry.map_err(LogError::io(dir))?;
        let name = entry.file_name();
        let Some(first) = name
            .to_str()
            .and_then(|n| n.strip_suffix(".log"))
            .and_then(|n| n.parse::<u64>().ok())
        else {
            continue;
        };
        let len = entry.metadata().map_err(LogError::io(dir))?.len();
        segments.insert(first, len);
    }
    Ok(segments)
}

/// Makes a rename or a new file in `dir` durable.
fn sync_dir(dir: &Path) -> Result<(), LogError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(LogError::io(dir))
}

/// The writing end: one open segment, appended to and synced in batches.
pub struct LogWriter {
    dir: PathBuf,
    segment_bytes: u64,
    /// Every segment on disk: first sequence number -> bytes.
    segments: BTreeMap<u64, u64>,
    current: File,
    current_first: u64,
    next_seq: u64,
    /// Bytes appended since the last sync.
    unsynced: bool,
}

impl LogWriter {
    /// Opens (or creates) the log in `dir`, cutting a torn tail off its
    /// last segment. Sequence numbers go on after the last record, and
    /// after `acknowledged` (the highest any endpoint saw: numbers are
    /// never reused, even when segments were lost).
    pub fn open(dir: &Path, segment_bytes: u64, acknowledged: u64) -> Result<LogWriter, LogError> {
        std::fs::create_dir_all(dir).map_err(LogError::io(dir))?;
        let mut segments = list_segments(dir)?;
        let mut next_seq = acknowledged.saturating_add(1);
        let last = segments.iter().next_back().map(|(&first, _)| first);
        let (current, current_first) = match last {
            Some(first) => {
                let path = segment_path(dir, first);
                let (file, whole, last_seq) = recover_segment(&path)?;
                segments.insert(first, whole);
                next_seq = next_seq.max(first).max(last_seq.map_or(0, |s| s + 1));
                (file, first)
            }
            None => {
                let path = segment_path(dir, next_seq);
                let file = open_segment(&path)?;
                sync_dir(dir)?;
                segments.insert(next_seq, 0);
                (file, next_seq)
            }
        };
        Ok(LogWriter {
            dir: dir.to_owned(),
            segment_bytes,
            segments,
            current,
            current_first,
            next_seq,
            unsynced: false,
        })
    }

    /// The number the next appended record gets.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Bytes of every segment on disk.
    pub fn bytes(&self) -> u64 {
        self.segments.values().sum()
    }

    /// Appends payloads (already numbered from `next_seq` by the caller's
    /// encoding, see [`encode`]) of `count` records; not yet durable.
    pub fn append(&mut self, encoded: &[u8], count: u64) -> Result<(), LogError> {
        if encoded.is_empty() {
            return Ok(());
        }
        let path = segment_path(&self.dir, self.current_first);
        self.current
            .write_all(encoded)
            .map_err(LogError::io(&path))?;
        *self.segments.entry(self.current_first).or_default() += encoded.len() as u64;
        self.next_seq += count;
        self.unsynced = true;
        Ok(())
    }

    /// Makes what was appended durable; then starts a new segment when
    /// the current one is full.
    pub fn sync(&mut self) -> Result<(), LogError> {
        if self.unsynced {
            let path = segment_path(&self.dir, self.current_first);
            self.current.sync_data().map_err(LogError::io(&path))?;
            self.unsynced = false;
        }
        let size = self.segments.get(&self.current_first).copied().unwrap_or(0);
        if size >= self.segment_bytes {
            let path = segment_path(&self.dir, self.next_seq);
            self.current = open_segment(&path)?;
            sync_dir(&self.dir)?;
            self.current_first = self.next_seq;
            self.segments.insert(self.next_seq, 0);
        }
        Ok(())
    }

    /// Deletes the segments whose records all have numbers up to
    /// `acknowledged` (never the segment being written).
    pub fn remove_acknowledged(&mut self, acknowledged: u64) -> Result<usize, LogError> {
        let firsts: Vec<u64> = self.segments.keys().copied().collect();
        let mut removed = 0;
        for pair in firsts.windows(2) {
            let (first, next_first) = (pair[0], pair[1]);
            if next_first > acknowledged.saturating_add(1) {
                break;
            }
            let path = segment_path(&self.dir, first);
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => return Err(LogError::io(&path)(e)),
            }
            self.segments.remove(&first);
            removed += 1;
        }
        Ok(removed)
    }
}

/// Opens a segment for appending, creating it if need be.
fn open_segment(path: &Path) -> Result<File, LogError> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(LogError::io(path))
}

/// Reads a segment to its last whole record and cuts what follows (a torn
/// or corrupt tail). Returns it open for appending, its whole length and
/// its last record's number.
fn recover_segment(path: &Path) -> Result<(File, u64, Option<u64>), LogError> {
    let bytes = std::fs::read(path).map_err(LogError::io(path))?;
    let mut at = 0;
    let mut last_seq = None;
    while let Decoded::Record(record, len) = decode(&bytes[at..]) {
        last_seq = Some(record.seq);
        at += len;
    }
    let file = OpenOptions::new()
        .read(true)
        .append(true)
        .open(path)
        .map_err(LogError::io(path))?;
    if at < bytes.len() {
        tracing::warn!(
            segment = %path.display(),
            cut = bytes.len() - at,
            "event log: a torn or corrupt tail was cut (a crash during an append)"
        );
        file.set_len(at as u64).map_err(LogError::io(path))?;
        file.sync_all().map_err(LogError::io(path))?;
    }
    Ok((file, at as u64, last_seq))
}

/// A reading end: walks the records from a number on, across segments.
pub struct LogReader {
    dir: PathBuf,
    /// The segment being read: its first number and the file at the
    /// position after the last record read.
    current: Option<(u64, BufReader<File>)>,
    /// The number of the next record wanted.
    next_seq: u64,
}

impl LogReader {
    /// Reads from record `next_seq` on.
    pub fn new(dir: &Path, next_seq: u64) -> LogReader {
        LogReader {
            dir: dir.to_owned(),
            current: None,
            next_seq,
        }
    }

    /// The number of the next record wanted.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Up to `max` records numbered up to `durable` (records past it may
    /// still be written), in order. Records lost to corruption or deleted
    /// segments are skipped with a warning.
    pub fn read(&mut self, durable: u64, max: usize) -> Result<Vec<Record>, LogError> {
        let mut out = Vec::new();
        while out.len() < max && self.next_seq <= durable {
            if self.current.is_none() && !self.open_segment_for_next()? {
                break;
            }
            let Some((first, reader)) = self.current.as_mut() else {
                break;
            };
            match read_record(reader) {
                Ok(Some(record)) if record.seq < self.next_seq => {}
                Ok(Some(record)) => {
                    if record.seq > self.next_seq {
                        tracing::warn!(
                            from = self.next_seq,
                            to = record.seq - 1,
                            "event log: events missing (lost in a crash or corrupt)"
                        );
                    }
                    self.next_seq = record.seq + 1;
                    out.push(record);
                }
                Ok(None) => {
                    // The end of this segment: on to the next one, if
                    // there is one yet.
                    let first = *first;
                    let later = list_segments(&self.dir)?
                        .range(first + 1..)
                        .next()
                        .map(|(&f, _)| f);
                    match later {
                        Some(next_first) => self.open_at(next_first)?,
                        None => break,
                    }
                }
                Err(e) => {
                    tracing::warn!(segment = *first, error = %e, "event log: a corrupt record; the rest of its segment is skipped");
                    let first = *first;
                    let later = list_segments(&self.dir)?
                        .range(first + 1..)
                        .next()
                        .map(|(&f, _)| f);
                    match later {
                        Some(next_first) => self.open_at(next_first)?,
                        None => {
                            self.current = None;
                            break;
                        }
                    }
                }
            }
        }
        Ok(out)
    }

    /// Opens the segment that holds `next_seq` (or, if that one is gone,
    /// the first one after it). False when there is none.
    fn open_segment_for_next(&mut self) -> Result<bool, LogError> {
        let segments = list_segments(&self.dir)?;
        let holding = segments
            .range(..=self.next_seq)
            .next_back()
            .or_else(|| segments.range(self.next_seq..).next())
            .map(|(&first, _)| first);
        match holding {
            Some(first) => {
                self.open_at(first)?;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    fn open_at(&mut self, first: u64) -> Result<(), LogError> {
        let path = segment_path(&self.dir, first);
        let file = File::open(&path).map_err(LogError::io(&path))?;
        self.current = Some((first, BufReader::with_capacity(64 * 1024, file)));
        Ok(())
    }
}

/// A corrupt record met while reading.
#[derive(Debug, thiserror::Error)]
enum ReadError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("bad header or checksum")]
    Corrupt,
}

/// The next record of `reader`; `None` at the end of the written part.
/// At the end nothing is consumed, so a later call sees what is appended
/// meanwhile.
fn read_record(reader: &mut BufReader<File>) -> Result<Option<Record>, ReadError> {
    let start = reader.stream_position()?;
    let mut header = [0u8; HEADER_LEN];
    if !read_all(reader, &mut header)? {
        reader.seek(SeekFrom::Start(start))?;
        return Ok(None);
    }
    let len = u32::from_le_bytes([header[8], header[9], header[10], header[11]]) as usize;
    if len > MAX_PAYLOAD {
        return Err(ReadError::Corrupt);
    }
    let mut bytes = header.to_vec();
    bytes.resize(HEADER_LEN + len, 0);
    if !read_all(reader, &mut bytes[HEADER_LEN..])? {
        reader.seek(SeekFrom::Start(start))?;
        return Ok(None);
    }
    match decode(&bytes) {
        Decoded::Record(record, _) => Ok(Some(record)),
        Decoded::Short | Decoded::Corrupt => Err(ReadError::Corrupt),
    }
}

/// Fills `buf`; false when the file ends first.
fn read_all(reader: &mut impl Read, buf: &mut [u8]) -> std::io::Result<bool> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => return Ok(false),
            Ok(n) => filled += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

/// The file keeping an endpoint's acknowledged number.
fn ack_path(dir: &Path, endpoint: &str) -> PathBuf {
    dir.join(format!("acked-{:08x}", crc32c::crc32c(endpoint.as_bytes())))
}

/// The highest number `endpoint` acknowledged (0: none yet).
pub fn read_acknowledged(dir: &Path, endpoint: &str) -> Result<u64, LogError> {
    let path = ack_path(dir, endpoint);
    match std::fs::read_to_string(&path) {
        Ok(text) => Ok(text
            .lines()
            .next()
            .and_then(|line| line.trim().parse().ok())
            .unwrap_or(0)),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(0),
        Err(e) => Err(LogError::io(&path)(e)),
    }
}

/// Records durably that `endpoint` acknowledged every event up to `seq`:
/// a new file renamed over the old one, so a crash leaves one or the
/// other whole.
pub fn write_acknowledged(dir: &Path, endpoint: &str, seq: u64) -> Result<(), LogError> {
    let path = ack_path(dir, endpoint);
    let temporary = path.with_extension("new");
    let write = || -> std::io::Result<()> {
        let mut file = File::create(&temporary)?;
        file.write_all(format!("{seq}\n{endpoint}\n").as_bytes())?;
        file.sync_data()?;
        std::fs::rename(&temporary, &path)
    };
    write().map_err(LogError::io(&path))?;
    sync_dir(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(records: &[(u64, &str)]) -> Vec<u8> {
        let mut out = Vec::new();
        for (seq, payload) in records {
            encode(*seq, payload.as_bytes(), &mut out).expect("small payload");
        }
        out
    }

    fn append(log: &mut LogWriter, payloads: &[&str]) {
        let first = log.next_seq();
        let records: Vec<(u64, &str)> = payloads
            .iter()
            .enumerate()
            .map(|(i, p)| (first + i as u64, *p))
            .collect();
        log.append(&encoded(&records), payloads.len() as u64)
            .expect("append");
        log.sync().expect("sync");
    }

    fn payloads(records: &[Record]) -> Vec<String> {
        records
            .iter()
            .map(|r| String::from_utf8_lossy(&r.payload).into_owned())
            .collect()
    }

    #[test]
    fn a_record_decodes_as_encoded_and_a_flipped_bit_is_caught() {
        let bytes = encoded(&[(42, "{\"a\":1}")]);
        let Decoded::Record(record, len) = decode(&bytes) else {
            panic!("a whole record");
        };
        assert_eq!((record.seq, len), (42, bytes.len()));
        assert_eq!(record.payload, b"{\"a\":1}");
        for cut in 0..bytes.len() {
            assert_eq!(decode(&bytes[..cut]), Decoded::Short, "cut at {cut}");
        }
        for at in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[at] ^= 0x10;
            assert!(
                !matches!(decode(&bad), Decoded::Record(..)),
                "flip at {at} went unnoticed"
            );
        }
    }

    #[test]
    fn records_are_read_back_in_order_across_segments() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut log = LogWriter::open(dir.path(), 64, 0).expect("open");
        assert_eq!(log.next_seq(), 1);
        for i in 0..10 {
            append(&mut log, &[&format!("event {i}"), &format!("event {i}b")]);
        }
        assert!(list_segments(dir.path()).expect("list").len() > 3);
        let mut reader = LogReader::new(dir.path(), 1);
        let first = reader.read(20, 7).expect("read");
        let rest = reader.read(20, 100).expect("read");
        let seqs: Vec<u64> = first.iter().chain(&rest).map(|r| r.seq).collect();
        assert_eq!(seqs, (1..=20).collect::<Vec<_>>());
        assert_eq!(payloads(&first)[0], "event 0");
        // Nothing past what is durable.
        let mut reader = LogReader::new(dir.path(), 5);
        assert_eq!(reader.read(8, 100).expect("read").len(), 4);
        assert_eq!(reader.read(8, 100).expect("read").len(), 0);
        assert_eq!(reader.read(9, 100).expect("read").len(), 1);
    }

    #[test]
    fn a_reader_at_the_end_sees_later_appends() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut log = LogWriter::open(dir.path(), 1 << 20, 0).expect("open");
        append(&mut log, &["a"]);
        let mut reader = LogReader::new(dir.path(), 1);
        assert_eq!(reader.read(5, 10).expect("read").len(), 1);
        assert_eq!(reader.read(5, 10).expect("read").len(), 0);
        append(&mut log, &["b", "c"]);
        assert_eq!(payloads(&reader.read(5, 10).expect("read")), ["b", "c"]);
    }

    #[test]
    fn a_torn_tail_is_cut_and_numbering_goes_on() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut log = LogWriter::open(dir.path(), 1 << 20, 0).expect("open");
        append(&mut log, &["one", "two"]);
        drop(log);
        // A crash in the middle of the third record's append.
        let (first, _) = list_segments(dir.path())
            .expect("list")
            .into_iter()
            .next()
            .expect("a segment");
        let path = segment_path(dir.path(), first);
        let torn = encoded(&[(3, "three")]);
        let mut file = OpenOptions::new().append(true).open(&path).expect("open");
        file.write_all(&torn[..torn.len() - 2]).expect("write");
        drop(file);
        let mut log = LogWriter::open(dir.path(), 1 << 20, 0).expect("reopen");
        assert_eq!(log.next_seq(), 3);
        append(&mut log, &["three again"]);
        let records = LogReader::new(dir.path(), 1).read(10, 10).expect("read");
        assert_eq!(payloads(&records), ["one", "two", "three again"]);
    }

    #[test]
    fn numbers_are_never_reused_after_acknowledged_segments_go() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut log = LogWriter::open(dir.path(), 32, 0).expect("open");
        for _ in 0..6 {
            append(&mut log, &["0123456789abcdef"]);
        }
        let before = list_segments(dir.path()).expect("list").len();
        let removed = log.remove_acknowledged(4).expect("remove");
        assert!(removed > 0);
        assert_eq!(
            list_segments(dir.path()).expect("list").len(),
            before - removed
        );
        // What is left still holds everything after 4.
        let records = LogReader::new(dir.path(), 5).read(6, 10).expect("read");
        assert_eq!(records.iter().map(|r| r.seq).collect::<Vec<_>>(), [5, 6]);
        // Everything acknowledged: only the segment being written stays.
        log.remove_acknowledged(6).expect("remove");
        drop(log);
        let log = LogWriter::open(dir.path(), 32, 6).expect("reopen");
        assert_eq!(log.next_seq(), 7);
    }

    #[test]
    fn a_reader_skips_a_corrupt_record_to_the_next_segment() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut log = LogWriter::open(dir.path(), 40, 0).expect("open");
        for i in 0..4 {
            append(&mut log, &[&format!("record {i} padding")]);
        }
        let segments = list_segments(dir.path()).expect("list");
        let (&first, _) = segments.iter().next().expect("a segment");
        let path = segment_path(dir.path(), first);
        let mut bytes = std::fs::read(&path).expect("read");
        bytes[HEADER_LEN + 2] ^= 1;
        std::fs::write(&path, bytes).expect("write");
        let records = LogReader::new(dir.path(), 1).read(4, 10).expect("read");
        // Records 1 and 2 share the first segment: both are lost.
        assert_eq!(records.iter().map(|r| r.seq).collect::<Vec<_>>(), [3, 4]);
    }

    #[test]
    fn acknowledged_numbers_survive_a_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(read_acknowledged(dir.path(), "http://a/").expect("read"), 0);
        write_acknowledged(dir.path(), "http://a/", 17).expect("write");
        write_acknowledged(dir.path(), "http://b/", 3).expect("write");
        write_acknowledged(dir.path(), "http://a/", 18).expect("write");
        assert_eq!(
            read_acknowledged(dir.path(), "http://a/").expect("read"),
            18
        );
        assert_eq!(read_acknowledged(dir.path(), "http://b/").expect("read"), 3);
    }
}
