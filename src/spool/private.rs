//! Keeps the spool private to the user the server runs as: directories
//! 0700, files 0600, whatever umask spate was started with. The server sets
//! its umask to 0077 before it creates anything (so segments, quarantine
//! files and the control socket, some of them created by code that passes
//! no mode, start private), and tightens what an earlier run or an
//! operator left behind. It never reads or moves what the files hold.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Mode of the spool directory and every directory in it.
pub const DIR_MODE: u32 = 0o700;
/// Mode of every file in the spool.
pub const FILE_MODE: u32 = 0o600;
/// The umask the server runs with: nothing it creates is open to its
/// group or to others.
pub const UMASK: u32 = 0o077;

/// Why the spool could not be made private.
#[derive(Debug, thiserror::Error)]
#[error("cannot make {} private to the spate user: {source}", path.display())]
pub struct PrivacyError {
    pub path: PathBuf,
    pub source: std::io::Error,
}

/// Sets the process umask to [`UMASK`]. The umask is process-wide: call it
/// once, at the start of `serve`, before any thread creates a file. Every
/// file the server creates later (spool segments, quarantine files, the
/// control socket, the mailboxes, which set 0700/0600 themselves too) is
/// then private, whatever umask the server inherited (a shell's 0022, a
/// unit's `UMask=`).
pub fn restrict_umask() {
    // SAFETY: umask has no preconditions and cannot fail.
    unsafe { libc::umask(UMASK as libc::mode_t) };
}

/// Makes `spool_dir`, its directories (`shard-N`, `quarantine`) and their
/// files private, for a spool created by an older version or under a
/// looser umask. Two levels deep, as the spool is laid out; symbolic links
/// are neither followed nor changed, and sockets (a stale control socket,
/// replaced at start anyway) are left alone.
pub fn make_private(spool_dir: &Path) -> Result<(), PrivacyError> {
    tighten(spool_dir)?;
    for entry in read_dir(spool_dir)? {
        if tighten(&entry)? == Some(Kind::Dir) {
            for inner in read_dir(&entry)? {
                tighten(&inner)?;
            }
        }
    }
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Dir,
    File,
}

fn read_dir(dir: &Path) -> Result<Vec<PathBuf>, PrivacyError> {
    let error = |source| PrivacyError {
        path: dir.to_owned(),
        source,
    };
    std::fs::read_dir(dir)
        .map_err(error)?
        .map(|entry| entry.map(|e| e.path()).map_err(error))
        .collect()
}

/// Gives one directory or regular file its private mode, through a
/// descriptor opened without following a link (so what is changed is what
/// was looked at). Returns what it was, or `None` for anything else.
fn tighten(path: &Path) -> Result<Option<Kind>, PrivacyError> {
    let error = |source| PrivacyError {
        path: path.to_owned(),
        source,
    };
    let opened = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path);
    let file: File = match opened {
        Ok(file) => file,
        // A symbolic link (ELOOP), a socket (ENXIO), or gone meanwhile.
        Err(e) if matches!(e.raw_os_error(), Some(libc::ELOOP | libc::ENXIO)) => return Ok(None),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(error(e)),
    };
    let metadata = file.metadata().map_err(error)?;
    let (kind, mode) = if metadata.is_dir() {
        (Kind::Dir, DIR_MODE)
    } else if metadata.is_file() {
        (Kind::File, FILE_MODE)
    } else {
        return Ok(None);
    };
    if metadata.permissions().mode() & 0o7777 != mode {
        file.set_permissions(std::fs::Permissions::from_mode(mode))
            .map_err(error)?;
    }
    Ok(Some(kind))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn mode(path: &Path) -> u32 {
        std::fs::symlink_metadata(path)
            .unwrap()
            .permissions()
            .mode()
            & 0o7777
    }

    fn set(path: &Path, mode: u32) {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn an_open_spool_becomes_private_and_links_stay_untouched() {
        let root = tempfile::tempdir().unwrap();
        let spool = root.path().join("spool");
        let shard = spool.join("shard-0");
        std::fs::create_dir_all(&shard).unwrap();
        let segment = shard.join("00000001.seg");
        std::fs::write(&segment, b"x").unwrap();
        let lock = spool.join("spool.lock");
        std::fs::write(&lock, b"1\n").unwrap();
        let outside = root.path().join("outside");
        std::fs::write(&outside, b"not spool").unwrap();
        symlink(&outside, shard.join("link")).unwrap();
        for (path, m) in [
            (&spool, 0o777),
            (&shard, 0o755),
            (&segment, 0o666),
            (&lock, 0o644),
            (&outside, 0o644),
        ] {
            set(path, m);
        }
        make_private(&spool).unwrap();
        assert_eq!(mode(&spool), 0o700);
        assert_eq!(mode(&shard), 0o700);
        assert_eq!(mode(&segment), 0o600);
        assert_eq!(mode(&lock), 0o600);
        assert_eq!(mode(&outside), 0o644, "a link's target is not changed");
    }
}
