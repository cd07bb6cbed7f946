//! A line-oriented test client for IMAP and POP3 over a real socket: it
//! sends bytes, reads lines and keeps a transcript for failure messages.
//! It checks nothing itself.

#![allow(dead_code)] // each test binary uses its own part

use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(40);

/// See the module header.
pub struct Line {
    pub reader: BufReader<TcpStream>,
    pub transcript: String,
}

impl Line {
    pub fn connect(addr: SocketAddr) -> Line {
        Line::wrap(TcpStream::connect_timeout(&addr, Duration::from_secs(10)).expect("connect"))
    }

    /// Connects from `source` (a loopback address of its own, so it has
    /// its own failed-login count).
    pub fn connect_from(source: Ipv4Addr, addr: SocketAddr) -> Line {
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
            .expect("socket");
        socket
            .bind(&SocketAddr::from((source, 0)).into())
            .expect("bind source");
        socket.connect(&addr.into()).expect("connect");
        Line::wrap(socket.into())
    }

    pub fn wrap(stream: TcpStream) -> Line {
        stream.set_nodelay(true).expect("nodelay");
        stream.set_read_timeout(Some(TIMEOUT)).expect("timeout");
        Line {
            reader: BufReader::new(stream),
            transcript: String::new(),
        }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        let shown = String::from_utf8_lossy(&bytes[..bytes.len().min(120)]);
        self.transcript.push_str(&format!("C: {shown:?}\n"));
        self.reader.get_mut().write_all(bytes).expect("write");
    }

    /// The next line, `None` at the end of the stream.
    pub fn try_line(&mut self) -> Option<String> {
        let mut buf = Vec::new();
        match self.reader.read_until(b'\n', &mut buf) {
            Ok(0) => None,
            Ok(_) => {
                let l = String::from_utf8_lossy(&buf).trim_end().to_owned();
                self.transcript.push_str(&format!("S: {l}\n"));
                Some(l)
            }
            Err(e) => panic!("no reply: {e}\ntranscript:\n{}", self.transcript),
        }
    }

    pub fn line(&mut self) -> String {
        self.try_line()
            .unwrap_or_else(|| panic!("closed\ntranscript:\n{}", self.transcript))
    }

    /// Sends an IMAP command and reads up to its tagged reply (returned).
    pub fn imap(&mut self, tag: &str, command: &str) -> String {
        self.send(format!("{tag} {command}\r\n").as_bytes());
        self.until_tagged(tag)
    }

    pub fn until_tagged(&mut self, tag: &str) -> String {
        loop {
            let l = self.line();
            if l.starts_with(&format!("{tag} ")) {
                return l;
            }
        }
    }
}
