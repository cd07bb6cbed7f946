//! Relay delivery over loopback with our own DNS (hickory-server on
//! 127.a.b.c): a relay chain client -> A -> B (by MX) -> C, MX fallback,
//! null MX, implicit MX, a refused recipient with its DSN, 4xx then 250,
//! expiry, and connection reuse. Every server has its own loopback
//! address; MX hosts share one port (`delivery.mx_port`), since MX
//! records carry none.

mod common;

use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::dns::{Records, TestDns};
use common::{contains, unique_loopback, TestServer, Tweaks};

/// The port every MX host of a test listens on (each on its own address).
const MX_PORT: u16 = 2525;

/// A scripted receiving server (tests/python/capture_sink.py).
struct Sink {
    child: Child,
    out: PathBuf,
    _dir: tempfile::TempDir,
    ip: Ipv4Addr,
}

impl Sink {
    fn start(args: &[&str]) -> Sink {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("received.jsonl");
        let ip = unique_loopback();
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/capture_sink.py");
        let mut child = Command::new("python3")
            .arg(script)
            .arg(ip.to_string())
            .arg(MX_PORT.to_string())
            .arg(&out)
            .args(args)
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3");
        let mut line = String::new();
        let stdout = child.stdout.take().expect("stdout");
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("sink output");
        assert_eq!(line.trim(), "ready", "sink did not start");
        Sink {
            child,
            out,
            _dir: dir,
            ip,
        }
    }

    fn events(&self, kind: &str) -> Vec<serde_json::Value> {
        let text = std::fs::read_to_string(&self.out).unwrap_or_default();
        text.lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["event"] == kind)
            .collect()
    }

    fn messages(&self) -> Vec<serde_json::Value> {
        self.events("message")
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A relay A that resolves MX through `dns`, is final for `a.test` (so
/// DSNs to our senders stay in its queue), and reaches MX hosts on MX_PORT.
fn relay_a(dns: &TestDns, delivery: &str) -> TestServer {
    TestServer::start(
        Tweaks::default()
            .hostname("a.test")
            .local_domains(&["a.test"])
            .dns(dns.addr())
            .extra(&format!("[delivery]\nmx_port = {MX_PORT}\n{delivery}")),
    )
}

fn send(server: &TestServer, from: &str, to: &[&str], msg: &[u8]) -> String {
    let mut client = server.session();
    let id = client
        .send_message(from, to, msg)
        .expect("message accepted");
    client.quit();
    id
}

#[test]
fn relay_through_two_hops_arrives_once_with_every_received_header() {
    let c = TestServer::start(
        Tweaks::default()
            .hostname("c.test")
            .local_domains(&["dest.test"]),
    );
    let b = TestServer::start(
        Tweaks::default()
            .hostname("b.test")
            .local_domains(&[])
            .port(MX_PORT)
            .extra(&format!(
                "[[route]]\ndomain = \"dest.test\"\nto = \"{}\"\n",
                c.smtp
            )),
    );
    let dns = TestDns::start(
        Records::new()
            .mx("dest.test", 10, "mx.b.test")
            .a("mx.b.test", &b.ip.to_string()),
    );
    let a = relay_a(&dns, "");
    let original = common::message("chain", 3000);
    send(&a, "s@a.test", &["u@dest.test"], &original);

    wait_until("the message at C", Duration::from_secs(20), || {
        c.queue_list().len() == 1
    });
    wait_until("A and B to finish", Duration::from_secs(20), || {
        a.queue_list().is_empty() && b.queue_list().is_empty()
    });
    std::thread::sleep(Duration::from_millis(500));
    let at_c = c.queue_list();
    assert_eq!(at_c.len(), 1, "exactly once: {at_c:?}");
    assert_eq!(at_c[0].from, "s@a.test");
    assert_eq!(at_c[0].to, vec!["u@dest.test"]);

    // Byte for byte, under one Received header per hop, newest first.
    let spool = c.spool_bytes();
    let at = spool
        .windows(original.len())
        .position(|w| w == original.as_slice())
        .expect("the original bytes are in C's spool");
    let head = String::from_utf8_lossy(&spool[at.saturating_sub(2000)..at]);
    let by_c = head.rfind("by c.test").expect("C's Received");
    let by_b = head.rfind("by b.test").expect("B's Received");
    let by_a = head.rfind("by a.test").expect("A's Received");
    assert!(
        by_c < by_b && by_b < by_a,
        "Received order C, B, A:\n{head}"
    );
    assert_eq!(dns.queries_of("MX"), 1, "A looked the MX up once");
}

#[test]
fn mx_fallback_null_mx_and_implicit_mx() {
    let sink = Sink::start(&[]);
    let dead = unique_loopback();
    let dns = TestDns::start(
        Records::new()
            .mx("fallback.test", 10, "mx1.fallback.test")
            .a("mx1.fallback.test", &dead.to_string())
            .mx("fallback.test", 20, "mx2.fallback.test")
            .a("mx2.fallback.test", &sink.ip.to_string())
            .null_mx("nullmx.test")
            .a("implicit.test", &sink.ip.to_string()),
    );
    let a = relay_a(&dns, "");
    send(
        &a,
        "s@a.test",
        &["u@fallback.test"],
        &common::message("fallback", 200),
    );
    send(
        &a,
        "s@a.test",
        &["u@implicit.test"],
        &common::message("implicit", 200),
    );
    send(
        &a,
        "s@a.test",
        &["u@nullmx.test"],
        &common::message("nullmx", 200),
    );

    wait_until(
        "two deliveries at the sink",
        Duration::from_secs(20),
        || sink.messages().len() == 2,
    );
    let got: Vec<String> = sink
        .messages()
        .iter()
        .map(|m| m["to"][0].as_str().unwrap_or("").to_owned())
        .collect();
    assert!(got.contains(&"u@fallback.test".to_owned()), "{got:?}");
    assert!(got.contains(&"u@implicit.test".to_owned()), "{got:?}");

    // Null MX: bounced at once; the DSN waits at A for the sender.
    wait_until("the null-MX bounce", Duration::from_secs(20), || {
        let q = a.queue_list();
        q.len() == 1 && q[0].from.is_empty()
    });
    let q = a.queue_list();
    assert_eq!(q[0].to, vec!["s@a.test"]);
    let spool = a.spool_bytes();
    assert!(contains(&spool, b"Final-Recipient: rfc822; u@nullmx.test"));
    assert!(contains(&spool, b"Status: 5.1.10"));
}

#[test]
fn one_refused_recipient_of_three_gets_one_dsn_the_others_are_delivered() {
    let sink = Sink::start(&["--reject", "bad@dest.test"]);
    let dns = TestDns::start(
        Records::new()
            .mx("dest.test", 10, "mx.dest.test")
            .a("mx.dest.test", &sink.ip.to_string()),
    );
    let a = relay_a(&dns, "");
    send(
        &a,
        "s@a.test",
        &["ok1@dest.test", "bad@dest.test", "ok2@dest.test"],
        &common::message("three", 500),
    );

    wait_until("the delivery", Duration::from_secs(20), || {
        sink.messages().len() == 1
    });
    let m = &sink.messages()[0];
    assert_eq!(
        m["to"],
        serde_json::json!(["ok1@dest.test", "ok2@dest.test"])
    );
    wait_until("one DSN at A", Duration::from_secs(20), || {
        let q = a.queue_list();
        q.len() == 1 && q[0].from.is_empty()
    });
    let spool = a.spool_bytes();
    assert!(contains(&spool, b"Final-Recipient: rfc822; bad@dest.test"));
    assert!(contains(&spool, b"Status: 5.1.1"));
    assert!(contains(&spool, b"Action: failed"));
    assert!(!contains(&spool, b"Final-Recipient: rfc822; ok1@dest.test"));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(sink.messages().len(), 1, "no duplicate delivery");
}

#[test]
fn a_4xx_is_retried_and_then_delivered() {
    let sink = Sink::start(&["--tempfail", "1"]);
    let dns = TestDns::start(
        Records::new()
            .mx("dest.test", 10, "mx.dest.test")
            .a("mx.dest.test", &sink.ip.to_string()),
    );
    let a = relay_a(&dns, "minimal_backoff = \"1s\"\nmaximal_backoff = \"2s\"\n");
    let id = send(
        &a,
        "s@a.test",
        &["u@dest.test"],
        &common::message("retry", 200),
    );
    wait_until("the deferral", Duration::from_secs(20), || {
        a.queue_list()
            .iter()
            .any(|q| q.id == id && q.raw["attempts"] == 1)
    });
    let q = a.queue_list();
    assert!(
        q[0].raw["last_error"]
            .as_str()
            .unwrap_or("")
            .contains("451"),
        "{:?}",
        q[0].raw
    );
    wait_until("the retry's delivery", Duration::from_secs(20), || {
        sink.messages().len() == 1
    });
    wait_until("A to finish", Duration::from_secs(20), || {
        a.queue_list().is_empty()
    });
}

#[test]
fn expiry_returns_the_message_with_a_dsn() {
    let dead = unique_loopback();
    let dns = TestDns::start(
        Records::new()
            .mx("dest.test", 10, "mx.dest.test")
            .a("mx.dest.test", &dead.to_string()),
    );
    let a = relay_a(
        &dns,
        "minimal_backoff = \"1s\"\nmaximal_backoff = \"1s\"\nmaximal_queue_lifetime = \"2s\"\n",
    );
    let id = send(
        &a,
        "s@a.test",
        &["u@dest.test"],
        &common::message("expire", 200),
    );
    wait_until("the expiry DSN", Duration::from_secs(30), || {
        let q = a.queue_list();
        q.len() == 1 && q[0].id != id && q[0].from.is_empty()
    });
    let spool = a.spool_bytes();
    assert!(contains(&spool, b"Final-Recipient: rfc822; u@dest.test"));
    assert!(contains(&spool, b"Action: failed"));
    assert!(contains(&spool, b"4.4.7") || contains(&spool, b"Status: 4.4.1"));
}

#[test]
fn many_messages_to_one_destination_reuse_a_few_connections() {
    let sink = Sink::start(&[]);
    let dns = TestDns::start(
        Records::new()
            .mx("dest.test", 10, "mx.dest.test")
            .a("mx.dest.test", &sink.ip.to_string()),
    );
    let a = relay_a(&dns, "");
    const N: usize = 1000;
    let mut client = a.session();
    let msg = common::message("reuse", 300);
    for _ in 0..N {
        client
            .send_message("s@a.test", &["u@dest.test"], &msg)
            .expect("accepted");
    }
    client.quit();
    wait_until("every delivery", Duration::from_secs(60), || {
        sink.messages().len() == N
    });
    let connections = sink.events("connection").len();
    eprintln!("{N} messages used {connections} connections");
    assert!(
        connections <= 45,
        "{connections} connections for {N} messages"
    );
    assert_eq!(dns.queries_of("MX"), 1, "one MX lookup, cached");
    let _ = SocketAddr::from((sink.ip, MX_PORT));
}

#[test]
fn kill_9_during_outbound_delivery_loses_nothing() {
    // A slow receiver, so the kill lands while deliveries are in flight.
    let sink = Sink::start(&["--delay-ms", "200"]);
    let dns = TestDns::start(
        Records::new()
            .mx("dest.test", 10, "mx.dest.test")
            .a("mx.dest.test", &sink.ip.to_string()),
    );
    let mut a = relay_a(&dns, "minimal_backoff = \"1s\"\nmaximal_backoff = \"1s\"\n");
    const N: usize = 200;
    let mut client = a.session();
    for i in 0..N {
        let msg = common::message(&format!("crash{i:04}"), 2000);
        client
            .send_message("s@a.test", &["u@dest.test"], &msg)
            .expect("accepted");
    }
    // Kill A while it is still delivering (some delivered, some not).
    wait_until("some deliveries", Duration::from_secs(20), || {
        !sink.messages().is_empty()
    });
    a.kill9();
    let before = sink.messages().len();
    a.restart();
    wait_until(
        "every message after the restart",
        Duration::from_secs(60),
        || {
            let markers: std::collections::BTreeSet<String> = sink
                .messages()
                .iter()
                .filter_map(|m| {
                    m["data"]
                        .as_str()
                        .and_then(|d| d.split("Subject: ").nth(1))
                        .map(|s| s[..9].to_owned())
                })
                .collect();
            markers.len() == N
        },
    );
    wait_until("A to empty its queue", Duration::from_secs(30), || {
        a.queue_list().is_empty()
    });
    eprintln!(
        "{before} delivered before the kill, {} deliveries in all for {N} messages",
        sink.messages().len()
    );
    assert!(
        before < N,
        "the kill came after every delivery: it tested nothing"
    );
}

#[test]
fn queue_flush_bounce_and_delete_reach_the_running_server() {
    let dead = unique_loopback();
    let dns = TestDns::start(
        Records::new()
            .mx("dest.test", 10, "mx.dest.test")
            .a("mx.dest.test", &dead.to_string()),
    );
    let a = relay_a(&dns, "minimal_backoff = \"1h\"\nmaximal_backoff = \"1h\"\n");
    let id = send(
        &a,
        "s@a.test",
        &["u@dest.test"],
        &common::message("control", 200),
    );
    wait_until("the first deferral", Duration::from_secs(20), || {
        a.queue_list()
            .iter()
            .any(|q| q.id == id && q.raw["attempts"] == 1)
    });
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_spate"))
            .args(args)
            .output()
            .expect("spate runs");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).to_string()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let config = a.config_path.to_string_lossy().to_string();
    let (ok, text) = run(&["queue", "flush", "--config", &config]);
    assert!(ok, "{text}");
    wait_until("the flushed retry", Duration::from_secs(20), || {
        a.queue_list()
            .iter()
            .any(|q| q.id == id && q.raw["attempts"] == 2)
    });
    let (ok, text) = run(&["queue", "bounce", &id, "--config", &config]);
    assert!(ok, "{text}");
    let q = a.queue_list();
    assert_eq!(q.len(), 1, "{q:?}");
    assert!(
        q[0].from.is_empty() && q[0].to == vec!["s@a.test"],
        "the DSN: {q:?}"
    );
    let (ok, text) = run(&["queue", "delete", &q[0].id, "--config", &config]);
    assert!(ok, "{text}");
    assert!(a.queue_list().is_empty());
    let (ok, text) = run(&["queue", "delete", &q[0].id, "--config", &config]);
    assert!(!ok && text.contains("no queued message"), "{text}");
}

#[test]
fn outbound_starttls_is_used_when_the_next_hop_offers_it() {
    let b = TestServer::start(
        Tweaks::default()
            .hostname("b.test")
            .local_domains(&["dest.test"])
            .port(MX_PORT)
            .tls(),
    );
    let dns = TestDns::start(
        Records::new()
            .mx("dest.test", 10, "mx.b.test")
            .a("mx.b.test", &b.ip.to_string()),
    );
    let a = relay_a(&dns, "");
    let original = common::message("tls", 500);
    send(&a, "s@a.test", &["u@dest.test"], &original);
    wait_until("the message at B", Duration::from_secs(20), || {
        b.queue_list().len() == 1
    });
    let spool = b.spool_bytes();
    let at = spool
        .windows(original.len())
        .position(|w| w == original.as_slice())
        .expect("the original at B");
    let head = String::from_utf8_lossy(&spool[at.saturating_sub(600)..at]);
    assert!(
        head.contains("by b.test (spate) with ESMTPS"),
        "B's Received shows TLS:\n{head}"
    );
}

#[test]
fn a_smarthost_with_verify_gets_mail_only_over_verified_tls() {
    let b = TestServer::start(
        Tweaks::default()
            .hostname("b.test")
            .local_domains(&["dest.test"])
            .tls(),
    );
    let b_ca = b.tls.as_ref().expect("B's TLS files").ca.clone();
    let smarthost = |ca: &std::path::Path| {
        TestServer::start(
            Tweaks::default()
                .hostname("a.test")
                .local_domains(&["a.test"])
                .relay("smarthost", format!("\"{}\"", b.smtp))
                .relay("smarthost_tls", "\"verify\"")
                .relay("smarthost_ca", format!("{:?}", ca.display().to_string()))
                .extra("[delivery]\nminimal_backoff = \"1h\"\nmaximal_backoff = \"1h\"\n"),
        )
    };
    // Trusting B's CA: delivered, over TLS.
    let a = smarthost(&b_ca);
    let original = common::message("verified", 300);
    send(&a, "s@a.test", &["u@dest.test"], &original);
    wait_until("the message at B", Duration::from_secs(20), || {
        b.queue_list().len() == 1
    });
    let spool = b.spool_bytes();
    let at = spool
        .windows(original.len())
        .position(|w| w == original.as_slice())
        .expect("the original at B");
    assert!(String::from_utf8_lossy(&spool[at.saturating_sub(600)..at]).contains("with ESMTPS"));

    // Trusting another CA only: never sent in the clear, deferred instead.
    let other = tempfile::tempdir().expect("tempdir");
    let wrong = common::make_tls_files(other.path(), Ipv4Addr::new(127, 0, 0, 1));
    let a2 = smarthost(&wrong.ca);
    let id = send(
        &a2,
        "s@a.test",
        &["u2@dest.test"],
        &common::message("unverified", 300),
    );
    wait_until("the deferral", Duration::from_secs(20), || {
        a2.queue_list()
            .iter()
            .any(|q| q.id == id && q.raw["attempts"] == 1)
    });
    assert_eq!(
        b.queue_list().len(),
        1,
        "nothing reached B without verified TLS"
    );
    let q = a2.queue_list();
    let error = q[0].raw["last_error"].as_str().unwrap_or("").to_owned();
    eprintln!("unverified smarthost: {error}");
    assert!(
        error.to_lowercase().contains("tls"),
        "deferred for TLS: {error}"
    );
}

#[test]
fn a_connection_at_its_message_limit_is_replaced_not_deferred() {
    let sink = Sink::start(&[]);
    let dns = TestDns::start(
        Records::new()
            .mx("dest.test", 10, "mx.dest.test")
            .a("mx.dest.test", &sink.ip.to_string()),
    );
    let a = relay_a(
        &dns,
        "max_messages_per_connection = 3\nmax_connections_per_destination = 1\n",
    );
    let mut client = a.session();
    for i in 0..10 {
        let msg = common::message(&format!("limit{i}"), 200);
        client
            .send_message("s@a.test", &["u@dest.test"], &msg)
            .expect("accepted");
    }
    client.quit();
    // Without a fresh connection the rest would wait 5 minutes (a deferral).
    wait_until("all ten delivered", Duration::from_secs(20), || {
        sink.messages().len() == 10
    });
    let connections = sink.events("connection").len();
    assert!(
        connections >= 4,
        "at most 3 per connection, got {connections} connections"
    );
    assert!(
        a.queue_list().iter().all(|q| q.raw["attempts"] == 0),
        "nothing deferred"
    );
}
