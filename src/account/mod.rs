//! Accounts of the local mailbox tier: user names, password schemes, the
//! users file (Dovecot passwd-file style) and its editing, aliases, the
//! recipient directory that combines them with the local domains, and the
//! failed-login throttle. It refuses to store mail, speak a protocol or
//! hold a clock: callers pass `now` and map errors to replies.
//!
//! | file | job |
//! |---|---|
//! | `name.rs` | [`UserName`]: a name safe as a mailbox directory name |
//! | `scheme.rs` | `{SCHEME}secret` parsing, verification, new ARGON2ID hashes |
//! | `users.rs` | [`UserDb`]: the users file parsed; constant-work [`UserDb::verify`] |
//! | `edit.rs` | `spate user add/passwd/del/list`: locked, atomic rewrites of the users file |
//! | `aliases.rs` | [`Aliases`]: `/etc/aliases`-style file, bounded recursive expansion |
//! | `directory.rs` | [`Directory`]: recipient resolution, authentication, sender ownership, quotas |
//! | `quota.rs` | [`ByteSize`] and Dovecot quota rules |
//! | `throttle.rs` | [`LoginThrottle`]: delay and block after failed logins, per client address and, within it, per login name |
//! | `error.rs` | [`AccountError`] and its transient/permanent class |
//! | `watch.rs` | [`watch::FilesWatch`]: calls back when the users or aliases file changes (no SIGHUP needed) |

pub mod aliases;
pub mod directory;
pub mod edit;
pub mod error;
pub mod name;
pub mod quota;
pub mod scheme;
pub mod throttle;
pub mod users;
pub mod watch;

pub use aliases::Aliases;
pub use directory::{Directory, Resolution, Target};

pub use error::AccountError;
pub use name::{NameError, UserName};
pub use quota::ByteSize;
pub use scheme::{NewPassword, Secret};
pub use throttle::{LoginThrottle, Penalty, ThrottleConfig};
pub use users::{User, UserDb};
