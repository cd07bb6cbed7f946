//! spate: a thread-per-core SMTP relay/MTA with a durable, memory-mapped
//! spool.
//!
//! Architecture map (data flows down; nothing calls back up):
//!
//! | layer | module | job |
//! |---|---|---|
//! | protocol core | [`smtp`] | sans-IO SMTP server: bytes in, replies and events out; the parser borrows from the receive buffer |
//! | protocol core | [`pop3`] | sans-IO POP3 server: bytes in, replies and requests (authenticate, open maildrop, send message, update) out |
//! | protocol core | [`imap`] | sans-IO IMAP server pieces: command framing with literals and bounds, a parser to typed commands borrowing from the receive buffer, reply encoding, MIME structure (ENVELOPE, BODYSTRUCTURE, sections), the selected mailbox's view, and the session that executes commands against the mailbox store (`imap::session`, through a `Backend` trait); the glue is still to come |
//! | protocol helper | [`sasl`] | SASL codecs shared by the cores: strict base64, PLAIN (RFC 4616), LOGIN prompts |
//! | shared data | [`envelope`] | the envelope of an accepted message |
//! | shared data | [`chunked`] | `ChunkedMap`, a compact ordered map (sorted chunks, nearly full for keys that come nearly in order) for the per-message tables of the queue and the spool's ledger |
//! | spool | [`spool`] | per-core append-only segments, checksummed records, group commit, recovery, reclaim |
//! | queue | [`queue`] | per-core scheduler: retry timing, backoff, expiry, ready queues per destination with windows and connection limits |
//! | shaping | [`shaping`] | traffic shaping rules per destination site (defaults, providers by MX suffix, domains) and the token bucket the ready queues enforce rates with |
//! | resolver | [`resolver`] | batched MX resolution on one resolver thread: RFC 5321 5.1 order, null MX, TTL cache, de-duplicated lookups |
//! | beyond one host | [`cluster`] | limits shared with other hosts through Redis (`[cluster]`): a GCRA limiter in Redis whose tokens each core leases in batches, each host's share of connections, suspensions published to every host, a fallback to this host's share when Redis is away |
//! | delivery | [`delivery`] | routing (local, route, smarthost, MX), outbound SMTP, local delivery to the mailbox tier, DSN bounces (RFC 3464) |
//! | outbound TLS policy | [`outbound_tls`] | MTA-STS (RFC 8461) and DANE (RFC 7672) for outbound STARTTLS: the policy grammar and TLSA matching (sans-IO), certificate verifiers for rustls, blocking DNS (AD bit) and HTTPS lookups off the cores, per-domain requirements cached host-wide |
//! | signing | [`dkim`] | DKIM signing (RFC 6376, RFC 8463 Ed25519) of mail from clients that may relay, once per message at receipt: each From domain's key loaded from `[dkim]`, the `DKIM-Signature:` header for a message (sans-IO, on mail-auth's ring backend) |
//! | events | [`events`] | message-life events (received, delivered, deferred, bounced, expired, suspended) to webhooks: the cores' non-blocking sink, a writer thread appending numbered, checksummed records to a durable log, one poster thread per endpoint (JSON batches over HTTP/1.1, acknowledged offsets, backoff); at least once, in order |
//! | egress | [`egress`] | egress sources (bind address, EHLO name, rate, warm-up) and weighted pools; a message's pool (route, user, tenant, default); the per-core chooser of a source for a site; the tenant header read and removed at receipt |
//! | mailbox store | [`mailbox`] | Maildir++ per user with a per-folder UID index: durable delivery, flags, folders, subscriptions, POP3 session lock, usage |
//! | accounts | [`account`] | users file (Dovecot passwd-file), password schemes, aliases, recipient directory, login throttle |
//! | mailbox tier | [`local`] | the directory and the store together, as the servers use them: RCPT checks, logins, one recipient's delivery |
//! | runtime glue | [`shard`], [`session`], [`tls`] | pinned glommio executors, listeners with SO_REUSEPORT, sessions over glommio sockets, STARTTLS |
//! | edges | [`config`], [`metrics`], [`logging`], [`cli`], [`control`] | TOML configuration, per-core counters and histograms merged when scraped (Prometheus endpoint), the log subscriber (text or JSON lines), the command line |
//! | service | [`sd_notify`], [`reload`], [`tune`], [`claim`], [`crash`], [`peer`] | systemd readiness, reload and stop notifications; what a SIGHUP reload swaps and what needs a restart; `spate tune check` against the tuning kit; one server per listening address; a shard's panic ends the process (status 70); Unix peer credentials |
//! | fuzzing | [`fuzz`] | the bodies of the fuzz targets (SMTP, IMAP, POP3, spool records, MIME), run by `tests/fuzzing.rs` and the cargo-fuzz crate |
//! | load tools | [`blast`], [`sink`] | `spate blast`, the load generator (sans-IO client core with pipelining and BDAT, one executor per core, HdrHistogram report) and `spate sink` (sans-IO sink session, deterministic fault injection, counters) |
//!
//! See DESIGN.md (shared with the project) and README.md for the whole
//! picture.

pub mod account;
pub mod api;
pub mod blast;
pub mod blocking;
pub mod chunked;
pub mod claim;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod control;
pub mod crash;
pub mod delivery;
pub mod dkim;
pub mod egress;
pub mod envelope;
pub mod events;
pub mod fuzz;
pub mod imap;
pub mod local;
pub mod logging;
pub mod mailbox;
pub mod metrics;
pub mod notify;
pub mod outbound_tls;
pub mod peer;
pub mod pop3;
pub mod queue;
pub mod reload;
pub mod resolver;
pub mod sasl;
pub mod sd_notify;
pub mod session;
pub mod shaping;
pub mod shard;
pub mod sink;
pub mod smtp;
pub mod spool;
pub mod tls;
pub mod tune;
pub mod watch_thread;
