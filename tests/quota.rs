//! Quotas over real sockets: IMAP APPEND and COPY over the quota answer
//! `NO [OVERQUOTA]` (RFC 9208 4.3.1) while MOVE and EXPUNGE free room;
//! the usage figure that IMAP changes move is the one SMTP RCPT checks;
//! and a RCPT for a user with 20,000 messages costs no walk of the
//! mailbox (999 pipelined RCPTs used to stall the core for seconds).

mod common;
#[path = "common/line.rs"]
mod line;

use std::time::{Duration, Instant};

use common::{TestServer, Tweaks};
use line::Line;

/// A message of about `size` bytes with `marker` in its subject.
fn message(marker: &str, size: usize) -> Vec<u8> {
    common::message(marker, size)
}

fn imap_login(server: &TestServer, user: &str) -> Line {
    let mut c = Line::connect(server.listener("imap"));
    assert!(c.line().starts_with("* OK"));
    let r = c.imap("l", &format!("LOGIN {user} pw"));
    assert!(r.starts_with("l OK"), "{r}\n{}", c.transcript);
    c
}

/// APPENDs `body` to `folder` with a synchronising literal; the tagged
/// reply.
fn append(c: &mut Line, tag: &str, folder: &str, body: &[u8]) -> String {
    c.send(format!("{tag} APPEND {folder} {{{}}}\r\n", body.len()).as_bytes());
    let go = c.line();
    if !go.starts_with('+') {
        return go; // refused before the literal
    }
    c.send(body);
    c.send(b"\r\n");
    c.until_tagged(tag)
}

/// The reply to one RCPT after a MAIL with `mail_params`.
fn rcpt_status(server: &TestServer, mail_params: &str, to: &str) -> String {
    let mut s = server.session();
    let mail = format!("MAIL FROM:<s@elsewhere.example>{mail_params}");
    assert_eq!(s.cmd(&mail).code, 250);
    let r = s.cmd(&format!("RCPT TO:<{to}>"));
    s.quit();
    r.status()
}

#[test]
fn imap_append_and_copy_over_the_quota_answer_overquota() {
    let server = TestServer::start(
        Tweaks::default()
            .user("alice", "pw")
            .local("quota", "\"20K\"")
            .listener("imap"),
    );
    let mut c = imap_login(&server, "alice");
    assert!(c.imap("c", "CREATE Archive").starts_with("c OK"));
    let eight = message("eight", 8 * 1024);
    // 8K + 8K fit in 20K; a third 8K does not.
    for tag in ["a1", "a2"] {
        let r = append(&mut c, tag, "INBOX", &eight);
        assert!(r.starts_with(&format!("{tag} OK")), "{r}\n{}", c.transcript);
    }
    let r = append(&mut c, "a3", "Archive", &eight);
    assert!(r.starts_with("a3 NO [OVERQUOTA]"), "{r}\n{}", c.transcript);
    // SMTP sees the same figure: alice has no room for a declared 8K.
    assert_eq!(
        rcpt_status(&server, " SIZE=8192", "alice@example.test"),
        "452 4.2.2"
    );
    assert!(c.imap("s", "SELECT INBOX").starts_with("s OK"));
    let r = c.imap("k", "COPY 1 Archive");
    assert!(r.starts_with("k NO [OVERQUOTA]"), "{r}\n{}", c.transcript);
    // MOVE does not add to the user's usage: it works when full.
    let r = c.imap("m", "MOVE 1 Archive");
    assert!(r.starts_with("m OK"), "{r}\n{}", c.transcript);
    // EXPUNGE frees room at once: the next APPEND fits.
    assert!(c
        .imap("f", "STORE 1 +FLAGS (\\Deleted)")
        .starts_with("f OK"));
    assert!(c.imap("e", "EXPUNGE").starts_with("e OK"));
    let r = append(&mut c, "a4", "Archive", &eight);
    assert!(r.starts_with("a4 OK"), "{r}\n{}", c.transcript);
    // 16K used: a declared 8K does not fit, 2K does.
    assert_eq!(
        rcpt_status(&server, " SIZE=8192", "alice@example.test"),
        "452 4.2.2"
    );
    assert_eq!(
        rcpt_status(&server, " SIZE=2048", "alice@example.test"),
        "250 2.1.5"
    );
    c.imap("z", "LOGOUT");
}

/// A user with 20,000 messages and a quota: 999 pipelined RCPTs are
/// answered from the in-memory figure. Before, each RCPT listed the
/// mailbox on the core's thread (12.8 s for 999 in a release build).
#[test]
fn rcpt_never_walks_a_big_mailbox() {
    const MESSAGES: usize = 20_000;
    let server = TestServer::start(
        Tweaks::default()
            .user("alice", "pw")
            .local("quota", "\"1G\"")
            .smtp("max_recipients", 1000),
    );
    // Put the messages in place as another delivery agent would.
    let new = server.mail_dir().join("alice/new");
    for sub in ["new", "cur", "tmp"] {
        std::fs::create_dir_all(server.mail_dir().join("alice").join(sub)).unwrap();
    }
    for n in 0..MESSAGES {
        std::fs::write(
            new.join(format!("1700000000.M{n}P1Q1.elsewhere,S=10")),
            b"Subject: x\r\n",
        )
        .unwrap();
    }
    // One delivery through spate: its figure is measured now.
    let mut s = server.session();
    s.send_message(
        "s@elsewhere.example",
        &["alice@example.test"],
        &message("first", 100),
    )
    .unwrap_or_else(|r| panic!("{r:?}"));
    s.quit();

    let mut s = server.session();
    let mut batch = b"MAIL FROM:<s@elsewhere.example>\r\n".to_vec();
    for _ in 0..999 {
        batch.extend_from_slice(b"RCPT TO:<alice@example.test>\r\n");
    }
    batch.extend_from_slice(b"RSET\r\n");
    let began = Instant::now();
    s.send(&batch);
    let mut accepted = 0;
    for _ in 0..1001 {
        if s.read_reply().code == 250 {
            accepted += 1;
        }
    }
    let took = began.elapsed();
    assert_eq!(accepted, 1001, "MAIL, 999 RCPT and RSET");
    eprintln!("999 RCPTs to a user with {MESSAGES} messages: {took:?}");
    assert!(
        took < Duration::from_secs(3),
        "999 RCPTs took {took:?}: does RCPT read the mailbox?"
    );
    s.quit();
}
