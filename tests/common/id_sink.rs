//! An SMTP sink for load tests that is independent of spate: plain std
//! threads, one per connection, `250` to every command, and a record of
//! every Message-ID that arrived with its arrival times (so a test can
//! tell lost from duplicated mail). It refuses nothing and judges nothing;
//! tests do. Included with `#[path]` by the tests that need it.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::common::unique_loopback;

/// What arrived so far.
#[derive(Default, Debug, Clone)]
pub struct Arrivals {
    /// Message-ID (without `<>`) -> when each copy's end of data was read
    /// (just before its `250`).
    pub by_id: HashMap<String, Vec<Instant>>,
    /// Whole messages that had no Message-ID header.
    pub without_id: u64,
    /// Whole messages, duplicates included.
    pub messages: u64,
    /// Connections accepted.
    pub connections: u64,
    /// Connections that ended inside DATA (the message was not taken).
    pub cut_in_data: u64,
}

#[derive(Default)]
struct Shared {
    arrivals: Mutex<Arrivals>,
    /// Clones of the open connections, shut down when the sink is dropped.
    open: Mutex<Vec<TcpStream>>,
    stop: AtomicBool,
}

/// A running sink on its own loopback address and a kernel-chosen port;
/// stopped when dropped.
pub struct IdSink {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
}

impl IdSink {
    pub fn start() -> IdSink {
        let listener = TcpListener::bind((unique_loopback(), 0)).expect("bind the sink");
        let addr = listener.local_addr().expect("sink address");
        let shared = Arc::new(Shared::default());
        let s = Arc::clone(&shared);
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s.stop.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(conn) = conn else { continue };
                if let Ok(clone) = conn.try_clone() {
                    s.open.lock().unwrap().push(clone);
                }
                s.arrivals.lock().unwrap().connections += 1;
                let s = Arc::clone(&s);
                std::thread::spawn(move || {
                    let _ = serve(conn, &s);
                });
            }
        });
        IdSink { addr, shared }
    }

    /// A copy of everything recorded so far.
    pub fn arrivals(&self) -> Arrivals {
        self.shared.arrivals.lock().unwrap().clone()
    }

    /// Whole messages received so far, duplicates included.
    pub fn messages(&self) -> u64 {
        self.shared.arrivals.lock().unwrap().messages
    }

    /// How many of `ids` have not arrived (yet).
    pub fn missing<'a>(&self, ids: impl IntoIterator<Item = &'a String>) -> usize {
        let a = self.shared.arrivals.lock().unwrap();
        ids.into_iter()
            .filter(|id| !a.by_id.contains_key(*id))
            .count()
    }
}

impl Drop for IdSink {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop so it sees the flag.
        let _ = TcpStream::connect(self.addr);
        for c in self.shared.open.lock().unwrap().drain(..) {
            let _ = c.shutdown(Shutdown::Both);
        }
    }
}

/// One connection: replies are buffered while pipelined commands are
/// still in the read buffer, and flushed before the sink waits for more.
fn serve(conn: TcpStream, shared: &Shared) -> io::Result<()> {
    conn.set_nodelay(true)?;
    let mut r = BufReader::with_capacity(64 << 10, conn.try_clone()?);
    let mut w = BufWriter::new(conn);
    w.write_all(b"220 idsink.test ESMTP\r\n")?;
    let mut line = Vec::with_capacity(1024);
    loop {
        if r.buffer().is_empty() {
            w.flush()?;
        }
        line.clear();
        if r.read_until(b'\n', &mut line)? == 0 {
            return Ok(());
        }
        let verb: String = line
            .iter()
            .take_while(|b| b.is_ascii_alphabetic())
            .map(|b| b.to_ascii_uppercase() as char)
            .collect();
        match verb.as_str() {
            "EHLO" => w.write_all(
                b"250-idsink.test\r\n250-PIPELINING\r\n250-8BITMIME\r\n250 ENHANCEDSTATUSCODES\r\n",
            )?,
            "HELO" => w.write_all(b"250 idsink.test\r\n")?,
            "MAIL" => w.write_all(b"250 2.1.0 Ok\r\n")?,
            "RCPT" => w.write_all(b"250 2.1.5 Ok\r\n")?,
            "RSET" | "NOOP" => w.write_all(b"250 2.0.0 Ok\r\n")?,
            "QUIT" => {
                w.write_all(b"221 2.0.0 Bye\r\n")?;
                return w.flush();
            }
            "DATA" => {
                w.write_all(b"354 End data with <CR><LF>.<CR><LF>\r\n")?;
                w.flush()?;
                match read_data(&mut r, &mut line)? {
                    Some(id) => {
                        let now = Instant::now();
                        let mut a = shared.arrivals.lock().unwrap();
                        a.messages += 1;
                        match id {
                            Some(id) => a.by_id.entry(id).or_default().push(now),
                            None => a.without_id += 1,
                        }
                    }
                    None => {
                        shared.arrivals.lock().unwrap().cut_in_data += 1;
                        return Ok(());
                    }
                }
                w.write_all(b"250 2.0.0 Ok: queued\r\n")?;
            }
            _ => w.write_all(b"502 5.5.2 Error: command not recognized\r\n")?,
        }
    }
}

/// Reads message data up to the lone dot. `None` when the connection ends
/// first; else the Message-ID header's value without `<>`, if any.
fn read_data(r: &mut impl BufRead, line: &mut Vec<u8>) -> io::Result<Option<Option<String>>> {
    let mut in_headers = true;
    let mut id = None;
    loop {
        line.clear();
        if r.read_until(b'\n', line)? == 0 {
            return Ok(None);
        }
        if line.as_slice() == b".\r\n" {
            return Ok(Some(id));
        }
        if !in_headers {
            continue;
        }
        if line.as_slice() == b"\r\n" {
            in_headers = false;
            continue;
        }
        const NAME: &[u8] = b"message-id:";
        if id.is_none() && line.len() > NAME.len() && line[..NAME.len()].eq_ignore_ascii_case(NAME)
        {
            let value = String::from_utf8_lossy(&line[NAME.len()..]);
            id = Some(
                value
                    .trim()
                    .trim_start_matches('<')
                    .trim_end_matches('>')
                    .to_owned(),
            );
        }
    }
}
