//! The sans-IO heart of the resolver thread: takes every waiting request,
//! answers what the caches know, merges the rest into the fewest DNS
//! queries (one MX query per domain, one address lookup per exchange, no
//! matter how many requests ask), and assembles each request's answer when
//! its last domain is known. It refuses to do I/O, read a clock or spawn
//! anything: the driver in `thread.rs` sends the queries it polls out.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use super::cache::{Cache, CacheConfig, Lifetime};
use super::rules::{self, Candidates, HostAddrs, MxRecord, Rng};
use super::{Resolution, ResolverStats};

/// A lookup the driver must perform; names are normalized (lower case, no
/// trailing dot).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Query {
    /// The MX records of a domain.
    Mx(String),
    /// The A and AAAA records of a host (two DNS queries, sent together).
    Host(String),
}

/// The outcome of an MX query, reduced to what the rules need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MxAnswer {
    /// MX records were found; `ttl` is the smallest record TTL.
    Records {
        records: Vec<MxRecord>,
        ttl: Duration,
    },
    /// The name exists but has no MX records: implicit MX.
    NoData { negative_ttl: Option<Duration> },
    /// NXDOMAIN (also used for names that cannot be a domain at all).
    NxDomain { negative_ttl: Option<Duration> },
    /// SERVFAIL, REFUSED, timeout, network error.
    TempFail(String),
}

/// The outcome of one address query (A or AAAA).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AddrAnswer {
    Found {
        addresses: Vec<IpAddr>,
        ttl: Duration,
    },
    /// NXDOMAIN or NoData: this family has no address.
    Negative {
        negative_ttl: Option<Duration>,
    },
    TempFail(String),
}

/// The A and AAAA outcomes of one host, joined.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostAnswer {
    pub addrs: HostAddrs,
    pub lifetime: Lifetime,
}

impl HostAnswer {
    /// Joins the two address families. Any transient failure makes the
    /// whole answer short-lived (the missing family may come back), even
    /// when the other family gave addresses.
    pub fn join(a: AddrAnswer, aaaa: AddrAnswer) -> HostAnswer {
        let mut addrs = HostAddrs::default();
        let mut positive: Option<Duration> = None;
        let mut negative: Option<Option<Duration>> = None;
        for answer in [a, aaaa] {
            match answer {
                AddrAnswer::Found { addresses, ttl } => {
                    addrs.addresses.extend(addresses);
                    positive = Some(positive.map_or(ttl, |p| p.min(ttl)));
                }
                AddrAnswer::Negative { negative_ttl } => {
                    negative = Some(match (negative.flatten(), negative_ttl) {
                        (Some(x), Some(y)) => Some(x.min(y)),
                        (x, y) => x.or(y),
                    });
                }
                AddrAnswer::TempFail(why) => {
                    addrs.temp_fail.get_or_insert(why);
                }
            }
        }
        let lifetime = if addrs.temp_fail.is_some() {
            Lifetime::TempFail
        } else if let Some(ttl) = positive {
            Lifetime::Positive(ttl)
        } else {
            Lifetime::Negative(negative.flatten())
        };
        HostAnswer { addrs, lifetime }
    }
}

/// A request still waiting for some of its domains.
struct Pending<T> {
    reply: T,
    /// The domains as the caller spelled them, with their answers so far.
    answers: Vec<(String, Option<Resolution>)>,
    missing: usize,
}

/// A domain being resolved, and who waits for it.
struct Work {
    /// (request id, index in that request).
    waiters: Vec<(u64, usize)>,
    state: WorkState,
}

enum WorkState {
    AwaitingMx,
    AwaitingHosts {
        candidates: Vec<MxRecord>,
        /// The shortest time any answer used so far may be cached.
        ttl: Duration,
        found: HashMap<String, HostAddrs>,
        missing: usize,
    },
}

/// Merges lookups across requests and answers them; see the module header.
/// `T` is whatever the driver needs to send a reply (a oneshot sender).
pub struct Batcher<T> {
    own_hostname: String,
    domains: Cache<Resolution>,
    hosts: Cache<HostAddrs>,
    rng: Rng,
    next_id: u64,
    requests: HashMap<u64, Pending<T>>,
    work: HashMap<String, Work>,
    /// Host lookups in flight -> the domains waiting for them.
    host_waiters: HashMap<String, Vec<String>>,
    queries: VecDeque<Query>,
    ready: VecDeque<u64>,
    stats: ResolverStats,
}

impl<T> Batcher<T> {
    /// `own_hostname` drives the RFC 5321 own-host cut; `rng` orders
    /// equal-preference hosts (seeded in tests).
    pub fn new(own_hostname: &str, cache: CacheConfig, rng: Rng) -> Self {
        Batcher {
            own_hostname: rules::normalize(own_hostname),
            domains: Cache::new(cache),
            hosts: Cache::new(cache),
            rng,
            next_id: 0,
            requests: HashMap::new(),
            work: HashMap::new(),
            host_waiters: HashMap::new(),
            queries: VecDeque::new(),
            ready: VecDeque::new(),
            stats: ResolverStats::default(),
        }
    }

    /// Counters so far (queries are counted when polled out).
    pub fn stats(&self) -> ResolverStats {
        ResolverStats {
            cached_domains: self.domains.len() as u64,
            cached_hosts: self.hosts.len() as u64,
            in_flight: self.work.len() as u64,
            ..self.stats
        }
    }

    /// Requests taken and not yet answered.
    pub fn pending(&self) -> usize {
        self.requests.len()
    }

    /// Nothing waits and nothing is being resolved.
    pub fn is_idle(&self) -> bool {
        self.requests.is_empty() && self.work.is_empty() && self.ready.is_empty()
    }

    /// Takes a request: cached domains are answered at once, domains
    /// already being resolved (for this or any other request) are joined,
    /// the others start an MX query.
    pub fn handle_request(&mut self, reply: T, domains: Vec<String>, now: Instant) {
        let id = self.next_id;
        self.next_id += 1;
        self.stats.requests += 1;
        self.stats.domains += domains.len() as u64;
        let mut pending = Pending {
            reply,
            answers: Vec::with_capacity(domains.len()),
            missing: 0,
        };
        for (index, asked) in domains.into_iter().enumerate() {
            let key = rules::normalize(&asked);
            let mut answer = None;
            if key.is_empty() {
                answer = Some(Resolution::NoSuchDomain);
            } else if let Some(cached) = self.domains.get(&key, now) {
                self.stats.cache_hits += 1;
                answer = Some(cached.clone());
            } else if let Some(work) = self.work.get_mut(&key) {
                self.stats.merged += 1;
                work.waiters.push((id, index));
            } else {
                self.work.insert(
                    key.clone(),
                    Work {
                        waiters: vec![(id, index)],
                        state: WorkState::AwaitingMx,
                    },
                );
                self.queries.push_back(Query::Mx(key));
            }
            if answer.is_none() {
                pending.missing += 1;
            }
            pending.answers.push((asked, answer));
        }
        let done = pending.missing == 0;
        self.requests.insert(id, pending);
        if done {
            self.ready.push_back(id);
        }
    }

    /// The next DNS lookup to perform, if any.
    pub fn poll_query(&mut self) -> Option<Query> {
        let q = self.queries.pop_front()?;
        match q {
            Query::Mx(_) => {
                self.stats.mx_queries += 1;
                self.stats.queries += 1;
            }
            Query::Host(_) => {
                self.stats.address_queries += 2;
                self.stats.queries += 2;
            }
        }
        Some(q)
    }

    /// The MX answer for `domain` (as polled out in [`Query::Mx`]).
    pub fn handle_mx(&mut self, domain: &str, answer: MxAnswer, now: Instant) {
        if !self.work.contains_key(domain) {
            return;
        }
        let cfg = *self.domains.config();
        let (candidates, ttl) = match answer {
            MxAnswer::NxDomain { negative_ttl } => {
                let ttl = cfg.ttl(Lifetime::Negative(negative_ttl));
                return self.finish(domain, Resolution::NoSuchDomain, ttl, now);
            }
            MxAnswer::TempFail(why) => {
                let ttl = cfg.ttl(Lifetime::TempFail);
                return self.finish(domain, Resolution::TempFail(why), ttl, now);
            }
            MxAnswer::NoData { negative_ttl } => (
                rules::implicit_mx(domain, &self.own_hostname),
                cfg.ttl(Lifetime::Negative(negative_ttl)),
            ),
            MxAnswer::Records { records, ttl } if records.is_empty() => (
                rules::implicit_mx(domain, &self.own_hostname),
                cfg.ttl(Lifetime::Positive(ttl)),
            ),
            MxAnswer::Records { records, ttl } => (
                rules::candidates(records, &self.own_hostname),
                cfg.ttl(Lifetime::Positive(ttl)),
            ),
        };
        let candidates = match candidates {
            Candidates::NullMx => return self.finish(domain, Resolution::NullMx, ttl, now),
            Candidates::NoMailHosts => {
                return self.finish(domain, Resolution::NoMailHosts, ttl, now)
            }
            Candidates::Hosts(c) => c,
        };
        let mut found = HashMap::new();
        let mut missing = 0;
        let mut ttl = ttl;
        for c in &candidates {
            if let Some((addrs, left)) = self.hosts.get_with_ttl(&c.exchange, now) {
                self.stats.host_cache_hits += 1;
                found.insert(c.exchange.clone(), addrs.clone());
                ttl = ttl.min(left);
            } else if let Some(waiting) = self.host_waiters.get_mut(&c.exchange) {
                self.stats.host_merged += 1;
                waiting.push(domain.to_owned());
                missing += 1;
            } else {
                self.host_waiters
                    .insert(c.exchange.clone(), vec![domain.to_owned()]);
                self.queries.push_back(Query::Host(c.exchange.clone()));
                missing += 1;
            }
        }
        if let Some(work) = self.work.get_mut(domain) {
            work.state = WorkState::AwaitingHosts {
                candidates,
                ttl,
                found,
                missing,
            };
        }
        if missing == 0 {
            self.complete(domain, now);
        }
    }

    /// The joined A/AAAA answer for `host` (as polled out in
    /// [`Query::Host`]).
    pub fn handle_host(&mut self, host: &str, answer: HostAnswer, now: Instant) {
        let cfg = *self.hosts.config();
        let host_ttl = cfg.ttl(answer.lifetime);
        self.hosts
            .insert(host.to_owned(), answer.addrs.clone(), answer.lifetime, now);
        let Some(domains) = self.host_waiters.remove(host) else {
            return;
        };
        for domain in domains {
            let Some(work) = self.work.get_mut(&domain) else {
                continue;
            };
            let WorkState::AwaitingHosts {
                found,
                missing,
                ttl,
                ..
            } = &mut work.state
            else {
                continue;
            };
            if found
                .insert(host.to_owned(), answer.addrs.clone())
                .is_none()
            {
                *missing -= 1;
            }
            *ttl = (*ttl).min(host_ttl);
            if *missing == 0 {
                self.complete(&domain, now);
            }
        }
    }

    /// The next finished request: the reply token and every domain with
    /// its resolution, equal-preference hosts freshly shuffled for this
    /// request so load spreads across them.
    pub fn poll_reply(&mut self) -> Option<(T, Vec<(String, Resolution)>)> {
        let id = self.ready.pop_front()?;
        let pending = self.requests.remove(&id)?;
        let answers = pending
            .answers
            .into_iter()
            .map(|(asked, answer)| {
                // Every slot was filled before the request became ready.
                let mut answer = answer
                    .unwrap_or_else(|| Resolution::TempFail("resolver lost the answer".into()));
                if let Resolution::Hosts(hosts) = &mut answer {
                    rules::shuffle_equal(hosts, &mut self.rng);
                }
                (asked, answer)
            })
            .collect();
        Some((pending.reply, answers))
    }

    /// All hosts of `domain` are known: assemble, cache, answer.
    fn complete(&mut self, domain: &str, now: Instant) {
        let Some(work) = self.work.get(domain) else {
            return;
        };
        let WorkState::AwaitingHosts {
            candidates,
            ttl,
            found,
            ..
        } = &work.state
        else {
            return;
        };
        let resolution = rules::assemble(candidates, |h| found.get(h));
        let ttl = *ttl;
        self.finish(domain, resolution, ttl, now);
    }

    /// Caches `resolution` for `ttl` and hands it to every waiter.
    fn finish(&mut self, domain: &str, resolution: Resolution, ttl: Duration, now: Instant) {
        let ttl = match resolution {
            Resolution::TempFail(_) => ttl.min(self.domains.config().temp_fail),
            _ => ttl,
        };
        self.domains
            .insert_for(domain.to_owned(), resolution.clone(), ttl, now);
        let Some(work) = self.work.remove(domain) else {
            return;
        };
        for (id, index) in work.waiters {
            let Some(pending) = self.requests.get_mut(&id) else {
                continue;
            };
            if let Some(slot) = pending.answers.get_mut(index) {
                if slot.1.is_none() {
                    slot.1 = Some(resolution.clone());
                    pending.missing -= 1;
                    if pending.missing == 0 {
                        self.ready.push_back(id);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resolver::MxHost;
    use std::net::Ipv4Addr;

    const S: fn(u64) -> Duration = Duration::from_secs;

    fn batcher() -> Batcher<u32> {
        Batcher::new("me.test", CacheConfig::default(), Rng::from_seed(1))
    }

    fn ip(last: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(127, 0, 0, last))
    }

    fn found(last: u8, ttl: u64) -> HostAnswer {
        HostAnswer::join(
            AddrAnswer::Found {
                addresses: vec![ip(last)],
                ttl: S(ttl),
            },
            AddrAnswer::Negative { negative_ttl: None },
        )
    }

    fn drain(b: &mut Batcher<u32>) -> Vec<Query> {
        std::iter::from_fn(|| b.poll_query()).collect()
    }

    fn replies(b: &mut Batcher<u32>) -> Vec<(u32, Vec<(String, Resolution)>)> {
        std::iter::from_fn(|| b.poll_reply()).collect()
    }

    fn mx(list: &[(u16, &str)], ttl: u64) -> MxAnswer {
        MxAnswer::Records {
            records: list.iter().map(|(p, e)| MxRecord::new(*p, e)).collect(),
            ttl: S(ttl),
        }
    }

    #[test]
    fn concurrent_requests_for_one_domain_make_one_query() {
        let t0 = Instant::now();
        let mut b = batcher();
        for r in 0..100 {
            b.handle_request(r, vec!["A.test".into(), "a.test.".into()], t0);
        }
        assert_eq!(drain(&mut b), vec![Query::Mx("a.test".into())]);
        b.handle_mx("a.test", mx(&[(10, "mx.a.test")], 300), t0);
        assert_eq!(drain(&mut b), vec![Query::Host("mx.a.test".into())]);
        assert!(replies(&mut b).is_empty(), "no answer before addresses");
        b.handle_host("mx.a.test", found(5, 300), t0);
        let r = replies(&mut b);
        assert_eq!(r.len(), 100);
        for (_, answers) in &r {
            assert_eq!(answers[0].0, "A.test", "caller's spelling kept");
            assert_eq!(
                answers[1].1,
                Resolution::Hosts(vec![MxHost {
                    name: "mx.a.test".into(),
                    preference: 10,
                    addresses: vec![ip(5)]
                }])
            );
        }
        let s = b.stats();
        assert_eq!((s.mx_queries, s.address_queries), (1, 2));
        assert_eq!(s.merged, 199);
        assert!(b.is_idle());

        // Within the TTL: from the cache, no query.
        b.handle_request(7, vec!["a.test".into()], t0 + S(299));
        assert!(drain(&mut b).is_empty());
        assert_eq!(replies(&mut b).len(), 1);
        assert_eq!(b.stats().cache_hits, 1);
        // After it: asked again.
        b.handle_request(8, vec!["a.test".into()], t0 + S(300));
        assert_eq!(drain(&mut b), vec![Query::Mx("a.test".into())]);
    }

    #[test]
    fn shared_exchanges_are_looked_up_once() {
        let t0 = Instant::now();
        let mut b = batcher();
        b.handle_request(1, vec!["a.test".into(), "b.test".into()], t0);
        assert_eq!(drain(&mut b).len(), 2);
        b.handle_mx("a.test", mx(&[(10, "mx.shared.test")], 300), t0);
        b.handle_mx("b.test", mx(&[(10, "mx.shared.test")], 300), t0);
        assert_eq!(drain(&mut b), vec![Query::Host("mx.shared.test".into())]);
        b.handle_host("mx.shared.test", found(9, 300), t0);
        let r = replies(&mut b);
        assert_eq!(r.len(), 1);
        assert!(r[0]
            .1
            .iter()
            .all(|(_, a)| matches!(a, Resolution::Hosts(_))));
        assert_eq!(b.stats().host_merged, 1);
    }

    #[test]
    fn answer_ttl_is_the_smallest_involved() {
        let t0 = Instant::now();
        let mut b = batcher();
        b.handle_request(1, vec!["a.test".into()], t0);
        drain(&mut b);
        b.handle_mx("a.test", mx(&[(10, "mx.a.test")], 3600), t0);
        drain(&mut b);
        b.handle_host("mx.a.test", found(5, 60), t0);
        replies(&mut b);
        b.handle_request(2, vec!["a.test".into()], t0 + S(59));
        assert!(drain(&mut b).is_empty());
        b.handle_request(3, vec!["a.test".into()], t0 + S(60));
        assert_eq!(drain(&mut b).len(), 1);
    }

    #[test]
    fn failures_are_classified_and_cached() {
        let t0 = Instant::now();
        let mut b = batcher();
        let names = [
            "nx.test",
            "fail.test",
            "null.test",
            "loop.test",
            "bare.test",
        ];
        b.handle_request(1, names.iter().map(|s| s.to_string()).collect(), t0);
        assert_eq!(drain(&mut b).len(), 5);
        b.handle_mx(
            "nx.test",
            MxAnswer::NxDomain {
                negative_ttl: Some(S(1)),
            },
            t0,
        );
        b.handle_mx("fail.test", MxAnswer::TempFail("SERVFAIL".into()), t0);
        b.handle_mx("null.test", mx(&[(0, ".")], 300), t0);
        b.handle_mx("loop.test", mx(&[(10, "ME.test.")], 300), t0);
        b.handle_mx("bare.test", MxAnswer::NoData { negative_ttl: None }, t0);
        assert_eq!(drain(&mut b), vec![Query::Host("bare.test".into())]);
        b.handle_host("bare.test", found(7, 300), t0);
        let r = replies(&mut b);
        let got: Vec<_> = r[0].1.iter().map(|(_, a)| a.clone()).collect();
        assert_eq!(
            got,
            vec![
                Resolution::NoSuchDomain,
                Resolution::TempFail("SERVFAIL".into()),
                Resolution::NullMx,
                Resolution::NoMailHosts,
                Resolution::Hosts(vec![MxHost {
                    name: "bare.test".into(),
                    preference: 0,
                    addresses: vec![ip(7)]
                }]),
            ]
        );
        // NXDOMAIN: the 30 s floor holds a 1 s SOA; TempFail: 5 s.
        b.handle_request(2, names.iter().map(|s| s.to_string()).collect(), t0 + S(4));
        assert!(drain(&mut b).is_empty());
        replies(&mut b);
        b.handle_request(3, names.iter().map(|s| s.to_string()).collect(), t0 + S(6));
        assert_eq!(drain(&mut b), vec![Query::Mx("fail.test".into())]);
        b.handle_request(4, vec!["nx.test".into()], t0 + S(31));
        assert_eq!(drain(&mut b), vec![Query::Mx("nx.test".into())]);
    }

    #[test]
    fn host_without_address_after_servfail_is_transient() {
        let t0 = Instant::now();
        let mut b = batcher();
        b.handle_request(1, vec!["a.test".into()], t0);
        drain(&mut b);
        b.handle_mx("a.test", mx(&[(10, "mx.a.test")], 300), t0);
        drain(&mut b);
        let answer = HostAnswer::join(
            AddrAnswer::TempFail("timeout".into()),
            AddrAnswer::Negative { negative_ttl: None },
        );
        assert_eq!(answer.lifetime, Lifetime::TempFail);
        b.handle_host("mx.a.test", answer, t0);
        let r = replies(&mut b);
        assert_eq!(r[0].1[0].1, Resolution::TempFail("timeout".into()));
    }

    #[test]
    fn empty_request_and_empty_name_answer_at_once() {
        let t0 = Instant::now();
        let mut b = batcher();
        b.handle_request(1, vec![], t0);
        b.handle_request(2, vec![".".into()], t0);
        let r = replies(&mut b);
        assert_eq!(r.len(), 2);
        assert_eq!(r[1].1[0].1, Resolution::NoSuchDomain);
        assert!(b.is_idle());
    }

    #[test]
    fn equal_preference_order_varies_per_reply() {
        let t0 = Instant::now();
        let mut b = batcher();
        b.handle_request(0, vec!["a.test".into()], t0);
        drain(&mut b);
        b.handle_mx(
            "a.test",
            mx(&[(10, "x.test"), (10, "y.test"), (10, "z.test")], 300),
            t0,
        );
        drain(&mut b);
        for (h, n) in [("x.test", 1), ("y.test", 2), ("z.test", 3)] {
            b.handle_host(h, found(n, 300), t0);
        }
        replies(&mut b);
        let mut orders = std::collections::HashSet::new();
        for r in 1..100 {
            b.handle_request(r, vec!["a.test".into()], t0);
            let (_, a) = b.poll_reply().expect("cached answer");
            let Resolution::Hosts(h) = &a[0].1 else {
                panic!("{a:?}")
            };
            orders.insert(h.iter().map(|h| h.name.clone()).collect::<Vec<_>>());
        }
        assert_eq!(orders.len(), 6);
    }
}
