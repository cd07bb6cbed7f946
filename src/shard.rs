//! One shard per core: a pinned glommio executor that recovers its spool,
//! binds every listener with SO_REUSEPORT, accepts and serves sessions, and
//! stops cleanly; answers control requests and metrics scrapes. Shards
//! share nothing on the hot path; the only shared state is the connection
//! count, touched at connect and close.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::os::fd::{FromRawFd, IntoRawFd};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::time::Duration;

use futures_lite::future::or;
use glommio::net::TcpListener;
use glommio::sync::Gate;
use socket2::{Domain, Socket, Type};

use crate::blocking::BlockingPool;
use crate::config::{Config, Protocol};
use crate::control::{Request, ShardCommand};
use crate::crash::FatalThreads;
use crate::delivery::engine::Engine;
use crate::delivery::router::Router;
use crate::imap::session::ImapConfig;
use crate::local::LocalTier;
use crate::metrics::endpoint::SnapshotRequest;
use crate::metrics::{Metrics, QueueDepth, Snapshot};
use crate::notify::Notify;
use crate::pop3::Pop3Config;
use crate::queue::{NoJitter, Queue, QueueEntry, ReadyLimits, RetryPolicy, Shape};
use crate::reload::LiveSettings;
use crate::resolver::ResolverHandle;
use crate::session::limits::ConnectionLimits;
use crate::session::shutdown::Shutdown;
use crate::session::smtp::SmtpListener;
use crate::smtp::ServerConfig;
use crate::spool::{GlommioStore, SegmentStore, Spool, SpoolConfig};

/// Locked memory glommio reserves per executor for its I/O buffers. The
/// spool uses buffered (not DMA) files, so a little is enough, and it
/// keeps unprivileged runs within the default RLIMIT_MEMLOCK.
const IO_MEMORY: usize = 2 << 20;
/// How often a shard looks at the process-wide stop flag.
const STOP_POLL: Duration = Duration::from_millis(50);
/// Pending connections per listening socket (the kernel caps it at
/// net.core.somaxconn; see tuning/).
const LISTEN_BACKLOG: i32 = 4096;

/// What a shard tells the main thread.
#[derive(Debug)]
pub enum ShardReport {
    /// Spool recovered and every listener bound.
    Ready { shard: usize, recovered: usize },
    /// The shard could not start, or stopped serving.
    Failed { shard: usize, error: String },
    /// The shard took the settings of a reload.
    Reloaded { shard: usize },
}

/// Everything one shard's tasks share. Lives on one thread only. `S` is
/// the spool's I/O seam: glommio files in production, a fake in the tests
/// that prove no reply leaves before the sync covering it.
pub struct ShardContext<S: SegmentStore = GlommioStore> {
    pub index: usize,
    pub config: Arc<Config>,
    /// The SMTP core's configuration for port-25 style listeners.
    pub smtp: Rc<ServerConfig>,
    /// The same for submission listeners (AUTH offered and required).
    pub submission: Rc<ServerConfig>,
    /// The same for LMTP listeners (RFC 2033: final delivery, no AUTH).
    pub lmtp: Rc<ServerConfig>,
    pub pop3: Rc<Pop3Config>,
    pub imap: Arc<ImapConfig>,
    /// The mailbox tier, when `[local] mailbox_dir` is set.
    pub local: Option<Arc<LocalTier>>,
    /// Unpinned threads for the tier's blocking calls.
    pub blocking: Arc<BlockingPool>,
    pub spool: Spool<S>,
    pub queue: RefCell<Queue>,
    pub metrics: RefCell<Metrics>,
    pub limits: Arc<ConnectionLimits>,
    /// What a reload swaps (certificate, routes): read at each new
    /// connection, STARTTLS and routing decision, never held across one.
    live: RefCell<Live>,
    pub shutdown: Rc<Shutdown>,
    /// Set when there is new work for delivery (a message stored, a
    /// connection slot freed, a flush).
    pub delivery_wake: Notify,
    /// Where message-life events go, with `[[events.webhook]]`.
    pub events: Option<crate::events::EventSink>,
}

/// This shard's copy of the reloadable settings.
struct Live {
    tls: Option<futures_rustls::TlsAcceptor>,
    router: Rc<Router>,
    shaping: Arc<crate::shaping::Shaping>,
    egress: Arc<crate::egress::EgressPlan>,
    dkim: Arc<crate::dkim::Signer>,
}

impl Live {
    fn from_settings(settings: &LiveSettings) -> Live {
        Live {
            tls: settings.tls.clone().map(futures_rustls::TlsAcceptor::from),
            router: Rc::new(settings.router.clone()),
            shaping: Arc::clone(&settings.shaping),
            egress: Arc::clone(&settings.egress),
            dkim: Arc::clone(&settings.dkim),
        }
    }
}

impl<S: SegmentStore> ShardContext<S> {
    /// Hands a message-life event to the events service; `make` runs
    /// only when webhooks are configured.
    pub fn emit(&self, make: impl FnOnce() -> crate::events::Event) {
        if let Some(events) = &self.events {
            events.send(make());
        }
    }

    /// [`emit`](Self::emit), then waits until the event is synced to the
    /// event log, for `[events] received_sync_wait` at most (other
    /// sessions are served meanwhile).
    pub async fn emit_durable(&self, make: impl FnOnce() -> crate::events::Event) {
        let Some(events) = &self.events else {
            return;
        };
        let limit = events.received_sync_wait();
        if limit.is_zero() {
            events.send(make());
            return;
        }
        let synced = events.send_durable(make());
        let waited = async {
            let _ = synced.await;
            true
        };
        let timed_out = async {
            glommio::timer::sleep(limit).await;
            false
        };
        if !futures_lite::future::or(waited, timed_out).await {
            tracing::debug!(
                ?limit,
                "the received event was not synced in time; answering anyway"
            );
        }
    }

    /// The TLS acceptor for a handshake starting now (`None` without
    /// `[tls]`).
    pub fn tls(&self) -> Option<futures_rustls::TlsAcceptor> {
        self.live.borrow().tls.clone()
    }

    /// The routing table for a decision made now.
    pub fn router(&self) -> Rc<Router> {
        Rc::clone(&self.live.borrow().router)
    }

    /// The shaping rules for a site that becomes active now.
    pub fn shaping(&self) -> Arc<crate::shaping::Shaping> {
        Arc::clone(&self.live.borrow().shaping)
    }

    /// Egress sources and pools for work placed now.
    pub fn egress(&self) -> Arc<crate::egress::EgressPlan> {
        Arc::clone(&self.live.borrow().egress)
    }

    /// The DKIM keys for a message whose data ends now.
    pub fn dkim(&self) -> Arc<crate::dkim::Signer> {
        Arc::clone(&self.live.borrow().dkim)
    }

    /// Takes new settings (a reload): connections already open keep
    /// their TLS session; new ones and new routing decisions use these.
    pub fn apply(&self, settings: &LiveSettings) {
        *self.live.borrow_mut() = Live::from_settings(settings);
    }
}

/// What a shard needs to start, handed over from the main thread.
pub struct ShardPlan {
    pub index: usize,
    /// Shard directories whose segments this shard recovers and owns.
    pub adopt: Vec<u8>,
    pub config: Arc<Config>,
    pub listeners: Vec<(Protocol, SocketAddr)>,
    pub limits: Arc<ConnectionLimits>,
    pub local: Option<Arc<LocalTier>>,
    pub blocking: Arc<BlockingPool>,
    /// The certificate and routes to start with.
    pub live: Arc<LiveSettings>,
    /// New settings on each reload (SIGHUP); answered with
    /// [`ShardReport::Reloaded`].
    pub reloads: async_channel::Receiver<Arc<LiveSettings>>,
    pub stop: Arc<AtomicBool>,
    pub reports: Sender<ShardReport>,
    /// The process's one resolver thread.
    pub resolver: ResolverHandle,
    /// TLS for outbound STARTTLS.
    pub outbound_tls: Arc<rustls::ClientConfig>,
    /// Verifying TLS for the smarthost, when `relay.smarthost_tls = "verify"`.
    pub smarthost_tls: Option<Arc<rustls::ClientConfig>>,
    /// Requests from the control socket for this shard.
    pub control: async_channel::Receiver<ShardCommand>,
    /// Scrapes of the metrics endpoint asking for this shard's figures.
    pub snapshots: async_channel::Receiver<SnapshotRequest>,
    /// Suspended and throttled sites and the egress sources' counts of
    /// the day, shared by every shard.
    pub sites: crate::delivery::engine::SiteTables,
    /// This shard's link to the limits shared with other hosts
    /// (`[cluster]`), if any.
    pub cluster: Option<crate::cluster::CoreLink>,
    /// The shard's thread joins these as it starts: its panic ends the
    /// process (see `crash`).
    pub fatal: FatalThreads,
    /// Where message-life events go, with `[[events.webhook]]`.
    pub events: Option<crate::events::EventSink>,
}

/// Starts the executor of one shard, pinned to `cpu`. Its join handle
/// yields the shard's metrics when it has stopped.
pub fn spawn(plan: ShardPlan, cpu: usize) -> std::io::Result<glommio::ExecutorJoinHandle<Metrics>> {
    spawn_with(plan, cpu, || GlommioStore)
}

/// [`spawn`] with another spool I/O seam; `make_store` runs on the
/// shard's own thread, so the store itself need not be `Send`.
pub fn spawn_with<S, F>(
    plan: ShardPlan,
    cpu: usize,
    make_store: F,
) -> std::io::Result<glommio::ExecutorJoinHandle<Metrics>>
where
    S: SegmentStore + 'static,
    F: FnOnce() -> S + Send + 'static,
{
    let name = format!("spate-{}", plan.index);
    glommio::LocalExecutorBuilder::new(glommio::Placement::Fixed(cpu))
        .name(&name)
        .io_memory(IO_MEMORY)
        .spawn(move || {
            // On the shard's own thread, before it touches the spool.
            plan.fatal.add_current_thread();
            run(plan, make_store())
        })
        .map_err(std::io::Error::from)
}

async fn run<S: SegmentStore + 'static>(plan: ShardPlan, store: S) -> Metrics {
    let reports = plan.reports.clone();
    let index = plan.index;
    match start(plan, store).await {
        Ok((ctx, listeners)) => serve(ctx, listeners).await,
        Err(error) => {
            let _ = reports.send(ShardReport::Failed {
                shard: index,
                error,
            });
            Metrics::default()
        }
    }
}

async fn start<S: SegmentStore + 'static>(
    plan: ShardPlan,
    store: S,
) -> Result<(Rc<ShardContext<S>>, Vec<(Protocol, TcpListener)>), String> {
    let config = Arc::clone(&plan.config);
    let shard_id =
        u8::try_from(plan.index).map_err(|_| "at most 256 cores are supported".to_string())?;
    let spool_config = SpoolConfig {
        segment_size: config.spool.segment_size,
        preallocate_chunk: config.spool.preallocate_chunk,
    };
    let (spool, recovered) = Spool::open_with(
        store,
        &config.spool_dir,
        shard_id,
        &plan.adopt,
        spool_config,
    )
    .await
    .map_err(|e| format!("spool {}: {}", config.spool_dir.display(), error_chain(&e)))?;
    let d = &config.delivery;
    let policy = RetryPolicy {
        minimal_backoff: d.minimal_backoff,
        maximal_backoff: d.maximal_backoff,
        maximal_queue_lifetime: d.maximal_queue_lifetime,
        ..RetryPolicy::default()
    };
    let mut queue = Queue::with_policy(policy, NoJitter).map_err(|e| format!("delivery: {e}"))?;
    let ready = ReadyLimits {
        max_connections: d.max_connections,
        max_connections_per_destination: d.max_connections_per_destination,
        batch_per_connection: d.max_messages_per_connection.min(10),
        max_queued_per_destination: d.max_queued_per_destination,
        share: config.executor_count(),
        ..ReadyLimits::default()
    };
    for message in &recovered {
        queue.restore(
            message.id,
            QueueEntry {
                size: message.body_len,
                recipients: message.recipients,
                received_at: message.received_at,
                acknowledged_at: None,
                shape: Rc::new(Shape {
                    tenant: message.tenant.as_deref().map(Rc::from),
                    domains: message.domains.iter().map(|d| Rc::from(&**d)).collect(),
                }),
            },
            &message.delivery,
        );
    }
    let listeners = plan
        .listeners
        .iter()
        .map(|(protocol, addr)| {
            bind(*addr)
                .map(|l| (*protocol, l))
                .map_err(|e| format!("cannot listen on {addr}: {e}"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let smtp = smtp_server_config(&config);
    let submission = ServerConfig {
        submission: true,
        ..smtp.clone()
    };
    let lmtp = ServerConfig {
        lmtp: true,
        ..smtp.clone()
    };
    let ctx = Rc::new(ShardContext {
        index: plan.index,
        smtp: Rc::new(smtp),
        submission: Rc::new(submission),
        lmtp: Rc::new(lmtp),
        pop3: Rc::new(pop3_config(&config)),
        imap: Arc::new(ImapConfig {
            starttls: config.tls.is_some(),
            max_append: config.smtp.max_message_size as u64,
            ..ImapConfig::default()
        }),
        local: plan.local,
        blocking: plan.blocking,
        config,
        spool,
        queue: RefCell::new(queue),
        metrics: RefCell::new(Metrics::default()),
        limits: plan.limits,
        live: RefCell::new(Live::from_settings(&plan.live)),
        shutdown: Rc::new(Shutdown::new()),
        delivery_wake: Notify::new(),
        events: plan.events,
    });
    let (shared, cluster_task) = match plan.cluster {
        Some(link) => {
            let woken = Rc::clone(&ctx);
            let (budget, task) = link.attach(move || woken.delivery_wake.notify());
            (Some(budget), Some(task))
        }
        None => (None, None),
    };
    let engine = Engine::new(
        Rc::clone(&ctx),
        plan.resolver,
        plan.outbound_tls,
        plan.smarthost_tls,
        ready,
        plan.sites,
        shared,
    )
    .map_err(|e| format!("delivery: {e}"))?;
    if let Some(task) = cluster_task {
        glommio::spawn_local(task).detach();
    }
    glommio::spawn_local(Rc::clone(&engine).run()).detach();
    glommio::spawn_local(serve_control(
        engine,
        plan.control,
        Rc::clone(&ctx.shutdown),
    ))
    .detach();
    glommio::spawn_local(serve_snapshots(Rc::clone(&ctx), plan.snapshots)).detach();
    glommio::spawn_local(watch_stop(plan.stop, Rc::clone(&ctx.shutdown))).detach();
    glommio::spawn_local(serve_reloads(
        Rc::clone(&ctx),
        plan.reloads,
        plan.reports.clone(),
    ))
    .detach();
    let _ = plan.reports.send(ShardReport::Ready {
        shard: plan.index,
        recovered: recovered.len(),
    });
    Ok((ctx, listeners))
}

/// An error and its causes on one line, for startup failures.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The SMTP core's view of the configuration.
pub fn smtp_server_config(config: &Config) -> ServerConfig {
    let s = &config.smtp;
    ServerConfig {
        hostname: config.hostname.clone(),
        max_line_length: s.max_line_length,
        max_message_size: s.max_message_size,
        max_recipients: s.max_recipients,
        max_errors: s.max_errors,
        max_hops: s.max_hops,
        bare_line_endings: s.bare_line_endings,
        body_line_limit: (s.body_line_limit > 0).then_some(s.body_line_limit),
        local_domains: config.local.domains.clone(),
        starttls: config.tls.is_some(),
        timeouts: crate::smtp::Timeouts {
            command: s.command_timeout,
            data_block: s.data_timeout,
        },
        submission: false,
        allow_plaintext_auth: config.auth.allow_plaintext,
        trust_loopback: config.auth.trust_loopback,
        sender_must_match_login: config.auth.sender_must_match_login,
        allow_address_literals: config.relay.allow_address_literals,
        tenant_header: config.egress.tenant_header.clone(),
        lmtp: false,
    }
}

/// The POP3 core's view of the configuration.
pub fn pop3_config(config: &Config) -> Pop3Config {
    Pop3Config {
        max_errors: config.pop3.max_errors,
        idle_timeout: config.pop3.idle_timeout,
        stls: config.tls.is_some(),
        ..Pop3Config::default()
    }
}

/// Binds one listening socket of this core: SO_REUSEPORT lets every core
/// bind the same address and the kernel spreads connections over them
/// (`claim` has checked that no other process serves it);
/// SO_REUSEADDR lets a restarted server bind despite TIME_WAIT.
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nodelay(true)?;
    socket.bind(&addr.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    // The descriptor is a freshly bound listening TCP socket that nothing
    // else owns; the listener takes it over.
    Ok(unsafe { TcpListener::from_raw_fd(socket.into_raw_fd()) })
}

/// Answers control requests (flush, delete, bounce; panic) until the
/// shard stops.
async fn serve_control<S: SegmentStore + 'static>(
    engine: Rc<Engine<S>>,
    inbox: async_channel::Receiver<ShardCommand>,
    shutdown: Rc<Shutdown>,
) {
    loop {
        let next = or(async { inbox.recv().await.ok() }, async {
            shutdown.wait().await;
            None
        })
        .await;
        let Some(command) = next else { return };
        if let Request::Panic(shard) = command.request {
            // Fault injection, asked for with `spate debug panic` by root
            // or the server's user: a panic in a task of this executor,
            // like a bug in a session would raise, to prove the crash
            // policy (`crash`): the process exits with status 70.
            panic!("shard {shard}: panic asked for over the control socket (spate debug panic)");
        }
        let reply = engine.control(command.request).await;
        let _ = command.reply.send(reply);
    }
}

/// Applies each reload's settings, and says so, until the shard stops.
async fn serve_reloads<S: SegmentStore + 'static>(
    ctx: Rc<ShardContext<S>>,
    reloads: async_channel::Receiver<Arc<LiveSettings>>,
    reports: Sender<ShardReport>,
) {
    loop {
        let next = or(async { reloads.recv().await.ok() }, async {
            ctx.shutdown.wait().await;
            None
        })
        .await;
        let Some(settings) = next else { return };
        ctx.apply(&settings);
        let _ = reports.send(ShardReport::Reloaded { shard: ctx.index });
    }
}

/// Answers the metrics endpoint's scrapes until the shard stops.
async fn serve_snapshots<S: SegmentStore + 'static>(
    ctx: Rc<ShardContext<S>>,
    inbox: async_channel::Receiver<SnapshotRequest>,
) {
    loop {
        let next = or(async { inbox.recv().await.ok() }, async {
            ctx.shutdown.wait().await;
            None
        })
        .await;
        let Some(request) = next else { return };
        let _ = request.reply.send(snapshot(&ctx));
    }
}

/// This shard's figures now: its counters and histograms, its queue by
/// state, its spool's sync times.
pub fn snapshot<S: SegmentStore>(ctx: &ShardContext<S>) -> Snapshot {
    let mut snapshot = ctx.metrics.borrow().snapshot();
    let queue = ctx.queue.borrow();
    let counts = queue.count_by_state();
    snapshot.queue = QueueDepth {
        queued: counts.new,
        deferred: counts.deferred,
        active: counts.active,
        bytes: queue.bytes(),
    };
    snapshot.fsync_latency = ctx.spool.sync_latency().buckets();
    snapshot
}

async fn watch_stop(stop: Arc<AtomicBool>, shutdown: Rc<Shutdown>) {
    while !stop.load(Ordering::Acquire) {
        glommio::timer::sleep(STOP_POLL).await;
    }
    shutdown.fire();
}

async fn serve<S: SegmentStore + 'static>(
    ctx: Rc<ShardContext<S>>,
    listeners: Vec<(Protocol, TcpListener)>,
) -> Metrics {
    let sessions = Rc::new(Gate::new());
    let accept_loops: Vec<_> = listeners
        .into_iter()
        .map(|(protocol, listener)| {
            glommio::spawn_local(accept_loop(
                Rc::clone(&ctx),
                protocol,
                listener,
                Rc::clone(&sessions),
            ))
        })
        .collect();
    for accept in accept_loops {
        accept.await;
    }
    // Listeners are closed; open sessions get the grace period to finish
    // their transactions, then the executor drops whatever is left.
    let grace = ctx.config.shutdown_grace;
    let finished = or(async { sessions.close().await.is_ok() }, async {
        glommio::timer::sleep(grace).await;
        false
    })
    .await;
    if !finished {
        tracing::info!(
            shard = ctx.index,
            "grace period over, aborting open sessions"
        );
    }
    if let Err(e) = ctx.spool.close().await {
        tracing::error!(shard = ctx.index, error = %e, "spool did not close cleanly");
    }
    let metrics = ctx.metrics.borrow().clone();
    metrics
}

async fn accept_loop<S: SegmentStore + 'static>(
    ctx: Rc<ShardContext<S>>,
    protocol: Protocol,
    listener: TcpListener,
    sessions: Rc<Gate>,
) {
    loop {
        let accepted = or(async { Some(listener.accept().await) }, async {
            ctx.shutdown.wait().await;
            None
        })
        .await;
        match accepted {
            None => return,
            Some(Ok(stream)) => {
                let Ok(peer) = stream.peer_addr() else {
                    continue;
                };
                // A dropped task handle would cancel the session: detach it;
                // the gate still tracks it for shutdown.
                let ctx = Rc::clone(&ctx);
                let session = async move {
                    use crate::session::{imap, pop3, smtp};
                    match protocol {
                        Protocol::Smtp => smtp::serve(ctx, stream, peer, SmtpListener::Relay).await,
                        Protocol::Submission => {
                            smtp::serve(ctx, stream, peer, SmtpListener::Submission).await
                        }
                        Protocol::Submissions => {
                            smtp::serve(ctx, stream, peer, SmtpListener::Submissions).await
                        }
                        Protocol::Lmtp => smtp::serve(ctx, stream, peer, SmtpListener::Lmtp).await,
                        Protocol::Pop3 => pop3::serve(ctx, stream, peer, false).await,
                        Protocol::Pop3s => pop3::serve(ctx, stream, peer, true).await,
                        Protocol::Imap => imap::serve(ctx, stream, peer, false).await,
                        Protocol::Imaps => imap::serve(ctx, stream, peer, true).await,
                    }
                };
                match sessions.spawn(session) {
                    Ok(task) => {
                        task.detach();
                    }
                    Err(e) => tracing::warn!(error = %e, "cannot start a session"),
                }
            }
            Some(Err(e)) => {
                // Out of descriptors or memory: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                glommio::timer::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// The CPUs this process may run on, in ascending order (its affinity
/// mask: `taskset`, systemd's `CPUAffinity=`, a cpuset), so executors are
/// pinned to the cores the operator gave spate, not to cores 0..n. Never
/// empty: when the mask cannot be read, CPUs 0..available_parallelism.
pub fn allowed_cpus() -> Vec<usize> {
    // SAFETY: cpu_set_t is plain data; zeroed is a valid empty set, and
    // sched_getaffinity writes at most size_of::<cpu_set_t>() bytes.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    let rc =
        unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    let mut cpus = Vec::new();
    if rc == 0 {
        for cpu in 0..libc::CPU_SETSIZE as usize {
            // SAFETY: cpu is below CPU_SETSIZE, the set's capacity.
            if unsafe { libc::CPU_ISSET(cpu, &set) } {
                cpus.push(cpu);
            }
        }
    }
    if cpus.is_empty() {
        let count = std::thread::available_parallelism().map_or(1, |n| n.get());
        cpus = (0..count).collect();
    }
    cpus
}

/// Whether this build serves `protocol` (all of them now; kept so a
/// protocol can be added to the config before its server).
pub fn serves(protocol: Protocol) -> bool {
    matches!(
        protocol,
        Protocol::Smtp
            | Protocol::Submission
            | Protocol::Submissions
            | Protocol::Imap
            | Protocol::Imaps
            | Protocol::Pop3
            | Protocol::Pop3s
            | Protocol::Lmtp
    )
}

/// The shard directories that exist under the spool directory, so a
/// restart with a different core count still recovers every segment.
pub fn existing_shard_dirs(spool_dir: &std::path::Path) -> Vec<u8> {
    let Ok(entries) = std::fs::read_dir(spool_dir) else {
        return Vec::new();
    };
    let mut found: Vec<u8> = entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.strip_prefix("shard-")?.parse().ok())
        .collect();
    found.sort_unstable();
    found
}

/// Which existing shard directories shard `index` of `count` adopts: its
/// own, and those of shards that no longer exist (`n % count == index`).
pub fn adoption(index: usize, count: usize, existing: &[u8]) -> Vec<u8> {
    let mut adopt: Vec<u8> = existing
        .iter()
        .copied()
        .filter(|n| usize::from(*n) % count == index && usize::from(*n) != index)
        .collect();
    // Its own directory, even when it does not exist yet.
    if let Ok(own) = u8::try_from(index) {
        adopt.insert(0, own);
    }
    adopt
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allowed_cpus_are_this_threads_affinity() {
        let cpus = allowed_cpus();
        assert!(!cpus.is_empty());
        assert!(cpus.windows(2).all(|w| w[0] < w[1]), "ascending: {cpus:?}");
        let count = std::thread::available_parallelism().unwrap().get();
        // available_parallelism may also count a cgroup CPU quota, never more.
        assert!(cpus.len() >= count, "{cpus:?}");
    }

    #[test]
    fn every_existing_shard_dir_is_adopted_exactly_once() {
        let existing = [0, 1, 2, 3, 4];
        let mut seen: Vec<u8> = (0..2).flat_map(|i| adoption(i, 2, &existing)).collect();
        seen.sort_unstable();
        assert_eq!(seen, vec![0, 1, 2, 3, 4]);
        assert_eq!(adoption(0, 1, &[]), vec![0]);
    }
}
