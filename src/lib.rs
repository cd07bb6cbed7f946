//! spate: a thread-per-core SMTP relay/MTA with a durable, memory-mapped
//! spool.
//!
//! Architecture map (data flows down; nothing calls back up):
//!
//! | layer | module | job |
//! |---|---|---|
//! | protocol core | [`smtp`] | sans-IO SMTP server: bytes in, replies and events out; the parser borrows from the receive buffer |
//! | shared data | [`envelope`] | the envelope of an accepted message |
//! | spool | [`spool`] | per-core append-only segments, checksummed records, group commit, recovery, reclaim |
//! | queue | [`queue`] | per-core scheduler: retry timing, backoff, expiry, ready queues per destination with windows and connection limits |
//! | resolver | [`resolver`] | batched MX resolution on one resolver thread: RFC 5321 5.1 order, null MX, TTL cache, de-duplicated lookups |
//! | delivery | [`delivery`] | routing (local, route, smarthost, MX), DSN bounces (RFC 3464); outbound sessions to come |
//! | accounts | [`account`] | users file (Dovecot passwd-file), password schemes, aliases, recipient directory, login throttle |
//! | runtime glue | [`shard`], [`session`], [`tls`] | pinned glommio executors, listeners with SO_REUSEPORT, sessions over glommio sockets, STARTTLS |
//! | edges | [`config`], [`metrics`], [`cli`], [`control`] | TOML configuration, per-core counters and histograms, the command line |
//!
//! See DESIGN.md (shared with the project) and README.md for the whole
//! picture, including the layers still to come (outbound
//! delivery, mailbox store, POP3, IMAP).

pub mod account;
pub mod cli;
pub mod config;
pub mod control;
pub mod delivery;
pub mod envelope;
pub mod metrics;
pub mod notify;
pub mod queue;
pub mod resolver;
pub mod session;
pub mod shard;
pub mod smtp;
pub mod spool;
pub mod tls;
