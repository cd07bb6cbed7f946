//! A client that greets with plain HELO negotiated no service extension,
//! so MAIL and RCPT parameters (SIZE, BODY, SMTPUTF8, RET, ENVID, NOTIFY,
//! ORCPT, unknown ones) are refused with 555 5.5.4 (RFC 5321 4.1.1.11,
//! 4.1.1.2, 4.1.1.3); the same commands after EHLO are accepted.

mod common;

use common::{Client, TestServer, Tweaks};

#[test]
fn parameters_after_helo_are_refused() {
    let server = TestServer::start(Tweaks::default().smtp("max_errors", 50));
    let mut c = Client::connect(server.smtp);
    assert_eq!(c.read_reply().code, 220);
    assert_eq!(c.cmd("HELO client.example").code, 250);
    for params in [
        "SIZE=100",
        "BODY=8BITMIME",
        "SMTPUTF8",
        "RET=FULL",
        "ENVID=x",
        "X-UNKNOWN=1",
    ] {
        let r = c.cmd(&format!("MAIL FROM:<a@client.example> {params}"));
        assert_eq!(r.status(), "555 5.5.4", "{params}: {}", r.text());
    }
    assert_eq!(c.cmd("MAIL FROM:<a@client.example>").code, 250);
    for params in ["NOTIFY=NEVER", "ORCPT=rfc822;b@example.test"] {
        let r = c.cmd(&format!("RCPT TO:<b@example.test> {params}"));
        assert_eq!(r.status(), "555 5.5.4", "{params}: {}", r.text());
    }
    assert_eq!(c.cmd("RCPT TO:<b@example.test>").code, 250);
    assert_eq!(c.cmd("RSET").code, 250);

    // After EHLO the same parameters are fine.
    c.ehlo("client.example");
    let r = c.cmd("MAIL FROM:<a@client.example> SIZE=100 BODY=8BITMIME RET=FULL");
    assert_eq!(r.code, 250, "{}", r.text());
    let r = c.cmd("RCPT TO:<b@example.test> NOTIFY=NEVER");
    assert_eq!(r.code, 250, "{}", r.text());
    c.quit();
    assert!(server.queue_list().is_empty());
}
