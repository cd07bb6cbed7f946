//! `FilesWatch`: notices when the users or aliases file is replaced or
//! rewritten (as `spate user add` and editors do) and calls back, so a
//! running server takes new users without a SIGHUP, as Dovecot's
//! passwd-file does. It watches the files' directories (a rename over a
//! file replaces its inode) and reacts to a finished write or a rename
//! onto one of the names; partial writes in progress are not events.

use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::io;
use std::path::Path;

use inotify::{Inotify, WatchMask};

use crate::watch_thread::WatchThread;

/// The running watch; dropping it stops it.
pub struct FilesWatch {
    _thread: WatchThread,
}

impl std::fmt::Debug for FilesWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FilesWatch")
    }
}

impl FilesWatch {
    /// Calls `on_change` (on the watch's thread) each time one of
    /// `files` is written and closed, or renamed into place.
    pub fn start<F>(files: &[&Path], on_change: F) -> io::Result<FilesWatch>
    where
        F: Fn() + Send + 'static,
    {
        let inotify = Inotify::init()?;
        let mut watches = inotify.watches();
        // Watch descriptor number to the names watched in that directory.
        let mut names: HashMap<i32, HashSet<OsString>> = HashMap::new();
        for file in files {
            let (Some(dir), Some(name)) = (file.parent(), file.file_name()) else {
                continue;
            };
            let dir = if dir.as_os_str().is_empty() {
                Path::new(".")
            } else {
                dir
            };
            let wd = watches.add(
                dir,
                WatchMask::CLOSE_WRITE | WatchMask::MOVED_TO | WatchMask::ONLYDIR,
            )?;
            names
                .entry(wd.get_watch_descriptor_id())
                .or_default()
                .insert(name.to_owned());
        }
        let thread = WatchThread::spawn("users-file-watch", inotify, move |event| {
            let ours = event.name.is_some_and(|name| {
                names
                    .get(&event.wd.get_watch_descriptor_id())
                    .is_some_and(|set| set.contains(name))
            });
            if ours || event.mask.contains(inotify::EventMask::Q_OVERFLOW) {
                on_change();
            }
        })?;
        Ok(FilesWatch { _thread: thread })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    fn wait_until(count: &AtomicUsize, at_least: usize) {
        let start = Instant::now();
        while count.load(Ordering::SeqCst) < at_least {
            assert!(start.elapsed() < Duration::from_secs(5), "no callback");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn a_rename_over_the_file_and_a_rewrite_in_place_call_back_other_files_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let users = dir.path().join("users");
        std::fs::write(&users, "a:{PLAIN}x\n").unwrap();
        let count = Arc::new(AtomicUsize::new(0));
        let seen = Arc::clone(&count);
        let _watch = FilesWatch::start(&[&users], move || {
            seen.fetch_add(1, Ordering::SeqCst);
        })
        .unwrap();
        // Another file in the same directory: no call.
        std::fs::write(dir.path().join("other"), "x").unwrap();
        std::fs::write(dir.path().join("users.tmp"), "b:{PLAIN}y\n").unwrap();
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(count.load(Ordering::SeqCst), 0);
        // `spate user add`: temp file renamed over the users file.
        std::fs::rename(dir.path().join("users.tmp"), &users).unwrap();
        wait_until(&count, 1);
        // An editor writing in place.
        std::fs::write(&users, "c:{PLAIN}z\n").unwrap();
        wait_until(&count, 2);
    }
}
