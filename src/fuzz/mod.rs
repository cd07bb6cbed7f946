//! The bodies of spate's fuzz targets, one function per target taking arbitrary bytes: each drives
//! a sans-IO core the way the glue does and panics when one of the core's invariants breaks. It
//! refuses to mutate inputs, keep time or touch files: the runners do that (the bounded seeded
//! runner in `tests/fuzzing.rs`, run by `cargo nextest run`, and the cargo-fuzz crate in
//! `tests/fuzz/`, whose targets are thin wrappers around these functions).
//!
//! A panic is the only failure signal, so a coverage-guided fuzzer and the
//! stable runner see the same thing. Every target is deterministic: the
//! same bytes always take the same path, so a failure replays from its
//! input alone. Targets are listed in [`TARGETS`] with a small dictionary
//! of protocol tokens each, for mutators that splice tokens in.

pub mod imap;
pub mod mime;
pub mod pop3;
pub mod smtp;
pub mod spool;

/// One fuzz target: its name (also its corpus directory,
/// `tests/fuzz/corpus/<name>/`, and its cargo-fuzz binary), its body and
/// the protocol tokens a mutator may insert.
#[derive(Debug, Clone, Copy)]
pub struct Target {
    pub name: &'static str,
    pub run: fn(&[u8]),
    pub tokens: &'static [&'static [u8]],
}

/// Every target, in a fixed order.
pub const TARGETS: &[Target] = &[
    Target {
        name: "smtp_command",
        run: smtp::smtp_command,
        tokens: smtp::TOKENS,
    },
    Target {
        name: "smtp_session",
        run: smtp::smtp_session,
        tokens: smtp::TOKENS,
    },
    Target {
        name: "imap_command",
        run: imap::imap_command,
        tokens: imap::TOKENS,
    },
    Target {
        name: "pop3_session",
        run: pop3::pop3_session,
        tokens: pop3::TOKENS,
    },
    Target {
        name: "spool_record",
        run: spool::spool_record,
        tokens: spool::TOKENS,
    },
    Target {
        name: "mime_message",
        run: mime::mime_message,
        tokens: mime::TOKENS,
    },
];

/// The target called `name`.
pub fn target(name: &str) -> Option<&'static Target> {
    TARGETS.iter().find(|t| t.name == name)
}

/// A tiny deterministic generator (xorshift64*) for the choices a target
/// derives from its input (chunk sizes, split points), so that the same
/// bytes always drive the same path.
#[derive(Debug, Clone)]
pub(crate) struct Rng(u64);

impl Rng {
    /// Seeded from some bytes of the input; never zero.
    pub(crate) fn from_bytes(bytes: &[u8]) -> Self {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        for &b in bytes {
            seed = (seed ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        Rng(seed | 1)
    }

    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number in `1..=max` (`max` at least 1).
    pub(crate) fn chunk(&mut self, max: usize) -> usize {
        (self.next() % max.max(1) as u64) as usize + 1
    }
}

/// Splits `bytes` into lines ending at LF (the LF kept), the last one
/// possibly without.
pub(crate) fn lines(bytes: &[u8]) -> impl Iterator<Item = &[u8]> {
    bytes.split_inclusive(|&b| b == b'\n')
}

/// Panics unless `out` is a sequence of CRLF-terminated lines without a
/// bare CR, bare LF or NUL anywhere; `what` names the protocol in the
/// message. Returns the lines without their CRLF.
pub(crate) fn crlf_lines<'a>(out: &'a [u8], what: &str) -> Vec<&'a [u8]> {
    assert!(
        out.is_empty() || out.ends_with(b"\r\n"),
        "{what} output does not end with CRLF: {:?}",
        String::from_utf8_lossy(out)
    );
    let mut result = Vec::new();
    for line in out.split_inclusive(|&b| b == b'\n') {
        let Some(text) = line.strip_suffix(b"\r\n") else {
            panic!(
                "{what} line without CRLF: {:?}",
                String::from_utf8_lossy(line)
            );
        };
        assert!(
            !text.iter().any(|&b| b == b'\r' || b == b'\n' || b == 0),
            "{what} line with a bare CR, LF or NUL: {:?}",
            String::from_utf8_lossy(line)
        );
        result.push(text);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_target_takes_empty_and_small_inputs() {
        for t in TARGETS {
            for input in [&b""[..], b"\0", b"\r\n", b"x", &[0xff; 40]] {
                (t.run)(input);
            }
        }
    }

    #[test]
    fn target_names_are_unique_and_found() {
        for t in TARGETS {
            assert_eq!(target(t.name).map(|f| f.name), Some(t.name));
        }
        assert!(target("nope").is_none());
    }
}
