//! Suspended destination sites, shared by every core: a site is
//! suspended by a back-off rule matching a receiver's reply or by hand
//! (`spate queue suspend`), until a time or until resumed. While it is,
//! no connection opens to it and its mail waits in the queue, uncounted.
//! Each core's engine copies the table into its ready queues when the
//! version moves (changes are rare; reads are per connection, not per
//! message). With `[cluster]`, changes made here are fed to the cluster
//! client, which publishes them to the other hosts; theirs come back
//! through the `_from_peer` methods, which feed nothing (no echo).
//! Kept in a file (`<spool_dir>/suspensions.json`, replaced atomically on
//! each change) so that a restart does not lift them: a receiver that said
//! "stop for four hours" is not hit again a minute later.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

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
    /// The file the table is kept in, if any.
    file: Option<PathBuf>,
}

/// The name of the file in the spool directory.
pub const FILE_NAME: &str = "suspensions.json";

/// One suspension as the file keeps it.
#[derive(serde::Serialize, serde::Deserialize)]
struct Kept {
    site: String,
    /// Seconds since the Unix epoch.
    until: u64,
    reason: String,
    bounce: bool,
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

    /// Keeps the table in `spool_dir`'s file, starting from what it holds
    /// (those over at `now` are dropped). A file that cannot be read is
    /// reported and set aside (renamed `.bad`), never fatal: the worst is
    /// a suspension forgotten, as before it was kept.
    pub fn kept_in(mut self, spool_dir: &Path, now: SystemTime) -> Suspensions {
        let path = spool_dir.join(FILE_NAME);
        match std::fs::read(&path) {
            Ok(bytes) => match serde_json::from_slice::<Vec<Kept>>(&bytes) {
                Ok(kept) => {
                    let mut table = self.table();
                    for k in kept {
                        let until = SystemTime::UNIX_EPOCH + Duration::from_secs(k.until);
                        let Ok(site) = k.site.parse::<DestinationKey>() else {
                            tracing::warn!(
                                site = k.site,
                                "kept suspension of an unreadable site dropped"
                            );
                            continue;
                        };
                        if until > now {
                            let s = Suspension {
                                until,
                                reason: k.reason,
                                bounce: k.bounce,
                            };
                            tracing::info!(%site, until = k.until, reason = s.reason, "suspension kept across the restart");
                            table.insert(site, s);
                        }
                    }
                    drop(table);
                    self.version.fetch_add(1, Ordering::Release);
                }
                Err(e) => {
                    let bad = path.with_extension("json.bad");
                    tracing::warn!(file = %path.display(), error = %e, "suspensions file unreadable: set aside as {}", bad.display());
                    let _ = std::fs::rename(&path, &bad);
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "cannot read the suspensions file");
            }
        }
        self.file = Some(path);
        self
    }

    /// Writes the table to its file (called with the table locked, so
    /// writers are serialized). A failure is logged: the table in memory
    /// stays right, only a restart would forget the change.
    fn keep(&self, table: &HashMap<DestinationKey, Suspension>) {
        let Some(path) = &self.file else {
            return;
        };
        let now = SystemTime::now();
        let kept: Vec<Kept> = table
            .iter()
            .filter(|(_, s)| s.until > now)
            .map(|(site, s)| Kept {
                site: site.to_string(),
                until: s
                    .until
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs() + u64::from(d.subsec_nanos() > 0)),
                reason: s.reason.clone(),
                bounce: s.bounce,
            })
            .collect();
        let (Some(dir), Some(name)) = (path.parent(), path.file_name().and_then(|n| n.to_str()))
        else {
            return;
        };
        let written = serde_json::to_vec_pretty(&kept)
            .map_err(|e| e.to_string())
            .and_then(|bytes| {
                crate::mailbox::durable::replace_file(dir, name, &bytes).map_err(|e| e.to_string())
            });
        if let Err(e) = written {
            tracing::warn!(file = %path.display(), error = e, "cannot keep the suspensions: a restart would forget the change");
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
        self.keep(&table);
        true
    }

    /// [`Suspensions::resume`] for a change another host made: not fed
    /// back.
    pub fn resume_from_peer(&self, site: &DestinationKey) -> bool {
        let mut table = self.table();
        let removed = table.remove(site).is_some();
        if removed {
            self.version.fetch_add(1, Ordering::Release);
            self.keep(&table);
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
    fn suspensions_are_kept_across_a_restart_and_end_on_time() {
        let dir = tempfile::tempdir().unwrap();
        let now = SystemTime::now();
        let s = Suspensions::default().kept_in(dir.path(), now);
        let long = DestinationKey::route("long.test", 25);
        let short = DestinationKey::route("short.test", 25);
        let gone = DestinationKey::route("resumed.test", 25);
        s.suspend(
            long.clone(),
            now + Duration::from_secs(4 * 3600),
            "421 4.7.0 TSS04".into(),
        );
        s.bounce(
            short.clone(),
            now + Duration::from_secs(10),
            "550 5.7.606".into(),
        );
        s.suspend(
            gone.clone(),
            now + Duration::from_secs(600),
            "by hand".into(),
        );
        assert!(s.resume(&gone));
        // A new process, a minute later: the short one is over.
        let later = now + Duration::from_secs(60);
        let again = Suspensions::default().kept_in(dir.path(), later);
        let active = again.active(later);
        assert_eq!(active.len(), 1, "{active:?}");
        assert_eq!(active[0].0, long);
        assert_eq!(active[0].1.reason, "421 4.7.0 TSS04");
        assert!(!active[0].1.bounce);
        // Right after: the bounce is kept too, as a bounce.
        let soon = Suspensions::default().kept_in(dir.path(), now);
        let active = soon.active(now);
        assert_eq!(active.len(), 2, "{active:?}");
        assert!(active.iter().any(|(k, s)| *k == short && s.bounce));
    }

    #[test]
    fn an_unreadable_file_is_set_aside_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILE_NAME), b"{not json").unwrap();
        let now = SystemTime::now();
        let s = Suspensions::default().kept_in(dir.path(), now);
        assert!(s.active(now).is_empty());
        assert!(dir.path().join("suspensions.json.bad").exists());
        let site = DestinationKey::route("x.test", 25);
        s.suspend(site.clone(), now + Duration::from_secs(60), "421".into());
        let again = Suspensions::default().kept_in(dir.path(), now);
        assert_eq!(again.active(now)[0].0, site);
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
