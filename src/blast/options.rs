//! What `spate blast` was asked to do, as typed values: sizes, size
//! distributions, rates, durations, recipient domains. It parses the
//! command line's strings and refuses nonsense with a clear error; it
//! never opens a socket or a file.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use thiserror::Error;

/// Why an option's value is not usable.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum OptionError {
    #[error("bad size {0:?}: want a number with an optional k, m or g suffix (1024-based)")]
    Size(String),
    #[error("bad size distribution {0:?}: want SIZE:WEIGHT[,SIZE:WEIGHT...] with weights above 0")]
    SizeDistribution(String),
    #[error("bad duration {0:?}: want a number with a unit (ms, s, m, h)")]
    Duration(String),
    #[error("bad rate {0:?}: want messages per second, like 500 or 500/s or 30000/m")]
    Rate(String),
    #[error("bad domain pattern {0:?}: it must hold {{}} exactly once")]
    DomainPattern(String),
    #[error("bad credentials: want user:password")]
    Credentials,
}

/// Parses `4096`, `4k`, `10m`, `1g` (1024-based).
pub fn parse_size(text: &str) -> Result<u64, OptionError> {
    let bad = || OptionError::Size(text.to_owned());
    let t = text.trim();
    let (digits, unit) = match t.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => (&t[..i], t[i..].to_ascii_lowercase()),
        None => (t, String::new()),
    };
    let n: u64 = digits.parse().map_err(|_| bad())?;
    let factor: u64 = match unit.as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        _ => return Err(bad()),
    };
    n.checked_mul(factor).ok_or_else(bad)
}

/// Parses `250ms`, `10s`, `2m`, `1h` (a bare number is seconds).
pub fn parse_duration(text: &str) -> Result<Duration, OptionError> {
    let bad = || OptionError::Duration(text.to_owned());
    let t = text.trim();
    let split = t
        .char_indices()
        .find(|(_, c)| !(c.is_ascii_digit() || *c == '.'))
        .map_or(t.len(), |(i, _)| i);
    let value: f64 = t[..split].parse().map_err(|_| bad())?;
    let seconds = match &t[split..] {
        "" | "s" => value,
        "ms" => value / 1000.0,
        "us" => value / 1_000_000.0,
        "m" | "min" => value * 60.0,
        "h" => value * 3600.0,
        _ => return Err(bad()),
    };
    if !seconds.is_finite() || !(0.0..=1e9).contains(&seconds) {
        return Err(bad());
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// Parses a rate in messages per second: `500`, `500/s`, `30000/m`.
pub fn parse_rate(text: &str) -> Result<f64, OptionError> {
    let bad = || OptionError::Rate(text.to_owned());
    let (number, per) = match text.trim().split_once('/') {
        Some((n, unit)) => (n, unit),
        None => (text.trim(), "s"),
    };
    let n: f64 = number.trim().parse().map_err(|_| bad())?;
    let per_second = match per.trim() {
        "s" | "sec" => n,
        "m" | "min" => n / 60.0,
        "h" => n / 3600.0,
        _ => return Err(bad()),
    };
    if !per_second.is_finite() || per_second <= 0.0 {
        return Err(bad());
    }
    Ok(per_second)
}

/// Message sizes drawn with weights, like `1k:60,10k:30,100k:10`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SizeDistribution {
    /// (size, cumulative weight), cumulative weights increasing.
    steps: Vec<(u64, u64)>,
}

impl SizeDistribution {
    pub fn parse(text: &str) -> Result<Self, OptionError> {
        let bad = || OptionError::SizeDistribution(text.to_owned());
        let mut steps = Vec::new();
        let mut total = 0u64;
        for part in text.split(',') {
            let (size, weight) = part.split_once(':').ok_or_else(bad)?;
            let size = parse_size(size).map_err(|_| bad())?;
            let weight: u64 = weight.trim().parse().map_err(|_| bad())?;
            if weight == 0 {
                return Err(bad());
            }
            total = total.checked_add(weight).ok_or_else(bad)?;
            steps.push((size, total));
        }
        Ok(SizeDistribution { steps })
    }

    /// A fixed size.
    pub fn fixed(size: u64) -> Self {
        SizeDistribution {
            steps: vec![(size, 1)],
        }
    }

    /// The size for a uniform draw `r` (any u64).
    pub fn pick(&self, r: u64) -> u64 {
        // `steps` is never empty: `parse` needs one part, `fixed` has one.
        let total = self.steps.last().map_or(1, |s| s.1);
        let x = r % total;
        self.steps
            .iter()
            .find(|(_, cumulative)| x < *cumulative)
            .map_or(0, |(size, _)| *size)
    }

    pub fn largest(&self) -> u64 {
        self.steps.iter().map(|s| s.0).max().unwrap_or(0)
    }
}

/// The recipient domains: a list, or a pattern numbered 1..=count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Domains {
    List(Vec<String>),
    Pattern {
        prefix: String,
        suffix: String,
        count: u64,
    },
}

impl Domains {
    /// `pattern` holds `{}` once, replaced by 1..=count.
    pub fn pattern(pattern: &str, count: u64) -> Result<Self, OptionError> {
        let (prefix, suffix) = pattern
            .split_once("{}")
            .filter(|(_, s)| !s.contains("{}"))
            .ok_or_else(|| OptionError::DomainPattern(pattern.to_owned()))?;
        Ok(Domains::Pattern {
            prefix: prefix.to_owned(),
            suffix: suffix.to_owned(),
            count: count.max(1),
        })
    }

    /// Appends domain number `k` (any u64; taken modulo the count).
    pub fn write(&self, k: u64, out: &mut String) {
        match self {
            Domains::List(list) if !list.is_empty() => {
                out.push_str(&list[(k % list.len() as u64) as usize]);
            }
            Domains::List(_) => out.push_str("example.test"),
            Domains::Pattern {
                prefix,
                suffix,
                count,
            } => {
                use std::fmt::Write as _;
                let _ = write!(out, "{prefix}{}{suffix}", k % count + 1);
            }
        }
    }
}

/// How much to send.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Budget {
    Messages(u64),
    Duration(Duration),
}

/// The message content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Content {
    /// Generated messages of these sizes (headers included).
    Generated(SizeDistribution),
    /// This file's bytes, every time.
    File(PathBuf),
}

/// Everything `spate blast` needs, checked.
#[derive(Debug, Clone)]
pub struct BlastOptions {
    pub target: SocketAddr,
    pub connections: usize,
    pub budget: Budget,
    /// Transactions per connection before QUIT and a new connection; 0 = no limit.
    pub per_connection: u64,
    pub recipients: u32,
    pub domains: Domains,
    pub content: Content,
    /// Messages per second, all cores together.
    pub rate: Option<f64>,
    pub from: String,
    pub helo: String,
    pub starttls: bool,
    pub auth: Option<(String, String)>,
    pub pipelining: bool,
    pub bdat: bool,
    pub cores: usize,
    /// Longest wait for any reply (or connect, or TLS handshake).
    pub timeout: Duration,
    pub seed: u64,
}

/// Parses `user:password` for AUTH PLAIN.
pub fn parse_credentials(text: &str) -> Result<(String, String), OptionError> {
    text.split_once(':')
        .filter(|(u, _)| !u.is_empty())
        .map(|(u, p)| (u.to_owned(), p.to_owned()))
        .ok_or(OptionError::Credentials)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_durations_and_rates() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("4k"), Ok(4096));
        assert_eq!(parse_size("10M"), Ok(10 << 20));
        assert!(parse_size("4q").is_err());
        assert!(parse_size("").is_err());
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("1 fortnight").is_err());
        assert_eq!(parse_rate("500/s"), Ok(500.0));
        assert_eq!(parse_rate("600/m"), Ok(10.0));
        assert!(parse_rate("0").is_err());
        assert!(parse_rate("fast").is_err());
        assert_eq!(parse_credentials("u:p:q"), Ok(("u".into(), "p:q".into())));
        assert!(parse_credentials("nopassword").is_err());
    }

    #[test]
    fn distribution_follows_weights() {
        let d = SizeDistribution::parse("1k:60,10k:30,100k:10").unwrap();
        let picks: Vec<u64> = (0..100).map(|r| d.pick(r)).collect();
        assert_eq!(picks.iter().filter(|&&s| s == 1024).count(), 60);
        assert_eq!(picks.iter().filter(|&&s| s == 10240).count(), 30);
        assert_eq!(d.largest(), 102400);
        assert!(SizeDistribution::parse("1k:0").is_err());
        assert!(SizeDistribution::parse("1k").is_err());
    }

    #[test]
    fn domains_from_pattern_and_list() {
        let d = Domains::pattern("d{}.test", 3).unwrap();
        let mut s = String::new();
        for k in 0..4 {
            d.write(k, &mut s);
            s.push(' ');
        }
        assert_eq!(s, "d1.test d2.test d3.test d1.test ");
        assert!(Domains::pattern("nothing.test", 3).is_err());
        assert!(Domains::pattern("{}{}", 3).is_err());
        let l = Domains::List(vec!["a.test".into(), "b.test".into()]);
        let mut s = String::new();
        l.write(3, &mut s);
        assert_eq!(s, "b.test");
    }
}
