//! THREAD (RFC 5256) and QUOTA (RFC 9208) over real sockets with Python's
//! imaplib: messages delivered through SMTP with References and
//! In-Reply-To headers come back threaded by both algorithms; with a
//! small quota, GETQUOTAROOT's STORAGE usage grows as mail arrives, an
//! APPEND past the quota gets `NO [OVERQUOTA]`, SMTP RCPT for a message
//! that does not fit is refused with 452 4.2.2, and SETQUOTA is refused.

mod common;

use std::time::{Duration, Instant};

use common::mailbox::{deliver, maildir_files, SETTLE};
use common::{python, TestServer, Tweaks, LOCAL_DOMAIN};
use serde_json::Value;

const USER: &str = "alice";
const PASSWORD: &str = "pw-alice";

/// Runs one imap_thread_quota.py scenario as alice.
fn imaplib(server: &TestServer, scenario: &str, extra: &[&str]) -> Value {
    let addr = server.listener("imap");
    let mut args = vec![
        scenario.to_owned(),
        addr.ip().to_string(),
        addr.port().to_string(),
        "--user".into(),
        USER.into(),
        "--password".into(),
        PASSWORD.into(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let v = python("imap_thread_quota.py", &args);
    assert!(v.get("exception").is_none(), "imaplib {scenario}: {v:#}");
    v
}

/// `[typ, [line]]` from an imaplib call: typ and the first data line.
fn reply(v: &Value, key: &str) -> (String, String) {
    let typ = v[key][0].as_str().unwrap_or_default().to_owned();
    let data = &v[key][1];
    let line = match data {
        Value::Array(a) => a.first().map(|d| d.to_string()).unwrap_or_default(),
        other => other.to_string(),
    };
    (typ, line.trim_matches('"').to_owned())
}

fn message(minute: u32, subject: &str, id: &str, extra: &str) -> Vec<u8> {
    format!(
        "From: <bob@{LOCAL_DOMAIN}>\r\nTo: <{USER}@{LOCAL_DOMAIN}>\r\nSubject: {subject}\r\n\
         Date: Mon, 1 Jan 2024 10:{minute:02}:00 +0000\r\nMessage-ID: {id}\r\n{extra}\r\n\
         body of {id}\r\n"
    )
    .into_bytes()
}

#[test]
fn thread_over_smtp_delivered_mail() {
    let server = TestServer::start(Tweaks::default().user(USER, PASSWORD).listener("imap"));
    // Delivered in this order (sequence numbers 1-7); dates out of order.
    let messages = [
        message(0, "Lunch?", "<l1@x>", ""),
        message(1, "Budget", "<b1@x>", ""),
        message(5, "Re: Lunch?", "<l3@x>", "References: <l1@x> <l2@x>\r\n"),
        message(3, "Re: Lunch?", "<l2@x>", "In-Reply-To: <l1@x>\r\n"),
        message(4, "RE: budget", "<b2@x>", ""),
        message(2, "Fwd: minutes", "<m2@x>", "References: <\"m1\"@x>\r\n"),
        message(6, "Re: minutes", "<m3@x>", "References: <m1@x>\r\n"),
    ];
    for m in &messages {
        deliver(&server, USER, m);
    }
    assert_eq!(maildir_files(&server, USER).len(), messages.len());
    let v = imaplib(&server, "thread", &[]);
    let caps = v["capabilities"].to_string();
    for cap in ["THREAD=ORDEREDSUBJECT", "THREAD=REFERENCES"] {
        assert!(caps.contains(cap), "{caps}");
    }
    // REFERENCES: 3 under 4 (its References, truncated or not, name l2
    // last), 4 under 1; 5 joins 2 by subject (a reply); 6 and 7 share a
    // missing parent (`"m1"@x` is `m1@x`), kept as a dummy.
    assert_eq!(
        reply(&v, "references"),
        ("OK".into(), "(1 4 3)(2 5)((6)(7))".into()),
        "{v:#}"
    );
    // ORDEREDSUBJECT: by base subject, each under its first message.
    assert_eq!(
        reply(&v, "orderedsubject"),
        ("OK".into(), "(1 (4)(3))(2 5)(6 7)".into()),
        "{v:#}"
    );
    // UID THREAD: the same threads in UIDs.
    let uids: Vec<String> = reply(&v, "uids")
        .1
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    assert_eq!(uids.len(), 7, "{v:#}");
    let u = |seq: usize| uids[seq - 1].clone();
    assert_eq!(
        reply(&v, "uid_references").1,
        format!(
            "({} {} {})({} {})(({})({}))",
            u(1),
            u(4),
            u(3),
            u(2),
            u(5),
            u(6),
            u(7)
        )
    );
    // Only the matches (2:7): without 1, its replies thread alone (the
    // dummy for it had one child), and sort by their own date.
    assert_eq!(
        reply(&v, "part"),
        ("OK".into(), "(2 5)((6)(7))(4 3)".into()),
        "{v:#}"
    );
    let (typ, text) = reply(&v, "unknown");
    assert_eq!(typ, "BAD", "{v:#}");
    assert!(text.to_lowercase().contains("option"), "{text}");
}

#[test]
fn quota_usage_grows_with_mail_and_append_past_it_is_refused() {
    let server = TestServer::start(
        Tweaks::default()
            .user(USER, PASSWORD)
            .local("quota", "\"12K\"")
            .listener("imap"),
    );
    let v = imaplib(&server, "quota", &[]);
    let caps = v["capabilities"].to_string();
    assert!(
        caps.contains("\"QUOTA\"") && caps.contains("QUOTA=RES-STORAGE"),
        "{caps}"
    );
    assert!(
        !caps.contains("QUOTA=RES-MESSAGE") && !caps.contains("QUOTASET"),
        "{caps}"
    );
    assert_eq!(v["getquotaroot"][0], "OK", "{v:#}");
    assert_eq!(v["getquotaroot"][1][0][0], "INBOX \"\"", "{v:#}");
    assert_eq!(v["getquotaroot"][1][1][0], "\"\" (STORAGE 0 12)", "{v:#}");
    assert_eq!(v["getquota"][1][0], "\"\" (STORAGE 0 12)", "{v:#}");
    let (typ, text) = reply(&v, "setquota");
    assert_eq!(typ, "NO", "{v:#}");
    assert!(text.contains("[NOPERM]"), "{text}");
    assert_eq!(reply(&v, "status").1, "INBOX (DELETED 0 DELETED-STORAGE 0)");

    // Each delivery of ~3K moves the figure: the usage in KiB is the
    // stored bytes rounded up.
    let mut last = 0;
    for i in 0..3 {
        deliver(&server, USER, &common::message(&format!("fill{i}"), 3000));
        let stored: u64 = maildir_files(&server, USER)
            .iter()
            .map(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
            .sum();
        let used = stored.div_ceil(1024);
        let want = format!("\"\" (STORAGE {used} 12)");
        // The store moves its figure just after the file shows.
        let deadline = Instant::now() + SETTLE;
        loop {
            let v = imaplib(&server, "quota", &[]);
            if v["getquotaroot"][1][1][0] == want.as_str() {
                break;
            }
            assert!(Instant::now() < deadline, "want {want}: {v:#}");
            std::thread::sleep(Duration::from_millis(100));
        }
        assert!(used > last, "{used} after {last}");
        last = used;
    }
    // About 9.3K used of 12K: 4000 octets more do not fit.
    let v = imaplib(&server, "quota", &["--append-size", "4000"]);
    let (typ, text) = reply(&v, "append");
    assert_eq!(typ, "NO", "{v:#}");
    assert!(text.starts_with("[OVERQUOTA]"), "{text}");
    assert_eq!(
        v["after_append"][1][1][0],
        format!("\"\" (STORAGE {last} 12)"),
        "{v:#}"
    );
    // 1000 octets do.
    let v = imaplib(&server, "quota", &["--append-size", "1000"]);
    assert_eq!(reply(&v, "append").0, "OK", "{v:#}");
    // SMTP sees the same figure: a declared 4000 octets no longer fit
    // (for now), 13K never will.
    let rcpt = |size: u32| {
        let mut s = server.session();
        let mail = format!("MAIL FROM:<sender@client.test> SIZE={size}");
        assert_eq!(s.cmd(&mail).code, 250);
        let r = s.cmd(&format!("RCPT TO:<{USER}@{LOCAL_DOMAIN}>"));
        s.quit();
        r.status()
    };
    assert_eq!(rcpt(4000), "452 4.2.2");
    assert_eq!(rcpt(13 * 1024), "552 5.2.2");
    assert!(rcpt(100).starts_with("250"));
}
