//! IMAP load client for benches/imap.sh: CLIENTS threads, each with its
//! own user (PREFIX1, PREFIX2, ...), run whole sessions in a loop for a
//! fixed time: greeting, LOGIN, SELECT INBOX, UID FETCH 1:* (FLAGS
//! RFC822.SIZE), FETCH n,m,... (BODY.PEEK[]) of BODIES random sequence
//! numbers, LOGOUT (nothing changes the mailbox: PEEK sets no flag). One
//! command at a time, as mail readers do, over plain TCP. Prints one JSON
//! line: sessions, messages (bodies fetched), bytes (body bytes), seconds,
//! errors and session latency percentiles. It checks what it can cheaply
//! (every tagged reply OK, SELECT's EXISTS against --expect, one FETCH
//! line per message from UID FETCH, the body literal sizes against
//! RFC822.SIZE) and counts a session that fails any check as an error.
//! Every client runs at least one session: SECONDS 0 runs exactly one each.
//!
//! ```text
//! imap_load ADDR SECONDS [--clients 10] [--prefix user] [--password x] [--expect N] [--bodies 20] [--user NAME]
//! ```

use std::io::{self, BufRead, BufReader, Read, Write};
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
    bodies: usize,
}

fn usage() -> ! {
    eprintln!(
        "usage: imap_load ADDR SECONDS [--clients N] [--prefix user] [--password x] [--expect N] [--bodies 20] [--user NAME]"
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
        bodies: 20,
    };
    while let Some(flag) = args.next() {
        let value = args.next().unwrap_or_else(|| usage());
        match flag.as_str() {
            "--clients" => o.clients = value.parse().unwrap_or_else(|_| usage()),
            "--prefix" => o.prefix = value,
            "--user" => o.same_user = Some(value),
            "--password" => o.password = value,
            "--expect" => o.expect = Some(value.parse().unwrap_or_else(|_| usage())),
            "--bodies" => o.bodies = value.parse().unwrap_or_else(|_| usage()),
            _ => usage(),
        }
    }
    o
}

fn bad(what: impl Into<String>) -> io::Error {
    io::Error::other(what.into())
}

/// One response line with its literals: the text of the line (literal
/// markers kept, literal contents left out) and the literals' sizes.
#[derive(Default)]
struct Response {
    text: Vec<u8>,
    literals: Vec<u64>,
}

/// One connection: a buffered reader and the socket to write commands to.
struct Conn {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    line: Vec<u8>,
    sink: Vec<u8>,
    tag: u32,
}

/// `{N}\r\n` at the end of a line: N.
fn literal_at_end(line: &[u8]) -> Option<u64> {
    let body = line.strip_suffix(b"}\r\n")?;
    let open = body.iter().rposition(|&b| b == b'{')?;
    let digits = &body[open + 1..];
    let digits = digits.strip_suffix(b"+").unwrap_or(digits);
    std::str::from_utf8(digits).ok()?.parse().ok()
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
            sink: vec![0; 64 * 1024],
            tag: 0,
        })
    }

    /// Reads one whole response (a line, and the literals it announces
    /// with the line parts after them) into `r`.
    fn response(&mut self, r: &mut Response) -> io::Result<()> {
        r.text.clear();
        r.literals.clear();
        loop {
            self.line.clear();
            if self.reader.read_until(b'\n', &mut self.line)? == 0 {
                return Err(bad("connection closed"));
            }
            r.text.extend_from_slice(&self.line);
            let Some(n) = literal_at_end(&self.line) else {
                return Ok(());
            };
            r.literals.push(n);
            let mut left = n;
            while left > 0 {
                let want = left.min(self.sink.len() as u64) as usize;
                self.reader.read_exact(&mut self.sink[..want])?;
                left -= want as u64;
            }
        }
    }

    /// Sends `tag command`, then hands every untagged response to `each`
    /// up to the tagged one, which must be OK.
    fn command(
        &mut self,
        cmd: &str,
        mut each: impl FnMut(&Response) -> io::Result<()>,
    ) -> io::Result<()> {
        self.tag += 1;
        let tag = format!("a{}", self.tag);
        self.writer
            .write_all(format!("{tag} {cmd}\r\n").as_bytes())?;
        let mut r = Response::default();
        loop {
            self.response(&mut r)?;
            if r.text.starts_with(tag.as_bytes()) && r.text.get(tag.len()) == Some(&b' ') {
                let status = &r.text[tag.len() + 1..];
                if status.starts_with(b"OK") {
                    return Ok(());
                }
                return Err(bad(format!(
                    "{cmd}: {}",
                    String::from_utf8_lossy(&r.text).trim_end()
                )));
            }
            each(&r)?;
        }
    }
}

/// `* N FETCH ...`: N; the number after `key ` in a FETCH line.
fn number_after(text: &[u8], key: &[u8]) -> Option<u64> {
    let at = text.windows(key.len()).position(|w| w == key)? + key.len();
    let digits: Vec<u8> = text[at..]
        .iter()
        .take_while(|b| b.is_ascii_digit())
        .copied()
        .collect();
    std::str::from_utf8(&digits).ok()?.parse().ok()
}

/// A small xorshift generator: the body numbers need no quality.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// One whole session; (bodies fetched, body bytes).
fn session(o: &Options, user: &str, rng: &mut Rng) -> io::Result<(u64, u64)> {
    let mut c = Conn::open(o.addr)?;
    let mut r = Response::default();
    c.response(&mut r)?;
    if !r.text.starts_with(b"* OK") {
        return Err(bad(format!(
            "greeting: {}",
            String::from_utf8_lossy(&r.text).trim_end()
        )));
    }
    c.command(&format!("LOGIN {user} {}", o.password), |_| Ok(()))?;
    let mut exists = None;
    c.command("SELECT INBOX", |r| {
        if r.text.ends_with(b" EXISTS\r\n") {
            exists = number_after(&r.text, b"* ");
        }
        Ok(())
    })?;
    let count = exists.ok_or_else(|| bad("SELECT: no EXISTS"))? as usize;
    if o.expect.is_some_and(|e| e != count) {
        return Err(bad(format!("SELECT says {count} messages")));
    }
    // Sizes by sequence number (FETCH lines come in any order).
    let mut sizes = vec![0u64; count + 1];
    let mut lines = 0;
    c.command("UID FETCH 1:* (FLAGS RFC822.SIZE)", |r| {
        let seq = number_after(&r.text, b"* ");
        let size = number_after(&r.text, b"RFC822.SIZE ");
        if let (Some(seq), Some(size)) = (seq, size) {
            let slot = sizes
                .get_mut(seq as usize)
                .ok_or_else(|| bad(format!("FETCH of message {seq} of {count}")))?;
            *slot = size;
            lines += 1;
        }
        Ok(())
    })?;
    if lines != count {
        return Err(bad(format!(
            "UID FETCH: {lines} lines for {count} messages"
        )));
    }
    if count == 0 {
        c.command("LOGOUT", |_| Ok(()))?;
        return Ok((0, 0));
    }
    let picks: Vec<u64> = (0..o.bodies)
        .map(|_| rng.next() % count as u64 + 1)
        .collect();
    let set = picks
        .iter()
        .map(|n| n.to_string())
        .collect::<Vec<_>>()
        .join(",");
    let (mut bodies, mut bytes) = (0u64, 0u64);
    c.command(&format!("FETCH {set} (BODY.PEEK[])"), |r| {
        if let (Some(seq), [len]) = (number_after(&r.text, b"* "), r.literals.as_slice()) {
            if sizes.get(seq as usize) != Some(len) {
                return Err(bad(format!(
                    "BODY[] of {seq}: {len} bytes, RFC822.SIZE said {:?}",
                    sizes.get(seq as usize)
                )));
            }
            bodies += 1;
            bytes += len;
        }
        Ok(())
    })?;
    // A set with repeats: one FETCH per distinct message at least.
    let mut distinct = picks.clone();
    distinct.sort_unstable();
    distinct.dedup();
    if (bodies as usize) < distinct.len() {
        return Err(bad(format!(
            "FETCH: {bodies} bodies for {} messages",
            distinct.len()
        )));
    }
    c.command("LOGOUT", |_| Ok(()))?;
    Ok((bodies, bytes))
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
                let mut rng =
                    Rng(0x9E37_79B9_7F4A_7C15 ^ (i as u64 + 1).wrapping_mul(0xD1B5_4A32_D192_ED03));
                let mut mine = Vec::new();
                // At least one session each (SECONDS 0: exactly one, the warm-up).
                loop {
                    let t0 = Instant::now();
                    match session(o, &user, &mut rng) {
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
                    if stop.load(Ordering::Relaxed) {
                        break;
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
