//! Rates as the shaping file writes them (`"100/s"`, `"2000/min"`,
//! `"50000/h"`, `"1000000/day"`) and the token bucket that enforces one:
//! it holds at most one period's worth, so a rate of N per period never
//! lets more than N through in any period, and refills continuously.
//! Time is passed in (sans-IO).

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, Instant};

/// `count` per `per`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub count: u32,
    pub per: Duration,
}

/// A rate that does not read as `N/s`, `N/min`, `N/h` or `N/day`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad rate {0:?}: want N/s, N/min, N/h or N/day with N at least 1")]
pub struct BadRate(pub String);

impl FromStr for Rate {
    type Err = BadRate;

    fn from_str(text: &str) -> Result<Rate, BadRate> {
        let bad = || BadRate(text.to_owned());
        let (count, unit) = text.split_once('/').ok_or_else(bad)?;
        let count: u32 = count
            .trim()
            .replace(['_', ','], "")
            .parse()
            .map_err(|_| bad())?;
        let per = match unit.trim() {
            "s" | "sec" | "second" => 1,
            "min" | "minute" => 60,
            "h" | "hour" => 3600,
            "d" | "day" => 86_400,
            _ => return Err(bad()),
        };
        if count == 0 {
            return Err(bad());
        }
        Ok(Rate {
            count,
            per: Duration::from_secs(per),
        })
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let unit = match self.per.as_secs() {
            1 => "s",
            60 => "min",
            3600 => "h",
            86_400 => "day",
            _ => return write!(f, "{}/{}s", self.count, self.per.as_secs()),
        };
        write!(f, "{}/{unit}", self.count)
    }
}

impl<'de> serde::Deserialize<'de> for Rate {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Rate, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// See the module header. `share` divides the rate (a core enforces its
/// share of a host-wide rate).
#[derive(Debug, Clone)]
pub struct TokenBucket {
    capacity: f64,
    tokens: f64,
    /// Tokens gained per second.
    refill: f64,
    last: Instant,
}

impl TokenBucket {
    /// Full at `now`.
    pub fn new(rate: Rate, share: usize, now: Instant) -> TokenBucket {
        let count = f64::from(rate.count) / share.max(1) as f64;
        let capacity = count.max(1.0);
        TokenBucket {
            capacity,
            tokens: capacity,
            refill: count / rate.per.as_secs_f64(),
            last: now,
        }
    }

    /// Changes the rate (a throttle): the tokens in hand are kept, up to
    /// the new capacity, so neither a step down nor a step up bursts.
    pub fn set_rate(&mut self, rate: Rate, share: usize, now: Instant) {
        self.refill(now);
        let count = f64::from(rate.count) / share.max(1) as f64;
        self.capacity = count.max(1.0);
        self.tokens = self.tokens.min(self.capacity);
        self.refill = count / rate.per.as_secs_f64();
    }

    fn refill(&mut self, now: Instant) {
        let gained = now.saturating_duration_since(self.last).as_secs_f64() * self.refill;
        self.tokens = (self.tokens + gained).min(self.capacity);
        self.last = self.last.max(now);
    }

    /// Whole tokens available at `now`.
    pub fn available(&mut self, now: Instant) -> usize {
        self.refill(now);
        self.tokens.floor().max(0.0) as usize
    }

    /// Spends `n` tokens (at most what is available).
    pub fn take(&mut self, now: Instant, n: usize) {
        self.refill(now);
        self.tokens = (self.tokens - n as f64).max(0.0);
    }

    /// When the next whole token is there (`now` if one is).
    pub fn next_token(&mut self, now: Instant) -> Instant {
        self.refill(now);
        if self.tokens >= 1.0 {
            return now;
        }
        let wait = (1.0 - self.tokens) / self.refill;
        now + Duration::from_secs_f64(wait.min(86_400.0 * 365.0))
    }

    /// Full again (nothing remembered is lost by forgetting it).
    pub fn is_full(&mut self, now: Instant) -> bool {
        self.refill(now);
        self.tokens >= self.capacity
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse_and_print() {
        let r: Rate = "100/s".parse().unwrap();
        assert_eq!(r.count, 100);
        assert_eq!(r.per, Duration::from_secs(1));
        assert_eq!("2_000/min".parse::<Rate>().unwrap().to_string(), "2000/min");
        assert_eq!("50000/h".parse::<Rate>().unwrap().per.as_secs(), 3600);
        assert_eq!("1,000,000/day".parse::<Rate>().unwrap().count, 1_000_000);
        for bad in ["", "100", "0/s", "x/s", "10/fortnight", "-1/s"] {
            assert!(bad.parse::<Rate>().is_err(), "{bad}");
        }
    }

    #[test]
    fn a_bucket_never_lets_more_than_a_period_through() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new("10/s".parse().unwrap(), 1, t0);
        assert_eq!(b.available(t0), 10);
        b.take(t0, 10);
        assert_eq!(b.available(t0), 0);
        assert_eq!(b.next_token(t0), t0 + Duration::from_millis(100));
        assert_eq!(b.available(t0 + Duration::from_millis(350)), 3);
        // Idle for long: never more than one period's worth.
        assert_eq!(b.available(t0 + Duration::from_secs(60)), 10);
        assert!(b.is_full(t0 + Duration::from_secs(60)));
        // Over any second from a full bucket, at most 10 + 10 refilled.
        let mut b = TokenBucket::new("10/s".parse().unwrap(), 1, t0);
        let mut sent = 0;
        for ms in (0..=1000).step_by(10) {
            let now = t0 + Duration::from_millis(ms);
            let n = b.available(now);
            b.take(now, n);
            sent += n;
        }
        assert!((19..=20).contains(&sent), "{sent}");
    }

    #[test]
    fn a_share_divides_the_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new("10/s".parse().unwrap(), 2, t0);
        assert_eq!(b.available(t0), 5);
        b.take(t0, 5);
        assert_eq!(b.next_token(t0), t0 + Duration::from_millis(200));
        // A rate below one per core still lets one through now and then.
        let mut slow = TokenBucket::new("1/min".parse().unwrap(), 2, t0);
        assert_eq!(slow.available(t0), 1);
        slow.take(t0, 1);
        assert_eq!(slow.next_token(t0), t0 + Duration::from_secs(120));
    }

    #[test]
    fn a_new_rate_keeps_the_tokens_in_hand_without_a_burst() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new("20/s".parse().unwrap(), 1, t0);
        b.take(t0, 5);
        b.set_rate("10/s".parse().unwrap(), 1, t0);
        assert_eq!(b.available(t0), 10, "capped at the new capacity");
        b.take(t0, 10);
        assert_eq!(b.next_token(t0), t0 + Duration::from_millis(100));
        b.set_rate("20/s".parse().unwrap(), 1, t0);
        assert_eq!(b.available(t0), 0, "a step up gives no tokens at once");
        assert_eq!(b.next_token(t0), t0 + Duration::from_millis(50));
    }
}
