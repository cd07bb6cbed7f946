//! Fuzz targets of the SMTP server core: the command parser (never panics; a parsed command
//! renders back to a line that parses to the same command; nothing it borrows holds a control
//! character) and whole sessions (replies well-formed, no open relay, every buffer bounded, a
//! 250 for a message only after the store said so). It refuses to test the outbound client.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::{crlf_lines, lines, Rng};
use crate::envelope::{BodyType, DsnReturn};
use crate::smtp::address::{ForwardPath, Mailbox, ReversePath, MAX_PATH_LENGTH};
use crate::smtp::policy::{LocalPolicy, LocalRecipient};
use crate::smtp::session::{SessionCounters, OUTPUT_HARD_LIMIT};
use crate::smtp::{
    parse_command, AuthOutcome, BareLineEndings, Command, Event, PeerInfo, RecipientDelivery,
    ServerConfig, ServerSession, StoreFailure, Timeouts,
};

/// Verbs, parameters and line-ending games for the mutator.
pub const TOKENS: &[&[u8]] = &[
    b"EHLO client.example\r\n",
    b"HELO x\r\n",
    b"MAIL FROM:<a@remote.example>",
    b"MAIL FROM:<>",
    b"RCPT TO:<bob@local.test>",
    b"RCPT TO:<Postmaster>",
    b"RCPT TO:<small@local.test>",
    b" SIZE=999",
    b" SIZE=5000",
    b"RCPT TO:<x@[192.0.2.1]>",
    b"RCPT TO:<@a.example,@b.example:c@local.test>",
    b"DATA\r\n",
    b"\r\n.\r\n",
    b"BDAT 5\r\n",
    b"BDAT 0 LAST\r\n",
    b"RSET\r\n",
    b"NOOP\r\n",
    b"QUIT\r\n",
    b"STARTTLS\r\n",
    b"AUTH PLAIN ",
    b"AUTH LOGIN\r\n",
    b"AGFsaWNlAHJpZ2h0",
    b"*\r\n",
    b" SIZE=100",
    b" SIZE=99999999999999999999",
    b" BODY=8BITMIME",
    b" SMTPUTF8",
    b" RET=FULL",
    b" ENVID=a+2Bb",
    b" NOTIFY=SUCCESS,FAILURE",
    b" ORCPT=rfc822;a@b",
    b"\"quoted local\"",
    b"Received: x\r\n",
    b"\r\n",
    b"\n",
    b"\r",
    b"\0",
    b".",
    b"..",
    b"\xc3\xa9",
];

/// `parse_command` on the whole input and on each of its lines.
pub fn smtp_command(data: &[u8]) {
    check_command(data);
    for line in lines(data) {
        check_command(line);
    }
}

fn check_command(line: &[u8]) {
    let Ok(command) = parse_command(line) else {
        return;
    };
    check_borrowed(&command);
    // Verbs are case-insensitive (RFC 5321 2.4): the upper-cased verb
    // gives the same command.
    let verb_end = line.iter().position(|&b| b == b' ').unwrap_or(line.len());
    let mut upper = line.to_vec();
    upper[..verb_end].make_ascii_uppercase();
    assert_eq!(
        parse_command(&upper),
        Ok(command),
        "the verb's case changed the command"
    );
    let rendered = render(&command);
    match parse_command(rendered.as_bytes()) {
        Ok(again) => assert_eq!(again, command, "re-rendered as {rendered:?}"),
        Err(e) => panic!("{command:?} re-rendered as {rendered:?}, which does not parse: {e}"),
    }
}

/// No control character (nor DEL) in anything the command borrows: they
/// end up in replies, Received headers and the spool.
fn check_borrowed(command: &Command<'_>) {
    let clean = |s: &str, what: &str| {
        assert!(
            !s.bytes().any(|b| b < 0x20 || b == 0x7f),
            "{what} holds a control character: {s:?}"
        );
    };
    let token = |s: &str, what: &str| {
        clean(s, what);
        assert!(
            !s.is_empty() && !s.contains(' '),
            "{what} is not a token: {s:?}"
        );
    };
    let mailbox = |m: &Mailbox<'_>, what: &str| {
        clean(m.address, what);
        assert!(
            m.address.len() + 2 <= MAX_PATH_LENGTH,
            "{what} longer than a path may be"
        );
        assert_eq!(
            format!("{}@{}", m.local_part, m.domain.as_str()),
            m.address,
            "{what}: local part and domain do not make the address"
        );
        assert!(!m.local_part.is_empty() && !m.domain.as_str().is_empty());
    };
    match command {
        Command::Ehlo(name) | Command::Helo(name) => token(name, "HELO name"),
        Command::Mail { from, params } => {
            if let ReversePath::Mailbox(m) = from {
                mailbox(m, "sender");
            }
            if let Some(envid) = params.envid {
                token(envid, "ENVID");
            }
        }
        Command::Rcpt { to, params } => {
            match to {
                ForwardPath::Mailbox(m) => mailbox(m, "recipient"),
                ForwardPath::Postmaster(p) => {
                    assert!(p.eq_ignore_ascii_case("postmaster"), "postmaster is {p:?}")
                }
            }
            if let Some(orcpt) = params.orcpt {
                token(orcpt, "ORCPT");
            }
        }
        Command::Auth { mechanism, initial } => {
            token(mechanism, "AUTH mechanism");
            if let Some(initial) = initial {
                token(&String::from_utf8_lossy(initial), "AUTH initial response");
            }
        }
        _ => {}
    }
}

/// The command as a client would send it, without the CRLF.
fn render(command: &Command<'_>) -> String {
    let mut s = String::new();
    match command {
        Command::Ehlo(name) => s = format!("EHLO {name}"),
        Command::Helo(name) => s = format!("HELO {name}"),
        Command::Lhlo(name) => s = format!("LHLO {name}"),
        Command::Mail { from, params } => {
            s.push_str("MAIL FROM:");
            match from {
                ReversePath::Null => s.push_str("<>"),
                ReversePath::Mailbox(m) => s = format!("{s}<{}>", m.address),
            }
            if let Some(size) = params.size {
                let _ = write!(s, " SIZE={size}");
            }
            match params.body {
                Some(BodyType::SevenBit) => s.push_str(" BODY=7BIT"),
                Some(BodyType::EightBitMime) => s.push_str(" BODY=8BITMIME"),
                Some(BodyType::BinaryMime) => s.push_str(" BODY=BINARYMIME"),
                None => {}
            }
            if params.smtputf8 {
                s.push_str(" SMTPUTF8");
            }
            match params.ret {
                Some(DsnReturn::Full) => s.push_str(" RET=FULL"),
                Some(DsnReturn::Headers) => s.push_str(" RET=HDRS"),
                None => {}
            }
            if let Some(envid) = params.envid {
                let _ = write!(s, " ENVID={envid}");
            }
        }
        Command::Rcpt { to, params } => {
            match to {
                ForwardPath::Postmaster(p) => s = format!("RCPT TO:<{p}>"),
                ForwardPath::Mailbox(m) => s = format!("RCPT TO:<{}>", m.address),
            }
            if let Some(n) = params.notify {
                let words: Vec<&str> = if n.never {
                    vec!["NEVER"]
                } else {
                    [
                        (n.success, "SUCCESS"),
                        (n.failure, "FAILURE"),
                        (n.delay, "DELAY"),
                    ]
                    .iter()
                    .filter(|(on, _)| *on)
                    .map(|(_, w)| *w)
                    .collect()
                };
                let _ = write!(s, " NOTIFY={}", words.join(","));
            }
            if let Some(orcpt) = params.orcpt {
                let _ = write!(s, " ORCPT={orcpt}");
            }
        }
        Command::Data => s.push_str("DATA"),
        Command::Bdat { size, last } => {
            let _ = write!(s, "BDAT {size}{}", if *last { " LAST" } else { "" });
        }
        Command::Rset => s.push_str("RSET"),
        Command::Noop => s.push_str("NOOP"),
        Command::Quit => s.push_str("QUIT"),
        Command::Vrfy => s.push_str("VRFY someone"),
        Command::Expn => s.push_str("EXPN"),
        Command::Help => s.push_str("HELP"),
        Command::StartTls => s.push_str("STARTTLS"),
        Command::Auth { mechanism, initial } => {
            let _ = write!(s, "AUTH {mechanism}");
            if let Some(initial) = initial {
                let _ = write!(s, " {}", String::from_utf8_lossy(initial));
            }
        }
    }
    s
}

/// The local users the session's policy knows: `unknown@` and `full@`
/// (quota, temporary) and `gone@` (quota, permanent) are refused at RCPT,
/// `small@` has a quota of [`SMALL_QUOTA`] bytes, every other local part
/// is accepted. A user may send as itself only.
#[derive(Debug)]
struct FuzzPolicy;

/// The quota of `small@`.
const SMALL_QUOTA: u64 = 1000;

fn is_small(address: &str) -> bool {
    address
        .split('@')
        .next()
        .is_some_and(|l| l.eq_ignore_ascii_case("small"))
}

impl LocalPolicy for FuzzPolicy {
    fn recipient(&self, address: &str, declared_size: Option<u64>) -> LocalRecipient {
        let local = address.split('@').next().unwrap_or(address);
        match local.to_ascii_lowercase().as_str() {
            "unknown" => LocalRecipient::Unknown,
            "full" => LocalRecipient::MailboxFull { permanent: false },
            "gone" => LocalRecipient::MailboxFull { permanent: true },
            "small" if declared_size.is_some_and(|s| s > SMALL_QUOTA) => {
                LocalRecipient::LargerThanQuota
            }
            _ => LocalRecipient::Accept,
        }
    }

    fn larger_than_quota(&self, address: &str, size: u64) -> bool {
        is_small(address) && size > SMALL_QUOTA
    }

    fn may_send_as(&self, user: &str, sender: &str) -> bool {
        sender.is_empty() || sender.split('@').next() == Some(user)
    }
}

/// How long the chunk-size and config prefix of a session input is.
pub const SESSION_PREFIX: usize = 6;

/// One `ServerSession` fed the input after a [`SESSION_PREFIX`]-byte
/// prefix that chooses the limits, the peer and the chunk sizes, driven as
/// the glue drives it (events answered at once: stores succeed but every
/// fourth and fifth, credentials succeed with the password `right`).
pub fn smtp_session(data: &[u8]) {
    let Some((ctl, input)) = data.split_first_chunk::<SESSION_PREFIX>() else {
        return;
    };
    let bits = ctl[3];
    let config = ServerConfig {
        hostname: "mx.fuzz.test".to_owned(),
        max_line_length: 64 + usize::from(ctl[0]) * 8,
        max_message_size: 16 + usize::from(ctl[1]) * 64,
        max_recipients: 1 + usize::from(ctl[2] % 8),
        max_errors: 1 + usize::from(ctl[2] >> 3),
        max_hops: usize::from(ctl[4] % 4),
        bare_line_endings: if bits & 0x80 == 0 {
            BareLineEndings::Reject
        } else {
            BareLineEndings::Normalize
        },
        // Folding at a small limit half the time: long lines cross it.
        body_line_limit: (ctl[4] & 0x80 != 0).then_some(8 + usize::from(ctl[4] & 0x3f)),
        local_domains: vec!["local.test".to_owned(), "例子.测试".to_owned()],
        starttls: bits & 0x40 != 0,
        timeouts: Timeouts::default(),
        submission: bits & 0x20 != 0,
        allow_plaintext_auth: bits & 0x10 != 0,
        trust_loopback: bits & 0x08 == 0,
        sender_must_match_login: bits & 0x04 != 0,
        allow_address_literals: bits & 0x02 != 0,
        tenant_header: (ctl[4] & 0x80 != 0).then(|| "X-Tenant".to_owned()),
        lmtp: ctl[4] & 0x40 != 0,
    };
    let loopback = ctl[4] & 0x10 != 0;
    let peer = PeerInfo {
        addr: if loopback {
            SocketAddr::from(([127, 0, 0, 1], 40000))
        } else {
            SocketAddr::from(([192, 0, 2, 1], 40000))
        },
        may_relay: bits & 0x01 != 0,
        tls: ctl[4] & 0x20 != 0,
    };
    let mut rng = Rng::from_bytes(ctl);
    let max_chunk = 1 + usize::from(ctl[5]) * 4;
    let chunked = SessionRun::new(config.clone(), peer).run(input, || rng.chunk(max_chunk));
    // Pipelining and chunk boundaries change nothing: the same bytes fed
    // at once give the same replies and messages. (Not across STARTTLS,
    // which drops whatever was read before the handshake.)
    let whole = SessionRun::new(config, peer).run(input, || usize::MAX);
    if !chunked.tls && !whole.tls {
        assert!(
            chunked.transcript == whole.transcript,
            "fed in chunks the session answered {:?}, fed at once {:?}",
            String::from_utf8_lossy(&chunked.transcript),
            String::from_utf8_lossy(&whole.transcript)
        );
        assert!(
            chunked.messages == whole.messages,
            "fed in chunks and at once, the session produced different messages"
        );
    }
}

/// What one run of a session produced.
struct Outcome {
    transcript: Vec<u8>,
    messages: Vec<crate::smtp::Message>,
    /// STARTTLS was accepted.
    tls: bool,
}

/// One session and what was seen of it.
struct SessionRun {
    session: ServerSession,
    config: ServerConfig,
    may_relay: bool,
    now: Instant,
    wall: SystemTime,
    /// Everything the session wrote.
    transcript: Vec<u8>,
    /// Stores answered Ok (each must be followed by its 250 with the id).
    queued: usize,
    stores: usize,
    closed: bool,
    counters: SessionCounters,
    messages: Vec<crate::smtp::Message>,
    tls: bool,
}

const QUEUE_ID: &str = "FUZZQ";

impl SessionRun {
    fn new(config: ServerConfig, peer: PeerInfo) -> Self {
        let now = Instant::now();
        let session =
            ServerSession::new(Rc::new(config.clone()), peer, now).with_policy(Rc::new(FuzzPolicy));
        SessionRun {
            session,
            config,
            may_relay: peer.may_relay,
            now,
            wall: UNIX_EPOCH + Duration::from_secs(1_700_000_000),
            transcript: Vec::new(),
            queued: 0,
            stores: 0,
            closed: false,
            counters: SessionCounters::default(),
            messages: Vec::new(),
            tls: false,
        }
    }

    fn run(mut self, input: &[u8], mut next_chunk: impl FnMut() -> usize) -> Outcome {
        let mut pending: Vec<u8> = Vec::new();
        let mut fed = 0;
        loop {
            self.pump(&mut pending);
            if self.closed || fed == input.len() {
                break;
            }
            // The glue holds less than one command line: the session
            // consumes (or discards) every complete or over-long line.
            assert!(
                pending.len() < self.config.max_line_length.max(1),
                "the glue would have to hold {} bytes",
                pending.len()
            );
            let k = next_chunk().clamp(1, input.len() - fed);
            pending.extend_from_slice(&input[fed..fed + k]);
            fed += k;
        }
        if !self.closed {
            self.session
                .handle_timeout(self.now + Duration::from_secs(86_400));
            self.drain_output();
            assert!(
                self.session.is_closed(),
                "a day without input did not close the session"
            );
        }
        self.check_transcript();
        Outcome {
            transcript: self.transcript,
            messages: self.messages,
            tls: self.tls,
        }
    }

    /// Feeds `pending` and answers events until the session takes nothing more.
    fn pump(&mut self, pending: &mut Vec<u8>) {
        loop {
            let n = self.session.handle_input(pending, self.now, self.wall);
            assert!(n <= pending.len(), "consumed more than it was given");
            pending.drain(..n);
            assert!(
                self.session.output().len() <= OUTPUT_HARD_LIMIT + 1024,
                "output unbounded"
            );
            let mut acted = false;
            while let Some(event) = self.session.poll_event() {
                acted = true;
                match event {
                    Event::Message(m) => {
                        self.check_message(&m);
                        self.messages.push(m);
                        // The reply to the message must wait for the store.
                        self.drain_output();
                        self.stores += 1;
                        if self.config.lmtp {
                            self.deliver(self.messages.len() - 1);
                            continue;
                        }
                        let result = match self.stores % 5 {
                            3 => Err(StoreFailure::DiskFull),
                            4 => Err(StoreFailure::Temporary),
                            _ => {
                                self.queued += 1;
                                Ok(QUEUE_ID)
                            }
                        };
                        self.session.handle_stored(result, self.now);
                    }
                    Event::StartTls => {
                        self.tls = true;
                        // RFC 3207 4: nothing read before the handshake counts.
                        pending.clear();
                        self.drain_output();
                        self.session.handle_tls_established(self.now);
                    }
                    Event::Authenticate(credentials) => {
                        let outcome = match credentials.password.expose() {
                            "right" => AuthOutcome::Success {
                                user: credentials.username.clone(),
                            },
                            "down" => AuthOutcome::Temporary,
                            _ => AuthOutcome::Failed,
                        };
                        self.session.handle_auth_result(outcome, self.now);
                    }
                    Event::Close => self.closed = true,
                }
            }
            self.drain_output();
            if self.closed || (n == 0 && !acted) {
                break;
            }
        }
    }

    /// LMTP: a verdict per recipient of message `index`, delivered (some
    /// with a forwarded copy named by the queue id) or refused in turn.
    fn deliver(&mut self, index: usize) {
        let count = self.messages[index].envelope.recipients.len();
        let verdicts: Vec<RecipientDelivery> = (0..count)
            .map(|i| match (self.stores + i) % 3 {
                0 => RecipientDelivery::Delivered { forwarded_as: None },
                1 => {
                    self.queued += 1;
                    RecipientDelivery::Delivered {
                        forwarded_as: Some(QUEUE_ID.to_owned()),
                    }
                }
                _ => RecipientDelivery::Refused("452 4.2.2 x: mailbox full".to_owned()),
            })
            .collect();
        self.session.handle_delivered(&verdicts, self.now);
    }

    /// Reads the output as the glue writes it, and the counters with it.
    fn drain_output(&mut self) {
        let taken = self.session.take_counters();
        self.counters.transactions += taken.transactions;
        for (sum, n) in self.counters.replies.iter_mut().zip(taken.replies) {
            *sum += n;
        }
        let out = self.session.output();
        self.transcript.extend_from_slice(out);
        let len = out.len();
        self.session.consume_output(len);
    }

    /// What a session hands to the spool: bounded, and never mail for a
    /// stranger to a domain that is not ours (no open relay).
    fn check_message(&self, m: &crate::smtp::Message) {
        let e = &m.envelope;
        assert!(
            m.body.len() <= self.config.max_message_size + 1024,
            "body of {} bytes past the limit",
            m.body.len()
        );
        assert!(
            !e.recipients.is_empty() && e.recipients.len() <= self.config.max_recipients,
            "{} recipients",
            e.recipients.len()
        );
        assert!(
            m.body.starts_with(b"Received: "),
            "the body does not start with our Received header"
        );
        // LMTP relays for nobody.
        let trusted =
            !self.config.lmtp && (self.may_relay || self.session.authenticated_user().is_some());
        for r in &e.recipients {
            assert!(
                !r.address.bytes().any(|b| b < 0x20 || b == 0x7f),
                "control character in recipient {:?}",
                r.address
            );
            let (local, domain) = match r.address.rsplit_once('@') {
                Some((l, d)) => (l, Some(d)),
                None => (r.address.as_str(), None),
            };
            let domain_is_local = domain.is_some_and(|d| {
                let d = d.strip_suffix('.').unwrap_or(d);
                self.config
                    .local_domains
                    .iter()
                    .any(|l| l.eq_ignore_ascii_case(d))
            });
            match domain {
                None => assert!(
                    local.eq_ignore_ascii_case("postmaster"),
                    "recipient without a domain: {:?}",
                    r.address
                ),
                Some(d) if d.starts_with('[') => assert!(
                    trusted || self.config.allow_address_literals,
                    "address literal {:?} accepted from a stranger",
                    r.address
                ),
                Some(_) => assert!(
                    trusted || domain_is_local,
                    "relayed to {:?} for a stranger",
                    r.address
                ),
            }
            if domain_is_local || domain.is_none() {
                // No quota can be over in a message handed on (LMTP
                // refuses that recipient's copy alone, after delivery).
                assert!(
                    self.config.lmtp
                        || !(is_small(&r.address) && m.body.len() as u64 > SMALL_QUOTA),
                    "a message larger than {:?}'s quota was accepted",
                    r.address
                );
                assert_eq!(
                    FuzzPolicy.recipient(&r.address, None),
                    LocalRecipient::Accept,
                    "a local recipient the policy refused was accepted: {:?}",
                    r.address
                );
            }
        }
    }

    /// Every reply is CRLF lines `ddd text` / `ddd-text` (RFC 5321 4.2),
    /// of at most 512 octets (4.5.3.1.5), with a code from 2xx to 5xx;
    /// a multi-line reply keeps one code; each successful store got one
    /// `250` naming its queue id, and nothing else names it.
    fn check_transcript(&self) {
        let lines = crlf_lines(&self.transcript, "SMTP");
        let mut open: Option<&[u8]> = None;
        let mut replies = 0u64;
        for line in &lines {
            let shown = String::from_utf8_lossy(line);
            assert!(
                line.len() + 2 <= 512,
                "reply line over 512 octets: {shown:?}"
            );
            let code = line.get(..3).unwrap_or_default();
            assert!(
                code.len() == 3
                    && (b'2'..=b'5').contains(&code[0])
                    && code[1..].iter().all(u8::is_ascii_digit),
                "reply line without a code: {shown:?}"
            );
            if let Some(c) = open {
                assert_eq!(c, code, "a multi-line reply changed its code: {shown:?}");
            }
            match line.get(3) {
                Some(b'-') => open = Some(code),
                Some(b' ') | None => {
                    open = None;
                    replies += 1;
                }
                Some(_) => panic!("reply code not followed by SP or '-': {shown:?}"),
            }
        }
        assert!(open.is_none(), "a multi-line reply was left open");
        let text = String::from_utf8_lossy(&self.transcript);
        let queued = text.matches(QUEUE_ID).count();
        assert_eq!(
            queued, self.queued,
            "{} stores succeeded but {queued} replies name the queue id",
            self.queued
        );
        assert_eq!(
            self.counters.replies.iter().sum::<u64>(),
            replies,
            "the reply counters disagree with the transcript"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_render_back_to_themselves() {
        smtp_command(
            b"MAIL FROM:<a@b.example> SIZE=10 BODY=8BITMIME SMTPUTF8 RET=HDRS ENVID=x+2B\r\n\
              RCPT TO:<@r.example:\"q d\"@local.test> NOTIFY=DELAY,SUCCESS ORCPT=rfc822;a@b\r\n\
              BDAT 18446744073709551616 last\r\nAUTH PLAIN =\r\nRCPT TO:<POSTMASTER>\r\n",
        );
    }

    #[test]
    fn a_session_with_pipelining_bdat_and_auth_passes() {
        let mut input = vec![b'@', b'@', 0x13, 0x31, 0, 0x40];
        input.extend_from_slice(
            b"EHLO c.example\r\nAUTH PLAIN AGFsaWNlAHJpZ2h0\r\n\
              MAIL FROM:<alice@local.test>\r\nRCPT TO:<x@elsewhere.example>\r\n\
              RCPT TO:<unknown@local.test>\r\nBDAT 4 LAST\r\nab\r\n\
              MAIL FROM:<>\r\nRCPT TO:<Postmaster>\r\nDATA\r\nhi\r\n.\r\nQUIT\r\n",
        );
        smtp_session(&input);
    }
}
