//! The sans-IO client core of `spate blast` for one connection: greeting,
//! EHLO, STARTTLS and AUTH PLAIN when asked, then one transaction at a time
//! (MAIL, RCPT..., then DATA and the body after the 354, or BDAT LAST with
//! the body), pipelined when the server offers PIPELINING. Replies in,
//! bytes and events out; time is passed in as `now`. It refuses to touch
//! sockets or TLS, to retry, or to interpret more of a reply than its
//! code: every failure is reported once, with the stage that got it.

use std::collections::VecDeque;
use std::time::Instant;

use memchr::memchr;

/// How this connection should talk, from the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientPlan {
    pub helo: String,
    pub starttls: bool,
    /// AUTH PLAIN with (user, password) after EHLO (and TLS).
    pub auth: Option<(String, String)>,
    /// Use PIPELINING when offered.
    pub pipelining: bool,
    /// Use BDAT (CHUNKING) when offered.
    pub bdat: bool,
}

/// Longest reply line taken (RFC 5321 guarantees 512); longer is broken.
const MAX_REPLY_LINE: usize = 4096;
/// Lines in one multiline reply.
const MAX_REPLY_LINES: usize = 256;

/// Where in the dialogue something went wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Stage {
    Connect,
    Greeting,
    Ehlo,
    StartTls,
    Auth,
    Rset,
    Mail,
    Rcpt,
    /// The reply to DATA (354 expected).
    Data,
    /// The reply after the message (end of DATA, or BDAT LAST).
    DataEnd,
}

impl Stage {
    pub fn name(self) -> &'static str {
        match self {
            Stage::Connect => "connect",
            Stage::Greeting => "greeting",
            Stage::Ehlo => "ehlo",
            Stage::StartTls => "starttls",
            Stage::Auth => "auth",
            Stage::Rset => "rset",
            Stage::Mail => "mail",
            Stage::Rcpt => "rcpt",
            Stage::Data => "data",
            Stage::DataEnd => "data-end",
        }
    }
}

/// What went wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Problem {
    /// The server replied with this code.
    Reply(u16),
    /// STARTTLS or AUTH PLAIN was asked for but not offered.
    NotOffered,
    /// Bytes that are not an SMTP reply.
    Malformed,
    ConnectionLost,
    Timeout,
    /// Connect or write failed.
    Io,
    Tls,
}

impl Problem {
    /// The key the report counts errors under: the reply code, or a word.
    pub fn key(self) -> String {
        match self {
            Problem::Reply(code) => code.to_string(),
            Problem::NotOffered => "not-offered".into(),
            Problem::Malformed => "malformed-reply".into(),
            Problem::ConnectionLost => "connection-lost".into(),
            Problem::Timeout => "timeout".into(),
            Problem::Io => "io-error".into(),
            Problem::Tls => "tls-failed".into(),
        }
    }
}

/// One failure, counted once in the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Failure {
    pub stage: Stage,
    pub problem: Problem,
}

/// How one transaction ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The server accepted the message (2xx after the content) for at
    /// least one recipient.
    pub delivered: bool,
    pub recipients_accepted: u32,
    /// Content bytes (not counting dot-stuffing or the terminator).
    pub size: usize,
    pub started: Instant,
    /// When the last content byte was handed to the socket.
    pub content_sent: Option<Instant>,
    pub finished: Instant,
    /// Each refused command or lost connection, in order.
    pub failures: Vec<Failure>,
}

/// What the glue must act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Setup done: `start_transaction` may be called.
    Ready,
    /// The server said 220 to STARTTLS: write nothing more, do the TLS
    /// handshake, then call `handle_tls_established` (or `handle_broken`).
    StartTls,
    /// A transaction ended.
    Done(Outcome),
    /// The connection could not be set up (greeting, EHLO, STARTTLS, AUTH).
    SetupFailed(Failure),
    /// Nothing more will happen: close the socket (after writing any output).
    Closed,
}

/// What the server offered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Capabilities {
    pub pipelining: bool,
    pub chunking: bool,
    pub starttls: bool,
    pub auth_plain: bool,
}

impl Capabilities {
    fn learn(&mut self, line: &[u8]) {
        let mut words = line.split(|&b| b == b' ').filter(|w| !w.is_empty());
        let Some(keyword) = words.next() else { return };
        let is = |k: &[u8]| keyword.eq_ignore_ascii_case(k);
        if is(b"PIPELINING") {
            self.pipelining = true;
        } else if is(b"CHUNKING") {
            self.chunking = true;
        } else if is(b"STARTTLS") {
            self.starttls = true;
        } else if is(b"AUTH") {
            self.auth_plain |= words.any(|w| w.eq_ignore_ascii_case(b"PLAIN"));
        }
    }
}

/// A command of the transaction, in sending order; its reply is matched
/// by counting (RFC 2920 3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    Rset,
    Mail,
    Rcpt,
    Data,
    /// BDAT LAST with the whole content.
    Bdat,
    /// The content and "." after a 354.
    Dot,
}

impl Part {
    fn stage(self) -> Stage {
        match self {
            Part::Rset => Stage::Rset,
            Part::Mail => Stage::Mail,
            Part::Rcpt => Stage::Rcpt,
            Part::Data => Stage::Data,
            Part::Bdat | Part::Dot => Stage::DataEnd,
        }
    }
}

/// The transaction in flight.
#[derive(Debug)]
struct Transaction {
    /// Parts whose replies are awaited, oldest first.
    awaiting: VecDeque<Part>,
    /// Parts not sent yet (without PIPELINING, one at a time), each with
    /// the end of its bytes in `script`.
    unsent: VecDeque<(Part, usize)>,
    /// Where the next unsent part's bytes start in `script`.
    script_pos: usize,
    mail_accepted: bool,
    recipients_accepted: u32,
    /// Sent as one pipelined group.
    pipelined: bool,
    size: usize,
    started: Instant,
    content_in_output: bool,
    content_sent: Option<Instant>,
    failures: Vec<Failure>,
}

impl Transaction {
    fn valid(&self) -> bool {
        self.mail_accepted && self.recipients_accepted > 0
    }
}

#[derive(Debug)]
enum State {
    Greeting,
    Ehlo,
    StartTls,
    Handshake,
    Auth,
    Ready,
    Busy(Transaction),
    Quitting,
    Closed,
}

/// One connection of `spate blast`, sans-IO.
#[derive(Debug)]
pub struct BlastClient {
    plan: std::rc::Rc<ClientPlan>,
    state: State,
    caps: Capabilities,
    tls: bool,
    output: Vec<u8>,
    /// The current transaction's commands (and BDAT content), rendered once.
    script: Vec<u8>,
    /// The dot-stuffed content and terminator, sent after a 354.
    dot_content: Vec<u8>,
    events: VecDeque<Event>,
    /// Code and line count of the multiline reply being read.
    reply_code: Option<u16>,
    reply_lines: usize,
    /// The server holds a transaction we did not finish: RSET first.
    needs_rset: bool,
    transactions: u64,
    /// `Event::Closed` was queued (exactly once per connection).
    closed_reported: bool,
    /// QUIT is to follow the current transaction's content in the same
    /// write (RFC 2920 3.1: QUIT may end a pipelined group).
    quit_wanted: bool,
    /// QUIT went out with the transaction: its 221 follows the final reply.
    quit_sent: bool,
}

/// Three digits, first 2-5 (RFC 5321 4.2).
fn reply_code(line: &[u8]) -> Option<u16> {
    match line {
        [a @ b'2'..=b'5', b @ b'0'..=b'9', c @ b'0'..=b'9', ..] => {
            Some(u16::from(a - b'0') * 100 + u16::from(b - b'0') * 10 + u16::from(c - b'0'))
        }
        _ => None,
    }
}

/// Appends `content` dot-stuffed (RFC 5321 4.5.2) and the terminator.
/// `content` ends with CRLF.
fn dot_stuff_into(content: &[u8], out: &mut Vec<u8>) {
    let mut rest = content;
    if rest.first() == Some(&b'.') {
        out.push(b'.');
    }
    while let Some(k) = memchr::memmem::find(rest, b"\n.") {
        out.extend_from_slice(&rest[..k + 1]);
        out.push(b'.');
        rest = &rest[k + 1..];
    }
    out.extend_from_slice(rest);
    out.extend_from_slice(b".\r\n");
}

impl BlastClient {
    /// A TCP connection was just opened; the greeting is awaited.
    pub fn new(plan: std::rc::Rc<ClientPlan>) -> Self {
        BlastClient {
            plan,
            state: State::Greeting,
            caps: Capabilities::default(),
            tls: false,
            output: Vec::with_capacity(4096),
            script: Vec::with_capacity(4096),
            dot_content: Vec::new(),
            events: VecDeque::with_capacity(4),
            reply_code: None,
            reply_lines: 0,
            needs_rset: false,
            transactions: 0,
            closed_reported: false,
            quit_wanted: false,
            quit_sent: false,
        }
    }

    pub fn capabilities(&self) -> Capabilities {
        self.caps
    }

    pub fn is_ready(&self) -> bool {
        matches!(self.state, State::Ready)
    }

    pub fn is_closed(&self) -> bool {
        matches!(self.state, State::Closed)
    }

    /// Transactions started on this connection.
    pub fn transactions(&self) -> u64 {
        self.transactions
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Bytes to write, if any.
    pub fn poll_output(&self) -> Option<&[u8]> {
        (!self.output.is_empty()).then_some(self.output.as_slice())
    }

    /// `n` bytes of `poll_output` were written at `now`.
    pub fn consume_output(&mut self, n: usize, now: Instant) {
        let n = n.min(self.output.len());
        if n == self.output.len() {
            self.output.clear();
            if let State::Busy(tx) = &mut self.state {
                if tx.content_in_output {
                    tx.content_in_output = false;
                    tx.content_sent = Some(now);
                }
            }
        } else {
            self.output.drain(..n);
        }
    }

    /// Feeds received bytes; returns how many were consumed (complete
    /// lines; the glue keeps the rest). During the TLS handshake nothing
    /// is consumed; after the 220 to STARTTLS the rest is dropped (it came
    /// in plaintext, RFC 3207 5).
    pub fn handle_input(&mut self, input: &[u8], now: Instant) -> usize {
        let mut pos = 0;
        loop {
            match self.state {
                State::Closed => return input.len(),
                State::Handshake => return pos.max(input.len()),
                _ => {}
            }
            let rest = &input[pos..];
            let window = &rest[..rest.len().min(MAX_REPLY_LINE)];
            let Some(k) = memchr(b'\n', window) else {
                if rest.len() >= MAX_REPLY_LINE {
                    self.handle_broken(Problem::Malformed, now);
                    return input.len();
                }
                return pos;
            };
            pos += k + 1;
            let line = &rest[..k];
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            let Some(code) = reply_code(line) else {
                self.handle_broken(Problem::Malformed, now);
                return input.len();
            };
            let last = match line.get(3) {
                None | Some(b' ') => true,
                Some(b'-') => false,
                Some(_) => {
                    self.handle_broken(Problem::Malformed, now);
                    return input.len();
                }
            };
            if self.reply_code.is_some_and(|c| c != code) || self.reply_lines >= MAX_REPLY_LINES {
                self.handle_broken(Problem::Malformed, now);
                return input.len();
            }
            if matches!(self.state, State::Ehlo) && self.reply_lines > 0 {
                self.caps.learn(line.get(4..).unwrap_or_default());
            }
            if last {
                self.reply_code = None;
                self.reply_lines = 0;
                self.handle_reply(code, now);
            } else {
                self.reply_code = Some(code);
                self.reply_lines += 1;
            }
        }
    }

    fn handle_reply(&mut self, code: u16, now: Instant) {
        let ok = (200..300).contains(&code);
        match std::mem::replace(&mut self.state, State::Closed) {
            State::Greeting => {
                if code == 220 {
                    self.send_ehlo();
                } else {
                    self.setup_failed(Stage::Greeting, Problem::Reply(code), false);
                }
            }
            State::Ehlo => {
                if code != 250 {
                    self.setup_failed(Stage::Ehlo, Problem::Reply(code), code != 421);
                } else if self.plan.starttls && !self.tls {
                    if self.caps.starttls {
                        self.output.extend_from_slice(b"STARTTLS\r\n");
                        self.state = State::StartTls;
                    } else {
                        self.setup_failed(Stage::StartTls, Problem::NotOffered, true);
                    }
                } else if let Some((user, password)) = &self.plan.auth {
                    if self.caps.auth_plain {
                        let mut message = Vec::with_capacity(user.len() + password.len() + 2);
                        message.push(0);
                        message.extend_from_slice(user.as_bytes());
                        message.push(0);
                        message.extend_from_slice(password.as_bytes());
                        self.output.extend_from_slice(b"AUTH PLAIN ");
                        self.output
                            .extend_from_slice(crate::sasl::encode_base64(&message).as_bytes());
                        self.output.extend_from_slice(b"\r\n");
                        self.state = State::Auth;
                    } else {
                        self.setup_failed(Stage::Auth, Problem::NotOffered, true);
                    }
                } else {
                    self.become_ready();
                }
            }
            State::StartTls => {
                if code == 220 {
                    self.state = State::Handshake;
                    self.events.push_back(Event::StartTls);
                } else {
                    self.setup_failed(Stage::StartTls, Problem::Reply(code), code != 421);
                }
            }
            State::Auth => {
                if code == 235 {
                    self.become_ready();
                } else {
                    self.setup_failed(Stage::Auth, Problem::Reply(code), code != 421);
                }
            }
            State::Busy(tx) => self.handle_transaction_reply(tx, code, ok, now),
            State::Quitting | State::Closed => self.close(),
            State::Ready | State::Handshake => {
                // A reply nobody asked for (a 421 before closing, say).
                if code == 421 {
                    self.close();
                } else {
                    self.state = State::Ready;
                }
            }
        }
    }

    fn become_ready(&mut self) {
        self.state = State::Ready;
        self.events.push_back(Event::Ready);
    }

    fn send_ehlo(&mut self) {
        self.caps = Capabilities::default();
        self.output.extend_from_slice(b"EHLO ");
        self.output.extend_from_slice(self.plan.helo.as_bytes());
        self.output.extend_from_slice(b"\r\n");
        self.state = State::Ehlo;
    }

    /// `polite`: the server is still listening, so QUIT before closing.
    fn setup_failed(&mut self, stage: Stage, problem: Problem, polite: bool) {
        self.events
            .push_back(Event::SetupFailed(Failure { stage, problem }));
        if polite {
            self.output.extend_from_slice(b"QUIT\r\n");
            self.state = State::Quitting;
        } else {
            self.close();
        }
    }

    fn close(&mut self) {
        self.state = State::Closed;
        if !self.closed_reported {
            self.closed_reported = true;
            self.events.push_back(Event::Closed);
        }
    }

    /// TLS is up: EHLO again (RFC 3207 4.2).
    pub fn handle_tls_established(&mut self) {
        if matches!(self.state, State::Handshake) {
            self.tls = true;
            self.send_ehlo();
        }
    }

    /// Starts one message: `content` ends with CRLF and is not dot-stuffed.
    /// Returns false (and does nothing) unless the connection is ready or
    /// there is no recipient.
    pub fn start_transaction(
        &mut self,
        from: &str,
        recipients: &[String],
        content: &[u8],
        now: Instant,
    ) -> bool {
        if !self.is_ready() || recipients.is_empty() {
            return false;
        }
        let bdat = self.plan.bdat && self.caps.chunking;
        let pipelining = self.plan.pipelining && self.caps.pipelining;
        let mut unsent = VecDeque::with_capacity(recipients.len() + 3);
        let script = &mut self.script;
        script.clear();
        if self.needs_rset {
            script.extend_from_slice(b"RSET\r\n");
            unsent.push_back((Part::Rset, script.len()));
        }
        script.extend_from_slice(b"MAIL FROM:<");
        script.extend_from_slice(from.as_bytes());
        script.extend_from_slice(b">\r\n");
        unsent.push_back((Part::Mail, script.len()));
        for rcpt in recipients {
            script.extend_from_slice(b"RCPT TO:<");
            script.extend_from_slice(rcpt.as_bytes());
            script.extend_from_slice(b">\r\n");
            unsent.push_back((Part::Rcpt, script.len()));
        }
        self.dot_content.clear();
        if bdat {
            use std::io::Write as _;
            let _ = write!(script, "BDAT {} LAST\r\n", content.len());
            script.extend_from_slice(content);
            unsent.push_back((Part::Bdat, script.len()));
        } else {
            script.extend_from_slice(b"DATA\r\n");
            unsent.push_back((Part::Data, script.len()));
            dot_stuff_into(content, &mut self.dot_content);
        }
        self.needs_rset = false;
        self.transactions += 1;
        let mut tx = Transaction {
            awaiting: VecDeque::with_capacity(unsent.len()),
            unsent,
            script_pos: 0,
            mail_accepted: false,
            recipients_accepted: 0,
            pipelined: pipelining,
            size: content.len(),
            started: now,
            content_in_output: false,
            content_sent: None,
            failures: Vec::new(),
        };
        if pipelining {
            while self.send_next(&mut tx) {}
        } else {
            self.send_next(&mut tx);
        }
        self.state = State::Busy(tx);
        true
    }

    /// Moves the next unsent part to the output; false when none is left.
    fn send_next(&mut self, tx: &mut Transaction) -> bool {
        let Some((part, end)) = tx.unsent.pop_front() else {
            return false;
        };
        self.output
            .extend_from_slice(&self.script[tx.script_pos..end]);
        tx.script_pos = end;
        tx.awaiting.push_back(part);
        if part == Part::Bdat {
            tx.content_in_output = true;
        }
        true
    }

    fn handle_transaction_reply(&mut self, mut tx: Transaction, code: u16, ok: bool, now: Instant) {
        let Some(part) = tx.awaiting.pop_front() else {
            self.state = State::Busy(tx);
            return;
        };
        let fail = |tx: &mut Transaction| {
            tx.failures.push(Failure {
                stage: part.stage(),
                problem: Problem::Reply(code),
            })
        };
        let mut finished = false;
        match part {
            Part::Rset => {
                if !ok {
                    fail(&mut tx);
                }
            }
            Part::Mail => {
                tx.mail_accepted = ok;
                if !ok {
                    fail(&mut tx);
                    // Without pipelining nothing else was sent: stop here.
                    finished = tx.awaiting.is_empty();
                }
            }
            Part::Rcpt => {
                if tx.mail_accepted {
                    if ok {
                        tx.recipients_accepted += 1;
                    } else {
                        fail(&mut tx);
                    }
                }
                let more_rcpts = tx.unsent.front().is_some_and(|(p, _)| *p == Part::Rcpt)
                    || tx.awaiting.front() == Some(&Part::Rcpt);
                finished = !more_rcpts && tx.awaiting.is_empty() && !tx.valid();
            }
            Part::Data => {
                if code == 354 {
                    if tx.valid() {
                        self.output.extend_from_slice(&self.dot_content);
                        tx.content_in_output = true;
                    } else {
                        // RFC 2920 3.1: a 354 with no valid recipient gets a lone ".".
                        self.output.extend_from_slice(b".\r\n");
                    }
                    if self.quit_wanted {
                        self.send_pipelined_quit();
                    }
                    tx.awaiting.push_back(Part::Dot);
                } else {
                    if tx.valid() {
                        fail(&mut tx);
                    }
                    finished = true;
                }
            }
            Part::Bdat | Part::Dot => {
                if tx.valid() {
                    if ok {
                        self.transaction_done(tx, true, now, code);
                        return;
                    }
                    fail(&mut tx);
                }
                finished = true;
            }
        }
        if code == 421 {
            // The server is closing (RFC 5321 3.8): the transaction ends here.
            if !tx.failures.iter().any(|f| f.problem == Problem::Reply(421)) {
                fail(&mut tx);
            }
            self.transaction_done(tx, false, now, code);
            return;
        }
        if finished {
            self.transaction_done(tx, false, now, code);
            return;
        }
        if tx.awaiting.is_empty() {
            self.send_next(&mut tx);
        }
        self.state = State::Busy(tx);
    }

    fn transaction_done(&mut self, tx: Transaction, delivered: bool, now: Instant, code: u16) {
        // After anything but a final reply the server may still hold the
        // transaction; RSET costs nothing when pipelined.
        self.needs_rset = !delivered;
        self.events.push_back(Event::Done(Outcome {
            delivered,
            recipients_accepted: tx.recipients_accepted,
            size: tx.size,
            started: tx.started,
            content_sent: tx.content_sent,
            finished: now,
            failures: tx.failures,
        }));
        self.quit_wanted = false;
        if code == 421 {
            self.close();
        } else if self.quit_sent {
            self.state = State::Quitting;
        } else {
            self.state = State::Ready;
        }
    }

    /// The transaction just started is the connection's last: with
    /// PIPELINING, QUIT goes out right behind its content, saving a round
    /// trip; otherwise `quit` does it afterwards as usual.
    pub fn quit_after_transaction(&mut self) {
        let State::Busy(tx) = &self.state else { return };
        if !tx.pipelined {
            return;
        }
        if tx.awaiting.contains(&Part::Bdat) {
            self.send_pipelined_quit();
        } else {
            // DATA: after the content, once the 354 has come.
            self.quit_wanted = true;
        }
    }

    fn send_pipelined_quit(&mut self) {
        self.output.extend_from_slice(b"QUIT\r\n");
        self.quit_wanted = false;
        self.quit_sent = true;
    }

    /// Ends the connection: QUIT when ready, else closes at once.
    pub fn quit(&mut self) {
        match self.state {
            State::Ready => {
                self.output.extend_from_slice(b"QUIT\r\n");
                self.state = State::Quitting;
            }
            State::Quitting | State::Closed => {}
            _ => self.close(),
        }
    }

    /// The connection broke (EOF, timeout, I/O or TLS error, garbage): the
    /// transaction or setup in progress fails with `problem`, then Closed.
    pub fn handle_broken(&mut self, problem: Problem, now: Instant) {
        let stage = match &self.state {
            State::Greeting => Some(Stage::Greeting),
            State::Ehlo => Some(Stage::Ehlo),
            State::StartTls | State::Handshake => Some(Stage::StartTls),
            State::Auth => Some(Stage::Auth),
            State::Ready | State::Quitting | State::Closed | State::Busy(_) => None,
        };
        match std::mem::replace(&mut self.state, State::Closed) {
            State::Busy(mut tx) => {
                let stage = tx.awaiting.front().map_or(Stage::DataEnd, |p| p.stage());
                tx.failures.push(Failure { stage, problem });
                self.transaction_done(tx, false, now, 0);
            }
            _ => {
                if let Some(stage) = stage {
                    self.events
                        .push_back(Event::SetupFailed(Failure { stage, problem }));
                }
            }
        }
        self.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::rc::Rc;

    const EHLO_FULL: &[u8] =
        b"250-sink.test\r\n250-PIPELINING\r\n250-CHUNKING\r\n250-STARTTLS\r\n250 AUTH PLAIN LOGIN\r\n";

    fn plan(pipelining: bool, bdat: bool) -> Rc<ClientPlan> {
        Rc::new(ClientPlan {
            helo: "blast.test".into(),
            starttls: false,
            auth: None,
            pipelining,
            bdat,
        })
    }

    fn take_output(c: &mut BlastClient, now: Instant) -> String {
        let out = c.poll_output().map(|o| o.to_vec()).unwrap_or_default();
        c.consume_output(out.len(), now);
        String::from_utf8(out).unwrap()
    }

    fn ready(plan: Rc<ClientPlan>, ehlo: &[u8]) -> BlastClient {
        let now = Instant::now();
        let mut c = BlastClient::new(plan);
        assert_eq!(c.handle_input(b"220 sink ESMTP\r\n", now), 16);
        assert_eq!(take_output(&mut c, now), "EHLO blast.test\r\n");
        c.handle_input(ehlo, now);
        assert_eq!(c.poll_event(), Some(Event::Ready));
        c
    }

    fn done(c: &mut BlastClient) -> Outcome {
        match c.poll_event() {
            Some(Event::Done(o)) => o,
            other => panic!("expected Done, got {other:?}"),
        }
    }

    fn rcpts(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("u{i}@d.test")).collect()
    }

    #[test]
    fn bdat_pipelined_is_one_round_trip() {
        let now = Instant::now();
        let mut c = ready(plan(true, true), EHLO_FULL);
        assert!(c.start_transaction("s@x.test", &rcpts(2), b"Subject: a\r\n\r\nhi\r\n", now));
        assert_eq!(
            take_output(&mut c, now),
            "MAIL FROM:<s@x.test>\r\nRCPT TO:<u0@d.test>\r\nRCPT TO:<u1@d.test>\r\nBDAT 18 LAST\r\nSubject: a\r\n\r\nhi\r\n"
        );
        // Replies may arrive split anywhere.
        let replies = b"250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n250 2.1.5 Ok\r\n250 2.0.0 queued\r\n";
        let used = c.handle_input(&replies[..20], now);
        assert_eq!(used, 14);
        assert_eq!(c.handle_input(&replies[used..], now), replies.len() - used);
        let o = done(&mut c);
        assert!(o.delivered);
        assert_eq!(o.recipients_accepted, 2);
        assert_eq!(o.size, 18);
        assert!(o.content_sent.is_some());
        assert!(o.failures.is_empty());
        assert!(c.is_ready());
        c.quit();
        assert_eq!(take_output(&mut c, now), "QUIT\r\n");
        c.handle_input(b"221 bye\r\n", now);
        assert_eq!(c.poll_event(), Some(Event::Closed));
    }

    #[test]
    fn data_pipelined_sends_stuffed_content_after_354() {
        let now = Instant::now();
        let mut c = ready(plan(true, false), EHLO_FULL);
        assert!(c.start_transaction("s@x.test", &rcpts(1), b".dot\r\nx\r\n.\r\n", now));
        assert_eq!(
            take_output(&mut c, now),
            "MAIL FROM:<s@x.test>\r\nRCPT TO:<u0@d.test>\r\nDATA\r\n"
        );
        c.handle_input(b"250 ok\r\n250 ok\r\n354 go\r\n", now);
        assert_eq!(take_output(&mut c, now), "..dot\r\nx\r\n..\r\n.\r\n");
        c.handle_input(b"250 queued\r\n", now);
        assert!(done(&mut c).delivered);
    }

    #[test]
    fn refused_recipients_are_counted_and_rset_follows() {
        let now = Instant::now();
        let mut c = ready(plan(true, true), EHLO_FULL);
        c.start_transaction("s@x.test", &rcpts(2), b"x\r\n", now);
        take_output(&mut c, now);
        c.handle_input(
            b"250 ok\r\n450 4.2.0 busy\r\n550 5.1.1 no\r\n554 5.5.1 no valid recipients\r\n",
            now,
        );
        let o = done(&mut c);
        assert!(!o.delivered);
        assert_eq!(
            o.failures,
            vec![
                Failure {
                    stage: Stage::Rcpt,
                    problem: Problem::Reply(450)
                },
                Failure {
                    stage: Stage::Rcpt,
                    problem: Problem::Reply(550)
                },
            ],
            "the 554 to BDAT is a consequence, not another error"
        );
        c.start_transaction("s@x.test", &rcpts(1), b"x\r\n", now);
        assert!(take_output(&mut c, now).starts_with("RSET\r\nMAIL FROM"));
        c.handle_input(b"250 ok\r\n250 ok\r\n250 ok\r\n451 4.3.0 later\r\n", now);
        let o = done(&mut c);
        assert_eq!(
            o.failures,
            vec![Failure {
                stage: Stage::DataEnd,
                problem: Problem::Reply(451)
            }]
        );
    }

    #[test]
    fn without_pipelining_one_command_at_a_time() {
        let now = Instant::now();
        let mut c = ready(plan(true, false), b"250-sink\r\n250 8BITMIME\r\n");
        c.start_transaction("s@x.test", &rcpts(2), b"x\r\n", now);
        assert_eq!(take_output(&mut c, now), "MAIL FROM:<s@x.test>\r\n");
        c.handle_input(b"250 ok\r\n", now);
        assert_eq!(take_output(&mut c, now), "RCPT TO:<u0@d.test>\r\n");
        c.handle_input(b"550 no\r\n", now);
        assert_eq!(take_output(&mut c, now), "RCPT TO:<u1@d.test>\r\n");
        c.handle_input(b"550 no\r\n", now);
        // No valid recipient: DATA is never sent.
        let o = done(&mut c);
        assert_eq!(o.failures.len(), 2);
        assert_eq!(take_output(&mut c, now), "");
        // A refused MAIL ends the transaction at once.
        c.start_transaction("s@x.test", &rcpts(1), b"x\r\n", now);
        assert_eq!(take_output(&mut c, now), "RSET\r\n");
        c.handle_input(b"250 ok\r\n", now);
        assert_eq!(take_output(&mut c, now), "MAIL FROM:<s@x.test>\r\n");
        c.handle_input(b"451 later\r\n", now);
        let o = done(&mut c);
        assert_eq!(o.failures[0].stage, Stage::Mail);
        assert!(c.is_ready());
    }

    #[test]
    fn quit_rides_with_the_last_transaction() {
        let now = Instant::now();
        let mut c = ready(plan(true, true), EHLO_FULL);
        c.start_transaction("s@x.test", &rcpts(1), b"x\r\n", now);
        c.quit_after_transaction();
        assert!(take_output(&mut c, now).ends_with("BDAT 3 LAST\r\nx\r\nQUIT\r\n"));
        c.handle_input(b"250 ok\r\n250 ok\r\n250 queued\r\n", now);
        assert!(done(&mut c).delivered);
        assert!(!c.is_ready(), "QUIT is out: no more transactions");
        c.quit();
        assert_eq!(take_output(&mut c, now), "", "no second QUIT");
        c.handle_input(b"221 bye\r\n", now);
        assert_eq!(c.poll_event(), Some(Event::Closed));

        // DATA: QUIT follows the content after the 354.
        let mut c = ready(plan(true, false), EHLO_FULL);
        c.start_transaction("s@x.test", &rcpts(1), b"x\r\n", now);
        c.quit_after_transaction();
        assert!(take_output(&mut c, now).ends_with("DATA\r\n"));
        c.handle_input(b"250 ok\r\n250 ok\r\n354 go\r\n", now);
        assert_eq!(take_output(&mut c, now), "x\r\n.\r\nQUIT\r\n");
        c.handle_input(b"250 queued\r\n221 bye\r\n", now);
        assert!(done(&mut c).delivered);
        assert_eq!(c.poll_event(), Some(Event::Closed));

        // DATA refused: the QUIT never went, so `quit` sends it.
        let mut c = ready(plan(true, false), EHLO_FULL);
        c.start_transaction("s@x.test", &rcpts(1), b"x\r\n", now);
        c.quit_after_transaction();
        take_output(&mut c, now);
        c.handle_input(b"250 ok\r\n250 ok\r\n451 later\r\n", now);
        assert!(!done(&mut c).delivered);
        c.quit();
        assert_eq!(take_output(&mut c, now), "QUIT\r\n");

        // Without PIPELINING nothing changes.
        let mut c = ready(plan(true, true), b"250-sink\r\n250 CHUNKING\r\n");
        c.start_transaction("s@x.test", &rcpts(1), b"x\r\n", now);
        c.quit_after_transaction();
        assert_eq!(take_output(&mut c, now), "MAIL FROM:<s@x.test>\r\n");
    }

    #[test]
    fn setup_failures_and_421() {
        let now = Instant::now();
        let mut c = BlastClient::new(plan(true, true));
        c.handle_input(b"421 4.7.0 too many connections\r\n", now);
        assert_eq!(
            c.poll_event(),
            Some(Event::SetupFailed(Failure {
                stage: Stage::Greeting,
                problem: Problem::Reply(421)
            }))
        );
        assert_eq!(c.poll_event(), Some(Event::Closed));

        let mut c = ready(plan(true, true), EHLO_FULL);
        c.start_transaction("s@x.test", &rcpts(1), b"x\r\n", now);
        take_output(&mut c, now);
        c.handle_input(b"250 ok\r\n421 4.3.2 closing\r\n", now);
        let o = done(&mut c);
        assert_eq!(
            o.failures,
            vec![Failure {
                stage: Stage::Rcpt,
                problem: Problem::Reply(421)
            }]
        );
        assert_eq!(c.poll_event(), Some(Event::Closed));

        let mut c = ready(plan(true, true), EHLO_FULL);
        c.start_transaction("s@x.test", &rcpts(1), b"x\r\n", now);
        c.handle_broken(Problem::ConnectionLost, now);
        let o = done(&mut c);
        assert_eq!(o.failures[0].stage, Stage::Mail);
        assert_eq!(o.failures[0].problem, Problem::ConnectionLost);
        assert_eq!(c.poll_event(), Some(Event::Closed));

        let mut c = BlastClient::new(plan(true, true));
        c.handle_input(b"garbage\r\n", now);
        assert!(matches!(
            c.poll_event(),
            Some(Event::SetupFailed(Failure {
                problem: Problem::Malformed,
                ..
            }))
        ));
    }

    #[test]
    fn starttls_then_auth() {
        let now = Instant::now();
        let plan = Rc::new(ClientPlan {
            helo: "blast.test".into(),
            starttls: true,
            auth: Some(("u".into(), "p".into())),
            pipelining: true,
            bdat: true,
        });
        let mut c = BlastClient::new(plan);
        c.handle_input(b"220 hi\r\n", now);
        take_output(&mut c, now);
        c.handle_input(EHLO_FULL, now);
        assert_eq!(take_output(&mut c, now), "STARTTLS\r\n");
        // Bytes after the 220 are dropped (plaintext injection).
        c.handle_input(b"220 go ahead\r\n250 injected\r\n", now);
        assert_eq!(c.poll_event(), Some(Event::StartTls));
        c.handle_tls_established();
        assert_eq!(take_output(&mut c, now), "EHLO blast.test\r\n");
        assert_eq!(c.capabilities(), Capabilities::default());
        c.handle_input(b"250-sink\r\n250 AUTH PLAIN\r\n", now);
        assert_eq!(take_output(&mut c, now), "AUTH PLAIN AHUAcA==\r\n");
        c.handle_input(b"235 ok\r\n", now);
        assert_eq!(c.poll_event(), Some(Event::Ready));

        // Asked for STARTTLS, not offered: a setup failure and QUIT.
        let mut c = BlastClient::new(Rc::new(ClientPlan {
            helo: "b".into(),
            starttls: true,
            auth: None,
            pipelining: true,
            bdat: true,
        }));
        c.handle_input(b"220 hi\r\n250 sink\r\n", now);
        assert_eq!(
            c.poll_event(),
            Some(Event::SetupFailed(Failure {
                stage: Stage::StartTls,
                problem: Problem::NotOffered
            }))
        );
        assert!(take_output(&mut c, now).ends_with("QUIT\r\n"));
    }
}
