//! The failed-login throttle: counts failed logins per client network and
//! says how long to wait before answering the next failure, and whether the
//! client is blocked for a while. Pure logic: time comes in as `now`, and
//! the map is bounded. It refuses to sleep, to close connections, or to be
//! shared between cores (each core keeps its own).

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// The throttle's knobs. The defaults delay the 2nd failure by 1 s, then
/// 2, 4, 8 s, and 15 s from the 6th on; block after 10 failures; and
/// forget a client 15 minutes after its last failure.
#[derive(Debug, Clone)]
pub struct ThrottleConfig {
    /// Failures are forgotten this long after the last one, and a block
    /// lasts this long after the failure that caused it.
    pub window: Duration,
    /// Delay of the second failure; it doubles with each further failure.
    pub base_delay: Duration,
    /// Ceiling of the delay.
    pub max_delay: Duration,
    /// Failures within the window after which the client is blocked.
    pub block_after: u32,
    /// Most clients remembered; beyond, the one idle longest is forgotten.
    pub max_entries: usize,
}

impl Default for ThrottleConfig {
    fn default() -> Self {
        ThrottleConfig {
            window: Duration::from_secs(15 * 60),
            base_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(15),
            block_after: 10,
            max_entries: 10_000,
        }
    }
}

/// What to do after a failed login.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Penalty {
    /// Wait this long before answering the failure.
    pub delay: Duration,
    /// Refuse further logins from this client until this instant.
    pub blocked_until: Option<Instant>,
}

/// The key of a client: an IPv4 address, or the /64 of an IPv6 address
/// (one host commonly holds a whole /64). IPv4-mapped IPv6 counts as IPv4.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientKey(IpAddr);

impl From<IpAddr> for ClientKey {
    fn from(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(_) => ClientKey(ip),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => ClientKey(IpAddr::V4(v4)),
                None => {
                    let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                    ClientKey(IpAddr::V6(prefix.into()))
                }
            },
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    failures: u32,
    last: Instant,
}

/// Failed logins per client, at most `max_entries` of them.
#[derive(Debug)]
pub struct LoginThrottle {
    config: ThrottleConfig,
    entries: HashMap<ClientKey, Entry>,
}

impl LoginThrottle {
    pub fn new(config: ThrottleConfig) -> LoginThrottle {
        LoginThrottle {
            config,
            entries: HashMap::new(),
        }
    }

    /// Clients currently remembered.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether `ip` may try to log in now. A blocked client should be
    /// answered with a failure without checking the password at all.
    pub fn is_blocked(&self, ip: IpAddr, now: Instant) -> bool {
        self.entries
            .get(&ClientKey::from(ip))
            .and_then(|e| self.blocked_until(e))
            .is_some_and(|until| now < until)
    }

    /// Counts a failed login of `ip` at `now` and returns the penalty.
    pub fn record_failure(&mut self, ip: IpAddr, now: Instant) -> Penalty {
        let key = ClientKey::from(ip);
        if !self.entries.contains_key(&key) && self.entries.len() >= self.config.max_entries {
            self.make_room(now);
        }
        let window = self.config.window;
        let entry = self.entries.entry(key).or_insert(Entry {
            failures: 0,
            last: now,
        });
        if now.saturating_duration_since(entry.last) >= window {
            entry.failures = 0;
        }
        entry.failures = entry.failures.saturating_add(1);
        entry.last = now;
        let entry = *entry;
        Penalty {
            delay: self.delay(entry.failures),
            blocked_until: self.blocked_until(&entry),
        }
    }

    /// A successful login forgets the client's failures.
    pub fn record_success(&mut self, ip: IpAddr) {
        self.entries.remove(&ClientKey::from(ip));
    }

    /// Forgets clients whose last failure is older than the window; call
    /// now and then (a timer tick) to give memory back.
    pub fn purge(&mut self, now: Instant) {
        let window = self.config.window;
        self.entries
            .retain(|_, e| now.saturating_duration_since(e.last) < window);
    }

    /// The delay for the `failures`-th failure: none for the first, then
    /// `base_delay` doubling up to `max_delay`.
    fn delay(&self, failures: u32) -> Duration {
        if failures <= 1 {
            return Duration::ZERO;
        }
        let doublings = (failures - 2).min(31);
        self.config
            .base_delay
            .saturating_mul(1 << doublings)
            .min(self.config.max_delay)
    }

    fn blocked_until(&self, entry: &Entry) -> Option<Instant> {
        (entry.failures >= self.config.block_after).then(|| entry.last + self.config.window)
    }

    /// Called when the map is full: drop expired clients, and if none
    /// expired, the client idle longest. O(n), but only when full, and
    /// n is bounded.
    fn make_room(&mut self, now: Instant) {
        self.purge(now);
        if self.entries.len() < self.config.max_entries {
            return;
        }
        if let Some(oldest) = self
            .entries
            .iter()
            .min_by_key(|(_, e)| e.last)
            .map(|(key, _)| *key)
        {
            self.entries.remove(&oldest);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn delay_grows_and_is_capped() {
        let mut t = LoginThrottle::new(ThrottleConfig::default());
        let now = Instant::now();
        let delays: Vec<u64> = (0..8)
            .map(|i| {
                t.record_failure(ip("192.0.2.1"), now + secs(i))
                    .delay
                    .as_secs()
            })
            .collect();
        assert_eq!(delays, vec![0, 1, 2, 4, 8, 15, 15, 15]);
        // Another client starts from zero.
        assert_eq!(t.record_failure(ip("192.0.2.2"), now).delay, Duration::ZERO);
    }

    #[test]
    fn blocks_after_n_failures_for_the_window() {
        let mut t = LoginThrottle::new(ThrottleConfig::default());
        let client = ip("192.0.2.1");
        let start = Instant::now();
        for i in 0..9 {
            let p = t.record_failure(client, start + secs(i));
            assert_eq!(p.blocked_until, None);
            assert!(!t.is_blocked(client, start + secs(i)));
        }
        let last = start + secs(9);
        let p = t.record_failure(client, last);
        assert_eq!(p.blocked_until, Some(last + secs(900)));
        assert!(t.is_blocked(client, last + secs(899)));
        assert!(!t.is_blocked(client, last + secs(900)));
        assert!(!t.is_blocked(ip("192.0.2.2"), last));
        // After the window the count starts over.
        let p = t.record_failure(client, last + secs(900));
        assert_eq!(
            p,
            Penalty {
                delay: Duration::ZERO,
                blocked_until: None
            }
        );
    }

    #[test]
    fn success_forgets_and_purge_expires() {
        let mut t = LoginThrottle::new(ThrottleConfig::default());
        let now = Instant::now();
        t.record_failure(ip("192.0.2.1"), now);
        t.record_failure(ip("192.0.2.1"), now);
        t.record_success(ip("192.0.2.1"));
        assert_eq!(t.record_failure(ip("192.0.2.1"), now).delay, Duration::ZERO);
        t.record_failure(ip("192.0.2.2"), now + secs(600));
        t.purge(now + secs(900));
        assert_eq!(t.len(), 1);
        t.purge(now + secs(1500));
        assert!(t.is_empty());
    }

    #[test]
    fn ipv6_counts_per_64_and_mapped_ipv4_as_ipv4() {
        let mut t = LoginThrottle::new(ThrottleConfig::default());
        let now = Instant::now();
        t.record_failure(ip("2001:db8:1:2::1"), now);
        let p = t.record_failure(ip("2001:db8:1:2:ffff::9"), now);
        assert_eq!(p.delay, secs(1));
        assert_eq!(
            t.record_failure(ip("2001:db8:1:3::1"), now).delay,
            Duration::ZERO
        );
        t.record_failure(ip("192.0.2.7"), now);
        assert_eq!(t.record_failure(ip("::ffff:192.0.2.7"), now).delay, secs(1));
        assert_eq!(t.len(), 3);
    }

    #[test]
    fn the_map_is_bounded_and_evicts_the_idlest() {
        let config = ThrottleConfig {
            max_entries: 100,
            ..ThrottleConfig::default()
        };
        let mut t = LoginThrottle::new(config);
        let start = Instant::now();
        for i in 0..1000u32 {
            let client = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            t.record_failure(client, start + Duration::from_millis(u64::from(i)));
            assert!(t.len() <= 100);
        }
        assert_eq!(t.len(), 100);
        // The most recent clients are the ones kept.
        let recent = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + 999));
        let old = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000));
        let now = start + secs(2);
        assert_eq!(t.record_failure(recent, now).delay, secs(1));
        assert_eq!(t.record_failure(old, now).delay, Duration::ZERO);
    }
}
