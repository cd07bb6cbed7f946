//! Edits of the users file for `spate user add/passwd/del/list`: under an
//! exclusive lock on `<users_file>.lock`, the file is read, changed one
//! line at a time and replaced atomically (temporary file in the same
//! directory, fsync, rename, directory fsync). Every line it does not
//! change (comments, other users, their extra fields) is kept byte for
//! byte. It refuses to hash passwords itself or to parse secrets.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::error::AccountError;
use super::name::UserName;
use super::users::{read_bounded, PasswdLine, MAX_FILE_SIZE};

/// Mode of a users file created by spate: it holds password hashes.
pub const NEW_FILE_MODE: u32 = 0o600;
/// How long an edit waits for another edit's lock before giving up.
pub const LOCK_TIMEOUT: Duration = Duration::from_secs(10);

/// Adds `name` with an already hashed password field (`{ARGON2ID}...`).
/// Creates the file (mode 0600) if it does not exist.
pub fn add_user(path: &Path, name: &UserName, password_field: &str) -> Result<(), AccountError> {
    edit(path, |lines| {
        if find(lines, name).is_some() {
            return Err(AccountError::UserExists(name.clone()));
        }
        lines.push(format!("{name}:{password_field}"));
        Ok(())
    })
}

/// Replaces the password field of `name`, keeping the rest of its line.
pub fn set_password(
    path: &Path,
    name: &UserName,
    password_field: &str,
) -> Result<(), AccountError> {
    edit(path, |lines| {
        let index = find(lines, name).ok_or_else(|| AccountError::NoSuchUser(name.clone()))?;
        let line = &lines[index];
        // `find` only returns lines that split.
        let fields =
            PasswdLine::split(line).ok_or_else(|| AccountError::NoSuchUser(name.clone()))?;
        let mut new = format!("{}:{password_field}", fields.name);
        if let Some(rest) = fields.rest {
            new.push(':');
            new.push_str(rest);
        }
        lines[index] = new;
        Ok(())
    })
}

/// Removes the line of `name`.
pub fn delete_user(path: &Path, name: &UserName) -> Result<(), AccountError> {
    edit(path, |lines| {
        let index = find(lines, name).ok_or_else(|| AccountError::NoSuchUser(name.clone()))?;
        lines.remove(index);
        Ok(())
    })
}

/// The users of the file in file order; a missing file has none. No lock
/// is needed: edits replace the file atomically.
pub fn list_users(path: &Path) -> Result<Vec<UserName>, AccountError> {
    let text = match read_bounded(path, MAX_FILE_SIZE) {
        Err(AccountError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            return Ok(Vec::new())
        }
        other => other?,
    };
    Ok(text
        .lines()
        .filter_map(PasswdLine::split)
        .filter_map(|l| UserName::parse(l.name.trim()).ok())
        .collect())
}

/// The index of the line holding `name` (case-insensitive, as lookups are).
fn find(lines: &[String], name: &UserName) -> Option<usize> {
    lines.iter().position(|line| {
        PasswdLine::split(line)
            .and_then(|l| UserName::parse(l.name.trim()).ok())
            .is_some_and(|n| &n == name)
    })
}

/// Locks, reads, applies `change` to the lines and replaces the file.
fn edit(
    path: &Path,
    change: impl FnOnce(&mut Vec<String>) -> Result<(), AccountError>,
) -> Result<(), AccountError> {
    // The first user of a fresh installation creates the file's directory
    // too (the embedded default keeps it under ./spate-data).
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| AccountError::io("creating", dir, e))?;
    }
    let _lock = Lock::acquire(&lock_path(path), LOCK_TIMEOUT)?;
    let (text, mode) = match read_bounded(path, MAX_FILE_SIZE) {
        Ok(text) => {
            let mode = std::fs::metadata(path)
                .map_err(|e| AccountError::io("reading metadata of", path, e))?
                .permissions()
                .mode();
            (text, mode & 0o7777)
        }
        Err(AccountError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            (String::new(), NEW_FILE_MODE)
        }
        Err(e) => return Err(e),
    };
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    change(&mut lines)?;
    let mut out = lines.join("\n");
    if !out.is_empty() {
        out.push('\n');
    }
    replace(path, out.as_bytes(), mode)
}

/// `<users_file>.lock`, beside the file.
fn lock_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
}

/// Writes `bytes` to a temporary file beside `path` with `mode`, makes it
/// durable and renames it over `path`, so a reader sees the old file or
/// the new one, never a mix, and a crash leaves one of the two.
fn replace(path: &Path, bytes: &[u8], mode: u32) -> Result<(), AccountError> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let file_name = path
        .file_name()
        .ok_or_else(|| {
            AccountError::io(
                "naming",
                path,
                std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a file path"),
            )
        })?
        .to_string_lossy();
    // The lock is held, so one fixed temporary name cannot collide; a
    // leftover from a crash is overwritten.
    let temp = dir.join(format!(".{file_name}.spate-tmp"));
    let write = || -> std::io::Result<()> {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&temp)?;
        // `mode` at creation is filtered by the umask and ignored for an
        // existing file; set it exactly.
        file.set_permissions(std::fs::Permissions::from_mode(mode))?;
        file.write_all(bytes)?;
        file.sync_all()
    };
    if let Err(e) = write() {
        let _ = std::fs::remove_file(&temp);
        return Err(AccountError::io("writing", &temp, e));
    }
    std::fs::rename(&temp, path).map_err(|e| AccountError::io("renaming over", path, e))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| AccountError::io("syncing directory", dir, e))
}

/// An exclusive `flock` on the lock file, released when dropped (closing
/// the descriptor releases it, also when the process dies).
struct Lock {
    _file: File,
}

impl Lock {
    fn acquire(path: &Path, timeout: Duration) -> Result<Lock, AccountError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(NEW_FILE_MODE)
            .open(path)
            .map_err(|e| AccountError::io("opening lock file", path, e))?;
        let deadline = Instant::now() + timeout;
        loop {
            // SAFETY: flock on a descriptor this function owns for the
            // duration of the call; no memory is passed.
            let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
            if rc == 0 {
                return Ok(Lock { _file: file });
            }
            let error = std::io::Error::last_os_error();
            let busy = error.raw_os_error() == Some(libc::EWOULDBLOCK);
            if !busy && error.kind() != std::io::ErrorKind::Interrupted {
                return Err(AccountError::io("locking", path, error));
            }
            if Instant::now() >= deadline {
                return Err(AccountError::io(
                    "locking (another edit holds the lock)",
                    path,
                    error,
                ));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::account::users::UserDb;

    const START: &str = "\
# users of example.test
alice:{PLAIN}a:1000:1000:Alice:/home/alice:/bin/sh:userdb_quota_rule=*:storage=1G

bob:{PLAIN}b
# trailing comment
";

    fn name(s: &str) -> UserName {
        UserName::parse(s).unwrap()
    }

    #[test]
    fn add_passwd_del_list_round_trip_keeps_other_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users");
        std::fs::write(&path, START).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();

        add_user(&path, &name("carol"), "{PLAIN}c").unwrap();
        assert!(matches!(
            add_user(&path, &name("Alice"), "{PLAIN}x"),
            Err(AccountError::UserExists(_))
        ));
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text, format!("{START}carol:{{PLAIN}}c\n"));

        set_password(&path, &name("ALICE"), "{PLAIN}new").unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains(
            "\nalice:{PLAIN}new:1000:1000:Alice:/home/alice:/bin/sh:userdb_quota_rule=*:storage=1G\n"
        ));
        let db = UserDb::parse(&text);
        assert!(db.verify("alice", b"new").unwrap().is_some());

        delete_user(&path, &name("bob")).unwrap();
        assert!(matches!(
            delete_user(&path, &name("bob")),
            Err(AccountError::NoSuchUser(_))
        ));
        assert!(matches!(
            set_password(&path, &name("bob"), "{PLAIN}x"),
            Err(AccountError::NoSuchUser(_))
        ));
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("# users of example.test\n"));
        assert!(text.contains("\n\n# trailing comment\ncarol:"));
        assert!(!text.contains("bob"));
        assert_eq!(
            list_users(&path).unwrap(),
            vec![name("alice"), name("carol")]
        );
        // The mode of an existing file is kept; no temporary file is left.
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o640);
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert!(names.iter().all(|n| !n.contains("tmp")), "{names:?}");
    }

    #[test]
    fn a_new_file_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users");
        assert_eq!(list_users(&path).unwrap(), vec![]);
        add_user(&path, &name("dave"), "{PLAIN}d").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "dave:{PLAIN}d\n");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        delete_user(&path, &name("dave")).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "");
    }

    #[test]
    fn concurrent_adds_lose_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users");
        std::fs::write(&path, START).unwrap();
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let path = path.clone();
                std::thread::spawn(move || {
                    for i in 0..10 {
                        add_user(&path, &name(&format!("u{t}-{i}")), "{PLAIN}x").unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let users = list_users(&path).unwrap();
        assert_eq!(users.len(), 2 + 80, "{users:?}");
        assert!(std::fs::read_to_string(&path)
            .unwrap()
            .starts_with("# users of example.test\n"));
    }

    #[test]
    fn a_held_lock_times_out() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users");
        let held = Lock::acquire(&lock_path(&path), LOCK_TIMEOUT).unwrap();
        let again = Lock::acquire(&lock_path(&path), Duration::from_millis(30));
        assert!(matches!(again, Err(AccountError::Io { .. })));
        drop(held);
        Lock::acquire(&lock_path(&path), Duration::from_millis(30)).unwrap();
    }
}
