//! `FolderWatcher`: wakes IMAP IDLE sessions the moment a folder changes.
//! One inotify instance and one thread per mailbox tier watch the folders
//! that idling sessions have open (the folder directory for index and
//! keyword changes, `new/` for deliveries, `cur/` for flag renames by
//! other programs), each folder once however many sessions watch it.
//! A change bumps the folder's generation and wakes its waiters (any
//! thread's `Waker`: glommio queues foreign wakes to the task's core).
//! Nothing runs while nothing changes: the thread sleeps in `poll`.

use std::collections::HashMap;
use std::future::Future;
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};
use std::thread::JoinHandle;

use inotify::{Inotify, WatchMask, Watches};

/// The subdirectories watched besides the folder's own directory.
const SUBDIRS: [&str; 2] = ["new", "cur"];
/// Bytes read from the inotify descriptor at once (many events each).
const EVENT_BUFFER: usize = 16 * 1024;

/// Watches folders for idling sessions; dropping it stops its thread.
pub struct FolderWatcher {
    shared: Arc<Shared>,
    /// Written to (or dropped) to stop the thread.
    stop: UnixStream,
    thread: Option<JoinHandle<()>>,
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
        let (stop, stop_seen) = UnixStream::pair()?;
        let thread_shared = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("folder-watch".into())
            .spawn(move || read_events(inotify, stop_seen, &thread_shared))?;
        Ok(FolderWatcher {
            shared,
            stop,
            thread: Some(thread),
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

impl Drop for FolderWatcher {
    fn drop(&mut self) {
        let _ = self.stop.write_all(b"x");
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
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

/// The thread: sleeps in `poll` on the inotify descriptor and the stop
/// socket, and turns each batch of events into wake-ups.
fn read_events(mut inotify: Inotify, mut stop: UnixStream, shared: &Shared) {
    let mut buffer = vec![0u8; EVENT_BUFFER];
    loop {
        let mut fds = [
            libc::pollfd {
                fd: inotify.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: stop.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: `fds` is a valid array of two pollfd for the call.
        let ready = unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) };
        if ready < 0 {
            if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                continue;
            }
            tracing::warn!(error = %io::Error::last_os_error(), "folder watch stopped");
            return;
        }
        if fds[1].revents != 0 {
            let mut byte = [0u8; 1];
            let _ = stop.read(&mut byte);
            return;
        }
        loop {
            match inotify.read_events(&mut buffer) {
                Ok(events) => {
                    let mut any = false;
                    for event in events {
                        any = true;
                        if event.mask.contains(inotify::EventMask::Q_OVERFLOW) {
                            shared.all_changed();
                        } else {
                            shared.changed(event.wd.get_watch_descriptor_id());
                        }
                    }
                    if !any {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "folder watch stopped");
                    return;
                }
            }
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
