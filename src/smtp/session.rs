//! The SMTP server state machine (RFC 5321 with PIPELINING, SIZE, 8BITMIME, SMTPUTF8, CHUNKING,
//! DSN, STARTTLS, ENHANCEDSTATUSCODES, AUTH), and in LMTP mode (RFC 2033) the same machine with
//! LHLO and one reply per recipient after the message: bytes in, replies and events out.
//! It refuses to touch sockets, clocks, disks or TLS: the glue passes time in and acts on events.

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use memchr::memchr;

use super::address::{Domain, ForwardPath, Mailbox, ReversePath};
use super::auth::{Credentials, Exchange, SaslError, Step};
use super::data::{BodyLimits, BodyReceiver, Framing};
use super::param::{MailParams, RcptParams};
use super::parser::{parse_command, Command, ParseError};
use super::policy::{AcceptAll, LocalPolicy, LocalRecipient};
use super::reply::{Reply, Sequence};
use crate::envelope::{BodyType, DsnReturn, Envelope, Recipient};

/// While the output holds this many bytes, no more input is processed: a
/// client that pipelines without reading gets back-pressure instead of an
/// ever-growing buffer. No single step writes more than a few hundred bytes.
pub const OUTPUT_SOFT_LIMIT: usize = 16 * 1024;

/// Past this the session closes: the bound that holds even if the glue
/// keeps feeding without writing.
pub const OUTPUT_HARD_LIMIT: usize = 64 * 1024;

/// Most of a declared SIZE we reserve up front; a client may declare a big
/// size and send nothing, so memory follows the bytes that really arrive.
const MAX_PREALLOCATION: usize = 1 << 20;

/// What to do with a CR or LF that is not part of a CRLF pair (RFC 5321
/// 2.3.8 forbids them). Rejecting is the safe default since the SMTP
/// smuggling attacks of 2023; normalizing helps broken legacy clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BareLineEndings {
    /// Bare LF ends no command line (500 5.5.2); a message with one is
    /// refused at its end with 550 5.5.2.
    #[default]
    Reject,
    /// Treat them as CRLF. The end of DATA still needs a real CRLF "." CRLF.
    Normalize,
}

/// How long we wait for the client (RFC 5321 4.5.3.2 suggests 5 minutes
/// for commands and 3 minutes per data block).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    pub command: Duration,
    pub data_block: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            command: Duration::from_secs(300),
            data_block: Duration::from_secs(180),
        }
    }
}

/// Everything the session needs from the configuration: an immutable
/// snapshot shared (by `Rc`) by all sessions of one core.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// Our name in the greeting, EHLO and Received headers.
    pub hostname: String,
    /// Command line limit including CRLF; longer lines are discarded and
    /// answered 500 5.5.2 (RFC 5321 4.5.3.1.4 requires at least 512).
    pub max_line_length: usize,
    /// Message content octets accepted, advertised as EHLO SIZE (RFC 1870).
    pub max_message_size: usize,
    /// Recipients per transaction (RFC 5321 4.5.3.1.8 requires at least 100).
    pub max_recipients: usize,
    /// Errors a session may make: the last of them is followed by 421 4.7.0
    /// and the close (as Postfix's smtpd_hard_error_limit).
    pub max_errors: usize,
    /// Received headers tolerated before a message counts as looping.
    pub max_hops: usize,
    pub bare_line_endings: BareLineEndings,
    /// Longest line of message content kept as it is (CRLF excluded); a
    /// longer one is folded with CRLF SPACE (see `BodyLimits::fold_at`).
    /// `None` keeps every line.
    pub body_line_limit: Option<usize>,
    /// ASCII-lowercased domains we accept mail for from anyone.
    pub local_domains: Vec<String>,
    /// A certificate is configured, so STARTTLS is offered.
    pub starttls: bool,
    pub timeouts: Timeouts,
    /// A submission listener (RFC 6409, ports 587 and 465): AUTH is
    /// offered, and MAIL needs it (530 5.7.0 before).
    pub submission: bool,
    /// AUTH is offered without TLS to non-loopback clients too (DESIGN.md:
    /// plaintext passwords only over TLS unless configured otherwise).
    pub allow_plaintext_auth: bool,
    /// Loopback clients count as secure (DESIGN.md, as in Dovecot).
    pub trust_loopback: bool,
    /// An authenticated client's envelope sender must be one of its user's
    /// own addresses (Postfix `reject_sender_login_mismatch`).
    pub sender_must_match_login: bool,
    /// Address literals (`user@[192.0.2.1]`) are accepted in MAIL and RCPT
    /// from clients outside `allow_networks` that have not authenticated.
    /// Off by default: a literal names a host directly, so a stranger's
    /// bounce or relay could reach internal addresses.
    pub allow_address_literals: bool,
    /// `[egress] tenant_header`: removed from every message at receipt;
    /// its value, from a client that may relay, is the envelope's tenant.
    pub tenant_header: Option<String>,
    /// Speak LMTP (RFC 2033): LHLO instead of HELO/EHLO, local mailbox
    /// recipients only, and after the message one reply per accepted
    /// recipient from `handle_delivered` instead of one from
    /// `handle_stored`. No AUTH (a trusted hop) and no DSN.
    pub lmtp: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            hostname: "localhost".to_owned(),
            max_line_length: 2048,
            max_message_size: 50 * 1024 * 1024,
            max_recipients: 1000,
            max_errors: 20,
            max_hops: 50,
            bare_line_endings: BareLineEndings::Reject,
            body_line_limit: Some(998),
            local_domains: Vec::new(),
            starttls: false,
            timeouts: Timeouts::default(),
            submission: false,
            allow_plaintext_auth: false,
            trust_loopback: true,
            sender_must_match_login: true,
            allow_address_literals: false,
            tenant_header: None,
            lmtp: false,
        }
    }
}

/// What the glue knows about the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerInfo {
    pub addr: SocketAddr,
    /// The client's address is in `relay.allow_networks`.
    pub may_relay: bool,
    /// The connection is already TLS (port 465, or after STARTTLS).
    pub tls: bool,
}

/// Something the glue must act on before feeding more input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A complete message: store it durably, then call `handle_stored`.
    Message(Message),
    /// The 220 for STARTTLS is in the output: flush it, discard any input
    /// already buffered (RFC 3207 4: STARTTLS ends a pipelined group; bytes
    /// sent before the handshake must not count as protected, CVE-2011-0411),
    /// handshake, then call `handle_tls_established`.
    StartTls,
    /// AUTH credentials to check (slowly, off the core): then call
    /// `handle_auth_result`.
    Authenticate(Credentials),
    /// Send the remaining output, then close the connection.
    Close,
}

/// The glue's verdict on the credentials of the last `Event::Authenticate`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthOutcome {
    /// Logged in as this user (the directory's canonical name).
    Success {
        user: String,
    },
    Failed,
    /// The user directory could not be read: 454 4.7.0.
    Temporary,
}

/// An accepted message, ready for the spool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub envelope: Envelope,
    /// Our Received header, then the message: CRLF lines, dot-unstuffed.
    pub body: Vec<u8>,
    /// Where in `body` the Received header's `id` clause leaves 16 bytes
    /// for the queue id, which the spool writes there as it stores the
    /// message (`Spool::store_traced`).
    pub trace_id_at: Option<usize>,
}

/// What became of one recipient's copy of an LMTP message, in RCPT order
/// (RFC 2033 4.2): the glue's answer to `Event::Message` in LMTP mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecipientDelivery {
    /// In the recipient's mailboxes, durably; `forwarded_as` is the queue
    /// id of the copy for alias targets outside our domains, if any.
    Delivered { forwarded_as: Option<String> },
    /// Not delivered: the mailbox tier's reply line (`452 4.2.2 ...`,
    /// `552 5.2.2 ...`), a 4xx or 5xx.
    Refused(String),
}

/// Why the spool did not take a message; the client may retry later.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreFailure {
    /// 452 4.3.1.
    DiskFull,
    /// 451 4.3.0.
    Temporary,
}

/// The client's HELO/EHLO: kept for the Received header and the envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Helo {
    name: String,
    extended: bool,
}

/// One mail transaction's envelope, built up by MAIL and RCPT.
#[derive(Debug)]
struct Transaction {
    sender: String,
    body_type: BodyType,
    smtputf8: bool,
    ret: Option<DsnReturn>,
    envid: Option<String>,
    declared_size: Option<u64>,
    recipients: Vec<Recipient>,
    /// Where the queue id goes in the body (see [`Message::trace_id_at`]).
    trace_id_at: Option<usize>,
}

/// The session's state; each state carries exactly the data it needs, so
/// an out-of-order command is answered from the state alone.
#[derive(Debug)]
enum State {
    ExpectHelo,
    ExpectMail {
        helo: Helo,
    },
    ExpectRcptOrData {
        helo: Helo,
        tx: Transaction,
    },
    ReceivingData {
        helo: Helo,
        tx: Transaction,
        rx: BodyReceiver,
    },
    /// Between BDAT chunks: only BDAT (or RSET, NOOP, ...) fits.
    BdatPending {
        helo: Helo,
        tx: Transaction,
        rx: BodyReceiver,
    },
    ReceivingBdat {
        helo: Helo,
        tx: Transaction,
        rx: BodyReceiver,
        chunk: u64,
        remaining: u64,
        last: bool,
    },
    /// A BDAT chunk that cannot be accepted: RFC 3030 2 says its octets
    /// are still read (and dropped) before the error reply.
    DiscardingBdat {
        remaining: u64,
        reply: Reply<'static>,
        /// How many times the reply is sent: once, or in LMTP for a BDAT
        /// LAST once per recipient (RFC 2033 4.2).
        copies: usize,
        then: Box<State>,
    },
    AwaitingStore {
        helo: Helo,
    },
    /// LMTP: the message is being delivered into the recipients' mailboxes;
    /// one reply per recipient follows (RFC 2033 4.2).
    AwaitingDelivery {
        helo: Helo,
        recipients: Vec<String>,
    },
    AwaitingTls,
    /// Inside AUTH: the next line answers our 334 challenge.
    AuthExchange {
        helo: Helo,
        exchange: Exchange,
    },
    /// The credentials are being checked.
    AwaitingAuth {
        helo: Helo,
    },
    Closed,
}

/// One SMTP server session. Owns no socket: see the module header.
#[derive(Debug)]
pub struct ServerSession {
    config: Rc<ServerConfig>,
    peer: PeerInfo,
    state: State,
    /// Inside an over-long command line: bytes are dropped up to its LF.
    discarding_line: bool,
    output: Vec<u8>,
    events: VecDeque<Event>,
    errors: usize,
    last_activity: Instant,
    shutdown_pending: bool,
    /// The user this client authenticated as (RFC 4954).
    authenticated: Option<String>,
    policy: Rc<dyn LocalPolicy>,
    counters: SessionCounters,
    /// What the TLS handshake agreed, for the Received header.
    tls: Option<TlsDetails>,
}

/// What a TLS handshake agreed, as the glue reads it from the TLS library:
/// for the Received header's comment and `tls` clause.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsDetails {
    /// `TLSv1.3`, `TLSv1.2`.
    pub version: String,
    /// The IANA name of the cipher suite (`TLS_AES_256_GCM_SHA384`).
    pub cipher: String,
    /// The IANA name of the key exchange group (`x25519`), if known.
    pub group: Option<String>,
}

/// The `id` clause's placeholder: as long as a queue id (16 hex digits).
const TRACE_ID_PLACEHOLDER: &str = "0000000000000000";

/// What a session counted since the driver last took the figures
/// ([`ServerSession::take_counters`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SessionCounters {
    /// Transactions begun (MAIL FROM accepted).
    pub transactions: u64,
    /// Replies by class: 2xx, 3xx, 4xx, 5xx.
    pub replies: [u64; 4],
}

impl ServerSession {
    /// Starts a session; the 220 greeting is queued in the output.
    pub fn new(config: Rc<ServerConfig>, peer: PeerInfo, now: Instant) -> Self {
        let mut session = ServerSession {
            config,
            peer,
            state: State::ExpectHelo,
            discarding_line: false,
            output: Vec::with_capacity(512),
            events: VecDeque::with_capacity(2),
            errors: 0,
            last_activity: now,
            shutdown_pending: false,
            authenticated: None,
            policy: Rc::new(AcceptAll),
            counters: SessionCounters::default(),
            tls: None,
        };
        let config = Rc::clone(&session.config);
        session.reply(if config.lmtp {
            Reply::LmtpGreeting {
                host: &config.hostname,
            }
        } else {
            Reply::Greeting {
                host: &config.hostname,
            }
        });
        session
    }

    /// Answers local-recipient and sender questions from `policy` instead
    /// of accepting every local recipient.
    pub fn with_policy(mut self, policy: Rc<dyn LocalPolicy>) -> Self {
        self.policy = policy;
        self
    }

    /// The figures counted since the last call, which resets them.
    pub fn take_counters(&mut self) -> SessionCounters {
        std::mem::take(&mut self.counters)
    }

    /// The user this session authenticated as, if any.
    pub fn authenticated_user(&self) -> Option<&str> {
        self.authenticated.as_deref()
    }

    /// Feeds received bytes; returns how many were consumed. The glue keeps
    /// the rest and offers it again, with more bytes appended, later.
    ///
    /// Every complete command is handled (PIPELINING, RFC 2920) until one
    /// produces an event; then it stops so the glue acts first (and must
    /// call `poll_event`, or nothing more is consumed). An incomplete
    /// command line is left unconsumed unless it is already longer than
    /// `max_line_length`: then it is discarded up to its end and answered
    /// 500, never parsed. Body bytes (DATA, BDAT) are consumed as they come.
    /// It also stops while the output holds `OUTPUT_SOFT_LIMIT` bytes (write
    /// some, then feed again), consumes nothing while awaiting the store or
    /// the TLS handshake, and swallows everything once closed.
    pub fn handle_input(&mut self, input: &[u8], now: Instant, wall: SystemTime) -> usize {
        if self.is_closed() {
            // Nothing more will be read; let the glue drop it.
            return input.len();
        }
        if !input.is_empty() {
            self.last_activity = now;
        }
        let mut pos = 0;
        loop {
            if !self.events.is_empty() || self.is_closed() || self.output.len() >= OUTPUT_SOFT_LIMIT
            {
                break;
            }
            if self.shutdown_pending && self.between_transactions() {
                self.shut_down();
                break;
            }
            let rest = &input[pos..];
            if rest.is_empty() {
                break;
            }
            let consumed = match self.state {
                State::AwaitingStore { .. }
                | State::AwaitingDelivery { .. }
                | State::AwaitingTls
                | State::AwaitingAuth { .. }
                | State::Closed => 0,
                State::ReceivingData { .. } => self.step_data(rest, wall),
                State::ReceivingBdat { .. } => self.step_bdat(rest, wall),
                State::DiscardingBdat { .. } => self.step_discard(rest),
                State::ExpectHelo
                | State::ExpectMail { .. }
                | State::ExpectRcptOrData { .. }
                | State::BdatPending { .. }
                | State::AuthExchange { .. } => self.step_command(rest, wall),
            };
            pos += consumed;
            if self.output.len() > OUTPUT_HARD_LIMIT && !self.is_closed() {
                self.overflow();
            }
            if consumed == 0 {
                break;
            }
        }
        pos
    }

    /// The next event for the glue, oldest first.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Bytes to send.
    pub fn output(&self) -> &[u8] {
        &self.output
    }

    /// `n` bytes of `output()` were written.
    pub fn consume_output(&mut self, n: usize) {
        let n = n.min(self.output.len());
        self.output.drain(..n);
    }

    /// There is output; RFC 2920 3.2 wants it sent before we wait for input.
    pub fn wants_flush(&self) -> bool {
        !self.output.is_empty()
    }

    /// The spool's verdict on the message of the last `Event::Message`. The
    /// 250 leaves only now, after the bytes are durable.
    pub fn handle_stored(&mut self, result: Result<&str, StoreFailure>, now: Instant) {
        if !matches!(self.state, State::AwaitingStore { .. }) {
            return;
        }
        let State::AwaitingStore { helo } = std::mem::replace(&mut self.state, State::Closed)
        else {
            return; // checked just above
        };
        self.state = State::ExpectMail { helo };
        self.last_activity = now;
        // Our own failures do not count as client errors.
        match result {
            Ok(id) => self.reply(Reply::Queued { id }),
            Err(StoreFailure::DiskFull) => self.reply(Reply::DiskFull),
            Err(StoreFailure::Temporary) => self.reply(Reply::StoreFailed),
        }
        if self.shutdown_pending {
            self.shut_down();
        }
    }

    /// LMTP: what became of each recipient of the last `Event::Message`,
    /// in RCPT order. One reply per recipient leaves now (RFC 2033 4.2),
    /// after the mailboxes hold the message durably; a recipient the glue
    /// gave no verdict for gets 451 4.3.0, extra verdicts are ignored.
    pub fn handle_delivered(&mut self, verdicts: &[RecipientDelivery], now: Instant) {
        if !matches!(self.state, State::AwaitingDelivery { .. }) {
            return;
        }
        let State::AwaitingDelivery { helo, recipients } =
            std::mem::replace(&mut self.state, State::Closed)
        else {
            return; // checked just above
        };
        self.state = State::ExpectMail { helo };
        self.last_activity = now;
        for (i, address) in recipients.iter().enumerate() {
            let reply = match verdicts.get(i) {
                Some(RecipientDelivery::Delivered { forwarded_as }) => Reply::Delivered {
                    address,
                    forwarded_as: forwarded_as.as_deref(),
                },
                Some(RecipientDelivery::Refused(line)) => Reply::DeliveryRefused { address, line },
                None => Reply::DeliveryRefused { address, line: "" },
            };
            self.reply(reply);
        }
        if self.shutdown_pending {
            self.shut_down();
        }
    }

    /// The glue's verdict on the last `Event::Authenticate` (RFC 4954 4:
    /// 235, or 535 which counts as a client error, or 454).
    pub fn handle_auth_result(&mut self, outcome: AuthOutcome, now: Instant) {
        let State::AwaitingAuth { .. } = self.state else {
            return;
        };
        let State::AwaitingAuth { helo } = std::mem::replace(&mut self.state, State::Closed) else {
            return; // checked just above
        };
        self.state = State::ExpectMail { helo };
        self.last_activity = now;
        match outcome {
            AuthOutcome::Success { user } => {
                self.authenticated = Some(user);
                self.reply(Reply::AuthSucceeded);
            }
            AuthOutcome::Failed => self.error(Reply::AuthFailed),
            AuthOutcome::Temporary => self.reply(Reply::AuthTemporaryFailure),
        }
        if self.shutdown_pending && !self.is_closed() {
            self.shut_down();
        }
    }

    /// What the TLS handshake agreed (implicit TLS or STARTTLS), for the
    /// Received header.
    pub fn set_tls_details(&mut self, details: TlsDetails) {
        self.tls = Some(details);
    }

    /// TLS is up: RFC 3207 4.2 says to forget everything learnt before it,
    /// so the client must EHLO again, and STARTTLS is no longer offered.
    pub fn handle_tls_established(&mut self, now: Instant) {
        if !matches!(self.state, State::AwaitingTls) {
            return;
        }
        self.state = State::ExpectHelo;
        self.peer.tls = true;
        self.authenticated = None;
        self.discarding_line = false;
        self.last_activity = now;
        if self.shutdown_pending {
            self.shut_down();
        }
    }

    /// Closes an idle client with 421 4.4.2 once the deadline passed. While
    /// the glue itself is busy (storing, TLS handshake) it has its own bounds,
    /// so nothing happens then.
    pub fn handle_timeout(&mut self, now: Instant) {
        if matches!(
            self.state,
            State::Closed
                | State::AwaitingStore { .. }
                | State::AwaitingDelivery { .. }
                | State::AwaitingTls
                | State::AwaitingAuth { .. }
        ) {
            return;
        }
        if now >= self.deadline() {
            let config = Rc::clone(&self.config);
            self.reply(Reply::Timeout {
                host: &config.hostname,
            });
            self.close();
        }
    }

    /// When `handle_timeout` should next be called: the last activity plus
    /// the command timeout, or the data-block timeout while a body arrives.
    /// Activity is any non-empty input, a store result or a finished TLS
    /// handshake.
    pub fn deadline(&self) -> Instant {
        let timeout = match self.state {
            State::ReceivingData { .. }
            | State::ReceivingBdat { .. }
            | State::DiscardingBdat { .. } => self.config.timeouts.data_block,
            _ => self.config.timeouts.command,
        };
        // An absurd timeout must not panic on overflow; a day is "never" here.
        self.last_activity
            .checked_add(timeout)
            .or_else(|| self.last_activity.checked_add(Duration::from_secs(86_400)))
            .unwrap_or(self.last_activity)
    }

    /// The server is stopping. Between transactions: 421 4.3.2 and close
    /// now. Inside DATA/BDAT or while storing: right after that
    /// transaction's reply, so an accepted message is never cut off.
    pub fn handle_shutdown(&mut self) {
        if self.is_closed() {
            return;
        }
        self.shutdown_pending = true;
        if self.between_transactions() {
            self.shut_down();
        }
    }

    /// The session ended; the glue closes after flushing the output.
    pub fn is_closed(&self) -> bool {
        matches!(self.state, State::Closed)
    }

    // ---- internals ------------------------------------------------------

    fn between_transactions(&self) -> bool {
        matches!(
            self.state,
            State::ExpectHelo
                | State::ExpectMail { .. }
                | State::ExpectRcptOrData { .. }
                | State::AuthExchange { .. }
        )
    }

    fn reply(&mut self, reply: Reply<'_>) {
        // The state checks name HELO/EHLO; an LMTP client needs LHLO.
        let reply = match reply {
            Reply::BadSequence(Sequence::SendHeloFirst) if self.config.lmtp => {
                Reply::BadSequence(Sequence::SendLhloFirst)
            }
            other => other,
        };
        let start = self.output.len();
        reply.write_to(&mut self.output);
        // Every reply starts with its three-digit code; count its class.
        if let Some(class) = self.output.get(start).and_then(|d| d.checked_sub(b'2')) {
            if let Some(n) = self.counters.replies.get_mut(usize::from(class)) {
                *n += 1;
            }
        }
    }

    /// An error reply caused by the client; too many end the session.
    fn error(&mut self, reply: Reply<'_>) {
        self.reply(reply);
        self.errors += 1;
        if self.errors >= self.config.max_errors {
            let config = Rc::clone(&self.config);
            self.reply(Reply::TooManyErrors {
                host: &config.hostname,
            });
            self.close();
        }
    }

    fn close(&mut self) {
        self.state = State::Closed;
        self.events.push_back(Event::Close);
    }

    fn shut_down(&mut self) {
        let config = Rc::clone(&self.config);
        self.reply(Reply::ShuttingDown {
            host: &config.hostname,
        });
        self.close();
    }

    /// The output bound was crossed: say so briefly and close.
    fn overflow(&mut self) {
        let config = Rc::clone(&self.config);
        self.reply(Reply::OutputOverflow {
            host: &config.hostname,
        });
        self.close();
    }

    fn body_limits(&self, tx: &Transaction) -> BodyLimits {
        BodyLimits {
            max_size: self.config.max_message_size,
            max_hops: self.config.max_hops,
            normalize: self.config.bare_line_endings == BareLineEndings::Normalize,
            // Binary content (RFC 3030) has no lines to fold.
            fold_at: self
                .config
                .body_line_limit
                .filter(|_| tx.body_type != BodyType::BinaryMime),
        }
    }

    /// Reads one command line from `rest`; returns the bytes consumed.
    fn step_command(&mut self, rest: &[u8], wall: SystemTime) -> usize {
        let max = self.config.max_line_length;
        if self.discarding_line {
            return match memchr(b'\n', rest) {
                None => rest.len(),
                Some(k) => {
                    self.discarding_line = false;
                    self.error(Reply::LineTooLong);
                    k + 1
                }
            };
        }
        let window = &rest[..rest.len().min(max)];
        let Some(k) = memchr(b'\n', window) else {
            if rest.len() >= max {
                // The line, with its LF, is already longer than allowed:
                // drop it up to its end, which the discard state looks for;
                // nothing of it is ever parsed.
                self.discarding_line = true;
                return window.len().max(1);
            }
            return 0;
        };
        let line = &rest[..k];
        let line = match line.strip_suffix(b"\r") {
            Some(line) => line,
            None if self.config.bare_line_endings == BareLineEndings::Reject => {
                self.error(Reply::BareLineFeed);
                return k + 1;
            }
            None => line,
        };
        if matches!(self.state, State::AuthExchange { .. }) {
            self.auth_response(line);
        } else {
            self.dispatch(parse_command(line), wall);
        }
        k + 1
    }

    fn dispatch(&mut self, parsed: Result<Command<'_>, ParseError>, wall: SystemTime) {
        let command = match parsed {
            Ok(command) => command,
            Err(e) => return self.error(Reply::from(e)),
        };
        match command {
            // RFC 2033 4.1: an LMTP server answers HELO and EHLO with 500,
            // and an SMTP server does not know LHLO.
            Command::Ehlo(_) | Command::Helo(_) if self.config.lmtp => self.error(Reply::UseLhlo),
            Command::Lhlo(_) if !self.config.lmtp => self.error(Reply::UnknownCommand),
            Command::Ehlo(name) | Command::Lhlo(name) => self.handle_helo(name, true),
            Command::Helo(name) => self.handle_helo(name, false),
            Command::Mail { from, params } => self.handle_mail(from, params),
            Command::Rcpt { to, params } => self.handle_rcpt(to, params),
            Command::Data => self.handle_data(wall),
            Command::Bdat { size, last } => self.handle_bdat(size, last, wall),
            Command::Rset => self.handle_rset(),
            Command::Noop => self.reply(Reply::Ok),
            // RFC 5321 3.5.3: 252 when we will not verify.
            Command::Vrfy => self.reply(Reply::CannotVrfy),
            Command::Expn => self.error(Reply::NotImplemented),
            Command::Help => self.reply(Reply::Help),
            Command::Quit => {
                self.reply(Reply::Bye);
                self.close();
            }
            Command::StartTls => self.handle_starttls(),
            Command::Auth { mechanism, initial } => self.handle_auth(mechanism, initial),
        }
    }

    /// AUTH is offered: a submission listener, over TLS or from loopback
    /// (which counts as secure, as in Dovecot) unless configured otherwise.
    fn auth_offered(&self) -> bool {
        self.config.submission && self.plaintext_allowed()
    }

    fn plaintext_allowed(&self) -> bool {
        self.peer.tls
            || self.config.allow_plaintext_auth
            || (self.config.trust_loopback && self.client_ip().is_loopback())
    }

    /// RFC 4954 4: AUTH once per session, never inside a transaction.
    fn handle_auth(&mut self, mechanism: &str, initial: Option<&[u8]>) {
        if !self.config.submission {
            return self.error(Reply::NotImplemented);
        }
        match self.state {
            State::ExpectMail { .. } if self.authenticated.is_none() => {}
            State::ExpectHelo => return self.error(Reply::BadSequence(Sequence::SendHeloFirst)),
            _ => return self.error(Reply::AuthNotNow),
        }
        if !self.plaintext_allowed() {
            return self.error(Reply::EncryptionRequired);
        }
        let step = Exchange::start(mechanism, initial);
        self.auth_step(step);
    }

    /// The client's answer to a 334 challenge.
    fn auth_response(&mut self, line: &[u8]) {
        let State::AuthExchange { helo, exchange } =
            std::mem::replace(&mut self.state, State::ExpectHelo)
        else {
            return; // only called in this state
        };
        self.state = State::ExpectMail { helo };
        self.auth_step(exchange.respond(line));
    }

    /// Moves the exchange on from `ExpectMail`: another challenge, the
    /// credentials to the glue, or the failure's reply.
    fn auth_step(&mut self, step: Step) {
        let helo = match std::mem::replace(&mut self.state, State::ExpectHelo) {
            State::ExpectMail { helo } => helo,
            other => {
                self.state = other; // callers guarantee ExpectMail
                return;
            }
        };
        match step {
            Step::Challenge(exchange, text) => {
                self.state = State::AuthExchange { helo, exchange };
                self.reply(Reply::AuthChallenge { text });
            }
            Step::Done(credentials) => {
                self.state = State::AwaitingAuth { helo };
                self.events.push_back(Event::Authenticate(credentials));
            }
            Step::Failed(e) => {
                self.state = State::ExpectMail { helo };
                self.error(match e {
                    SaslError::UnknownMechanism => Reply::AuthUnknownMechanism,
                    SaslError::Cancelled => Reply::AuthCancelled,
                    SaslError::Malformed(_) => Reply::AuthBadResponse,
                });
            }
        }
    }

    /// RFC 5321 4.1.4: a HELO/EHLO at any point resets the transaction.
    fn handle_helo(&mut self, name: &str, extended: bool) {
        self.state = State::ExpectMail {
            helo: Helo {
                name: name.to_owned(),
                extended,
            },
        };
        let config = Rc::clone(&self.config);
        let reply = if self.config.lmtp {
            Reply::Lhlo {
                host: &config.hostname,
                max_size: config.max_message_size,
                starttls: self.starttls_offered(),
            }
        } else if extended {
            Reply::Ehlo {
                host: &config.hostname,
                max_size: config.max_message_size,
                starttls: self.starttls_offered(),
                auth: self.auth_offered() && self.authenticated.is_none(),
            }
        } else {
            Reply::Helo {
                host: &config.hostname,
            }
        };
        self.reply(reply);
    }

    fn starttls_offered(&self) -> bool {
        self.config.starttls && !self.peer.tls
    }

    fn handle_mail(&mut self, from: ReversePath<'_>, params: MailParams<'_>) {
        match &self.state {
            // RFC 5321 4.1.1.11 and 4.1.1.2: parameters belong to service
            // extensions, and a HELO session negotiated none.
            State::ExpectMail { helo } if !helo.extended && !params.is_empty() => {
                return self.error(Reply::ParametersNeedEhlo)
            }
            State::ExpectMail { .. } => {}
            State::ExpectHelo => return self.error(Reply::BadSequence(Sequence::SendHeloFirst)),
            _ => return self.error(Reply::BadSequence(Sequence::NestedMail)),
        }
        // RFC 6409 4.3 and RFC 4954 6: a submission server may demand AUTH.
        if self.config.submission && self.authenticated.is_none() {
            return self.error(Reply::AuthRequired);
        }
        // RFC 1870 6.1: refuse a declared size we would refuse anyway.
        if params
            .size
            .is_some_and(|size| size > self.config.max_message_size as u64)
        {
            return self.error(Reply::MessageTooBig);
        }
        let sender = match from {
            ReversePath::Null => String::new(),
            ReversePath::Mailbox(m) => {
                // RFC 6531 3.4: a non-ASCII address needs the SMTPUTF8 parameter.
                if !m.is_ascii() && !params.smtputf8 {
                    return self.error(Reply::NonAsciiAddress);
                }
                // A literal sender is where bounces go: see literals_allowed.
                if is_literal(&m) && !self.literals_allowed() {
                    return self.error(Reply::AddressLiteralRefused { address: m.address });
                }
                m.address.to_owned()
            }
        };
        if let Some(user) = &self.authenticated {
            if self.config.sender_must_match_login && !self.policy.may_send_as(user, &sender) {
                return self.error(Reply::SenderNotOwned { address: &sender });
            }
        }
        let State::ExpectMail { helo } = std::mem::replace(&mut self.state, State::ExpectHelo)
        else {
            return; // checked at the top
        };
        self.counters.transactions += 1;
        self.state = State::ExpectRcptOrData {
            helo,
            tx: Transaction {
                sender,
                body_type: params.body.unwrap_or_default(),
                smtputf8: params.smtputf8,
                ret: params.ret,
                envid: params.envid.map(str::to_owned),
                declared_size: params.size,
                recipients: Vec::new(),
                trace_id_at: None,
            },
        };
        self.reply(Reply::SenderOk);
    }

    fn handle_rcpt(&mut self, to: ForwardPath<'_>, params: RcptParams<'_>) {
        let verdict = match &self.state {
            // RFC 5321 4.1.1.11 and 4.1.1.3, as for MAIL.
            State::ExpectRcptOrData { helo, .. } if !helo.extended && !params.is_empty() => {
                Err(Reply::ParametersNeedEhlo)
            }
            State::ExpectRcptOrData { tx, .. } => self.check_recipient(tx, &to),
            State::ExpectHelo => Err(Reply::BadSequence(Sequence::SendHeloFirst)),
            State::ExpectMail { .. } => Err(Reply::BadSequence(Sequence::NeedMail)),
            _ => Err(Reply::BadSequence(Sequence::BdatInProgress)),
        };
        if let Err(reply) = verdict {
            return self.error(reply);
        }
        let address = match to {
            ForwardPath::Postmaster(s) => s,
            ForwardPath::Mailbox(m) => m.address,
        };
        if let State::ExpectRcptOrData { tx, .. } = &mut self.state {
            tx.recipients.push(Recipient {
                address: address.to_owned(),
                notify: params.notify,
                orcpt: params.orcpt.map(str::to_owned),
            });
        }
        self.reply(Reply::RecipientOk);
    }

    /// SMTPUTF8, the recipient limit, then relay policy.
    fn check_recipient<'a>(&self, tx: &Transaction, to: &ForwardPath<'a>) -> Result<(), Reply<'a>> {
        if let ForwardPath::Mailbox(m) = to {
            if !m.is_ascii() && !tx.smtputf8 {
                return Err(Reply::NonAsciiAddress);
            }
        }
        // RFC 5321 4.5.3.1.10: 452 for recipients beyond the limit.
        if tx.recipients.len() >= self.config.max_recipients {
            return Err(Reply::TooManyRecipients);
        }
        if self.config.lmtp {
            // LMTP is final delivery into our mailboxes: nothing is relayed.
            return match to {
                ForwardPath::Postmaster(address) => self.local_verdict(tx, address),
                ForwardPath::Mailbox(m) if self.is_local(m) => self.local_verdict(tx, m.address),
                ForwardPath::Mailbox(m) => Err(Reply::NotLocalRecipient { address: m.address }),
            };
        }
        match to {
            // RFC 5321 4.5.1: <Postmaster> is ours, but it is accepted only
            // when it reaches someone: accepting what cannot be delivered
            // turns the later bounce into a relay for strangers' mail.
            ForwardPath::Postmaster(address) => self.local_verdict(tx, address),
            // Local recipients are checked for everyone, relay clients too.
            ForwardPath::Mailbox(m) if self.is_local(m) => self.local_verdict(tx, m.address),
            ForwardPath::Mailbox(m) if is_literal(m) && !self.literals_allowed() => {
                Err(Reply::AddressLiteralRefused { address: m.address })
            }
            ForwardPath::Mailbox(_) if self.peer.may_relay || self.authenticated.is_some() => {
                Ok(())
            }
            ForwardPath::Mailbox(m) => Err(Reply::RelayDenied { address: m.address }),
        }
    }

    /// The local policy's word on a local recipient, as a reply.
    fn local_verdict<'a>(&self, tx: &Transaction, address: &'a str) -> Result<(), Reply<'a>> {
        match self.policy.recipient(address, tx.declared_size) {
            LocalRecipient::Accept => Ok(()),
            LocalRecipient::Unknown => Err(Reply::UnknownLocalUser { address }),
            LocalRecipient::MailboxFull { permanent } => {
                Err(Reply::MailboxFull { address, permanent })
            }
            LocalRecipient::LargerThanQuota => Err(Reply::LargerThanQuota { address }),
        }
    }

    /// Whether `address` (a recipient accepted at RCPT) is delivered here:
    /// the bare `Postmaster` or a local domain.
    fn address_is_local(&self, address: &str) -> bool {
        address
            .rsplit_once('@')
            .is_none_or(|(_, domain)| self.domain_is_local(domain))
    }

    /// Address literals are for trusted clients (in `allow_networks` or
    /// authenticated) unless `allow_address_literals` opens them to all.
    fn literals_allowed(&self) -> bool {
        self.config.allow_address_literals || self.peer.may_relay || self.authenticated.is_some()
    }

    /// A domain (case-insensitive, trailing dot ignored) in `local_domains`.
    /// Address literals are never local: relay rules apply to them.
    fn is_local(&self, mailbox: &Mailbox<'_>) -> bool {
        let Domain::Name(name) = mailbox.domain else {
            return false;
        };
        self.domain_is_local(name)
    }

    /// `name` (case-insensitive, trailing dot ignored) is in `local_domains`.
    fn domain_is_local(&self, name: &str) -> bool {
        let name = name.strip_suffix('.').unwrap_or(name);
        self.config
            .local_domains
            .iter()
            .any(|d| d.eq_ignore_ascii_case(name))
    }

    fn handle_data(&mut self, wall: SystemTime) {
        let refusal = match &self.state {
            State::ExpectHelo => Some(Reply::BadSequence(Sequence::SendHeloFirst)),
            State::ExpectMail { .. } => Some(Reply::BadSequence(Sequence::NeedMail)),
            State::ExpectRcptOrData { tx, .. } if tx.recipients.is_empty() => {
                Some(Reply::NoValidRecipients)
            }
            State::ExpectRcptOrData { .. } => None,
            _ => Some(Reply::BadSequence(Sequence::DataAfterBdat)),
        };
        if let Some(reply) = refusal {
            return self.error(reply);
        }
        let State::ExpectRcptOrData { helo, mut tx } =
            std::mem::replace(&mut self.state, State::ExpectHelo)
        else {
            return; // checked above
        };
        let header = self.trace_header(&helo, &mut tx, wall);
        let rx = BodyReceiver::new(Framing::Dot, self.body_limits(&tx), header);
        self.state = State::ReceivingData { helo, tx, rx };
        self.reply(Reply::StartData);
    }

    fn step_data(&mut self, rest: &[u8], wall: SystemTime) -> usize {
        let State::ReceivingData { rx, .. } = &mut self.state else {
            return 0;
        };
        let progress = rx.feed(rest);
        if progress.complete {
            let State::ReceivingData { helo, tx, rx } =
                std::mem::replace(&mut self.state, State::ExpectHelo)
            else {
                return progress.consumed; // matched just above
            };
            self.finish_message(helo, tx, rx, wall);
        }
        progress.consumed
    }

    /// The body ended: hand a good message to the glue, or refuse it.
    fn finish_message(&mut self, helo: Helo, tx: Transaction, rx: BodyReceiver, wall: SystemTime) {
        let copies = self.final_reply_copies(&tx);
        match rx.finish() {
            Ok(mut body) => {
                // RFC 1870 6.3: a message larger than a local recipient's
                // whole quota is refused now rather than bounced later
                // (a bounce would carry a stranger's message to whoever
                // the sender names). LMTP answers per recipient instead:
                // delivery refuses only that recipient's copy.
                let size = body.len() as u64;
                if let Some(over) = tx.recipients.iter().find(|r| {
                    !self.config.lmtp
                        && self.address_is_local(&r.address)
                        && self.policy.larger_than_quota(&r.address, size)
                }) {
                    self.state = State::ExpectMail { helo };
                    return self.error(Reply::LargerThanQuota {
                        address: &over.address,
                    });
                }
                // The tenant header never leaves; only a client that may
                // relay chooses a tenant (and so an egress pool) with it.
                let tenant = self
                    .config
                    .tenant_header
                    .as_deref()
                    .and_then(|name| crate::egress::tenant::take_header(&mut body, name))
                    .filter(|_| self.peer.may_relay || self.authenticated.is_some());
                let envelope = Envelope {
                    sender: tx.sender,
                    recipients: tx.recipients,
                    body_type: tx.body_type,
                    smtputf8: tx.smtputf8,
                    dsn_return: tx.ret,
                    envid: tx.envid,
                    received_at: unix_seconds(wall),
                    client_ip: self.client_ip(),
                    helo: helo.name.clone(),
                    auth_user: self.authenticated.clone(),
                    tenant,
                };
                self.state = if self.config.lmtp {
                    let recipients = envelope
                        .recipients
                        .iter()
                        .map(|r| r.address.clone())
                        .collect();
                    State::AwaitingDelivery { helo, recipients }
                } else {
                    State::AwaitingStore { helo }
                };
                self.events.push_back(Event::Message(Message {
                    envelope,
                    body,
                    trace_id_at: tx.trace_id_at,
                }));
            }
            Err(e) => {
                self.state = State::ExpectMail { helo };
                self.error_copies(Reply::from(e), copies);
            }
        }
    }

    /// How many replies end a transaction's message: one, or in LMTP one
    /// per accepted recipient (RFC 2033 4.2), refusals included, so a
    /// client counting replies never waits for one that does not come.
    fn final_reply_copies(&self, tx: &Transaction) -> usize {
        if self.config.lmtp {
            tx.recipients.len().max(1)
        } else {
            1
        }
    }

    /// An error reply sent `copies` times (see `final_reply_copies`); it
    /// counts as one client error.
    fn error_copies(&mut self, reply: Reply<'_>, copies: usize) {
        for _ in 1..copies {
            self.reply(reply);
        }
        self.error(reply);
    }

    fn handle_bdat(&mut self, size: u64, last: bool, wall: SystemTime) {
        let refusal = match &self.state {
            State::ExpectHelo => Some(Reply::BadSequence(Sequence::SendHeloFirst)),
            State::ExpectMail { .. } => Some(Reply::BadSequence(Sequence::NeedMail)),
            State::ExpectRcptOrData { tx, .. } if tx.recipients.is_empty() => {
                Some(Reply::NoValidRecipients)
            }
            _ => None,
        };
        if let Some(reply) = refusal {
            // RFC 3030 2: the chunk's octets are read before the error.
            let state = std::mem::replace(&mut self.state, State::ExpectHelo);
            return self.discard_chunk(size, reply, 1, state);
        }
        let (helo, tx, rx) = match std::mem::replace(&mut self.state, State::ExpectHelo) {
            State::ExpectRcptOrData { helo, mut tx } => {
                let header = self.trace_header(&helo, &mut tx, wall);
                let rx = BodyReceiver::new(Framing::Chunked, self.body_limits(&tx), header);
                (helo, tx, rx)
            }
            State::BdatPending { helo, tx, rx } => (helo, tx, rx),
            other => {
                self.state = other; // not a command state: unreachable
                return;
            }
        };
        let total = (rx.size() as u64).saturating_add(size);
        if total > self.config.max_message_size as u64 {
            // The transaction is dropped: RFC 3030 2 leaves the state after
            // a failed BDAT undefined, and we choose "no transaction".
            let copies = if last {
                self.final_reply_copies(&tx)
            } else {
                1
            };
            return self.discard_chunk(
                size,
                Reply::MessageTooBig,
                copies,
                State::ExpectMail { helo },
            );
        }
        self.state = State::ReceivingBdat {
            helo,
            tx,
            rx,
            chunk: size,
            remaining: size,
            last,
        };
        if size == 0 {
            self.end_chunk(wall);
        }
    }

    /// Reads and drops `size` octets, then answers `reply` from `then`.
    fn discard_chunk(&mut self, size: u64, reply: Reply<'static>, copies: usize, then: State) {
        if size == 0 {
            self.state = then;
            self.error_copies(reply, copies);
        } else {
            self.state = State::DiscardingBdat {
                remaining: size,
                reply,
                copies,
                then: Box::new(then),
            };
        }
    }

    fn step_bdat(&mut self, rest: &[u8], wall: SystemTime) -> usize {
        let State::ReceivingBdat { rx, remaining, .. } = &mut self.state else {
            return 0;
        };
        let n = chunk_part(rest.len(), *remaining);
        rx.feed(&rest[..n]);
        *remaining -= n as u64;
        if *remaining == 0 {
            self.end_chunk(wall);
        }
        n
    }

    fn step_discard(&mut self, rest: &[u8]) -> usize {
        let State::DiscardingBdat { remaining, .. } = &mut self.state else {
            return 0;
        };
        let n = chunk_part(rest.len(), *remaining);
        *remaining -= n as u64;
        if *remaining == 0 {
            if let State::DiscardingBdat {
                reply,
                copies,
                then,
                ..
            } = std::mem::replace(&mut self.state, State::ExpectHelo)
            {
                self.state = *then;
                self.error_copies(reply, copies);
            }
        }
        n
    }

    /// A chunk's octets are all in: refuse, acknowledge, or complete.
    fn end_chunk(&mut self, wall: SystemTime) {
        let State::ReceivingBdat {
            helo,
            tx,
            rx,
            chunk,
            last,
            ..
        } = std::mem::replace(&mut self.state, State::ExpectHelo)
        else {
            return;
        };
        if let Some(e) = rx.failure() {
            let copies = if last {
                self.final_reply_copies(&tx)
            } else {
                1
            };
            self.state = State::ExpectMail { helo };
            self.error_copies(Reply::from(e), copies);
        } else if last {
            self.finish_message(helo, tx, rx, wall);
        } else {
            self.state = State::BdatPending { helo, tx, rx };
            self.reply(Reply::ChunkReceived { octets: chunk });
        }
    }

    fn handle_rset(&mut self) {
        self.state = match std::mem::replace(&mut self.state, State::ExpectHelo) {
            State::ExpectMail { helo }
            | State::ExpectRcptOrData { helo, .. }
            | State::BdatPending { helo, .. } => State::ExpectMail { helo },
            other => other,
        };
        self.reply(Reply::Ok);
    }

    fn handle_starttls(&mut self) {
        if !self.starttls_offered() {
            return self.error(Reply::NotImplemented);
        }
        if matches!(
            self.state,
            State::ExpectRcptOrData { .. } | State::BdatPending { .. }
        ) {
            return self.error(Reply::BadSequence(Sequence::TransactionInProgress));
        }
        self.reply(Reply::ReadyForTls);
        self.state = State::AwaitingTls;
        self.events.push_back(Event::StartTls);
    }

    fn client_ip(&self) -> IpAddr {
        self.peer.addr.ip().to_canonical()
    }

    /// Our trace header (RFC 5321 4.4), written first into the body buffer:
    /// `Received: from HELO ([ip]) (using TLS...) by HOST (spate) with PROTO
    /// id QUEUEID [tls CIPHER] for <rcpt>; DATE`. We do no reverse DNS, so
    /// the TCP-info is the address literal alone. Over TLS a comment says
    /// the version and cipher (Postfix's `smtpd_tls_received_header`), and
    /// on submission the RFC 8314 4.3 `tls` clause names the cipher suite.
    /// The `id` is a placeholder the spool fills in (`tx.trace_id_at`).
    fn trace_header(&self, helo: &Helo, tx: &mut Transaction, wall: SystemTime) -> Vec<u8> {
        let literal = match self.client_ip() {
            IpAddr::V4(a) => format!("[{a}]"),
            IpAddr::V6(a) => format!("[IPv6:{a}]"),
        };
        // RFC 3848 and RFC 6531 7: the WITH protocol names ("A" for AUTH).
        let authenticated = self.authenticated.is_some();
        let protocol = match (tx.smtputf8, helo.extended, self.peer.tls, authenticated) {
            // RFC 3848 names LMTP's; RFC 6531 7 prefixes UTF8. No AUTH here.
            (false, _, false, _) if self.config.lmtp => "LMTP",
            (false, _, true, _) if self.config.lmtp => "LMTPS",
            (true, _, false, _) if self.config.lmtp => "UTF8LMTP",
            (true, _, true, _) if self.config.lmtp => "UTF8LMTPS",
            (true, _, false, false) => "UTF8SMTP",
            (true, _, true, false) => "UTF8SMTPS",
            (true, _, false, true) => "UTF8SMTPA",
            (true, _, true, true) => "UTF8SMTPSA",
            (false, true, false, false) => "ESMTP",
            (false, true, true, false) => "ESMTPS",
            (false, true, false, true) => "ESMTPA",
            (false, true, true, true) => "ESMTPSA",
            (false, false, _, _) => "SMTP",
        };
        let mut header = String::with_capacity(160 + helo.name.len() + self.config.hostname.len());
        header.push_str("Received: from ");
        header.push_str(&helo.name);
        header.push_str(" (");
        header.push_str(&literal);
        header.push(')');
        if let (true, Some(tls)) = (self.peer.tls, &self.tls) {
            header.push_str("\r\n\t(using ");
            header.push_str(&tls.version);
            header.push_str(" with cipher ");
            header.push_str(&tls.cipher);
            header.push(')');
        }
        header.push_str("\r\n\tby ");
        header.push_str(&self.config.hostname);
        header.push_str(" (spate) with ");
        header.push_str(protocol);
        header.push_str(" id ");
        tx.trace_id_at = Some(header.len());
        header.push_str(TRACE_ID_PLACEHOLDER);
        if let (true, true, Some(tls)) = (self.config.submission, self.peer.tls, &self.tls) {
            header.push_str("\r\n\ttls ");
            header.push_str(&tls.cipher);
            if let Some(group) = &tls.group {
                header.push_str(" group ");
                header.push_str(group);
            }
        }
        if let [only] = tx.recipients.as_slice() {
            header.push_str("\r\n\tfor <");
            header.push_str(&only.address);
            header.push('>');
        }
        header.push_str(";\r\n\t");
        header.push_str(&rfc5322_date(wall));
        header.push_str("\r\n");
        let expected = tx
            .declared_size
            .map_or(0, |s| usize::try_from(s).unwrap_or(usize::MAX))
            .min(self.config.max_message_size)
            .min(MAX_PREALLOCATION);
        let mut body = Vec::with_capacity(header.len() + expected);
        body.extend_from_slice(header.as_bytes());
        body
    }
}

/// How many of `available` bytes belong to a chunk with `remaining` octets.
/// `user@[192.0.2.1]` or `user@[IPv6:...]` (RFC 5321 4.1.3).
fn is_literal(mailbox: &Mailbox<'_>) -> bool {
    !matches!(mailbox.domain, Domain::Name(_))
}

fn chunk_part(available: usize, remaining: u64) -> usize {
    usize::try_from(remaining).map_or(available, |r| r.min(available))
}

fn unix_seconds(wall: SystemTime) -> u64 {
    wall.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// RFC 5322 3.3 date-time in UTC, e.g. `Sat, 1 Jan 2000 00:00:00 +0000`.
/// Built from seconds so an out-of-range clock cannot panic.
fn rfc5322_date(wall: SystemTime) -> String {
    let secs = i64::try_from(unix_seconds(wall)).unwrap_or(0);
    chrono::DateTime::from_timestamp(secs, 0)
        .unwrap_or_default()
        .to_rfc2822()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    const HOST: &str = "mx.test";

    fn config() -> ServerConfig {
        ServerConfig {
            hostname: HOST.to_owned(),
            max_line_length: 2048,
            max_message_size: 10_000,
            max_recipients: 3,
            max_errors: 5,
            max_hops: 3,
            bare_line_endings: BareLineEndings::Reject,
            local_domains: vec!["local.test".to_owned(), "例子.广告".to_owned()],
            starttls: true,
            timeouts: Timeouts::default(),
            ..ServerConfig::default()
        }
    }

    fn peer(may_relay: bool) -> PeerInfo {
        PeerInfo {
            addr: SocketAddr::from(([192, 0, 2, 7], 40000)),
            may_relay,
            tls: false,
        }
    }

    /// 2023-11-14 22:13:20 UTC, a Tuesday.
    fn wall() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_700_000_000)
    }

    const DATE: &str = "Tue, 14 Nov 2023 22:13:20 +0000";

    #[derive(Debug, Default, PartialEq)]
    struct Transcript {
        output: String,
        messages: Vec<Message>,
        closed: bool,
        tls: usize,
        auths: usize,
    }

    impl Transcript {
        /// The code of each reply (continuation lines skipped).
        fn codes(&self) -> Vec<&str> {
            self.output
                .split("\r\n")
                .filter(|l| l.len() >= 4 && l.as_bytes()[3] == b' ')
                .map(|l| &l[..3])
                .collect()
        }

        fn has(&self, line: &str) -> bool {
            self.output.split("\r\n").any(|l| l == line)
        }
    }

    /// Drives a session the way the glue does: appends arriving chunks to a
    /// pending buffer, feeds it, drops what was consumed, acts on events.
    /// Checks on the way that nothing the session controls grows unbounded.
    fn drive_with(
        cfg: ServerConfig,
        peer: PeerInfo,
        input: &[u8],
        next_chunk: impl FnMut() -> usize,
    ) -> Transcript {
        drive_policy(cfg, peer, Rc::new(AcceptAll), input, next_chunk)
    }

    /// `drive_with` under a local policy. Credentials are judged by their
    /// password: "right" succeeds, "down" is a temporary failure.
    fn test_tls() -> TlsDetails {
        TlsDetails {
            version: "TLSv1.3".into(),
            cipher: "TLS_AES_128_GCM_SHA256".into(),
            group: Some("x25519".into()),
        }
    }

    fn drive_policy(
        cfg: ServerConfig,
        peer: PeerInfo,
        policy: Rc<dyn LocalPolicy>,
        input: &[u8],
        mut next_chunk: impl FnMut() -> usize,
    ) -> Transcript {
        let t0 = Instant::now();
        let max_line = cfg.max_line_length;
        let max_body = cfg.max_message_size + 512;
        let mut s = ServerSession::new(Rc::new(cfg), peer, t0).with_policy(policy);
        // As the glue does after a handshake (here: implicit TLS).
        if peer.tls {
            s.set_tls_details(test_tls());
        }
        let mut t = Transcript::default();
        let mut out = Vec::new();
        let mut pending: Vec<u8> = Vec::new();
        let mut fed = 0;
        loop {
            loop {
                let n = s.handle_input(&pending, t0, wall());
                assert!(n <= pending.len());
                pending.drain(..n);
                assert!(
                    s.output().len() <= OUTPUT_HARD_LIMIT + 1024,
                    "output unbounded"
                );
                let mut acted = false;
                while let Some(event) = s.poll_event() {
                    acted = true;
                    match event {
                        Event::Message(m) => {
                            assert!(m.body.len() <= max_body, "body unbounded");
                            t.messages.push(m);
                            s.handle_stored(Ok("QID"), t0);
                        }
                        Event::StartTls => {
                            pending.clear();
                            t.tls += 1;
                            s.set_tls_details(test_tls());
                            s.handle_tls_established(t0);
                        }
                        Event::Authenticate(c) => {
                            t.auths += 1;
                            let outcome = match c.password.expose() {
                                "right" => AuthOutcome::Success { user: c.username },
                                "down" => AuthOutcome::Temporary,
                                _ => AuthOutcome::Failed,
                            };
                            s.handle_auth_result(outcome, t0);
                        }
                        Event::Close => t.closed = true,
                    }
                }
                out.extend_from_slice(s.output());
                let len = s.output().len();
                s.consume_output(len);
                if t.closed || (n == 0 && !acted) {
                    break;
                }
            }
            if t.closed || fed == input.len() {
                break;
            }
            assert!(
                pending.len() < max_line.max(1),
                "the glue would have to hold {} bytes",
                pending.len()
            );
            let k = next_chunk().clamp(1, input.len() - fed);
            pending.extend_from_slice(&input[fed..fed + k]);
            fed += k;
        }
        t.output = String::from_utf8_lossy(&out).into_owned();
        t
    }

    fn drive_cfg(cfg: ServerConfig, may_relay: bool, input: &[u8]) -> Transcript {
        drive_with(cfg, peer(may_relay), input, || usize::MAX)
    }

    fn drive(input: &str) -> Transcript {
        drive_cfg(config(), false, input.as_bytes())
    }

    /// Same input whole, byte by byte and in random chunks: same result.
    fn drive_all_ways(cfg: &ServerConfig, input: &[u8]) -> Transcript {
        let whole = drive_with(cfg.clone(), peer(false), input, || usize::MAX);
        let bytewise = drive_with(cfg.clone(), peer(false), input, || 1);
        assert_eq!(whole, bytewise, "byte-by-byte feeding differs");
        for seed in 0..8 {
            let mut rng = StdRng::seed_from_u64(seed);
            let max = if seed % 2 == 0 { 16 } else { 3000 };
            let chunked = drive_with(cfg.clone(), peer(false), input, || rng.gen_range(1..=max));
            assert_eq!(whole, chunked, "chunked feeding (seed {seed}) differs");
        }
        whole
    }

    const PROLOGUE: &str =
        "EHLO client.example\r\nMAIL FROM:<alice@remote.example>\r\nRCPT TO:<bob@local.test>\r\n";

    fn header(with: &str, rcpt: Option<&str>) -> String {
        let for_clause = rcpt.map_or(String::new(), |r| format!("\r\n\tfor <{r}>"));
        format!(
            "Received: from client.example ([192.0.2.7])\r\n\tby mx.test (spate) with {with} id 0000000000000000{for_clause};\r\n\t{DATE}\r\n"
        )
    }

    /// One session fed by hand, for step-by-step checks.
    struct Manual {
        s: ServerSession,
        t0: Instant,
    }

    impl Manual {
        fn new(cfg: ServerConfig, peer: PeerInfo) -> Self {
            let t0 = Instant::now();
            let mut m = Manual {
                s: ServerSession::new(Rc::new(cfg), peer, t0),
                t0,
            };
            assert_eq!(m.out(), "220 mx.test ESMTP spate\r\n");
            m
        }

        fn feed(&mut self, input: &str) -> usize {
            self.s.handle_input(input.as_bytes(), self.t0, wall())
        }

        fn out(&mut self) -> String {
            let text = String::from_utf8_lossy(self.s.output()).into_owned();
            let len = self.s.output().len();
            self.s.consume_output(len);
            text
        }
    }

    #[test]
    fn counters_follow_transactions_and_reply_classes() {
        let mut m = Manual::new(config(), peer(false));
        m.feed("EHLO client.example\r\nMAIL FROM:<a@remote.example>\r\n");
        m.feed("RCPT TO:<b@elsewhere.example>\r\nRSET\r\nMAIL FROM:<a@remote.example>\r\n");
        m.feed("BOGUS\r\n");
        let taken = m.s.take_counters();
        assert_eq!(taken.transactions, 2);
        // 220, 250 EHLO, 250 MAIL, 250 RSET, 250 MAIL | relay refused | 500.
        assert_eq!(taken.replies, [5, 0, 0, 2], "{}", m.out());
        assert_eq!(m.s.take_counters(), SessionCounters::default(), "reset");
    }

    #[test]
    fn full_transaction() {
        let t = drive_all_ways(
            &config(),
            format!("{PROLOGUE}DATA\r\nSubject: hi\r\n\r\nHello\r\n..dots\r\n.\r\nQUIT\r\n")
                .as_bytes(),
        );
        assert_eq!(t.codes(), ["220", "250", "250", "250", "354", "250", "221"]);
        assert!(t
            .output
            .starts_with("220 mx.test ESMTP spate\r\n250-mx.test\r\n250-PIPELINING\r\n"));
        assert!(t.has("250 2.1.0 Ok") && t.has("250 2.1.5 Ok"));
        assert!(t.has("354 End data with <CR><LF>.<CR><LF>"));
        assert!(t.has("250 2.0.0 Ok: queued as QID") && t.has("221 2.0.0 Bye"));
        assert!(t.closed);
        assert_eq!(t.messages.len(), 1);
        let m = &t.messages[0];
        let expected = format!(
            "{}Subject: hi\r\n\r\nHello\r\n.dots\r\n",
            header("ESMTP", Some("bob@local.test"))
        );
        assert_eq!(String::from_utf8_lossy(&m.body), expected);
        let e = &m.envelope;
        assert_eq!(e.sender, "alice@remote.example");
        assert_eq!(e.recipients.len(), 1);
        assert_eq!(e.recipients[0].address, "bob@local.test");
        assert_eq!(e.helo, "client.example");
        assert_eq!(e.client_ip, IpAddr::from([192, 0, 2, 7]));
        assert_eq!(e.received_at, 1_700_000_000);
        assert_eq!(e.body_type, BodyType::SevenBit);
        assert!(!e.smtputf8);
    }

    #[test]
    fn envelope_parameters_land_in_the_envelope() {
        let t = drive(
            "EHLO client.example\r\n\
             MAIL FROM:<> BODY=8BITMIME RET=HDRS ENVID=id+2B1 SIZE=100\r\n\
             RCPT TO:<bob@local.test> NOTIFY=SUCCESS,DELAY ORCPT=rfc822;bob+40local.test\r\n\
             RCPT TO:<Postmaster>\r\n\
             DATA\r\nx\r\n.\r\n",
        );
        assert_eq!(t.codes(), ["220", "250", "250", "250", "250", "354", "250"]);
        let e = &t.messages[0].envelope;
        assert_eq!(e.sender, "");
        assert_eq!(e.body_type, BodyType::EightBitMime);
        assert_eq!(e.dsn_return, Some(DsnReturn::Headers));
        assert_eq!(e.envid.as_deref(), Some("id+2B1"));
        let n = e.recipients[0].notify.expect("notify");
        assert!(n.success && n.delay && !n.failure && !n.never);
        assert_eq!(
            e.recipients[0].orcpt.as_deref(),
            Some("rfc822;bob+40local.test")
        );
        assert_eq!(e.recipients[1].address, "Postmaster");
        assert_eq!(e.recipients[1].notify, None);
        // Two recipients: no "for" clause.
        assert!(String::from_utf8_lossy(&t.messages[0].body).starts_with(&header("ESMTP", None)));
    }

    #[test]
    fn pipelined_batch_in_one_input() {
        let input = format!(
            "{PROLOGUE}DATA\r\none\r\n.\r\nMAIL FROM:<c@remote.example>\r\nRCPT TO:<d@local.test>\r\n\
             DATA\r\ntwo\r\n.\r\nNOOP\r\nQUIT\r\n"
        );
        let t = drive_all_ways(&config(), input.as_bytes());
        assert_eq!(
            t.codes(),
            ["220", "250", "250", "250", "354", "250", "250", "250", "354", "250", "250", "221"]
        );
        assert_eq!(t.messages.len(), 2);
        assert!(t.messages[1].body.ends_with(b"two\r\n"));

        // The session stops right after the event, and waits for the store.
        let mut m = Manual::new(config(), peer(false));
        let n = m.feed(&input);
        let first_end = input.find("one\r\n.\r\n").expect("present") + 8;
        assert_eq!(n, first_end);
        assert!(matches!(m.s.poll_event(), Some(Event::Message(_))));
        assert_eq!(
            m.feed(&input[n..]),
            0,
            "nothing is consumed while awaiting the store"
        );
        assert!(!m.out().contains("queued"));
        m.s.handle_stored(Ok("A1"), m.t0);
        assert_eq!(m.out(), "250 2.0.0 Ok: queued as A1\r\n");
        let n2 = m.feed(&input[n..]);
        assert!(n2 > 0 && matches!(m.s.poll_event(), Some(Event::Message(_))));
    }

    #[test]
    fn store_failures() {
        let mut m = Manual::new(config(), peer(false));
        m.feed(&format!("{PROLOGUE}DATA\r\nx\r\n.\r\n"));
        m.out();
        assert!(matches!(m.s.poll_event(), Some(Event::Message(_))));
        m.s.handle_stored(Err(StoreFailure::DiskFull), m.t0);
        assert_eq!(m.out(), "452 4.3.1 Insufficient system storage\r\n");
        m.feed("MAIL FROM:<a@remote.example>\r\nRCPT TO:<b@local.test>\r\nDATA\r\ny\r\n.\r\n");
        m.out();
        assert!(matches!(m.s.poll_event(), Some(Event::Message(_))));
        m.s.handle_stored(Err(StoreFailure::Temporary), m.t0);
        assert_eq!(m.out(), "451 4.3.0 Error: queue file write error\r\n");
        // Stray calls are ignored.
        m.s.handle_stored(Ok("X"), m.t0);
        assert_eq!(m.out(), "");
    }

    #[test]
    fn bad_sequences() {
        let t = drive(
            "MAIL FROM:<a@remote.example>\r\nEHLO c\r\nRCPT TO:<b@local.test>\r\nDATA\r\n\
             MAIL FROM:<a@remote.example>\r\nMAIL FROM:<a@remote.example>\r\nDATA\r\n",
        );
        assert_eq!(
            t.codes(),
            ["220", "503", "250", "503", "503", "250", "503", "554", "421"]
        );
        assert!(t.has("503 5.5.1 Error: send HELO/EHLO first"));
        assert!(t.has("503 5.5.1 Error: need MAIL command"));
        assert!(t.has("503 5.5.1 Error: nested MAIL command"));
        assert!(t.has("554 5.5.1 Error: no valid recipients"));
    }

    #[test]
    fn simple_commands() {
        let t = drive(
            "NOOP\r\nHELP\r\nVRFY bob\r\nEXPN list\r\nRSET\r\nFOO\r\nHELO client.example\r\nquit\r\n",
        );
        assert_eq!(
            t.codes(),
            ["220", "250", "214", "252", "502", "250", "500", "250", "221"]
        );
        assert!(t.has("252 2.5.0 Cannot VRFY user, but will accept message and attempt delivery"));
        assert!(t.has("502 5.5.1 Error: command not implemented"));
        assert!(t.has("500 5.5.2 Error: command not recognized"));
        assert!(t.has("250 mx.test"));
        assert!(t.closed);
    }

    #[test]
    fn rset_and_ehlo_reset_the_transaction() {
        let t = drive(&format!(
            "{PROLOGUE}RSET\r\nRCPT TO:<b@local.test>\r\nMAIL FROM:<a@remote.example>\r\nRCPT TO:<b@local.test>\r\n\
             EHLO again.example\r\nDATA\r\n"
        ));
        assert_eq!(
            t.codes(),
            ["220", "250", "250", "250", "250", "503", "250", "250", "250", "503"]
        );
    }

    #[test]
    fn helo_gives_smtp_protocol() {
        let t = drive("HELO client.example\r\nMAIL FROM:<a@remote.example>\r\nRCPT TO:<b@local.test>\r\nDATA\r\nx\r\n.\r\n");
        assert_eq!(t.messages.len(), 1);
        assert!(String::from_utf8_lossy(&t.messages[0].body)
            .starts_with(&header("SMTP", Some("b@local.test"))));
    }

    #[test]
    fn parameters_after_helo_are_refused() {
        let roomy = ServerConfig {
            max_errors: 10,
            ..config()
        };
        let t = drive_cfg(
            roomy,
            false,
            b"HELO c\r\nMAIL FROM:<a@remote.example> SIZE=10\r\nMAIL FROM:<a@remote.example> BODY=8BITMIME\r\n\
             MAIL FROM:<a@remote.example> SMTPUTF8\r\nMAIL FROM:<a@remote.example> RET=FULL\r\n\
             MAIL FROM:<a@remote.example>\r\nRCPT TO:<b@local.test> NOTIFY=NEVER\r\n\
             RCPT TO:<b@local.test>\r\nQUIT\r\n",
        );
        assert_eq!(
            t.codes(),
            ["220", "250", "555", "555", "555", "555", "250", "555", "250", "221"]
        );
        assert!(t.has("555 5.5.4 Parameters not recognized after HELO: use EHLO"));
        // The same commands after EHLO are fine.
        let t = drive(
            "EHLO c\r\nMAIL FROM:<a@remote.example> SIZE=10 BODY=8BITMIME\r\n\
             RCPT TO:<b@local.test> NOTIFY=NEVER\r\nQUIT\r\n",
        );
        assert_eq!(t.codes(), ["220", "250", "250", "250", "221"]);
    }

    #[test]
    fn syntax_and_parameter_errors() {
        let t = drive(
            "EHLO\r\nEHLO c\r\nMAIL FROM:alice@remote.example\r\nMAIL FROM:<a@remote.example> FOO=1\r\n\
             MAIL FROM:<a@remote.example> BODY=BINARYMIME\r\nMAIL FROM:<a@remote.example> SIZE=x\r\n",
        );
        // Five errors reach max_errors (5): the session ends with 421.
        assert_eq!(
            t.codes(),
            ["220", "501", "250", "501", "555", "555", "501", "421"]
        );
        assert!(t.has("501 5.5.4 Syntax: EHLO hostname"));
        assert!(t.has("501 5.1.7 Bad sender address syntax"));
        assert!(t.has("555 5.5.4 Unsupported parameter"));
        assert!(t.has("501 5.5.4 Bad SIZE parameter value"));
        let t = drive(&format!(
            "{PROLOGUE}RCPT TO:<>\r\nRCPT TO:<b@local.test> NOTIFY=NEVER NOTIFY=NEVER\r\n"
        ));
        assert_eq!(t.codes(), ["220", "250", "250", "250", "501", "555"]);
        assert!(t.has("501 5.1.3 Bad recipient address syntax"));
        assert!(t.has("555 5.5.4 Duplicate parameter"));
    }

    #[test]
    fn size_declared_too_big() {
        let t = drive(
            "EHLO c\r\nMAIL FROM:<a@remote.example> SIZE=10001\r\nMAIL FROM:<a@remote.example> SIZE=10000\r\n",
        );
        assert_eq!(t.codes(), ["220", "250", "552", "250"]);
        assert!(t.has("552 5.3.4 Message size exceeds fixed maximum message size"));
        assert!(t.has("250-SIZE 10000"));
    }

    #[test]
    fn data_too_big_is_read_to_the_end_then_refused() {
        let big = "x".repeat(98) + "\r\n";
        let input = format!("{PROLOGUE}DATA\r\n{}.\r\nNOOP\r\n", big.repeat(101));
        let t = drive_all_ways(&config(), input.as_bytes());
        assert_eq!(t.codes(), ["220", "250", "250", "250", "354", "552", "250"]);
        assert!(t.messages.is_empty());
        // Exactly at the limit is fine.
        let input = format!("{PROLOGUE}DATA\r\n{}.\r\n", big.repeat(100));
        let t = drive(&input);
        assert_eq!(t.messages.len(), 1);
    }

    #[test]
    fn hop_limit() {
        let input = format!(
            "{PROLOGUE}DATA\r\nReceived: a\r\nReceived: b\r\nReceived: c\r\nReceived: d\r\n\r\nbody\r\n.\r\nNOOP\r\n"
        );
        let t = drive(&input);
        assert_eq!(t.codes(), ["220", "250", "250", "250", "354", "554", "250"]);
        assert!(t.has("554 5.4.6 Too many hops (mail loop)"));
        let input =
            format!("{PROLOGUE}DATA\r\nReceived: a\r\nReceived: b\r\nReceived: c\r\n\r\n.\r\n");
        assert_eq!(drive(&input).messages.len(), 1);
    }

    #[test]
    fn relay_policy() {
        let input = "EHLO c\r\nMAIL FROM:<a@remote.example>\r\nRCPT TO:<x@elsewhere.example>\r\n\
                     RCPT TO:<x@LOCAL.TEST.>\r\nRCPT TO:<x@[192.0.2.1]>\r\nRCPT TO:<postmaster>\r\n";
        let t = drive(input);
        assert_eq!(t.codes(), ["220", "250", "250", "554", "250", "550", "250"]);
        assert!(t.has("554 5.7.1 <x@elsewhere.example>: Relay access denied"));
        assert!(
            t.has("550 5.7.1 <x@[192.0.2.1]>: Address literals are not accepted from your network")
        );
        let roomy = ServerConfig {
            max_recipients: 10,
            ..config()
        };
        let t = drive_cfg(roomy, true, input.as_bytes());
        assert_eq!(t.codes(), ["220", "250", "250", "250", "250", "250", "250"]);
    }

    #[test]
    fn too_many_recipients() {
        let t = drive(
            "EHLO c\r\nMAIL FROM:<a@remote.example>\r\nRCPT TO:<a@local.test>\r\nRCPT TO:<b@local.test>\r\n\
             RCPT TO:<c@local.test>\r\nRCPT TO:<d@local.test>\r\nDATA\r\nx\r\n.\r\n",
        );
        assert_eq!(
            t.codes(),
            ["220", "250", "250", "250", "250", "250", "452", "354", "250"]
        );
        assert!(t.has("452 4.5.3 Error: too many recipients"));
        assert_eq!(t.messages[0].envelope.recipients.len(), 3);
    }

    #[test]
    fn too_many_errors_close_the_session() {
        let t = drive("A\r\nB\r\nC\r\nD\r\nE\r\nF\r\nNOOP\r\n");
        assert_eq!(t.codes(), ["220", "500", "500", "500", "500", "500", "421"]);
        assert!(t
            .output
            .ends_with("421 4.7.0 mx.test Error: too many errors\r\n"));
        assert!(t.closed);
    }

    #[test]
    fn line_too_long_tail_is_never_a_command() {
        let long = format!("NOOP {}QUIT\r\nNOOP\r\n", "A".repeat(3000));
        let t = drive_all_ways(&config(), format!("EHLO c\r\n{long}").as_bytes());
        assert_eq!(t.codes(), ["220", "250", "500", "250"]);
        assert!(t.has("500 5.5.2 Line too long"));
        assert!(!t.closed);
        // The tail sits exactly at the limit boundary.
        let exact = format!("NOOP {}\r\nQUIT\r\n", "A".repeat(2048 - 7));
        assert_eq!(exact.find("\r\n"), Some(2046));
        assert_eq!(drive(&exact).codes(), ["220", "250", "221"]);
        let over = format!("NOOP {}\r\nQUIT\r\n", "A".repeat(2048 - 6));
        assert_eq!(
            drive_all_ways(&config(), over.as_bytes()).codes(),
            ["220", "500", "221"]
        );
        let over_tail = format!("{}QUIT\r\n", "B".repeat(2048));
        let t = drive_all_ways(&config(), over_tail.as_bytes());
        assert_eq!(t.codes(), ["220", "500"]);
        assert!(!t.closed);
    }

    #[test]
    fn bare_lf_command_lines() {
        let t = drive("EHLO c\nNOOP\r\n");
        assert_eq!(t.codes(), ["220", "500", "250"]);
        assert!(t.has("500 5.5.2 Error: bare <LF> received"));
        let cfg = ServerConfig {
            bare_line_endings: BareLineEndings::Normalize,
            ..config()
        };
        assert_eq!(
            drive_cfg(cfg, false, b"EHLO c\nNOOP\n").codes(),
            ["220", "250", "250"]
        );
        // A CR inside a command line is not a line end.
        assert_eq!(
            drive("NOOP\rQUIT\r\nDATA\r\r\nNOOP\r\n").codes(),
            ["220", "500", "500", "250"]
        );
    }

    #[test]
    fn bdat_transaction() {
        let input = format!(
            "{PROLOGUE}BDAT 12\r\nSubject: x\r\nBDAT 15 LAST\r\n\r\nbody\r\n.\r\n..\r\nQUIT\r\n"
        );
        let t = drive_all_ways(&config(), input.as_bytes());
        assert_eq!(t.codes(), ["220", "250", "250", "250", "250", "250", "221"]);
        assert!(t.has("250 2.0.0 12 octets received"));
        assert!(t.has("250 2.0.0 Ok: queued as QID"));
        let expected = format!(
            "{}Subject: x\r\n\r\nbody\r\n.\r\n..\r\n",
            header("ESMTP", Some("bob@local.test"))
        );
        assert_eq!(String::from_utf8_lossy(&t.messages[0].body), expected);
    }

    #[test]
    fn bdat_zero_last_and_unterminated_chunks() {
        let t = drive(&format!("{PROLOGUE}BDAT 0 LAST\r\n"));
        assert_eq!(t.codes(), ["220", "250", "250", "250", "250"]);
        assert_eq!(
            String::from_utf8_lossy(&t.messages[0].body),
            header("ESMTP", Some("bob@local.test"))
        );
        let t = drive(&format!("{PROLOGUE}BDAT 3\r\nabcBDAT 0 LAST\r\n"));
        assert!(t.messages[0]
            .body
            .ends_with(b"\tTue, 14 Nov 2023 22:13:20 +0000\r\nabc\r\n"));
    }

    #[test]
    fn data_after_bdat_and_rcpt_after_bdat() {
        let t = drive(&format!(
            "{PROLOGUE}BDAT 3\r\nab\nDATA\r\nRCPT TO:<c@local.test>\r\nBDAT 2 LAST\r\nc\r"
        ));
        // The failed chunk ends the transaction (RFC 3030 2 leaves it open).
        assert_eq!(
            t.codes(),
            ["220", "250", "250", "250", "550", "503", "503", "503"]
        );
        assert!(t.has("503 5.5.1 Error: need MAIL command"));
        let t = drive(&format!(
            "{PROLOGUE}BDAT 3\r\nab\rDATA\r\nRCPT TO:<c@local.test>\r\nBDAT 2 LAST\r\n\r\n"
        ));
        // A CR ending a chunk may pair with an LF starting the next one, so
        // it is judged with the next chunk: here it is bare.
        assert_eq!(
            t.codes(),
            ["220", "250", "250", "250", "250", "503", "503", "550"]
        );
        let t = drive(&format!(
            "{PROLOGUE}BDAT 4\r\nab\r\nDATA\r\nRCPT TO:<c@local.test>\r\nBDAT 2 LAST\r\nc\n"
        ));
        assert_eq!(
            t.codes(),
            ["220", "250", "250", "250", "250", "503", "503", "550"]
        );
        assert!(t.has("503 5.5.1 Error: DATA after BDAT in the same transaction"));
        assert!(t.has("503 5.5.1 Error: BDAT transfer in progress"));
        let cfg = ServerConfig {
            bare_line_endings: BareLineEndings::Normalize,
            ..config()
        };
        let t = drive_cfg(
            cfg,
            false,
            format!("{PROLOGUE}BDAT 4\r\nab\r\nDATA\r\nBDAT 2 LAST\r\nc\n").as_bytes(),
        );
        assert_eq!(t.codes(), ["220", "250", "250", "250", "250", "503", "250"]);
        assert!(t.messages[0].body.ends_with(b"\r\nab\r\nc\r\n"));
    }

    #[test]
    fn bdat_without_transaction_consumes_its_octets() {
        let t = drive_all_ways(
            &config(),
            b"BDAT 6\r\nQUIT\r\nEHLO c\r\nBDAT 6 LAST\r\nQUIT\r\nNOOP\r\n",
        );
        assert_eq!(t.codes(), ["220", "503", "250", "503", "250"]);
        assert!(!t.closed);
        let t = drive("EHLO c\r\nMAIL FROM:<a@remote.example>\r\nBDAT 6 LAST\r\nQUIT\r\nRCPT TO:<b@local.test>\r\n");
        assert_eq!(t.codes(), ["220", "250", "250", "554", "250"]);
    }

    #[test]
    fn bdat_chunk_too_big_is_discarded() {
        let chunk = "QUIT\r\n".repeat(2000);
        let input = format!(
            "{PROLOGUE}BDAT 6000\r\n{}BDAT 12000 LAST\r\n{chunk}NOOP\r\nRCPT TO:<b@local.test>\r\n",
            &chunk[..6000]
        );
        let t = drive_all_ways(&config(), input.as_bytes());
        assert_eq!(
            t.codes(),
            ["220", "250", "250", "250", "250", "552", "250", "503"]
        );
        assert!(t.messages.is_empty());
        assert!(!t.closed);
    }

    #[test]
    fn utf8_addresses_need_smtputf8() {
        let t = drive(
            "EHLO c\r\nMAIL FROM:<用户@例子.广告>\r\nMAIL FROM:<a@remote.example>\r\nRCPT TO:<用户@例子.广告>\r\n",
        );
        assert_eq!(t.codes(), ["220", "250", "553", "250", "553"]);
        assert!(t.has("553 5.6.7 Non-ASCII address requires the SMTPUTF8 parameter"));
        let t = drive(
            "EHLO client.example\r\nMAIL FROM:<用户@例子.广告> SMTPUTF8\r\nRCPT TO:<收件人@例子.广告>\r\nDATA\r\nx\r\n.\r\n",
        );
        assert_eq!(t.codes(), ["220", "250", "250", "250", "354", "250"]);
        let m = &t.messages[0];
        assert!(m.envelope.smtputf8);
        assert_eq!(m.envelope.sender, "用户@例子.广告");
        assert!(String::from_utf8_lossy(&m.body)
            .starts_with(&header("UTF8SMTP", Some("收件人@例子.广告"))));
    }

    #[test]
    fn ipv6_and_mapped_peers() {
        let input = format!("{PROLOGUE}DATA\r\nx\r\n.\r\n");
        let v6 = PeerInfo {
            addr: "[2001:db8::1]:25".parse().expect("valid socket address"),
            may_relay: false,
            tls: false,
        };
        let t = drive_with(config(), v6, input.as_bytes(), || usize::MAX);
        assert!(String::from_utf8_lossy(&t.messages[0].body)
            .starts_with("Received: from client.example ([IPv6:2001:db8::1])"));
        let mapped = PeerInfo {
            addr: "[::ffff:192.0.2.9]:25"
                .parse()
                .expect("valid socket address"),
            ..v6
        };
        let t = drive_with(config(), mapped, input.as_bytes(), || usize::MAX);
        assert!(String::from_utf8_lossy(&t.messages[0].body)
            .starts_with("Received: from client.example ([192.0.2.9])"));
        assert_eq!(
            t.messages[0].envelope.client_ip,
            IpAddr::from([192, 0, 2, 9])
        );
    }

    #[test]
    fn bare_line_endings_in_data() {
        let input = format!("{PROLOGUE}DATA\r\nline one\nline two\r\n.\r\nNOOP\r\n");
        let t = drive_all_ways(&config(), input.as_bytes());
        assert_eq!(t.codes(), ["220", "250", "250", "250", "354", "550", "250"]);
        assert!(t.has("550 5.5.2 Message contains bare CR or LF"));
        let cfg = ServerConfig {
            bare_line_endings: BareLineEndings::Normalize,
            ..config()
        };
        let t = drive_all_ways(&cfg, input.as_bytes());
        assert_eq!(t.codes(), ["220", "250", "250", "250", "354", "250", "250"]);
        assert!(t.messages[0]
            .body
            .ends_with(b"\r\nline one\r\nline two\r\n"));
    }

    /// The end-of-data variants of the 2023 "SMTP smuggling" research (SEC
    /// Consult) and relatives: none may end DATA, so the smuggled MAIL, RCPT
    /// and DATA are message content and never commands.
    #[test]
    fn smuggling_never_yields_an_extra_message_or_command() {
        // (variant, whether it holds a bare CR or LF)
        let variants: [(&str, bool); 13] = [
            ("\n.\n", true),
            ("\n.\r\n", true),
            ("\r.\r", true),
            ("\r\n.\r", true),
            ("\r.\r\n", true),
            ("\r\n.\n", true),
            ("\r\n\x00.\r\n", false),
            ("\r\n.\x00\r\n", false),
            ("\r\n .\r\n", false),
            ("\n.\r", true),
            ("\r\n.\n\r", true),
            ("\r\r\n.\r\r\n", true),
            ("\n\r\n.\n\r\n", true),
        ];
        for (variant, bare) in variants {
            let input = format!(
                "{PROLOGUE}DATA\r\nSubject: test\r\n\r\nlegit{variant}MAIL FROM:<admin@local.test>\r\n\
                 RCPT TO:<victim@local.test>\r\nDATA\r\nSubject: smuggled\r\n\r\n.\r\nQUIT\r\n"
            );
            for (mode, cfg) in [
                ("reject", config()),
                (
                    "normalize",
                    ServerConfig {
                        bare_line_endings: BareLineEndings::Normalize,
                        ..config()
                    },
                ),
            ] {
                let t = drive_all_ways(&cfg, input.as_bytes());
                let what = format!("{variant:?} ({mode})");
                assert_eq!(t.output.matches("354 ").count(), 1, "{what}");
                assert_eq!(t.output.matches("250 2.1.0").count(), 1, "{what}");
                assert_eq!(t.output.matches("250 2.1.5").count(), 1, "{what}");
                assert!(t.closed, "{what}");
                if mode == "reject" && bare {
                    assert_eq!(
                        t.codes(),
                        ["220", "250", "250", "250", "354", "550", "221"],
                        "{what}"
                    );
                    assert!(t.messages.is_empty(), "{what}");
                } else {
                    assert_eq!(
                        t.codes(),
                        ["220", "250", "250", "250", "354", "250", "221"],
                        "{what}"
                    );
                    assert_eq!(t.messages.len(), 1, "{what}");
                    let body = String::from_utf8_lossy(&t.messages[0].body);
                    assert!(body.contains("MAIL FROM:<admin@local.test>\r\n"), "{what}");
                    assert!(body.ends_with("Subject: smuggled\r\n\r\n"), "{what}");
                    assert_eq!(
                        t.messages[0].envelope.recipients[0].address,
                        "bob@local.test"
                    );
                }
            }
        }
    }

    #[test]
    fn starttls_flow() {
        let cfg = config();
        let mut m = Manual::new(cfg.clone(), peer(false));
        let input = "EHLO c\r\nSTARTTLS\r\nMAIL FROM:<injected@remote.example>\r\n";
        let n = m.feed(input);
        assert_eq!(
            n,
            "EHLO c\r\nSTARTTLS\r\n".len(),
            "nothing after STARTTLS is consumed"
        );
        let out = m.out();
        assert!(out.contains("250 STARTTLS\r\n"));
        assert!(out.ends_with("220 2.0.0 Ready to start TLS\r\n"));
        assert_eq!(m.s.poll_event(), Some(Event::StartTls));
        assert_eq!(m.feed("NOOP\r\n"), 0, "no input before the handshake");
        // The glue discards the buffered rest, handshakes, then:
        m.s.handle_tls_established(m.t0);
        m.feed("MAIL FROM:<a@remote.example>\r\n");
        assert_eq!(m.out(), "503 5.5.1 Error: send HELO/EHLO first\r\n");
        m.feed("EHLO c\r\n");
        let ehlo = m.out();
        assert!(ehlo.ends_with("250 DSN\r\n") && !ehlo.contains("STARTTLS"));
        m.feed("STARTTLS\r\n");
        assert_eq!(m.out(), "502 5.5.1 Error: command not implemented\r\n");
        m.feed("MAIL FROM:<a@remote.example>\r\nRCPT TO:<b@local.test>\r\nDATA\r\nx\r\n.\r\n");
        m.out();
        let Some(Event::Message(msg)) = m.s.poll_event() else {
            panic!("no message")
        };
        assert!(String::from_utf8_lossy(&msg.body).contains("with ESMTPS"));

        // Not configured, with arguments, inside a transaction.
        let off = ServerConfig {
            starttls: false,
            ..config()
        };
        let t = drive_cfg(off, false, b"EHLO c\r\nSTARTTLS\r\n");
        assert!(!t.output.contains("STARTTLS"));
        assert_eq!(t.codes(), ["220", "250", "502"]);
        assert_eq!(drive("STARTTLS now\r\n").codes(), ["220", "501"]);
        let t = drive(&format!("{PROLOGUE}STARTTLS\r\n"));
        assert_eq!(t.codes(), ["220", "250", "250", "250", "503"]);
        assert_eq!(t.tls, 0);
        // An already-TLS connection (port 465) never offers it.
        let tls_peer = PeerInfo {
            tls: true,
            ..peer(false)
        };
        let t = drive_with(config(), tls_peer, b"EHLO c\r\nSTARTTLS\r\n", || usize::MAX);
        assert_eq!(t.codes(), ["220", "250", "502"]);
    }

    #[test]
    fn timeouts() {
        let mut m = Manual::new(config(), peer(false));
        assert_eq!(m.s.deadline(), m.t0 + Duration::from_secs(300));
        m.s.handle_timeout(m.t0 + Duration::from_secs(299));
        assert_eq!(m.out(), "");
        let t1 = m.t0 + Duration::from_secs(100);
        m.s.handle_input(format!("{PROLOGUE}DATA\r\npartial").as_bytes(), t1, wall());
        m.out();
        assert_eq!(m.s.deadline(), t1 + Duration::from_secs(180));
        m.s.handle_timeout(t1 + Duration::from_secs(179));
        assert!(!m.s.is_closed());
        m.s.handle_timeout(t1 + Duration::from_secs(180));
        assert_eq!(m.out(), "421 4.4.2 mx.test Error: timeout exceeded\r\n");
        assert_eq!(m.s.poll_event(), Some(Event::Close));
        assert!(m.s.is_closed());
        assert_eq!(m.s.handle_input(b"NOOP\r\n", t1, wall()), 6);
        assert_eq!(m.out(), "");

        // An absurd configured timeout does not overflow.
        let cfg = ServerConfig {
            timeouts: Timeouts {
                command: Duration::MAX,
                data_block: Duration::MAX,
            },
            ..config()
        };
        let m = Manual::new(cfg, peer(false));
        assert!(m.s.deadline() >= m.t0);
    }

    #[test]
    fn shutdown_between_transactions() {
        let mut m = Manual::new(config(), peer(false));
        m.feed("EHLO c\r\n");
        m.out();
        m.s.handle_shutdown();
        assert_eq!(
            m.out(),
            "421 4.3.2 mx.test Service shutting down, closing transmission channel\r\n"
        );
        assert_eq!(m.s.poll_event(), Some(Event::Close));
        assert!(m.s.is_closed());
    }

    #[test]
    fn shutdown_waits_for_the_transaction() {
        let mut m = Manual::new(config(), peer(false));
        m.feed(&format!("{PROLOGUE}DATA\r\nSubject: x\r\n"));
        m.out();
        m.s.handle_shutdown();
        assert_eq!(m.out(), "");
        assert!(!m.s.is_closed());
        m.feed("\r\nbody\r\n.\r\nNOOP\r\n");
        assert!(matches!(m.s.poll_event(), Some(Event::Message(_))));
        m.s.handle_stored(Ok("Q9"), m.t0);
        assert_eq!(
            m.out(),
            "250 2.0.0 Ok: queued as Q9\r\n421 4.3.2 mx.test Service shutting down, closing transmission channel\r\n"
        );
        assert_eq!(m.s.poll_event(), Some(Event::Close));

        // A refused message ends its transaction too.
        let mut m = Manual::new(config(), peer(false));
        m.feed(&format!("{PROLOGUE}BDAT 3\r\nab\n"));
        m.s.handle_shutdown();
        m.feed("BDAT 0 LAST\r\nNOOP\r\n");
        let out = m.out();
        assert!(out.ends_with("550 5.5.2 Message contains bare CR or LF\r\n421 4.3.2 mx.test Service shutting down, closing transmission channel\r\n"), "{out}");
        assert!(m.s.is_closed());
    }

    #[test]
    fn output_backpressure() {
        let mut m = Manual::new(config(), peer(false));
        let input = "NOOP\r\n".repeat(5000);
        let n = m.feed(&input);
        assert!(n < input.len());
        assert!(m.s.wants_flush());
        assert!(m.s.output().len() < OUTPUT_SOFT_LIMIT + 100);
        assert_eq!(
            m.feed(&input[n..]),
            0,
            "no progress until output is written"
        );
        m.out();
        assert!(!m.s.wants_flush());
        assert!(m.feed(&input[n..]) > 0);
    }

    #[test]
    fn equal_results_for_any_chunking_of_a_rich_transcript() {
        let mut input = String::new();
        input.push_str("EHLO client.example\r\nNOOP\r\nHELP\r\nVRFY x\r\n");
        input.push_str("MAIL FROM:<a@remote.example> SIZE=500\r\nRCPT TO:<b@local.test>\r\nRCPT TO:<x@far.example>\r\n");
        input.push_str("DATA\r\nReceived: x\r\nSubject: one\r\n\r\n.leading\r\n..\r\n.\r\n");
        input.push_str(
            "MAIL FROM:<>\r\nRCPT TO:<Postmaster>\r\nBDAT 10\r\n0123456789BDAT 5 LAST\r\n\r\n.\r\n",
        );
        input.push_str(&format!("NOOP {}\r\n", "L".repeat(5000)));
        input.push_str(
            "bad command\r\nRSET\r\nMAIL FROM:<c@remote.example>\r\nRCPT TO:<d@local.test>\r\n",
        );
        input.push_str("DATA\r\nline\r\n\r\n.\r\nQUIT\r\n");
        let t = drive_all_ways(&config(), input.as_bytes());
        assert_eq!(t.messages.len(), 3);
        assert!(t.closed);
        let cfg = ServerConfig {
            bare_line_endings: BareLineEndings::Normalize,
            max_line_length: 64,
            ..config()
        };
        let input = format!(
            "EHLO c\nNOOP {}\nMAIL FROM:<a@remote.example>\nRCPT TO:<b@local.test>\n\
             DATA\nbare\nlines\r\n.\nnot the end\r\n.\r\nQUIT\n",
            "L".repeat(100)
        );
        let t = drive_all_ways(&cfg, input.as_bytes());
        assert_eq!(
            t.codes(),
            ["220", "250", "500", "250", "250", "354", "250", "221"]
        );
        assert!(t.has("500 5.5.2 Line too long"));
        assert!(t.messages[0]
            .body
            .ends_with(b"\r\nbare\r\nlines\r\n.\r\nnot the end\r\n"));
    }

    /// Random garbage (and garbage built from protocol fragments) never
    /// panics and never grows anything past its bound; `drive_with` checks
    /// the bounds after every step.
    #[test]
    fn random_garbage_is_harmless() {
        let fragments: [&[u8]; 16] = [
            b"EHLO x\r\n",
            b"MAIL FROM:<a@local.test>\r\n",
            b"MAIL FROM:<a@local.test> SIZE=100\r\n",
            b"RCPT TO:<b@local.test>\r\n",
            b"RCPT TO:<b@remote.example>\r\n",
            b"DATA\r\n",
            b"BDAT 10\r\n",
            b"BDAT 3 LAST\r\n",
            b"BDAT 99999999999999999999\r\n",
            b"\r\n.\r\n",
            b"STARTTLS\r\n",
            b"RSET\r\n",
            b"\n",
            b"\r",
            b".",
            b"Received: x\r\n",
        ];
        for seed in 0..60u64 {
            let mut rng = StdRng::seed_from_u64(seed);
            let mut input = Vec::new();
            let target = rng.gen_range(0..20_000);
            while input.len() < target {
                if rng.gen_bool(0.5) {
                    input.extend_from_slice(fragments[rng.gen_range(0..fragments.len())]);
                } else {
                    for _ in 0..rng.gen_range(1..200) {
                        input.push(rng.gen());
                    }
                }
            }
            let cfg = ServerConfig {
                max_line_length: rng.gen_range(16..300),
                max_message_size: rng.gen_range(0..2000),
                max_errors: rng.gen_range(0..2000),
                max_hops: rng.gen_range(0..3),
                max_recipients: rng.gen_range(0..4),
                bare_line_endings: if rng.gen_bool(0.5) {
                    BareLineEndings::Reject
                } else {
                    BareLineEndings::Normalize
                },
                ..config()
            };
            let max_chunk = rng.gen_range(1..4096);
            let mut chunk_rng = StdRng::seed_from_u64(seed ^ 0xdead_beef);
            drive_with(cfg.clone(), peer(seed % 3 == 0), &input, || {
                chunk_rng.gen_range(1..=max_chunk)
            });
            drive_with(cfg, peer(false), &input, || usize::MAX);
        }
    }

    // ---- AUTH (RFC 4954) and the local policy ----------------------------

    fn submission() -> ServerConfig {
        ServerConfig {
            submission: true,
            ..config()
        }
    }

    fn peer_at(ip: [u8; 4], tls: bool) -> PeerInfo {
        PeerInfo {
            addr: SocketAddr::from((ip, 40000)),
            may_relay: false,
            tls,
        }
    }

    fn plain(user: &str, password: &str) -> String {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{password}"))
    }

    /// The quota of small@local.test.
    const SMALL_QUOTA: u64 = 1000;

    /// A directory of one user, alice, who owns alice@local.test, a full
    /// mailbox, full@local.test, and small@local.test with a quota of
    /// [`SMALL_QUOTA`] bytes.
    #[derive(Debug)]
    struct OneUser;

    impl LocalPolicy for OneUser {
        fn recipient(&self, address: &str, declared_size: Option<u64>) -> LocalRecipient {
            match address {
                "alice@local.test" | "Alice@LOCAL.test" | "Postmaster" => LocalRecipient::Accept,
                "full@local.test" => LocalRecipient::MailboxFull { permanent: false },
                "gone@local.test" => LocalRecipient::MailboxFull { permanent: true },
                "small@local.test" if declared_size.is_some_and(|s| s > SMALL_QUOTA) => {
                    LocalRecipient::LargerThanQuota
                }
                "small@local.test" => LocalRecipient::Accept,
                _ => LocalRecipient::Unknown,
            }
        }

        fn larger_than_quota(&self, address: &str, size: u64) -> bool {
            address == "small@local.test" && size > SMALL_QUOTA
        }

        fn may_send_as(&self, user: &str, sender: &str) -> bool {
            user == "alice" && sender == "alice@local.test"
        }
    }

    fn drive_auth(cfg: ServerConfig, peer: PeerInfo, input: &str) -> Transcript {
        drive_policy(cfg, peer, Rc::new(OneUser), input.as_bytes(), || usize::MAX)
    }

    #[test]
    fn the_trace_header_has_the_queue_id_slot_and_the_tls_agreed() {
        let input = format!(
            "EHLO c\r\nAUTH PLAIN {}\r\n\
             MAIL FROM:<alice@local.test>\r\nRCPT TO:<x@elsewhere.example>\r\nDATA\r\nhi\r\n.\r\nQUIT\r\n",
            plain("alice", "right")
        );
        let t = drive_auth(submission(), peer_at([192, 0, 2, 1], true), &input);
        let m = &t.messages[0];
        let body = String::from_utf8_lossy(&m.body);
        assert!(
            body.starts_with(
                "Received: from c ([192.0.2.1])\r\n\t(using TLSv1.3 with cipher TLS_AES_128_GCM_SHA256)\r\n\
                 \tby mx.test (spate) with ESMTPSA id 0000000000000000\r\n\
                 \ttls TLS_AES_128_GCM_SHA256 group x25519\r\n\tfor <x@elsewhere.example>;"
            ),
            "{body}"
        );
        let at = m.trace_id_at.expect("an id slot");
        assert_eq!(&m.body[at - 4..at + 16], b" id 0000000000000000");
        // A relay client over STARTTLS: the comment, no RFC 8314 clause
        // (that is for submission); in plain text, neither.
        let cfg = ServerConfig {
            starttls: true,
            ..config()
        };
        let t = drive_with(
            cfg,
            peer(true),
            format!("EHLO client.example\r\nSTARTTLS\r\n{PROLOGUE}DATA\r\nhi\r\n.\r\n").as_bytes(),
            // A byte at a time: what follows STARTTLS is not pipelined
            // into the handshake (it would be discarded).
            || 1,
        );
        let body = String::from_utf8_lossy(&t.messages[0].body);
        assert!(
            body.contains("\t(using TLSv1.3 with cipher TLS_AES_128_GCM_SHA256)\r\n"),
            "{body}"
        );
        assert!(body.contains("with ESMTPS id "), "{body}");
        assert!(!body.contains("\ttls "), "{body}");
        let t = drive(&format!("{PROLOGUE}DATA\r\nhi\r\n.\r\n"));
        let body = String::from_utf8_lossy(&t.messages[0].body);
        assert!(
            !body.contains("using") && !body.contains("\ttls "),
            "{body}"
        );
    }

    #[test]
    fn auth_plain_lets_a_submission_client_relay() {
        let input = format!(
            "EHLO c\r\nMAIL FROM:<alice@local.test>\r\nAUTH PLAIN {}\r\n\
             MAIL FROM:<alice@local.test>\r\nRCPT TO:<x@elsewhere.example>\r\nDATA\r\nhi\r\n.\r\nQUIT\r\n",
            plain("alice", "right")
        );
        let t = drive_auth(submission(), peer_at([192, 0, 2, 1], true), &input);
        assert!(t.has("250 AUTH PLAIN LOGIN"), "{}", t.output);
        assert!(t.has("530 5.7.0 Authentication required"), "{}", t.output);
        assert!(t.has("235 2.7.0 Authentication successful"), "{}", t.output);
        assert_eq!(t.messages.len(), 1, "{}", t.output);
        let body = String::from_utf8_lossy(&t.messages[0].body);
        assert!(body.contains("with ESMTPSA"), "{body}");
    }

    #[test]
    fn auth_login_and_its_failures() {
        use base64::Engine as _;
        let b = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let input = format!(
            "EHLO c\r\nAUTH LOGIN\r\n{}\r\n{}\r\nAUTH LOGIN {}\r\n{}\r\nAUTH LOGIN\r\n*\r\n\
             AUTH PLAIN\r\n!!\r\nAUTH CRAM-MD5\r\nAUTH PLAIN {}\r\nAUTH PLAIN {}\r\nQUIT\r\n",
            b("alice"),
            b("wrong"),
            b("alice"),
            b("down"),
            plain("alice", "right"),
            plain("alice", "right"),
        );
        let cfg = ServerConfig {
            max_errors: 10,
            ..submission()
        };
        let t = drive_auth(cfg, peer_at([127, 0, 0, 9], false), &input);
        assert!(
            t.has("334 VXNlcm5hbWU6") && t.has("334 UGFzc3dvcmQ6"),
            "{}",
            t.output
        );
        assert_eq!(
            t.codes(),
            [
                "220", "250", "334", "334", "535", "334", "454", "334", "501", "334", "501", "504",
                "235", "503", "221"
            ],
            "{}",
            t.output
        );
        assert_eq!(t.auths, 3);
    }

    #[test]
    fn auth_needs_tls_except_on_loopback() {
        let input = format!(
            "EHLO c\r\nAUTH PLAIN {}\r\nQUIT\r\n",
            plain("alice", "right")
        );
        let t = drive_auth(submission(), peer_at([192, 0, 2, 1], false), &input);
        assert!(!t.output.contains("AUTH PLAIN"), "{}", t.output);
        assert!(t.has("538 5.7.11 Encryption required for requested authentication mechanism"));
        assert_eq!(t.auths, 0, "no credentials may reach the glue in the clear");
        let t = drive_auth(submission(), peer_at([127, 0, 0, 1], false), &input);
        assert!(t.has("235 2.7.0 Authentication successful"), "{}", t.output);
        let cfg = ServerConfig {
            allow_plaintext_auth: true,
            ..submission()
        };
        let t = drive_auth(cfg, peer_at([192, 0, 2, 1], false), &input);
        assert!(t.has("235 2.7.0 Authentication successful"), "{}", t.output);
        // The port-25 listener does not do AUTH at all.
        let t = drive_auth(config(), peer_at([127, 0, 0, 1], true), &input);
        assert!(
            t.has("502 5.5.1 Error: command not implemented"),
            "{}",
            t.output
        );
    }

    #[test]
    fn auth_is_refused_inside_a_transaction_and_forgotten_after_starttls() {
        let input = format!(
            "EHLO c\r\nAUTH PLAIN {p}\r\nMAIL FROM:<alice@local.test>\r\nAUTH PLAIN {p}\r\n\
             RSET\r\nSTARTTLS\r\nEHLO c\r\nMAIL FROM:<alice@local.test>\r\nQUIT\r\n",
            p = plain("alice", "right")
        );
        // Byte by byte, so nothing is pipelined past STARTTLS (that would
        // be discarded, as RFC 3207 wants).
        let t = drive_policy(
            submission(),
            peer_at([127, 0, 0, 1], false),
            Rc::new(OneUser),
            input.as_bytes(),
            || 1,
        );
        assert_eq!(
            t.codes(),
            ["220", "250", "235", "250", "503", "250", "220", "250", "530", "221"],
            "{}",
            t.output
        );
    }

    #[test]
    fn the_tenant_header_is_removed_and_names_a_tenant_only_for_relay_clients() {
        let cfg = ServerConfig {
            tenant_header: Some("X-Tenant".to_owned()),
            ..config()
        };
        let input = "EHLO c\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<x@local.test>\r\nDATA\r\n\
                     Subject: s\r\nx-tenant: Acme\r\n\r\nX-Tenant: body\r\n.\r\nQUIT\r\n";
        for may_relay in [true, false] {
            let t = drive_cfg(cfg.clone(), may_relay, input.as_bytes());
            let m = &t.messages[0];
            let body = String::from_utf8_lossy(&m.body);
            assert!(!body.contains("x-tenant"), "{body}");
            assert!(
                body.ends_with("Subject: s\r\n\r\nX-Tenant: body\r\n"),
                "{body}"
            );
            let tenant = may_relay.then(|| "Acme".to_owned());
            assert_eq!(m.envelope.tenant, tenant, "may relay: {may_relay}");
            assert_eq!(m.envelope.auth_user, None);
        }
        // Without the setting, the header is an ordinary one.
        let t = drive_cfg(config(), true, input.as_bytes());
        assert!(String::from_utf8_lossy(&t.messages[0].body).contains("x-tenant: Acme"));
        assert_eq!(t.messages[0].envelope.tenant, None);
    }

    #[test]
    fn the_envelope_names_the_authenticated_user() {
        let input = format!(
            "EHLO c\r\nAUTH PLAIN {}\r\nMAIL FROM:<alice@local.test>\r\nRCPT TO:<x@elsewhere.example>\r\n\
             DATA\r\nX-Tenant: t1\r\n\r\nhi\r\n.\r\nQUIT\r\n",
            plain("alice", "right")
        );
        let cfg = ServerConfig {
            tenant_header: Some("X-Tenant".to_owned()),
            ..submission()
        };
        let t = drive_auth(cfg, peer_at([127, 0, 0, 1], false), &input);
        let envelope = &t.messages[0].envelope;
        assert_eq!(envelope.auth_user.as_deref(), Some("alice"));
        assert_eq!(
            envelope.tenant.as_deref(),
            Some("t1"),
            "an authenticated client may name one"
        );
    }

    #[test]
    fn authenticated_sender_must_be_the_users_own() {
        let input = format!(
            "EHLO c\r\nAUTH PLAIN {}\r\nMAIL FROM:<boss@local.test>\r\nMAIL FROM:<>\r\n\
             RSET\r\nMAIL FROM:<alice@local.test>\r\nQUIT\r\n",
            plain("alice", "right")
        );
        let t = drive_auth(submission(), peer_at([127, 0, 0, 1], false), &input);
        assert!(t.has(
            "553 5.7.1 <boss@local.test>: Sender address rejected: not owned by the authenticated user"
        ));
        assert_eq!(
            t.codes(),
            ["220", "250", "235", "553", "553", "250", "250", "221"]
        );
        let cfg = ServerConfig {
            sender_must_match_login: false,
            ..submission()
        };
        let t = drive_auth(cfg, peer_at([127, 0, 0, 1], false), &input);
        // The null sender then nests inside the first transaction.
        assert_eq!(
            t.codes(),
            ["220", "250", "235", "250", "503", "250", "250", "221"]
        );
    }

    #[test]
    fn unknown_and_full_local_recipients_are_refused_at_rcpt() {
        let t = drive_auth(
            config(),
            peer_at([192, 0, 2, 1], false),
            "EHLO c\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<nobody@local.test>\r\n\
             RCPT TO:<full@local.test>\r\nRCPT TO:<gone@local.test>\r\nRCPT TO:<alice@local.test>\r\n\
             RCPT TO:<Postmaster>\r\nQUIT\r\n",
        );
        assert!(t.has("550 5.1.1 <nobody@local.test>: Recipient address rejected: User unknown"));
        assert!(t.has("452 4.2.2 <full@local.test>: Mailbox full, try again later"));
        assert!(t.has("552 5.2.2 <gone@local.test>: Mailbox full"));
        assert_eq!(
            t.codes(),
            ["220", "250", "250", "550", "452", "552", "250", "250", "221"]
        );
    }

    #[test]
    fn a_message_larger_than_the_quota_is_refused_at_rcpt_and_after_data() {
        let big = "x".repeat(1500);
        let input = format!(
            "EHLO c\r\nMAIL FROM:<a@b.example> SIZE=5000\r\nRCPT TO:<small@local.test>\r\n\
             RCPT TO:<alice@local.test>\r\nRSET\r\n\
             MAIL FROM:<a@b.example>\r\nRCPT TO:<alice@local.test>\r\nRCPT TO:<small@local.test>\r\n\
             DATA\r\nSubject: big\r\n\r\n{big}\r\n.\r\n\
             MAIL FROM:<a@b.example> SIZE=100\r\nRCPT TO:<small@local.test>\r\n\
             DATA\r\nSubject: small\r\n\r\nhi\r\n.\r\nQUIT\r\n"
        );
        let t = drive_auth(config(), peer_at([192, 0, 2, 1], false), &input);
        // RFC 1870 6.4: the declared size is refused for that recipient
        // only; 6.3: the undeclared size after DATA, for the message.
        assert!(t.has("552 5.2.2 <small@local.test>: Message larger than the mailbox quota"));
        assert_eq!(
            t.codes(),
            [
                "220", "250", "250", "552", "250", "250", "250", "250", "250", "354", "552", "250",
                "250", "354", "250", "221"
            ]
        );
        assert_eq!(t.messages.len(), 1, "only the small message is queued");
    }

    /// A directory where nobody, not even a postmaster, can receive mail.
    #[derive(Debug)]
    struct Nobody;

    impl LocalPolicy for Nobody {
        fn recipient(&self, _address: &str, _declared_size: Option<u64>) -> LocalRecipient {
            LocalRecipient::Unknown
        }

        fn may_send_as(&self, _user: &str, _sender: &str) -> bool {
            false
        }
    }

    #[test]
    fn postmaster_is_refused_when_it_reaches_nobody() {
        let t = drive_policy(
            config(),
            peer_at([192, 0, 2, 1], false),
            Rc::new(Nobody),
            b"EHLO c\r\nMAIL FROM:<victim@remote.example> RET=FULL\r\nRCPT TO:<Postmaster>\r\n\
              RCPT TO:<postmaster@local.test>\r\nDATA\r\nQUIT\r\n",
            || usize::MAX,
        );
        assert_eq!(t.codes(), ["220", "250", "250", "550", "550", "554", "221"]);
        assert!(t.has("550 5.1.1 <Postmaster>: Recipient address rejected: User unknown"));
        assert!(t.messages.is_empty());
    }

    #[test]
    fn address_literals_only_from_trusted_clients() {
        let input = b"EHLO c\r\nMAIL FROM:<a@[192.0.2.9]>\r\nMAIL FROM:<a@[IPv6:2001:db8::1]>\r\n\
                      MAIL FROM:<a@remote.example>\r\nRCPT TO:<b@[127.0.0.9]>\r\nQUIT\r\n";
        let t = drive_cfg(config(), false, input);
        assert_eq!(t.codes(), ["220", "250", "550", "550", "250", "550", "221"]);
        assert!(
            t.has("550 5.7.1 <a@[192.0.2.9]>: Address literals are not accepted from your network")
        );
        // A client in allow_networks may use them, and so may anyone when
        // allow_address_literals is set (relay rules still apply to RCPT).
        let t = drive_cfg(config(), true, input);
        assert_eq!(t.codes(), ["220", "250", "250", "503", "503", "250", "221"]);
        let open = ServerConfig {
            allow_address_literals: true,
            ..config()
        };
        let t = drive_cfg(open, false, input);
        assert_eq!(t.codes(), ["220", "250", "250", "503", "503", "554", "221"]);
    }

    #[test]
    fn auth_exchange_fed_in_chunks_gives_the_same_transcript() {
        let input = format!(
            "EHLO c\r\nAUTH PLAIN\r\n{}\r\nMAIL FROM:<alice@local.test>\r\nRCPT TO:<x@y.example>\r\nQUIT\r\n",
            plain("alice", "right")
        );
        let whole = drive_policy(
            submission(),
            peer_at([127, 0, 0, 1], false),
            Rc::new(OneUser),
            input.as_bytes(),
            || usize::MAX,
        );
        let bytewise = drive_policy(
            submission(),
            peer_at([127, 0, 0, 1], false),
            Rc::new(OneUser),
            input.as_bytes(),
            || 1,
        );
        assert_eq!(whole, bytewise);
        assert_eq!(
            whole.codes(),
            ["220", "250", "334", "235", "250", "250", "221"]
        );
    }
}
