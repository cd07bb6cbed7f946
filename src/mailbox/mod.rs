//! The mailbox store: users' Maildir++ directories with a per-folder UID
//! index, shared by local delivery, POP3 and IMAP. This file only maps the
//! modules and exports the API; it holds no logic. Synchronous std::fs
//! code: async callers run it on a blocking pool.
//!
//! On disk (readable by mutt, Dovecot and Courier):
//! ```text
//! <mailbox_dir>/<user>/            INBOX: cur/ new/ tmp/
//!     spate-uidlist                 INBOX's UID index (see `index`)
//!     spate-uidlist.lock            its flock
//!     spate-uidvalidity             last UIDVALIDITY handed out
//!     spate-session.lock            POP3 session flock
//!     subscriptions                 Dovecot format (see `subscription`)
//!     .Archive.2024/                folder "Archive/2024": cur/ new/ tmp/,
//!         maildirfolder             spate-uidlist, spate-uidlist.lock
//! ```
//! Message files: `<secs>.M<usecs>P<pid>Q<n>.<host>,S=<size>[:2,<flags>]`.
//!
//! Modules, each with one job:
//! - `id`: `Uid`, `UidValidity`, `ModSeq`
//! - `name`: `UserName`, `FolderName` and their on-disk forms
//! - `utf7`: modified UTF-7 for folder directory names
//! - `flag`: `Flag`, `Flags` and the `:2,` letters
//! - `filename`: unique message file names, base/size/flags parsing
//! - `index`: the `spate-uidlist` format (appended records, compaction),
//!   salvage of damaged files
//! - `lock`: flock guards
//! - `durable`: fsync of directories, atomic file replacement, appends
//! - `validity`: per-user UIDVALIDITY allocation
//! - `subscription`: the `subscriptions` file
//! - `folder`: `Folder`: delivery, snapshots, flags, expunge, copy, move
//! - `message_cache`: derived data per message (`spate-cache`), e.g. MIME structures
//! - `keywords`: keyword names per folder (`dovecot-keywords`)
//! - `cache`: `Stamp` (a folder's change stamp) and the snapshots shared by all
//!   sessions of a store while the stamp holds
//! - `usage`: each user's stored bytes, kept up to date for quota checks
//! - `meter`: a thread that measures those figures on request
//! - `user`: `UserMailbox`: folders, subscriptions, session lock, usage
//! - `store`: `MailStore`: the root, opening and creating users
//! - `error`: `MailboxError`

mod cache;
pub(crate) mod durable;
mod error;
mod filename;
mod flag;
mod folder;
mod id;
mod index;
mod keywords;
mod lock;
mod message_cache;
mod meter;
mod name;
mod store;
mod subscription;
mod usage;
mod user;
pub mod utf7;
mod validity;
mod watch;

#[cfg(test)]
mod tests;

pub use cache::Stamp;
pub use error::{MailboxError, NameKind};
pub use flag::{Flag, Flags};
pub use folder::{Delivered, FlagUpdate, Folder, MessageInfo, Snapshot};
pub use id::{ModSeq, Uid, UidValidity};
pub use index::{ExpungeHistory, EXPUNGE_HISTORY};
pub use keywords::{valid_name as valid_keyword, KeywordTable, KEYWORD_SLOTS};
pub use message_cache::CachedData;
pub use meter::UsageMeter;
pub use name::{FolderName, UserName};
pub use store::MailStore;
pub use usage::KnownUsage;
pub use user::{SessionLock, SpecialUse, Usage, UserMailbox};
pub use watch::{FolderWatcher, Subscription};
