//! Whole-session transcripts of the POP3 core driven by a fake driver (fake credential store,
//! fake maildrop, messages sent through the real encoder). It refuses to test single modules;
//! each module keeps its own unit tests.

use std::rc::Rc;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::session::OUTPUT_SOFT_LIMIT;
use super::*;
use crate::sasl::encode_base64;

/// How the fake maildrop answers `OpenMaildrop`.
#[derive(Clone, Copy, PartialEq, Eq)]
enum DropAnswer {
    Open,
    Fail(MaildropError),
}

struct Fake {
    session: Session,
    now: Instant,
    /// Everything the server sent, messages included.
    transcript: String,
    /// Requests as seen, in order, in a compact text form.
    log: Vec<String>,
    pending: Vec<u8>,
    users: Vec<(&'static str, &'static str)>,
    messages: Vec<Vec<u8>>,
    drop_answer: DropAnswer,
    auth_unavailable: bool,
    update_fails: bool,
    /// Answer requests at once; off to look at the session mid-request.
    auto: bool,
}

fn messages() -> Vec<Vec<u8>> {
    vec![
        b"Subject: one\n\nfirst body\n.dot line\n".to_vec(),
        b"Subject: two\r\nX: y\r\n\r\nl1\r\nl2\r\nl3\r\n".to_vec(),
        b"Subject: three\n\nno final newline".to_vec(),
    ]
}

/// The size RFC 1939 wants: CRLF line ends, not dot-stuffed, final CRLF.
fn wire_size(message: &[u8]) -> u64 {
    let mut size = 0;
    let mut prev = 0;
    for &b in message {
        if b == b'\n' && prev != b'\r' {
            size += 1;
        }
        size += 1;
        prev = b;
    }
    if !message.is_empty() && prev != b'\n' {
        size += 2;
    }
    size
}

impl Fake {
    fn with(config: Pop3Config, peer: PeerInfo) -> Self {
        let now = Instant::now();
        let mut fake = Fake {
            session: Session::new(Rc::new(config), peer, now),
            now,
            transcript: String::new(),
            log: Vec::new(),
            pending: Vec::new(),
            users: vec![("tim", "tanstaaf"), ("ann", "pass word")],
            messages: messages(),
            drop_answer: DropAnswer::Open,
            auth_unavailable: false,
            update_fails: false,
            auto: true,
        };
        fake.service();
        fake
    }

    /// A loopback (or TLS) client: plaintext logins allowed.
    fn secure() -> Self {
        Fake::with(
            Pop3Config::default(),
            PeerInfo {
                tls: false,
                plaintext_allowed: true,
            },
        )
    }

    /// A remote client without TLS on a server with a certificate.
    fn insecure() -> Self {
        Fake::with(
            Pop3Config {
                stls: true,
                ..Pop3Config::default()
            },
            PeerInfo::default(),
        )
    }

    fn feed(&mut self, bytes: &[u8]) {
        self.pending.extend_from_slice(bytes);
        self.run();
    }

    fn send(&mut self, line: &str) {
        self.feed(format!("{line}\r\n").as_bytes());
    }

    fn run(&mut self) {
        loop {
            let n = self.session.handle_input(&self.pending, self.now);
            self.pending.drain(..n);
            let acted = self.service();
            if !acted && (self.pending.is_empty() || n == 0) {
                break;
            }
        }
    }

    /// Sends all output and answers requests until neither is left.
    fn service(&mut self) -> bool {
        let mut acted = false;
        loop {
            let out = self.session.output().to_vec();
            if !out.is_empty() {
                self.transcript.push_str(&String::from_utf8_lossy(&out));
                self.session.consume_output(out.len());
                acted = true;
                continue;
            }
            if !self.auto {
                break;
            }
            let Some(request) = self.session.poll_request() else {
                break;
            };
            acted = true;
            self.answer(request);
        }
        acted
    }

    fn answer(&mut self, request: Request) {
        let now = self.now;
        match request {
            Request::Authenticate {
                user,
                password,
                mechanism,
            } => {
                self.log
                    .push(format!("auth {user} {:?} {mechanism:?}", password.expose()));
                let outcome = if self.auth_unavailable {
                    AuthOutcome::TemporaryFailure
                } else if self
                    .users
                    .iter()
                    .any(|&(u, p)| u == user && p == password.expose())
                {
                    AuthOutcome::Ok {
                        user: user.to_ascii_lowercase(),
                    }
                } else {
                    AuthOutcome::Failed
                };
                self.session.auth_result(outcome, now);
            }
            Request::OpenMaildrop { user } => {
                self.log.push(format!("open {user}"));
                let result = match self.drop_answer {
                    DropAnswer::Open => Ok(self
                        .messages
                        .iter()
                        .enumerate()
                        .map(|(i, m)| MessageInfo {
                            size: wire_size(m),
                            uid: UniqueId::new(format!("uid-{i}")).unwrap(),
                        })
                        .collect()),
                    DropAnswer::Fail(e) => Err(e),
                };
                self.session.maildrop_opened(result, now);
            }
            Request::SendMessage { index, top_lines } => {
                self.log.push(format!("send {index} {top_lines:?}"));
                // The "+OK" was flushed by `service` before this request.
                let mut encoder = MessageEncoder::new(top_lines);
                let mut out = Vec::new();
                // Feed in small chunks, as a file read would.
                for chunk in self.messages[index].chunks(5) {
                    encoder.encode(chunk, &mut out);
                }
                encoder.finish(&mut out);
                self.transcript.push_str(&String::from_utf8_lossy(&out));
                self.session.message_sent(now);
            }
            Request::Update { deleted } => {
                self.log.push(format!("update {deleted:?}"));
                let result = if self.update_fails {
                    Err(UpdateError)
                } else {
                    Ok(())
                };
                self.session.update_done(result, now);
            }
            Request::StartTls => {
                self.log.push("starttls".to_owned());
                // A driver drops plaintext it has not fed yet.
                self.pending.clear();
                self.session.tls_established(now);
            }
            Request::Close => self.log.push("close".to_owned()),
        }
    }

    /// The transcript since the last call.
    fn take(&mut self) -> String {
        std::mem::take(&mut self.transcript)
    }

    fn login(&mut self) {
        self.send("USER tim");
        self.send("PASS tanstaaf");
        let t = self.take();
        assert!(
            t.ends_with("+OK Logged in, 3 messages (109 octets)\r\n"),
            "{t}"
        );
    }
}

const GREETING: &str = "+OK spate POP3 ready\r\n";

#[test]
fn sizes_of_the_fixture() {
    let sizes: Vec<u64> = messages().iter().map(|m| wire_size(m)).collect();
    // "Subject: one\r\n\r\nfirst body\r\n.dot line\r\n" and so on.
    assert_eq!(sizes, vec![39, 34, 36]);
}

#[test]
fn greeting_and_capa() {
    let mut fake = Fake::insecure();
    fake.send("CAPA");
    assert_eq!(
        fake.take(),
        format!(
            "{GREETING}+OK Capability list follows\r\nTOP\r\nUIDL\r\nRESP-CODES\r\n\
             AUTH-RESP-CODE\r\nPIPELINING\r\nSTLS\r\nIMPLEMENTATION spate\r\n.\r\n"
        )
    );
    let mut fake = Fake::secure();
    fake.send("capa");
    assert_eq!(
        fake.take(),
        format!(
            "{GREETING}+OK Capability list follows\r\nTOP\r\nUIDL\r\nUSER\r\nSASL PLAIN\r\n\
             RESP-CODES\r\nAUTH-RESP-CODE\r\nPIPELINING\r\nIMPLEMENTATION spate\r\n.\r\n"
        )
    );
}

#[test]
fn full_transaction() {
    let mut fake = Fake::secure();
    fake.take();
    fake.send("USER tim");
    fake.send("PASS tanstaaf");
    assert_eq!(
        fake.take(),
        "+OK Send PASS\r\n+OK Logged in, 3 messages (109 octets)\r\n"
    );
    fake.send("STAT");
    fake.send("LIST");
    fake.send("LIST 2");
    fake.send("UIDL");
    fake.send("UIDL 3");
    assert_eq!(
        fake.take(),
        "+OK 3 109\r\n\
         +OK 3 messages (109 octets)\r\n1 39\r\n2 34\r\n3 36\r\n.\r\n\
         +OK 2 34\r\n\
         +OK Unique-ID listing follows\r\n1 uid-0\r\n2 uid-1\r\n3 uid-2\r\n.\r\n\
         +OK 3 uid-2\r\n"
    );
    fake.send("RETR 1");
    assert_eq!(
        fake.take(),
        "+OK 39 octets\r\nSubject: one\r\n\r\nfirst body\r\n..dot line\r\n.\r\n"
    );
    fake.send("TOP 2 1");
    assert_eq!(
        fake.take(),
        "+OK Top of message follows\r\nSubject: two\r\nX: y\r\n\r\nl1\r\n.\r\n"
    );
    fake.send("RETR 3");
    assert_eq!(
        fake.take(),
        "+OK 36 octets\r\nSubject: three\r\n\r\nno final newline\r\n.\r\n"
    );
    fake.send("DELE 2");
    fake.send("STAT");
    fake.send("LIST");
    fake.send("UIDL");
    fake.send("LIST 2");
    fake.send("UIDL 2");
    fake.send("RETR 2");
    fake.send("TOP 2 0");
    fake.send("DELE 2");
    assert_eq!(
        fake.take(),
        "+OK Message 2 deleted\r\n\
         +OK 2 75\r\n\
         +OK 2 messages (75 octets)\r\n1 39\r\n3 36\r\n.\r\n\
         +OK Unique-ID listing follows\r\n1 uid-0\r\n3 uid-2\r\n.\r\n\
         -ERR Message 2 already deleted\r\n\
         -ERR Message 2 already deleted\r\n\
         -ERR Message 2 already deleted\r\n\
         -ERR Message 2 already deleted\r\n\
         -ERR Message 2 already deleted\r\n"
    );
    fake.send("RSET");
    fake.send("NOOP");
    fake.send("DELE 3");
    fake.send("DELE 1");
    fake.send("QUIT");
    assert_eq!(
        fake.take(),
        "+OK Maildrop has 3 messages (109 octets)\r\n+OK\r\n\
         +OK Message 3 deleted\r\n+OK Message 1 deleted\r\n\
         +OK spate POP3 server signing off\r\n"
    );
    assert_eq!(
        fake.log,
        vec![
            "auth tim \"tanstaaf\" UserPass",
            "open tim",
            "send 0 None",
            "send 1 Some(1)",
            "send 2 None",
            "update [0, 2]",
            "close",
        ]
    );
    assert!(fake.session.is_closed());
    // Nothing more is read.
    assert_eq!(fake.session.handle_input(b"NOOP\r\n", fake.now), 6);
    assert_eq!(fake.session.output(), b"");
}

#[test]
fn update_failure_is_reported() {
    let mut fake = Fake::secure();
    fake.login();
    fake.update_fails = true;
    fake.send("DELE 1");
    fake.send("QUIT");
    assert_eq!(
        fake.take(),
        "+OK Message 1 deleted\r\n-ERR [SYS/TEMP] Some deleted messages not removed\r\n"
    );
    assert_eq!(fake.log[2..], ["update [0]", "close"]);
}

#[test]
fn quit_without_deletions_still_updates_with_none() {
    let mut fake = Fake::secure();
    fake.login();
    fake.send("QUIT");
    assert_eq!(fake.log[2..], ["update []", "close"]);
}

#[test]
fn bad_message_numbers() {
    let mut fake = Fake::secure();
    fake.login();
    for line in [
        "RETR 0",
        "RETR 4",
        "LIST 4294967295",
        "TOP 9 1",
        "RETR 4294967296",
        "DELE -1",
        "UIDL x",
        "RETR",
    ] {
        fake.send(line);
    }
    assert_eq!(
        fake.take(),
        "-ERR No such message\r\n-ERR No such message\r\n-ERR No such message\r\n\
         -ERR No such message\r\n-ERR Invalid number\r\n-ERR Invalid number\r\n\
         -ERR Invalid number\r\n-ERR Syntax: RETR msg\r\n"
    );
    assert!(!fake.session.is_closed());
}

#[test]
fn top_variants() {
    let mut fake = Fake::secure();
    fake.login();
    fake.send("TOP 2 0");
    fake.send("TOP 2 100");
    fake.send("TOP 1 1");
    assert_eq!(
        fake.take(),
        "+OK Top of message follows\r\nSubject: two\r\nX: y\r\n\r\n.\r\n\
         +OK Top of message follows\r\nSubject: two\r\nX: y\r\n\r\nl1\r\nl2\r\nl3\r\n.\r\n\
         +OK Top of message follows\r\nSubject: one\r\n\r\nfirst body\r\n.\r\n"
    );
}

#[test]
fn wrong_password() {
    let mut fake = Fake::secure();
    fake.take();
    fake.send("USER tim");
    fake.send("PASS wrong");
    fake.send("PASS tanstaaf");
    fake.send("STAT");
    assert_eq!(
        fake.take(),
        "+OK Send PASS\r\n-ERR [AUTH] Authentication failed\r\n-ERR Send USER first\r\n\
         -ERR Command not valid in this state\r\n"
    );
    fake.send("USER ann");
    fake.send("PASS pass word");
    assert!(fake
        .take()
        .ends_with("+OK Logged in, 3 messages (109 octets)\r\n"));
    assert_eq!(fake.log[1], "auth ann \"pass word\" UserPass");
}

#[test]
fn auth_temporary_failure() {
    let mut fake = Fake::secure();
    fake.take();
    fake.auth_unavailable = true;
    fake.send("USER tim");
    fake.send("PASS tanstaaf");
    assert_eq!(
        fake.take(),
        "+OK Send PASS\r\n\
         -ERR [SYS/TEMP] Authentication temporarily unavailable, try again later\r\n"
    );
}

#[test]
fn quit_in_authorization_does_not_update() {
    let mut fake = Fake::secure();
    fake.send("USER tim");
    fake.send("QUIT");
    assert_eq!(
        fake.take(),
        format!("{GREETING}+OK Send PASS\r\n+OK spate POP3 server signing off\r\n")
    );
    assert_eq!(fake.log, vec!["close"]);
    assert!(fake.session.is_closed());
}

#[test]
fn maildrop_in_use_returns_to_authorization() {
    let mut fake = Fake::secure();
    fake.take();
    fake.drop_answer = DropAnswer::Fail(MaildropError::InUse);
    fake.send("USER tim");
    fake.send("PASS tanstaaf");
    fake.send("STAT");
    assert_eq!(
        fake.take(),
        "+OK Send PASS\r\n-ERR [IN-USE] Mailbox is locked by another POP3 session\r\n\
         -ERR Command not valid in this state\r\n"
    );
    fake.drop_answer = DropAnswer::Fail(MaildropError::Temporary);
    fake.send("USER tim");
    fake.send("PASS tanstaaf");
    assert_eq!(
        fake.take(),
        "+OK Send PASS\r\n-ERR [SYS/TEMP] Unable to open mailbox, try again later\r\n"
    );
    fake.drop_answer = DropAnswer::Open;
    fake.login();
    assert_eq!(fake.log.iter().filter(|l| l.starts_with("open")).count(), 3);
}

#[test]
fn plaintext_refused_when_not_secure() {
    let mut fake = Fake::insecure();
    fake.take();
    fake.send("USER tim");
    fake.send("PASS tanstaaf");
    fake.send(&format!("AUTH PLAIN {}", encode_base64(b"\0tim\0tanstaaf")));
    fake.send("AUTH plain");
    fake.send("AUTH");
    let refusal =
        "-ERR [AUTH] Plaintext authentication disallowed on non-secure connection (use STLS first)\r\n";
    assert_eq!(
        fake.take(),
        format!("{refusal}{refusal}{refusal}{refusal}+OK Supported mechanisms follow\r\n.\r\n")
    );
    assert!(fake.log.is_empty());
}

#[test]
fn auth_plain_with_initial_response() {
    let mut fake = Fake::secure();
    fake.take();
    fake.send(&format!("AUTH PLAIN {}", encode_base64(b"\0tim\0tanstaaf")));
    assert_eq!(fake.take(), "+OK Logged in, 3 messages (109 octets)\r\n");
    assert_eq!(fake.log, vec!["auth tim \"tanstaaf\" Plain", "open tim"]);
    // RFC 5034 4: no second AUTH.
    fake.send(&format!("AUTH PLAIN {}", encode_base64(b"\0tim\0tanstaaf")));
    fake.send("USER tim");
    assert_eq!(
        fake.take(),
        "-ERR Already authenticated\r\n-ERR Already authenticated\r\n"
    );
}

#[test]
fn auth_plain_with_continuation() {
    let mut fake = Fake::secure();
    fake.take();
    fake.send("auth Plain");
    assert_eq!(fake.take(), "+ \r\n");
    fake.send(&encode_base64(b"tim\0tim\0tanstaaf"));
    assert_eq!(fake.take(), "+OK Logged in, 3 messages (109 octets)\r\n");
    assert_eq!(fake.log[0], "auth tim \"tanstaaf\" Plain");
}

#[test]
fn auth_plain_failures() {
    let mut fake = Fake::secure();
    fake.take();
    // Cancel.
    fake.send("AUTH PLAIN");
    fake.send("*");
    // Bad base64, in the continuation and inline.
    fake.send("AUTH PLAIN");
    fake.send("AHRpbQB0YW5zdGFhZg=");
    fake.send("AUTH PLAIN =AAA");
    // Well-formed base64, malformed PLAIN message; "=" is empty.
    fake.send(&format!("AUTH PLAIN {}", encode_base64(b"tim:tanstaaf")));
    fake.send("AUTH PLAIN =");
    // A proxy login is refused; a wrong password fails.
    fake.send(&format!(
        "AUTH PLAIN {}",
        encode_base64(b"ann\0tim\0tanstaaf")
    ));
    fake.send(&format!("AUTH PLAIN {}", encode_base64(b"\0tim\0nope")));
    fake.send("AUTH LOGIN");
    assert_eq!(
        fake.take(),
        "+ \r\n-ERR Authentication cancelled\r\n\
         + \r\n-ERR Invalid base64 data\r\n\
         -ERR Invalid base64 data\r\n\
         -ERR Malformed authentication data\r\n\
         -ERR Malformed authentication data\r\n\
         -ERR [AUTH] Authentication failed\r\n\
         -ERR [AUTH] Authentication failed\r\n\
         -ERR Unsupported authentication mechanism\r\n"
    );
    assert_eq!(fake.log, vec!["auth tim \"nope\" Plain"]);
    // Still in AUTHORIZATION and usable.
    fake.login();
}

#[test]
fn failed_auth_keeps_a_pending_user() {
    // RFC 5034 4: a failed AUTH is as if it had not been issued.
    let mut fake = Fake::secure();
    fake.take();
    fake.send("USER tim");
    fake.send("AUTH PLAIN");
    fake.send("*");
    fake.send("PASS tanstaaf");
    assert!(fake
        .take()
        .ends_with("+OK Logged in, 3 messages (109 octets)\r\n"));
}

#[test]
fn auth_response_line_may_exceed_the_command_limit() {
    let mut fake = Fake::secure();
    fake.take();
    let password = "p".repeat(600);
    fake.users.push(("long", "placeholder"));
    fake.send("AUTH PLAIN");
    fake.send(&encode_base64(format!("\0long\0{password}").as_bytes()));
    assert_eq!(fake.take(), "+ \r\n-ERR [AUTH] Authentication failed\r\n");
    assert_eq!(fake.log[0], format!("auth long {password:?} Plain"));
    // Past the SASL bound it is too long, and the exchange ends.
    fake.send("AUTH PLAIN");
    fake.send(&"A".repeat(5000));
    fake.send("NOOP");
    assert_eq!(
        fake.take(),
        "+ \r\n-ERR Line too long\r\n-ERR Command not valid in this state\r\n"
    );
}

#[test]
fn stls_resets_state_and_discards_buffered_input() {
    let mut fake = Fake::insecure();
    fake.take();
    fake.auto = false;
    fake.send("USER tim");
    // A command injected after STLS, in the same packet, must never run.
    fake.feed(b"STLS\r\nCAPA\r\nPASS tanstaaf\r\n");
    assert_eq!(
        fake.take(),
        "-ERR [AUTH] Plaintext authentication disallowed on non-secure connection (use STLS first)\r\n\
         +OK Begin TLS negotiation\r\n"
    );
    assert!(fake.pending.is_empty(), "the session took and dropped it");
    assert_eq!(fake.session.poll_request(), Some(Request::StartTls));
    // Plaintext arriving before the handshake completes is dropped too.
    assert_eq!(fake.session.handle_input(b"NOOP\r\n", fake.now), 6);
    fake.session.tls_established(fake.now);
    fake.auto = true;
    fake.service();
    assert_eq!(fake.take(), "");
    fake.send("CAPA");
    let capa = fake.take();
    assert!(!capa.contains("STLS"), "{capa}");
    assert!(capa.contains("\r\nUSER\r\n"), "{capa}");
    // USER from before TLS is forgotten.
    fake.send("PASS tanstaaf");
    fake.send("STLS");
    assert_eq!(
        fake.take(),
        "-ERR Send USER first\r\n-ERR Command not permitted when TLS active\r\n"
    );
    fake.login();
    fake.send("STLS");
    assert_eq!(fake.take(), "-ERR Command not valid in this state\r\n");
}

#[test]
fn stls_not_configured() {
    let mut fake = Fake::with(Pop3Config::default(), PeerInfo::default());
    fake.take();
    fake.send("STLS");
    assert_eq!(fake.take(), "-ERR TLS not available\r\n");
}

#[test]
fn overlong_line() {
    let mut fake = Fake::secure();
    fake.take();
    let mut line = b"USER ".to_vec();
    line.extend(vec![b'x'; 600]);
    line.extend(b"\r\nNOOP\r\n");
    fake.feed(&line);
    fake.send("CAPA");
    let t = fake.take();
    assert!(t.starts_with("-ERR Line too long\r\n-ERR Command not valid in this state\r\n"));
    // A line without end is dropped as it comes, never buffered.
    let huge = vec![b'A'; 1 << 20];
    assert_eq!(fake.session.handle_input(&huge, fake.now), huge.len());
    assert_eq!(fake.session.output(), b"");
    fake.feed(b"\r\nQUIT\r\n");
    assert_eq!(
        fake.take(),
        "-ERR Line too long\r\n+OK spate POP3 server signing off\r\n"
    );
}

#[test]
fn a_255_octet_command_is_fine() {
    let mut fake = Fake::secure();
    fake.take();
    let user = "u".repeat(255 - "USER \r\n".len());
    fake.send(&format!("USER {user}"));
    assert_eq!(fake.take(), "+OK Send PASS\r\n");
}

#[test]
fn too_many_errors_close() {
    let mut fake = Fake::secure();
    fake.take();
    for _ in 0..9 {
        fake.send("BOGUS");
    }
    assert!(!fake.session.is_closed());
    fake.send("BOGUS");
    fake.send("NOOP");
    let t = fake.take();
    assert_eq!(t.matches("-ERR Unknown command\r\n").count(), 10);
    assert!(
        t.ends_with("-ERR Unknown command\r\n-ERR Too many bad commands, closing connection\r\n")
    );
    assert!(fake.session.is_closed());
    assert_eq!(fake.log, vec!["close"]);
}

#[test]
fn idle_timeout() {
    let mut fake = Fake::secure();
    fake.take();
    let start = fake.now;
    assert_eq!(fake.session.deadline(), start + Duration::from_secs(600));
    fake.session
        .handle_timeout(start + Duration::from_secs(599));
    assert!(!fake.session.is_closed());
    fake.now = start + Duration::from_secs(300);
    fake.send("NOOP");
    assert_eq!(fake.session.deadline(), start + Duration::from_secs(900));
    fake.session
        .handle_timeout(start + Duration::from_secs(900));
    fake.service();
    assert_eq!(
        fake.take(),
        "-ERR Command not valid in this state\r\n-ERR Disconnected for inactivity\r\n"
    );
    assert!(fake.session.is_closed());
    assert_eq!(fake.log, vec!["close"]);
}

#[test]
fn no_timeout_while_the_driver_works() {
    let mut fake = Fake::secure();
    fake.auto = false;
    fake.send("USER tim");
    fake.send("PASS tanstaaf");
    assert!(matches!(
        fake.session.poll_request(),
        Some(Request::Authenticate { .. })
    ));
    fake.session
        .handle_timeout(fake.now + Duration::from_secs(3600));
    assert!(!fake.session.is_closed());
    // The answer counts as activity.
    let later = fake.now + Duration::from_secs(3600);
    fake.session.auth_result(
        AuthOutcome::Ok {
            user: "alice".into(),
        },
        later,
    );
    assert_eq!(fake.session.deadline(), later + Duration::from_secs(600));
}

/// The maildrop opened is the account's canonical name from the verdict,
/// never the login as typed (`TIM@Example.Test` is `tim`'s maildrop).
#[test]
fn the_maildrop_is_the_canonical_user_not_the_login_as_typed() {
    let mut fake = Fake::secure();
    fake.auto = false;
    fake.send("USER TIM@Example.Test");
    fake.send("PASS tanstaaf");
    assert!(matches!(
        fake.session.poll_request(),
        Some(Request::Authenticate { ref user, .. }) if user == "TIM@Example.Test"
    ));
    fake.session
        .auth_result(AuthOutcome::Ok { user: "tim".into() }, fake.now);
    assert_eq!(
        fake.session.poll_request(),
        Some(Request::OpenMaildrop {
            user: "tim".to_owned()
        })
    );
}

#[test]
fn nothing_is_processed_while_a_request_is_outstanding() {
    let mut fake = Fake::secure();
    fake.take();
    fake.auto = false;
    fake.feed(b"USER tim\r\nPASS tanstaaf\r\nSTAT\r\nQUIT\r\n");
    assert_eq!(fake.take(), "+OK Send PASS\r\n");
    let request = fake.session.poll_request();
    assert_eq!(
        request,
        Some(Request::Authenticate {
            user: "tim".to_owned(),
            password: crate::sasl::Password::new("tanstaaf".to_owned()),
            mechanism: AuthMechanism::UserPass,
        })
    );
    assert_eq!(fake.session.poll_request(), None);
    // Answers in the wrong state are ignored.
    fake.session.message_sent(fake.now);
    fake.session.update_done(Ok(()), fake.now);
    fake.session.maildrop_opened(Ok(Vec::new()), fake.now);
    fake.service();
    assert_eq!(fake.take(), "");
    fake.session
        .auth_result(AuthOutcome::Ok { user: "tim".into() }, fake.now);
    assert_eq!(
        fake.session.poll_request(),
        Some(Request::OpenMaildrop {
            user: "tim".to_owned()
        })
    );
    fake.service();
    assert_eq!(fake.take(), "");
    let info = |size, uid: &str| MessageInfo {
        size,
        uid: UniqueId::new(uid).unwrap(),
    };
    fake.session
        .maildrop_opened(Ok(vec![info(10, "a"), info(20, "b")]), fake.now);
    fake.service();
    assert_eq!(
        fake.take(),
        "+OK Logged in, 2 messages (30 octets)\r\n+OK 2 30\r\n"
    );
    assert_eq!(
        fake.session.poll_request(),
        Some(Request::Update { deleted: vec![] })
    );
}

#[test]
fn input_is_bounded_while_waiting() {
    let mut fake = Fake::secure();
    fake.auto = false;
    fake.send("USER tim");
    fake.send("PASS tanstaaf");
    let flood = b"NOOP\r\n".repeat(10_000);
    let taken = fake.session.handle_input(&flood, fake.now);
    assert!(taken < 8192, "took {taken}");
    assert_eq!(fake.session.handle_input(&flood[taken..], fake.now), 0);
}

#[test]
fn pipelined_commands_in_one_chunk() {
    let script = "USER tim\r\nPASS tanstaaf\r\nSTAT\r\nLIST\r\nRETR 1\r\nDELE 1\r\nTOP 2 0\r\nUIDL\r\nQUIT\r\n";
    let mut one = Fake::secure();
    one.feed(script.as_bytes());
    let mut each = Fake::secure();
    for line in script.split_inclusive("\r\n") {
        each.feed(line.as_bytes());
    }
    assert_eq!(one.transcript, each.transcript);
    assert_eq!(one.log, each.log);
    assert!(one
        .transcript
        .ends_with("+OK spate POP3 server signing off\r\n"));
    assert_eq!(one.log[one.log.len() - 2], "update [0]");
}

/// A session mixing most paths, used to compare chunkings.
const MIXED: &[u8] = b"capa\r\nBOGUS\r\nUSER tim\r\nAUTH PLAIN\r\n*\r\nAUTH PLAIN\r\n\
AHRpbQB0YW5zdGFhZg==\r\nSTAT\r\nLIST\r\nUIDL 2\r\nRETR 1\r\nTOP 2 1\r\nDELE 2\r\nLIST 2\r\n\
RSET\r\nDELE 3\r\nnoop\nRETR 99\r\nQUIT\r\n";

fn run_chunks(chunks: &[&[u8]]) -> Fake {
    let mut fake = Fake::secure();
    for chunk in chunks {
        fake.feed(chunk);
    }
    fake
}

#[test]
fn chunking_does_not_change_the_transcript() {
    let whole = run_chunks(&[MIXED]);
    assert!(whole
        .transcript
        .ends_with("+OK spate POP3 server signing off\r\n"));
    assert_eq!(
        whole.log,
        vec![
            "auth tim \"tanstaaf\" Plain",
            "open tim",
            "send 0 None",
            "send 1 Some(1)",
            "update [2]",
            "close"
        ]
    );
    let bytes: Vec<&[u8]> = MIXED.chunks(1).collect();
    let by_byte = run_chunks(&bytes);
    assert_eq!(by_byte.transcript, whole.transcript);
    assert_eq!(by_byte.log, whole.log);
    let mut rng = StdRng::seed_from_u64(1939);
    for _ in 0..50 {
        let mut chunks = Vec::new();
        let mut rest = MIXED;
        while !rest.is_empty() {
            let n = rng.gen_range(1..=rest.len().min(40));
            chunks.push(&rest[..n]);
            rest = &rest[n..];
        }
        let fake = run_chunks(&chunks);
        assert_eq!(fake.transcript, whole.transcript);
        assert_eq!(fake.log, whole.log);
    }
}

#[test]
fn large_listing_is_written_in_pieces() {
    let mut fake = Fake::secure();
    fake.messages = (0..5000)
        .map(|i| format!("Subject: {i}\n\nbody\n").into_bytes())
        .collect();
    fake.send("USER tim");
    fake.send("PASS tanstaaf");
    fake.take();
    fake.auto = false;
    // Without the output being consumed, the listing stops at the bound
    // and the pipelined NOOP waits behind it.
    fake.session.handle_input(b"LIST\r\nNOOP\r\n", fake.now);
    let first = fake.session.output().len();
    assert!(
        (OUTPUT_SOFT_LIMIT..OUTPUT_SOFT_LIMIT + 64).contains(&first),
        "{first}"
    );
    assert!(!fake.session.output().ends_with(b"+OK\r\n"));
    fake.auto = true;
    fake.service();
    let t = fake.take();
    assert_eq!(t.matches("\r\n").count(), 5000 + 3);
    assert!(t.starts_with("+OK 5000 messages ("));
    assert!(t.contains("\r\n5000 "));
    assert!(t.ends_with("\r\n.\r\n+OK\r\n"), "{}", &t[t.len() - 40..]);
}

#[test]
fn shutdown_when_idle() {
    let mut fake = Fake::secure();
    fake.login();
    fake.session.handle_shutdown();
    fake.service();
    assert_eq!(fake.take(), "-ERR [SYS/TEMP] Server shutting down\r\n");
    // No UPDATE on shutdown.
    assert_eq!(fake.log[2..], ["close"]);
}

#[test]
fn shutdown_waits_for_a_message_in_flight() {
    let mut fake = Fake::secure();
    fake.login();
    fake.auto = false;
    fake.send("RETR 2");
    assert!(matches!(
        fake.session.poll_request(),
        Some(Request::SendMessage { index: 1, .. })
    ));
    fake.session.handle_shutdown();
    assert_eq!(fake.session.output(), b"");
    assert!(!fake.session.is_closed());
    fake.session.message_sent(fake.now);
    assert_eq!(
        fake.session.output(),
        b"-ERR [SYS/TEMP] Server shutting down\r\n"
    );
    assert_eq!(fake.session.poll_request(), Some(Request::Close));
}

#[test]
fn shutdown_during_authentication() {
    let mut fake = Fake::secure();
    fake.auto = false;
    fake.send("USER tim");
    fake.send("PASS tanstaaf");
    fake.take();
    fake.session.poll_request();
    fake.session.handle_shutdown();
    fake.session.auth_result(
        AuthOutcome::Ok {
            user: "alice".into(),
        },
        fake.now,
    );
    assert_eq!(
        fake.session.output(),
        b"-ERR [SYS/TEMP] Server shutting down\r\n"
    );
    assert_eq!(fake.session.poll_request(), Some(Request::Close));
}

/// `[pop3] lock_session = false`: the driver finds the message gone
/// (another session removed it) before writing anything; the "+OK" is
/// taken back, the answer is -ERR and pipelined commands go on.
#[test]
fn a_message_gone_before_it_is_sent_takes_the_ok_back() {
    let mut fake = Fake::secure();
    fake.login();
    fake.auto = false;
    let n = fake
        .session
        .handle_input(b"RETR 1\r\nRETR 2\r\nSTAT\r\n", fake.now);
    fake.pending
        .extend_from_slice(&b"RETR 1\r\nRETR 2\r\nSTAT\r\n"[n..]);
    assert_eq!(fake.session.output(), b"+OK 39 octets\r\n");
    assert_eq!(
        fake.session.poll_request(),
        Some(Request::SendMessage {
            index: 0,
            top_lines: None
        })
    );
    fake.session.message_missing(fake.now);
    // Back in TRANSACTION: the buffered RETR 2 is taken at once.
    assert_eq!(
        fake.session.output(),
        b"-ERR Message was deleted by another session\r\n+OK 34 octets\r\n"
    );
    fake.auto = true;
    fake.transcript.push_str("-ERR gone\r\n+OK 34 octets\r\n");
    let pending = fake.session.output().len();
    fake.session.consume_output(pending);
    let request = fake.session.poll_request().expect("RETR 2");
    fake.answer(request);
    fake.run();
    let t = fake.take();
    assert!(t.starts_with("-ERR gone\r\n+OK 34 octets\r\n"), "{t}");
    assert!(t.ends_with("+OK 3 109\r\n"), "{t}");
}
