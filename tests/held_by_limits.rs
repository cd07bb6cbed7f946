//! A limit of spate's own holds messages back; it never defers them. With
//! a destination's ready queue capped at 5 messages, a slow receiver and
//! an hour of backoff, 200 messages sent at once all arrive within
//! seconds: none is counted as an attempt, none waits for a backoff, and
//! no `451 4.4.5 too many messages waiting` appears (before, everything
//! past the cap was deferred by the full backoff, as issue 13 saw with
//! 80,000 of 100,000 messages after a `spate queue flush`).
//!
//! And across that boundary at scale (issue 13 section 2): thousands of
//! messages for a suspended site, pushed by concurrent sessions past a
//! ready queue capped at 50, wait held (no attempt, no deferral) while
//! mail for another site is delivered within seconds; resumed, every one
//! of them is delivered, once.

#[path = "common/capture.rs"]
mod capture;
mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use capture::{wait_until, Sink};
use common::{TestServer, Tweaks};

const MESSAGES: usize = 200;
const SESSIONS: usize = 4;

#[test]
fn messages_over_a_destination_cap_are_held_not_deferred() {
    let sink = Sink::start_with(&["--delay-ms", "10"]);
    let server = TestServer::start(Tweaks::default().extra(&sink.route("far.example")).extra(
        "[delivery]\nmax_queued_per_destination = 5\nmax_connections_per_destination = 2\n\
                 minimal_backoff = \"1h\"\nmaximal_backoff = \"2h\"\n\
                 [log]\nlevel = \"debug\"\n",
    ));
    let senders: Vec<_> = (0..SESSIONS)
        .map(|s| {
            let mut c = server.session();
            std::thread::spawn(move || {
                for n in 0..MESSAGES / SESSIONS {
                    let marker = format!("held-{s}-{n}");
                    c.send_message(
                        "sender@client.test",
                        &["rcpt@far.example"],
                        &common::message(&marker, 300),
                    )
                    .unwrap_or_else(|r| panic!("refused: {r:?}"));
                }
                c.quit();
            })
        })
        .collect();
    for s in senders {
        s.join().expect("sender");
    }
    // Each message needs one attempt and waits for no backoff: a backoff
    // of an hour would stop this far short of 200.
    wait_until("every message delivered", Duration::from_secs(90), || {
        sink.messages()
            .iter()
            .filter(|m| m.get("data").is_some())
            .count()
            >= MESSAGES
    });
    wait_until("an empty queue", Duration::from_secs(30), || {
        server.queue_list().is_empty()
    });
    let log = server.stderr_text();
    assert!(
        !log.contains("4.4.5"),
        "a message was deferred by our own cap"
    );
    assert!(!log.contains("deferred"), "a message was deferred");
    let held = log
        .lines()
        .filter(|l| l.contains("held: the destination has no room now"))
        .count();
    eprintln!("{MESSAGES} messages, {held} holds by the cap of 5");
    assert!(
        held > 0,
        "the cap was never reached: the test proves nothing"
    );
}

/// Messages for the suspended site, and the sessions sending them.
const HELD: usize = 3000;
const HELD_SESSIONS: usize = 8;
/// How long a message for the other site may take to arrive.
const LIVE_LIMIT: Duration = Duration::from_secs(5);

fn spate(server: &TestServer, args: &[&str]) -> String {
    String::from_utf8_lossy(&server.spate_command(args).stdout).into_owned()
}

/// The `Subject:` of a message the sink captured: the marker it was sent
/// with.
fn marker(message: &serde_json::Value) -> String {
    let data = message["data"].as_str().unwrap_or_default();
    data.lines()
        .find_map(|l| l.strip_prefix("Subject: "))
        .unwrap_or_default()
        .trim()
        .to_owned()
}

#[test]
fn thousands_held_for_a_suspended_site_wait_uncounted_while_another_site_is_served() {
    let held_sink = Sink::start();
    let live_sink = Sink::start();
    let server = TestServer::start(
        Tweaks::default()
            .extra(&held_sink.route("held.example"))
            .extra(&live_sink.route("live.example"))
            .extra(
                "[delivery]\nmax_queued_per_destination = 50\n\
                 minimal_backoff = \"1h\"\nmaximal_backoff = \"2h\"\n\
                 [log]\nlevel = \"debug\"\n",
            ),
    );
    let site = format!("[{}]:{}", held_sink.addr.ip(), held_sink.addr.port());
    let said = spate(&server, &["queue", "suspend", &site, "--for", "1h"]);
    assert!(said.contains("suspended"), "{said}");

    let senders: Vec<_> = (0..HELD_SESSIONS)
        .map(|s| {
            let mut c = server.session();
            std::thread::spawn(move || {
                for n in 0..HELD / HELD_SESSIONS {
                    c.send_message(
                        "sender@client.test",
                        &["rcpt@held.example"],
                        &common::message(&format!("held-{s}-{n}"), 200),
                    )
                    .unwrap_or_else(|r| panic!("refused: {r:?}"));
                }
                c.quit();
            })
        })
        .collect();
    // Meanwhile, and a little after, one message at a time for the other
    // site: each must arrive within LIVE_LIMIT.
    let mut live = server.session();
    let mut slowest = Duration::ZERO;
    let mut sent_live = 0;
    let mut during_bulk = 0;
    while sent_live < 10 || senders.iter().any(|s| !s.is_finished()) {
        let bulk_running = senders.iter().any(|s| !s.is_finished());
        let began = Instant::now();
        live.send_message(
            "sender@client.test",
            &["rcpt@live.example"],
            &common::message(&format!("live-{sent_live}"), 200),
        )
        .unwrap_or_else(|r| panic!("refused: {r:?}"));
        sent_live += 1;
        live_sink.wait_for(sent_live, LIVE_LIMIT);
        slowest = slowest.max(began.elapsed());
        during_bulk += usize::from(bulk_running);
        std::thread::sleep(Duration::from_millis(100));
    }
    live.quit();
    for s in senders {
        s.join().expect("sender");
    }
    eprintln!(
        "{sent_live} messages to the other site ({during_bulk} while the bulk was sent), \
         slowest {slowest:?}"
    );
    assert!(during_bulk > 0, "the bulk was over before any live message");

    // Every message for the suspended site waits: held past the cap,
    // never tried, never deferred.
    wait_until("all held messages queued", Duration::from_secs(30), || {
        server.queue_list().len() == HELD
    });
    let queued = server.queue_list();
    assert!(
        queued.iter().all(|m| m.raw["attempts"].as_u64() == Some(0)),
        "a held message has an attempt"
    );
    assert!(held_sink.messages().is_empty(), "sent to a suspended site");
    let log = server.stderr_text();
    let holds = log
        .lines()
        .filter(|l| l.contains("held: the destination has no room now"))
        .count();
    // At most 50 per core wait in the ready queues; the rest are held.
    assert!(
        holds >= HELD - 2 * 50,
        "{holds} holds of {HELD} messages past a cap of 50 per core"
    );

    // Resumed: every held message is delivered, once.
    let resumed = spate(&server, &["queue", "resume", &site]);
    assert!(resumed.contains("resumed"), "{resumed}");
    let delivered = held_sink.wait_for(HELD, Duration::from_secs(120));
    let mut seen: HashMap<String, usize> = HashMap::new();
    for m in &delivered {
        *seen.entry(marker(m)).or_default() += 1;
    }
    let twice: Vec<_> = seen.iter().filter(|(_, &n)| n > 1).collect();
    assert!(twice.is_empty(), "delivered more than once: {twice:?}");
    for s in 0..HELD_SESSIONS {
        for n in 0..HELD / HELD_SESSIONS {
            assert!(
                seen.contains_key(&format!("held-{s}-{n}")),
                "held-{s}-{n} never delivered"
            );
        }
    }
    wait_until("an empty queue", Duration::from_secs(30), || {
        server.queue_list().is_empty()
    });
    let log = server.stderr_text();
    assert!(!log.contains("deferred"), "a message was deferred");
    assert!(
        !log.contains("4.4.5"),
        "a message was refused by our own cap"
    );
}
