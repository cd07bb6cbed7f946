//! `FolderWatcher`: wakes IMAP IDLE sessions the moment a folder changes.
//! One inotify instance and one thread per mailbox tier watch the folders
//! that idling sessions have open (the folder directory for index and
//! keyword changes, `new/` for deliveries, `cur/` for flag renames by
//! other programs), each folder once however many sessions watch it.
//! A change bumps the folder's generation and wakes its waiters (any
//! thread's `Waker`: glommio queues foreign wakes to the task's core).
//! Nothing runs while nothing changes (see `watch_thread`).

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};

use inotify::{EventMask, Inotify, WatchMask, Watches};

use crate::watch_thread::WatchThread;

/// The subdirectories watched besides the folder's own directory.
const SUBDIRS: [&str; 2] = ["new", "cur"];

/// Watches folders for idling sessions; dropping it stops its thread.
pub struct FolderWatcher {
    shared: Arc<Shared>,
    _thread: WatchThread,
}

struct Shared {
    watches: Mutex<Watches>,
    registry: Mutex<Registry>,
}

#[derive(Default)]
struct Registry {
    folders: HashMap<PathBuf, Watched>,
    /// Watch descriptor number to the folder it belongs to.
    owners: HashMap<i32, PathBuf>,
}

struct Watched {
    descriptors: Vec<inotify::WatchDescriptor>,
    generation: u64,
    subscribers: usize,
    waiters: Vec<Waker>,
}

impl FolderWatcher {
    /// Starts the inotify thread (named `folder-watch`).
    pub fn start() -> io::Result<FolderWatcher> {
        let inotify = Inotify::init()?;
        let shared = Arc::new(Shared {
            watches: Mutex::new(inotify.watches()),
            registry: Mutex::new(Registry::default()),
        });
        let events = Arc::clone(&shared);
        let thread = WatchThread::spawn("folder-watch", inotify, move |event| {
            if event.mask.contains(EventMask::Q_OVERFLOW) {
                events.all_changed();
            } else {
                events.changed(event.wd.get_watch_descriptor_id());
            }
        })?;
        Ok(FolderWatcher {
            shared,
            _thread: thread,
        })
    }

    /// Starts watching the folder at `dir` (a Maildir: `new/` and `cur/`
    /// must exist) for as long as the subscription lives.
    pub fn subscribe(&self, dir: &Path) -> io::Result<Subscription> {
        let mut registry = self.shared.registry();
        let generation = match registry.folders.get_mut(dir) {
            Some(watched) => {
                watched.subscribers += 1;
                watched.generation
            }
            None => {
                let descriptors = self.shared.add_watches(dir)?;
                for wd in &descriptors {
                    registry
                        .owners
                        .insert(wd.get_watch_descriptor_id(), dir.to_owned());
                }
                registry.folders.insert(
                    dir.to_owned(),
                    Watched {
                        descriptors,
                        generation: 0,
                        subscribers: 1,
                        waiters: Vec::new(),
                    },
                );
                0
            }
        };
        Ok(Subscription {
            shared: Arc::clone(&self.shared),
            dir: dir.to_owned(),
            seen: generation,
        })
    }

    /// Folders watched now (for tests and metrics).
    pub fn watched_folders(&self) -> usize {
        self.shared.registry().folders.len()
    }
}

impl std::fmt::Debug for FolderWatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FolderWatcher")
            .field("watched_folders", &self.watched_folders())
            .finish()
    }
}

impl Shared {
    fn registry(&self) -> MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn add_watches(&self, dir: &Path) -> io::Result<Vec<inotify::WatchDescriptor>> {
        let mut watches = self.watches.lock().unwrap_or_else(PoisonError::into_inner);
        let changes = WatchMask::CREATE
            | WatchMask::DELETE
            | WatchMask::MOVED_FROM
            | WatchMask::MOVED_TO
            | WatchMask::CLOSE_WRITE
            | WatchMask::MODIFY
            | WatchMask::ONLYDIR;
        let mut added = Vec::with_capacity(1 + SUBDIRS.len());
        let paths = std::iter::once(dir.to_owned()).chain(SUBDIRS.iter().map(|s| dir.join(s)));
        for path in paths {
            match watches.add(&path, changes) {
                Ok(wd) => added.push(wd),
                Err(e) => {
                    for wd in added {
                        let _ = watches.remove(wd);
                    }
                    return Err(e);
                }
            }
        }
        Ok(added)
    }

    /// A change under watch descriptor `wd`: wake the folder's waiters.
    fn changed(&self, wd: i32) {
        let mut registry = self.registry();
        let Some(dir) = registry.owners.get(&wd).cloned() else {
            return;
        };
        if let Some(watched) = registry.folders.get_mut(&dir) {
            watched.generation += 1;
            for waker in watched.waiters.drain(..) {
                waker.wake();
            }
        }
    }

    /// The inotify queue overflowed: every folder may have changed.
    fn all_changed(&self) {
        let mut registry = self.registry();
        for watched in registry.folders.values_mut() {
            watched.generation += 1;
            for waker in watched.waiters.drain(..) {
                waker.wake();
            }
        }
    }

    fn unsubscribe(&self, dir: &Path) {
        let mut registry = self.registry();
        let Some(watched) = registry.folders.get_mut(dir) else {
            return;
        };
        watched.subscribers -= 1;
        if watched.subscribers > 0 {
            return;
        }
        let Some(watched) = registry.folders.remove(dir) else {
            return;
        };
        let mut watches = self.watches.lock().unwrap_or_else(PoisonError::into_inner);
        for wd in watched.descriptors {
            registry.owners.remove(&wd.get_watch_descriptor_id());
            // Fails harmlessly if the directory is already gone.
            let _ = watches.remove(wd);
        }
    }
}

/// One session's interest in one folder; dropping it stops the watch
/// when it was the last.
pub struct Subscription {
    shared: Arc<Shared>,
    dir: PathBuf,
    /// The folder's generation when this subscriber last looked.
    seen: u64,
}

impl Subscription {
    /// The folder watched.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Resolves once the folder has changed since the last time it
    /// resolved (or since the subscription began).
    pub fn changed(&mut self) -> Changed<'_> {
        Changed { subscription: self }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.shared.unsubscribe(&self.dir);
    }
}

/// The future of [`Subscription::changed`].
pub struct Changed<'a> {
    subscription: &'a mut Subscription,
}

impl Future for Changed<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        let subscription = &mut *this.subscription;
        let mut registry = subscription.shared.registry();
        let Some(watched) = registry.folders.get_mut(&subscription.dir) else {
            return Poll::Pending;
        };
        if watched.generation != subscription.seen {
            subscription.seen = watched.generation;
            return Poll::Ready(());
        }
        if !watched.waiters.iter().any(|w| w.will_wake(cx.waker())) {
            watched.waiters.push(cx.waker().clone());
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::Wake;
    use std::time::{Duration, Instant};

    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn maildir(root: &Path) -> PathBuf {
        let dir = root.join("INBOX");
        for sub in ["new", "cur", "tmp"] {
            std::fs::create_dir_all(dir.join(sub)).unwrap();
        }
        dir
    }

    fn poll_once(sub: &mut Subscription, waker: &Waker) -> Poll<()> {
        let mut cx = Context::from_waker(waker);
        let mut fut = sub.changed();
        Pin::new(&mut fut).poll(&mut cx)
    }

    fn wait_for_wake(count: &Count) {
        let start = Instant::now();
        while count.0.load(Ordering::SeqCst) == 0 {
            assert!(start.elapsed() < Duration::from_secs(5), "no wake-up");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn a_file_linked_into_new_wakes_the_waiter_once() {
        let root = tempfile::tempdir().unwrap();
        let dir = maildir(root.path());
        let watcher = FolderWatcher::start().unwrap();
        let mut sub = watcher.subscribe(&dir).unwrap();
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(Arc::clone(&count));
        assert!(poll_once(&mut sub, &waker).is_pending());
        std::fs::write(dir.join("tmp/1.x"), b"mail").unwrap();
        std::fs::rename(dir.join("tmp/1.x"), dir.join("new/1.x")).unwrap();
        wait_for_wake(&count);
        assert!(poll_once(&mut sub, &waker).is_ready());
        // Seen: the next poll waits again.
        assert!(poll_once(&mut sub, &waker).is_pending());
    }

    #[test]
    fn a_flag_rename_in_cur_and_an_index_write_wake_the_waiter() {
        let root = tempfile::tempdir().unwrap();
        let dir = maildir(root.path());
        std::fs::write(dir.join("cur/1.x:2,"), b"mail").unwrap();
        let watcher = FolderWatcher::start().unwrap();
        let mut sub = watcher.subscribe(&dir).unwrap();
        for change in [
            Box::new(|d: &Path| std::fs::rename(d.join("cur/1.x:2,"), d.join("cur/1.x:2,S")))
                as Box<dyn Fn(&Path) -> io::Result<()>>,
            Box::new(|d: &Path| std::fs::write(d.join("spate-uidlist"), b"record")),
        ] {
            let count = Arc::new(Count(AtomicUsize::new(0)));
            let waker = Waker::from(Arc::clone(&count));
            while poll_once(&mut sub, &waker).is_ready() {}
            change(&dir).unwrap();
            wait_for_wake(&count);
            assert!(poll_once(&mut sub, &waker).is_ready());
        }
    }

    #[test]
    fn a_folder_is_watched_once_and_released_by_its_last_subscriber() {
        let root = tempfile::tempdir().unwrap();
        let dir = maildir(root.path());
        let watcher = FolderWatcher::start().unwrap();
        let first = watcher.subscribe(&dir).unwrap();
        let mut second = watcher.subscribe(&dir).unwrap();
        assert_eq!(watcher.watched_folders(), 1);
        drop(first);
        assert_eq!(watcher.watched_folders(), 1);
        // The remaining subscriber is still woken.
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(Arc::clone(&count));
        assert!(poll_once(&mut second, &waker).is_pending());
        std::fs::write(dir.join("new/2.x"), b"mail").unwrap();
        wait_for_wake(&count);
        drop(second);
        assert_eq!(watcher.watched_folders(), 0);
    }

    #[test]
    fn a_folder_without_new_is_refused_and_leaves_no_watch() {
        let root = tempfile::tempdir().unwrap();
        let watcher = FolderWatcher::start().unwrap();
        assert!(watcher.subscribe(root.path()).is_err());
        assert_eq!(watcher.watched_folders(), 0);
    }
}
