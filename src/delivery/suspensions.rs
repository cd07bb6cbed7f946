//! Suspended destination sites, shared by every core: a site is
//! suspended by a back-off rule matching a receiver's reply or by hand
//! (`spate queue suspend`), until a time or until resumed. While it is,
//! no connection opens to it and its mail waits in the queue, uncounted.
//! Each core's engine copies the table into its ready queues when the
//! version moves (changes are rare; reads are per connection, not per
//! message). With `[cluster]`, changes made here are fed to the cluster
//! client, which publishes them to the other hosts; theirs come back
//! through the `_from_peer` methods, which feed nothing (no echo).

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

/// A change made on this host, for the other hosts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Suspended {
        site: DestinationKey,
        suspension: Suspension,
    },
    Resumed {
        site: DestinationKey,
    },
}

/// See the module header.
#[derive(Debug, Default)]
pub struct Suspensions {
    table: Mutex<HashMap<DestinationKey, Suspension>>,
    version: AtomicU64,
    /// Where this host's own changes go (the cluster client), if any.
    feed: Option<crossbeam_channel::Sender<Change>>,
}

impl Suspensions {
    fn table(&self) -> MutexGuard<'_, HashMap<DestinationKey, Suspension>> {
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A table whose own changes are also sent to `feed`.
    pub fn with_feed(feed: crossbeam_channel::Sender<Change>) -> Suspensions {
        Suspensions {
            feed: Some(feed),
            ..Suspensions::default()
        }
    }

    /// Suspends `site` until `until` (a longer suspension already in
    /// force stays). Returns whether anything changed.
    pub fn suspend(&self, site: DestinationKey, until: SystemTime, reason: String) -> bool {
        self.put_own(
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
        self.put_own(
            site,
            Suspension {
                until,
                reason,
                bounce: true,
            },
        )
    }

    /// Ends `site`'s suspension; false when it had none.
    pub fn resume(&self, site: &DestinationKey) -> bool {
        let removed = self.resume_from_peer(site);
        if removed {
            self.tell(Change::Resumed { site: site.clone() });
        }
        removed
    }

    /// A change of this host's: put, and fed to the other hosts.
    fn put_own(&self, site: DestinationKey, new: Suspension) -> bool {
        let changed = self.put(site.clone(), new.clone());
        if changed {
            self.tell(Change::Suspended {
                site,
                suspension: new,
            });
        }
        changed
    }

    /// A suspension another host made: put, not fed back.
    pub fn suspend_from_peer(&self, site: DestinationKey, suspension: Suspension) -> bool {
        self.put(site, suspension)
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

    /// [`Suspensions::resume`] for a change another host made: not fed
    /// back.
    pub fn resume_from_peer(&self, site: &DestinationKey) -> bool {
        let removed = self.table().remove(site).is_some();
        if removed {
            self.version.fetch_add(1, Ordering::Release);
        }
        removed
    }

    fn tell(&self, change: Change) {
        if let Some(feed) = &self.feed {
            // Unbounded; the receiver lives as long as the process.
            let _ = feed.send(change);
        }
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
    fn own_changes_are_fed_and_peers_are_not() {
        let (tx, rx) = crossbeam_channel::unbounded();
        let s = Suspensions::with_feed(tx);
        let t0 = SystemTime::now() + Duration::from_secs(600);
        let site = DestinationKey::route("smarthost.test", 25);
        assert!(s.suspend(site.clone(), t0, "421 x".into()));
        assert!(!s.suspend(site.clone(), t0, "421 x".into()), "no change");
        assert!(matches!(rx.try_recv(), Ok(Change::Suspended { .. })));
        assert!(rx.try_recv().is_err(), "one change, one message");
        let other = DestinationKey::route("other.test", 25);
        let peer = Suspension {
            until: t0,
            reason: "peer".into(),
            bounce: false,
        };
        assert!(s.suspend_from_peer(other.clone(), peer));
        assert!(s.resume_from_peer(&other));
        assert!(rx.try_recv().is_err(), "a peer's change is not fed back");
        assert!(s.resume(&site));
        assert_eq!(rx.try_recv().ok(), Some(Change::Resumed { site }));
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
