//! Traffic shaping over real sockets, judged from the receiver's own
//! timestamps and connection counts: a site's message rate spaces the
//! deliveries out, its connection limit and deliveries per connection hold,
//! a provider rule matched by the next hop's name applies, and a SIGHUP
//! brings new rules in for sites that become active afterwards. Nothing is
//! deferred by any of it.

#[path = "common/capture.rs"]
mod capture;
mod common;

use std::path::Path;
use std::time::Duration;

use capture::{wait_until, Sink};
use common::{TestServer, Tweaks};

fn shaped_server(sink: &Sink, rules: &Path) -> TestServer {
    TestServer::start(
        Tweaks::default()
            .cores(1)
            .extra(&sink.route("far.example"))
            .extra(&format!(
                "[delivery]\nshaping_file = {:?}\nminimal_backoff = \"1h\"\nmaximal_backoff = \"2h\"\n",
                rules.display()
            )),
    )
}

/// Seconds between the first and the last arrival.
fn span(messages: &[serde_json::Value]) -> f64 {
    let times: Vec<f64> = messages.iter().filter_map(|m| m["at"].as_f64()).collect();
    let first = times.iter().copied().fold(f64::INFINITY, f64::min);
    let last = times.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    last - first
}

#[test]
fn a_message_rate_spaces_deliveries_out() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("shaping.toml");
    // The sink's address is the route's host: a provider matches it.
    let sink = Sink::start();
    std::fs::write(
        &rules,
        format!(
            "[provider.lab]\nmx_suffix = [\"{}\"]\nmessage_rate = \"10/s\"\n",
            sink.addr.ip()
        ),
    )
    .unwrap();
    let server = shaped_server(&sink, &rules);
    common::send_numbered(&server, "rcpt@far.example", "rated", 40);
    let got = sink.wait_for(40, Duration::from_secs(60));
    // 10 at once (a full bucket), then 10 a second: about 3 s for 40.
    let took = span(&got);
    eprintln!("40 messages at 10/s arrived over {took:.2} s");
    assert!(took >= 2.5, "the rate did not hold: {took:.2} s");
    assert!(took < 20.0, "far slower than the rate: {took:.2} s");
    wait_until("an empty queue", Duration::from_secs(30), || {
        server.queue_list().is_empty()
    });
    assert!(!server.stderr_text().contains("deferred"));
}

#[test]
fn connections_and_deliveries_per_connection_hold() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("shaping.toml");
    std::fs::write(
        &rules,
        "[default]\nconnections = 1\ndeliveries_per_connection = 5\n",
    )
    .unwrap();
    let sink = Sink::start_with(&["--delay-ms", "20"]);
    let server = shaped_server(&sink, &rules);
    common::send_numbered(&server, "rcpt@far.example", "conn", 30);
    sink.wait_for(30, Duration::from_secs(60));
    let connections = sink.connections();
    let most_open = connections
        .iter()
        .filter_map(|c| c["open"].as_u64())
        .max()
        .unwrap_or(0);
    eprintln!(
        "{} connections, at most {most_open} open",
        connections.len()
    );
    assert_eq!(most_open, 1, "one connection at a time");
    assert!(
        connections.len() >= 6,
        "5 deliveries per connection for 30 messages: {} connections",
        connections.len()
    );
    drop(server);
}

#[test]
fn a_reload_brings_new_rules_for_sites_that_become_active() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("shaping.toml");
    std::fs::write(&rules, "[default]\nidle = \"100ms\"\n").unwrap();
    let sink = Sink::start();
    let server = shaped_server(&sink, &rules);
    common::send_numbered(&server, "rcpt@far.example", "before", 20);
    let got = sink.wait_for(20, Duration::from_secs(60));
    let before = span(&got);
    assert!(before < 2.0, "no rate yet: {before:.2} s");
    // A slow rate from now on; the site went idle, so it takes it.
    std::fs::write(
        &rules,
        "[default]\nidle = \"100ms\"\nmessage_rate = \"5/s\"\n",
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    server.signal(libc::SIGHUP);
    server.wait_stdout_line("reloaded", Duration::from_secs(20));
    common::send_numbered(&server, "rcpt@far.example", "after", 15);
    let got = sink.wait_for(35, Duration::from_secs(60));
    let after: Vec<serde_json::Value> = got
        .into_iter()
        .filter(|m| m["data"].as_str().is_some_and(|d| d.contains("after-")))
        .collect();
    let took = span(&after);
    eprintln!("15 messages after the reload at 5/s: {took:.2} s");
    assert!(took >= 1.5, "the new rate did not apply: {took:.2} s");
}
