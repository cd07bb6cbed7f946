//! STARTTLS (RFC 3207) with an rcgen test certificate: smtplib upgrades with
//! a context that trusts only the test CA (so the certificate and its name
//! are verified), EHLO after TLS no longer offers STARTTLS, mail flows over
//! TLS, a second STARTTLS is refused, plaintext pipelined behind STARTTLS
//! is never executed inside TLS, and STARTTLS is neither offered nor
//! accepted without a certificate.

mod common;

use common::{python, TestServer, Tweaks};
use serde_json::Value;

fn run(scenario: &str, server: &TestServer) -> Value {
    let mut args = vec![
        scenario.to_owned(),
        server.smtp.ip().to_string(),
        server.smtp.port().to_string(),
    ];
    if let Some(t) = &server.tls {
        args.push("--cafile".into());
        args.push(t.ca.display().to_string());
    }
    python("smtp_scenarios.py", &args)
}

fn code(v: &Value) -> i64 {
    v["code"].as_i64().unwrap_or(-1)
}

#[test]
fn starttls_with_smtplib() {
    let server = TestServer::start(Tweaks::default().tls());
    let v = run("starttls", &server);
    assert!(v["features_before"].get("starttls").is_some(), "{v}");
    assert_eq!(code(&v["starttls"]), 220, "{v}");
    assert!(
        v["starttls"]["text"].as_str().unwrap().starts_with("2.0.0"),
        "{v}"
    );
    assert!(
        v["features_after"].get("starttls").is_none(),
        "STARTTLS offered inside TLS: {v}"
    );
    for ext in [
        "pipelining",
        "size",
        "chunking",
        "8bitmime",
        "enhancedstatuscodes",
    ] {
        assert!(
            v["features_after"].get(ext).is_some(),
            "{ext} missing after TLS: {v}"
        );
    }
    let tls = v["tls_version"].as_str().unwrap();
    assert!(tls == "TLSv1.3" || tls == "TLSv1.2", "{v}");
    assert_eq!(code(&v["data"]), 250, "{v}");
    let text = v["data"]["text"].as_str().unwrap();
    let id = text.rsplit(' ').next().unwrap();
    let sa = v["starttls_again"]["text"].as_str().unwrap_or("");
    // RFC 3207 names no code for STARTTLS inside TLS; a permanent
    // "not now / not here" refusal (502, 503 or 554 with 5.5.1) is right.
    assert!(
        matches!(code(&v["starttls_again"]), 502 | 503 | 554),
        "second STARTTLS: {v}"
    );
    assert!(sa.starts_with("5.5.1"), "{v}");
    assert_eq!(code(&v["quit"]), 221, "{v}");
    let q = server.queue_list();
    assert_eq!(q.len(), 1);
    assert_eq!(q[0].id, id);
}

#[test]
fn plaintext_injected_after_starttls_is_not_executed() {
    let server = TestServer::start(Tweaks::default().tls());
    let v = run("starttls_injection", &server);
    assert_eq!(code(&v["starttls"]), 220, "{v}");
    if v["handshake"] == "ok" && v.get("closed_after_tls").is_none() {
        let first = &v["first_reply_after_tls"];
        assert_eq!(code(first), 250, "{v}");
        assert!(
            first["text"]
                .as_str()
                .unwrap()
                .to_ascii_uppercase()
                .contains("PIPELINING"),
            "the first reply inside TLS must be EHLO's, not one to injected plaintext: {v}"
        );
        assert_eq!(code(&v["mail"]), 250, "an injected MAIL was executed: {v}");
    }
    // Either way nothing was queued and the server is healthy.
    assert!(server.queue_list().is_empty());
    let mut c = server.session();
    c.quit();
}

#[test]
fn no_starttls_without_certificate() {
    let server = TestServer::start(Tweaks::default());
    let v = run("no_starttls", &server);
    assert!(v["features"].get("starttls").is_none(), "{v}");
    let c = code(&v["starttls"]);
    assert!(
        (500..600).contains(&c) || c == 454,
        "STARTTLS without certificate: {v}"
    );
    assert_eq!(code(&v["noop"]), 250, "{v}");
}

/// A raw client that never finishes the handshake does not block others.
#[test]
fn stalled_handshake_does_not_block_other_sessions() {
    let server = TestServer::start(Tweaks::default().tls().smtp_str("command_timeout", "3s"));
    let mut stalled = server.session();
    assert_eq!(stalled.cmd("STARTTLS").code, 220);
    // Send half a ClientHello and stop.
    stalled.send(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01]);
    let v = run("starttls", &server);
    assert_eq!(code(&v["data"]), 250, "{v}");
    drop(stalled);
}
