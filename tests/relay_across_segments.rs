//! 20,000 messages relayed to a smarthost through 1 MiB spool segments, so
//! that segments roll over and are reclaimed while deliveries run (issue
//! 11), with one core and with two: every acknowledged message arrives
//! exactly once at an independent sink (counted by Message-ID), the queue
//! drains to empty and no spool error is logged. Then the same with
//! `kill -9` of spate three times during the load and once during the
//! drain, restarting on the same spool and resending nothing: no
//! acknowledged message is lost, and a message arrives twice only if its
//! delivery was under way at a kill. It checks spate's bookkeeping across
//! rollovers and restarts, not fdatasync (kill -9 keeps the page cache).

mod common;
#[path = "common/id_sink.rs"]
mod id_sink;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};

use common::{TestServer, Tweaks};
use id_sink::IdSink;

/// Messages per run (the figure).
const MESSAGES: usize = 20_000;
/// Concurrent client connections.
const SENDERS: usize = 32;
/// Approximate body size: with the headers about 80 segments of 1 MiB.
const BODY: usize = 3 * 1024;
/// Small segments: about 70 roll-overs per run.
const SMALL: Segments = Segments {
    size: 1 << 20,
    preallocate_chunk: 256 << 10,
};
/// The default `[spool]` (64 MiB, 4 MiB chunks): 20,000 messages of this
/// size still cross one segment boundary.
const DEFAULT: Segments = Segments {
    size: 64 << 20,
    preallocate_chunk: 4 << 20,
};

#[derive(Debug, Clone, Copy)]
struct Segments {
    size: u64,
    preallocate_chunk: u64,
}
/// How long before a kill a message may have reached the sink and still
/// be delivered again after the restart: spate had not yet recorded the
/// sink's 250 when it died. Generous for a loaded debug build.
const DUPLICATE_WINDOW: Duration = Duration::from_secs(5);
/// Waiting for the drain stops when nothing has changed for this long.
const STALL: Duration = Duration::from_secs(20);
/// The longest a sender waits for spate to come back after a kill.
const RECONNECT: Duration = Duration::from_secs(60);
/// Log lines that mean the spool failed a message.
const SPOOL_ERRORS: [&str; 2] = ["spool read error", "corrupt spool record"];

#[test]
fn twenty_thousand_messages_through_1mib_segments_one_core() {
    run(1, 0, SMALL);
}

#[test]
fn twenty_thousand_messages_through_1mib_segments_two_cores() {
    run(2, 0, SMALL);
}

#[test]
fn twenty_thousand_messages_through_default_segments_one_core() {
    run(1, 0, DEFAULT);
}

#[test]
fn twenty_thousand_messages_through_default_segments_two_cores() {
    run(2, 0, DEFAULT);
}

#[test]
fn kill9_during_load_and_drain_one_core() {
    run(1, 3, SMALL);
}

#[test]
fn kill9_during_load_and_drain_two_cores() {
    run(2, 3, SMALL);
}

/// The Message-ID (without `<>`) of message `i`, as `common::message`
/// writes it for the marker `marker(i)`.
fn marker(i: usize) -> String {
    format!("seg-{i:05}")
}

fn message_id(i: usize) -> String {
    format!("{}@client.test", marker(i))
}

/// What the client side saw of each message.
#[derive(Default)]
struct Outcomes {
    /// Index -> queue id from the 250.
    acked: HashMap<usize, String>,
    /// The connection ended before the reply to the end of data: the
    /// message may or may not have been stored.
    cut: Vec<usize>,
    /// Refused with a reply other than 250 (index, reply).
    refused: Vec<(usize, String)>,
}

/// The load shared by the sender threads.
struct Load {
    /// Where spate listens now (its port changes at each restart).
    target: RwLock<SocketAddr>,
    next: AtomicUsize,
    acked: AtomicUsize,
    outcomes: Mutex<Outcomes>,
}

fn run(cores: usize, kills: usize, segments: Segments) {
    let started = Instant::now();
    let seed: u64 = std::env::var("RELAY_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| rand::thread_rng().gen());
    let what = format!(
        "cores={cores} segment_size={} kills={kills}+{} seed={seed}",
        segments.size,
        kills.min(1)
    );
    eprintln!("relay_across_segments {what} (RELAY_TEST_SEED={seed} replays the kill points)");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);

    let sink = IdSink::start();
    let mut server = TestServer::start(
        Tweaks::default()
            .cores(cores)
            .spool("segment_size", segments.size)
            .spool("preallocate_chunk", segments.preallocate_chunk)
            .relay("smarthost", format!("\"{}\"", sink.addr))
            .smtp("max_connections_per_ip", 2 * SENDERS),
    );
    let load = Arc::new(Load {
        target: RwLock::new(server.smtp),
        next: AtomicUsize::new(0),
        acked: AtomicUsize::new(0),
        outcomes: Mutex::new(Outcomes::default()),
    });
    let senders: Vec<_> = (0..SENDERS)
        .map(|_| {
            let load = Arc::clone(&load);
            std::thread::spawn(move || sender(&load))
        })
        .collect();

    // Kill points: one in each of `kills` equal slices of 10%..90% of the
    // acknowledged count.
    let mut kill_times = Vec::new();
    let mut kill_notes = Vec::new();
    for k in 0..kills {
        let slice = 0.8 / kills as f64;
        let at = 0.1 + slice * (k as f64 + rng.gen_range(0.0..1.0));
        let threshold = (MESSAGES as f64 * at) as usize;
        let deadline = Instant::now() + Duration::from_secs(120);
        while load.acked.load(Ordering::SeqCst) < threshold
            && senders.iter().any(|s| !s.is_finished())
        {
            assert!(
                Instant::now() < deadline,
                "the load stalled before kill {k}"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        let acked = load.acked.load(Ordering::SeqCst);
        assert!(
            senders.iter().any(|s| !s.is_finished()),
            "the load ended before kill {k} ({acked} acknowledged)"
        );
        server.kill9();
        kill_times.push(Instant::now());
        kill_notes.push(format!(
            "kill {} during the load after {acked} acknowledged, {} at the sink",
            k + 1,
            sink.messages()
        ));
        server.restart();
        *load.target.write().unwrap() = server.smtp;
    }
    for s in senders {
        s.join().expect("sender thread panicked");
    }
    let load_time = started.elapsed();
    let outcomes = std::mem::take(&mut *load.outcomes.lock().unwrap());
    let acked_ids: Vec<String> = outcomes.acked.keys().map(|&i| message_id(i)).collect();
    let backlog_at_end = sink.missing(&acked_ids);

    // One kill during the drain, once part of the backlog is delivered.
    if kills > 0 {
        let deadline = Instant::now() + Duration::from_secs(60);
        let left = |sink: &IdSink| sink.missing(&acked_ids);
        while left(&sink) > backlog_at_end / 2 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        let missing = left(&sink);
        server.kill9();
        kill_times.push(Instant::now());
        kill_notes.push(format!(
            "kill {} during the drain: {backlog_at_end} acknowledged were not at the sink when the load ended, {missing} at the kill",
            kills + 1
        ));
        server.restart();
    }

    // The drain: every acknowledged message at the sink, then an empty
    // queue; each wait gives up once nothing changes for STALL.
    let drain_started = Instant::now();
    wait_while_changing(STALL, || {
        let m = sink.missing(&acked_ids);
        (m == 0, sink.messages() as usize)
    });
    let mut queued = server.queue_list().len();
    wait_while_changing(STALL, || {
        queued = server.queue_list().len();
        (queued == 0, queued)
    });
    let drain_time = drain_started.elapsed();
    let down = server.terminate();
    let queued_after_stop = server.queue_list();
    let spool_errors: Vec<String> = server
        .stderr_lines_with("")
        .into_iter()
        .filter(|l| SPOOL_ERRORS.iter().any(|e| l.contains(e)))
        .collect();
    let segments_left = segment_files(&server.spool_dir);

    // Judge.
    let arrivals = sink.arrivals();
    let sent: HashSet<String> = (0..MESSAGES).map(message_id).collect();
    let lost: Vec<(usize, &String)> = {
        let mut v: Vec<_> = outcomes
            .acked
            .iter()
            .filter(|(&i, _)| !arrivals.by_id.contains_key(&message_id(i)))
            .map(|(&i, q)| (i, q))
            .collect();
        v.sort();
        v
    };
    let delivered = outcomes
        .acked
        .keys()
        .filter(|&&i| arrivals.by_id.contains_key(&message_id(i)))
        .count();
    let refused_delivered: Vec<&(usize, String)> = outcomes
        .refused
        .iter()
        .filter(|(i, _)| arrivals.by_id.contains_key(&message_id(*i)))
        .collect();
    let cut_delivered = outcomes
        .cut
        .iter()
        .filter(|&&i| arrivals.by_id.contains_key(&message_id(i)))
        .count();
    let unknown: Vec<&String> = arrivals
        .by_id
        .keys()
        .filter(|id| !sent.contains(*id))
        .collect();
    let mut duplicates_at_kill = 0;
    let mut longest_before_kill = Duration::ZERO;
    let mut bad_duplicates = Vec::new();
    for (id, times) in &arrivals.by_id {
        if times.len() < 2 {
            continue;
        }
        let mut ok = true;
        for pair in times.windows(2) {
            let kill = kill_times
                .iter()
                .find(|&&k| pair[0] <= k && k <= pair[1] && k - pair[0] <= DUPLICATE_WINDOW);
            match kill {
                Some(&k) => longest_before_kill = longest_before_kill.max(k - pair[0]),
                None => ok = false,
            }
        }
        if ok {
            duplicates_at_kill += times.len() - 1;
        } else {
            let rel: Vec<String> = times
                .iter()
                .map(|t| format!("{:.3}s", (*t - started).as_secs_f64()))
                .collect();
            bad_duplicates.push(format!("{id} arrived at {}", rel.join(", ")));
        }
    }
    let highest_segment = highest_segments(outcomes.acked.values());

    let mut report = String::new();
    let mut line = |s: String| {
        report.push_str(&s);
        report.push('\n');
    };
    line(format!("== relay_across_segments {what}"));
    for n in &kill_notes {
        line(format!("   {n}"));
    }
    line(format!(
        "   sent {MESSAGES}: acknowledged {}, refused {}, connection cut before the reply {} ({cut_delivered} of them arrived)",
        outcomes.acked.len(),
        outcomes.refused.len(),
        outcomes.cut.len()
    ));
    line(format!(
        "   received/delivered/still queued/spool errors: {} / {delivered} / {} / {}",
        outcomes.acked.len(),
        queued_after_stop.len(),
        spool_errors.len()
    ));
    line(format!(
        "   acknowledged and lost {}; sink: {} messages ({} distinct ids, {} without id, {} unknown ids), {} connections, {} cut in DATA",
        lost.len(),
        arrivals.messages,
        arrivals.by_id.len(),
        arrivals.without_id,
        unknown.len(),
        arrivals.connections,
        arrivals.cut_in_data
    ));
    line(format!(
        "   duplicates: {duplicates_at_kill} in flight at a kill (at most {:.3}s before it), {} not explained by a kill",
        longest_before_kill.as_secs_f64(),
        bad_duplicates.len()
    ));
    line(format!(
        "   segments: highest sequence per shard {highest_segment:?}; segment files left after the stop {segments_left:?}"
    ));
    let stats_messages = down.stats.as_ref().and_then(|s| s["messages"].as_u64());
    line(format!(
        "   spate's stats line at the stop (last start only): {stats_messages:?} messages received"
    ));
    line(format!(
        "   times: load {:.1}s, drain {:.1}s, total {:.1}s; exit {:?}; backlog at the end of the load {backlog_at_end}",
        load_time.as_secs_f64(),
        drain_time.as_secs_f64(),
        started.elapsed().as_secs_f64(),
        down.status
    ));
    if !lost.is_empty() {
        let mut by_segment: BTreeMap<String, usize> = BTreeMap::new();
        for (_, q) in &lost {
            *by_segment.entry(segment_of(q)).or_default() += 1;
        }
        line(format!("   lost by segment: {by_segment:?}"));
        let sample: Vec<String> = lost
            .iter()
            .take(5)
            .map(|(i, q)| format!("{} queued as {q}", message_id(*i)))
            .collect();
        line(format!("   lost, first: {sample:?}"));
        for (_, q) in lost.iter().take(2) {
            for l in server.stderr_lines_with(q).iter().take(6) {
                line(format!("     log: {l}"));
            }
        }
    }
    for e in spool_errors.iter().take(5) {
        line(format!("   spool error: {e}"));
    }
    for d in bad_duplicates.iter().take(5) {
        line(format!("   duplicate: {d}"));
    }
    for q in queued_after_stop.iter().take(5) {
        line(format!("   still queued: {} {}", q.id, q.raw));
    }
    for (i, r) in outcomes.refused.iter().take(5) {
        line(format!("   refused: {} {r}", message_id(*i)));
    }

    assert!(lost.is_empty(), "acknowledged messages lost\n{report}");
    assert!(
        queued_after_stop.is_empty(),
        "messages still queued after the drain\n{report}"
    );
    assert!(spool_errors.is_empty(), "spool errors logged\n{report}");
    assert!(
        bad_duplicates.is_empty(),
        "messages delivered twice without a kill to explain it\n{report}"
    );
    assert!(
        unknown.is_empty(),
        "unknown Message-IDs at the sink\n{report}"
    );
    assert!(
        refused_delivered.is_empty(),
        "refused messages were delivered\n{report}"
    );
    assert_eq!(arrivals.without_id, 0, "{report}");
    assert!(down.status.success(), "spate exit status\n{report}");
    // Reclaim keeps up: what is left is the active segment, and at most
    // one more whose deletion had not come round yet (leaking segments is
    // how a spool fills a disk).
    assert!(
        segments_left.values().all(|&n| n <= 2),
        "spool segments not reclaimed after the drain\n{report}"
    );
    if kills == 0 {
        assert_eq!(outcomes.acked.len(), MESSAGES, "{report}");
        assert_eq!(duplicates_at_kill, 0, "{report}");
        assert_eq!(arrivals.messages as usize, MESSAGES, "{report}");
        assert_eq!(stats_messages, Some(MESSAGES as u64), "{report}");
    }
    eprint!("{report}");
}

/// Calls `step` until it reports done, or until the value it returns has
/// not changed for `stall`.
fn wait_while_changing(stall: Duration, mut step: impl FnMut() -> (bool, usize)) {
    let mut last = None;
    let mut since = Instant::now();
    loop {
        let (done, value) = step();
        if done {
            return;
        }
        if last != Some(value) {
            last = Some(value);
            since = Instant::now();
        } else if since.elapsed() > stall {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `shard-<N>/<seq>.seg` of a queue id (16 hex digits: shard, sequence,
/// offset).
fn segment_of(queue_id: &str) -> String {
    match u64::from_str_radix(queue_id, 16) {
        Ok(v) => format!("shard-{}/{:08}.seg", v >> 56, (v >> 32) & 0xff_ffff),
        Err(_) => format!("not an id: {queue_id}"),
    }
}

/// The highest segment sequence number among `ids`, per shard.
fn highest_segments<'a>(ids: impl Iterator<Item = &'a String>) -> BTreeMap<u64, u64> {
    let mut out = BTreeMap::new();
    for v in ids.filter_map(|q| u64::from_str_radix(q, 16).ok()) {
        let e = out.entry(v >> 56).or_insert(0);
        *e = (*e).max((v >> 32) & 0xff_ffff);
    }
    out
}

/// Segment files per shard directory.
fn segment_files(spool_dir: &Path) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(spool_dir).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with("shard-") {
            continue;
        }
        let n = std::fs::read_dir(entry.path())
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(".seg"))
            .count();
        out.insert(name, n);
    }
    out
}

/// One client connection after another, taking the next message each
/// time, until every message was tried once. A message whose connection
/// dies is not sent again.
fn sender(load: &Load) {
    'connection: loop {
        let Some(mut conn) = Conn::open(load) else {
            panic!("spate did not accept a connection for {RECONNECT:?}");
        };
        loop {
            let i = load.next.fetch_add(1, Ordering::SeqCst);
            if i >= MESSAGES {
                let _ = conn.w.write_all(b"QUIT\r\n");
                let _ = conn.w.flush();
                return;
            }
            match conn.send(i) {
                Ok(Ok(queue_id)) => {
                    load.outcomes.lock().unwrap().acked.insert(i, queue_id);
                    load.acked.fetch_add(1, Ordering::SeqCst);
                }
                Ok(Err(reply)) => {
                    load.outcomes.lock().unwrap().refused.push((i, reply));
                    continue 'connection;
                }
                Err(_) => {
                    load.outcomes.lock().unwrap().cut.push(i);
                    continue 'connection;
                }
            }
        }
    }
}

/// A client connection past EHLO, in plain std I/O.
struct Conn {
    r: BufReader<TcpStream>,
    w: BufWriter<TcpStream>,
}

impl Conn {
    /// Connects to wherever spate listens now, retrying while it restarts.
    fn open(load: &Load) -> Option<Conn> {
        let deadline = Instant::now() + RECONNECT;
        while Instant::now() < deadline {
            let addr = *load.target.read().unwrap();
            if let Ok(c) = Conn::try_open(addr) {
                return Some(c);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    fn try_open(addr: SocketAddr) -> std::io::Result<Conn> {
        let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(Duration::from_secs(60)))?;
        let mut c = Conn {
            r: BufReader::new(s.try_clone()?),
            w: BufWriter::with_capacity(64 << 10, s),
        };
        let greeting = c.reply()?;
        let ehlo = if greeting.0 == 220 {
            c.w.write_all(b"EHLO load.test\r\n")?;
            c.w.flush()?;
            c.reply()?
        } else {
            greeting
        };
        if ehlo.0 != 250 {
            return Err(std::io::Error::other(format!("refused: {ehlo:?}")));
        }
        Ok(c)
    }

    /// One pipelined transaction: `Ok(Ok(queue id))` on 250, `Ok(Err)`
    /// with the first refusal, `Err` when the connection fails.
    fn send(&mut self, i: usize) -> std::io::Result<Result<String, String>> {
        let msg = common::dot_stuff(&common::message(&marker(i), BODY));
        write!(
            self.w,
            "MAIL FROM:<load@client.test>\r\nRCPT TO:<r{i}@dest.test>\r\nDATA\r\n"
        )?;
        self.w.flush()?;
        let mail = self.reply()?;
        let rcpt = self.reply()?;
        let data = self.reply()?;
        if mail.0 != 250 || rcpt.0 != 250 || data.0 != 354 {
            return Ok(Err(format!("{mail:?} {rcpt:?} {data:?}")));
        }
        self.w.write_all(&msg)?;
        self.w.flush()?;
        let end = self.reply()?;
        if end.0 != 250 {
            return Ok(Err(format!("{end:?}")));
        }
        let id = end
            .1
            .split("queued as ")
            .nth(1)
            .and_then(|t| t.split_whitespace().next())
            .map(|t| t.trim_matches(|c| c == '<' || c == '>').to_owned());
        Ok(id.ok_or_else(|| format!("250 without a queue id: {end:?}")))
    }

    /// One reply: its code and last line.
    fn reply(&mut self) -> std::io::Result<(u16, String)> {
        let mut line = String::new();
        loop {
            line.clear();
            if self.r.read_line(&mut line)? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            let code = line.get(..3).and_then(|c| c.parse().ok());
            let Some(code) = code else {
                return Err(std::io::Error::other(format!("bad reply {line:?}")));
            };
            if line.as_bytes().get(3) != Some(&b'-') {
                return Ok((code, line.trim_end().to_owned()));
            }
        }
    }
}
