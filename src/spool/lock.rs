//! One server per spool: an exclusive `flock` on `<spool_dir>/spool.lock`,
//! taken before recovery reads anything and held for the life of the
//! process (the kernel drops it when the process ends, even on `kill -9`).
//! Readers (`spate queue list`) never take it. It knows nothing of what the
//! spool holds.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::layout;

/// The lock of a spool directory; dropping it (or the process ending)
/// releases it.
#[derive(Debug)]
pub struct SpoolLock {
    /// The open lock file: the lock lives as long as this descriptor.
    _file: File,
}

/// Why the spool could not be locked.
#[derive(Debug, thiserror::Error)]
pub enum SpoolLockError {
    /// Another process holds the lock: a second server on the same spool
    /// would recover and deliver the same messages twice.
    #[error(
        "spool directory {} is in use by another spate server{}: one spool, one server",
        dir.display(),
        holder.map(|pid| format!(" (pid {pid})")).unwrap_or_default()
    )]
    InUse { dir: PathBuf, holder: Option<u32> },
    #[error("cannot lock {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl SpoolLock {
    /// Takes the lock of `spool_dir` (which must exist) without waiting,
    /// and writes this process's id into the lock file so that a refused
    /// server can name the holder.
    pub fn acquire(spool_dir: &Path) -> Result<SpoolLock, SpoolLockError> {
        let path = layout::lock_path(spool_dir);
        let io = |source| SpoolLockError::Io {
            path: path.clone(),
            source,
        };
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(io)?;
        // SAFETY: flock on a descriptor this function owns; no memory is
        // involved.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let error = std::io::Error::last_os_error();
            if error.raw_os_error() == Some(libc::EWOULDBLOCK) {
                let mut text = String::new();
                let holder = file
                    .read_to_string(&mut text)
                    .ok()
                    .and_then(|_| text.trim().parse().ok());
                return Err(SpoolLockError::InUse {
                    dir: spool_dir.to_owned(),
                    holder,
                });
            }
            return Err(io(error));
        }
        file.set_len(0).map_err(io)?;
        file.write_all(format!("{}\n", std::process::id()).as_bytes())
            .map_err(io)?;
        Ok(SpoolLock { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_is_refused_until_the_first_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let first = SpoolLock::acquire(dir.path()).unwrap();
        // flock locks belong to the open file description: a second open
        // in the same process conflicts like another process would.
        match SpoolLock::acquire(dir.path()) {
            Err(SpoolLockError::InUse { holder, .. }) => {
                assert_eq!(holder, Some(std::process::id()))
            }
            other => panic!("second lock: {other:?}"),
        }
        drop(first);
        SpoolLock::acquire(dir.path()).expect("free again");
    }
}
