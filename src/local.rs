//! The local mailbox tier as the servers see it: the user directory
//! (users, aliases, quota) and the Maildir store together. It answers the
//! SMTP core's RCPT and sender questions, checks logins and delivers one
//! recipient's copy of a message. Its blocking calls (password hashing,
//! file writes with fsync) are run off the executors by the callers; it
//! holds no protocol logic and keeps no per-session state.

use std::net::IpAddr;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, RwLock};
use std::time::{Duration, Instant};

use crate::account::watch::FilesWatch;
use crate::account::{
    AccountError, Directory, LoginThrottle, Resolution, Target, ThrottleConfig, UserName,
};
use crate::config::Config;
use crate::mailbox::{self, MailStore, MailboxError};
use crate::smtp::policy::{LocalPolicy, LocalRecipient};

/// The outcome of delivering one recipient's copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LocalOutcome {
    /// Stored in every target mailbox; `forward` lists the external
    /// addresses aliases sent it on to (to be queued as a new message).
    Delivered { forward: Vec<String> },
    /// Try again later: the reply to record.
    Deferred(String),
    /// Never deliverable: the reply for the DSN.
    Failed(String),
}

/// A login's verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Login {
    /// The user's canonical name.
    Success(String),
    Failed,
    /// The directory could not answer (unreadable hash, ...).
    Temporary,
}

/// See the module header. Shared by every core (`Arc`). The directory
/// is swapped whole on a reload; each call takes the one current then.
#[derive(Debug)]
pub struct LocalTier {
    directory: RwLock<Arc<Directory>>,
    store: MailStore,
    /// Failed logins per client address and login name, all cores and
    /// protocols together (logins are rare: one lock is cheap).
    throttle: Mutex<LoginThrottle>,
    /// Measures usage figures that RCPT checks lack (`None` if its thread
    /// could not start: then only deliveries measure).
    meter: Option<mailbox::UsageMeter>,
    /// Wakes idling IMAP sessions when their folder changes; started at
    /// the first IDLE (`None` inside if inotify is unavailable: sessions
    /// then poll).
    watcher: OnceLock<Option<mailbox::FolderWatcher>>,
    /// The `[local]` settings the directory was last loaded from (the
    /// users file watch loads it again from them).
    source: Mutex<Option<crate::config::Local>>,
    /// Reloads the directory when the users or aliases file changes.
    files_watch: Mutex<Option<FilesWatch>>,
}

impl LocalTier {
    /// Loads the directory; `None` when `[local] mailbox_dir` is unset.
    pub fn load(config: &Config) -> Result<Option<Arc<LocalTier>>, AccountError> {
        let Some(dir) = &config.local.mailbox_dir else {
            return Ok(None);
        };
        let directory = Directory::load(&config.local)?;
        for warning in directory.warnings() {
            tracing::warn!("{warning}");
        }
        let tier = Arc::new(LocalTier::new(directory, dir, &config.hostname));
        tier.set_source(&config.local);
        Ok(Some(tier))
    }

    /// From now on, reloads the directory whenever the users or aliases
    /// file is rewritten (`spate user add` while the server runs), from
    /// the `[local]` settings last loaded (a SIGHUP may change them; a
    /// file moved to a new path by a reload is watched after a restart).
    /// A file that does not load leaves the directory as it was.
    pub fn watch_directory_files(self: &Arc<Self>) {
        let Some(local) = self.source() else {
            return;
        };
        let files: Vec<&Path> = [&local.users_file, &local.aliases_file]
            .into_iter()
            .flatten()
            .map(|p| p.as_path())
            .collect();
        if files.is_empty() {
            return;
        }
        let tier = Arc::downgrade(self);
        let started = FilesWatch::start(&files, move || {
            if let Some(tier) = tier.upgrade() {
                tier.reload_directory_files();
            }
        });
        match started {
            Ok(watch) => *self.files_watch.lock().unwrap_or_else(|e| e.into_inner()) = Some(watch),
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch the users file: changes need a SIGHUP")
            }
        }
    }

    /// Loads the users and aliases files again (the watch saw a change).
    fn reload_directory_files(&self) {
        let Some(local) = self.source() else {
            return;
        };
        match Directory::load(&local) {
            Ok(directory) => {
                for warning in directory.warnings() {
                    tracing::warn!("{warning}");
                }
                tracing::info!(
                    users = directory.users().len(),
                    "users file changed: directory reloaded"
                );
                self.replace_directory(directory);
            }
            Err(e) => {
                tracing::warn!(error = %e, "users file changed but does not load: kept the users in force")
            }
        }
    }

    fn source(&self) -> Option<crate::config::Local> {
        self.source
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Records the `[local]` settings the directory now comes from (at
    /// start and at each SIGHUP reload).
    pub fn set_source(&self, local: &crate::config::Local) {
        *self.source.lock().unwrap_or_else(|e| e.into_inner()) = Some(local.clone());
    }

    /// The tier over `mailbox_dir`; starts the usage meter and asks it for
    /// the figure of every user with a quota, so RCPT checks have them
    /// soon after a start.
    pub fn new(directory: Directory, mailbox_dir: &Path, hostname: &str) -> LocalTier {
        let store = MailStore::new(mailbox_dir, hostname);
        let meter = mailbox::UsageMeter::start(store.clone())
            .inspect_err(|e| tracing::warn!(error = %e, "cannot start the usage meter"))
            .ok();
        if let Some(meter) = &meter {
            for user in directory.users().iter() {
                if directory.quota_for(user.name()).is_some() {
                    if let Ok(name) = mailbox::UserName::new(user.name().as_str()) {
                        meter.request(&name);
                    }
                }
            }
        }
        LocalTier {
            directory: RwLock::new(Arc::new(directory)),
            store,
            throttle: Mutex::new(LoginThrottle::new(ThrottleConfig::default())),
            meter,
            watcher: OnceLock::new(),
            source: Mutex::new(None),
            files_watch: Mutex::new(None),
        }
    }

    /// Watches the folder at `dir` for an idling session; `None` if
    /// inotify cannot watch it (the session then polls).
    pub fn watch_folder(&self, dir: &Path) -> Option<mailbox::Subscription> {
        let watcher = self.watcher.get_or_init(|| {
            mailbox::FolderWatcher::start()
                .inspect_err(|e| tracing::warn!(error = %e, "cannot watch folders: IDLE polls"))
                .ok()
        });
        watcher
            .as_ref()?
            .subscribe(dir)
            .inspect_err(
                |e| tracing::debug!(error = %e, dir = %dir.display(), "folder not watched"),
            )
            .ok()
    }

    /// The current directory (users, aliases, quota). A caller keeps the
    /// one it got for the whole of its answer, so a reload never mixes
    /// two directories in one RCPT or one delivery.
    pub fn directory(&self) -> Arc<Directory> {
        // The lock guards one Arc swap: a poisoned lock still holds a
        // whole, valid Arc.
        Arc::clone(&self.directory.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Replaces the directory (SIGHUP reload). Logins, RCPT checks and
    /// deliveries that start afterwards see the new users and aliases;
    /// those already running finish with the old ones.
    pub fn replace_directory(&self, directory: Directory) {
        let new = Arc::new(directory);
        *self.directory.write().unwrap_or_else(|e| e.into_inner()) = new;
    }

    fn throttle(&self) -> MutexGuard<'_, LoginThrottle> {
        // The throttle holds counters only: one left mid-update by a
        // panicking thread is still usable.
        self.throttle.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Too many recent failures from `ip`: refuse without checking.
    pub fn login_blocked(&self, ip: IpAddr, now: Instant) -> bool {
        self.throttle().is_blocked(ip, now)
    }

    /// Counts a failure of `login` (as typed); returns how long to wait
    /// before answering it.
    pub fn login_failed(&self, ip: IpAddr, login: &str, now: Instant) -> Duration {
        self.throttle().record_failure(ip, login, now).delay
    }

    /// Forgets the failures of this login only: as typed and by the
    /// user's canonical name (the client's failures for other names stay).
    pub fn login_succeeded(&self, ip: IpAddr, login: &str, user: &str) {
        let mut throttle = self.throttle();
        throttle.record_success(ip, login);
        throttle.record_success(ip, user);
    }

    pub fn store(&self) -> &MailStore {
        &self.store
    }

    /// Checks a password (slow by design: run it off the executor).
    pub fn authenticate(&self, login: &str, password: &str) -> Login {
        match self.directory().authenticate(login, password.as_bytes()) {
            Ok(Some(user)) => Login::Success(user.name().as_str().to_owned()),
            Ok(None) => Login::Failed,
            Err(e) => {
                tracing::warn!(login, error = %e, "cannot check a password");
                Login::Temporary
            }
        }
    }

    /// `user`'s quota in bytes (the user's own rule, else `[local]
    /// quota`); `None` is unlimited.
    pub fn quota(&self, user: &str) -> Option<u64> {
        let user = UserName::parse(user).ok()?;
        self.directory().quota_for(&user)
    }

    /// The mailbox of an authenticated user, created on first use.
    pub fn mailbox(&self, user: &str) -> Result<mailbox::UserMailbox, MailboxError> {
        self.store.ensure_user(&mailbox::UserName::new(user)?)
    }

    /// Delivers `parts` (the message, trace headers first) to the mailboxes
    /// of the local recipient `address`. Blocking: fsyncs files and
    /// directories before it returns `Delivered`.
    pub fn deliver(&self, address: &str, parts: &[&[u8]]) -> LocalOutcome {
        let (local, domain) = split(address);
        let directory = self.directory();
        let targets = match directory.resolve(local, domain) {
            Ok(Resolution::Targets(targets)) => targets,
            // Accepted at RCPT time, gone since (user deleted): RFC 3463 5.1.1.
            Ok(Resolution::Unknown) => {
                return LocalOutcome::Failed(format!(
                    "550 5.1.1 <{address}>: Recipient address rejected: User unknown"
                ))
            }
            Err(e) => return LocalOutcome::Deferred(format!("451 4.3.0 <{address}>: {e}")),
        };
        let size: u64 = parts.iter().map(|p| p.len() as u64).sum();
        let mut forward = Vec::new();
        for target in targets {
            let user = match target {
                Target::Forward(to) => {
                    forward.push(to);
                    continue;
                }
                Target::Mailbox(user) => user,
            };
            if let Some(refusal) = self.over_quota(&directory, &user, size) {
                return refusal;
            }
            let stored = mailbox::UserName::new(user.as_str())
                .and_then(|name| self.store.ensure_user(&name))
                .and_then(|mailbox| mailbox.inbox().deliver(parts));
            if let Err(e) = stored {
                tracing::warn!(%address, user = user.as_str(), error = %e, "local delivery failed");
                let reply = if e.is_disk_full() {
                    format!("452 4.3.1 <{address}>: mail system full")
                } else if e.is_transient() {
                    format!("451 4.3.0 <{address}>: mailbox temporarily unavailable")
                } else {
                    return LocalOutcome::Failed(format!("550 5.2.0 <{address}>: {e}"));
                };
                return LocalOutcome::Deferred(reply);
            }
        }
        LocalOutcome::Delivered { forward }
    }

    /// RFC 3463 X.2.2: a message larger than the whole quota never fits
    /// (552); otherwise a full mailbox may empty (452, retried).
    fn over_quota(
        &self,
        directory: &Directory,
        user: &UserName,
        size: u64,
    ) -> Option<LocalOutcome> {
        let limit = directory.quota_for(user)?;
        if size > limit {
            return Some(LocalOutcome::Failed(format!(
                "552 5.2.2 {}: message larger than the mailbox quota",
                user.as_str()
            )));
        }
        let used = self.stored_bytes(user);
        (used.saturating_add(size) > limit)
            .then(|| LocalOutcome::Deferred(format!("452 4.2.2 {}: mailbox full", user.as_str())))
    }

    /// Bytes stored for `user` (0 for a mailbox not created yet): the
    /// store's figure, measured (blocking) when there is none or it is
    /// old. For the blocking pool only.
    fn stored_bytes(&self, user: &UserName) -> u64 {
        mailbox::UserName::new(user.as_str())
            .and_then(|name| self.store.user(&name))
            .and_then(|mailbox| mailbox.stored_bytes())
            .map_or(0, |bytes| bytes)
    }

    /// The users whose mailboxes a local address delivers to, with their
    /// quota; `Unknown` when no user or alias has the address, `Err` when
    /// the aliases cannot be read. In memory only.
    fn quota_targets(&self, address: &str) -> Result<QuotaTargets, AccountError> {
        let (local, domain) = split(address);
        let directory = self.directory();
        Ok(match directory.resolve(local, domain)? {
            Resolution::Targets(targets) => QuotaTargets::Users(
                targets
                    .into_iter()
                    .filter_map(|target| match target {
                        Target::Mailbox(user) => {
                            let limit = directory.quota_for(&user);
                            Some((user, limit))
                        }
                        Target::Forward(_) => None,
                    })
                    .collect(),
            ),
            Resolution::Unknown => QuotaTargets::Unknown,
        })
    }

    /// Whether a message of `size` octets is larger than the whole quota
    /// of a mailbox `address` delivers to (RFC 1870 6.3, at the end of
    /// DATA). In memory only: for the executor.
    pub fn larger_than_quota(&self, address: &str, size: u64) -> bool {
        match self.quota_targets(address) {
            Ok(QuotaTargets::Users(users)) => users
                .iter()
                .any(|(_, limit)| limit.is_some_and(|limit| size > limit)),
            Ok(QuotaTargets::Unknown) | Err(_) => false,
        }
    }
}

/// What a local address resolves to, for quota checks.
enum QuotaTargets {
    /// The users it delivers to and each one's quota (`None`: unlimited).
    Users(Vec<(UserName, Option<u64>)>),
    Unknown,
}

fn split(address: &str) -> (&str, &str) {
    address.rsplit_once('@').unwrap_or((address, ""))
}

impl LocalPolicy for LocalTier {
    /// Unknown users are refused; a declared size larger than a target's
    /// whole quota is refused for good (552 5.2.2, RFC 1870 6.4); a
    /// mailbox whose known usage leaves no room for the declared size (or
    /// is full) is refused for now (452 4.2.2). Usage comes from the
    /// store's in-memory figure, never from the disk: a user whose figure
    /// is not known yet (moments after a start) is accepted and the meter
    /// asked for it; delivery (on the blocking pool) checks again.
    fn recipient(&self, address: &str, declared_size: Option<u64>) -> LocalRecipient {
        let users = match self.quota_targets(address) {
            Ok(QuotaTargets::Users(users)) => users,
            Ok(QuotaTargets::Unknown) => return LocalRecipient::Unknown,
            // The alias file is broken: accept, delivery defers and retries.
            Err(_) => return LocalRecipient::Accept,
        };
        let size = declared_size.unwrap_or(0);
        for (user, limit) in users {
            let Some(limit) = limit else { continue };
            if size > limit {
                return LocalRecipient::LargerThanQuota;
            }
            let Ok(name) = mailbox::UserName::new(user.as_str()) else {
                continue;
            };
            let known = self.store.known_usage(&name);
            if known.is_none_or(|k| k.stale) {
                if let Some(meter) = &self.meter {
                    meter.request(&name);
                }
            }
            let used = known.map_or(0, |k| k.bytes);
            if used >= limit || used.saturating_add(size) > limit {
                return LocalRecipient::MailboxFull { permanent: false };
            }
        }
        LocalRecipient::Accept
    }

    /// The null sender (notifications, RFC 5321 4.5.5) is anyone's.
    fn may_send_as(&self, user: &str, sender: &str) -> bool {
        sender.is_empty()
            || UserName::parse(user).is_ok_and(|user| self.directory().owns_address(&user, sender))
    }
}
