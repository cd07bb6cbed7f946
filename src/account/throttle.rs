//! The failed-login throttle: counts failed logins per client network, and
//! within it per login name, and says how long to wait before answering the
//! next failure, and whether the client is blocked for a while. A success
//! forgets only its own name's failures, so logging in to one's own account
//! does not wipe the failures against someone else's. Pure logic: time
//! comes in as `now`, and the maps are bounded. It refuses to sleep, to
//! close connections, or to be shared between cores (each core keeps its own).

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
    /// Login names counted apart per client; failures for further names
    /// count for the client only, and no success forgets them.
    pub max_names: usize,
}

impl Default for ThrottleConfig {
    fn default() -> Self {
        ThrottleConfig {
            window: Duration::from_secs(15 * 60),
            base_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(15),
            block_after: 10,
            max_entries: 10_000,
            max_names: 16,
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

/// Longest login name kept as a key (longer ones are cut: the key only
/// tells names apart, it is never shown).
const MAX_NAME_KEY: usize = 255;

/// One client's failures: the total decides delay and block; `names`
/// says how many of them each login name earned (at most `max_names`
/// names; the rest of the total belongs to no name).
#[derive(Debug, Clone)]
struct Entry {
    failures: u32,
    last: Instant,
    names: Vec<(String, u32)>,
}

/// The key of a login name: ASCII-lowercased, bounded.
fn name_key(login: &str) -> String {
    let mut end = login.len().min(MAX_NAME_KEY);
    while !login.is_char_boundary(end) {
        end -= 1;
    }
    login[..end].to_ascii_lowercase()
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
            .and_then(|e| self.blocked_until(e.failures, e.last))
            .is_some_and(|until| now < until)
    }

    /// Counts a failed login of `ip` as `login` at `now` and returns the
    /// penalty (from the client's failures for every name together).
    pub fn record_failure(&mut self, ip: IpAddr, login: &str, now: Instant) -> Penalty {
        let key = ClientKey::from(ip);
        if !self.entries.contains_key(&key) && self.entries.len() >= self.config.max_entries {
            self.make_room(now);
        }
        let window = self.config.window;
        let max_names = self.config.max_names;
        let entry = self.entries.entry(key).or_insert(Entry {
            failures: 0,
            last: now,
            names: Vec::new(),
        });
        if now.saturating_duration_since(entry.last) >= window {
            entry.failures = 0;
            entry.names.clear();
        }
        entry.failures = entry.failures.saturating_add(1);
        entry.last = now;
        let name = name_key(login);
        if let Some((_, count)) = entry.names.iter_mut().find(|(n, _)| *n == name) {
            *count = count.saturating_add(1);
        } else if entry.names.len() < max_names {
            entry.names.push((name, 1));
        }
        let (failures, last) = (entry.failures, entry.last);
        Penalty {
            delay: self.delay(failures),
            blocked_until: self.blocked_until(failures, last),
        }
    }

    /// A successful login as `login` forgets the failures of that name
    /// only: the client's failures for other names still count.
    pub fn record_success(&mut self, ip: IpAddr, login: &str) {
        let key = ClientKey::from(ip);
        let Some(entry) = self.entries.get_mut(&key) else {
            return;
        };
        let name = name_key(login);
        if let Some(i) = entry.names.iter().position(|(n, _)| *n == name) {
            let (_, count) = entry.names.swap_remove(i);
            entry.failures = entry.failures.saturating_sub(count);
        }
        if entry.failures == 0 {
            self.entries.remove(&key);
        }
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

    fn blocked_until(&self, failures: u32, last: Instant) -> Option<Instant> {
        (failures >= self.config.block_after).then(|| last + self.config.window)
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
                t.record_failure(ip("192.0.2.1"), "alice", now + secs(i))
                    .delay
                    .as_secs()
            })
            .collect();
        assert_eq!(delays, vec![0, 1, 2, 4, 8, 15, 15, 15]);
        // Another client starts from zero.
        assert_eq!(
            t.record_failure(ip("192.0.2.2"), "alice", now).delay,
            Duration::ZERO
        );
    }

    #[test]
    fn blocks_after_n_failures_for_the_window() {
        let mut t = LoginThrottle::new(ThrottleConfig::default());
        let client = ip("192.0.2.1");
        let start = Instant::now();
        for i in 0..9 {
            let p = t.record_failure(client, "alice", start + secs(i));
            assert_eq!(p.blocked_until, None);
            assert!(!t.is_blocked(client, start + secs(i)));
        }
        let last = start + secs(9);
        let p = t.record_failure(client, "alice", last);
        assert_eq!(p.blocked_until, Some(last + secs(900)));
        assert!(t.is_blocked(client, last + secs(899)));
        assert!(!t.is_blocked(client, last + secs(900)));
        assert!(!t.is_blocked(ip("192.0.2.2"), last));
        // After the window the count starts over.
        let p = t.record_failure(client, "alice", last + secs(900));
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
        t.record_failure(ip("192.0.2.1"), "alice", now);
        t.record_failure(ip("192.0.2.1"), "alice", now);
        t.record_success(ip("192.0.2.1"), "alice");
        assert_eq!(
            t.record_failure(ip("192.0.2.1"), "alice", now).delay,
            Duration::ZERO
        );
        t.record_failure(ip("192.0.2.2"), "alice", now + secs(600));
        t.purge(now + secs(900));
        assert_eq!(t.len(), 1);
        t.purge(now + secs(1500));
        assert!(t.is_empty());
    }

    #[test]
    fn a_success_forgets_only_its_own_names_failures() {
        let mut t = LoginThrottle::new(ThrottleConfig::default());
        let client = ip("192.0.2.1");
        let now = Instant::now();
        // Nine wrong passwords for the victim, then the attacker's own
        // account, over and over: the block still comes at the tenth.
        for i in 0..9 {
            let p = t.record_failure(client, "victim", now + secs(i));
            assert_eq!(p.blocked_until, None, "try {i}");
        }
        t.record_success(client, "attacker");
        let p = t.record_failure(client, "victim", now + secs(10));
        assert_eq!(p.blocked_until, Some(now + secs(910)));
        assert!(t.is_blocked(client, now + secs(20)));
        // The victim's own success clears the victim's failures (the
        // name compared without case), and with them the block.
        let mut t = LoginThrottle::new(ThrottleConfig::default());
        for i in 0..9 {
            t.record_failure(client, "Alice", now + secs(i));
        }
        t.record_failure(client, "bob", now + secs(9));
        t.record_success(client, "alice");
        assert_eq!(
            t.record_failure(client, "bob", now + secs(10)).delay,
            secs(1)
        );
    }

    #[test]
    fn names_per_client_are_bounded() {
        let config = ThrottleConfig {
            max_names: 2,
            ..ThrottleConfig::default()
        };
        let mut t = LoginThrottle::new(config);
        let client = ip("192.0.2.1");
        let now = Instant::now();
        for name in ["a", "b", "c", "d"] {
            t.record_failure(client, name, now);
        }
        // "c" and "d" were not kept apart: their successes forget nothing.
        t.record_success(client, "c");
        t.record_success(client, "a");
        assert_eq!(t.record_failure(client, "e", now).delay, secs(4));
        let long = "x".repeat(10_000);
        t.record_failure(client, &long, now);
        assert!(t
            .entries
            .values()
            .all(|e| e.names.iter().all(|(n, _)| n.len() <= 255)));
    }

    #[test]
    fn ipv6_counts_per_64_and_mapped_ipv4_as_ipv4() {
        let mut t = LoginThrottle::new(ThrottleConfig::default());
        let now = Instant::now();
        t.record_failure(ip("2001:db8:1:2::1"), "alice", now);
        let p = t.record_failure(ip("2001:db8:1:2:ffff::9"), "alice", now);
        assert_eq!(p.delay, secs(1));
        assert_eq!(
            t.record_failure(ip("2001:db8:1:3::1"), "alice", now).delay,
            Duration::ZERO
        );
        t.record_failure(ip("192.0.2.7"), "alice", now);
        assert_eq!(
            t.record_failure(ip("::ffff:192.0.2.7"), "alice", now).delay,
            secs(1)
        );
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
            t.record_failure(client, "alice", start + Duration::from_millis(u64::from(i)));
            assert!(t.len() <= 100);
        }
        assert_eq!(t.len(), 100);
        // The most recent clients are the ones kept.
        let recent = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + 999));
        let old = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000));
        let now = start + secs(2);
        assert_eq!(t.record_failure(recent, "alice", now).delay, secs(1));
        assert_eq!(t.record_failure(old, "alice", now).delay, Duration::ZERO);
    }
}
