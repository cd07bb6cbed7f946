//! Hands out UIDVALIDITY values for a user's folders: strictly increasing
//! per user, starting from the current Unix time, so a folder created
//! again under an old name or an index rebuilt in the same second still
//! gets a value it never had (RFC 3501 2.3.1.1). It keeps no UIDs.
//!
//! The last value lives in `<user>/spate-uidvalidity` (like Dovecot's
//! `dovecot-uidvalidity`), rewritten in place under a flock on itself.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::time::SystemTime;

use super::error::{MailboxError, Result};
use super::id::UidValidity;
use super::lock;

/// File name in the user's Maildir.
pub const FILE: &str = "spate-uidvalidity";

/// The next UIDVALIDITY of the user whose Maildir is `user_root`:
/// `max(now, last + 1)`. A damaged file counts as "no last value".
pub fn allocate(user_root: &Path, now: SystemTime) -> Result<UidValidity> {
    let path = user_root.join(FILE);
    let guard = lock::lock_exclusive(&path)?;
    let mut file = guard.file();
    let mut text = String::new();
    // Unreadable contents (not UTF-8) count as no value, like damage.
    let last: u32 = match file.read_to_string(&mut text) {
        Ok(_) => text.trim().parse().unwrap_or(0),
        Err(_) => 0,
    };
    let secs = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(1, |d| u32::try_from(d.as_secs()).unwrap_or(u32::MAX));
    // Past u32::MAX there is nowhere to go; wrapping to 1 is what an
    // exhausted value space allows (clients then see a change).
    let value = secs.max(last.checked_add(1).unwrap_or(1)).max(1);
    let written = (|| {
        file.seek(SeekFrom::Start(0))?;
        file.set_len(0)?;
        file.write_all(format!("{value}\n").as_bytes())?;
        file.sync_data()
    })();
    written.map_err(|e| MailboxError::io("writing", &path, e))?;
    // `value` is at least 1 by the `.max(1)` above, so this cannot fail.
    Ok(UidValidity::new(value).expect("UIDVALIDITY is at least 1"))
}
