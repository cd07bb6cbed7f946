//! `MailStore`: the root of all mailboxes (`[local] mailbox_dir`) and the
//! per-store state every folder shares (host name and counter for unique
//! file names). It opens users; it does not know about folders' contents.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use super::cache::SnapshotCache;
use super::durable;
use super::error::{MailboxError, Result};
use super::filename;
use super::name::UserName;
use super::usage::{KnownUsage, UsageBook};
use super::user::UserMailbox;

/// Most messages the shared snapshot cache holds over all folders (about
/// 200 bytes each: 200,000 is some 40 MB).
const SNAPSHOT_BUDGET: usize = 200_000;

/// What every folder handle of one store shares. Held in an `Arc` rather
/// than a global so two stores (tests, two configurations) never share a
/// counter by accident.
#[derive(Debug)]
pub(crate) struct StoreContext {
    /// Host name, made safe for file names.
    host: String,
    pid: u32,
    /// Deliveries by this store, the `Q` part of unique names.
    counter: AtomicU64,
    /// The last snapshot of each folder, shared by all sessions.
    pub(crate) snapshots: SnapshotCache,
    /// Each user's stored bytes, for quota checks.
    pub(crate) usage: UsageBook,
}

impl StoreContext {
    /// A new unique base name for a message of `size` bytes.
    pub(crate) fn unique_base(&self, size: u64) -> String {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        filename::unique_base(SystemTime::now(), self.pid, n, &self.host, size)
    }
}

/// The mailbox tier's storage: one Maildir++ directory per user under
/// `root`. Cheap to clone; handles are independent and may be used from
/// any thread (calls block on the filesystem, so async callers run them on
/// a blocking pool).
#[derive(Debug, Clone)]
pub struct MailStore {
    root: PathBuf,
    ctx: Arc<StoreContext>,
}

impl MailStore {
    /// A store under `root` (created on first `ensure_user`); `hostname`
    /// goes into message file names as the Maildir spec asks.
    pub fn new(root: impl Into<PathBuf>, hostname: &str) -> MailStore {
        MailStore {
            root: root.into(),
            ctx: Arc::new(StoreContext {
                host: filename::sanitize_host(hostname),
                pid: std::process::id(),
                counter: AtomicU64::new(0),
                snapshots: SnapshotCache::new(SNAPSHOT_BUDGET),
                usage: UsageBook::default(),
            }),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// What is known of `name`'s stored bytes, without any file I/O (for
    /// checks on an executor thread); `None` before the first measurement
    /// (see [`UserMailbox::stored_bytes`]).
    pub fn known_usage(&self, name: &UserName) -> Option<KnownUsage> {
        self.ctx
            .usage
            .known(&self.root.join(name.as_str()), std::time::Instant::now())
    }

    /// The mailbox of an existing user; `UserNotFound` when the user has
    /// no Maildir yet (nothing was ever delivered).
    pub fn user(&self, name: &UserName) -> Result<UserMailbox> {
        let dir = self.root.join(name.as_str());
        if !dir.join("cur").is_dir() {
            return Err(MailboxError::UserNotFound(name.to_string()));
        }
        Ok(UserMailbox::new(name.clone(), dir, self.ctx.clone()))
    }

    /// The user's mailbox, creating the Maildir (`cur/ new/ tmp/`) if it
    /// does not exist yet, durably (the new directories are fsynced into
    /// their parents), so that the first delivery's fsync of `new/` means
    /// what it says.
    pub fn ensure_user(&self, name: &UserName) -> Result<UserMailbox> {
        let dir = self.root.join(name.as_str());
        if !dir.join("cur").is_dir() {
            if !self.root.is_dir() {
                std::fs::create_dir_all(&self.root)
                    .map_err(|e| MailboxError::io("creating mailbox root", &self.root, e))?;
            }
            let created_root = durable::create_dir(&dir)?;
            let mut created = false;
            for sub in ["tmp", "new", "cur"] {
                created |= durable::create_dir(&dir.join(sub))?;
            }
            if created {
                durable::fsync_dir(&dir)?;
            }
            if created_root {
                durable::fsync_dir(&self.root)?;
            }
        }
        Ok(UserMailbox::new(name.clone(), dir, self.ctx.clone()))
    }
}
