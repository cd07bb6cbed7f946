//! Reads the shard directories at open (or offline) and rebuilds what they
//! say: messages, Finished markers, delivery state records, damaged
//! regions. It reads through
//! read-only memory maps and never writes, except `quarantine`, which
//! copies damaged bytes aside (and only the owning spool calls it).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fs::File;
use std::io::{self, Write};
use std::path::Path;

use memmap2::Mmap;

use super::error::SpoolError;
use super::id::{SegmentId, SpoolId};
use super::layout;
use super::record::{self, FinishReason, RecordKind, StateChange, StateRecord, VERSION};
use super::scan::{scan, Item};
use super::state::DeliveryState;

/// A Message record found on disk: what recovery needs of it. Its
/// envelope is decoded (so a record that does not decode is damage) and
/// dropped: a million recovered messages must not hold a million
/// envelopes (issue 13); whoever needs one reads it from the segment.
#[derive(Debug, Clone)]
pub(crate) struct Found {
    pub recipients: usize,
    /// Each recipient's domain and the tenant, for the queue's census.
    pub domains: Box<[Box<str>]>,
    pub tenant: Option<Box<str>>,
    /// The envelope's `received_at`.
    pub received_at: u64,
    pub body_len: u64,
    pub crc: u32,
}

/// A Finished record found on disk, with the segment that holds it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Marker {
    pub target: SpoolId,
    pub target_crc: u32,
    pub holder: SegmentId,
}

/// Damaged bytes to quarantine.
#[derive(Debug, Clone)]
pub(crate) struct Damage {
    pub seg: SegmentId,
    pub offset: u64,
    pub bytes: Vec<u8>,
}

/// Everything read from the spool directory.
#[derive(Debug, Default)]
pub(crate) struct Survey {
    /// Messages of the directories read in full.
    pub messages: BTreeMap<SpoolId, Found>,
    /// Markers from every shard directory (a marker for a message may live
    /// in the directory of the shard that adopted it).
    pub markers: Vec<Marker>,
    /// Delivery state records from every shard directory (like markers),
    /// in survey order, with the segment holding each.
    pub states: Vec<(StateRecord, SegmentId)>,
    /// Every segment seen, in every directory.
    pub segments: BTreeSet<SegmentId>,
    /// Damage in the directories read in full.
    pub damage: Vec<Damage>,
}

impl Survey {
    /// Messages without a matching Finished marker, in spool order.
    pub(crate) fn live(&self) -> impl Iterator<Item = (SpoolId, &Found)> + '_ {
        let finished: HashSet<(SpoolId, u32)> = self
            .markers
            .iter()
            .map(|m| (m.target, m.target_crc))
            .collect();
        self.messages
            .iter()
            .filter(move |(id, f)| !finished.contains(&(**id, f.crc)))
            .map(|(id, f)| (*id, f))
    }

    /// Whether a marker finishes the record `(id, crc)`; works for
    /// messages of directories not read in full, too.
    pub(crate) fn is_finished(&self, id: SpoolId, crc: u32) -> bool {
        self.markers
            .iter()
            .any(|m| m.target == id && m.target_crc == crc)
    }

    /// The live messages in spool order with their delivery state folded
    /// from the state records that match them (target id and crc).
    pub(crate) fn live_with_state(
        &self,
    ) -> impl Iterator<Item = (SpoolId, &Found, DeliveryState)> + '_ {
        let mut states: HashMap<(SpoolId, u32), DeliveryState> = HashMap::new();
        for (rec, _holder) in &self.states {
            let state = states.entry((rec.target, rec.target_crc)).or_default();
            match &rec.change {
                StateChange::Outcome { index, outcome } => {
                    state.add_outcome(*index, outcome.clone());
                }
                StateChange::Deferred(d) => state.add_deferral(d.clone()),
                StateChange::DelayNotice => state.delay_noticed = true,
            }
        }
        self.live().map(move |(id, f)| {
            let mut state = states.remove(&(id, f.crc)).unwrap_or_default();
            let count = f.recipients;
            state.outcomes.retain(|&i, _| {
                let known = (i as usize) < count;
                if !known {
                    tracing::warn!(%id, index = i, recipients = count,
                            "ignoring an outcome for a recipient the message does not have");
                }
                known
            });
            (id, f, state)
        })
    }
}

/// Maps a segment read-only; `None` if it vanished (reclaimed meanwhile) or
/// is empty.
pub(crate) fn map_segment(path: &Path) -> Result<Option<Mmap>, SpoolError> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(SpoolError::io("opening", path, e)),
    };
    let len = file
        .metadata()
        .map_err(|e| SpoolError::io("inspecting", path, e))?
        .len();
    if len == 0 {
        return Ok(None);
    }
    // SAFETY: spate never truncates or rewrites a segment in place: segments
    // only grow (appends, preallocation) and are deleted whole, which keeps
    // existing mappings valid. Bytes being appended concurrently may be seen
    // half-written; the scanner treats them as a torn tail or damage and
    // checksums guard everything it returns. Only an outside process
    // truncating a segment could fault this mapping.
    let map = unsafe { Mmap::map(&file) }.map_err(|e| SpoolError::io("mapping", path, e))?;
    Ok(Some(map))
}

/// Reads every shard directory under `spool_dir`: all records of the
/// directories in `full`, only Finished markers of the others.
pub(crate) fn survey(spool_dir: &Path, full: &BTreeSet<u8>) -> Result<Survey, SpoolError> {
    let mut shards: BTreeSet<u8> = layout::list_shards(spool_dir)
        .map_err(|e| SpoolError::io("listing", spool_dir, e))?
        .into_iter()
        .collect();
    shards.extend(full.iter().copied());
    let mut out = Survey::default();
    for shard in shards {
        let in_full = full.contains(&shard);
        let segs = layout::list_segments(spool_dir, shard)
            .map_err(|e| SpoolError::io("listing", layout::shard_dir(spool_dir, shard), e))?;
        for seg in segs {
            out.segments.insert(seg);
            let path = layout::segment_path(spool_dir, seg);
            let Some(map) = map_segment(&path)? else {
                continue;
            };
            survey_segment(&mut out, seg, &map, in_full);
        }
    }
    Ok(out)
}

pub(crate) fn survey_segment(out: &mut Survey, seg: SegmentId, bytes: &[u8], in_full: bool) {
    let verify = |kind: u8| in_full || RecordKind::is_reference(kind);
    for item in scan(bytes, verify) {
        match item {
            Item::Damaged { offset, end } => {
                if in_full {
                    out.damage.push(Damage {
                        seg,
                        offset,
                        bytes: bytes[offset as usize..end as usize].to_vec(),
                    });
                }
            }
            Item::Record {
                offset,
                header,
                payload,
                verified,
            } => {
                if !verified {
                    continue;
                }
                if header.version != VERSION {
                    if in_full {
                        tracing::warn!(%seg, offset, version = header.version,
                            "skipping spool record of an unknown format version");
                    }
                    continue;
                }
                let id = SpoolId::new(seg, offset as u32);
                match (RecordKind::from_code(header.kind), id) {
                    (Some(RecordKind::Message), Some(id)) if in_full => {
                        match record::decode_message(payload) {
                            Ok((envelope, body)) => {
                                out.messages.insert(
                                    id,
                                    Found {
                                        recipients: envelope.recipients.len(),
                                        domains: envelope
                                            .recipients
                                            .iter()
                                            .map(|r| {
                                                let a = r.address.as_str();
                                                let d = a.rsplit_once('@').map_or(a, |(_, d)| d);
                                                d.to_ascii_lowercase().into_boxed_str()
                                            })
                                            .collect(),
                                        tenant: envelope.tenant.map(String::into_boxed_str),
                                        received_at: envelope.received_at,
                                        body_len: body.len() as u64,
                                        crc: header.crc,
                                    },
                                );
                            }
                            Err(e) => {
                                tracing::warn!(%seg, offset, error = e.0,
                                    "spool message record does not decode");
                                let end = offset as usize + record::HEADER_LEN + payload.len();
                                out.damage.push(Damage {
                                    seg,
                                    offset,
                                    bytes: bytes[offset as usize..end].to_vec(),
                                });
                            }
                        }
                    }
                    (Some(RecordKind::Message), _) => {}
                    (Some(RecordKind::Finished), _) => match record::decode_finished(payload) {
                        Ok(f) => {
                            if FinishReason::from_code(f.reason_code).is_none() {
                                tracing::debug!(%seg, offset, code = f.reason_code,
                                    "Finished marker with an unknown reason still finishes");
                            }
                            out.markers.push(Marker {
                                target: f.target,
                                target_crc: f.target_crc,
                                holder: seg,
                            });
                        }
                        Err(e) => tracing::warn!(%seg, offset, error = e.0,
                            "ignoring undecodable Finished marker"),
                    },
                    (
                        Some(
                            kind @ (RecordKind::RecipientOutcome
                            | RecordKind::Deferred
                            | RecordKind::DelayNotice),
                        ),
                        _,
                    ) => match record::decode_state(kind, payload) {
                        Ok(rec) => out.states.push((rec, seg)),
                        Err(e) => tracing::warn!(%seg, offset, error = e.0,
                                "ignoring undecodable delivery state record"),
                    },
                    (None, _) => {
                        if in_full {
                            tracing::info!(%seg, offset, kind = header.kind,
                                "skipping spool record of an unknown kind");
                        }
                    }
                }
            }
        }
    }
}

/// Copies damaged regions to `<spool_dir>/quarantine/`, one file each, and
/// logs every one. Failures are logged, not returned: recovery must go on,
/// and the bytes stay in their segment until it is reclaimed.
pub(crate) fn quarantine(spool_dir: &Path, damage: &[Damage]) {
    if damage.is_empty() {
        return;
    }
    let dir = layout::quarantine_dir(spool_dir);
    if let Err(e) = std::fs::create_dir_all(&dir) {
        tracing::error!(dir = %dir.display(), error = %e, "cannot create quarantine directory");
    }
    for d in damage {
        let path = layout::quarantine_path(spool_dir, d.seg, d.offset);
        let written = File::create(&path).and_then(|mut f| {
            f.write_all(&d.bytes)?;
            f.sync_all()
        });
        match written {
            Ok(()) => tracing::warn!(segment = %d.seg, offset = d.offset, len = d.bytes.len(),
                file = %path.display(), "quarantined damaged spool record"),
            Err(e) => tracing::error!(segment = %d.seg, offset = d.offset, error = %e,
                file = %path.display(), "damaged spool record could not be quarantined; skipped"),
        }
    }
}
