//! RFC 5321 section 5.1 and RFC 7505 as pure functions: which MX hosts to
//! try, in which order. It refuses to do any DNS, hold any state or read a
//! clock; its randomness comes from a seeded [`Rng`] the caller owns.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::net::IpAddr;

use super::{MxHost, Resolution};

/// One MX record as DNS gave it (the exchange already normalized by
/// [`normalize`]; the root name "." becomes the empty string).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MxRecord {
    pub preference: u16,
    pub exchange: String,
}

impl MxRecord {
    pub fn new(preference: u16, exchange: &str) -> Self {
        MxRecord {
            preference,
            exchange: normalize(exchange),
        }
    }
}

/// What the address lookups (A and AAAA) of one host found. Kept apart from
/// the MX answer because many domains share the same exchanges and the
/// resolver caches and de-duplicates hosts separately.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HostAddrs {
    /// A addresses first, then AAAA, each in the order DNS gave them.
    pub addresses: Vec<IpAddr>,
    /// Why a lookup of this host failed transiently, if one did: a host with
    /// no address because of a SERVFAIL is "try later", not "bounce".
    pub temp_fail: Option<String>,
}

/// The hosts to try before addresses are known: the outcome of the MX
/// answer alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Candidates {
    /// Exchanges sorted by preference (stable: equal preferences keep the
    /// DNS order until [`shuffle_equal`] randomizes them per delivery).
    Hosts(Vec<MxRecord>),
    /// RFC 7505: the domain declares that it accepts no mail.
    NullMx,
    /// Nothing usable is left (the own-hostname cut emptied the list, or
    /// every exchange was the root name).
    NoMailHosts,
}

/// Lower-cases a domain and drops one trailing dot, so "Example.COM." and
/// "example.com" are one cache key and compare equal. The root "." becomes
/// "".
pub fn normalize(name: &str) -> String {
    let name = name.trim();
    let name = name.strip_suffix('.').unwrap_or(name);
    name.to_ascii_lowercase()
}

/// RFC 7505 section 3: a null MX is a single MX record with preference 0
/// and the root as exchange. A "." mixed with other records is not a null MX
/// (the domain is misconfigured); it is merely an unusable exchange.
pub fn is_null_mx(records: &[MxRecord]) -> bool {
    matches!(records, [only] if only.preference == 0 && only.exchange.is_empty())
}

/// RFC 5321 section 5.1 applied to an MX answer (`records` non-empty):
/// null MX, sort by preference, and "if the domain name is in the list
/// (local host), the client MUST discard it and all records of equal or
/// higher preference value. If there are no records left at that point, it
/// is an error condition". `own_hostname` is compared after [`normalize`].
/// Root exchanges cannot be reached and are dropped.
pub fn candidates(mut records: Vec<MxRecord>, own_hostname: &str) -> Candidates {
    if is_null_mx(&records) {
        return Candidates::NullMx;
    }
    records.sort_by_key(|r| r.preference);
    let own = normalize(own_hostname);
    if let Some(cut) = records
        .iter()
        .filter(|r| !own.is_empty() && r.exchange == own)
        .map(|r| r.preference)
        .min()
    {
        records.retain(|r| r.preference < cut);
    }
    records.retain(|r| !r.exchange.is_empty());
    dedupe_exchanges(&mut records);
    if records.is_empty() {
        Candidates::NoMailHosts
    } else {
        Candidates::Hosts(records)
    }
}

/// RFC 5321 section 5.1: "If an empty list of MXs is returned, the address
/// is treated as if it was associated with an implicit MX RR, with a
/// preference of 0, pointing to that host." The own-hostname rule applies
/// to the implicit MX too: mail for our own name must not loop back to us.
pub fn implicit_mx(domain: &str, own_hostname: &str) -> Candidates {
    candidates(vec![MxRecord::new(0, domain)], own_hostname)
}

/// Keeps the first (most preferred) record of an exchange listed twice, so
/// one host is not tried twice in a row.
fn dedupe_exchanges(records: &mut Vec<MxRecord>) {
    let mut seen = std::collections::HashSet::new();
    records.retain(|r| seen.insert(r.exchange.clone()));
}

/// Joins sorted candidates with their addresses: hosts without an address
/// are dropped ("none of them are usable ... MUST be reported as an
/// error"). An empty result is [`Resolution::NoMailHosts`] (permanent)
/// unless some host failed transiently, then [`Resolution::TempFail`]: the
/// missing host may well be the one that works tomorrow.
pub fn assemble<'a>(
    candidates: &[MxRecord],
    mut addrs: impl FnMut(&str) -> Option<&'a HostAddrs>,
) -> Resolution {
    let mut hosts = Vec::with_capacity(candidates.len());
    let mut temp_fail = None;
    for c in candidates {
        let Some(found) = addrs(&c.exchange) else {
            temp_fail.get_or_insert_with(|| format!("no address answer for {}", c.exchange));
            continue;
        };
        if found.addresses.is_empty() {
            if let Some(why) = &found.temp_fail {
                temp_fail.get_or_insert_with(|| why.clone());
            }
            continue;
        }
        hosts.push(MxHost {
            name: c.exchange.clone(),
            preference: c.preference,
            addresses: found.addresses.clone(),
        });
    }
    match (hosts.is_empty(), temp_fail) {
        (false, _) => Resolution::Hosts(hosts),
        (true, Some(why)) => Resolution::TempFail(why),
        (true, None) => Resolution::NoMailHosts,
    }
}

/// RFC 5321 section 5.1: "If there are multiple destinations with the same
/// preference and there is no clear reason to favor one ... the SMTP client
/// SHOULD pick one at random to spread the load". `hosts` must be sorted by
/// preference; each run of equal preference is shuffled in place.
pub fn shuffle_equal(hosts: &mut [MxHost], rng: &mut Rng) {
    let mut start = 0;
    while start < hosts.len() {
        let pref = hosts[start].preference;
        let end = start
            + hosts[start..]
                .iter()
                .take_while(|h| h.preference == pref)
                .count();
        let run = &mut hosts[start..end];
        // Fisher-Yates.
        for i in (1..run.len()).rev() {
            let j = rng.below(i as u64 + 1) as usize;
            run.swap(i, j);
        }
        start = end;
    }
}

/// A small seeded generator (SplitMix64): enough to spread load among
/// equal-preference MX hosts, deterministic under a seed so tests can check
/// every order appears. Not for anything secret.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn from_seed(seed: u64) -> Self {
        Rng(seed)
    }

    /// Seeded from the process's hash randomness (std's `RandomState`), so
    /// no extra crate is needed for a value that only spreads load.
    pub fn from_entropy() -> Self {
        let mut h = RandomState::new().build_hasher();
        h.write_u64(0x5eed);
        Rng(h.finish())
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A value in `0..n` (`n > 0`); the modulo bias is irrelevant for lists
    /// of a handful of hosts.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::net::Ipv4Addr;

    fn recs(list: &[(u16, &str)]) -> Vec<MxRecord> {
        list.iter().map(|(p, e)| MxRecord::new(*p, e)).collect()
    }

    fn names(c: &Candidates) -> Vec<(u16, String)> {
        match c {
            Candidates::Hosts(h) => h
                .iter()
                .map(|r| (r.preference, r.exchange.clone()))
                .collect(),
            other => panic!("expected hosts, got {other:?}"),
        }
    }

    fn host(name: &str, preference: u16) -> MxHost {
        MxHost {
            name: name.into(),
            preference,
            addresses: vec![IpAddr::V4(Ipv4Addr::LOCALHOST)],
        }
    }

    #[test]
    fn normalize_folds_case_and_one_trailing_dot() {
        assert_eq!(normalize("MX1.Example.COM."), "mx1.example.com");
        assert_eq!(normalize("mx1.example.com"), "mx1.example.com");
        assert_eq!(normalize("."), "");
        assert_eq!(normalize(" a.test. "), "a.test");
    }

    #[test]
    fn sorted_by_preference_stable_within_equal() {
        let c = candidates(recs(&[(20, "c"), (10, "a"), (30, "d"), (10, "b")]), "me");
        assert_eq!(
            names(&c),
            vec![
                (10, "a".into()),
                (10, "b".into()),
                (20, "c".into()),
                (30, "d".into())
            ]
        );
    }

    #[test]
    fn null_mx_only_when_single_pref_zero_root() {
        assert_eq!(candidates(recs(&[(0, ".")]), "me"), Candidates::NullMx);
        // A root exchange with another preference is not RFC 7505's null
        // MX, but it is still unusable.
        assert_eq!(
            candidates(recs(&[(10, ".")]), "me"),
            Candidates::NoMailHosts
        );
        // Mixed with real hosts: the root is dropped, the rest is used.
        assert_eq!(
            names(&candidates(recs(&[(0, "."), (10, "mx.a.test")]), "me")),
            vec![(10, "mx.a.test".into())]
        );
    }

    #[test]
    fn own_hostname_cuts_equal_and_higher_preference() {
        let list = recs(&[(10, "a"), (20, "b"), (20, "me.test"), (30, "c"), (5, "z")]);
        assert_eq!(
            names(&candidates(list, "me.test")),
            vec![(5, "z".into()), (10, "a".into())]
        );
    }

    #[test]
    fn own_hostname_compared_without_case_or_trailing_dot() {
        let list = recs(&[(10, "Relay.Example."), (20, "backup.example")]);
        assert_eq!(
            candidates(list.clone(), "relay.example"),
            Candidates::NoMailHosts
        );
        assert_eq!(candidates(list, "RELAY.EXAMPLE."), Candidates::NoMailHosts);
    }

    #[test]
    fn own_hostname_as_best_mx_leaves_nothing() {
        let list = recs(&[(10, "me.test"), (10, "peer.test"), (20, "backup.test")]);
        assert_eq!(candidates(list, "me.test"), Candidates::NoMailHosts);
    }

    #[test]
    fn duplicate_exchanges_are_tried_once() {
        let list = recs(&[(20, "a"), (10, "a"), (30, "b")]);
        assert_eq!(
            names(&candidates(list, "me")),
            vec![(10, "a".into()), (30, "b".into())]
        );
    }

    #[test]
    fn implicit_mx_is_the_domain_at_preference_zero() {
        assert_eq!(
            names(&implicit_mx("Plain.Test.", "me")),
            vec![(0, "plain.test".into())]
        );
        assert_eq!(implicit_mx("me.test", "ME.test."), Candidates::NoMailHosts);
    }

    #[test]
    fn assemble_drops_hosts_without_addresses() {
        let c = recs(&[(10, "a"), (20, "b")]);
        let a = HostAddrs::default();
        let b = HostAddrs {
            addresses: vec![IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2))],
            temp_fail: None,
        };
        let r = assemble(&c, |h| Some(if h == "a" { &a } else { &b }));
        assert_eq!(
            r,
            Resolution::Hosts(vec![MxHost {
                name: "b".into(),
                preference: 20,
                addresses: b.addresses.clone()
            }])
        );
    }

    #[test]
    fn assemble_without_any_address_is_permanent_unless_a_lookup_failed() {
        let c = recs(&[(10, "a"), (20, "b")]);
        let none = HostAddrs::default();
        assert_eq!(assemble(&c, |_| Some(&none)), Resolution::NoMailHosts);
        let failed = HostAddrs {
            addresses: vec![],
            temp_fail: Some("SERVFAIL".into()),
        };
        let r = assemble(&c, |h| Some(if h == "a" { &failed } else { &none }));
        assert_eq!(r, Resolution::TempFail("SERVFAIL".into()));
    }

    #[test]
    fn shuffle_keeps_preference_groups_in_order() {
        let mut rng = Rng::from_seed(7);
        for _ in 0..100 {
            let mut hosts = vec![
                host("a1", 10),
                host("a2", 10),
                host("b1", 20),
                host("c1", 30),
                host("c2", 30),
                host("c3", 30),
            ];
            shuffle_equal(&mut hosts, &mut rng);
            let prefs: Vec<u16> = hosts.iter().map(|h| h.preference).collect();
            assert_eq!(prefs, vec![10, 10, 20, 30, 30, 30]);
            assert_eq!(hosts[2].name, "b1");
            let mut first: Vec<&str> = hosts[..2].iter().map(|h| h.name.as_str()).collect();
            first.sort();
            assert_eq!(first, vec!["a1", "a2"]);
        }
    }

    #[test]
    fn shuffle_covers_every_permutation_over_seeds() {
        let mut seen = HashSet::new();
        for seed in 0..200u64 {
            let mut rng = Rng::from_seed(seed);
            let mut hosts = vec![host("x", 5), host("y", 5), host("z", 5), host("w", 9)];
            shuffle_equal(&mut hosts, &mut rng);
            assert_eq!(hosts[3].name, "w");
            seen.insert(
                hosts[..3]
                    .iter()
                    .map(|h| h.name.clone())
                    .collect::<Vec<_>>(),
            );
        }
        assert_eq!(seen.len(), 6, "all 3! orders appear: {seen:?}");
    }

    #[test]
    fn same_seed_same_order() {
        let run = |seed| {
            let mut rng = Rng::from_seed(seed);
            let mut hosts: Vec<MxHost> = (0..8).map(|i| host(&format!("h{i}"), 1)).collect();
            shuffle_equal(&mut hosts, &mut rng);
            hosts.into_iter().map(|h| h.name).collect::<Vec<_>>()
        };
        assert_eq!(run(42), run(42));
        assert_ne!(run(42), run(43));
    }
}
