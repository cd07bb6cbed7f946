//! MX resolution against a real DNS server on loopback (hickory-server in
//! process): RFC 5321 5.1 order, implicit MX, null MX, NXDOMAIN, SERVFAIL,
//! the own-hostname cut, and the batching figures: concurrent lookups of
//! the same domain from several threads cost one MX query, repeated ones
//! within the TTL cost none.

mod common;

use std::collections::HashSet;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::task::Poll;
use std::time::{Duration, Instant};

use common::dns::{Records, TestDns};
use futures_lite::future::block_on;
use spate::resolver::{
    DnsResolver, MxHost, MxResolver, Resolution, ResolverConfig, ResolverHandle,
};

const OWN: &str = "relay.test";

fn config(dns: &TestDns) -> ResolverConfig {
    ResolverConfig {
        nameservers: vec![dns.addr()],
        timeout: Duration::from_secs(2),
        attempts: 2,
        seed: Some(1),
        ..ResolverConfig::new(OWN)
    }
}

fn start(dns: &TestDns) -> DnsResolver {
    DnsResolver::start(config(dns)).expect("resolver starts")
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("ip")
}

fn hosts(r: &Resolution) -> Vec<(u16, &str)> {
    match r {
        Resolution::Hosts(h) => h.iter().map(|h| (h.preference, h.name.as_str())).collect(),
        other => panic!("expected hosts, got {other:?}"),
    }
}

/// Polls every future until all are done, concurrently, on this thread.
fn join_all<'a, T>(futures: Vec<Pin<Box<dyn Future<Output = T> + 'a>>>) -> Vec<T> {
    let mut futures: Vec<_> = futures.into_iter().map(Some).collect();
    let mut out: Vec<Option<T>> = futures.iter().map(|_| None).collect();
    block_on(std::future::poll_fn(|cx| {
        let mut pending = false;
        for (slot, result) in futures.iter_mut().zip(out.iter_mut()) {
            if let Some(f) = slot {
                match f.as_mut().poll(cx) {
                    Poll::Ready(v) => {
                        *result = Some(v);
                        *slot = None;
                    }
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    }));
    out.into_iter()
        .map(|r| r.expect("every future finished"))
        .collect()
}

#[test]
fn mx_hosts_by_preference_with_equal_preferences_shuffled() {
    let dns = TestDns::start(
        Records::new()
            .mx("multi.test", 20, "backup.multi.test")
            .mx("multi.test", 10, "mx-a.multi.test")
            .mx("multi.test", 10, "mx-b.multi.test")
            .mx("multi.test", 30, "last.multi.test")
            .a("backup.multi.test", "127.0.0.20")
            .a("mx-a.multi.test", "127.0.0.10")
            .aaaa("mx-a.multi.test", "::1")
            .a("mx-b.multi.test", "127.0.0.11")
            .a("last.multi.test", "127.0.0.30"),
    );
    let resolver = start(&dns);
    let h = resolver.handle();
    let r = block_on(h.resolve("Multi.Test.".into()));
    let order = hosts(&r);
    assert_eq!(order.len(), 4, "{r:?}");
    assert_eq!(
        order.iter().map(|(p, _)| *p).collect::<Vec<_>>(),
        vec![10, 10, 20, 30]
    );
    assert_eq!(
        &order[2..],
        &[(20, "backup.multi.test"), (30, "last.multi.test")]
    );
    let Resolution::Hosts(list) = &r else {
        unreachable!()
    };
    let a = list
        .iter()
        .find(|h| h.name == "mx-a.multi.test")
        .expect("mx-a");
    assert_eq!(a.addresses, vec![ip("127.0.0.10"), ip("::1")]);

    // Over repeated (cached) answers both orders of the two 10s appear.
    let mut firsts = HashSet::new();
    for _ in 0..64 {
        let r = block_on(h.resolve("multi.test".into()));
        firsts.insert(hosts(&r)[0].1.to_owned());
    }
    assert_eq!(
        firsts.len(),
        2,
        "equal preferences are randomized: {firsts:?}"
    );
    assert_eq!(dns.queries_of("MX"), 1, "later answers came from the cache");
}

#[test]
fn implicit_mx_when_the_domain_has_no_mx() {
    let dns = TestDns::start(
        Records::new()
            .a("plain.test", "127.0.0.7")
            .aaaa("plain.test", "::1"),
    );
    let resolver = start(&dns);
    let r = block_on(resolver.handle().resolve("plain.test".into()));
    assert_eq!(
        r,
        Resolution::Hosts(vec![MxHost {
            name: "plain.test".into(),
            preference: 0,
            addresses: vec![ip("127.0.0.7"), ip("::1")],
        }])
    );
    assert_eq!(dns.queries_for("plain.test", "MX"), 1);
    assert_eq!(dns.queries_for("plain.test", "A"), 1);
    assert_eq!(dns.queries_for("plain.test", "AAAA"), 1);
}

#[test]
fn null_mx_nxdomain_servfail_and_hosts_without_address() {
    let dns = TestDns::start(
        Records::new()
            .null_mx("nomail.test")
            .mx("ghost.test", 10, "nowhere.ghost.test")
            .servfail("broken.test")
            .mx("halfbroken.test", 10, "mx.broken-host.test")
            .servfail("mx.broken-host.test")
            // Something in the zone, so "missing.test" is an NXDOMAIN of
            // a served zone rather than REFUSED.
            .a("present.test", "127.0.0.1"),
    );
    let resolver = start(&dns);
    let h = resolver.handle();
    let names = [
        "nomail.test",
        "missing.test",
        "broken.test",
        "ghost.test",
        "halfbroken.test",
        "outside.invalid-zone",
    ];
    let r = block_on(h.resolve_batch(names.iter().map(|s| s.to_string()).collect()));
    let got: Vec<(&str, &Resolution)> = r.iter().map(|(d, r)| (d.as_str(), r)).collect();
    assert_eq!(got[0], ("nomail.test", &Resolution::NullMx));
    assert_eq!(got[1], ("missing.test", &Resolution::NoSuchDomain));
    assert!(matches!(got[2].1, Resolution::TempFail(_)), "{:?}", got[2]);
    assert_eq!(got[3], ("ghost.test", &Resolution::NoMailHosts));
    assert!(matches!(got[4].1, Resolution::TempFail(_)), "{:?}", got[4]);
    // REFUSED (not our zone) is a server problem, not an answer.
    assert!(matches!(got[5].1, Resolution::TempFail(_)), "{:?}", got[5]);
    assert!(got[0].1.is_permanent() && got[1].1.is_permanent() && got[3].1.is_permanent());
    assert!(got[2].1.is_transient() && got[4].1.is_transient());

    // Negative answers and failures are cached: asking again sends nothing.
    let before = dns.queries();
    let again = block_on(h.resolve_batch(names.iter().map(|s| s.to_string()).collect()));
    assert_eq!(again, r);
    assert_eq!(dns.queries(), before, "answered from the cache");
}

#[test]
fn own_hostname_cuts_the_mx_list() {
    let dns = TestDns::start(
        Records::new()
            .mx("ours.test", 10, "RELAY.test.")
            .mx("ours.test", 20, "backup.test")
            .mx("peer.test", 5, "primary.test")
            .mx("peer.test", 10, "relay.test")
            .mx("peer.test", 10, "sibling.test")
            .mx("peer.test", 20, "backup.test")
            .a("relay.test", "127.0.0.2")
            .a("primary.test", "127.0.0.3")
            .a("sibling.test", "127.0.0.4")
            .a("backup.test", "127.0.0.5"),
    );
    let resolver = start(&dns);
    let h = resolver.handle();
    let r = block_on(h.resolve_batch(vec!["ours.test".into(), "peer.test".into()]));
    assert_eq!(
        r[0].1,
        Resolution::NoMailHosts,
        "we are the best MX: no loop"
    );
    assert_eq!(hosts(&r[1].1), vec![(5, "primary.test")]);
}

#[test]
fn unreachable_nameserver_is_a_temporary_failure() {
    // A UDP socket nobody reads: every query times out.
    let ip = common::unique_loopback();
    let silent = std::net::UdpSocket::bind((ip, 0)).expect("bind");
    let resolver = DnsResolver::start(ResolverConfig {
        nameservers: vec![silent.local_addr().expect("addr")],
        timeout: Duration::from_millis(200),
        attempts: 1,
        ..ResolverConfig::new(OWN)
    })
    .expect("start");
    let t0 = Instant::now();
    let r = block_on(resolver.handle().resolve("any.test".into()));
    assert!(r.is_transient(), "{r:?}");
    assert!(
        t0.elapsed() < Duration::from_secs(10),
        "bounded by the timeout"
    );
}

/// `threads` threads each send `per_thread` requests at once (all futures
/// polled together), request `i` asking for `domains[i % len]`.
fn concurrent_requests(
    h: &ResolverHandle,
    domains: &[String],
    threads: usize,
    per_thread: usize,
) -> Vec<(String, Resolution)> {
    let workers: Vec<_> = (0..threads)
        .map(|t| {
            let h = h.clone();
            let domains = domains.to_vec();
            std::thread::spawn(move || {
                let futures = (0..per_thread)
                    .map(|i| {
                        let d = domains[(t * per_thread + i) % domains.len()].clone();
                        Box::pin(h.resolve_batch(vec![d])) as Pin<Box<dyn Future<Output = _> + '_>>
                    })
                    .collect();
                join_all(futures)
            })
        })
        .collect();
    workers
        .into_iter()
        .flat_map(|w| w.join().expect("worker"))
        .flatten()
        .collect()
}

#[test]
fn concurrent_lookups_of_the_same_domains_are_merged() {
    let mut records = Records::new();
    let domains: Vec<String> = (0..10).map(|i| format!("d{i}.test")).collect();
    for (i, d) in domains.iter().enumerate() {
        records = records
            .mx(d, 10, &format!("mx.{d}"))
            .a(&format!("mx.{d}"), &format!("127.0.1.{}", i + 1));
    }
    let dns = TestDns::start(records);
    let resolver = start(&dns);
    let h = resolver.handle();

    let answers = concurrent_requests(&h, &domains, 4, 250);
    assert_eq!(answers.len(), 1000);
    for (d, r) in &answers {
        assert_eq!(hosts(r), vec![(10, format!("mx.{d}").as_str())]);
    }
    let stats = h.stats();
    println!(
        "1000 concurrent requests for 10 domains: server saw {} MX, {} A, {} AAAA queries \
         ({} packets with retransmissions); resolver: {} queries, {} cache hits, {} merged",
        dns.queries_of("MX"),
        dns.queries_of("A"),
        dns.queries_of("AAAA"),
        dns.packets(),
        stats.queries,
        stats.cache_hits,
        stats.merged,
    );
    assert_eq!(dns.queries_of("MX"), 10, "one MX query per domain");
    assert_eq!(dns.queries_of("A"), 10, "one A query per exchange");
    assert_eq!(dns.queries_of("AAAA"), 10, "one AAAA query per exchange");
    assert_eq!(stats.mx_queries, 10);
    assert_eq!(stats.queries, 30);
    assert_eq!(stats.requests, 1000);
    assert_eq!(stats.cache_hits + stats.merged + stats.mx_queries, 1000);

    // Within the TTL: no query at all.
    let before = dns.queries();
    let again = concurrent_requests(&h, &domains, 4, 250);
    assert_eq!(again.len(), 1000);
    assert_eq!(
        dns.queries(),
        before,
        "repeated lookups come from the cache"
    );
    assert_eq!(h.stats().cache_hits, stats.cache_hits + 1000);
}

#[test]
fn tiny_queue_and_one_lookup_at_a_time_still_answer_everyone() {
    let mut records = Records::new();
    let domains: Vec<String> = (0..10).map(|i| format!("q{i}.test")).collect();
    for d in &domains {
        records = records
            .mx(d, 10, &format!("mx.{d}"))
            .a(&format!("mx.{d}"), "127.0.0.9");
    }
    let dns = TestDns::start(records);
    let resolver = DnsResolver::start(ResolverConfig {
        queue_depth: 1,
        max_in_flight: 1,
        ..config(&dns)
    })
    .expect("start");
    let h = resolver.handle();
    let answers = concurrent_requests(&h, &domains, 3, 100);
    assert_eq!(answers.len(), 300);
    assert!(answers
        .iter()
        .all(|(_, r)| matches!(r, Resolution::Hosts(_))));
    assert_eq!(dns.queries_of("MX"), 10);
    assert_eq!(h.stats().in_flight, 0);
}

#[test]
fn hundred_thousand_messages_to_a_thousand_domains() {
    // 1,000 domains on 100 shared exchanges plus one common backup, as on
    // a hosting provider.
    let mut records = Records::new();
    for i in 0..1000 {
        records = records
            .mx(
                &format!("dom{i}.test"),
                10,
                &format!("mx{}.hosting.test", i % 100),
            )
            .mx(&format!("dom{i}.test"), 20, "backup.hosting.test");
    }
    for j in 0..100 {
        records = records.a(
            &format!("mx{j}.hosting.test"),
            &format!("127.0.2.{}", j + 1),
        );
    }
    records = records.a("backup.hosting.test", "127.0.3.1");
    let dns = TestDns::start(records);
    let resolver = start(&dns);
    let h = resolver.handle();

    // 4 "cores", each resolving 25 queue runs of 1,000 messages; message
    // n goes to domain (n * 7919) % 1000, so every batch mixes domains.
    let messages = 100_000usize;
    let t0 = Instant::now();
    let workers: Vec<_> = (0..4)
        .map(|core| {
            let h = h.clone();
            std::thread::spawn(move || {
                let batches = (0..25)
                    .map(|b| {
                        let domains = (0..1000)
                            .map(|m| {
                                let n = (core * 25 + b) * 1000 + m;
                                format!("dom{}.test", (n * 7919) % 1000)
                            })
                            .collect();
                        Box::pin(h.resolve_batch(domains)) as Pin<Box<dyn Future<Output = _> + '_>>
                    })
                    .collect();
                join_all(batches)
            })
        })
        .collect();
    let mut answered = 0;
    for w in workers {
        for batch in w.join().expect("core") {
            for (d, r) in batch {
                let list = hosts(&r);
                assert_eq!(list.len(), 2, "{d}: {r:?}");
                assert_eq!(list[1], (20, "backup.hosting.test"));
                answered += 1;
            }
        }
    }
    let elapsed = t0.elapsed();
    assert_eq!(answered, messages);
    let s = h.stats();
    let mx = dns.queries_of("MX");
    let total = dns.queries();
    println!(
        "{messages} messages to 1000 domains in {elapsed:?}: server saw {mx} MX queries, {} A, {} AAAA, \
         {total} in all ({} packets with UDP retransmissions) = {:.4} MX queries and {:.4} \
         queries per message; resolver stats {s:?}",
        dns.queries_of("A"),
        dns.queries_of("AAAA"),
        dns.packets(),
        mx as f64 / messages as f64,
        total as f64 / messages as f64,
    );
    assert!(mx <= 1000, "at most one MX query per domain, got {mx}");
    assert_eq!(mx, 1000, "every domain was asked once");
    assert_eq!(dns.queries_of("A"), 101, "shared exchanges are asked once");
    assert_eq!(s.mx_queries, 1000);
}

#[test]
fn dropping_every_handle_ends_the_thread() {
    let dns = TestDns::start(Records::new().a("plain.test", "127.0.0.7"));
    let resolver = start(&dns);
    let h1 = resolver.handle();
    let h2 = h1.clone();
    // A handle works from another thread.
    let other = std::thread::spawn(move || block_on(h2.resolve("plain.test".into())));
    assert!(matches!(
        other.join().expect("thread"),
        Resolution::Hosts(_)
    ));
    drop(h1);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(resolver.join().is_ok());
    });
    assert_eq!(
        rx.recv_timeout(Duration::from_secs(10)),
        Ok(true),
        "the resolver thread ended cleanly"
    );
}

#[test]
fn handles_work_from_glommio_executors() {
    // What the cores do: await the resolver on glommio, which must not
    // touch tokio (hickory on glommio panics); the answer wakes the
    // executor from the resolver thread.
    let dns = TestDns::start(
        Records::new()
            .mx("glommio.test", 10, "mx.glommio.test")
            .a("mx.glommio.test", "127.0.0.8"),
    );
    let resolver = start(&dns);
    let executors: Vec<_> = (0..2)
        .map(|core| {
            let h = resolver.handle();
            glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
                .name(&format!("resolver-test-{core}"))
                .io_memory(1 << 20)
                .spawn(move || async move {
                    let batch = h
                        .resolve_batch(vec!["glommio.test".into(), "GLOMMIO.test.".into()])
                        .await;
                    let single = h.resolve("glommio.test".into()).await;
                    (batch, single)
                })
                .expect("glommio executor")
        })
        .collect();
    for e in executors {
        let (batch, single) = e.join().expect("executor ran");
        assert_eq!(batch.len(), 2);
        for (_, r) in batch.iter().chain([(String::new(), single)].iter()) {
            assert_eq!(hosts(r), vec![(10, "mx.glommio.test")]);
        }
    }
    assert_eq!(dns.queries_of("MX"), 1);
}
