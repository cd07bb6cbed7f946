//! Fuzz target of the POP3 core: a whole session fed bytes split at arbitrary points, its
//! requests answered by a fake driver (two users, four messages, failures chosen by the input),
//! and the RETR/TOP encoder on the input itself. Invariants: every reply line starts with `+OK`
//! or `-ERR` (or is SASL's `+ `, or a line of a listing that a `.` closes), lines of at most 512
//! octets, requests that name existing messages, input taken only up to a bound, and RETR
//! output that un-stuffs back to the message. It refuses to touch a real maildrop.

use std::rc::Rc;
use std::time::{Duration, Instant};

use super::{crlf_lines, Rng};
use crate::pop3::{
    AuthOutcome, MaildropError, MessageEncoder, MessageInfo, PeerInfo, Pop3Config, Request,
    Session, UniqueId, UpdateError,
};

/// Commands and line-ending games for the mutator.
pub const TOKENS: &[&[u8]] = &[
    b"USER tim\r\n",
    b"PASS tanstaaf\r\n",
    b"PASS wrong\r\n",
    b"AUTH PLAIN\r\n",
    b"AUTH PLAIN AHRpbQB0YW5zdGFhZg==\r\n",
    b"AHRpbQB0YW5zdGFhZg==\r\n",
    b"*\r\n",
    b"AUTH\r\n",
    b"CAPA\r\n",
    b"STLS\r\n",
    b"STAT\r\n",
    b"LIST\r\n",
    b"LIST 2\r\n",
    b"UIDL\r\n",
    b"UIDL 1\r\n",
    b"RETR 1\r\n",
    b"TOP 2 1\r\n",
    b"TOP 1 4294967295\r\n",
    b"DELE 3\r\n",
    b"RSET\r\n",
    b"NOOP\r\n",
    b"QUIT\r\n",
    b"4294967296",
    b" ",
    b"\r\n",
    b"\n",
    b"\r",
    b"\0",
    b".",
    b"\r\n.\r\n",
];

/// Length of the configuration-and-chunking prefix of an input.
pub const PREFIX: usize = 4;

/// The messages of the fake maildrop: LF and CRLF line ends, a line
/// that is a lone dot, no final newline, an empty message.
const MESSAGES: [&[u8]; 4] = [
    b"Subject: one\n\nfirst body\n.\n..two dots\n",
    b"Subject: two\r\nX: y\r\n\r\nl1\r\nl2\r\nl3\r\n",
    b"Subject: three\n\nno final newline\r",
    b"",
];

/// A session after a [`PREFIX`]-byte prefix choosing the limits, the
/// peer, the driver's failures and the chunk sizes; then the input itself
/// through the RETR and TOP encoders.
pub fn pop3_session(data: &[u8]) {
    let Some((ctl, input)) = data.split_first_chunk::<PREFIX>() else {
        return;
    };
    let bits = ctl[2];
    let config = Pop3Config {
        max_line_length: 8 + usize::from(ctl[0]) * 2,
        max_auth_line_length: 8 + usize::from(ctl[1]) * 8,
        max_errors: 1 + usize::from(bits & 0x0f),
        idle_timeout: Duration::from_secs(600),
        stls: bits & 0x10 != 0,
    };
    let peer = PeerInfo {
        tls: bits & 0x20 != 0,
        plaintext_allowed: bits & 0x40 != 0,
    };
    let mut rng = Rng::from_bytes(ctl);
    let max_chunk = 1 + usize::from(ctl[3]);
    let chunked = Run::new(config.clone(), peer, ctl[1]).feed(input, || rng.chunk(max_chunk));
    // Chunk boundaries change nothing (RFC 2449 6.6, PIPELINING), except
    // across STLS, which drops what was read before the handshake.
    let whole = Run::new(config, peer, ctl[1]).feed(input, || usize::MAX);
    if !chunked.tls && !whole.tls {
        assert!(
            chunked.transcript == whole.transcript,
            "fed in chunks the session answered {:?}, fed at once {:?}",
            String::from_utf8_lossy(&chunked.transcript),
            String::from_utf8_lossy(&whole.transcript)
        );
    }

    let top = u32::from(ctl[3] % 8);
    check_encoder(input, None, &mut rng);
    check_encoder(input, Some(top), &mut rng);
}

struct Run {
    session: Session,
    now: Instant,
    /// Everything the session wrote (message bodies apart).
    transcript: Vec<u8>,
    /// Driver failures, from the prefix.
    faults: u8,
    /// How many requests were answered, to vary the failures.
    answered: u32,
    /// The size of the maildrop handed over, for the checks.
    opened: Option<usize>,
    closed: bool,
    /// STLS was accepted.
    tls: bool,
}

impl Run {
    fn new(config: Pop3Config, peer: PeerInfo, faults: u8) -> Self {
        let now = Instant::now();
        let mut run = Run {
            session: Session::new(Rc::new(config), peer, now),
            now,
            transcript: Vec::new(),
            faults,
            answered: 0,
            opened: None,
            closed: false,
            tls: false,
        };
        run.service();
        run
    }

    /// Feeds `input` in chunks of `next_chunk()` bytes, then lets the
    /// autologout timer expire; checks the transcript.
    fn feed(mut self, input: &[u8], mut next_chunk: impl FnMut() -> usize) -> Self {
        let mut pending = Vec::new();
        let mut fed = 0;
        loop {
            self.pump(&mut pending);
            if self.closed || fed == input.len() {
                break;
            }
            let k = next_chunk().clamp(1, input.len() - fed);
            pending.extend_from_slice(&input[fed..fed + k]);
            fed += k;
        }
        if !self.closed {
            self.session
                .handle_timeout(self.now + Duration::from_secs(86_400));
            self.service();
            assert!(
                self.session.is_closed(),
                "the autologout timer did not close"
            );
        }
        check_transcript(&self.transcript);
        self
    }

    fn pump(&mut self, pending: &mut Vec<u8>) {
        loop {
            let n = self.session.handle_input(pending, self.now);
            assert!(n <= pending.len(), "took more than it was given");
            pending.drain(..n);
            let acted = self.service();
            if self.closed {
                pending.clear();
                return;
            }
            if !acted && (pending.is_empty() || n == 0) {
                break;
            }
        }
        // Every request is answered at once and all output read, so the
        // session has taken everything: it never waits for more input
        // with a full buffer.
        assert!(
            pending.is_empty(),
            "{} bytes left untaken with nothing outstanding",
            pending.len()
        );
    }

    /// Sends all output and answers requests until neither is left.
    fn service(&mut self) -> bool {
        let mut acted = false;
        loop {
            let out = self.session.output();
            if !out.is_empty() {
                self.transcript.extend_from_slice(out);
                let len = out.len();
                self.session.consume_output(len);
                acted = true;
                continue;
            }
            let Some(request) = self.session.poll_request() else {
                break;
            };
            acted = true;
            self.answer(request);
        }
        acted
    }

    fn fault(&mut self, bit: u8) -> bool {
        self.answered += 1;
        self.faults & bit != 0 && self.answered.is_multiple_of(3)
    }

    fn answer(&mut self, request: Request) {
        let now = self.now;
        match request {
            Request::Authenticate { user, password, .. } => {
                // RFC 4616 2: authcid is 1*SAFE, any UTF-8 but NUL.
                assert!(
                    !user.is_empty() && !user.contains('\0'),
                    "user name {user:?}"
                );
                let outcome = if self.fault(0x01) {
                    AuthOutcome::TemporaryFailure
                } else if user.eq_ignore_ascii_case("tim") && password.expose() == "tanstaaf" {
                    AuthOutcome::Ok {
                        user: "tim".to_owned(),
                    }
                } else {
                    AuthOutcome::Failed
                };
                self.session.auth_result(outcome, now);
            }
            Request::OpenMaildrop { user } => {
                assert_eq!(
                    user, "tim",
                    "a maildrop opened for a name not authenticated"
                );
                let result = if self.fault(0x02) {
                    Err(MaildropError::InUse)
                } else if self.fault(0x04) {
                    Err(MaildropError::Temporary)
                } else {
                    self.opened = Some(MESSAGES.len());
                    Ok(MESSAGES
                        .iter()
                        .enumerate()
                        .map(|(i, m)| MessageInfo {
                            size: m.len() as u64,
                            uid: UniqueId::new(format!("uid-{i}")).expect("a valid unique id"),
                        })
                        .collect())
                };
                self.session.maildrop_opened(result, now);
            }
            Request::SendMessage { index, top_lines } => {
                let count = self
                    .opened
                    .expect("a message sent before the maildrop was opened");
                assert!(index < count, "message index {index} of {count}");
                assert!(
                    self.transcript.ends_with(b"\r\n"),
                    "the +OK before a message was not flushed"
                );
                let out = MessageEncoder::encode_all(MESSAGES[index], top_lines);
                assert!(out.ends_with(b".\r\n"), "a message without its terminator");
                self.session.message_sent(now);
            }
            Request::Update { deleted } => {
                let count = self
                    .opened
                    .expect("an UPDATE before the maildrop was opened");
                assert!(
                    deleted.windows(2).all(|w| w[0] < w[1]),
                    "deleted indexes not ascending: {deleted:?}"
                );
                assert!(deleted.iter().all(|&i| i < count), "{deleted:?} of {count}");
                let result = if self.fault(0x08) {
                    Err(UpdateError)
                } else {
                    Ok(())
                };
                self.session.update_done(result, now);
            }
            Request::StartTls => {
                self.tls = true;
                assert!(
                    self.transcript.ends_with(b"+OK Begin TLS negotiation\r\n"),
                    "STLS without its +OK last"
                );
                self.session.tls_established(now);
            }
            Request::Close => self.closed = true,
        }
    }
}

/// Status lines, SASL challenges, and listings closed by ".": RFC 1939 3,
/// RFC 2449 4 (512 octets), RFC 5034 4.
fn check_transcript(out: &[u8]) {
    let lines = crlf_lines(out, "POP3");
    let mut in_listing = false;
    for line in lines {
        let shown = String::from_utf8_lossy(line);
        assert!(line.len() + 2 <= 512, "line over 512 octets: {shown:?}");
        if line.starts_with(b"+OK") || line.starts_with(b"-ERR") {
            assert!(
                matches!(line.get(3), None | Some(b' ')) || line.starts_with(b"-ERR"),
                "status not followed by SP: {shown:?}"
            );
            if let Some(rest) = line.strip_prefix(b"-ERR [") {
                assert!(rest.contains(&b']'), "unclosed response code: {shown:?}");
            }
            in_listing = line.starts_with(b"+OK");
        } else if line.starts_with(b"+ ") || line == b"+" {
            in_listing = false;
        } else if line == b"." {
            assert!(in_listing, "a \".\" outside a listing");
            in_listing = false;
        } else {
            assert!(in_listing, "a line outside any response: {shown:?}");
            assert!(
                !line.starts_with(b"."),
                "listing line not dot-stuffed: {shown:?}"
            );
            assert!(
                line.iter().all(|&b| (0x20..0x7f).contains(&b)),
                "listing line with non-printable octets: {shown:?}"
            );
        }
    }
}

/// RETR (or TOP) output for `message` fed in random chunks: the same as
/// at once, dot-terminated, and for RETR un-stuffed it is the message with
/// CRLF line ends; TOP's lines are a prefix of RETR's.
fn check_encoder(message: &[u8], top: Option<u32>, rng: &mut Rng) {
    let whole = MessageEncoder::encode_all(message, top);
    let mut encoder = MessageEncoder::new(top);
    let mut chunked = Vec::new();
    let mut at = 0;
    while at < message.len() {
        let k = rng.chunk(64).min(message.len() - at);
        encoder.encode(&message[at..at + k], &mut chunked);
        at += k;
    }
    encoder.finish(&mut chunked);
    assert_eq!(whole, chunked, "chunked encoding differs from whole");

    let body = whole
        .strip_suffix(b".\r\n")
        .expect("encoded message without its terminator");
    assert!(
        body.is_empty() || body.ends_with(b"\r\n"),
        "last line without CRLF"
    );
    let mut unstuffed = Vec::with_capacity(body.len());
    for line in body.split_inclusive(|&b| b == b'\n') {
        assert!(line.ends_with(b"\r\n"), "bare LF in {line:?}");
        assert!(line != b".\r\n", "a lone dot inside the message");
        unstuffed.extend_from_slice(line.strip_prefix(b".").unwrap_or(line));
    }
    let expected = crlf_normalized(message);
    match top {
        None => assert_eq!(unstuffed, expected, "RETR does not give back the message"),
        Some(_) => assert!(
            expected.starts_with(&unstuffed),
            "TOP is not a prefix of the message"
        ),
    }
}

/// What RETR should send before stuffing: every LF preceded by CR, a
/// final line end added, a CR at the very end taken as the line end.
fn crlf_normalized(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + 8);
    for (i, &b) in message.iter().enumerate() {
        if b == b'\n' && (i == 0 || message[i - 1] != b'\r') {
            out.push(b'\r');
        }
        out.push(b);
    }
    if out.ends_with(b"\r") {
        out.push(b'\n');
    } else if !out.is_empty() && !out.ends_with(b"\n") {
        out.extend_from_slice(b"\r\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_whole_session_passes() {
        let mut input = vec![200, 200, 0x40, 7];
        input.extend_from_slice(
            b"CAPA\r\nUSER tim\r\nPASS tanstaaf\r\nSTAT\r\nLIST\r\nUIDL\r\nRETR 1\r\n\
              TOP 2 1\r\nDELE 3\r\nQUIT\r\n",
        );
        pop3_session(&input);
    }
}
