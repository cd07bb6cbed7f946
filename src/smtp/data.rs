//! Receives one message body, from DATA (dot-stuffed, ended only by CRLF "." CRLF) or from BDAT
//! chunks, into a single buffer while enforcing the size, hop-count and line-ending rules.
//! It refuses to parse commands, frame BDAT chunks (the session counts octets) or decide the
//! message's fate.

use memchr::{memchr, memchr2};
use thiserror::Error;

/// How the body is delimited on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// DATA: dot-stuffed lines ending with CRLF "." CRLF (RFC 5321 4.1.1.4, 4.5.2).
    Dot,
    /// BDAT: raw octets counted by the session (RFC 3030); no dot handling.
    Chunked,
}

/// The limits one body is held to, copied from the server configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyLimits {
    /// Octets of message content (after unstuffing), our trace header excluded.
    pub max_size: usize,
    /// Received: header lines tolerated in the message's header section.
    pub max_hops: usize,
    /// Convert bare CR / bare LF to CRLF instead of rejecting the message.
    pub normalize: bool,
    /// Longest line (octets before its CRLF) stored as it is: a longer
    /// one is folded by inserting CRLF SPACE after this many octets, as
    /// Postfix's `smtp_line_length_limit` does on output, so that no line
    /// relayed is over RFC 5321 4.5.3.1.6's 998 octets (a strict receiver
    /// refuses such mail). In the header section that is a continuation
    /// line. `None` keeps every line (and binary content).
    pub fold_at: Option<usize>,
}

/// Why a received body is refused. All are permanent (5xx): the same bytes
/// would fail again. The session turns each into its reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum BodyError {
    #[error("message exceeds the size limit")]
    TooBig,
    #[error("message contains a bare CR or LF")]
    BareLineEnding,
    #[error("too many Received headers: mail loop")]
    TooManyHops,
}

/// What one call to [`BodyReceiver::feed`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Bytes of the input consumed (all of it unless the body ended inside).
    pub consumed: usize,
    /// The DATA terminator was consumed; no more input belongs to the body.
    pub complete: bool,
}

/// Where the scanner stands between two bytes. Kept explicit so that a
/// terminator split across any number of reads is still recognised, and a
/// non-terminator is never mistaken for one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scan {
    /// Right after a real CRLF (or at the start of the body).
    LineStart,
    /// Inside a line.
    Mid,
    /// Saw CR inside a line; the next byte decides whether it is bare.
    Cr,
    /// Saw "." at a line start (DATA only).
    Dot,
    /// Saw "." CR at a line start (DATA only).
    DotCr,
    /// Saw the whole CRLF "." CRLF.
    Done,
}

/// Receives a body into one `Vec`: bytes are copied exactly once, from the
/// input slice, in runs found with memchr. Once the body has failed, bytes
/// are still scanned (to find its end) but no longer stored.
#[derive(Debug)]
pub struct BodyReceiver {
    framing: Framing,
    limits: BodyLimits,
    scan: Scan,
    body: Vec<u8>,
    /// Content octets so far (what the size limit counts).
    size: usize,
    failure: Option<BodyError>,
    /// Offset in `body` of the next header line to examine.
    header_pos: usize,
    headers_done: bool,
    hops: usize,
    /// Octets of the line being stored since its start (for folding).
    line_len: usize,
}

impl BodyReceiver {
    /// Starts a body. `body` already holds our trace header (RFC 5321 4.4),
    /// which counts toward neither the size nor the hops.
    pub fn new(framing: Framing, limits: BodyLimits, body: Vec<u8>) -> Self {
        let header_pos = body.len();
        BodyReceiver {
            framing,
            limits,
            scan: Scan::LineStart,
            body,
            size: 0,
            failure: None,
            header_pos,
            headers_done: false,
            hops: 0,
            line_len: 0,
        }
    }

    /// Content octets received so far.
    pub fn size(&self) -> usize {
        self.size
    }

    /// The first rule the body broke, if any.
    pub fn failure(&self) -> Option<BodyError> {
        self.failure
    }

    /// Consumes body bytes. For [`Framing::Dot`] it stops right after the
    /// terminator; for [`Framing::Chunked`] it takes everything given (the
    /// session only gives the chunk's octets).
    pub fn feed(&mut self, input: &[u8]) -> Progress {
        let mut i = 0;
        while i < input.len() {
            match self.scan {
                Scan::Done => break,
                Scan::Mid => i = self.scan_run(input, i),
                Scan::LineStart => {
                    if self.framing == Framing::Dot && input[i] == b'.' {
                        self.scan = Scan::Dot;
                        i += 1;
                    } else {
                        self.scan = Scan::Mid;
                    }
                }
                Scan::Cr => {
                    if input[i] == b'\n' {
                        self.emit(b"\r\n");
                        self.scan = Scan::LineStart;
                        i += 1;
                    } else {
                        // Bare CR; the byte after it is processed as content.
                        self.bare(b"");
                        self.scan = Scan::Mid;
                    }
                }
                Scan::Dot => match input[i] {
                    b'\r' => {
                        self.scan = Scan::DotCr;
                        i += 1;
                    }
                    b'\n' => {
                        // "." then bare LF: not a terminator (RFC 5321 4.1.1.4
                        // demands CRLF "." CRLF; SMTP smuggling, 2023).
                        self.bare(b".");
                        self.scan = Scan::Mid;
                        i += 1;
                    }
                    // RFC 5321 4.5.2: a line starting with "." and having
                    // more characters loses that first ".".
                    _ => self.scan = Scan::Mid,
                },
                Scan::DotCr => {
                    if input[i] == b'\n' {
                        self.scan = Scan::Done;
                        i += 1;
                        break;
                    }
                    // "." then bare CR: content, never the terminator.
                    self.bare(b".");
                    self.scan = Scan::Mid;
                }
            }
        }
        self.scan_headers();
        Progress {
            consumed: i,
            complete: self.scan == Scan::Done,
        }
    }

    /// Ends the body and hands it over (trace header first), or says why it
    /// is refused. For BDAT a final bare CR is judged here, and a body not
    /// ending in CRLF gets one, so stored messages are always whole lines.
    pub fn finish(mut self) -> Result<Vec<u8>, BodyError> {
        if self.scan == Scan::Cr {
            self.bare(b"");
            self.scan = Scan::Mid;
        }
        if self.failure.is_none() && self.size > 0 && !self.body.ends_with(b"\r\n") {
            // Not counted in `size`: it is our framing, not the client's data.
            self.body.extend_from_slice(b"\r\n");
        }
        self.scan_headers();
        match self.failure {
            Some(e) => Err(e),
            None => Ok(self.body),
        }
    }

    /// The common path: copies a run of content up to the next place that
    /// needs attention (a bare CR/LF, a line-start "." in DATA, or the end of
    /// the input) with one `extend_from_slice`. Returns the next index.
    fn scan_run(&mut self, input: &[u8], start: usize) -> usize {
        let mut j = start;
        loop {
            let Some(k) = memchr2(b'\r', b'\n', &input[j..]) else {
                self.emit(&input[start..]);
                return input.len();
            };
            let p = j + k;
            if input[p] == b'\n' {
                // LF without CR before it.
                self.emit(&input[start..p]);
                self.bare(b"");
                return p + 1;
            }
            match input.get(p + 1) {
                None => {
                    self.emit(&input[start..p]);
                    self.scan = Scan::Cr;
                    return p + 1;
                }
                Some(b'\n') => {
                    let next = p + 2;
                    match input.get(next) {
                        None => {
                            self.emit(&input[start..next]);
                            self.scan = Scan::LineStart;
                            return next;
                        }
                        Some(b'.') if self.framing == Framing::Dot => {
                            self.emit(&input[start..next]);
                            self.scan = Scan::Dot;
                            return next + 1;
                        }
                        Some(_) => j = next,
                    }
                }
                Some(_) => {
                    // CR followed by something other than LF.
                    self.emit(&input[start..p]);
                    self.bare(b"");
                    return p + 1;
                }
            }
        }
    }

    /// Handles a bare CR or LF (after `prefix`, content that preceded it in
    /// the scanner's state): CRLF in normalize mode, otherwise the body fails
    /// and is judged at its end (RFC 5321 2.3.8 forbids bare CR/LF).
    fn bare(&mut self, prefix: &[u8]) {
        self.emit(prefix);
        if self.limits.normalize {
            self.emit(b"\r\n");
        } else {
            self.fail(BodyError::BareLineEnding);
        }
    }

    /// Appends content, folding a line that grows past `fold_at`.
    fn emit(&mut self, bytes: &[u8]) {
        let Some(limit) = self.limits.fold_at else {
            return self.store(bytes);
        };
        // A CR reaches here only with its LF (bare ones are judged before),
        // so lines end at each LF and a fold never splits a CRLF.
        let mut rest = bytes;
        while !rest.is_empty() && self.failure.is_none() {
            let room = limit.saturating_sub(self.line_len);
            let (line, ends) = match memchr(b'\n', rest) {
                Some(k) => (&rest[..=k], true),
                None => (rest, false),
            };
            let content = if ends {
                line.len().saturating_sub(2)
            } else {
                line.len()
            };
            if content <= room {
                self.store(line);
                self.line_len = if ends { 0 } else { self.line_len + line.len() };
                rest = &rest[line.len()..];
            } else {
                self.store(&rest[..room]);
                self.store(b"\r\n ");
                self.line_len = 1;
                rest = &rest[room..];
            }
        }
    }

    /// Appends content, unless the body already failed or would grow past
    /// the limit: then what fits is kept (so that a rule broken before the
    /// limit is judged first, as it would be had the bytes come in smaller
    /// reads), and the body fails and its memory is released.
    fn store(&mut self, bytes: &[u8]) {
        if self.failure.is_some() || bytes.is_empty() {
            return;
        }
        let room = self.limits.max_size.saturating_sub(self.size);
        if bytes.len() > room {
            self.body.extend_from_slice(&bytes[..room]);
            self.size += room;
            self.fail(BodyError::TooBig);
            return;
        }
        self.size += bytes.len();
        self.body.extend_from_slice(bytes);
    }

    /// The body breaks a rule at the current position. Header lines stored
    /// before it are counted first: the first rule broken in the message
    /// is the one reported, wherever the reads that carried it were split.
    fn fail(&mut self, error: BodyError) {
        self.scan_headers();
        self.set_failure(error);
    }

    fn set_failure(&mut self, error: BodyError) {
        if self.failure.is_none() {
            self.failure = Some(error);
            self.body = Vec::new();
        }
    }

    /// Counts `Received:` lines in the header section (up to the first empty
    /// line) of what is stored so far, looking at each line once. Trace
    /// headers count hops (RFC 5321 6.3 asks to detect loops this way).
    fn scan_headers(&mut self) {
        while !self.headers_done && self.failure.is_none() {
            let Some(rest) = self.body.get(self.header_pos..) else {
                return;
            };
            let Some(k) = memchr(b'\n', rest) else {
                return;
            };
            let line = &rest[..=k];
            let empty = line == b"\r\n";
            let received = line.len() >= 9 && line[..9].eq_ignore_ascii_case(b"received:");
            self.header_pos += k + 1;
            if empty {
                self.headers_done = true;
            } else if received {
                self.hops += 1;
                if self.hops > self.limits.max_hops {
                    self.set_failure(BodyError::TooManyHops);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: BodyLimits = BodyLimits {
        max_size: 1000,
        max_hops: 2,
        normalize: false,
        fold_at: None,
    };

    /// Feeds `input` in pieces of `step` bytes; returns the result and the
    /// bytes left after the terminator.
    fn data(
        input: &[u8],
        limits: BodyLimits,
        step: usize,
    ) -> (Result<Vec<u8>, BodyError>, Vec<u8>) {
        let mut rx = BodyReceiver::new(Framing::Dot, limits, b"T\r\n".to_vec());
        let mut pos = 0;
        while pos < input.len() {
            let end = (pos + step).min(input.len());
            let p = rx.feed(&input[pos..end]);
            pos += p.consumed;
            if p.complete {
                let body = rx.finish().map(|b| b[3..].to_vec());
                return (body, input[pos..].to_vec());
            }
            assert_eq!(pos, end, "must consume everything before the end");
        }
        panic!("no terminator in {:?}", String::from_utf8_lossy(input));
    }

    fn unterminated(input: &[u8], limits: BodyLimits) -> bool {
        let mut rx = BodyReceiver::new(Framing::Dot, limits, Vec::new());
        let p = rx.feed(input);
        p.consumed == input.len() && !p.complete
    }

    #[test]
    fn simple_body_every_split() {
        let input = b"Subject: x\r\n\r\nhello\r\n..dot\r\n.\r\nQUIT\r\n";
        for step in 1..input.len() {
            let (body, rest) = data(input, LIMITS, step);
            assert_eq!(
                body.unwrap(),
                b"Subject: x\r\n\r\nhello\r\n.dot\r\n",
                "step {step}"
            );
            assert_eq!(rest, b"QUIT\r\n");
        }
    }

    #[test]
    fn empty_body() {
        let (body, rest) = data(b".\r\nX", LIMITS, 100);
        assert_eq!(body.unwrap(), b"");
        assert_eq!(rest, b"X");
    }

    #[test]
    fn unstuffing() {
        let (body, _) = data(b"..\r\n...\r\n.a\r\na.b\r\n.\r\n", LIMITS, 100);
        assert_eq!(body.unwrap(), b".\r\n..\r\na\r\na.b\r\n");
    }

    #[test]
    fn smuggling_sequences_never_terminate() {
        let cases: [&[u8]; 10] = [
            b"a\n.\nb",
            b"a\n.\r\nb",
            b"a\r.\rb",
            b"a\r\n.\rb",
            b"a\r.\r\nb",
            b"a\r\n.\nb",
            b"a\r\n\x00.\r\nb",
            b"a\r\n.\x00\r\nb",
            b"a\r\r\n.\r\r\nb",
            b"a\n\r.\r\nb",
        ];
        for normalize in [false, true] {
            let limits = BodyLimits {
                normalize,
                ..LIMITS
            };
            for case in cases {
                assert!(
                    unterminated(case, limits),
                    "{:?}",
                    String::from_utf8_lossy(case)
                );
                // Byte by byte, too.
                let mut rx = BodyReceiver::new(Framing::Dot, limits, Vec::new());
                for b in case {
                    assert!(!rx.feed(std::slice::from_ref(b)).complete);
                }
            }
        }
    }

    #[test]
    fn bare_line_endings_rejected() {
        for case in [
            &b"a\nb\r\n.\r\n"[..],
            b"a\rb\r\n.\r\n",
            b"a\r\n.\n.\r\n.\r\n",
            b"x\r\n.\r.\r\n.\r\n",
        ] {
            let (body, rest) = data(case, LIMITS, 3);
            assert_eq!(
                body,
                Err(BodyError::BareLineEnding),
                "{:?}",
                String::from_utf8_lossy(case)
            );
            assert!(rest.is_empty());
        }
    }

    /// Folding at a small limit (10), as at 998.
    const FOLDING: BodyLimits = BodyLimits {
        max_size: 100_000,
        max_hops: 50,
        normalize: false,
        fold_at: Some(10),
    };

    #[test]
    fn long_lines_are_folded_and_short_ones_kept_whatever_the_reads() {
        let input = b"Subject: 0123456789abcde\r\n\r\n0123456789\r\n0123456789a\r\n\
                      ..23456789abcdefghijklmnopqrstuvwxyz\r\n\r\n.\r\n";
        let want: &[u8] = b"Subject: 0\r\n 123456789\r\n abcde\r\n\r\n0123456789\r\n\
                      0123456789\r\n a\r\n.23456789a\r\n bcdefghij\r\n klmnopqrs\r\n tuvwxyz\r\n\r\n";
        for step in 1..input.len() {
            let (body, _) = data(input, FOLDING, step);
            assert_eq!(
                String::from_utf8_lossy(&body.unwrap()),
                String::from_utf8_lossy(want),
                "step {step}"
            );
        }
    }

    #[test]
    fn folding_keeps_every_line_within_the_limit_and_adds_only_the_folds() {
        use rand::{Rng, SeedableRng};
        for seed in 0..200u64 {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let limit = rng.gen_range(78..=120);
            let mut original = Vec::new();
            for _ in 0..rng.gen_range(1..30) {
                let len = rng.gen_range(0..400);
                original.extend((0..len).map(|_| rng.gen_range(b'a'..=b'z')));
                original.extend_from_slice(b"\r\n");
            }
            let mut input = original.clone();
            input.extend_from_slice(b".\r\n");
            let limits = BodyLimits {
                fold_at: Some(limit),
                ..FOLDING
            };
            let step = rng.gen_range(1..500);
            let body = data(&input, limits, step).0.expect("accepted");
            for line in body.split(|b| *b == b'\n') {
                let content = line.strip_suffix(b"\r").unwrap_or(line);
                assert!(
                    content.len() <= limit,
                    "seed {seed}: {} > {limit}",
                    content.len()
                );
            }
            // Taking every fold out gives the original back.
            let mut unfolded = Vec::new();
            let mut i = 0;
            while i < body.len() {
                if body[i..].starts_with(b"\r\n ") {
                    i += 3;
                } else {
                    unfolded.push(body[i]);
                    i += 1;
                }
            }
            assert_eq!(unfolded, original, "seed {seed}");
        }
    }

    #[test]
    fn bare_line_endings_normalized() {
        let limits = BodyLimits {
            normalize: true,
            ..LIMITS
        };
        let (body, _) = data(b"a\nb\rc\r\r\nd\r\n.\nx\r\n.\r\n", limits, 2);
        // ".\n" keeps its dot: it was not a stuffed line, and it is
        // never the terminator.
        assert_eq!(body.unwrap(), b"a\r\nb\r\nc\r\n\r\nd\r\n.\r\nx\r\n");
    }

    #[test]
    fn size_limit_discards_until_end() {
        let limits = BodyLimits {
            max_size: 10,
            ..LIMITS
        };
        let (body, rest) = data(b"0123456789\r\nmore\r\n.\r\nNEXT", limits, 4);
        assert_eq!(body, Err(BodyError::TooBig));
        assert_eq!(rest, b"NEXT");
        let (body, _) = data(b"01234567\r\n.\r\n", limits, 4);
        assert_eq!(body.unwrap(), b"01234567\r\n");
    }

    #[test]
    fn body_memory_is_bounded() {
        let limits = BodyLimits {
            max_size: 100,
            ..LIMITS
        };
        let mut rx = BodyReceiver::new(Framing::Dot, limits, Vec::new());
        let block = vec![b'x'; 4096];
        for _ in 0..100 {
            rx.feed(&block);
            assert!(rx.body.len() <= 100);
        }
        assert_eq!(rx.failure(), Some(BodyError::TooBig));
    }

    #[test]
    fn hop_counting() {
        let two = b"Received: a\r\nreceived: b\r\nSubject: x\r\n\r\nReceived: body\r\n.\r\n";
        assert!(data(two, LIMITS, 5).0.is_ok());
        let three = b"Received: a\r\nRECEIVED: b\r\nReceived: c\r\n\r\n.\r\n";
        assert_eq!(data(three, LIMITS, 5).0, Err(BodyError::TooManyHops));
        // Folded continuation lines and body lines do not count.
        let folded = b"Received: a\r\n Received: b\r\nX-Received: c\r\n\r\nReceived: d\r\n.\r\n";
        assert!(data(folded, LIMITS, 1).0.is_ok());
    }

    #[test]
    fn chunked_framing() {
        let mut rx = BodyReceiver::new(Framing::Chunked, LIMITS, Vec::new());
        assert_eq!(rx.feed(b".\r\nab\r").consumed, 6);
        assert_eq!(rx.feed(b"\n.\r\n").consumed, 4);
        assert_eq!(rx.finish().unwrap(), b".\r\nab\r\n.\r\n");
        let mut rx = BodyReceiver::new(Framing::Chunked, LIMITS, Vec::new());
        rx.feed(b"no newline");
        assert_eq!(rx.finish().unwrap(), b"no newline\r\n");
        let mut rx = BodyReceiver::new(Framing::Chunked, LIMITS, Vec::new());
        rx.feed(b"trailing CR\r");
        assert_eq!(rx.finish(), Err(BodyError::BareLineEnding));
        let rx = BodyReceiver::new(Framing::Chunked, LIMITS, b"T\r\n".to_vec());
        assert_eq!(rx.finish().unwrap(), b"T\r\n");
    }

    /// Found by fuzzing (`smtp_session`): a Received header over the hop
    /// limit and a later bare CR were answered 554 when the header came in
    /// an earlier read, 550 when both came in one. The first rule broken
    /// in the message wins, however it was split; so does a header before
    /// the size limit.
    #[test]
    fn the_first_broken_rule_wins_however_the_body_is_split() {
        let hops_then_bare =
            b"Received: a\r\nReceived: b\r\nReceived: c\r\nX: y\rz\r\n\r\nbody\r\n.\r\n";
        let hops_then_big =
            b"Received: a\r\nReceived: b\r\nReceived: c\r\nSubject: long enough\r\n\r\n.\r\n";
        let bare_then_hops = b"X: a\nb\r\nReceived: a\r\nReceived: b\r\nReceived: c\r\n\r\n.\r\n";
        let small = BodyLimits {
            max_size: 50,
            ..LIMITS
        };
        for step in 1..=hops_then_bare.len() {
            let (body, _) = data(hops_then_bare, LIMITS, step);
            assert_eq!(body, Err(BodyError::TooManyHops), "step {step}");
            let (body, _) = data(hops_then_big, small, step);
            assert_eq!(body, Err(BodyError::TooManyHops), "step {step}");
            let (body, _) = data(bare_then_hops, LIMITS, step);
            assert_eq!(body, Err(BodyError::BareLineEnding), "step {step}");
        }
    }
}
