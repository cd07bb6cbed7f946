//! The outbound SMTP client state machine for one connection to one host (RFC 5321 with
//! PIPELINING, SIZE, 8BITMIME, SMTPUTF8, DSN, STARTTLS, ENHANCEDSTATUSCODES): replies in,
//! commands and events out, several transactions per connection. It refuses to touch sockets,
//! clocks, TLS, DNS or the spool, to send the body itself (the glue streams it through
//! [`super::dot_stuff`]), to choose the next MX host, or to convert 8-bit mail to 7-bit.
//!
//! Glue loop: act on every [`ClientEvent`] from `poll_event`, write `poll_output` (before any
//! body bytes), feed what arrives to `handle_input`, call `handle_timeout` at `deadline`. Read
//! while writing: RFC 2920 3.1 allows a pipelined group to exceed the TCP window only for
//! clients that do not block on writes.

use std::collections::VecDeque;
use std::fmt;
use std::rc::Rc;
use std::time::{Duration, Instant};

use memchr::memchr;
use thiserror::Error;

use crate::envelope::{BodyType, DsnReturn, Envelope, Notify};

// ---- configuration -------------------------------------------------------

/// How long we wait at each step. The defaults are RFC 5321 4.5.3.2's
/// (5 min for the greeting, MAIL and RCPT; 2 min for DATA; 3 min per data
/// block; 10 min for the final reply), so slow but honest servers are not
/// abandoned and retried (which would deliver twice after DATA).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientTimeouts {
    pub greeting: Duration,
    /// EHLO and HELO replies.
    pub helo: Duration,
    /// The reply to STARTTLS.
    pub starttls: Duration,
    /// The glue's TLS handshake, between `ClientEvent::StartTls` and
    /// `handle_tls_established`.
    pub tls_handshake: Duration,
    pub mail: Duration,
    pub rcpt: Duration,
    /// The reply to DATA (the 354).
    pub data_init: Duration,
    /// Between two successful body writes (`handle_body_progress`).
    pub data_block: Duration,
    /// The final reply after the terminating ".".
    pub data_term: Duration,
    pub rset: Duration,
    pub quit: Duration,
    /// A ready connection with no transaction is closed (QUIT) after this:
    /// the reuse window of the queue.
    pub idle: Duration,
}

impl Default for ClientTimeouts {
    fn default() -> Self {
        let min = |m: u64| Duration::from_secs(60 * m);
        ClientTimeouts {
            greeting: min(5),
            helo: min(5),
            starttls: min(5),
            tls_handshake: min(5),
            mail: min(5),
            rcpt: min(5),
            data_init: min(2),
            data_block: min(3),
            data_term: min(10),
            // As Postfix's smtp_rset_timeout and smtp_quit_timeout.
            rset: Duration::from_secs(20),
            quit: Duration::from_secs(300),
            idle: Duration::from_secs(10),
        }
    }
}

/// Whether we ask for TLS (RFC 3207).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StartTlsPolicy {
    /// Never send STARTTLS (a test sink, a broken peer).
    Never,
    /// Use it when offered, carry on in plaintext when not offered or
    /// refused: most of the Internet's MX hosts.
    #[default]
    Opportunistic,
    /// No TLS, no mail: the connection fails (transient) when the server
    /// does not offer or refuses STARTTLS. For smarthosts that need it.
    Required,
}

/// The client's configuration: an immutable snapshot shared (by `Rc`) by
/// every connection of one core.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientConfig {
    /// Our name in EHLO/HELO.
    pub helo_name: String,
    pub timeouts: ClientTimeouts,
    pub starttls: StartTlsPolicy,
    /// Transactions one connection carries before `start_transaction`
    /// says [`TransactionRefused::ConnectionSpent`] (Postfix's
    /// smtp_connection_reuse_count_limit idea).
    pub max_messages_per_connection: usize,
    /// Longest reply line accepted, CRLF included (RFC 5321 4.5.3.1.5
    /// guarantees 512; we tolerate more). Longer is a broken server.
    pub max_reply_line: usize,
    /// Lines in one multiline reply (EHLO lists a dozen or two).
    pub max_reply_lines: usize,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            helo_name: "localhost".to_owned(),
            timeouts: ClientTimeouts::default(),
            starttls: StartTlsPolicy::Opportunistic,
            max_messages_per_connection: 100,
            max_reply_line: 4096,
            max_reply_lines: 128,
        }
    }
}

// ---- replies and outcomes ------------------------------------------------

/// An RFC 3463 enhanced status code, `class.subject.detail`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EnhancedCode {
    pub class: u8,
    pub subject: u16,
    pub detail: u16,
}

impl EnhancedCode {
    pub const fn new(class: u8, subject: u16, detail: u16) -> Self {
        EnhancedCode {
            class,
            subject,
            detail,
        }
    }
}

impl fmt::Display for EnhancedCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.class, self.subject, self.detail)
    }
}

/// Who wrote a [`ReplyText`]: a DSN says "smtp;" only for the server's own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyOrigin {
    /// The remote server sent it.
    Remote,
    /// We made it up (timeout, refusal before sending, lost connection).
    Local,
}

/// One reply, kept for logs, the queue's "last error" and DSNs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplyText {
    pub code: u16,
    /// RFC 2034 code from the first line, when the server gave one.
    pub enhanced: Option<EnhancedCode>,
    /// The lines' texts without code and enhanced code, joined by spaces;
    /// control characters replaced, so it is safe to log and to quote.
    pub text: String,
    pub origin: ReplyOrigin,
}

impl ReplyText {
    /// A reply made up here (not received), e.g. for a failed connect.
    pub fn local(code: u16, enhanced: EnhancedCode, text: String) -> Self {
        ReplyText {
            code,
            enhanced: Some(enhanced),
            text,
            origin: ReplyOrigin::Local,
        }
    }

    /// What this reply means for a recipient it answers: RFC 5321 4.2.1.
    pub fn outcome(&self) -> Outcome {
        match self.code / 100 {
            2 => Outcome::Delivered,
            5 => Outcome::PermanentFailure,
            _ => Outcome::TransientFailure,
        }
    }

    fn class(&self) -> u16 {
        self.code / 100
    }
}

impl fmt::Display for ReplyText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.code)?;
        if let Some(e) = self.enhanced {
            write!(f, " {e}")?;
        }
        write!(f, " {}", self.text)
    }
}

/// What became of one recipient (issue 3, section 5): delivered, retry
/// later, or bounce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Delivered,
    TransientFailure,
    PermanentFailure,
}

/// The fate of one recipient of a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecipientResult {
    /// Index into the `Envelope::recipients` given to `start_transaction`.
    pub index: usize,
    pub outcome: Outcome,
    /// The reply that decided it (for the queue's log and the DSN).
    pub reply: ReplyText,
}

/// What the server offered in its EHLO reply (all false after HELO).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Capabilities {
    /// EHLO was accepted (false after the HELO fallback).
    pub extended: bool,
    pub pipelining: bool,
    /// RFC 1870: `Some(limit)` when SIZE is offered; 0 means no stated limit.
    pub size: Option<u64>,
    pub eight_bit_mime: bool,
    pub smtputf8: bool,
    pub dsn: bool,
    pub starttls: bool,
    pub chunking: bool,
    pub enhanced_status_codes: bool,
}

impl Capabilities {
    /// Reads the EHLO reply's lines after the first (the greeting name).
    fn parse(lines: &[String]) -> Self {
        let mut caps = Capabilities {
            extended: true,
            ..Capabilities::default()
        };
        for line in lines.iter().skip(1) {
            let mut words = line.split_ascii_whitespace();
            let Some(keyword) = words.next() else {
                continue;
            };
            let is = |k: &str| keyword.eq_ignore_ascii_case(k);
            if is("PIPELINING") {
                caps.pipelining = true;
            } else if is("SIZE") {
                // RFC 1870 4: an absent or unparsable value means no fixed limit.
                caps.size = Some(words.next().and_then(|v| v.parse().ok()).unwrap_or(0));
            } else if is("8BITMIME") {
                caps.eight_bit_mime = true;
            } else if is("SMTPUTF8") {
                caps.smtputf8 = true;
            } else if is("DSN") {
                caps.dsn = true;
            } else if is("STARTTLS") {
                caps.starttls = true;
            } else if is("CHUNKING") {
                caps.chunking = true;
            } else if is("ENHANCEDSTATUSCODES") {
                caps.enhanced_status_codes = true;
            }
        }
        caps
    }
}

/// The step of the dialogue a timeout or a lost connection hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Greeting,
    Ehlo,
    Helo,
    StartTls,
    TlsHandshake,
    Idle,
    Rset,
    Mail,
    Rcpt,
    Data,
    Body,
    DataEnd,
    Quit,
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Step::Greeting => "greeting",
            Step::Ehlo => "EHLO",
            Step::Helo => "HELO",
            Step::StartTls => "STARTTLS",
            Step::TlsHandshake => "TLS handshake",
            Step::Idle => "idle wait",
            Step::Rset => "RSET",
            Step::Mail => "MAIL FROM",
            Step::Rcpt => "RCPT TO",
            Step::Data => "DATA",
            Step::Body => "message body",
            Step::DataEnd => "end of data",
            Step::Quit => "QUIT",
        })
    }
}

/// Why bytes from the server are not an SMTP reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum ReplyError {
    #[error("reply line too long")]
    LineTooLong,
    #[error("too many lines in one reply")]
    TooManyLines,
    #[error("reply line without a valid reply code")]
    BadCode,
    #[error("reply lines with different codes")]
    MixedCodes,
}

/// Why a connection ended before its work was done. Each is classified
/// transient or permanent; either way the glue may try the next MX host.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ConnectionError {
    #[error("server refused the connection: {0}")]
    GreetingRefused(ReplyText),
    /// 421 at any point (RFC 5321 3.8).
    #[error("server is closing the connection: {0}")]
    ServiceClosing(ReplyText),
    #[error("server refused EHLO and HELO: {0}")]
    HeloRefused(ReplyText),
    #[error("TLS is required but the server does not offer STARTTLS")]
    TlsNotOffered,
    #[error("TLS is required but the server refused STARTTLS: {0}")]
    StartTlsRefused(ReplyText),
    #[error("TLS handshake failed")]
    TlsFailed,
    #[error("timeout waiting for the {0} reply")]
    Timeout(Step),
    #[error("connection lost during {0}")]
    ConnectionLost(Step),
    #[error("malformed reply from server: {0}")]
    MalformedReply(ReplyError),
    #[error("unexpected reply from server: {0}")]
    UnexpectedReply(ReplyText),
    #[error("delivery aborted by us")]
    Aborted,
}

impl ConnectionError {
    /// Permanent only when the server said 5xx to our opening; the glue
    /// still tries the next MX host before bouncing (RFC 5321 5.1).
    pub fn is_transient(&self) -> bool {
        match self {
            ConnectionError::GreetingRefused(r) | ConnectionError::HeloRefused(r) => r.class() != 5,
            _ => true,
        }
    }

    /// The reply recorded for every recipient this failure decides: the
    /// server's own when it sent one, else ours. The one place these
    /// failures become reply texts.
    pub fn reply(&self) -> ReplyText {
        let local = |code, e| ReplyText::local(code, e, self.to_string());
        match self {
            ConnectionError::GreetingRefused(r)
            | ConnectionError::ServiceClosing(r)
            | ConnectionError::HeloRefused(r)
            | ConnectionError::UnexpectedReply(r)
                if r.class() >= 4 =>
            {
                r.clone()
            }
            // RFC 3463 X.7.4 security features not supported, X.7.5
            // cryptographic failure, X.4.2 bad connection, X.5.0 protocol.
            ConnectionError::TlsNotOffered | ConnectionError::StartTlsRefused(_) => {
                local(451, EnhancedCode::new(4, 7, 4))
            }
            ConnectionError::TlsFailed => local(451, EnhancedCode::new(4, 7, 5)),
            ConnectionError::Timeout(_) | ConnectionError::ConnectionLost(_) => {
                local(451, EnhancedCode::new(4, 4, 2))
            }
            ConnectionError::Aborted => local(451, EnhancedCode::new(4, 3, 0)),
            _ => local(451, EnhancedCode::new(4, 5, 0)),
        }
    }
}

/// For a recipient a finished transaction left undecided, which the reply
/// matching rules out; kept total rather than trusted.
fn unanswered() -> ReplyText {
    ReplyText::local(
        451,
        EnhancedCode::new(4, 5, 0),
        "no reply decided this recipient".to_owned(),
    )
}

/// Why `start_transaction` sent nothing. The message-level ones are
/// permanent (the same server would refuse again: bounce); the others
/// mean the glue should use another connection.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TransactionRefused {
    /// RFC 6531 3.4: mail that needs SMTPUTF8 must not be downgraded silently.
    #[error("the message needs SMTPUTF8 but the server does not offer it")]
    SmtpUtf8NotOffered,
    /// RFC 1870: the server announced a smaller limit.
    #[error("message size {size} exceeds the server's limit of {limit}")]
    TooBig { size: u64, limit: u64 },
    /// RFC 6152 3: 8-bit data must not go unconverted to a server without
    /// 8BITMIME, and we do not convert.
    #[error("8-bit message but the server does not offer 8BITMIME")]
    EightBitNotOffered,
    /// An address or parameter would break the command line (control
    /// characters): never sent, since it could inject commands.
    #[error("envelope cannot be sent safely: {0}")]
    UnsafeEnvelope(&'static str),
    #[error("no recipients given")]
    NoRecipients,
    #[error("recipient index {0} is not in the envelope")]
    NoSuchRecipient(usize),
    #[error("connection is not ready for a transaction")]
    NotReady,
    #[error("connection carried its maximum number of messages")]
    ConnectionSpent,
}

impl TransactionRefused {
    /// Whether the message should bounce for this (else use another
    /// connection, or retry later).
    pub fn is_permanent(&self) -> bool {
        matches!(
            self,
            TransactionRefused::SmtpUtf8NotOffered
                | TransactionRefused::TooBig { .. }
                | TransactionRefused::EightBitNotOffered
                | TransactionRefused::UnsafeEnvelope(_)
        )
    }

    /// The reply to record for each recipient: the one place refusals
    /// become reply texts (RFC 3463 / RFC 6531 codes).
    pub fn reply(&self) -> ReplyText {
        let (code, e) = match self {
            TransactionRefused::SmtpUtf8NotOffered => (554, EnhancedCode::new(5, 6, 7)),
            TransactionRefused::TooBig { .. } => (552, EnhancedCode::new(5, 3, 4)),
            TransactionRefused::EightBitNotOffered => (554, EnhancedCode::new(5, 6, 3)),
            TransactionRefused::UnsafeEnvelope(_) => (554, EnhancedCode::new(5, 6, 0)),
            _ => (451, EnhancedCode::new(4, 3, 0)),
        };
        ReplyText::local(code, e, self.to_string())
    }
}

/// Something the glue must act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientEvent {
    /// Greeting, EHLO/HELO and (when chosen) STARTTLS are done:
    /// `start_transaction` may be called. Once per connection.
    Ready,
    /// The server said 220 to STARTTLS. Any input after that reply was
    /// dropped (RFC 3207 5, CVE-2011-0411: it arrived in plaintext). Write
    /// the remaining output, do the TLS handshake, then call
    /// `handle_tls_established` (or `handle_tls_failed`).
    StartTls,
    /// The server said 354: write the whole `DotStuffer` of the body (it
    /// ends with the terminator), calling `handle_body_progress` as writes
    /// succeed, then `handle_body_sent`.
    SendBody,
    /// The transaction ended; one result per recipient it was given, in
    /// that order. Every successful `start_transaction` gets exactly one.
    TransactionDone(Vec<RecipientResult>),
    /// The connection is unusable (flush the output, best effort, and
    /// close). If a transaction was in flight its `TransactionDone` came
    /// just before; `affected` lists the recipients whose result this
    /// failure decided (all transient).
    ConnectionFailed {
        error: ConnectionError,
        transient: bool,
        affected: Vec<usize>,
    },
    /// QUIT was answered (or timed out) or we aborted: close.
    Closed,
}

// ---- reply reading -------------------------------------------------------

/// Gathers the lines of one (possibly multiline) reply.
#[derive(Debug, Default)]
struct ReplyReader {
    code: Option<u16>,
    lines: Vec<String>,
}

/// Three digits, first 2-5, second 0-5 (RFC 5321 4.2).
fn reply_code(line: &[u8]) -> Option<u16> {
    match line {
        [a @ b'2'..=b'5', b @ b'0'..=b'5', c @ b'0'..=b'9', ..] => {
            Some(u16::from(a - b'0') * 100 + u16::from(b - b'0') * 10 + u16::from(c - b'0'))
        }
        _ => None,
    }
}

/// Printable text for logs and DSNs: controls become spaces.
fn clean_text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// An enhanced code at the start of `text` whose class matches `class`,
/// and the text after it.
fn split_enhanced(text: &str, class: u16) -> Option<(EnhancedCode, &str)> {
    let (head, rest) = match text.find(' ') {
        Some(k) => (&text[..k], &text[k + 1..]),
        None => (text, ""),
    };
    let mut parts = head.split('.');
    let mut num = |max_len: usize| -> Option<u16> {
        let p = parts.next()?;
        if p.is_empty() || p.len() > max_len || !p.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        p.parse().ok()
    };
    let (c, s, d) = (num(1)?, num(3)?, num(3)?);
    if parts.next().is_some() || c != class {
        return None;
    }
    let class = u8::try_from(c).ok()?;
    Some((EnhancedCode::new(class, s, d), rest))
}

impl ReplyReader {
    /// Takes one line (CRLF or LF stripped); a whole reply (code and the
    /// lines' cleaned texts) once its last line arrives.
    fn push(
        &mut self,
        line: &[u8],
        max_lines: usize,
    ) -> Result<Option<(u16, Vec<String>)>, ReplyError> {
        let code = reply_code(line).ok_or(ReplyError::BadCode)?;
        if self.code.is_some_and(|c| c != code) {
            return Err(ReplyError::MixedCodes);
        }
        let (last, text) = match line.get(3) {
            None => (true, &[][..]),
            Some(b' ') => (true, &line[4..]),
            Some(b'-') => (false, &line[4..]),
            Some(_) => return Err(ReplyError::BadCode),
        };
        if self.lines.len() >= max_lines {
            return Err(ReplyError::TooManyLines);
        }
        self.code = Some(code);
        self.lines.push(clean_text(text));
        if !last {
            return Ok(None);
        }
        self.code = None;
        Ok(Some((code, std::mem::take(&mut self.lines))))
    }

    fn assemble(code: u16, lines: &[String]) -> ReplyText {
        let class = code / 100;
        let enhanced = lines
            .first()
            .and_then(|l| split_enhanced(l, class))
            .map(|(e, _)| e);
        let mut text = String::new();
        for line in lines {
            // Servers repeat the enhanced code on every line; keep it once.
            let body = match split_enhanced(line, class) {
                Some((_, rest)) if enhanced.is_some() => rest,
                _ => line.as_str(),
            };
            if !text.is_empty() {
                text.push(' ');
            }
            text.push_str(body.trim());
        }
        ReplyText {
            code,
            enhanced,
            text,
            origin: ReplyOrigin::Remote,
        }
    }
}

// ---- the session ---------------------------------------------------------

/// A command of a transaction whose reply is awaited, in sending order
/// (RFC 2920 3.1: replies are matched by counting, never by code or text).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    Rset,
    Mail,
    /// Position in `Transaction::rcpts`.
    Rcpt(usize),
    Data,
}

impl Expect {
    fn step(self) -> Step {
        match self {
            Expect::Rset => Step::Rset,
            Expect::Mail => Step::Mail,
            Expect::Rcpt(_) => Step::Rcpt,
            Expect::Data => Step::Data,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum RcptStatus {
    /// No reply to its RCPT yet.
    Pending,
    Accepted,
    /// Its RCPT, the DATA or the final reply decided it.
    Decided(Outcome, ReplyText),
}

#[derive(Debug)]
struct Rcpt {
    index: usize,
    status: RcptStatus,
}

/// One mail transaction in flight.
#[derive(Debug)]
struct Transaction {
    rcpts: Vec<Rcpt>,
    /// MAIL FROM was refused: it decides every recipient.
    mail_failure: Option<ReplyText>,
    pipelining: bool,
    /// Sent, reply awaited, oldest first.
    awaiting: VecDeque<Expect>,
    /// Not sent yet (without PIPELINING: one at a time).
    unsent: VecDeque<(Expect, Vec<u8>)>,
}

impl Transaction {
    fn any_accepted(&self) -> bool {
        self.mail_failure.is_none()
            && self
                .rcpts
                .iter()
                .any(|r| matches!(r.status, RcptStatus::Accepted))
    }

    /// The DATA or final reply decides every accepted recipient.
    fn decide_accepted(&mut self, reply: &ReplyText) {
        for r in &mut self.rcpts {
            if r.status == RcptStatus::Accepted {
                r.status = RcptStatus::Decided(reply.outcome(), reply.clone());
            }
        }
    }

    /// The results, deciding the still-open recipients with `open`
    /// (whose indexes are also returned).
    fn results(self, open: &ReplyText) -> (Vec<RecipientResult>, Vec<usize>) {
        let mut affected = Vec::new();
        let results = self
            .rcpts
            .into_iter()
            .map(|r| {
                let (outcome, reply) = match (&self.mail_failure, r.status) {
                    (Some(mail), _) => (mail.outcome(), mail.clone()),
                    (None, RcptStatus::Decided(o, reply)) => (o, reply),
                    (None, RcptStatus::Pending | RcptStatus::Accepted) => {
                        affected.push(r.index);
                        (Outcome::TransientFailure, open.clone())
                    }
                };
                RecipientResult {
                    index: r.index,
                    outcome,
                    reply,
                }
            })
            .collect();
        (results, affected)
    }
}

/// The connection's state; each state carries what it needs.
#[derive(Debug)]
enum State {
    /// Waiting for the 220.
    Greeting,
    /// Waiting for the reply to EHLO (`extended`) or HELO.
    Hello {
        extended: bool,
    },
    /// Waiting for the reply to STARTTLS.
    StartTls,
    /// The glue is doing the handshake.
    TlsHandshake,
    /// Between transactions.
    Ready,
    /// RSET/MAIL/RCPT/DATA replies pending.
    Envelope(Transaction),
    /// The glue is writing the body.
    SendingBody(Transaction),
    /// Waiting for the reply after the terminating "." (`empty`: we sent a
    /// lone "." after a 354 that had no accepted recipient, RFC 2920 3.1).
    DataEnd {
        tx: Transaction,
        empty: bool,
    },
    Quitting,
    Closed,
}

/// One outbound SMTP connection, sans-IO: see the module header.
#[derive(Debug)]
pub struct ClientSession {
    config: Rc<ClientConfig>,
    state: State,
    caps: Capabilities,
    tls: bool,
    reader: ReplyReader,
    output: Vec<u8>,
    events: VecDeque<ClientEvent>,
    last_activity: Instant,
    /// Transactions started on this connection.
    messages: usize,
    /// The server holds a transaction (MAIL accepted, no end of data yet).
    needs_rset: bool,
}

/// True when `s` could break a command line.
fn unsafe_text(s: &str) -> bool {
    s.bytes().any(|b| b.is_ascii_control())
}

/// Parameter values (xtext, RFC 3461 4; UTF-8 ones of RFC 6533) have no
/// space either.
fn unsafe_param(s: &str) -> bool {
    s.is_empty() || s.bytes().any(|b| b <= b' ' || b == 0x7f)
}

fn notify_param(n: Notify) -> Option<String> {
    if n.never {
        return Some("NEVER".to_owned());
    }
    let words: Vec<&str> = [
        (n.success, "SUCCESS"),
        (n.failure, "FAILURE"),
        (n.delay, "DELAY"),
    ]
    .iter()
    .filter(|(on, _)| *on)
    .map(|(_, w)| *w)
    .collect();
    (!words.is_empty()).then(|| words.join(","))
}

impl ClientSession {
    /// A connection was just opened; the greeting is awaited.
    pub fn new(config: Rc<ClientConfig>, now: Instant) -> Self {
        ClientSession {
            config,
            state: State::Greeting,
            caps: Capabilities::default(),
            tls: false,
            reader: ReplyReader::default(),
            output: Vec::with_capacity(256),
            events: VecDeque::with_capacity(2),
            last_activity: now,
            messages: 0,
            needs_rset: false,
        }
    }

    /// Feeds received bytes; returns how many were consumed (the glue keeps
    /// the rest and offers it again with more). Complete reply lines are
    /// consumed; an incomplete one stays unless it is already too long,
    /// which fails the connection. Nothing is consumed while the body is
    /// being written or TLS is being set up; after the 220 to STARTTLS the
    /// rest of the input is swallowed (see [`ClientEvent::StartTls`]); once
    /// closed everything is swallowed.
    pub fn handle_input(&mut self, input: &[u8], now: Instant) -> usize {
        let mut pos = 0;
        loop {
            match self.state {
                State::Closed => return input.len(),
                State::SendingBody(_) | State::TlsHandshake => return pos,
                _ => {}
            }
            let rest = &input[pos..];
            if rest.is_empty() {
                return pos;
            }
            let max = self.config.max_reply_line.max(8);
            let window = &rest[..rest.len().min(max)];
            let Some(k) = memchr(b'\n', window) else {
                if rest.len() >= max {
                    self.fail(ConnectionError::MalformedReply(ReplyError::LineTooLong));
                    return input.len();
                }
                return pos;
            };
            pos += k + 1;
            self.last_activity = now;
            let line = &rest[..k];
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            match self.reader.push(line, self.config.max_reply_lines) {
                Ok(None) => {}
                Ok(Some((code, lines))) => {
                    let reply = ReplyReader::assemble(code, &lines);
                    self.handle_reply(reply, &lines, now);
                    if matches!(self.state, State::TlsHandshake) {
                        return input.len();
                    }
                }
                Err(e) => {
                    self.fail(ConnectionError::MalformedReply(e));
                    return input.len();
                }
            }
        }
    }

    /// The next event, oldest first.
    pub fn poll_event(&mut self) -> Option<ClientEvent> {
        self.events.pop_front()
    }

    /// Command bytes to write, if any: always before body bytes.
    pub fn poll_output(&self) -> Option<&[u8]> {
        (!self.output.is_empty()).then_some(self.output.as_slice())
    }

    /// `n` bytes of `poll_output` were written.
    pub fn consume_output(&mut self, n: usize) {
        let n = n.min(self.output.len());
        self.output.drain(..n);
    }

    /// What the server offered (defaults until EHLO is answered; reset by TLS).
    pub fn capabilities(&self) -> &Capabilities {
        &self.caps
    }

    /// The connection is under TLS (after `handle_tls_established`).
    pub fn is_tls(&self) -> bool {
        self.tls
    }

    /// `start_transaction` may be called now.
    pub fn is_ready(&self) -> bool {
        matches!(self.state, State::Ready)
    }

    /// Nothing more will happen on this connection.
    pub fn is_closed(&self) -> bool {
        matches!(self.state, State::Closed)
    }

    /// How many more transactions this connection may carry.
    pub fn messages_left(&self) -> usize {
        self.config
            .max_messages_per_connection
            .saturating_sub(self.messages)
    }

    /// Starts sending one message to `recipient_indexes` (indexes into
    /// `envelope.recipients`, all for this destination). `body_len` is the
    /// stored size (for SIZE=); `needs_smtputf8` / `needs_8bit` say what the
    /// content requires (a non-ASCII address needs SMTPUTF8 regardless).
    /// Refuses, sending nothing, what this server cannot take; see
    /// [`TransactionRefused::is_permanent`].
    pub fn start_transaction(
        &mut self,
        envelope: &Envelope,
        recipient_indexes: &[usize],
        body_len: u64,
        needs_smtputf8: bool,
        needs_8bit: bool,
        now: Instant,
    ) -> Result<(), TransactionRefused> {
        if !self.is_ready() {
            return Err(TransactionRefused::NotReady);
        }
        if self.messages_left() == 0 {
            return Err(TransactionRefused::ConnectionSpent);
        }
        if recipient_indexes.is_empty() {
            return Err(TransactionRefused::NoRecipients);
        }
        let mut recipients = Vec::with_capacity(recipient_indexes.len());
        for &i in recipient_indexes {
            recipients.push(
                envelope
                    .recipients
                    .get(i)
                    .ok_or(TransactionRefused::NoSuchRecipient(i))?,
            );
        }
        if unsafe_text(&envelope.sender) || recipients.iter().any(|r| unsafe_text(&r.address)) {
            return Err(TransactionRefused::UnsafeEnvelope(
                "control character in an address",
            ));
        }
        let caps = self.caps;
        let utf8 = needs_smtputf8
            || !envelope.sender.is_ascii()
            || recipients.iter().any(|r| !r.address.is_ascii());
        if utf8 && !caps.smtputf8 {
            return Err(TransactionRefused::SmtpUtf8NotOffered);
        }
        if let Some(limit) = caps.size.filter(|&l| l > 0 && body_len > l) {
            return Err(TransactionRefused::TooBig {
                size: body_len,
                limit,
            });
        }
        let eight_bit = needs_8bit || envelope.body_type != BodyType::SevenBit;
        if needs_8bit && !caps.eight_bit_mime {
            return Err(TransactionRefused::EightBitNotOffered);
        }
        let dsn_params = caps.dsn;
        if dsn_params {
            let bad_envid = envelope.envid.as_deref().is_some_and(unsafe_param);
            let bad_orcpt = recipients
                .iter()
                .any(|r| r.orcpt.as_deref().is_some_and(unsafe_param));
            if bad_envid || bad_orcpt {
                return Err(TransactionRefused::UnsafeEnvelope(
                    "bad ENVID or ORCPT value",
                ));
            }
        }

        let mut mail = format!("MAIL FROM:<{}>", envelope.sender);
        if caps.size.is_some() {
            mail.push_str(&format!(" SIZE={body_len}"));
        }
        if eight_bit && caps.eight_bit_mime {
            // BINARYMIME content goes as 8BITMIME: we send with DATA, not BDAT.
            mail.push_str(" BODY=8BITMIME");
        }
        if utf8 {
            mail.push_str(" SMTPUTF8");
        }
        if dsn_params {
            match envelope.dsn_return {
                Some(DsnReturn::Full) => mail.push_str(" RET=FULL"),
                Some(DsnReturn::Headers) => mail.push_str(" RET=HDRS"),
                None => {}
            }
            if let Some(envid) = &envelope.envid {
                mail.push_str(&format!(" ENVID={envid}"));
            }
        }
        mail.push_str("\r\n");

        let mut unsent = VecDeque::with_capacity(recipients.len() + 3);
        if self.needs_rset {
            unsent.push_back((Expect::Rset, b"RSET\r\n".to_vec()));
        }
        unsent.push_back((Expect::Mail, mail.into_bytes()));
        for (pos, r) in recipients.iter().enumerate() {
            let mut rcpt = format!("RCPT TO:<{}>", r.address);
            if dsn_params {
                if let Some(notify) = r.notify.and_then(notify_param) {
                    rcpt.push_str(&format!(" NOTIFY={notify}"));
                }
                if let Some(orcpt) = &r.orcpt {
                    rcpt.push_str(&format!(" ORCPT={orcpt}"));
                }
            }
            rcpt.push_str("\r\n");
            unsent.push_back((Expect::Rcpt(pos), rcpt.into_bytes()));
        }
        // RFC 2920 3.1: DATA ends the group.
        unsent.push_back((Expect::Data, b"DATA\r\n".to_vec()));

        let tx = Transaction {
            rcpts: recipient_indexes
                .iter()
                .map(|&index| Rcpt {
                    index,
                    status: RcptStatus::Pending,
                })
                .collect(),
            mail_failure: None,
            pipelining: caps.pipelining,
            awaiting: VecDeque::with_capacity(recipients.len() + 3),
            unsent,
        };
        self.messages += 1;
        self.last_activity = now;
        self.advance_envelope(tx);
        Ok(())
    }

    /// Body bytes were written: the data-block timeout starts again.
    pub fn handle_body_progress(&mut self, now: Instant) {
        if matches!(self.state, State::SendingBody(_)) {
            self.last_activity = now;
        }
    }

    /// The whole `DotStuffer`, terminator included, was written: the final
    /// reply is awaited.
    pub fn handle_body_sent(&mut self, now: Instant) {
        if !matches!(self.state, State::SendingBody(_)) {
            return;
        }
        if let State::SendingBody(tx) = std::mem::replace(&mut self.state, State::Closed) {
            self.state = State::DataEnd { tx, empty: false };
            self.last_activity = now;
        }
    }

    /// TLS is up: RFC 3207 4.2 says to forget what EHLO said, so EHLO again.
    pub fn handle_tls_established(&mut self, now: Instant) {
        if !matches!(self.state, State::TlsHandshake) {
            return;
        }
        self.tls = true;
        self.caps = Capabilities::default();
        self.reader = ReplyReader::default();
        self.last_activity = now;
        self.send_hello(true);
    }

    /// The handshake failed; the connection is unusable (with
    /// opportunistic TLS the glue may reconnect without it).
    pub fn handle_tls_failed(&mut self, now: Instant) {
        if matches!(self.state, State::TlsHandshake) {
            self.last_activity = now;
            self.fail(ConnectionError::TlsFailed);
        }
    }

    /// The server closed the connection (read returned 0, or a write failed).
    pub fn handle_eof(&mut self, now: Instant) {
        self.last_activity = now;
        match self.state {
            State::Closed => {}
            State::Quitting => self.close(),
            _ => {
                let step = self.step();
                self.fail(ConnectionError::ConnectionLost(step));
            }
        }
    }

    /// Ends the connection politely: QUIT when ready. In any other state the
    /// connection is abandoned at once (a transaction in flight gets its
    /// `TransactionDone`, all open recipients transient) and `Closed` follows.
    pub fn quit(&mut self, now: Instant) {
        self.last_activity = now;
        match std::mem::replace(&mut self.state, State::Closed) {
            State::Ready => {
                self.output.extend_from_slice(b"QUIT\r\n");
                self.state = State::Quitting;
            }
            State::Closed => {}
            State::Envelope(tx) | State::SendingBody(tx) | State::DataEnd { tx, .. } => {
                let (results, _) = tx.results(&ConnectionError::Aborted.reply());
                self.events.push_back(ClientEvent::TransactionDone(results));
                self.close();
            }
            _ => self.close(),
        }
    }

    /// When `handle_timeout` should next be called; `None` once closed.
    pub fn deadline(&self) -> Option<Instant> {
        let t = &self.config.timeouts;
        let timeout = match &self.state {
            State::Greeting => t.greeting,
            State::Hello { .. } => t.helo,
            State::StartTls => t.starttls,
            State::TlsHandshake => t.tls_handshake,
            State::Ready => t.idle,
            State::Envelope(tx) => match tx.awaiting.front() {
                Some(Expect::Rset) => t.rset,
                Some(Expect::Mail) => t.mail,
                Some(Expect::Rcpt(_)) => t.rcpt,
                Some(Expect::Data) | None => t.data_init,
            },
            State::SendingBody(_) => t.data_block,
            State::DataEnd { .. } => t.data_term,
            State::Quitting => t.quit,
            State::Closed => return None,
        };
        // An absurd timeout must not overflow: a day is "never" here.
        self.last_activity
            .checked_add(timeout)
            .or_else(|| self.last_activity.checked_add(Duration::from_secs(86_400)))
            .or(Some(self.last_activity))
    }

    /// Acts on a passed deadline: an idle connection QUITs, an unanswered
    /// QUIT just closes, anything else fails the connection (transient for
    /// every open recipient).
    pub fn handle_timeout(&mut self, now: Instant) {
        let Some(deadline) = self.deadline() else {
            return;
        };
        if now < deadline {
            return;
        }
        match self.state {
            State::Ready => self.quit(now),
            State::Quitting => self.close(),
            _ => {
                let step = self.step();
                self.fail(ConnectionError::Timeout(step));
            }
        }
    }

    // ---- internals ------------------------------------------------------

    /// What we are waiting for, for errors.
    fn step(&self) -> Step {
        match &self.state {
            State::Greeting => Step::Greeting,
            State::Hello { extended: true } => Step::Ehlo,
            State::Hello { extended: false } => Step::Helo,
            State::StartTls => Step::StartTls,
            State::TlsHandshake => Step::TlsHandshake,
            State::Ready | State::Closed => Step::Idle,
            State::Envelope(tx) => tx.awaiting.front().map_or(Step::Data, |e| e.step()),
            State::SendingBody(_) => Step::Body,
            State::DataEnd { .. } => Step::DataEnd,
            State::Quitting => Step::Quit,
        }
    }

    fn close(&mut self) {
        self.state = State::Closed;
        self.events.push_back(ClientEvent::Closed);
    }

    /// The connection is unusable: decide the transaction in flight, then
    /// report. Nothing is sent; the glue closes.
    fn fail(&mut self, error: ConnectionError) {
        let mut affected = Vec::new();
        if let State::Envelope(tx) | State::SendingBody(tx) | State::DataEnd { tx, .. } =
            std::mem::replace(&mut self.state, State::Closed)
        {
            let (results, open) = tx.results(&error.reply());
            affected = open;
            self.events.push_back(ClientEvent::TransactionDone(results));
        }
        self.state = State::Closed;
        let transient = error.is_transient();
        self.events.push_back(ClientEvent::ConnectionFailed {
            error,
            transient,
            affected,
        });
    }

    /// A refusal of our opening that leaves the server able to read: say
    /// QUIT (RFC 5321 3.1, 4.1.1.10) before failing.
    fn fail_with_quit(&mut self, error: ConnectionError) {
        self.output.extend_from_slice(b"QUIT\r\n");
        self.fail(error);
    }

    fn send_hello(&mut self, extended: bool) {
        let verb: &[u8] = if extended { b"EHLO " } else { b"HELO " };
        self.output.extend_from_slice(verb);
        self.output
            .extend_from_slice(self.config.helo_name.as_bytes());
        self.output.extend_from_slice(b"\r\n");
        self.state = State::Hello { extended };
    }

    /// One whole reply; `lines` are its texts, for the EHLO keywords.
    fn handle_reply(&mut self, reply: ReplyText, lines: &[String], now: Instant) {
        // RFC 5321 3.8: 421 at any point means the server is going away.
        if reply.code == 421 && !matches!(self.state, State::Quitting) {
            return self.fail(ConnectionError::ServiceClosing(reply));
        }
        match std::mem::replace(&mut self.state, State::Closed) {
            State::Greeting => {
                self.state = State::Greeting;
                match reply.class() {
                    2 => self.send_hello(true),
                    4 | 5 => self.fail_with_quit(ConnectionError::GreetingRefused(reply)),
                    _ => self.fail(ConnectionError::UnexpectedReply(reply)),
                }
            }
            State::Hello { extended } => {
                self.state = State::Hello { extended };
                match reply.class() {
                    2 => {
                        self.caps = if extended {
                            Capabilities::parse(lines)
                        } else {
                            Capabilities::default()
                        };
                        self.after_hello(now);
                    }
                    // RFC 5321 4.1.4 / 3.2: an old server refuses EHLO with
                    // 5xx (500, 502, 504, 550); try HELO.
                    5 if extended => self.send_hello(false),
                    4 | 5 => self.fail_with_quit(ConnectionError::HeloRefused(reply)),
                    _ => self.fail(ConnectionError::UnexpectedReply(reply)),
                }
            }
            State::StartTls => {
                self.state = State::StartTls;
                match reply.class() {
                    2 => {
                        self.state = State::TlsHandshake;
                        self.events.push_back(ClientEvent::StartTls);
                    }
                    4 | 5 if self.config.starttls == StartTlsPolicy::Required => {
                        self.fail_with_quit(ConnectionError::StartTlsRefused(reply));
                    }
                    4 | 5 => self.become_ready(now),
                    _ => self.fail(ConnectionError::UnexpectedReply(reply)),
                }
            }
            State::Envelope(tx) => self.envelope_reply(tx, reply, now),
            State::DataEnd { mut tx, empty } => {
                if !matches!(reply.class(), 2 | 4 | 5) {
                    self.state = State::DataEnd { tx, empty };
                    return self.fail(ConnectionError::UnexpectedReply(reply));
                }
                // RFC 5321 4.1.1.4: the transaction ends here, whatever the reply.
                self.needs_rset = false;
                if !empty {
                    tx.decide_accepted(&reply);
                }
                self.finish_transaction(tx, now);
            }
            State::Quitting => self.close(),
            // A reply nobody asked for: we can no longer count replies.
            State::Ready => self.fail(ConnectionError::UnexpectedReply(reply)),
            state @ (State::TlsHandshake | State::SendingBody(_) | State::Closed) => {
                // handle_input never reads in these states.
                self.state = state;
            }
        }
    }

    fn after_hello(&mut self, now: Instant) {
        let policy = self.config.starttls;
        if !self.tls && policy != StartTlsPolicy::Never && self.caps.starttls {
            self.output.extend_from_slice(b"STARTTLS\r\n");
            self.state = State::StartTls;
            self.last_activity = now;
        } else if !self.tls && policy == StartTlsPolicy::Required {
            self.fail_with_quit(ConnectionError::TlsNotOffered);
        } else {
            self.become_ready(now);
        }
    }

    fn become_ready(&mut self, now: Instant) {
        self.state = State::Ready;
        self.last_activity = now;
        self.events.push_back(ClientEvent::Ready);
    }

    /// One reply to RSET, MAIL, RCPT or DATA.
    fn envelope_reply(&mut self, mut tx: Transaction, reply: ReplyText, now: Instant) {
        let Some(expect) = tx.awaiting.pop_front() else {
            self.state = State::Envelope(tx);
            return self.fail(ConnectionError::UnexpectedReply(reply));
        };
        let class = reply.class();
        let protocol_error = match expect {
            Expect::Rset if class == 2 => {
                self.needs_rset = false;
                false
            }
            Expect::Rset => true,
            Expect::Mail => match class {
                2 => {
                    self.needs_rset = true;
                    false
                }
                4 | 5 => {
                    tx.mail_failure = Some(reply.clone());
                    false
                }
                _ => true,
            },
            Expect::Rcpt(pos) => match class {
                // After a refused MAIL the RCPT replies (503s) mean nothing.
                _ if tx.mail_failure.is_some() => false,
                2 | 4 | 5 => {
                    if let Some(r) = tx.rcpts.get_mut(pos) {
                        r.status = if class == 2 {
                            RcptStatus::Accepted
                        } else {
                            RcptStatus::Decided(reply.outcome(), reply.clone())
                        };
                    }
                    false
                }
                _ => true,
            },
            Expect::Data if reply.code == 354 => {
                if tx.any_accepted() {
                    self.state = State::SendingBody(tx);
                    self.last_activity = now;
                    self.events.push_back(ClientEvent::SendBody);
                } else {
                    // RFC 2920 3.1: DATA accepted with nobody to deliver
                    // to: end it with a lone dot, send no body.
                    self.output.extend_from_slice(b".\r\n");
                    self.state = State::DataEnd { tx, empty: true };
                }
                return;
            }
            Expect::Data => match class {
                4 | 5 => {
                    tx.decide_accepted(&reply);
                    false
                }
                _ => true,
            },
        };
        if protocol_error {
            tx.awaiting.push_front(expect);
            self.state = State::Envelope(tx);
            return self.fail(ConnectionError::UnexpectedReply(reply));
        }
        self.advance_envelope(tx);
        if let State::Envelope(tx) = &self.state {
            if tx.awaiting.is_empty() && tx.unsent.is_empty() {
                if let State::Envelope(tx) = std::mem::replace(&mut self.state, State::Closed) {
                    self.finish_transaction(tx, now);
                }
            }
        }
    }

    /// Sends what may go now: everything with PIPELINING, else the next
    /// command once the previous one is answered, skipping what no longer
    /// makes sense (RCPT after a refused MAIL, DATA with no recipient).
    fn advance_envelope(&mut self, mut tx: Transaction) {
        if !tx.pipelining && tx.awaiting.is_empty() {
            let pointless = tx.mail_failure.is_some()
                || matches!(tx.unsent.front(), Some((Expect::Data, _))) && !tx.any_accepted();
            if pointless {
                tx.unsent.clear();
            }
        }
        while let Some((expect, bytes)) = tx.unsent.pop_front() {
            self.output.extend_from_slice(&bytes);
            tx.awaiting.push_back(expect);
            if !tx.pipelining {
                break;
            }
        }
        self.state = State::Envelope(tx);
    }

    fn finish_transaction(&mut self, tx: Transaction, now: Instant) {
        let (results, _) = tx.results(&unanswered());
        self.events.push_back(ClientEvent::TransactionDone(results));
        self.state = State::Ready;
        self.last_activity = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::Recipient;
    use crate::smtp::dot_stuff::DotStuffer;
    use crate::smtp::{Event, Message, PeerInfo, ServerConfig, ServerSession, StoreFailure};
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};
    use std::net::{IpAddr, Ipv4Addr, SocketAddr};
    use std::time::{SystemTime, UNIX_EPOCH};

    fn client_config() -> ClientConfig {
        ClientConfig {
            helo_name: "client.test".to_owned(),
            max_messages_per_connection: 3,
            ..ClientConfig::default()
        }
    }

    fn envelope(sender: &str, rcpts: &[&str]) -> Envelope {
        Envelope {
            sender: sender.to_owned(),
            recipients: rcpts
                .iter()
                .map(|a| Recipient {
                    address: (*a).to_owned(),
                    notify: None,
                    orcpt: None,
                })
                .collect(),
            body_type: BodyType::SevenBit,
            smtputf8: false,
            dsn_return: None,
            envid: None,
            received_at: 0,
            client_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            helo: "h".to_owned(),
            auth_user: None,
            tenant: None,
        }
    }

    fn outcomes(results: &[RecipientResult]) -> Vec<(usize, Outcome, u16)> {
        results
            .iter()
            .map(|r| (r.index, r.outcome, r.reply.code))
            .collect()
    }

    const BODY: &[u8] = b"Subject: hi\r\n\r\n.leading dot\r\nlast line without CRLF";

    // ---- against the server core, in memory --------------------------------

    fn server_config() -> ServerConfig {
        ServerConfig {
            hostname: "mx.test".to_owned(),
            max_message_size: 10_000,
            max_recipients: 3,
            local_domains: vec!["local.test".to_owned()],
            ..ServerConfig::default()
        }
    }

    /// A client and a server core wired back to back, pumped by hand.
    struct Pair {
        client: ClientSession,
        server: ServerSession,
        now: Instant,
        to_server: Vec<u8>,
        to_client: Vec<u8>,
        body: Vec<u8>,
        events: Vec<ClientEvent>,
        stored: Vec<Message>,
        store_failure: Option<StoreFailure>,
        /// EHLO keywords removed from the server's replies.
        strip: Vec<&'static str>,
        /// Each write of client command bytes, as one flight.
        flights: Vec<String>,
        bodies_sent: usize,
        server_closed: bool,
    }

    impl Pair {
        fn new(server: ServerConfig, may_relay: bool, client: ClientConfig) -> Self {
            let now = Instant::now();
            let peer = PeerInfo {
                addr: SocketAddr::from(([192, 0, 2, 1], 1025)),
                may_relay,
                tls: false,
            };
            Pair {
                client: ClientSession::new(Rc::new(client), now),
                server: ServerSession::new(Rc::new(server), peer, now),
                now,
                to_server: Vec::new(),
                to_client: Vec::new(),
                body: Vec::new(),
                events: Vec::new(),
                stored: Vec::new(),
                store_failure: None,
                strip: Vec::new(),
                flights: Vec::new(),
                bodies_sent: 0,
                server_closed: false,
            }
        }

        fn wall() -> SystemTime {
            UNIX_EPOCH + Duration::from_secs(1_700_000_000)
        }

        /// Removes `strip` keywords from EHLO lines, keeping the reply well formed.
        fn filter(&self, out: &[u8]) -> Vec<u8> {
            let text = String::from_utf8_lossy(out);
            let mut lines: Vec<String> = Vec::new();
            for line in text.split_inclusive("\r\n") {
                let word = line.get(4..).unwrap_or("").trim_end();
                let keyword = word.split(' ').next().unwrap_or("");
                if line.starts_with("250") && self.strip.contains(&keyword) {
                    if line.as_bytes().get(3) == Some(&b' ') {
                        if let Some(prev) = lines.last_mut() {
                            prev.replace_range(3..4, " ");
                        }
                    }
                    continue;
                }
                lines.push(line.to_owned());
            }
            lines.concat().into_bytes()
        }

        fn pump(&mut self) {
            let mut rng = StdRng::seed_from_u64(self.flights.len() as u64);
            for _ in 0..10_000 {
                let mut progress = false;
                if let Some(out) = self.client.poll_output() {
                    self.flights.push(String::from_utf8_lossy(out).into_owned());
                    self.to_server.extend_from_slice(out);
                    let n = out.len();
                    self.client.consume_output(n);
                    progress = true;
                }
                if !self.to_server.is_empty() && !self.server_closed {
                    let n = self
                        .server
                        .handle_input(&self.to_server, self.now, Self::wall());
                    self.to_server.drain(..n);
                    progress |= n > 0;
                }
                while let Some(e) = self.server.poll_event() {
                    progress = true;
                    match e {
                        Event::Message(m) => {
                            self.stored.push(m);
                            let result = match self.store_failure {
                                None => Ok("QID"),
                                Some(f) => Err(f),
                            };
                            self.server.handle_stored(result, self.now);
                        }
                        Event::StartTls => self.server.handle_tls_established(self.now),
                        Event::Authenticate(_) => {
                            unreachable!("the client never authenticates")
                        }
                        Event::Close => self.server_closed = true,
                    }
                }
                if !self.server.output().is_empty() {
                    let out = self.filter(self.server.output());
                    self.to_client.extend_from_slice(&out);
                    let n = self.server.output().len();
                    self.server.consume_output(n);
                    progress = true;
                }
                if !self.to_client.is_empty() {
                    // Random chunks: replies split anywhere must not matter.
                    let k = rng.gen_range(1..=self.to_client.len());
                    let n = self.client.handle_input(&self.to_client[..k], self.now);
                    self.to_client.drain(..n);
                    progress |= n > 0 || k < self.to_client.len();
                }
                while let Some(e) = self.client.poll_event() {
                    progress = true;
                    match e {
                        ClientEvent::SendBody => {
                            assert!(self.client.poll_output().is_none());
                            for piece in DotStuffer::new(&self.body) {
                                self.to_server.extend_from_slice(piece);
                            }
                            self.bodies_sent += 1;
                            self.client.handle_body_progress(self.now);
                            self.client.handle_body_sent(self.now);
                        }
                        ClientEvent::StartTls => self.client.handle_tls_established(self.now),
                        e => self.events.push(e),
                    }
                }
                if !progress {
                    return;
                }
            }
            panic!("pump did not settle");
        }

        fn connect(server: ServerConfig, may_relay: bool, strip: &[&'static str]) -> Self {
            let mut p = Pair::new(server, may_relay, client_config());
            p.strip = strip.to_vec();
            p.pump();
            assert_eq!(p.take_events(), vec![ClientEvent::Ready]);
            p
        }

        fn take_events(&mut self) -> Vec<ClientEvent> {
            std::mem::take(&mut self.events)
        }

        fn send(
            &mut self,
            env: &Envelope,
            body: &[u8],
        ) -> Result<Vec<RecipientResult>, TransactionRefused> {
            let idx: Vec<usize> = (0..env.recipients.len()).collect();
            self.send_flags(env, &idx, body, false, false)
        }

        fn send_flags(
            &mut self,
            env: &Envelope,
            idx: &[usize],
            body: &[u8],
            utf8: bool,
            eight: bool,
        ) -> Result<Vec<RecipientResult>, TransactionRefused> {
            self.body = body.to_vec();
            self.client
                .start_transaction(env, idx, body.len() as u64, utf8, eight, self.now)?;
            self.pump();
            match self.take_events().as_slice() {
                [ClientEvent::TransactionDone(r)] => Ok(r.clone()),
                other => panic!("unexpected events {other:?}"),
            }
        }

        fn quit(&mut self) {
            self.client.quit(self.now);
            self.pump();
            assert_eq!(self.take_events(), vec![ClientEvent::Closed]);
            assert!(self.server_closed && self.client.is_closed());
        }
    }

    fn stored_body(m: &Message) -> &[u8] {
        // Our server's Received header comes first; the body follows it.
        let at = m
            .body
            .windows(BODY.len().min(15))
            .position(|w| w == &BODY[..15]);
        &m.body[at.unwrap_or(0)..]
    }

    #[test]
    fn delivers_pipelined_in_one_flight() {
        let mut p = Pair::connect(server_config(), true, &[]);
        let caps = *p.client.capabilities();
        assert!(caps.pipelining && caps.dsn && caps.smtputf8 && caps.eight_bit_mime);
        assert!(caps.chunking && caps.enhanced_status_codes && !caps.starttls);
        assert_eq!(caps.size, Some(10_000));
        let env = envelope("a@src.test", &["b@local.test", "c@else.test"]);
        let results = p.send(&env, BODY).unwrap();
        assert_eq!(
            outcomes(&results),
            vec![(0, Outcome::Delivered, 250), (1, Outcome::Delivered, 250)]
        );
        assert_eq!(results[0].reply.enhanced, Some(EnhancedCode::new(2, 0, 0)));
        assert_eq!(results[0].reply.text, "Ok: queued as QID");
        let flight = format!(
            "MAIL FROM:<a@src.test> SIZE={}\r\nRCPT TO:<b@local.test>\r\nRCPT TO:<c@else.test>\r\nDATA\r\n",
            BODY.len()
        );
        assert!(p.flights.contains(&flight), "{:?}", p.flights);
        assert_eq!(p.stored.len(), 1);
        let mut want = BODY.to_vec();
        want.extend_from_slice(b"\r\n");
        assert_eq!(stored_body(&p.stored[0]), want.as_slice());
        assert_eq!(p.stored[0].envelope.recipients.len(), 2);
        p.quit();
    }

    #[test]
    fn delivers_one_command_at_a_time_without_pipelining() {
        let mut p = Pair::connect(server_config(), true, &["PIPELINING"]);
        assert!(!p.client.capabilities().pipelining);
        let env = envelope("", &["b@local.test", "c@local.test"]);
        let results = p.send(&env, b"x\r\n").unwrap();
        assert!(results.iter().all(|r| r.outcome == Outcome::Delivered));
        let flights: Vec<&str> = p.flights.iter().map(String::as_str).collect();
        assert_eq!(
            flights,
            [
                "EHLO client.test\r\n",
                "MAIL FROM:<> SIZE=3\r\n",
                "RCPT TO:<b@local.test>\r\n",
                "RCPT TO:<c@local.test>\r\n",
                "DATA\r\n",
            ]
        );
        assert_eq!(p.stored[0].envelope.sender, "");
        p.quit();
    }

    #[test]
    fn per_recipient_results_with_refusals() {
        let mut cfg = server_config();
        cfg.max_recipients = 2;
        let mut p = Pair::connect(cfg, false, &[]);
        let env = envelope(
            "a@src.test",
            &[
                "b@local.test",
                "x@remote.test",
                "c@local.test",
                "d@local.test",
            ],
        );
        let results = p.send(&env, BODY).unwrap();
        assert_eq!(
            outcomes(&results),
            vec![
                (0, Outcome::Delivered, 250),
                (1, Outcome::PermanentFailure, 554),
                (2, Outcome::Delivered, 250),
                (3, Outcome::TransientFailure, 452),
            ]
        );
        assert_eq!(results[1].reply.enhanced, Some(EnhancedCode::new(5, 7, 1)));
        assert_eq!(results[1].reply.origin, ReplyOrigin::Remote);
        assert_eq!(
            results[3].reply.to_string(),
            "452 4.5.3 Error: too many recipients"
        );
        let got: Vec<&str> = p.stored[0]
            .envelope
            .recipients
            .iter()
            .map(|r| r.address.as_str())
            .collect();
        assert_eq!(got, ["b@local.test", "c@local.test"]);
    }

    /// A subset of the envelope's recipients, by index.
    #[test]
    fn recipient_indexes_select_and_name_results() {
        let mut p = Pair::connect(server_config(), true, &[]);
        let env = envelope("a@src.test", &["b@x.test", "c@y.test", "d@x.test"]);
        let results = p.send_flags(&env, &[2, 0], BODY, false, false).unwrap();
        assert_eq!(
            outcomes(&results),
            vec![(2, Outcome::Delivered, 250), (0, Outcome::Delivered, 250)]
        );
        assert_eq!(p.stored[0].envelope.recipients[0].address, "d@x.test");
    }

    #[test]
    fn temporary_failure_at_end_of_data_then_reuse() {
        let mut p = Pair::connect(server_config(), true, &[]);
        p.store_failure = Some(StoreFailure::Temporary);
        let env = envelope("a@src.test", &["b@local.test", "c@local.test"]);
        let results = p.send(&env, BODY).unwrap();
        assert_eq!(
            outcomes(&results),
            vec![
                (0, Outcome::TransientFailure, 451),
                (1, Outcome::TransientFailure, 451)
            ]
        );
        assert_eq!(results[0].reply.enhanced, Some(EnhancedCode::new(4, 3, 0)));
        p.store_failure = None;
        let results = p.send(&env, BODY).unwrap();
        assert!(results.iter().all(|r| r.outcome == Outcome::Delivered));
        assert!(
            p.flights.iter().all(|f| !f.contains("RSET")),
            "no RSET needed"
        );
        p.quit();
    }

    #[test]
    fn size_over_the_servers_limit_is_refused_before_sending() {
        let mut cfg = server_config();
        cfg.max_message_size = 100;
        let mut p = Pair::connect(cfg, true, &[]);
        let env = envelope("a@src.test", &["b@local.test"]);
        let err = p.send(&env, &[b'x'; 1000]).unwrap_err();
        assert_eq!(
            err,
            TransactionRefused::TooBig {
                size: 1000,
                limit: 100
            }
        );
        assert!(err.is_permanent());
        assert_eq!(err.reply().code, 552);
        assert_eq!(err.reply().enhanced, Some(EnhancedCode::new(5, 3, 4)));
        assert!(p.client.poll_output().is_none() && p.client.is_ready());
        // The connection is still good for a message that fits.
        assert!(p.send(&env, b"small\r\n").unwrap()[0].outcome == Outcome::Delivered);
    }

    #[test]
    fn smtputf8_needed_but_not_offered_is_a_permanent_refusal() {
        let mut p = Pair::connect(server_config(), true, &["SMTPUTF8"]);
        assert!(!p.client.capabilities().smtputf8);
        let env = envelope("a@src.test", &["b@local.test"]);
        let err = p.send_flags(&env, &[0], BODY, true, false).unwrap_err();
        assert_eq!(err, TransactionRefused::SmtpUtf8NotOffered);
        assert!(err.is_permanent());
        assert_eq!(err.reply().enhanced, Some(EnhancedCode::new(5, 6, 7)));
        assert_eq!(err.reply().origin, ReplyOrigin::Local);
        // A non-ASCII address needs it even when the caller did not say so.
        let env = envelope("a@src.test", &["пользователь@local.test"]);
        assert_eq!(
            p.send(&env, BODY).unwrap_err(),
            TransactionRefused::SmtpUtf8NotOffered
        );
        assert!(p.client.poll_output().is_none());
    }

    #[test]
    fn smtputf8_and_8bitmime_when_offered() {
        let mut p = Pair::connect(server_config(), true, &[]);
        let env = envelope("José@src.test", &["пользователь@local.test"]);
        let body = "Subject: café\r\n\r\nnaïve\r\n".as_bytes();
        let results = p.send_flags(&env, &[0], body, true, true).unwrap();
        assert_eq!(results[0].outcome, Outcome::Delivered);
        let stored = &p.stored[0].envelope;
        assert!(stored.smtputf8);
        assert_eq!(stored.body_type, BodyType::EightBitMime);
        assert!(p
            .flights
            .iter()
            .any(|f| f.contains(" BODY=8BITMIME SMTPUTF8\r\n")));
    }

    #[test]
    fn eight_bit_body_without_8bitmime_is_refused() {
        let mut p = Pair::connect(server_config(), true, &["8BITMIME"]);
        let env = envelope("a@src.test", &["b@local.test"]);
        let err = p
            .send_flags(&env, &[0], b"caf\xc3\xa9\r\n", false, true)
            .unwrap_err();
        assert_eq!(err, TransactionRefused::EightBitNotOffered);
        assert!(err.is_permanent());
        assert_eq!(err.reply().enhanced, Some(EnhancedCode::new(5, 6, 3)));
    }

    #[test]
    fn dsn_parameters_pass_on_only_when_offered() {
        let mut env = envelope("a@src.test", &["b@local.test", "c@local.test"]);
        env.dsn_return = Some(DsnReturn::Headers);
        env.envid = Some("QQ+2B1".to_owned());
        env.recipients[0].notify = Some(Notify {
            success: true,
            failure: true,
            ..Notify::default()
        });
        env.recipients[0].orcpt = Some("rfc822;b@local.test".to_owned());
        env.recipients[1].notify = Some(Notify {
            never: true,
            ..Notify::default()
        });
        let mut p = Pair::connect(server_config(), true, &[]);
        p.send(&env, BODY).unwrap();
        let flight = p.flights.last().unwrap().clone();
        assert!(flight.contains(" RET=HDRS ENVID=QQ+2B1\r\n"), "{flight}");
        assert!(flight.contains(
            "RCPT TO:<b@local.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;b@local.test\r\n"
        ));
        assert!(flight.contains("RCPT TO:<c@local.test> NOTIFY=NEVER\r\n"));
        let stored = &p.stored[0].envelope;
        assert_eq!(stored.dsn_return, env.dsn_return);
        assert_eq!(stored.envid, env.envid);
        assert_eq!(stored.recipients, env.recipients);

        let mut p = Pair::connect(server_config(), true, &["DSN"]);
        p.send(&env, BODY).unwrap();
        let flight = p.flights.last().unwrap();
        assert!(
            !flight.contains("RET=") && !flight.contains("NOTIFY="),
            "{flight}"
        );
    }

    #[test]
    fn every_recipient_refused_sends_no_body_then_rset_before_reuse() {
        let mut p = Pair::connect(server_config(), false, &[]);
        let env = envelope("a@src.test", &["x@remote.test", "y@remote.test"]);
        let results = p.send(&env, BODY).unwrap();
        assert_eq!(
            outcomes(&results),
            vec![
                (0, Outcome::PermanentFailure, 554),
                (1, Outcome::PermanentFailure, 554)
            ]
        );
        assert_eq!(p.bodies_sent, 0);
        assert!(p.stored.is_empty());
        let env = envelope("a@src.test", &["b@local.test"]);
        let results = p.send(&env, BODY).unwrap();
        assert_eq!(results[0].outcome, Outcome::Delivered);
        assert!(p.flights.last().unwrap().starts_with("RSET\r\nMAIL FROM:"));
        p.quit();
    }

    #[test]
    fn three_messages_on_one_connection_then_spent() {
        let mut p = Pair::connect(server_config(), true, &[]);
        let env = envelope("a@src.test", &["b@local.test"]);
        for i in 0..3 {
            assert_eq!(p.client.messages_left(), 3 - i);
            let body = format!("Subject: {i}\r\n\r\n.{i}\r\n");
            assert_eq!(
                p.send(&env, body.as_bytes()).unwrap()[0].outcome,
                Outcome::Delivered
            );
        }
        assert_eq!(
            p.send(&env, BODY).unwrap_err(),
            TransactionRefused::ConnectionSpent
        );
        assert_eq!(p.stored.len(), 3);
        assert!(p.stored[2].body.ends_with(b"\r\nSubject: 2\r\n\r\n.2\r\n"));
        p.quit();
    }

    #[test]
    fn starttls_with_the_server_core() {
        let mut cfg = server_config();
        cfg.starttls = true;
        let mut p = Pair::new(cfg.clone(), true, client_config());
        p.pump();
        assert_eq!(p.take_events(), vec![ClientEvent::Ready]);
        assert!(p.client.is_tls());
        assert!(
            !p.client.capabilities().starttls,
            "not offered again under TLS"
        );
        let flights: Vec<&str> = p.flights.iter().map(String::as_str).collect();
        assert_eq!(
            flights,
            [
                "EHLO client.test\r\n",
                "STARTTLS\r\n",
                "EHLO client.test\r\n"
            ]
        );
        let env = envelope("a@src.test", &["b@local.test"]);
        assert_eq!(p.send(&env, BODY).unwrap()[0].outcome, Outcome::Delivered);

        let mut never = client_config();
        never.starttls = StartTlsPolicy::Never;
        let mut p = Pair::new(cfg, true, never);
        p.pump();
        assert_eq!(p.take_events(), vec![ClientEvent::Ready]);
        assert!(!p.client.is_tls() && p.client.capabilities().starttls);
    }

    // ---- scripted servers ----------------------------------------------------

    /// A client fed canned replies.
    struct Script {
        c: ClientSession,
        t0: Instant,
        now: Instant,
        pending: Vec<u8>,
    }

    const EHLO_FULL: &str = "250-mx.test greets you\r\n250-PIPELINING\r\n250-SIZE 5000\r\n\
        250-8BITMIME\r\n250-SMTPUTF8\r\n250-DSN\r\n250 ENHANCEDSTATUSCODES\r\n";
    const EHLO_PLAIN: &str = "250-mx.test\r\n250 8BITMIME\r\n";

    impl Script {
        fn new(cfg: ClientConfig) -> Self {
            let t0 = Instant::now();
            Script {
                c: ClientSession::new(Rc::new(cfg), t0),
                t0,
                now: t0,
                pending: Vec::new(),
            }
        }

        /// Greeting and EHLO answered with `ehlo`; ready.
        fn ready(ehlo: &str) -> Self {
            let mut s = Script::new(client_config());
            s.feed("220 mx.test ESMTP\r\n");
            assert_eq!(s.sent(), "EHLO client.test\r\n");
            s.feed(ehlo);
            assert_eq!(s.events(), vec![ClientEvent::Ready]);
            s
        }

        fn feed(&mut self, input: &str) {
            self.feed_bytes(input.as_bytes());
        }

        /// As the glue does: keeps what was not consumed for the next call.
        fn feed_bytes(&mut self, input: &[u8]) {
            self.pending.extend_from_slice(input);
            let n = self.c.handle_input(&self.pending, self.now);
            assert!(n <= self.pending.len());
            self.pending.drain(..n);
        }

        fn sent(&mut self) -> String {
            let out = self
                .c
                .poll_output()
                .map(|o| String::from_utf8_lossy(o).into_owned())
                .unwrap_or_default();
            self.c.consume_output(out.len());
            out
        }

        fn events(&mut self) -> Vec<ClientEvent> {
            std::iter::from_fn(|| self.c.poll_event()).collect()
        }

        fn start(&mut self, rcpts: &[&str]) {
            let env = envelope("a@src.test", rcpts);
            let idx: Vec<usize> = (0..rcpts.len()).collect();
            self.c
                .start_transaction(&env, &idx, 100, false, false, self.now)
                .unwrap();
        }

        fn done(&mut self) -> Vec<RecipientResult> {
            match self.events().as_slice() {
                [ClientEvent::TransactionDone(r)] => r.clone(),
                other => panic!("{other:?}"),
            }
        }

        fn failed(
            &mut self,
        ) -> (
            Option<Vec<RecipientResult>>,
            ConnectionError,
            bool,
            Vec<usize>,
        ) {
            let mut events = self.events();
            let Some(ClientEvent::ConnectionFailed {
                error,
                transient,
                affected,
            }) = events.pop()
            else {
                panic!("{events:?}");
            };
            let done = match events.as_slice() {
                [] => None,
                [ClientEvent::TransactionDone(r)] => Some(r.clone()),
                other => panic!("{other:?}"),
            };
            assert!(self.c.is_closed());
            assert_eq!(self.c.deadline(), None);
            (done, error, transient, affected)
        }
    }

    #[test]
    fn helo_fallback_after_ehlo_refused() {
        for refusal in [
            "502 5.5.1 Command not implemented\r\n",
            "500 syntax error\r\n",
        ] {
            let mut s = Script::new(client_config());
            s.feed("220 old.test\r\n");
            assert_eq!(s.sent(), "EHLO client.test\r\n");
            s.feed(refusal);
            assert_eq!(s.sent(), "HELO client.test\r\n");
            assert!(s.events().is_empty());
            s.feed("250 old.test\r\n");
            assert_eq!(s.events(), vec![ClientEvent::Ready]);
            assert_eq!(*s.c.capabilities(), Capabilities::default());
            // No extensions: one command at a time, no parameters.
            s.start(&["b@x.test"]);
            assert_eq!(s.sent(), "MAIL FROM:<a@src.test>\r\n");
            s.feed("250 ok\r\n");
            assert_eq!(s.sent(), "RCPT TO:<b@x.test>\r\n");
            s.feed("250 ok\r\n");
            assert_eq!(s.sent(), "DATA\r\n");
            s.feed("354 go\r\n");
            assert_eq!(s.events(), vec![ClientEvent::SendBody]);
            s.c.handle_body_sent(s.now);
            s.feed("250 queued\r\n");
            assert_eq!(s.done()[0].outcome, Outcome::Delivered);
        }
        // HELO refused too: the connection fails, class decides transient.
        let mut s = Script::new(client_config());
        s.feed("220 old.test\r\n502 no EHLO\r\n");
        s.feed("550 go away\r\n");
        let (_, error, transient, _) = s.failed();
        assert!(matches!(error, ConnectionError::HeloRefused(_)) && !transient);
        assert_eq!(s.sent(), "EHLO client.test\r\nHELO client.test\r\nQUIT\r\n");
        // EHLO 4xx is not a reason to try HELO.
        let mut s = Script::new(client_config());
        s.feed("220 x\r\n450 busy\r\n");
        let (_, error, transient, _) = s.failed();
        assert!(matches!(error, ConnectionError::HeloRefused(_)) && transient);
    }

    #[test]
    fn refused_greetings_fail_the_connection() {
        let mut s = Script::new(client_config());
        s.feed("421 4.3.2 mx.test busy\r\n");
        let (done, error, transient, affected) = s.failed();
        assert!(done.is_none() && transient && affected.is_empty());
        let ConnectionError::ServiceClosing(reply) = &error else {
            panic!("{error:?}");
        };
        assert_eq!(reply.code, 421);
        assert_eq!(error.reply().text, "mx.test busy");
        assert_eq!(s.sent(), "", "no QUIT after 421");

        let mut s = Script::new(client_config());
        s.feed("450 4.7.1 try later\r\n");
        let (_, error, transient, _) = s.failed();
        assert!(matches!(error, ConnectionError::GreetingRefused(_)) && transient);
        assert_eq!(s.sent(), "QUIT\r\n");

        let mut s = Script::new(client_config());
        s.feed("554-no SMTP service here\r\n554 really\r\n");
        let (_, error, transient, _) = s.failed();
        assert!(!transient);
        assert_eq!(error.reply().text, "no SMTP service here really");
        assert_eq!(error.reply().outcome(), Outcome::PermanentFailure);
        // Anything more is swallowed.
        assert_eq!(s.c.handle_input(b"250 late\r\n", s.now), 10);
        assert!(s.events().is_empty());
    }

    #[test]
    fn multiline_replies_split_at_every_byte() {
        let whole = Script::ready(EHLO_FULL);
        let want = *whole.c.capabilities();
        assert_eq!(want.size, Some(5000));
        assert!(want.pipelining && want.dsn && want.enhanced_status_codes && !want.chunking);
        let input = format!("220-mx.test\r\n220 ESMTP\r\n{}", EHLO_FULL.to_lowercase());
        for cut in 0..=input.len() {
            let mut s = Script::new(client_config());
            s.feed_bytes(&input.as_bytes()[..cut]);
            s.feed_bytes(&input.as_bytes()[cut..]);
            assert_eq!(*s.c.capabilities(), want, "cut at {cut}");
            assert_eq!(s.events(), vec![ClientEvent::Ready]);
        }
        let mut s = Script::new(client_config());
        for b in input.bytes() {
            s.feed_bytes(&[b]);
        }
        assert_eq!(*s.c.capabilities(), want);
        assert!(s.pending.is_empty());
        // A multiline RCPT refusal, fed byte by byte, with bare LF endings.
        s.sent();
        s.events();
        s.start(&["b@x.test"]);
        for b in "250 2.1.0 ok\n550-5.1.1 no such\n550 5.1.1 user here\n554 5.5.1 no rcpt\n".bytes()
        {
            s.feed_bytes(&[b]);
        }
        let r = s.done();
        assert_eq!(r[0].reply.code, 550);
        assert_eq!(r[0].reply.enhanced, Some(EnhancedCode::new(5, 1, 1)));
        assert_eq!(r[0].reply.text, "no such user here");
        assert_eq!(r[0].reply.to_string(), "550 5.1.1 no such user here");
    }

    #[test]
    fn garbage_replies_fail_the_connection() {
        let long = format!("250 {}\r\n", "x".repeat(5000));
        let many = "250-x\r\n".repeat(200);
        let cases: Vec<(String, ReplyError)> = vec![
            ("hello\r\n".into(), ReplyError::BadCode),
            ("2500 x\r\n".into(), ReplyError::BadCode),
            ("199 x\r\n".into(), ReplyError::BadCode),
            ("600 x\r\n".into(), ReplyError::BadCode),
            ("260 x\r\n".into(), ReplyError::BadCode),
            ("\r\n".into(), ReplyError::BadCode),
            ("25\r\n".into(), ReplyError::BadCode),
            ("220-a\r\n250 b\r\n".into(), ReplyError::MixedCodes),
            (long, ReplyError::LineTooLong),
            ("x".repeat(5000), ReplyError::LineTooLong),
            (many, ReplyError::TooManyLines),
        ];
        for (input, want) in cases {
            let mut s = Script::new(client_config());
            s.feed(&input);
            let (_, error, transient, _) = s.failed();
            assert_eq!(error, ConnectionError::MalformedReply(want), "{input:?}");
            assert!(transient);
        }
        // A bare code is a valid one-line reply.
        let mut s = Script::new(client_config());
        s.feed("220\r\n");
        assert_eq!(s.sent(), "EHLO client.test\r\n");
        // Mid-transaction garbage: open recipients are transient.
        let mut s = Script::ready(EHLO_FULL);
        s.start(&["b@x.test", "c@x.test"]);
        s.feed("250 ok\r\n550 no\r\n\x00\x01garbage\r\n");
        let (done, _, _, affected) = s.failed();
        assert_eq!(
            outcomes(&done.unwrap()),
            vec![
                (0, Outcome::PermanentFailure, 550),
                (1, Outcome::TransientFailure, 451)
            ]
        );
        assert_eq!(affected, vec![1]);
    }

    #[test]
    fn random_input_never_panics() {
        let mut rng = StdRng::seed_from_u64(3461);
        let pieces = [
            "220 x\r\n",
            "250 ok\r\n",
            "250-PIPELINING\r\n",
            "354 go\r\n",
            "421 bye\r\n",
            "550 no\r\n",
            "451 later\r\n",
            "250-STARTTLS\r\n",
            "220 go tls\r\n",
            "\r\n",
            "2",
            "-",
            " ",
            "\n",
            "\u{7f}\u{0}",
            "é",
        ];
        for _ in 0..3000 {
            let mut s = Script::new(client_config());
            for _ in 0..rng.gen_range(1..30) {
                match rng.gen_range(0..10) {
                    0 => {
                        let env = envelope("a@b", &["c@d", "e@f"]);
                        let _ =
                            s.c.start_transaction(&env, &[0, 1], 10, false, false, s.now);
                    }
                    1 => s.c.handle_body_sent(s.now),
                    2 => s.c.handle_tls_established(s.now),
                    3 => {
                        s.now += Duration::from_secs(rng.gen_range(0..1000));
                        s.c.handle_timeout(s.now);
                    }
                    4 if rng.gen_bool(0.1) => s.c.quit(s.now),
                    _ => {
                        let p = pieces[rng.gen_range(0..pieces.len())];
                        s.feed(p);
                    }
                }
                s.sent();
                let mut started = 0;
                for e in s.events() {
                    if let ClientEvent::TransactionDone(r) = e {
                        assert_eq!(r.len(), 2);
                        started += 1;
                    }
                }
                assert!(started <= 1);
            }
        }
    }

    /// Timeouts at each step: nothing before the deadline, a transient
    /// connection failure at it (and the right step named).
    #[test]
    fn timeouts_at_each_step() {
        let t = ClientTimeouts::default();
        let check = |s: &mut Script, wait: Duration, step: Step| {
            let deadline = s.c.deadline().unwrap();
            assert_eq!(deadline, s.now + wait, "{step}");
            s.c.handle_timeout(deadline - Duration::from_millis(1));
            assert!(s.events().is_empty(), "{step}");
            s.c.handle_timeout(deadline);
            let (done, error, transient, affected) = s.failed();
            assert_eq!(error, ConnectionError::Timeout(step));
            assert!(transient);
            (done, affected)
        };
        let mut s = Script::new(client_config());
        check(&mut s, t.greeting, Step::Greeting);
        let mut s = Script::new(client_config());
        s.feed("220 x\r\n");
        check(&mut s, t.helo, Step::Ehlo);
        let mut s = Script::new(client_config());
        s.feed("220 x\r\n500 what\r\n");
        check(&mut s, t.helo, Step::Helo);
        let mut s = Script::new(client_config());
        s.feed("220 x\r\n250-x\r\n250 STARTTLS\r\n");
        check(&mut s, t.starttls, Step::StartTls);
        s = Script::new(client_config());
        s.feed("220 x\r\n250-x\r\n250 STARTTLS\r\n220 go\r\n");
        assert_eq!(s.events(), vec![ClientEvent::StartTls]);
        check(&mut s, t.tls_handshake, Step::TlsHandshake);

        let mut s = Script::ready(EHLO_FULL);
        s.start(&["b@x.test"]);
        let (done, affected) = check(&mut s, t.mail, Step::Mail);
        assert_eq!(
            outcomes(&done.unwrap()),
            vec![(0, Outcome::TransientFailure, 451)]
        );
        assert_eq!(affected, vec![0]);

        let mut s = Script::ready(EHLO_FULL);
        s.start(&["b@x.test"]);
        s.feed("250 ok\r\n");
        check(&mut s, t.rcpt, Step::Rcpt);

        let mut s = Script::ready(EHLO_FULL);
        s.start(&["b@x.test"]);
        s.feed("250 ok\r\n250 ok\r\n");
        check(&mut s, t.data_init, Step::Data);

        let mut s = Script::ready(EHLO_FULL);
        s.start(&["b@x.test"]);
        s.feed("250 ok\r\n250 ok\r\n354 go\r\n");
        assert_eq!(s.events(), vec![ClientEvent::SendBody]);
        s.now += Duration::from_secs(100);
        s.c.handle_body_progress(s.now);
        check(&mut s, t.data_block, Step::Body);

        let mut s = Script::ready(EHLO_FULL);
        s.start(&["b@x.test", "c@x.test"]);
        s.feed("250 ok\r\n250 ok\r\n452 full\r\n354 go\r\n");
        s.events();
        s.c.handle_body_sent(s.now);
        let (done, affected) = check(&mut s, t.data_term, Step::DataEnd);
        assert_eq!(
            outcomes(&done.unwrap()),
            vec![
                (0, Outcome::TransientFailure, 451),
                (1, Outcome::TransientFailure, 452)
            ]
        );
        assert_eq!(affected, vec![0]);

        // Idle: a clean QUIT, then an unanswered QUIT just closes.
        let mut s = Script::ready(EHLO_FULL);
        assert_eq!(s.c.deadline(), Some(s.t0 + t.idle));
        s.c.handle_timeout(s.t0 + t.idle);
        assert_eq!(s.sent(), "QUIT\r\n");
        s.now = s.t0 + t.idle;
        s.c.handle_timeout(s.now + t.quit);
        assert_eq!(s.events(), vec![ClientEvent::Closed]);
        assert_eq!(s.c.deadline(), None);
    }

    #[test]
    fn starttls_opportunistic() {
        // Offered: used; plaintext bytes after the 220 are dropped.
        let mut s = Script::new(client_config());
        s.feed("220 x\r\n250-x\r\n250 STARTTLS\r\n");
        assert_eq!(s.sent(), "EHLO client.test\r\nSTARTTLS\r\n");
        let input = b"220 2.0.0 go\r\n250-injected\r\n250 PIPELINING\r\n";
        assert_eq!(s.c.handle_input(input, s.now), input.len());
        assert_eq!(s.events(), vec![ClientEvent::StartTls]);
        assert_eq!(
            s.c.handle_input(b"250 x\r\n", s.now),
            0,
            "nothing read during the handshake"
        );
        s.c.handle_tls_established(s.now);
        assert_eq!(s.sent(), "EHLO client.test\r\n");
        s.feed(EHLO_FULL);
        assert_eq!(s.events(), vec![ClientEvent::Ready]);
        assert!(s.c.is_tls() && s.c.capabilities().pipelining);
        // Not offered: plaintext. Refused: plaintext.
        let mut s = Script::new(client_config());
        s.feed("220 x\r\n250 x\r\n");
        assert_eq!(s.events(), vec![ClientEvent::Ready]);
        assert!(!s.c.is_tls());
        let mut s = Script::new(client_config());
        s.feed("220 x\r\n250-x\r\n250 STARTTLS\r\n454 4.7.0 TLS not available\r\n");
        assert_eq!(s.events(), vec![ClientEvent::Ready]);
        assert!(!s.c.is_tls());
        // Handshake failure.
        let mut s = Script::new(client_config());
        s.feed("220 x\r\n250-x\r\n250 STARTTLS\r\n220 go\r\n");
        s.events();
        s.c.handle_tls_failed(s.now);
        assert_eq!(s.failed().1, ConnectionError::TlsFailed);
    }

    #[test]
    fn starttls_required() {
        let required = ClientConfig {
            starttls: StartTlsPolicy::Required,
            ..client_config()
        };
        let mut s = Script::new(required.clone());
        s.feed("220 x\r\n250-x\r\n250 PIPELINING\r\n");
        let (_, error, transient, _) = s.failed();
        assert_eq!(error, ConnectionError::TlsNotOffered);
        assert!(transient);
        assert_eq!(error.reply().enhanced, Some(EnhancedCode::new(4, 7, 4)));
        assert_eq!(s.sent(), "EHLO client.test\r\nQUIT\r\n");

        let mut s = Script::new(required.clone());
        s.feed("220 x\r\n250-x\r\n250 STARTTLS\r\n454 4.7.0 no\r\n");
        let (_, error, transient, _) = s.failed();
        assert!(matches!(error, ConnectionError::StartTlsRefused(_)) && transient);

        let mut s = Script::new(required);
        s.feed("220 x\r\n250-x\r\n250 STARTTLS\r\n220 go\r\n");
        assert_eq!(s.events(), vec![ClientEvent::StartTls]);
        s.c.handle_tls_established(s.now);
        s.feed("250-x\r\n250 PIPELINING\r\n");
        assert_eq!(s.events(), vec![ClientEvent::Ready]);
        assert!(s.c.is_tls());
        assert_eq!(
            s.sent(),
            "EHLO client.test\r\nSTARTTLS\r\nEHLO client.test\r\n"
        );
    }

    #[test]
    fn connection_reuse_for_three_messages() {
        let mut s = Script::ready(EHLO_FULL);
        for i in 0..3 {
            s.start(&["b@x.test"]);
            assert_eq!(
                s.sent(),
                "MAIL FROM:<a@src.test> SIZE=100\r\nRCPT TO:<b@x.test>\r\nDATA\r\n",
                "message {i}"
            );
            s.feed("250 2.1.0 ok\r\n250 2.1.5 ok\r\n354 go\r\n");
            assert_eq!(s.events(), vec![ClientEvent::SendBody]);
            s.c.handle_body_sent(s.now);
            s.feed(&format!("250 2.0.0 queued as Q{i}\r\n"));
            let r = s.done();
            assert_eq!(r[0].reply.text, format!("queued as Q{i}"));
            assert!(s.c.is_ready());
        }
        let env = envelope("a@src.test", &["b@x.test"]);
        assert_eq!(
            s.c.start_transaction(&env, &[0], 1, false, false, s.now),
            Err(TransactionRefused::ConnectionSpent)
        );
        s.c.quit(s.now);
        assert_eq!(s.sent(), "QUIT\r\n");
        s.feed("221 2.0.0 bye\r\n");
        assert_eq!(s.events(), vec![ClientEvent::Closed]);
    }

    /// RFC 2920 3.1: every RCPT refused, yet DATA got 354: a lone "."
    #[test]
    fn all_recipients_refused_but_data_accepted() {
        let mut s = Script::ready(EHLO_FULL);
        s.start(&["b@x.test", "c@x.test"]);
        s.sent();
        s.feed("250 ok\r\n550 5.1.1 no\r\n450 4.2.0 later\r\n354 go\r\n");
        assert!(s.events().is_empty(), "no SendBody");
        assert_eq!(s.sent(), ".\r\n");
        s.feed("554 5.5.1 no valid recipients\r\n");
        assert_eq!(
            outcomes(&s.done()),
            vec![
                (0, Outcome::PermanentFailure, 550),
                (1, Outcome::TransientFailure, 450)
            ]
        );
        // The transaction ended with the dot: no RSET before the next.
        s.start(&["b@x.test"]);
        assert!(s.sent().starts_with("MAIL FROM:"));
    }

    #[test]
    fn all_recipients_refused_and_data_refused_then_rset() {
        let mut s = Script::ready(EHLO_FULL);
        s.start(&["b@x.test"]);
        s.sent();
        s.feed("250 ok\r\n550 no\r\n554 no valid recipients\r\n");
        assert_eq!(
            outcomes(&s.done()),
            vec![(0, Outcome::PermanentFailure, 550)]
        );
        s.start(&["b@x.test"]);
        assert!(s.sent().starts_with("RSET\r\nMAIL FROM:"));
        s.feed("250 ok\r\n250 ok\r\n250 ok\r\n354 go\r\n");
        assert_eq!(s.events(), vec![ClientEvent::SendBody]);
        s.c.handle_body_sent(s.now);
        s.feed("250 queued\r\n");
        assert_eq!(s.done()[0].outcome, Outcome::Delivered);
        s.start(&["b@x.test"]);
        assert!(s.sent().starts_with("MAIL FROM:"), "RSET done, none again");

        // Without PIPELINING: no DATA at all, RSET first next time.
        let mut s = Script::ready(EHLO_PLAIN);
        s.start(&["b@x.test"]);
        assert_eq!(s.sent(), "MAIL FROM:<a@src.test>\r\n");
        s.feed("250 ok\r\n");
        assert_eq!(s.sent(), "RCPT TO:<b@x.test>\r\n");
        s.feed("550 no\r\n");
        assert_eq!(s.sent(), "");
        assert_eq!(
            outcomes(&s.done()),
            vec![(0, Outcome::PermanentFailure, 550)]
        );
        s.start(&["b@x.test"]);
        assert_eq!(s.sent(), "RSET\r\n");
        s.feed("250 ok\r\n");
        assert!(s.sent().starts_with("MAIL FROM:"));
    }

    #[test]
    fn mail_refused_decides_every_recipient() {
        let mut s = Script::ready(EHLO_PLAIN);
        s.start(&["b@x.test", "c@x.test"]);
        s.sent();
        s.feed("452 4.3.1 full\r\n");
        assert_eq!(s.sent(), "", "no RCPT after a refused MAIL");
        let r = s.done();
        assert_eq!(
            outcomes(&r),
            vec![
                (0, Outcome::TransientFailure, 452),
                (1, Outcome::TransientFailure, 452)
            ]
        );
        // Pipelined: the 503s that follow change nothing.
        let mut s = Script::ready(EHLO_FULL);
        s.start(&["b@x.test"]);
        s.feed("553 5.1.8 bad sender\r\n503 5.5.1 need MAIL\r\n503 5.5.1 need MAIL\r\n");
        assert_eq!(
            outcomes(&s.done()),
            vec![(0, Outcome::PermanentFailure, 553)]
        );
        s.start(&["b@x.test"]);
        assert!(s
            .sent()
            .ends_with("MAIL FROM:<a@src.test> SIZE=100\r\nRCPT TO:<b@x.test>\r\nDATA\r\n"));
    }

    #[test]
    fn service_closing_mid_transaction() {
        let mut s = Script::ready(EHLO_FULL);
        s.start(&["b@x.test", "c@x.test", "d@x.test"]);
        s.feed("250 ok\r\n550 5.1.1 no\r\n250 ok\r\n421 4.3.2 shutting down\r\n");
        let (done, error, transient, affected) = s.failed();
        assert!(matches!(error, ConnectionError::ServiceClosing(_)) && transient);
        assert_eq!(
            outcomes(&done.unwrap()),
            vec![
                (0, Outcome::PermanentFailure, 550),
                (1, Outcome::TransientFailure, 421),
                (2, Outcome::TransientFailure, 421),
            ]
        );
        assert_eq!(affected, vec![1, 2]);
    }

    #[test]
    fn data_end_failures_and_lost_connections() {
        let mut s = Script::ready(EHLO_FULL);
        s.start(&["b@x.test"]);
        s.feed("250 ok\r\n250 ok\r\n354 go\r\n");
        s.events();
        s.c.handle_eof(s.now);
        let (done, error, _, _) = s.failed();
        assert_eq!(error, ConnectionError::ConnectionLost(Step::Body));
        assert_eq!(
            done.unwrap()[0].reply.enhanced,
            Some(EnhancedCode::new(4, 4, 2))
        );

        let mut s = Script::ready(EHLO_FULL);
        s.start(&["b@x.test"]);
        s.feed("250 ok\r\n250 ok\r\n354 go\r\n");
        s.events();
        s.c.handle_body_sent(s.now);
        s.feed("552 5.3.4 too big\r\n");
        assert_eq!(
            outcomes(&s.done()),
            vec![(0, Outcome::PermanentFailure, 552)]
        );

        // A reply nobody asked for.
        let mut s = Script::ready(EHLO_FULL);
        s.feed("250 surprise\r\n");
        assert!(matches!(s.failed().1, ConnectionError::UnexpectedReply(_)));
        // Quit mid-transaction aborts it.
        let mut s = Script::ready(EHLO_FULL);
        s.start(&["b@x.test"]);
        s.c.quit(s.now);
        let ev = s.events();
        assert!(
            matches!(&ev[..], [ClientEvent::TransactionDone(r), ClientEvent::Closed]
            if r[0].outcome == Outcome::TransientFailure)
        );
    }

    #[test]
    fn refusals_before_sending() {
        let mut s = Script::new(client_config());
        let env = envelope("a@src.test", &["b@x.test"]);
        assert_eq!(
            s.c.start_transaction(&env, &[0], 1, false, false, s.now),
            Err(TransactionRefused::NotReady)
        );
        let mut s = Script::ready(EHLO_FULL);
        assert_eq!(
            s.c.start_transaction(&env, &[3], 1, false, false, s.now),
            Err(TransactionRefused::NoSuchRecipient(3))
        );
        assert_eq!(
            s.c.start_transaction(&env, &[], 1, false, false, s.now),
            Err(TransactionRefused::NoRecipients)
        );
        let bad = envelope("a@src.test", &["b@x.test>\r\nRCPT TO:<evil@x.test"]);
        let err =
            s.c.start_transaction(&bad, &[0], 1, false, false, s.now)
                .unwrap_err();
        assert!(matches!(err, TransactionRefused::UnsafeEnvelope(_)) && err.is_permanent());
        let mut bad = envelope("a@src.test", &["b@x.test"]);
        bad.envid = Some("x y".to_owned());
        assert!(s
            .c
            .start_transaction(&bad, &[0], 1, false, false, s.now)
            .is_err());
        assert_eq!(s.sent(), "");
        assert!(s.c.is_ready());
    }
}
