//! Issue 12 item 5, over real sockets: IMAP clients that send
//! `FETCH 1:* BODY.PEEK[]` of a large mailbox and never read, more of them
//! than there are `[local] io_threads`, hold no thread of the blocking pool:
//! an IMAP LOGIN, a POP3 USER/PASS, an SMTP AUTH on the submission port and
//! a local delivery each still finish within a second. With a short
//! `[local] write_timeout` the server closes such connections, and a client
//! that reads gets the whole mailbox.

mod common;

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::{TestServer, Tweaks, LOCAL_DOMAIN};

const USER: &str = "alice";
const PASSWORD: &str = "pw-alice";
const OTHER: &str = "bob";
const OTHER_PASSWORD: &str = "pw-bob";
const SENDER: &str = "sender@client.test";
const IO_THREADS: usize = 2;
/// More stalled readers than pool threads.
const STALLED: usize = IO_THREADS + 2;
/// 300 messages of 64 KiB: a reply of about 19 MiB, far beyond any
/// socket buffer.
const MESSAGES: usize = 300;
const MESSAGE_SIZE: usize = 64 * 1024;
/// What each measured operation may take.
const BUDGET: Duration = Duration::from_secs(1);
/// Reads of the measured clients give up after this (the old code made
/// them wait 30 minutes).
const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);

fn server(extra_local: &[(&str, &str)]) -> TestServer {
    let mut tweaks = Tweaks::default()
        .user(USER, PASSWORD)
        .user(OTHER, OTHER_PASSWORD)
        .listener("imap")
        .listener("pop3")
        .listener("submission")
        .local("io_threads", IO_THREADS);
    for (key, value) in extra_local {
        tweaks = tweaks.local(key, value);
    }
    TestServer::start(tweaks)
}

/// The files of `user`'s INBOX `new/` folder.
fn new_files(server: &TestServer, user: &str) -> Vec<PathBuf> {
    let Ok(rd) = std::fs::read_dir(server.mail_dir().join(user).join("new")) else {
        return Vec::new();
    };
    rd.flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect()
}

/// Sends `user` a message over SMTP and returns at once.
fn submit(server: &TestServer, user: &str, marker: &str) {
    let mut c = server.session();
    let to = format!("{user}@{LOCAL_DOMAIN}");
    let msg = format!("Subject: {marker}\r\nFrom: <{SENDER}>\r\n\r\n{marker}\r\n");
    if let Err(r) = c.send_message(SENDER, &[&to], msg.as_bytes()) {
        panic!("SMTP refused: {r:?}\ntranscript:\n{}", c.transcript);
    }
    c.quit();
}

fn wait_for_file(server: &TestServer, user: &str, marker: &str, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    loop {
        let found = new_files(server, user)
            .iter()
            .any(|p| std::fs::read(p).is_ok_and(|b| common::contains(&b, marker.as_bytes())));
        if found {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// `USER`'s INBOX with one delivered message (which creates the Maildir)
/// and `MESSAGES` large ones written straight into `cur/`.
fn fill_mailbox(server: &TestServer) {
    submit(server, USER, "first-message");
    assert!(
        wait_for_file(server, USER, "first-message", Duration::from_secs(30)),
        "the first delivery did not arrive"
    );
    let cur = server.mail_dir().join(USER).join("cur");
    let line = "0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqr\r\n";
    let filler = line.repeat(MESSAGE_SIZE / line.len());
    for i in 0..MESSAGES {
        let msg = format!("Subject: bulk {i:03}\r\n\r\nstart-{i:03}\r\n{filler}end-{i:03}\r\n");
        std::fs::write(cur.join(format!("17000{i:05}.M1P1Q{i}.bulk:2,S")), msg).unwrap();
    }
}

/// A line-oriented client (IMAP, POP3) with a transcript for failures.
struct Line {
    reader: BufReader<TcpStream>,
    transcript: String,
}

impl Line {
    fn connect(addr: SocketAddr) -> Line {
        let stream = TcpStream::connect_timeout(&addr, CLIENT_TIMEOUT).expect("connect");
        Line::wrap(stream)
    }

    /// Connects with a small receive buffer, so a reply it does not read
    /// fills the kernel's buffers fast.
    fn connect_small(addr: SocketAddr) -> Line {
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
            .expect("socket");
        socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
        socket.connect(&addr.into()).expect("connect");
        Line::wrap(socket.into())
    }

    fn wrap(stream: TcpStream) -> Line {
        stream.set_nodelay(true).expect("nodelay");
        stream
            .set_read_timeout(Some(CLIENT_TIMEOUT))
            .expect("timeout");
        Line {
            reader: BufReader::new(stream),
            transcript: String::new(),
        }
    }

    fn send(&mut self, line: &str) {
        self.transcript.push_str(&format!("C: {line}\n"));
        self.reader
            .get_mut()
            .write_all(format!("{line}\r\n").as_bytes())
            .expect("write");
    }

    fn line(&mut self) -> String {
        let mut buf = Vec::new();
        match self.reader.read_until(b'\n', &mut buf) {
            Ok(0) => panic!("closed\ntranscript:\n{}", self.transcript),
            Ok(_) => {
                let l = String::from_utf8_lossy(&buf).trim_end().to_owned();
                self.transcript.push_str(&format!("S: {l}\n"));
                l
            }
            Err(e) => panic!("no reply: {e}\ntranscript:\n{}", self.transcript),
        }
    }

    /// Sends an IMAP command, reads up to its tagged reply (returned).
    fn imap(&mut self, tag: &str, command: &str) -> String {
        self.send(&format!("{tag} {command}"));
        loop {
            let l = self.line();
            if l.starts_with(&format!("{tag} ")) {
                return l;
            }
        }
    }
}

/// An IMAP client that logged in, selected INBOX and asked for every
/// message's body, and does not read the answer.
fn stalled_reader(server: &TestServer) -> Line {
    let mut c = Line::connect_small(server.listener("imap"));
    let greeting = c.line();
    assert!(greeting.starts_with("* OK"), "{greeting}");
    let login = c.imap("a", &format!("LOGIN {USER} {PASSWORD}"));
    assert!(login.starts_with("a OK"), "{}", c.transcript);
    let select = c.imap("b", "SELECT INBOX");
    assert!(select.starts_with("b OK"), "{}", c.transcript);
    c.send("c FETCH 1:* BODY.PEEK[]");
    c
}

/// Runs `op` and checks it took at most [`BUDGET`].
fn within_budget(what: &str, op: impl FnOnce()) {
    let began = Instant::now();
    op();
    let took = began.elapsed();
    assert!(
        took <= BUDGET,
        "{what} took {took:?} while clients did not read"
    );
}

#[test]
fn logins_and_deliveries_finish_while_readers_stall_on_every_pool_thread() {
    let server = server(&[]);
    fill_mailbox(&server);
    let stalled: Vec<Line> = (0..STALLED).map(|_| stalled_reader(&server)).collect();
    // Long enough for the server to fill every socket buffer and wait.
    std::thread::sleep(Duration::from_millis(1500));
    for c in &stalled {
        let mut byte = [0u8; 1];
        let waiting = c.reader.get_ref().peek(&mut byte).expect("peek");
        assert_eq!(waiting, 1, "the server is writing the FETCH reply");
    }

    within_budget("an IMAP LOGIN", || {
        let mut c = Line::connect(server.listener("imap"));
        let greeting = c.line();
        assert!(greeting.starts_with("* OK"), "{greeting}");
        let reply = c.imap("a", &format!("LOGIN {OTHER} {OTHER_PASSWORD}"));
        assert!(reply.starts_with("a OK"), "{}", c.transcript);
    });
    within_budget("a POP3 USER/PASS", || {
        let mut c = Line::connect(server.listener("pop3"));
        let greeting = c.line();
        assert!(greeting.starts_with("+OK"), "{greeting}");
        c.send(&format!("USER {OTHER}"));
        assert!(c.line().starts_with("+OK"), "{}", c.transcript);
        c.send(&format!("PASS {OTHER_PASSWORD}"));
        assert!(c.line().starts_with("+OK"), "{}", c.transcript);
        c.send("QUIT");
        assert!(c.line().starts_with("+OK"), "{}", c.transcript);
    });
    within_budget("an SMTP AUTH PLAIN", || {
        let mut c = common::Client::connect(server.listener("submission"));
        assert_eq!(c.read_reply().code, 220);
        assert_eq!(c.ehlo("client.test").code, 250);
        let token = base64::engine::general_purpose::STANDARD
            .encode(format!("\0{OTHER}\0{OTHER_PASSWORD}"));
        let reply = c.cmd(&format!("AUTH PLAIN {token}"));
        assert_eq!(reply.code, 235, "{reply:?}\n{}", c.transcript);
        c.quit();
    });
    within_budget("a local delivery", || {
        submit(&server, OTHER, "delivered-while-stalled");
        assert!(
            wait_for_file(&server, OTHER, "delivered-while-stalled", CLIENT_TIMEOUT),
            "the delivery did not arrive"
        );
    });
    drop(stalled);
}

#[test]
fn a_client_that_stops_reading_is_closed_after_the_write_timeout() {
    let server = server(&[("write_timeout", "\"2s\"")]);
    fill_mailbox(&server);
    let stalled: Vec<Line> = (0..STALLED).map(|_| stalled_reader(&server)).collect();
    // Past the write timeout: the server gave up on them.
    std::thread::sleep(Duration::from_secs(5));
    let whole = MESSAGES * MESSAGE_SIZE;
    for mut c in stalled {
        // Whatever was in the sockets' buffers, then the end.
        let mut got = Vec::new();
        let began = Instant::now();
        let mut buf = vec![0; 64 * 1024];
        loop {
            match c.reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == ErrorKind::ConnectionReset => break,
                Err(e) => panic!(
                    "the server kept a client that did not read ({e} after {:?}, {} bytes)",
                    began.elapsed(),
                    got.len()
                ),
            }
        }
        assert!(got.len() < whole, "the whole reply was buffered");
        assert!(!common::contains(&got, b"\r\nc OK"), "the FETCH completed");
    }

    // A client that reads still gets the whole mailbox.
    let mut c = Line::connect(server.listener("imap"));
    c.reader
        .get_ref()
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    c.line();
    let login = c.imap("a", &format!("LOGIN {USER} {PASSWORD}"));
    assert!(login.starts_with("a OK"), "{}", c.transcript);
    let select = c.imap("b", "SELECT INBOX");
    assert!(select.starts_with("b OK"), "{}", c.transcript);
    c.send("c FETCH 1:* BODY.PEEK[]");
    let mut bodies = 0;
    loop {
        let line = c.line();
        if line.starts_with("c ") {
            assert!(line.starts_with("c OK"), "{line}");
            break;
        }
        if let Some((_, size)) = line.strip_suffix('}').and_then(|l| l.rsplit_once('{')) {
            let mut body = vec![0; size.parse().unwrap()];
            c.reader.read_exact(&mut body).unwrap();
            bodies += 1;
        }
    }
    assert_eq!(bodies, MESSAGES + 1);
}
