//! Reading messages back: one message from a segment's memory map (for
//! zero-copy sends) and the offline listing of the whole spool. It never
//! writes, quarantines or deletes anything.

use std::collections::BTreeSet;
use std::ops::Range;
use std::path::Path;
use std::rc::Rc;

use memmap2::Mmap;

use crate::envelope::Envelope;

use super::error::SpoolError;
use super::id::{SegmentId, SpoolId};
use super::layout;
use super::record::{self, RecordKind, HEADER_LEN};
use super::recovery;
use super::state::DeliveryState;

/// A message as stored: its envelope and its body borrowed from the
/// segment's memory map, so a delivery can send it without copying. The
/// map stays valid even if the segment is reclaimed meanwhile.
pub struct StoredMessage {
    envelope: Envelope,
    map: Rc<Mmap>,
    body: Range<usize>,
}

impl StoredMessage {
    /// Decoded from the record, checksum verified.
    pub fn envelope(&self) -> &Envelope {
        &self.envelope
    }

    /// The message bytes exactly as received (after dot-unstuffing).
    pub fn body(&self) -> &[u8] {
        &self.map[self.body.clone()]
    }
}

/// A live message as `spate queue list` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedMessage {
    pub id: SpoolId,
    pub envelope: Envelope,
    /// Body size in bytes.
    pub size: u64,
    /// Finished recipients, attempts, next attempt and last error, as
    /// recovery would return them.
    pub delivery: DeliveryState,
}

/// What the record at `id` needs of a map: `Ok(None)` if the map is too
/// short (the segment grew since it was mapped).
pub(crate) fn read_at(map: &Rc<Mmap>, id: SpoolId) -> Result<Option<StoredMessage>, SpoolError> {
    let corrupt = |detail| SpoolError::Corrupt { id, detail };
    let off = id.offset() as usize;
    if off + HEADER_LEN > map.len() {
        return Ok(None);
    }
    let header = record::parse_header(&map[off..]).ok_or(corrupt("bad record header"))?;
    if header.kind != RecordKind::Message as u8 || header.version != record::VERSION {
        return Err(corrupt("not a message record"));
    }
    let start = off + HEADER_LEN;
    let Some(end) = usize::try_from(header.payload_len)
        .ok()
        .and_then(|l| start.checked_add(l))
    else {
        return Err(corrupt("absurd payload length"));
    };
    if end > map.len() {
        return Ok(None);
    }
    let payload = &map[start..end];
    if !record::payload_matches(&map[off..], payload, header.crc) {
        return Err(corrupt("checksum mismatch"));
    }
    let (envelope, body) = record::decode_message(payload).map_err(|e| corrupt(e.0))?;
    Ok(Some(StoredMessage {
        envelope,
        map: Rc::clone(map),
        body: start + body.start..start + body.end,
    }))
}

/// Lists every live message of every shard directory under `spool_dir`,
/// without glommio and without changing anything: safe while the server
/// runs (records being appended read as a torn tail and are left out).
/// It returns what the recoveries of all shards together would return.
pub fn scan_dir(spool_dir: &Path) -> Result<Vec<QueuedMessage>, SpoolError> {
    let all: BTreeSet<u8> = layout::list_shards(spool_dir)
        .map_err(|e| SpoolError::io("listing", spool_dir, e))?
        .into_iter()
        .collect();
    let survey = recovery::survey(spool_dir, &all)?;
    // The survey keeps no envelopes: each is read again from its segment,
    // mapped once for all its messages.
    let mut mapped: Option<(SegmentId, Option<Rc<Mmap>>)> = None;
    let mut out = Vec::new();
    for (id, found, delivery) in survey.live_with_state() {
        let seg = id.segment();
        if mapped.as_ref().is_none_or(|(s, _)| *s != seg) {
            let map = recovery::map_segment(&layout::segment_path(spool_dir, seg))?;
            mapped = Some((seg, map.map(Rc::new)));
        }
        // A segment gone since the survey was reclaimed: its messages
        // finished meanwhile; so did a record past a shorter map.
        let Some((_, Some(map))) = &mapped else {
            continue;
        };
        let Some(message) = read_at(map, id)? else {
            continue;
        };
        out.push(QueuedMessage {
            id,
            envelope: message.envelope,
            size: found.body_len,
            delivery,
        });
    }
    Ok(out)
}
