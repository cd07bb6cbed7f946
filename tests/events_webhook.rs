//! Message-life events posted to webhooks (`[[events.webhook]]`), over
//! real sockets: a small HTTP receiver in this file records each POSTed
//! batch and can answer 500, stall (accept, never answer), be stopped
//! and come back on the same port. Every kind of event arrives with its
//! fields; events made while the endpoint is down arrive once it is back,
//! in order per message; a `kill -9` and a restart while it is down lose
//! nothing that was in the log; a stalled endpoint does not slow mail;
//! a full event log drops new events (counted) and mail flows on.
//! The guarantee tested is the documented one: at least once, in `seq`
//! order; receivers de-duplicate by `seq`.

#[path = "common/capture.rs"]
mod capture;
mod common;

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use capture::{wait_until, Sink};
use common::{TestServer, Tweaks};
use serde_json::Value;

/// How the receiver answers a POST.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Mode {
    /// 200, and the batch is recorded.
    Accept = 0,
    /// 500, nothing recorded.
    Fail = 1,
    /// Reads the request and never answers.
    Stall = 2,
}

/// What every incarnation of a receiver has recorded.
#[derive(Default)]
struct Recorded {
    /// Every event of every accepted batch, in arrival order (duplicates
    /// included).
    events: Vec<Value>,
    posts: usize,
    refused: usize,
    /// The `Authorization` field of the last request.
    authorization: Option<String>,
}

/// A local webhook endpoint; stopped when dropped.
struct Receiver {
    addr: SocketAddr,
    mode: Arc<AtomicU8>,
    recorded: Arc<Mutex<Recorded>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Receiver {
    fn start() -> Receiver {
        let ip = common::unique_loopback();
        Receiver::bind(
            SocketAddr::from((ip, 0)),
            Arc::default(),
            Arc::new(AtomicU8::new(Mode::Accept as u8)),
        )
    }

    fn bind(addr: SocketAddr, recorded: Arc<Mutex<Recorded>>, mode: Arc<AtomicU8>) -> Receiver {
        let listener = TcpListener::bind(addr).expect("bind the receiver");
        let addr = listener.local_addr().expect("local addr");
        listener.set_nonblocking(true).expect("nonblocking");
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (stop, recorded, mode) =
                (Arc::clone(&stop), Arc::clone(&recorded), Arc::clone(&mode));
            std::thread::spawn(move || {
                let mut connections = Vec::new();
                while !stop.load(Ordering::Acquire) {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            let (stop, recorded, mode) =
                                (Arc::clone(&stop), Arc::clone(&recorded), Arc::clone(&mode));
                            connections.push(std::thread::spawn(move || {
                                serve(stream, &stop, &recorded, &mode);
                            }));
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(5)),
                    }
                }
                drop(listener);
                for c in connections {
                    let _ = c.join();
                }
            })
        };
        Receiver {
            addr,
            mode,
            recorded,
            stop,
            thread: Some(thread),
        }
    }

    fn url(&self) -> String {
        format!("http://{}/hooks/mail", self.addr)
    }

    fn set_mode(&self, mode: Mode) {
        self.mode.store(mode as u8, Ordering::Release);
    }

    /// Closes the port and every connection.
    fn stop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }

    /// Listens again on the same port, keeping what was recorded.
    fn restart(&mut self) {
        self.stop();
        *self = Receiver::bind(
            self.addr,
            Arc::clone(&self.recorded),
            Arc::clone(&self.mode),
        );
    }

    fn events(&self) -> Vec<Value> {
        self.recorded.lock().unwrap().events.clone()
    }

    fn refused(&self) -> usize {
        self.recorded.lock().unwrap().refused
    }

    /// The events by `seq`, each once.
    fn distinct(&self) -> BTreeMap<u64, Value> {
        self.events()
            .into_iter()
            .map(|e| (e["seq"].as_u64().expect("a seq"), e))
            .collect()
    }

    /// Waits until `n` distinct events arrived.
    fn wait_for(&self, n: usize, timeout: Duration) -> BTreeMap<u64, Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let events = self.distinct();
            if events.len() >= n {
                return events;
            }
            assert!(
                Instant::now() < deadline,
                "{} of {n} events within {timeout:?}: {:#?}",
                events.len(),
                events
                    .values()
                    .map(|e| format!("{} {}", e["type"], e["id"]))
                    .collect::<Vec<_>>()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One connection: requests until the peer or the receiver closes.
fn serve(stream: TcpStream, stop: &AtomicBool, recorded: &Mutex<Recorded>, mode: &AtomicU8) {
    stream
        .set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    loop {
        let Some((body, authorization)) = read_request(&mut reader, stop) else {
            return;
        };
        recorded.lock().unwrap().authorization = authorization;
        let mode = mode.load(Ordering::Acquire);
        if mode == Mode::Stall as u8 {
            while !stop.load(Ordering::Acquire) {
                std::thread::sleep(Duration::from_millis(20));
            }
            return;
        }
        if mode == Mode::Fail as u8 {
            recorded.lock().unwrap().refused += 1;
            let _ = writer.write_all(b"HTTP/1.1 500 Oops\r\nContent-Length: 4\r\n\r\noops");
            continue;
        }
        let batch: Vec<Value> = serde_json::from_slice(&body).expect("a JSON array");
        {
            let mut r = recorded.lock().unwrap();
            r.posts += 1;
            r.events.extend(batch);
        }
        if writer
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            .is_err()
        {
            return;
        }
    }
}

/// The body and `Authorization` field of the next request; `None` when
/// the connection ends or the receiver stops.
fn read_request(
    reader: &mut BufReader<TcpStream>,
    stop: &AtomicBool,
) -> Option<(Vec<u8>, Option<String>)> {
    let mut length = 0;
    let mut authorization = None;
    let mut first = true;
    loop {
        let mut line = String::new();
        loop {
            if stop.load(Ordering::Acquire) {
                return None;
            }
            match reader.read_line(&mut line) {
                Ok(0) => return None,
                Ok(_) => break,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => return None,
            }
        }
        if first {
            assert!(line.starts_with("POST /hooks/mail HTTP/1.1"), "{line:?}");
            first = false;
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().unwrap();
            } else if name.eq_ignore_ascii_case("authorization") {
                authorization = Some(value.trim().to_owned());
            }
        }
    }
    let mut body = vec![0; length];
    let mut filled = 0;
    while filled < length {
        if stop.load(Ordering::Acquire) {
            return None;
        }
        match reader.read(&mut body[filled..]) {
            Ok(0) => return None,
            Ok(n) => filled += n,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return None,
        }
    }
    Some((body, authorization))
}

/// A `[[events.webhook]]` for `receiver`, fast to retry, with `extra`
/// keys.
fn webhook(receiver: &Receiver, extra: &str) -> String {
    format!(
        "[[events.webhook]]\nurl = {:?}\nbatch_wait = \"20ms\"\nmin_backoff = \"100ms\"\nmax_backoff = \"300ms\"\ntimeout = \"2s\"\n{extra}",
        receiver.url()
    )
}

/// A server on one core relaying `far.example` to `sink` and DSNs for
/// `client.test` to `senders`, posting events to `receiver`.
fn server(sink: &Sink, senders: &Sink, receiver: &Receiver, extra: &str) -> TestServer {
    TestServer::start(
        Tweaks::default()
            .cores(1)
            .extra(&sink.route("far.example"))
            .extra(&senders.route("client.test"))
            .extra("[metrics]\naddress = \"127.0.0.1:0\"\n")
            .extra(extra)
            .extra(&webhook(receiver, "bearer_token = \"test-token\"\n")),
    )
}

fn metric(server: &TestServer, name: &str) -> f64 {
    let metrics = common::scrape_metrics(server.listener("metrics"));
    metrics.get(name).copied().unwrap_or(0.0)
}

/// The events of each message (by queue id), in `seq` order.
fn by_message(events: &BTreeMap<u64, Value>) -> HashMap<String, Vec<Value>> {
    let mut messages: HashMap<String, Vec<Value>> = HashMap::new();
    for event in events.values() {
        if let Some(id) = event["id"].as_str() {
            messages
                .entry(id.to_owned())
                .or_default()
                .push(event.clone());
        }
    }
    messages
}

/// The kinds of a message's events, in order.
fn kinds(events: &[Value]) -> Vec<&str> {
    events.iter().map(|e| e["type"].as_str().unwrap()).collect()
}

/// Every `seq` from the first on, none missing.
fn assert_contiguous(events: &BTreeMap<u64, Value>) {
    let seqs: Vec<u64> = events.keys().copied().collect();
    let first = seqs[0];
    assert_eq!(
        seqs,
        (first..first + seqs.len() as u64).collect::<Vec<_>>(),
        "a gap in the sequence numbers"
    );
}

#[test]
fn every_kind_of_event_arrives_with_its_fields() {
    let sink = Sink::start_with(&["--tempfail", "1", "--reject", "nobody@far.example"]);
    let senders = Sink::start();
    let receiver = Receiver::start();
    let server = server(
        &sink,
        &senders,
        &receiver,
        "[delivery]\nminimal_backoff = \"1s\"\nmaximal_backoff = \"1s\"\n",
    );
    // The first message is deferred once (the sink's tempfail), then
    // delivered; the second bounces.
    common::send_numbered(&server, "rcpt@far.example", "first", 1);
    sink.wait_for(1, Duration::from_secs(30));
    common::send_numbered(&server, "nobody@far.example", "second", 1);
    // received x2, deferred, delivered, bounced; then the DSN's own
    // received and delivered (to the senders' sink).
    let events = receiver.wait_for(7, Duration::from_secs(30));
    assert_contiguous(&events);
    let site = format!("[{}]:{}", sink.addr.ip(), sink.addr.port());
    let messages = by_message(&events);
    let first = messages
        .values()
        .find(|m| m[0]["recipients"][0] == "rcpt@far.example")
        .expect("the first message's events");
    assert_eq!(kinds(first), ["received", "deferred", "delivered"]);
    let received = &first[0];
    assert_eq!(received["sender"], "sender@client.test");
    assert!(received["size"].as_u64().unwrap() > 200);
    assert!(received["time"].as_u64().unwrap() > 1_600_000_000);
    assert!(common::is_queue_id(received["id"].as_str().unwrap()));
    let deferred = &first[1];
    assert_eq!(deferred["recipient"], "rcpt@far.example");
    assert_eq!(deferred["attempt"], 1);
    assert_eq!(deferred["site"], site.as_str());
    assert_eq!(deferred["code"], 451);
    assert!(deferred["class"].is_string(), "{deferred}");
    assert!(deferred["reply"].as_str().unwrap().starts_with("451"));
    assert!(deferred["relay"]
        .as_str()
        .unwrap()
        .contains(&sink.addr.port().to_string()));
    let delivered = &first[2];
    assert_eq!(delivered["attempt"], 2);
    assert_eq!(delivered["code"], 250);
    assert_eq!(delivered["site"], site.as_str());
    assert!(delivered.get("class").is_none(), "{delivered}");
    let second = messages
        .values()
        .find(|m| m[0]["recipients"][0] == "nobody@far.example")
        .expect("the second message's events");
    assert_eq!(kinds(second), ["received", "bounced"]);
    assert_eq!(second[1]["class"], "invalid-recipient");
    assert_eq!(second[1]["code"], 550);
    assert_eq!(second[1]["attempt"], 1);
    // The DSN is a message of its own, from the null sender.
    let dsn = messages
        .values()
        .find(|m| m[0]["sender"] == "")
        .expect("the DSN's events");
    assert_eq!(kinds(dsn), ["received", "delivered"]);
    assert_eq!(
        receiver.recorded.lock().unwrap().authorization.as_deref(),
        Some("Bearer test-token")
    );
    assert_eq!(
        metric(&server, "spate_events_written_total"),
        events.len() as f64
    );
}

#[test]
fn a_suspension_and_an_expiry_are_events() {
    // Every end of data deferred with Gmail's rate-limit reply: a shipped
    // back-off rule suspends the site. The other domain's mail is
    // deferred until its lifetime (2 s) runs out.
    let suspending = Sink::start_with(&[
        "--tempfail",
        "1000",
        "--tempfail-text",
        "421 4.7.28 Our system has detected an unusual rate of unsolicited mail",
    ]);
    let failing = Sink::start_with(&["--tempfail", "1000"]);
    let senders = Sink::start();
    let receiver = Receiver::start();
    let server = server(
        &suspending,
        &senders,
        &receiver,
        &format!(
            "{}[delivery]\nminimal_backoff = \"1s\"\nmaximal_backoff = \"1s\"\nmaximal_queue_lifetime = \"2s\"\n",
            failing.route("slow.example")
        ),
    );
    common::send_numbered(&server, "rcpt@far.example", "suspended", 1);
    common::send_numbered(&server, "rcpt@slow.example", "expiring", 1);
    let site = format!("[{}]:{}", suspending.addr.ip(), suspending.addr.port());
    let mut found = (None, None);
    wait_until(
        "a suspended and an expired event",
        Duration::from_secs(40),
        || {
            let events = receiver.distinct();
            found = (
                events.values().find(|e| e["type"] == "suspended").cloned(),
                events.values().find(|e| e["type"] == "expired").cloned(),
            );
            found.0.is_some() && found.1.is_some()
        },
    );
    let (suspended, expired) = (found.0.unwrap(), found.1.unwrap());
    assert_eq!(suspended["site"], site.as_str());
    assert_eq!(suspended["code"], 421);
    assert!(suspended["until"].as_u64().unwrap() > suspended["time"].as_u64().unwrap());
    assert!(suspended["class"].is_string());
    assert_eq!(expired["recipient"], "rcpt@slow.example");
    assert!(expired["attempt"].as_u64().unwrap() >= 1);
    assert!(
        expired["reply"].as_str().unwrap().contains("4.4.7"),
        "{expired}"
    );
    assert!(expired["class"].is_string());
    let events = receiver.distinct();
    let messages = by_message(&events);
    let expiring = messages
        .values()
        .find(|m| m[0]["recipients"][0] == "rcpt@slow.example")
        .unwrap();
    let kinds = kinds(expiring);
    assert_eq!(kinds.first(), Some(&"received"));
    assert_eq!(kinds.last(), Some(&"expired"));
    assert!(
        kinds[1..kinds.len() - 1].iter().all(|k| *k == "deferred"),
        "{kinds:?}"
    );
}

/// Each message's events: received first, then its recipient's outcome.
fn assert_each_message_received_then_delivered(events: &BTreeMap<u64, Value>, messages: usize) {
    let by_message = by_message(events);
    assert_eq!(by_message.len(), messages);
    for (id, events) in &by_message {
        assert_eq!(kinds(events), ["received", "delivered"], "message {id}");
    }
}

#[test]
fn events_made_while_the_endpoint_is_down_arrive_once_it_is_back_in_order() {
    let sink = Sink::start();
    let senders = Sink::start();
    let mut receiver = Receiver::start();
    let server = server(&sink, &senders, &receiver, "");
    common::send_numbered(&server, "rcpt@far.example", "before", 5);
    receiver.wait_for(10, Duration::from_secs(30));
    // Down: refusing connections, then answering 500.
    receiver.stop();
    common::send_numbered(&server, "rcpt@far.example", "while-down", 10);
    sink.wait_for(15, Duration::from_secs(30));
    wait_until("failed posts", Duration::from_secs(10), || {
        metric(
            &server,
            &format!(
                "spate_events_post_failures_total{{endpoint=\"{}\"}}",
                receiver.url()
            ),
        ) >= 1.0
    });
    receiver.set_mode(Mode::Fail);
    receiver.restart();
    common::send_numbered(&server, "rcpt@far.example", "while-failing", 5);
    sink.wait_for(20, Duration::from_secs(30));
    wait_until("refused posts", Duration::from_secs(10), || {
        receiver.refused() >= 1
    });
    receiver.set_mode(Mode::Accept);
    let events = receiver.wait_for(40, Duration::from_secs(30));
    assert_eq!(events.len(), 40);
    assert_contiguous(&events);
    assert_each_message_received_then_delivered(&events, 20);
    // Each event first arrived in seq order (a re-sent batch aside).
    let mut seen = std::collections::BTreeSet::new();
    let first_arrivals: Vec<u64> = receiver
        .events()
        .iter()
        .map(|e| e["seq"].as_u64().unwrap())
        .filter(|seq| seen.insert(*seq))
        .collect();
    assert!(
        first_arrivals.windows(2).all(|w| w[0] < w[1]),
        "{first_arrivals:?}"
    );
    wait_until("the backlog gone", Duration::from_secs(10), || {
        metric(&server, "spate_events_queued") == 0.0
    });
}

#[test]
fn nothing_in_the_log_is_lost_across_a_kill_9_while_the_endpoint_is_down() {
    let sink = Sink::start();
    let senders = Sink::start();
    let mut receiver = Receiver::start();
    receiver.stop();
    let mut server = server(&sink, &senders, &receiver, "");
    common::send_numbered(&server, "rcpt@far.example", "before-crash", 20);
    sink.wait_for(20, Duration::from_secs(30));
    wait_until("every event in the log", Duration::from_secs(10), || {
        metric(&server, "spate_events_written_total") == 40.0
    });
    // Outcomes recorded too: a delivery under way at a kill is made
    // again after the restart, with events of its own.
    wait_until("the queue empty", Duration::from_secs(10), || {
        server.queue_list().is_empty()
    });
    server.kill9();
    server.restart();
    common::send_numbered(&server, "rcpt@far.example", "after-restart", 5);
    sink.wait_for(25, Duration::from_secs(30));
    receiver.restart();
    let events = receiver.wait_for(50, Duration::from_secs(30));
    assert_eq!(events.len(), 50, "numbers go on after the restart");
    assert_contiguous(&events);
    assert_eq!(*events.keys().next().unwrap(), 1);
    assert_each_message_received_then_delivered(&events, 25);
    // A graceful stop and start: everything was acknowledged, nothing is
    // posted again.
    wait_until(
        "every acknowledgement recorded",
        Duration::from_secs(10),
        || metric(&server, "spate_events_queued") == 0.0,
    );
    let before = receiver.events().len();
    let shutdown = server.terminate();
    assert!(shutdown.status.success());
    server.restart();
    common::send_numbered(&server, "rcpt@far.example", "after-stop", 1);
    let events = receiver.wait_for(52, Duration::from_secs(30));
    assert_eq!(events.keys().last(), Some(&52));
    assert_eq!(receiver.events().len(), before + 2, "nothing posted twice");
}

/// Seconds to relay `n` messages through `server` to `sink` (which
/// already got `already`).
fn relay_time(server: &TestServer, sink: &Sink, already: usize, n: usize) -> f64 {
    let start = Instant::now();
    let smtp = server.smtp;
    std::thread::scope(|scope| {
        for session in 0..4 {
            scope.spawn(move || {
                let mut c = common::smtp::Client::connect(smtp);
                assert_eq!(c.read_reply().code, 220);
                assert_eq!(c.cmd("EHLO client.test").code, 250);
                for i in 0..n / 4 {
                    let marker = format!("s{session}-{i}");
                    c.send_message(
                        "sender@client.test",
                        &["rcpt@far.example"],
                        &common::message(&marker, 200),
                    )
                    .unwrap_or_else(|r| panic!("refused: {r:?}"));
                }
                c.quit();
            });
        }
    });
    sink.wait_for(already + n, Duration::from_secs(120));
    start.elapsed().as_secs_f64()
}

#[test]
fn a_stalled_endpoint_does_not_slow_mail() {
    let sink = Sink::start();
    let senders = Sink::start();
    let receiver = Receiver::start();
    receiver.set_mode(Mode::Stall);
    let server = server(&sink, &senders, &receiver, "");
    // The same load with the endpoint stalled and with it answering.
    let stalled = relay_time(&server, &sink, 0, 200);
    assert_eq!(
        receiver.distinct().len(),
        0,
        "a stalled endpoint acknowledged nothing"
    );
    // The sink has the last messages a moment before their outcomes are
    // recorded.
    wait_until("every event written", Duration::from_secs(10), || {
        metric(&server, "spate_events_written_total") == 400.0
    });
    receiver.set_mode(Mode::Accept);
    receiver.wait_for(400, Duration::from_secs(30));
    let answering = relay_time(&server, &sink, 200, 200);
    receiver.wait_for(800, Duration::from_secs(30));
    eprintln!(
        "200 messages: {stalled:.2}s with the endpoint stalled, {answering:.2}s with it answering"
    );
    assert!(
        stalled < answering * 3.0 + 2.0,
        "stalled {stalled:.2}s vs answering {answering:.2}s"
    );
    assert_eq!(metric(&server, "spate_events_dropped_total"), 0.0);
}

#[test]
fn a_full_event_log_drops_new_events_and_mail_flows_on() {
    let sink = Sink::start();
    let senders = Sink::start();
    let mut receiver = Receiver::start();
    receiver.stop();
    // 64 KiB: room for about 150 events of about 400 bytes.
    let server = server(
        &sink,
        &senders,
        &receiver,
        "[events]\nmax_queue_bytes = 65536\n",
    );
    common::send_numbered(&server, "rcpt@far.example", "flood", 150);
    sink.wait_for(150, Duration::from_secs(60));
    wait_until(
        "all 300 events written or dropped",
        Duration::from_secs(10),
        || {
            metric(&server, "spate_events_written_total")
                + metric(&server, "spate_events_dropped_total")
                == 300.0
        },
    );
    let written = metric(&server, "spate_events_written_total") as usize;
    let dropped = metric(&server, "spate_events_dropped_total") as usize;
    assert!(
        dropped > 0 && written > 50,
        "written {written}, dropped {dropped}"
    );
    assert!(server
        .stderr_text()
        .contains("events dropped: the event log is full"));
    // The oldest events are kept: what arrives is 1..=written.
    receiver.restart();
    let events = receiver.wait_for(written, Duration::from_secs(30));
    assert_eq!(events.len(), written);
    assert_contiguous(&events);
    assert_eq!(*events.keys().next().unwrap(), 1);
    // Once acknowledged, the log has room again.
    wait_until("every event acknowledged", Duration::from_secs(10), || {
        metric(&server, "spate_events_queued") == 0.0
    });
    common::send_numbered(&server, "rcpt@far.example", "after", 1);
    receiver.wait_for(written + 2, Duration::from_secs(30));
}

#[test]
fn a_received_event_is_in_the_log_before_its_250() {
    // The delivery side is left down (a route to a closed port), so the
    // only events are the received ones; spate is killed right after the
    // last 250, with the endpoint down.
    let sink = Sink::start();
    let senders = Sink::start();
    let mut receiver = Receiver::start();
    receiver.stop();
    let mut server = server(
        &sink,
        &senders,
        &receiver,
        "[delivery]\nminimal_backoff = \"1h\"\nmaximal_backoff = \"1h\"\n",
    );
    let ids: Vec<String> = std::thread::scope(|scope| {
        let smtp = server.smtp;
        let sessions: Vec<_> = (0..4)
            .map(|session| {
                scope.spawn(move || {
                    let mut c = common::smtp::Client::connect(smtp);
                    assert_eq!(c.read_reply().code, 220);
                    assert_eq!(c.cmd("EHLO client.test").code, 250);
                    (0..25)
                        .map(|i| {
                            let marker = format!("k{session}-{i}");
                            c.send_message(
                                "sender@client.test",
                                &["rcpt@nowhere.example"],
                                &common::message(&marker, 200),
                            )
                            .unwrap_or_else(|r| panic!("refused: {r:?}"))
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        sessions
            .into_iter()
            .flat_map(|s| s.join().unwrap())
            .collect()
    });
    server.kill9();
    server.restart();
    receiver.restart();
    wait_until(
        "every acknowledged message's received event",
        Duration::from_secs(30),
        || {
            let events = receiver.distinct();
            ids.iter().all(|id| {
                events
                    .values()
                    .any(|e| e["type"] == "received" && e["id"] == id.as_str())
            })
        },
    );
}

#[test]
fn a_bounce_by_hand_is_a_bounced_event_and_a_hand_suspension_a_suspended_one() {
    let sink = Sink::start();
    let senders = Sink::start();
    let receiver = Receiver::start();
    let server = server(
        &sink,
        &senders,
        &receiver,
        "[delivery]\nminimal_backoff = \"1h\"\nmaximal_backoff = \"2h\"\n",
    );
    let site = format!("[{}]:{}", sink.addr.ip(), sink.addr.port());
    let said = server.spate_command(&["queue", "suspend", &site, "--for", "1h"]);
    assert!(said.status.success());
    common::send_numbered(&server, "rcpt@far.example", "by-hand", 2);
    wait_until("two received events", Duration::from_secs(30), || {
        receiver
            .distinct()
            .values()
            .filter(|e| e["type"] == "received")
            .count()
            == 2
    });
    let out = server.spate_command(&["queue", "bounce", "--domain", "far.example"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut events = BTreeMap::new();
    wait_until("two bounced events", Duration::from_secs(30), || {
        events = receiver.distinct();
        events.values().filter(|e| e["type"] == "bounced").count() == 2
    });
    let suspended: Vec<_> = events
        .values()
        .filter(|e| e["type"] == "suspended")
        .collect();
    assert_eq!(suspended.len(), 1, "{events:?}");
    assert_eq!(suspended[0]["site"], site.as_str());
    for bounced in events.values().filter(|e| e["type"] == "bounced") {
        assert_eq!(bounced["recipient"], "rcpt@far.example");
        assert_eq!(bounced["code"], 550);
        assert!(bounced["class"].is_string(), "{bounced}");
    }
    assert!(sink.messages().is_empty(), "bounced mail was delivered");
}
