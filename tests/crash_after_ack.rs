//! Crash safety after acknowledgement: a few hundred messages over several
//! concurrent connections, `kill -9` right after the last 250, restart on
//! the same spool: every acknowledged queue id is listed exactly once, with
//! its envelope and a plausible size, and nothing else is listed. Recovery
//! is repeated to show it is stable, and the server keeps accepting mail
//! with fresh ids afterwards.
//!
//! (kill -9 leaves the page cache intact, so this proves recovery, not
//! fdatasync; the spool's own tests inject failing syncs for that.)

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Barrier};

use common::{Client, Queued, TestServer, Tweaks, MAX_TRACE_HEADER};

#[derive(Debug, Clone)]
struct Sent {
    from: String,
    to: Vec<String>,
    size: usize,
}

const CONNECTIONS: usize = 4;
const PER_CONNECTION: usize = 75;

fn send_batch(
    addr: std::net::SocketAddr,
    conn: usize,
    n: usize,
    barrier: Arc<Barrier>,
) -> Vec<(String, Sent)> {
    let mut c = Client::connect(addr);
    assert_eq!(c.read_reply().code, 220);
    c.ehlo("crash.test");
    barrier.wait();
    let mut acked = Vec::with_capacity(n);
    for i in 0..n {
        let from = format!("c{conn}-m{i}@example.test");
        let to: Vec<String> = (0..1 + i % 3)
            .map(|k| format!("r{k}-c{conn}-m{i}@example.test"))
            .collect();
        let to_refs: Vec<&str> = to.iter().map(String::as_str).collect();
        // Sizes from a few hundred bytes to ~40 KiB.
        let body_len = 200 + (i * 7919 + conn * 104_729) % 40_000;
        let msg = common::message(&format!("crash-c{conn}-m{i}"), body_len);
        let id = c
            .send_message(&from, &to_refs, &msg)
            .unwrap_or_else(|r| panic!("message {conn}/{i} refused: {r:?}\n{}", c.transcript));
        acked.push((
            id,
            Sent {
                from,
                to,
                size: msg.len(),
            },
        ));
    }
    acked
}

fn check(queue: &[Queued], acked: &HashMap<String, Sent>, when: &str) {
    let mut seen = HashSet::new();
    let mut problems = Vec::new();
    for q in queue {
        if !seen.insert(q.id.clone()) {
            problems.push(format!("{when}: id {} listed twice", q.id));
        }
        match acked.get(&q.id) {
            None => problems.push(format!("{when}: unknown message in the queue: {q:?}")),
            Some(s) => {
                if q.from != s.from || q.to != s.to {
                    problems.push(format!(
                        "{when}: envelope of {} is {:?} -> {:?}, sent {:?} -> {:?}",
                        q.id, q.from, q.to, s.from, s.to
                    ));
                }
                let sent = s.size as u64;
                if q.size < sent || q.size > sent + MAX_TRACE_HEADER {
                    problems.push(format!(
                        "{when}: size of {} is {}, sent {sent} bytes",
                        q.id, q.size
                    ));
                }
            }
        }
    }
    for id in acked.keys() {
        if !seen.contains(id) {
            problems.push(format!("{when}: acknowledged message {id} is missing"));
        }
    }
    assert_eq!(
        queue.len(),
        acked.len(),
        "{when}: count differs; problems: {problems:#?}"
    );
    assert!(
        problems.is_empty(),
        "{} problems:\n{}",
        problems.len(),
        problems.join("\n")
    );
}

#[test]
fn every_acknowledged_message_survives_kill9() {
    let mut server = TestServer::start(Tweaks::default().smtp("max_connections_per_ip", 100));
    let barrier = Arc::new(Barrier::new(CONNECTIONS));
    let handles: Vec<_> = (0..CONNECTIONS)
        .map(|conn| {
            let addr = server.smtp;
            let b = Arc::clone(&barrier);
            std::thread::spawn(move || send_batch(addr, conn, PER_CONNECTION, b))
        })
        .collect();
    let mut acked = HashMap::new();
    for h in handles {
        for (id, sent) in h.join().expect("sender thread") {
            assert!(
                common::is_queue_id(&id),
                "queue id {id:?} is not 16 hex digits"
            );
            assert!(
                acked.insert(id.clone(), sent).is_none(),
                "queue id {id} given twice"
            );
        }
    }
    // Right after the last 250.
    server.kill9();
    assert_eq!(acked.len(), CONNECTIONS * PER_CONNECTION);

    // Listing works with the server down.
    check(&server.queue_list(), &acked, "after kill -9, server down");

    server.restart();
    check(&server.queue_list(), &acked, "after restart");

    // Recovery again, from a spool that has already been recovered once.
    server.kill9();
    server.restart();
    check(
        &server.queue_list(),
        &acked,
        "after a second kill -9 and restart",
    );

    // New mail after recovery gets a fresh id and joins the others.
    let mut c = server.session();
    let msg = common::message("after-recovery", 1000);
    let id = c
        .send_message("new@example.test", &["rcpt@example.test"], &msg)
        .expect("accepted after recovery");
    c.quit();
    assert!(
        !acked.contains_key(&id),
        "queue id {id} reused after recovery"
    );
    acked.insert(
        id,
        Sent {
            from: "new@example.test".into(),
            to: vec!["rcpt@example.test".into()],
            size: msg.len(),
        },
    );
    let down = server.terminate();
    assert!(down.status.success(), "exit status {:?}", down.status);
    check(&server.queue_list(), &acked, "after graceful stop");
}

/// A single connection, one message at a time, killed straight after the
/// 250 of the very first message: the smallest case must also hold.
#[test]
fn single_message_survives_kill9() {
    let mut server = TestServer::start(Tweaks::default().cores(1));
    let mut c = server.session();
    let msg = common::message("only-one", 100);
    let id = c
        .send_message("one@example.test", &["rcpt@example.test"], &msg)
        .expect("accepted");
    server.kill9();
    server.restart();
    let q = server.queue_list();
    assert_eq!(q.len(), 1, "{q:?}");
    assert_eq!(q[0].id, id);
    assert_eq!(q[0].from, "one@example.test");
}
