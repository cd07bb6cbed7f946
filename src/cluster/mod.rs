//! Beyond one host (`[cluster]`): relay hosts keep their own spools and
//! queues and share their limits through Redis. Per-site rates hold
//! across every host through a cell-rate limiter in Redis whose tokens
//! each core leases in batches, so no message waits for Redis; each
//! host's part of a site's connections is its share of the limit among
//! the hosts alive; suspensions are published to every host. When Redis
//! cannot be reached each host falls back to its own share and says so.
//! This file maps the modules and starts the threads; it holds no logic.
//!
//! - `lease`: one core's lease on one shared rate (sans-IO)
//! - `health`: up, down, the fallback share (sans-IO)
//! - `budget`: the `SharedBudget` a core's ready queues consult, and the
//!   core's task taking the answers in
//! - `gcra`: the Lua scripts run in Redis (GCRA, heartbeat)
//! - `client`: the client thread (leases, heartbeats, publishing)
//! - `subscriber`: the thread applying other hosts' suspensions
//! - `notice`: the suspension notices' format

mod budget;
mod client;
pub mod gcra;
mod health;
mod lease;
mod notice;
mod subscriber;

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

pub use budget::CoreLink;
pub use health::{Health, Transition};
pub use lease::{batch_for, Lease, Mode};

use crate::config::ClusterConfig;
use crate::delivery::suspensions::{Change, Suspensions};
use crate::queue::{DestinationKey, RateKind};
use crate::shaping::Rate;

/// Why the cluster cannot start.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("[cluster] redis: {0}")]
    Url(#[source] redis::RedisError),
    #[error("cannot start a cluster thread: {0}")]
    Thread(#[source] std::io::Error),
}

/// A core's ask of the client thread.
#[derive(Debug, Clone)]
pub(crate) enum Request {
    Lease {
        core: usize,
        site: DestinationKey,
        kind: RateKind,
        rate: Rate,
        want: u32,
    },
}

/// What the cluster threads tell a core.
#[derive(Debug, Clone)]
pub(crate) enum CoreEvent {
    Granted {
        site: DestinationKey,
        kind: RateKind,
        grant: gcra::Grant,
    },
    Refused {
        site: DestinationKey,
        kind: RateKind,
    },
    /// Look again (a suspension came in, the limiter was lost or found).
    Wake,
}

/// What the client thread shares with the cores and the scraper.
#[derive(Debug, Default)]
pub(crate) struct ClusterState {
    /// Redis answers: leases are shared; otherwise every core falls back.
    up: AtomicBool,
    /// The hosts limits are divided by (see `health`).
    hosts: AtomicUsize,
    fallbacks: AtomicU64,
    /// Round trips to Redis (each a pipeline of one or more calls).
    round_trips: AtomicU64,
    /// Lease requests answered from Redis, and the tokens they granted.
    leases: AtomicU64,
    tokens: AtomicU64,
}

/// The cluster's figures for the metrics endpoint.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClusterFigures {
    pub up: bool,
    pub hosts: u64,
    pub fallbacks: u64,
    pub round_trips: u64,
    pub leases: u64,
    pub tokens: u64,
}

/// How the cluster runs, from `[cluster]`.
#[derive(Debug, Clone)]
pub struct Settings {
    pub redis: String,
    /// This instance in Redis: the name and a nonce, unique per start.
    pub id: String,
    pub hosts: usize,
    pub lease: Duration,
    pub timeout: Duration,
    pub prefix: String,
}

impl Settings {
    pub fn from_config(config: &ClusterConfig, hostname: &str) -> Settings {
        let name = config
            .name
            .clone()
            .unwrap_or_else(|| format!("{hostname}/{}", std::process::id()));
        Settings {
            redis: config.redis.clone(),
            id: format!("{name}#{:016x}", nonce()),
            hosts: config.hosts,
            lease: config.lease,
            timeout: config.timeout,
            prefix: config.key_prefix.clone(),
        }
    }

    fn rate_key(&self, site: &DestinationKey, kind: RateKind) -> String {
        let kind = match kind {
            RateKind::Messages => "messages",
            RateKind::Connections => "connections",
        };
        format!("{}rate:{kind}:{site}", self.prefix)
    }

    fn hosts_key(&self) -> String {
        format!("{}hosts", self.prefix)
    }

    fn suspension_key(&self, site: &str) -> String {
        format!("{}suspended:{site}", self.prefix)
    }

    fn suspension_channel(&self) -> String {
        format!("{}suspensions", self.prefix)
    }
}

/// A number unlikely to repeat across starts and hosts (no randomness
/// crate: the standard library's hasher is seeded randomly per process).
fn nonce() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    h.finish()
}

/// The running cluster threads of this process.
#[derive(Debug)]
pub struct Cluster {
    state: Arc<ClusterState>,
    links: Vec<CoreLink>,
}

impl Cluster {
    /// Starts the client and subscriber threads for `cores` cores. The
    /// table's own changes must be fed through `feed` (see
    /// [`Suspensions::with_feed`]); peers' are applied to it.
    pub fn start(
        settings: Settings,
        cores: usize,
        suspensions: Arc<Suspensions>,
        feed: crossbeam_channel::Receiver<Change>,
        stop: Arc<AtomicBool>,
    ) -> Result<Cluster, ClusterError> {
        let client = redis::Client::open(settings.redis.as_str()).map_err(ClusterError::Url)?;
        let state = Arc::new(ClusterState::default());
        state.hosts.store(settings.hosts.max(1), Ordering::Relaxed);
        let (requests_tx, requests) = crossbeam_channel::unbounded();
        let mut to_cores = Vec::with_capacity(cores);
        let mut links = Vec::with_capacity(cores);
        for core in 0..cores {
            let (tx, rx) = async_channel::unbounded();
            to_cores.push(tx);
            links.push(CoreLink {
                core,
                cores,
                lease: settings.lease,
                requests: requests_tx.clone(),
                events: rx,
                state: Arc::clone(&state),
            });
        }
        let sub = subscriber::Subscriber::new(
            client.clone(),
            settings.clone(),
            suspensions,
            to_cores.clone(),
            Arc::clone(&stop),
        );
        std::thread::Builder::new()
            .name("spate-cluster-sub".into())
            .spawn(move || sub.run())
            .map_err(ClusterError::Thread)?;
        let thread = client::ClientThread::new(
            client,
            settings,
            Arc::clone(&state),
            to_cores,
            requests,
            feed,
            stop,
        );
        std::thread::Builder::new()
            .name("spate-cluster".into())
            .spawn(move || thread.run())
            .map_err(ClusterError::Thread)?;
        Ok(Cluster { state, links })
    }

    /// The cores' links, one per core in order (taken once).
    pub fn take_links(&mut self) -> Vec<CoreLink> {
        std::mem::take(&mut self.links)
    }

    pub fn figures(&self) -> ClusterFigures {
        self.state.figures()
    }

    /// The figures, for the metrics scraper's thread.
    pub fn figures_handle(&self) -> impl Fn() -> ClusterFigures + Send + Sync + 'static {
        let state = Arc::clone(&self.state);
        move || state.figures()
    }
}

impl ClusterState {
    fn figures(&self) -> ClusterFigures {
        ClusterFigures {
            up: self.up.load(Ordering::Relaxed),
            hosts: self.hosts.load(Ordering::Relaxed) as u64,
            fallbacks: self.fallbacks.load(Ordering::Relaxed),
            round_trips: self.round_trips.load(Ordering::Relaxed),
            leases: self.leases.load(Ordering::Relaxed),
            tokens: self.tokens.load(Ordering::Relaxed),
        }
    }
}
