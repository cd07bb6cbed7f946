//! The classic open-relay and bounce-relay tricks, sent by a stranger (a
//! client outside `allow_networks`, not authenticated): the percent hack,
//! source routes, quoted local parts with `@`, bang paths, trailing dots,
//! address literals, case and IDN variants of the local domain, and a
//! `<Postmaster>` bounce attempt. Every non-local domain and the senders'
//! domain route to a capture sink, so anything spate relayed, forwarded
//! or bounced would land there: the test checks that the sink gets
//! nothing, the queue drains, and only the local user's Maildir fills.

#[path = "common/capture.rs"]
mod capture;
mod common;

use std::time::Duration;

use capture::{wait_until, Sink};
use common::{Client, TestServer, Tweaks};

const DELIVERY_TIMEOUT: Duration = Duration::from_secs(30);

/// Recipients a stranger may use: each ends in alice's Maildir.
const LOCAL: &[&str] = &[
    "<alice@example.test>",
    "<ALICE@EXAMPLE.TEST>",
    "<alice@example.test.>",
    "<Postmaster>",
    "<postmaster@Example.Test>",
];

/// Recipients that must be refused (any 5xx) at RCPT.
const REFUSED: &[&str] = &[
    // the percent hack
    "<alice%other.example@example.test>",
    "<victim%other.example@example.test>",
    "<\"victim%other.example\"@example.test>",
    // source routes (RFC 5321 4.1.1.3: the route is ignored, the mailbox is not ours)
    "<@example.test:victim@other.example>",
    "<@example.test,@mx.example.test:victim@other.example>",
    // quoted local parts with @
    "<\"victim@other.example\"@example.test>",
    "<\"victim@other.example\">",
    // bang paths
    "<other.example!victim@example.test>",
    "<other.example!victim>",
    // trailing dots and near-miss domains
    "<victim@other.example.>",
    "<alice@example.test..>",
    "<alice@sub.example.test>",
    "<alice@example.test.other.example>",
    "<alice@example.testx>",
    // address literals
    "<victim@[127.0.0.1]>",
    "<victim@[127.0.0.9]>",
    "<victim@[IPv6:::1]>",
    "<alice@[127.0.0.1]>",
    // IDN variants of the local domain (no SMTPUTF8: 553; A-label: not ours)
    "<alice@exämple.test>",
    "<alice@xn--exmple-cua.test>",
    // unknown local users, other domains' postmasters, plain relaying
    "<nobody@example.test>",
    "<postmaster@other.example>",
    "<victim@other.example>",
    // malformed
    "<victim@other.example@example.test>",
    "victim@other.example",
    "<>",
];

#[test]
fn nothing_leaves_for_a_stranger() {
    let sink = Sink::start();
    let server = TestServer::start(
        Tweaks::default()
            .no_relay()
            .user("alice", "pw")
            .aliases("postmaster: alice\n")
            .smtp("max_errors", 1000)
            .relay("smarthost", format!("\"{}\"", sink.addr)),
    );
    let msg = common::message("STRANGER", 300);
    let mut c = Client::connect(server.smtp);
    assert_eq!(c.read_reply().code, 220);
    c.ehlo("stranger.example");
    let mut accepted = 0;
    for rcpt in LOCAL.iter().chain(REFUSED) {
        let expected_ok = LOCAL.contains(rcpt);
        let r = c.cmd("MAIL FROM:<victim@remote.example> RET=FULL");
        assert_eq!(r.code, 250, "{}", r.text());
        let r = c.cmd(&format!("RCPT TO:{rcpt}"));
        if expected_ok {
            assert_eq!(r.code, 250, "{rcpt}: {}", r.text());
            assert_eq!(c.cmd("DATA").code, 354);
            c.send(&common::dot_stuff(&msg));
            assert_eq!(c.read_reply().code, 250, "{rcpt}");
            accepted += 1;
        } else {
            assert!(
                r.code >= 500,
                "{rcpt} must be refused at RCPT, got {} {}",
                r.code,
                r.text()
            );
            let r = c.cmd("DATA");
            assert!(r.code >= 500, "{rcpt}: DATA got {}", r.code);
            assert_eq!(c.cmd("RSET").code, 250);
        }
    }
    c.quit();

    let new = server.mail_dir().join("alice").join("new");
    wait_until(
        "the local copies in alice's Maildir",
        DELIVERY_TIMEOUT,
        || std::fs::read_dir(&new).map_or(0, |d| d.count()) == accepted,
    );
    wait_until("an empty queue", DELIVERY_TIMEOUT, || {
        server.queue_list().is_empty()
    });
    // Anything relayed, forwarded or bounced would have gone to the sink
    // (the smarthost); give a stray delivery a moment to arrive.
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        sink.messages().is_empty(),
        "mail left for a stranger: {:#?}",
        sink.messages()
    );
}
