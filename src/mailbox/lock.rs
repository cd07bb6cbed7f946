//! Advisory whole-file locks (flock) on lock files, held by a guard; it
//! does not decide which file guards what (see `folder` and `user`).
//!
//! flock locks belong to an open file description, so two opens of the
//! same lock file exclude each other whether they are in two threads of
//! one process or in two processes, and the kernel drops the lock when the
//! holder exits, even by `kill -9`: no stale lock files to clean up.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use super::error::{MailboxError, Result};

/// A held lock; dropping it (closing the file) releases it.
#[derive(Debug)]
pub struct FileLock {
    file: File,
}

impl FileLock {
    /// The locked file, for lock files that also hold data.
    pub fn file(&self) -> &File {
        &self.file
    }
}

/// Opens (creating it if needed) the lock file at `path`.
fn open(path: &Path) -> Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
        .map_err(|e| MailboxError::io("opening lock file", path, e))
}

/// Calls flock, retrying when a signal interrupts the wait.
fn flock(file: &File, op: libc::c_int) -> io::Result<()> {
    loop {
        // SAFETY: flock only reads the descriptor number, which `file`
        // keeps open for the duration of the call.
        let rc = unsafe { libc::flock(file.as_raw_fd(), op) };
        if rc == 0 {
            return Ok(());
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// Waits for the exclusive lock on `path`. Used for short critical
/// sections (index updates), so waiting is bounded by their length.
pub fn lock_exclusive(path: &Path) -> Result<FileLock> {
    let file = open(path)?;
    flock(&file, libc::LOCK_EX).map_err(|e| MailboxError::io("locking", path, e))?;
    Ok(FileLock { file })
}

/// Takes the exclusive lock on `path` if it is free; `MailboxError::InUse`
/// if someone else holds it.
pub fn try_lock_exclusive(path: &Path) -> Result<FileLock> {
    let file = open(path)?;
    match flock(&file, libc::LOCK_EX | libc::LOCK_NB) {
        Ok(()) => Ok(FileLock { file }),
        Err(e) if e.raw_os_error() == Some(libc::EWOULDBLOCK) => Err(MailboxError::InUse),
        Err(e) => Err(MailboxError::io("locking", path, e)),
    }
}
