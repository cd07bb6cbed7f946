//! The on-disk record format: header layout, checksums, and the encoding of
//! Message, Finished, RecipientOutcome and Deferred payloads. Pure byte work: it never touches a file
//! and never decides what a damaged record means (see `scan`).
//!
//! Every record is a 24-byte header followed by the payload, the whole
//! padded with zeros to a multiple of 8 bytes (the padding is not written:
//! segments are preallocated, so it is already zero on disk).
//!
//! ```text
//! offset size field
//!  0      4   magic "SPRC"
//!  4      1   format version (1)
//!  5      1   record kind (1 Message, 2 Finished, 3 RecipientOutcome,
//!             4 Deferred, 5 DelayNotice; others skipped by readers)
//!  6      2   flags, zero for now
//!  8      8   payload length in bytes, little endian (padding excluded)
//! 16      4   crc32c over bytes 0..16 and then the payload
//! 20      4   crc32c over bytes 0..20 (header check: makes the length
//!             trustworthy even when the payload is damaged)
//! ```
//! This header layout is fixed for all future versions; a new version may
//! change payload encodings, and new kinds may be added, without breaking
//! older readers (they skip what they do not understand).
//!
//! Message payload: `u32 envelope length | envelope | body bytes`.
//! Envelope (little endian, strings as `u32 length | UTF-8 bytes`):
//! `sender | u32 recipient count | recipients | body type u8 | smtputf8 u8 |
//! dsn_return u8 (0 none, 1 full, 2 headers) | envid (u8 present | string) |
//! received_at u64 | client ip (u8 4 or 6 | 4 or 16 bytes) | helo |
//! extensions | 0xE5`. Extensions, each `u8 tag | string`, are written
//! only when set (so an envelope without them is encoded exactly as
//! before they existed): tag 1 the authenticated user, 2 the tenant.
//! Readers skip tags they do not know; a reader older than the
//! extensions refuses an envelope that has one (the record is then
//! quarantined, not lost).
//! Recipient: `address | notify (u8 present | u8 bits) | orcpt (u8 present |
//! string)`. The final 0xE5 guarantees a non-zero last byte, which the
//! scanner uses to tell a torn tail from a damaged record.
//!
//! Finished payload (16 bytes): `u64 target SpoolId | u32 crc of the target
//! record | u8 reason | 2 zero bytes | 0xF1`. The target crc makes a stale
//! marker harmless if a segment number is ever reused.
//!
//! State records (kinds 3 and 4, added without a version change: spools
//! written before them simply have none, and older readers skip them)
//! start like a Finished payload, `u64 target SpoolId | u32 crc of the
//! target record`, for the same reason, then:
//! - RecipientOutcome (3): `u32 recipient index | u8 outcome (1 Delivered,
//!   2 Bounced, 3 Expired) | remote MTA (u8 present | string) | reply
//!   string | 0xD3`.
//! - Deferred (4): `u32 attempts | u64 next attempt, Unix seconds | last
//!   error string | 0xD4`.
//! - DelayNotice (5, added like 3 and 4): `0xD5` alone: the sender was
//!   sent its "delayed" DSN (`[delivery] delay_warning_time`), once.
//!
//! Both are padded with zeros to a multiple of 8 bytes like any record.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::ops::Range;

use crate::envelope::{BodyType, DsnReturn, Envelope, Notify, Recipient};

use super::id::SpoolId;
use super::state::{Deferred, OutcomeKind, RecipientOutcome};

pub(crate) const MAGIC: [u8; 4] = *b"SPRC";
pub(crate) const VERSION: u8 = 1;
pub(crate) const HEADER_LEN: usize = 24;
const ENVELOPE_END: u8 = 0xE5;
/// Envelope extension tags (see the module header).
const EXT_AUTH_USER: u8 = 1;
const EXT_TENANT: u8 = 2;
const FINISHED_END: u8 = 0xF1;
const FINISHED_LEN: usize = 16;
const OUTCOME_END: u8 = 0xD3;
const DEFERRED_END: u8 = 0xD4;
const DELAY_NOTICE_END: u8 = 0xD5;

/// Record kinds this version writes. Readers skip other kinds whose
/// checksum is valid, so later versions can add kinds without a format
/// change (that is how outcomes and deferrals were added).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RecordKind {
    Message = 1,
    Finished = 2,
    RecipientOutcome = 3,
    Deferred = 4,
    DelayNotice = 5,
}

impl RecordKind {
    pub(crate) fn from_code(code: u8) -> Option<Self> {
        match code {
            1 => Some(RecordKind::Message),
            2 => Some(RecordKind::Finished),
            3 => Some(RecordKind::RecipientOutcome),
            4 => Some(RecordKind::Deferred),
            5 => Some(RecordKind::DelayNotice),
            _ => None,
        }
    }

    /// Small records that name a message by id: read from every shard
    /// directory at recovery, since the shard that wrote them may not be
    /// the one that owns the message after the core count changed.
    pub(crate) fn is_reference(code: u8) -> bool {
        matches!(
            Self::from_code(code),
            Some(
                RecordKind::Finished
                    | RecordKind::RecipientOutcome
                    | RecordKind::Deferred
                    | RecordKind::DelayNotice
            )
        )
    }
}

/// Why a message left the queue. Recorded so that an operator reading the
/// spool (or a future audit log) can tell a delivery from a discard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FinishReason {
    /// Accepted by the next hop or the mailbox store.
    Delivered,
    /// A bounce (DSN) was generated and spooled; the original is done.
    Bounced,
    /// Removed by an operator.
    Deleted,
    /// Gave up after the queue lifetime (a bounce was spooled if wanted).
    Expired,
    /// The spool itself dropped it: its sync failed and the client was told
    /// 451, so it must never be delivered.
    Discarded,
}

impl FinishReason {
    fn code(self) -> u8 {
        match self {
            FinishReason::Delivered => 1,
            FinishReason::Bounced => 2,
            FinishReason::Deleted => 3,
            FinishReason::Expired => 4,
            FinishReason::Discarded => 5,
        }
    }

    /// `None` for codes written by a newer version; such a marker still
    /// finishes its message.
    pub(crate) fn from_code(code: u8) -> Option<Self> {
        match code {
            1 => Some(FinishReason::Delivered),
            2 => Some(FinishReason::Bounced),
            3 => Some(FinishReason::Deleted),
            4 => Some(FinishReason::Expired),
            5 => Some(FinishReason::Discarded),
            _ => None,
        }
    }
}

/// A header whose magic and header check are valid: its length can be
/// trusted even if the payload turns out damaged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Header {
    pub version: u8,
    pub kind: u8,
    pub payload_len: u64,
    pub crc: u32,
}

/// Why a payload does not decode (checksum was fine: a writer bug or a
/// newer version's payload).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DecodeError(pub &'static str);

/// Total on-disk length of a record with this payload, padding included.
pub(crate) fn record_len(payload_len: u64) -> u64 {
    HEADER_LEN as u64 + payload_len.div_ceil(8) * 8
}

fn header_fields(kind: RecordKind, payload_len: u64) -> [u8; 16] {
    let mut f = [0u8; 16];
    f[0..4].copy_from_slice(&MAGIC);
    f[4] = VERSION;
    f[5] = kind as u8;
    f[8..16].copy_from_slice(&payload_len.to_le_bytes());
    f
}

fn header_bytes(fields: [u8; 16], crc: u32) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[0..16].copy_from_slice(&fields);
    h[16..20].copy_from_slice(&crc.to_le_bytes());
    let hcrc = crc32c::crc32c(&h[0..20]);
    h[20..24].copy_from_slice(&hcrc.to_le_bytes());
    h
}

/// Parses a header; `None` unless both magic and header check match.
pub(crate) fn parse_header(bytes: &[u8]) -> Option<Header> {
    let h = bytes.get(0..HEADER_LEN)?;
    if h[0..4] != MAGIC {
        return None;
    }
    let hcrc = u32::from_le_bytes([h[20], h[21], h[22], h[23]]);
    if crc32c::crc32c(&h[0..20]) != hcrc {
        return None;
    }
    let mut len = [0u8; 8];
    len.copy_from_slice(&h[8..16]);
    Some(Header {
        version: h[4],
        kind: h[5],
        payload_len: u64::from_le_bytes(len),
        crc: u32::from_le_bytes([h[16], h[17], h[18], h[19]]),
    })
}

/// Checks a payload against its header: the crc covers header bytes 0..16
/// and the payload.
pub(crate) fn payload_matches(header_bytes: &[u8], payload: &[u8], crc: u32) -> bool {
    let c = crc32c::crc32c(&header_bytes[0..16]);
    crc32c::crc32c_append(c, payload) == crc
}

/// A Message record split in the two buffers it is written from: the
/// header and envelope (built here), then the body exactly as the session
/// handed it over, written without a copy at `head.len()` past the start.
pub(crate) struct MessageRecord {
    pub head: Vec<u8>,
    pub body: Vec<u8>,
    /// Padded on-disk length of the whole record.
    pub len: u64,
    /// The record crc, quoted by Finished markers for this message.
    pub crc: u32,
}

/// Builds the two write buffers of a Message record.
pub(crate) fn encode_message(envelope: &Envelope, body: Vec<u8>) -> MessageRecord {
    MessageDraft::new(envelope, body.len()).seal(body)
}

/// A Message record whose length is known before its body is final: the
/// spool reserves its place, may write the id that place gives into the
/// body, then seals it (one checksum pass over the body).
pub(crate) struct MessageDraft {
    /// Header (zeros until sealed) and envelope.
    head: Vec<u8>,
    body_len: usize,
    payload_len: u64,
}

impl MessageDraft {
    pub(crate) fn new(envelope: &Envelope, body_len: usize) -> MessageDraft {
        let mut env = Vec::with_capacity(128);
        encode_envelope(envelope, &mut env);
        let payload_len = 4 + env.len() as u64 + body_len as u64;
        let mut head = Vec::with_capacity(HEADER_LEN + 4 + env.len());
        head.extend_from_slice(&[0u8; HEADER_LEN]);
        // env is bounded by SMTP limits far below 4 GiB; saturate rather than
        // wrap so an absurd envelope fails its decode instead of aliasing.
        head.extend_from_slice(&u32::try_from(env.len()).unwrap_or(u32::MAX).to_le_bytes());
        head.extend_from_slice(&env);
        MessageDraft {
            head,
            body_len,
            payload_len,
        }
    }

    /// Padded on-disk length of the whole record.
    pub(crate) fn len(&self) -> u64 {
        record_len(self.payload_len)
    }

    /// The record, with `body` (of the length the draft was made for).
    pub(crate) fn seal(self, body: Vec<u8>) -> MessageRecord {
        debug_assert_eq!(body.len(), self.body_len, "the body changed length");
        let MessageDraft {
            mut head,
            payload_len,
            ..
        } = self;
        let fields = header_fields(RecordKind::Message, payload_len);
        let mut crc = crc32c::crc32c(&fields);
        crc = crc32c::crc32c_append(crc, &head[HEADER_LEN..]);
        crc = crc32c::crc32c_append(crc, &body);
        head[0..HEADER_LEN].copy_from_slice(&header_bytes(fields, crc));
        MessageRecord {
            head,
            body,
            len: record_len(payload_len),
            crc,
        }
    }
}

/// A decoded Finished marker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Finished {
    pub target: SpoolId,
    pub target_crc: u32,
    pub reason_code: u8,
}

/// Builds a whole Finished record (header, payload; 40 bytes, no padding
/// needed).
pub(crate) fn encode_finished(target: SpoolId, target_crc: u32, reason: FinishReason) -> Vec<u8> {
    let mut payload = [0u8; FINISHED_LEN];
    payload[0..8].copy_from_slice(&target.to_u64().to_le_bytes());
    payload[8..12].copy_from_slice(&target_crc.to_le_bytes());
    payload[12] = reason.code();
    payload[15] = FINISHED_END;
    let fields = header_fields(RecordKind::Finished, FINISHED_LEN as u64);
    let crc = crc32c::crc32c_append(crc32c::crc32c(&fields), &payload);
    let mut rec = Vec::with_capacity(HEADER_LEN + FINISHED_LEN);
    rec.extend_from_slice(&header_bytes(fields, crc));
    rec.extend_from_slice(&payload);
    rec
}

pub(crate) fn decode_finished(payload: &[u8]) -> Result<Finished, DecodeError> {
    if payload.len() != FINISHED_LEN || payload[15] != FINISHED_END {
        return Err(DecodeError("bad Finished payload"));
    }
    let mut id = [0u8; 8];
    id.copy_from_slice(&payload[0..8]);
    Ok(Finished {
        target: SpoolId::from_u64(u64::from_le_bytes(id)),
        target_crc: u32::from_le_bytes([payload[8], payload[9], payload[10], payload[11]]),
        reason_code: payload[12],
    })
}

/// A record of the delivery state of one message (kinds 3 and 4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StateRecord {
    pub target: SpoolId,
    pub target_crc: u32,
    pub change: StateChange,
}

/// What a state record says about its message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum StateChange {
    Outcome {
        index: u32,
        outcome: RecipientOutcome,
    },
    Deferred(Deferred),
    /// The "delayed" DSN was sent.
    DelayNotice,
}

/// Builds a whole state record, padded to a multiple of 8 bytes.
pub(crate) fn encode_state(rec: &StateRecord) -> Vec<u8> {
    let mut payload = Vec::with_capacity(64);
    payload.extend_from_slice(&rec.target.to_u64().to_le_bytes());
    payload.extend_from_slice(&rec.target_crc.to_le_bytes());
    let kind = match &rec.change {
        StateChange::Outcome { index, outcome } => {
            payload.extend_from_slice(&index.to_le_bytes());
            payload.push(outcome.kind.code());
            put_opt_str(&mut payload, &outcome.remote_mta);
            put_str(&mut payload, &outcome.reply);
            payload.push(OUTCOME_END);
            RecordKind::RecipientOutcome
        }
        StateChange::Deferred(d) => {
            payload.extend_from_slice(&d.attempts.to_le_bytes());
            payload.extend_from_slice(&d.next_attempt_unix.to_le_bytes());
            put_str(&mut payload, &d.last_error);
            payload.push(DEFERRED_END);
            RecordKind::Deferred
        }
        StateChange::DelayNotice => {
            payload.push(DELAY_NOTICE_END);
            RecordKind::DelayNotice
        }
    };
    let fields = header_fields(kind, payload.len() as u64);
    let crc = crc32c::crc32c_append(crc32c::crc32c(&fields), &payload);
    let mut out = Vec::with_capacity(record_len(payload.len() as u64) as usize);
    out.extend_from_slice(&header_bytes(fields, crc));
    out.extend_from_slice(&payload);
    out.resize(record_len(payload.len() as u64) as usize, 0);
    out
}

/// Decodes the payload of a kind 3, 4 or 5 record.
pub(crate) fn decode_state(kind: RecordKind, payload: &[u8]) -> Result<StateRecord, DecodeError> {
    let mut r = Reader {
        buf: payload,
        pos: 0,
    };
    let target = SpoolId::from_u64(r.u64()?);
    let target_crc = r.u32()?;
    let (change, end) = match kind {
        RecordKind::RecipientOutcome => {
            let index = r.u32()?;
            let kind = OutcomeKind::from_code(r.u8()?).ok_or(DecodeError("bad outcome code"))?;
            let remote_mta = r.opt_string()?;
            let reply = r.string()?;
            let outcome = RecipientOutcome {
                kind,
                reply,
                remote_mta,
            };
            (StateChange::Outcome { index, outcome }, OUTCOME_END)
        }
        RecordKind::Deferred => {
            let attempts = r.u32()?;
            let next_attempt_unix = r.u64()?;
            let last_error = r.string()?;
            let d = Deferred {
                attempts,
                next_attempt_unix,
                last_error,
            };
            (StateChange::Deferred(d), DEFERRED_END)
        }
        RecordKind::DelayNotice => (StateChange::DelayNotice, DELAY_NOTICE_END),
        RecordKind::Message | RecordKind::Finished => {
            return Err(DecodeError("not a state record"))
        }
    };
    if r.u8()? != end || r.pos != payload.len() {
        return Err(DecodeError("bad state record end"));
    }
    Ok(StateRecord {
        target,
        target_crc,
        change,
    })
}

/// Decodes a Message payload: the envelope and where the body lies inside
/// `payload` (so callers can borrow it from an mmap).
pub(crate) fn decode_message(payload: &[u8]) -> Result<(Envelope, Range<usize>), DecodeError> {
    let mut r = Reader {
        buf: payload,
        pos: 0,
    };
    let env_len = r.u32()? as usize;
    let env_end = 4usize
        .checked_add(env_len)
        .filter(|&e| e <= payload.len())
        .ok_or(DecodeError("envelope length past payload"))?;
    let mut er = Reader {
        buf: &payload[4..env_end],
        pos: 0,
    };
    let envelope = decode_envelope(&mut er)?;
    if er.pos != env_len {
        return Err(DecodeError("trailing bytes after envelope"));
    }
    Ok((envelope, env_end..payload.len()))
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    // Strings come from bounded SMTP lines; see encode_message on saturation.
    out.extend_from_slice(&u32::try_from(s.len()).unwrap_or(u32::MAX).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn put_opt_str(out: &mut Vec<u8>, s: &Option<String>) {
    match s {
        None => out.push(0),
        Some(s) => {
            out.push(1);
            put_str(out, s);
        }
    }
}

fn encode_envelope(e: &Envelope, out: &mut Vec<u8>) {
    put_str(out, &e.sender);
    out.extend_from_slice(
        &u32::try_from(e.recipients.len())
            .unwrap_or(u32::MAX)
            .to_le_bytes(),
    );
    for r in &e.recipients {
        put_str(out, &r.address);
        match r.notify {
            None => out.extend_from_slice(&[0, 0]),
            Some(n) => out.extend_from_slice(&[1, n.to_bits()]),
        }
        put_opt_str(out, &r.orcpt);
    }
    out.push(match e.body_type {
        BodyType::SevenBit => 0,
        BodyType::EightBitMime => 1,
        BodyType::BinaryMime => 2,
    });
    out.push(u8::from(e.smtputf8));
    out.push(match e.dsn_return {
        None => 0,
        Some(DsnReturn::Full) => 1,
        Some(DsnReturn::Headers) => 2,
    });
    put_opt_str(out, &e.envid);
    out.extend_from_slice(&e.received_at.to_le_bytes());
    match e.client_ip {
        IpAddr::V4(a) => {
            out.push(4);
            out.extend_from_slice(&a.octets());
        }
        IpAddr::V6(a) => {
            out.push(6);
            out.extend_from_slice(&a.octets());
        }
    }
    put_str(out, &e.helo);
    for (tag, value) in [(EXT_AUTH_USER, &e.auth_user), (EXT_TENANT, &e.tenant)] {
        if let Some(value) = value {
            out.push(tag);
            put_str(out, value);
        }
    }
    out.push(ENVELOPE_END);
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or(DecodeError("truncated envelope"))?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32, DecodeError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> Result<u64, DecodeError> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(a))
    }
    fn string(&mut self) -> Result<String, DecodeError> {
        let n = self.u32()? as usize;
        let b = self.take(n)?;
        String::from_utf8(b.to_vec()).map_err(|_| DecodeError("string is not UTF-8"))
    }
    fn opt_string(&mut self) -> Result<Option<String>, DecodeError> {
        match self.u8()? {
            0 => Ok(None),
            1 => self.string().map(Some),
            _ => Err(DecodeError("bad option tag")),
        }
    }
}

fn decode_envelope(r: &mut Reader<'_>) -> Result<Envelope, DecodeError> {
    let sender = r.string()?;
    let count = r.u32()? as usize;
    // Each recipient takes at least 7 bytes: bound the allocation by the input.
    let mut recipients = Vec::with_capacity(count.min(r.buf.len() / 7));
    for _ in 0..count {
        let address = r.string()?;
        let notify = match (r.u8()?, r.u8()?) {
            (0, _) => None,
            (1, bits) => Some(Notify::from_bits(bits)),
            _ => return Err(DecodeError("bad notify tag")),
        };
        let orcpt = r.opt_string()?;
        recipients.push(Recipient {
            address,
            notify,
            orcpt,
        });
    }
    let body_type = match r.u8()? {
        0 => BodyType::SevenBit,
        1 => BodyType::EightBitMime,
        2 => BodyType::BinaryMime,
        _ => return Err(DecodeError("bad body type")),
    };
    let smtputf8 = match r.u8()? {
        0 => false,
        1 => true,
        _ => return Err(DecodeError("bad smtputf8 flag")),
    };
    let dsn_return = match r.u8()? {
        0 => None,
        1 => Some(DsnReturn::Full),
        2 => Some(DsnReturn::Headers),
        _ => return Err(DecodeError("bad dsn return")),
    };
    let envid = r.opt_string()?;
    let received_at = r.u64()?;
    let client_ip = match r.u8()? {
        4 => {
            let b = r.take(4)?;
            IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3]))
        }
        6 => {
            let mut a = [0u8; 16];
            a.copy_from_slice(r.take(16)?);
            IpAddr::V6(Ipv6Addr::from(a))
        }
        _ => return Err(DecodeError("bad ip family")),
    };
    let helo = r.string()?;
    let (mut auth_user, mut tenant) = (None, None);
    loop {
        match r.u8()? {
            ENVELOPE_END => break,
            EXT_AUTH_USER => auth_user = Some(r.string()?),
            EXT_TENANT => tenant = Some(r.string()?),
            // A later version's extension: skipped.
            _ => {
                r.string()?;
            }
        }
    }
    Ok(Envelope {
        sender,
        recipients,
        body_type,
        smtputf8,
        dsn_return,
        envid,
        received_at,
        client_ip,
        helo,
        auth_user,
        tenant,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Envelopes covering every field and variant, shared with other tests.
    pub(crate) fn sample_envelopes() -> Vec<Envelope> {
        let base = Envelope {
            sender: "alice@example.test".into(),
            recipients: vec![Recipient {
                address: "bob@example.test".into(),
                notify: None,
                orcpt: None,
            }],
            body_type: BodyType::SevenBit,
            smtputf8: false,
            dsn_return: None,
            envid: None,
            received_at: 1_700_000_000,
            client_ip: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7)),
            helo: "client.example.test".into(),
            auth_user: None,
            tenant: None,
        };
        let mut all = vec![base.clone()];
        all.push(Envelope {
            sender: String::new(),
            recipients: vec![
                Recipient {
                    address: "\"quoted local\"@example.test".into(),
                    notify: Some(Notify {
                        never: true,
                        ..Notify::default()
                    }),
                    orcpt: Some("rfc822;bob+2B@example.test".into()),
                },
                Recipient {
                    address: "用户@例子.测试".into(),
                    notify: Some(Notify {
                        never: false,
                        success: true,
                        failure: true,
                        delay: true,
                    }),
                    orcpt: Some("utf-8;用户@例子.测试".into()),
                },
                Recipient {
                    address: "dave@example.test".into(),
                    notify: Some(Notify::default()),
                    orcpt: None,
                },
            ],
            body_type: BodyType::EightBitMime,
            smtputf8: true,
            dsn_return: Some(DsnReturn::Full),
            envid: Some("QQ314159+2Bx".into()),
            received_at: u64::MAX,
            client_ip: "2001:db8::1".parse().expect("literal v6 address"),
            helo: "[IPv6:2001:db8::1]".into(),
            auth_user: Some("alice".into()),
            tenant: Some("Acme Corp".into()),
        });
        all.push(Envelope {
            body_type: BodyType::BinaryMime,
            dsn_return: Some(DsnReturn::Headers),
            recipients: Vec::new(),
            sender: "josé@exämple.test".into(),
            client_ip: "::ffff:10.0.0.1".parse().expect("literal mapped address"),
            tenant: Some("t".into()),
            ..base
        });
        all
    }

    #[test]
    fn envelope_extensions_are_optional_and_skippable() {
        let base = sample_envelopes()[0].clone();
        // Without extensions the encoding is the one older spools hold:
        // the end mark right after the HELO name.
        let rec = encode_message(&base, Vec::new());
        let mut old = rec.head.clone();
        old.extend_from_slice(&rec.body);
        let (decoded, _) = decode_message(&old[HEADER_LEN..]).expect("decodes");
        assert_eq!(decoded, base);
        let mut env = Vec::new();
        encode_envelope(&base, &mut env);
        let tail = [
            &(base.helo.len() as u32).to_le_bytes()[..],
            base.helo.as_bytes(),
            &[0xE5],
        ]
        .concat();
        assert!(env.ends_with(&tail));
        // An unknown tag (a later version's) is skipped.
        let mut with_unknown = env[..env.len() - 1].to_vec();
        with_unknown.push(9);
        put_str(&mut with_unknown, "future");
        with_unknown.push(EXT_TENANT);
        put_str(&mut with_unknown, "acme");
        with_unknown.push(ENVELOPE_END);
        let mut r = Reader {
            buf: &with_unknown,
            pos: 0,
        };
        let decoded = decode_envelope(&mut r).expect("decodes");
        assert_eq!(decoded.tenant.as_deref(), Some("acme"));
        assert_eq!(decoded.auth_user, None);
        // A truncated extension is refused.
        let mut r = Reader {
            buf: &with_unknown[..env.len() + 2],
            pos: 0,
        };
        assert!(decode_envelope(&mut r).is_err());
    }

    #[test]
    fn message_round_trip_every_field() {
        for env in sample_envelopes() {
            for body in [
                Vec::new(),
                b"Subject: x\r\n\r\nhi\r\n".to_vec(),
                vec![7u8; 5000],
            ] {
                let rec = encode_message(&env, body.clone());
                let mut bytes = rec.head.clone();
                bytes.extend_from_slice(&rec.body);
                let h = parse_header(&bytes).expect("valid header");
                assert_eq!(h.kind, RecordKind::Message as u8);
                assert_eq!(h.crc, rec.crc);
                assert_eq!(rec.len, record_len(h.payload_len));
                assert_eq!(rec.len % 8, 0);
                let payload = &bytes[HEADER_LEN..];
                assert_eq!(payload.len() as u64, h.payload_len);
                assert!(payload_matches(&bytes, payload, h.crc));
                let (decoded, range) = decode_message(payload).expect("decodes");
                assert_eq!(decoded, env);
                assert_eq!(&payload[range], &body[..]);
            }
        }
    }

    #[test]
    fn finished_round_trip() {
        let id = SpoolId::from_u64(0x0102_0304_0506_0708);
        for reason in [
            FinishReason::Delivered,
            FinishReason::Bounced,
            FinishReason::Deleted,
            FinishReason::Expired,
            FinishReason::Discarded,
        ] {
            let rec = encode_finished(id, 0xabcd, reason);
            assert_eq!(rec.len() as u64, record_len(FINISHED_LEN as u64));
            let h = parse_header(&rec).expect("valid header");
            assert!(payload_matches(&rec, &rec[HEADER_LEN..], h.crc));
            let f = decode_finished(&rec[HEADER_LEN..]).expect("decodes");
            assert_eq!(f.target, id);
            assert_eq!(f.target_crc, 0xabcd);
            assert_eq!(FinishReason::from_code(f.reason_code), Some(reason));
        }
    }

    #[test]
    fn crc_mismatch_detected() {
        let env = &sample_envelopes()[1];
        let rec = encode_message(env, b"body bytes\r\n".to_vec());
        let mut bytes = rec.head.clone();
        bytes.extend_from_slice(&rec.body);
        for i in HEADER_LEN..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x10;
            let h = parse_header(&b).expect("header untouched");
            assert!(!payload_matches(&b, &b[HEADER_LEN..], h.crc), "flip at {i}");
        }
        for i in 0..HEADER_LEN {
            let mut b = bytes.clone();
            b[i] ^= 0x01;
            assert!(parse_header(&b).is_none(), "header flip at {i} undetected");
        }
    }

    #[test]
    fn garbage_does_not_decode_or_panic() {
        let env = &sample_envelopes()[1];
        let rec = encode_message(env, Vec::new());
        let payload = &rec.head[HEADER_LEN..];
        for cut in 0..payload.len() {
            assert!(decode_message(&payload[..cut]).is_err());
        }
        assert!(decode_finished(&[0u8; 16]).is_err());
    }

    pub(crate) fn sample_states() -> Vec<StateRecord> {
        let target = SpoolId::from_u64(0x0003_0000_0000_0040);
        let mut out = Vec::new();
        for (i, kind) in [
            OutcomeKind::Delivered,
            OutcomeKind::Bounced,
            OutcomeKind::Expired,
        ]
        .into_iter()
        .enumerate()
        {
            out.push(StateRecord {
                target,
                target_crc: 0xdead_beef,
                change: StateChange::Outcome {
                    index: i as u32 * 1000,
                    outcome: RecipientOutcome {
                        kind,
                        reply: format!("5{i}0 5.1.{i} nope, ünïcode"),
                        remote_mta: (i != 1).then(|| format!("mx{i}.example.test")),
                    },
                },
            });
        }
        for (attempts, next, err) in [(1, 1_700_000_300, ""), (u32::MAX, u64::MAX, "421 busy")] {
            out.push(StateRecord {
                target,
                target_crc: 7,
                change: StateChange::Deferred(Deferred {
                    attempts,
                    next_attempt_unix: next,
                    last_error: err.into(),
                }),
            });
        }
        out.push(StateRecord {
            target,
            target_crc: 9,
            change: StateChange::DelayNotice,
        });
        out
    }

    #[test]
    fn state_records_round_trip_and_are_padded() {
        for rec in sample_states() {
            let bytes = encode_state(&rec);
            assert_eq!(bytes.len() % 8, 0);
            let h = parse_header(&bytes).expect("valid header");
            assert_eq!(bytes.len() as u64, record_len(h.payload_len));
            let payload = &bytes[HEADER_LEN..HEADER_LEN + h.payload_len as usize];
            assert!(payload_matches(&bytes, payload, h.crc));
            assert!(RecordKind::is_reference(h.kind));
            let kind = RecordKind::from_code(h.kind).expect("known kind");
            assert_eq!(decode_state(kind, payload), Ok(rec.clone()));
            // the last payload byte is a non-zero mark (torn-tail rule)
            assert_ne!(payload[payload.len() - 1], 0);
            for cut in 0..payload.len() {
                assert!(decode_state(kind, &payload[..cut]).is_err());
            }
            for other in [
                RecordKind::RecipientOutcome,
                RecordKind::Deferred,
                RecordKind::DelayNotice,
            ] {
                if other != kind {
                    assert!(
                        decode_state(other, payload).is_err(),
                        "{kind:?} as {other:?}"
                    );
                }
            }
        }
    }
}
