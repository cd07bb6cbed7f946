//! Runs `spate blast`: one pinned glommio executor per core, each with its
//! share of the connections; every connection task takes message slots
//! from the shared budget, paces itself by the rate limit, and drives a
//! [`BlastClient`] over a glommio socket (TLS after STARTTLS). It holds
//! no protocol logic and prints nothing; the command line reports.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;

use super::client::{BlastClient, ClientPlan, Event, Failure, Outcome, Problem, Stage};
use super::message::{Message, MessageFactory};
use super::options::{BlastOptions, Budget};
use super::report::BlastStats;
use crate::session::stream::{ClientConnection, Connection, ReadBuffer};

/// Locked memory glommio reserves per executor: a load generator needs
/// little (its sockets are not DMA files).
const IO_MEMORY: usize = 1 << 20;
const READ_BUFFER: usize = 16 << 10;
const MAX_READ_BUFFER: usize = 1 << 20;

/// Why the run could not start.
#[derive(Debug, thiserror::Error)]
pub enum BlastError {
    #[error("starting executor {core}: {source}")]
    Executor { core: usize, source: std::io::Error },
    #[error("an executor ended abnormally: {0}")]
    Join(String),
    #[error(transparent)]
    Message(#[from] super::message::MessageError),
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
}

/// State shared by every core: the budget and live progress.
#[derive(Debug)]
pub struct Shared {
    /// Message slots left (`Budget::Messages`), taken one at a time.
    remaining: AtomicU64,
    deadline: Option<Instant>,
    next_seq: AtomicU64,
    /// Stop taking new messages (a signal, or the deadline).
    stop: AtomicBool,
    pub delivered: AtomicU64,
    pub failed: AtomicU64,
    cores_running: AtomicUsize,
}

impl Shared {
    fn new(budget: Budget, started: Instant) -> Self {
        let (remaining, deadline) = match budget {
            Budget::Messages(n) => (n, None),
            Budget::Duration(d) => (u64::MAX, Some(started + d)),
        };
        Shared {
            remaining: AtomicU64::new(remaining),
            deadline,
            next_seq: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            delivered: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            cores_running: AtomicUsize::new(0),
        }
    }

    /// The sequence number of the next message, or None when the budget is spent.
    fn take(&self) -> Option<u64> {
        if self.stop.load(Ordering::Relaxed) || self.deadline.is_some_and(|d| Instant::now() >= d) {
            return None;
        }
        self.remaining
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
            .ok()?;
        Some(self.next_seq.fetch_add(1, Ordering::Relaxed))
    }

    /// Asks every connection to finish its message and stop.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Release);
    }

    pub fn running(&self) -> bool {
        self.cores_running.load(Ordering::Acquire) > 0
    }
}

/// A running blast: poll `shared` for progress, then `finish`.
pub struct Run {
    pub shared: Arc<Shared>,
    pub started: Instant,
    /// Each core's figures and the moment its last connection finished.
    handles: Vec<glommio::ExecutorJoinHandle<(BlastStats, Instant)>>,
}

impl Run {
    /// Waits for every core and merges their figures; also returns the
    /// elapsed time (start to the last core's end).
    pub fn finish(self) -> Result<(BlastStats, Duration), BlastError> {
        let mut total = BlastStats::default();
        let mut last_end = self.started;
        for handle in self.handles {
            let (stats, ended) = handle.join().map_err(|e| BlastError::Join(e.to_string()))?;
            total.merge(&stats);
            last_end = last_end.max(ended);
        }
        Ok((total, last_end - self.started))
    }
}

/// What every connection task of one core shares.
struct CoreContext {
    options: Arc<BlastOptions>,
    shared: Arc<Shared>,
    plan: Rc<ClientPlan>,
    tls: Option<futures_rustls::TlsConnector>,
    factory: RefCell<MessageFactory>,
    stats: RefCell<BlastStats>,
    pacer: Option<Pacer>,
}

/// Spreads this core's messages evenly in time (its share of `--rate`).
struct Pacer {
    interval: Duration,
    next: std::cell::Cell<Instant>,
}

impl Pacer {
    async fn wait(&self) {
        let now = Instant::now();
        // Idle time is not banked: a slow start never turns into a burst.
        let slot = self.next.get().max(now);
        self.next.set(slot + self.interval);
        if slot > now {
            glommio::timer::sleep(slot - now).await;
        }
    }
}

/// Starts the executors; returns at once.
pub fn start(options: BlastOptions) -> Result<Run, BlastError> {
    let file: Option<Arc<[u8]>> = match &options.content {
        super::options::Content::File(path) => {
            Some(Arc::from(&*super::message::load_message_file(path)?))
        }
        super::options::Content::Generated(_) => None,
    };
    let tls = if options.starttls {
        Some(crate::tls::client_config(false, None)?)
    } else {
        None
    };
    // The CPUs this process may run on (taskset): core i is pinned to the
    // i-th of them, as `spate serve` does.
    let cpus = crate::shard::allowed_cpus();
    let cores = options.cores.clamp(1, options.connections.max(1));
    let started = Instant::now();
    let shared = Arc::new(Shared::new(options.budget, started));
    let options = Arc::new(options);
    let run_id = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut handles = Vec::with_capacity(cores);
    shared.cores_running.store(cores, Ordering::Release);
    for core in 0..cores {
        let connections =
            options.connections / cores + usize::from(core < options.connections % cores);
        let options = Arc::clone(&options);
        let shared_core = Arc::clone(&shared);
        let file = file.clone();
        let tls = tls.clone();
        let handle =
            glommio::LocalExecutorBuilder::new(glommio::Placement::Fixed(cpus[core % cpus.len()]))
                .name(&format!("blast-{core}"))
                .io_memory(IO_MEMORY)
                .spawn(move || async move {
                    let stats = run_core(
                        core,
                        cores,
                        connections,
                        options,
                        Arc::clone(&shared_core),
                        file,
                        tls,
                        run_id,
                    )
                    .await;
                    let ended = Instant::now();
                    shared_core.cores_running.fetch_sub(1, Ordering::AcqRel);
                    (stats, ended)
                })
                .map_err(|e| BlastError::Executor {
                    core,
                    source: std::io::Error::from(e),
                })?;
        handles.push(handle);
    }
    Ok(Run {
        shared,
        started,
        handles,
    })
}

#[allow(clippy::too_many_arguments)]
async fn run_core(
    core: usize,
    cores: usize,
    connections: usize,
    options: Arc<BlastOptions>,
    shared: Arc<Shared>,
    file: Option<Arc<[u8]>>,
    tls: Option<Arc<rustls::ClientConfig>>,
    run_id: u64,
) -> BlastStats {
    let factory = MessageFactory::new(
        &options.from,
        &options.helo,
        options.domains.clone(),
        options.recipients,
        &options.content,
        file.map(|f| Rc::from(&*f)),
        run_id,
        core,
        options.seed,
    );
    let pacer = options.rate.map(|rate| Pacer {
        interval: Duration::from_secs_f64(cores as f64 / rate),
        next: std::cell::Cell::new(Instant::now()),
    });
    let ctx = Rc::new(CoreContext {
        plan: Rc::new(ClientPlan {
            helo: options.helo.clone(),
            starttls: options.starttls,
            auth: options.auth.clone(),
            pipelining: options.pipelining,
            bdat: options.bdat,
        }),
        tls: tls.map(futures_rustls::TlsConnector::from),
        factory: RefCell::new(factory),
        stats: RefCell::new(BlastStats::default()),
        pacer,
        options,
        shared,
    });
    let tasks: Vec<_> = (0..connections)
        .map(|_| glommio::spawn_local(connection_task(Rc::clone(&ctx))))
        .collect();
    for task in tasks {
        task.await;
    }
    ctx.stats.replace(BlastStats::default())
}

/// One connection slot: sends messages until the budget is spent,
/// reconnecting after `--per-connection` messages or a lost connection.
async fn connection_task(ctx: Rc<CoreContext>) {
    let mut message = Message::default();
    let mut live: Option<Live> = None;
    loop {
        if let Some(pacer) = &ctx.pacer {
            pacer.wait().await;
        }
        let Some(seq) = ctx.shared.take() else { break };
        let conn = match live.as_mut() {
            Some(conn) => conn,
            None => match Live::open(&ctx).await {
                Ok(conn) => live.insert(conn),
                Err(failure) => {
                    ctx.stats.borrow_mut().record_setup_failure(failure);
                    ctx.shared.failed.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
            },
        };
        ctx.factory.borrow_mut().fill(seq, &mut message);
        let last = ctx.options.per_connection > 0
            && conn.client.transactions() + 1 >= ctx.options.per_connection;
        let outcome = conn.transact(&message, last, ctx.options.timeout).await;
        ctx.stats.borrow_mut().record_outcome(&outcome);
        let counter = if outcome.delivered {
            &ctx.shared.delivered
        } else {
            &ctx.shared.failed
        };
        counter.fetch_add(1, Ordering::Relaxed);
        let spent = ctx.options.per_connection > 0
            && conn.client.transactions() >= ctx.options.per_connection;
        if conn.client.is_closed() || spent {
            if let Some(conn) = live.take() {
                conn.quit(ctx.options.timeout).await;
            }
        }
    }
    if let Some(conn) = live {
        conn.quit(ctx.options.timeout).await;
    }
}

/// One open connection and its client core.
struct Live {
    link: ClientConnection,
    client: BlastClient,
    input: ReadBuffer,
    tls: Option<futures_rustls::TlsConnector>,
    target: SocketAddr,
}

impl Live {
    /// Connects and sets up the session (greeting, EHLO, STARTTLS, AUTH).
    async fn open(ctx: &CoreContext) -> Result<Live, Failure> {
        let started = Instant::now();
        let target = ctx.options.target;
        let timeout = ctx.options.timeout;
        let connect_failed = |problem| Failure {
            stage: Stage::Connect,
            problem,
        };
        let tcp = match glommio::timer::timeout(timeout, async { TcpStream::connect(target).await })
            .await
        {
            Ok(tcp) => tcp,
            Err(glommio::GlommioError::TimedOut(_)) => {
                return Err(connect_failed(Problem::Timeout))
            }
            Err(_) => return Err(connect_failed(Problem::Io)),
        };
        // Small commands and replies: never wait for delayed ACKs.
        let _ = tcp.set_nodelay(true);
        let mut live = Live {
            link: Connection::Plain(tcp),
            client: BlastClient::new(Rc::clone(&ctx.plan)),
            input: ReadBuffer::new(READ_BUFFER, MAX_READ_BUFFER),
            tls: ctx.tls.clone(),
            target,
        };
        loop {
            match live.next_event(timeout).await {
                Event::Ready => {
                    ctx.stats.borrow_mut().record_connection(started.elapsed());
                    return Ok(live);
                }
                Event::StartTls => live.start_tls(timeout).await,
                Event::SetupFailed(failure) => {
                    live.quit(Duration::from_secs(1)).await;
                    return Err(failure);
                }
                Event::Closed => {
                    return Err(Failure {
                        stage: Stage::Greeting,
                        problem: Problem::ConnectionLost,
                    })
                }
                Event::Done(_) => {}
            }
        }
    }

    async fn start_tls(&mut self, timeout: Duration) {
        self.input.clear();
        let connector = self.tls.clone();
        let link = std::mem::replace(&mut self.link, Connection::Upgrading);
        let (Some(connector), Connection::Plain(tcp)) = (connector, link) else {
            self.client.handle_broken(Problem::Tls, Instant::now());
            return;
        };
        let name = rustls::pki_types::ServerName::IpAddress(self.target.ip().into());
        let handshake =
            crate::session::stream::client_tls_handshake(&connector, name, tcp, timeout).await;
        match handshake {
            Ok(tls) => {
                self.link = Connection::Tls(Box::new(tls));
                self.client.handle_tls_established();
            }
            Err(_) => self.client.handle_broken(Problem::Tls, Instant::now()),
        }
    }

    /// One message, start to final reply; `last`: QUIT may ride along.
    async fn transact(&mut self, message: &Message, last: bool, timeout: Duration) -> Outcome {
        let now = Instant::now();
        if !self
            .client
            .start_transaction(&message.from, &message.recipients, &message.content, now)
        {
            // Not ready (cannot happen after `open`) or no recipient.
            return Outcome {
                delivered: false,
                recipients_accepted: 0,
                size: message.content.len(),
                started: now,
                content_sent: None,
                finished: now,
                failures: vec![Failure {
                    stage: Stage::Mail,
                    problem: Problem::ConnectionLost,
                }],
            };
        }
        if last {
            self.client.quit_after_transaction();
        }
        loop {
            if let Event::Done(outcome) = self.next_event(timeout).await {
                return outcome;
            }
        }
    }

    /// QUIT (when ready), wait for the reply a little, close.
    async fn quit(mut self, timeout: Duration) {
        self.client.quit();
        let wait = timeout.min(Duration::from_secs(5));
        let _ = glommio::timer::timeout(wait, async {
            while self.next_event(wait).await != Event::Closed {}
            Ok(())
        })
        .await;
        let _ = self.link.close().await;
    }

    /// Writes what the client wants written, reads what the server says,
    /// until the client has an event.
    async fn next_event(&mut self, timeout: Duration) -> Event {
        loop {
            if let Some(event) = self.client.poll_event() {
                return event;
            }
            if self.client.is_closed() {
                return Event::Closed;
            }
            if let Some(out) = self.client.poll_output() {
                let len = out.len();
                let written = glommio::timer::timeout(timeout, async {
                    self.link.write_all(out).await?;
                    self.link.flush().await?;
                    Ok(())
                })
                .await;
                match written {
                    Ok(()) => self.client.consume_output(len, Instant::now()),
                    Err(e) => self.client.handle_broken(problem_of(&e), Instant::now()),
                }
                continue;
            }
            let read = glommio::timer::timeout(timeout, async {
                Ok(self.link.read(self.input.spare()).await?)
            })
            .await;
            let now = Instant::now();
            match read {
                Ok(0) => self.client.handle_broken(Problem::ConnectionLost, now),
                Ok(n) => {
                    self.input.commit(n);
                    let used = self.client.handle_input(self.input.filled(), now);
                    self.input.consume(used);
                }
                Err(e) => self.client.handle_broken(problem_of(&e), now),
            }
        }
    }
}

fn problem_of(e: &glommio::GlommioError<()>) -> Problem {
    match e {
        glommio::GlommioError::TimedOut(_) => Problem::Timeout,
        _ => Problem::ConnectionLost,
    }
}
