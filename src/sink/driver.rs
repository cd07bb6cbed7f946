//! Runs `spate sink`: one pinned glommio executor per core, each binding
//! every listen address with SO_REUSEPORT, refusing clients over the
//! per-IP limit, and driving a [`SinkSession`] per connection (sleeping
//! for injected delays, upgrading to TLS, writing kept messages to the
//! directory). It holds no protocol logic; the command line handles
//! signals and printing.

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::{TcpListener, TcpStream};
use socket2::{Domain, Socket, Type};

use super::counters::Counters;
use super::fault::Injector;
use super::session::{CoreState, KeptMessage, Quota, SinkConfig, SinkEvent, SinkSession};
use crate::session::limits::{ConnectionLimits, Family, PerAddress};
use crate::session::stream::{Connection, ReadBuffer, ServerConnection};

const IO_MEMORY: usize = 1 << 20;
/// The size limit with `--dir` when `--max-size` is 0.
pub const KEPT_MESSAGE_LIMIT: u64 = 64 << 20;
const READ_BUFFER: usize = 4 << 10;
const MAX_READ_BUFFER: usize = 256 << 10;
/// A client silent this long is dropped.
const IDLE_TIMEOUT: Duration = Duration::from_secs(300);
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);
/// How often a core looks at the stop flag.
const STOP_POLL: Duration = Duration::from_millis(20);
/// After the stop, how long open sessions may finish writing.
const STOP_GRACE: Duration = Duration::from_secs(1);

/// Everything `spate sink` needs, checked.
#[derive(Debug, Clone)]
pub struct SinkOptions {
    pub listen: Vec<SocketAddr>,
    pub cores: usize,
    /// Write each accepted message here (absolute path).
    pub dir: Option<PathBuf>,
    /// Refuse a client's connections beyond this many open at once.
    pub max_per_ip: Option<usize>,
    /// Stop after accepting this many messages.
    pub stop_after: Option<u64>,
    /// Certificate and key (PEM) to offer STARTTLS.
    pub tls: Option<(PathBuf, PathBuf)>,
    pub config: SinkConfig,
}

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("binding {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("creating {path}: {source}")]
    Dir {
        path: String,
        source: std::io::Error,
    },
    #[error("starting executor {core}: {source}")]
    Executor { core: usize, source: std::io::Error },
    #[error("core {core}: {error}")]
    Core { core: usize, error: String },
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
}

enum CoreReport {
    Ready(Arc<Mutex<Counters>>),
    Failed(String),
}

/// A running sink.
pub struct RunningSink {
    /// The addresses really bound (port 0 resolved).
    pub addresses: Vec<SocketAddr>,
    counters: Vec<Arc<Mutex<Counters>>>,
    quota: Arc<Quota>,
    stop: Arc<AtomicBool>,
    handles: Vec<glommio::ExecutorJoinHandle<()>>,
}

fn lock(counters: &Mutex<Counters>) -> std::sync::MutexGuard<'_, Counters> {
    // Counters stay consistent even if a holder panicked (plain additions).
    counters.lock().unwrap_or_else(|p| p.into_inner())
}

impl RunningSink {
    /// Every core's counters, merged, now.
    pub fn counters(&self) -> Counters {
        let mut total = Counters::default();
        for c in &self.counters {
            total.merge(&lock(c));
        }
        total
    }

    /// `--stop-after` was reached.
    pub fn limit_reached(&self) -> bool {
        self.quota.exhausted()
    }

    /// Stops accepting, lets open sessions finish their writes briefly,
    /// and returns the final counters.
    pub fn stop(self) -> Counters {
        self.stop.store(true, Ordering::Release);
        for handle in self.handles {
            if let Err(e) = handle.join() {
                tracing::error!(error = %e, "a sink core ended abnormally");
            }
        }
        let mut total = Counters::default();
        for c in &self.counters {
            total.merge(&lock(c));
        }
        total
    }
}

/// Listen addresses with port 0 get one free port shared by every core:
/// a bound (never listening) SO_REUSEPORT socket holds it meanwhile.
fn reserve(listen: &[SocketAddr]) -> Result<(Vec<Socket>, Vec<SocketAddr>), SinkError> {
    let mut holders = Vec::new();
    let mut addresses = Vec::new();
    for &addr in listen {
        let mut bound = addr;
        if addr.port() == 0 {
            let bind_error = |source| SinkError::Bind { addr, source };
            let socket =
                Socket::new(Domain::for_address(addr), Type::STREAM, None).map_err(bind_error)?;
            socket.set_reuse_address(true).map_err(bind_error)?;
            socket.set_reuse_port(true).map_err(bind_error)?;
            socket.bind(&addr.into()).map_err(bind_error)?;
            let port = socket
                .local_addr()
                .ok()
                .and_then(|a| a.as_socket())
                .map(|a| a.port())
                .ok_or_else(|| bind_error(std::io::Error::other("no local address")))?;
            bound.set_port(port);
            holders.push(socket);
        }
        addresses.push(bound);
    }
    Ok((holders, addresses))
}

/// Starts the cores; returns once every one listens.
pub fn start(options: SinkOptions) -> Result<RunningSink, SinkError> {
    if let Some(dir) = &options.dir {
        std::fs::create_dir_all(dir).map_err(|source| SinkError::Dir {
            path: dir.display().to_string(),
            source,
        })?;
    }
    let tls = match &options.tls {
        Some((cert, key)) => Some(crate::tls::server_config(cert, key)?),
        None => None,
    };
    let (holders, addresses) = reserve(&options.listen)?;
    // The CPUs this process may run on (taskset): core i is pinned to the
    // i-th of them, as `spate serve` does.
    let cpus = crate::shard::allowed_cpus();
    let cores = options.cores.max(1);
    let mut config = options.config.clone();
    config.starttls = tls.is_some();
    config.keep_messages = options.dir.is_some();
    if config.keep_messages && config.max_message_size == 0 {
        // Kept messages are held in memory until written: bound them.
        config.max_message_size = KEPT_MESSAGE_LIMIT;
    }
    let config = Arc::new(config);
    let limits = options
        .max_per_ip
        .map(|n| ConnectionLimits::new(usize::MAX, PerAddress::same(n)));
    let quota = Arc::new(Quota::new(options.stop_after.unwrap_or(0)));
    let stop = Arc::new(AtomicBool::new(false));
    let (reports, inbox) = mpsc::channel();
    let mut handles = Vec::with_capacity(cores);
    for core in 0..cores {
        let plan = CorePlan {
            core,
            addresses: addresses.clone(),
            config: Arc::clone(&config),
            dir: options.dir.clone(),
            limits: limits.clone(),
            quota: Arc::clone(&quota),
            stop: Arc::clone(&stop),
            tls: tls.clone(),
            reports: reports.clone(),
        };
        let handle =
            glommio::LocalExecutorBuilder::new(glommio::Placement::Fixed(cpus[core % cpus.len()]))
                .name(&format!("sink-{core}"))
                .io_memory(IO_MEMORY)
                .spawn(move || run_core(plan))
                .map_err(|e| SinkError::Executor {
                    core,
                    source: std::io::Error::from(e),
                })?;
        handles.push(handle);
    }
    drop(reports);
    let mut counters = Vec::with_capacity(cores);
    let mut failure = None;
    for core in 0..cores {
        match inbox.recv() {
            Ok(CoreReport::Ready(c)) => counters.push(c),
            Ok(CoreReport::Failed(error)) => failure = Some(SinkError::Core { core, error }),
            Err(_) => {
                failure = Some(SinkError::Core {
                    core,
                    error: "stopped while starting".into(),
                })
            }
        }
    }
    drop(holders);
    let running = RunningSink {
        addresses,
        counters,
        quota,
        stop,
        handles,
    };
    match failure {
        Some(error) => {
            running.stop();
            Err(error)
        }
        None => Ok(running),
    }
}

struct CorePlan {
    core: usize,
    addresses: Vec<SocketAddr>,
    config: Arc<SinkConfig>,
    dir: Option<PathBuf>,
    limits: Option<Arc<ConnectionLimits>>,
    quota: Arc<Quota>,
    stop: Arc<AtomicBool>,
    tls: Option<Arc<rustls::ServerConfig>>,
    reports: mpsc::Sender<CoreReport>,
}

/// What the sessions of one core share.
struct CoreContext {
    core: usize,
    config: Rc<SinkConfig>,
    injector: RefCell<Injector>,
    counters: Arc<Mutex<Counters>>,
    quota: Arc<Quota>,
    limits: Option<Arc<ConnectionLimits>>,
    tls: Option<futures_rustls::TlsAcceptor>,
    dir: Option<PathBuf>,
    kept: Cell<u64>,
    open: Cell<usize>,
}

impl CoreContext {
    /// Runs `f` with the core's state (no await inside: the borrow and
    /// the lock are short).
    fn with<T>(&self, f: impl FnOnce(&mut CoreState<'_>) -> T) -> T {
        let mut injector = self.injector.borrow_mut();
        let mut counters = lock(&self.counters);
        f(&mut CoreState {
            injector: &mut injector,
            counters: &mut counters,
            quota: &self.quota,
        })
    }
}

async fn run_core(plan: CorePlan) {
    let mut listeners = Vec::with_capacity(plan.addresses.len());
    for &addr in &plan.addresses {
        match crate::shard::bind(addr) {
            Ok(listener) => listeners.push(listener),
            Err(e) => {
                let _ = plan
                    .reports
                    .send(CoreReport::Failed(format!("cannot listen on {addr}: {e}")));
                return;
            }
        }
    }
    let counters = Arc::new(Mutex::new(Counters::default()));
    let ctx = Rc::new(CoreContext {
        core: plan.core,
        config: Rc::new((*plan.config).clone()),
        injector: RefCell::new(Injector::new(&plan.config.plan)),
        counters: Arc::clone(&counters),
        quota: plan.quota,
        limits: plan.limits,
        tls: plan.tls.map(futures_rustls::TlsAcceptor::from),
        dir: plan.dir,
        kept: Cell::new(0),
        open: Cell::new(0),
    });
    // Dropping these handles cancels the accept loops.
    let acceptors: Vec<_> = listeners
        .into_iter()
        .map(|l| glommio::spawn_local(accept_loop(l, Rc::clone(&ctx))))
        .collect();
    let _ = plan.reports.send(CoreReport::Ready(counters));
    while !plan.stop.load(Ordering::Acquire) {
        glommio::timer::sleep(STOP_POLL).await;
    }
    drop(acceptors);
    let deadline = std::time::Instant::now() + STOP_GRACE;
    while ctx.open.get() > 0 && std::time::Instant::now() < deadline {
        glommio::timer::sleep(STOP_POLL).await;
    }
}

async fn accept_loop(listener: TcpListener, ctx: Rc<CoreContext>) {
    loop {
        match listener.accept().await {
            Ok(stream) => {
                glommio::spawn_local(serve(stream, Rc::clone(&ctx))).detach();
            }
            Err(e) => {
                // Out of descriptors and the like: pause rather than spin.
                tracing::warn!(error = %e, "accept failed");
                glommio::timer::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Decrements the core's open-session count when the session ends.
struct OpenGuard(Rc<CoreContext>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.open.set(self.0.open.get().saturating_sub(1));
    }
}

async fn serve(stream: TcpStream, ctx: Rc<CoreContext>) {
    let _ = stream.set_nodelay(true);
    let _slot = match (&ctx.limits, stream.peer_addr()) {
        (Some(limits), Ok(peer)) => match limits.admit(peer.ip(), Family::Smtp) {
            Ok(slot) => Some(slot),
            Err(_) => {
                lock(&ctx.counters).refused_connections += 1;
                crate::session::stream::refuse(stream, super::session::TOO_MANY_CONNECTIONS).await;
                return;
            }
        },
        _ => None,
    };
    ctx.open.set(ctx.open.get() + 1);
    let _open = OpenGuard(Rc::clone(&ctx));
    let peer = stream.peer_addr().ok().map(|a| a.ip());
    let mut conn: ServerConnection = Connection::Plain(stream);
    let mut session = ctx.with(|core| SinkSession::new(Rc::clone(&ctx.config), peer, core));
    let mut input = ReadBuffer::new(READ_BUFFER, MAX_READ_BUFFER);
    loop {
        let mut close = false;
        let mut starttls = false;
        while let Some(event) = session.poll_event() {
            match event {
                SinkEvent::Keep(message) => keep(&ctx, message).await,
                SinkEvent::StartTls => starttls = true,
                SinkEvent::Close => close = true,
            }
        }
        if write_output(&mut conn, &mut session).await.is_err() || close {
            break;
        }
        if starttls {
            let (Some(acceptor), Connection::Plain(tcp)) = (
                ctx.tls.as_ref(),
                std::mem::replace(&mut conn, Connection::Upgrading),
            ) else {
                break;
            };
            match crate::session::stream::tls_handshake(acceptor, tcp, TLS_HANDSHAKE_TIMEOUT).await
            {
                Ok(tls) => {
                    conn = tls;
                    input.clear();
                    ctx.with(|core| session.handle_tls_established(core));
                }
                Err(_) => break,
            }
            continue;
        }
        let read =
            glommio::timer::timeout(IDLE_TIMEOUT, async { Ok(conn.read(input.spare()).await?) })
                .await;
        match read {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                input.commit(n);
                let used = ctx.with(|core| session.handle_input(input.filled(), core));
                input.consume(used);
            }
        }
    }
    let _ = conn.close().await;
}

/// Writes the session's replies, sleeping where a delay is asked.
async fn write_output(
    conn: &mut ServerConnection,
    session: &mut SinkSession,
) -> std::io::Result<()> {
    let (out, delays) = session.output();
    if out.is_empty() {
        return Ok(());
    }
    let mut start = 0;
    for &(offset, wait) in delays {
        if offset > start {
            conn.write_all(&out[start..offset]).await?;
            conn.flush().await?;
            start = offset;
        }
        glommio::timer::sleep(wait).await;
    }
    conn.write_all(&out[start..]).await?;
    conn.flush().await?;
    session.clear_output();
    Ok(())
}

/// Writes one accepted message to `--dir`: envelope lines, then the content.
async fn keep(ctx: &CoreContext, message: KeptMessage) {
    let Some(dir) = &ctx.dir else { return };
    let n = ctx.kept.get();
    ctx.kept.set(n + 1);
    let path = dir.join(format!("{}-{n}.eml", ctx.core));
    let mut bytes = Vec::with_capacity(message.content.len() + 256);
    bytes.extend_from_slice(format!("X-Sink-Peer: {}\r\n", message.peer).as_bytes());
    bytes.extend_from_slice(format!("X-Sink-Helo: {}\r\n", message.helo).as_bytes());
    bytes.extend_from_slice(format!("X-Sink-From: <{}>\r\n", message.from).as_bytes());
    for rcpt in &message.recipients {
        bytes.extend_from_slice(format!("X-Sink-To: <{rcpt}>\r\n").as_bytes());
    }
    bytes.extend_from_slice(&message.content);
    // Written under a hidden name, then renamed: whoever reads the
    // directory never sees a half-written message.
    let partial = dir.join(format!(".{}-{n}.partial", ctx.core));
    let written = async {
        let mut file = glommio::io::BufferedFile::create(&partial).await?;
        file.write_at(bytes, 0).await?;
        file.rename(&path).await?;
        file.close().await
    }
    .await;
    if let Err(e) = written {
        tracing::warn!(path = %path.display(), error = %e, "cannot write a kept message");
    }
}
