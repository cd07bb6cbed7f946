//! A limit of spate's own holds messages back; it never defers them. With
//! a destination's ready queue capped at 5 messages, a slow receiver and
//! an hour of backoff, 200 messages sent at once all arrive within
//! seconds: none is counted as an attempt, none waits for a backoff, and
//! no `451 4.4.5 too many messages waiting` appears (before, everything
//! past the cap was deferred by the full backoff, as issue 13 saw with
//! 80,000 of 100,000 messages after a `spate queue flush`).

#[path = "common/capture.rs"]
mod capture;
mod common;

use std::time::Duration;

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
        .filter(|l| l.contains("held: the destination's ready queue is full"))
        .count();
    eprintln!("{MESSAGES} messages, {held} holds by the cap of 5");
    assert!(
        held > 0,
        "the cap was never reached: the test proves nothing"
    );
}
