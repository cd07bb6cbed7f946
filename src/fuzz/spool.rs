//! Fuzz target of the spool's record format: arbitrary bytes read as a segment by recovery's own
//! survey, as record payloads by each decoder (checksums bypassed, so mutations reach them), and
//! as the material for records that the encoder writes. Invariants: no panic or unbounded
//! allocation on any bytes; whatever decodes re-encodes to the same values; every record the
//! encoder wrote is found intact by recovery, whatever bytes follow it. It refuses to touch files.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::Rng;
use crate::envelope::{BodyType, DsnReturn, Envelope, Notify, Recipient};
use crate::spool::record::{
    decode_finished, decode_message, decode_state, encode_finished, encode_message, encode_state,
    parse_header, FinishReason, RecordKind, StateChange, StateRecord, HEADER_LEN,
};
use crate::spool::recovery::{survey_segment, Survey};
use crate::spool::scan::{scan, Item};
use crate::spool::{Deferred, OutcomeKind, RecipientOutcome, SegmentId, SpoolId};

/// Pieces of records for the mutator: the magic and version, kinds, the
/// end marks of each payload, lengths.
pub const TOKENS: &[&[u8]] = &[
    b"SPRC\x01\x01\x00\x00",
    b"SPRC\x01\x02\x00\x00",
    b"SPRC\x01\x03\x00\x00",
    b"SPRC\x01\x04\x00\x00",
    b"SPRC\x02\x09\x00\x00",
    b"\xe5",
    b"\xf1",
    b"\xd3",
    b"\xd4",
    b"\x00\x00\x00\x00\x00\x00\x00\x00",
    b"\xff\xff\xff\xff",
    b"\x10\x00\x00\x00\x00\x00\x00\x00",
    b"\x04\x7f\x00\x00\x01",
    b"\x06\x20\x01\x0d\xb8\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x01",
    b"\r\n.\r\n",
];

const SEGMENT: SegmentId = SegmentId { shard: 3, seq: 7 };

/// See the module header.
pub fn spool_record(data: &[u8]) {
    check_segment(data);
    check_payload(data);
    if let Some(payload) = data.get(HEADER_LEN..) {
        check_payload(payload);
    }
    check_written_records(data);
}

/// Recovery's survey over `bytes`, read in full and for markers only.
fn check_segment(bytes: &[u8]) {
    let mut end = 0u64;
    for item in scan(bytes, |_| true) {
        let (offset, item_end) = match item {
            Item::Record {
                offset, payload, ..
            } => (offset, offset + (HEADER_LEN + payload.len()) as u64),
            Item::Damaged { offset, end } => (offset, end),
        };
        assert!(
            offset >= end && offset < item_end && item_end <= bytes.len() as u64,
            "scan item {offset}..{item_end} after {end} in {} bytes",
            bytes.len()
        );
        end = item_end;
    }
    for in_full in [true, false] {
        let mut survey = Survey::default();
        survey_segment(&mut survey, SEGMENT, bytes, in_full);
        for d in &survey.damage {
            assert!(
                !d.bytes.is_empty() && d.offset as usize + d.bytes.len() <= bytes.len(),
                "damage {}+{} in {} bytes",
                d.offset,
                d.bytes.len(),
                bytes.len()
            );
        }
        for found in survey.messages.values() {
            assert!(found.body_len <= bytes.len() as u64);
        }
        for (_, found, state) in survey.live_with_state() {
            let count = found.recipients;
            assert!(
                state.outcomes.keys().all(|&i| (i as usize) < count),
                "an outcome for a recipient the message does not have"
            );
        }
    }
}

/// Every decoder on `payload`; what decodes must survive encode+decode.
fn check_payload(payload: &[u8]) {
    if let Ok((envelope, body)) = decode_message(payload) {
        assert!(body.start <= body.end && body.end == payload.len());
        let record = encode_message(&envelope, payload[body.clone()].to_vec());
        let mut bytes = record.head;
        bytes.extend_from_slice(&record.body);
        let (again, again_body) =
            decode_message(&bytes[HEADER_LEN..]).expect("a re-encoded message decodes");
        assert_eq!(again, envelope, "message envelope changed by encode+decode");
        assert_eq!(&bytes[HEADER_LEN..][again_body], &payload[body]);
    }
    for kind in [
        RecordKind::RecipientOutcome,
        RecordKind::Deferred,
        RecordKind::DelayNotice,
    ] {
        if let Ok(state) = decode_state(kind, payload) {
            let bytes = encode_state(&state);
            let again = decode_state(kind, state_payload(&bytes)).expect("a re-encoded state");
            assert_eq!(again, state, "state record changed by encode+decode");
        }
    }
    if let Ok(f) = decode_finished(payload) {
        if let Some(reason) = FinishReason::from_code(f.reason_code) {
            let bytes = encode_finished(f.target, f.target_crc, reason);
            let again = decode_finished(&bytes[HEADER_LEN..]).expect("a re-encoded marker");
            assert_eq!(again, f, "Finished marker changed by encode+decode");
        }
    }
}

/// The payload of an encoded state record (its padding removed).
fn state_payload(record: &[u8]) -> &[u8] {
    let header = parse_header(record).expect("an encoded record has a valid header");
    &record[HEADER_LEN..HEADER_LEN + header.payload_len as usize]
}

/// Takes strings, numbers and choices from the input to build records.
struct Material<'a> {
    data: &'a [u8],
    at: usize,
    rng: Rng,
}

impl Material<'_> {
    fn byte(&mut self) -> u8 {
        let b = self.data.get(self.at).copied().unwrap_or(0);
        self.at += 1;
        b
    }

    fn number(&mut self) -> u64 {
        self.rng.next()
    }

    /// Up to `max` bytes of the input, as a string.
    fn string(&mut self, max: usize) -> String {
        let n = usize::from(self.byte()) % (max + 1);
        let from = self.at.min(self.data.len());
        let to = (from + n).min(self.data.len());
        self.at = to;
        String::from_utf8_lossy(&self.data[from..to]).into_owned()
    }

    fn opt_string(&mut self, max: usize) -> Option<String> {
        (self.byte() & 1 == 1).then(|| self.string(max))
    }

    fn envelope(&mut self) -> Envelope {
        let recipients = (0..self.byte() % 4)
            .map(|_| Recipient {
                address: self.string(64),
                notify: (self.byte() & 1 == 1).then(|| Notify::from_bits(self.byte())),
                orcpt: self.opt_string(32),
            })
            .collect();
        let choice = self.byte();
        Envelope {
            sender: self.string(64),
            recipients,
            body_type: [
                BodyType::SevenBit,
                BodyType::EightBitMime,
                BodyType::BinaryMime,
            ][usize::from(choice % 3)],
            smtputf8: choice & 4 != 0,
            dsn_return: [None, Some(DsnReturn::Full), Some(DsnReturn::Headers)]
                [usize::from((choice >> 3) % 3)],
            envid: self.opt_string(100),
            received_at: self.number(),
            client_ip: if choice & 0x80 != 0 {
                IpAddr::V6(Ipv6Addr::from(u128::from(self.number()) << 64))
            } else {
                IpAddr::V4(Ipv4Addr::from(self.number() as u32))
            },
            helo: self.string(64),
            auth_user: self.opt_string(32),
            tenant: self.opt_string(32),
        }
    }

    fn state(&mut self) -> StateRecord {
        let target = SpoolId::from_u64(self.number());
        let target_crc = self.number() as u32;
        let change = if self.byte() & 1 == 0 {
            StateChange::Outcome {
                index: u32::from(self.byte() % 4),
                outcome: RecipientOutcome {
                    kind: [
                        OutcomeKind::Delivered,
                        OutcomeKind::Bounced,
                        OutcomeKind::Expired,
                    ][usize::from(self.byte() % 3)],
                    reply: self.string(120),
                    remote_mta: self.opt_string(40),
                },
            }
        } else {
            StateChange::Deferred(Deferred {
                attempts: self.number() as u32,
                next_attempt_unix: self.number(),
                last_error: self.string(120),
            })
        };
        StateRecord {
            target,
            target_crc,
            change,
        }
    }
}

/// What was written, by offset.
enum Written {
    Message(Envelope, usize),
    Finished(SpoolId, u32),
    State(StateRecord),
}

/// Records built from the input, then the input's own bytes after them as
/// a damaged or torn tail: recovery finds each record as written.
fn check_written_records(data: &[u8]) {
    let mut m = Material {
        data,
        at: 0,
        rng: Rng::from_bytes(data),
    };
    let mut segment = Vec::new();
    let mut written = Vec::new();
    for _ in 0..1 + m.byte() % 4 {
        let offset = segment.len();
        match m.byte() % 3 {
            0 => {
                let envelope = m.envelope();
                let body = m.string(200).into_bytes();
                let record = encode_message(&envelope, body.clone());
                segment.extend_from_slice(&record.head);
                segment.extend_from_slice(&record.body);
                assert_eq!(
                    record.len as usize,
                    (record.head.len() + record.body.len()).next_multiple_of(8),
                    "record length"
                );
                written.push((offset, Written::Message(envelope, body.len())));
            }
            1 => {
                let target = SpoolId::from_u64(m.number());
                let crc = m.number() as u32;
                segment.extend_from_slice(&encode_finished(target, crc, FinishReason::Delivered));
                written.push((offset, Written::Finished(target, crc)));
            }
            _ => {
                let state = m.state();
                segment.extend_from_slice(&encode_state(&state));
                written.push((offset, Written::State(state)));
            }
        }
        segment.resize(segment.len().next_multiple_of(8), 0);
    }
    let records_end = segment.len();
    segment.extend_from_slice(&data[m.at.min(data.len())..]);

    let mut survey = Survey::default();
    survey_segment(&mut survey, SEGMENT, &segment, true);
    assert!(
        survey
            .damage
            .iter()
            .all(|d| d.offset as usize >= records_end),
        "damage reported inside the records written"
    );
    let mut markers = survey.markers.iter();
    let mut states = survey.states.iter();
    for (offset, w) in written {
        match w {
            Written::Message(envelope, body_len) => {
                let id = SpoolId::new(SEGMENT, offset as u32).expect("a small segment number");
                let found = survey
                    .messages
                    .get(&id)
                    .unwrap_or_else(|| panic!("the message written at {offset} was not found"));
                assert_eq!(
                    (found.recipients, found.received_at),
                    (envelope.recipients.len(), envelope.received_at),
                    "message at {offset}"
                );
                assert_eq!(found.body_len, body_len as u64, "body at {offset}");
                // The survey keeps no envelope: the record must give it back.
                let header = parse_header(&segment[offset..]).expect("a header written");
                let start = offset + HEADER_LEN;
                let payload = &segment[start..start + header.payload_len as usize];
                let (decoded, _) = decode_message(payload).expect("a message written");
                assert_eq!(decoded, envelope, "message at {offset}");
            }
            Written::Finished(target, crc) => {
                let marker = markers.next().expect("a marker written was not found");
                assert_eq!((marker.target, marker.target_crc), (target, crc));
            }
            Written::State(state) => {
                let (found, _) = states.next().expect("a state record written was not found");
                assert_eq!(found, &state);
            }
        }
    }
}

/// Segments written by the encoder, for the seed corpus
/// (`tests/fuzzing.rs` writes them out): single records of each kind, a
/// message with its state records and marker, a torn tail, a hole of
/// zeros, a damaged payload, and records of an unknown kind and version.
pub fn sample_segments() -> Vec<(&'static str, Vec<u8>)> {
    let envelope = Envelope {
        sender: "alice@remote.example".into(),
        recipients: vec![
            Recipient {
                address: "bob@local.test".into(),
                notify: Some(Notify::from_bits(0b0110)),
                orcpt: Some("rfc822;bob@local.test".into()),
            },
            Recipient {
                address: "\"quoted local\"@local.test".into(),
                notify: None,
                orcpt: None,
            },
        ],
        body_type: BodyType::EightBitMime,
        smtputf8: true,
        dsn_return: Some(DsnReturn::Headers),
        envid: Some("QQ314159+2Bx".into()),
        received_at: 1_700_000_000,
        client_ip: "2001:db8::7".parse().expect("an IPv6 literal"),
        helo: "client.example".into(),
        auth_user: Some("alice".into()),
        tenant: Some("acme".into()),
    };
    let null_sender = Envelope {
        sender: String::new(),
        recipients: vec![Recipient {
            address: "postmaster".into(),
            notify: None,
            orcpt: None,
        }],
        body_type: BodyType::SevenBit,
        smtputf8: false,
        dsn_return: None,
        envid: None,
        received_at: 0,
        client_ip: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7)),
        helo: "[192.0.2.7]".into(),
        auth_user: None,
        tenant: None,
    };
    let body = b"Received: from client.example\r\nSubject: hi\r\n\r\nHello\r\n".to_vec();
    let message = |e: &Envelope, body: &[u8]| {
        let record = encode_message(e, body.to_vec());
        let mut bytes = record.head;
        bytes.extend_from_slice(&record.body);
        bytes.resize(bytes.len().next_multiple_of(8), 0);
        (bytes, record.crc)
    };
    let (first, first_crc) = message(&envelope, &body);
    let (second, _) = message(&null_sender, b"");
    let id = SpoolId::new(SEGMENT, 0).expect("a small segment number");
    let outcome = encode_state(&StateRecord {
        target: id,
        target_crc: first_crc,
        change: StateChange::Outcome {
            index: 1,
            outcome: RecipientOutcome {
                kind: OutcomeKind::Bounced,
                reply: "550 5.1.1 <x@local.test>: user unknown".into(),
                remote_mta: Some("mx.remote.example".into()),
            },
        },
    });
    let deferred = encode_state(&StateRecord {
        target: id,
        target_crc: first_crc,
        change: StateChange::Deferred(Deferred {
            attempts: 3,
            next_attempt_unix: 1_700_003_600,
            last_error: "451 4.3.0 try again".into(),
        }),
    });
    let finished = encode_finished(id, first_crc, FinishReason::Delivered);
    let cat = |parts: &[&[u8]]| parts.concat();

    let mut torn = cat(&[&first, &second]);
    torn.truncate(first.len() + second.len() / 2);
    let mut hole = first.clone();
    hole.extend_from_slice(&[0; 64]);
    hole.extend_from_slice(&finished);
    let mut damaged = cat(&[&first, &finished]);
    damaged[HEADER_LEN + 10] ^= 0x40;
    // A record of a kind and version this reader does not know, with
    // valid checksums: it is skipped, not damage.
    let mut unknown = finished.clone();
    unknown[4] = 2;
    unknown[5] = 9;
    let crc = crc32c::crc32c_append(crc32c::crc32c(&unknown[0..16]), &unknown[HEADER_LEN..]);
    unknown[16..20].copy_from_slice(&crc.to_le_bytes());
    let header_crc = crc32c::crc32c(&unknown[0..20]);
    unknown[20..24].copy_from_slice(&header_crc.to_le_bytes());
    vec![
        ("message", first.clone()),
        ("message-null-sender", second.clone()),
        ("finished", finished.clone()),
        ("outcome", outcome.clone()),
        ("deferred", deferred.clone()),
        (
            "message-with-state-and-marker",
            cat(&[&first, &outcome, &deferred, &second, &finished]),
        ),
        ("torn-tail", torn),
        ("hole-of-zeros", hole),
        ("damaged-payload", damaged),
        ("unknown-kind-and-version", cat(&[&unknown, &second])),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_from_varied_material_are_found_again() {
        for seed in 0u8..64 {
            let data: Vec<u8> = (0..300u32)
                .map(|i| (i as u8).wrapping_mul(seed).wrapping_add(seed))
                .collect();
            spool_record(&data);
        }
    }

    #[test]
    fn sample_segments_pass() {
        for (name, bytes) in sample_segments() {
            assert!(!bytes.is_empty(), "{name}");
            spool_record(&bytes);
        }
    }
}
