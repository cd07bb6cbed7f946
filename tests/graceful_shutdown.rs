//! Graceful shutdown on SIGTERM/SIGINT: idle sessions get `421 4.3.2` and
//! are closed, an open transaction may finish within `shutdown_grace` (and
//! is dropped, never half-kept, when it does not), the server exits 0 and
//! prints `stats {json}` with the message count and ack latencies.

mod common;

use std::time::{Duration, Instant};

use common::{TestServer, Tweaks};

fn check_stats(stats: &serde_json::Value, messages: u64) {
    assert_eq!(stats["messages"].as_u64(), Some(messages), "stats: {stats}");
    let lat = &stats["ack_latency_us"];
    let get = |k: &str| {
        lat[k]
            .as_f64()
            .unwrap_or_else(|| panic!("ack_latency_us.{k} missing in {stats}"))
    };
    let (p50, p99, p999, max) = (get("p50"), get("p99"), get("p999"), get("max"));
    assert!(
        p50 <= p99 && p99 <= p999 && p999 <= max,
        "latencies out of order: {lat}"
    );
    if messages > 0 {
        assert!(max > 0.0, "a durable ack cannot take 0 us: {lat}");
        assert!(max < 10_000_000.0, "an ack took over 10 s: {lat}");
    }
}

#[test]
fn sigterm_sends_421_to_idle_sessions_and_prints_stats() {
    let mut server = TestServer::start(Tweaks::default());
    let mut busy = server.session();
    for i in 0..3 {
        busy.send_message(
            "s@example.test",
            &["r@example.test"],
            &common::message(&format!("m{i}"), 800),
        )
        .expect("accepted");
    }
    // Idle before EHLO, idle after EHLO, idle after a finished transaction.
    let mut greeted = server.connect();
    assert_eq!(greeted.read_reply().code, 220);
    let mut idle = server.session();
    server.signal(libc::SIGTERM);
    for c in [&mut greeted, &mut idle, &mut busy] {
        let (replies, closed) = c.read_until_close(Duration::from_secs(15));
        assert_eq!(
            replies.iter().map(|r| r.status()).collect::<Vec<_>>(),
            vec!["421 4.3.2".to_owned()],
            "transcript:\n{}",
            c.transcript
        );
        assert!(closed, "not closed after 421:\n{}", c.transcript);
    }
    let down = server.wait_exit(Duration::from_secs(20));
    assert!(
        down.status.success(),
        "exit status {:?}, stdout {:?}",
        down.status,
        down.stdout
    );
    let stats = down
        .stats
        .unwrap_or_else(|| panic!("no stats line in {:?}", down.stdout));
    check_stats(&stats, 3);
    // Nothing is lost by stopping.
    assert_eq!(server.queue_list().len(), 3);
    // And it starts again on the same spool.
    server.restart();
    assert_eq!(server.queue_list().len(), 3);
    let down = server.terminate();
    assert!(down.status.success());
    check_stats(&down.stats.expect("stats line"), 0);
}

#[test]
fn open_transaction_finishes_within_the_grace_period() {
    let mut server = TestServer::start(Tweaks::default().shutdown_grace("10s"));
    let mut c = server.session();
    assert_eq!(c.cmd("MAIL FROM:<late@example.test>").code, 250);
    assert_eq!(c.cmd("RCPT TO:<rcpt@example.test>").code, 250);
    assert_eq!(c.cmd("DATA").code, 354);
    let msg = common::dot_stuff(&common::message("late", 100_000));
    c.send(&msg[..msg.len() / 2]);
    let t0 = Instant::now();
    server.signal(libc::SIGTERM);
    std::thread::sleep(Duration::from_millis(500));
    c.send(&msg[msg.len() / 2..]);
    let (replies, closed) = c.read_until_close(Duration::from_secs(15));
    assert!(closed, "{}", c.transcript);
    assert_eq!(replies.len(), 2, "expected 250 then 421:\n{}", c.transcript);
    let id = replies[0]
        .queue_id()
        .unwrap_or_else(|| panic!("transaction not finished:\n{}", c.transcript));
    assert_eq!(replies[1].status(), "421 4.3.2", "{}", c.transcript);
    let down = server.wait_exit(Duration::from_secs(20));
    assert!(down.status.success(), "{:?}", down.status);
    assert!(
        t0.elapsed() < Duration::from_secs(12),
        "shutdown took {:?}",
        t0.elapsed()
    );
    check_stats(&down.stats.expect("stats line"), 1);
    let q = server.queue_list();
    assert_eq!(q.len(), 1);
    assert_eq!(q[0].id, id);
}

#[test]
fn transaction_outliving_the_grace_period_is_dropped() {
    let mut server = TestServer::start(Tweaks::default().shutdown_grace("1s"));
    let mut kept = server.session();
    let id = kept
        .send_message(
            "kept@example.test",
            &["rcpt@example.test"],
            &common::message("kept", 500),
        )
        .expect("accepted");
    let mut c = server.session();
    assert_eq!(c.cmd("MAIL FROM:<stalled@example.test>").code, 250);
    assert_eq!(c.cmd("RCPT TO:<rcpt@example.test>").code, 250);
    assert_eq!(c.cmd("DATA").code, 354);
    c.send(b"Subject: stalled\r\n\r\nnever finished\r\n");
    let t0 = Instant::now();
    server.signal(libc::SIGTERM);
    let (replies, closed) = c.read_until_close(Duration::from_secs(15));
    assert!(closed, "stalled session not closed:\n{}", c.transcript);
    for r in &replies {
        assert_eq!(r.code, 421, "{}", c.transcript);
    }
    let down = server.wait_exit(Duration::from_secs(20));
    assert!(down.status.success(), "{:?}", down.status);
    assert!(
        t0.elapsed() < Duration::from_secs(8),
        "grace of 1s, shutdown took {:?}",
        t0.elapsed()
    );
    let q = server.queue_list();
    assert_eq!(q.len(), 1, "{q:?}");
    assert_eq!(q[0].id, id);
}

#[test]
fn sigint_is_graceful_too() {
    let mut server = TestServer::start(Tweaks::default());
    let mut c = server.session();
    c.send_message(
        "i@example.test",
        &["r@example.test"],
        &common::message("int", 100),
    )
    .expect("accepted");
    let down = server.stop_with(libc::SIGINT);
    assert!(down.status.success(), "{:?}", down.status);
    check_stats(&down.stats.expect("stats line"), 1);
    let (replies, closed) = c.read_until_close(Duration::from_secs(5));
    assert!(closed);
    assert!(
        replies.iter().all(|r| r.status() == "421 4.3.2"),
        "{}",
        c.transcript
    );
}

#[test]
fn listener_is_closed_after_shutdown() {
    let mut server = TestServer::start(Tweaks::default());
    let addr = server.smtp;
    let down = server.terminate();
    assert!(down.status.success());
    assert!(
        std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_err(),
        "still accepting on {addr} after exit"
    );
}

/// SIGTERM while several clients are sending: every acknowledged message is
/// kept exactly once, and nothing the clients did not complete appears.
#[test]
fn sigterm_under_load_keeps_every_acknowledged_message() {
    use std::collections::{HashMap, HashSet};
    use std::sync::{Arc, Mutex};
    let mut server = TestServer::start(Tweaks::default().shutdown_grace("5s"));
    let addr = server.smtp;
    let acked: Arc<Mutex<HashMap<String, String>>> = Arc::default();
    let started: Arc<Mutex<HashSet<String>>> = Arc::default();
    let handles: Vec<_> = (0..4)
        .map(|t| {
            let acked = Arc::clone(&acked);
            let started = Arc::clone(&started);
            std::thread::spawn(move || {
                let Ok(mut c) = common::Client::try_connect(addr) else { return };
                if !matches!(c.read_reply_within(Duration::from_secs(10)), Ok(Some(r)) if r.code == 220) {
                    return;
                }
                let _ = c.try_send(b"EHLO load.test\r\n");
                let _ = c.read_reply_within(Duration::from_secs(10));
                for i in 0..10_000 {
                    let from = format!("t{t}-m{i}@example.test");
                    started.lock().unwrap().insert(from.clone());
                    let msg = common::message(&from, 2000);
                    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        c.send_message(&from, &["rcpt@example.test"], &msg)
                    })) {
                        Ok(Ok(id)) => {
                            acked.lock().unwrap().insert(id, from);
                        }
                        _ => return,
                    }
                }
            })
        })
        .collect();
    let t0 = Instant::now();
    while acked.lock().unwrap().len() < 100 && t0.elapsed() < Duration::from_secs(15) {
        std::thread::sleep(Duration::from_millis(10));
    }
    server.signal(libc::SIGTERM);
    for h in handles {
        let _ = h.join();
    }
    let down = server.wait_exit(Duration::from_secs(20));
    assert!(down.status.success(), "{:?}", down.status);
    let acked = acked.lock().unwrap().clone();
    let started = started.lock().unwrap().clone();
    let stats = down.stats.expect("stats line");
    let q = server.queue_list();
    let ids: HashSet<_> = q.iter().map(|m| m.id.clone()).collect();
    assert_eq!(ids.len(), q.len(), "duplicate ids");
    for (id, from) in &acked {
        assert!(
            ids.contains(id),
            "acknowledged {id} ({from}) lost by a graceful stop"
        );
    }
    for m in &q {
        assert!(started.contains(&m.from), "unexpected message {m:?}");
    }
    // A graceful stop lets every transaction that finished get its 250:
    // only a reply lost in the socket can make the stats count differ.
    assert!(
        q.len() <= acked.len() + 4,
        "{} listed, {} acknowledged",
        q.len(),
        acked.len()
    );
    assert_eq!(
        stats["messages"].as_u64(),
        Some(q.len() as u64),
        "stats {stats}"
    );
}
