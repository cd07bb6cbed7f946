//! Bounded everything: command and data timeouts, connections per IP and in
//! total, errors per session, hops, command line length, recipients and
//! enhanced status codes on every reply but the greeting.

mod common;

use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::{unique_loopback, Client, TestServer, Tweaks};

fn assert_closed_with(c: &mut Client, status: &str, within: Duration) {
    let (replies, closed) = c.read_until_close(within);
    assert!(
        replies.last().map(|r| r.status()).as_deref() == Some(status),
        "expected {status} then close, got {replies:?}\ntranscript:\n{}",
        c.transcript
    );
    assert!(
        closed,
        "connection not closed after {status}\ntranscript:\n{}",
        c.transcript
    );
}

#[test]
fn command_timeout_sends_421_and_closes() {
    let server = TestServer::start(Tweaks::default().smtp_str("command_timeout", "1s"));
    // Idle right after the greeting.
    let mut a = server.connect();
    assert_eq!(a.read_reply().code, 220);
    // Idle after EHLO, and idle in the middle of a transaction.
    let mut b = server.session();
    let mut c = server.session();
    assert_eq!(c.cmd("MAIL FROM:<a@example.test>").code, 250);
    let t0 = Instant::now();
    for x in [&mut a, &mut b, &mut c] {
        assert_closed_with(x, "421 4.4.2", Duration::from_secs(10));
    }
    assert!(
        t0.elapsed() >= Duration::from_millis(500),
        "closed too early: {:?}",
        t0.elapsed()
    );
    // A session that keeps talking is not timed out.
    let mut d = server.session();
    for _ in 0..4 {
        std::thread::sleep(Duration::from_millis(500));
        assert_eq!(d.cmd("NOOP").code, 250, "{}", d.transcript);
    }
    d.quit();
}

#[test]
fn data_timeout_sends_421_and_keeps_nothing() {
    let server = TestServer::start(
        Tweaks::default()
            .smtp_str("data_timeout", "1s")
            .smtp_str("command_timeout", "30s"),
    );
    let mut c = server.session();
    assert_eq!(c.cmd("MAIL FROM:<slow@example.test>").code, 250);
    assert_eq!(c.cmd("RCPT TO:<rcpt@example.test>").code, 250);
    assert_eq!(c.cmd("DATA").code, 354);
    c.send(b"Subject: stalled\r\n\r\nfirst line\r\n");
    assert_closed_with(&mut c, "421 4.4.2", Duration::from_secs(10));
    assert!(server.queue_list().is_empty());
}

/// Connects to `addr` from `source` and returns the connection with the
/// first line the server sent (greeting or refusal).
fn connect_from(source: Ipv4Addr, addr: SocketAddr) -> (BufReader<TcpStream>, String) {
    let socket =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    socket
        .bind(&SocketAddr::from((source, 0)).into())
        .expect("bind source");
    socket.connect(&addr.into()).expect("connect");
    let stream: TcpStream = socket.into();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).expect("first line");
    (reader, line)
}

#[test]
fn idle_imap_connections_leave_the_smtp_budget_alone() {
    let server = TestServer::start(
        Tweaks::default()
            .smtp("max_connections_per_ip", 2)
            .local("max_connections_per_ip", 3)
            .user("alice", "pw-alice")
            .listener("imap"),
    );
    let source = unique_loopback();
    let imap = server.listener("imap");
    // Idle IMAP connections fill the address's mailbox budget (3)...
    let idle: Vec<_> = (0..3)
        .map(|_| {
            let (c, greeting) = connect_from(source, imap);
            assert!(greeting.starts_with("* OK"), "imap greeting: {greeting:?}");
            c
        })
        .collect();
    let (_, refused) = connect_from(source, imap);
    assert!(refused.starts_with("* BYE"), "4th imap: {refused:?}");
    // ...and SMTP from the same address still gets all of its own (2),
    // beyond which it is refused as before.
    let smtp: Vec<_> = (0..2)
        .map(|_| {
            let (c, greeting) = connect_from(source, server.smtp);
            assert!(greeting.starts_with("220 "), "smtp greeting: {greeting:?}");
            c
        })
        .collect();
    let (_, refused) = connect_from(source, server.smtp);
    assert!(refused.starts_with("421 4.7.0"), "3rd smtp: {refused:?}");
    drop(smtp);
    drop(idle);
}

#[test]
fn connections_per_ip_are_limited() {
    let server = TestServer::start(Tweaks::default().smtp("max_connections_per_ip", 3));
    let mut open: Vec<Client> = (0..3)
        .map(|_| {
            let mut c = server.connect();
            let g = c.read_reply();
            assert_eq!(g.code, 220, "{}", c.transcript);
            c
        })
        .collect();
    let mut extra = server.connect();
    assert_closed_with(&mut extra, "421 4.7.0", Duration::from_secs(10));
    // Freeing one slot lets a new client in (the count is decremented).
    let mut first = open.remove(0);
    first.quit();
    drop(first);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut c = server.connect();
        let r = c.read_reply();
        if r.code == 220 {
            assert_eq!(c.cmd("NOOP").code, 250);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "slot never freed: {}",
            c.transcript
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Slots of clients that vanish without QUIT are freed too.
    drop(open);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut again = Vec::new();
    while again.len() < 2 {
        let mut c = server.connect();
        match c.read_reply_within(Duration::from_secs(10)) {
            Ok(Some(r)) if r.code == 220 => again.push(c),
            _ => {
                assert!(
                    Instant::now() < deadline,
                    "slots of closed connections never freed: {}",
                    c.transcript
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

#[test]
fn total_connections_are_limited_over_all_cores() {
    let server = TestServer::start(
        Tweaks::default()
            .smtp("max_connections", 4)
            .smtp("max_connections_per_ip", 100),
    );
    let open: Vec<Client> = (0..4)
        .map(|_| {
            let mut c = server.connect();
            assert_eq!(c.read_reply().code, 220, "{}", c.transcript);
            c
        })
        .collect();
    for _ in 0..3 {
        let mut extra = server.connect();
        assert_closed_with(&mut extra, "421 4.7.0", Duration::from_secs(10));
    }
    drop(open);
}

#[test]
fn too_many_errors_end_the_session() {
    let server = TestServer::start(Tweaks::default().smtp("max_errors", 3));
    let mut c = server.session();
    let mut replies = Vec::new();
    let mut closed = false;
    for i in 0..10 {
        if c.try_send(format!("BOGUS{i}\r\n").as_bytes()).is_err() {
            closed = true;
            break;
        }
        match c.read_reply_within(Duration::from_secs(10)) {
            Ok(Some(r)) => {
                let last = r.code == 421;
                replies.push(r);
                if last {
                    let (_, eof) = c.read_until_close(Duration::from_secs(5));
                    closed = eof;
                    break;
                }
            }
            _ => {
                closed = true;
                break;
            }
        }
    }
    assert!(
        closed,
        "still open after {} errors:\n{}",
        replies.len(),
        c.transcript
    );
    let errors = replies.iter().filter(|r| r.code >= 500).count();
    assert!(
        errors <= 3,
        "more than max_errors error replies before the close:\n{}",
        c.transcript
    );
    for r in &replies {
        assert!(
            r.code == 421 || r.status() == "500 5.5.2",
            "{}",
            c.transcript
        );
    }
}

fn with_received(n: usize) -> Vec<u8> {
    let mut m = String::new();
    for i in 0..n {
        m.push_str(&format!(
            "Received: from hop{i}.example by hop{}.example with ESMTP id {i:08x};\r\n\tSat, 29 Nov 2025 07:00:{:02} +0000\r\n",
            i + 1,
            i % 60
        ));
    }
    m.push_str("Subject: hops\r\n\r\nbody\r\n");
    m.into_bytes()
}

#[test]
fn too_many_hops_are_refused_as_a_loop() {
    let server = TestServer::start(Tweaks::default().smtp("max_hops", 5));
    let mut c = server.session();
    let r = c
        .send_message(
            "loop@example.test",
            &["rcpt@example.test"],
            &with_received(12),
        )
        .unwrap_err();
    assert_eq!(r.status(), "554 5.4.6", "{}", c.transcript);
    // Case of the header name does not matter.
    let upper = String::from_utf8(with_received(12))
        .unwrap()
        .replace("Received:", "RECEIVED:");
    let r = c
        .send_message(
            "loop@example.test",
            &["rcpt@example.test"],
            upper.as_bytes(),
        )
        .unwrap_err();
    assert_eq!(r.status(), "554 5.4.6", "{}", c.transcript);
    let id = c
        .send_message(
            "fine@example.test",
            &["rcpt@example.test"],
            &with_received(2),
        )
        .expect("2 hops are fine");
    c.quit();
    let q = server.queue_list();
    assert_eq!(q.len(), 1, "{q:?}");
    assert_eq!(q[0].id, id);
}

#[test]
fn command_line_length_is_bounded() {
    let server = TestServer::start(Tweaks::default().smtp("max_line_length", 512));
    let mut c = server.session();
    let r = c.cmd(&format!("NOOP {}", "x".repeat(600)));
    assert_eq!(r.status(), "500 5.5.2", "{}", c.transcript);
    assert_eq!(
        c.cmd("NOOP").code,
        250,
        "session continues: {}",
        c.transcript
    );
    let r = c.cmd(&format!("RCPT TO:<{}@example.test>", "y".repeat(600)));
    assert_eq!(r.status(), "500 5.5.2", "{}", c.transcript);
    // A line just under the limit is a command like any other.
    let r = c.cmd(&format!("NOOP {}", "z".repeat(500)));
    assert_eq!(r.code, 250, "{}", c.transcript);

    // 4 MiB without a line end: answered (or closed) without buffering it all.
    let mut big = server.session();
    let chunk = vec![b'x'; 64 << 10];
    let mut write_failed = false;
    for _ in 0..64 {
        if big.try_send(&chunk).is_err() {
            write_failed = true;
            break;
        }
    }
    if !write_failed {
        let _ = big.try_send(b"\r\nNOOP\r\n");
    }
    let (replies, _) = big.read_until_close(Duration::from_secs(5));
    if let Some(first) = replies.first() {
        assert!(
            first.status() == "500 5.5.2" || first.code == 421,
            "{}",
            big.transcript
        );
    }
    // And the server still serves others.
    let mut d = server.session();
    d.quit();
}

#[test]
fn recipients_per_message_are_bounded() {
    let server = TestServer::start(Tweaks::default().smtp("max_recipients", 5));
    let mut c = server.session();
    assert_eq!(c.cmd("MAIL FROM:<many@example.test>").code, 250);
    for i in 0..8 {
        let r = c.cmd(&format!("RCPT TO:<r{i}@example.test>"));
        if i < 5 {
            assert_eq!(r.code, 250, "{}", c.transcript);
        } else {
            assert_eq!(r.status(), "452 4.5.3", "{}", c.transcript);
        }
    }
    assert_eq!(c.cmd("DATA").code, 354);
    c.send(&common::dot_stuff(b"Subject: many\r\n\r\nbody\r\n"));
    let id = c.read_reply().queue_id().expect("queued");
    c.quit();
    let q = server.queue_list();
    assert_eq!(q.len(), 1);
    assert_eq!(q[0].id, id);
    assert_eq!(
        q[0].to,
        (0..5)
            .map(|i| format!("r{i}@example.test"))
            .collect::<Vec<_>>()
    );
}

#[test]
fn message_size_is_bounded_with_and_without_size_parameter() {
    let server = TestServer::start(Tweaks::default().smtp("max_message_size", 10_000));
    let mut c = server.session();
    let ehlo = c.cmd("EHLO again.test");
    assert_eq!(
        ehlo.capability_args("SIZE"),
        Some(vec!["10000".to_owned()]),
        "{}",
        c.transcript
    );
    assert_eq!(
        c.cmd("MAIL FROM:<big@example.test> SIZE=10001").status(),
        "552 5.3.4",
        "{}",
        c.transcript
    );
    assert_eq!(
        c.cmd("MAIL FROM:<big@example.test> SIZE=9000").code,
        250,
        "{}",
        c.transcript
    );
    assert_eq!(c.cmd("RCPT TO:<rcpt@example.test>").code, 250);
    assert_eq!(c.cmd("DATA").code, 354);
    // Declared 9000, sends 50 000: refused at the end, nothing kept.
    c.send(&common::dot_stuff(&common::message("oversize", 50_000)));
    assert_eq!(c.read_reply().status(), "552 5.3.4", "{}", c.transcript);
    // BDAT overflow too.
    assert_eq!(
        c.cmd("MAIL FROM:<big@example.test>").code,
        250,
        "{}",
        c.transcript
    );
    assert_eq!(c.cmd("RCPT TO:<rcpt@example.test>").code, 250);
    let body = common::message("oversize-bdat", 30_000);
    c.send(format!("BDAT {} LAST\r\n", body.len()).as_bytes());
    c.send(&body);
    assert_eq!(c.read_reply().status(), "552 5.3.4", "{}", c.transcript);
    // The session goes on.
    let id = c.send_message(
        "small@example.test",
        &["rcpt@example.test"],
        &common::message("small", 2000),
    );
    assert!(id.is_ok(), "{}", c.transcript);
    c.quit();
    let q = server.queue_list();
    assert_eq!(q.len(), 1, "{q:?}");
    assert_eq!(q[0].from, "small@example.test");
}

/// Every reply after the greeting carries an enhanced status code
/// (RFC 2034), EHLO's capability lines excepted.
#[test]
fn every_reply_has_an_enhanced_status_code() {
    let server = TestServer::start(Tweaks::default());
    let mut c = server.connect();
    assert_eq!(c.read_reply().code, 220);
    let ehlo = c.cmd("EHLO codes.test");
    assert!(
        ehlo.has_capability("ENHANCEDSTATUSCODES"),
        "{}",
        c.transcript
    );
    let cmds = [
        "NOOP",
        "HELP",
        "VRFY someone@example.test",
        "RCPT TO:<early@example.test>",
        "DATA",
        "FOO",
        "MAIL FROM:<codes@example.test>",
        "MAIL FROM:<again@example.test>",
        "RCPT TO:<rcpt@example.test>",
        "RCPT TO:<victim@relay.example> NOTIFY=BOGUS",
        "RSET",
        "EXPN list@example.test",
        "QUIT",
    ];
    let mut bad = Vec::new();
    for cmd in cmds {
        let r = c.cmd(cmd);
        match r.enhanced() {
            Some(e) if e.as_bytes()[0] == r.status().as_bytes()[0] => {}
            _ => bad.push(format!("{cmd} -> {r:?}")),
        }
    }
    assert!(
        bad.is_empty(),
        "replies without a matching enhanced code:\n{}\n{}",
        bad.join("\n"),
        c.transcript
    );
}
