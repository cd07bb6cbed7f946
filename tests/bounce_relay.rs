//! Bounce relay, as a stranger on the internet would try it: DSNs return
//! headers only unless RET=FULL and never more than
//! `[delivery] bounce_size_limit`, so a bounce cannot carry a stranger's
//! message back to a forged sender.

#[path = "common/capture.rs"]
mod capture;
mod common;

use std::time::Duration;

use capture::Sink;
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
