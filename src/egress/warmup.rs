//! The warm-up of a new sending address: a schedule of daily volumes, one
//! step per calendar day (UTC) from the source's start date, after which
//! the source is warm (no daily limit). It computes dates and limits from
//! a day number passed in; it counts nothing and reads no clock.

use std::fmt;

use crate::shaping::Rate;

const SECONDS_PER_DAY: u64 = 86_400;

/// A calendar day (UTC), as days since 1970-01-01.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Day(pub i64);

/// A date that does not read as `YYYY-MM-DD`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad date {0:?}: want YYYY-MM-DD")]
pub struct BadDate(pub String);

impl Day {
    /// The day (UTC) that `unix_seconds` falls on.
    pub fn of_unix(unix_seconds: u64) -> Day {
        Day((unix_seconds / SECONDS_PER_DAY) as i64)
    }

    /// Seconds since the epoch at the start of this day (0 before 1970).
    pub fn start_unix(self) -> u64 {
        u64::try_from(self.0).map_or(0, |d| d.saturating_mul(SECONDS_PER_DAY))
    }

    /// Reads `YYYY-MM-DD` (proleptic Gregorian calendar).
    pub fn parse(text: &str) -> Result<Day, BadDate> {
        let bad = || BadDate(text.to_owned());
        let mut parts = text.trim().split('-');
        let (Some(y), Some(m), Some(d), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(bad());
        };
        if y.len() != 4 || m.len() != 2 || d.len() != 2 {
            return Err(bad());
        }
        let number = |s: &str| -> Result<i64, BadDate> {
            if !s.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad());
            }
            s.parse().map_err(|_| bad())
        };
        let (y, m, d) = (number(y)?, number(m)?, number(d)?);
        if !(1..=12).contains(&m) || d < 1 || d > days_in_month(y, m) {
            return Err(bad());
        }
        Ok(Day(days_from_civil(y, m, d)))
    }
}

/// A date in the configuration: a TOML date (`2025-12-06`) or a string
/// (`"2025-12-06"`).
impl<'de> serde::Deserialize<'de> for Day {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Day, D::Error> {
        #[derive(serde::Deserialize)]
        #[serde(untagged)]
        enum Written {
            Text(String),
            Date(toml::value::Datetime),
        }
        let text = match Written::deserialize(d)? {
            Written::Text(text) => text,
            Written::Date(date) => match (date.date, date.time) {
                (Some(day), None) => day.to_string(),
                _ => date.to_string(),
            },
        };
        Day::parse(&text).map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for Day {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (y, m, d) = civil_from_days(self.0);
        write!(f, "{y:04}-{m:02}-{d:02}")
    }
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if is_leap(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a civil date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The inverse of [`days_from_civil`].
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// A source's warm-up: from `start`, day `i` allows `steps[i]` messages;
/// after the last step the source is warm.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warmup {
    pub start: Day,
    /// Messages per day, host-wide, one entry per day.
    pub steps: Vec<u64>,
}

/// What a day's schedule allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DailyLimit {
    /// Before the start date: the source sends nothing yet.
    NotStarted,
    /// During the warm-up: at most this many messages that day.
    Messages(u64),
    /// After the last step: no daily limit.
    Warm,
}

impl Warmup {
    /// A schedule from rates as the configuration writes them (`"1000/day"`;
    /// another unit counts what it allows in a day, `"100/h"` = 2400).
    pub fn new(start: Day, steps: &[Rate]) -> Warmup {
        Warmup {
            start,
            steps: steps.iter().map(|r| per_day(*r)).collect(),
        }
    }

    /// The limit on `today`, host-wide.
    pub fn limit(&self, today: Day) -> DailyLimit {
        let Ok(index) = usize::try_from(today.0 - self.start.0) else {
            return DailyLimit::NotStarted;
        };
        match self.steps.get(index) {
            Some(&n) => DailyLimit::Messages(n),
            None => DailyLimit::Warm,
        }
    }
}

/// Messages a rate allows in one day.
fn per_day(rate: Rate) -> u64 {
    let per = rate.per.as_secs().max(1);
    u64::from(rate.count).saturating_mul(SECONDS_PER_DAY) / per
}

/// Core `core`'s share of a host-wide count over `cores` cores: the
/// shares add up to `total` exactly (the first cores take the remainder).
pub fn core_share(total: u64, core: usize, cores: usize) -> u64 {
    let cores = cores.max(1) as u64;
    let core = (core as u64) % cores;
    total / cores + u64::from(core < total % cores)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_read_and_print() {
        assert_eq!(Day::parse("1970-01-01"), Ok(Day(0)));
        assert_eq!(Day::parse("2000-03-01").unwrap().0, 11_017);
        let d = Day::parse("2025-12-06").unwrap();
        assert_eq!(d.to_string(), "2025-12-06");
        assert_eq!(Day::of_unix(d.start_unix() + 86_399), d);
        assert_eq!(
            Day::of_unix(d.start_unix() + 86_400).to_string(),
            "2025-12-07"
        );
        assert_eq!(Day::parse("2024-02-29").unwrap().to_string(), "2024-02-29");
        for bad in [
            "",
            "2025-12",
            "2025-13-01",
            "2025-02-29",
            "2025-1-01",
            "25-01-01",
            "2025-01-0x",
            "2025-01-01-01",
            "+025-01-01",
        ] {
            assert!(Day::parse(bad).is_err(), "{bad}");
        }
        // Every day of a few years round-trips.
        for z in -800..3000 {
            assert_eq!(Day::parse(&Day(z * 7).to_string()), Ok(Day(z * 7)));
        }
    }

    #[test]
    fn dates_deserialize_from_toml_dates_and_strings() {
        #[derive(serde::Deserialize)]
        struct T {
            a: Day,
            b: Day,
        }
        let t: T = toml::from_str("a = 2025-12-06\nb = \"2025-12-07\"\n").unwrap();
        assert_eq!(
            (t.a.to_string(), t.b.to_string()),
            ("2025-12-06".into(), "2025-12-07".into())
        );
        assert!(toml::from_str::<T>("a = 2025-12-06T10:00:00\nb = \"x\"\n").is_err());
    }

    #[test]
    fn the_schedule_steps_by_day_then_the_source_is_warm() {
        let start = Day::parse("2025-12-06").unwrap();
        let rates: Vec<Rate> = ["1000/day", "5000/day", "100/h"]
            .iter()
            .map(|r| r.parse().unwrap())
            .collect();
        let w = Warmup::new(start, &rates);
        assert_eq!(w.limit(Day(start.0 - 1)), DailyLimit::NotStarted);
        assert_eq!(w.limit(start), DailyLimit::Messages(1000));
        assert_eq!(w.limit(Day(start.0 + 1)), DailyLimit::Messages(5000));
        assert_eq!(w.limit(Day(start.0 + 2)), DailyLimit::Messages(2400));
        assert_eq!(w.limit(Day(start.0 + 3)), DailyLimit::Warm);
    }

    #[test]
    fn core_shares_add_up() {
        for total in [0, 1, 5, 7, 1000] {
            for cores in 1..5 {
                let sum: u64 = (0..cores).map(|c| core_share(total, c, cores)).sum();
                assert_eq!(sum, total, "{total} over {cores}");
            }
        }
        assert_eq!(core_share(5, 0, 2), 3);
        assert_eq!(core_share(5, 1, 2), 2);
    }
}
