//! Splits received bytes into bounded lines for the POP3 session, keeping at most a fixed number
//! of bytes buffered. It refuses to parse lines, know commands, or buffer past its capacity.
//!
//! A line ends at LF; a CR right before it is removed. A bare LF is taken
//! as a line end too: POP3 has no message submission, so the SMTP
//! smuggling concern does not arise, and lenient clients exist.

use memchr::memchr;

/// What [`LineReader::next_line`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// A complete line is in the caller's buffer, without CRLF.
    Line,
    /// A line longer than the limit ended; all of it was dropped.
    TooLong,
    /// No complete line yet: feed more.
    Incomplete,
}

/// The receive side: a bounded buffer of not yet processed input.
#[derive(Debug)]
pub struct LineReader {
    buf: Vec<u8>,
    /// Bytes before `start` are processed; dropped on the next `push`.
    start: usize,
    capacity: usize,
    /// Inside an over-long line: bytes are dropped up to its LF.
    discarding: bool,
}

impl LineReader {
    /// `capacity` must be at least the largest line limit later passed to
    /// [`LineReader::next_line`], or such lines can never complete (they
    /// are then reported too long, which is still bounded).
    pub fn new(capacity: usize) -> Self {
        LineReader {
            buf: Vec::with_capacity(capacity.min(1024)),
            start: 0,
            capacity,
            discarding: false,
        }
    }

    /// Takes as much of `input` as fits; returns how many bytes it took.
    pub fn push(&mut self, input: &[u8]) -> usize {
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        let n = input.len().min(self.capacity - self.buf.len());
        self.buf.extend_from_slice(&input[..n]);
        n
    }

    /// Unprocessed bytes buffered.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }

    /// Forgets everything buffered, including a partial over-long line
    /// (RFC 2595 4 / RFC 3207 4: nothing read before TLS counts after it).
    pub fn clear(&mut self) {
        self.buf.clear();
        self.start = 0;
        self.discarding = false;
    }

    /// The next line of at most `max` octets including its LF, copied into
    /// `out` (cleared first) without CR LF. A longer line is dropped as it
    /// arrives and reported once, when its end has been seen, so replies to
    /// pipelined commands stay in order.
    pub fn next_line(&mut self, max: usize, out: &mut Vec<u8>) -> Next {
        out.clear();
        if self.discarding {
            return self.discard();
        }
        let rest = &self.buf[self.start..];
        let window = &rest[..rest.len().min(max)];
        match memchr(b'\n', window) {
            Some(k) => {
                let line = &window[..k];
                out.extend_from_slice(line.strip_suffix(b"\r").unwrap_or(line));
                self.start += k + 1;
                Next::Line
            }
            None if rest.len() >= max => {
                // Already longer than allowed without its end: nothing of
                // it will be parsed.
                self.start += window.len();
                self.discarding = true;
                self.discard()
            }
            None => Next::Incomplete,
        }
    }

    fn discard(&mut self) -> Next {
        let rest = &self.buf[self.start..];
        match memchr(b'\n', rest) {
            Some(k) => {
                self.start += k + 1;
                self.discarding = false;
                Next::TooLong
            }
            None => {
                self.start = self.buf.len();
                Next::Incomplete
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_and_partial_lines() {
        let mut r = LineReader::new(64);
        let mut line = Vec::new();
        assert_eq!(r.push(b"STAT\r\nLIST\nNO"), 13);
        assert_eq!(r.next_line(16, &mut line), Next::Line);
        assert_eq!(line, b"STAT");
        assert_eq!(r.next_line(16, &mut line), Next::Line);
        assert_eq!(line, b"LIST");
        assert_eq!(r.next_line(16, &mut line), Next::Incomplete);
        r.push(b"OP\r");
        assert_eq!(r.next_line(16, &mut line), Next::Incomplete);
        r.push(b"\n");
        assert_eq!(r.next_line(16, &mut line), Next::Line);
        assert_eq!(line, b"NOOP");
        assert_eq!(r.buffered(), 0);
    }

    #[test]
    fn capacity_bounds_what_is_taken() {
        let mut r = LineReader::new(8);
        assert_eq!(r.push(b"0123456789"), 8);
        assert_eq!(r.push(b"x"), 0);
        r.clear();
        assert_eq!(r.push(b"x"), 1);
    }

    #[test]
    fn overlong_line_is_dropped_and_reported_at_its_end() {
        let mut r = LineReader::new(16);
        let mut line = Vec::new();
        r.push(b"0123456789abcdef");
        assert_eq!(r.next_line(10, &mut line), Next::Incomplete);
        assert_eq!(r.buffered(), 0);
        r.push(b"ghij\r\nSTAT\r\n");
        assert_eq!(r.next_line(10, &mut line), Next::TooLong);
        assert_eq!(r.next_line(10, &mut line), Next::Line);
        assert_eq!(line, b"STAT");
    }

    #[test]
    fn limit_counts_the_lf() {
        let mut r = LineReader::new(16);
        let mut line = Vec::new();
        r.push(b"12345678\r\n");
        assert_eq!(r.next_line(10, &mut line), Next::Line);
        r.push(b"123456789\r\n");
        assert_eq!(r.next_line(10, &mut line), Next::TooLong);
    }
}
