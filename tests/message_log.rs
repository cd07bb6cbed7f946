//! Message-life log lines with `[log] format = "json"`: every line spate
//! writes parses as JSON, and a received + delivered message and a
//! received + bounced one (refused by the next hop) each leave their
//! lines with the queue id, sender, recipient, next hop, reply and
//! attempts.

#[path = "common/capture.rs"]
mod capture;
mod common;

use std::time::{Duration, Instant};

use common::{TestServer, Tweaks};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(30);

/// Every stderr line so far, parsed; panics on a line that is not JSON.
fn log_lines(server: &TestServer) -> Vec<Value> {
    server
        .stderr_text()
        .lines()
        .filter(|l| !l.starts_with("----- start #"))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l:?}")))
        .collect()
}

/// The lines whose message is `event` about queue id `id`.
fn events(lines: &[Value], event: &str, id: &str) -> Vec<Value> {
    lines
        .iter()
        .filter(|l| l["message"] == event && l["id"] == id)
        .cloned()
        .collect()
}

/// Waits until `event` has been logged for `id`; returns its lines.
fn wait_for_event(server: &TestServer, event: &str, id: &str) -> Vec<Value> {
    let deadline = Instant::now() + WAIT;
    loop {
        let found = events(&log_lines(server), event, id);
        if !found.is_empty() {
            return found;
        }
        assert!(
            Instant::now() < deadline,
            "no {event:?} line for {id}:\n{}",
            server.stderr_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn json_lines_follow_a_delivered_and_a_bounced_message() {
    let far = capture::Sink::start_with(&["--reject", "gone@far.example"]);
    let mut server = TestServer::start(
        Tweaks::default()
            .cores(2)
            .user("alice", "pw")
            .user("bob", "pw")
            .extra(&far.route("far.example"))
            .extra("[log]\nformat = \"json\"\n"),
    );

    // Delivered: a small message from bob to alice.
    let mut c = server.session();
    let delivered_id = c
        .send_message(
            "bob@example.test",
            &["alice@example.test"],
            &common::message("fits", 1000),
        )
        .unwrap_or_else(|r| panic!("refused: {r:?}"));
    c.quit();

    // Bounced: the next hop refuses the recipient; the DSN (headers
    // only) goes back to bob.
    let mut c = server.session();
    assert_eq!(c.cmd("MAIL FROM:<bob@example.test> RET=HDRS").code, 250);
    assert_eq!(c.cmd("RCPT TO:<gone@far.example>").code, 250);
    assert_eq!(c.cmd("DATA").code, 354);
    c.send(&common::dot_stuff(&common::message("too-big", 20 * 1024)));
    let bounced_id = c.read_reply().queue_id().expect("queued");
    c.quit();

    let received = wait_for_event(&server, "received", &delivered_id);
    assert_eq!(received.len(), 1, "{received:#?}");
    let r = &received[0];
    assert_eq!(r["level"], "INFO");
    assert_eq!(r["from"], "bob@example.test");
    assert_eq!(r["to"], "alice@example.test");
    let client: std::net::IpAddr = r["client"].as_str().unwrap().parse().unwrap();
    assert!(client.is_loopback(), "{r}");
    assert!(r["size"].as_u64().unwrap() > 1000, "{r}");
    assert!(r.get("timestamp").is_some(), "{r}");

    let delivered = wait_for_event(&server, "delivered", &delivered_id);
    assert_eq!(delivered.len(), 1, "one line per recipient: {delivered:#?}");
    let d = &delivered[0];
    assert_eq!(d["from"], "bob@example.test");
    assert_eq!(d["to"], "alice@example.test");
    assert_eq!(d["relay"], "local");
    assert!(d["reply"].as_str().unwrap().starts_with("250 "), "{d}");
    assert_eq!(d["attempts"], 1);

    let received = wait_for_event(&server, "received", &bounced_id);
    assert!(received[0]["size"].as_u64().unwrap() > 20 * 1024);
    let bounced = wait_for_event(&server, "bounced", &bounced_id);
    assert_eq!(bounced.len(), 1, "{bounced:#?}");
    let b = &bounced[0];
    assert_eq!(b["from"], "bob@example.test");
    assert_eq!(b["to"], "gone@far.example");
    assert!(
        b["relay"]
            .as_str()
            .unwrap()
            .contains(&far.addr.ip().to_string()),
        "{b}"
    );
    assert!(b["reply"].as_str().unwrap().contains("5.1.1"), "{b}");
    assert_eq!(b["attempts"], 1);
    // Nothing else happened to either message.
    let lines = log_lines(&server);
    for (id, not) in [
        (&delivered_id, ["bounced", "deferred", "expired"]),
        (&bounced_id, ["delivered", "deferred", "expired"]),
    ] {
        for event in not {
            assert!(events(&lines, event, id).is_empty(), "{event} for {id}");
        }
    }

    // The DSN to bob is a message of its own, queued by spate itself (no
    // `received` line), from the null sender.
    let dsn = &wait_for_event(&server, "dsn queued", &bounced_id)[0];
    let dsn_id = dsn["bounce"].as_str().unwrap().to_owned();
    let dsn_delivered = wait_for_event(&server, "delivered", &dsn_id);
    assert_eq!(dsn_delivered[0]["from"], "");
    assert_eq!(dsn_delivered[0]["to"], "bob@example.test");

    let stopped = server.terminate();
    assert!(stopped.status.success());
    // Every line, to the last, is JSON.
    let all = log_lines(&server);
    assert!(all.len() >= 6, "{all:#?}");
}
