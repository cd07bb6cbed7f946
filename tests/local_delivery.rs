//! Local delivery to the mailbox tier: RCPT-time refusal of unknown users
//! (nothing queued), a message stored in `mail/<user>/new` byte for byte
//! under Return-Path and Delivered-To, aliases (to two users, and to an
//! external address that is forwarded with the original sender to a
//! capture sink), the catch-all, subaddresses, quotas (a message bigger
//! than the quota is refused at RCPT by its SIZE or after DATA, never
//! bounced; one that does not fit defers; a full mailbox is refused at
//! RCPT), a mailbox that cannot be written defers
//! and recovers on `spate queue flush`, and `kill -9` right after many
//! acknowledgements loses nothing.

#[path = "common/capture.rs"]
mod capture;
mod common;

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use capture::{wait_until, Sink};
use common::{contains, TestServer, Tweaks};

const DELIVERY_TIMEOUT: Duration = Duration::from_secs(30);

/// The files of a Maildir folder (`new` or `cur`), with their bytes.
fn maildir_files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<(String, Vec<u8>)> = rd
        .flatten()
        .filter(|e| e.path().is_file())
        .map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            (name, std::fs::read(e.path()).unwrap_or_default())
        })
        .collect();
    out.sort();
    out
}

/// Messages in `<mail_dir>/<user>/new`.
fn inbox(server: &TestServer, user: &str) -> Vec<Vec<u8>> {
    maildir_files(&server.mail_dir().join(user).join("new"))
        .into_iter()
        .map(|(_, bytes)| bytes)
        .collect()
}

/// Waits until `user` has a message containing `marker`; returns it.
fn wait_for_mail(server: &TestServer, user: &str, marker: &str) -> Vec<u8> {
    let mut found = None;
    wait_until(
        &format!("{marker} in {user}'s Maildir"),
        DELIVERY_TIMEOUT,
        || {
            found = inbox(server, user)
                .into_iter()
                .find(|m| contains(m, marker.as_bytes()));
            found.is_some()
        },
    );
    found.unwrap()
}

fn send(server: &TestServer, from: &str, to: &[&str], msg: &[u8]) -> String {
    let mut c = server.session();
    let id = c
        .send_message(from, to, msg)
        .unwrap_or_else(|r| panic!("refused: {r:?}\n{}", c.transcript));
    c.quit();
    id
}

fn wait_queue_empty(server: &TestServer) {
    wait_until("an empty queue", DELIVERY_TIMEOUT, || {
        server.queue_list().is_empty()
    });
}

/// The header block (up to the first empty line) of a stored message.
fn head(m: &[u8]) -> String {
    let end = m
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or(m.len());
    String::from_utf8_lossy(&m[..end]).into_owned()
}

#[test]
fn unknown_local_user_is_refused_at_rcpt_and_nothing_is_queued() {
    let server = TestServer::start(Tweaks::default().user("alice", "pw"));
    let mut c = server.session();
    assert_eq!(c.cmd("MAIL FROM:<someone@elsewhere.example>").code, 250);
    let r = c.cmd("RCPT TO:<nobody@example.test>");
    assert_eq!(r.status(), "550 5.1.1", "{}", c.transcript);
    let r = c.cmd("RCPT TO:<Nobody+tag@EXAMPLE.test>");
    assert_eq!(r.status(), "550 5.1.1", "{}", c.transcript);
    let r = c.cmd("DATA");
    assert!(r.code == 503 || r.code == 554, "{}", c.transcript);
    assert_eq!(c.cmd("RSET").code, 250);
    c.quit();
    assert!(server.queue_list().is_empty());
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        !server.mail_dir().join("nobody").exists(),
        "no mailbox is made for an unknown user"
    );
}

#[test]
fn delivery_to_a_user_lands_in_maildir_new_intact() {
    let server = TestServer::start(Tweaks::default().user("alice", "pw"));
    // A body with dot-stuffed lines, a long line and 8-bit bytes.
    let mut msg = common::message("intact", 5000);
    msg.extend_from_slice(b".leading dot\r\n..two dots\r\n.\tdot tab\r\n");
    msg.extend_from_slice(&[b'x'; 990]);
    msg.extend_from_slice(b"\r\n8bit: \xc3\xa9t\xc3\xa9\r\n");
    let id = send(
        &server,
        "sender@elsewhere.example",
        &["alice@example.test"],
        &msg,
    );
    let stored = wait_for_mail(&server, "alice", "intact");
    wait_queue_empty(&server);

    assert!(
        stored.ends_with(&msg),
        "the message is stored byte for byte at the end of the file"
    );
    let trace = &stored[..stored.len() - msg.len()];
    let trace = String::from_utf8_lossy(trace);
    assert!(
        trace.starts_with(
            "Return-Path: <sender@elsewhere.example>\r\nDelivered-To: alice@example.test\r\n"
        ),
        "Return-Path and Delivered-To first:\n{trace}"
    );
    let received = trace.find("Received: ").expect("our Received header");
    assert!(trace.find("Delivered-To").unwrap() < received, "{trace}");
    assert!(
        trace.contains("by mx.test (spate) with ESMTP")
            && trace.contains("for <alice@example.test>"),
        "our Received header:\n{trace}"
    );
    assert!(
        trace
            .split("\r\n")
            .filter(|l| !l.is_empty())
            .all(|l| l.starts_with([' ', '\t']) || l.contains(": ")),
        "header continuation lines are folded:\n{trace}"
    );
    assert_eq!(server.queue_list().len(), 0, "{id} is done");
    assert!(
        !stored.windows(2).any(|w| w[1] == b'\n' && w[0] != b'\r'),
        "CRLF line endings only"
    );
    assert_eq!(inbox(&server, "alice").len(), 1, "stored once");
    let root = server.mail_dir().join("alice");
    assert!(root.join("cur").is_dir() && root.join("tmp").is_dir());
    assert!(
        maildir_files(&root.join("tmp")).is_empty(),
        "nothing left in tmp"
    );
}

#[test]
fn aliases_fan_out_to_users_and_forward_outside() {
    let sink = Sink::start();
    let server = TestServer::start(
        Tweaks::default()
            .user("alice", "pw")
            .user("bob", "pw")
            .aliases("team: alice, bob\nfwd: alice, carol@elsewhere.example\n")
            .extra(&sink.route("elsewhere.example")),
    );
    send(
        &server,
        "boss@corp.example",
        &["team@example.test"],
        &common::message("to-the-team", 300),
    );
    for user in ["alice", "bob"] {
        let m = wait_for_mail(&server, user, "to-the-team");
        let h = head(&m);
        assert!(
            h.contains("Return-Path: <boss@corp.example>"),
            "{user}:\n{h}"
        );
        assert!(h.contains("Delivered-To: "), "{user}:\n{h}");
    }

    send(
        &server,
        "boss@corp.example",
        &["fwd@example.test"],
        &common::message("forwarded", 300),
    );
    wait_for_mail(&server, "alice", "forwarded");
    let got = sink.wait_for(1, DELIVERY_TIMEOUT);
    assert_eq!(got.len(), 1, "{got:#?}");
    assert_eq!(
        got[0]["from"], "boss@corp.example",
        "forwarded with the original sender: {got:#?}"
    );
    assert_eq!(got[0]["to"], serde_json::json!(["carol@elsewhere.example"]));
    assert!(got[0]["data"].as_str().unwrap().contains("forwarded"));
    wait_queue_empty(&server);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(inbox(&server, "alice").len(), 2, "team + fwd");
    assert_eq!(inbox(&server, "bob").len(), 1, "team only");
    assert_eq!(sink.messages().len(), 1, "forwarded once");
}

#[test]
fn catch_all_and_subaddresses_reach_the_user() {
    let server = TestServer::start(
        Tweaks::default()
            .user("alice", "pw")
            .user("bob", "pw")
            .local("catch_all", "\"bob\""),
    );
    send(
        &server,
        "s@elsewhere.example",
        &["alice+lists@example.test"],
        &common::message("subaddress", 200),
    );
    send(
        &server,
        "s@elsewhere.example",
        &["whoever@example.test"],
        &common::message("catch-all", 200),
    );
    let m = wait_for_mail(&server, "alice", "subaddress");
    assert!(
        head(&m).contains("Delivered-To: alice+lists@example.test"),
        "{}",
        head(&m)
    );
    let m = wait_for_mail(&server, "bob", "catch-all");
    assert!(
        head(&m).contains("Delivered-To: whoever@example.test"),
        "{}",
        head(&m)
    );
    wait_queue_empty(&server);
    assert_eq!(inbox(&server, "alice").len(), 1);
    assert_eq!(inbox(&server, "bob").len(), 1);
    assert!(!server.mail_dir().join("whoever").exists());
    assert!(!server.mail_dir().join("alice+lists").exists());
}

#[test]
fn subaddress_without_catch_all() {
    let server = TestServer::start(Tweaks::default().user("alice", "pw"));
    send(
        &server,
        "s@elsewhere.example",
        &["alice+tag@example.test"],
        &common::message("plus-tag", 200),
    );
    // Local parts and domains in any case reach the same mailbox.
    send(
        &server,
        "s@elsewhere.example",
        &["Alice@Example.TEST"],
        &common::message("mixed-case", 200),
    );
    wait_for_mail(&server, "alice", "plus-tag");
    wait_for_mail(&server, "alice", "mixed-case");
    wait_queue_empty(&server);
    let dirs: Vec<String> = std::fs::read_dir(server.mail_dir())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(dirs, vec!["alice"], "one mailbox only");
}

#[test]
fn message_larger_than_the_quota_is_refused_and_never_bounced() {
    let sink = Sink::start();
    let server = TestServer::start(
        Tweaks::default()
            .user("alice", "pw")
            .local("quota", "\"10K\"")
            .extra(&sink.route("elsewhere.example")),
    );
    // RFC 1870 6.4: a declared SIZE over the quota is refused at RCPT.
    let mut c = server.session();
    assert_eq!(
        c.cmd("MAIL FROM:<author@elsewhere.example> SIZE=20480 RET=FULL")
            .code,
        250
    );
    let r = c.cmd("RCPT TO:<alice@example.test>");
    assert_eq!(r.status(), "552 5.2.2", "{}", c.transcript);
    assert_eq!(c.cmd("RSET").code, 250);
    // Without SIZE: refused after the data (RFC 1870 6.3), so spate never
    // holds a message it would bounce with the stranger's content.
    assert_eq!(
        c.cmd("MAIL FROM:<author@elsewhere.example> RET=FULL").code,
        250
    );
    assert_eq!(c.cmd("RCPT TO:<alice@example.test>").code, 250);
    assert_eq!(c.cmd("DATA").code, 354);
    c.send(&common::dot_stuff(&common::message("too-big", 20 * 1024)));
    let r = c.read_reply();
    assert_eq!(r.status(), "552 5.2.2", "{}", c.transcript);
    // The session goes on: a message that fits is taken.
    assert!(c
        .send_message(
            "author@elsewhere.example",
            &["alice@example.test"],
            &common::message("fits", 2000)
        )
        .is_ok());
    c.quit();
    wait_for_mail(&server, "alice", "fits");
    wait_queue_empty(&server);
    std::thread::sleep(Duration::from_millis(500));
    assert!(sink.messages().is_empty(), "no DSN: {:?}", sink.messages());
    assert_eq!(inbox(&server, "alice").len(), 1);
}

#[test]
fn message_that_does_not_fit_defers_and_a_full_mailbox_is_refused_at_rcpt() {
    let mut server = TestServer::start(
        Tweaks::default()
            .user("alice", "pw")
            .user("bob", "pw")
            .local("quota", "\"10K\""),
    );
    send(
        &server,
        "s@elsewhere.example",
        &["alice@example.test"],
        &common::message("first-6k", 6000),
    );
    wait_for_mail(&server, "alice", "first-6k");
    wait_queue_empty(&server);

    // 6K used of 10K: RCPT accepts, delivery finds 6K + 6K > 10K: 452.
    let id = send(
        &server,
        "s@elsewhere.example",
        &["alice@example.test"],
        &common::message("second-6k", 6000),
    );
    let mut last_error = String::new();
    wait_until("the second message deferred", DELIVERY_TIMEOUT, || {
        let q = server.queue_list();
        last_error = q
            .iter()
            .find(|m| m.id == id)
            .and_then(|m| m.raw["last_error"].as_str())
            .unwrap_or("")
            .to_owned();
        !last_error.is_empty()
    });
    assert!(last_error.starts_with("452 4.2.2"), "{last_error}");
    assert_eq!(inbox(&server, "alice").len(), 1);

    // Lower alice's own quota below her usage (userdb_quota_rule) and
    // restart: now the mailbox is full, refused at RCPT with 452 4.2.2.
    server.terminate();
    std::fs::write(
        server.users_file(),
        "alice:{PLAIN}pw::::::userdb_quota_rule=*:storage=4K\nbob:{PLAIN}pw\n",
    )
    .unwrap();
    server.restart();
    let mut c = server.session();
    assert_eq!(c.cmd("MAIL FROM:<s@elsewhere.example>").code, 250);
    // RCPT never reads the disk: the usage figure is measured in the
    // background after a start, and a moment later RCPT has it.
    wait_until("alice's usage measured", DELIVERY_TIMEOUT, || {
        let r = c.cmd("RCPT TO:<alice@example.test>");
        if r.code == 250 {
            assert_eq!(c.cmd("RSET").code, 250);
            assert_eq!(c.cmd("MAIL FROM:<s@elsewhere.example>").code, 250);
            std::thread::sleep(Duration::from_millis(20));
            return false;
        }
        true
    });
    assert!(c.transcript.contains("452 4.2.2"), "{}", c.transcript);
    // Others are not affected (bob keeps the 10K default).
    let r = c.cmd("RCPT TO:<bob@example.test>");
    assert_eq!(r.status(), "250 2.1.5", "{}", c.transcript);
    c.quit();
}

#[test]
fn mailbox_write_failure_defers_and_recovers_on_flush() {
    let server = TestServer::start(Tweaks::default().user("alice", "pw"));
    // A regular file where alice's Maildir would go: it cannot be made.
    std::fs::create_dir_all(server.mail_dir()).unwrap();
    let blocker = server.mail_dir().join("alice");
    std::fs::write(&blocker, b"not a directory\n").unwrap();

    let msg = common::message("blocked", 500);
    let id = send(
        &server,
        "s@elsewhere.example",
        &["alice@example.test"],
        &msg,
    );
    let mut line = None;
    wait_until("a deferred delivery", DELIVERY_TIMEOUT, || {
        line = server.queue_list().into_iter().find(|m| m.id == id);
        line.as_ref()
            .is_some_and(|m| m.raw["last_error"].as_str().is_some())
    });
    let line = line.unwrap();
    let err = line.raw["last_error"].as_str().unwrap();
    assert!(err.starts_with('4'), "a transient failure: {:#}", line.raw);
    assert_eq!(line.raw["state"], "deferred", "{:#}", line.raw);
    assert_eq!(line.to, vec!["alice@example.test"]);
    eprintln!("deferred with: {err}");

    std::fs::remove_file(&blocker).unwrap();
    server.spate_command(&["queue", "flush"]);
    let stored = wait_for_mail(&server, "alice", "blocked");
    assert!(stored.ends_with(&msg));
    wait_queue_empty(&server);
    assert_eq!(inbox(&server, "alice").len(), 1);
}

/// The Message-ID header's value of a stored message.
fn message_id(m: &[u8]) -> Option<String> {
    head(m)
        .split("\r\n")
        .find_map(|l| l.strip_prefix("Message-ID: ").map(str::to_owned))
}

#[test]
fn kill_9_after_acks_loses_nothing() {
    const N: usize = 100;
    // One mailbox I/O thread: one Maildir write in flight at a time, so
    // the kill can interrupt at most one (with the default 8, as many
    // deliveries may be between tmp/ and new/ when it lands).
    let mut server =
        TestServer::start(Tweaks::default().user("alice", "pw").local("io_threads", 1));
    let mut acked = Vec::new();
    let mut c = server.session();
    for i in 0..N {
        let marker = format!("crash-{i:03}");
        let msg = common::message(&marker, 400);
        let id = c
            .send_message("s@elsewhere.example", &["alice@example.test"], &msg)
            .unwrap_or_else(|r| panic!("message {i}: {r:?}"));
        acked.push((marker, id));
    }
    // No QUIT: kill at once, with deliveries in flight.
    server.kill9();
    let before = inbox(&server, "alice").len();
    server.restart();
    wait_queue_empty(&server);

    let mut seen: HashMap<String, usize> = HashMap::new();
    for m in inbox(&server, "alice") {
        let mid = message_id(&m).expect("a Message-ID");
        *seen.entry(mid).or_default() += 1;
    }
    let missing: Vec<&str> = acked
        .iter()
        .filter(|(marker, _)| !seen.contains_key(&format!("<{marker}@client.test>")))
        .map(|(marker, _)| marker.as_str())
        .collect();
    let duplicates: Vec<(&String, &usize)> = seen.iter().filter(|(_, &n)| n > 1).collect();
    eprintln!(
        "{N} acked; {before} delivered before the kill; {} distinct after restart; duplicates: {duplicates:?}",
        seen.len()
    );
    assert!(missing.is_empty(), "lost after kill -9: {missing:?}");
    assert!(seen.len() >= N);
    assert!(
        maildir_files(&server.mail_dir().join("alice/tmp")).len() <= 1,
        "at most the one interrupted write in tmp"
    );
}

/// RFC 6531/6532: with SMTPUTF8 announced, `jörg@` is deliverable to a
/// user named so, whatever the case of the address (issue 15); an alias
/// may be named in UTF-8 too.
#[test]
fn a_utf8_user_and_alias_receive_mail_over_smtputf8() {
    let server = TestServer::start(
        Tweaks::default()
            .user("jörg", "pw")
            .aliases("grüße: jörg\n"),
    );
    let mut c = server.session();
    let ehlo = c.ehlo("client.example");
    assert!(
        ehlo.lines.iter().any(|l| l.contains("SMTPUTF8")),
        "{ehlo:?}"
    );
    assert_eq!(
        c.cmd("MAIL FROM:<sender@elsewhere.example> SMTPUTF8").code,
        250
    );
    for rcpt in [
        "RCPT TO:<Jörg@example.test>",
        "RCPT TO:<Grüße@example.test>",
    ] {
        let r = c.cmd(rcpt);
        assert_eq!(r.code, 250, "{rcpt}\n{}", c.transcript);
    }
    assert_eq!(c.cmd("DATA").code, 354, "{}", c.transcript);
    c.send(b"Subject: utf8-user\r\n\r\nhallo\r\n.\r\n");
    let r = c.read_reply();
    assert_eq!(r.code, 250, "{}", c.transcript);
    c.quit();
    let stored = wait_for_mail(&server, "jörg", "utf8-user");
    assert!(contains(&stored, b"hallo"));
}
