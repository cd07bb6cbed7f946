//! `UsageBook`: each user's stored bytes, kept in memory so a quota check
//! costs a lookup, not a walk of the user's folders. A figure is measured
//! once (a walk, on a blocking thread), then every change this store makes
//! moves it: delivery, APPEND and COPY add, EXPUNGE and MOVE's removal
//! subtract, deleting a folder forgets it (the next check measures again).
//! Changes made by other programs are picked up when the figure is
//! measured again, [`REMEASURE_AFTER`] after the last walk.
//!
//! A change that happens while a walk runs is added on top of the walk's
//! result: the walk may have seen it too, so the figure can run a little
//! high (refusing a little early) until the next walk, never low.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// How long a measured figure is trusted before the next check that may
/// do file I/O walks the folders again (Dovecot's Maildir++ quota
/// recalculates a `maildirsize` file that is 15 minutes old).
pub const REMEASURE_AFTER: Duration = Duration::from_secs(5 * 60);

/// What is known of one user.
#[derive(Debug, Default)]
struct Figure {
    /// Stored bytes, when measured.
    bytes: Option<u64>,
    measured_at: Option<Instant>,
    /// A walk runs: changes are also added to `during`.
    walking: bool,
    during: i64,
}

/// A user's figure as a check sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KnownUsage {
    pub bytes: u64,
    /// Measured longer than [`REMEASURE_AFTER`] ago.
    pub stale: bool,
}

/// See the module header. One per store, shared by all its handles; keyed
/// by the user's Maildir root. Holds one small entry per user that had a
/// check or a change (the directory's users: bounded by it).
#[derive(Debug, Default)]
pub(crate) struct UsageBook {
    users: Mutex<HashMap<PathBuf, Figure>>,
}

impl UsageBook {
    fn users(&self) -> MutexGuard<'_, HashMap<PathBuf, Figure>> {
        // Counters only: a panic mid-update leaves a usable map.
        self.users.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The figure for `root` without any file I/O, if there is one.
    pub(crate) fn known(&self, root: &Path, now: Instant) -> Option<KnownUsage> {
        let users = self.users();
        let figure = users.get(root)?;
        let bytes = figure.bytes?;
        let stale = figure
            .measured_at
            .is_none_or(|at| now.saturating_duration_since(at) >= REMEASURE_AFTER);
        Some(KnownUsage { bytes, stale })
    }

    /// Moves `root`'s figure by `delta` bytes (a change this store made).
    pub(crate) fn change(&self, root: &Path, delta: i64) {
        if delta == 0 {
            return;
        }
        let mut users = self.users();
        let Some(figure) = users.get_mut(root) else {
            return; // not measured: the first walk will count it
        };
        if let Some(bytes) = figure.bytes.as_mut() {
            *bytes = bytes.saturating_add_signed(delta);
        }
        if figure.walking {
            figure.during = figure.during.saturating_add(delta);
        }
    }

    /// Drops what is known of `root`: the next check measures again.
    pub(crate) fn forget(&self, root: &Path) {
        let mut users = self.users();
        if let Some(figure) = users.get_mut(root) {
            figure.bytes = None;
            figure.measured_at = None;
        }
    }

    /// The figure, measured with `walk` (blocking file I/O) when there is
    /// none or it is stale.
    pub(crate) fn measured<E>(
        &self,
        root: &Path,
        walk: impl FnOnce() -> Result<u64, E>,
    ) -> Result<u64, E> {
        let now = Instant::now();
        if let Some(known) = self.known(root, now).filter(|k| !k.stale) {
            return Ok(known.bytes);
        }
        {
            let mut users = self.users();
            let figure = users.entry(root.to_path_buf()).or_default();
            figure.walking = true;
            figure.during = 0;
        }
        let walked = walk();
        let mut users = self.users();
        let figure = users.entry(root.to_path_buf()).or_default();
        figure.walking = false;
        let walked = walked?;
        let bytes = walked.saturating_add_signed(std::mem::take(&mut figure.during));
        figure.bytes = Some(bytes);
        figure.measured_at = Some(now);
        Ok(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_figure_is_measured_once_then_moved_by_changes() {
        let book = UsageBook::default();
        let root = Path::new("/m/alice");
        let now = Instant::now();
        assert_eq!(book.known(root, now), None);
        // Changes before the first measurement are left to the walk.
        book.change(root, 500);
        assert_eq!(book.known(root, now), None);
        let mut walks = 0;
        let mut walk = || -> Result<u64, ()> {
            walks += 1;
            Ok(1000)
        };
        assert_eq!(book.measured(root, &mut walk), Ok(1000));
        assert_eq!(book.measured(root, &mut walk), Ok(1000));
        assert_eq!(walks, 1, "a fresh figure is not walked again");
        book.change(root, 250);
        book.change(root, -2000);
        assert_eq!(
            book.known(root, Instant::now()),
            Some(KnownUsage {
                bytes: 0,
                stale: false
            })
        );
        book.change(root, 40);
        assert_eq!(book.known(root, Instant::now()).unwrap().bytes, 40);
        // Another user is apart.
        assert_eq!(book.known(Path::new("/m/bob"), now), None);
    }

    #[test]
    fn an_old_figure_is_stale_and_measured_again() {
        let book = UsageBook::default();
        let root = Path::new("/m/alice");
        book.measured(root, || Ok::<_, ()>(10)).unwrap();
        let later = Instant::now() + REMEASURE_AFTER;
        assert_eq!(
            book.known(root, later),
            Some(KnownUsage {
                bytes: 10,
                stale: true
            })
        );
        book.forget(root);
        assert_eq!(book.known(root, Instant::now()), None);
        assert_eq!(book.measured(root, || Ok::<_, ()>(77)), Ok(77));
    }

    #[test]
    fn changes_during_a_walk_are_never_lost() {
        let book = UsageBook::default();
        let root = Path::new("/m/alice");
        let bytes = book
            .measured(root, || {
                // A delivery lands while the folders are walked, after
                // the walk listed them: the walk missed it.
                book.change(root, 300);
                Ok::<_, ()>(1000)
            })
            .unwrap();
        assert_eq!(bytes, 1300);
        assert_eq!(book.known(root, Instant::now()).unwrap().bytes, 1300);
        // A failed walk leaves no figure behind.
        book.forget(root);
        assert_eq!(book.measured(root, || Err::<u64, _>("eio")), Err("eio"));
        assert_eq!(book.known(root, Instant::now()), None);
    }
}
