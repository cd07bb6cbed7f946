//! `UnixTime`: a point in time as callers pass it in (seconds since the
//! Unix epoch, the unit the spool stores). Arithmetic only: it never reads
//! a clock.

use std::fmt;
use std::time::Duration;

/// Seconds since the Unix epoch. A newtype so that a retry time can not be
/// confused with a delay, a size or an attempt count; second resolution is
/// all retry scheduling needs and matches what the spool records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct UnixTime(pub u64);

impl UnixTime {
    pub fn from_secs(secs: u64) -> Self {
        UnixTime(secs)
    }

    pub fn as_secs(self) -> u64 {
        self.0
    }

    /// `self + d`, whole seconds, saturating (a far-future time is still a
    /// time, never a wrap to the past).
    pub fn plus(self, d: Duration) -> Self {
        UnixTime(self.0.saturating_add(d.as_secs()))
    }

    /// Seconds from `earlier` to `self`, zero if `earlier` is later.
    pub fn since(self, earlier: UnixTime) -> Duration {
        Duration::from_secs(self.0.saturating_sub(earlier.0))
    }
}

impl fmt::Display for UnixTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}
