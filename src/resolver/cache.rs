//! A bounded TTL cache for DNS answers, positive and negative, with time
//! passed in as `now`. It refuses to read a clock, to do any DNS, or to grow
//! past its capacity (the least recently used entry goes first).

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

/// How long answers live in the cache, and how many domains it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheConfig {
    /// Entries kept before the least recently used is evicted. Bounds the
    /// memory a flood of distinct recipient domains can take.
    pub capacity: usize,
    /// Upper bound on a positive TTL: a zone publishing a week-long TTL
    /// should still be looked at again within a day.
    pub positive_max: Duration,
    /// NXDOMAIN and NoData live at least this long, even if the SOA says
    /// less (or there is no SOA): a burst of mail to a typo'd domain must
    /// not become a burst of queries.
    pub negative_min: Duration,
    /// ... and at most this long, so a domain that starts to exist is
    /// noticed.
    pub negative_max: Duration,
    /// SERVFAIL and timeouts are remembered this briefly: long enough that
    /// a storm of lookups does not hammer a failing server, short enough
    /// that the retry after it sees a recovered one.
    pub temp_fail: Duration,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            capacity: 100_000,
            positive_max: Duration::from_secs(24 * 3600),
            negative_min: Duration::from_secs(30),
            negative_max: Duration::from_secs(3600),
            temp_fail: Duration::from_secs(5),
        }
    }
}

/// What kind of answer is stored, which decides how its TTL is bounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lifetime {
    /// Records were found; the TTL is the smallest of the records involved.
    Positive(Duration),
    /// NXDOMAIN or NoData; the TTL from the SOA if the answer had one.
    Negative(Option<Duration>),
    /// SERVFAIL, REFUSED, timeout, network error.
    TempFail,
}

impl CacheConfig {
    /// The time an answer of this kind may be served from the cache.
    pub fn ttl(&self, lifetime: Lifetime) -> Duration {
        match lifetime {
            Lifetime::Positive(t) => t.min(self.positive_max),
            Lifetime::Negative(t) => t
                .unwrap_or(self.negative_min)
                .clamp(self.negative_min, self.negative_max.max(self.negative_min)),
            Lifetime::TempFail => self.temp_fail,
        }
    }
}

struct Entry<V> {
    value: V,
    expires: Instant,
    /// Position in the recency order.
    tick: u64,
}

/// A map from normalized names to answers that expire. One type serves both
/// the per-domain resolutions and the per-host addresses.
pub struct Cache<V> {
    config: CacheConfig,
    entries: HashMap<String, Entry<V>>,
    /// tick -> key, oldest use first.
    recency: BTreeMap<u64, String>,
    next_tick: u64,
}

impl<V> Cache<V> {
    pub fn new(config: CacheConfig) -> Self {
        Cache {
            config,
            entries: HashMap::new(),
            recency: BTreeMap::new(),
            next_tick: 0,
        }
    }

    pub fn config(&self) -> &CacheConfig {
        &self.config
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// The live answer for `key`, refreshing its recency; an expired entry
    /// is removed and reported as a miss.
    pub fn get(&mut self, key: &str, now: Instant) -> Option<&V> {
        self.get_with_ttl(key, now).map(|(v, _)| v)
    }

    /// Like [`Cache::get`], with the time the answer has left to live: an
    /// answer built from several cached parts lives no longer than the
    /// shortest of them.
    pub fn get_with_ttl(&mut self, key: &str, now: Instant) -> Option<(&V, Duration)> {
        let expires = self.entries.get(key)?.expires;
        let expired = expires <= now;
        if expired {
            self.remove(key);
            return None;
        }
        let tick = self.bump();
        // The entry exists: checked just above and nothing removed it since.
        let entry = self.entries.get_mut(key)?;
        self.recency.remove(&entry.tick);
        entry.tick = tick;
        self.recency.insert(tick, key.to_owned());
        Some((&entry.value, expires - now))
    }

    /// Stores an answer for the TTL its [`Lifetime`] allows; a zero TTL
    /// (or a zero capacity) stores nothing. Evicts the least recently used
    /// entries beyond the capacity.
    pub fn insert(&mut self, key: String, value: V, lifetime: Lifetime, now: Instant) {
        let ttl = self.config.ttl(lifetime);
        self.insert_for(key, value, ttl, now);
    }

    /// Stores an answer for exactly `ttl` (already bounded by the caller,
    /// e.g. the smallest of several [`CacheConfig::ttl`]s).
    pub fn insert_for(&mut self, key: String, value: V, ttl: Duration, now: Instant) {
        if ttl.is_zero() || self.config.capacity == 0 {
            self.remove(&key);
            return;
        }
        let tick = self.bump();
        let entry = Entry {
            value,
            expires: now + ttl,
            tick,
        };
        if let Some(old) = self.entries.insert(key.clone(), entry) {
            self.recency.remove(&old.tick);
        }
        self.recency.insert(tick, key);
        while self.entries.len() > self.config.capacity {
            let Some((_, oldest)) = self.recency.pop_first() else {
                break;
            };
            self.entries.remove(&oldest);
        }
    }

    pub fn remove(&mut self, key: &str) -> Option<V> {
        let entry = self.entries.remove(key)?;
        self.recency.remove(&entry.tick);
        Some(entry.value)
    }

    fn bump(&mut self) -> u64 {
        self.next_tick += 1;
        self.next_tick
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: fn(u64) -> Duration = Duration::from_secs;

    fn cache(capacity: usize) -> Cache<u32> {
        Cache::new(CacheConfig {
            capacity,
            ..CacheConfig::default()
        })
    }

    #[test]
    fn positive_answer_lives_for_its_ttl() {
        let t0 = Instant::now();
        let mut c = cache(10);
        c.insert("a.test".into(), 1, Lifetime::Positive(S(300)), t0);
        assert_eq!(c.get("a.test", t0), Some(&1));
        assert_eq!(c.get("a.test", t0 + S(299)), Some(&1));
        assert_eq!(c.get("a.test", t0 + S(300)), None);
        assert_eq!(c.len(), 0, "expired entry removed on lookup");
    }

    #[test]
    fn positive_ttl_has_a_ceiling_and_zero_is_not_cached() {
        let t0 = Instant::now();
        let mut c = cache(10);
        c.insert("long".into(), 1, Lifetime::Positive(S(7 * 86400)), t0);
        assert_eq!(c.get("long", t0 + S(86399)), Some(&1));
        assert_eq!(c.get("long", t0 + S(86400)), None);
        c.insert("zero".into(), 2, Lifetime::Positive(S(0)), t0);
        assert_eq!(c.get("zero", t0), None);
    }

    #[test]
    fn negative_ttl_is_clamped_between_floor_and_ceiling() {
        let cfg = CacheConfig::default();
        assert_eq!(cfg.ttl(Lifetime::Negative(Some(S(1)))), S(30));
        assert_eq!(cfg.ttl(Lifetime::Negative(None)), S(30));
        assert_eq!(cfg.ttl(Lifetime::Negative(Some(S(600)))), S(600));
        assert_eq!(cfg.ttl(Lifetime::Negative(Some(S(86400)))), S(3600));

        let t0 = Instant::now();
        let mut c = cache(10);
        c.insert("nx".into(), 0, Lifetime::Negative(Some(S(0))), t0);
        assert_eq!(c.get("nx", t0 + S(29)), Some(&0), "floor holds a 0 s SOA");
        assert_eq!(c.get("nx", t0 + S(30)), None);
        c.insert("nx".into(), 0, Lifetime::Negative(Some(S(999_999))), t0);
        assert_eq!(c.get("nx", t0 + S(3599)), Some(&0));
        assert_eq!(c.get("nx", t0 + S(3600)), None, "ceiling caps a huge SOA");
    }

    #[test]
    fn temp_fail_is_cached_briefly() {
        let t0 = Instant::now();
        let mut c = cache(10);
        c.insert("fail".into(), 9, Lifetime::TempFail, t0);
        assert_eq!(c.get("fail", t0 + S(4)), Some(&9));
        assert_eq!(c.get("fail", t0 + S(5)), None);
    }

    #[test]
    fn size_is_bounded_and_least_recently_used_goes_first() {
        let t0 = Instant::now();
        let mut c = cache(3);
        for (i, k) in ["a", "b", "c"].into_iter().enumerate() {
            c.insert(k.into(), i as u32, Lifetime::Positive(S(60)), t0);
        }
        // Touch "a" so "b" is now the least recently used.
        assert_eq!(c.get("a", t0), Some(&0));
        c.insert("d".into(), 3, Lifetime::Positive(S(60)), t0);
        assert_eq!(c.len(), 3);
        assert_eq!(c.get("b", t0), None);
        assert_eq!(c.get("a", t0), Some(&0));
        assert_eq!(c.get("c", t0), Some(&2));
        assert_eq!(c.get("d", t0), Some(&3));

        for i in 0..1000u32 {
            c.insert(format!("k{i}"), i, Lifetime::Positive(S(60)), t0);
            assert!(c.len() <= 3);
        }
        assert_eq!(c.recency.len(), c.entries.len());
    }

    #[test]
    fn reinsert_replaces_value_and_expiry() {
        let t0 = Instant::now();
        let mut c = cache(2);
        c.insert("a".into(), 1, Lifetime::Positive(S(10)), t0);
        c.insert("a".into(), 2, Lifetime::Positive(S(100)), t0);
        assert_eq!(c.len(), 1);
        assert_eq!(c.get("a", t0 + S(50)), Some(&2));
        assert_eq!(c.recency.len(), 1);
    }

    #[test]
    fn zero_capacity_caches_nothing() {
        let t0 = Instant::now();
        let mut c = cache(0);
        c.insert("a".into(), 1, Lifetime::Positive(S(10)), t0);
        assert_eq!(c.get("a", t0), None);
    }
}
