//! Egress sources and pools over real sockets, judged by `spate sink`'s
//! counters per client address: mail leaves from each source's address
//! with its EHLO name, in the pool's weights; a tenant header, a route and
//! an authenticated user each choose a pool (the header never reaches
//! the receiver); a new source's warm-up holds its daily volume, also
//! across a `kill -9` and restart, and what it holds back waits in the
//! queue without counting an attempt; the delivery log and the metrics
//! name the source.

mod common;
#[path = "common/spate_sink.rs"]
mod spate_sink;

use std::net::Ipv4Addr;
use std::time::Duration;

use base64::Engine as _;
use common::{unique_loopback, Client, TestServer, Tweaks};
use spate_sink::SpateSink;

const WAIT: Duration = Duration::from_secs(60);

/// Three source addresses of this test's own.
fn addresses() -> [Ipv4Addr; 3] {
    [unique_loopback(), unique_loopback(), unique_loopback()]
}

/// `[egress]` with sources ip1..ip3 (EHLO mtaN.egress.test) and pools:
/// main = ip1 x3 + ip2, solo = ip3; `more` adds pools, tenants, users.
fn egress(ips: &[Ipv4Addr; 3], more: &str) -> String {
    let mut text = String::from(
        "[egress]\ndefault_pool = \"main\"\ntenant_header = \"X-Tenant\"\n\
         [egress.pool.main]\nsources = { ip1 = 3, ip2 = 1 }\n\
         [egress.pool.solo]\nsources = { ip3 = 1 }\n",
    );
    for (i, ip) in ips.iter().enumerate() {
        let n = i + 1;
        text.push_str(&format!(
            "[[egress.source]]\nname = \"ip{n}\"\nbind = \"{ip}\"\nehlo = \"mta{n}.egress.test\"\n"
        ));
    }
    text + more
}

/// A message with headers of our choice.
fn message(marker: &str, headers: &str) -> Vec<u8> {
    format!(
        "From: <sender@client.test>\r\nTo: <rcpt@far.example>\r\n{headers}\
         Subject: {marker}\r\nMessage-ID: <{marker}@client.test>\r\n\r\nbody {marker}\r\n"
    )
    .into_bytes()
}

fn send(server: &TestServer, to: &str, marker: &str, headers: &str, n: usize) {
    let mut c = server.session();
    for i in 0..n {
        c.send_message(
            "sender@client.test",
            &[to],
            &message(&format!("{marker}-{i}"), headers),
        )
        .unwrap_or_else(|r| panic!("refused: {r:?}"));
    }
    c.quit();
}

/// Messages the sink accepted from `ip`.
fn from(counters: &serde_json::Value, ip: Ipv4Addr) -> u64 {
    counters["sources"][ip.to_string()]["messages"]
        .as_u64()
        .unwrap_or(0)
}

#[test]
fn mail_leaves_from_each_source_in_the_pools_weights_with_its_ehlo_name() {
    let ips = addresses();
    let sink = SpateSink::start(unique_loopback(), &["--cores", "1"]);
    let server = TestServer::start(
        Tweaks::default()
            .extra(&sink.route("far.example"))
            .extra(&egress(&ips, "")),
    );
    send(&server, "rcpt@far.example", "weighted", "", 40);
    let counters = sink.wait_for(40, WAIT);
    let (one, two, three) = (
        from(&counters, ips[0]),
        from(&counters, ips[1]),
        from(&counters, ips[2]),
    );
    eprintln!("3:1 over 40 messages: ip1 {one}, ip2 {two}, ip3 {three}");
    // Each core rotates 3:1 on its own: within two of 30:10.
    assert!((28..=32).contains(&one), "{counters:#}");
    assert_eq!(one + two, 40, "{counters:#}");
    assert_eq!(three, 0, "ip3 is in another pool");
    for (i, ip) in ips[..2].iter().enumerate() {
        let helo = &counters["sources"][ip.to_string()]["helo"];
        let name = format!("mta{}.egress.test", i + 1);
        assert!(helo[&name].as_u64() >= Some(1), "{ip} said {helo}");
        assert_eq!(helo.as_object().map(|o| o.len()), Some(1), "{helo}");
    }
}

#[test]
fn a_tenant_header_chooses_a_pool_and_never_leaves() {
    let ips = addresses();
    let sink = SpateSink::keeping(unique_loopback(), &["--cores", "1"]);
    let server = TestServer::start(
        Tweaks::default()
            .extra(&sink.route("far.example"))
            .extra(&egress(&ips, "[egress.tenant.acme]\npool = \"solo\"\n")),
    );
    send(&server, "rcpt@far.example", "acme", "X-Tenant: ACME\r\n", 5);
    send(
        &server,
        "rcpt@far.example",
        "nobody",
        "X-Tenant: unknown\r\n",
        4,
    );
    let counters = sink.wait_for(9, WAIT);
    assert_eq!(from(&counters, ips[2]), 5, "acme's pool: {counters:#}");
    assert_eq!(
        from(&counters, ips[0]) + from(&counters, ips[1]),
        4,
        "the default pool"
    );
    let kept = sink.kept();
    assert_eq!(kept.len(), 9);
    for m in &kept {
        assert!(
            !m.content.to_ascii_lowercase().contains("x-tenant"),
            "{}",
            m.content
        );
        if m.content.contains("Subject: acme-") {
            assert_eq!(m.peer, ips[2].to_string());
            assert_eq!(m.helo, "mta3.egress.test");
        }
    }
}

#[test]
fn a_route_chooses_a_pool() {
    let ips = addresses();
    let sink = SpateSink::start(unique_loopback(), &["--cores", "1"]);
    let route = format!(
        "[[route]]\ndomain = \"partner.example\"\nto = \"{}\"\npool = \"solo\"\n",
        sink.addr
    );
    let server = TestServer::start(
        Tweaks::default()
            .extra(&sink.route("far.example"))
            .extra(&route)
            .extra(&egress(&ips, "")),
    );
    send(&server, "rcpt@partner.example", "partner", "", 6);
    send(&server, "rcpt@far.example", "far", "", 2);
    let counters = sink.wait_for(8, WAIT);
    assert_eq!(from(&counters, ips[2]), 6, "the route's pool: {counters:#}");
    assert_eq!(from(&counters, ips[0]) + from(&counters, ips[1]), 2);
}

#[test]
fn an_authenticated_user_chooses_a_pool_before_a_tenant_header() {
    let ips = addresses();
    let sink = SpateSink::start(unique_loopback(), &["--cores", "1"]);
    let server = TestServer::start(
        Tweaks::default()
            .no_relay()
            .user("carol", "carol-pw")
            .listener("submission")
            .extra(&sink.route("far.example"))
            .extra(&egress(
                &ips,
                "[egress.user.carol]\npool = \"solo\"\n[egress.tenant.acme]\npool = \"main\"\n",
            )),
    );
    let mut c = Client::connect(server.listener("submission"));
    assert_eq!(c.read_reply().code, 220);
    c.ehlo("client.test");
    let token = base64::engine::general_purpose::STANDARD.encode("\0carol\0carol-pw");
    let r = c.cmd(&format!("AUTH PLAIN {token}"));
    assert_eq!(r.code, 235, "{r:?}");
    for i in 0..4 {
        c.send_message(
            "carol@example.test",
            &["rcpt@far.example"],
            &message(&format!("carol-{i}"), "X-Tenant: acme\r\n"),
        )
        .unwrap_or_else(|r| panic!("refused: {r:?}"));
    }
    c.quit();
    let counters = sink.wait_for(4, WAIT);
    assert_eq!(from(&counters, ips[2]), 4, "carol's pool: {counters:#}");
}

#[test]
fn a_warmup_holds_a_new_sources_daily_volume_without_counting_attempts() {
    let ips = addresses();
    let fresh = unique_loopback();
    let sink = SpateSink::start(unique_loopback(), &["--cores", "1"]);
    let today = chrono::Utc::now().format("%Y-%m-%d");
    let mut server = TestServer::start(
        Tweaks::default()
            .cores(1)
            .extra(&sink.route("far.example"))
            .extra("[delivery]\nminimal_backoff = \"1h\"\nmaximal_backoff = \"2h\"\n")
            .extra("[metrics]\naddress = \"127.0.0.1:0\"\n")
            .extra(&egress(
                &ips,
                &format!(
                    "[[egress.source]]\nname = \"new\"\nbind = \"{}\"\n\
                     warmup_start = {today}\nwarmup = [\"5/day\", \"50/day\"]\n\
                     [egress.pool.warming]\nsources = {{ new = 1 }}\n\
                     [egress.tenant.fresh]\npool = \"warming\"\n",
                    fresh
                ),
            )),
    );
    send(
        &server,
        "rcpt@far.example",
        "warm",
        "X-Tenant: fresh\r\n",
        12,
    );
    let counters = sink.wait_for(5, WAIT);
    // Give the other seven every chance to leave: they must not.
    std::thread::sleep(Duration::from_secs(2));
    let counters_later = sink.counters();
    assert_eq!(
        counters_later["messages"], 5,
        "{counters:#}\n{counters_later:#}"
    );
    assert_eq!(from(&counters_later, fresh), 5);
    let queued = server.queue_list();
    assert_eq!(queued.len(), 7, "{queued:?}");
    for q in &queued {
        assert_eq!(q.raw["attempts"], 0, "held, not tried: {:?}", q.raw);
    }
    let log = server.stderr_text();
    assert!(!log.contains("deferred"), "a held message was deferred");
    let delivered = server.stderr_lines_with("delivered");
    assert_eq!(delivered.len(), 5, "{delivered:#?}");
    assert!(
        delivered.iter().all(|l| l.contains("source=\"new\"")),
        "{delivered:#?}"
    );
    let metrics = common::scrape_metrics(server.listener("metrics"));
    let sample = "spate_delivery_source_recipients_total{source=\"new\",outcome=\"delivered\"}";
    assert_eq!(metrics.get(sample), Some(&5.0), "{metrics:#?}");
    // A crash and a restart on the same day do not give the source its
    // day's volume again.
    server.kill9();
    server.restart();
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(sink.counters()["messages"], 5, "{:#}", sink.counters());
    assert_eq!(server.queue_list().len(), 7);
}

/// Polls `done` every 100 ms; panics with `what` after [`WAIT`].
fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + WAIT;
    while !done() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `spate queue ARGS`; its output.
fn queue(server: &TestServer, args: &[&str]) -> String {
    let mut all = vec!["queue"];
    all.extend_from_slice(args);
    let out = server.spate_command(&all);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "spate {all:?}: {text}");
    text
}

#[test]
fn a_source_suspended_for_a_site_gives_way_to_the_others_and_a_site_suspension_stops_all() {
    let ips = addresses();
    let sink = SpateSink::start(unique_loopback(), &["--cores", "1"]);
    let server = TestServer::start(
        Tweaks::default()
            .extra(&sink.route("far.example"))
            .extra(&egress(&ips, "")),
    );
    let site = format!("[{}]:{}", sink.addr.ip(), sink.addr.port());
    let one = format!("{site}@ip1");
    let said = queue(&server, &["suspend", &one, "--for", "2h"]);
    assert!(said.contains("suspended for 7200 s"), "{said}");
    send(&server, "rcpt@far.example", "around", "", 8);
    let counters = sink.wait_for(8, WAIT);
    assert_eq!(
        from(&counters, ips[1]),
        8,
        "ip1 is suspended here: {counters:#}"
    );
    assert!(queue(&server, &["suspensions"]).contains(&one));
    // The site alone: every source waits.
    queue(&server, &["resume", &one]);
    queue(&server, &["suspend", &site, "--for", "2h"]);
    send(&server, "rcpt@far.example", "stopped", "", 4);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(sink.counters()["messages"], 8, "sent to a suspended site");
    queue(&server, &["resume", &site]);
    let counters = sink.wait_for(12, WAIT);
    assert_eq!(from(&counters, ips[0]) + from(&counters, ips[1]), 12);
}

#[test]
fn a_slow_down_reply_over_one_source_suspends_the_site_for_that_source_only() {
    let ips = addresses();
    let sink = SpateSink::start(
        unique_loopback(),
        &[
            "--cores",
            "1",
            "--reply",
            "rcpt:1:421 4.7.0 [TSS04] Messages from you temporarily deferred",
        ],
    );
    let server = TestServer::start(
        Tweaks::default()
            .cores(1)
            .extra(&sink.route("far.example"))
            .extra(&egress(&ips, "")),
    );
    let site = format!("[{}]:{}", sink.addr.ip(), sink.addr.port());
    send(&server, "rcpt@far.example", "deferred", "", 1);
    let suspended_one = || {
        let list = queue(&server, &["suspensions"]);
        [1, 2]
            .iter()
            .filter(|n| list.contains(&format!("{site}@ip{n}")))
            .count()
    };
    wait_until("one source suspended", || suspended_one() == 1);
    // Retried at once: the other source takes it, and is told the same.
    queue(&server, &["flush"]);
    wait_until("both sources suspended", || suspended_one() == 2);
    let list = queue(&server, &["suspensions"]);
    eprintln!("{list}");
    assert!(
        !list.contains(&format!("{site} ")),
        "not the whole site: {list}"
    );
    let counters = sink.counters();
    for ip in &ips[..2] {
        let source = &counters["sources"][ip.to_string()];
        assert_eq!(source["connections"], 1, "{counters:#}");
    }
}

#[test]
fn a_reload_moves_a_pool_to_other_sources() {
    let ips = addresses();
    let sink = SpateSink::start(unique_loopback(), &["--cores", "1"]);
    let server = TestServer::start(
        Tweaks::default()
            .extra(&sink.route("far.example"))
            .extra(&egress(&ips, "")),
    );
    send(&server, "rcpt@far.example", "before", "", 4);
    let counters = sink.wait_for(4, WAIT);
    assert_eq!(from(&counters, ips[2]), 0);
    let moved = server
        .config_text()
        .replace("sources = { ip1 = 3, ip2 = 1 }", "sources = { ip3 = 1 }");
    std::fs::write(&server.config_path, moved).unwrap();
    server.signal(libc::SIGHUP);
    server.wait_stdout_line("reloaded", WAIT);
    send(&server, "rcpt@far.example", "after", "", 4);
    let counters = sink.wait_for(8, WAIT);
    assert_eq!(from(&counters, ips[2]), 4, "{counters:#}");
    let helo = &counters["sources"][ips[2].to_string()]["helo"];
    assert!(helo["mta3.egress.test"].as_u64() >= Some(1), "{helo}");
}

#[test]
fn mail_waiting_for_a_source_that_gets_suspended_leaves_through_another() {
    let ips = addresses();
    let sink = SpateSink::start(unique_loopback(), &["--cores", "1", "--delay", "dot:200ms"]);
    let server = TestServer::start(
        Tweaks::default()
            .cores(1)
            .extra(&sink.route("far.example"))
            .extra("[delivery]\nmax_connections_per_destination = 1\n")
            .extra(&egress(&ips, "")),
    );
    // 3:1 and one connection each at 200 ms a message: ip1's queue backs up.
    send(&server, "rcpt@far.example", "backlog", "", 16);
    let site = format!("[{}]:{}", sink.addr.ip(), sink.addr.port());
    queue(&server, &["suspend", &format!("{site}@ip1"), "--for", "2h"]);
    let counters = sink.wait_for(16, Duration::from_secs(30));
    let (one, two) = (from(&counters, ips[0]), from(&counters, ips[1]));
    eprintln!("ip1 {one} (suspended early on), ip2 {two}");
    assert_eq!(one + two, 16, "{counters:#}");
    assert!(two > 4, "ip2 took ip1's backlog: {counters:#}");
}
