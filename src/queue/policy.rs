//! Retry timing: the backoff sequence, the queue lifetime and the
//! injectable jitter. Pure arithmetic on durations; it neither keeps
//! messages nor reads a clock.

use std::time::Duration;

use crate::spool::SpoolId;

use super::error::QueueError;

/// When to retry and when to give up. Defaults follow Postfix rather than
/// RFC 5321 4.5.4.1's "at least 30 minutes": a first retry after 5 minutes
/// clears most greylisting and transient overloads, and backing off to
/// about an hour keeps a dead destination cheap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Delay after the first failed attempt (Postfix `minimal_backoff_time`).
    pub minimal_backoff: Duration,
    /// Ceiling of the doubling delays (Postfix `maximal_backoff_time`).
    pub maximal_backoff: Duration,
    /// A message still failing temporarily after this long is given up
    /// (Postfix `maximal_queue_lifetime`): its pending recipients are
    /// expired and a DSN is owed.
    pub maximal_queue_lifetime: Duration,
    /// How long delivery may hold a message it was handed (ready-queue
    /// wait plus the SMTP transaction, restarted by `Queue::begin`) before
    /// the queue assumes the attempt was lost and reschedules it. This is
    /// what makes "every message has a deadline" hold even if delivery
    /// forgets a message; it must exceed the sum of the SMTP timeouts.
    pub attempt_timeout: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            minimal_backoff: Duration::from_secs(300),
            maximal_backoff: Duration::from_secs(4000),
            maximal_queue_lifetime: Duration::from_secs(5 * 24 * 3600),
            attempt_timeout: Duration::from_secs(3600),
        }
    }
}

impl RetryPolicy {
    /// Refuses timings that would spin (zero delays) or never back off.
    pub fn validate(&self) -> Result<(), QueueError> {
        if self.minimal_backoff.as_secs() == 0 {
            return Err(QueueError::Policy("minimal_backoff must be at least 1 s"));
        }
        if self.maximal_backoff < self.minimal_backoff {
            return Err(QueueError::Policy(
                "maximal_backoff must not be below minimal_backoff",
            ));
        }
        if self.maximal_queue_lifetime.as_secs() == 0 {
            return Err(QueueError::Policy(
                "maximal_queue_lifetime must be at least 1 s",
            ));
        }
        if self.attempt_timeout.as_secs() == 0 {
            return Err(QueueError::Policy("attempt_timeout must be at least 1 s"));
        }
        Ok(())
    }

    /// The delay after the `attempts`-th failure (1-based): minimal_backoff
    /// doubled per earlier failure, capped at maximal_backoff. With the
    /// defaults: 300, 600, 1200, 2400, 4000, 4000... seconds.
    pub fn backoff(&self, attempts: u32) -> Duration {
        let doublings = attempts.saturating_sub(1).min(63);
        let min = self.minimal_backoff.as_secs();
        let secs = min.checked_shl(doublings).filter(|s| s >> doublings == min);
        Duration::from_secs(secs.unwrap_or(u64::MAX)).min(self.maximal_backoff)
    }
}

/// Spreads retries so that messages deferred together (a destination went
/// down) do not all come back in the same second. Injected so tests can
/// use none, and so no random source hides in the scheduler.
pub trait Jitter {
    /// The delay to use instead of `delay` for the `attempts`-th deferral
    /// of `id`. The queue clamps the result to 1 s ..= maximal_backoff.
    fn adjust(&mut self, id: SpoolId, attempts: u32, delay: Duration) -> Duration;
}

/// No jitter: the exact backoff sequence.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NoJitter;

impl Jitter for NoJitter {
    fn adjust(&mut self, _id: SpoolId, _attempts: u32, delay: Duration) -> Duration {
        delay
    }
}

/// Shortens each delay by a deterministic 0..=`percent` % derived from the
/// message id, attempt count and a per-core `seed`: spread like random
/// jitter, yet reproducible, and never longer than the backoff says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpreadJitter {
    pub percent: u8,
    pub seed: u64,
}

impl Jitter for SpreadJitter {
    fn adjust(&mut self, id: SpoolId, attempts: u32, delay: Duration) -> Duration {
        let pct = u64::from(self.percent.min(100));
        let h = splitmix64(self.seed ^ id.to_u64() ^ u64::from(attempts).rotate_left(32));
        let cut = h % (pct + 1);
        let secs = delay.as_secs();
        Duration::from_secs(secs - (u128::from(secs) * u128::from(cut) / 100) as u64)
    }
}

fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postfix_like_backoff_sequence() {
        let p = RetryPolicy::default();
        let seq: Vec<u64> = (1..=8).map(|a| p.backoff(a).as_secs()).collect();
        assert_eq!(seq, vec![300, 600, 1200, 2400, 4000, 4000, 4000, 4000]);
        assert_eq!(p.backoff(0).as_secs(), 300);
        assert_eq!(p.backoff(u32::MAX).as_secs(), 4000);
        let big = RetryPolicy {
            maximal_backoff: Duration::MAX,
            ..p
        };
        assert_eq!(big.backoff(70).as_secs(), u64::MAX, "saturates, no wrap");
        assert_eq!(big.backoff(5).as_secs(), 4800);
    }

    #[test]
    fn policy_validation() {
        assert!(RetryPolicy::default().validate().is_ok());
        let p = RetryPolicy::default();
        for bad in [
            RetryPolicy {
                minimal_backoff: Duration::ZERO,
                ..p
            },
            RetryPolicy {
                maximal_backoff: Duration::from_secs(10),
                ..p
            },
            RetryPolicy {
                maximal_queue_lifetime: Duration::ZERO,
                ..p
            },
            RetryPolicy {
                attempt_timeout: Duration::from_millis(999),
                ..p
            },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn spread_jitter_is_bounded_and_deterministic() {
        let mut j = SpreadJitter {
            percent: 20,
            seed: 42,
        };
        let d = Duration::from_secs(1000);
        let mut seen = std::collections::BTreeSet::new();
        for n in 0..200u64 {
            let id = SpoolId::from_u64(n);
            let a = j.adjust(id, 3, d);
            assert_eq!(a, j.adjust(id, 3, d));
            assert!(a.as_secs() >= 800 && a <= d, "{a:?}");
            seen.insert(a);
        }
        assert!(seen.len() > 10, "spreads: {}", seen.len());
        assert_eq!(NoJitter.adjust(SpoolId::from_u64(1), 1, d), d);
    }
}
