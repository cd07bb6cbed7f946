//! One user's Maildir++: its folders (list, create, delete, rename),
//! subscriptions, the session lock POP3 needs, and the usage quota checks
//! need. It does not touch messages (see `folder`) or know passwords.

use std::collections::HashSet;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::durable;
use super::error::{MailboxError, Result};
use super::filename;
use super::folder::{Folder, INDEX_FILE};
use super::index::{Parsed, Totals, UidIndex};
use super::lock::{self, FileLock};
use super::name::{FolderName, UserName};
use super::store::StoreContext;
use super::subscription;

/// The lock file POP3 sessions hold for their whole session.
const SESSION_LOCK: &str = "spate-session.lock";
/// Marks a directory as a Maildir++ folder (Courier, Dovecot).
const FOLDER_MARKER: &str = "maildirfolder";
/// Prefix of directories on their way to deletion or creation: not `.`,
/// so they are never listed as folders.
const SCRATCH_PREFIX: &str = "spate-scratch.";

/// A special-use folder (RFC 6154) that new users can be given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpecialUse {
    Sent,
    Drafts,
    Trash,
    Junk,
    Archive,
}

impl SpecialUse {
    pub const ALL: [SpecialUse; 5] = [
        SpecialUse::Sent,
        SpecialUse::Drafts,
        SpecialUse::Trash,
        SpecialUse::Junk,
        SpecialUse::Archive,
    ];

    /// The folder name given to it (the names most clients look for).
    pub fn folder_name(self) -> &'static str {
        match self {
            SpecialUse::Sent => "Sent",
            SpecialUse::Drafts => "Drafts",
            SpecialUse::Trash => "Trash",
            SpecialUse::Junk => "Junk",
            SpecialUse::Archive => "Archive",
        }
    }

    /// The LIST attribute (RFC 6154).
    pub fn attribute(self) -> &'static str {
        match self {
            SpecialUse::Sent => "\\Sent",
            SpecialUse::Drafts => "\\Drafts",
            SpecialUse::Trash => "\\Trash",
            SpecialUse::Junk => "\\Junk",
            SpecialUse::Archive => "\\Archive",
        }
    }
}

/// Bytes and messages stored for a user, summed from the folders' UID
/// indexes and the deliveries not yet indexed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    pub bytes: u64,
    pub messages: u64,
}

/// Held while a POP3 session owns the mailbox; dropping it releases the
/// mailbox. Deliveries are not blocked by it.
#[derive(Debug)]
pub struct SessionLock {
    _lock: FileLock,
}

/// A user's Maildir++ directory.
#[derive(Debug, Clone)]
pub struct UserMailbox {
    name: UserName,
    root: PathBuf,
    ctx: Arc<StoreContext>,
}

impl UserMailbox {
    pub(crate) fn new(name: UserName, root: PathBuf, ctx: Arc<StoreContext>) -> UserMailbox {
        UserMailbox { name, root, ctx }
    }

    pub fn name(&self) -> &UserName {
        &self.name
    }

    /// The user's Maildir (INBOX).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// INBOX, which always exists.
    pub fn inbox(&self) -> Folder {
        self.handle(FolderName::inbox(), self.root.clone())
    }

    /// An existing folder.
    pub fn folder(&self, name: &FolderName) -> Result<Folder> {
        let dir = self.folder_dir(name);
        if !dir.join("cur").is_dir() {
            return Err(MailboxError::FolderNotFound(name.to_string()));
        }
        Ok(self.handle(name.clone(), dir))
    }

    /// All folders, INBOX first, then the others sorted by name. Parent
    /// names need not exist as folders themselves ("A/B" without "A"):
    /// IMAP shows those as `\NonExistent`/`\HasChildren`.
    pub fn list_folders(&self) -> Result<Vec<FolderName>> {
        let mut names: Vec<FolderName> = self
            .folder_dirs()?
            .into_iter()
            .map(|(name, _)| name)
            .collect();
        names.sort();
        names.insert(0, FolderName::inbox());
        Ok(names)
    }

    /// Creates a folder with its `cur/ new/ tmp/` and `maildirfolder`. It
    /// is built under a scratch name and renamed into place, so nobody
    /// sees a half-made folder. Superior names are not created (Maildir++
    /// does not need them).
    pub fn create_folder(&self, name: &FolderName) -> Result<Folder> {
        let dir = self.folder_dir(name);
        if name.is_inbox() || exists(&dir)? {
            return Err(MailboxError::FolderExists(name.to_string()));
        }
        let scratch = self
            .root
            .join(format!("{SCRATCH_PREFIX}{}", self.ctx.unique_base(0)));
        let built = (|| {
            durable::create_dir(&scratch)?;
            for sub in ["tmp", "new", "cur"] {
                durable::create_dir(&scratch.join(sub))?;
            }
            let marker = scratch.join(FOLDER_MARKER);
            durable::create_new(&marker).map_err(|e| MailboxError::io("creating", &marker, e))?;
            durable::fsync_dir(&scratch)
        })();
        if let Err(e) = built {
            let _ = fs::remove_dir_all(&scratch);
            return Err(e);
        }
        // Checked again just before the rename: rename(2) would silently
        // replace an empty directory created meanwhile.
        if exists(&dir)? {
            let _ = fs::remove_dir_all(&scratch);
            return Err(MailboxError::FolderExists(name.to_string()));
        }
        if let Err(e) = fs::rename(&scratch, &dir) {
            let _ = fs::remove_dir_all(&scratch);
            return Err(match e.raw_os_error() {
                Some(libc::ENOTEMPTY) | Some(libc::EEXIST) => {
                    MailboxError::FolderExists(name.to_string())
                }
                _ => MailboxError::io("renaming into place", dir, e),
            });
        }
        durable::fsync_dir(&self.root)?;
        Ok(self.handle(name.clone(), dir))
    }

    /// Deletes a folder and its messages. Its children stay (each is its
    /// own directory in Maildir++), as IMAP DELETE allows. The directory is
    /// first renamed out of sight so deliveries and listings never see it
    /// half removed.
    pub fn delete_folder(&self, name: &FolderName) -> Result<()> {
        if name.is_inbox() {
            return Err(MailboxError::NotPermitted("INBOX cannot be deleted"));
        }
        let dir = self.folder_dir(name);
        if !exists(&dir)? {
            return Err(MailboxError::FolderNotFound(name.to_string()));
        }
        let scratch = self
            .root
            .join(format!("{SCRATCH_PREFIX}{}", self.ctx.unique_base(0)));
        fs::rename(&dir, &scratch).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => MailboxError::FolderNotFound(name.to_string()),
            _ => MailboxError::io("renaming for deletion", &dir, e),
        })?;
        durable::fsync_dir(&self.root)?;
        self.ctx.snapshots.forget(&dir);
        self.ctx.usage.forget(&self.root);
        fs::remove_dir_all(&scratch).map_err(|e| MailboxError::io("removing", scratch, e))
    }

    /// Renames a folder and every folder below it ("A" to "B" also moves
    /// "A/x" to "B/x"); UIDs and UIDVALIDITY move with them. Renaming INBOX
    /// moves its messages into the new folder and leaves INBOX empty (RFC
    /// 3501 6.3.5). Subscriptions are not changed.
    pub fn rename_folder(&self, from: &FolderName, to: &FolderName) -> Result<()> {
        if to.is_inbox() {
            return Err(MailboxError::FolderExists(to.to_string()));
        }
        if to == from || to.is_descendant_of(from) {
            return Err(MailboxError::NotPermitted(
                "a folder cannot be renamed to itself or below itself",
            ));
        }
        if from.is_inbox() {
            let dest = self.create_folder(to)?;
            let inbox = self.inbox();
            let uids: Vec<_> = inbox.snapshot()?.messages.iter().map(|m| m.uid).collect();
            inbox.move_to(&uids, &dest)?;
            return Ok(());
        }
        let from_dir = self.folder_dir(from);
        let mut moves: Vec<(PathBuf, PathBuf)> = Vec::new();
        if exists(&from_dir)? {
            moves.push((from_dir, self.folder_dir(to)));
        } else {
            return Err(MailboxError::FolderNotFound(from.to_string()));
        }
        for (name, dir) in self.folder_dirs()? {
            if name.is_descendant_of(from) {
                let suffix = &name.as_str()[from.as_str().len()..];
                let new_name = FolderName::new(&format!("{to}{suffix}"))?;
                moves.push((dir, self.folder_dir(&new_name)));
            }
        }
        for (_, target) in &moves {
            if exists(target)? {
                let shown = target.file_name().map(|n| n.to_string_lossy().into_owned());
                return Err(MailboxError::FolderExists(shown.unwrap_or_default()));
            }
        }
        for (source, target) in &moves {
            self.ctx.snapshots.forget(source);
            self.ctx.snapshots.forget(target);
            fs::rename(source, target).map_err(|e| MailboxError::io("renaming", source, e))?;
        }
        durable::fsync_dir(&self.root)
    }

    /// The subscribed folder names, in the order they were subscribed.
    pub fn subscriptions(&self) -> Result<Vec<FolderName>> {
        subscription::read(&self.root)
    }

    /// Subscribes to or unsubscribes from a name (which need not exist).
    pub fn set_subscribed(&self, name: &FolderName, subscribed: bool) -> Result<()> {
        subscription::set(&self.root, name, subscribed)
    }

    /// Creates (when missing) and subscribes the special-use folders Sent,
    /// Drafts, Trash, Junk and Archive; returns each with its folder name,
    /// for LIST's special-use attributes. Meant for a new user.
    pub fn create_special_use(&self) -> Result<Vec<(SpecialUse, FolderName)>> {
        let mut out = Vec::with_capacity(SpecialUse::ALL.len());
        for special in SpecialUse::ALL {
            let name = FolderName::new(special.folder_name())?;
            match self.create_folder(&name) {
                Ok(_) | Err(MailboxError::FolderExists(_)) => {}
                Err(e) => return Err(e),
            }
            self.set_subscribed(&name, true)?;
            out.push((special, name));
        }
        Ok(out)
    }

    /// Takes the user's session lock without waiting: POP3 holds it for a
    /// session so a second session gets `MailboxError::InUse` (answered
    /// `-ERR [IN-USE]`). It is a flock on its own file, so deliveries,
    /// which only take folder index locks briefly, go on meanwhile; the
    /// kernel releases it if the holder dies.
    pub fn lock_exclusive(&self) -> Result<SessionLock> {
        let lock = lock::try_lock_exclusive(&self.root.join(SESSION_LOCK))?;
        Ok(SessionLock { _lock: lock })
    }

    /// Bytes and messages in all folders: for each, the totals of its
    /// index plus the messages in `new/` the index does not list yet
    /// (deliveries waiting for the next sync), sized from the `,S=` of
    /// their names. One read of the index and one listing of `new/` per
    /// folder, no lock, no stat per message. A folder without a readable
    /// index counts every file in `new/` and `cur/`; files that other
    /// tools put straight into `cur/` of an indexed folder count once a
    /// sync has indexed them.
    pub fn usage(&self) -> Result<Usage> {
        let mut dirs = vec![self.root.clone()];
        dirs.extend(self.folder_dirs()?.into_iter().map(|(_, dir)| dir));
        let mut usage = Usage::default();
        for dir in dirs {
            let totals = folder_totals(&dir)?;
            usage.bytes += totals.bytes;
            usage.messages += totals.messages;
        }
        Ok(usage)
    }

    /// Stored bytes for quota: the store's figure (see `usage`), measured
    /// with [`UserMailbox::usage`] when there is none or it is stale.
    /// Blocking.
    pub fn stored_bytes(&self) -> Result<u64> {
        self.ctx
            .usage
            .measured(&self.root, || self.usage().map(|u| u.bytes))
    }

    fn handle(&self, name: FolderName, dir: PathBuf) -> Folder {
        Folder::new(name, dir, self.root.clone(), self.ctx.clone())
    }

    fn folder_dir(&self, name: &FolderName) -> PathBuf {
        match name.dir_name() {
            Some(dir) => self.root.join(dir),
            None => self.root.clone(),
        }
    }

    /// Every folder directory with its name (INBOX not included).
    fn folder_dirs(&self) -> Result<Vec<(FolderName, PathBuf)>> {
        let entries =
            fs::read_dir(&self.root).map_err(|e| MailboxError::io("listing", &self.root, e))?;
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| MailboxError::io("listing", &self.root, e))?;
            let Ok(dir_name) = entry.file_name().into_string() else {
                continue;
            };
            let Some(name) = FolderName::from_dir_name(&dir_name) else {
                continue;
            };
            if entry.path().join("cur").is_dir() {
                out.push((name, entry.path()));
            }
        }
        Ok(out)
    }
}

/// Whether a path exists (without following a final symlink).
fn exists(path: &Path) -> Result<bool> {
    match fs::symlink_metadata(path) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(MailboxError::io("checking", path, e)),
    }
}

/// One folder's totals (see [`UserMailbox::usage`]). Read without the
/// index lock: appends are whole lines or a torn last line (ignored), and
/// rewrites replace the file atomically. The index is read before `new/`
/// is listed, so a message indexed meanwhile is counted by the listing.
fn folder_totals(dir: &Path) -> Result<Totals> {
    let index = durable::read_optional(&dir.join(INDEX_FILE))?.and_then(|bytes| {
        match UidIndex::parse(&bytes) {
            Parsed::Intact { index, .. } => Some(index),
            Parsed::Lost => None,
        }
    });
    let (mut totals, known, subs) = match &index {
        Some(index) => (
            index.totals(),
            index
                .entries()
                .iter()
                .map(|e| e.base.as_str())
                .collect::<HashSet<_>>(),
            &["new"][..],
        ),
        None => (Totals::default(), HashSet::new(), &["new", "cur"][..]),
    };
    let mut seen: HashSet<String> = HashSet::new();
    for sub in subs {
        let sub_dir = dir.join(sub);
        let entries = match fs::read_dir(&sub_dir) {
            Ok(entries) => entries,
            // Deleted meanwhile: nothing there.
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(MailboxError::io("listing", sub_dir, e)),
        };
        for entry in entries {
            let entry = entry.map_err(|e| MailboxError::io("listing", &sub_dir, e))?;
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            let Some(parsed) = filename::parse(&name) else {
                continue;
            };
            if known.contains(parsed.base) || !seen.insert(parsed.base.to_owned()) {
                continue;
            }
            let size = match filename::size_from_base(parsed.base) {
                Some(size) => size,
                None => match entry.metadata() {
                    Ok(meta) if meta.is_file() => meta.len(),
                    Ok(_) => continue,
                    // Moved or removed meanwhile.
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(MailboxError::io("reading size of", entry.path(), e)),
                },
            };
            totals.messages += 1;
            totals.bytes += size;
        }
    }
    Ok(totals)
}
