//! One core's lease on one shared rate of one site: tokens granted in
//! batches by the cluster limiter (Redis), spent locally, and asked for
//! again when half are gone, before they run out, so no message ever
//! waits for Redis while the shared rate has room. While Redis cannot be
//! reached the lease answers from a bucket of its own holding this core's
//! share of this host's share of the rate. Sans-IO: time is passed in; it
//! only says when to ask, never asks.

use std::time::{Duration, Instant};

use crate::shaping::{Rate, TokenBucket};

/// Tokens in hand are dropped this long after their grant: a lease never
/// spends an old grant on top of the rate's present flow.
pub const LAPSE: Duration = Duration::from_secs(1);
/// A request without an answer for this long is taken as lost (the
/// client thread answers every request, so this is only a backstop).
const STALE_REQUEST: Duration = Duration::from_secs(2);
/// How soon to look again while a request is out (an answer wakes the
/// core as well; this is for the connections waiting on a rate).
pub const POLL: Duration = Duration::from_millis(2);

/// Where a lease takes its tokens from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// From grants of the shared limiter.
    Shared,
    /// From its own bucket: the rate divided by `share` (cores times
    /// hosts), while the shared limiter cannot be reached.
    Fallback { share: usize },
}

/// See the module header.
#[derive(Debug, Clone)]
pub struct Lease {
    rate: Rate,
    /// Tokens asked for at a time.
    batch: u32,
    tokens: u32,
    /// When the tokens in hand lapse.
    lapses: Instant,
    /// A request is out since then.
    asked: Option<Instant>,
    /// The limiter said no full batch is there before then.
    not_before: Option<Instant>,
    /// This core's share while in fallback (and the share it was made for).
    fallback: Option<(usize, TokenBucket)>,
}

impl Lease {
    /// A lease holding `lease` worth of `rate` per grant (at least one
    /// token, at most one period's worth).
    pub fn new(rate: Rate, lease: Duration, now: Instant) -> Lease {
        Lease {
            rate,
            batch: batch_for(rate, lease),
            tokens: 0,
            lapses: now,
            asked: None,
            not_before: None,
            fallback: None,
        }
    }

    pub fn rate(&self) -> Rate {
        self.rate
    }

    pub fn batch(&self) -> u32 {
        self.batch
    }

    fn settle(&mut self, now: Instant, mode: Mode) {
        if now >= self.lapses {
            self.tokens = 0;
        }
        match mode {
            Mode::Shared => self.fallback = None,
            Mode::Fallback { share } => {
                if self.fallback.as_ref().is_none_or(|(s, _)| *s != share) {
                    // Starts empty: the tokens in hand cover the switch,
                    // and nothing above the share leaves at once.
                    let mut bucket = TokenBucket::new(self.rate, share, now);
                    let full = bucket.available(now);
                    bucket.take(now, full);
                    self.fallback = Some((share, bucket));
                }
            }
        }
    }

    /// Tokens that may be spent now.
    pub fn available(&mut self, now: Instant, mode: Mode) -> usize {
        self.settle(now, mode);
        let own = self
            .fallback
            .as_mut()
            .map_or(0, |(_, bucket)| bucket.available(now));
        self.tokens as usize + own
    }

    /// Spends `n` tokens: those in hand first, then the fallback bucket's.
    pub fn take(&mut self, n: usize, now: Instant) {
        let from_hand = (self.tokens as usize).min(n);
        self.tokens -= from_hand as u32;
        if let Some((_, bucket)) = self.fallback.as_mut() {
            bucket.take(now, n - from_hand);
        }
    }

    /// How many tokens to ask the limiter for now, if it is time to ask:
    /// half the batch or less in hand, no request out, and the limiter's
    /// last word allows it. Marks the request as out.
    pub fn request(&mut self, now: Instant, mode: Mode) -> Option<u32> {
        self.settle(now, mode);
        if mode != Mode::Shared || self.tokens.saturating_mul(2) > self.batch {
            return None;
        }
        if self
            .asked
            .is_some_and(|at| now.saturating_duration_since(at) < STALE_REQUEST)
        {
            return None;
        }
        if self.not_before.is_some_and(|at| now < at) {
            return None;
        }
        self.asked = Some(now);
        Some(self.batch)
    }

    /// The limiter's answer: `tokens` granted; when fewer than asked,
    /// the next batch is not there before `wait` from now.
    pub fn granted(&mut self, tokens: u32, wait: Duration, now: Instant) {
        self.settle(now, Mode::Shared);
        self.asked = None;
        if tokens > 0 {
            self.tokens = self.tokens.saturating_add(tokens);
            self.lapses = now + LAPSE;
        }
        self.not_before = (tokens < self.batch).then(|| now + wait);
    }

    /// The request could not be answered (the limiter is unreachable).
    pub fn refused(&mut self) {
        self.asked = None;
    }

    /// When a token may be there, if none is now.
    pub fn next_available(&mut self, now: Instant, mode: Mode) -> Option<Instant> {
        if self.available(now, mode) > 0 {
            return None;
        }
        if let Some((_, bucket)) = self.fallback.as_mut() {
            return Some(bucket.next_token(now));
        }
        if self.asked.is_some() {
            return Some(now + POLL);
        }
        Some(self.not_before.map_or(now + POLL, |at| at.max(now + POLL)))
    }
}

/// Tokens per grant: `lease` worth of `rate`, at least one, at most one
/// period's worth (the limiter's burst).
pub fn batch_for(rate: Rate, lease: Duration) -> u32 {
    let per = rate.per.as_secs_f64().max(1e-3);
    let worth = (f64::from(rate.count) * lease.as_secs_f64() / per).ceil();
    (worth.clamp(1.0, f64::from(rate.count.max(1)))) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rate(text: &str) -> Rate {
        text.parse().expect("rate")
    }

    const TENTH: Duration = Duration::from_millis(100);

    #[test]
    fn batches_scale_with_the_rate() {
        assert_eq!(batch_for(rate("100/s"), TENTH), 10);
        assert_eq!(batch_for(rate("10000/s"), TENTH), 1000);
        assert_eq!(batch_for(rate("5/s"), TENTH), 1);
        assert_eq!(batch_for(rate("1000/day"), TENTH), 1);
        assert_eq!(
            batch_for(rate("3/s"), Duration::from_secs(10)),
            3,
            "a period at most"
        );
    }

    #[test]
    fn asks_at_half_and_never_twice_at_once() {
        let t0 = Instant::now();
        let mut lease = Lease::new(rate("100/s"), TENTH, t0);
        assert_eq!(lease.available(t0, Mode::Shared), 0);
        assert_eq!(lease.request(t0, Mode::Shared), Some(10));
        assert_eq!(lease.request(t0, Mode::Shared), None, "one request out");
        assert_eq!(lease.next_available(t0, Mode::Shared), Some(t0 + POLL));
        lease.granted(10, Duration::ZERO, t0);
        assert_eq!(lease.available(t0, Mode::Shared), 10);
        assert_eq!(lease.next_available(t0, Mode::Shared), None);
        lease.take(4, t0);
        assert_eq!(
            lease.request(t0, Mode::Shared),
            None,
            "6 of 10 left: not yet"
        );
        lease.take(1, t0);
        assert_eq!(
            lease.request(t0, Mode::Shared),
            Some(10),
            "half gone: ask before running out"
        );
        lease.granted(10, Duration::ZERO, t0);
        assert_eq!(
            lease.available(t0, Mode::Shared),
            15,
            "at most a batch and a half"
        );
    }

    #[test]
    fn a_short_grant_waits_for_the_limiter_and_tokens_lapse() {
        let t0 = Instant::now();
        let mut lease = Lease::new(rate("100/s"), TENTH, t0);
        lease.request(t0, Mode::Shared);
        // The limiter had 3: the next full batch in 70 ms.
        lease.granted(3, Duration::from_millis(70), t0);
        assert_eq!(lease.available(t0, Mode::Shared), 3);
        assert_eq!(lease.request(t0, Mode::Shared), None, "not before 70 ms");
        lease.take(3, t0);
        assert_eq!(
            lease.next_available(t0, Mode::Shared),
            Some(t0 + Duration::from_millis(70))
        );
        let t1 = t0 + Duration::from_millis(70);
        assert_eq!(lease.request(t1, Mode::Shared), Some(10));
        lease.granted(10, Duration::ZERO, t1);
        // Unspent tokens do not outlive their lapse.
        assert_eq!(lease.available(t1 + LAPSE, Mode::Shared), 0);
    }

    #[test]
    fn a_lost_request_is_asked_again() {
        let t0 = Instant::now();
        let mut lease = Lease::new(rate("100/s"), TENTH, t0);
        assert!(lease.request(t0, Mode::Shared).is_some());
        assert!(lease
            .request(t0 + Duration::from_secs(1), Mode::Shared)
            .is_none());
        assert!(lease.request(t0 + STALE_REQUEST, Mode::Shared).is_some());
        lease.refused();
        assert!(lease.request(t0 + STALE_REQUEST, Mode::Shared).is_some());
    }

    #[test]
    fn in_fallback_the_share_holds_and_nothing_is_asked() {
        let t0 = Instant::now();
        // 100/s shared by 2 hosts of 2 cores: 25/s on this core.
        let fallback = Mode::Fallback { share: 4 };
        let mut lease = Lease::new(rate("100/s"), TENTH, t0);
        lease.request(t0, Mode::Shared);
        lease.granted(10, Duration::ZERO, t0);
        // The tokens in hand are spent first, the share starts empty.
        assert_eq!(lease.available(t0, fallback), 10);
        assert_eq!(lease.request(t0, fallback), None);
        lease.take(10, t0);
        assert_eq!(lease.available(t0, fallback), 0);
        assert_eq!(
            lease.next_available(t0, fallback),
            Some(t0 + Duration::from_millis(40))
        );
        let mut spent = 0;
        for ms in (0..=2000).step_by(5) {
            let now = t0 + Duration::from_millis(ms);
            let n = lease.available(now, fallback);
            lease.take(n, now);
            spent += n;
        }
        assert!((49..=51).contains(&spent), "25/s for 2 s: {spent}");
        // Back to shared: the bucket is gone, the lease asks again.
        let t2 = t0 + Duration::from_secs(2);
        assert_eq!(lease.available(t2, Mode::Shared), 0);
        assert_eq!(lease.request(t2, Mode::Shared), Some(10));
    }
}
