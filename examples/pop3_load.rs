//! POP3 load client for benches/pop3.sh: CLIENTS threads, each with its
//! own user (PREFIX1, PREFIX2, ...), run whole sessions in a loop for a
//! fixed time: greeting, USER/PASS, STAT, LIST, UIDL, RETR of every
//! message, QUIT (no DELE, so the mailbox stays as it is). One command at
//! a time, as mail readers do. Prints one JSON line: sessions, messages,
//! bytes, seconds, errors and session latency percentiles. It checks what
//! it can cheaply (every reply `+OK`, STAT's count, the RETR sizes against
//! LIST) and counts a session that fails any check as an error, not as
//! done.
//!
//! ```text
//! pop3_load ADDR SECONDS [--clients 10] [--prefix user] [--password x] [--expect N] [--user NAME]
//! ```

use std::io::{self, BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

struct Options {
    addr: SocketAddr,
    seconds: f64,
    clients: usize,
    prefix: String,
    /// Every client logs in as this user (one shared mailbox).
    same_user: Option<String>,
    password: String,
    expect: Option<usize>,
}

fn usage() -> ! {
    eprintln!(
        "usage: pop3_load ADDR SECONDS [--clients N] [--prefix user] [--password x] [--expect N] [--user NAME]"
    );
    std::process::exit(2)
}

fn options() -> Options {
    let mut args = std::env::args().skip(1);
    let addr = args
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| usage());
    let seconds = args
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| usage());
    let mut o = Options {
        addr,
        seconds,
        clients: 10,
        prefix: "user".to_owned(),
        same_user: None,
        password: "x".to_owned(),
        expect: None,
    };
    while let Some(flag) = args.next() {
        let value = args.next().unwrap_or_else(|| usage());
        match flag.as_str() {
            "--clients" => o.clients = value.parse().unwrap_or_else(|_| usage()),
            "--prefix" => o.prefix = value,
            "--user" => o.same_user = Some(value),
            "--password" => o.password = value,
            "--expect" => o.expect = Some(value.parse().unwrap_or_else(|_| usage())),
            _ => usage(),
        }
    }
    o
}

/// One connection: a buffered reader and the socket to write commands to.
struct Conn {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    line: Vec<u8>,
}

fn bad(what: impl Into<String>) -> io::Error {
    io::Error::other(what.into())
}

impl Conn {
    fn open(addr: SocketAddr) -> io::Result<Conn> {
        let stream = TcpStream::connect(addr)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        Ok(Conn {
            reader: BufReader::with_capacity(64 * 1024, stream.try_clone()?),
            writer: stream,
            line: Vec::with_capacity(1024),
        })
    }

    /// Reads one line into `self.line`, CRLF included.
    fn read_line(&mut self) -> io::Result<()> {
        self.line.clear();
        if self.reader.read_until(b'\n', &mut self.line)? == 0 {
            return Err(bad("connection closed"));
        }
        Ok(())
    }

    /// Reads a status line; its text after `+OK ` on success.
    fn status(&mut self, what: &str) -> io::Result<String> {
        self.read_line()?;
        if !self.line.starts_with(b"+OK") {
            return Err(bad(format!(
                "{what}: {}",
                String::from_utf8_lossy(&self.line).trim_end()
            )));
        }
        Ok(String::from_utf8_lossy(&self.line[3..]).trim().to_owned())
    }

    fn command(&mut self, cmd: &str) -> io::Result<String> {
        self.writer.write_all(cmd.as_bytes())?;
        self.status(cmd.trim_end())
    }

    /// Reads a multi-line body up to the lone ".": (lines, bytes after
    /// un-stuffing, CRLFs counted as sent).
    fn body(&mut self) -> io::Result<(usize, u64)> {
        let (mut lines, mut bytes) = (0, 0u64);
        loop {
            self.read_line()?;
            if self.line == b".\r\n" {
                return Ok((lines, bytes));
            }
            let stuffed = u64::from(self.line.starts_with(b".."));
            lines += 1;
            bytes += self.line.len() as u64 - stuffed;
        }
    }
}

/// One whole session; (messages retrieved, bytes retrieved).
fn session(o: &Options, user: &str) -> io::Result<(u64, u64)> {
    let mut c = Conn::open(o.addr)?;
    c.status("greeting")?;
    c.command(&format!("USER {user}\r\n"))?;
    c.command(&format!("PASS {}\r\n", o.password))?;
    let stat = c.command("STAT\r\n")?;
    let count: usize = stat
        .split(' ')
        .next()
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| bad(format!("STAT: {stat}")))?;
    if o.expect.is_some_and(|e| e != count) {
        return Err(bad(format!("STAT says {count} messages")));
    }
    c.command("LIST\r\n")?;
    let mut sizes = Vec::with_capacity(count);
    loop {
        c.read_line()?;
        if c.line == b".\r\n" {
            break;
        }
        let text = String::from_utf8_lossy(&c.line);
        let size: u64 = text
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad(format!("LIST line: {text}")))?;
        sizes.push(size);
    }
    if sizes.len() != count {
        return Err(bad("LIST and STAT disagree"));
    }
    c.command("UIDL\r\n")?;
    let (uidls, _) = c.body()?;
    if uidls != count {
        return Err(bad("UIDL and STAT disagree"));
    }
    let mut total = 0;
    for (i, size) in sizes.iter().enumerate() {
        c.command(&format!("RETR {}\r\n", i + 1))?;
        let (_, bytes) = c.body()?;
        // LIST counts the message with CRLF line ends, as RETR sends it.
        if bytes != *size {
            return Err(bad(format!(
                "RETR {}: {bytes} bytes, LIST said {size}",
                i + 1
            )));
        }
        total += bytes;
    }
    c.command("QUIT\r\n")?;
    Ok((count as u64, total))
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

fn main() {
    let o = options();
    let stop = AtomicBool::new(false);
    let (sessions, messages, bytes, errors) = (
        AtomicU64::new(0),
        AtomicU64::new(0),
        AtomicU64::new(0),
        AtomicU64::new(0),
    );
    let latencies = Mutex::new(Vec::new());
    let first_error = Mutex::new(None::<String>);
    let start = Instant::now();
    std::thread::scope(|s| {
        for i in 0..o.clients {
            let user = o
                .same_user
                .clone()
                .unwrap_or_else(|| format!("{}{}", o.prefix, i + 1));
            let (o, stop, sessions, messages, bytes, errors) =
                (&o, &stop, &sessions, &messages, &bytes, &errors);
            let (latencies, first_error) = (&latencies, &first_error);
            s.spawn(move || {
                let mut mine = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let t0 = Instant::now();
                    match session(o, &user) {
                        Ok((m, b)) => {
                            mine.push(t0.elapsed());
                            sessions.fetch_add(1, Ordering::Relaxed);
                            messages.fetch_add(m, Ordering::Relaxed);
                            bytes.fetch_add(b, Ordering::Relaxed);
                        }
                        Err(e) => {
                            errors.fetch_add(1, Ordering::Relaxed);
                            let mut first = first_error.lock().unwrap_or_else(|p| p.into_inner());
                            first.get_or_insert_with(|| format!("{user}: {e}"));
                            // Do not spin on a refusing server.
                            std::thread::sleep(Duration::from_millis(10));
                        }
                    }
                }
                latencies
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .extend(mine);
            });
        }
        std::thread::sleep(Duration::from_secs_f64(o.seconds));
        stop.store(true, Ordering::Relaxed);
    });
    // Sessions in flight at the stop finish and count; the time includes them.
    let secs = start.elapsed().as_secs_f64();
    let mut lat = latencies.into_inner().unwrap_or_else(|p| p.into_inner());
    lat.sort();
    let first_error = first_error.into_inner().unwrap_or_else(|p| p.into_inner());
    println!(
        "{{\"sessions\":{},\"messages\":{},\"bytes\":{},\"seconds\":{secs:.3},\"errors\":{},\
\"session_ms_p50\":{:.2},\"session_ms_p99\":{:.2},\"first_error\":{}}}",
        sessions.load(Ordering::Relaxed),
        messages.load(Ordering::Relaxed),
        bytes.load(Ordering::Relaxed),
        errors.load(Ordering::Relaxed),
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
        serde_json::to_string(&first_error).unwrap_or_else(|_| "null".to_owned()),
    );
}
