//! Walks the bytes of one segment and classifies what it finds: valid
//! records, damaged regions, and the end of data. Pure: no files, no
//! logging, no decisions about quarantine (see `recovery`).
//!
//! Rules, in order:
//! - a valid header (magic and header check) gives a trustworthy length;
//!   a payload that runs past the end of the bytes is a torn tail: stop.
//! - a valid header with a payload failing its crc is damaged, unless it
//!   is the last thing in the segment and its payload ends in a zero word
//!   (the tail of the write never reached the disk: a torn tail, silent).
//!   Payloads never end in zeros: envelopes, markers and state records
//!   end in a non-zero mark and SMTP bodies in CRLF (only a BINARYMIME
//!   body ending in eight NULs could be mistaken, and only when also
//!   damaged).
//! - an invalid header: search forward (8-byte steps) for the next valid
//!   header. Zeros up to it are a hole (a write that never happened, e.g.
//!   a cancelled store) and are skipped silently; other bytes are damaged.
//!   With no valid header after it, this is the end of data: silent when
//!   the header's last word is zero (never completely written, or zeros),
//!   damaged otherwise (a corrupted last record must not vanish silently).

use super::record::{parse_header, payload_matches, record_len, Header, HEADER_LEN, MAGIC};

/// One finding of the scan.
#[derive(Debug)]
pub(crate) enum Item<'a> {
    /// A record with a valid header. `verified` says whether its payload crc
    /// was checked (and passed); unverified payloads must not be trusted.
    Record {
        offset: u64,
        header: Header,
        payload: &'a [u8],
        verified: bool,
    },
    /// Bytes `[offset, end)` that hold no valid record and are not zeros.
    Damaged { offset: u64, end: u64 },
}

fn next_header(bytes: &[u8], from: usize) -> Option<usize> {
    let mut p = from.next_multiple_of(8);
    while p + HEADER_LEN <= bytes.len() {
        if bytes[p..p + 4] == MAGIC && parse_header(&bytes[p..]).is_some() {
            return Some(p);
        }
        p += 8;
    }
    None
}

fn ends_in_zero_word(payload: &[u8]) -> bool {
    let k = payload.len().min(8);
    payload[payload.len() - k..].iter().all(|&b| b == 0)
}

/// Scans a whole segment. `verify(kind)` says which kinds need their
/// payload crc checked (readers that only want markers skip the bodies).
pub(crate) fn scan(bytes: &[u8], verify: impl Fn(u8) -> bool) -> Vec<Item<'_>> {
    let mut items = Vec::new();
    let len = bytes.len();
    let mut pos = 0usize;
    while pos + HEADER_LEN <= len {
        match parse_header(&bytes[pos..]) {
            Some(header) => {
                let payload_end = (pos as u64)
                    .checked_add(HEADER_LEN as u64)
                    .and_then(|p| p.checked_add(header.payload_len))
                    .filter(|&e| e <= len as u64);
                let Some(payload_end) = payload_end else {
                    break; // torn tail: the payload was cut off
                };
                let payload_end = payload_end as usize; // <= len, so fits usize
                let rec_end = (pos as u64 + record_len(header.payload_len)).min(len as u64);
                let rec_end = rec_end as usize;
                let payload = &bytes[pos + HEADER_LEN..payload_end];
                if !verify(header.kind) || payload_matches(&bytes[pos..], payload, header.crc) {
                    items.push(Item::Record {
                        offset: pos as u64,
                        header,
                        payload,
                        verified: verify(header.kind),
                    });
                } else {
                    let last = next_header(bytes, rec_end).is_none();
                    if last && ends_in_zero_word(payload) {
                        break;
                    }
                    items.push(Item::Damaged {
                        offset: pos as u64,
                        end: rec_end as u64,
                    });
                }
                pos = rec_end;
            }
            None => match next_header(bytes, pos + 8) {
                Some(next) => {
                    if bytes[pos..next].iter().any(|&b| b != 0) {
                        items.push(Item::Damaged {
                            offset: pos as u64,
                            end: next as u64,
                        });
                    }
                    pos = next;
                }
                None => {
                    if bytes[pos + 16..pos + HEADER_LEN].iter().any(|&b| b != 0) {
                        let end = bytes
                            .iter()
                            .rposition(|&b| b != 0)
                            .map_or(len, |p| (p + 1).next_multiple_of(8).min(len));
                        items.push(Item::Damaged {
                            offset: pos as u64,
                            end: end as u64,
                        });
                    }
                    break;
                }
            },
        }
    }
    items
}

#[cfg(test)]
mod tests {
    use super::super::id::SpoolId;
    use super::super::record::{encode_finished, FinishReason};
    use super::*;

    fn segment(records: &[Vec<u8>], tail_zeros: usize) -> (Vec<u8>, Vec<usize>) {
        let mut out = Vec::new();
        let mut offsets = Vec::new();
        for r in records {
            offsets.push(out.len());
            out.extend_from_slice(r);
            out.resize(out.len().next_multiple_of(8), 0);
        }
        out.resize(out.len() + tail_zeros, 0);
        (out, offsets)
    }

    fn marker(n: u64) -> Vec<u8> {
        encode_finished(SpoolId::from_u64(n), 7, FinishReason::Delivered)
    }

    fn count(items: &[Item<'_>]) -> (usize, usize) {
        let r = items
            .iter()
            .filter(|i| matches!(i, Item::Record { .. }))
            .count();
        (r, items.len() - r)
    }

    #[test]
    fn clean_segment_and_zero_tail() {
        let (b, _) = segment(&[marker(1), marker(2), marker(3)], 4096);
        assert_eq!(count(&scan(&b, |_| true)), (3, 0));
        assert_eq!(count(&scan(&[], |_| true)), (0, 0));
    }

    #[test]
    fn torn_tails_are_silent() {
        let (b, offs) = segment(&[marker(1), marker(2)], 0);
        // cut inside the second record's header and inside its payload
        for cut in [offs[1] + 5, offs[1] + 30] {
            let t = &b[..cut];
            assert_eq!(count(&scan(t, |_| true)), (1, 0), "cut {cut}");
            let mut z = t.to_vec();
            z.resize(b.len() + 64, 0);
            assert_eq!(count(&scan(&z, |_| true)), (1, 0), "cut {cut} + zeros");
        }
    }

    #[test]
    fn damaged_middle_record_and_hole() {
        let (mut b, offs) = segment(&[marker(1), marker(2), marker(3)], 64);
        b[offs[1] + 30] ^= 0xff; // payload
        let items = scan(&b, |_| true);
        assert_eq!(count(&items), (2, 1));
        // header damage: resync to the next record
        let (mut b, offs) = segment(&[marker(1), marker(2), marker(3)], 64);
        b[offs[1] + 9] ^= 0x01;
        assert_eq!(count(&scan(&b, |_| true)), (2, 1));
        // a hole of zeros is skipped silently
        let (mut b, offs) = segment(&[marker(1), marker(2), marker(3)], 64);
        b[offs[1]..offs[2]].fill(0);
        assert_eq!(count(&scan(&b, |_| true)), (2, 0));
        // a damaged last record is reported, not dropped silently
        let (mut b, offs) = segment(&[marker(1), marker(2)], 64);
        b[offs[1] + 28] ^= 0x40;
        assert_eq!(count(&scan(&b, |_| true)), (1, 1));
        let (mut b, offs) = segment(&[marker(1), marker(2)], 64);
        b[offs[1] + 2] ^= 0x40;
        assert_eq!(count(&scan(&b, |_| true)), (1, 1));
    }
}
