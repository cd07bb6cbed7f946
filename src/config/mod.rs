//! The configuration file: TOML parsed once into typed, validated values.
//! It refuses unknown keys and never reads anything at run time; the
//! runtime gets an immutable snapshot per core.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;

use crate::delivery::router::{HostPort, Router};
use crate::smtp::BareLineEndings;

/// The configuration `spate serve` runs on when no `--config` is given:
/// loopback ports and a data directory under the working directory, so a
/// first run shows the server working at once.
pub const EMBEDDED_DEFAULT: &str = include_str!("default.toml");

/// Why a configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid configuration: {0}")]
    Parse(#[from] toml::de::Error),
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// The whole configuration, as the TOML file spells it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Our name in the SMTP greeting, EHLO and Received headers.
    #[serde(default = "default_hostname")]
    pub hostname: String,
    /// Where the per-core spool segments live.
    pub spool_dir: PathBuf,
    /// Executors (one per core, pinned); 0 means one per available CPU.
    #[serde(default)]
    pub cores: usize,
    /// How long a stopping server lets open transactions finish.
    #[serde(default = "default_shutdown_grace", with = "humantime_serde")]
    pub shutdown_grace: Duration,
    #[serde(default, rename = "listener")]
    pub listeners: Vec<Listener>,
    #[serde(default)]
    pub relay: Relay,
    #[serde(default)]
    pub dns: Dns,
    /// Per-domain next hops, for relay hierarchies (`[[route]]`).
    #[serde(default, rename = "route")]
    pub routes: Vec<RouteEntry>,
    #[serde(default)]
    pub local: Local,
    pub tls: Option<Tls>,
    #[serde(default)]
    pub smtp: Smtp,
    #[serde(default)]
    pub spool: SpoolTuning,
    #[serde(default)]
    pub delivery: Delivery,
    /// Egress sources and pools (`[egress]`).
    #[serde(default)]
    pub egress: Egress,
    #[serde(default)]
    pub auth: Auth,
    #[serde(default)]
    pub pop3: Pop3,
    #[serde(default)]
    pub metrics: MetricsEndpoint,
    /// The HTTP management API; absent `address`: none.
    #[serde(default)]
    pub api: ApiEndpoint,
    #[serde(default)]
    pub log: Log,
    /// Limits shared with other hosts through Redis; absent: none.
    pub cluster: Option<ClusterConfig>,
    /// DKIM signing of mail from clients that may relay (`[dkim]`).
    #[serde(default)]
    pub dkim: DkimConfig,
    /// Message-life events posted to webhooks (`[events]`).
    #[serde(default)]
    pub events: EventsConfig,
}

/// `[events]` and `[[events.webhook]]`: message-life events (received,
/// delivered, deferred, bounced, expired, suspended) kept in a durable
/// log and posted in batches to each webhook (see `events`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsConfig {
    /// Where the event log and each endpoint's acknowledged number live;
    /// default `<spool_dir>/events`.
    pub dir: Option<PathBuf>,
    /// The most bytes the log may hold on disk (events not yet
    /// acknowledged by every endpoint). When it is full, new events are
    /// dropped and counted (`spate_events_dropped_total`): mail is never
    /// held up for events.
    #[serde(default = "default_events_max_queue_bytes")]
    pub max_queue_bytes: u64,
    /// Events waiting in memory for the log writer; past it new events
    /// are dropped and counted.
    #[serde(default = "default_events_memory_queue")]
    pub memory_queue: usize,
    /// How long a message's 250 may wait for its `received` event to be
    /// synced to the event log (after the message's own spool sync);
    /// zero: the 250 does not wait (a crash can then lose the events of
    /// the last moments).
    #[serde(
        default = "default_events_received_sync_wait",
        with = "humantime_serde"
    )]
    pub received_sync_wait: Duration,
    /// The endpoints; none: no events are made.
    #[serde(default, rename = "webhook")]
    pub webhooks: Vec<Webhook>,
}

impl Default for EventsConfig {
    fn default() -> Self {
        EventsConfig {
            dir: None,
            max_queue_bytes: default_events_max_queue_bytes(),
            memory_queue: default_events_memory_queue(),
            received_sync_wait: default_events_received_sync_wait(),
            webhooks: Vec::new(),
        }
    }
}

/// `[[events.webhook]]`: one endpoint events are POSTed to.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Webhook {
    /// `http://host[:port][/path]`.
    pub url: crate::events::http::HttpUrl,
    /// Its name in logs, metrics and its acknowledgement file; default
    /// the URL. Renaming an endpoint starts it over from the log's start.
    pub name: Option<String>,
    /// The most events in one POST.
    #[serde(default = "default_webhook_batch_size")]
    pub batch_size: usize,
    /// How long a batch may wait to fill before it is posted.
    #[serde(default = "default_webhook_batch_wait", with = "humantime_serde")]
    pub batch_wait: Duration,
    /// Connecting, sending and waiting for the answer; past it the post
    /// failed.
    #[serde(default = "default_webhook_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// The first wait after a failed post; it doubles up to `max_backoff`
    /// (each wait drawn between half and all of it).
    #[serde(default = "default_webhook_min_backoff", with = "humantime_serde")]
    pub min_backoff: Duration,
    #[serde(default = "default_webhook_max_backoff", with = "humantime_serde")]
    pub max_backoff: Duration,
    /// Sent as `Authorization: Bearer <token>`.
    pub bearer_token: Option<Secret>,
    /// Extra request header fields (values kept out of `check-config`
    /// output, as they often carry keys).
    #[serde(default)]
    pub headers: std::collections::BTreeMap<String, Secret>,
}

/// A configured secret (a token, a key): its `Debug` form, which
/// `spate check-config` prints and reloads compare, shows a checksum of
/// it instead of the value.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "<secret, crc32c {:08x}>",
            crc32c::crc32c(self.0.as_bytes())
        )
    }
}

impl Webhook {
    /// Its name, or its URL.
    pub fn name(&self) -> &str {
        self.name.as_deref().unwrap_or(&self.url.text)
    }
}

fn default_events_max_queue_bytes() -> u64 {
    1 << 30
}

fn default_events_memory_queue() -> usize {
    65_536
}

fn default_events_received_sync_wait() -> Duration {
    Duration::from_millis(100)
}

fn default_webhook_batch_size() -> usize {
    100
}

fn default_webhook_batch_wait() -> Duration {
    Duration::from_millis(100)
}

fn default_webhook_timeout() -> Duration {
    Duration::from_secs(10)
}

fn default_webhook_min_backoff() -> Duration {
    Duration::from_secs(1)
}

fn default_webhook_max_backoff() -> Duration {
    Duration::from_secs(60)
}

/// `[dkim]`: which header fields are signed and how, and
/// `[dkim.domain.NAME]`, each signing domain's selector and key. Mail is
/// signed with the key of its RFC5322.From domain (or of its closest
/// parent domain that has one): the domain DMARC aligns with.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DkimConfig {
    /// Header fields to sign (`h=`); every instance present is signed,
    /// and the absence of those missing (see `dkim::DEFAULT_HEADERS`).
    /// Must name From (RFC 6376 5.4).
    #[serde(default = "default_dkim_headers")]
    pub headers: Vec<String>,
    /// Fields named once more in `h=` than present, so none can be added
    /// (RFC 6376 8.15).
    #[serde(default = "default_dkim_over_sign")]
    pub over_sign: Vec<String>,
    /// `header/body`: `relaxed` or `simple` each (RFC 6376 3.4).
    #[serde(default)]
    pub canonicalization: crate::dkim::Canonicalization,
    /// Signing domain (`d=`) -> its selector and key.
    #[serde(default)]
    pub domain: std::collections::BTreeMap<String, DkimDomain>,
}

impl Default for DkimConfig {
    fn default() -> Self {
        DkimConfig {
            headers: default_dkim_headers(),
            over_sign: default_dkim_over_sign(),
            canonicalization: crate::dkim::Canonicalization::default(),
            domain: std::collections::BTreeMap::new(),
        }
    }
}

/// `[dkim.domain.NAME]`: one signing domain.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DkimDomain {
    /// `s=`: the key is published at `<selector>._domainkey.<domain>`.
    pub selector: String,
    /// PEM private key: RSA (2048 to 4096 bits) or Ed25519 (PKCS#8).
    pub private_key: PathBuf,
}

fn default_dkim_headers() -> Vec<String> {
    crate::dkim::DEFAULT_HEADERS
        .iter()
        .map(|h| (*h).to_owned())
        .collect()
}

fn default_dkim_over_sign() -> Vec<String> {
    crate::dkim::DEFAULT_OVER_SIGN
        .iter()
        .map(|h| (*h).to_owned())
        .collect()
}

/// RFC 6376 3.1: a selector is dot-separated sub-domains (letters,
/// digits, hyphens inside).
fn valid_selector(selector: &str) -> bool {
    !selector.is_empty()
        && selector.len() <= 253
        && selector.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// RFC 5322 2.2: a field name is printable ASCII but the colon.
fn valid_field_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| (33..=126).contains(&b) && b != b':')
}

/// `[cluster]`: relay hosts that share their shaping limits and
/// suspensions through one Redis (see `cluster`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// `redis://[:password@]host[:port][/db]` or `unix:///path`.
    pub redis: String,
    /// This host in Redis and in other hosts' logs; default
    /// `<hostname>/<pid>`. Each running instance gets a nonce appended.
    pub name: Option<String>,
    /// The fewest hosts sharing the limits: while Redis is away each host
    /// takes the limit divided by this or by the hosts last heard from,
    /// whichever is more.
    #[serde(default = "default_cluster_hosts")]
    pub hosts: usize,
    /// How much of a site's rate one lease holds (tokens per grant: this
    /// long's worth of the rate, at least one).
    #[serde(default = "default_cluster_lease", with = "humantime_serde")]
    pub lease: Duration,
    /// Connecting to Redis and each call to it; past it Redis counts as
    /// away and every limit falls back to this host's share.
    #[serde(default = "default_cluster_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Prefix of every key and channel spate uses in Redis.
    #[serde(default = "default_cluster_prefix")]
    pub key_prefix: String,
}

fn default_cluster_hosts() -> usize {
    1
}

fn default_cluster_lease() -> Duration {
    Duration::from_millis(100)
}

fn default_cluster_timeout() -> Duration {
    Duration::from_millis(500)
}

fn default_cluster_prefix() -> String {
    "spate:".to_owned()
}

/// The Prometheus endpoint (`[metrics]`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsEndpoint {
    /// `ip:port` serving `GET /metrics`; absent: no endpoint. Port 0 picks
    /// a free port (printed as `listening metrics ADDR`).
    pub address: Option<SocketAddr>,
}

/// The HTTP management API (`[api]`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiEndpoint {
    /// `ip:port` it listens on; absent: no API. Port 0 picks a free port
    /// (printed as `listening api ADDR`). Served over TLS when `[tls]` is
    /// configured.
    pub address: Option<SocketAddr>,
    /// A file holding the bearer token every request must carry (at least
    /// 16 characters; surrounding blanks ignored). Required with `address`.
    pub token_file: Option<PathBuf>,
}

/// Logging (`[log]`), on standard error.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Log {
    /// `text` (human-readable lines) or `json` (one JSON object per line).
    pub format: LogFormat,
    /// The least severe level written; `RUST_LOG`, when set, overrides it.
    pub level: LogLevel,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// The least severe level written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    Error,
    Warn,
    #[default]
    Info,
    Debug,
    Trace,
}

impl LogLevel {
    pub fn name(self) -> &'static str {
        match self {
            LogLevel::Error => "error",
            LogLevel::Warn => "warn",
            LogLevel::Info => "info",
            LogLevel::Debug => "debug",
            LogLevel::Trace => "trace",
        }
    }
}

/// Logins: SMTP AUTH on the submission listeners, POP3 (and IMAP later).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Auth {
    /// Accept plaintext passwords without TLS from any client. Off by
    /// default: only TLS and loopback clients may send them (as Dovecot's
    /// `disable_plaintext_auth`).
    pub allow_plaintext: bool,
    /// Loopback clients count as secure for plaintext passwords (as in
    /// Dovecot). Tests turn it off to see what a remote client sees.
    pub trust_loopback: bool,
    /// An authenticated SMTP client must use one of its user's own
    /// addresses as the envelope sender (Postfix's
    /// `reject_sender_login_mismatch`).
    pub sender_must_match_login: bool,
    /// IMAP: a connection that has not logged in is closed after this long
    /// without input (Dovecot's login processes wait 60 s); after login,
    /// RFC 3501's 30 minutes apply. POP3 keeps `[pop3] idle_timeout`
    /// (RFC 1939 3 requires at least 10 minutes) and bounds its lines.
    #[serde(with = "humantime_serde")]
    pub login_timeout: Duration,
}

impl Default for Auth {
    fn default() -> Self {
        Auth {
            allow_plaintext: false,
            trust_loopback: true,
            sender_must_match_login: true,
            login_timeout: Duration::from_secs(60),
        }
    }
}

/// The POP3 server's limits (RFC 1939, RFC 2449).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Pop3 {
    /// The autologout timer; RFC 1939 3 asks for at least 10 minutes.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Bad commands before `-ERR` and the close.
    pub max_errors: usize,
    /// One POP3 session per maildrop at a time (a second one gets
    /// `-ERR [IN-USE]`). Off by default, as Dovecot's `pop3_lock_session`:
    /// a phone and a laptop may poll one account at once; a message one
    /// session removed is `-ERR` for the other, and its DELE+QUIT is fine.
    pub lock_session: bool,
}

impl Default for Pop3 {
    fn default() -> Self {
        Pop3 {
            idle_timeout: Duration::from_secs(600),
            max_errors: 10,
            lock_session: false,
        }
    }
}

/// One listening socket; every core binds each one with SO_REUSEPORT.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listener {
    /// `ip:port`; port 0 picks a free port once, shared by all cores.
    pub address: SocketAddr,
    pub protocol: Protocol,
}

/// What a listener speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Smtp,
    Submission,
    Submissions,
    Imap,
    Imaps,
    Pop3,
    Pop3s,
    /// RFC 2033: final delivery into the mailbox tier from a trusted MTA
    /// (Postfix's `lmtp:`). No AUTH: bind it to loopback.
    Lmtp,
}

impl Protocol {
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Smtp => "smtp",
            Protocol::Submission => "submission",
            Protocol::Submissions => "submissions",
            Protocol::Imap => "imap",
            Protocol::Imaps => "imaps",
            Protocol::Pop3 => "pop3",
            Protocol::Pop3s => "pop3s",
            Protocol::Lmtp => "lmtp",
        }
    }
}

/// Who may relay, and where relayed mail goes.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Relay {
    /// Clients in these networks may send to any domain without AUTH.
    #[serde(default = "default_allow_networks")]
    pub allow_networks: Vec<IpNet>,
    /// Every non-local domain goes here when set (`host:port`).
    pub smarthost: Option<String>,
    /// TLS to the smarthost: `may` (opportunistic, like any next hop) or
    /// `verify` (STARTTLS required, certificate checked against the system
    /// roots plus `smarthost_ca`, for the smarthost's name or address).
    #[serde(default)]
    pub smarthost_tls: SmarthostTls,
    /// Extra CA certificates (PEM) trusted for the smarthost.
    pub smarthost_ca: Option<PathBuf>,
    /// Accept address literals (`user@[192.0.2.1]`) in MAIL and RCPT from
    /// unauthenticated clients outside `allow_networks`. Off: they are
    /// refused (550 5.7.1), so no stranger can name a bounce target that
    /// points at an internal host.
    #[serde(default)]
    pub allow_address_literals: bool,
}

/// How spate protects the connection to its smarthost.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SmarthostTls {
    #[default]
    May,
    Verify,
}

impl Default for Relay {
    fn default() -> Self {
        Relay {
            allow_networks: default_allow_networks(),
            smarthost: None,
            smarthost_tls: SmarthostTls::May,
            smarthost_ca: None,
            allow_address_literals: false,
        }
    }
}

impl Relay {
    /// Whether a client at `ip` may relay without authenticating.
    pub fn allows(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        self.allow_networks.iter().any(|net| net.contains(&ip))
    }
}

/// One `[[route]]`: mail for `domain` (and its subdomains) goes to `to`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteEntry {
    pub domain: String,
    /// `host`, `host:port`, `ip:port` or `[ipv6]:port`.
    pub to: String,
    /// The egress pool (`[egress.pool.NAME]`) mail on this route leaves
    /// from, before any user's, tenant's or the default pool.
    pub pool: Option<String>,
}

/// Where outbound mail leaves from (`[egress]`): named sources (a local
/// address to bind, an EHLO name, a budget), weighted pools of them, and
/// which pool a message takes (by route, authenticated user, tenant
/// header, or the default). Without sources, mail leaves as before: the
/// kernel's choice of address, `hostname` in EHLO.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Egress {
    /// The pool of mail that no route, user or tenant assigns.
    pub default_pool: Option<String>,
    /// A header naming the message's tenant (e.g. `X-Tenant`): read at
    /// receipt from clients that may relay, removed from every message
    /// before it is stored, so it never leaves.
    pub tenant_header: Option<String>,
    #[serde(default, rename = "source")]
    pub sources: Vec<EgressSource>,
    #[serde(default, rename = "pool")]
    pub pools: std::collections::BTreeMap<String, EgressPool>,
    /// Tenants by name (as the header gives it, any case) and their pool.
    #[serde(default, rename = "tenant")]
    pub tenants: std::collections::BTreeMap<String, PoolChoice>,
    /// Users by login name and their pool.
    #[serde(default, rename = "user")]
    pub users: std::collections::BTreeMap<String, PoolChoice>,
}

/// One `[[egress.source]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EgressSource {
    pub name: String,
    /// The local address connections from this source are bound to.
    pub bind: Option<IpAddr>,
    /// The name said in EHLO (default: `hostname`); it should match the
    /// address's reverse DNS.
    pub ehlo: Option<String>,
    /// Messages per period through this source, all sites together.
    pub message_rate: Option<crate::shaping::Rate>,
    /// The first day of the warm-up (UTC), `2025-12-06` or a string.
    pub warmup_start: Option<crate::egress::Day>,
    /// Daily volumes from `warmup_start` on, one step per day
    /// (`["1000/day", "5000/day"]`); warm after the last.
    #[serde(default)]
    pub warmup: Vec<crate::shaping::Rate>,
}

/// One `[egress.pool.NAME]`: its sources with their weights.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EgressPool {
    /// Source name = weight (`{ ip1 = 3, ip2 = 1 }`).
    pub sources: std::collections::BTreeMap<String, u32>,
}

/// `[egress.tenant.NAME]` or `[egress.user.NAME]`: the pool to use.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolChoice {
    pub pool: String,
}

/// DNS for MX resolution.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dns {
    /// Nameservers (`ip:port`); empty means the system's resolv.conf.
    #[serde(default)]
    pub nameservers: Vec<SocketAddr>,
}

/// The domains this host is the final destination for.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Local {
    #[serde(default)]
    pub domains: Vec<String>,
    pub mailbox_dir: Option<PathBuf>,
    /// Users and their password hashes, Dovecot passwd-file style
    /// (`name:{SCHEME}secret[:uid:gid:gecos:home:shell:extra_fields]`);
    /// edited with `spate user add/passwd/del/list`. Absent: no users.
    pub users_file: Option<PathBuf>,
    /// Aliases, `/etc/aliases` syntax (`name: target, target`), targets
    /// being local names or addresses; expanded recursively (at most 10
    /// deep). Absent: no aliases.
    pub aliases_file: Option<PathBuf>,
    /// The user or alias that receives mail for unknown local parts of
    /// the local domains. Absent: unknown recipients are refused at RCPT
    /// time (550 5.1.1).
    pub catch_all: Option<crate::account::UserName>,
    /// Who receives mail for `<Postmaster>` and `postmaster@` each local
    /// domain (RFC 5321 4.5.1) when no alias or user of that name exists:
    /// a user or alias name, or an address. Absent with no such alias or
    /// user: those recipients are refused at RCPT (550 5.1.1), never
    /// accepted and bounced later.
    pub postmaster: Option<String>,
    /// Default mailbox size limit: bytes, or a number with K, M, G or T
    /// (1024-based), e.g. `"1G"`. 0 (the default) is unlimited. A user's
    /// `userdb_quota_rule=*:storage=SIZE` extra field overrides it.
    #[serde(default)]
    pub quota: crate::account::ByteSize,
    /// Threads for the tier's blocking work (Maildir writes with fsync,
    /// password hashing, mailbox reads), shared by every core, so fsyncs
    /// overlap instead of stalling an executor. They take password checks
    /// and local deliveries before mailbox reads, and a quarter as many
    /// more threads (at least one) take only those, so no mailbox read
    /// delays a login or a delivery.
    #[serde(default = "default_io_threads")]
    pub io_threads: usize,
    /// Open POP3 and IMAP connections (TLS or not) from one client
    /// address (an IPv6 client by its /64), counted apart from
    /// `[smtp] max_connections_per_ip`, so idle mail readers cannot use up
    /// a client's SMTP budget, nor SMTP clients its mailbox budget.
    #[serde(default = "default_mailbox_connections_per_ip")]
    pub max_connections_per_ip: usize,
    /// How long one write of a reply to an IMAP or POP3 client may wait
    /// for the client to take bytes; then the connection is closed. It
    /// bounds writes instead of the idle timers (IMAP's 30 minutes), so a
    /// client that asks for a large reply and stops reading is let go
    /// soon. Such a client holds no thread meanwhile, only its connection.
    #[serde(default = "default_write_timeout", with = "humantime_serde")]
    pub write_timeout: Duration,
}

fn default_io_threads() -> usize {
    8
}

fn default_mailbox_connections_per_ip() -> usize {
    50
}

fn default_write_timeout() -> Duration {
    Duration::from_secs(5 * 60)
}

/// What an absent `[local]` means: the same as an empty one.
impl Default for Local {
    fn default() -> Self {
        Local {
            domains: Vec::new(),
            mailbox_dir: None,
            users_file: None,
            aliases_file: None,
            catch_all: None,
            postmaster: None,
            quota: crate::account::ByteSize::default(),
            io_threads: default_io_threads(),
            max_connections_per_ip: default_mailbox_connections_per_ip(),
            write_timeout: default_write_timeout(),
        }
    }
}

/// The certificate for STARTTLS and the implicit-TLS listeners.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tls {
    pub certificate: PathBuf,
    pub private_key: PathBuf,
}

/// Limits and timeouts of the SMTP server. Defaults follow Postfix and
/// RFC 5321 section 4.5.3.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Smtp {
    /// Longest command line, CRLF included.
    pub max_line_length: usize,
    /// Largest message in bytes (advertised with SIZE).
    pub max_message_size: usize,
    pub max_recipients: usize,
    /// Protocol errors after which the session is closed.
    pub max_errors: usize,
    /// Received headers beyond which a message is refused as looping.
    pub max_hops: usize,
    /// A bare CR or LF inside message data: `reject` or `normalize`.
    pub bare_line_endings: BareLineEndings,
    /// Longest line of message content kept as it is, CRLF excluded; a
    /// longer one is folded at receipt (RFC 5321 4.5.3.1.6 allows 998 on
    /// the wire; Postfix's `smtp_line_length_limit`). 0 keeps every line.
    pub body_line_limit: usize,
    /// Time allowed to wait for the next command (RFC 5321 4.5.3.2.7).
    #[serde(with = "humantime_serde")]
    pub command_timeout: Duration,
    /// Time allowed between two blocks of message data (4.5.3.2.6 for the
    /// client side; the server uses it while receiving data).
    #[serde(with = "humantime_serde")]
    pub data_timeout: Duration,
    /// Open connections in total, over all cores: SMTP and the mailbox
    /// protocols together (one budget of file descriptors).
    pub max_connections: usize,
    /// Open SMTP connections from one client address (an IPv6 client by
    /// its /64); the mailbox protocols have `[local]
    /// max_connections_per_ip`.
    pub max_connections_per_ip: usize,
}

impl Default for Smtp {
    fn default() -> Self {
        Smtp {
            max_line_length: 2048,
            max_message_size: 10_240_000,
            max_recipients: 1000,
            max_errors: 20,
            max_hops: 50,
            bare_line_endings: BareLineEndings::Reject,
            body_line_limit: 998,
            command_timeout: Duration::from_secs(300),
            data_timeout: Duration::from_secs(180),
            max_connections: 10_000,
            max_connections_per_ip: 50,
        }
    }
}

/// Outbound delivery: retries, lifetime, connection limits. Defaults
/// follow Postfix (minimal_backoff_time, maximal_backoff_time,
/// maximal_queue_lifetime, default_destination_concurrency_limit).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Delivery {
    /// Delay after the first failed attempt; it doubles with each attempt.
    #[serde(with = "humantime_serde")]
    pub minimal_backoff: Duration,
    /// Ceiling of the retry delay.
    #[serde(with = "humantime_serde")]
    pub maximal_backoff: Duration,
    /// A message still failing temporarily after this long is returned
    /// to its sender.
    #[serde(with = "humantime_serde")]
    pub maximal_queue_lifetime: Duration,
    /// After this long in the queue, a message still being retried gets
    /// its sender one "delayed" DSN (Postfix's `delay_warning_time`);
    /// zero (the default) sends none.
    #[serde(with = "humantime_serde")]
    pub delay_warning_time: Duration,
    /// Outbound connections per core, all destinations together.
    pub max_connections: usize,
    /// Outbound connections per core to one destination.
    pub max_connections_per_destination: usize,
    /// Messages one connection carries before it is closed.
    pub max_messages_per_connection: usize,
    /// Messages waiting per core for a connection to one destination
    /// (Postfix's active queue limit, per site). Past it a message is held
    /// back in the queue, never deferred: no attempt is counted and no
    /// backoff starts; it is handed out as the destination makes room.
    pub max_queued_per_destination: usize,
    /// Shaping rules of the user's (see `shaping::rules`), layered over
    /// the shipped ones; re-read on SIGHUP. Absent: the shipped rules.
    pub shaping_file: Option<PathBuf>,
    /// Time allowed to establish a TCP connection to a next hop.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// The port MX hosts are reached on (25; another only in test labs).
    pub mx_port: u16,
    /// The most of an undeliverable message a bounce (DSN) returns, in
    /// bytes (Postfix's `bounce_size_limit`): the whole message only when
    /// its sender asked with RET=FULL and it fits, otherwise its headers,
    /// cut to this size.
    pub bounce_size_limit: usize,
    /// MTA-STS (RFC 8461): look up each destination domain's policy (TXT
    /// `_mta-sts.<domain>`, then the policy over HTTPS) and enforce it:
    /// `enforce` sends only to listed MX hosts with a verified
    /// certificate, else defers; `testing` only reports. Off by default:
    /// it costs a DNS question per domain and HTTPS fetches.
    pub mta_sts: bool,
    /// DANE (RFC 7672): TLSA records of DNSSEC-signed MX hosts make TLS
    /// mandatory and pin the certificate. Trusts the AD bit of
    /// `[dns] nameservers`, so turn it on only with a validating resolver
    /// on this host (e.g. unbound on 127.0.0.1). Off by default.
    pub dane: bool,
    /// Extra CA certificates (PEM) trusted, besides the system's, for
    /// MTA-STS: the policy host's and the MX hosts' certificates.
    pub mta_sts_ca_file: Option<PathBuf>,
    /// The HTTPS port of `mta-sts.<domain>` (443; another only in test
    /// labs).
    pub mta_sts_port: u16,
    /// Time allowed for each DNS question and HTTPS policy fetch of the
    /// TLS policy lookups.
    #[serde(with = "humantime_serde")]
    pub tls_policy_timeout: Duration,
}

impl Default for Delivery {
    fn default() -> Self {
        Delivery {
            minimal_backoff: Duration::from_secs(300),
            maximal_backoff: Duration::from_secs(4000),
            maximal_queue_lifetime: Duration::from_secs(5 * 24 * 3600),
            delay_warning_time: Duration::ZERO,
            max_connections: 100,
            max_connections_per_destination: 20,
            max_messages_per_connection: 100,
            max_queued_per_destination: 20_000,
            shaping_file: None,
            connect_timeout: Duration::from_secs(30),
            mx_port: 25,
            bounce_size_limit: crate::delivery::dsn::DEFAULT_RETURN_LIMIT,
            mta_sts: false,
            dane: false,
            mta_sts_ca_file: None,
            mta_sts_port: 443,
            tls_policy_timeout: Duration::from_secs(10),
        }
    }
}

/// Spool segment sizing.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SpoolTuning {
    /// A segment file is sealed once it reaches this size.
    pub segment_size: u64,
    /// Disk space is reserved ahead of writes in chunks of this size, so a
    /// full disk is found before any byte of a record is written.
    pub preallocate_chunk: u64,
}

impl Default for SpoolTuning {
    fn default() -> Self {
        SpoolTuning {
            segment_size: 64 << 20,
            preallocate_chunk: 4 << 20,
        }
    }
}

fn default_hostname() -> String {
    "localhost".to_owned()
}

fn default_shutdown_grace() -> Duration {
    Duration::from_secs(10)
}

fn default_allow_networks() -> Vec<IpNet> {
    // Both literals are valid networks; parsing them cannot fail.
    vec![
        "127.0.0.0/8".parse().expect("literal network"),
        "::1/128".parse().expect("literal network"),
    ]
}

impl Config {
    /// Reads and validates a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::parse(&text)
    }

    /// The embedded default configuration.
    pub fn embedded() -> Config {
        // The embedded text is part of the binary and covered by a test.
        Config::parse(EMBEDDED_DEFAULT).expect("embedded default config is valid")
    }

    /// Parses and validates configuration text.
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let mut config: Config = toml::from_str(text)?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&mut self) -> Result<(), ConfigError> {
        let invalid = |msg: String| Err(ConfigError::Invalid(msg));
        if self.hostname.is_empty() || self.hostname.bytes().any(|b| b.is_ascii_whitespace()) {
            return invalid(format!("hostname {:?} is not a host name", self.hostname));
        }
        for domain in &mut self.local.domains {
            *domain = domain.trim_end_matches('.').to_ascii_lowercase();
        }
        if let Some(postmaster) = &self.local.postmaster {
            let valid = match postmaster.rsplit_once('@') {
                Some((local, domain)) => {
                    !local.is_empty()
                        && !domain.is_empty()
                        && postmaster
                            .chars()
                            .all(|c| c.is_ascii_graphic() && !matches!(c, '<' | '>' | ','))
                }
                None => crate::account::UserName::parse(postmaster).is_ok(),
            };
            if !valid {
                return invalid(format!(
                    "local.postmaster {postmaster:?} is not a user name or an address"
                ));
            }
        }
        if self.api.address.is_some() && self.api.token_file.is_none() {
            return invalid(
                "api.address needs api.token_file: the API refuses every request without its token"
                    .into(),
            );
        }
        let s = &self.smtp;
        if s.max_line_length < 512 {
            return invalid(
                "smtp.max_line_length must be at least 512 (RFC 5321 4.5.3.1.4)".into(),
            );
        }
        if s.body_line_limit != 0 && s.body_line_limit < 78 {
            return invalid("smtp.body_line_limit must be 0 (no folding) or at least 78".into());
        }
        if s.max_recipients < 1 || s.max_errors < 1 || s.max_hops < 1 {
            return invalid(
                "smtp.max_recipients, max_errors and max_hops must be at least 1".into(),
            );
        }
        if s.max_connections < 1 || s.max_connections_per_ip < 1 {
            return invalid(
                "smtp.max_connections and max_connections_per_ip must be at least 1".into(),
            );
        }
        if self.local.max_connections_per_ip < 1 {
            return invalid("local.max_connections_per_ip must be at least 1".into());
        }
        if let Some(cluster) = &self.cluster {
            let schemes = ["redis://", "unix://", "redis+unix://"];
            if !schemes.iter().any(|s| cluster.redis.starts_with(s)) {
                return invalid(format!(
                    "cluster.redis {:?}: want redis://host:port or unix:///path",
                    cluster.redis
                ));
            }
            if cluster.hosts < 1 {
                return invalid("cluster.hosts must be at least 1".into());
            }
            if cluster.lease < Duration::from_millis(1) || cluster.lease > Duration::from_secs(10) {
                return invalid("cluster.lease must be between 1ms and 10s".into());
            }
            if cluster.timeout.is_zero() {
                return invalid("cluster.timeout must be more than 0".into());
            }
        }
        if self.local.write_timeout.is_zero() {
            return invalid("local.write_timeout must be more than 0".into());
        }
        if self.spool.segment_size < 1 << 16 || self.spool.preallocate_chunk < 4096 {
            return invalid(
                "spool.segment_size must be >= 64 KiB and preallocate_chunk >= 4 KiB".into(),
            );
        }
        if let Some(smarthost) = &self.relay.smarthost {
            if let Err(e) = smarthost.parse::<HostPort>() {
                return invalid(format!("relay.smarthost: {e}"));
            }
        }
        for route in &mut self.routes {
            route.domain = route.domain.trim_end_matches('.').to_ascii_lowercase();
            if route.domain.is_empty() {
                return invalid("a [[route]] needs a domain".into());
            }
            if let Err(e) = route.to.parse::<HostPort>() {
                return invalid(format!("[[route]] for {}: {e}", route.domain));
            }
        }
        if let Err(e) = crate::egress::EgressPlan::build(self) {
            return invalid(e.to_string());
        }
        self.validate_dkim()?;
        self.validate_events()?;
        let d = &self.delivery;
        if d.minimal_backoff.is_zero()
            || d.maximal_backoff < d.minimal_backoff
            || d.maximal_queue_lifetime.is_zero()
        {
            return invalid("delivery: need 0 < minimal_backoff <= maximal_backoff and a maximal_queue_lifetime".into());
        }
        if d.max_connections < 1
            || d.max_connections_per_destination < 1
            || d.max_messages_per_connection < 1
            || d.max_queued_per_destination < 1
            || d.mx_port == 0
        {
            return invalid("delivery: connection limits and mx_port must be at least 1".into());
        }
        if self.listeners.is_empty() {
            return invalid("at least one [[listener]] is needed".into());
        }
        // Port 0 picks a new port per listener; any other address is
        // served by one listener only (the cores share it with
        // SO_REUSEPORT, which would mix two protocols on one port).
        for (i, l) in self.listeners.iter().enumerate() {
            let again = self.listeners[i + 1..]
                .iter()
                .any(|other| other.address == l.address);
            if l.address.port() != 0 && again {
                return invalid(format!(
                    "[[listener]] address {} appears twice: one listener per address",
                    l.address
                ));
            }
        }
        Ok(())
    }

    /// `[events]`: bounds, batch sizes, waits, and header fields that
    /// cannot break a request.
    fn validate_events(&self) -> Result<(), ConfigError> {
        let invalid = |msg: String| Err(ConfigError::Invalid(msg));
        let events = &self.events;
        if events.max_queue_bytes < 1 << 16 {
            return invalid("events.max_queue_bytes must be at least 64 KiB".into());
        }
        if events.memory_queue < 1 {
            return invalid("events.memory_queue must be at least 1".into());
        }
        if events.received_sync_wait > Duration::from_secs(10) {
            return invalid("events.received_sync_wait must be at most 10s".into());
        }
        let mut names = std::collections::BTreeSet::new();
        for hook in &events.webhooks {
            let name = hook.name();
            if !names.insert(name) {
                return invalid(format!(
                    "[[events.webhook]] {name:?} appears twice: give each a distinct name"
                ));
            }
            if name.is_empty() || name.chars().any(char::is_control) {
                return invalid(format!(
                    "[[events.webhook]] name {name:?} is empty or has control characters"
                ));
            }
            if !(1..=10_000).contains(&hook.batch_size) {
                return invalid(format!(
                    "[[events.webhook]] {name}: batch_size must be 1 to 10000"
                ));
            }
            if hook.timeout.is_zero()
                || hook.min_backoff.is_zero()
                || hook.max_backoff < hook.min_backoff
            {
                return invalid(format!(
                    "[[events.webhook]] {name}: need timeout > 0 and 0 < min_backoff <= max_backoff"
                ));
            }
            let reserved = [
                "host",
                "content-length",
                "content-type",
                "transfer-encoding",
                "connection",
            ];
            for (field, value) in &hook.headers {
                if !valid_field_name(field)
                    || reserved.contains(&field.to_ascii_lowercase().as_str())
                {
                    return invalid(format!(
                        "[[events.webhook]] {name}: header {field:?} is not a field name spate lets you set"
                    ));
                }
                if value.0.chars().any(char::is_control) {
                    return invalid(format!(
                        "[[events.webhook]] {name}: header {field} has control characters"
                    ));
                }
            }
            if hook
                .bearer_token
                .as_ref()
                .is_some_and(|t| t.0.chars().any(char::is_control))
            {
                return invalid(format!(
                    "[[events.webhook]] {name}: bearer_token has control characters"
                ));
            }
        }
        Ok(())
    }

    /// `[dkim]`: domains made lower-case A-labels, selectors and field
    /// names checked, From among the signed fields.
    fn validate_dkim(&mut self) -> Result<(), ConfigError> {
        let invalid = |msg: String| Err(ConfigError::Invalid(msg));
        let dkim = &mut self.dkim;
        if !dkim.headers.iter().any(|h| h.eq_ignore_ascii_case("From")) {
            return invalid("dkim.headers must name From (RFC 6376 5.4)".into());
        }
        for name in dkim.headers.iter().chain(&dkim.over_sign) {
            if !valid_field_name(name) {
                return invalid(format!("dkim: {name:?} is not a header field name"));
            }
        }
        let mut domains = std::collections::BTreeMap::new();
        for (name, entry) in std::mem::take(&mut dkim.domain) {
            let trimmed = name.trim_end_matches('.');
            let domain = match idna::domain_to_ascii(trimmed) {
                Ok(d) if !d.is_empty() && d.contains('.') => d,
                _ => return invalid(format!("[dkim.domain.{name:?}]: not a domain name")),
            };
            if !valid_selector(&entry.selector) {
                return invalid(format!(
                    "[dkim.domain.{name:?}] selector {:?}: letters, digits, hyphens and dots only (RFC 6376 3.1)",
                    entry.selector
                ));
            }
            if domains.insert(domain.clone(), entry).is_some() {
                return invalid(format!("[dkim.domain] {domain} appears twice"));
            }
        }
        dkim.domain = domains;
        Ok(())
    }

    /// The routing table for delivery (validated when parsed).
    pub fn router(&self) -> Router {
        let parse = |text: &str| text.parse::<HostPort>().ok();
        let routes = self
            .routes
            .iter()
            .filter_map(|r| Some((r.domain.clone(), parse(&r.to)?)))
            .collect();
        let smarthost = self.relay.smarthost.as_deref().and_then(parse);
        let pools = self
            .routes
            .iter()
            .filter_map(|r| Some((r.domain.clone(), r.pool.clone()?)))
            .collect();
        Router::new(self.local.domains.clone(), routes, smarthost).with_pools(pools)
    }

    /// The number of executors to run: `cores`, or one per available CPU.
    pub fn executor_count(&self) -> usize {
        if self.cores > 0 {
            return self.cores;
        }
        std::thread::available_parallelism().map_or(1, |n| n.get())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_and_log_sections_parse_and_refuse_unknowns() {
        let base = "spool_dir = \"/tmp/s\"\n[[listener]]\naddress = \"127.0.0.1:25\"\nprotocol = \"smtp\"\n";
        let c = Config::parse(base).unwrap();
        assert_eq!(c.metrics.address, None);
        assert_eq!(c.log.format, LogFormat::Text);
        assert_eq!(c.log.level, LogLevel::Info);
        let c = Config::parse(&format!(
            "{base}[metrics]\naddress = \"127.0.0.1:9425\"\n[log]\nformat = \"json\"\nlevel = \"debug\"\n"
        ))
        .unwrap();
        assert_eq!(c.metrics.address, Some("127.0.0.1:9425".parse().unwrap()));
        assert_eq!(c.log.format, LogFormat::Json);
        assert_eq!(c.log.level, LogLevel::Debug);
        for bad in [
            "[metrics]\naddress = \"nowhere\"\n",
            "[metrics]\nport = 1\n",
            "[log]\nformat = \"xml\"\n",
            "[log]\nlevel = \"loud\"\n",
        ] {
            assert!(Config::parse(&format!("{base}{bad}")).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_events_section_is_optional_and_checked() {
        let base = "spool_dir = \"/tmp/s\"\n[[listener]]\naddress = \"127.0.0.1:25\"\nprotocol = \"smtp\"\n";
        assert!(Config::parse(base).unwrap().events.webhooks.is_empty());
        let c = Config::parse(&format!(
            "{base}[events]\nmax_queue_bytes = 1048576\n[[events.webhook]]\nurl = \"http://127.0.0.1:8080/hook\"\nbatch_wait = \"50ms\"\nbearer_token = \"t\"\nheaders = {{ X-Key = \"k\" }}\n"
        ))
        .unwrap();
        let hook = &c.events.webhooks[0];
        assert_eq!(hook.name(), "http://127.0.0.1:8080/hook");
        assert_eq!(hook.url.authority, "127.0.0.1:8080");
        assert_eq!(hook.batch_size, 100);
        assert_eq!(hook.batch_wait, Duration::from_millis(50));
        assert_eq!(c.events.max_queue_bytes, 1 << 20);
        let shown = format!("{c:?}");
        assert!(!shown.contains("Secret(\"t\")") && shown.contains("<secret, crc32c"));
        for bad in [
            "[[events.webhook]]\nurl = \"https://a.example/\"\n",
            "[[events.webhook]]\nurl = \"http://a b/\"\n",
            "[[events.webhook]]\nurl = \"http://a:0/\"\n",
            "[[events.webhook]]\nurl = \"http://a/\"\nbatch_size = 0\n",
            "[[events.webhook]]\nurl = \"http://a/\"\nmin_backoff = \"2s\"\nmax_backoff = \"1s\"\n",
            "[[events.webhook]]\nurl = \"http://a/\"\nheaders = { Content-Length = \"1\" }\n",
            "[[events.webhook]]\nurl = \"http://a/\"\n[[events.webhook]]\nurl = \"http://a/\"\n",
            "[events]\nmax_queue_bytes = 1000\n",
            "[[events.webhook]]\nurl = \"http://a/\"\nretries = 3\n",
        ] {
            assert!(Config::parse(&format!("{base}{bad}")).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_cluster_section_is_optional_and_checked() {
        let base = "spool_dir = \"/tmp/s\"\n[[listener]]\naddress = \"127.0.0.1:25\"\nprotocol = \"smtp\"\n";
        assert_eq!(Config::parse(base).unwrap().cluster, None, "no cluster");
        let c = Config::parse(&format!(
            "{base}[cluster]\nredis = \"redis://10.0.0.9:6379\"\nhosts = 3\n"
        ))
        .unwrap();
        let cluster = c.cluster.expect("a cluster");
        assert_eq!(cluster.hosts, 3);
        assert_eq!(cluster.lease, Duration::from_millis(100));
        assert_eq!(cluster.timeout, Duration::from_millis(500));
        assert_eq!(cluster.key_prefix, "spate:");
        assert_eq!(cluster.name, None);
        for bad in [
            "[cluster]\nhosts = 2\n",
            "[cluster]\nredis = \"http://10.0.0.9\"\n",
            "[cluster]\nredis = \"redis://h\"\nhosts = 0\n",
            "[cluster]\nredis = \"redis://h\"\nlease = \"1h\"\n",
            "[cluster]\nredis = \"redis://h\"\nport = 1\n",
        ] {
            assert!(Config::parse(&format!("{base}{bad}")).is_err(), "{bad}");
        }
    }

    #[test]
    fn embedded_default_parses_and_listens_on_loopback() {
        let config = Config::embedded();
        let protocols: Vec<&str> = config.listeners.iter().map(|l| l.protocol.name()).collect();
        assert_eq!(protocols, ["smtp", "imap", "pop3"], "the mailbox tier too");
        for l in &config.listeners {
            assert!(l.address.ip().is_loopback(), "{:?}", l.address);
        }
        assert!(config.spool_dir.is_relative());
    }

    #[test]
    fn an_lmtp_listener_is_configured_by_protocol_only() {
        let text = "spool_dir = \"/tmp/s\"\n[[listener]]\naddress = \"127.0.0.1:2424\"\nprotocol = \"lmtp\"\n";
        let c = Config::parse(text).expect("lmtp listener");
        assert_eq!(c.listeners[0].protocol, Protocol::Lmtp);
        assert_eq!(c.listeners[0].protocol.name(), "lmtp");
        let bad = text.replace("\"lmtp\"", "\"LMTP2\"");
        assert!(Config::parse(&bad).is_err());
    }

    #[test]
    fn a_listener_address_is_served_once() {
        let listener = |port: u16| {
            format!("[[listener]]\naddress = \"127.0.0.1:{port}\"\nprotocol = \"smtp\"\n")
        };
        let twice = format!("spool_dir = \"/tmp/s\"\n{}{}", listener(25), listener(25));
        let error = Config::parse(&twice).unwrap_err().to_string();
        assert!(error.contains("127.0.0.1:25 appears twice"), "{error}");
        let port_zero = format!("spool_dir = \"/tmp/s\"\n{}{}", listener(0), listener(0));
        Config::parse(&port_zero).expect("port 0 picks a port per listener");
    }

    #[test]
    fn unknown_keys_are_refused() {
        let text = format!("{EMBEDDED_DEFAULT}\nbogus = 1\n");
        assert!(matches!(Config::parse(&text), Err(ConfigError::Parse(_))));
        let text = EMBEDDED_DEFAULT.replace("[smtp]", "[smtp]\nmax_lines = 3");
        assert!(Config::parse(&text).is_err());
    }

    #[test]
    fn design_keys_parse() {
        let text = r#"
hostname = "relay.example"
spool_dir = "/var/spool/spate"
[[listener]]
address = "0.0.0.0:25"
protocol = "smtp"
[[listener]]
address = "[::]:993"
protocol = "imaps"
[relay]
allow_networks = ["127.0.0.0/8", "::1/128", "10.1.0.0/16"]
smarthost = "10.0.0.5:25"
[dns]
nameservers = ["127.0.0.1:53"]
[local]
domains = ["Example.TEST."]
mailbox_dir = "/var/mail/spate"
users_file = "/etc/spate/users"
[[route]]
domain = "Partner.Example"
to = "10.9.9.9:2525"
[tls]
certificate = "/etc/spate/cert.pem"
private_key = "/etc/spate/key.pem"
[smtp]
command_timeout = "2m"
bare_line_endings = "normalize"
"#;
        let c = Config::parse(text).unwrap();
        assert_eq!(c.local.domains, vec!["example.test"]);
        assert_eq!(c.smtp.command_timeout, Duration::from_secs(120));
        assert_eq!(c.smtp.bare_line_endings, BareLineEndings::Normalize);
        assert_eq!(c.listeners[1].protocol, Protocol::Imaps);
        assert!(c.relay.allows("10.1.2.3".parse().unwrap()));
        assert!(c.relay.allows("::ffff:127.0.0.1".parse().unwrap()));
        assert!(!c.relay.allows("192.0.2.1".parse().unwrap()));
        use crate::delivery::router::{NextHop, Route};
        let router = c.router();
        assert_eq!(router.route("a@example.test"), Route::Local);
        assert_eq!(
            router.route("a@partner.example"),
            Route::Relay(NextHop::Fixed("10.9.9.9:2525".parse().unwrap()))
        );
        assert_eq!(
            router.route("a@elsewhere.example"),
            Route::Relay(NextHop::Fixed("10.0.0.5:25".parse().unwrap()))
        );
    }

    #[test]
    fn bad_next_hops_are_refused() {
        let text =
            format!("{EMBEDDED_DEFAULT}\n[[route]]\ndomain = \"a.example\"\nto = \"host:0\"\n");
        assert!(matches!(Config::parse(&text), Err(ConfigError::Invalid(_))));
        let text = EMBEDDED_DEFAULT.replace("[relay]", "[relay]\nsmarthost = \"a b\"");
        assert!(matches!(Config::parse(&text), Err(ConfigError::Invalid(_))));
    }

    #[test]
    fn connection_limits_per_address_parse_per_family() {
        let c = Config::embedded();
        assert_eq!(c.smtp.max_connections_per_ip, 50);
        assert_eq!(c.local.max_connections_per_ip, 50);
        let c = Config::parse(
            &EMBEDDED_DEFAULT.replace("[local]", "[local]\nmax_connections_per_ip = 7"),
        )
        .unwrap();
        assert_eq!(c.local.max_connections_per_ip, 7);
        assert_eq!(c.smtp.max_connections_per_ip, 50);
        // An absent [local] has the default too.
        let c = Config::parse(
            "spool_dir = \"s\"\n[[listener]]\naddress = \"127.0.0.1:25\"\nprotocol = \"smtp\"\n",
        )
        .unwrap();
        assert_eq!(c.local.max_connections_per_ip, 50);
        let zero = EMBEDDED_DEFAULT.replace("[local]", "[local]\nmax_connections_per_ip = 0");
        assert!(Config::parse(&zero).is_err());
    }

    #[test]
    fn write_timeout_parses_with_a_default() {
        assert_eq!(
            Config::embedded().local.write_timeout,
            Duration::from_secs(300)
        );
        let absent =
            "spool_dir = \"s\"\n[[listener]]\naddress = \"127.0.0.1:25\"\nprotocol = \"smtp\"\n";
        assert_eq!(
            Config::parse(absent).unwrap().local.write_timeout,
            Duration::from_secs(300)
        );
        let c =
            Config::parse(&EMBEDDED_DEFAULT.replace("[local]", "[local]\nwrite_timeout = \"90s\""))
                .unwrap();
        assert_eq!(c.local.write_timeout, Duration::from_secs(90));
        for bad in [
            "write_timeout = \"0s\"",
            "write_timeout = \"soon\"",
            "write_timeout = 5",
        ] {
            let text = EMBEDDED_DEFAULT.replace("[local]", &format!("[local]\n{bad}"));
            assert!(Config::parse(&text).is_err(), "{bad}");
        }
    }

    #[test]
    fn account_keys_parse_and_bad_values_are_refused() {
        let text = EMBEDDED_DEFAULT.replace(
            "[local]",
            "[local]\naliases_file = \"/etc/spate/aliases\"\ncatch_all = \"Root\"\nquota = \"1G\"",
        );
        let c = Config::parse(&text).unwrap();
        assert_eq!(c.local.catch_all.unwrap().as_str(), "root");
        assert_eq!(c.local.quota, crate::account::ByteSize(1 << 30));
        let c =
            Config::parse(&EMBEDDED_DEFAULT.replace("[local]", "[local]\nquota = 5000")).unwrap();
        assert_eq!(c.local.quota.limit(), Some(5000));
        assert_eq!(Config::embedded().local.quota.limit(), None);
        let c = Config::parse(
            &EMBEDDED_DEFAULT.replace("[local]", "[local]\npostmaster = \"noc@remote.example\""),
        )
        .unwrap();
        assert_eq!(c.local.postmaster.as_deref(), Some("noc@remote.example"));
        for bad in [
            "catch_all = \"../x\"",
            "quota = \"1X\"",
            "quota = -1",
            "postmaster = \"a b@c\"",
            "postmaster = \"@c\"",
            "postmaster = \"../x\"",
        ] {
            let text = EMBEDDED_DEFAULT.replace("[local]", &format!("[local]\n{bad}"));
            assert!(Config::parse(&text).is_err(), "{bad}");
        }
    }

    #[test]
    fn bad_limits_are_refused() {
        let text = EMBEDDED_DEFAULT.replace("[smtp]", "[smtp]\nmax_line_length = 100");
        assert!(matches!(Config::parse(&text), Err(ConfigError::Invalid(_))));
    }

    #[test]
    fn dkim_defaults_and_domains_parse() {
        let c = Config::embedded();
        assert!(c.dkim.domain.is_empty());
        assert_eq!(c.dkim.headers.len(), crate::dkim::DEFAULT_HEADERS.len());
        assert_eq!(c.dkim.over_sign, vec!["From".to_owned()]);
        assert_eq!(c.dkim.canonicalization.to_string(), "relaxed/relaxed");
        let text = format!(
            "{EMBEDDED_DEFAULT}\n[dkim]\nheaders = [\"From\", \"Subject\"]\nover_sign = []\n\
             canonicalization = \"simple/relaxed\"\n\
             [dkim.domain.\"Example.COM.\"]\nselector = \"s2026\"\nprivate_key = \"/k.pem\"\n\
             [dkim.domain.\"b\u{fc}cher.example\"]\nselector = \"ed.v2\"\nprivate_key = \"k2.pem\"\n"
        );
        let c = Config::parse(&text).unwrap();
        assert_eq!(c.dkim.headers, ["From", "Subject"]);
        assert!(c.dkim.over_sign.is_empty());
        assert_eq!(c.dkim.canonicalization.to_string(), "simple/relaxed");
        let domains: Vec<&str> = c.dkim.domain.keys().map(String::as_str).collect();
        assert_eq!(domains, ["example.com", "xn--bcher-kva.example"]);
        assert_eq!(c.dkim.domain["example.com"].selector, "s2026");
        assert_eq!(
            c.dkim.domain["example.com"].private_key,
            Path::new("/k.pem")
        );
    }

    #[test]
    fn bad_dkim_settings_are_refused() {
        let domain = "[dkim.domain.\"example.com\"]\nselector = \"s\"\nprivate_key = \"/k.pem\"\n";
        for bad in [
            "[dkim]\nheaders = [\"Subject\"]\n".to_owned(),
            "[dkim]\nheaders = [\"From\", \"Bad:Name\"]\n".to_owned(),
            "[dkim]\ncanonicalization = \"nowsp\"\n".to_owned(),
            "[dkim]\nunknown = 1\n".to_owned(),
            domain.replace("selector = \"s\"", "selector = \"bad_selector\""),
            domain.replace("selector = \"s\"", "selector = \"\""),
            domain.replace("example.com", "localhost"),
            domain.replace("private_key = \"/k.pem\"\n", ""),
            format!("{domain}extra = true\n"),
            format!(
                "{domain}[dkim.domain.\"EXAMPLE.com\"]\nselector = \"t\"\nprivate_key = \"/k\"\n"
            ),
        ] {
            let text = format!("{EMBEDDED_DEFAULT}\n{bad}");
            assert!(Config::parse(&text).is_err(), "{bad}");
        }
    }
}
