//! Success DSNs as RFC 3461 requires them, over real sockets: a recipient
//! that asked NOTIFY=SUCCESS gets a "delivered" DSN when its mail is put
//! in a local mailbox (5.2.3 (a)) and a "relayed" DSN when the next hop
//! does not offer DSN (5.2.2 (b)); when the next hop offers DSN the
//! request travels on (NOTIFY and ORCPT on its RCPT) and spate sends none
//! (5.2.1); recipients without SUCCESS get nothing (5.2.2 (e), 5.2.3 (b),
//! (c)). With `[delivery] delay_warning_time`, a message still retried
//! past it gets one "delayed" DSN if its NOTIFY asks for DELAY (no NOTIFY
//! does), and a `kill -9` and restart do not send a second. A failure's
//! bounce class is in its DSN (`X-Spate-Class`), its log line and the
//! metrics. DSNs reach the sender's own receiver (a capture sink).

#[path = "common/capture.rs"]
mod capture;
mod common;

use std::time::Duration;

use capture::Sink;
use common::{Client, TestServer, Tweaks};

const WAIT: Duration = Duration::from_secs(30);

/// Sends one message command by command (RCPT lines as given, with their
/// parameters); panics unless it is accepted.
fn send(server: &TestServer, rcpts: &[&str], marker: &str) {
    let mut c = Client::connect(server.smtp);
    assert_eq!(c.read_reply().code, 220);
    c.ehlo("client.test");
    let r = c.cmd("MAIL FROM:<sender@client.test> ENVID=env-1");
    assert_eq!(r.code, 250, "{r:?}");
    for rcpt in rcpts {
        let r = c.cmd(&format!("RCPT TO:{rcpt}"));
        assert_eq!(r.code, 250, "{rcpt}: {r:?}");
    }
    assert_eq!(c.cmd("DATA").code, 354);
    c.send(&common::dot_stuff(&common::message(marker, 200)));
    let r = c.read_reply();
    assert_eq!(r.code, 250, "{r:?}");
    c.quit();
}

/// A server relaying `far.example` to `receiver` and the senders' domain
/// (`client.test`, where DSNs go) to `senders`, with `tweaks` besides.
fn relay_server(receiver: &Sink, senders: &Sink, tweaks: Tweaks) -> TestServer {
    TestServer::start(
        tweaks
            .extra(&receiver.route("far.example"))
            .extra(&senders.route("client.test")),
    )
}

/// The DSN's `Name: value` fields (the per-recipient blocks merged: each
/// test reports one recipient).
fn field(dsn: &str, name: &str) -> Option<String> {
    dsn.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}: ")))
        .map(str::to_owned)
}

/// Nothing more than `n` messages reaches `sink` within a few seconds.
fn no_more_than(sink: &Sink, n: usize) {
    std::thread::sleep(Duration::from_secs(3));
    let got = sink.messages();
    assert!(got.len() <= n, "unexpected: {got:#?}");
}

#[test]
fn a_local_delivery_reports_delivered_to_those_who_asked() {
    let senders = Sink::start();
    let server = TestServer::start(
        Tweaks::default()
            .user("alice", "pw")
            .user("carol", "pw")
            .extra(&senders.route("client.test")),
    );
    send(
        &server,
        &[
            "<alice@example.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;Alice@example.test",
            "<carol@example.test>",
        ],
        "local-success",
    );
    let dsns = senders.wait_for(1, WAIT);
    no_more_than(&senders, 1);
    let dsn = &dsns[0];
    assert_eq!(dsn["from"], "", "a DSN comes from the null sender");
    assert_eq!(dsn["to"][0], "sender@client.test");
    let text = dsn["data"].as_str().unwrap();
    assert!(
        text.contains("Subject: Successful Mail Delivery Report"),
        "{text}"
    );
    assert_eq!(
        field(text, "Action").as_deref(),
        Some("delivered"),
        "{text}"
    );
    assert_eq!(field(text, "Status").as_deref(), Some("2.0.0"));
    assert_eq!(
        field(text, "Final-Recipient").as_deref(),
        Some("rfc822; alice@example.test")
    );
    assert_eq!(
        field(text, "Original-Recipient").as_deref(),
        Some("rfc822;Alice@example.test")
    );
    assert_eq!(
        field(text, "Original-Envelope-Id").as_deref(),
        Some("env-1")
    );
    assert!(field(text, "Remote-MTA").is_none(), "no remote MTA: {text}");
    assert!(!text.contains("carol@"), "carol did not ask: {text}");
    assert!(!text.contains("local-success\r\n\r\n"), "headers only");
}

#[test]
fn a_next_hop_without_dsn_makes_spate_report_relayed() {
    let receiver = Sink::start();
    let senders = Sink::start();
    let server = relay_server(&receiver, &senders, Tweaks::default());
    send(
        &server,
        &[
            "<bob@far.example> NOTIFY=SUCCESS",
            "<dan@far.example> NOTIFY=FAILURE,DELAY",
            "<eve@far.example>",
        ],
        "relayed",
    );
    receiver.wait_for(1, WAIT);
    let dsns = senders.wait_for(1, WAIT);
    no_more_than(&senders, 1);
    let text = dsns[0]["data"].as_str().unwrap();
    assert_eq!(field(text, "Action").as_deref(), Some("relayed"), "{text}");
    assert_eq!(
        field(text, "Final-Recipient").as_deref(),
        Some("rfc822; bob@far.example")
    );
    let remote = field(text, "Remote-MTA").expect("a remote MTA");
    assert_eq!(
        remote,
        format!("dns; {}", receiver.addr.ip()),
        "the host, not host[ip]:port"
    );
    assert!(!text.contains("dan@") && !text.contains("eve@"), "{text}");
    // The receiver offers no DSN: nothing of it reached the wire.
    let commands = receiver.messages()[0]["commands"].to_string();
    assert!(
        !commands.contains("NOTIFY") && !commands.contains("ENVID"),
        "{commands}"
    );
}

#[test]
fn a_next_hop_with_dsn_carries_the_request_on_and_spate_sends_none() {
    let receiver = Sink::start_with(&["--dsn"]);
    let senders = Sink::start();
    let server = relay_server(&receiver, &senders, Tweaks::default());
    send(
        &server,
        &["<bob@far.example> NOTIFY=SUCCESS ORCPT=rfc822;bob@far.example"],
        "passed-on",
    );
    let got = receiver.wait_for(1, WAIT);
    let commands: Vec<String> = got[0]["commands"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_owned())
        .collect();
    assert!(commands[0].contains("ENVID=env-1"), "{commands:?}");
    assert!(
        commands[1].contains("NOTIFY=SUCCESS")
            && commands[1].contains("ORCPT=rfc822;bob@far.example"),
        "{commands:?}"
    );
    no_more_than(&senders, 0);
}

#[test]
fn a_message_retried_past_the_warning_time_gets_one_delayed_dsn() {
    let receiver = Sink::start_with(&["--tempfail", "100000"]);
    let senders = Sink::start();
    let mut server = relay_server(
        &receiver,
        &senders,
        Tweaks::default().cores(1).extra(
            "[delivery]\nminimal_backoff = \"1s\"\nmaximal_backoff = \"1s\"\n\
                 delay_warning_time = \"2s\"\n",
        ),
    );
    send(&server, &["<ann@far.example>"], "delay-default");
    send(
        &server,
        &["<bea@far.example> NOTIFY=FAILURE"],
        "delay-failure",
    );
    send(&server, &["<cid@far.example> NOTIFY=NEVER"], "delay-never");
    let dsns = senders.wait_for(1, WAIT);
    let text = dsns[0]["data"].as_str().unwrap().to_owned();
    assert!(
        text.contains("Subject: Delayed Mail (still being retried)"),
        "{text}"
    );
    assert_eq!(field(&text, "Action").as_deref(), Some("delayed"), "{text}");
    assert_eq!(field(&text, "Status").as_deref(), Some("4.3.0"), "{text}");
    assert_eq!(
        field(&text, "Final-Recipient").as_deref(),
        Some("rfc822; ann@far.example")
    );
    assert!(
        field(&text, "Diagnostic-Code").is_some_and(|d| d.contains("451")),
        "{text}"
    );
    // RFC 3464 2.3.9: when spate gives up (received + 5 days, the default).
    assert!(field(&text, "Will-Retry-Until").is_some(), "{text}");
    // More retries, a crash and a restart: still the one notice.
    std::thread::sleep(Duration::from_secs(3));
    server.kill9();
    server.restart();
    std::thread::sleep(Duration::from_secs(4));
    let all = senders.messages();
    assert_eq!(all.len(), 1, "one notice per message: {all:#?}");
    assert_eq!(server.queue_list().len(), 3, "all still being retried");
}

#[test]
fn a_failure_carries_its_bounce_class_in_the_dsn_the_log_and_the_metrics() {
    let receiver = Sink::start_with(&["--reject", "gone@far.example"]);
    let senders = Sink::start();
    let server = relay_server(
        &receiver,
        &senders,
        Tweaks::default().extra("[metrics]\naddress = \"127.0.0.1:0\"\n"),
    );
    send(&server, &["<gone@far.example>"], "classed");
    let dsns = senders.wait_for(1, WAIT);
    let text = dsns[0]["data"].as_str().unwrap();
    assert_eq!(field(text, "Action").as_deref(), Some("failed"), "{text}");
    assert_eq!(
        field(text, "X-Spate-Class").as_deref(),
        Some("invalid-recipient"),
        "{text}"
    );
    let bounced = server.stderr_lines_with("bounced");
    assert!(
        bounced
            .iter()
            .any(|l| l.contains("class=invalid-recipient") && l.contains("gone@far.example")),
        "{bounced:#?}"
    );
    let metrics = common::scrape_metrics(server.listener("metrics"));
    let sample = "spate_delivery_failures_total{class=\"invalid-recipient\",outcome=\"bounced\"}";
    assert_eq!(metrics.get(sample), Some(&1.0), "{metrics:#?}");
}
