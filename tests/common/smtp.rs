//! A raw SMTP client for tests: sends exact bytes, reads replies with a
//! timeout, and keeps a transcript for failure messages. It checks nothing
//! itself; tests assert on the replies.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// How long one reply may take before the test fails.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(20);

/// One SMTP reply, possibly multi-line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    /// The text of each line after `ddd-` / `ddd `.
    pub lines: Vec<String>,
}

impl Reply {
    /// All lines joined with newlines.
    pub fn text(&self) -> String {
        self.lines.join("\n")
    }
    /// The enhanced status code of the last line (`x.y.z`), if any.
    pub fn enhanced(&self) -> Option<String> {
        let first = self.lines.last()?.split_whitespace().next()?;
        let parts: Vec<&str> = first.split('.').collect();
        let ok = parts.len() == 3
            && parts
                .iter()
                .all(|p| !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()))
            && matches!(parts[0], "2" | "4" | "5");
        ok.then(|| first.to_owned())
    }
    /// `code enhanced`, e.g. "250 2.0.0", for compact assertions.
    pub fn status(&self) -> String {
        match self.enhanced() {
            Some(e) => format!("{} {e}", self.code),
            None => self.code.to_string(),
        }
    }
    /// The id in `250 2.0.0 Ok: queued as <id>`.
    pub fn queue_id(&self) -> Option<String> {
        if self.code != 250 {
            return None;
        }
        let t = self.lines.last()?;
        let i = t.find("queued as ")?;
        let id = t[i + "queued as ".len()..].split_whitespace().next()?;
        Some(id.trim_matches(|c| c == '<' || c == '>').to_owned())
    }
    /// Whether a capability keyword is listed (EHLO reply).
    pub fn has_capability(&self, kw: &str) -> bool {
        self.lines.iter().skip(1).any(|l| {
            l.split_whitespace()
                .next()
                .is_some_and(|w| w.eq_ignore_ascii_case(kw))
        })
    }
    /// The arguments of a capability (EHLO reply).
    pub fn capability_args(&self, kw: &str) -> Option<Vec<String>> {
        self.lines.iter().skip(1).find_map(|l| {
            let mut w = l.split_whitespace();
            w.next()
                .filter(|k| k.eq_ignore_ascii_case(kw))
                .map(|_| w.map(str::to_owned).collect())
        })
    }
}

/// A client connection.
pub struct Client {
    stream: TcpStream,
    buf: Vec<u8>,
    eof: bool,
    pub transcript: String,
}

fn printable(bytes: &[u8]) -> String {
    let mut s = String::new();
    for &b in bytes.iter().take(300) {
        match b {
            b'\r' => s.push_str("\\r"),
            b'\n' => s.push_str("\\n"),
            0x20..=0x7e => s.push(b as char),
            _ => s.push_str(&format!("\\x{b:02x}")),
        }
    }
    if bytes.len() > 300 {
        s.push_str(&format!("...({} bytes)", bytes.len()));
    }
    s
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
        Client::from_stream(stream)
    }

    pub fn try_connect(addr: SocketAddr) -> std::io::Result<Client> {
        TcpStream::connect_timeout(&addr, Duration::from_secs(10)).map(Client::from_stream)
    }

    fn from_stream(stream: TcpStream) -> Client {
        stream.set_nodelay(true).expect("nodelay");
        stream
            .set_read_timeout(Some(Duration::from_millis(200)))
            .expect("timeout");
        stream
            .set_write_timeout(Some(Duration::from_secs(20)))
            .expect("timeout");
        Client {
            stream,
            buf: Vec::new(),
            eof: false,
            transcript: String::new(),
        }
    }

    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }

    /// Sends bytes as they are.
    pub fn send(&mut self, bytes: &[u8]) {
        self.transcript
            .push_str(&format!("C: {}\n", printable(bytes)));
        if let Err(e) = self.stream.write_all(bytes) {
            panic!("write failed: {e}\ntranscript:\n{}", self.transcript);
        }
    }

    /// Sends bytes, returning the error instead of panicking (the server may
    /// have closed the connection).
    pub fn try_send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.transcript
            .push_str(&format!("C: {}\n", printable(bytes)));
        self.stream.write_all(bytes)
    }

    /// Sends one command line (CRLF appended) and reads its reply.
    pub fn cmd(&mut self, line: &str) -> Reply {
        self.send(format!("{line}\r\n").as_bytes());
        self.read_reply()
    }

    /// Reads one reply; panics on timeout or end of stream.
    pub fn read_reply(&mut self) -> Reply {
        match self.read_reply_within(REPLY_TIMEOUT) {
            Ok(Some(r)) => r,
            Ok(None) => panic!(
                "connection closed while waiting for a reply\ntranscript:\n{}",
                self.transcript
            ),
            Err(e) => panic!("no reply: {e}\ntranscript:\n{}", self.transcript),
        }
    }

    /// Reads one reply: `Ok(None)` at a clean end of stream.
    pub fn read_reply_within(&mut self, timeout: Duration) -> std::io::Result<Option<Reply>> {
        let deadline = Instant::now() + timeout;
        let mut lines = Vec::new();
        loop {
            let Some(line) = self.read_line(deadline)? else {
                if lines.is_empty() {
                    return Ok(None);
                }
                return Err(std::io::Error::new(
                    ErrorKind::UnexpectedEof,
                    "closed inside a multi-line reply",
                ));
            };
            self.transcript.push_str(&format!("S: {line}\n"));
            let b = line.as_bytes();
            if b.len() < 3 || !b[..3].iter().all(u8::is_ascii_digit) {
                return Err(std::io::Error::new(
                    ErrorKind::InvalidData,
                    format!("not a reply line: {line:?}"),
                ));
            }
            let code: u16 = line[..3].parse().expect("three digits");
            let sep = b.get(3).copied();
            let text = line.get(4..).unwrap_or("").to_owned();
            lines.push(text);
            match sep {
                Some(b'-') => continue,
                None | Some(b' ') => return Ok(Some(Reply { code, lines })),
                Some(_) => {
                    return Err(std::io::Error::new(
                        ErrorKind::InvalidData,
                        format!("bad reply line: {line:?}"),
                    ))
                }
            }
        }
    }

    fn read_line(&mut self, deadline: Instant) -> std::io::Result<Option<String>> {
        loop {
            if let Some(i) = self.buf.iter().position(|&b| b == b'\n') {
                let raw: Vec<u8> = self.buf.drain(..=i).collect();
                let mut s = String::from_utf8_lossy(&raw).into_owned();
                while s.ends_with('\n') || s.ends_with('\r') {
                    s.pop();
                }
                return Ok(Some(s));
            }
            if self.eof {
                if self.buf.is_empty() {
                    return Ok(None);
                }
                let rest = String::from_utf8_lossy(&std::mem::take(&mut self.buf)).into_owned();
                return Ok(Some(rest));
            }
            if Instant::now() >= deadline {
                return Err(std::io::Error::new(ErrorKind::TimedOut, "timed out"));
            }
            let mut chunk = [0u8; 16384];
            match self.stream.read(&mut chunk) {
                Ok(0) => self.eof = true,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                    ) => {}
                Err(e) if e.kind() == ErrorKind::ConnectionReset => self.eof = true,
                Err(e) => return Err(e),
            }
        }
    }

    /// Reads replies until the server closes the connection (or `timeout`).
    /// Returns the replies and whether the stream ended.
    pub fn read_until_close(&mut self, timeout: Duration) -> (Vec<Reply>, bool) {
        let deadline = Instant::now() + timeout;
        let mut out = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.read_reply_within(left) {
                Ok(Some(r)) => out.push(r),
                Ok(None) => return (out, true),
                Err(e) if e.kind() == ErrorKind::TimedOut => return (out, false),
                Err(e) if e.kind() == ErrorKind::UnexpectedEof => return (out, true),
                Err(e) => panic!("reading replies: {e}\ntranscript:\n{}", self.transcript),
            }
        }
    }

    /// Whether the server closes the connection within `timeout` (any
    /// replies before the close are returned too).
    pub fn closed_within(&mut self, timeout: Duration) -> (Vec<Reply>, bool) {
        self.read_until_close(timeout)
    }

    /// EHLO; panics unless 250.
    pub fn ehlo(&mut self, name: &str) -> Reply {
        let r = self.cmd(&format!("EHLO {name}"));
        assert_eq!(r.code, 250, "EHLO\ntranscript:\n{}", self.transcript);
        r
    }

    /// One whole transaction with DATA; `Ok(queue id)` on 250, else the
    /// first failing reply.
    pub fn send_message(&mut self, from: &str, to: &[&str], msg: &[u8]) -> Result<String, Reply> {
        let r = self.cmd(&format!("MAIL FROM:<{from}>"));
        if r.code != 250 {
            return Err(r);
        }
        let mut any = false;
        for t in to {
            let r = self.cmd(&format!("RCPT TO:<{t}>"));
            if r.code == 250 {
                any = true;
            } else if to.len() == 1 {
                let _ = self.cmd("RSET");
                return Err(r);
            }
        }
        if !any {
            let _ = self.cmd("RSET");
            return Err(Reply {
                code: 554,
                lines: vec!["no valid recipients (client side)".into()],
            });
        }
        let r = self.cmd("DATA");
        if r.code != 354 {
            return Err(r);
        }
        self.send(&super::dot_stuff(msg));
        let r = self.read_reply();
        match r.queue_id() {
            Some(id) => Ok(id),
            None => Err(r),
        }
    }

    /// QUIT and expect 221.
    pub fn quit(&mut self) {
        let r = self.cmd("QUIT");
        assert_eq!(r.code, 221, "QUIT\ntranscript:\n{}", self.transcript);
    }

    /// Half-closes the writing side.
    pub fn shutdown_write(&self) {
        let _ = self.stream.shutdown(Shutdown::Write);
    }
}
