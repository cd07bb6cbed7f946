//! Throttled destination sites, shared by every core: a back-off rule's
//! `throttle` multiplies a site's limits (connections, rates) by a factor
//! on each matching reply, and every `recover_after` deliveries to the
//! site without such a reply undo one step, until the site is back to its
//! own limits. Each core copies the factors into its ready queues when the
//! version moves; only a throttled site's deliveries take the lock, so an
//! unthrottled site costs nothing. Time is passed in (sans-IO).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crate::queue::DestinationKey;
use crate::shaping::ThrottleStep;

/// The lowest factor: a site is never slowed below 1/64 of its limits.
pub const MIN_FACTOR: f64 = 1.0 / 64.0;

/// After a step down, further matching replies within this time do not
/// lower the site again: they answer transactions that were already under
/// way when it was lowered.
pub const SETTLE: Duration = Duration::from_secs(5);

/// One throttled site.
#[derive(Debug, Clone, PartialEq)]
pub struct Throttle {
    /// What the site's limits are multiplied by.
    pub factor: f64,
    pub step: ThrottleStep,
    /// Deliveries since the last step (up or down).
    pub successes: u32,
    /// The reply that lowered it last.
    pub reason: String,
    lowered_at: Instant,
}

/// A change of a site's factor, for the log and metrics.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Change {
    Lowered(f64),
    Raised(f64),
    /// Back to its own limits.
    Lifted,
}

/// See the module header.
#[derive(Debug, Default)]
pub struct Throttles {
    table: Mutex<HashMap<DestinationKey, Throttle>>,
    version: AtomicU64,
}

impl Throttles {
    fn table(&self) -> MutexGuard<'_, HashMap<DestinationKey, Throttle>> {
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn changed(&self) {
        self.version.fetch_add(1, Ordering::Release);
    }

    /// A reply matched a throttle rule: one step down, unless the site
    /// was lowered less than [`SETTLE`] ago.
    pub fn lower(
        &self,
        site: &DestinationKey,
        step: ThrottleStep,
        reason: &str,
        now: Instant,
    ) -> Option<Change> {
        let mut table = self.table();
        if let Some(t) = table.get_mut(site) {
            if now.saturating_duration_since(t.lowered_at) < SETTLE {
                return None;
            }
            t.factor = (t.factor * step.factor).max(MIN_FACTOR);
            t.step = step;
            t.successes = 0;
            t.reason = reason.to_owned();
            t.lowered_at = now;
            let factor = t.factor;
            drop(table);
            self.changed();
            return Some(Change::Lowered(factor));
        }
        let factor = step.factor.max(MIN_FACTOR);
        table.insert(
            site.clone(),
            Throttle {
                factor,
                step,
                successes: 0,
                reason: reason.to_owned(),
                lowered_at: now,
            },
        );
        drop(table);
        self.changed();
        Some(Change::Lowered(factor))
    }

    /// A message was delivered to `site`: after `recover_after` of them,
    /// one step up.
    pub fn delivered(&self, site: &DestinationKey) -> Option<Change> {
        let mut table = self.table();
        let t = table.get_mut(site)?;
        t.successes += 1;
        if t.successes < t.step.recover_after {
            return None;
        }
        t.successes = 0;
        t.factor /= t.step.factor;
        let change = if t.factor >= 1.0 - 1e-9 {
            table.remove(site);
            Change::Lifted
        } else {
            Change::Raised(t.factor)
        };
        drop(table);
        self.changed();
        Some(change)
    }

    /// Ends a site's throttle by hand; false when it had none.
    pub fn lift(&self, site: &DestinationKey) -> bool {
        let removed = self.table().remove(site).is_some();
        if removed {
            self.changed();
        }
        removed
    }

    /// Moves on every change.
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    /// Every throttled site and its throttle, most lowered first.
    pub fn active(&self) -> Vec<(DestinationKey, Throttle)> {
        let mut out: Vec<_> = self
            .table()
            .iter()
            .map(|(k, t)| (k.clone(), t.clone()))
            .collect();
        out.sort_by(|a, b| {
            a.1.factor
                .total_cmp(&b.1.factor)
                .then_with(|| a.0.cmp(&b.0))
        });
        out
    }

    /// The factors, for a core's ready queues.
    pub fn factors(&self) -> HashMap<DestinationKey, f64> {
        self.table()
            .iter()
            .map(|(k, t)| (k.clone(), t.factor))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(recover_after: u32) -> ThrottleStep {
        ThrottleStep {
            factor: 0.5,
            recover_after,
        }
    }

    #[test]
    fn a_site_steps_down_settles_and_climbs_back_step_by_step() {
        let t = Throttles::default();
        let site: DestinationKey = "mx:mx.slow.test".parse().unwrap();
        let t0 = Instant::now();
        assert_eq!(
            t.lower(&site, step(3), "421 slow", t0),
            Some(Change::Lowered(0.5))
        );
        // Replies to transactions already under way: no second step.
        assert_eq!(
            t.lower(&site, step(3), "421 slow", t0 + Duration::from_secs(1)),
            None
        );
        let later = t0 + SETTLE;
        assert_eq!(
            t.lower(&site, step(3), "421 slower", later),
            Some(Change::Lowered(0.25))
        );
        assert_eq!(t.factors()[&site], 0.25);
        let v = t.version();
        assert_eq!(t.delivered(&site), None);
        assert_eq!(t.delivered(&site), None);
        assert_eq!(t.delivered(&site), Some(Change::Raised(0.5)));
        assert!(t.version() > v);
        for _ in 0..2 {
            assert_eq!(t.delivered(&site), None);
        }
        assert_eq!(t.delivered(&site), Some(Change::Lifted));
        assert!(t.factors().is_empty());
        assert_eq!(
            t.delivered(&site),
            None,
            "an unthrottled site is not counted"
        );
    }

    #[test]
    fn a_site_is_never_slowed_below_the_floor_and_can_be_lifted_by_hand() {
        let t = Throttles::default();
        let site: DestinationKey = "[relay.test]:25".parse().unwrap();
        let mut now = Instant::now();
        for _ in 0..20 {
            t.lower(&site, step(10), "421", now);
            now += SETTLE;
        }
        assert_eq!(t.factors()[&site], MIN_FACTOR);
        assert_eq!(t.active()[0].1.reason, "421");
        assert!(t.lift(&site));
        assert!(!t.lift(&site));
        assert!(t.active().is_empty());
    }
}
