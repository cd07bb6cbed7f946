//! Back-off on what receivers say, over real sockets: a reply that a
//! shipped back-off rule knows (Gmail's `4.7.28`) suspends the site, its
//! other mail waits in the queue without an attempt counted, `spate queue
//! suspensions` lists it, a `kill -9` and restart keep it, and `spate
//! queue resume` lets the mail go at once; `spate queue suspend` does the same by hand. Rules of a shaping
//! file throttle a site (its rate halves, then climbs back after
//! deliveries, judged from the receiver's timestamps), bounce its queued
//! mail (DSNs reach the sender's own receiver, nothing more reaches the
//! site), or fail a recipient for good on a 4xx.

#[path = "common/capture.rs"]
mod capture;
mod common;

use std::time::Duration;

use capture::{wait_until, Sink};
use common::{TestServer, Tweaks};

/// A server relaying `far.example` to `sink` and the senders' domain
/// (`client.test`, where DSNs go) to `senders`, under the shaping rules
/// `rules` (written to a file), on one core.
fn ruled_server(sink: &Sink, senders: &Sink, rules: &str) -> (TestServer, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shaping.toml");
    std::fs::write(&path, rules).unwrap();
    let server = TestServer::start(
        Tweaks::default()
            .cores(1)
            .extra(&sink.route("far.example"))
            .extra(&senders.route("client.test"))
            .extra(&format!(
                "[delivery]\nshaping_file = {:?}\nminimal_backoff = \"1h\"\nmaximal_backoff = \"2h\"\n",
                path.display()
            )),
    );
    (server, dir)
}

/// Seconds between the first and the last arrival.
fn span(messages: &[serde_json::Value]) -> f64 {
    let times: Vec<f64> = messages.iter().filter_map(|m| m["at"].as_f64()).collect();
    let first = times.iter().copied().fold(f64::INFINITY, f64::min);
    let last = times.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    last - first
}

fn server_for(sink: &Sink) -> TestServer {
    TestServer::start(
        Tweaks::default()
            .extra(&sink.route("far.example"))
            .extra("[delivery]\nminimal_backoff = \"1h\"\nmaximal_backoff = \"2h\"\n"),
    )
}

fn spate(server: &TestServer, args: &[&str]) -> String {
    let out = server.spate_command(args);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "spate {args:?}: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

#[test]
fn a_slow_down_reply_suspends_the_site_until_resumed() {
    let sink = Sink::start_with(&[
        "--tempfail",
        "1",
        "--tempfail-text",
        "421 4.7.28 Our system has detected an unusual rate of unsolicited mail",
    ]);
    let mut server = server_for(&sink);
    let site = format!("[{}]:{}", sink.addr.ip(), sink.addr.port());
    common::send_numbered(&server, "rcpt@far.example", "first", 1);
    wait_until("the site suspended", Duration::from_secs(30), || {
        spate(&server, &["queue", "suspensions"]).contains(&site)
    });
    let listed = spate(&server, &["queue", "suspensions"]);
    assert!(listed.contains("4.7.28"), "{listed}");
    // Mail for the site waits, and is not counted as tried.
    common::send_numbered(&server, "rcpt@far.example", "later", 10);
    std::thread::sleep(Duration::from_secs(3));
    assert!(sink.messages().is_empty(), "sent to a suspended site");
    let queued = server.queue_list();
    assert_eq!(queued.len(), 11);
    let untried = queued
        .iter()
        .filter(|m| m.raw["attempts"].as_u64() == Some(0))
        .count();
    assert_eq!(untried, 10, "held mail has no attempt: {queued:#?}");
    // A crash and a restart do not lift it: the receiver said stop.
    server.kill9();
    server.restart();
    let listed = spate(&server, &["queue", "suspensions"]);
    assert!(
        listed.contains(&site) && listed.contains("4.7.28"),
        "{listed}"
    );
    std::thread::sleep(Duration::from_secs(3));
    assert!(sink.messages().is_empty(), "sent after a restart: {listed}");
    assert_eq!(server.queue_list().len(), 11);
    // Resumed: the held mail goes at once; the tried one after a flush.
    let resumed = spate(&server, &["queue", "resume", &site]);
    assert!(resumed.contains("resumed"), "{resumed}");
    sink.wait_for(10, Duration::from_secs(30));
    spate(&server, &["queue", "flush"]);
    sink.wait_for(11, Duration::from_secs(30));
    assert!(spate(&server, &["queue", "suspensions"]).contains("no site is suspended"));
    assert!(server.stderr_text().contains("site suspended"));
}

#[test]
fn a_site_suspended_by_hand_gets_nothing_until_resumed() {
    let sink = Sink::start();
    let server = server_for(&sink);
    let site = format!("[{}]:{}", sink.addr.ip(), sink.addr.port());
    let said = spate(&server, &["queue", "suspend", &site, "--for", "2h"]);
    assert!(said.contains("suspended for 7200 s"), "{said}");
    common::send_numbered(&server, "rcpt@far.example", "held", 5);
    std::thread::sleep(Duration::from_secs(2));
    assert!(sink.messages().is_empty(), "sent to a suspended site");
    assert!(spate(&server, &["queue", "suspensions"]).contains("by hand"));
    spate(&server, &["queue", "resume", &site]);
    sink.wait_for(5, Duration::from_secs(30));
}

#[test]
fn a_throttle_halves_a_sites_rate_then_climbs_back_after_deliveries() {
    let sink = Sink::start_with(&[
        "--tempfail",
        "1",
        "--tempfail-text",
        "421 4.7.0 [GL01] Sending too fast, slow down",
    ]);
    let senders = Sink::start();
    let rules = "[default]\nconnections = 1\nmessage_rate = \"20/s\"\n\
                 [[backoff]]\nreply = \"GL01\"\nthrottle = 0.5\nrecover_after = 20\n";
    let (server, _rules) = ruled_server(&sink, &senders, rules);
    let site = format!("[{}]:{}", sink.addr.ip(), sink.addr.port());
    common::send_numbered(&server, "rcpt@far.example", "trigger", 1);
    wait_until("the site throttled", Duration::from_secs(30), || {
        server.stderr_text().contains("site throttled")
    });
    let listed = spate(&server, &["queue", "suspensions"]);
    assert!(
        listed.contains(&format!("{site} throttled to 0.500")),
        "{listed}"
    );
    common::send_numbered(&server, "rcpt@far.example", "paced", 60);
    let got = sink.wait_for(60, Duration::from_secs(60));
    // At 10/s (10 at once, then 10 a second) until 20 deliveries, then
    // 20/s again: about 3 s for 60. Never throttled: about 2 s; never
    // eased: about 5 s.
    let took = span(&got);
    eprintln!("60 messages over {took:.2} s");
    assert!(
        took >= 2.4,
        "the throttle did not slow the site: {took:.2} s"
    );
    assert!(took <= 4.4, "the throttle did not ease: {took:.2} s");
    let log = server.stderr_text();
    assert!(log.contains("site throttle lifted"), "{log}");
    assert!(spate(&server, &["queue", "suspensions"]).contains("no site is suspended"));
}

#[test]
fn a_bounce_rule_returns_the_sites_queued_mail_and_what_comes_after() {
    let sink = Sink::start_with(&[
        "--tempfail",
        "1",
        "--tempfail-text",
        "550 5.7.606 Access denied, banned sending IP [127.0.0.1]",
    ]);
    let senders = Sink::start();
    let rules = "[default]\nconnections = 1\n\
                 [[backoff]]\nenhanced = \"5.7.606\"\nbounce = \"10m\"\n";
    let (server, _rules) = ruled_server(&sink, &senders, rules);
    common::send_numbered(&server, "rcpt@far.example", "blocked", 10);
    // The refused one and the nine behind it each return to the sender.
    let dsns = senders.wait_for(10, Duration::from_secs(60));
    assert!(dsns
        .iter()
        .all(|d| d["data"].as_str().unwrap().contains("5.7.606")));
    assert!(sink.messages().is_empty());
    let connections = sink.connections().len();
    // Mail that comes later bounces without a connection to the site.
    common::send_numbered(&server, "rcpt@far.example", "later", 3);
    senders.wait_for(13, Duration::from_secs(30));
    assert_eq!(
        sink.connections().len(),
        connections,
        "the site was contacted"
    );
    wait_until("an empty queue", Duration::from_secs(30), || {
        server.queue_list().is_empty()
    });
    let listed = spate(&server, &["queue", "suspensions"]);
    assert!(listed.contains("bouncing for"), "{listed}");
    assert!(server.stderr_text().contains("site bounced"));
}

#[test]
fn a_fail_rule_makes_a_temporary_refusal_permanent() {
    let sink = Sink::start_with(&[
        "--tempfail",
        "1",
        "--tempfail-text",
        "450 4.1.1 <rcpt@far.example>: Recipient address rejected: no such user",
    ]);
    let senders = Sink::start();
    let rules = "[[backoff]]\ncode = 4\nreply = \"(?i)no such user\"\nfail = true\n";
    let (server, _rules) = ruled_server(&sink, &senders, rules);
    common::send_numbered(&server, "rcpt@far.example", "unknown", 1);
    // Bounced at once instead of deferred for an hour.
    let dsn = senders.wait_for(1, Duration::from_secs(30));
    let text = dsn[0]["data"].as_str().unwrap();
    assert!(text.contains("Status: 5.1.1"), "{text}");
    assert!(text.contains("450 4.1.1"), "{text}");
    wait_until("an empty queue", Duration::from_secs(30), || {
        server.queue_list().is_empty()
    });
}
