//! Identifiers of spooled messages and segments and their text forms; it
//! knows nothing about files (see `layout`) or records (see `record`).

use std::fmt;
use std::str::FromStr;

use super::error::ParseSpoolIdError;

/// Where a message lives: shard directory (8 bits), segment sequence number
/// (24 bits) and byte offset of its record in the segment (32 bits), packed
/// into a u64. Being a location, it needs no index to find the bytes, and it
/// sorts in spool order. Shown as 16 lowercase hex digits in logs, the CLI
/// and `Received:` trace ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpoolId(u64);

/// One segment file: the shard directory it lives in and its sequence
/// number there. Kept apart from `SpoolId` so that segment bookkeeping can
/// not confuse a segment with a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SegmentId {
    pub shard: u8,
    pub seq: u32,
}

impl SegmentId {
    /// Largest sequence number that fits the 24 bits of a `SpoolId`.
    pub const MAX_SEQ: u32 = (1 << 24) - 1;
}

impl fmt::Display for SegmentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "shard-{}/{:08}.seg", self.shard, self.seq)
    }
}

impl SpoolId {
    /// Packs a location; `None` when `seq` does not fit 24 bits.
    pub fn new(segment: SegmentId, offset: u32) -> Option<Self> {
        if segment.seq > SegmentId::MAX_SEQ {
            return None;
        }
        Some(SpoolId(
            u64::from(segment.shard) << 56 | u64::from(segment.seq) << 32 | u64::from(offset),
        ))
    }

    /// The segment that holds the message's record.
    pub fn segment(self) -> SegmentId {
        SegmentId {
            shard: self.shard(),
            seq: ((self.0 >> 32) & 0x00ff_ffff) as u32,
        }
    }

    /// The shard directory the record lives in (not necessarily the shard
    /// that serves it now: directories are adopted when the core count
    /// shrinks).
    pub fn shard(self) -> u8 {
        (self.0 >> 56) as u8
    }

    /// Byte offset of the record header in its segment.
    pub fn offset(self) -> u32 {
        self.0 as u32
    }

    /// The packed form, as stored in Finished records.
    pub fn to_u64(self) -> u64 {
        self.0
    }

    /// Inverse of [`SpoolId::to_u64`]; every u64 is a well-formed id.
    pub fn from_u64(raw: u64) -> Self {
        SpoolId(raw)
    }
}

/// How long a [`SpoolId`] is as text (16 hex digits).
pub const TRACE_ID_LEN: usize = 16;

impl SpoolId {
    /// The id as it is shown (16 lowercase hex digits), without allocating:
    /// written into each `Received:` header as the message is stored.
    pub fn hex(self) -> [u8; TRACE_ID_LEN] {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut out = [0u8; TRACE_ID_LEN];
        for (i, digit) in out.iter_mut().enumerate() {
            let shift = 4 * (TRACE_ID_LEN - 1 - i);
            *digit = DIGITS[((self.0 >> shift) & 0xf) as usize];
        }
        out
    }
}

impl fmt::Display for SpoolId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl FromStr for SpoolId {
    type Err = ParseSpoolIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() != 16 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(ParseSpoolIdError(s.to_owned()));
        }
        u64::from_str_radix(s, 16)
            .map(SpoolId)
            .map_err(|_| ParseSpoolIdError(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_is_the_display_form() {
        for n in [0, 1, 0x0003_0000_0000_0040, u64::MAX, 0xab12_3456_dead_beef] {
            let id = SpoolId::from_u64(n);
            assert_eq!(id.hex().as_slice(), id.to_string().as_bytes());
        }
    }

    #[test]
    fn packs_and_prints() {
        let seg = SegmentId {
            shard: 0xab,
            seq: 0x12_3456,
        };
        let id = SpoolId::new(seg, 0xdead_beef).expect("seq fits 24 bits");
        assert_eq!(id.shard(), 0xab);
        assert_eq!(id.segment(), seg);
        assert_eq!(id.offset(), 0xdead_beef);
        assert_eq!(id.to_string(), "ab123456deadbeef");
        assert_eq!("ab123456deadbeef".parse::<SpoolId>(), Ok(id));
        assert_eq!(SpoolId::from_u64(id.to_u64()), id);
        assert!("ab12".parse::<SpoolId>().is_err());
        assert!("+b123456deadbeef".parse::<SpoolId>().is_err());
        assert!("zz123456deadbeef".parse::<SpoolId>().is_err());
        assert!(SpoolId::new(
            SegmentId {
                shard: 0,
                seq: 1 << 24
            },
            0
        )
        .is_none());
    }

    #[test]
    fn orders_by_location() {
        let a = SpoolId::new(SegmentId { shard: 0, seq: 2 }, 100).expect("fits");
        let b = SpoolId::new(SegmentId { shard: 0, seq: 3 }, 0).expect("fits");
        let c = SpoolId::new(SegmentId { shard: 1, seq: 0 }, 0).expect("fits");
        assert!(a < b && b < c);
    }
}
