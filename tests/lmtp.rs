//! LMTP (RFC 2033) over real sockets, with real clients: swaks
//! `--protocol LMTP`, Python's smtplib.LMTP and Postfix's smtp-source
//! `-L`. An MTA hands a message to spate's mailbox tier; after the data
//! each recipient accepted at RCPT gets its own reply, in order (one
//! delivered, one over its quota), an unknown user and a foreign domain
//! are refused at RCPT, the message is in the Maildir the moment the
//! replies arrive (the server is then killed with SIGKILL) and reads back
//! over IMAP and POP3; an alias pointing outside gets one queued copy.
//!
//! Postfix's own LMTP delivery agent (`lmtp(8)`) needs a whole Postfix
//! instance (master, queue, main.cf): not run here. swaks is optional
//! (a test whose tool is missing prints `SKIP` and passes); smtp-source
//! comes with Postfix (`/usr/sbin`).

mod common;
#[path = "common/line.rs"]
mod line;

use std::net::SocketAddr;
use std::process::Command;

use common::mailbox::{have, maildir_files, output_text, stored_in_name_order, SENDER};
use common::{python, run_with_timeout, swaks, TestServer, Tweaks, COMMAND_TIMEOUT, LOCAL_DOMAIN};
use line::Line;

/// bob's quota is 1 KiB: the test messages (about 2 KB) never fit.
fn server() -> TestServer {
    TestServer::start(
        Tweaks::default()
            .user("alice", "pw")
            .user("bob", "pw::::::userdb_quota_rule=*:storage=1K")
            .aliases("sales: alice\n")
            .listener("lmtp")
            .listener("imap")
            .listener("pop3"),
    )
}

fn at(user: &str) -> String {
    format!("{user}@{LOCAL_DOMAIN}")
}

/// A message of about `size` bytes with `subject`.
fn message(subject: &str, size: usize) -> String {
    String::from_utf8(common::message(subject, size)).expect("ASCII")
}

/// Logs in over IMAP and returns the Subject lines of alice's INBOX.
fn imap_subjects(server: &TestServer, user: &str) -> Vec<String> {
    let mut c = Line::connect(server.listener("imap"));
    assert!(c.line().starts_with("* OK"), "{}", c.transcript);
    let r = c.imap("a", &format!("LOGIN {user} pw"));
    assert!(r.starts_with("a OK"), "{r}\n{}", c.transcript);
    let r = c.imap("b", "SELECT INBOX");
    assert!(r.starts_with("b OK"), "{r}\n{}", c.transcript);
    c.send(b"c FETCH 1:* (BODY.PEEK[HEADER.FIELDS (SUBJECT)])\r\n");
    let mut subjects = Vec::new();
    loop {
        let l = c.line();
        if let Some(s) = l.strip_prefix("Subject: ") {
            subjects.push(s.to_owned());
        }
        if l.starts_with("c ") {
            assert!(l.starts_with("c OK"), "{l}\n{}", c.transcript);
            break;
        }
    }
    c.imap("d", "LOGOUT");
    subjects
}

/// Logs in over POP3 and returns each message (RETR, dot-unstuffed lines).
fn pop3_messages(server: &TestServer, user: &str) -> Vec<String> {
    let mut c = Line::connect(server.listener("pop3"));
    assert!(c.line().starts_with("+OK"), "{}", c.transcript);
    c.send(format!("USER {user}\r\n").as_bytes());
    assert!(c.line().starts_with("+OK"), "{}", c.transcript);
    c.send(b"PASS pw\r\n");
    assert!(c.line().starts_with("+OK"), "{}", c.transcript);
    c.send(b"STAT\r\n");
    let stat = c.line();
    let count: usize = stat
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("STAT: {stat}"));
    let mut messages = Vec::new();
    for i in 1..=count {
        c.send(format!("RETR {i}\r\n").as_bytes());
        assert!(c.line().starts_with("+OK"), "{}", c.transcript);
        let mut text = String::new();
        loop {
            let l = c.line();
            if l == "." {
                break;
            }
            text.push_str(l.strip_prefix('.').unwrap_or(&l));
            text.push('\n');
        }
        messages.push(text);
    }
    c.send(b"QUIT\r\n");
    messages
}

/// The reply lines swaks printed as received: `<-` (or `<~` over TLS),
/// and `<**` (`<~*`) for an error.
fn swaks_replies(transcript: &str) -> Vec<String> {
    transcript
        .lines()
        .filter_map(|l| {
            let l = l.trim_start();
            let rest = ["<**", "<~*", "<-", "<~"]
                .iter()
                .find_map(|p| l.strip_prefix(p))?;
            Some(rest.trim().to_owned())
        })
        .collect()
}

fn swaks_lmtp(addr: SocketAddr, to: &str, subject: &str, body: &str) -> (i32, String) {
    let args: Vec<String> = [
        "--protocol",
        "LMTP",
        "--server",
        &addr.ip().to_string(),
        "--port",
        &addr.port().to_string(),
        "--helo",
        "swaks.test",
        "--from",
        SENDER,
        "--to",
        to,
        "--header",
        &format!("Subject: {subject}"),
        "--body",
        body,
        "--timeout",
        "20",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    swaks(&args)
}

#[test]
fn swaks_gets_one_reply_per_recipient_and_the_mail_survives_sigkill() {
    if !have("swaks", "swaks") {
        return;
    }
    let mut server = server();
    let lmtp = server.listener("lmtp");
    let body = "x".repeat(60) + "\n";
    let body = body.repeat(35); // about 2 KiB: more than bob's whole quota
    let to = format!(
        "{},{},{},{}",
        at("alice"),
        at("nobody"),
        at("bob"),
        at("sales")
    );
    let (code, out) = swaks_lmtp(lmtp, &to, "swaks-lmtp", &body);
    let replies = swaks_replies(&out);
    let greeting = replies.first().cloned().unwrap_or_default();
    assert!(greeting.contains(" LMTP spate"), "{out}");
    assert!(
        replies.contains(&format!(
            "550 5.1.1 <{}>: Recipient address rejected: User unknown",
            at("nobody")
        )),
        "{out}"
    );
    // After the data: alice, bob, sales (the refused RCPT gets none), in
    // RCPT order.
    let after_data: Vec<&String> = replies
        .iter()
        .skip_while(|r| !r.starts_with("354 "))
        .skip(1)
        .take(3)
        .collect();
    assert_eq!(
        after_data,
        [
            &format!("250 2.0.0 <{}>: delivered to mailbox", at("alice")),
            &"552 5.2.2 bob: message larger than the mailbox quota".to_owned(),
            &format!("250 2.0.0 <{}>: delivered to mailbox", at("sales")),
        ],
        "{out}"
    );
    // swaks reports the partial failure in its exit code; what matters is
    // that it read exactly these replies and closed cleanly.
    assert!(
        replies.iter().any(|r| r.starts_with("221 ")),
        "exit {code}: {out}"
    );
    // The replies are out: the copies must be on disk now, not later.
    server.kill9();
    let stored = stored_in_name_order(&server, "alice");
    assert_eq!(stored.len(), 2, "alice and sales (an alias of alice)");
    for m in &stored {
        let text = String::from_utf8_lossy(m);
        assert!(
            text.starts_with(&format!("Return-Path: <{SENDER}>\r\nDelivered-To: ")),
            "{text}"
        );
        assert!(text.contains("with LMTP id "), "{text}");
        assert!(text.contains("Subject: swaks-lmtp\r\n"), "{text}");
        assert!(
            !text.contains("id 0000000000000000"),
            "the trace id is filled in"
        );
    }
    assert!(
        maildir_files(&server, "bob").is_empty(),
        "bob's copy was refused"
    );
    // Nothing went through the spool: the queue is empty after a restart.
    server.restart();
    assert!(server.queue_list().is_empty());
    // And the mail reader sees it.
    assert_eq!(
        imap_subjects(&server, "alice"),
        ["swaks-lmtp", "swaks-lmtp"]
    );
    let popped = pop3_messages(&server, "alice");
    assert_eq!(popped.len(), 2);
    assert!(popped[0].contains("Subject: swaks-lmtp"), "{}", popped[0]);
    assert!(popped[0].contains(&body[..61]), "{}", popped[0]);
}

#[test]
fn smtplib_lmtp_reads_a_reply_per_recipient_also_pipelined() {
    let server = server();
    let lmtp = server.listener("lmtp");
    let mut args = vec![
        lmtp.ip().to_string(),
        lmtp.port().to_string(),
        "--from".into(),
        SENDER.into(),
        "--subject".into(),
        "smtplib-lmtp".into(),
        "--size".into(),
        "2000".into(),
    ];
    for user in ["bob", "alice", "nobody", "someone@elsewhere.example"] {
        args.push("--to".into());
        args.push(if user.contains('@') {
            user.to_owned()
        } else {
            at(user)
        });
    }
    let v = python("lmtp_client.py", &args);
    assert!(v.get("exception").is_none(), "{v}");
    assert_eq!(v["ehlo"][0], 500, "RFC 2033 4.1: {v}");
    assert_eq!(v["lhlo"], 250, "{v}");
    let features: Vec<&str> = v["features"]
        .as_array()
        .expect("features")
        .iter()
        .filter_map(|f| f.as_str())
        .collect();
    for f in [
        "pipelining",
        "enhancedstatuscodes",
        "8bitmime",
        "size",
        "chunking",
        "smtputf8",
    ] {
        assert!(features.contains(&f), "{f} missing: {v}");
    }
    assert!(
        !features.contains(&"auth") && !features.contains(&"dsn"),
        "{v}"
    );
    for round in ["first", "second"] {
        let t = &v[round];
        assert_eq!(t["mail"][0], 250, "{v}");
        let rcpt: Vec<i64> = t["rcpt"]
            .as_array()
            .expect("rcpt")
            .iter()
            .map(|r| r[0].as_i64().unwrap_or(0))
            .collect();
        assert_eq!(rcpt, [250, 250, 550, 550], "{round}: {v}");
        assert!(
            t["rcpt"][3][1]
                .as_str()
                .is_some_and(|s| s.starts_with("5.1.2 ")),
            "no relaying over LMTP: {v}"
        );
        let data: Vec<(i64, &str)> = t["data"]
            .as_array()
            .expect("data")
            .iter()
            .map(|r| (r[0].as_i64().unwrap_or(0), r[1].as_str().unwrap_or("")))
            .collect();
        assert_eq!(
            data,
            [
                (552, "5.2.2 bob: message larger than the mailbox quota"),
                (250, "2.0.0 <alice@example.test>: delivered to mailbox"),
            ],
            "{round}: one reply per accepted recipient, in RCPT order: {v}"
        );
    }
    assert_eq!(v["quit"][0], 221, "{v}");
    let subjects = imap_subjects(&server, "alice");
    assert_eq!(subjects.len(), 2, "{subjects:?}");
    assert!(
        subjects.contains(&"smtplib-lmtp".to_owned())
            && subjects.contains(&"smtplib-lmtp-2".to_owned())
    );
}

#[test]
fn postfix_smtp_source_speaks_lmtp() {
    let tool = "/usr/sbin/smtp-source";
    if !std::path::Path::new(tool).exists() {
        eprintln!("SKIP: {tool} is not installed (Debian package `postfix`); test not run");
        return;
    }
    let server = server();
    let lmtp = server.listener("lmtp");
    let mut cmd = Command::new(tool);
    cmd.args([
        "-L",
        "-m",
        "5",
        "-s",
        "2",
        "-l",
        "1500",
        "-M",
        "source.test",
        "-f",
        SENDER,
        "-t",
        &at("alice"),
    ])
    .arg(format!("{}:{}", lmtp.ip(), lmtp.port()));
    let out = run_with_timeout(cmd, COMMAND_TIMEOUT);
    assert!(out.status.success(), "{}", output_text(&out));
    // Delivered before the replies: no waiting needed.
    assert_eq!(
        maildir_files(&server, "alice").len(),
        5,
        "{}",
        output_text(&out)
    );
    // A recipient smtp-source's LMTP transaction cannot deliver to is
    // refused at RCPT, and smtp-source says so.
    let mut cmd = Command::new(tool);
    cmd.args(["-L", "-f", SENDER, "-t", &at("nobody")])
        .arg(format!("{}:{}", lmtp.ip(), lmtp.port()));
    let out = run_with_timeout(cmd, COMMAND_TIMEOUT);
    let text = output_text(&out);
    assert!(text.contains("550") || !out.status.success(), "{text}");
    assert_eq!(maildir_files(&server, "alice").len(), 5);
}

#[test]
fn lmtp_refuses_ehlo_auth_and_relaying_and_pipelines() {
    let server = server();
    let mut c = Line::connect(server.listener("lmtp"));
    assert!(c.line().ends_with(" LMTP spate"), "{}", c.transcript);
    c.send(b"EHLO x.test\r\nHELO x.test\r\nMAIL FROM:<a@x.test>\r\n");
    assert_eq!(c.line(), "500 5.5.1 Error: this is LMTP, use LHLO");
    assert_eq!(c.line(), "500 5.5.1 Error: this is LMTP, use LHLO");
    assert!(c.line().starts_with("503 "), "{}", c.transcript);
    c.send(b"LHLO x.test\r\n");
    loop {
        let l = c.line();
        assert!(!l.contains("AUTH"), "{}", c.transcript);
        if l.starts_with("250 ") {
            break;
        }
    }
    c.send(b"AUTH PLAIN AGFsaWNlAHB3\r\n");
    assert!(c.line().starts_with("502 5.5.1"), "{}", c.transcript);
    // One write: the whole transaction, the next MAIL and a NOOP.
    let msg = message("pipelined", 300);
    let batch = format!(
        "MAIL FROM:<{SENDER}>\r\nRCPT TO:<{}>\r\nRCPT TO:<x@elsewhere.example>\r\nRCPT TO:<{}>\r\n\
         DATA\r\n{msg}.\r\nMAIL FROM:<{SENDER}>\r\nNOOP\r\nQUIT\r\n",
        at("alice"),
        at("sales")
    );
    c.send(batch.as_bytes());
    let mut replies = Vec::new();
    while let Some(l) = c.try_line() {
        replies.push(l);
    }
    assert_eq!(
        replies,
        [
            "250 2.1.0 Ok".to_owned(),
            "250 2.1.5 Ok".to_owned(),
            "550 5.1.2 <x@elsewhere.example>: Recipient address rejected: LMTP delivers to local mailboxes only".to_owned(),
            "250 2.1.5 Ok".to_owned(),
            "354 End data with <CR><LF>.<CR><LF>".to_owned(),
            format!("250 2.0.0 <{}>: delivered to mailbox", at("alice")),
            format!("250 2.0.0 <{}>: delivered to mailbox", at("sales")),
            "250 2.1.0 Ok".to_owned(),
            "250 2.0.0 Ok".to_owned(),
            "221 2.0.0 Bye".to_owned(),
        ],
        "{}",
        c.transcript
    );
    assert_eq!(maildir_files(&server, "alice").len(), 2);
    assert!(
        server.queue_list().is_empty(),
        "nothing was relayed or spooled"
    );
}

#[test]
fn an_alias_that_points_outside_gets_its_copy_queued() {
    let server = TestServer::start(
        Tweaks::default()
            .user("alice", "pw")
            .aliases("team: alice, friend@elsewhere.example\n")
            .listener("lmtp"),
    );
    let mut c = Line::connect(server.listener("lmtp"));
    assert!(c.line().ends_with(" LMTP spate"), "{}", c.transcript);
    c.send(b"LHLO x.test\r\n");
    while !c.line().starts_with("250 ") {}
    let msg = message("forwarded", 300);
    c.send(
        format!(
            "MAIL FROM:<{SENDER}>\r\nRCPT TO:<{}>\r\nRCPT TO:<{}>\r\nDATA\r\n{msg}.\r\nQUIT\r\n",
            at("team"),
            at("alice")
        )
        .as_bytes(),
    );
    let mut replies = Vec::new();
    while let Some(l) = c.try_line() {
        replies.push(l);
    }
    let team = format!("250 2.0.0 <{}>: delivered, forwarded as ", at("team"));
    let forwarded = replies
        .iter()
        .find_map(|r| r.strip_prefix(&team))
        .unwrap_or_else(|| panic!("{}", c.transcript))
        .to_owned();
    assert_eq!(
        replies[replies.len() - 2],
        format!("250 2.0.0 <{}>: delivered to mailbox", at("alice")),
        "{}",
        c.transcript
    );
    // team's copy for alice and alice's own.
    assert_eq!(maildir_files(&server, "alice").len(), 2);
    // One queued copy, for the outside address only, with the sender.
    let queued = server.queue_list();
    assert_eq!(queued.len(), 1, "{queued:?}");
    assert_eq!(queued[0].id, forwarded);
    assert_eq!(queued[0].to, ["friend@elsewhere.example"]);
    assert_eq!(queued[0].from, SENDER);
}
