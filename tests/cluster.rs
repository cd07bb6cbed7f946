//! Limits shared across hosts through Redis (`[cluster]`), over real
//! sockets: two `spate serve` processes, each with its own spool and
//! loopback address, relay to one capture sink under a shaping rule of
//! 100 messages/s for its site, with a real `redis-server` of the test's
//! own. Judged from the sink's timestamps: together they keep to the
//! rate (without the cluster they take it each, about 200/s); they keep
//! delivering, each at its share, while Redis is down and share again
//! once it is back; a suspension made on one host stops the others,
//! including one that starts later. The GCRA script is also run directly
//! against Redis, for its bound and its cost.

#[path = "common/capture.rs"]
mod capture;
mod common;
#[path = "common/redis.rs"]
mod redis_server;

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use capture::{wait_until, Sink};
use common::smtp::Client;
use common::{TestServer, Tweaks};
use redis_server::Redis;

/// The shared rate of the tests, per second.
const RATE: f64 = 100.0;

/// A host relaying `far.example` to `sink` under `rules`, in the cluster
/// of `redis` (when given) as `name`.
fn host(sink: &Sink, rules: &Path, redis: Option<&Redis>, name: &str) -> TestServer {
    let mut extra = format!(
        "{}[delivery]\nshaping_file = {:?}\nminimal_backoff = \"1h\"\nmaximal_backoff = \"2h\"\n\n[metrics]\naddress = \"127.0.0.1:0\"\n",
        sink.route("far.example"),
        rules.display()
    );
    if let Some(redis) = redis {
        extra.push_str(&format!(
            "\n[cluster]\nredis = {:?}\nname = {name:?}\nhosts = 2\ntimeout = \"2s\"\n",
            redis.url()
        ));
    }
    // One core: a site's host-wide rate is split between the cores, and
    // one client session lands on one core, so with more cores the
    // host's own limit would bind before the shared one.
    TestServer::start(Tweaks::default().cores(1).extra(&extra))
}

/// A shaping file giving the sink's site (matched by its address) `rate`.
fn rules(dir: &Path, sink: &Sink, rate: &str) -> std::path::PathBuf {
    let path = dir.join("shaping.toml");
    std::fs::write(
        &path,
        format!(
            "[provider.lab]\nmx_suffix = [\"{}\"]\nmessage_rate = {rate:?}\n",
            sink.addr.ip()
        ),
    )
    .unwrap();
    path
}

/// Sends `n` messages tagged `tag-i` to each address at once, one thread
/// and one session per address.
fn send_to_all(targets: &[(SocketAddr, &str)], n: usize) -> Duration {
    let started = Instant::now();
    std::thread::scope(|scope| {
        for &(addr, tag) in targets {
            scope.spawn(move || {
                let mut c = Client::connect(addr);
                assert_eq!(c.read_reply().code, 220);
                assert_eq!(c.cmd("EHLO client.test").code, 250);
                for i in 0..n {
                    c.send_message(
                        "sender@client.test",
                        &["rcpt@far.example"],
                        &common::message(&format!("{tag}-{i}"), 200),
                    )
                    .unwrap_or_else(|r| panic!("refused: {r:?}"));
                }
                c.quit();
            });
        }
    });
    started.elapsed()
}

/// Queues `each` messages on every host while the sink's site is
/// suspended on each by hand, then resumes it on each: every host has its
/// whole load waiting when delivery starts, and no host is still busy
/// receiving while the rate is judged.
fn queue_then_release(sink: &Sink, hosts: &[(&TestServer, &str)], each: usize) {
    let site = format!("[{}]:{}", sink.addr.ip(), sink.addr.port());
    for (server, _) in hosts {
        spate(server, &["queue", "suspend", &site, "--for", "10m"]);
    }
    let targets: Vec<(SocketAddr, &str)> = hosts.iter().map(|(s, tag)| (s.smtp, *tag)).collect();
    let ingest = send_to_all(&targets, each);
    eprintln!(
        "{} messages queued in {:.2} s",
        each * hosts.len(),
        ingest.as_secs_f64()
    );
    assert!(sink.messages().is_empty(), "delivered while suspended");
    for (server, _) in hosts {
        spate(server, &["queue", "resume", &site]);
    }
}

/// Arrival times (s since the epoch) and the tag of each message.
fn arrivals(messages: &[serde_json::Value]) -> Vec<(f64, String)> {
    let mut v: Vec<(f64, String)> = messages
        .iter()
        .filter_map(|m| {
            let at = m["at"].as_f64()?;
            let data = m["data"].as_str()?;
            let tag = ["a-", "b-", "c-"]
                .iter()
                .find(|t| data.contains(**t))
                .map_or("?", |t| &t[..1]);
            Some((at, tag.to_owned()))
        })
        .collect();
    v.sort_by(|a, b| a.0.total_cmp(&b.0));
    v
}

/// The most arrivals in any window of `width` seconds that starts at or
/// after `from`.
fn busiest(times: &[f64], from: f64, width: f64) -> usize {
    let mut most = 0;
    for (i, &start) in times.iter().enumerate() {
        if start < from {
            continue;
        }
        let n = times[i..]
            .iter()
            .take_while(|&&t| t < start + width)
            .count();
        most = most.max(n);
    }
    most
}

/// Arrivals per second between `from` and `to`.
fn rate_between(times: &[f64], from: f64, to: f64) -> f64 {
    let n = times.iter().filter(|&&t| t >= from && t < to).count();
    n as f64 / (to - from)
}

fn now_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

fn wait_for_log(server: &TestServer, needle: &str) {
    wait_until(needle, Duration::from_secs(20), || {
        server.stderr_text().contains(needle)
    });
}

#[test]
fn two_hosts_share_one_rate_through_redis() {
    let dir = tempfile::tempdir().unwrap();
    let redis = Redis::start();
    let sink = Sink::start();
    let rules = rules(dir.path(), &sink, "100/s");
    let a = host(&sink, &rules, Some(&redis), "a");
    let b = host(&sink, &rules, Some(&redis), "b");
    wait_for_log(&a, "cluster: connected to redis");
    wait_for_log(&b, "cluster: connected to redis");
    const EACH: usize = 350;
    queue_then_release(&sink, &[(&a, "a"), (&b, "b")], EACH);
    let got = sink.wait_for(2 * EACH, Duration::from_secs(40));
    let arrived = arrivals(&got);
    let times: Vec<f64> = arrived.iter().map(|a| a.0).collect();
    let (first, last) = (times[0], times[times.len() - 1]);
    // The first second holds the limiter's burst (a period's worth, as on
    // one host); after it, the rate alone.
    let steady_from = first + 1.0;
    let most = busiest(&times, steady_from, 1.0);
    let overall = rate_between(&times, steady_from, last);
    let bins: Vec<usize> = (0..((last - first) / 0.25).ceil() as usize + 1)
        .map(|i| {
            let from = first + i as f64 * 0.25;
            times
                .iter()
                .filter(|&&t| t >= from && t < from + 0.25)
                .count()
        })
        .collect();
    eprintln!("per quarter second: {bins:?}");
    let from_a = arrived
        .iter()
        .filter(|(t, tag)| *t >= steady_from && tag == "a")
        .count();
    let from_b = arrived
        .iter()
        .filter(|(t, tag)| *t >= steady_from && tag == "b")
        .count();
    let most2 = busiest(&times, steady_from, 2.0);
    eprintln!(
        "{} messages over {:.2} s; after the first second: \
         {overall:.1}/s, at most {most} in any 1-s window, {most2} in any 2-s window; \
         from a {from_a}, from b {from_b}",
        times.len(),
        last - first,
    );
    // Tolerance, after the first second: at most 105/s over the whole
    // run, and at most 240 in any 2-s window (120/s: the rate, the
    // limiter's burst of 10, and what a stall of the sink or of a loaded
    // machine bunches up: messages spent on time but recorded late). The
    // busiest 1-s window is printed (107 to 115 on a quiet machine).
    assert!(overall <= RATE * 1.05, "{overall:.1}/s together");
    assert!(most2 <= 240, "{most2} messages in two seconds");
    // The rate, not the hosts, was the bound: 700 messages take about
    // (700 - 100) / 100 s.
    assert!(last - first >= 5.0, "over in {:.2} s", last - first);
    // Both hosts sent throughout.
    assert!(from_a >= 100 && from_b >= 100, "a {from_a}, b {from_b}");
    // What it cost in Redis.
    for (name, server) in [("a", &a), ("b", &b)] {
        let m = common::scrape_metrics(server.listener("metrics"));
        let trips = m["spate_cluster_round_trips_total"];
        let leases = m["spate_cluster_leases_total"];
        let tokens = m["spate_cluster_leased_tokens_total"];
        let delivered = m["spate_delivery_messages_total{result=\"delivered\"}"];
        eprintln!(
            "host {name}: {delivered} delivered, {leases} lease requests, {trips} round trips \
             (with heartbeats), {tokens} tokens granted: {:.0} lease requests and {:.0} \
             round trips per 1000 messages",
            1000.0 * leases / delivered,
            1000.0 * trips / delivered
        );
        assert_eq!(m["spate_cluster_redis_up"], 1.0);
        assert_eq!(m["spate_cluster_fallbacks_total"], 0.0);
    }
    assert!(!a.stderr_text().contains("deferred"));
    assert!(!b.stderr_text().contains("deferred"));
}

/// Where the shared rate has room, a lease brings a whole batch: a few
/// round trips carry hundreds of messages.
#[test]
fn a_rate_with_room_costs_a_few_leases() {
    let dir = tempfile::tempdir().unwrap();
    let redis = Redis::start();
    let sink = Sink::start();
    let rules = rules(dir.path(), &sink, "5000/s");
    let a = host(&sink, &rules, Some(&redis), "a");
    let b = host(&sink, &rules, Some(&redis), "b");
    wait_for_log(&a, "cluster: connected to redis");
    wait_for_log(&b, "cluster: connected to redis");
    const EACH: usize = 300;
    queue_then_release(&sink, &[(&a, "a"), (&b, "b")], EACH);
    sink.wait_for(2 * EACH, Duration::from_secs(40));
    for (name, server) in [("a", &a), ("b", &b)] {
        let m = common::scrape_metrics(server.listener("metrics"));
        let leases = m["spate_cluster_leases_total"];
        let delivered = m["spate_delivery_messages_total{result=\"delivered\"}"];
        eprintln!(
            "5000/s, host {name}: {delivered} delivered with {leases} lease requests \
             ({:.1} per 1000 messages)",
            1000.0 * leases / delivered
        );
        // Batches of 500, asked again at half: a handful.
        assert!(
            leases <= 10.0,
            "{leases} lease requests for {delivered} messages"
        );
    }
}

#[test]
fn without_the_cluster_each_host_takes_the_whole_rate() {
    let dir = tempfile::tempdir().unwrap();
    let sink = Sink::start();
    let rules = rules(dir.path(), &sink, "100/s");
    let a = host(&sink, &rules, None, "a");
    let b = host(&sink, &rules, None, "b");
    const EACH: usize = 350;
    queue_then_release(&sink, &[(&a, "a"), (&b, "b")], EACH);
    let got = sink.wait_for(2 * EACH, Duration::from_secs(40));
    let times: Vec<f64> = arrivals(&got).iter().map(|a| a.0).collect();
    let (first, last) = (times[0], times[times.len() - 1]);
    let overall = rate_between(&times, first + 1.0, last);
    eprintln!(
        "without the cluster: {} messages over {:.2} s, {overall:.1}/s after the first second",
        times.len(),
        last - first
    );
    assert!(
        overall >= RATE * 1.5,
        "two hosts alone should take about twice the rate: {overall:.1}/s"
    );
}

#[test]
fn hosts_keep_delivering_at_their_share_while_redis_is_down() {
    let dir = tempfile::tempdir().unwrap();
    let mut redis = Redis::start();
    let sink = Sink::start();
    let rules = rules(dir.path(), &sink, "100/s");
    let a = host(&sink, &rules, Some(&redis), "a");
    let b = host(&sink, &rules, Some(&redis), "b");
    wait_for_log(&a, "cluster: connected to redis");
    wait_for_log(&b, "cluster: connected to redis");
    const EACH: usize = 500;
    let (a_addr, b_addr) = (a.smtp, b.smtp);
    let sender = std::thread::spawn(move || send_to_all(&[(a_addr, "a"), (b_addr, "b")], EACH));
    sink.wait_for(250, Duration::from_secs(30));
    redis.kill();
    let killed = now_secs();
    wait_for_log(&a, "cluster: redis unreachable");
    wait_for_log(&b, "cluster: redis unreachable");
    std::thread::sleep(Duration::from_secs(3));
    redis.restart();
    let restarted = now_secs();
    wait_for_log(&a, "cluster: redis reachable again");
    wait_for_log(&b, "cluster: redis reachable again");
    sender.join().expect("sender");
    let got = sink.wait_for(2 * EACH, Duration::from_secs(40));
    let times: Vec<f64> = arrivals(&got).iter().map(|a| a.0).collect();
    let during = rate_between(&times, killed + 0.5, restarted);
    let most = busiest(
        &times
            .iter()
            .copied()
            .filter(|&t| t < restarted)
            .collect::<Vec<_>>(),
        killed + 0.5,
        2.0,
    );
    let after = rate_between(&times, restarted + 2.0, times[times.len() - 1]);
    eprintln!(
        "while Redis was down: {during:.1}/s (at most {most} in 2 s); after it came back: {after:.1}/s"
    );
    // Each host at its share (2 hosts: 50/s each): together the rate.
    assert!(during >= 30.0, "kept delivering: {during:.1}/s");
    assert!(most <= 240, "{most} in two seconds at the fallback share");
    assert!(after <= RATE * 1.1, "shared again: {after:.1}/s");
    // Said once each way.
    for server in [&a, &b] {
        let text = server.stderr_text();
        assert_eq!(
            text.matches("cluster: redis unreachable").count(),
            1,
            "{text}"
        );
        assert_eq!(text.matches("cluster: redis reachable again").count(), 1);
        let m = common::scrape_metrics(server.listener("metrics"));
        assert_eq!(m["spate_cluster_fallbacks_total"], 1.0);
        assert_eq!(m["spate_cluster_redis_up"], 1.0);
    }
}

#[test]
fn a_suspension_on_one_host_stops_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let redis = Redis::start();
    let sink = Sink::start();
    let rules = dir.path().join("shaping.toml");
    std::fs::write(&rules, "").unwrap();
    let a = host(&sink, &rules, Some(&redis), "a");
    let b = host(&sink, &rules, Some(&redis), "b");
    wait_for_log(&a, "cluster: connected to redis");
    wait_for_log(&b, "cluster: connected to redis");
    let site = format!("[{}]:{}", sink.addr.ip(), sink.addr.port());
    let said = spate(&a, &["queue", "suspend", &site, "--for", "1h"]);
    assert!(said.contains("suspended for 3600 s"), "{said}");
    // Published: b has it at once.
    wait_until("b to see the suspension", Duration::from_secs(10), || {
        spate(&b, &["queue", "suspensions"]).contains(&site)
    });
    assert!(spate(&b, &["queue", "suspensions"]).contains("on a: suspended by hand"));
    // A host that starts later finds it in Redis.
    let c = host(&sink, &rules, Some(&redis), "c");
    wait_until("c to see the suspension", Duration::from_secs(10), || {
        spate(&c, &["queue", "suspensions"]).contains(&site)
    });
    send_to_all(&[(b.smtp, "b"), (c.smtp, "c")], 5);
    std::thread::sleep(Duration::from_secs(2));
    assert!(sink.messages().is_empty(), "sent to a site suspended on a");
    // Resumed on a: b and c deliver.
    spate(&a, &["queue", "resume", &site]);
    sink.wait_for(10, Duration::from_secs(30));
    assert!(spate(&b, &["queue", "suspensions"]).contains("no site is suspended"));
    assert!(b.stderr_text().contains("site suspended by another host"));
    // No echo: a's own change did not come back to it.
    assert!(!a.stderr_text().contains("by another host"));
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

/// The GCRA script straight against Redis: hosts asking at once never get
/// more than the burst plus the rate, and what one lease round trip costs.
#[test]
fn the_limiter_bounds_concurrent_askers_and_a_lease_is_cheap() {
    use spate::cluster::gcra::{Ask, Scripts};
    let redis = Redis::start();
    let client = redis::Client::open(redis.url()).unwrap();
    let scripts = Scripts::default();
    let rate: spate::shaping::Rate = "100/s".parse().unwrap();
    let ask = Ask {
        key: "spate:test:rate".into(),
        rate,
        want: 10,
    };
    let started = Instant::now();
    let run_for = Duration::from_secs(2);
    let granted: u32 = std::thread::scope(|scope| {
        let askers: Vec<_> = (0..4)
            .map(|_| {
                let (client, scripts, ask) = (client.clone(), scripts.clone(), ask.clone());
                scope.spawn(move || {
                    let mut con = client.get_connection().unwrap();
                    scripts.load(&mut con).unwrap();
                    let mut total = 0;
                    while started.elapsed() < run_for {
                        let grant = scripts.grant(&mut con, std::slice::from_ref(&ask)).unwrap()[0];
                        total += grant.tokens;
                        if grant.tokens < ask.want {
                            std::thread::sleep(grant.wait.min(Duration::from_millis(50)));
                        }
                    }
                    total
                })
            })
            .collect();
        askers.into_iter().map(|h| h.join().unwrap()).sum()
    });
    let secs = started.elapsed().as_secs_f64();
    eprintln!("4 askers over {secs:.2} s were granted {granted} tokens of 100/s");
    // A burst of a tenth of a period, then the rate.
    assert!(
        f64::from(granted) <= 10.0 + RATE * secs + 1.0,
        "{granted} in {secs:.2} s"
    );
    assert!(f64::from(granted) >= RATE * secs * 0.8, "{granted}");

    // The cost of a lease: sequential round trips of one ask, and of a
    // pipeline of 8 (what a busy client thread sends at once).
    let mut con = client.get_connection().unwrap();
    scripts.load(&mut con).unwrap();
    let cheap = Ask {
        key: "spate:test:fast".into(),
        rate: "1000000/s".parse().unwrap(),
        want: 100,
    };
    let mut one = Vec::new();
    for _ in 0..2000 {
        let t = Instant::now();
        scripts
            .grant(&mut con, std::slice::from_ref(&cheap))
            .unwrap();
        one.push(t.elapsed());
    }
    let eight_asks: Vec<Ask> = (0..8)
        .map(|i| Ask {
            key: format!("spate:test:fast{i}"),
            ..cheap.clone()
        })
        .collect();
    let mut eight = Vec::new();
    for _ in 0..500 {
        let t = Instant::now();
        scripts.grant(&mut con, &eight_asks).unwrap();
        eight.push(t.elapsed());
    }
    one.sort();
    eight.sort();
    let pct = |v: &[Duration], p: f64| v[((v.len() as f64 - 1.0) * p) as usize];
    eprintln!(
        "lease round trip: one ask median {:?}, p99 {:?}; a pipeline of 8 median {:?}, p99 {:?}",
        pct(&one, 0.5),
        pct(&one, 0.99),
        pct(&eight, 0.5),
        pct(&eight, 0.99)
    );
    assert!(pct(&one, 0.5) < Duration::from_millis(20));
}
