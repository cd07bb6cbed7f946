//! Logins and mailboxes as an attacker sees them, over real sockets: the
//! login throttle is not reset by a success on another account, POP3 opens
//! the account's maildrop whatever the login's spelling, IMAP advertises
//! LITERAL- and keeps to it, unknown names answer as fast as `{PLAIN}`
//! users, a TLS scanner's IP-address SNI fills no log, and before login
//! IMAP takes only small literals and closes idle connections early.

mod common;
#[path = "common/line.rs"]
mod line;

use std::io::Read;
use std::net::{Ipv4Addr, SocketAddr};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{TestServer, Tweaks, LOCAL_DOMAIN};
use line::Line;

const SENDER: &str = "sender@client.test";

fn imap_server(extra: &str) -> TestServer {
    TestServer::start(
        Tweaks::default()
            .user("alice", "pw-alice")
            .user("mallory", "pw-mallory")
            .listener("imap")
            .listener("pop3")
            .extra(extra),
    )
}

fn imap_greeted(server: &TestServer) -> Line {
    let mut c = Line::connect(server.listener("imap"));
    let greeting = c.line();
    assert!(greeting.starts_with("* OK"), "{greeting}");
    c
}

/// A loopback address of its own for each call (the throttle counts by
/// client address).
fn fresh_source() -> Ipv4Addr {
    common::unique_loopback()
}

// ------------------------------------------------------------ item 8

/// Nine wrong passwords for the victim, one right login to the attacker's
/// own account, then a tenth wrong one: the client is blocked, so even the
/// victim's right password is refused. (Before, the attacker's success
/// wiped the count, and the victim's password was tried forever.)
#[test]
fn a_login_to_ones_own_account_does_not_forgive_failures_for_another() {
    let server = imap_server("");
    let addr = server.listener("imap");
    let source = fresh_source();
    // Nine failures at once, on nine connections: each is counted before
    // its (growing) delay, so waiting for the answers is not needed.
    let mut failing: Vec<Line> = (0..9)
        .map(|i| {
            let mut c = Line::connect_from(source, addr);
            c.line();
            c.send(format!("f{i} LOGIN alice wrong-{i}\r\n").as_bytes());
            c
        })
        .collect();
    std::thread::sleep(Duration::from_secs(2));
    let mut own = Line::connect_from(source, addr);
    own.line();
    let r = own.imap("m", "LOGIN mallory pw-mallory");
    assert!(r.starts_with("m OK"), "own login: {r}\n{}", own.transcript);
    let mut tenth = Line::connect_from(source, addr);
    tenth.line();
    tenth.send(b"t LOGIN alice wrong-10\r\n");
    std::thread::sleep(Duration::from_secs(2));
    let mut victim = Line::connect_from(source, addr);
    victim.line();
    let r = victim.imap("v", "LOGIN alice pw-alice");
    assert!(
        r.starts_with("v NO"),
        "the block must hold: {r}\n{}",
        victim.transcript
    );
    // Another client address is not affected.
    let mut other = Line::connect_from(fresh_source(), addr);
    other.line();
    let r = other.imap("o", "LOGIN alice pw-alice");
    assert!(r.starts_with("o OK"), "{r}");
    failing.clear();
}

// ------------------------------------------------------------ item 9

fn pop_login(addr: SocketAddr, user: &str, password: &str) -> Line {
    let mut p = Line::connect(addr);
    assert!(p.line().starts_with("+OK"));
    p.send(format!("USER {user}\r\n").as_bytes());
    assert!(p.line().starts_with("+OK"), "{}", p.transcript);
    p.send(format!("PASS {password}\r\n").as_bytes());
    let r = p.line();
    assert!(
        r.starts_with("+OK"),
        "PASS as {user}: {r}\n{}",
        p.transcript
    );
    p
}

/// `ALICE` and `alice@example.test` are alice: POP3 shows her messages,
/// and no Maildir is made for the spelling typed.
#[test]
fn pop3_opens_the_accounts_maildrop_whatever_the_logins_spelling() {
    let server = imap_server("");
    let mut c = server.session();
    let to = format!("alice@{LOCAL_DOMAIN}");
    let msg = b"Subject: for alice\r\n\r\nhello\r\n";
    if let Err(r) = c.send_message(SENDER, &[&to], msg) {
        panic!("SMTP refused: {r:?}");
    }
    c.quit();
    let deadline = Instant::now() + Duration::from_secs(30);
    let new = server.mail_dir().join("alice/new");
    while std::fs::read_dir(&new).map_or(0, |d| d.count()) == 0 {
        assert!(Instant::now() < deadline, "no delivery");
        std::thread::sleep(Duration::from_millis(50));
    }
    let addr = server.listener("pop3");
    for login in ["ALICE", "alice@example.test", "Alice@EXAMPLE.test", "alice"] {
        let mut p = pop_login(addr, login, "pw-alice");
        p.send(b"STAT\r\n");
        let stat = p.line();
        assert!(stat.starts_with("+OK 1 "), "STAT as {login}: {stat}");
        p.send(b"QUIT\r\n");
        p.line();
    }
    let dirs: Vec<String> = std::fs::read_dir(server.mail_dir())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(dirs, vec!["alice".to_owned()], "mailboxes made: {dirs:?}");
}

// ------------------------------------------------------------ item 11

/// RFC 7888 5: LITERAL- is advertised (not LITERAL+, which would promise
/// non-synchronising literals up to the message size); a `{n+}` literal
/// of 4096 octets is taken, one of 4097 gets `BAD [TOOBIG]` for APPEND and
/// its octets are dropped, and a big synchronising literal still works.
#[test]
fn imap_advertises_literal_minus_and_keeps_to_it() {
    let server = imap_server("");
    let mut c = imap_greeted(&server);
    c.send(b"c CAPABILITY\r\n");
    let caps = c.line();
    assert!(caps.contains(" LITERAL-"), "{caps}");
    assert!(!caps.contains("LITERAL+"), "{caps}");
    c.until_tagged("c");
    assert!(c.imap("l", "LOGIN alice pw-alice").starts_with("l OK"));
    let message = |size: usize| {
        let mut m = b"Subject: literal\r\n\r\n".to_vec();
        m.resize(size - 2, b'x');
        m.extend_from_slice(b"\r\n");
        m
    };
    let small = message(4096);
    c.send(format!("a1 APPEND INBOX {{{}+}}\r\n", small.len()).as_bytes());
    c.send(&small);
    c.send(b"\r\n");
    let r = c.until_tagged("a1");
    assert!(r.starts_with("a1 OK"), "{r}");
    let big = message(4097);
    c.send(format!("a2 APPEND INBOX {{{}+}}\r\n", big.len()).as_bytes());
    c.send(&big);
    c.send(b"\r\n");
    let r = c.until_tagged("a2");
    assert!(r.starts_with("a2 BAD [TOOBIG]"), "{r}");
    assert!(c.imap("n", "NOOP").starts_with("n OK"), "{}", c.transcript);
    // A synchronising literal of 100 KB: continuation, then stored.
    let large = message(100_000);
    c.send(format!("a3 APPEND INBOX {{{}}}\r\n", large.len()).as_bytes());
    let cont = c.line();
    assert!(cont.starts_with('+'), "{cont}");
    c.send(&large);
    c.send(b"\r\n");
    let r = c.until_tagged("a3");
    assert!(r.starts_with("a3 OK"), "{r}");
    c.send(b"s STATUS INBOX (MESSAGES)\r\n");
    let status = c.line();
    assert!(status.contains("MESSAGES 2"), "{status}");
}

// ------------------------------------------------------------ item 13

/// The median time from sending LOGIN to its tagged answer, each try from
/// a client address of its own (so no throttle delay).
fn login_time(addr: SocketAddr, user: &str, tries: usize) -> Duration {
    let mut times: Vec<Duration> = (0..tries)
        .map(|i| {
            let mut c = Line::connect_from(fresh_source(), addr);
            c.line();
            let start = Instant::now();
            let r = c.imap("t", &format!("LOGIN {user} wrong-{i}"));
            let took = start.elapsed();
            assert!(r.starts_with("t NO"), "{r}");
            took
        })
        .collect();
    times.sort();
    times[tries / 2]
}

/// With `{PLAIN}` users, an unknown name must not take an argon2 hash
/// longer than a known one (before: 16-100 ms against under 1 ms).
#[test]
fn unknown_names_answer_as_fast_as_plain_users() {
    let server = imap_server("");
    let addr = server.listener("imap");
    // Warm up (the first login loads things).
    login_time(addr, "alice", 1);
    let known = login_time(addr, "alice", 9);
    let unknown = login_time(addr, "nobody-here", 9);
    assert!(
        unknown <= known * 4 + Duration::from_millis(4),
        "unknown {unknown:?} against known {known:?}"
    );
}

// ------------------------------------------------------------ item 14

/// `openssl s_client` with an IP address as SNI, `n` times.
fn handshakes_with_ip_sni(addr: SocketAddr, n: usize) -> bool {
    for _ in 0..n {
        let status = Command::new("openssl")
            .args([
                "s_client",
                "-connect",
                &addr.to_string(),
                "-servername",
                &addr.ip().to_string(),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if status.is_err() {
            return false;
        }
    }
    true
}

const SNI_WARNING: &str = "IP address presented as hostname";

/// A TLS scanner sending an IP address as SNI makes no log line at the
/// default level; at `debug` the line is there (so the probe does reach
/// it).
#[test]
fn an_ip_address_as_sni_is_logged_only_at_debug() {
    if Command::new("openssl").arg("version").output().is_err() {
        println!("SKIP: no openssl");
        return;
    }
    for (level, shown) in [("info", false), ("debug", true)] {
        let server = TestServer::start(
            Tweaks::default()
                .user("alice", "pw-alice")
                .listener("imaps")
                .tls()
                .extra(&format!("[log]\nlevel = \"{level}\"\n")),
        );
        assert!(handshakes_with_ip_sni(server.listener("imaps"), 5));
        std::thread::sleep(Duration::from_millis(300));
        let log = server.stderr_text();
        assert_eq!(
            log.contains(SNI_WARNING),
            shown,
            "level {level}: {}",
            &log[log.len().saturating_sub(3000)..]
        );
    }
}

// ------------------------------------------------------------ item 6

/// Before login a literal of a few KiB at most: `LOGIN {9000000}` gets a
/// tagged BAD and no continuation (so the client never sends it), a big
/// non-synchronising one is dropped as it comes; after login APPEND takes
/// big literals again.
#[test]
fn before_login_imap_takes_only_small_literals() {
    let server = imap_server("");
    let mut c = imap_greeted(&server);
    c.send(b"a LOGIN {9000000}\r\n");
    let r = c.line();
    assert!(r.starts_with("a BAD"), "{r}\n{}", c.transcript);
    c.send(b"b LOGIN {5000+}\r\n");
    c.send(&vec![b'x'; 5000]);
    c.send(b" x\r\n");
    let r = c.until_tagged("b");
    assert!(r.starts_with("b BAD"), "{r}");
    // Small literals still work (a password with spaces, say).
    c.send(b"l LOGIN alice {8}\r\n");
    assert!(c.line().starts_with('+'), "{}", c.transcript);
    c.send(b"pw-alice\r\n");
    let r = c.until_tagged("l");
    assert!(r.starts_with("l OK"), "{r}");
    let mut m = b"Subject: big\r\n\r\n".to_vec();
    m.resize(200_000, b'y');
    c.send(format!("p APPEND INBOX {{{}}}\r\n", m.len()).as_bytes());
    assert!(c.line().starts_with('+'), "{}", c.transcript);
    c.send(&m);
    c.send(b"\r\n");
    let r = c.until_tagged("p");
    assert!(r.starts_with("p OK"), "{r}");
}

/// `[auth] login_timeout`: a connection that does not log in is closed
/// after that long idle; a logged-in one is not.
#[test]
fn an_idle_connection_that_does_not_log_in_is_closed() {
    let server = imap_server("[auth]\nlogin_timeout = \"2s\"\n");
    let mut idle = imap_greeted(&server);
    let mut user = imap_greeted(&server);
    assert!(user.imap("l", "LOGIN alice pw-alice").starts_with("l OK"));
    let start = Instant::now();
    let mut rest = String::new();
    idle.reader
        .read_to_string(&mut rest)
        .expect("closed, not timed out");
    let took = start.elapsed();
    assert!(rest.contains("* BYE"), "{rest:?}");
    assert!(
        took >= Duration::from_millis(1500) && took < Duration::from_secs(15),
        "closed after {took:?}"
    );
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        user.imap("n", "NOOP").starts_with("n OK"),
        "{}",
        user.transcript
    );
}
