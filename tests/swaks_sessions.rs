//! swaks (the "Swiss Army Knife for SMTP") against spate: a plain message,
//! PIPELINING, STARTTLS with the test CA, relay refusal, SIZE refusal after
//! the data, too many recipients, an 8-bit body. swaks exit codes: 0 ok,
//! 23 MAIL refused, 24 no RCPT accepted, 25 DATA refused, 26 message
//! refused after the data.

mod common;

use common::{swaks, TestServer, Tweaks, MAX_TRACE_HEADER};

fn base_args(server: &TestServer) -> Vec<String> {
    [
        "--server",
        &server.smtp.ip().to_string(),
        "--port",
        &server.smtp.port().to_string(),
        "--helo",
        "swaks.test",
        "--timeout",
        "20",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn args(server: &TestServer, more: &[&str]) -> Vec<String> {
    let mut a = base_args(server);
    a.extend(more.iter().map(|s| s.to_string()));
    a
}

/// Queue ids in swaks' transcript (`<~ 250 2.0.0 Ok: queued as ID`).
fn queued_ids(transcript: &str) -> Vec<String> {
    transcript
        .lines()
        .filter_map(|l| {
            let i = l.find("queued as ")?;
            Some(
                l[i + 10..]
                    .split_whitespace()
                    .next()?
                    .trim_matches(['<', '>'])
                    .to_owned(),
            )
        })
        .collect()
}

#[test]
fn swaks_plain_message() {
    let server = TestServer::start(Tweaks::default());
    let (code, out) = swaks(&args(
        &server,
        &[
            "--from",
            "alice@example.test",
            "--to",
            "bob@example.test",
            "--h-Subject",
            "swaks plain",
            "--body",
            "hello from swaks",
        ],
    ));
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("<-  250 2.0.0 Ok: queued as "), "{out}");
    let ids = queued_ids(&out);
    assert_eq!(ids.len(), 1, "{out}");
    let q = server.queue_list();
    assert_eq!(q.len(), 1);
    assert_eq!(q[0].id, ids[0]);
    assert_eq!(q[0].from, "alice@example.test");
    assert_eq!(q[0].to, vec!["bob@example.test"]);
    assert!(
        q[0].size > 100 && q[0].size < 2000 + MAX_TRACE_HEADER,
        "{:?}",
        q[0]
    );
}

#[test]
fn swaks_pipelining() {
    let server = TestServer::start(Tweaks::default());
    let (code, out) = swaks(&args(
        &server,
        &[
            "--pipeline",
            "--from",
            "pipe@example.test",
            "--to",
            "a@example.test,b@example.test,c@relay.example",
            "--body",
            "pipelined",
        ],
    ));
    assert_eq!(code, 0, "{out}");
    let ids = queued_ids(&out);
    assert_eq!(ids.len(), 1, "{out}");
    let q = server.queue_list();
    assert_eq!(q.len(), 1);
    assert_eq!(
        q[0].to,
        vec!["a@example.test", "b@example.test", "c@relay.example"]
    );
}

#[test]
fn swaks_starttls() {
    let server = TestServer::start(Tweaks::default().tls());
    let ca = server.tls.as_ref().unwrap().ca.display().to_string();
    let (code, out) = swaks(&args(
        &server,
        &[
            "--tls",
            "--tls-verify",
            "--tls-ca-path",
            &ca,
            "--from",
            "tls@example.test",
            "--to",
            "bob@example.test",
            "--body",
            "over TLS",
        ],
    ));
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("STARTTLS"), "{out}");
    assert!(out.contains("TLS started"), "{out}");
    let ids = queued_ids(&out);
    assert_eq!(ids.len(), 1, "{out}");
    assert_eq!(server.queue_list()[0].id, ids[0]);
}

#[test]
fn swaks_relay_refused() {
    let server = TestServer::start(Tweaks::default().no_relay());
    let (code, out) = swaks(&args(
        &server,
        &[
            "--from",
            "spam@example.test",
            "--to",
            "victim@relay.example",
        ],
    ));
    assert_eq!(code, 24, "{out}");
    assert!(out.contains("554 5.7.1"), "{out}");
    assert!(server.queue_list().is_empty());
    // The local domain is still accepted from the same client.
    let (code, out) = swaks(&args(
        &server,
        &["--from", "x@elsewhere.example", "--to", "bob@example.test"],
    ));
    assert_eq!(code, 0, "{out}");
    assert_eq!(server.queue_list().len(), 1);
}

#[test]
fn swaks_message_too_big() {
    let server = TestServer::start(Tweaks::default().smtp("max_message_size", 10_000));
    let body = server.dir.path().join("body.txt");
    let text: String = (0..400)
        .map(|i| format!("line {i:04} of a body that is far too big for the limit\n"))
        .collect();
    std::fs::write(&body, text).unwrap();
    let (code, out) = swaks(&args(
        &server,
        &[
            "--from",
            "big@example.test",
            "--to",
            "bob@example.test",
            "--body",
            &format!("@{}", body.display()),
        ],
    ));
    assert_eq!(code, 26, "{out}");
    assert!(out.contains("552 5.3.4"), "{out}");
    assert!(server.queue_list().is_empty());
}

#[test]
fn swaks_too_many_recipients() {
    let server = TestServer::start(Tweaks::default().smtp("max_recipients", 3));
    let to: Vec<String> = (0..6).map(|i| format!("r{i}@example.test")).collect();
    let (_code, out) = swaks(&args(
        &server,
        &[
            "--from",
            "many@example.test",
            "--to",
            &to.join(","),
            "--body",
            "many",
        ],
    ));
    assert_eq!(out.matches("452 4.5.3").count(), 3, "{out}");
    // swaks goes on with the accepted recipients.
    let q = server.queue_list();
    if let Some(m) = q.first() {
        assert_eq!(m.to, &to[..3], "{out}");
    } else {
        assert!(out.contains("quit") || out.contains("QUIT"), "{out}");
    }
}

#[test]
fn swaks_eight_bit_body_and_dots() {
    let server = TestServer::start(Tweaks::default());
    let body = server.dir.path().join("body8.txt");
    std::fs::write(&body, "Grüße aus Köln\n.\n..two\n.single dot line\nend\n").unwrap();
    let (code, out) = swaks(&args(
        &server,
        &[
            "--from",
            "8bit@example.test",
            "--to",
            "bob@example.test",
            "--body",
            &format!("@{}", body.display()),
        ],
    ));
    assert_eq!(code, 0, "{out}");
    assert_eq!(queued_ids(&out).len(), 1, "{out}");
    let q = server.queue_list();
    assert_eq!(
        q.len(),
        1,
        "a dot line inside the body must not end the message: {out}"
    );
}
