//! Encodes a stored message for RETR and TOP (RFC 1939 3, 7): CRLF line ends, dot-stuffing, the
//! "." terminator, and TOP's cut after the header and n body lines, streaming chunk by chunk. It
//! refuses to read the message or write to a socket; the driver feeds bytes and sends the output.
//!
//! The stored message may use bare LF line ends (as Maildir files usually
//! do) or CRLF; either becomes CRLF. A CR not followed by LF is passed on
//! as it is (it is not a line end), except at the very end, where it
//! becomes the final CRLF. A line start is the message's start or the
//! byte after an LF; a "." there gets another "." before it.

use memchr::{memchr2, memchr2_iter};

/// The streaming encoder for one RETR or TOP response body (the "+OK" line
/// is the session's): feed the message with [`MessageEncoder::encode`] in
/// chunks of any size (a CRLF or a leading "." may be split across
/// chunks), then call [`MessageEncoder::finish`] once for the terminator.
#[derive(Debug, Clone)]
pub struct MessageEncoder {
    /// TOP's body line count; `None` for RETR (the whole message).
    top_lines: Option<u32>,
    in_header: bool,
    /// Body lines TOP may still send.
    body_lines_left: u32,
    /// Octets of the current line sent so far (0: at a line start).
    line_len: usize,
    /// A CR ended the last chunk or run: LF or not decides what it was.
    pending_cr: bool,
    /// TOP has sent all it may; the rest of the message is ignored.
    cut: bool,
    finished: bool,
}

impl MessageEncoder {
    /// `top_lines`: `None` for RETR, `Some(n)` for TOP with n body lines.
    pub fn new(top_lines: Option<u32>) -> Self {
        MessageEncoder {
            top_lines,
            in_header: true,
            body_lines_left: 0,
            line_len: 0,
            pending_cr: false,
            cut: false,
            finished: false,
        }
    }

    /// Encodes one whole message at once (RETR when `top_lines` is `None`).
    pub fn encode_all(message: &[u8], top_lines: Option<u32>) -> Vec<u8> {
        let mut out = Vec::with_capacity(message.len() + message.len() / 32 + 8);
        let mut encoder = MessageEncoder::new(top_lines);
        encoder.encode(message, &mut out);
        encoder.finish(&mut out);
        out
    }

    /// Is `message` already in wire form (RFC 1939 3)? Every line ends in
    /// CRLF, the last one too, there is no bare CR or LF, and no line
    /// starts with ".". Then RETR sends it as stored followed by ".\r\n"
    /// (`encode_all` would give exactly that): one copy, no per-line work.
    /// Mail that spate delivered is CRLF throughout (as SMTP carried it).
    pub fn is_wire_ready(message: &[u8]) -> bool {
        if !message.ends_with(b"\r\n") || message.first() == Some(&b'.') {
            return false;
        }
        memchr2_iter(b'\r', b'\n', message).all(|pos| {
            if message[pos] == b'\r' {
                message.get(pos + 1) == Some(&b'\n')
            } else {
                pos > 0 && message[pos - 1] == b'\r' && message.get(pos + 1) != Some(&b'.')
            }
        })
    }

    /// False once TOP has all its lines: the driver may stop reading the
    /// message and call `finish` (feeding more is harmless, it is ignored).
    pub fn wants_more(&self) -> bool {
        !self.cut && !self.finished
    }

    /// Appends the wire form of `chunk` to `out`. Output grows by at most
    /// `chunk.len() * 2 + 2` octets (every LF doubled in the worst case).
    pub fn encode(&mut self, chunk: &[u8], out: &mut Vec<u8>) {
        let mut i = 0;
        while i < chunk.len() && self.wants_more() {
            if self.pending_cr {
                self.pending_cr = false;
                if chunk[i] == b'\n' {
                    self.end_line(out);
                    i += 1;
                    continue;
                }
                // A bare CR: ordinary content.
                self.content(b"\r", out);
            }
            let rest = &chunk[i..];
            match memchr2(b'\r', b'\n', rest) {
                None => {
                    self.content(rest, out);
                    i = chunk.len();
                }
                Some(k) => {
                    self.content(&rest[..k], out);
                    if rest[k] == b'\n' {
                        self.end_line(out);
                    } else {
                        self.pending_cr = true;
                    }
                    i += k + 1;
                }
            }
        }
    }

    /// Ends the response: completes a last line that lacks its line end,
    /// then writes ".\r\n". Later calls do nothing.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if self.finished {
            return;
        }
        if !self.cut && (self.pending_cr || self.line_len > 0) {
            out.extend_from_slice(b"\r\n");
        }
        self.pending_cr = false;
        self.line_len = 0;
        out.extend_from_slice(b".\r\n");
        self.finished = true;
    }

    /// Line content without CR or LF.
    fn content(&mut self, bytes: &[u8], out: &mut Vec<u8>) {
        let Some(&first) = bytes.first() else {
            return;
        };
        if self.line_len == 0 && first == b'.' {
            // RFC 1939 3: byte-stuff a line starting with the termination octet.
            out.push(b'.');
        }
        out.extend_from_slice(bytes);
        self.line_len += bytes.len();
    }

    fn end_line(&mut self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"\r\n");
        let empty = self.line_len == 0;
        self.line_len = 0;
        let Some(top) = self.top_lines else {
            return;
        };
        if self.in_header {
            if empty {
                // RFC 1939 7 (TOP): the header, the blank line, then n lines.
                self.in_header = false;
                self.body_lines_left = top;
                self.cut = top == 0;
            }
        } else {
            self.body_lines_left = self.body_lines_left.saturating_sub(1);
            self.cut = self.body_lines_left == 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(message: &[u8], top: Option<u32>) -> String {
        String::from_utf8(MessageEncoder::encode_all(message, top)).unwrap()
    }

    /// Every chunking of `message` gives the same output as one chunk.
    fn check_every_split(message: &[u8], top: Option<u32>) {
        let whole = MessageEncoder::encode_all(message, top);
        for a in 0..=message.len() {
            for b in a..=message.len() {
                let mut enc = MessageEncoder::new(top);
                let mut out = Vec::new();
                enc.encode(&message[..a], &mut out);
                enc.encode(&message[a..b], &mut out);
                enc.encode(&message[b..], &mut out);
                enc.finish(&mut out);
                assert_eq!(out, whole, "split at {a},{b} of {message:?}");
            }
        }
        let mut enc = MessageEncoder::new(top);
        let mut out = Vec::new();
        for byte in message {
            enc.encode(std::slice::from_ref(byte), &mut out);
        }
        enc.finish(&mut out);
        assert_eq!(out, whole);
    }

    #[test]
    fn wire_ready_messages_encode_to_themselves() {
        use rand::{Rng, SeedableRng};
        for case in [&b"a\r\nb\r\n"[..], b"Subject: x\r\n\r\nbody\r\n", b"\r\n"] {
            assert!(MessageEncoder::is_wire_ready(case), "{case:?}");
        }
        for case in [
            &b""[..],
            b"no line end",
            b"bare lf\n",
            b"a\r\n.dot\r\n",
            b".first\r\n",
            b"bare\rcr\r\n",
            b"ends with cr\r",
            b"\n",
        ] {
            assert!(!MessageEncoder::is_wire_ready(case), "{case:?}");
        }
        // Random messages from a small alphabet: whenever the fast check
        // says yes, the encoder agrees byte for byte.
        let mut rng = rand::rngs::StdRng::seed_from_u64(15);
        let alphabet = b"ab.\r\n";
        let mut ready = 0;
        for _ in 0..20_000 {
            let len = rng.gen_range(0..24);
            let mut m: Vec<u8> = (0..len)
                .map(|_| alphabet[rng.gen_range(0..alphabet.len())])
                .collect();
            if rng.gen_bool(0.5) {
                m.extend_from_slice(b"\r\n");
            }
            let mut wire = m.clone();
            wire.extend_from_slice(b".\r\n");
            let encoded = MessageEncoder::encode_all(&m, None);
            // (The check may say no to a message the encoder would leave
            // alone, one with a bare CR inside a line: it then takes the
            // encoder's path, which is always right.)
            if MessageEncoder::is_wire_ready(&m) {
                ready += 1;
                assert_eq!(encoded, wire, "{m:?}");
            }
        }
        assert!(ready > 100, "only {ready} wire-ready cases drawn");
    }

    #[test]
    fn dot_at_line_start_is_stuffed() {
        assert_eq!(
            all(b"Subject: x\r\n\r\n.\r\n..two\r\na.b\r\n.", None),
            "Subject: x\r\n\r\n..\r\n...two\r\na.b\r\n..\r\n.\r\n"
        );
        assert_eq!(all(b".first", None), "..first\r\n.\r\n");
    }

    #[test]
    fn bare_lf_becomes_crlf() {
        assert_eq!(
            all(b"A: b\n\nbody\n.\n", None),
            "A: b\r\n\r\nbody\r\n..\r\n.\r\n"
        );
    }

    #[test]
    fn missing_final_crlf_is_added() {
        assert_eq!(all(b"A: b\r\n\r\nlast", None), "A: b\r\n\r\nlast\r\n.\r\n");
        assert_eq!(
            all(b"A: b\r\n\r\nlast\r", None),
            "A: b\r\n\r\nlast\r\n.\r\n"
        );
        assert_eq!(all(b"", None), ".\r\n");
    }

    #[test]
    fn bare_cr_inside_a_line_is_kept() {
        assert_eq!(all(b"a\rb\r\n", None), "a\rb\r\n.\r\n");
        // A CR then "." is not a line start.
        assert_eq!(all(b"a\r.b\n", None), "a\r.b\r\n.\r\n");
    }

    #[test]
    fn chunk_boundaries_give_the_same_output() {
        check_every_split(b"H: v\r\n\r\n.a\r\n\r\n.\r\nx\ry\n..\r", None);
        check_every_split(b"H: v\n\n.a\n.\nb\n", Some(1));
        check_every_split(b"H: v\r\nH2: w\r\n\r\nl1\r\n.l2\r\nl3", Some(2));
        check_every_split(b"H: v\r\n\r\n", Some(0));
    }

    #[test]
    fn split_inside_crlf_and_after_line_start() {
        let mut enc = MessageEncoder::new(None);
        let mut out = Vec::new();
        enc.encode(b"a\r", &mut out);
        enc.encode(b"\n", &mut out);
        enc.encode(b".", &mut out);
        enc.encode(b"b\r", &mut out);
        enc.encode(b"\n.", &mut out);
        enc.finish(&mut out);
        assert_eq!(out, b"a\r\n..b\r\n..\r\n.\r\n");
    }

    #[test]
    fn top_zero_sends_the_header_and_blank_line() {
        let msg = b"From: a\r\nTo: b\r\n\r\nline1\r\nline2\r\n";
        assert_eq!(all(msg, Some(0)), "From: a\r\nTo: b\r\n\r\n.\r\n");
        let mut enc = MessageEncoder::new(Some(0));
        let mut out = Vec::new();
        enc.encode(b"From: a\n\n", &mut out);
        assert!(!enc.wants_more());
        enc.encode(b"more", &mut out);
        enc.finish(&mut out);
        assert_eq!(out, b"From: a\r\n\r\n.\r\n");
    }

    #[test]
    fn top_counts_body_lines() {
        let msg = b"From: a\n\nl1\n.l2\nl3\n";
        assert_eq!(all(msg, Some(2)), "From: a\r\n\r\nl1\r\n..l2\r\n.\r\n");
        // Blank body lines count as lines.
        assert_eq!(all(b"A: b\n\n\nx\n", Some(1)), "A: b\r\n\r\n\r\n.\r\n");
    }

    #[test]
    fn top_beyond_the_body_sends_everything() {
        let msg = b"From: a\n\nl1\nl2";
        assert_eq!(all(msg, Some(100)), "From: a\r\n\r\nl1\r\nl2\r\n.\r\n");
        assert_eq!(all(msg, Some(u32::MAX)), all(msg, None));
        // No blank line at all: the whole message is header.
        assert_eq!(all(b"From: a\nTo: b", Some(0)), "From: a\r\nTo: b\r\n.\r\n");
    }

    #[test]
    fn finish_is_idempotent() {
        let mut enc = MessageEncoder::new(None);
        let mut out = Vec::new();
        enc.encode(b"x", &mut out);
        enc.finish(&mut out);
        enc.finish(&mut out);
        enc.encode(b"y", &mut out);
        assert_eq!(out, b"x\r\n.\r\n");
    }
}
