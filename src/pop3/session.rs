//! The POP3 server state machine (RFC 1939 with CAPA, RESP-CODES, PIPELINING of RFC 2449, SASL
//! PLAIN of RFC 5034, STLS of RFC 2595): bytes in, replies and requests out. It refuses to touch
//! sockets, clocks, files, passwords or TLS: the driver passes time in and answers requests.
//!
//! # The driver's side
//!
//! The driver feeds received bytes with [`Session::handle_input`], sends
//! [`Session::output`] (then [`Session::consume_output`]), and answers each
//! [`Request`] from [`Session::poll_request`] by calling the matching
//! method. After every call it checks both the output and the requests.
//!
//! | request | the driver does | then calls |
//! |---|---|---|
//! | `Authenticate` | verifies the password (slow: off the core) | `auth_result` |
//! | `OpenMaildrop` | locks and lists the maildrop | `maildrop_opened` |
//! | `SendMessage` | flushes `output()` (it ends with the "+OK"), streams the message through a [`MessageEncoder`](super::transfer::MessageEncoder) | `message_sent` |
//! | `Update` | expunges the listed messages (RFC 1939 6), releases the lock | `update_done` |
//! | `StartTls` | flushes `output()`, drops any unread plaintext, handshakes | `tls_established` |
//! | `Close` | flushes `output()`, closes; releases a maildrop lock without expunging | nothing |
//!
//! Message indexes in requests (`SendMessage::index`, `Update::deleted`)
//! are 0-based positions in the `Vec<MessageInfo>` the driver handed to
//! `maildrop_opened`; the 1-based message numbers of RFC 1939 never leave
//! the core.
//!
//! While a request is outstanding no further command is processed; input
//! is still buffered (up to a bound), and processing resumes, in order,
//! when the driver answers. If reading a message fails after the "+OK" was
//! sent, the response cannot be repaired: the driver closes the connection
//! (no UPDATE happens, as for any close without QUIT, RFC 1939 6).

use std::collections::VecDeque;
use std::rc::Rc;
use std::time::{Duration, Instant};

use thiserror::Error;

use super::line::{LineReader, Next};
use super::maildrop::{LookupError, Maildrop, MessageInfo};
use super::parser::{parse_command, Command, MessageNumber};
use super::reply::{Reply, SASL_MECHANISMS};
use crate::sasl::{self, Password, PlainCredentials, SaslError};

/// While the output holds this many bytes, no more input is processed and
/// a LIST or UIDL listing waits: a client that pipelines without reading
/// gets back-pressure, not a growing buffer. No single reply is longer
/// than a few hundred bytes.
pub const OUTPUT_SOFT_LIMIT: usize = 16 * 1024;

/// Everything the session needs from the configuration: an immutable
/// snapshot shared (by `Rc`) by all sessions of one core.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pop3Config {
    /// Command line limit including CRLF. RFC 2449 4 caps commands at 255
    /// octets; we take up to this many, then answer -ERR and drop the line.
    pub max_line_length: usize,
    /// Limit for a SASL response line after "+ " (RFC 5034 4: these may be
    /// longer than commands; PLAIN needs about 1 KiB for 255-octet fields).
    pub max_auth_line_length: usize,
    /// Client errors a session may make; the last is followed by -ERR and
    /// the close.
    pub max_errors: usize,
    /// RFC 1939 3: the autologout timer, at least 10 minutes.
    pub idle_timeout: Duration,
    /// A certificate is configured, so STLS is offered (until TLS is up).
    pub stls: bool,
}

impl Default for Pop3Config {
    fn default() -> Self {
        Pop3Config {
            max_line_length: 512,
            max_auth_line_length: sasl::MAX_ENCODED_LENGTH + 2,
            max_errors: 10,
            idle_timeout: Duration::from_secs(600),
            stls: false,
        }
    }
}

/// What the driver knows about the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PeerInfo {
    /// The connection is TLS already (port 995); set by
    /// `tls_established` after STLS.
    pub tls: bool,
    /// Plaintext passwords are allowed without TLS: a loopback peer, or
    /// the configuration allows them everywhere (DESIGN.md). TLS always
    /// allows them.
    pub plaintext_allowed: bool,
}

/// How the client presented its password.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMechanism {
    /// USER then PASS (RFC 1939 7).
    UserPass,
    /// AUTH PLAIN (RFC 5034, RFC 4616).
    Plain,
}

/// Something the driver must act on; see the module header for the answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Verify `user`'s password; answer with `auth_result`.
    Authenticate {
        user: String,
        password: Password,
        mechanism: AuthMechanism,
    },
    /// The user is authenticated: lock and list the maildrop; answer with
    /// `maildrop_opened`.
    OpenMaildrop { user: String },
    /// "+OK Begin TLS negotiation" is the end of the output: flush it,
    /// discard any input not yet fed (RFC 2595 4: nothing sent before the
    /// handshake counts after it), handshake, then `tls_established`.
    StartTls,
    /// The "+OK" line ends the output: flush it, then send message `index`
    /// (0-based) through a `MessageEncoder::new(top_lines)`, then
    /// `message_sent`.
    SendMessage {
        index: usize,
        top_lines: Option<u32>,
    },
    /// QUIT in TRANSACTION (RFC 1939 6): remove these messages (0-based,
    /// ascending; possibly none), release the lock, then `update_done`.
    Update { deleted: Vec<usize> },
    /// The session is over: flush the output, then close. A maildrop
    /// opened for this session is released without removing anything.
    Close,
}

/// The verdict on an `Authenticate` request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthOutcome {
    /// The password is right; `user` is the account's canonical name (not
    /// the login as typed: `ALICE` and `alice@domain` are `alice`), the
    /// maildrop to open.
    Ok { user: String },
    /// Wrong user or password: `-ERR [AUTH]`, counted as a client error.
    Failed,
    /// The credential store failed: `-ERR [SYS/TEMP]`; not the client's fault.
    TemporaryFailure,
}

/// Why the maildrop could not be opened. Both are transient: the client
/// stays in AUTHORIZATION and may try again (RFC 1939 7, PASS).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum MaildropError {
    /// Another session holds the lock (RFC 2449 8.1.2: `-ERR [IN-USE]`).
    #[error("maildrop is locked by another session")]
    InUse,
    /// I/O or similar trouble (RFC 3206 5: `-ERR [SYS/TEMP]`).
    #[error("maildrop temporarily unavailable")]
    Temporary,
}

/// The UPDATE did not remove every deleted message (transient: the marks
/// are lost, the messages stay, the client may delete them next time).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error("some deleted messages were not removed")]
pub struct UpdateError;

/// Which multi-line listing is being written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ListKind {
    Sizes,
    UniqueIds,
}

/// A LIST or UIDL without argument, written a piece at a time so a large
/// maildrop never needs a large output buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Listing {
    kind: ListKind,
    /// The next 0-based index to consider.
    next: usize,
}

/// The session's state (RFC 1939 3 names AUTHORIZATION, TRANSACTION and
/// UPDATE; the `Awaiting*` states wait for the driver).
#[derive(Debug)]
enum State {
    Authorization {
        /// From USER, waiting for PASS.
        user: Option<String>,
    },
    /// AUTH PLAIN without initial response: "+ " was sent, the response
    /// line is next. `user` is the USER to restore if it fails (RFC 5034
    /// 4: a failed AUTH is as if it was never issued).
    AuthResponse {
        user: Option<String>,
    },
    AwaitingAuth {
        /// The USER pending before this attempt, restored on failure.
        restore: Option<String>,
    },
    AwaitingMaildrop,
    Transaction {
        maildrop: Maildrop,
        listing: Option<Listing>,
    },
    AwaitingMessage {
        maildrop: Maildrop,
        /// The length of the "+OK" line waiting at the end of the output
        /// (nothing is appended while a request is outstanding), taken
        /// back if the message turns out to be gone.
        ok_len: usize,
    },
    AwaitingUpdate,
    AwaitingTls,
    Closed,
}

/// RFC 1939 5: deleted messages may not be referred to; numbers out of
/// range name nothing.
fn lookup_reply(e: LookupError) -> Reply<'static> {
    match e {
        LookupError::NoSuchMessage => Reply::NoSuchMessage,
        LookupError::Deleted(number) => Reply::AlreadyDeleted { number },
    }
}

/// One POP3 server session. Owns no socket: see the module header.
#[derive(Debug)]
pub struct Session {
    config: Rc<Pop3Config>,
    peer: PeerInfo,
    state: State,
    reader: LineReader,
    /// Scratch for the line being handled (kept to reuse its allocation).
    line: Vec<u8>,
    output: Vec<u8>,
    requests: VecDeque<Request>,
    errors: usize,
    last_activity: Instant,
    shutdown_pending: bool,
}

impl Session {
    /// Starts a session; the greeting is queued in the output.
    pub fn new(config: Rc<Pop3Config>, peer: PeerInfo, now: Instant) -> Self {
        let capacity = config.max_line_length.max(config.max_auth_line_length);
        let mut session = Session {
            config,
            peer,
            state: State::Authorization { user: None },
            reader: LineReader::new(capacity),
            line: Vec::with_capacity(128),
            output: Vec::with_capacity(512),
            requests: VecDeque::with_capacity(2),
            errors: 0,
            last_activity: now,
            shutdown_pending: false,
        };
        session.reply(Reply::Greeting);
        session
    }

    /// Feeds received bytes; returns how many were taken. The driver keeps
    /// the rest and offers it again after acting on requests and output.
    ///
    /// Bytes are buffered inside the session up to a bound (the longest
    /// line allowed), and every complete command is handled in order
    /// (RFC 2449 6.6, PIPELINING) until one raises a request or the output
    /// reaches `OUTPUT_SOFT_LIMIT`; then less than everything may be taken.
    /// A line longer than its limit is dropped up to its end and answered
    /// -ERR, never parsed. Once STLS is accepted, and once closed,
    /// everything is taken and dropped.
    pub fn handle_input(&mut self, input: &[u8], now: Instant) -> usize {
        if !input.is_empty() {
            self.last_activity = now;
        }
        let mut taken = 0;
        loop {
            if self.discards_input() {
                return input.len();
            }
            let n = self.reader.push(&input[taken..]);
            taken += n;
            self.pump();
            if taken == input.len() || n == 0 {
                break;
            }
        }
        if self.discards_input() {
            return input.len();
        }
        taken
    }

    /// The next request for the driver, oldest first.
    pub fn poll_request(&mut self) -> Option<Request> {
        self.requests.pop_front()
    }

    /// Bytes to send.
    pub fn output(&self) -> &[u8] {
        &self.output
    }

    /// `n` bytes of `output()` were written. This may continue a listing
    /// and handle buffered commands, so check output and requests again.
    pub fn consume_output(&mut self, n: usize) {
        let n = n.min(self.output.len());
        self.output.drain(..n);
        self.pump();
    }

    /// The answer to `Request::Authenticate`. On success the session asks
    /// for the maildrop next (`Request::OpenMaildrop`).
    pub fn auth_result(&mut self, outcome: AuthOutcome, now: Instant) {
        let State::AwaitingAuth { restore } =
            self.take_state_if(|s| matches!(s, State::AwaitingAuth { .. }))
        else {
            return;
        };
        self.last_activity = now;
        if self.shutdown_pending {
            return self.shut_down();
        }
        match outcome {
            AuthOutcome::Ok { user } => {
                self.state = State::AwaitingMaildrop;
                self.requests.push_back(Request::OpenMaildrop { user });
            }
            AuthOutcome::Failed => {
                self.state = State::Authorization { user: restore };
                self.error(Reply::AuthFailed);
            }
            AuthOutcome::TemporaryFailure => {
                self.state = State::Authorization { user: restore };
                self.reply(Reply::AuthUnavailable);
            }
        }
        self.pump();
    }

    /// The answer to `Request::OpenMaildrop`: the messages, in the order
    /// that numbers them 1, 2, ... (RFC 1939 5), or why not. A failure
    /// leaves the session in AUTHORIZATION (RFC 1939 7, PASS).
    pub fn maildrop_opened(
        &mut self,
        result: Result<Vec<MessageInfo>, MaildropError>,
        now: Instant,
    ) {
        if !matches!(self.state, State::AwaitingMaildrop) {
            return;
        }
        self.last_activity = now;
        match result {
            // The driver releases the lock on Close.
            Ok(_) if self.shutdown_pending => return self.shut_down(),
            Ok(messages) => {
                let maildrop = Maildrop::new(messages);
                let (count, octets) = maildrop.stat();
                self.state = State::Transaction {
                    maildrop,
                    listing: None,
                };
                self.reply(Reply::LoggedIn { count, octets });
            }
            Err(e) => {
                self.state = State::Authorization { user: None };
                self.reply(match e {
                    MaildropError::InUse => Reply::InUse,
                    MaildropError::Temporary => Reply::MaildropUnavailable,
                });
            }
        }
        self.pump();
    }

    /// The message of `Request::SendMessage` is out, terminator included.
    pub fn message_sent(&mut self, now: Instant) {
        let State::AwaitingMessage { maildrop, .. } =
            self.take_state_if(|s| matches!(s, State::AwaitingMessage { .. }))
        else {
            return;
        };
        self.state = State::Transaction {
            maildrop,
            listing: None,
        };
        self.last_activity = now;
        self.pump();
    }

    /// The message of `Request::SendMessage` no longer exists (another
    /// session removed it: `[pop3] lock_session = false`). Call it before
    /// writing anything of the output: the "+OK" is taken back and the
    /// answer is `-ERR`; the session goes on.
    pub fn message_missing(&mut self, now: Instant) {
        let State::AwaitingMessage { maildrop, ok_len } =
            self.take_state_if(|s| matches!(s, State::AwaitingMessage { .. }))
        else {
            return;
        };
        if let Some(before_ok) = self.output.len().checked_sub(ok_len) {
            self.output.truncate(before_ok);
        }
        self.state = State::Transaction {
            maildrop,
            listing: None,
        };
        self.reply(Reply::MessageGone);
        self.last_activity = now;
        self.pump();
    }

    /// The answer to `Request::Update`; the session then closes either way
    /// (RFC 1939 6).
    pub fn update_done(&mut self, result: Result<(), UpdateError>, now: Instant) {
        if !matches!(self.state, State::AwaitingUpdate) {
            return;
        }
        self.last_activity = now;
        self.reply(match result {
            Ok(()) => Reply::SigningOff,
            Err(UpdateError) => Reply::UpdateFailed,
        });
        self.close();
    }

    /// TLS is up. RFC 2595 4: the session stays in AUTHORIZATION with
    /// nothing learnt before (no pending USER, no buffered input); STLS is
    /// no longer offered and plaintext logins become possible.
    pub fn tls_established(&mut self, now: Instant) {
        if !matches!(self.state, State::AwaitingTls) {
            return;
        }
        self.peer.tls = true;
        self.state = State::Authorization { user: None };
        self.reader.clear();
        self.last_activity = now;
        self.pump();
    }

    /// Closes an idle client with -ERR once the deadline passed (RFC 1939
    /// 3, autologout; no UPDATE). While the driver is busy with a request
    /// it has its own bounds, so nothing happens then.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.awaits_driver() || self.is_closed() {
            return;
        }
        if now >= self.deadline() {
            self.reply(Reply::Timeout);
            self.close();
        }
    }

    /// When `handle_timeout` should next be called: the last activity
    /// (non-empty input, or an answer from the driver) plus the idle timeout.
    pub fn deadline(&self) -> Instant {
        // An absurd timeout must not panic on overflow; a day is "never" here.
        self.last_activity
            .checked_add(self.config.idle_timeout)
            .or_else(|| self.last_activity.checked_add(Duration::from_secs(86_400)))
            .unwrap_or(self.last_activity)
    }

    /// The server is stopping: `-ERR [SYS/TEMP]` and close, without UPDATE.
    /// Between commands this happens at once; while the driver works on a
    /// request (a message being sent, a handshake), right after its answer,
    /// so no response is cut in two. An UPDATE in progress completes.
    pub fn handle_shutdown(&mut self) {
        if self.is_closed() {
            return;
        }
        self.shutdown_pending = true;
        self.pump();
    }

    /// The session ended; the driver closes after flushing the output.
    pub fn is_closed(&self) -> bool {
        matches!(self.state, State::Closed)
    }

    /// There is output; it should be sent before waiting for input.
    pub fn wants_flush(&self) -> bool {
        !self.output.is_empty()
    }

    // ---- internals ------------------------------------------------------

    /// Takes the state out if `pred` holds, leaving `Closed` in its place
    /// for the caller to replace; otherwise returns `Closed` and changes nothing.
    fn take_state_if(&mut self, pred: impl Fn(&State) -> bool) -> State {
        if pred(&self.state) {
            std::mem::replace(&mut self.state, State::Closed)
        } else {
            State::Closed
        }
    }

    fn awaits_driver(&self) -> bool {
        matches!(
            self.state,
            State::AwaitingAuth { .. }
                | State::AwaitingMaildrop
                | State::AwaitingMessage { .. }
                | State::AwaitingUpdate
                | State::AwaitingTls
        )
    }

    /// Input is dropped, not buffered: after STLS (RFC 2595 4) and once closed.
    fn discards_input(&self) -> bool {
        matches!(self.state, State::AwaitingTls | State::Closed)
    }

    /// Ready for the next command line: not waiting for the driver, not
    /// in the middle of a listing.
    fn between_commands(&self) -> bool {
        matches!(
            self.state,
            State::Authorization { .. }
                | State::AuthResponse { .. }
                | State::Transaction { listing: None, .. }
        )
    }

    fn plaintext_allowed(&self) -> bool {
        self.peer.tls || self.peer.plaintext_allowed
    }

    fn stls_offered(&self) -> bool {
        self.config.stls && !self.peer.tls
    }

    /// Handles buffered lines, and continues a listing, for as long as the
    /// state and the output allow.
    fn pump(&mut self) {
        loop {
            self.continue_listing();
            if !self.between_commands() {
                return;
            }
            if self.shutdown_pending {
                return self.shut_down();
            }
            if self.output.len() >= OUTPUT_SOFT_LIMIT {
                return;
            }
            let max = match self.state {
                State::AuthResponse { .. } => self.config.max_auth_line_length,
                _ => self.config.max_line_length,
            };
            let mut line = std::mem::take(&mut self.line);
            match self.reader.next_line(max, &mut line) {
                Next::Incomplete => {
                    self.line = line;
                    return;
                }
                Next::TooLong => self.line_too_long(),
                Next::Line => self.handle_line(&line),
            }
            self.line = line;
        }
    }

    fn reply(&mut self, reply: Reply<'_>) {
        reply.write_to(&mut self.output);
    }

    /// An error reply caused by the client; too many end the session.
    fn error(&mut self, reply: Reply<'_>) {
        self.reply(reply);
        self.errors += 1;
        if self.errors >= self.config.max_errors {
            self.reply(Reply::TooManyErrors);
            self.close();
        }
    }

    fn close(&mut self) {
        self.state = State::Closed;
        self.reader.clear();
        self.requests.push_back(Request::Close);
    }

    fn shut_down(&mut self) {
        self.reply(Reply::ShuttingDown);
        self.close();
    }

    fn line_too_long(&mut self) {
        if let State::AuthResponse { user } = &mut self.state {
            let user = user.take();
            self.state = State::Authorization { user };
        }
        self.error(Reply::LineTooLong);
    }

    fn handle_line(&mut self, line: &[u8]) {
        if let State::AuthResponse { user } = &mut self.state {
            let restore = user.take();
            self.state = State::Authorization {
                user: restore.clone(),
            };
            if sasl::is_cancel(line) {
                // RFC 5034 4: "*" cancels; -ERR, but not a protocol error.
                return self.reply(Reply::AuthCancelled);
            }
            return match sasl::decode_plain(line) {
                Ok(credentials) => self.authenticate_plain(credentials, restore),
                Err(e) => self.sasl_error(e),
            };
        }
        match parse_command(line) {
            Ok(command) => self.dispatch(command),
            Err(e) => self.error(Reply::from(e)),
        }
    }

    fn dispatch(&mut self, command: Command<'_>) {
        if let State::Transaction { .. } = self.state {
            return self.dispatch_transaction(command);
        }
        match command {
            Command::User(name) => self.handle_user(name),
            Command::Pass(password) => self.handle_pass(password),
            Command::Auth { mechanism, initial } => self.handle_auth(mechanism, initial),
            Command::Capa => self.reply(Reply::Capa {
                plaintext: self.plaintext_allowed(),
                stls: self.stls_offered(),
            }),
            Command::Stls => self.handle_stls(),
            Command::Quit => {
                // RFC 1939 6: QUIT in AUTHORIZATION does not enter UPDATE.
                self.reply(Reply::SigningOff);
                self.close();
            }
            Command::Stat
            | Command::List(_)
            | Command::Retr(_)
            | Command::Dele(_)
            | Command::Noop
            | Command::Rset
            | Command::Top(..)
            | Command::Uidl(_) => self.error(Reply::WrongState),
        }
    }

    fn handle_user(&mut self, name: &str) {
        if !self.plaintext_allowed() {
            return self.error(Reply::PlaintextDisallowed);
        }
        self.state = State::Authorization {
            user: Some(name.to_owned()),
        };
        self.reply(Reply::UserAccepted);
    }

    fn handle_pass(&mut self, password: &str) {
        if !self.plaintext_allowed() {
            return self.error(Reply::PlaintextDisallowed);
        }
        let State::Authorization { user } = &mut self.state else {
            return; // dispatch only calls this in AUTHORIZATION
        };
        let Some(user) = user.take() else {
            return self.error(Reply::NeedUser);
        };
        // RFC 1939 7: after a failed PASS the client starts again with USER.
        self.state = State::AwaitingAuth { restore: None };
        self.requests.push_back(Request::Authenticate {
            user,
            password: Password::new(password.to_owned()),
            mechanism: AuthMechanism::UserPass,
        });
    }

    fn handle_auth(&mut self, mechanism: Option<&str>, initial: Option<&str>) {
        let Some(mechanism) = mechanism else {
            return self.reply(Reply::Mechanisms {
                plaintext: self.plaintext_allowed(),
            });
        };
        if !SASL_MECHANISMS
            .split(' ')
            .any(|m| m.eq_ignore_ascii_case(mechanism))
        {
            return self.error(Reply::UnsupportedMechanism);
        }
        if !self.plaintext_allowed() {
            return self.error(Reply::PlaintextDisallowed);
        }
        let State::Authorization { user } = &mut self.state else {
            return; // dispatch only calls this in AUTHORIZATION
        };
        let restore = user.take();
        match initial {
            None => {
                // RFC 5034 4: no initial response, so an empty challenge.
                self.state = State::AuthResponse { user: restore };
                self.reply(Reply::EmptyChallenge);
            }
            Some(initial) => {
                self.state = State::Authorization {
                    user: restore.clone(),
                };
                match sasl::decode_initial_response(initial.as_bytes())
                    .and_then(|message| sasl::parse_plain(&message))
                {
                    Ok(credentials) => self.authenticate_plain(credentials, restore),
                    Err(e) => self.sasl_error(e),
                }
            }
        }
    }

    /// A decoded PLAIN message. We have no authorization rules, so a proxy
    /// login (authzid other than authcid, RFC 4616 2) fails like a wrong
    /// password.
    fn authenticate_plain(&mut self, credentials: PlainCredentials, restore: Option<String>) {
        if credentials.is_proxy() {
            return self.error(Reply::AuthFailed);
        }
        self.state = State::AwaitingAuth { restore };
        self.requests.push_back(Request::Authenticate {
            user: credentials.authcid,
            password: credentials.password,
            mechanism: AuthMechanism::Plain,
        });
    }

    /// RFC 5034 4: undecodable base64 and malformed messages get -ERR.
    fn sasl_error(&mut self, e: SaslError) {
        self.error(match e {
            SaslError::Base64 | SaslError::TooLong => Reply::InvalidBase64,
            SaslError::NotUtf8 | SaslError::Malformed | SaslError::Empty => {
                Reply::MalformedCredentials
            }
        });
    }

    fn handle_stls(&mut self) {
        if self.peer.tls {
            return self.error(Reply::TlsActive);
        }
        if !self.config.stls {
            return self.error(Reply::StlsUnavailable);
        }
        self.reply(Reply::StlsOk);
        // RFC 2595 4: commands pipelined behind STLS are not to be trusted.
        self.reader.clear();
        self.state = State::AwaitingTls;
        self.requests.push_back(Request::StartTls);
    }

    fn dispatch_transaction(&mut self, command: Command<'_>) {
        let State::Transaction { maildrop, listing } = &mut self.state else {
            return; // dispatch checked the state
        };
        let reply = match command {
            Command::Stat => {
                let (count, octets) = maildrop.stat();
                Ok(Reply::Stat { count, octets })
            }
            Command::List(None) => {
                let (count, octets) = maildrop.stat();
                *listing = Some(Listing {
                    kind: ListKind::Sizes,
                    next: 0,
                });
                Ok(Reply::ListHeader { count, octets })
            }
            Command::List(Some(n)) => maildrop
                .lookup(n)
                .map(|i| Reply::ListOne {
                    number: n.0,
                    size: maildrop.info(i).map_or(0, |m| m.size),
                })
                .map_err(lookup_reply),
            Command::Uidl(None) => {
                *listing = Some(Listing {
                    kind: ListKind::UniqueIds,
                    next: 0,
                });
                Ok(Reply::UidlHeader)
            }
            Command::Uidl(Some(n)) => {
                let uid = match maildrop.lookup(n).map(|i| maildrop.info(i)) {
                    Ok(Some(info)) => info.uid.as_str().to_owned(),
                    Ok(None) => return, // lookup returned an index in range
                    Err(e) => return self.lookup_error(e),
                };
                return self.reply(Reply::UidlOne {
                    number: n.0,
                    uid: &uid,
                });
            }
            Command::Retr(n) => return self.send_message(n, None),
            Command::Top(n, lines) => return self.send_message(n, Some(lines)),
            Command::Dele(n) => maildrop
                .delete(n)
                .map(|()| Reply::Deleted { number: n.0 })
                .map_err(lookup_reply),
            Command::Noop => Ok(Reply::Ok),
            Command::Rset => {
                maildrop.undelete_all();
                let (count, octets) = maildrop.stat();
                Ok(Reply::Reset { count, octets })
            }
            Command::Quit => {
                let deleted = maildrop.deleted_indexes();
                self.state = State::AwaitingUpdate;
                self.requests.push_back(Request::Update { deleted });
                return;
            }
            Command::Capa => Ok(Reply::Capa {
                plaintext: self.plaintext_allowed(),
                // RFC 2595 4: STLS only in AUTHORIZATION.
                stls: false,
            }),
            // RFC 5034 4: no AUTH after a successful one; same for USER/PASS.
            Command::User(_) | Command::Pass(_) | Command::Auth { .. } => {
                Err(Reply::AlreadyAuthenticated)
            }
            Command::Stls => Err(Reply::WrongState),
        };
        match reply {
            Ok(reply) => self.reply(reply),
            Err(reply) => self.error(reply),
        }
    }

    fn lookup_error(&mut self, e: LookupError) {
        self.error(lookup_reply(e));
    }

    /// RETR and TOP: the "+OK" line, then the driver sends the message.
    fn send_message(&mut self, number: MessageNumber, top_lines: Option<u32>) {
        let State::Transaction { maildrop, .. } = &self.state else {
            return; // only called from dispatch_transaction
        };
        let index = match maildrop.lookup(number) {
            Ok(index) => index,
            Err(e) => return self.lookup_error(e),
        };
        let size = maildrop.info(index).map_or(0, |m| m.size);
        let State::Transaction { maildrop, .. } = std::mem::replace(&mut self.state, State::Closed)
        else {
            return; // matched just above
        };
        let before_ok = self.output.len();
        self.reply(match top_lines {
            None => Reply::Retr { octets: size },
            Some(_) => Reply::Top,
        });
        let ok_len = self.output.len() - before_ok;
        self.state = State::AwaitingMessage { maildrop, ok_len };
        self.requests
            .push_back(Request::SendMessage { index, top_lines });
    }

    /// Writes listing lines until the listing ends or the output is full.
    fn continue_listing(&mut self) {
        let State::Transaction {
            maildrop,
            listing: listing @ Some(_),
        } = &mut self.state
        else {
            return;
        };
        let Some(current) = listing.as_mut() else {
            return; // matched Some just above
        };
        for (index, info) in maildrop.live_from(current.next) {
            if self.output.len() >= OUTPUT_SOFT_LIMIT {
                current.next = index;
                return;
            }
            let number = index + 1;
            match current.kind {
                ListKind::Sizes => Reply::ListItem {
                    number,
                    size: info.size,
                },
                ListKind::UniqueIds => Reply::UidlItem {
                    number,
                    uid: info.uid.as_str(),
                },
            }
            .write_to(&mut self.output);
        }
        *listing = None;
        Reply::End.write_to(&mut self.output);
    }
}
