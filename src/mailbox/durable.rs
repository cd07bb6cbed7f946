//! Durable filesystem steps the store is built from: fsync of
//! directories, atomic replacement of small files, durable appends,
//! private permissions.
//! It holds no locks; callers serialize writers.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;

use super::error::{MailboxError, Result};

/// Mode of every directory the store creates: mail is private.
pub const DIR_MODE: u32 = 0o700;
/// Mode of every file the store creates.
pub const FILE_MODE: u32 = 0o600;

/// Makes the directory's entries (creations, renames, unlinks) durable.
pub fn fsync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| MailboxError::io("syncing directory", dir, e))
}

/// Creates one directory; `Ok(false)` when it already existed.
pub fn create_dir(path: &Path) -> Result<bool> {
    match DirBuilder::new().mode(DIR_MODE).create(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(MailboxError::io("creating directory", path, e)),
    }
}

/// Opens a new file for writing, failing if it exists.
pub fn create_new(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(FILE_MODE)
        .open(path)
}

/// Replaces `dir/name` with `bytes` so that readers see the old or the new
/// file, never a mix, and a crash keeps one of them: write
/// `dir/name.tmp`, fsync it, rename over, fsync the directory. The caller
/// must hold the lock that serializes writers of `name` (the temporary
/// name is fixed).
pub fn replace_file(dir: &Path, name: &str, bytes: &[u8]) -> Result<()> {
    let tmp = dir.join(format!("{name}.tmp"));
    let path = dir.join(name);
    let written = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(FILE_MODE)
            .open(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()
    })();
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(MailboxError::io("writing", &tmp, e));
    }
    fs::rename(&tmp, &path).map_err(|e| MailboxError::io("renaming into place", &path, e))?;
    fsync_dir(dir)
}

/// Appends `bytes` to the existing file `path` and fdatasyncs it (which
/// also makes its new length durable); `Ok(false)` when the file does not
/// exist. The caller must hold the lock that serializes writers of `path`.
/// A crash or error midway can leave part of `bytes` at the end: readers
/// of an append-only file must ignore a last line without its end.
pub fn append_existing(path: &Path, bytes: &[u8]) -> Result<bool> {
    let mut file = match OpenOptions::new().append(true).open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(MailboxError::io("opening", path, e)),
    };
    file.write_all(bytes)
        .and_then(|()| file.sync_data())
        .map_err(|e| MailboxError::io("appending to", path, e))?;
    Ok(true)
}

/// Reads a whole file; `Ok(None)` when it does not exist.
pub fn read_optional(path: &Path) -> Result<Option<Vec<u8>>> {
    match fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(MailboxError::io("reading", path, e)),
    }
}
