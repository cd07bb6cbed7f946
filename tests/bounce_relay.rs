//! Bounce relay, as a stranger on the internet would try it (the client
//! is outside `allow_networks`): `<Postmaster>` with no postmaster is
//! refused at RCPT (nothing queued, so no bounce), a configured
//! `[local] postmaster` receives it, DSNs return headers only unless
//! RET=FULL and never more than `[delivery] bounce_size_limit`, and
//! address literals are refused from outside while a trusted client's
//! literal goes through the smarthost like any domain.

#[path = "common/capture.rs"]
mod capture;
mod common;

use std::time::Duration;

use capture::{wait_until, Sink};
use common::{contains, Client, TestServer, Tweaks};

const DELIVERY_TIMEOUT: Duration = Duration::from_secs(30);

/// Sends one transaction command by command; returns each reply's status.
fn transaction(client: &mut Client, mail: &str, rcpts: &[&str], msg: &[u8]) -> Vec<String> {
    let mut statuses = vec![client.cmd(mail).status()];
    for rcpt in rcpts {
        statuses.push(client.cmd(&format!("RCPT TO:<{rcpt}>")).status());
    }
    let r = client.cmd("DATA");
    statuses.push(r.status());
    if r.code == 354 {
        client.send(&common::dot_stuff(msg));
        statuses.push(client.read_reply().status());
    } else {
        let _ = client.cmd("RSET");
    }
    statuses
}

/// A stranger's message that would be bounced, marked in its body.
fn strangers_message(marker: &str, body_len: usize) -> Vec<u8> {
    common::message(marker, body_len)
}

#[test]
fn postmaster_that_reaches_nobody_is_refused_at_rcpt() {
    // A mailbox tier with a user but no postmaster alias, user or setting.
    let server = TestServer::start(Tweaks::default().no_relay().user("alice", "pw"));
    let mut c = Client::connect(server.smtp);
    assert_eq!(c.read_reply().code, 220);
    c.ehlo("stranger.example");
    let msg = strangers_message("SPAMBODY", 2000);
    let statuses = transaction(
        &mut c,
        "MAIL FROM:<victim@remote.example> RET=FULL",
        &[
            "Postmaster",
            "postmaster@example.test",
            "PostMaster@EXAMPLE.test",
        ],
        &msg,
    );
    assert_eq!(
        statuses,
        [
            "250 2.1.0",
            "550 5.1.1",
            "550 5.1.1",
            "550 5.1.1",
            "554 5.5.1"
        ],
        "{statuses:?}"
    );
    c.quit();
    assert!(server.queue_list().is_empty(), "nothing queued, so no DSN");

    // Without a mailbox tier at all the bare <Postmaster> reaches nobody
    // either.
    let relay_only = TestServer::start(Tweaks::default().no_relay());
    let mut c = Client::connect(relay_only.smtp);
    assert_eq!(c.read_reply().code, 220);
    c.ehlo("stranger.example");
    let statuses = transaction(
        &mut c,
        "MAIL FROM:<victim@remote.example> RET=FULL",
        &["Postmaster"],
        &msg,
    );
    assert_eq!(statuses, ["250 2.1.0", "550 5.1.1", "554 5.5.1"]);
    c.quit();
    assert!(relay_only.queue_list().is_empty());
}

#[test]
fn configured_postmaster_receives_postmaster_mail() {
    let server = TestServer::start(
        Tweaks::default()
            .no_relay()
            .user("alice", "pw")
            .user("bob", "pw")
            .local("postmaster", "\"bob\""),
    );
    let mut c = Client::connect(server.smtp);
    assert_eq!(c.read_reply().code, 220);
    c.ehlo("stranger.example");
    let msg = strangers_message("FORTHEPOSTMASTER", 500);
    let statuses = transaction(
        &mut c,
        "MAIL FROM:<someone@remote.example>",
        &["Postmaster", "postmaster@example.test"],
        &msg,
    );
    assert_eq!(
        statuses,
        ["250 2.1.0", "250 2.1.5", "250 2.1.5", "354", "250 2.0.0"]
    );
    c.quit();
    let new = server.mail_dir().join("bob").join("new");
    wait_until("two copies in bob's Maildir", DELIVERY_TIMEOUT, || {
        std::fs::read_dir(&new).map_or(0, |d| d.count()) == 2
    });
    wait_until("an empty queue", DELIVERY_TIMEOUT, || {
        server.queue_list().is_empty()
    });
}

#[test]
fn dsns_return_headers_unless_ret_full_and_never_more_than_the_limit() {
    // The sink refuses one recipient for good and receives the DSNs.
    let sink = Sink::start_with(&["--reject", "nobody@far.example"]);
    let server = TestServer::start(Tweaks::default().extra(&format!(
        "{}{}\n[delivery]\nbounce_size_limit = 20000\n",
        sink.route("far.example"),
        sink.route("sender.example")
    )));
    let mut c = Client::connect(server.smtp);
    assert_eq!(c.read_reply().code, 220);
    c.ehlo("client.example");
    let cases = [
        // (marker, body size, RET, whole message returned)
        ("SMALLFULL", 3_000, " RET=FULL", true),
        ("BIGFULL", 200_000, " RET=FULL", false),
        ("SMALLNORET", 3_000, "", false),
        ("SMALLHDRS", 3_000, " RET=HDRS", false),
    ];
    for (marker, size, ret, _) in cases {
        let statuses = transaction(
            &mut c,
            &format!("MAIL FROM:<{marker}@sender.example>{ret}"),
            &["nobody@far.example"],
            &common::message(marker, size),
        );
        assert_eq!(statuses.last().map(String::as_str), Some("250 2.0.0"));
    }
    c.quit();
    let dsns = sink.wait_for(cases.len(), DELIVERY_TIMEOUT);
    for (marker, _, _, whole) in cases {
        let dsn = dsns
            .iter()
            .find(|m| m["to"][0] == format!("{marker}@sender.example"))
            .unwrap_or_else(|| panic!("no DSN for {marker}: {dsns:#?}"));
        assert_eq!(dsn["from"], "");
        let data = dsn["data"].as_str().expect("data").as_bytes();
        assert!(
            data.len() < 20_000 + 4_000,
            "{marker}: DSN of {} bytes",
            data.len()
        );
        let subject = format!("Subject: {marker}");
        assert!(contains(data, subject.as_bytes()), "{marker}: headers kept");
        let body_line = format!("{marker} line 000000");
        assert_eq!(
            contains(data, body_line.as_bytes()),
            whole,
            "{marker}: body returned?"
        );
        let part = if whole {
            &b"Content-Type: message/rfc822"[..]
        } else {
            &b"Content-Type: text/rfc822-headers"[..]
        };
        assert!(contains(data, part), "{marker}");
    }
}

#[test]
fn address_literals_from_outside_are_refused() {
    let server = TestServer::start(Tweaks::default().no_relay().user("alice", "pw"));
    let mut c = Client::connect(server.smtp);
    assert_eq!(c.read_reply().code, 220);
    c.ehlo("stranger.example");
    for from in ["x@[127.0.0.9]", "x@[IPv6:::1]"] {
        let r = c.cmd(&format!("MAIL FROM:<{from}>"));
        assert_eq!(r.status(), "550 5.7.1", "{from}: {}", r.text());
    }
    assert_eq!(c.cmd("MAIL FROM:<x@remote.example>").code, 250);
    assert_eq!(c.cmd("RCPT TO:<alice@example.test>").code, 250);
    let r = c.cmd("RCPT TO:<x@[127.0.0.9]>");
    assert_eq!(r.status(), "550 5.7.1", "{}", r.text());
    c.quit();
    assert!(server.queue_list().is_empty());

    // `[relay] allow_address_literals` lets them in (relay rules still
    // apply to recipients).
    let open = TestServer::start(
        Tweaks::default()
            .no_relay()
            .user("alice", "pw")
            .relay("allow_address_literals", true),
    );
    let mut c = Client::connect(open.smtp);
    assert_eq!(c.read_reply().code, 220);
    c.ehlo("stranger.example");
    assert_eq!(c.cmd("MAIL FROM:<x@[192.0.2.1]>").code, 250);
    assert_eq!(c.cmd("RCPT TO:<x@[127.0.0.9]>").status(), "554 5.7.1");
    c.quit();
}

#[test]
fn a_literal_goes_through_the_smarthost() {
    let sink = Sink::start();
    // The client is in allow_networks (loopback), so it may relay.
    let server =
        TestServer::start(Tweaks::default().relay("smarthost", format!("\"{}\"", sink.addr)));
    let mut c = Client::connect(server.smtp);
    assert_eq!(c.read_reply().code, 220);
    c.ehlo("client.example");
    let msg = common::message("LITERAL", 200);
    c.send_message("a@client.example", &["x@[127.0.0.9]"], &msg)
        .expect("accepted");
    c.quit();
    let got = sink.wait_for(1, DELIVERY_TIMEOUT);
    assert_eq!(got[0]["to"][0], "x@[127.0.0.9]");
    assert!(contains(
        got[0]["data"].as_str().unwrap().as_bytes(),
        b"LITERAL line"
    ));
}
