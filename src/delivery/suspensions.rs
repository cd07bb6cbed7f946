//! Suspended destination sites, shared by every core: a site is
//! suspended by a back-off rule matching a receiver's reply or by hand
//! (`spate queue suspend`), until a time or until resumed. While it is,
//! no connection opens to it and its mail waits in the queue, uncounted.
//! Each core's engine copies the table into its ready queues when the
//! version moves (changes are rare; reads are per connection, not per
//! message).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::SystemTime;

use crate::queue::DestinationKey;

/// Why and until when a site is suspended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Suspension {
    pub until: SystemTime,
    /// The reply that matched, or "by hand".
    pub reason: String,
    /// The site's mail is returned to its senders meanwhile (a back-off
    /// rule's `bounce`), instead of waiting.
    pub bounce: bool,
}

/// See the module header.
#[derive(Debug, Default)]
pub struct Suspensions {
    table: Mutex<HashMap<DestinationKey, Suspension>>,
    version: AtomicU64,
}

impl Suspensions {
    fn table(&self) -> MutexGuard<'_, HashMap<DestinationKey, Suspension>> {
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Suspends `site` until `until` (a longer suspension already in
    /// force stays). Returns whether anything changed.
    pub fn suspend(&self, site: DestinationKey, until: SystemTime, reason: String) -> bool {
        self.put(
            site,
            Suspension {
                until,
                reason,
                bounce: false,
            },
        )
    }

    /// Suspends `site` until `until` and bounces its mail meanwhile (over
    /// any plain suspension). Returns whether anything changed.
    pub fn bounce(&self, site: DestinationKey, until: SystemTime, reason: String) -> bool {
        self.put(
            site,
            Suspension {
                until,
                reason,
                bounce: true,
            },
        )
    }

    fn put(&self, site: DestinationKey, new: Suspension) -> bool {
        let mut table = self.table();
        let stays = table
            .get(&site)
            .is_some_and(|old| old.until >= new.until && (old.bounce || !new.bounce));
        if stays {
            return false;
        }
        table.insert(site, new);
        self.version.fetch_add(1, Ordering::Release);
        true
    }

    /// Ends `site`'s suspension; false when it had none.
    pub fn resume(&self, site: &DestinationKey) -> bool {
        let removed = self.table().remove(site).is_some();
        if removed {
            self.version.fetch_add(1, Ordering::Release);
        }
        removed
    }

    /// Moves on every change: a core copies the table when it does.
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    /// The suspensions in force at `now`, soonest end first (those over
    /// are dropped).
    pub fn active(&self, now: SystemTime) -> Vec<(DestinationKey, Suspension)> {
        let mut table = self.table();
        table.retain(|_, s| s.until > now);
        let mut out: Vec<_> = table.iter().map(|(k, s)| (k.clone(), s.clone())).collect();
        out.sort_by(|a, b| a.1.until.cmp(&b.1.until).then_with(|| a.0.cmp(&b.0)));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_suspension_lasts_until_its_end_or_a_resume() {
        let s = Suspensions::default();
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let site = DestinationKey::route("smarthost.test", 25);
        let v0 = s.version();
        assert!(s.suspend(site.clone(), t0 + Duration::from_secs(3600), "421 x".into()));
        assert!(s.version() > v0);
        // A shorter one does not cut it short; a longer one extends it.
        assert!(!s.suspend(site.clone(), t0 + Duration::from_secs(60), "y".into()));
        assert!(s.suspend(site.clone(), t0 + Duration::from_secs(7200), "z".into()));
        let active = s.active(t0);
        assert_eq!(active.len(), 1);
        assert_eq!(active[0].1.reason, "z");
        assert!(s.active(t0 + Duration::from_secs(7200)).is_empty(), "over");
        s.suspend(site.clone(), t0 + Duration::from_secs(60), "again".into());
        let v = s.version();
        assert!(s.resume(&site));
        assert!(!s.resume(&site));
        assert!(s.version() > v);
        assert!(s.active(t0).is_empty());
    }

    #[test]
    fn a_bounce_overrides_a_plain_suspension_and_not_the_other_way() {
        let s = Suspensions::default();
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let site = DestinationKey::route("blocked.test", 25);
        assert!(s.suspend(site.clone(), t0 + Duration::from_secs(3600), "421".into()));
        assert!(s.bounce(
            site.clone(),
            t0 + Duration::from_secs(600),
            "550 5.7.606".into()
        ));
        assert!(s.active(t0)[0].1.bounce);
        assert!(!s.suspend(site.clone(), t0 + Duration::from_secs(300), "421".into()));
        assert!(
            s.active(t0)[0].1.bounce,
            "a plain suspension does not end a bounce"
        );
    }
}
