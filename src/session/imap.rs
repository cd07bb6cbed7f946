//! Drives one IMAP connection: frames received bytes into commands with
//! the sans-IO `CommandReader`, runs each command through the IMAP
//! `Session` on the blocking pool (it reads and writes the mailbox store
//! synchronously), writes the replies on the executor (a long FETCH reply
//! part by part, each part's job ending before it is written, so a client
//! that does not read holds no pool thread), and carries out what the
//! session asks for: STARTTLS, IDLE (woken by the folder's watch), the
//! delay after a failed login, LOGOUT. Implicit TLS for imaps. It makes no
//! protocol decision of its own.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use glommio::net::TcpStream;

use crate::blocking::Lane;
use crate::imap::reader::{is_done, LineStep, CONTINUATION};
use crate::imap::session::{Backend, Outcome, PeerInfo, Session};
use crate::imap::{parse_command, CommandReader, ReaderConfig, Step};
use crate::local::{LocalTier, Login};
use crate::mailbox::{MailboxError, Subscription, UserMailbox};
use crate::metrics::ConnectionKind;
use crate::session::counted::CountedConnection;
use crate::session::limits::Family;
use crate::session::stream::{
    accept_tls, close_within, flush_within, open_connection, plaintext_allowed, refuse,
    wait_for_client, write_all_within, write_within, Connection, ReadBuffer, ServerConnection,
    Wake,
};
use crate::shard::ShardContext;
use crate::spool::SegmentStore;

const INITIAL_READ_BUFFER: usize = 1024;
const MAX_READ_BUFFER: usize = 64 * 1024;
/// RFC 3501 5.4: the autologout timer is at least 30 minutes.
const AUTOLOGOUT: Duration = Duration::from_secs(30 * 60);
/// How often an idling session looks for changes in a folder that
/// cannot be watched.
const IDLE_POLL: Duration = Duration::from_secs(1);
const TOO_MANY_CONNECTIONS: &[u8] = b"* BYE Too many connections, try again later\r\n";
const SHUTTING_DOWN: &[u8] = b"* BYE Server shutting down\r\n";

/// The mailbox tier as the IMAP session's backend, for one client address
/// (its failed logins are throttled).
struct TierBackend {
    tier: Option<Arc<LocalTier>>,
    ip: IpAddr,
    /// The throttle's delay for the last failed login, in milliseconds:
    /// the driver waits it out (on the executor) before answering.
    failure_delay_ms: AtomicU64,
}

impl TierBackend {
    /// The delay the last failure earned, once.
    fn take_failure_delay(&self) -> Duration {
        Duration::from_millis(self.failure_delay_ms.swap(0, Ordering::Relaxed))
    }
}

impl Backend for TierBackend {
    fn authenticate(&self, login: &str, password: &str) -> Login {
        let Some(tier) = &self.tier else {
            return Login::Failed;
        };
        let verdict = if tier.login_blocked(self.ip, Instant::now()) {
            Login::Failed
        } else {
            tier.authenticate(login, password)
        };
        match &verdict {
            Login::Success(user) => tier.login_succeeded(self.ip, login, user),
            Login::Failed => {
                let delay = tier.login_failed(self.ip, login, Instant::now());
                let ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
                self.failure_delay_ms.store(ms, Ordering::Relaxed);
            }
            Login::Temporary => {}
        }
        verdict
    }

    fn mailbox(&self, user: &str) -> Result<UserMailbox, MailboxError> {
        match &self.tier {
            Some(tier) => tier.mailbox(user),
            None => Err(MailboxError::NotPermitted("no mailbox tier is configured")),
        }
    }

    fn quota(&self, user: &str) -> Option<u64> {
        self.tier.as_ref()?.quota(user)
    }
}

/// Serves one accepted IMAP connection; `implicit_tls` for imaps (993).
pub async fn serve<S: SegmentStore>(
    ctx: Rc<ShardContext<S>>,
    stream: TcpStream,
    peer: SocketAddr,
    implicit_tls: bool,
) {
    let _ = stream.set_nodelay(true);
    let Ok(_slot) = ctx.limits.admit(peer.ip(), Family::Mailbox) else {
        return refuse(stream, TOO_MANY_CONNECTIONS).await;
    };
    let _counted = CountedConnection::open(&ctx, ConnectionKind::Imap);
    tracing::debug!(%peer, protocol = "imap", "connect");
    let acceptor = if implicit_tls {
        match ctx.tls() {
            Some(acceptor) => Some(acceptor),
            None => return,
        }
    } else {
        None
    };
    let Some(conn) = open_connection(
        stream,
        acceptor.as_ref(),
        Duration::from_secs(60),
        peer,
        &ctx.metrics,
    )
    .await
    else {
        return;
    };
    let ip = peer.ip().to_canonical();
    let peer_info = PeerInfo {
        tls: implicit_tls,
        plaintext_allowed: plaintext_allowed(&ctx.config.auth, implicit_tls, ip),
    };
    // Small limits until the login; `after_login` once it succeeded.
    let reader = CommandReader::new(ReaderConfig::before_login());
    let backend = Arc::new(TierBackend {
        tier: ctx.local.clone(),
        ip,
        failure_delay_ms: AtomicU64::new(0),
    });
    let mut driver = Driver {
        session: Some(Session::new(Arc::clone(&ctx.imap), peer_info)),
        ctx,
        conn,
        input: ReadBuffer::new(INITIAL_READ_BUFFER, MAX_READ_BUFFER),
        reader,
        backend,
        peer,
        last_activity: Instant::now(),
        shutdown_seen: false,
        logged_in: false,
    };
    match driver.run().await {
        Ok(()) => tracing::debug!(%peer, "disconnect"),
        Err(e) => tracing::debug!(%peer, error = %e, "disconnect"),
    }
    let limit = driver.ctx.config.local.write_timeout;
    drop(driver.session.take());
    close_within(&mut driver.conn, limit).await;
}

/// The reader's limits for a logged-in user: literals up to the message
/// size limit (APPEND).
fn after_login(max_message_size: usize) -> ReaderConfig {
    ReaderConfig {
        max_literal: max_message_size as u64,
        max_command: max_message_size as u64 + 64 * 1024,
        ..ReaderConfig::default()
    }
}

struct Driver<S: SegmentStore> {
    ctx: Rc<ShardContext<S>>,
    /// `None` only while a command runs on the blocking pool.
    session: Option<Session>,
    conn: ServerConnection,
    input: ReadBuffer,
    reader: CommandReader,
    backend: Arc<TierBackend>,
    peer: SocketAddr,
    last_activity: Instant,
    shutdown_seen: bool,
    /// The login has been counted.
    logged_in: bool,
}

/// What the driver does after handling the buffered input.
enum Next {
    Read,
    Close,
}

impl<S: SegmentStore> Driver<S> {
    async fn run(&mut self) -> io::Result<()> {
        self.flush().await?;
        loop {
            if let Next::Close = self.process().await? {
                self.flush().await?;
                return Ok(());
            }
            self.flush().await?;
            // Before login a short idle limit (`[auth] login_timeout`, as
            // Dovecot's login processes); RFC 3501 5.4's 30 minutes after.
            let idle = if self.logged_in {
                AUTOLOGOUT
            } else {
                self.ctx.config.auth.login_timeout
            };
            match self.wait(self.last_activity + idle).await {
                Wake::Read(Ok(0)) => return Ok(()),
                Wake::Read(Ok(n)) => self.input.commit(n),
                Wake::Read(Err(e)) => return Err(e),
                Wake::Deadline => {
                    self.session_mut()?.timeout();
                    self.flush().await?;
                    return Ok(());
                }
                Wake::Shutdown => {
                    self.shutdown_seen = true;
                    self.write_raw(SHUTTING_DOWN).await?;
                    return Ok(());
                }
            }
        }
    }

    fn session_mut(&mut self) -> io::Result<&mut Session> {
        self.session
            .as_mut()
            .ok_or_else(|| io::Error::other("imap session lost"))
    }

    /// Moves received bytes into the reader and handles every complete
    /// command or SASL line in it.
    async fn process(&mut self) -> io::Result<Next> {
        loop {
            let taken = self.reader.push(self.input.filled());
            self.input.consume(taken);
            if taken > 0 {
                self.last_activity = Instant::now();
            }
            let outcome = if self.session_mut()?.wants_sasl_line() {
                let line = match self.reader.next_line() {
                    LineStep::Line(line) => line.to_vec(),
                    LineStep::TooLong => b"*".to_vec(),
                    LineStep::Incomplete => return Ok(Next::Read),
                };
                // Before login: the urgent lane, as every password check.
                self.on_pool(Lane::Urgent, move |session, backend| {
                    session.sasl_response(&line, backend)
                })
                .await?
            } else {
                match self.reader.next_command() {
                    Step::Incomplete => return Ok(Next::Read),
                    Step::NeedContinuation => {
                        self.write_raw(CONTINUATION).await?;
                        continue;
                    }
                    Step::Rejected(rejection) => {
                        if let Some(session) = self.session.as_mut() {
                            session.rejection(&rejection);
                        }
                        Outcome::Continue
                    }
                    Step::Command(bytes) => {
                        let command = bytes.to_vec();
                        let lane = self.lane()?;
                        let mut outcome = self
                            .on_pool(lane, move |session, backend| {
                                match parse_command(&command) {
                                    Ok(command) => session.execute(command, backend),
                                    Err(error) => {
                                        session.command_error(&error);
                                        Outcome::Continue
                                    }
                                }
                            })
                            .await?;
                        // A long FETCH reply, part by part: each is written
                        // here, on the executor, so a client that reads
                        // slowly or not at all holds no pool thread.
                        while outcome == Outcome::Partial {
                            self.flush().await?;
                            outcome = self
                                .on_pool(Lane::Mailbox, |session, _| session.resume())
                                .await?;
                        }
                        outcome
                    }
                }
            };
            if self.session_mut()?.is_logged_out() {
                return Ok(Next::Close);
            }
            if !self.logged_in && self.session_mut()?.is_authenticated() {
                self.logged_in = true;
                self.reader
                    .set_config(after_login(self.ctx.smtp.max_message_size));
                tracing::debug!(peer = %self.peer, "imap login");
                self.ctx.metrics.borrow_mut().counters.logins[ConnectionKind::Imap as usize] += 1;
            }
            match outcome {
                // Resumed above until another outcome.
                Outcome::Continue | Outcome::Partial => {}
                Outcome::AuthFailed => {
                    tracing::debug!(peer = %self.peer, "imap login failed");
                    self.ctx.metrics.borrow_mut().counters.auth_failures += 1;
                    let delay = self.backend.take_failure_delay();
                    if !delay.is_zero() {
                        glommio::timer::sleep(delay).await;
                    }
                }
                Outcome::StartTls => {
                    if !self.start_tls().await? {
                        return Ok(Next::Close);
                    }
                }
                Outcome::Idle => {
                    if let Next::Close = self.idle().await? {
                        return Ok(Next::Close);
                    }
                }
                Outcome::Logout => return Ok(Next::Close),
            }
            self.flush().await?;
        }
    }

    /// The pool's lane for the session's next command: before login the
    /// urgent one (the commands there are small, but for the password
    /// check, which must never wait behind mailbox reads), after it the
    /// mailbox one.
    fn lane(&mut self) -> io::Result<Lane> {
        Ok(if self.session_mut()?.is_authenticated() {
            Lane::Mailbox
        } else {
            Lane::Urgent
        })
    }

    /// Runs `job` with the session on a pool thread (commands read and write
    /// the mailbox store synchronously) and takes the session back.
    async fn on_pool<F>(&mut self, lane: Lane, job: F) -> io::Result<Outcome>
    where
        F: FnOnce(&mut Session, &dyn Backend) -> Outcome + Send + 'static,
    {
        let mut session = self
            .session
            .take()
            .ok_or_else(|| io::Error::other("imap session lost"))?;
        let backend = Arc::clone(&self.backend);
        let (session, outcome) = self
            .ctx
            .blocking
            .run(lane, move || {
                let outcome = job(&mut session, backend.as_ref());
                (session, outcome)
            })
            .await
            .map_err(io::Error::other)?;
        self.session = Some(session);
        Ok(outcome)
    }

    /// RFC 2177: until DONE, report the mailbox's changes as they happen.
    /// The selected folder is watched (inotify: spate's own deliveries and
    /// other programs' changes alike), so an update goes out as soon as
    /// the change is on disk and nothing runs meanwhile; a folder that
    /// cannot be watched is polled every `IDLE_POLL`.
    async fn idle(&mut self) -> io::Result<Next> {
        let mut watch = self.watch_selected()?;
        if watch.is_some() {
            // A change between the IDLE command's own sync and the watch
            // starting would otherwise wait for the next one.
            self.on_pool(Lane::Mailbox, |session, backend| {
                session.idle_poll(backend);
                Outcome::Continue
            })
            .await?;
        }
        self.flush().await?;
        loop {
            if let LineStep::Line(line) = self.reader.next_line() {
                let done = is_done(line);
                if done {
                    self.on_pool(Lane::Mailbox, |session, backend| {
                        session.idle_done(backend);
                        Outcome::Continue
                    })
                    .await?;
                    return Ok(Next::Read);
                }
                // Anything else during IDLE is a protocol error: end it.
                return Ok(Next::Close);
            }
            let wake = match watch.as_mut() {
                Some(watch) => {
                    let client = self.wait(self.last_activity + AUTOLOGOUT);
                    let changed = async {
                        watch.changed().await;
                        None
                    };
                    futures_lite::future::or(async { Some(client.await) }, changed).await
                }
                None => Some(self.wait(Instant::now() + IDLE_POLL).await),
            };
            match wake {
                Some(Wake::Read(Ok(0))) => return Ok(Next::Close),
                Some(Wake::Read(Ok(n))) => {
                    self.input.commit(n);
                    let taken = self.reader.push(self.input.filled());
                    self.input.consume(taken);
                    self.last_activity = Instant::now();
                }
                Some(Wake::Read(Err(e))) => return Err(e),
                Some(Wake::Deadline) if self.last_activity.elapsed() > AUTOLOGOUT => {
                    self.session_mut()?.timeout();
                    return Ok(Next::Close);
                }
                // The folder changed, or (unwatched) the poll is due.
                None | Some(Wake::Deadline) => {
                    self.on_pool(Lane::Mailbox, |session, backend| {
                        session.idle_poll(backend);
                        Outcome::Continue
                    })
                    .await?;
                    self.flush().await?;
                }
                Some(Wake::Shutdown) => {
                    self.shutdown_seen = true;
                    self.write_raw(SHUTTING_DOWN).await?;
                    return Ok(Next::Close);
                }
            }
        }
    }

    /// A watch on the selected folder, if there is one and it can be
    /// watched.
    fn watch_selected(&mut self) -> io::Result<Option<Subscription>> {
        let Some(tier) = self.ctx.local.clone() else {
            return Ok(None);
        };
        Ok(self
            .session_mut()?
            .selected_dir()
            .and_then(|dir| tier.watch_folder(dir)))
    }

    /// RFC 3501 6.2.1: the OK is in the clear, pipelined input is dropped,
    /// then the session goes on under TLS.
    async fn start_tls(&mut self) -> io::Result<bool> {
        self.flush().await?;
        self.input.clear();
        self.reader.clear();
        let Some(acceptor) = self.ctx.tls() else {
            return Ok(false);
        };
        let Connection::Plain(tcp) = std::mem::replace(&mut self.conn, Connection::Upgrading)
        else {
            return Ok(false);
        };
        match accept_tls(&acceptor, tcp, Duration::from_secs(60), &self.ctx.metrics).await {
            Ok(conn) => {
                tracing::debug!(peer = %self.peer, "starttls");
                self.conn = conn;
                self.session_mut()?.tls_established();
                Ok(true)
            }
            Err(e) => {
                tracing::debug!(peer = %self.peer, error = %e, "IMAP STARTTLS handshake failed");
                Ok(false)
            }
        }
    }

    async fn wait(&mut self, deadline: Instant) -> Wake {
        let shutdown = (!self.shutdown_seen).then_some(&*self.ctx.shutdown);
        wait_for_client(&mut self.conn, &mut self.input, deadline, shutdown).await
    }

    /// Writes the session's output, each write bounded by `[local]
    /// write_timeout`: a client that stops reading is disconnected then
    /// (and its session dropped), not after the autologout timer.
    async fn flush(&mut self) -> io::Result<()> {
        let Some(session) = self.session.as_mut() else {
            return Ok(());
        };
        if session.output().is_empty() {
            return Ok(());
        }
        let limit = self.ctx.config.local.write_timeout;
        while !session.output().is_empty() {
            let n = write_within(&mut self.conn, session.output(), limit).await?;
            session.consume_output(n);
        }
        flush_within(&mut self.conn, limit).await
    }

    async fn write_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.flush().await?;
        write_all_within(&mut self.conn, bytes, self.ctx.config.local.write_timeout).await
    }
}
