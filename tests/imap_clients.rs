//! The IMAP listeners seen by real mail clients: mail sent through spate's
//! SMTP listener to a local user is read, flagged, searched, copied, moved,
//! appended and expunged through Python's imaplib (plain, STARTTLS and
//! implicit imaps); two sessions on one mailbox see each other's flag
//! changes and expunges; IDLE wakes up on an SMTP delivery; bad input
//! (wrong passwords, junk commands, path traversal in mailbox names,
//! oversized literals, plaintext before TLS) gets a clear NO/BAD and
//! changes nothing; and curl, mbsync (two-way) and mutt talk to it.
//!
//! curl, mbsync and mutt (driven through tmux) are optional here: a test
//! whose client is not installed prints `SKIP` and passes (CI installs the
//! Debian packages `curl isync mutt tmux`).

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::mailbox::{
    ca, deliver, have, maildir_files, output_text, stored_in_name_order, tree, SENDER, SETTLE,
};
use common::{python, run_with_timeout, TestServer, Tweaks, COMMAND_TIMEOUT, LOCAL_DOMAIN};
use serde_json::Value;

const USER: &str = "alice";
const PASSWORD: &str = "pw-alice";

// ---------------------------------------------------------------- helpers

fn mailbox_tweaks() -> Tweaks {
    Tweaks::default()
        .user(USER, PASSWORD)
        .user("bob", "pw-bob")
        .listener("imap")
}

fn tls_tweaks() -> Tweaks {
    mailbox_tweaks().listener("imaps").tls()
}

/// The stored messages' bytes, sorted by content (file names do not sort
/// in arrival order: the Maildir `M` microseconds are not zero-padded).
fn stored(server: &TestServer, user: &str) -> Vec<Vec<u8>> {
    let mut all = stored_in_name_order(server, user);
    all.sort();
    all
}

/// The stored file of each original, in the order of `originals` (the
/// delivery order, so the UID order).
fn stored_in_order(server: &TestServer, originals: &[Vec<u8>]) -> Vec<Vec<u8>> {
    let all = stored(server, USER);
    originals
        .iter()
        .map(|o| {
            let found: Vec<&Vec<u8>> = all.iter().filter(|s| s.ends_with(o)).collect();
            assert_eq!(found.len(), 1, "stored copies of one original");
            found[0].clone()
        })
        .collect()
}

fn plain_message(subject: &str, body: &str) -> Vec<u8> {
    format!(
        "From: Sender Name <{SENDER}>\r\nTo: <{USER}@{LOCAL_DOMAIN}>\r\nSubject: {subject}\r\n\
         Date: Mon, 02 Nov 2026 10:00:00 +0000\r\nMessage-ID: <{subject}@client.test>\r\n\r\n{body}"
    )
    .into_bytes()
}

fn multipart_message(subject: &str) -> Vec<u8> {
    format!(
        "From: Sender Name <{SENDER}>\r\nTo: <{USER}@{LOCAL_DOMAIN}>\r\nSubject: {subject}\r\n\
         Date: Mon, 02 Nov 2026 11:00:00 +0000\r\nMessage-ID: <{subject}@client.test>\r\n\
         MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"XYZ\"\r\n\r\n\
         preamble\r\n--XYZ\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nthe text part\r\n\
         --XYZ\r\nContent-Type: application/octet-stream; name=\"a.bin\"\r\n\
         Content-Transfer-Encoding: base64\r\nContent-Disposition: attachment; filename=\"a.bin\"\r\n\r\n\
         YXR0YWNobWVudC10ZXh0\r\n--XYZ--\r\n"
    )
    .into_bytes()
}

/// alpha (small), beta (200 KiB of lines), gamma (multipart).
fn test_messages() -> Vec<Vec<u8>> {
    let mut beta = String::new();
    let mut i = 0;
    while beta.len() < 200 * 1024 {
        beta.push_str(&format!("beta line {i:06} abcdefghijklmnopqrstuvwxyz\r\n"));
        i += 1;
    }
    vec![
        plain_message("alpha-one", "first line\r\n.\r\n..dots\r\nlast line\r\n"),
        plain_message("beta-two", &beta),
        multipart_message("gamma-three"),
    ]
}

/// Runs one imap_client.py scenario against `addr`.
fn imaplib(server: &TestServer, scenario: &str, listener: &str, extra: &[String]) -> Value {
    let addr = server.listener(listener);
    let mut args = vec![
        scenario.to_owned(),
        addr.ip().to_string(),
        addr.port().to_string(),
        "--user".into(),
        USER.into(),
        "--password".into(),
        PASSWORD.into(),
    ];
    if let Some(t) = &server.tls {
        args.push("--cafile".into());
        args.push(t.ca.display().to_string());
    }
    args.extend_from_slice(extra);
    let v = python("imap_client.py", &args);
    assert!(v.get("exception").is_none(), "imaplib {scenario}: {v:#}");
    v
}

fn b64(v: &Value) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(v.as_str().expect("base64 string"))
        .expect("base64")
}

/// `[typ, data]` from an imaplib call: its typ.
fn typ(v: &Value) -> &str {
    v[0].as_str().unwrap_or("?")
}

/// The whole JSON value as text (for "contains" checks).
fn s(v: &Value) -> String {
    v.to_string()
}

fn ok(v: &Value, what: &str) {
    assert_eq!(typ(v), "OK", "{what}: {v}");
}

fn refused(v: &Value, what: &str) {
    assert!(
        typ(v) == "NO" || typ(v) == "EXC",
        "{what} was not refused: {v}"
    );
}

/// The numbers of a SEARCH answer.
fn hits(v: &Value) -> Vec<u32> {
    ok(v, "SEARCH");
    v[1][0]
        .as_str()
        .unwrap_or("")
        .split_whitespace()
        .map(|n| n.parse().expect("number"))
        .collect()
}

// ------------------------------------------------------ 1. one session

/// The literals of fetch_parts() output whose prefix contains `item`.
fn literals(parts: &Value) -> Vec<(String, Vec<u8>)> {
    parts
        .as_array()
        .expect("fetch parts")
        .iter()
        .filter(|p| !p[1].is_null())
        .map(|p| (p[0].as_str().unwrap().to_owned(), b64(&p[1])))
        .collect()
}

#[test]
fn imaplib_session_tour() {
    let server = TestServer::start(mailbox_tweaks());
    let originals = test_messages();
    for m in &originals {
        deliver(&server, USER, m);
    }
    let stored = stored_in_order(&server, &originals);
    let v = imaplib(&server, "session", "imap", &[]);
    let all = s(&v);

    // Greeting, CAPABILITY, LOGIN
    let greeting = v["greeting"].as_str().unwrap();
    assert!(greeting.starts_with("* OK"), "{greeting}");
    let caps = s(&v["capabilities"]);
    for c in [
        "IMAP4REV1",
        "AUTH=PLAIN",
        "IDLE",
        "UIDPLUS",
        "MOVE",
        "LITERAL-",
    ] {
        assert!(caps.contains(c), "{c} missing: {caps}");
    }
    ok(&v["login"], "LOGIN");
    ok(&v["capability_after"], "CAPABILITY");
    assert!(!s(&v["capability_after"]).contains("AUTH=PLAIN"), "{v}");
    ok(&v["list"], "LIST");
    assert!(s(&v["list"]).contains("\\\"/\\\" INBOX"), "{}", v["list"]);

    // EXAMINE: read-only, BODY[] does not set \Seen, STORE refused
    let ex = &v["examine"];
    assert_eq!(ex["typ"], "OK", "{ex}");
    assert_eq!(ex["exists"], serde_json::json!(["3"]), "{ex}");
    assert_eq!(ex["uidnext"], serde_json::json!(["4"]), "{ex}");
    assert!(!ex["uidvalidity"][0].as_str().unwrap().is_empty(), "{ex}");
    assert!(
        ex["readonly"].as_array().is_some_and(|a| !a.is_empty()),
        "{ex}"
    );
    ok(&v["examine_fetch_body"], "FETCH in EXAMINE");
    assert!(!s(&v["examine_flags"]).contains("Seen"), "{v}");
    refused(&v["examine_store"], "STORE in EXAMINE");

    // SELECT
    let sel = &v["select"];
    assert_eq!(sel["typ"], "OK", "{sel}");
    assert_eq!(sel["exists"], serde_json::json!(["3"]), "{sel}");
    assert_eq!(sel["recent"], serde_json::json!(["3"]), "{sel}");
    assert_eq!(sel["uidnext"], serde_json::json!(["4"]), "{sel}");
    assert_eq!(sel["uidvalidity"], ex["uidvalidity"], "UIDVALIDITY changed");
    assert!(s(&sel["permanentflags"]).contains("\\\\Deleted"), "{sel}");

    // FETCH metadata, ENVELOPE, BODYSTRUCTURE
    let meta = v["fetch_meta"][1].as_array().unwrap();
    assert_eq!(meta.len(), 3, "{meta:?}");
    for (i, m) in meta.iter().enumerate() {
        let m = m.as_str().unwrap();
        assert!(m.starts_with(&format!("{} (UID {} ", i + 1, i + 1)), "{m}");
        let size = stored[i].len();
        assert!(
            m.contains(&format!("RFC822.SIZE {size} ")),
            "{m}: stored size {size}"
        );
        assert!(m.contains("INTERNALDATE \""), "{m}");
    }
    let env = s(&v["fetch_envelope"]);
    for e in [
        "alpha-one",
        "beta-two",
        "gamma-three",
        "Mon, 02 Nov 2026 10:00:00 +0000",
        "((\\\"Sender Name\\\" NIL \\\"sender\\\" \\\"client.test\\\"))",
        "((NIL NIL \\\"alice\\\" \\\"example.test\\\"))",
        "<alpha-one@client.test>",
    ] {
        assert!(env.contains(e), "ENVELOPE lacks {e}: {env}");
    }
    let bs = v["fetch_bodystructure"][1].as_array().unwrap();
    let bs: Vec<&str> = bs.iter().map(|b| b.as_str().unwrap()).collect();
    assert!(
        bs[0].contains("(\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 34 4 "),
        "{bs:?}"
    );
    assert!(
        bs[2].contains("((\"text\" \"plain\" (\"charset\" \"utf-8\") NIL NIL \"7bit\" 13 0 ")
            && bs[2].contains(
                "(\"application\" \"octet-stream\" (\"name\" \"a.bin\") NIL NIL \"base64\" 20 "
            )
            && bs[2].contains("\"mixed\" (\"boundary\" \"XYZ\")"),
        "{bs:?}"
    );

    // BODY.PEEK[]: byte for byte the stored file, the original at its end
    let bodies = literals(&v["bodies"]);
    assert_eq!(bodies.len(), 3, "{}", v["bodies"]);
    for (i, (prefix, got)) in bodies.iter().enumerate() {
        assert!(prefix.contains(&format!("UID {}", i + 1)), "{prefix}");
        assert_eq!(
            got, &stored[i],
            "BODY[] of {prefix} differs from the stored file"
        );
        assert!(
            got.ends_with(&originals[i]),
            "original not intact in {prefix}"
        );
        assert!(
            got.starts_with(b"Return-Path: <sender@client.test>\r\n"),
            "{prefix}"
        );
    }
    assert!(
        !s(&v["flags_after_peek"]).contains("Seen"),
        "PEEK set \\Seen: {v}"
    );
    let hf = literals(&v["header_fields"]);
    assert_eq!(hf[0].1, b"Subject: alpha-one\r\n\r\n", "{hf:?}");
    let partial = literals(&v["partial"]);
    assert!(partial[0].0.contains("BODY[]<0> {10}"), "{partial:?}");
    assert_eq!(partial[0].1, &stored[0][..10], "{partial:?}");
    let text = literals(&v["text"]);
    assert_eq!(
        text[0].1, b"first line\r\n.\r\n..dots\r\nlast line\r\n",
        "{text:?}"
    );
    assert!(
        s(&v["flags_after_body"]).contains("\\\\Seen"),
        "BODY[] did not set \\Seen: {v}"
    );

    // STORE
    ok(&v["store_add"], "STORE +FLAGS");
    assert!(
        s(&v["store_add"]).contains("\\\\Answered \\\\Flagged"),
        "{v}"
    );
    assert_eq!(
        v["store_silent"],
        serde_json::json!(["OK", [null]]),
        "silent: {v}"
    );
    assert!(!s(&v["store_remove"]).contains("Answered"), "{v}");
    assert_eq!(
        v["store_remove_silent"],
        serde_json::json!(["OK", [null]]),
        "{v}"
    );
    let f = v["flags_after_store"][1].as_array().unwrap();
    assert!(!f[0].as_str().unwrap().contains("Seen"), "{f:?}");
    assert!(f[1].as_str().unwrap().contains("\\Flagged"), "{f:?}");
    assert!(!f[1].as_str().unwrap().contains("Answered"), "{f:?}");
    assert!(f[2].as_str().unwrap().contains("\\Seen"), "{f:?}");

    // SEARCH (1 alpha unseen, 2 beta flagged unseen, 3 gamma seen)
    let search = &v["search"];
    let expect: &[(&str, &[u32])] = &[
        ("all", &[1, 2, 3]),
        ("unseen", &[1, 2]),
        ("seen", &[3]),
        ("flagged", &[2]),
        ("from", &[1, 2, 3]),
        ("from_nobody", &[]),
        ("subject", &[2]),
        ("since", &[1, 2, 3]),
        ("before", &[]),
        ("or", &[1, 3]),
        ("not", &[2, 3]),
        ("body", &[3]),
        ("text", &[1]),
        ("larger", &[2]),
        ("seq", &[2, 3]),
    ];
    for (k, want) in expect {
        assert_eq!(hits(&search[k]), *want, "SEARCH {k}: {}", search[k]);
    }
    let us = &v["uid_search"];
    assert_eq!(hits(&us["range"]), [2, 3], "{us}");
    assert_eq!(hits(&us["one"]), [1], "{us}");
    assert_eq!(hits(&us["star"]), [3], "{us}");

    // Folders, COPY, MOVE, APPEND, EXPUNGE
    for k in ["create_work", "create_hier", "create_utf7"] {
        ok(&v[k], k);
    }
    refused(&v["create_dup"], "CREATE of an existing folder");
    let list_all = s(&v["list_all"]);
    for n in ["A/B", "Entw&APw-rfe", "Work", "INBOX"] {
        assert!(
            list_all.contains(&format!("\\\"/\\\" {n}\"")),
            "{n}: {list_all}"
        );
    }
    assert!(
        !s(&v["list_pct"]).contains("A/B"),
        "% matched A/B: {}",
        v["list_pct"]
    );
    let uidvalidity = sel["uidvalidity"][0].as_str().unwrap();
    ok(&v["copy"], "COPY");
    let copyuid = v["copy_code"][0].as_str().unwrap().to_owned();
    assert!(copyuid.ends_with(" 1 1"), "COPYUID {copyuid}");
    assert!(
        !copyuid.starts_with(uidvalidity),
        "Work has INBOX's UIDVALIDITY"
    );
    ok(&v["uid_copy"], "UID COPY");
    let work_validity = copyuid.split(' ').next().unwrap();
    assert_eq!(v["uid_copy_code"][0], format!("{work_validity} 2 2"), "{v}");
    assert!(s(&v["copy_missing"]).contains("TRYCREATE"), "{v}");
    assert!(
        s(&v["status_work"]).contains("MESSAGES 2 "),
        "{}",
        v["status_work"]
    );
    ok(&v["append"], "APPEND");
    assert_eq!(
        v["append_code"][0],
        format!("{work_validity} 3"),
        "APPENDUID: {v}"
    );
    let work = literals(&v["work_bodies"]);
    assert_eq!(work.len(), 3, "{}", v["work_bodies"]);
    assert_eq!(work[0].1, stored[0], "copied message differs");
    assert_eq!(work[1].1, stored[1], "UID-copied message differs");
    assert!(
        work[1].0.contains("\\Flagged"),
        "flags not copied: {}",
        work[1].0
    );
    assert_eq!(
        work[2].1,
        b64(&v["appended_sent"]),
        "APPENDed message differs"
    );
    assert!(work[2].0.contains("UID 3 "), "{}", work[2].0);
    assert!(
        work[2].0.contains("\\Flagged") && work[2].0.contains("\\Seen"),
        "APPEND flags: {}",
        work[2].0
    );
    ok(&v["move"], "MOVE");
    assert_eq!(v["move_expunge"], serde_json::json!(["1"]), "{v}");
    assert!(v["move_code"][0].as_str().unwrap().ends_with(" 1 1"), "{v}");
    assert!(s(&v["status_ab"]).contains("MESSAGES 1 "), "{v}");
    assert!(
        s(&v["status_work_after_move"]).contains("MESSAGES 2)"),
        "{v}"
    );
    ok(&v["store_deleted"], "STORE \\Deleted");
    assert_eq!(
        v["expunge"],
        serde_json::json!(["OK", ["2"]]),
        "EXPUNGE: {v}"
    );
    assert!(
        s(&v["status_work_after_expunge"]).contains("MESSAGES 1)"),
        "{v}"
    );

    // SUBSCRIBE / LSUB / RENAME / DELETE
    ok(&v["subscribe"], "SUBSCRIBE");
    ok(&v["subscribe_utf7"], "SUBSCRIBE");
    let lsub = s(&v["lsub"]);
    assert!(
        lsub.contains(" Work\"") && lsub.contains(" Entw&APw-rfe\""),
        "{lsub}"
    );
    assert!(!lsub.contains("A/B"), "{lsub}");
    ok(&v["rename"], "RENAME");
    ok(&v["rename_utf7"], "RENAME to Ordner/\u{c4}lter");
    assert!(s(&v["status_renamed_utf7"]).contains("MESSAGES 0)"), "{v}");
    assert!(s(&v["status_archive"]).contains("MESSAGES 1)"), "{v}");
    ok(&v["delete_ab"], "DELETE A/B");
    refused(&v["delete_missing"], "DELETE of a missing folder");
    refused(&v["delete_inbox"], "DELETE INBOX");
    ok(&v["unsubscribe"], "UNSUBSCRIBE");
    assert!(
        !s(&v["lsub_after"]).contains(" Work\""),
        "{}",
        v["lsub_after"]
    );
    let list = s(&v["list_final"]);
    assert!(list.contains(" Archive\""), "{list}");
    assert!(list.contains(" Ordner/&AMQ-lter\""), "{list}");
    assert!(!list.contains(" Work\"") && !list.contains("A/B"), "{list}");
    assert!(!list.contains("Entw&APw-rfe"), "{list}");
    assert!(
        s(&v["status_inbox"]).contains("MESSAGES 3 UNSEEN 2 UIDNEXT 4"),
        "{v}"
    );
    assert_eq!(typ(&v["logout"]), "BYE", "{v}");

    // On disk: Maildir++ folders with modified UTF-7 names
    let home = server.mail_dir().join(USER);
    assert!(home.join(".Archive/cur").is_dir() || home.join(".Archive/new").is_dir());
    assert!(home.join(".Ordner.&AMQ-lter").is_dir(), "{:?}", tree(&home));
    assert!(!home.join(".Work").exists() && !home.join(".A.B").exists());
    assert!(!home.join(".Entw&APw-rfe").exists());
    assert_eq!(
        self::stored_in_order(&server, &originals),
        stored,
        "INBOX messages changed"
    );
    assert!(!all.contains("\"BAD\""), "a BAD answer somewhere: {all}");
}

#[test]
fn imaplib_reads_byte_for_byte_over_plain_starttls_and_imaps() {
    let server = TestServer::start(tls_tweaks());
    let originals = test_messages();
    for m in &originals {
        deliver(&server, USER, m);
    }
    let stored = stored_in_order(&server, &originals);
    for (mode, listener) in [("plain", "imap"), ("starttls", "imap"), ("imaps", "imaps")] {
        let v = imaplib(&server, "fetch", listener, &["--mode".into(), mode.into()]);
        let who = format!("imaplib {mode}");
        ok(&v["login"], &who);
        assert_eq!(v["select"], serde_json::json!(["OK", ["3"]]), "{who}: {v}");
        let caps = s(&v["capabilities"]);
        match mode {
            "plain" => {
                assert!(v["tls_version"].is_null(), "{who}: {v}");
                assert!(
                    caps.contains("STARTTLS"),
                    "{who}: STARTTLS not offered: {v}"
                );
            }
            _ => {
                let t = v["tls_version"].as_str().unwrap_or("");
                assert!(t == "TLSv1.3" || t == "TLSv1.2", "{who}: {v}");
                assert!(
                    !caps.contains("STARTTLS"),
                    "{who}: STARTTLS offered in TLS: {v}"
                );
            }
        }
        let bodies = literals(&v["bodies"]);
        assert_eq!(bodies.len(), 3, "{who}");
        for (i, (prefix, got)) in bodies.iter().enumerate() {
            assert_eq!(
                got, &stored[i],
                "{who}: {prefix} differs from the stored file"
            );
            assert!(got.ends_with(&originals[i]), "{who}: {prefix}");
        }
        assert_eq!(typ(&v["logout"]), "BYE", "{who}: {v}");
    }
    assert_eq!(
        stored_in_order(&server, &originals),
        stored,
        "EXAMINE changed mail"
    );
}

// ------------------------------------------------------ 2. two sessions

#[test]
fn two_sessions_see_each_others_flags_and_expunges() {
    let server = TestServer::start(mailbox_tweaks());
    for m in test_messages() {
        deliver(&server, USER, &m);
    }
    let v = imaplib(&server, "multi", "imap", &[]);
    // \Recent goes to the first session only.
    assert_eq!(v["a_recent"], serde_json::json!(["3"]), "{v}");
    assert_eq!(v["b_recent"], serde_json::json!(["0"]), "{v}");
    assert_eq!(hits(&v["a_recent_search"]), [1, 2, 3], "{v}");
    assert_eq!(hits(&v["b_recent_search"]), Vec::<u32>::new(), "{v}");
    ok(&v["a_store"], "STORE in A");
    ok(&v["b_noop1"], "NOOP in B");
    let f = s(&v["b_fetch_after_flag"]);
    assert!(
        f.contains("\"2 (") && f.contains("FLAGS (\\\\Flagged))"),
        "B did not see A's flag change: {v}"
    );
    ok(&v["a_expunge"], "EXPUNGE in A");
    ok(&v["b_noop2"], "NOOP in B");
    assert_eq!(
        v["b_expunge"],
        serde_json::json!(["1"]),
        "B did not see the EXPUNGE: {v}"
    );
    let after = v["b_after"][1].as_array().unwrap();
    assert_eq!(after.len(), 2, "{v}");
    assert!(after[0].as_str().unwrap().starts_with("1 (UID 2 "), "{v}");
    assert!(after[1].as_str().unwrap().starts_with("2 (UID 3 "), "{v}");
    let a_after = s(&v["a_after"]);
    assert!(
        a_after.contains("1 (UID 2 ")
            && a_after.contains("2 (UID 3 ")
            && !a_after.contains("UID 1 "),
        "{v}"
    );
    assert_eq!(maildir_files(&server, USER).len(), 2);
}

// ------------------------------------------------------ 3. IDLE

#[test]
fn idle_wakes_up_on_an_smtp_delivery() {
    let server = TestServer::start(mailbox_tweaks());
    deliver(&server, USER, &plain_message("before-idle", "x\r\n"));
    let v = imaplib(
        &server,
        "idle",
        "imap",
        &[
            "--smtp".into(),
            server.smtp.to_string(),
            "--rcpt".into(),
            format!("{USER}@{LOCAL_DOMAIN}"),
        ],
    );
    assert_eq!(v["exists_before"], serde_json::json!(["1"]), "{v}");
    assert!(
        v["continuation"]
            .as_str()
            .is_some_and(|c| c.starts_with("+ ")),
        "{v}"
    );
    assert_eq!(v["exists_line"], "* 2 EXISTS", "no EXISTS in IDLE: {v}");
    let secs = v["exists_after_seconds"].as_f64().unwrap();
    assert!(secs < 10.0, "EXISTS after {secs} s: {v}");
    assert!(
        v["done"].as_str().is_some_and(|d| d.contains(" OK")),
        "DONE: {v}"
    );
    ok(&v["noop"], "NOOP after IDLE");
    assert_eq!(maildir_files(&server, USER).len(), 2);
}

/// The seconds of each round of an `idle_latency` answer.
fn latencies(v: &Value, key: &str) -> Vec<f64> {
    v[key]
        .as_array()
        .unwrap_or_else(|| panic!("{key} missing: {v}"))
        .iter()
        .map(|x| {
            x.as_f64()
                .unwrap_or_else(|| panic!("a round of {key} saw no EXISTS: {v}"))
        })
        .collect()
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

/// Issue 15 item 4: IDLE learns of a delivery at once (the folder is
/// watched, not polled every second), whether spate delivered it over
/// SMTP or another program dropped it into the Maildir. The issue's
/// target is 50 ms from the 250; the test allows 100 ms of median on a
/// loaded machine (polling would give about 500).
#[test]
fn idle_reports_new_mail_at_once_from_smtp_and_from_other_programs() {
    let server = TestServer::start(mailbox_tweaks());
    deliver(&server, USER, &plain_message("before-idle", "x\r\n"));
    let maildir = server.mail_dir().join(USER);
    let v = imaplib(
        &server,
        "idle_latency",
        "imap",
        &[
            "--smtp".into(),
            server.smtp.to_string(),
            "--rcpt".into(),
            format!("{USER}@{LOCAL_DOMAIN}"),
            "--rounds".into(),
            "7".into(),
            "--maildir".into(),
            maildir.display().to_string(),
        ],
    );
    assert!(
        v["done"].as_str().is_some_and(|d| d.contains(" OK")),
        "DONE: {v}"
    );
    let smtp = median(latencies(&v, "smtp"));
    let external = median(latencies(&v, "external"));
    eprintln!("IDLE latency medians: smtp {smtp:.4} s, external {external:.4} s: {v}");
    assert!(smtp < 0.1, "EXISTS {smtp} s after the 250 (median): {v}");
    assert!(
        external < 0.1,
        "EXISTS {external} s after the rename (median): {v}"
    );
    assert_eq!(maildir_files(&server, USER).len(), 15);
}

// ------------------------------------------------------ 4. bad input

#[test]
fn bad_input_gets_no_or_bad_and_changes_nothing() {
    let server = TestServer::start(mailbox_tweaks());
    deliver(&server, USER, &plain_message("bad-input", "x\r\n"));
    let contents = stored(&server, USER);
    let top = |d: &Path| -> BTreeSet<PathBuf> {
        std::fs::read_dir(d)
            .map(|rd| rd.flatten().map(|e| e.path()).collect())
            .unwrap_or_default()
    };
    let home = server.mail_dir().join(USER);
    let parent = server.mail_dir().parent().unwrap().to_path_buf();
    let (mail_top, parent_top, home_top) = (top(&server.mail_dir()), top(&parent), top(&home));
    let v = imaplib(&server, "bad", "imap", &[]);
    for k in ["wrong_password", "unknown_user"] {
        assert!(s(&v[k]).contains("AUTHENTICATIONFAILED"), "{k}: {}", v[k]);
    }
    refused(&v["after_wrong_select"], "SELECT after a failed LOGIN");
    ok(&v["login"], "LOGIN");
    let tagged = |k: &str, tag: &str| -> String {
        v[k].as_array()
            .unwrap()
            .iter()
            .map(|l| l.as_str().unwrap())
            .find(|l| l.starts_with(&format!("{tag} ")))
            .unwrap_or_else(|| panic!("{k}: no tagged reply: {v}"))
            .to_owned()
    };
    assert!(tagged("unknown_command", "u1").starts_with("u1 BAD"), "{v}");
    let r = tagged("fetch_before_select", "u2");
    assert!(r.starts_with("u2 BAD") || r.starts_with("u2 NO"), "{r}");
    let r = tagged("uid_fetch_before_select", "u3");
    assert!(r.starts_with("u3 BAD") || r.starts_with("u3 NO"), "{r}");
    assert!(tagged("bad_syntax", "u4").starts_with("u4 BAD"), "{v}");
    for (name, r) in v["traversal"].as_object().unwrap() {
        for (cmd, reply) in r.as_object().unwrap() {
            assert!(
                typ(reply) == "NO" || typ(reply) == "BAD",
                "{cmd} {name:?} not refused: {reply}"
            );
        }
    }
    ok(&v["select_inbox"], "SELECT INBOX");
    let r = tagged("fetch_out_of_range", "u5");
    assert!(r.starts_with("u5 BAD") || r.starts_with("u5 NO"), "{r}");
    let r = tagged("big_literal", "u6");
    assert!(r.starts_with("u6 NO") || r.starts_with("u6 BAD"), "{r}");
    assert!(
        !s(&v["big_literal"]).contains("\"+"),
        "continuation for an oversized literal: {v}"
    );
    ok(&v["noop_after_big"], "NOOP after a refused literal");
    let r = tagged("big_literal_plus", "u7");
    assert!(r.starts_with("u7 NO") || r.starts_with("u7 BAD"), "{r}");
    ok(
        &v["new_session"],
        "a new session after the oversized literal",
    );
    assert!(server_alive(&server), "spate died");
    // SELECT INBOX moved the message to cur/ and wrote the UID list;
    // nothing else appeared, least of all a folder or a file outside.
    assert_eq!(top(&server.mail_dir()), mail_top, "the mail dir changed");
    assert_eq!(top(&parent), parent_top, "created outside the mail dir");
    let new_in_home: Vec<PathBuf> = top(&home).difference(&home_top).cloned().collect();
    assert!(
        new_in_home.iter().all(|p| {
            let n = p.file_name().unwrap().to_string_lossy();
            n.starts_with("spate-uid")
        }),
        "new in the Maildir: {new_in_home:?}"
    );
    for p in ["/tmp/evil", "/tmp/x", "/tmp/b"] {
        assert!(!Path::new(p).exists() || p != "/tmp/evil", "{p} created");
    }
    assert!(!parent.join("x").exists() && !parent.join("b").exists());
    assert_eq!(stored(&server, USER), contents);
}

fn server_alive(server: &TestServer) -> bool {
    std::net::TcpStream::connect_timeout(&server.listener("imap"), Duration::from_secs(5)).is_ok()
}

#[test]
fn plaintext_login_is_refused_before_tls_when_loopback_is_not_trusted() {
    let server = TestServer::start(tls_tweaks().extra("[auth]\ntrust_loopback = false\n"));
    deliver(&server, USER, &plain_message("privacy", "x\r\n"));
    let v = imaplib(&server, "privacy", "imap", &[]);
    let caps = s(&v["capabilities"]);
    assert!(
        caps.contains("LOGINDISABLED") && caps.contains("STARTTLS"),
        "{v}"
    );
    assert!(!caps.contains("AUTH=PLAIN"), "{v}");
    assert!(s(&v["login_plain"]).contains("PRIVACYREQUIRED"), "{v}");
    refused(&v["authenticate_plain"], "AUTHENTICATE PLAIN before TLS");
    ok(&v["starttls"], "STARTTLS");
    let caps = s(&v["capabilities_tls"]);
    assert!(
        !caps.contains("LOGINDISABLED") && !caps.contains("STARTTLS"),
        "{v}"
    );
    ok(&v["login_tls"], "LOGIN over TLS");
    assert_eq!(v["select"], serde_json::json!(["OK", ["1"]]), "{v}");
}

// ------------------------------------------------------ 5. other clients

fn curl(url: &str, extra: &[&str]) -> std::process::Output {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--max-time", "40", "--user"])
        .arg(format!("{USER}:{PASSWORD}"))
        .args(extra)
        .arg(url);
    run_with_timeout(cmd, COMMAND_TIMEOUT)
}

#[test]
fn curl_lists_searches_fetches_and_appends() {
    if !have("curl", "curl") {
        return;
    }
    let server = TestServer::start(tls_tweaks());
    let originals = test_messages();
    for m in &originals {
        deliver(&server, USER, m);
    }
    let stored = stored_in_order(&server, &originals);
    let imap = server.listener("imap");
    let imaps = server.listener("imaps");
    let ca = ca(&server);

    let out = curl(&format!("imap://{imap}/"), &[]);
    assert!(out.status.success(), "LIST: {}", output_text(&out));
    let list = String::from_utf8_lossy(&out.stdout);
    assert!(
        list.contains("* LIST (\\HasNoChildren) \"/\" INBOX"),
        "{list}"
    );

    for (i, s) in stored.iter().enumerate() {
        let uid = i + 1;
        for (url, extra) in [
            (format!("imap://{imap}/INBOX;UID={uid}"), vec![]),
            (
                format!("imap://{imap}/INBOX;UID={uid}"),
                vec!["--ssl-reqd", "--cacert", &ca],
            ),
            (
                format!("imaps://{imaps}/INBOX;UID={uid}"),
                vec!["--cacert", &ca],
            ),
        ] {
            let out = curl(&url, &extra);
            assert!(
                out.status.success(),
                "{url} {extra:?}: {}",
                output_text(&out)
            );
            assert!(
                out.stdout == *s,
                "{url} {extra:?}: differs from the stored file ({} bytes, {} stored): {}",
                out.stdout.len(),
                s.len(),
                first_difference(&out.stdout, s)
            );
        }
    }
    // A section and a partial fetch
    let out = curl(
        &format!("imap://{imap}/INBOX;UID=1;SECTION=HEADER.FIELDS%20(SUBJECT)"),
        &[],
    );
    assert!(out.status.success(), "{}", output_text(&out));
    assert_eq!(
        out.stdout,
        b"Subject: alpha-one\r\n\r\n",
        "{}",
        output_text(&out)
    );
    let out = curl(&format!("imap://{imap}/INBOX;UID=1;PARTIAL=0.10"), &[]);
    assert!(out.status.success(), "{}", output_text(&out));
    assert_eq!(out.stdout, &stored[0][..10], "{}", output_text(&out));

    let out = curl(&format!("imap://{imap}/INBOX?SUBJECT%20beta"), &[]);
    assert!(out.status.success(), "{}", output_text(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim_end(),
        "* SEARCH 2",
        "{}",
        output_text(&out)
    );
    let out = curl(&format!("imap://{imap}/INBOX"), &["-X", "EXAMINE INBOX"]);
    assert!(out.status.success(), "{}", output_text(&out));
    let ex = String::from_utf8_lossy(&out.stdout);
    assert!(
        ex.contains("* 3 EXISTS") && ex.contains("UIDNEXT 4"),
        "{ex}"
    );

    // Upload: APPEND
    let upload = server.dir.path().join("upload.eml");
    let appended = plain_message("curl-upload", "uploaded by curl\r\n");
    std::fs::write(&upload, &appended).unwrap();
    let out = curl(
        &format!("imap://{imap}/INBOX"),
        &["-T", upload.to_str().unwrap()],
    );
    assert!(out.status.success(), "APPEND: {}", output_text(&out));
    let out = curl(&format!("imap://{imap}/INBOX;UID=4"), &[]);
    assert!(out.status.success(), "{}", output_text(&out));
    assert_eq!(out.stdout, appended, "the uploaded message differs");
    assert_eq!(maildir_files(&server, USER).len(), 4);

    // Wrong password: curl fails with a login error
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--max-time", "40", "--user", "alice:wrong"])
        .arg(format!("imap://{imap}/INBOX;UID=1"));
    let out = run_with_timeout(cmd, COMMAND_TIMEOUT);
    assert!(!out.status.success(), "{}", output_text(&out));
    assert!(out.stdout.is_empty(), "{}", output_text(&out));
}

/// Where two byte strings part, with some context (for failure messages).
fn first_difference(got: &[u8], want: &[u8]) -> String {
    let at = got
        .iter()
        .zip(want)
        .position(|(a, b)| a != b)
        .unwrap_or(got.len().min(want.len()));
    let from = at.saturating_sub(80);
    format!(
        "at {at}: got {:?}, want {:?}",
        String::from_utf8_lossy(&got[from..got.len().min(at + 80)]),
        String::from_utf8_lossy(&want[from..want.len().min(at + 80)])
    )
}

/// `bytes` with every CRLF turned into LF.
fn lf(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    for (i, &b) in bytes.iter().enumerate() {
        if b == b'\r' && bytes.get(i + 1) == Some(&b'\n') {
            continue;
        }
        out.push(b);
    }
    out
}

/// The files in dir/new and dir/cur, sorted by path.
fn maildir_in(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = ["new", "cur"]
        .iter()
        .flat_map(|s| {
            std::fs::read_dir(dir.join(s))
                .into_iter()
                .flatten()
                .flatten()
        })
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    out.sort();
    out
}

/// `msg` without the `X-TUID:` header line mbsync adds.
fn without_tuid(msg: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(msg);
    let Some(at) = text.find("\nX-TUID: ") else {
        return msg.to_vec();
    };
    let end = text[at + 1..]
        .find('\n')
        .map_or(text.len(), |e| at + 1 + e + 1);
    let mut out = msg[..at + 1].to_vec();
    out.extend_from_slice(&msg[end..]);
    out
}

fn mbsync(rc: &Path, home: &Path) -> String {
    let mut cmd = Command::new("mbsync");
    cmd.env("HOME", home).arg("-c").arg(rc).arg("-a");
    let out = run_with_timeout(cmd, COMMAND_TIMEOUT);
    let text = output_text(&out);
    assert!(out.status.success(), "mbsync: {text}");
    text
}

#[test]
fn mbsync_syncs_both_ways() {
    if !have("mbsync", "isync") {
        return;
    }
    let server = TestServer::start(mailbox_tweaks());
    let originals = test_messages();
    for m in &originals {
        deliver(&server, USER, m);
    }
    let imap = server.listener("imap");
    let home = server.dir.path().join("mbsync-home");
    let local = home.join("Mail");
    std::fs::create_dir_all(&local).unwrap();
    let rc = home.join("mbsyncrc");
    std::fs::write(
        &rc,
        format!(
            "IMAPAccount spate\nHost {ip}\nPort {port}\nUser {USER}\nPass {PASSWORD}\n\
             SSLType None\nAuthMechs LOGIN\n\n\
             IMAPStore remote\nAccount spate\n\n\
             MaildirStore local\nPath {path}/\nInbox {path}/INBOX\nSubFolders Verbatim\n\n\
             Channel sync\nFar :remote:\nNear :local:\nPatterns *\nCreate Both\n\
             Sync All\nExpunge Both\nSyncState *\n",
            ip = imap.ip(),
            port = imap.port(),
            path = local.display(),
        ),
    )
    .unwrap();

    // Far to near: the three messages arrive (with LF line ends).
    let log = mbsync(&rc, &home);
    let inbox = local.join("INBOX");
    let files = maildir_in(&inbox);
    assert_eq!(files.len(), 3, "{files:?}\n{log}");
    let stored_now = stored(&server, USER);
    for f in &files {
        // mbsync adds its own X-TUID header to what it stores.
        let got = without_tuid(&std::fs::read(f).unwrap());
        assert!(
            stored_now.iter().any(|s| lf(s) == got || *s == got),
            "{f:?} differs from every stored message: {:?}\n{log}",
            String::from_utf8_lossy(&got[..got.len().min(500)])
        );
    }

    // Flag one locally, add a local message, and a server-side delivery.
    let first = files
        .iter()
        .find(|f| {
            std::fs::read(f)
                .map(|b| common::contains(&b, b"Subject: alpha-one"))
                .unwrap_or(false)
        })
        .expect("alpha-one locally")
        .clone();
    let name = first.file_name().unwrap().to_string_lossy().into_owned();
    let base = name.split(":2,").next().unwrap();
    let flagged = inbox.join("cur").join(format!("{base}:2,FS"));
    std::fs::rename(&first, &flagged).unwrap();
    let local_msg = plain_message("written-locally", "from the near side\n").to_vec();
    let local_msg = lf(&local_msg);
    std::fs::write(inbox.join("new").join("1700000000.local1.host"), &local_msg).unwrap();
    deliver(
        &server,
        USER,
        &plain_message("delta-four", "arrived later\r\n"),
    );

    let log = mbsync(&rc, &home);
    // Near to far: the flags and the new message are on the server.
    let files = maildir_files(&server, USER);
    assert_eq!(files.len(), 5, "{files:?}\n{log}");
    let alpha = files
        .iter()
        .find(|f| common::contains(&std::fs::read(f).unwrap(), b"Subject: alpha-one"))
        .expect("alpha-one on the server");
    let flags = alpha
        .to_string_lossy()
        .rsplit(":2,")
        .next()
        .unwrap()
        .to_owned();
    assert!(
        alpha.to_string_lossy().contains(":2,") && flags.contains('F') && flags.contains('S'),
        "flags not synced to the server: {alpha:?}\n{log}"
    );
    let uploaded = files
        .iter()
        .map(|f| std::fs::read(f).unwrap())
        .find(|b| common::contains(b, b"Subject: written-locally"))
        .unwrap_or_else(|| panic!("local message not uploaded\n{log}"));
    assert!(
        common::contains(&uploaded, b"from the near side\r\n"),
        "{:?}",
        String::from_utf8_lossy(&uploaded)
    );
    // Far to near: the later delivery arrived.
    let near = maildir_in(&inbox);
    assert_eq!(near.len(), 5, "{near:?}\n{log}");
    assert!(
        near.iter()
            .any(|f| common::contains(&std::fs::read(f).unwrap(), b"Subject: delta-four")),
        "{log}"
    );

    // A third run has nothing to do and changes nothing.
    let before = maildir_files(&server, USER);
    mbsync(&rc, &home);
    assert_eq!(maildir_files(&server, USER), before);
    assert_eq!(maildir_in(&inbox).len(), 5);
}

/// A mutt in a detached tmux session (its own server socket).
struct Tmux {
    socket: String,
}

impl Tmux {
    fn cmd(&self, args: &[&str]) -> std::process::Output {
        let mut cmd = Command::new("tmux");
        cmd.arg("-L").arg(&self.socket).args(args);
        run_with_timeout(cmd, COMMAND_TIMEOUT)
    }

    fn screen(&self) -> String {
        String::from_utf8_lossy(&self.cmd(&["capture-pane", "-p", "-t", "m"]).stdout).into_owned()
    }

    fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", "m"];
        args.extend_from_slice(keys);
        self.cmd(&args);
    }

    /// Waits until the screen shows `text`; returns the screen.
    fn wait_for(&self, text: &str) -> String {
        let deadline = Instant::now() + SETTLE;
        loop {
            let screen = self.screen();
            if screen.contains(text) {
                return screen;
            }
            assert!(
                Instant::now() < deadline,
                "mutt never showed {text:?}; screen:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.cmd(&["kill-server"]);
    }
}

#[test]
fn mutt_reads_and_deletes_over_imap() {
    if !have("mutt", "mutt") || !have("tmux", "tmux") {
        return;
    }
    let server = TestServer::start(mailbox_tweaks());
    let originals = test_messages();
    for m in &originals {
        deliver(&server, USER, m);
    }
    let imap = server.listener("imap");
    let home = server.dir.path().join("mutt-home");
    std::fs::create_dir_all(&home).unwrap();
    let rc = home.join("muttrc");
    std::fs::write(
        &rc,
        format!(
            "set folder=\"imap://{USER}@{imap}/\"\nset spoolfile=\"+INBOX\"\n\
             set imap_user=\"{USER}\"\nset imap_pass=\"{PASSWORD}\"\n\
             unset ssl_force_tls\nunset ssl_starttls\nunset imap_passive\n\
             set header_cache=\"\"\nset message_cachedir=\"\"\n\
             set delete=yes\nset quit=yes\nset move=no\nset confirmappend=no\n\
             set wait_key=no\nset mail_check=1\nset timeout=1\nset sort=date-sent\n\
             set pager_stop=yes\nset mark_old=no\n"
        ),
    )
    .unwrap();
    let tmux = Tmux {
        socket: format!("spate-imap-{}", std::process::id()),
    };
    let mutt = format!(
        "env HOME={h} TERM=xterm LC_ALL=C mutt -n -F {rc} -f imap://{USER}@{imap}/INBOX",
        h = home.display(),
        rc = rc.display()
    );
    let out = tmux.cmd(&[
        "new-session",
        "-d",
        "-s",
        "m",
        "-x",
        "132",
        "-y",
        "40",
        &mutt,
    ]);
    assert!(out.status.success(), "tmux: {}", output_text(&out));
    let index = tmux.wait_for("gamma-three");
    assert!(
        index.contains("alpha-one") && index.contains("beta-two"),
        "index:\n{index}"
    );
    // Read the first message (sorted by date: alpha-one, beta-two, ...).
    // The cursor starts on the first message.
    tmux.keys(&["Enter"]);
    let pager = tmux.wait_for("..dots");
    assert!(
        pager.contains("first line") && pager.contains("Subject: alpha-one"),
        "{pager}"
    );
    // Back to the index, delete it, sync, quit.
    tmux.keys(&["q"]);
    tmux.wait_for("gamma-three");
    tmux.keys(&["d"]);
    tmux.keys(&["$"]);
    let deadline = Instant::now() + SETTLE;
    while maildir_files(&server, USER).len() != 2 {
        assert!(
            Instant::now() < deadline,
            "mutt did not expunge; screen:\n{}",
            tmux.screen()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    tmux.keys(&["q"]);
    let left = stored(&server, USER);
    assert!(
        !left
            .iter()
            .any(|m| common::contains(m, b"Subject: alpha-one")),
        "alpha-one still stored"
    );
    assert!(left
        .iter()
        .any(|m| common::contains(m, b"Subject: beta-two")));
    // The messages mutt did not open stay unread.
    let files = maildir_files(&server, USER);
    assert!(
        files.iter().all(|f| !f.to_string_lossy().ends_with('S')),
        "{files:?}"
    );
}

// ------------------------------------------- a reply larger than memory

/// A FETCH whose reply is many times a reply part arrives whole and in
/// order while the server hands it out in parts (and reads the client
/// slowly: it only reads after sending the command).
#[test]
fn a_long_fetch_reply_arrives_whole_and_in_order() {
    use std::io::{BufRead, BufReader, Read, Write};
    let server = TestServer::start(mailbox_tweaks());
    deliver(
        &server,
        USER,
        &plain_message("first", "creates the Maildir\r\n"),
    );
    let cur = server.mail_dir().join(USER).join("cur");
    let count = 150usize;
    let filler = "0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqr\r\n".repeat(250);
    for i in 0..count {
        let msg = format!("Subject: bulk {i:03}\r\n\r\nstart-{i:03}\r\n{filler}end-{i:03}\r\n");
        std::fs::write(cur.join(format!("17000{i:05}.M1P1Q{i}.bulk:2,S")), msg).unwrap();
    }
    let imap = server.listener("imap");
    let stream = std::net::TcpStream::connect(imap).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    writer
        .write_all(
            format!("a LOGIN {USER} {PASSWORD}\r\nb SELECT INBOX\r\nc FETCH 1:* BODY.PEEK[]\r\n")
                .as_bytes(),
        )
        .unwrap();
    std::thread::sleep(Duration::from_millis(500)); // let the server block on us
    let mut bodies = Vec::new();
    loop {
        line.clear();
        assert!(
            reader.read_line(&mut line).unwrap() > 0,
            "connection closed"
        );
        if line.starts_with("c ") {
            assert!(line.starts_with("c OK"), "{line}");
            break;
        }
        if let Some(size) = line.strip_suffix("}\r\n").and_then(|l| l.rsplit_once('{')) {
            let mut body = vec![0; size.1.parse().unwrap()];
            reader.read_exact(&mut body).unwrap();
            bodies.push(String::from_utf8(body).unwrap());
        }
    }
    assert_eq!(bodies.len(), count + 1);
    // UIDs follow arrival (the names' times): the bulk files are older.
    let bulk: Vec<&String> = bodies
        .iter()
        .filter(|b| b.contains("Subject: bulk"))
        .collect();
    assert_eq!(bulk.len(), count);
    for (i, body) in bulk.iter().enumerate() {
        assert!(
            body.contains(&format!("start-{i:03}\r\n")),
            "message {i} out of order"
        );
        assert!(
            body.ends_with(&format!("end-{i:03}\r\n")),
            "message {i} cut"
        );
    }
    let total: usize = bodies.iter().map(String::len).sum();
    assert!(total > 2_000_000, "the reply spans several parts: {total}");
}
