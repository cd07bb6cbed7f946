//! Batched MX resolution: which hosts, at which addresses and in which
//! order, mail for a domain goes to (RFC 5321 section 5.1, RFC 7505). It
//! refuses to connect to those hosts (that is delivery's job) and to run
//! DNS on the caller's executor: hickory-resolver needs tokio, so every
//! lookup goes through one resolver thread.
//!
//! | file | job |
//! |---|---|
//! | `rules.rs` | RFC 5321 5.1 and RFC 7505 as pure functions |
//! | `cache.rs` | bounded TTL cache, positive and negative answers |
//! | `batch.rs` | sans-IO merging of lookups across requests, assembly of answers |
//! | `dns.rs` | hickory-resolver queries turned into plain answers |
//! | `thread.rs` | the resolver thread and the handles the cores hold |
//! | `fake.rs` | an in-memory resolver for tests of later layers |
//!
//! The rest of spate sees only [`MxResolver`], [`Resolution`] and
//! [`MxHost`]: the real [`ResolverHandle`] and the [`FakeResolver`] are
//! interchangeable.

mod batch;
mod cache;
mod dns;
mod fake;
mod rules;
mod thread;

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

pub use cache::CacheConfig;
pub use fake::FakeResolver;
pub use rules::{normalize, Rng};
pub use thread::{DnsResolver, ResolverHandle};

/// One host to try for a domain, with every address DNS gave for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MxHost {
    /// The exchange name, normalized (lower case, no trailing dot); for an
    /// implicit MX, the domain itself. Delivery needs it for TLS name checks
    /// and log lines, not only the addresses.
    pub name: String,
    /// The MX preference (0 for an implicit MX); kept so delivery can tell
    /// "next host of the same rank" from "a backup MX".
    pub preference: u16,
    /// A addresses, then AAAA; never empty.
    pub addresses: Vec<IpAddr>,
}

/// What mail for a domain should do next. The failures carry their class:
/// [`Resolution::is_transient`] means "retry later", anything else that is
/// not `Hosts` bounces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolution {
    /// The hosts in the order to try them: by preference, equal preferences
    /// in an order drawn at random for each answer (RFC 5321 5.1).
    Hosts(Vec<MxHost>),
    /// RFC 7505 null MX: the domain accepts no mail. Permanent.
    NullMx,
    /// NXDOMAIN: the domain does not exist. Permanent.
    NoSuchDomain,
    /// Nothing usable: every MX was cut by the own-hostname rule (we are
    /// the best MX and would loop), or no MX host (or implicit MX) has an
    /// address. RFC 5321 5.1: "this situation MUST be reported as an error"
    /// and "the message MUST be returned as undeliverable". Permanent.
    NoMailHosts,
    /// SERVFAIL, REFUSED, timeout, network error, or a host whose address
    /// lookup failed so nothing usable is left. Transient.
    TempFail(String),
}

impl Resolution {
    /// A failure that may go away: keep the message and retry.
    pub fn is_transient(&self) -> bool {
        matches!(self, Resolution::TempFail(_))
    }

    /// A failure that will not go away: bounce.
    pub fn is_permanent(&self) -> bool {
        matches!(
            self,
            Resolution::NullMx | Resolution::NoSuchDomain | Resolution::NoMailHosts
        )
    }

    /// The hosts, or why there are none as a typed error; lets delivery
    /// write `resolution.into_hosts()?`.
    pub fn into_hosts(self) -> Result<Vec<MxHost>, ResolveError> {
        match self {
            Resolution::Hosts(h) => Ok(h),
            Resolution::NullMx => Err(ResolveError::NullMx),
            Resolution::NoSuchDomain => Err(ResolveError::NoSuchDomain),
            Resolution::NoMailHosts => Err(ResolveError::NoMailHosts),
            Resolution::TempFail(why) => Err(ResolveError::TempFail(why)),
        }
    }
}

/// Why a domain has no host to deliver to; the error form of the failing
/// [`Resolution`]s, with the DSN status (RFC 3463) a bounce or a deferral
/// should carry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    #[error("the domain accepts no mail (null MX, RFC 7505)")]
    NullMx,
    #[error("the domain does not exist (NXDOMAIN)")]
    NoSuchDomain,
    #[error("no usable mail host for the domain")]
    NoMailHosts,
    #[error("DNS lookup failed temporarily: {0}")]
    TempFail(String),
}

impl ResolveError {
    pub fn is_transient(&self) -> bool {
        matches!(self, ResolveError::TempFail(_))
    }

    /// The enhanced status code: 5.1.10 is RFC 7505's own, 5.1.2 "bad
    /// destination system address", 5.4.4 "unable to route", 4.4.3
    /// "directory server failure".
    pub fn status(&self) -> &'static str {
        match self {
            ResolveError::NullMx => "5.1.10",
            ResolveError::NoSuchDomain => "5.1.2",
            ResolveError::NoMailHosts => "5.4.4",
            ResolveError::TempFail(_) => "4.4.3",
        }
    }
}

/// Why the resolver thread could not start. Both are permanent for the
/// process: the configuration or the machine must change.
#[derive(Debug, thiserror::Error)]
pub enum ResolverError {
    /// `dns.nameservers` is empty and the system configuration
    /// (/etc/resolv.conf) cannot be read or names no server.
    #[error("cannot use the system DNS configuration: {0}")]
    SystemConfig(String),
    /// The thread or its tokio runtime could not be created.
    #[error("cannot start the resolver thread: {0}")]
    Start(#[source] std::io::Error),
}

impl ResolverError {
    /// Always false: nothing here is fixed by waiting.
    pub fn is_transient(&self) -> bool {
        false
    }
}

/// The resolver as the rest of spate uses it. Runtime-agnostic: the future
/// needs no tokio and can be awaited on a glommio executor.
///
/// Batch first because the cores work in batches (a queue run resolves all
/// its destinations at once); [`MxResolver::resolve`] is the one-domain
/// convenience on top. The futures borrow the resolver; a task that must
/// be `'static` clones its [`ResolverHandle`] (cheap) and moves it in.
pub trait MxResolver {
    /// Resolves every domain; the answer has one entry per input, in input
    /// order, each with the domain as the caller spelled it. Duplicates are
    /// allowed and cost nothing extra. Never fails as a whole: a broken
    /// resolver answers [`Resolution::TempFail`] for every domain.
    fn resolve_batch(
        &self,
        domains: Vec<String>,
    ) -> impl Future<Output = Vec<(String, Resolution)>>;

    /// Resolves one domain.
    fn resolve(&self, domain: String) -> impl Future<Output = Resolution> {
        let batch = self.resolve_batch(vec![domain]);
        async move {
            batch
                .await
                .pop()
                .map(|(_, r)| r)
                .unwrap_or_else(|| Resolution::TempFail("resolver gave no answer".into()))
        }
    }
}

/// How the resolver thread finds and treats DNS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolverConfig {
    /// Servers (`ip:port`) to ask over UDP, falling back to TCP. Empty: the
    /// system's /etc/resolv.conf.
    pub nameservers: Vec<SocketAddr>,
    /// Our own host name: an MX list naming it is cut there (RFC 5321 5.1).
    pub own_hostname: String,
    /// Time to wait for one answer before retrying.
    pub timeout: Duration,
    /// Tries per query (per server).
    pub attempts: usize,
    /// Domains and hosts resolved at the same time; the rest wait their
    /// turn, so a burst of new domains cannot open thousands of sockets.
    pub max_in_flight: usize,
    /// Requests that may wait for the resolver thread before senders wait.
    pub queue_depth: usize,
    /// TTL bounds and size; the capacity applies to the domain cache and,
    /// separately, to the cache of exchange addresses.
    pub cache: CacheConfig,
    /// Seed for the equal-preference shuffle; `None` draws one at start.
    pub seed: Option<u64>,
}

impl ResolverConfig {
    /// Defaults with the given own host name and the system's DNS.
    pub fn new(own_hostname: &str) -> Self {
        ResolverConfig {
            nameservers: Vec::new(),
            own_hostname: own_hostname.to_owned(),
            timeout: Duration::from_secs(3),
            attempts: 2,
            max_in_flight: 256,
            queue_depth: 4096,
            cache: CacheConfig::default(),
            seed: None,
        }
    }

    /// The resolver part of the configuration file: `hostname` and
    /// `dns.nameservers`.
    pub fn from_config(config: &crate::config::Config) -> Self {
        ResolverConfig {
            nameservers: config.dns.nameservers.clone(),
            ..ResolverConfig::new(&config.hostname)
        }
    }
}

/// Counters of the resolver thread, readable through any handle. `queries`
/// counts DNS queries sent (each MX query, and the A and AAAA query of each
/// host lookup); the rest shows why there were not more.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ResolverStats {
    /// Requests (batches) received.
    pub requests: u64,
    /// Domains asked for, duplicates included.
    pub domains: u64,
    /// Domains answered from the cache.
    pub cache_hits: u64,
    /// Domains that joined a lookup already in flight for another caller.
    pub merged: u64,
    /// DNS queries sent: `mx_queries + address_queries`.
    pub queries: u64,
    pub mx_queries: u64,
    /// A plus AAAA queries.
    pub address_queries: u64,
    /// Exchanges whose addresses came from the cache.
    pub host_cache_hits: u64,
    /// Exchanges whose lookup was already in flight for another domain.
    pub host_merged: u64,
    /// Domains in the cache now.
    pub cached_domains: u64,
    /// Hosts in the cache now.
    pub cached_hosts: u64,
    /// Domains being resolved now.
    pub in_flight: u64,
}
