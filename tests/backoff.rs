//! Back-off on what receivers say, over real sockets: a reply that a
//! shipped back-off rule knows (Gmail's `4.7.28`) suspends the site, its
//! other mail waits in the queue without an attempt counted, `spate queue
//! suspensions` lists it, and `spate queue resume` lets the mail go at
//! once; `spate queue suspend` does the same by hand.

#[path = "common/capture.rs"]
mod capture;
mod common;

use std::time::Duration;

use capture::{wait_until, Sink};
use common::{TestServer, Tweaks};

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
    let server = server_for(&sink);
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
