//! Message submission with SMTP AUTH (RFC 6409, RFC 4954): smtplib over
//! STARTTLS with PLAIN and LOGIN, swaks `--auth PLAIN --tls`, implicit TLS
//! on the submissions port; an authenticated client relays to an external
//! domain (a capture sink behind a `[[route]]`) on a server that lets
//! nobody relay by address; without AUTH the same mail is refused (530 on
//! submission, 554 on the smtp port). Wrong passwords get 535 and slower
//! answers, counted in the `auth_failures` stat; AUTH in the clear with
//! `trust_loopback = false` gets 538 and is not offered; a sender the user
//! does not own gets 553; the Received header says ESMTPSA / ESMTPA.

#[path = "common/capture.rs"]
mod capture;
mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use base64::Engine as _;
use capture::{wait_until, Sink};
use common::{python, swaks, Client, TestServer, Tweaks};
use serde_json::Value;

const EXTERNAL: &str = "elsewhere.example";

/// A server nobody may relay through without AUTH, with alice and bob,
/// every submission listener, TLS, and `elsewhere.example` routed to `sink`.
fn submission_server(sink: &Sink, more: &str) -> TestServer {
    TestServer::start(
        Tweaks::default()
            .no_relay()
            .tls()
            .user("alice", "alice-pw")
            .user("bob", "bob-pw")
            .listener("submission")
            .listener("submissions")
            .extra(&sink.route(EXTERNAL))
            .extra(more),
    )
}

/// Runs tests/python/submit_client.py against `addr`.
fn submit(server: &TestServer, addr: SocketAddr, args: &[&str]) -> Value {
    let ca = server.tls.as_ref().expect("tls").ca.display().to_string();
    let mut all = vec![
        addr.ip().to_string(),
        addr.port().to_string(),
        "--cafile".to_owned(),
        ca,
    ];
    all.extend(args.iter().map(|s| s.to_string()));
    let v = python("submit_client.py", &all);
    assert!(v.get("exception").is_none(), "the client failed: {v:#}");
    v
}

fn status(v: &Value) -> String {
    let code = v["code"].as_i64().unwrap_or(-1);
    let text = v["text"].as_str().unwrap_or("");
    match text.split_whitespace().next() {
        Some(e) if e.chars().next().is_some_and(|c| c.is_ascii_digit()) && e.contains('.') => {
            format!("{code} {e}")
        }
        _ => code.to_string(),
    }
}

fn plain(authzid: &str, user: &str, password: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(format!("{authzid}\0{user}\0{password}"))
}

/// A raw client on the submission listener that has read the greeting and
/// sent EHLO; returns the EHLO reply too.
fn raw_submission(server: &TestServer) -> (Client, common::Reply) {
    let mut c = Client::connect(server.listener("submission"));
    let g = c.read_reply();
    assert_eq!(g.code, 220, "greeting: {g:?}");
    let e = c.ehlo("client.test");
    (c, e)
}

fn sink_message<'a>(messages: &'a [Value], marker: &str) -> &'a Value {
    messages
        .iter()
        .find(|m| m["data"].as_str().unwrap_or("").contains(marker))
        .unwrap_or_else(|| panic!("no message {marker} at the sink: {messages:#?}"))
}

#[test]
fn smtplib_auth_over_starttls_relays_plain_and_login() {
    let sink = Sink::start();
    let server = submission_server(&sink, "");
    let sub = server.listener("submission");
    // Each message's queue id, from the reply to its DATA.
    let mut v_data_texts = std::collections::HashMap::new();
    for mech in ["PLAIN", "LOGIN"] {
        let marker = format!("starttls-{mech}");
        let v = submit(
            &server,
            sub,
            &[
                "--mode",
                "starttls",
                "--mech",
                mech,
                "--user",
                "alice",
                "--password",
                "alice-pw",
                "--sender",
                "alice@example.test",
                "--rcpt",
                "friend@elsewhere.example",
                "--marker",
                &marker,
            ],
        );
        assert_eq!(v["greeting"]["code"], 220, "{v:#}");
        assert!(v["features"].get("starttls").is_some(), "{v:#}");
        assert_eq!(v["starttls"]["code"], 220, "{v:#}");
        let auth = v["features_tls"]["auth"].as_str().unwrap_or("");
        assert!(
            auth.contains("PLAIN") && auth.contains("LOGIN"),
            "AUTH PLAIN LOGIN offered after STARTTLS: {v:#}"
        );
        assert_eq!(status(&v["auth"]), "235 2.7.0", "{v:#}");
        assert_eq!(status(&v["mail"]), "250 2.1.0", "{v:#}");
        assert_eq!(
            status(&v["rcpt"][0]),
            "250 2.1.5",
            "relay after AUTH: {v:#}"
        );
        assert_eq!(v["data"]["code"], 250, "{v:#}");
        let text = v["data"]["text"].as_str().unwrap_or("").to_owned();
        let id = text.rsplit(' ').next().unwrap_or("").to_owned();
        assert!(common::is_queue_id(&id), "{v:#}");
        v_data_texts.insert(mech, id);
    }
    let got = sink.wait_for(2, Duration::from_secs(30));
    for mech in ["PLAIN", "LOGIN"] {
        let m = sink_message(&got, &format!("starttls-{mech}"));
        assert_eq!(m["from"], "alice@example.test", "{m:#}");
        assert_eq!(m["to"], serde_json::json!(["friend@elsewhere.example"]));
        let data = m["data"].as_str().unwrap();
        let received = data
            .split("\r\n")
            .find(|l| l.starts_with("Received:"))
            .unwrap_or("");
        let trace: String = data
            .split("\r\n")
            .take_while(|l| !l.starts_with("From:"))
            .collect::<Vec<_>>()
            .join("\n");
        assert!(
            received.starts_with("Received:") && trace.contains("with ESMTPSA"),
            "RFC 3848: authenticated over TLS is ESMTPSA:\n{trace}"
        );
        assert!(!trace.contains("alice-pw"), "no password in the trace");
        // Postfix's smtpd_tls_received_header comment, RFC 8314 4.3's
        // tls clause, and the queue id the client was given.
        assert!(trace.contains("(using TLSv1.3 with cipher TLS_"), "{trace}");
        assert!(trace.contains("\ttls TLS_"), "RFC 8314 4.3: {trace}");
        let queued = v_data_texts[mech].clone();
        assert!(
            trace.contains(&format!(" id {queued}")),
            "{queued}: {trace}"
        );
    }
    wait_until("an empty queue", Duration::from_secs(20), || {
        server.queue_list().is_empty()
    });
}

#[test]
fn without_auth_relay_is_refused_on_both_ports() {
    let sink = Sink::start();
    let server = submission_server(&sink, "");
    let sub = server.listener("submission");

    // Submission over STARTTLS without AUTH: 530 at MAIL (RFC 6409 4.3).
    let v = submit(
        &server,
        sub,
        &[
            "--mode",
            "starttls",
            "--sender",
            "alice@example.test",
            "--rcpt",
            "friend@elsewhere.example",
        ],
    );
    assert_eq!(status(&v["mail"]), "530 5.7.0", "{v:#}");
    assert!(v.get("data").is_none(), "{v:#}");
    // Even for a local recipient: submission is for authenticated users.
    let (mut c, _) = raw_submission(&server);
    let r = c.cmd("MAIL FROM:<alice@example.test>");
    assert_eq!(r.status(), "530 5.7.0", "{}", c.transcript);
    c.quit();

    // The smtp port from outside allow_networks: 554 5.7.1 at RCPT, and
    // no AUTH there at all.
    let mut c = server.connect();
    assert_eq!(c.read_reply().code, 220);
    let e = c.ehlo("client.test");
    assert!(!e.has_capability("AUTH"), "{e:?}");
    let r = c.cmd(&format!("AUTH PLAIN {}", plain("", "alice", "alice-pw")));
    assert!(r.code >= 500, "AUTH on the smtp port: {r:?}");
    assert_eq!(c.cmd("MAIL FROM:<alice@example.test>").code, 250);
    let r = c.cmd("RCPT TO:<friend@elsewhere.example>");
    assert_eq!(r.status(), "554 5.7.1", "{}", c.transcript);
    c.quit();

    assert!(server.queue_list().is_empty(), "nothing was queued");
    std::thread::sleep(Duration::from_millis(300));
    assert!(sink.messages().is_empty(), "nothing was relayed");
}

#[test]
fn swaks_auth_plain_over_starttls_relays() {
    let sink = Sink::start();
    let server = submission_server(&sink, "");
    let sub = server.listener("submission");
    let ca = server.tls.as_ref().unwrap().ca.display().to_string();
    let args: Vec<String> = [
        "--server",
        &sub.ip().to_string(),
        "--port",
        &sub.port().to_string(),
        "--helo",
        "swaks.test",
        "--timeout",
        "20",
        "--tls",
        "--tls-verify",
        "--tls-ca-path",
        &ca,
        "--auth",
        "PLAIN",
        "--auth-user",
        "alice",
        "--auth-password",
        "alice-pw",
        "--from",
        "alice@example.test",
        "--to",
        "friend@elsewhere.example",
        "--h-Subject",
        "swaks-auth",
        "--body",
        "submitted by swaks",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let (code, out) = swaks(&args);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("TLS started"), "{out}");
    assert!(out.contains("235 2.7.0"), "{out}");
    assert!(out.contains("queued as"), "{out}");
    let got = sink.wait_for(1, Duration::from_secs(30));
    let m = sink_message(&got, "swaks-auth");
    assert_eq!(m["from"], "alice@example.test");
    assert!(
        m["data"].as_str().unwrap().contains("with ESMTPSA"),
        "{m:#}"
    );

    // The same with a wrong password: 535, swaks gives up before MAIL.
    let mut bad = args.clone();
    let i = bad.iter().position(|a| a == "alice-pw").unwrap();
    bad[i] = "wrong".into();
    let (code, out) = swaks(&bad);
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("535 5.7.8"), "{out}");
    assert!(!out.contains("MAIL FROM"), "{out}");
}

#[test]
fn submissions_implicit_tls_with_smtplib() {
    let sink = Sink::start();
    let server = submission_server(&sink, "");
    let v = submit(
        &server,
        server.listener("submissions"),
        &[
            "--mode",
            "ssl",
            "--mech",
            "PLAIN",
            "--user",
            "bob",
            "--password",
            "bob-pw",
            "--sender",
            "bob@example.test",
            "--rcpt",
            "friend@elsewhere.example",
            "--marker",
            "implicit-tls",
        ],
    );
    assert_eq!(v["greeting"]["code"], 220, "{v:#}");
    assert!(v["cipher"].as_str().is_some(), "{v:#}");
    assert!(
        v["features"].get("starttls").is_none(),
        "no STARTTLS inside TLS: {v:#}"
    );
    assert!(
        v["features"]["auth"]
            .as_str()
            .unwrap_or("")
            .contains("PLAIN"),
        "{v:#}"
    );
    assert_eq!(status(&v["auth"]), "235 2.7.0", "{v:#}");
    assert_eq!(v["data"]["code"], 250, "{v:#}");
    let got = sink.wait_for(1, Duration::from_secs(30));
    let m = sink_message(&got, "implicit-tls");
    assert_eq!(m["from"], "bob@example.test");
    assert!(
        m["data"].as_str().unwrap().contains("with ESMTPSA"),
        "{m:#}"
    );

    // Without AUTH the implicit-TLS port refuses MAIL like 587 does.
    let v = submit(
        &server,
        server.listener("submissions"),
        &[
            "--mode",
            "ssl",
            "--sender",
            "bob@example.test",
            "--rcpt",
            "friend@elsewhere.example",
        ],
    );
    assert_eq!(status(&v["mail"]), "530 5.7.0", "{v:#}");
}

#[test]
fn wrong_passwords_get_535_slower_each_time_and_are_counted() {
    let sink = Sink::start();
    let mut server = submission_server(&sink, "");
    // One connection: the throttle is per core, a session stays on one.
    let (mut c, e) = raw_submission(&server);
    assert!(
        e.capability_args("AUTH")
            .is_some_and(|a| a.contains(&"PLAIN".to_owned())),
        "loopback is trusted by default: {e:?}"
    );
    let mut took = Vec::new();
    for _ in 0..3 {
        let t0 = Instant::now();
        let r = c.cmd(&format!("AUTH PLAIN {}", plain("", "alice", "wrong")));
        took.push(t0.elapsed());
        assert_eq!(r.status(), "535 5.7.8", "{}", c.transcript);
    }
    // An unknown user is a failure like any other (and not told apart).
    let t0 = Instant::now();
    let r = c.cmd(&format!("AUTH PLAIN {}", plain("", "mallory", "x")));
    took.push(t0.elapsed());
    assert_eq!(r.status(), "535 5.7.8", "{}", c.transcript);
    eprintln!("failure answer times: {took:?}");
    assert!(took[0] < Duration::from_millis(900), "{took:?}");
    assert!(took[1] >= Duration::from_millis(950), "{took:?}");
    assert!(took[2] >= Duration::from_millis(1000), "{took:?}");
    assert!(took[2] > took[1], "the delay grows: {took:?}");
    assert!(took[3] >= Duration::from_millis(3500), "{took:?}");
    // The session still works, and the right password still does.
    let r = c.cmd(&format!("AUTH PLAIN {}", plain("", "alice", "alice-pw")));
    assert_eq!(r.status(), "235 2.7.0", "{}", c.transcript);
    assert_eq!(c.cmd("MAIL FROM:<alice@example.test>").code, 250);
    c.quit();
    // smtplib sees the same 535 (LOGIN this time).
    let v = submit(
        &server,
        server.listener("submission"),
        &[
            "--mode",
            "starttls",
            "--mech",
            "LOGIN",
            "--user",
            "alice",
            "--password",
            "nope",
            "--sender",
            "alice@example.test",
            "--rcpt",
            "friend@elsewhere.example",
        ],
    );
    assert_eq!(status(&v["auth"]), "535 5.7.8", "{v:#}");
    assert_eq!(status(&v["mail"]), "530 5.7.0", "{v:#}");

    let shutdown = server.terminate();
    let stats = shutdown.stats.expect("a stats line");
    assert_eq!(stats["auth_failures"], 5, "{stats:#}");
    assert!(sink.messages().is_empty());
}

#[test]
fn auth_in_the_clear_is_refused_when_loopback_is_not_trusted() {
    let sink = Sink::start();
    let server = submission_server(&sink, "[auth]\ntrust_loopback = false\n");
    let (mut c, e) = raw_submission(&server);
    assert!(
        !e.has_capability("AUTH"),
        "AUTH not offered in the clear: {e:?}"
    );
    assert!(e.has_capability("STARTTLS"), "{e:?}");
    let r = c.cmd(&format!("AUTH PLAIN {}", plain("", "alice", "alice-pw")));
    assert_eq!(r.status(), "538 5.7.11", "{}", c.transcript);
    let r = c.cmd("AUTH LOGIN");
    assert_eq!(r.status(), "538 5.7.11", "{}", c.transcript);
    let r = c.cmd("MAIL FROM:<alice@example.test>");
    assert_eq!(r.status(), "530 5.7.0", "still not authenticated");
    c.quit();

    // After STARTTLS the same credentials work.
    let v = submit(
        &server,
        server.listener("submission"),
        &[
            "--mode",
            "starttls",
            "--mech",
            "PLAIN",
            "--user",
            "alice",
            "--password",
            "alice-pw",
            "--sender",
            "alice@example.test",
            "--rcpt",
            "friend@elsewhere.example",
            "--marker",
            "after-starttls",
        ],
    );
    assert!(v["features"].get("auth").is_none(), "{v:#}");
    assert!(v["features_tls"].get("auth").is_some(), "{v:#}");
    assert_eq!(status(&v["auth"]), "235 2.7.0", "{v:#}");
    assert_eq!(v["data"]["code"], 250, "{v:#}");
    sink.wait_for(1, Duration::from_secs(30));
}

#[test]
fn authenticated_sender_must_be_the_users_own() {
    let sink = Sink::start();
    let server = submission_server(&sink, "");
    let (mut c, _) = raw_submission(&server);
    // Acting for another user (an authzid naming bob) is refused.
    let r = c.cmd(&format!("AUTH PLAIN {}", plain("bob", "alice", "alice-pw")));
    assert_eq!(r.status(), "535 5.7.8", "{}", c.transcript);
    let r = c.cmd(&format!(
        "AUTH PLAIN {}",
        plain("alice", "alice", "alice-pw")
    ));
    assert_eq!(r.status(), "235 2.7.0", "{}", c.transcript);
    let r = c.cmd("AUTH PLAIN");
    assert_eq!(r.code, 503, "AUTH twice: {}", c.transcript);
    let r = c.cmd("MAIL FROM:<bob@example.test>");
    assert_eq!(r.status(), "553 5.7.1", "{}", c.transcript);
    assert!(
        r.text().contains("not owned by the authenticated user"),
        "{r:?}"
    );
    let r = c.cmd("MAIL FROM:<boss@elsewhere.example>");
    assert_eq!(r.status(), "553 5.7.1", "{}", c.transcript);
    // The null sender is allowed; then the user's own address.
    assert_eq!(c.cmd("MAIL FROM:<>").code, 250, "{}", c.transcript);
    assert_eq!(c.cmd("RSET").code, 250);
    let msg = common::message("esmtpa-local", 300);
    let id = c
        .send_message("alice@example.test", &["bob@example.test"], &msg)
        .unwrap_or_else(|r| panic!("{r:?}\n{}", c.transcript));
    assert!(common::is_queue_id(&id), "{id}");
    c.quit();
    // Delivered to bob's Maildir; AUTH without TLS (trusted loopback) is
    // ESMTPA in the Received header.
    let new = server.mail_dir().join("bob/new");
    let mut stored = String::new();
    wait_until("bob's copy", Duration::from_secs(20), || {
        let Ok(rd) = std::fs::read_dir(&new) else {
            return false;
        };
        for e in rd.flatten() {
            let text =
                String::from_utf8_lossy(&std::fs::read(e.path()).unwrap_or_default()).into_owned();
            if text.contains("esmtpa-local") {
                stored = text;
                return true;
            }
        }
        false
    });
    assert!(stored.contains("with ESMTPA id "), "{stored}");
    assert!(!stored.contains("with ESMTPSA"), "{stored}");

    // With sender_must_match_login = false anyone authenticated may use
    // any sender.
    let lax = submission_server(&sink, "[auth]\nsender_must_match_login = false\n");
    let (mut c, _) = raw_submission(&lax);
    let r = c.cmd(&format!("AUTH PLAIN {}", plain("", "alice", "alice-pw")));
    assert_eq!(r.status(), "235 2.7.0", "{}", c.transcript);
    let r = c.cmd("MAIL FROM:<bob@example.test>");
    assert_eq!(r.code, 250, "{}", c.transcript);
    c.quit();
}
