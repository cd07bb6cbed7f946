//! Drives one POP3 connection: feeds received bytes to the sans-IO
//! `pop3::Session`, writes its replies, and answers its requests from the
//! mailbox tier: password checks (throttled per client address, off the
//! executor), the maildrop lock and listing, message transfer, the UPDATE
//! after QUIT, STLS and implicit TLS (pop3s). It makes no protocol decision.

use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use glommio::net::TcpStream;

use crate::blocking::Lane;
use crate::local::{LocalTier, Login};
use crate::mailbox::{Folder, MailboxError, SessionLock, Uid};
use crate::metrics::ConnectionKind;
use crate::pop3::{
    AuthOutcome, MaildropError, MessageEncoder, MessageInfo, PeerInfo, Request, Session, UniqueId,
    UpdateError,
};
use crate::sasl::Password;
use crate::session::counted::CountedConnection;
use crate::session::limits::Family;
use crate::session::login::check_login;
use crate::session::stream::{
    accept_tls, close_within, flush_within, open_connection, plaintext_allowed, refuse,
    wait_for_client, write_all_within, write_within, Connection, ReadBuffer, ServerConnection,
    Wake,
};
use crate::shard::ShardContext;
use crate::spool::SegmentStore;

const INITIAL_READ_BUFFER: usize = 512;
const MAX_READ_BUFFER: usize = 8 * 1024;
/// Sent, without a session, to a client beyond the connection limits.
const TOO_MANY_CONNECTIONS: &[u8] = b"-ERR [SYS/TEMP] too many connections, try again later\r\n";

/// Messages read from disk in one job of the blocking pool when a RETR
/// or TOP finds its message not yet read: clients fetch in order, so one
/// hand-off to a pool thread serves many messages (the hand-off, not the
/// read, was most of a small message's cost).
const READ_AHEAD_MESSAGES: usize = 32;
/// Bytes of messages read ahead at most per session (the message asked
/// for is read whatever its size).
const READ_AHEAD_BYTES: u64 = 128 * 1024;

/// The maildrop a session holds: the lock, the folder, the UID and stored
/// size of each message in the order the session numbers them, and the
/// messages read ahead.
struct OpenMaildrop {
    /// Held for the session when `[pop3] lock_session` is on.
    _lock: Option<SessionLock>,
    folder: Arc<Folder>,
    uids: Vec<Uid>,
    sizes: Vec<u64>,
    /// Read but not yet sent, by 0-based index, ascending.
    ahead: std::collections::VecDeque<ReadAhead>,
}

impl OpenMaildrop {
    /// The bytes of message `index` if they were read ahead; drops what
    /// was read for messages before it (skipped by the client).
    fn take_ahead(&mut self, index: usize) -> Option<Vec<u8>> {
        while let Some(&(first, _)) = self.ahead.front() {
            if first < index {
                self.ahead.pop_front();
            } else {
                break;
            }
        }
        match self.ahead.front() {
            Some(&(first, _)) if first == index => self.ahead.pop_front().map(|(_, b)| b),
            _ => {
                // Asked out of order (or again): start afresh from here.
                self.ahead.clear();
                None
            }
        }
    }

    /// Message `index` and those after it, within the read-ahead bounds.
    fn read_plan(&self, index: usize) -> Vec<(usize, Uid)> {
        let mut plan = Vec::new();
        let mut bytes = 0u64;
        for (i, &uid) in self.uids.iter().enumerate().skip(index) {
            let size = self.sizes.get(i).copied().unwrap_or(0);
            if !plan.is_empty()
                && (plan.len() >= READ_AHEAD_MESSAGES || bytes + size > READ_AHEAD_BYTES)
            {
                break;
            }
            bytes += size;
            plan.push((i, uid));
        }
        plan
    }
}

/// A message read ahead: its 0-based index and its bytes.
type ReadAhead = (usize, Vec<u8>);

/// Reads the messages of `plan` (on a pool thread): the first one's
/// result as it is, the others while they read cleanly (a message that
/// fails to read is left for its own RETR to report).
fn read_messages(
    folder: &Folder,
    plan: &[(usize, Uid)],
) -> (Result<Vec<u8>, MailboxError>, Vec<ReadAhead>) {
    let Some((&(_, first_uid), rest)) = plan.split_first() else {
        return (
            Err(MailboxError::NotPermitted("nothing to read")),
            Vec::new(),
        );
    };
    let first = folder.read(first_uid);
    let mut ahead = Vec::with_capacity(rest.len());
    if first.is_ok() {
        for &(index, uid) in rest {
            match folder.read(uid) {
                Ok(bytes) => ahead.push((index, bytes)),
                Err(_) => break,
            }
        }
    }
    (first, ahead)
}

/// Serves one accepted POP3 connection; `implicit_tls` for pop3s (995).
pub async fn serve<S: SegmentStore>(
    ctx: Rc<ShardContext<S>>,
    stream: TcpStream,
    peer: SocketAddr,
    implicit_tls: bool,
) {
    let _ = stream.set_nodelay(true);
    let _slot = match ctx.limits.admit(peer.ip(), Family::Mailbox) {
        Ok(slot) => slot,
        Err(_) => return refuse(stream, TOO_MANY_CONNECTIONS).await,
    };
    let _counted = CountedConnection::open(&ctx, ConnectionKind::Pop3);
    tracing::debug!(%peer, protocol = "pop3", "connect");
    let timeout = ctx.pop3.idle_timeout;
    let acceptor = if implicit_tls {
        match ctx.tls() {
            Some(acceptor) => Some(acceptor),
            None => return,
        }
    } else {
        None
    };
    let Some(conn) = open_connection(stream, acceptor.as_ref(), timeout, peer, &ctx.metrics).await
    else {
        return;
    };
    let peer_info = PeerInfo {
        tls: implicit_tls,
        plaintext_allowed: plaintext_allowed(&ctx.config.auth, implicit_tls, peer.ip()),
    };
    let session = Session::new(Rc::clone(&ctx.pop3), peer_info, Instant::now());
    let mut driver = Driver {
        ctx,
        session,
        conn,
        input: ReadBuffer::new(INITIAL_READ_BUFFER, MAX_READ_BUFFER),
        maildrop: None,
        shutdown_seen: false,
        peer,
    };
    match driver.run().await {
        Ok(()) => tracing::debug!(%peer, "disconnect"),
        Err(e) => tracing::debug!(%peer, error = %e, "disconnect"),
    }
    let limit = driver.ctx.config.local.write_timeout;
    driver.maildrop = None;
    close_within(&mut driver.conn, limit).await;
}

struct Driver<S: SegmentStore> {
    ctx: Rc<ShardContext<S>>,
    session: Session,
    conn: ServerConnection,
    input: ReadBuffer,
    maildrop: Option<OpenMaildrop>,
    shutdown_seen: bool,
    peer: SocketAddr,
}

impl<S: SegmentStore> Driver<S> {
    async fn run(&mut self) -> io::Result<()> {
        loop {
            if !self.process_input().await? {
                self.flush().await?;
                return Ok(());
            }
            self.flush().await?;
            if self.session.is_closed() {
                return Ok(());
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

    /// Feeds buffered bytes and answers requests until the core wants
    /// more input. Returns false when the connection must close.
    async fn process_input(&mut self) -> io::Result<bool> {
        loop {
            let consumed = self
                .session
                .handle_input(self.input.filled(), Instant::now());
            self.input.consume(consumed);
            let mut acted = false;
            while let Some(request) = self.session.poll_request() {
                acted = true;
                if !Box::pin(self.answer(request)).await? {
                    return Ok(false);
                }
            }
            // Long listings are written in pieces as output drains.
            if !self.session.output().is_empty() {
                self.flush().await?;
                acted = true;
            }
            if self.session.is_closed() {
                return Ok(false);
            }
            if consumed == 0 && !acted {
                return Ok(true);
            }
        }
    }

    /// Answers one request; false when the connection must close.
    async fn answer(&mut self, request: Request) -> io::Result<bool> {
        match request {
            Request::Authenticate { user, password, .. } => {
                let outcome = self.authenticate(user, password).await;
                self.session.auth_result(outcome, Instant::now());
            }
            Request::OpenMaildrop { user } => {
                let result = self.open_maildrop(user).await;
                self.session.maildrop_opened(result, Instant::now());
            }
            Request::SendMessage { index, top_lines } => {
                if self.send_message(index, top_lines).await? {
                    self.session.message_sent(Instant::now());
                } else {
                    self.session.message_missing(Instant::now());
                }
            }
            Request::Update { deleted } => {
                let result = self.update(deleted).await;
                self.session.update_done(result, Instant::now());
            }
            Request::StartTls => return self.start_tls().await,
            Request::Close => {
                self.maildrop = None;
                return Ok(false);
            }
        }
        Ok(true)
    }

    fn tier(&self) -> Option<Arc<LocalTier>> {
        self.ctx.local.clone()
    }

    /// See `session::login`: throttled, off the executor.
    async fn authenticate(&mut self, user: String, password: Password) -> AuthOutcome {
        match check_login(&self.ctx, self.peer.ip(), user, password).await {
            Login::Success(user) => {
                tracing::debug!(peer = %self.peer, %user, "pop3 login");
                self.ctx.metrics.borrow_mut().counters.logins[ConnectionKind::Pop3 as usize] += 1;
                AuthOutcome::Ok { user }
            }
            Login::Failed => {
                tracing::debug!(peer = %self.peer, "pop3 login failed");
                AuthOutcome::Failed
            }
            Login::Temporary => AuthOutcome::TemporaryFailure,
        }
    }

    /// Lists the user's INBOX, locking it first when `[pop3]
    /// lock_session` asks (UIDL ids are Dovecot's default form,
    /// `%08Xu%08Xv`: UID then UIDVALIDITY in hex).
    async fn open_maildrop(&mut self, user: String) -> Result<Vec<MessageInfo>, MaildropError> {
        let tier = self.tier().ok_or(MaildropError::Temporary)?;
        let lock_session = self.ctx.config.pop3.lock_session;
        let opened = self
            .ctx
            .blocking
            .run(Lane::Mailbox, move || -> Result<_, MailboxError> {
                let mailbox = tier.mailbox(&user)?;
                let lock = if lock_session {
                    Some(mailbox.lock_exclusive()?)
                } else {
                    None
                };
                let folder = mailbox.inbox();
                let snapshot = folder.snapshot()?;
                Ok((lock, folder, snapshot))
            })
            .await
            .map_err(|_| MaildropError::Temporary)?;
        let (lock, folder, snapshot) = opened.map_err(|e| match e {
            MailboxError::InUse => MaildropError::InUse,
            e => {
                tracing::warn!(peer = %self.peer, error = %e, "cannot open a maildrop");
                MaildropError::Temporary
            }
        })?;
        let validity = snapshot.uid_validity.get();
        let mut list = Vec::with_capacity(snapshot.messages.len());
        let mut uids = Vec::with_capacity(snapshot.messages.len());
        let mut sizes = Vec::with_capacity(snapshot.messages.len());
        for m in &snapshot.messages {
            let id = format!("{:08X}{:08X}", m.uid.get(), validity);
            // Hex digits only: always a valid unique-id.
            let uid = UniqueId::new(id).map_err(|_| MaildropError::Temporary)?;
            list.push(MessageInfo { size: m.size, uid });
            uids.push(m.uid);
            sizes.push(m.size);
        }
        self.maildrop = Some(OpenMaildrop {
            _lock: lock,
            folder: Arc::new(folder),
            uids,
            sizes,
            ahead: std::collections::VecDeque::new(),
        });
        Ok(list)
    }

    /// Streams one message, CRLF and dot-stuffed; false (nothing
    /// written) if another session removed it. A message that cannot be
    /// read otherwise ends the connection (see pop3::session).
    async fn send_message(&mut self, index: usize, top_lines: Option<u32>) -> io::Result<bool> {
        let Some(maildrop) = &mut self.maildrop else {
            return Err(io::Error::other("no maildrop open"));
        };
        if index >= maildrop.uids.len() {
            return Err(io::Error::other("message index out of range"));
        }
        let read = match maildrop.take_ahead(index) {
            Some(bytes) => Ok(bytes),
            None => {
                let folder = Arc::clone(&maildrop.folder);
                let plan = maildrop.read_plan(index);
                let (first, ahead) = self
                    .ctx
                    .blocking
                    .run(Lane::Mailbox, move || read_messages(&folder, &plan))
                    .await
                    .map_err(io::Error::other)?;
                if let Some(maildrop) = &mut self.maildrop {
                    maildrop.ahead.extend(ahead);
                }
                first
            }
        };
        let bytes = match read {
            Ok(bytes) => bytes,
            Err(MailboxError::NoSuchMessage { .. }) => return Ok(false),
            Err(e) => return Err(io::Error::other(e)),
        };
        // The "+OK" line and the message in one write: one wake-up of the
        // client instead of two.
        let pending = self.session.output().len();
        let mut out = Vec::with_capacity(pending + bytes.len() + bytes.len() / 32 + 8);
        out.extend_from_slice(self.session.output());
        self.session.consume_output(pending);
        if top_lines.is_none() && MessageEncoder::is_wire_ready(&bytes) {
            out.extend_from_slice(&bytes);
            out.extend_from_slice(b".\r\n");
        } else {
            let mut encoder = MessageEncoder::new(top_lines);
            encoder.encode(&bytes, &mut out);
            encoder.finish(&mut out);
        }
        self.write_all(&out).await?;
        Ok(true)
    }

    /// RFC 1939 6: removes the messages marked deleted, then unlocks. A
    /// message already gone (another session removed it) counts as
    /// removed: the user's wish holds.
    async fn update(&mut self, deleted: Vec<usize>) -> Result<(), UpdateError> {
        let Some(maildrop) = self.maildrop.take() else {
            return Err(UpdateError);
        };
        let uids: Vec<Uid> = deleted
            .iter()
            .filter_map(|&i| maildrop.uids.get(i).copied())
            .collect();
        if uids.is_empty() {
            return Ok(());
        }
        let folder = Arc::clone(&maildrop.folder);
        let removed = self
            .ctx
            .blocking
            .run(Lane::Mailbox, move || folder.expunge(&uids))
            .await
            .map_err(|_| UpdateError)?;
        drop(maildrop);
        match removed {
            Ok(_) => Ok(()),
            Err(e) => {
                tracing::warn!(peer = %self.peer, error = %e, "pop3 update failed");
                Err(UpdateError)
            }
        }
    }

    /// RFC 2595 4: the +OK goes out in the clear, buffered input is
    /// dropped, and the session starts over under TLS.
    async fn start_tls(&mut self) -> io::Result<bool> {
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
            self.ctx.pop3.idle_timeout,
            &self.ctx.metrics,
        )
        .await
        {
            Ok(conn) => {
                tracing::debug!(peer = %self.peer, "stls");
                self.conn = conn;
                self.session.tls_established(Instant::now());
                Ok(true)
            }
            Err(e) => {
                tracing::debug!(peer = %self.peer, error = %e, "STLS handshake failed");
                Ok(false)
            }
        }
    }

    /// Writes the session's output, each write bounded by `[local]
    /// write_timeout` (not the idle timer): a client that stops reading
    /// is disconnected then.
    async fn flush(&mut self) -> io::Result<()> {
        let limit = self.ctx.config.local.write_timeout;
        while !self.session.output().is_empty() {
            let n = write_within(&mut self.conn, self.session.output(), limit).await?;
            self.session.consume_output(n);
        }
        flush_within(&mut self.conn, limit).await
    }

    async fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        write_all_within(&mut self.conn, bytes, self.ctx.config.local.write_timeout).await
    }

    async fn wait_for_client(&mut self) -> Wake {
        let shutdown = (!self.shutdown_seen).then_some(&*self.ctx.shutdown);
        let deadline = self.session.deadline();
        wait_for_client(&mut self.conn, &mut self.input, deadline, shutdown).await
    }
}
