//! The Prometheus endpoint (`[metrics] address`), scraped over HTTP from a
//! real `spate serve` with two cores: after a known number of SMTP
//! sessions, messages (known sizes, delivered to a local mailbox), a
//! refused recipient, POP3 and IMAP logins, every counter, histogram count and
//! gauge says exactly that; relayed mail to a null-MX domain counts one DNS
//! query, one cache hit and two bounces; a STARTTLS handshake counts. Also:
//! the bound address is printed as `listening metrics ADDR` before `ready`,
//! other paths get 404, and there is no endpoint without `[metrics]`.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::dns::{Records, TestDns};
use common::{TestServer, Tweaks};

const WAIT: Duration = Duration::from_secs(30);
const MESSAGES: usize = 5;

/// `GET path` over HTTP/1.1; the status code and the body.
fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut c = TcpStream::connect(addr).expect("connect to the metrics endpoint");
    c.set_read_timeout(Some(WAIT)).unwrap();
    write!(c, "GET {path} HTTP/1.1\r\nHost: spate\r\n\r\n").unwrap();
    let mut text = String::new();
    c.read_to_string(&mut text).expect("read the response");
    let (head, body) = text.split_once("\r\n\r\n").expect("a response head");
    let code = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("status line of {head:?}"));
    (code, body.to_owned())
}

/// Every sample of a scrape, by name with labels.
fn scrape(addr: SocketAddr) -> HashMap<String, f64> {
    let (code, body) = http_get(addr, "/metrics");
    assert_eq!(code, 200, "{body}");
    body.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (name, value) = l.rsplit_once(' ').unwrap_or_else(|| panic!("{l:?}"));
            let value = value.parse().unwrap_or_else(|_| panic!("value of {l:?}"));
            (name.to_owned(), value)
        })
        .collect()
}

fn value(samples: &HashMap<String, f64>, name: &str) -> f64 {
    *samples
        .get(name)
        .unwrap_or_else(|| panic!("no sample {name} in {samples:?}"))
}

/// Scrapes until `done` holds; panics with the last scrape after `WAIT`.
fn scrape_until(
    addr: SocketAddr,
    what: &str,
    done: impl Fn(&HashMap<String, f64>) -> bool,
) -> HashMap<String, f64> {
    let deadline = Instant::now() + WAIT;
    loop {
        let samples = scrape(addr);
        if done(&samples) {
            return samples;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {samples:#?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One POP3 login attempt (plaintext from loopback is allowed); true
/// when the server said +OK to PASS.
fn pop3_login(addr: SocketAddr, user: &str, password: &str) -> bool {
    let stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    let mut line = String::new();
    let mut exchange = |command: Option<&str>| {
        if let Some(command) = command {
            write!(writer, "{command}\r\n").unwrap();
        }
        line.clear();
        reader.read_line(&mut line).unwrap();
        line.starts_with("+OK")
    };
    assert!(exchange(None), "greeting");
    assert!(exchange(Some(&format!("USER {user}"))), "USER");
    let ok = exchange(Some(&format!("PASS {password}")));
    if ok {
        assert!(exchange(Some("QUIT")), "QUIT");
    }
    ok
}

/// One IMAP LOGIN then LOGOUT; true when the login was accepted.
fn imap_login(addr: SocketAddr, user: &str, password: &str) -> bool {
    let stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    // Reads up to the tagged reply of `tag`; true when it is OK.
    let mut tagged = |tag: &str| loop {
        let mut line = String::new();
        assert!(reader.read_line(&mut line).unwrap() > 0, "closed early");
        if let Some(rest) = line.strip_prefix(&format!("{tag} ")) {
            return rest.starts_with("OK");
        }
    };
    assert!(tagged("*"), "greeting");
    write!(writer, "a LOGIN {user} {password}\r\n").unwrap();
    let ok = tagged("a");
    write!(writer, "b LOGOUT\r\n").unwrap();
    assert!(tagged("b"), "LOGOUT");
    ok
}

/// Sizes of the files in `dir` minus the trace headers local delivery
/// writes above each message: the bytes spate stored for each.
fn stored_sizes(dir: &std::path::Path, sender: &str, recipient: &str) -> Vec<u64> {
    let trace = format!("Return-Path: <{sender}>\r\nDelivered-To: {recipient}\r\n").len() as u64;
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.metadata().unwrap().len() - trace)
        .collect()
}

#[test]
fn scrape_reports_exactly_what_happened() {
    let server = TestServer::start(
        Tweaks::default()
            .cores(2)
            .user("alice", "pw")
            .listener("pop3")
            .listener("imap")
            .extra("[metrics]\naddress = \"127.0.0.1:0\"\n"),
    );
    let metrics = server.listener("metrics");
    assert_ne!(metrics.port(), 0, "the bound port is printed");

    let (code, _) = http_get(metrics, "/");
    assert_eq!(code, 404);
    let (code, _) = http_get(metrics, "/metricsx");
    assert_eq!(code, 404);

    let before = scrape(metrics);
    assert_eq!(value(&before, "spate_smtp_messages_received_total"), 0.0);
    assert_eq!(
        value(&before, "spate_connections_total{protocol=\"smtp\"}"),
        0.0
    );

    // N sessions, one message each, of different sizes.
    let sender = "sender@example.test";
    let recipient = "alice@example.test";
    let mut sent = 0u64;
    for i in 0..MESSAGES {
        let body = common::message(&format!("metrics-{i}"), 1000 + 700 * i);
        sent += body.len() as u64;
        let mut c = server.session();
        c.send_message(sender, &[recipient], &body)
            .unwrap_or_else(|r| panic!("refused: {r:?}"));
        c.quit();
    }
    // One more session: a transaction whose only recipient is refused.
    let mut c = server.session();
    assert_eq!(c.cmd(&format!("MAIL FROM:<{sender}>")).code, 250);
    assert_eq!(c.cmd("RCPT TO:<nobody@example.test>").code, 550);
    assert_eq!(c.cmd("RSET").code, 250);
    // Scraped while this session is open: one open SMTP connection.
    let during = scrape(metrics);
    assert_eq!(
        value(&during, "spate_connections_open{protocol=\"smtp\"}"),
        1.0
    );
    c.quit();

    // POP3: one good login, one refused.
    let pop3 = server.listener("pop3");
    assert!(pop3_login(pop3, "alice", "pw"));
    assert!(!pop3_login(pop3, "alice", "wrong"));
    assert!(imap_login(server.listener("imap"), "alice", "pw"));

    let n = MESSAGES as f64;
    let s = scrape_until(
        metrics,
        "every message delivered and every session closed",
        |s| {
            s.get("spate_delivery_messages_total{result=\"delivered\"}") == Some(&n)
                && s.get("spate_connections_open{protocol=\"smtp\"}") == Some(&0.0)
                && s.get("spate_connections_open{protocol=\"pop3\"}") == Some(&0.0)
                && s.get("spate_connections_open{protocol=\"imap\"}") == Some(&0.0)
                && s.get("spate_queue_messages{state=\"active\"}") == Some(&0.0)
        },
    );

    let stored: u64 = stored_sizes(&server.mail_dir().join("alice/new"), sender, recipient)
        .iter()
        .sum();
    // Each stored message is the sent one under our Received header.
    assert!(stored > sent && stored < sent + n as u64 * common::MAX_TRACE_HEADER);

    let expect = [
        ("spate_connections_total{protocol=\"smtp\"}", n + 1.0),
        ("spate_connections_total{protocol=\"submission\"}", 0.0),
        ("spate_connections_total{protocol=\"pop3\"}", 2.0),
        ("spate_connections_total{protocol=\"imap\"}", 1.0),
        ("spate_connections_refused_total", 0.0),
        ("spate_smtp_transactions_total", n + 1.0),
        ("spate_smtp_messages_received_total", n),
        ("spate_smtp_received_bytes_total", stored as f64),
        // Per message session: 220, 250 EHLO, 250 MAIL, 250 RCPT, 354,
        // 250 queued, 221; the last: 220, 250, 250, 550, 250 RSET, 221.
        ("spate_smtp_replies_total{class=\"2xx\"}", 6.0 * n + 5.0),
        ("spate_smtp_replies_total{class=\"3xx\"}", n),
        ("spate_smtp_replies_total{class=\"4xx\"}", 0.0),
        ("spate_smtp_replies_total{class=\"5xx\"}", 1.0),
        ("spate_smtp_store_failures_total", 0.0),
        ("spate_logins_total{protocol=\"pop3\"}", 1.0),
        ("spate_logins_total{protocol=\"imap\"}", 1.0),
        ("spate_auth_failures_total", 1.0),
        ("spate_tls_handshakes_total{result=\"ok\"}", 0.0),
        ("spate_delivery_recipients_total{outcome=\"delivered\"}", n),
        ("spate_delivery_recipients_total{outcome=\"deferred\"}", 0.0),
        ("spate_delivery_recipients_total{outcome=\"bounced\"}", 0.0),
        ("spate_delivery_recipients_total{outcome=\"expired\"}", 0.0),
        ("spate_delivery_messages_total{result=\"delivered\"}", n),
        ("spate_delivery_messages_total{result=\"bounced\"}", 0.0),
        ("spate_delivery_delivered_bytes_total", stored as f64),
        ("spate_dns_queries_total", 0.0),
        ("spate_queue_messages{state=\"queued\"}", 0.0),
        ("spate_queue_messages{state=\"deferred\"}", 0.0),
        ("spate_queue_messages{state=\"active\"}", 0.0),
        ("spate_queue_bytes", 0.0),
        ("spate_connections_open{protocol=\"smtp\"}", 0.0),
        ("spate_smtp_ack_seconds_count", n),
        ("spate_smtp_ack_seconds_bucket{le=\"+Inf\"}", n),
        ("spate_queue_residence_seconds_count", n),
        ("spate_delivery_attempt_seconds_count", n),
    ];
    let wrong: Vec<String> = expect
        .iter()
        .filter(|(name, want)| value(&s, name) != *want)
        .map(|(name, want)| format!("{name}: want {want}, got {}", value(&s, name)))
        .collect();
    assert!(wrong.is_empty(), "{wrong:#?}\nscrape: {s:#?}");

    // Every message was made durable by at least one fsync; buckets are
    // cumulative and end at the count.
    let syncs = value(&s, "spate_spool_fsync_seconds_count");
    assert!(syncs >= 1.0, "{syncs}");
    assert_eq!(
        value(&s, "spate_spool_fsync_seconds_bucket{le=\"+Inf\"}"),
        syncs
    );
    assert!(value(&s, "spate_smtp_ack_seconds_sum") > 0.0);
    assert!(value(&s, "spate_smtp_ack_seconds_bucket{le=\"3600\"}") == n);
    assert!(value(&s, "spate_spool_bytes") > 0.0);
}

/// Relayed mail to a null-MX domain: one MX query, then the cache; each
/// recipient bounces at once. And one STARTTLS handshake (swaks).
#[test]
fn dns_queries_cache_hits_bounces_and_tls_are_counted() {
    let dns = TestDns::start(Records::new().null_mx("nullmx.test"));
    let server = TestServer::start(
        Tweaks::default()
            .cores(1)
            .tls()
            .dns(dns.addr())
            .extra("[metrics]\naddress = \"127.0.0.1:0\"\n"),
    );
    let metrics = server.listener("metrics");
    // The null sender: no DSN comes back to muddle the counts.
    for i in 0..2 {
        let mut c = server.session();
        c.send_message(
            "",
            &["u@nullmx.test"],
            &common::message(&format!("nullmx-{i}"), 300),
        )
        .unwrap_or_else(|r| panic!("refused: {r:?}"));
        c.quit();
        scrape_until(metrics, "the bounce", |s| {
            s.get("spate_delivery_messages_total{result=\"bounced\"}") == Some(&(i as f64 + 1.0))
        });
    }
    let ca = server.tls.as_ref().unwrap().ca.display().to_string();
    let smtp = server.smtp.to_string();
    let (code, out) = common::swaks(
        &[
            "--server",
            &smtp,
            "--tls",
            "--tls-verify",
            "--tls-ca-path",
            &ca,
            "--from",
            "tls@example.test",
            "--to",
            "bob@example.test",
            "--body",
            "over TLS",
            "--timeout",
            "20",
        ]
        .map(str::to_owned),
    );
    assert_eq!(code, 0, "{out}");
    let s = scrape_until(metrics, "the TLS message", |s| {
        s.get("spate_smtp_messages_received_total") == Some(&3.0)
    });
    assert_eq!(
        dns.queries_for("nullmx.test", "MX"),
        1,
        "cached the second time"
    );
    let expect = [
        ("spate_dns_queries_total", dns.queries() as f64),
        ("spate_dns_queries_total", 1.0),
        ("spate_dns_cache_hits_total", 1.0),
        ("spate_delivery_recipients_total{outcome=\"bounced\"}", 2.0),
        (
            "spate_delivery_recipients_total{outcome=\"delivered\"}",
            0.0,
        ),
        ("spate_delivery_messages_total{result=\"bounced\"}", 2.0),
        ("spate_tls_handshakes_total{result=\"ok\"}", 1.0),
        ("spate_tls_handshakes_total{result=\"failed\"}", 0.0),
        ("spate_connections_total{protocol=\"smtp\"}", 3.0),
    ];
    let wrong: Vec<String> = expect
        .iter()
        .filter(|(name, want)| value(&s, name) != *want)
        .map(|(name, want)| format!("{name}: want {want}, got {}", value(&s, name)))
        .collect();
    assert!(wrong.is_empty(), "{wrong:#?}\nscrape: {s:#?}");
}

#[test]
fn no_endpoint_without_the_section() {
    let server = TestServer::start(Tweaks::default().cores(1));
    assert!(
        server.listeners.iter().all(|(p, _)| p != "metrics"),
        "{:?}",
        server.listeners
    );
}
