//! The sans-IO session of `spate sink` for one connection: commands in,
//! replies (each with the delay to wait before it) and events out. It
//! takes any sender and recipient, finds the end of the content without
//! copying it (unless the messages are kept), and fails or delays what the
//! fault plan says. It refuses to relay, store durably, check addresses
//! or keep time: the glue sleeps, writes and stores.

use std::collections::VecDeque;
use std::net::IpAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use memchr::memchr;

use super::counters::Counters;
use super::fault::{FaultPlan, Injector, Stage};
use crate::smtp::address::ForwardPath;
use crate::smtp::parser::{parse_command, Command, ParseError};

/// Protocol errors before the session is closed.
const MAX_ERRORS: u32 = 50;
/// Distinct domains counted by name (`--count-domains`); more are
/// counted together under [`OTHER_DOMAINS`], so a client cannot grow the
/// map without bound.
pub const MAX_COUNTED_DOMAINS: usize = 100_000;
pub const OTHER_DOMAINS: &str = "(other)";

/// The sink's settings, shared by every session of a core.
#[derive(Debug, Clone)]
pub struct SinkConfig {
    pub hostname: String,
    /// STARTTLS is offered (a certificate was given).
    pub starttls: bool,
    /// Keep each accepted message's envelope and content (`--dir`).
    pub keep_messages: bool,
    pub count_domains: bool,
    /// Longest command line, CRLF included.
    pub max_line: usize,
    pub max_recipients: u32,
    /// Advertised with SIZE and enforced; 0 = no limit.
    pub max_message_size: u64,
    pub plan: FaultPlan,
}

impl Default for SinkConfig {
    fn default() -> Self {
        SinkConfig {
            hostname: "sink.invalid".into(),
            starttls: false,
            keep_messages: false,
            count_domains: false,
            max_line: 4096,
            max_recipients: 10_000,
            max_message_size: 0,
            plan: FaultPlan::default(),
        }
    }
}

/// How many messages may still be accepted (`--stop-after`), all cores together.
#[derive(Debug)]
pub struct Quota {
    limit: u64,
    taken: AtomicU64,
}

impl Quota {
    /// `limit` 0: no limit.
    pub fn new(limit: u64) -> Self {
        Quota {
            limit,
            taken: AtomicU64::new(0),
        }
    }

    /// Takes one message slot; false once the limit is reached.
    pub fn take(&self) -> bool {
        if self.limit == 0 {
            return true;
        }
        self.taken
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.limit).then_some(n + 1)
            })
            .is_ok()
    }

    pub fn exhausted(&self) -> bool {
        self.limit > 0 && self.taken.load(Ordering::Acquire) >= self.limit
    }
}

/// What the session needs from its core for each call.
pub struct CoreState<'a> {
    pub injector: &'a mut Injector,
    pub counters: &'a mut Counters,
    pub quota: &'a Quota,
}

/// A message to write out (`--dir`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeptMessage {
    /// The client's address and the name its last EHLO or HELO gave.
    pub peer: String,
    pub helo: String,
    pub from: String,
    pub recipients: Vec<String>,
    /// The content as received: dot-stuffing undone, CRLF line endings.
    pub content: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SinkEvent {
    /// Write the output, then do the TLS handshake as the server and call
    /// `handle_tls_established`.
    StartTls,
    /// Store this message (before writing the output, which holds its 250).
    Keep(KeptMessage),
    /// Write the output, then close.
    Close,
}

/// Reply texts, one table.
mod text {
    pub const MAIL_OK: &[u8] = b"250 2.1.0 Ok\r\n";
    pub const RCPT_OK: &[u8] = b"250 2.1.5 Ok\r\n";
    pub const OK: &[u8] = b"250 2.0.0 Ok\r\n";
    pub const GO_AHEAD: &[u8] = b"354 End data with <CR><LF>.<CR><LF>\r\n";
    pub const QUEUED: &[u8] = b"250 2.0.0 Ok: queued\r\n";
    pub const CHUNK_OK: &[u8] = b"250 2.0.0 Ok: chunk received\r\n";
    pub const BYE: &[u8] = b"221 2.0.0 Bye\r\n";
    pub const BAD_SEQUENCE: &[u8] = b"503 5.5.1 Bad sequence of commands\r\n";
    pub const NO_RECIPIENTS: &[u8] = b"554 5.5.1 No valid recipients\r\n";
    pub const UNKNOWN: &[u8] = b"500 5.5.2 Command not recognized\r\n";
    pub const SYNTAX: &[u8] = b"501 5.5.4 Syntax error\r\n";
    pub const LINE_TOO_LONG: &[u8] = b"500 5.5.2 Line too long\r\n";
    pub const TOO_MANY_RECIPIENTS: &[u8] = b"452 4.5.3 Too many recipients\r\n";
    pub const TOO_BIG: &[u8] = b"552 5.3.4 Message too big\r\n";
    pub const READY_FOR_TLS: &[u8] = b"220 2.0.0 Ready to start TLS\r\n";
    pub const NO_TLS: &[u8] = b"454 4.7.0 TLS not available\r\n";
    pub const AUTH_OK: &[u8] = b"235 2.7.0 Authentication successful\r\n";
    pub const AUTH_CONTINUE: &[u8] = b"334 \r\n";
    pub const AUTH_MECHANISM: &[u8] = b"504 5.5.4 Unrecognized authentication type\r\n";
    pub const VRFY: &[u8] = b"252 2.0.0 Cannot VRFY user\r\n";
    pub const HELP: &[u8] = b"214 2.0.0 spate sink: it accepts and discards\r\n";
    pub const NOT_IMPLEMENTED: &[u8] = b"502 5.5.1 Command not implemented\r\n";
    pub const TOO_MANY_ERRORS: &[u8] = b"421 4.7.0 Too many errors\r\n";
    pub const LIMIT_REACHED: &[u8] = b"421 4.3.2 Message limit reached, sink stopping\r\n";
    /// Before any session: over `--max-per-ip`.
    pub const TOO_MANY_CONNECTIONS: &[u8] = b"421 4.7.0 Too many connections from your address\r\n";
}

pub use text::TOO_MANY_CONNECTIONS;

/// Finds "CRLF.CRLF" across reads (a KMP automaton for the carried
/// partial match, memmem for the rest). The CRLF before DATA's content
/// counts, so an empty message is just ".CRLF".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct EndOfData {
    matched: usize,
}

const TERMINATOR: &[u8; 5] = b"\r\n.\r\n";

impl EndOfData {
    fn new() -> Self {
        EndOfData { matched: 2 }
    }

    fn step(mut state: usize, byte: u8) -> usize {
        // Longest proper border of each prefix of the terminator.
        const FAIL: [usize; 5] = [0, 0, 0, 0, 1];
        loop {
            if byte == TERMINATOR[state] {
                return state + 1;
            }
            if state == 0 {
                return 0;
            }
            state = FAIL[state];
        }
    }

    /// The end of the terminator in `input`, if it is there.
    fn feed(&mut self, input: &[u8]) -> Option<usize> {
        let mut i = 0;
        while self.matched > 0 && i < input.len() {
            self.matched = Self::step(self.matched, input[i]);
            i += 1;
            if self.matched == TERMINATOR.len() {
                return Some(i);
            }
        }
        if let Some(k) = memchr::memmem::find(&input[i..], TERMINATOR) {
            return Some(i + k + TERMINATOR.len());
        }
        let mut state = 0;
        for &b in &input[input.len().saturating_sub(4).max(i)..] {
            state = Self::step(state, b);
        }
        self.matched = state;
        None
    }
}

/// Undoes dot-stuffing: a line starting with "." loses that dot.
fn unstuff(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len());
    let mut rest = raw;
    if rest.first() == Some(&b'.') {
        rest = &rest[1..];
    }
    while let Some(k) = memchr::memmem::find(rest, b"\n.") {
        out.extend_from_slice(&rest[..k + 1]);
        rest = &rest[k + 2..];
    }
    out.extend_from_slice(rest);
    out
}

/// The transaction after MAIL.
#[derive(Debug, Default)]
struct Transaction {
    recipients: u32,
    size: u64,
    chunks: u32,
    domains: Vec<String>,
    from: String,
    kept_recipients: Vec<String>,
    content: Vec<u8>,
}

#[derive(Debug)]
enum State {
    Command,
    Data(EndOfData),
    /// Reading a BDAT chunk; `answer` is the refusal to give after it,
    /// `None` to accept it.
    Chunk {
        remaining: u64,
        last: bool,
        answer: Option<Answer>,
    },
    /// AUTH PLAIN without an initial response: the next line is it.
    AuthResponse,
    /// STARTTLS answered: the glue is doing the handshake.
    Handshake,
    Closed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    Text(&'static [u8]),
    /// A fault rule of the plan, by index.
    Fault(usize),
}

/// One connection of the sink, sans-IO.
#[derive(Debug)]
pub struct SinkSession {
    config: Rc<SinkConfig>,
    /// The client's address as counted (`Counters::sources`).
    peer: String,
    /// The name of the last EHLO or HELO.
    helo: String,
    state: State,
    greeted: bool,
    tls: bool,
    tx: Option<Transaction>,
    errors: u32,
    output: Vec<u8>,
    /// (offset in `output`, wait) pairs: wait before writing from offset.
    delays: Vec<(usize, Duration)>,
    events: VecDeque<SinkEvent>,
}

impl SinkSession {
    /// A connection from `peer` was accepted: the greeting (or an
    /// injected refusal) is in the output.
    pub fn new(config: Rc<SinkConfig>, peer: Option<IpAddr>, core: &mut CoreState<'_>) -> Self {
        let peer = peer.map_or_else(|| "(unknown)".to_owned(), |ip| ip.to_string());
        core.counters.source(&peer).connections += 1;
        let mut session = SinkSession {
            config,
            peer,
            helo: String::new(),
            state: State::Command,
            greeted: false,
            tls: false,
            tx: None,
            errors: 0,
            output: Vec::with_capacity(512),
            delays: Vec::new(),
            events: VecDeque::new(),
        };
        core.counters.connections += 1;
        match core.injector.decide(Stage::Connect) {
            Some(rule) => {
                session.fault(rule, core);
                session.close();
            }
            None => {
                let greeting = format!("220 {} ESMTP spate sink\r\n", session.config.hostname);
                session.reply(Some(Stage::Connect), greeting.as_bytes());
            }
        }
        session
    }

    /// The bytes to write and, for each delayed part, its offset and wait.
    pub fn output(&self) -> (&[u8], &[(usize, Duration)]) {
        (&self.output, &self.delays)
    }

    /// Everything in `output` was written.
    pub fn clear_output(&mut self) {
        self.output.clear();
        self.delays.clear();
    }

    pub fn poll_event(&mut self) -> Option<SinkEvent> {
        self.events.pop_front()
    }

    pub fn is_closed(&self) -> bool {
        matches!(self.state, State::Closed)
    }

    /// The TLS handshake after STARTTLS succeeded: a fresh start (RFC 3207 4.2).
    pub fn handle_tls_established(&mut self, core: &mut CoreState<'_>) {
        if matches!(self.state, State::Handshake) {
            self.state = State::Command;
            self.tls = true;
            self.greeted = false;
            self.tx = None;
            core.counters.tls += 1;
        }
    }

    fn reply(&mut self, stage: Option<Stage>, text: &[u8]) {
        let wait = self.config.plan.delay(stage);
        if !wait.is_zero() {
            self.delays.push((self.output.len(), wait));
        }
        self.output.extend_from_slice(text);
    }

    /// Answers with the plan's fault rule `rule` (an index).
    fn fault(&mut self, rule: usize, core: &mut CoreState<'_>) {
        let Some(fault) = self.config.plan.faults.get(rule) else {
            return;
        };
        let (stage, code, text) = (fault.stage, fault.code, fault.reply());
        core.counters.record_fault(stage, code);
        self.reply(Some(stage), text.as_bytes());
        if code == 421 {
            self.close();
        }
    }

    fn answer(&mut self, answer: Answer, core: &mut CoreState<'_>) {
        match answer {
            Answer::Text(text) => self.reply(None, text),
            Answer::Fault(rule) => self.fault(rule, core),
        }
    }

    fn close(&mut self) {
        if !matches!(self.state, State::Closed) {
            self.state = State::Closed;
            self.events.push_back(SinkEvent::Close);
        }
    }

    /// A command the sink cannot parse. Out-of-sequence commands are not
    /// errors here: a pipelining client sends RCPT after a MAIL we failed
    /// on purpose, and must not be disconnected for it.
    fn protocol_error(&mut self, text: &'static [u8], core: &mut CoreState<'_>) {
        core.counters.protocol_errors += 1;
        self.errors += 1;
        if self.errors >= MAX_ERRORS {
            self.reply(None, text::TOO_MANY_ERRORS);
            self.close();
        } else {
            self.reply(None, text);
        }
    }

    /// Feeds received bytes; returns how many were consumed (an incomplete
    /// command line stays with the glue).
    pub fn handle_input(&mut self, input: &[u8], core: &mut CoreState<'_>) -> usize {
        let mut pos = 0;
        loop {
            let rest = &input[pos..];
            match &mut self.state {
                State::Closed | State::Handshake => return input.len(),
                State::Data(end) => {
                    let found = end.feed(rest);
                    let used = found.unwrap_or(rest.len());
                    if let Some(tx) = self.tx.as_mut() {
                        tx.size += used as u64;
                        if self.config.keep_messages {
                            tx.content.extend_from_slice(&rest[..used]);
                        }
                    }
                    pos += used;
                    if found.is_none() {
                        return pos;
                    }
                    self.state = State::Command;
                    if let Some(tx) = self.tx.as_mut() {
                        // The terminator is not content ("." and CRLF; the
                        // CRLF before it is).
                        tx.size = tx.size.saturating_sub(3);
                        let keep = tx.content.len().saturating_sub(3);
                        tx.content.truncate(keep);
                    }
                    self.end_of_message(core);
                }
                State::Chunk {
                    remaining,
                    last,
                    answer,
                } => {
                    let used = (*remaining).min(rest.len() as u64) as usize;
                    *remaining -= used as u64;
                    let (done, last, answer) = (*remaining == 0, *last, *answer);
                    if answer.is_none() {
                        if let Some(tx) = self.tx.as_mut() {
                            tx.size += used as u64;
                            if self.config.keep_messages {
                                tx.content.extend_from_slice(&rest[..used]);
                            }
                        }
                    }
                    pos += used;
                    if !done {
                        return pos;
                    }
                    self.state = State::Command;
                    self.end_of_chunk(last, answer, core);
                }
                State::Command | State::AuthResponse => {
                    if rest.is_empty() {
                        return pos;
                    }
                    let max = self.config.max_line;
                    let Some(k) = memchr(b'\n', &rest[..rest.len().min(max)]) else {
                        if rest.len() >= max {
                            self.protocol_error(text::LINE_TOO_LONG, core);
                            self.close();
                            return input.len();
                        }
                        return pos;
                    };
                    pos += k + 1;
                    let line = &rest[..k];
                    let line = line.strip_suffix(b"\r").unwrap_or(line);
                    if matches!(self.state, State::AuthResponse) {
                        self.state = State::Command;
                        self.reply(None, text::AUTH_OK);
                    } else {
                        self.handle_command(line, core);
                    }
                }
            }
        }
    }

    fn handle_command(&mut self, line: &[u8], core: &mut CoreState<'_>) {
        let command = match parse_command(line) {
            Ok(command) => command,
            Err(ParseError::UnknownCommand) => {
                return self.protocol_error(text::UNKNOWN, core);
            }
            Err(_) => return self.protocol_error(text::SYNTAX, core),
        };
        match command {
            // The sink speaks SMTP only.
            Command::Lhlo(_) => self.protocol_error(text::UNKNOWN, core),
            Command::Ehlo(name) | Command::Helo(name) => {
                self.helo = name.to_owned();
                core.counters.source(&self.peer).record_helo(name);
                if let Some(rule) = core.injector.decide(Stage::Helo) {
                    return self.fault(rule, core);
                }
                self.greeted = true;
                self.tx = None;
                let hostname = &self.config.hostname;
                let text = if matches!(command, Command::Helo(_)) {
                    format!("250 {hostname}\r\n")
                } else {
                    let mut t = format!("250-{hostname}\r\n250-PIPELINING\r\n");
                    if self.config.max_message_size > 0 {
                        t.push_str(&format!("250-SIZE {}\r\n", self.config.max_message_size));
                    } else {
                        t.push_str("250-SIZE\r\n");
                    }
                    if self.config.starttls && !self.tls {
                        t.push_str("250-STARTTLS\r\n");
                    }
                    t.push_str("250-AUTH PLAIN\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n250-CHUNKING\r\n250 ENHANCEDSTATUSCODES\r\n");
                    t
                };
                self.reply(Some(Stage::Helo), text.as_bytes());
            }
            Command::Mail { from, .. } => {
                if !self.greeted || self.tx.is_some() {
                    return self.reply(None, text::BAD_SEQUENCE);
                }
                if let Some(rule) = core.injector.decide(Stage::Mail) {
                    return self.fault(rule, core);
                }
                let mut tx = Transaction::default();
                if self.config.keep_messages {
                    if let crate::smtp::address::ReversePath::Mailbox(m) = from {
                        tx.from = m.address.to_owned();
                    }
                }
                self.tx = Some(tx);
                self.reply(Some(Stage::Mail), text::MAIL_OK);
            }
            Command::Rcpt { to, .. } => {
                let Some(tx) = self.tx.as_ref() else {
                    return self.reply(None, text::BAD_SEQUENCE);
                };
                if tx.recipients >= self.config.max_recipients {
                    return self.reply(Some(Stage::Rcpt), text::TOO_MANY_RECIPIENTS);
                }
                if let Some(rule) = core.injector.decide(Stage::Rcpt) {
                    return self.fault(rule, core);
                }
                let (address, domain) = match to {
                    ForwardPath::Mailbox(m) => (m.address, m.domain.as_str()),
                    ForwardPath::Postmaster(address) => (address, ""),
                };
                let (count_domains, keep) = (self.config.count_domains, self.config.keep_messages);
                if let Some(tx) = self.tx.as_mut() {
                    tx.recipients += 1;
                    if count_domains {
                        tx.domains.push(domain.to_ascii_lowercase());
                    }
                    if keep {
                        tx.kept_recipients.push(address.to_owned());
                    }
                }
                self.reply(Some(Stage::Rcpt), text::RCPT_OK);
            }
            Command::Data => match self.tx.as_ref().map(|tx| tx.recipients) {
                None => self.reply(None, text::BAD_SEQUENCE),
                Some(0) => self.reply(Some(Stage::Data), text::NO_RECIPIENTS),
                Some(_) => {
                    if let Some(rule) = core.injector.decide(Stage::Data) {
                        self.tx = None;
                        return self.fault(rule, core);
                    }
                    self.state = State::Data(EndOfData::new());
                    self.reply(Some(Stage::Data), text::GO_AHEAD);
                }
            },
            Command::Bdat { size, last } => {
                let answer = match self.tx.as_ref() {
                    None => Some(Answer::Text(text::BAD_SEQUENCE)),
                    Some(tx) if tx.recipients == 0 => Some(Answer::Text(text::NO_RECIPIENTS)),
                    Some(tx)
                        if self.config.max_message_size > 0
                            && tx.size.saturating_add(size) > self.config.max_message_size =>
                    {
                        Some(Answer::Text(text::TOO_BIG))
                    }
                    Some(tx) if tx.chunks == 0 => {
                        core.injector.decide(Stage::Data).map(Answer::Fault)
                    }
                    Some(_) => None,
                };
                if let Some(tx) = self.tx.as_mut() {
                    tx.chunks += 1;
                }
                self.state = State::Chunk {
                    remaining: size,
                    last,
                    answer,
                };
            }
            Command::Rset => {
                self.tx = None;
                self.reply(None, text::OK);
            }
            Command::Noop => self.reply(None, text::OK),
            Command::Quit => {
                self.reply(None, text::BYE);
                self.close();
            }
            Command::Vrfy => self.reply(None, text::VRFY),
            Command::Help => self.reply(None, text::HELP),
            Command::Expn => self.reply(None, text::NOT_IMPLEMENTED),
            Command::StartTls => {
                if !self.config.starttls || self.tls {
                    return self.reply(None, text::NO_TLS);
                }
                self.reply(None, text::READY_FOR_TLS);
                self.state = State::Handshake;
                self.events.push_back(SinkEvent::StartTls);
            }
            Command::Auth { mechanism, initial } => {
                if !mechanism.eq_ignore_ascii_case("PLAIN") {
                    return self.reply(None, text::AUTH_MECHANISM);
                }
                // Any credentials are good enough for a sink.
                if initial.is_some() {
                    self.reply(None, text::AUTH_OK);
                } else {
                    self.state = State::AuthResponse;
                    self.reply(None, text::AUTH_CONTINUE);
                }
            }
        }
    }

    fn end_of_chunk(&mut self, last: bool, answer: Option<Answer>, core: &mut CoreState<'_>) {
        if let Some(answer) = answer {
            self.tx = None;
            return self.answer(answer, core);
        }
        if last {
            self.end_of_message(core);
        } else {
            self.reply(None, text::CHUNK_OK);
        }
    }

    /// The whole content of a transaction with recipients has arrived.
    fn end_of_message(&mut self, core: &mut CoreState<'_>) {
        let Some(tx) = self.tx.take() else {
            return self.reply(None, text::BAD_SEQUENCE);
        };
        if self.config.max_message_size > 0 && tx.size > self.config.max_message_size {
            return self.reply(Some(Stage::Dot), text::TOO_BIG);
        }
        if let Some(rule) = core.injector.decide(Stage::Dot) {
            return self.fault(rule, core);
        }
        if !core.quota.take() {
            core.counters.over_limit += 1;
            self.reply(Some(Stage::Dot), text::LIMIT_REACHED);
            return self.close();
        }
        let counters = &mut *core.counters;
        let source = counters.source(&self.peer);
        source.messages += 1;
        source.recipients += u64::from(tx.recipients);
        counters.messages += 1;
        counters.recipients += u64::from(tx.recipients);
        counters.bytes += tx.size;
        for domain in tx.domains {
            let full = counters.domains.len() >= MAX_COUNTED_DOMAINS;
            let key = if full && !counters.domains.contains_key(&domain) {
                OTHER_DOMAINS.to_owned()
            } else {
                domain
            };
            *counters.domains.entry(key).or_default() += 1;
        }
        if self.config.keep_messages {
            let content = if tx.chunks > 0 {
                tx.content
            } else {
                unstuff(&tx.content)
            };
            self.events.push_back(SinkEvent::Keep(KeptMessage {
                peer: self.peer.clone(),
                helo: self.helo.clone(),
                from: tx.from,
                recipients: tx.kept_recipients,
                content,
            }));
        }
        self.reply(Some(Stage::Dot), text::QUEUED);
    }
}

#[cfg(test)]
mod tests {
    use super::super::fault::Fault;
    use super::*;

    struct Harness {
        injector: Injector,
        counters: Counters,
        quota: Quota,
        session: SinkSession,
    }

    impl Harness {
        fn new(config: SinkConfig, limit: u64) -> Self {
            let mut injector = Injector::new(&config.plan);
            let mut counters = Counters::default();
            let quota = Quota::new(limit);
            let session = SinkSession::new(
                Rc::new(config),
                Some(IpAddr::from([127, 0, 0, 31])),
                &mut CoreState {
                    injector: &mut injector,
                    counters: &mut counters,
                    quota: &quota,
                },
            );
            Harness {
                injector,
                counters,
                quota,
                session,
            }
        }

        fn send(&mut self, input: &[u8]) -> String {
            let used = self.session.handle_input(
                input,
                &mut CoreState {
                    injector: &mut self.injector,
                    counters: &mut self.counters,
                    quota: &self.quota,
                },
            );
            assert_eq!(used, input.len(), "all consumed");
            self.take()
        }

        fn take(&mut self) -> String {
            let text = String::from_utf8(self.session.output().0.to_vec()).unwrap();
            self.session.clear_output();
            text
        }
    }

    fn codes(replies: &str) -> Vec<&str> {
        replies
            .lines()
            .filter(|l| l.as_bytes().get(3) == Some(&b' '))
            .map(|l| &l[..3])
            .collect()
    }

    #[test]
    fn end_of_data_is_found_across_any_split() {
        let stream = b"Subject: x\r\n\r\n..dots\r\n.\r\nRSET\r\n";
        let end = 25;
        for split in 0..stream.len() {
            let mut e = EndOfData::new();
            let found = match e.feed(&stream[..split]) {
                Some(k) => Some(k),
                None => e.feed(&stream[split..]).map(|k| k + split),
            };
            assert_eq!(found, Some(end), "split at {split}");
        }
        assert_eq!(EndOfData::new().feed(b".\r\n"), Some(3), "empty message");
        let mut e = EndOfData::new();
        assert_eq!(e.feed(b"a\r\n.\r"), None);
        assert_eq!(e.feed(b"x\r\n.\r\n"), Some(6), "\\r\\n.\\rx is not the end");
        assert_eq!(unstuff(b"..a\r\n..\r\nb\r\n"), b".a\r\n.\r\nb\r\n");
    }

    #[test]
    fn pipelined_data_and_bdat_transactions() {
        let mut h = Harness::new(
            SinkConfig {
                count_domains: true,
                ..SinkConfig::default()
            },
            0,
        );
        assert!(h.take().starts_with("220 sink.invalid"));
        let ehlo = h.send(b"EHLO c.test\r\n");
        assert!(
            ehlo.contains("250-PIPELINING") && ehlo.contains("CHUNKING"),
            "{ehlo}"
        );
        let r = h.send(
            b"MAIL FROM:<a@b.test>\r\nRCPT TO:<x@d1.test>\r\nRCPT TO:<y@D2.test>\r\nDATA\r\n",
        );
        assert_eq!(codes(&r), ["250", "250", "250", "354"]);
        assert_eq!(codes(&h.send(b"Subject: x\r\n\r\nhi\r\n.\r\n")), ["250"]);
        let r = h.send(b"MAIL FROM:<a@b.test>\r\nRCPT TO:<x@d1.test>\r\nBDAT 5 LAST\r\nhello");
        assert_eq!(codes(&r), ["250", "250", "250"]);
        let r = h.send(b"MAIL FROM:<>\r\nRCPT TO:<x@d1.test>\r\nBDAT 2\r\nabBDAT 1 LAST\r\nc");
        assert_eq!(codes(&r), ["250", "250", "250", "250"]);
        assert_eq!(h.counters.messages, 3);
        assert_eq!(h.counters.recipients, 4);
        assert_eq!(h.counters.bytes, 18 + 5 + 3);
        assert_eq!(h.counters.domains["d1.test"], 3);
        assert_eq!(h.counters.domains["d2.test"], 1);
        assert_eq!(codes(&h.send(b"QUIT\r\n")), ["221"]);
        assert_eq!(h.session.poll_event(), Some(SinkEvent::Close));
    }

    #[test]
    fn domain_counts_are_bounded() {
        let mut h = Harness::new(
            SinkConfig {
                count_domains: true,
                ..SinkConfig::default()
            },
            0,
        );
        for i in 0..MAX_COUNTED_DOMAINS {
            h.counters.domains.insert(format!("d{i}.test"), 1);
        }
        h.take();
        h.send(b"EHLO c\r\n");
        let r = h.send(
            b"MAIL FROM:<a@b.test>\r\nRCPT TO:<x@new.test>\r\nRCPT TO:<y@d7.test>\r\nBDAT 1 LAST\r\nx",
        );
        assert_eq!(codes(&r), ["250", "250", "250", "250"]);
        assert_eq!(h.counters.domains.len(), MAX_COUNTED_DOMAINS + 1);
        assert_eq!(h.counters.domains[OTHER_DOMAINS], 1);
        assert_eq!(h.counters.domains["d7.test"], 2);
    }

    #[test]
    fn sequence_errors_and_unknown_commands() {
        let mut h = Harness::new(SinkConfig::default(), 0);
        h.take();
        assert_eq!(codes(&h.send(b"MAIL FROM:<a@b>\r\n")), ["503"]);
        assert_eq!(codes(&h.send(b"FOO\r\nEHLO\r\n")), ["500", "501"]);
        h.send(b"HELO c\r\n");
        let r = h.send(b"MAIL FROM:<a@b.test>\r\nDATA\r\nBDAT 3 LAST\r\nabcRSET\r\n");
        assert_eq!(codes(&r), ["250", "554", "554", "250"]);
        assert_eq!(h.counters.messages, 0);
        let long = vec![b'x'; 5000];
        h.send(&long);
        assert!(h.session.is_closed());
    }

    #[test]
    fn injected_faults_are_counted() {
        let plan = FaultPlan {
            faults: vec![
                Fault::parse("rcpt:450:0.5").unwrap(),
                Fault::parse("dot:554:0.5").unwrap(),
            ],
            ..FaultPlan::default()
        };
        let mut h = Harness::new(
            SinkConfig {
                plan,
                ..SinkConfig::default()
            },
            0,
        );
        h.take();
        h.send(b"EHLO c\r\n");
        let mut all = Vec::new();
        for _ in 0..4 {
            let r = h.send(b"MAIL FROM:<a@b.test>\r\nRCPT TO:<x@d.test>\r\nBDAT 1 LAST\r\nx");
            all.extend(codes(&r).into_iter().map(str::to_owned));
        }
        // rcpt: ok, 450, ok, 450; dot on the two with a recipient: ok, 554.
        assert_eq!(
            all,
            ["250", "250", "250", "250", "450", "554", "250", "250", "554", "250", "450", "554"]
        );
        assert_eq!(h.counters.faults["rcpt:450"], 2);
        assert_eq!(h.counters.faults["dot:554"], 1);
        assert_eq!(h.counters.messages, 1);
    }

    #[test]
    fn reply_texts_and_the_source_are_counted() {
        let plan = FaultPlan {
            faults: vec![Fault::parse_reply(
                "rcpt:0.5:421 4.7.0 [TSS04] Messages from 127.0.0.31 temporarily deferred",
            )
            .unwrap()],
            ..FaultPlan::default()
        };
        let mut h = Harness::new(
            SinkConfig {
                plan,
                ..SinkConfig::default()
            },
            0,
        );
        h.take();
        h.send(b"EHLO mta1.example.test\r\n");
        let r = h.send(b"MAIL FROM:<a@b.test>\r\nRCPT TO:<x@d.test>\r\nBDAT 1 LAST\r\nx");
        assert_eq!(codes(&r), ["250", "250", "250"]);
        let r = h.send(b"MAIL FROM:<a@b.test>\r\nRCPT TO:<x@d.test>\r\n");
        assert!(
            r.ends_with("421 4.7.0 [TSS04] Messages from 127.0.0.31 temporarily deferred\r\n"),
            "{r}"
        );
        assert_eq!(
            h.session.poll_event(),
            Some(SinkEvent::Close),
            "a 421 closes"
        );
        assert_eq!(h.counters.faults["rcpt:421"], 1);
        let source = &h.counters.sources["127.0.0.31"];
        assert_eq!(
            (source.connections, source.messages, source.recipients),
            (1, 1, 1)
        );
        assert_eq!(source.helo["mta1.example.test"], 1);
    }

    #[test]
    fn connect_fault_delays_and_quota() {
        let plan = FaultPlan {
            faults: vec![Fault::parse("connect:421:1").unwrap()],
            ..FaultPlan::default()
        };
        let mut h = Harness::new(
            SinkConfig {
                plan,
                ..SinkConfig::default()
            },
            0,
        );
        assert!(h.take().starts_with("421 4.7.0"));
        assert_eq!(h.session.poll_event(), Some(SinkEvent::Close));
        assert_eq!(h.counters.faults["connect:421"], 1);

        let mut plan = FaultPlan {
            tarpit: Duration::from_millis(5),
            ..FaultPlan::default()
        };
        plan.delays[Stage::Rcpt as usize] = Duration::from_millis(100);
        let mut h = Harness::new(
            SinkConfig {
                plan,
                keep_messages: true,
                ..SinkConfig::default()
            },
            1,
        );
        h.take();
        h.send(b"EHLO c\r\n");
        h.session.handle_input(
            b"MAIL FROM:<a@b.test>\r\nRCPT TO:<x@d.test>\r\nDATA\r\n",
            &mut CoreState {
                injector: &mut h.injector,
                counters: &mut h.counters,
                quota: &h.quota,
            },
        );
        let (out, delays) = h.session.output();
        assert_eq!(delays.len(), 3);
        assert_eq!(delays[1], (14, Duration::from_millis(105)));
        assert!(out.starts_with(b"250 2.1.0"));
        h.session.clear_output();
        assert_eq!(codes(&h.send(b"..x\r\n.\r\n")), ["250"]);
        assert_eq!(
            h.session.poll_event(),
            Some(SinkEvent::Keep(KeptMessage {
                peer: "127.0.0.31".into(),
                helo: "c".into(),
                from: "a@b.test".into(),
                recipients: vec!["x@d.test".into()],
                content: b".x\r\n".to_vec(),
            }))
        );
        // The quota of one is spent: the next message is refused, and the
        // session closes.
        let r = h.send(b"MAIL FROM:<a@b.test>\r\nRCPT TO:<x@d.test>\r\nBDAT 1 LAST\r\nx");
        assert_eq!(codes(&r), ["250", "250", "421"]);
        assert_eq!(h.counters.over_limit, 1);
        assert!(h.quota.exhausted());
    }
}
