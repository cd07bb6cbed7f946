//! The SMTP core in LMTP mode (RFC 2033), without sockets: LHLO, EHLO and
//! HELO refused, local recipients only, and one reply per accepted
//! recipient after the message, in RCPT order.

use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::policy::{LocalPolicy, LocalRecipient};
use super::session::{Event, Message, PeerInfo, RecipientDelivery, ServerConfig, ServerSession};

fn lmtp() -> ServerConfig {
    ServerConfig {
        hostname: "mx.test".to_owned(),
        max_message_size: 10_000,
        max_errors: 10,
        max_hops: 3,
        local_domains: vec!["local.test".to_owned()],
        lmtp: true,
        ..ServerConfig::default()
    }
}

fn peer() -> PeerInfo {
    PeerInfo {
        addr: SocketAddr::from(([127, 0, 0, 1], 40000)),
        may_relay: false,
        tls: false,
    }
}

fn wall() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_700_000_000)
}

/// alice and bob exist; full's mailbox is full already at RCPT time.
#[derive(Debug)]
struct Users;

impl LocalPolicy for Users {
    fn recipient(&self, address: &str, _declared_size: Option<u64>) -> LocalRecipient {
        match address {
            "alice@local.test" | "bob@local.test" | "Postmaster" => LocalRecipient::Accept,
            "full@local.test" => LocalRecipient::MailboxFull { permanent: false },
            _ => LocalRecipient::Unknown,
        }
    }

    /// bob's quota is small: the SMTP mode refuses the whole message for
    /// him after DATA; LMTP must refuse only his copy.
    fn larger_than_quota(&self, address: &str, size: u64) -> bool {
        address == "bob@local.test" && size > 100
    }

    fn may_send_as(&self, _user: &str, _sender: &str) -> bool {
        false
    }
}

#[derive(Debug, Default, PartialEq)]
struct Transcript {
    output: String,
    messages: Vec<Message>,
    closed: bool,
}

impl Transcript {
    fn lines(&self) -> Vec<&str> {
        self.output
            .split("\r\n")
            .filter(|l| !l.is_empty())
            .collect()
    }

    /// The code of each reply (continuation lines skipped).
    fn codes(&self) -> Vec<&str> {
        self.lines()
            .into_iter()
            .filter(|l| l.len() >= 4 && l.as_bytes()[3] == b' ')
            .map(|l| &l[..3])
            .collect()
    }
}

/// Feeds `input` in chunks of `chunk` bytes as the glue does; every
/// message is "delivered" with `verdict` per recipient address.
fn drive_with(
    cfg: ServerConfig,
    input: &[u8],
    chunk: usize,
    verdict: impl Fn(&str) -> RecipientDelivery,
) -> Transcript {
    let t0 = Instant::now();
    let mut s = ServerSession::new(Rc::new(cfg), peer(), t0).with_policy(Rc::new(Users));
    let mut t = Transcript::default();
    let mut out = Vec::new();
    let mut pending: Vec<u8> = Vec::new();
    let mut fed = 0;
    loop {
        loop {
            let n = s.handle_input(&pending, t0, wall());
            pending.drain(..n);
            let mut acted = false;
            while let Some(event) = s.poll_event() {
                acted = true;
                match event {
                    Event::Message(m) => {
                        let verdicts: Vec<RecipientDelivery> = m
                            .envelope
                            .recipients
                            .iter()
                            .map(|r| verdict(&r.address))
                            .collect();
                        t.messages.push(m);
                        s.handle_delivered(&verdicts, t0);
                    }
                    Event::Close => t.closed = true,
                    other => panic!("unexpected event {other:?}"),
                }
            }
            out.extend_from_slice(s.output());
            let len = s.output().len();
            s.consume_output(len);
            if t.closed || (n == 0 && !acted) {
                break;
            }
        }
        if t.closed || fed == input.len() {
            break;
        }
        let k = chunk.clamp(1, input.len() - fed);
        pending.extend_from_slice(&input[fed..fed + k]);
        fed += k;
    }
    t.output = String::from_utf8_lossy(&out).into_owned();
    t
}

fn all_delivered(_: &str) -> RecipientDelivery {
    RecipientDelivery::Delivered { forwarded_as: None }
}

/// The same input whole and byte by byte: the same transcript.
fn drive(input: &str, verdict: impl Fn(&str) -> RecipientDelivery) -> Transcript {
    let whole = drive_with(lmtp(), input.as_bytes(), usize::MAX, &verdict);
    let bytewise = drive_with(lmtp(), input.as_bytes(), 1, &verdict);
    assert_eq!(whole, bytewise, "byte-by-byte feeding differs");
    whole
}

#[test]
fn lhlo_is_answered_with_the_extensions_and_no_auth_or_dsn() {
    let t = drive("LHLO mta.example\r\nQUIT\r\n", all_delivered);
    assert_eq!(
        t.lines(),
        [
            "220 mx.test LMTP spate",
            "250-mx.test",
            "250-PIPELINING",
            "250-SIZE 10000",
            "250-8BITMIME",
            "250-ENHANCEDSTATUSCODES",
            "250-SMTPUTF8",
            "250 CHUNKING",
            "221 2.0.0 Bye",
        ]
    );
    assert!(t.closed);
}

#[test]
fn ehlo_and_helo_get_500_and_smtp_does_not_know_lhlo() {
    // RFC 2033 4.1: EHLO and HELO are refused; nothing starts without LHLO.
    let t = drive(
        "EHLO mta.example\r\nHELO mta.example\r\nMAIL FROM:<a@remote.example>\r\nLHLO x\r\n\
         MAIL FROM:<a@remote.example>\r\nQUIT\r\n",
        all_delivered,
    );
    assert_eq!(t.codes(), ["220", "500", "500", "503", "250", "250", "221"]);
    assert!(t
        .lines()
        .contains(&"500 5.5.1 Error: this is LMTP, use LHLO"));
    assert!(t.lines().contains(&"503 5.5.1 Error: send LHLO first"));
    // An SMTP listener does not know LHLO.
    let smtp = ServerConfig {
        lmtp: false,
        ..lmtp()
    };
    let t = drive_with(smtp, b"LHLO x\r\nEHLO x\r\n", usize::MAX, all_delivered);
    assert_eq!(t.codes(), ["220", "500", "250"]);
    assert!(t
        .output
        .starts_with("220 mx.test ESMTP spate\r\n500 5.5.2 "));
}

#[test]
fn one_reply_per_accepted_recipient_in_rcpt_order() {
    let input = "LHLO mta.example\r\nMAIL FROM:<a@remote.example>\r\n\
                 RCPT TO:<alice@local.test>\r\nRCPT TO:<nobody@local.test>\r\n\
                 RCPT TO:<full@local.test>\r\nRCPT TO:<bob@local.test>\r\n\
                 RCPT TO:<x@elsewhere.example>\r\nRCPT TO:<x@[127.0.0.1]>\r\nRCPT TO:<Postmaster>\r\n\
                 DATA\r\nSubject: hi\r\n\r\nhello\r\n.\r\nQUIT\r\n";
    let t = drive(input, |address| match address {
        "bob@local.test" => RecipientDelivery::Refused(
            "552 5.2.2 bob: message larger than the mailbox quota".to_owned(),
        ),
        "Postmaster" => RecipientDelivery::Refused("452 4.2.2 root: mailbox full".to_owned()),
        _ => RecipientDelivery::Delivered { forwarded_as: None },
    });
    let lines = t.lines();
    // LHLO's continuation lines are not replies.
    let replies: Vec<&str> = lines.iter().copied().skip(8).collect();
    assert_eq!(
        replies,
        [
            "250 2.1.0 Ok",
            "250 2.1.5 Ok",
            "550 5.1.1 <nobody@local.test>: Recipient address rejected: User unknown",
            "452 4.2.2 <full@local.test>: Mailbox full, try again later",
            "250 2.1.5 Ok",
            "550 5.1.2 <x@elsewhere.example>: Recipient address rejected: LMTP delivers to local mailboxes only",
            "550 5.1.2 <x@[127.0.0.1]>: Recipient address rejected: LMTP delivers to local mailboxes only",
            "250 2.1.5 Ok",
            "354 End data with <CR><LF>.<CR><LF>",
            "250 2.0.0 <alice@local.test>: delivered to mailbox",
            "552 5.2.2 bob: message larger than the mailbox quota",
            "452 4.2.2 root: mailbox full",
            "221 2.0.0 Bye",
        ],
        "{}",
        t.output
    );
    let m = &t.messages[0];
    let to: Vec<&str> = m
        .envelope
        .recipients
        .iter()
        .map(|r| r.address.as_str())
        .collect();
    assert_eq!(to, ["alice@local.test", "bob@local.test", "Postmaster"]);
    let body = String::from_utf8_lossy(&m.body);
    assert!(
        body.starts_with(
            "Received: from mta.example ([127.0.0.1])\r\n\tby mx.test (spate) with LMTP id "
        ),
        "{body}"
    );
    assert!(body.ends_with("Subject: hi\r\n\r\nhello\r\n"), "{body}");
}

#[test]
fn pipelined_transactions_wait_for_each_delivery() {
    let input = "LHLO c\r\nMAIL FROM:<a@remote.example>\r\nRCPT TO:<alice@local.test>\r\n\
                 RCPT TO:<bob@local.test>\r\nDATA\r\none\r\n.\r\n\
                 MAIL FROM:<b@remote.example>\r\nRCPT TO:<bob@local.test>\r\nDATA\r\ntwo\r\n.\r\n\
                 NOOP\r\nQUIT\r\n";
    let t = drive(input, |address| RecipientDelivery::Delivered {
        forwarded_as: (address == "bob@local.test").then(|| "00000000000000ab".to_owned()),
    });
    assert_eq!(
        t.codes(),
        [
            "220", "250", "250", "250", "250", "354", "250", "250", "250", "250", "354", "250",
            "250", "221"
        ]
    );
    assert!(t
        .lines()
        .contains(&"250 2.0.0 <bob@local.test>: delivered, forwarded as 00000000000000ab"));
    assert_eq!(t.messages.len(), 2);

    // By hand: nothing after the first message is read, and no reply for
    // it leaves, until the glue reports the deliveries.
    let t0 = Instant::now();
    let mut s = ServerSession::new(Rc::new(lmtp()), peer(), t0).with_policy(Rc::new(Users));
    let n = s.handle_input(input.as_bytes(), t0, wall());
    let first_end = input.find("one\r\n.\r\n").expect("present") + 8;
    assert_eq!(n, first_end);
    assert!(matches!(s.poll_event(), Some(Event::Message(_))));
    assert_eq!(s.handle_input(&input.as_bytes()[n..], t0, wall()), 0);
    let before = String::from_utf8_lossy(s.output()).into_owned();
    assert!(!before.contains("delivered"), "{before}");
    // An SMTP store result is not an LMTP answer.
    s.handle_stored(Ok("X"), t0);
    assert_eq!(String::from_utf8_lossy(s.output()), before);
    // A verdict missing for a recipient becomes a temporary failure.
    s.handle_delivered(&[all_delivered("alice@local.test")], t0);
    let after = String::from_utf8_lossy(s.output()).into_owned();
    assert!(
        after.ends_with(
            "250 2.0.0 <alice@local.test>: delivered to mailbox\r\n\
             451 4.3.0 <bob@local.test>: local delivery failed\r\n"
        ),
        "{after}"
    );
    assert!(s.handle_input(&input.as_bytes()[n..], t0, wall()) > 0);
}

#[test]
fn a_refused_message_gets_the_refusal_once_per_recipient() {
    let big = "x".repeat(98) + "\r\n";
    let input = format!(
        "LHLO c\r\nMAIL FROM:<a@remote.example>\r\nRCPT TO:<alice@local.test>\r\nRCPT TO:<bob@local.test>\r\n\
         DATA\r\n{}.\r\n\
         MAIL FROM:<a@remote.example>\r\nRCPT TO:<alice@local.test>\r\nRCPT TO:<bob@local.test>\r\n\
         DATA\r\nReceived: a\r\nReceived: b\r\nReceived: c\r\nReceived: d\r\n\r\nloop\r\n.\r\nNOOP\r\n",
        big.repeat(101)
    );
    let t = drive(&input, all_delivered);
    assert_eq!(
        t.codes(),
        [
            "220", "250", "250", "250", "250", "354", "552", "552", "250", "250", "250", "354",
            "554", "554", "250"
        ]
    );
    assert!(t.messages.is_empty());
}

#[test]
fn bdat_last_gets_one_reply_per_recipient() {
    let input = "LHLO c\r\nMAIL FROM:<a@remote.example>\r\nRCPT TO:<alice@local.test>\r\n\
                 RCPT TO:<bob@local.test>\r\nBDAT 7\r\nhello\r\nBDAT 8 LAST\r\n world\r\n\
                 MAIL FROM:<a@remote.example>\r\nRCPT TO:<alice@local.test>\r\nRCPT TO:<bob@local.test>\r\n\
                 BDAT 20000 LAST\r\n";
    let input = format!("{input}{}QUIT\r\n", "y".repeat(20_000));
    let t = drive(&input, all_delivered);
    assert_eq!(
        t.codes(),
        [
            "220", "250", "250", "250", "250", "250", "250", "250", "250", "250", "250", "552",
            "552", "221"
        ],
        "{}",
        t.output
    );
    assert!(t.lines().contains(&"250 2.0.0 7 octets received"));
    assert_eq!(t.messages.len(), 1);
    assert!(t.messages[0].body.ends_with(b"hello\r\n world\r\n"));
}

#[test]
fn auth_is_refused_and_the_quota_is_left_to_each_recipient() {
    let t = drive(
        "LHLO c\r\nAUTH PLAIN AGFsaWNlAHB3\r\nQUIT\r\n",
        all_delivered,
    );
    assert_eq!(t.codes(), ["220", "250", "502", "221"]);
    // bob's quota is smaller than the message: SMTP refuses the whole
    // message at the end of DATA (RFC 1870 6.3); LMTP hands it on so that
    // alice still gets hers and bob's copy alone is refused.
    let body = "z".repeat(500);
    let input = format!(
        "LHLO c\r\nMAIL FROM:<a@remote.example>\r\nRCPT TO:<alice@local.test>\r\nRCPT TO:<bob@local.test>\r\n\
         DATA\r\n{body}\r\n.\r\n"
    );
    let t = drive(&input, all_delivered);
    assert_eq!(t.messages.len(), 1, "{}", t.output);
    let smtp = ServerConfig {
        lmtp: false,
        ..lmtp()
    };
    let t = drive_with(
        smtp,
        input.replace("LHLO", "EHLO").as_bytes(),
        usize::MAX,
        all_delivered,
    );
    assert!(t.messages.is_empty(), "{}", t.output);
}

#[test]
fn a_shutdown_waits_for_the_delivery_replies() {
    let t0 = Instant::now();
    let mut s = ServerSession::new(Rc::new(lmtp()), peer(), t0).with_policy(Rc::new(Users));
    s.handle_input(
        b"LHLO c\r\nMAIL FROM:<a@r.example>\r\nRCPT TO:<alice@local.test>\r\nDATA\r\nx\r\n.\r\n",
        t0,
        wall(),
    );
    assert!(matches!(s.poll_event(), Some(Event::Message(_))));
    s.handle_shutdown();
    assert!(!s.is_closed());
    s.handle_delivered(&[all_delivered("alice@local.test")], t0);
    let out = String::from_utf8_lossy(s.output()).into_owned();
    assert!(
        out.ends_with(
            "250 2.0.0 <alice@local.test>: delivered to mailbox\r\n\
             421 4.3.2 mx.test Service shutting down, closing transmission channel\r\n"
        ),
        "{out}"
    );
    assert!(s.is_closed());
}
