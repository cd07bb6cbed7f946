//! Dot-stuffs a message body for DATA on the fly (RFC 5321 4.5.2), as borrowed pieces of the
//! original bytes interleaved with static "." and terminator slices. It refuses to copy the body,
//! to write to a socket, or to judge the body's content (bare CR/LF, 8-bit bytes are passed on).

use std::io::IoSlice;

use memchr::memmem;

/// The extra "." put before a line that starts with ".".
const DOT: &[u8] = b".";
/// The DATA terminator when the body already ends with CRLF (or is empty).
const TERMINATOR: &[u8] = b".\r\n";
/// The DATA terminator when the body does not end with CRLF: the body's last
/// line is completed first, since CRLF "." CRLF needs a CRLF before the dot.
const CRLF_TERMINATOR: &[u8] = b"\r\n.\r\n";

/// Where the stuffer stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Sending body bytes `pos..cut`, then (if `cut` is inside the body) the
    /// extra dot, whose first `dot_sent` bytes (0 or 1) are out.
    Body {
        cut: usize,
        dot_sent: bool,
    },
    /// Sending the terminator from byte `sent` on.
    Tail {
        tail: &'static [u8],
        sent: usize,
    },
    Done,
}

/// The wire form of one DATA body: every piece a slice borrowed from the
/// original body or a static one, so a body memory-mapped from the spool is
/// sent without ever being copied. The last pieces are the terminator
/// (CRLF "." CRLF, with the CRLF only when the body lacks a final one), so
/// the glue writes everything this yields and nothing else.
///
/// A line start is the body's start or any position right after an LF,
/// bare or not: a receiver that (wrongly) takes a bare LF for a line end
/// then still never sees an unstuffed "." there, which closes the SMTP
/// smuggling path through us. Bodies from our spool have no bare LF, so
/// this never changes what a correct receiver stores.
///
/// Use it as an [`Iterator`] of whole pieces, or incrementally for partial
/// writes: [`DotStuffer::io_slices`] fills a vectored write without
/// consuming, then [`DotStuffer::advance`] by the bytes actually written.
#[derive(Debug, Clone)]
pub struct DotStuffer<'a> {
    body: &'a [u8],
    /// Next body byte to send.
    pos: usize,
    phase: Phase,
}

/// Where the next dot goes at or after `from`: the index of a "." that
/// starts a line, or `body.len()`. `from` is never a line start itself.
fn next_cut(body: &[u8], from: usize) -> usize {
    match body.get(from..).and_then(|rest| memmem::find(rest, b"\n.")) {
        Some(k) => from + k + 1,
        None => body.len(),
    }
}

impl<'a> DotStuffer<'a> {
    /// Prepares `body` (the message as stored: header, empty line, body).
    pub fn new(body: &'a [u8]) -> Self {
        let cut = if body.first() == Some(&b'.') {
            0
        } else {
            next_cut(body, 0)
        };
        let mut stuffer = DotStuffer {
            body,
            pos: 0,
            phase: Phase::Body {
                cut,
                dot_sent: false,
            },
        };
        stuffer.settle();
        stuffer
    }

    /// Everything, terminator included, has been yielded or advanced over.
    pub fn is_done(&self) -> bool {
        self.phase == Phase::Done
    }

    /// The bytes the wire form has in total (body, added dots, terminator).
    /// Scans the whole body: for logs and tests, not for the hot path.
    pub fn wire_len(body: &[u8]) -> usize {
        DotStuffer::new(body).map(<[u8]>::len).sum()
    }

    /// The next piece without consuming it; `None` once done. Never empty.
    pub fn peek(&self) -> Option<&'a [u8]> {
        match self.phase {
            Phase::Body { cut, dot_sent } => {
                if self.pos < cut {
                    self.body.get(self.pos..cut)
                } else if !dot_sent {
                    Some(DOT)
                } else {
                    // `settle` never leaves this state; be safe anyway.
                    None
                }
            }
            Phase::Tail { tail, sent } => tail.get(sent..),
            Phase::Done => None,
        }
    }

    /// Fills `out` with the next pieces, up to its length, without
    /// consuming them; returns how many were filled. Write them with
    /// `write_vectored`, then call [`DotStuffer::advance`] with the count
    /// written.
    pub fn io_slices<'s>(&self, out: &'s mut [IoSlice<'a>]) -> usize {
        let mut ahead = self.clone();
        let mut n = 0;
        for slot in out.iter_mut() {
            match ahead.next() {
                Some(piece) => {
                    *slot = IoSlice::new(piece);
                    n += 1;
                }
                None => break,
            }
        }
        n
    }

    /// `n` bytes of the pieces were written. Advancing past the end stops
    /// at the end.
    pub fn advance(&mut self, mut n: usize) {
        while n > 0 {
            let Some(piece) = self.peek() else { return };
            let step = n.min(piece.len());
            self.consume(step);
            n -= step;
        }
    }

    /// Consumes `n` bytes of the current piece (`n` <= its length).
    fn consume(&mut self, n: usize) {
        match &mut self.phase {
            Phase::Body { cut, dot_sent } => {
                if self.pos < *cut {
                    self.pos += n.min(*cut - self.pos);
                } else if n > 0 {
                    *dot_sent = true;
                }
            }
            Phase::Tail { sent, .. } => *sent += n,
            Phase::Done => {}
        }
        self.settle();
    }

    /// Moves past finished pieces so `peek` is never empty.
    fn settle(&mut self) {
        loop {
            match self.phase {
                Phase::Body { cut, dot_sent } => {
                    if self.pos < cut || (cut < self.body.len() && !dot_sent) {
                        return;
                    }
                    if self.pos < self.body.len() {
                        // The dot went out; the line-start "." itself is the
                        // next body byte, so search beyond it.
                        self.phase = Phase::Body {
                            cut: next_cut(self.body, self.pos + 1),
                            dot_sent: false,
                        };
                        continue;
                    }
                    let tail = if self.body.is_empty() || self.body.ends_with(b"\r\n") {
                        TERMINATOR
                    } else {
                        CRLF_TERMINATOR
                    };
                    self.phase = Phase::Tail { tail, sent: 0 };
                }
                Phase::Tail { tail, sent } => {
                    if sent < tail.len() {
                        return;
                    }
                    self.phase = Phase::Done;
                }
                Phase::Done => return,
            }
        }
    }
}

impl<'a> Iterator for DotStuffer<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        let piece = self.peek()?;
        self.consume(piece.len());
        Some(piece)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::smtp::data::{BodyLimits, BodyReceiver, Framing};
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    fn wire(body: &[u8]) -> Vec<u8> {
        DotStuffer::new(body).collect::<Vec<_>>().concat()
    }

    fn limits() -> BodyLimits {
        BodyLimits {
            max_size: 1 << 24,
            max_hops: 1000,
            normalize: false,
            fold_at: None,
        }
    }

    /// What a correct receiver stores: the body, with a final CRLF added
    /// when it lacked one (and nothing for an empty body).
    fn expected(body: &[u8]) -> Vec<u8> {
        let mut e = body.to_vec();
        if !e.is_empty() && !e.ends_with(b"\r\n") {
            e.extend_from_slice(b"\r\n");
        }
        e
    }

    /// Feeds `wire` to the server core's DATA receiver in chunks of the
    /// sizes `chunk` gives; checks it ends exactly at the terminator.
    fn receive(wire: &[u8], mut chunk: impl FnMut() -> usize) -> Vec<u8> {
        let mut rx = BodyReceiver::new(Framing::Dot, limits(), Vec::new());
        let mut pos = 0;
        loop {
            assert!(pos < wire.len(), "terminator not recognised");
            let k = chunk().clamp(1, wire.len() - pos);
            let p = rx.feed(&wire[pos..pos + k]);
            pos += p.consumed;
            if p.complete {
                break;
            }
            assert_eq!(p.consumed, k);
        }
        assert_eq!(pos, wire.len(), "bytes after the terminator");
        rx.finish().expect("a stuffed body is always acceptable")
    }

    #[test]
    fn fixed_cases() {
        assert_eq!(wire(b""), b".\r\n");
        assert_eq!(wire(b"a"), b"a\r\n.\r\n");
        assert_eq!(wire(b"a\r\n"), b"a\r\n.\r\n");
        assert_eq!(wire(b"."), b"..\r\n.\r\n");
        assert_eq!(wire(b".\r\n"), b"..\r\n.\r\n");
        assert_eq!(wire(b"\r\n.\r\n"), b"\r\n..\r\n.\r\n");
        assert_eq!(
            wire(b"a\r\n..b\r\n.\r\nc"),
            b"a\r\n...b\r\n..\r\nc\r\n.\r\n"
        );
        assert_eq!(wire(b"x.\r\ny"), b"x.\r\ny\r\n.\r\n");
        // A bare LF counts as a line start too (see the type's doc).
        assert_eq!(wire(b"a\n.\r\n"), b"a\n..\r\n.\r\n");
        assert_eq!(wire(b"\r"), b"\r\r\n.\r\n");
    }

    #[test]
    fn pieces_are_borrowed_from_the_body() {
        let body = b"one\r\n.two\r\nthree\r\n".to_vec();
        let range = body.as_ptr_range();
        let pieces: Vec<&[u8]> = DotStuffer::new(&body).collect();
        assert_eq!(pieces.len(), 4, "{pieces:?}");
        assert!(range.contains(&pieces[0].as_ptr()));
        assert_eq!(pieces[1], b".");
        assert!(range.contains(&pieces[2].as_ptr()));
        assert_eq!(pieces[3], TERMINATOR);
        assert!(pieces.iter().all(|p| !p.is_empty()));
        assert_eq!(DotStuffer::wire_len(&body), body.len() + 1 + 3);
    }

    fn random_body(rng: &mut StdRng) -> Vec<u8> {
        let lines = rng.gen_range(0..40);
        let mut body = Vec::new();
        for _ in 0..lines {
            let dots = if rng.gen_bool(0.4) {
                rng.gen_range(1..4)
            } else {
                0
            };
            body.extend(std::iter::repeat_n(b'.', dots));
            for _ in 0..rng.gen_range(0..12) {
                let c = match rng.gen_range(0..10) {
                    0 => b'.',
                    1 => b' ',
                    2 => 0xC3,
                    _ => rng.gen_range(b'a'..=b'z'),
                };
                body.push(c);
            }
            body.extend_from_slice(b"\r\n");
        }
        match rng.gen_range(0..4) {
            // No final CRLF: drop it, maybe leaving a line of dots.
            0 if body.len() >= 2 => body.truncate(body.len() - 2),
            1 => body.extend(std::iter::repeat_n(b'.', rng.gen_range(1..3))),
            _ => {}
        }
        body
    }

    #[test]
    fn random_bodies_round_trip_through_the_data_receiver() {
        let mut rng = StdRng::seed_from_u64(5321);
        for case in 0..2000 {
            let body = random_body(&mut rng);
            let w = wire(&body);
            let max = if case % 2 == 0 { 7 } else { 300 };
            let got = receive(&w, || rng.gen_range(1..=max));
            assert_eq!(
                got,
                expected(&body),
                "body {:?}",
                String::from_utf8_lossy(&body)
            );
        }
    }

    /// Partial writes of random sizes through `io_slices` and `advance`
    /// produce the same bytes as whole pieces.
    #[test]
    fn incremental_vectored_writes_match() {
        let mut rng = StdRng::seed_from_u64(2920);
        for _ in 0..500 {
            let body = random_body(&mut rng);
            let whole = wire(&body);
            let mut s = DotStuffer::new(&body);
            let mut out = Vec::new();
            let mut guard = 0;
            while !s.is_done() {
                guard += 1;
                assert!(guard < 100_000, "no progress");
                let mut slots = [IoSlice::new(&[]); 4];
                let n = s.io_slices(&mut slots);
                assert!(n > 0);
                // A socket that takes a random number of bytes.
                let mut budget = rng.gen_range(0..9);
                let mut written = 0;
                for slot in &slots[..n] {
                    let k = budget.min(slot.len());
                    out.extend_from_slice(&slot[..k]);
                    budget -= k;
                    written += k;
                }
                s.advance(written);
            }
            assert_eq!(out, whole);
            assert_eq!(s.peek(), None);
            s.advance(10);
            assert!(s.is_done());
        }
    }

    /// The stored message (our Received header, then the body) for one
    /// body sent through a real server session, fed in random chunks.
    fn deliver(body: &[u8], rng: &mut StdRng) -> Vec<u8> {
        use crate::smtp::{Event, PeerInfo, ServerConfig, ServerSession};
        use std::rc::Rc;
        use std::time::{Duration, Instant, UNIX_EPOCH};

        let t0 = Instant::now();
        let wall = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let peer = PeerInfo {
            addr: std::net::SocketAddr::from(([127, 0, 0, 1], 2525)),
            may_relay: true,
            tls: false,
        };
        let mut s = ServerSession::new(Rc::new(ServerConfig::default()), peer, t0);
        let mut input =
            b"EHLO c.test\r\nMAIL FROM:<a@c.test>\r\nRCPT TO:<b@d.test>\r\nDATA\r\n".to_vec();
        input.extend(wire(body));
        let (mut pos, mut stored) = (0, None);
        while pos < input.len() {
            // The glue offers what was left unconsumed again, with more.
            let k = rng.gen_range(1..=64).min(input.len() - pos);
            let n = s.handle_input(&input[pos..pos + k], t0, wall);
            pos += n;
            while let Some(e) = s.poll_event() {
                if let Event::Message(m) = e {
                    stored = Some(m.body);
                    s.handle_stored(Ok("Q"), t0);
                }
            }
            let len = s.output().len();
            s.consume_output(len);
            assert!(n > 0 || k < input.len() - pos, "session stuck");
        }
        stored.expect("message received")
    }

    #[test]
    fn round_trip_through_a_whole_server_session() {
        let mut rng = StdRng::seed_from_u64(6152);
        let header = deliver(b"", &mut rng);
        assert!(header.starts_with(b"Received: "));
        for _ in 0..100 {
            let body = random_body(&mut rng);
            let mut want = header.clone();
            want.extend(expected(&body));
            assert_eq!(deliver(&body, &mut rng), want);
        }
    }
}
