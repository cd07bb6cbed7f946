//! Drives one inbound SMTP connection (relay port, submission, or
//! submissions with implicit TLS) or LMTP connection: feeds received bytes
//! to the sans-IO `ServerSession`, writes its replies, stores finished
//! messages in this core's spool (LMTP: delivers them into the mailboxes,
//! `session::lmtp`), performs STARTTLS, checks AUTH credentials against the
//! mailbox tier (throttled per client address) and enforces deadlines. It
//! makes no protocol decision of its own.

use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use futures_lite::AsyncWriteExt;
use glommio::net::TcpStream;

use crate::blocking::{JobFailed, Lane};
use crate::dkim::SignError;
use crate::events::Event as LifeEvent;
use crate::local::Login;
use crate::metrics::ConnectionKind;
use crate::queue::{QueueEntry, Shape};
use crate::session::counted::CountedConnection;
use crate::session::limits::{Family, Refusal};
use crate::session::lmtp;
use crate::session::login::check_login;
use crate::session::stream::{
    accept_tls, open_connection, refuse, wait_for_client, Connection, ReadBuffer, ServerConnection,
    Wake,
};
use crate::shard::ShardContext;
use crate::smtp::auth::Credentials;
use crate::smtp::policy::{LocalPolicy, NoMailboxes};
use crate::smtp::reply;
use crate::smtp::{AuthOutcome, Event, Message, PeerInfo, ServerSession, StoreFailure};
use crate::spool::SegmentStore;

/// A new connection starts with a read buffer this small.
const INITIAL_READ_BUFFER: usize = 1024;
/// Reads never need more than this beyond the longest command line: the
/// core consumes message data as it arrives.
const MAX_READ_BUFFER: usize = 64 * 1024;

/// Which kind of SMTP listener accepted the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpListener {
    /// Port 25: mail from anywhere for local domains, relaying by network.
    Relay,
    /// Port 587 (RFC 6409): AUTH required, STARTTLS offered.
    Submission,
    /// Port 465 (RFC 8314): submission inside implicit TLS.
    Submissions,
    /// LMTP (RFC 2033) from a trusted MTA: final delivery into local
    /// mailboxes, no AUTH, no relaying.
    Lmtp,
}

/// Serves one accepted connection until it closes.
pub async fn serve<S: SegmentStore>(
    ctx: Rc<ShardContext<S>>,
    stream: TcpStream,
    peer: SocketAddr,
    listener: SmtpListener,
) {
    // Without TCP_NODELAY every small reply waits for the peer's delayed
    // ACK (about 40 ms); a failure only costs speed.
    let _ = stream.set_nodelay(true);
    ctx.metrics.borrow_mut().counters.connections += 1;
    let _slot = match ctx.limits.admit(peer.ip(), Family::Smtp) {
        Ok(slot) => slot,
        Err(refusal) => {
            ctx.metrics.borrow_mut().counters.connections_refused += 1;
            tracing::debug!(%peer, ?refusal, "smtp connection refused");
            let reply = match refusal {
                Refusal::TooManyInTotal => reply::TOO_MANY_CONNECTIONS,
                Refusal::TooManyFromAddress => reply::TOO_MANY_CONNECTIONS_FROM_IP,
            };
            return refuse(stream, reply).await;
        }
    };
    let kind = match listener {
        // LMTP is counted with SMTP: the connection metrics keep their labels.
        SmtpListener::Relay | SmtpListener::Lmtp => ConnectionKind::Smtp,
        SmtpListener::Submission | SmtpListener::Submissions => ConnectionKind::Submission,
    };
    let _counted = CountedConnection::open(&ctx, kind);
    tracing::debug!(%peer, protocol = kind.label(), "connect");
    let implicit_tls = listener == SmtpListener::Submissions;
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
        ctx.smtp.timeouts.command,
        peer,
        &ctx.metrics,
    )
    .await
    else {
        return;
    };
    let peer_info = PeerInfo {
        addr: peer,
        may_relay: listener == SmtpListener::Relay && ctx.config.relay.allows(peer.ip()),
        tls: implicit_tls,
    };
    let config = match listener {
        SmtpListener::Relay => Rc::clone(&ctx.smtp),
        SmtpListener::Lmtp => Rc::clone(&ctx.lmtp),
        SmtpListener::Submission | SmtpListener::Submissions => Rc::clone(&ctx.submission),
    };
    let mut session = ServerSession::new(config, peer_info, Instant::now());
    session = match &ctx.local {
        Some(local) => session.with_policy(Rc::new(SharedTier(Arc::clone(local)))),
        None => session.with_policy(Rc::new(NoMailboxes)),
    };
    if let Connection::Tls(stream) = &conn {
        session.set_tls_details(crate::tls::agreed(stream.get_ref().1));
    }
    let mut driver = Driver {
        ctx,
        kind,
        session,
        conn,
        input: ReadBuffer::new(INITIAL_READ_BUFFER, MAX_READ_BUFFER),
        acks_pending: Vec::new(),
        shutdown_seen: false,
        may_relay: peer_info.may_relay,
        lmtp: listener == SmtpListener::Lmtp,
    };
    match driver.run(peer).await {
        Ok(()) => tracing::debug!(%peer, "disconnect"),
        Err(e) => tracing::debug!(%peer, error = %e, "disconnect"),
    }
    let _ = driver.conn.close().await;
    driver.take_counters();
}

struct Driver<S: SegmentStore> {
    ctx: Rc<ShardContext<S>>,
    kind: ConnectionKind,
    session: ServerSession,
    conn: ServerConnection,
    input: ReadBuffer,
    /// When the end of each stored message's data arrived; the latency is
    /// recorded once the reply that acknowledges it has been written.
    acks_pending: Vec<Instant>,
    shutdown_seen: bool,
    /// The client's address is in `[relay] allow_networks` (relay port):
    /// with AUTH, what makes its mail ours to sign.
    may_relay: bool,
    /// An LMTP listener: messages go into the mailboxes, not the spool.
    lmtp: bool,
}

impl<S: SegmentStore> Driver<S> {
    async fn run(&mut self, peer: SocketAddr) -> io::Result<()> {
        loop {
            if !self.process_input(peer).await? {
                return Ok(());
            }
            let had_output = !self.session.output().is_empty();
            self.flush().await?;
            if self.session.is_closed() {
                return Ok(());
            }
            // The core stops parsing while its output is full: once that
            // is written, parse what the client pipelined before reading.
            if had_output && !self.input.filled().is_empty() {
                continue;
            }
            match self.wait_for_client().await {
                Wake::Read(Ok(0)) => return Ok(()),
                Wake::Read(Ok(n)) => self.input.commit(n),
                Wake::Read(Err(e)) => return Err(e),
                Wake::Deadline => self.session.handle_timeout(Instant::now()),
                Wake::Shutdown => {
                    self.shutdown_seen = true;
                    self.session.handle_shutdown();
                }
            }
        }
    }

    /// Hands every buffered byte to the core and acts on its events.
    /// Returns false when the connection must close.
    async fn process_input(&mut self, peer: SocketAddr) -> io::Result<bool> {
        loop {
            let consumed =
                self.session
                    .handle_input(self.input.filled(), Instant::now(), SystemTime::now());
            self.input.consume(consumed);
            let mut acted = false;
            while let Some(event) = self.session.poll_event() {
                acted = true;
                match event {
                    // Boxed: these futures are large and rare, and an idle
                    // session's task would otherwise carry their size.
                    Event::Message(message) if self.lmtp => {
                        let verdicts = Box::pin(lmtp::deliver(&self.ctx, message)).await;
                        self.session.handle_delivered(&verdicts, Instant::now());
                    }
                    Event::Message(message) => Box::pin(self.store(message)).await,
                    Event::StartTls => {
                        if !Box::pin(self.start_tls(peer)).await? {
                            return Ok(false);
                        }
                    }
                    Event::Authenticate(credentials) => {
                        Box::pin(self.authenticate(credentials, peer)).await;
                    }
                    Event::Close => {
                        self.flush().await?;
                        return Ok(false);
                    }
                }
            }
            if consumed == 0 && !acted {
                return Ok(true);
            }
        }
    }

    async fn store(&mut self, message: Message) {
        let data_ended = Instant::now();
        let Message {
            envelope,
            mut body,
            trace_id_at,
        } = message;
        // Mail we relay for our own clients (allowed networks, AUTH) is
        // signed; mail from the open internet to our domains is not.
        let unsigned_len = body.len();
        let dkim = if self.may_relay || self.session.authenticated_user().is_some() {
            self.sign(&mut body).await
        } else {
            None
        };
        // The DKIM-Signature field goes first: our Received header, and
        // the slot for its queue id, move down by its length.
        let trace_id_at = trace_id_at.map(|at| at + body.len().saturating_sub(unsigned_len));
        let size = body.len() as u64;
        let result = self
            .ctx
            .spool
            .store_traced(&envelope, body, trace_id_at)
            .await;
        let now = Instant::now();
        match result {
            Ok(id) => {
                self.ctx.queue.borrow_mut().insert(
                    id,
                    QueueEntry {
                        size,
                        recipients: envelope.recipients.len(),
                        received_at: envelope.received_at,
                        acknowledged_at: Some(now),
                        shape: Rc::new(Shape::of(&envelope)),
                    },
                );
                {
                    let mut metrics = self.ctx.metrics.borrow_mut();
                    metrics.counters.messages_received += 1;
                    metrics.counters.bytes_received += size;
                }
                tracing::info!(
                    %id,
                    from = %envelope.sender,
                    to = %Recipients(&envelope.recipients),
                    size,
                    client = %envelope.client_ip,
                    user = self.session.authenticated_user(),
                    dkim = dkim.as_deref(),
                    "received"
                );
                // Durable in the event log before the 250, unless that
                // takes longer than `[events] received_sync_wait`.
                self.ctx
                    .emit_durable(|| LifeEvent {
                        client: Some(envelope.client_ip.to_string()),
                        ..LifeEvent::received(id.to_string(), &envelope, size)
                    })
                    .await;
                self.ctx.delivery_wake.notify();
                self.session.handle_stored(Ok(&id.to_string()), now);
                self.acks_pending.push(data_ended);
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not store a message");
                self.ctx.metrics.borrow_mut().counters.store_failures += 1;
                let failure = if e.is_disk_full() {
                    StoreFailure::DiskFull
                } else {
                    StoreFailure::Temporary
                };
                self.session.handle_stored(Err(failure), now);
            }
        }
    }

    /// Signs the message with the key of its From domain, once, before it
    /// is stored: the spooled bytes carry the `DKIM-Signature:` field, so
    /// every delivery attempt sends them as they are. The body is as it
    /// will be relayed (dot-unstuffed DATA or BDAT chunks joined, CRLF
    /// lines, the tenant header already gone, our `Received:` on top,
    /// which is not signed). An RSA signature (hundreds of microseconds)
    /// is made on the blocking pool so the core serves other sessions
    /// meanwhile; the 250 still waits for the signed bytes to be durable.
    /// A failure is logged and counted, and the message goes unsigned.
    /// Returns the signing domain (`d=`).
    async fn sign(&mut self, body: &mut Vec<u8>) -> Option<String> {
        let key = self.ctx.dkim().key_for(body)?;
        let signed = if key.is_slow() {
            let message = Arc::new(std::mem::take(body));
            let (job_key, job_message) = (Arc::clone(&key), Arc::clone(&message));
            let result = self
                .ctx
                .blocking
                .run(Lane::Urgent, move || job_key.sign(&job_message))
                .await;
            // The job's clone is dropped before its result is sent (or
            // while it unwinds), so this is the only one left; cloning is
            // the fallback that cannot lose the message.
            *body = Arc::try_unwrap(message).unwrap_or_else(|shared| (*shared).clone());
            result.unwrap_or_else(|JobFailed| {
                Err(SignError {
                    domain: key.domain.clone(),
                    why: "the signing job failed".to_owned(),
                })
            })
        } else {
            key.sign(body)
        };
        match signed {
            Ok(header) => {
                body.splice(0..0, header);
                self.ctx.metrics.borrow_mut().counters.dkim_signed += 1;
                Some(key.domain.clone())
            }
            Err(e) => {
                tracing::warn!(error = %e, "message accepted unsigned");
                self.ctx.metrics.borrow_mut().counters.dkim_failures += 1;
                None
            }
        }
    }

    /// Checks AUTH credentials against the user directory, off the
    /// executor. Proxy logins (an authzid naming someone else) are refused;
    /// a client with recent failures waits longer for each answer.
    async fn authenticate(&mut self, credentials: Credentials, peer: SocketAddr) {
        let proxy = !credentials.authzid.is_empty() && credentials.authzid != credentials.username;
        let login = if proxy {
            self.ctx.metrics.borrow_mut().counters.auth_failures += 1;
            Login::Failed
        } else {
            let Credentials {
                username, password, ..
            } = credentials;
            check_login(&self.ctx, peer.ip(), username, password).await
        };
        let outcome = match login {
            Login::Success(user) => {
                tracing::debug!(%peer, %user, "smtp auth");
                self.ctx.metrics.borrow_mut().counters.logins[self.kind as usize] += 1;
                AuthOutcome::Success { user }
            }
            Login::Failed => {
                tracing::debug!(%peer, "smtp auth failed");
                AuthOutcome::Failed
            }
            Login::Temporary => AuthOutcome::Temporary,
        };
        self.session.handle_auth_result(outcome, Instant::now());
    }

    /// RFC 3207: the 220 goes out in the clear, bytes the client pipelined
    /// after STARTTLS are discarded, and the session starts over.
    async fn start_tls(&mut self, peer: SocketAddr) -> io::Result<bool> {
        self.flush().await?;
        self.input.clear();
        let Some(acceptor) = self.ctx.tls() else {
            return Ok(false);
        };
        let Connection::Plain(tcp) = std::mem::replace(&mut self.conn, Connection::Upgrading)
        else {
            return Ok(false);
        };
        match accept_tls(
            &acceptor,
            tcp,
            self.ctx.smtp.timeouts.command,
            &self.ctx.metrics,
        )
        .await
        {
            Ok(conn) => {
                tracing::debug!(%peer, "starttls");
                if let Connection::Tls(stream) = &conn {
                    self.session
                        .set_tls_details(crate::tls::agreed(stream.get_ref().1));
                }
                self.conn = conn;
                self.session.handle_tls_established(Instant::now());
                Ok(true)
            }
            Err(e) => {
                tracing::debug!(%peer, error = %e, "TLS handshake failed");
                Ok(false)
            }
        }
    }

    /// Writes every queued reply, bounded by the command timeout so a
    /// client that stops reading cannot hold the session forever.
    async fn flush(&mut self) -> io::Result<()> {
        if self.session.output().is_empty() {
            return Ok(());
        }
        self.take_counters();
        if tracing::enabled!(tracing::Level::DEBUG) {
            log_refusals(self.session.output());
        }
        let limit = self.ctx.smtp.timeouts.command;
        let conn = &mut self.conn;
        let session = &mut self.session;
        glommio::timer::timeout(limit, async {
            while !session.output().is_empty() {
                let n = conn.write(session.output()).await?;
                if n == 0 {
                    return Err(io::Error::from(io::ErrorKind::WriteZero).into());
                }
                session.consume_output(n);
            }
            conn.flush().await?;
            Ok(())
        })
        .await
        .map_err(io::Error::from)?;
        let mut metrics = self.ctx.metrics.borrow_mut();
        for started in self.acks_pending.drain(..) {
            metrics.record_ack_latency(started.elapsed());
        }
        Ok(())
    }

    /// Adds what the core counted (transactions, replies) to the shard's
    /// figures: a few additions, no allocation.
    fn take_counters(&mut self) {
        let counted = self.session.take_counters();
        let mut metrics = self.ctx.metrics.borrow_mut();
        metrics.counters.transactions += counted.transactions;
        for (total, n) in metrics.counters.replies.iter_mut().zip(counted.replies) {
            *total += n;
        }
    }

    async fn wait_for_client(&mut self) -> Wake {
        let shutdown = (!self.shutdown_seen).then_some(&*self.ctx.shutdown);
        let deadline = self.session.deadline();
        wait_for_client(&mut self.conn, &mut self.input, deadline, shutdown).await
    }
}

/// Logs, at debug level, each 4xx or 5xx reply line about to be sent.
fn log_refusals(output: &[u8]) {
    for line in output.split(|&b| b == b'\n') {
        if matches!(line.first(), Some(b'4' | b'5')) {
            let text = String::from_utf8_lossy(line);
            tracing::debug!(reply = %text.trim_end(), "refused");
        }
    }
}

/// Envelope recipients written as one comma-separated field, without
/// building a string unless the line is written.
struct Recipients<'a>(&'a [crate::envelope::Recipient]);

impl std::fmt::Display for Recipients<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, r) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            f.write_str(&r.address)?;
        }
        Ok(())
    }
}

/// The mailbox tier as the SMTP core's policy (the core holds an `Rc`).
#[derive(Debug)]
struct SharedTier(Arc<crate::local::LocalTier>);

impl LocalPolicy for SharedTier {
    fn recipient(
        &self,
        address: &str,
        declared_size: Option<u64>,
    ) -> crate::smtp::policy::LocalRecipient {
        self.0.recipient(address, declared_size)
    }

    fn larger_than_quota(&self, address: &str, size: u64) -> bool {
        self.0.larger_than_quota(address, size)
    }

    fn may_send_as(&self, user: &str, sender: &str) -> bool {
        self.0.may_send_as(user, sender)
    }
}
