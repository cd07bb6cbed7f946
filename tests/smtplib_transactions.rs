//! Python's smtplib (and raw Python sockets where smtplib cannot) against
//! spate: EHLO extensions, several transactions per session with the null
//! sender, DSN, SMTPUTF8 and quoted local parts, PIPELINING groups, BDAT,
//! SIZE, relay refusal, errors, too many recipients. The scripts in
//! tests/python print what they saw as JSON; the assertions are here.

mod common;

use serde_json::Value;

use common::{python, Queued, TestServer, Tweaks, MAX_TRACE_HEADER};

fn run(scenario: &str, server: &TestServer, extra: &[&str]) -> Value {
    let mut args = vec![
        scenario.to_owned(),
        server.smtp.ip().to_string(),
        server.smtp.port().to_string(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    python("smtp_scenarios.py", &args)
}

/// `code` and the enhanced status code at the start of `text`.
fn status(r: &Value) -> String {
    let code = r["code"].as_i64().unwrap_or(-1);
    let text = r["text"].as_str().unwrap_or("");
    let first = text
        .lines()
        .last()
        .unwrap_or("")
        .split_whitespace()
        .next()
        .unwrap_or("");
    let enhanced = first.split('.').count() == 3
        && first
            .split('.')
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    if enhanced {
        format!("{code} {first}")
    } else {
        code.to_string()
    }
}

fn code(r: &Value) -> i64 {
    r["code"].as_i64().unwrap_or(-1)
}

fn queued_id(r: &Value) -> Option<String> {
    if code(r) != 250 {
        return None;
    }
    let t = r["text"].as_str()?;
    let i = t.find("queued as ")?;
    Some(
        t[i + 10..]
            .split_whitespace()
            .next()?
            .trim_matches(['<', '>'])
            .to_owned(),
    )
}

fn find<'a>(q: &'a [Queued], id: &str) -> &'a Queued {
    q.iter()
        .find(|m| m.id == id)
        .unwrap_or_else(|| panic!("{id} not in queue list {q:#?}"))
}

fn plausible_size(m: &Queued, sent: u64) {
    assert!(
        m.size >= sent && m.size <= sent + MAX_TRACE_HEADER,
        "message {} listed with size {}, {sent} bytes sent",
        m.id,
        m.size
    );
}

#[test]
fn ehlo_offers_the_extensions() {
    let server = TestServer::start(Tweaks::default());
    let v = run("ehlo", &server, &[]);
    assert_eq!(code(&v["greeting"]), 220, "{v}");
    assert!(
        v["greeting"]["text"]
            .as_str()
            .unwrap()
            .starts_with("mx.test"),
        "greeting names the host: {v}"
    );
    assert_eq!(code(&v["ehlo"]), 250, "{v}");
    let f = v["features"].as_object().expect("features");
    for ext in [
        "pipelining",
        "size",
        "8bitmime",
        "enhancedstatuscodes",
        "smtputf8",
        "chunking",
        "dsn",
    ] {
        assert!(f.contains_key(ext), "EHLO lacks {ext}: {v}");
    }
    assert_eq!(f["size"], "10240000", "{v}");
    assert!(
        !f.contains_key("starttls"),
        "STARTTLS offered without a certificate: {v}"
    );
    assert_eq!(code(&v["helo_after_ehlo"]), 250, "{v}");
    assert_eq!(status(&v["quit"]), "221 2.0.0", "{v}");
}

#[test]
fn transactions_through_smtplib() {
    let server = TestServer::start(Tweaks::default());
    let v = run("transactions", &server, &[]);
    let msgs = v["messages"].as_array().expect("messages");
    let q = server.queue_list();
    let mut ids = Vec::new();
    for m in msgs {
        let label = m["label"].as_str().unwrap();
        assert_eq!(status(&m["mail"]), "250 2.1.0", "{label}: {m}");
        for r in m["rcpt"].as_array().unwrap() {
            assert_eq!(status(r), "250 2.1.5", "{label}: {m}");
        }
        assert_eq!(status(&m["data"]), "250 2.0.0", "{label}: {m}");
        let id = queued_id(&m["data"]).unwrap_or_else(|| panic!("{label}: no queue id in {m}"));
        assert!(common::is_queue_id(&id), "{label}: {id}");
        let listed = find(&q, &id);
        assert_eq!(listed.from, m["from"].as_str().unwrap(), "{label}");
        let to: Vec<String> = m["to"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_str().unwrap().to_owned())
            .collect();
        assert_eq!(listed.to, to, "{label}");
        plausible_size(listed, m["size_sent"].as_u64().unwrap());
        ids.push(id);
    }
    assert_eq!(msgs.len(), 7);
    // Null sender is listed as the empty string.
    assert_eq!(find(&q, &ids[1]).from, "");
    // Quoted local parts and UTF-8 addresses are kept exactly.
    assert_eq!(find(&q, &ids[5]).from, "\"john doe\"@example.test");
    assert_eq!(find(&q, &ids[4]).to, vec!["用户@example.test".to_owned()]);
    assert_eq!(status(&v["noop"]), "250 2.0.0", "{v}");
    assert_eq!(status(&v["rset"]), "250 2.0.0", "{v}");
    assert_eq!(code(&v["vrfy"]), 252, "{v}");
    assert!(matches!(code(&v["help"]), 211 | 214), "{v}");
    assert_eq!(
        v["sendmail_refused"].as_object().map(|o| o.len()),
        Some(0),
        "{v}"
    );
    assert_eq!(status(&v["quit"]), "221 2.0.0", "{v}");
    // 7 transactions + sendmail().
    assert_eq!(q.len(), 8, "{q:#?}");
    let ids_unique: std::collections::HashSet<_> = q.iter().map(|m| &m.id).collect();
    assert_eq!(ids_unique.len(), 8);
}

#[test]
fn size_limit_through_smtplib() {
    let server = TestServer::start(Tweaks::default().smtp("max_message_size", 20_000));
    let v = run("size", &server, &["--limit", "20000"]);
    assert_eq!(v["advertised"], "20000", "{v}");
    assert_eq!(status(&v["mail_too_big"]), "552 5.3.4", "{v}");
    let huge = status(&v["mail_huge"]);
    assert!(
        huge == "552 5.3.4" || huge.starts_with("501 5.5."),
        "absurd SIZE: {v}"
    );
    assert_eq!(code(&v["mail_ok"]), 250, "{v}");
    assert_eq!(status(&v["data_overflow"]), "552 5.3.4", "{v}");
    let after =
        queued_id(&v["after"]).unwrap_or_else(|| panic!("session unusable after overflow: {v}"));
    assert_eq!(status(&v["sendmail_big"]), "552 5.3.4", "{v}");
    let q = server.queue_list();
    assert_eq!(q.len(), 1, "only the small message is kept: {q:#?}");
    assert_eq!(q[0].id, after);
}

#[test]
fn relay_refused_outside_allow_networks() {
    let server = TestServer::start(Tweaks::default().no_relay());
    let v = run("relay", &server, &[]);
    assert_eq!(code(&v["mail"]), 250, "{v}");
    assert_eq!(status(&v["rcpt_local"]), "250 2.1.5", "{v}");
    assert_eq!(
        code(&v["rcpt_local_upper"]),
        250,
        "domains are case-insensitive: {v}"
    );
    assert_eq!(status(&v["rcpt_foreign"]), "554 5.7.1", "{v}");
    // An address literal from outside allow_networks is refused as such.
    assert_eq!(status(&v["rcpt_foreign_literal"]), "550 5.7.1", "{v}");
    let id = queued_id(&v["data"]).unwrap_or_else(|| panic!("local mail refused: {v}"));
    assert_eq!(status(&v["rcpt_foreign_2"]), "554 5.7.1", "{v}");
    let d = status(&v["data_no_rcpt"]);
    assert!(
        d.starts_with("503 5.5.") || d.starts_with("554 5.5."),
        "DATA without recipients: {v}"
    );
    let q = server.queue_list();
    assert_eq!(q.len(), 1, "{q:#?}");
    assert_eq!(q[0].id, id);
    assert_eq!(q[0].to, vec!["bob@example.test", "Bob@EXAMPLE.TEST"]);
}

#[test]
fn errors_are_answered_and_the_session_goes_on() {
    let server = TestServer::start(Tweaks::default());
    let v = run("errors", &server, &["--limit", "2048"]);
    let s = |k: &str| status(&v[k]);
    assert_eq!(s("mail_before_ehlo"), "503 5.5.1", "{v}");
    assert_eq!(s("unknown"), "500 5.5.2", "{v}");
    assert!(
        s("unknown_empty").starts_with("500 5.5.") || s("unknown_empty").starts_with("501 5.5."),
        "{v}"
    );
    assert_eq!(code(&v["noop_after_unknown"]), 250, "{v}");
    assert_eq!(s("too_long"), "500 5.5.2", "{v}");
    assert_eq!(code(&v["noop_after_too_long"]), 250, "{v}");
    assert_eq!(s("mail_too_long"), "500 5.5.2", "{v}");
    assert_eq!(code(&v["noop_after_mail_too_long"]), 250, "{v}");
    assert_eq!(s("rcpt_before_mail"), "503 5.5.1", "{v}");
    assert_eq!(s("data_before_mail"), "503 5.5.1", "{v}");
    assert!(s("mail_syntax").starts_with("501 5."), "{v}");
    assert_eq!(code(&v["mail"]), 250, "{v}");
    assert_eq!(s("mail_twice"), "503 5.5.1", "{v}");
    let d = s("data_before_rcpt");
    assert!(d == "503 5.5.1" || d == "554 5.5.1", "{v}");
    assert!(
        s("rcpt_syntax").starts_with("501 5.") || s("rcpt_syntax").starts_with("553 5."),
        "{v}"
    );
    let p = s("rcpt_unknown_param");
    assert!(p == "555 5.5.4" || p == "501 5.5.4", "{v}");
    assert_eq!(code(&v["rcpt"]), 250, "{v}");
    let id = queued_id(&v["data"]).unwrap_or_else(|| panic!("{v}"));
    assert_eq!(s("quit"), "221 2.0.0", "{v}");
    let q = server.queue_list();
    assert_eq!(q.len(), 1);
    assert_eq!(q[0].id, id);
}

#[test]
fn too_many_recipients_through_smtplib() {
    let server = TestServer::start(Tweaks::default().smtp("max_recipients", 5));
    let v = run("recipients", &server, &["--limit", "5"]);
    let r = v["rcpt"].as_array().unwrap();
    assert_eq!(r.len(), 8);
    for (i, x) in r.iter().enumerate() {
        let want = if i < 5 { "250 2.1.5" } else { "452 4.5.3" };
        assert_eq!(status(x), want, "rcpt {i}: {v}");
    }
    let id = queued_id(&v["data"]).unwrap_or_else(|| panic!("{v}"));
    let q = server.queue_list();
    assert_eq!(find(&q, &id).to.len(), 5);
}

#[test]
fn pipelined_transactions() {
    let server = TestServer::start(Tweaks::default());
    let v = run("pipelining", &server, &[]);
    assert!(
        v["ehlo"]["text"]
            .as_str()
            .unwrap()
            .to_ascii_uppercase()
            .contains("PIPELINING"),
        "{v}"
    );
    let groups = v["groups"].as_array().unwrap();
    let sizes: Vec<u64> = v["sizes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_u64().unwrap())
        .collect();
    let codes = |g: &Value| g.as_array().unwrap().iter().map(code).collect::<Vec<_>>();
    assert_eq!(codes(&groups[0]), vec![250, 250, 250, 354], "{v}");
    let q = server.queue_list();
    let mut ids = Vec::new();
    for (i, g) in groups[1..].iter().enumerate() {
        let last = i + 2 == groups.len();
        let c = codes(g);
        let id = queued_id(&g[0]).unwrap_or_else(|| panic!("group {}: {v}", i + 1));
        plausible_size(find(&q, &id), sizes[i]);
        ids.push(id);
        if last {
            assert_eq!(c, vec![250, 250, 250, 221], "final group: {g}");
        } else {
            assert_eq!(c[1], 250, "MAIL in group {}: {g}", i + 1);
            assert!(
                (500..600).contains(&c[2]),
                "bad RCPT in group {}: {g}",
                i + 1
            );
            assert_eq!(&c[3..], &[250, 354], "group {}: {g}", i + 1);
        }
    }
    assert_eq!(ids.len(), 10);
    assert_eq!(q.len(), 10, "{q:#?}");
    assert_eq!(
        find(&q, &ids[0]).to,
        vec!["a@example.test", "b@example.test"]
    );
    assert_eq!(find(&q, &ids[3]).to, vec!["c2@example.test"]);
    assert_eq!(find(&q, &ids[3]).from, "p3@example.test");
}

#[test]
fn bdat_chunking() {
    let server = TestServer::start(Tweaks::default());
    let v = run("bdat", &server, &[]);
    assert!(
        v["ehlo"]["text"]
            .as_str()
            .unwrap()
            .to_ascii_uppercase()
            .contains("CHUNKING"),
        "{v}"
    );
    let q = server.queue_list();
    let msgs = v["messages"].as_array().unwrap();
    assert_eq!(msgs.len(), 5);
    for m in msgs {
        let label = m["label"].as_str().unwrap();
        assert_eq!(code(&m["mail"]), 250, "{label}: {m}");
        assert_eq!(code(&m["rcpt"]), 250, "{label}: {m}");
        let chunks = m["chunks"].as_array().unwrap();
        for c in &chunks[..chunks.len() - 1] {
            assert_eq!(status(c), "250 2.0.0", "{label}: intermediate chunk {m}");
        }
        let id = queued_id(chunks.last().unwrap()).unwrap_or_else(|| panic!("{label}: {m}"));
        let listed = find(&q, &id);
        assert_eq!(listed.from, format!("{label}@example.test"));
        plausible_size(listed, m["size_sent"].as_u64().unwrap());
    }
    assert_eq!(code(&msgs[4]["noop"]), 250, "{v}");
    assert_eq!(
        q.len(),
        5,
        "BDAT content must never start another transaction: {q:#?}"
    );
    assert!(!q.iter().any(|m| m.from.starts_with("evil")), "{q:#?}");
    assert_eq!(status(&v["bdat_without_mail"]), "503 5.5.1", "{v}");
    assert_eq!(
        code(&v["noop1"]),
        250,
        "the 5 bytes after a refused BDAT are skipped: {v}"
    );
    assert_eq!(code(&v["bdat_first_chunk"]), 250, "{v}");
    assert_eq!(status(&v["data_after_bdat"]), "503 5.5.1", "{v}");
    assert_eq!(code(&v["rset"]), 250, "{v}");
    assert!(status(&v["bdat_bad_size"]).starts_with("501 5.5."), "{v}");
    assert_eq!(code(&v["noop2"]), 250, "{v}");
    assert_eq!(code(&v["quit"]), 221, "{v}");
}
