//! Transcript tests of the IMAP session: command lines go through the real reader, parser
//! and session against a temp-dir mail store, and the replies are checked. It refuses nothing
//! but a panic, a wrong reply or a reply in the wrong order.

use std::sync::Arc;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::parser::parse_command;
use super::reader::{is_done, CommandReader, LineStep, ReaderConfig, Step, CONTINUATION};
use super::session::{Backend, ImapConfig, Outcome, PeerInfo, Session, REPLY_PART};
use crate::local::Login;
use crate::mailbox::{MailStore, MailboxError, UserMailbox, UserName};

struct TestBackend {
    store: MailStore,
    /// What `Backend::quota` answers.
    quota: Option<u64>,
    _dir: tempfile::TempDir,
}

impl TestBackend {
    fn new() -> TestBackend {
        let dir = tempfile::tempdir().unwrap();
        TestBackend {
            store: MailStore::new(dir.path(), "test.example"),
            quota: None,
            _dir: dir,
        }
    }

    fn user(&self, name: &str) -> UserMailbox {
        self.store
            .ensure_user(&UserName::new(name).unwrap())
            .unwrap()
    }

    fn deliver(&self, subject: &str, body: &str) {
        let msg = message(subject, body);
        self.user("alice")
            .inbox()
            .deliver(&[msg.as_bytes()])
            .unwrap();
    }
}

impl Backend for TestBackend {
    fn authenticate(&self, login: &str, password: &str) -> Login {
        match (login, password) {
            ("alice", "secret") => Login::Success("alice".into()),
            ("flaky", _) => Login::Temporary,
            _ => Login::Failed,
        }
    }

    fn mailbox(&self, user: &str) -> Result<UserMailbox, MailboxError> {
        self.store.ensure_user(&UserName::new(user)?)
    }

    fn quota(&self, _user: &str) -> Option<u64> {
        self.quota
    }
}

fn message(subject: &str, body: &str) -> String {
    format!(
        "From: Alice <alice@example.test>\r\nTo: bob@example.test\r\nCc: carol@example.test\r\n\
         Subject: {subject}\r\nDate: Mon, 7 Feb 1994 21:52:25 -0800\r\nMessage-ID: <{subject}@x>\r\n\
         \r\n{body}\r\n"
    )
}

/// One client connection: the real reader in front of a session, driven
/// the way the glue drives it.
struct Client {
    session: Session,
    reader: CommandReader,
    idle: bool,
    outcomes: Vec<Outcome>,
    /// The parts of long replies (what `output()` held at each
    /// `Outcome::Partial`), in order.
    parts: Vec<String>,
}

impl Client {
    fn with(config: ImapConfig, peer: PeerInfo) -> Client {
        Client {
            session: Session::new(Arc::new(config), peer),
            reader: CommandReader::new(ReaderConfig::default()),
            idle: false,
            outcomes: Vec::new(),
            parts: Vec::new(),
        }
    }

    fn new() -> Client {
        Client::with(
            ImapConfig::default(),
            PeerInfo {
                tls: false,
                plaintext_allowed: true,
            },
        )
    }

    fn logged_in(backend: &TestBackend) -> Client {
        let mut c = Client::new();
        c.take();
        let r = c.send(backend, "a LOGIN alice secret\r\n");
        assert!(r.contains("a OK [CAPABILITY"), "{r}");
        c
    }

    fn selected(backend: &TestBackend) -> Client {
        let mut c = Client::logged_in(backend);
        let r = c.send(backend, "s SELECT INBOX\r\n");
        assert!(r.contains("s OK [READ-WRITE]"), "{r}");
        c
    }

    fn take(&mut self) -> String {
        let out = String::from_utf8_lossy(self.session.output()).into_owned();
        let n = self.session.output().len();
        self.session.consume_output(n);
        out
    }

    /// Feeds `input` and returns everything written, continuation
    /// requests from the "driver" included.
    fn send(&mut self, backend: &TestBackend, input: &str) -> String {
        let mut transcript = String::new();
        let mut input = input.as_bytes();
        loop {
            let n = self.reader.push(input);
            input = &input[n..];
            loop {
                if self.session.is_logged_out() {
                    break;
                }
                if self.session.wants_sasl_line() || self.idle {
                    let line = match self.reader.next_line() {
                        LineStep::Line(l) => l.to_vec(),
                        LineStep::TooLong => b"*".to_vec(),
                        LineStep::Incomplete => break,
                    };
                    if self.idle {
                        if is_done(&line) {
                            self.session.idle_done(backend);
                            self.idle = false;
                        }
                    } else {
                        let o = self.session.sasl_response(&line, backend);
                        self.outcomes.push(o);
                    }
                    continue;
                }
                match self.reader.next_command() {
                    Step::Command(bytes) => match parse_command(bytes) {
                        Ok(command) => {
                            let mut o = self.session.execute(command, backend);
                            // As the driver: each part goes out, then the
                            // next is asked for.
                            while o == Outcome::Partial {
                                let part = self.take();
                                transcript.push_str(&part);
                                self.parts.push(part);
                                o = self.session.resume();
                            }
                            self.idle = o == Outcome::Idle;
                            self.outcomes.push(o);
                        }
                        Err(e) => self.session.command_error(&e),
                    },
                    Step::NeedContinuation => {
                        transcript.push_str(std::str::from_utf8(CONTINUATION).unwrap())
                    }
                    Step::Rejected(r) => self.session.rejection(&r),
                    Step::Incomplete => break,
                }
            }
            transcript.push_str(&self.take());
            if input.is_empty() {
                return transcript;
            }
        }
    }
}

fn lines(s: &str) -> Vec<&str> {
    s.split("\r\n").filter(|l| !l.is_empty()).collect()
}

// ------------------------------------------------------------ not authenticated

#[test]
fn greeting_and_capabilities_follow_the_connection() {
    let backend = TestBackend::new();
    let mut c = Client::new();
    let greeting = c.take();
    assert!(
        greeting.starts_with("* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN LITERAL-"),
        "{greeting}"
    );
    assert!(greeting.ends_with("spate IMAP4rev1 ready\r\n"));
    let r = c.send(&backend, "1 CAPABILITY\r\n");
    assert_eq!(
        lines(&r),
        [
            "* CAPABILITY IMAP4rev1 AUTH=PLAIN LITERAL- SASL-IR ID ENABLE CONDSTORE QRESYNC IDLE \
             NAMESPACE UIDPLUS MOVE UNSELECT CHILDREN SPECIAL-USE LIST-EXTENDED SORT \
             THREAD=ORDEREDSUBJECT THREAD=REFERENCES QUOTA QUOTA=RES-STORAGE",
            "1 OK CAPABILITY completed"
        ]
    );

    let config = ImapConfig {
        starttls: true,
        ..ImapConfig::default()
    };
    let mut c = Client::with(config, PeerInfo::default());
    let greeting = c.take();
    assert!(
        greeting.contains("IMAP4rev1 STARTTLS LOGINDISABLED LITERAL-"),
        "{greeting}"
    );
    let r = c.send(&backend, "2 LOGIN alice secret\r\n");
    assert_eq!(
        r,
        "2 NO [PRIVACYREQUIRED] Plaintext authentication is disallowed without TLS\r\n"
    );
    let r = c.send(&backend, "3 AUTHENTICATE PLAIN AGFsaWNlAHNlY3JldA==\r\n");
    assert!(r.starts_with("3 NO [PRIVACYREQUIRED]"), "{r}");
    let r = c.send(&backend, "4 STARTTLS\r\n");
    assert_eq!(r, "4 OK Begin TLS negotiation now\r\n");
    assert_eq!(c.outcomes.last(), Some(&Outcome::StartTls));
    c.session.tls_established();
    let r = c.send(&backend, "5 CAPABILITY\r\n");
    assert!(r.contains("IMAP4rev1 AUTH=PLAIN LITERAL-"), "{r}");
    let r = c.send(&backend, "6 STARTTLS\r\n");
    assert!(r.starts_with("6 NO "), "{r}");
    let r = c.send(&backend, "7 LOGIN alice secret\r\n");
    assert!(r.starts_with("7 OK [CAPABILITY IMAP4rev1 LITERAL-"), "{r}");
    assert!(!r.contains("AUTH=") && !r.contains("STARTTLS"), "{r}");
}

#[test]
fn login_outcomes() {
    let backend = TestBackend::new();
    let mut c = Client::new();
    c.take();
    let r = c.send(&backend, "a LOGIN alice wrong\r\n");
    assert_eq!(r, "a NO [AUTHENTICATIONFAILED] Authentication failed\r\n");
    assert_eq!(c.outcomes.last(), Some(&Outcome::AuthFailed));
    let r = c.send(&backend, "b LOGIN flaky x\r\n");
    assert!(r.starts_with("b NO [UNAVAILABLE]"), "{r}");
    let r = c.send(&backend, "c SELECT INBOX\r\n");
    assert!(r.starts_with("c BAD "), "{r}");
    let r = c.send(&backend, "d LOGIN \"alice\" {6+}\r\nsecret\r\n");
    assert!(r.starts_with("d OK [CAPABILITY"), "{r}");
    let r = c.send(&backend, "e LOGIN alice secret\r\n");
    assert!(r.starts_with("e BAD "), "{r}");
    let r = c.send(&backend, "f AUTHENTICATE PLAIN\r\n");
    assert!(r.starts_with("f BAD "), "{r}");
}

#[test]
fn authenticate_plain_with_and_without_initial_response() {
    let backend = TestBackend::new();
    let mut c = Client::new();
    c.take();
    // "\0alice\0secret"
    let r = c.send(&backend, "a AUTHENTICATE PLAIN\r\n");
    assert_eq!(r, "+ \r\n");
    assert!(c.session.wants_sasl_line());
    let r = c.send(&backend, "*\r\n");
    assert_eq!(r, "a BAD Authentication cancelled\r\n");
    let r = c.send(&backend, "b AUTHENTICATE PLAIN\r\nAGFsaWNlAHdyb25n\r\n");
    assert_eq!(
        r,
        "+ \r\nb NO [AUTHENTICATIONFAILED] Authentication failed\r\n"
    );
    let r = c.send(&backend, "c AUTHENTICATE PLAIN !!!\r\n");
    assert!(r.starts_with("c BAD "), "{r}");
    let r = c.send(&backend, "d AUTHENTICATE CRAM-MD5\r\n");
    assert!(r.starts_with("d NO "), "{r}");
    // A proxy login (authzid "bob") is refused.
    let r = c.send(
        &backend,
        "e AUTHENTICATE PLAIN Ym9iAGFsaWNlAHNlY3JldA==\r\n",
    );
    assert!(r.starts_with("e NO [AUTHENTICATIONFAILED]"), "{r}");
    let r = c.send(&backend, "f AUTHENTICATE PLAIN AGFsaWNlAHNlY3JldA==\r\n");
    assert!(r.starts_with("f OK [CAPABILITY"), "{r}");
    let mut c = Client::new();
    c.take();
    let r = c.send(&backend, "g AUTHENTICATE plain\r\nAGFsaWNlAHNlY3JldA==\r\n");
    assert!(r.starts_with("+ \r\ng OK [CAPABILITY"), "{r}");
}

#[test]
fn any_state_commands_and_logout() {
    let backend = TestBackend::new();
    let mut c = Client::new();
    c.take();
    let r = c.send(&backend, "a NOOP\r\nb ID NIL\r\n");
    assert_eq!(lines(&r)[0], "a OK NOOP completed");
    assert!(lines(&r)[1].starts_with("* ID (\"name\" \"spate\""), "{r}");
    assert_eq!(lines(&r)[2], "b OK ID completed");
    let r = c.send(&backend, "c NAMESPACE\r\n");
    assert!(r.starts_with("c BAD "), "{r}");
    c.send(&backend, "d LOGIN alice secret\r\n");
    let r = c.send(&backend, "e NAMESPACE\r\nf ENABLE CONDSTORE\r\n");
    assert_eq!(
        lines(&r),
        [
            "* NAMESPACE ((\"\" \"/\")) NIL NIL",
            "e OK NAMESPACE completed",
            "* ENABLED CONDSTORE",
            "f OK ENABLE completed"
        ]
    );
    let r = c.send(&backend, "g LOGOUT\r\nh NOOP\r\n");
    assert_eq!(r, "* BYE Logging out\r\ng OK LOGOUT completed\r\n");
    assert!(c.session.is_logged_out());
    assert_eq!(c.outcomes.last(), Some(&Outcome::Logout));
}

#[test]
fn bad_commands_in_every_state_never_panic() {
    let backend = TestBackend::new();
    backend.deliver("one", "x");
    let garbage = [
        "\r\n",
        "a\r\n",
        "a FOO\r\n",
        "a FETCH\r\n",
        "a FETCH 1 (NOPE)\r\n",
        "a FETCH 0 FLAGS\r\n",
        "a FETCH 99 FLAGS\r\n",
        "a FETCH $ FLAGS\r\n",
        "a FETCH 1 BINARY[1]\r\n",
        "a SEARCH RETURN (MIN) ALL\r\n",
        "a SELECT\r\n",
        "a SELECT nope\r\n",
        "a COPY 1 nope\r\n",
        "a CREATE \"a/../b\"\r\n",
        "a CREATE \"&Jjo\"\r\n",
        "a DELETE INBOX\r\n",
        "a RENAME nope other\r\n",
        "a STATUS nope (MESSAGES)\r\n",
        "a APPEND nope {1+}\r\nx\r\n",
        "a UID EXPUNGE $\r\n",
        "a IDLE extra\r\n",
        "* LOGIN x y\r\n",
        "a LOGIN\r\n",
        "a AUTHENTICATE\r\n",
    ];
    let patient = ImapConfig {
        max_bad_commands: 1000,
        ..ImapConfig::default()
    };
    let peer = PeerInfo {
        tls: true,
        plaintext_allowed: true,
    };
    for state in 0..3 {
        let mut c = Client::with(patient.clone(), peer);
        c.take();
        if state > 0 {
            c.send(&backend, "a LOGIN alice secret\r\n");
        }
        if state > 1 {
            c.send(&backend, "a SELECT INBOX\r\n");
        }
        for line in garbage {
            let r = c.send(&backend, line);
            if line.trim().is_empty() {
                continue;
            }
            assert!(
                r.contains(" BAD ") || r.contains(" NO ") || r.starts_with("* BAD"),
                "state {state}, {line:?}: {r}"
            );
            assert!(!c.session.is_logged_out(), "state {state}, {line:?}: {r}");
        }
    }
}

#[test]
fn too_many_bad_commands_end_the_session() {
    let backend = TestBackend::new();
    let mut c = Client::new();
    c.take();
    let mut r = String::new();
    for _ in 0..ImapConfig::default().max_bad_commands {
        r = c.send(&backend, "x BOGUS\r\n");
    }
    assert!(r.ends_with("* BYE Too many invalid commands\r\n"), "{r}");
    assert!(c.session.is_logged_out());
}

#[test]
fn random_input_never_panics() {
    let backend = TestBackend::new();
    backend.deliver("one", "x");
    let words = [
        "a",
        "FETCH",
        "UID",
        "1:*",
        "*",
        "(",
        ")",
        "BODY[",
        "]",
        "SELECT",
        "INBOX",
        "STORE",
        "+FLAGS",
        "\\Seen",
        "SEARCH",
        "OR",
        "NOT",
        "LIST",
        "\"\"",
        "%",
        "{3+}\r\nabc",
        "\r\n",
        "COPY",
        "MOVE",
        "EXPUNGE",
        "APPEND",
        "LOGIN",
        "alice",
        "secret",
        "IDLE",
        "DONE",
        "CLOSE",
    ];
    let mut rng = StdRng::seed_from_u64(7);
    for _ in 0..200 {
        let mut c = Client::logged_in(&backend);
        for _ in 0..20 {
            let n = rng.gen_range(1..8);
            let mut line = String::new();
            for _ in 0..n {
                line.push_str(words[rng.gen_range(0..words.len())]);
                line.push(' ');
            }
            line.push_str("\r\n");
            c.send(&backend, &line);
        }
    }
}

#[test]
fn session_is_send() {
    fn assert_send<T: Send>() {}
    assert_send::<Session>();
}

// ------------------------------------------------------------ selected state

#[test]
fn select_examine_and_recent_in_one_session_only() {
    let backend = TestBackend::new();
    backend.deliver("one", "first body");
    backend.deliver("two", "second body");
    let mut a = Client::logged_in(&backend);
    let r = a.send(&backend, "s SELECT inbox\r\n");
    let l = lines(&r);
    assert_eq!(
        l[0],
        "* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)"
    );
    assert_eq!(l[1], "* 2 EXISTS");
    assert_eq!(l[2], "* 2 RECENT");
    assert_eq!(l[3], "* OK [UNSEEN 1] First unseen");
    assert_eq!(
        l[4],
        "* OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft \\*)] Flags permitted"
    );
    assert!(l[5].starts_with("* OK [UIDVALIDITY "), "{r}");
    assert_eq!(l[6], "* OK [UIDNEXT 3] Predicted next UID");
    assert_eq!(l[7], "s OK [READ-WRITE] SELECT completed");

    let mut b = Client::logged_in(&backend);
    let r = b.send(&backend, "s SELECT INBOX\r\n");
    assert!(r.contains("* 2 EXISTS\r\n* 0 RECENT\r\n"), "{r}");
    let r = b.send(&backend, "e EXAMINE INBOX\r\n");
    assert!(r.contains("[PERMANENTFLAGS ()]"), "{r}");
    assert!(r.ends_with("e OK [READ-ONLY] EXAMINE completed\r\n"), "{r}");
    let r = b.send(&backend, "f STORE 1 +FLAGS (\\Seen)\r\n");
    assert_eq!(r, "f NO [READ-ONLY] Mailbox is read-only\r\n");

    // New mail goes to the first session that syncs, \Recent to it only.
    backend.deliver("three", "third");
    let r = a.send(&backend, "n NOOP\r\n");
    assert_eq!(r, "* 3 EXISTS\r\n* 3 RECENT\r\nn OK NOOP completed\r\n");
    let r = b.send(&backend, "n NOOP\r\n");
    assert_eq!(r, "* 3 EXISTS\r\n* 0 RECENT\r\nn OK NOOP completed\r\n");
    let r = a.send(&backend, "f FETCH 3 FLAGS\r\n");
    assert_eq!(
        r,
        "* 3 FETCH (FLAGS (\\Recent))\r\nf OK FETCH completed\r\n"
    );

    // A failed SELECT leaves nothing selected (RFC 7162 3.2.11: the
    // mailbox it closed is announced).
    let r = a.send(&backend, "x SELECT nope\r\ny FETCH 1 FLAGS\r\n");
    assert!(r.starts_with("* OK [CLOSED] "), "{r}");
    assert!(r.contains("\r\nx NO [NONEXISTENT]"), "{r}");
    assert!(r.contains("y BAD No mailbox selected"), "{r}");
}

#[test]
fn fetch_items() {
    let backend = TestBackend::new();
    backend.deliver("one", "first body");
    let raw = message("one", "first body");
    let mut c = Client::selected(&backend);
    let r = c.send(&backend, "a FETCH 1 (FLAGS UID RFC822.SIZE)\r\n");
    assert_eq!(
        r,
        format!(
            "* 1 FETCH (FLAGS (\\Recent) UID 1 RFC822.SIZE {})\r\na OK FETCH completed\r\n",
            raw.len()
        )
    );
    let r = c.send(
        &backend,
        "b FETCH 1 (BODY.PEEK[HEADER.FIELDS (Subject)] INTERNALDATE)\r\n",
    );
    assert!(
        r.starts_with(
            "* 1 FETCH (BODY[HEADER.FIELDS (Subject)] {16}\r\nSubject: one\r\n\r\n INTERNALDATE \""
        ),
        "{r}"
    );
    let r = c.send(&backend, "c UID FETCH 1 ENVELOPE\r\n");
    assert!(
        r.starts_with("* 1 FETCH (UID 1 ENVELOPE (\"Mon, 7 Feb 1994 21:52:25 -0800\" \"one\" ((\"Alice\" NIL \"alice\" \"example.test\"))"),
        "{r}"
    );
    let r = c.send(&backend, "d FETCH 1 BODYSTRUCTURE\r\n");
    assert!(
        r.starts_with("* 1 FETCH (BODYSTRUCTURE (\"text\" \"plain\""),
        "{r}"
    );
    let r = c.send(&backend, "e FETCH 1 BODY[TEXT]<0.5>\r\n");
    assert_eq!(
        r,
        "* 1 FETCH (FLAGS (\\Seen \\Recent) BODY[TEXT]<0> {5}\r\nfirst)\r\ne OK FETCH completed\r\n"
    );
    // Already \Seen: no FLAGS added.
    let r = c.send(&backend, "f FETCH 1 (RFC822.HEADER)\r\n");
    assert!(r.starts_with("* 1 FETCH (RFC822.HEADER {"), "{r}");
    assert!(!r.contains("FLAGS"), "{r}");
    let r = c.send(&backend, "g FETCH 1 FULL\r\n");
    assert!(
        r.contains("ENVELOPE (") && r.contains(" BODY (\"text\""),
        "{r}"
    );
    let r = c.send(&backend, "h FETCH 1 (RFC822)\r\n");
    assert_eq!(
        r,
        format!(
            "* 1 FETCH (RFC822 {{{}}}\r\n{raw})\r\nh OK FETCH completed\r\n",
            raw.len()
        )
    );
    let r = c.send(&backend, "i FETCH 1 (BODY[1] BODY[2])\r\n");
    assert!(
        r.contains("BODY[1] {12}\r\nfirst body\r\n BODY[2] {0}\r\n)"),
        "{r}"
    );
    let r = c.send(&backend, "j UID FETCH 5:* FLAGS\r\n");
    assert!(r.starts_with("* 1 FETCH (UID 1 FLAGS"), "{r}");
    let r = c.send(&backend, "k UID FETCH 7 FLAGS\r\n");
    assert_eq!(r, "k OK UID FETCH completed\r\n");
}

#[test]
fn store_and_expunge() {
    let backend = TestBackend::new();
    for s in ["one", "two", "three"] {
        backend.deliver(s, "x");
    }
    let mut c = Client::selected(&backend);
    let r = c.send(&backend, "a STORE 1:2 +FLAGS (\\Deleted \\Seen)\r\n");
    assert_eq!(
        r,
        "* 1 FETCH (FLAGS (\\Deleted \\Seen \\Recent))\r\n* 2 FETCH (FLAGS (\\Deleted \\Seen \\Recent))\r\na OK STORE completed\r\n"
    );
    let r = c.send(&backend, "b STORE 2 -FLAGS.SILENT (\\Deleted)\r\n");
    assert_eq!(r, "b OK STORE completed\r\n");
    let r = c.send(&backend, "c UID STORE 3 FLAGS (\\Flagged \\Recent)\r\n");
    assert_eq!(
        r,
        "* 3 FETCH (UID 3 FLAGS (\\Flagged \\Recent))\r\nc OK UID STORE completed\r\n"
    );
    let r = c.send(&backend, "d EXPUNGE\r\n");
    assert_eq!(r, "* 1 EXPUNGE\r\nd OK EXPUNGE completed\r\n");
    let r = c.send(&backend, "e FETCH 1:* (UID FLAGS)\r\n");
    assert_eq!(
        r,
        "* 1 FETCH (UID 2 FLAGS (\\Seen \\Recent))\r\n* 2 FETCH (UID 3 FLAGS (\\Flagged \\Recent))\r\ne OK FETCH completed\r\n"
    );
    c.send(&backend, "f STORE 1:2 +FLAGS.SILENT (\\Deleted)\r\n");
    let r = c.send(&backend, "g UID EXPUNGE 3\r\n");
    assert_eq!(r, "* 2 EXPUNGE\r\ng OK UID EXPUNGE completed\r\n");
    // CLOSE expunges silently; the rest is gone for the next SELECT.
    let r = c.send(&backend, "h CLOSE\r\n");
    assert_eq!(r, "h OK CLOSE completed\r\n");
    let r = c.send(&backend, "i SELECT INBOX\r\n");
    assert!(r.contains("* 0 EXISTS"), "{r}");
    backend.deliver("four", "x");
    c.send(&backend, "j NOOP\r\n");
    c.send(&backend, "k STORE 1 +FLAGS (\\Deleted)\r\n");
    let r = c.send(&backend, "l UNSELECT\r\nm SELECT INBOX\r\n");
    assert!(r.starts_with("l OK UNSELECT completed\r\n"), "{r}");
    assert!(r.contains("* 1 EXISTS"), "{r}");
}

#[test]
fn two_sessions_see_each_others_changes_at_the_right_time() {
    let backend = TestBackend::new();
    for s in ["one", "two", "three"] {
        backend.deliver(s, "x");
    }
    let mut a = Client::selected(&backend);
    let mut b = Client::selected(&backend);
    let r = a.send(&backend, "a STORE 2 +FLAGS.SILENT (\\Flagged)\r\n");
    assert_eq!(r, "a OK STORE completed\r\n");
    let r = b.send(&backend, "b NOOP\r\n");
    assert_eq!(
        r,
        "* 2 FETCH (UID 2 FLAGS (\\Flagged))\r\nb OK NOOP completed\r\n"
    );
    a.send(&backend, "c STORE 1 +FLAGS.SILENT (\\Deleted)\r\n");
    let r = a.send(&backend, "d EXPUNGE\r\n");
    assert_eq!(r, "* 1 EXPUNGE\r\nd OK EXPUNGE completed\r\n");
    // B is in a FETCH: no EXPUNGE now (RFC 3501 7.4.1), its numbers hold.
    let r = b.send(&backend, "e FETCH 3 UID\r\n");
    assert_eq!(r, "* 3 FETCH (UID 3)\r\ne OK FETCH completed\r\n");
    let r = b.send(&backend, "f SEARCH ALL\r\n");
    assert_eq!(r, "* SEARCH 1 2 3\r\nf OK SEARCH completed\r\n");
    let r = b.send(&backend, "g NOOP\r\n");
    assert_eq!(r, "* 1 EXPUNGE\r\ng OK NOOP completed\r\n");
    let r = b.send(&backend, "h FETCH 2 UID\r\n");
    assert_eq!(r, "* 2 FETCH (UID 3)\r\nh OK FETCH completed\r\n");
    // UID commands may report expunges.
    a.send(
        &backend,
        "i STORE 1 +FLAGS.SILENT (\\Deleted)\r\nj EXPUNGE\r\n",
    );
    let r = b.send(&backend, "k UID FETCH 3 UID\r\n");
    assert_eq!(
        r,
        "* 2 FETCH (UID 3)\r\n* 1 EXPUNGE\r\nk OK UID FETCH completed\r\n"
    );
}

#[test]
fn keywords_are_stored_announced_searched_and_copied_by_name() {
    let backend = TestBackend::new();
    for s in ["one", "two"] {
        backend.deliver(s, "x");
    }
    let mut a = Client::selected(&backend);
    let mut b = Client::selected(&backend);
    let r = a.send(&backend, "a STORE 1 +FLAGS ($Forwarded Work)\r\n");
    assert_eq!(
        lines(&r),
        [
            "* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Forwarded Work)",
            "* OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Forwarded Work \\*)] Flags permitted",
            "* 1 FETCH (FLAGS ($Forwarded Work \\Recent))",
            "a OK STORE completed"
        ]
    );
    // The other session learns the new flags, then the message's.
    let r = b.send(&backend, "b NOOP\r\n");
    assert!(
        r.starts_with(
            "* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Forwarded Work)\r\n"
        ),
        "{r}"
    );
    assert!(
        r.contains("* 1 FETCH (UID 1 FLAGS ($Forwarded Work))\r\n"),
        "{r}"
    );
    // Names compare without case; FLAGS replaces keywords too.
    let r = a.send(
        &backend,
        "c SEARCH KEYWORD work\r\nd SEARCH UNKEYWORD WORK\r\ne SEARCH KEYWORD nothing\r\n",
    );
    assert_eq!(
        r,
        "* SEARCH 1\r\nc OK SEARCH completed\r\n* SEARCH 2\r\nd OK SEARCH completed\r\n* SEARCH\r\ne OK SEARCH completed\r\n"
    );
    let r = a.send(
        &backend,
        "f STORE 2 FLAGS (\\Seen Work)\r\ng STORE 1 -FLAGS ($forwarded)\r\n",
    );
    assert_eq!(
        r,
        "* 2 FETCH (FLAGS (\\Seen Work \\Recent))\r\nf OK STORE completed\r\n* 1 FETCH (FLAGS (Work \\Recent))\r\ng OK STORE completed\r\n"
    );
    // COPY keeps names, whatever slot they have in the other folder.
    a.send(&backend, "h CREATE Other\r\n");
    a.send(&backend, "i APPEND Other (Zeta) {5}\r\nhello\r\n");
    let r = a.send(
        &backend,
        "j COPY 2 Other\r\nk EXAMINE Other\r\nl FETCH 1:* FLAGS\r\n",
    );
    assert!(
        r.contains("* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft Zeta Work)\r\n"),
        "{r}"
    );
    assert!(
        r.contains(
            "* 1 FETCH (FLAGS (Zeta \\Recent))\r\n* 2 FETCH (FLAGS (\\Seen Work \\Recent))\r\n"
        ),
        "arrivals by APPEND and COPY are \\Recent, flags or not: {r}"
    );
    assert!(r.contains("* 2 RECENT\r\n"), "{r}");
    let r = a.send(
        &backend,
        "m SELECT INBOX\r\nn STORE 1 +FLAGS (bad]name)\r\n",
    );
    assert!(r.contains("n BAD") || r.contains("n NO"), "{r}");
}

#[test]
fn twenty_seven_keywords_do_not_fit() {
    let backend = TestBackend::new();
    backend.deliver("one", "x");
    let mut c = Client::selected(&backend);
    let names: Vec<String> = (0..26).map(|i| format!("k{i}")).collect();
    let r = c.send(
        &backend,
        &format!("a STORE 1 +FLAGS.SILENT ({})\r\n", names.join(" ")),
    );
    assert!(
        r.contains("PERMANENTFLAGS") && !r.contains("\\*)]"),
        "full: no \\* now: {r}"
    );
    assert!(r.ends_with("a OK STORE completed\r\n"), "{r}");
    let r = c.send(&backend, "b STORE 1 +FLAGS (one-more)\r\n");
    assert_eq!(
        r,
        "b NO [LIMIT] Too many keywords in this mailbox (26 at most)\r\n"
    );
}

#[test]
fn copy_and_move_with_copyuid() {
    let backend = TestBackend::new();
    for s in ["one", "two", "three"] {
        backend.deliver(s, "x");
    }
    let mut c = Client::selected(&backend);
    let r = c.send(&backend, "a COPY 1:2 Archive\r\n");
    assert_eq!(r, "a NO [TRYCREATE] Mailbox does not exist\r\n");
    c.send(&backend, "b CREATE Archive\r\n");
    let r = c.send(&backend, "c COPY 1:2 Archive\r\n");
    let validity = {
        let status = c.send(&backend, "s STATUS Archive (UIDVALIDITY MESSAGES)\r\n");
        let v: String = status
            .split("UIDVALIDITY ")
            .nth(1)
            .unwrap()
            .chars()
            .take_while(|ch| ch.is_ascii_digit())
            .collect();
        assert!(status.contains("MESSAGES 2"), "{status}");
        v
    };
    assert_eq!(
        r,
        format!("c OK [COPYUID {validity} 1:2 1:2] COPY completed\r\n")
    );
    let r = c.send(&backend, "d UID MOVE 2:3 Archive\r\n");
    assert_eq!(
        r,
        format!("* OK [COPYUID {validity} 2:3 3:4] Moved\r\n* 2 EXPUNGE\r\n* 2 EXPUNGE\r\nd OK UID MOVE completed\r\n")
    );
    let r = c.send(&backend, "e MOVE 1 Archive\r\n");
    assert!(
        r.contains("[COPYUID ") && r.contains("* 1 EXPUNGE\r\ne OK MOVE completed"),
        "{r}"
    );
    let r = c.send(&backend, "f STATUS Archive (MESSAGES UIDNEXT)\r\n");
    assert_eq!(
        r,
        "* STATUS Archive (MESSAGES 5 UIDNEXT 6)\r\nf OK STATUS completed\r\n"
    );
}

#[test]
fn search_keys() {
    let backend = TestBackend::new();
    backend.deliver("hello world", "the quick brown fox");
    backend.deliver("second", "lazy dog");
    backend.deliver("third", "nothing");
    let mut c = Client::selected(&backend);
    c.send(&backend, "a STORE 2 +FLAGS.SILENT (\\Seen \\Flagged)\r\n");
    let cases = [
        ("ALL", "1 2 3"),
        ("SEEN", "2"),
        ("UNSEEN", "1 3"),
        ("NEW", "1 3"),
        ("OLD", ""),
        ("RECENT FLAGGED", "2"),
        ("SUBJECT HELLO", "1"),
        ("BODY DOG", "2"),
        ("TEXT alice", "1 2 3"),
        ("TEXT fox", "1"),
        ("FROM \"alice@example\"", "1 2 3"),
        ("TO carol", ""),
        ("CC carol", "1 2 3"),
        ("BCC carol", ""),
        ("HEADER Message-ID \"<second@\"", "2"),
        ("HEADER X-Nope \"\"", ""),
        ("NOT SEEN", "1 3"),
        ("OR SEEN SUBJECT third", "2 3"),
        ("(SEEN FLAGGED) UNDELETED", "2"),
        ("2:*", "2 3"),
        ("UID 1,3", "1 3"),
        ("LARGER 10 SMALLER 100000", "1 2 3"),
        ("SENTON 7-Feb-1994", "1 2 3"),
        ("SENTBEFORE 7-Feb-1994", ""),
        ("SENTSINCE 8-Feb-1994", ""),
        ("SINCE 1-Jan-2000", "1 2 3"),
        ("BEFORE 1-Jan-2000", ""),
        ("KEYWORD $Junk", ""),
        ("UNKEYWORD $Junk", "1 2 3"),
        ("CHARSET UTF-8 SUBJECT second", "2"),
    ];
    for (criteria, expect) in cases {
        let r = c.send(&backend, &format!("s SEARCH {criteria}\r\n"));
        let want = if expect.is_empty() {
            "* SEARCH\r\ns OK SEARCH completed\r\n".to_owned()
        } else {
            format!("* SEARCH {expect}\r\ns OK SEARCH completed\r\n")
        };
        assert_eq!(r, want, "{criteria}");
    }
    let r = c.send(&backend, "u UID SEARCH SUBJECT third\r\n");
    assert_eq!(r, "* SEARCH 3\r\nu OK UID SEARCH completed\r\n");
    let r = c.send(&backend, "v SEARCH CHARSET KOI8-R ALL\r\n");
    assert!(r.starts_with("v NO [BADCHARSET]"), "{r}");
}

// ------------------------------------------------------------ mailboxes

#[test]
fn list_create_delete_rename_subscribe() {
    let backend = TestBackend::new();
    backend.user("alice").create_special_use().unwrap();
    let mut c = Client::logged_in(&backend);
    let r = c.send(&backend, "a LIST \"\" \"\"\r\n");
    assert_eq!(
        r,
        "* LIST (\\Noselect) \"/\" \"\"\r\na OK LIST completed\r\n"
    );
    let r = c.send(
        &backend,
        "b CREATE Work/Projects/\r\nc CREATE \"Caf&AOk-\"\r\n",
    );
    assert_eq!(r, "b OK CREATE completed\r\nc OK CREATE completed\r\n");
    let r = c.send(&backend, "d LIST \"\" %\r\n");
    assert_eq!(
        lines(&r),
        [
            "* LIST (\\HasNoChildren) \"/\" INBOX",
            "* LIST (\\HasNoChildren \\Archive) \"/\" Archive",
            "* LIST (\\HasNoChildren) \"/\" Caf&AOk-",
            "* LIST (\\HasNoChildren \\Drafts) \"/\" Drafts",
            "* LIST (\\HasNoChildren \\Junk) \"/\" Junk",
            "* LIST (\\HasNoChildren \\Sent) \"/\" Sent",
            "* LIST (\\HasNoChildren \\Trash) \"/\" Trash",
            "* LIST (\\Noselect \\HasChildren) \"/\" Work",
            "d OK LIST completed"
        ]
    );
    let r = c.send(&backend, "e LIST Work/ *\r\n");
    assert_eq!(
        r,
        "* LIST (\\HasNoChildren) \"/\" Work/Projects\r\ne OK LIST completed\r\n"
    );
    // RFC 3501 6.3.8: the reference is prepended as is ("Work*").
    let r = c.send(&backend, "e LIST Work *\r\n");
    assert_eq!(
        lines(&r),
        [
            "* LIST (\\Noselect \\HasChildren) \"/\" Work",
            "* LIST (\\HasNoChildren) \"/\" Work/Projects",
            "e OK LIST completed"
        ]
    );
    let r = c.send(&backend, "f LIST (SUBSCRIBED) \"\" * RETURN (CHILDREN)\r\n");
    assert!(
        r.starts_with("* LIST (\\HasNoChildren \\Subscribed \\Archive) \"/\" Archive\r\n"),
        "{r}"
    );
    assert!(!r.contains("Work"), "{r}");
    let r = c.send(&backend, "g SUBSCRIBE Nowhere\r\n");
    assert!(r.starts_with("g NO [NONEXISTENT]"), "{r}");
    let r = c.send(
        &backend,
        "g SUBSCRIBE Work/Projects\r\nh LSUB \"\" Work/*\r\n",
    );
    assert_eq!(
        r,
        "g OK SUBSCRIBE completed\r\n* LSUB () \"/\" Work/Projects\r\nh OK LSUB completed\r\n"
    );
    let r = c.send(
        &backend,
        "i LIST \"\" * RETURN (SPECIAL-USE SUBSCRIBED)\r\n",
    );
    assert!(
        r.contains("* LIST (\\NonExistent \\HasChildren) \"/\" Work\r\n"),
        "{r}"
    );
    assert!(
        r.contains("* LIST (\\HasNoChildren \\Subscribed) \"/\" Work/Projects\r\n"),
        "{r}"
    );
    let r = c.send(&backend, "j LIST (SPECIAL-USE) \"\" *\r\n");
    assert_eq!(lines(&r).len(), 6, "{r}");
    let r = c.send(
        &backend,
        "k RENAME Work/Projects Play/Projects\r\nl LIST \"\" Play*\r\n",
    );
    assert_eq!(
        lines(&r),
        [
            "k OK RENAME completed",
            "* LIST (\\Noselect \\HasChildren) \"/\" Play",
            "* LIST (\\HasNoChildren) \"/\" Play/Projects",
            "l OK LIST completed"
        ]
    );
    let r = c.send(&backend, "m CREATE Sent\r\nn CREATE inbox\r\n");
    assert!(r.starts_with("m NO [ALREADYEXISTS]"), "{r}");
    assert!(r.contains("n NO [ALREADYEXISTS]"), "{r}");
    let r = c.send(
        &backend,
        "o DELETE Play/Projects\r\np DELETE Play/Projects\r\nq DELETE inbox\r\n",
    );
    assert_eq!(
        lines(&r),
        [
            "o OK DELETE completed",
            "p NO [NONEXISTENT] Mailbox does not exist",
            "q NO [CANNOT] INBOX cannot be deleted"
        ]
    );
    let r = c.send(&backend, "r UNSUBSCRIBE Work/Projects\r\ns LSUB \"\" *\r\n");
    assert!(!r.contains("Work"), "{r}");
}

#[test]
fn rename_inbox_moves_its_messages() {
    let backend = TestBackend::new();
    backend.deliver("one", "x");
    backend.deliver("two", "x");
    let mut c = Client::logged_in(&backend);
    let r = c.send(
        &backend,
        "a RENAME INBOX Old\r\nb STATUS Old (MESSAGES)\r\nc STATUS INBOX (MESSAGES)\r\n",
    );
    assert_eq!(
        lines(&r),
        [
            "a OK RENAME completed",
            "* STATUS Old (MESSAGES 2)",
            "b OK STATUS completed",
            "* STATUS INBOX (MESSAGES 0)",
            "c OK STATUS completed"
        ]
    );
}

#[test]
fn status_and_append() {
    let backend = TestBackend::new();
    backend.deliver("one", "x");
    let mut c = Client::logged_in(&backend);
    let r = c.send(
        &backend,
        "a STATUS INBOX (MESSAGES RECENT UIDNEXT UNSEEN)\r\n",
    );
    assert_eq!(
        r,
        "* STATUS INBOX (MESSAGES 1 RECENT 1 UIDNEXT 2 UNSEEN 1)\r\na OK STATUS completed\r\n"
    );
    let r = c.send(&backend, "b APPEND Drafts {3+}\r\nabc\r\n");
    assert_eq!(r, "b NO [TRYCREATE] Mailbox does not exist\r\n");
    c.send(&backend, "c SELECT INBOX\r\n");
    let msg = message("appended", "hi");
    let r = c.send(
        &backend,
        &format!(
            "d APPEND INBOX (\\Seen \\Flagged) \"14-Jul-2020 02:44:25 +0200\" {{{}}}\r\n{msg}\r\n",
            msg.len()
        ),
    );
    let l = lines(&r);
    assert_eq!(l[0], "+ Ready for literal data");
    assert_eq!(l[1], "* 2 EXISTS");
    assert_eq!(l[2], "* 2 RECENT", "appended with flags, still \\Recent");
    assert!(
        l[3].starts_with("d OK [APPENDUID ") && l[3].ends_with(" 2] APPEND completed"),
        "{r}"
    );
    let r = c.send(&backend, "e FETCH 2 (FLAGS INTERNALDATE)\r\n");
    assert_eq!(
        r,
        "* 2 FETCH (FLAGS (\\Flagged \\Seen \\Recent) INTERNALDATE \"14-Jul-2020 00:44:25 +0000\")\r\ne OK FETCH completed\r\n"
    );
    let config = ImapConfig {
        max_append: 2,
        ..ImapConfig::default()
    };
    let mut small = Client::with(
        config,
        PeerInfo {
            tls: true,
            plaintext_allowed: false,
        },
    );
    small.send(&backend, "a LOGIN alice secret\r\n");
    let r = small.send(&backend, "b APPEND INBOX {3+}\r\nabc\r\n");
    assert_eq!(r, "b NO [TOOBIG] Message too big\r\n");
}

#[test]
fn idle_reports_changes_until_done() {
    let backend = TestBackend::new();
    backend.deliver("one", "x");
    let mut c = Client::selected(&backend);
    let r = c.send(&backend, "i IDLE\r\n");
    assert_eq!(r, "+ idling\r\n");
    assert_eq!(c.outcomes.last(), Some(&Outcome::Idle));
    backend.deliver("two", "x");
    c.session.idle_poll(&backend);
    assert_eq!(c.take(), "* 2 EXISTS\r\n* 2 RECENT\r\n");
    c.session.idle_poll(&backend);
    assert_eq!(c.take(), "");
    let r = c.send(&backend, "done\r\n");
    assert_eq!(r, "i OK IDLE terminated\r\n");
    let r = c.send(&backend, "n NOOP\r\n");
    assert_eq!(r, "n OK NOOP completed\r\n");
    // IDLE in the authenticated state has nothing to report but works.
    let mut d = Client::logged_in(&backend);
    assert_eq!(d.send(&backend, "i IDLE\r\n"), "+ idling\r\n");
    d.session.idle_poll(&backend);
    assert_eq!(d.send(&backend, "DONE\r\n"), "i OK IDLE terminated\r\n");
}

#[test]
fn timeout_says_bye() {
    let mut c = Client::new();
    c.take();
    c.session.timeout();
    assert_eq!(c.take(), "* BYE Autologout; idle for too long\r\n");
    assert!(c.session.is_logged_out());
}

#[test]
fn a_settled_folder_is_not_rescanned_yet_every_change_shows() {
    let settle = || std::thread::sleep(std::time::Duration::from_millis(1100));
    let backend = TestBackend::new();
    for s in ["one", "two", "three"] {
        backend.deliver(s, "x");
    }
    let mut a = Client::selected(&backend);
    let mut b = Client::selected(&backend);
    settle();
    // The first NOOP records a settled stamp; the second may skip the scan.
    assert_eq!(b.send(&backend, "s NOOP\r\n"), "s OK NOOP completed\r\n");
    assert_eq!(b.send(&backend, "t NOOP\r\n"), "t OK NOOP completed\r\n");
    a.send(&backend, "a STORE 2 +FLAGS.SILENT (\\Flagged)\r\n");
    assert_eq!(
        b.send(&backend, "b NOOP\r\n"),
        "* 2 FETCH (UID 2 FLAGS (\\Flagged))\r\nb OK NOOP completed\r\n"
    );
    settle();
    b.send(&backend, "u NOOP\r\n");
    backend.deliver("four", "x");
    let r = b.send(&backend, "c NOOP\r\n");
    assert!(r.contains("* 4 EXISTS\r\n"), "{r}");
    // An expunge held back during FETCH is reported later even when the
    // folder has not changed since.
    a.send(
        &backend,
        "d STORE 1 +FLAGS.SILENT (\\Deleted)\r\ne EXPUNGE\r\n",
    );
    settle();
    let r = b.send(&backend, "f FETCH 1 UID\r\n");
    assert_eq!(r, "* 1 FETCH (UID 1)\r\nf OK FETCH completed\r\n");
    let r = b.send(&backend, "g FETCH 1 UID\r\n");
    assert_eq!(r, "* 1 FETCH (UID 1)\r\ng OK FETCH completed\r\n");
    let r = b.send(&backend, "h NOOP\r\n");
    assert_eq!(r, "* 1 EXPUNGE\r\nh OK NOOP completed\r\n");
}

#[test]
fn parsed_structures_are_kept_on_disk_for_later_sessions() {
    let backend = TestBackend::new();
    for s in ["one", "two"] {
        backend.deliver(s, "x");
    }
    let mut a = Client::selected(&backend);
    let first = a.send(&backend, "a FETCH 1:2 (BODYSTRUCTURE ENVELOPE)\r\n");
    assert!(
        first.contains("BODYSTRUCTURE (\"text\" \"plain\""),
        "{first}"
    );
    let inbox = backend.user("alice").inbox();
    assert!(
        inbox.path().join("spate-cache").is_file(),
        "written by FETCH"
    );
    // Maildir message files never change; rewrite one behind the
    // server's back to show that the next session reads the cache.
    let path = inbox.snapshot().unwrap().messages[0].path.clone();
    std::fs::write(&path, "Content-Type: image/png\r\n\r\nxx\r\n").unwrap();
    let mut b = Client::selected(&backend);
    let second = b.send(&backend, "b FETCH 1:2 (BODYSTRUCTURE ENVELOPE)\r\n");
    assert_eq!(second.replace("b OK FETCH", "a OK FETCH"), first);
    // A damaged cache is parsed again, never trusted.
    std::fs::write(inbox.path().join("spate-cache"), "garbage").unwrap();
    let mut c = Client::selected(&backend);
    let third = c.send(&backend, "c FETCH 1 BODYSTRUCTURE\r\n");
    assert!(third.contains("(\"image\" \"png\""), "{third}");
}

#[test]
fn search_looks_at_decoded_text() {
    let backend = TestBackend::new();
    let inbox = backend.user("alice").inbox();
    let encoded =
        "Subject: =?UTF-8?B?R3LDvMOfZQ==?= aus Bern\r\nContent-Type: text/plain; charset=utf-8\r\n\
Content-Transfer-Encoding: base64\r\n\r\nw6RwZmVsIHVuZCBCaXJuZW4=\r\n";
    let latin = "Subject: plain\r\nContent-Type: text/plain; charset=iso-8859-1\r\n\
Content-Transfer-Encoding: quoted-printable\r\n\r\nK=E4se und Brot\r\n";
    inbox.deliver(&[encoded.as_bytes()]).unwrap();
    inbox.deliver(&[latin.as_bytes()]).unwrap();
    let mut c = Client::selected(&backend);
    let r = c.send(&backend, "a SEARCH CHARSET UTF-8 SUBJECT {7+}\r\ngrüße\r\n");
    assert_eq!(r, "* SEARCH 1\r\na OK SEARCH completed\r\n");
    let r = c.send(&backend, "b SEARCH CHARSET UTF-8 BODY {6+}\r\nÄPFEL\r\n");
    assert_eq!(r, "* SEARCH 1\r\nb OK SEARCH completed\r\n");
    let r = c.send(&backend, "c SEARCH CHARSET UTF-8 TEXT {5+}\r\nkäse\r\n");
    assert_eq!(r, "* SEARCH 2\r\nc OK SEARCH completed\r\n");
    let r = c.send(&backend, "d SEARCH TEXT bern\r\n");
    assert_eq!(r, "* SEARCH 1\r\nd OK SEARCH completed\r\n");
}

#[test]
fn sort_orders_matches_by_the_keys_given() {
    let backend = TestBackend::new();
    let inbox = backend.user("alice").inbox();
    for (from, subject, body) in [
        ("zed@x", "Re: beta", "a longer body than the others\r\n"),
        ("amy@x", "alpha", "short\r\n"),
        ("bob@x", "[list] Fwd: alpha", "mid size body\r\n"),
    ] {
        let msg = format!("From: {from}\r\nSubject: {subject}\r\n\r\n{body}");
        inbox.deliver(&[msg.as_bytes()]).unwrap();
    }
    let mut c = Client::selected(&backend);
    let r = c.send(&backend, "a SORT (REVERSE SIZE) UTF-8 ALL\r\n");
    assert_eq!(r, "* SORT 1 3 2\r\na OK SORT completed\r\n");
    let r = c.send(&backend, "b SORT (SUBJECT FROM) US-ASCII NOT DELETED\r\n");
    assert_eq!(r, "* SORT 2 3 1\r\nb OK SORT completed\r\n");
    let r = c.send(&backend, "c UID SORT (FROM) UTF-8 SUBJECT alpha\r\n");
    assert_eq!(r, "* SORT 2 3\r\nc OK UID SORT completed\r\n");
    let r = c.send(&backend, "d SORT (SIZE) KOI8-R ALL\r\n");
    assert!(r.starts_with("d NO [BADCHARSET"), "{r}");
    let r = c.send(
        &backend,
        "e SORT SIZE UTF-8 ALL\r\nf SORT (NAME) UTF-8 ALL\r\n",
    );
    assert!(r.starts_with("e BAD") && r.contains("f BAD"), "{r}");
}

#[test]
fn thread_answers_both_algorithms_over_the_matches() {
    let backend = TestBackend::new();
    let inbox = backend.user("alice").inbox();
    // seq: 1 root, 2 unrelated, 3 reply to 1, 4 reply to 3 by
    // In-Reply-To only, 5 a reply to a message not in the mailbox, 6
    // "Re: other" without references.
    for (minute, subject, id, refs) in [
        (0, "Topic", "<t1@x>", ""),
        (1, "other", "<o1@x>", ""),
        (2, "Re: Topic", "<t2@x>", "References: <t1@x>\r\n"),
        (3, "Re: Re: Topic", "<t3@x>", "In-Reply-To: <t2@x>\r\n"),
        (4, "Re: lost", "<l2@x>", "References: <lost@x>\r\n"),
        (5, "Re: other", "<o2@x>", ""),
    ] {
        let msg = format!(
            "Subject: {subject}\r\nDate: Mon, 1 Jan 2024 10:0{minute}:00 +0000\r\n\
             Message-ID: {id}\r\n{refs}\r\nbody {minute}\r\n"
        );
        inbox.deliver(&[msg.as_bytes()]).unwrap();
    }
    let mut c = Client::selected(&backend);
    let r = c.send(&backend, "a THREAD REFERENCES UTF-8 ALL\r\n");
    assert_eq!(r, "* THREAD (1 3 4)(2 6)(5)\r\na OK THREAD completed\r\n");
    let r = c.send(&backend, "b THREAD ORDEREDSUBJECT US-ASCII ALL\r\n");
    assert_eq!(
        r, "* THREAD (1 (3)(4))(2 6)(5)\r\nb OK THREAD completed\r\n",
        "threads by the date of their first message"
    );
    // Only the matches: 3 threads alone once 1 is left out.
    c.send(&backend, "s STORE 1 +FLAGS (\\Deleted)\r\n");
    let r = c.send(&backend, "c UID THREAD REFERENCES UTF-8 UNDELETED\r\n");
    assert_eq!(r, "* THREAD (2 6)(3 4)(5)\r\nc OK UID THREAD completed\r\n");
    let r = c.send(&backend, "d THREAD REFERENCES UTF-8 SUBJECT nothing\r\n");
    assert_eq!(r, "* THREAD\r\nd OK THREAD completed\r\n");
    let r = c.send(&backend, "e THREAD REFERENCES KOI8-R ALL\r\n");
    assert!(r.starts_with("e NO [BADCHARSET"), "{r}");
    let r = c.send(
        &backend,
        "f THREAD SHUFFLE UTF-8 ALL\r\ng THREAD REFERENCES UTF-8\r\n",
    );
    assert!(r.starts_with("f BAD") && r.contains("g BAD"), "{r}");
    // Not in the authenticated state.
    let mut c = Client::logged_in(&backend);
    let r = c.send(&backend, "h THREAD REFERENCES UTF-8 ALL\r\n");
    assert!(r.starts_with("h BAD"), "{r}");
}

#[test]
fn quota_root_and_usage_in_kib() {
    let mut backend = TestBackend::new();
    // Without a quota: the root, with no resources.
    let mut c = Client::logged_in(&backend);
    let r = c.send(&backend, "a GETQUOTAROOT INBOX\r\n");
    assert_eq!(
        r,
        "* QUOTAROOT INBOX \"\"\r\n* QUOTA \"\" ()\r\na OK GETQUOTAROOT completed\r\n"
    );
    backend.quota = Some(8 * 1024);
    backend.deliver("one", &"x".repeat(2000));
    let used = backend.user("alice").stored_bytes().unwrap();
    assert!(used > 2000, "{used}");
    let kib = used.div_ceil(1024);
    let mut c = Client::logged_in(&backend);
    let r = c.send(&backend, "b GETQUOTAROOT \"Not there/yet\"\r\n");
    assert_eq!(
        r,
        format!(
            "* QUOTAROOT \"Not there/yet\" \"\"\r\n* QUOTA \"\" (STORAGE {kib} 8)\r\n\
             b OK GETQUOTAROOT completed\r\n"
        )
    );
    let r = c.send(&backend, "c GETQUOTA \"\"\r\n");
    assert_eq!(
        r,
        format!("* QUOTA \"\" (STORAGE {kib} 8)\r\nc OK GETQUOTA completed\r\n")
    );
    // The figure follows an APPEND.
    let msg = "y".repeat(3000);
    let r = c.send(
        &backend,
        &format!("d APPEND INBOX {{{}+}}\r\n{msg}\r\n", msg.len()),
    );
    assert!(r.contains("d OK [APPENDUID"), "{r}");
    let r = c.send(&backend, "e GETQUOTA \"\"\r\n");
    let grown = (used + 3000).div_ceil(1024);
    assert!(
        r.starts_with(&format!("* QUOTA \"\" (STORAGE {grown} 8)")),
        "{r}"
    );
    // Past the quota: NO [OVERQUOTA].
    let msg = "z".repeat(4000);
    let r = c.send(
        &backend,
        &format!("f APPEND INBOX {{{}+}}\r\n{msg}\r\n", msg.len()),
    );
    assert!(r.starts_with("f NO [OVERQUOTA]"), "{r}");
    let r = c.send(&backend, "g GETQUOTA \"user/alice\"\r\n");
    assert!(r.starts_with("g NO [NONEXISTENT]"), "{r}");
    let r = c.send(&backend, "h SETQUOTA \"\" (STORAGE 100000)\r\n");
    assert!(r.starts_with("h NO [NOPERM]"), "{r}");
    let r = c.send(&backend, "i SETQUOTA \"\" (STORAGE)\r\nj GETQUOTA\r\n");
    assert!(r.starts_with("i BAD") && r.contains("j BAD"), "{r}");
    // DELETED-STORAGE (RFC 9208 4.1.4): the \Deleted messages' sizes.
    let r = c.send(&backend, "k STATUS INBOX (DELETED DELETED-STORAGE)\r\n");
    assert_eq!(
        r,
        "* STATUS INBOX (DELETED 0 DELETED-STORAGE 0)\r\nk OK STATUS completed\r\n"
    );
    c.send(
        &backend,
        "l SELECT INBOX\r\nm STORE 2 +FLAGS.SILENT (\\Deleted)\r\n",
    );
    let r = c.send(&backend, "n STATUS INBOX (DELETED-STORAGE DELETED)\r\n");
    assert_eq!(
        r,
        "* STATUS INBOX (DELETED-STORAGE 3000 DELETED 1)\r\nn OK STATUS completed\r\n"
    );
    let mut c = Client::new();
    c.take();
    let r = c.send(&backend, "o GETQUOTAROOT INBOX\r\n");
    assert!(r.starts_with("o BAD"), "{r}");
}

// ------------------------------------------------------------ long FETCH replies

/// A message of about `size` bytes whose body names it.
fn large_message(n: usize, size: usize) -> String {
    let line = "the quick brown fox jumps over the lazy dog 0123456789 abcdefghij\r\n";
    let body = line.repeat(size / line.len());
    format!("Subject: large {n}\r\n\r\nstart-{n}\r\n{body}end-{n}\r\n")
}

/// 20 messages of 64 KiB: a FETCH of their bodies is about five parts.
fn large_mailbox() -> TestBackend {
    let backend = TestBackend::new();
    let inbox = backend.user("alice").inbox();
    for n in 1..=20 {
        inbox
            .deliver(&[large_message(n, 64 * 1024).as_bytes()])
            .unwrap();
    }
    backend
}

#[test]
fn a_long_fetch_comes_out_in_parts_that_add_up_to_the_whole() {
    let backend = large_mailbox();
    let mut c = Client::selected(&backend);
    let whole = c.send(&backend, "f FETCH 1:* BODY.PEEK[]\r\n");
    assert!(c.parts.len() >= 3, "{} parts", c.parts.len());
    for part in &c.parts {
        assert!(!part.contains("f OK"), "tagged only at the end");
        assert!(part.len() >= REPLY_PART, "{}", part.len());
        assert!(part.len() < REPLY_PART + 80 * 1024, "{}", part.len());
        assert!(part.ends_with(")\r\n"), "parts end between responses");
    }
    assert!(whole.ends_with("\r\nf OK FETCH completed\r\n"));
    assert_eq!(whole.matches("f OK").count(), 1);
    // The same responses as one FETCH per message (each a single part).
    let mut one_by_one = String::new();
    for n in 1..=20 {
        let r = c.send(&backend, &format!("g{n} FETCH {n} BODY.PEEK[]\r\n"));
        one_by_one.push_str(
            r.strip_suffix(&format!("g{n} OK FETCH completed\r\n"))
                .unwrap(),
        );
    }
    assert_eq!(
        whole.strip_suffix("f OK FETCH completed\r\n").unwrap(),
        one_by_one
    );
    // A UID FETCH that is not resumed is finished by the next command.
    let mut raw = Client::selected(&backend);
    let command = parse_command(b"u UID FETCH 1:* BODY.PEEK[]").unwrap();
    assert_eq!(raw.session.execute(command, &backend), Outcome::Partial);
    let command = parse_command(b"n NOOP").unwrap();
    assert_eq!(raw.session.execute(command, &backend), Outcome::Continue);
    let out = raw.take();
    assert_eq!(out.matches(" FETCH (").count(), 20);
    assert!(
        out.ends_with("u OK UID FETCH completed\r\nn OK NOOP completed\r\n"),
        "{}",
        &out[out.len() - 80..]
    );
}

#[test]
fn a_long_fetch_sets_seen_on_every_message_as_one_command() {
    let backend = large_mailbox();
    let mut c = Client::selected(&backend);
    let r = c.send(&backend, "f FETCH 1:* BODY[]\r\n");
    assert!(c.parts.len() >= 3, "{} parts", c.parts.len());
    // Every response carries the new flags, in the first part too.
    assert_eq!(
        r.matches("FLAGS (\\Seen \\Recent)").count(),
        20,
        "{}",
        &r[..200]
    );
    assert!(c.parts[0].contains("* 1 FETCH (FLAGS (\\Seen \\Recent) BODY[] {"));
    assert!(r.ends_with("f OK FETCH completed\r\n"));
    // Stored, for every message, and nothing to report after.
    let stored = backend.user("alice").inbox().snapshot().unwrap();
    assert!(stored
        .messages
        .iter()
        .all(|m| m.flags.contains(crate::mailbox::Flag::Seen)));
    let r = c.send(&backend, "n NOOP\r\n");
    assert_eq!(r, "n OK NOOP completed\r\n");
}

#[test]
fn an_expunge_between_parts_gives_expungeissued() {
    let backend = large_mailbox();
    let mut c = Client::selected(&backend);
    let command = parse_command(b"f FETCH 1:* BODY.PEEK[]").unwrap();
    assert_eq!(c.session.execute(command, &backend), Outcome::Partial);
    let first = c.take();
    // Another session removes the last three messages meanwhile.
    let inbox = backend.user("alice").inbox();
    let uids: Vec<_> = inbox.snapshot().unwrap().messages[17..]
        .iter()
        .map(|m| m.uid)
        .collect();
    assert_eq!(inbox.expunge(&uids).unwrap().len(), 3);
    let mut rest = String::new();
    let outcome = loop {
        let o = c.session.resume();
        rest.push_str(&c.take());
        if o != Outcome::Partial {
            break o;
        }
    };
    assert_eq!(outcome, Outcome::Continue);
    let all = first + &rest;
    assert_eq!(all.matches(" FETCH (").count(), 17);
    // No EXPUNGE during FETCH (RFC 3501 7.4.1); the next command has it.
    assert!(!all.contains("EXPUNGE\r\n"));
    assert!(
        all.ends_with(
            ")\r\nf OK [EXPUNGEISSUED] Some of the requested messages no longer exist\r\n"
        ),
        "{}",
        &all[all.len() - 120..]
    );
    let r = c.send(&backend, "n NOOP\r\n");
    assert_eq!(
        r,
        "* 18 EXPUNGE\r\n* 18 EXPUNGE\r\n* 18 EXPUNGE\r\nn OK NOOP completed\r\n"
    );
}

#[path = "condstore_tests.rs"]
mod condstore;
