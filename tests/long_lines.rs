//! Lines longer than RFC 5321 4.5.3.1.6 allows (998 octets before CRLF)
//! are folded at receipt, as Postfix's `smtp_line_length_limit` folds them
//! on output, so a strict next hop never sees one: over DATA and BDAT a
//! 3,000-octet body line and a 1,500-octet header arrive at the receiver
//! with every line within the limit and nothing but the folds (CRLF SPACE)
//! added; `[smtp] body_line_limit = 0` relays them as they came.

#[path = "common/capture.rs"]
mod capture;
mod common;

use std::time::Duration;

use capture::Sink;
use common::{Client, TestServer, Tweaks};

const WAIT: Duration = Duration::from_secs(30);

/// A message with a 1,500-octet header and a 3,000-octet body line.
fn long_message(marker: &str) -> Vec<u8> {
    let header: String = (0..1500).map(|i| (b'a' + (i % 26) as u8) as char).collect();
    let body: String = (0..3000).map(|i| (b'A' + (i % 26) as u8) as char).collect();
    format!(
        "From: <sender@client.test>\r\nTo: <rcpt@far.example>\r\nSubject: {marker}\r\n\
         X-Long: {header}\r\n\r\nshort line\r\n{body}\r\nend\r\n"
    )
    .into_bytes()
}

fn send_data(server: &TestServer, msg: &[u8]) {
    let mut c = server.session();
    c.send_message("sender@client.test", &["rcpt@far.example"], msg)
        .unwrap_or_else(|r| panic!("refused: {r:?}"));
    c.quit();
}

fn send_bdat(server: &TestServer, msg: &[u8]) {
    let mut c = Client::connect(server.smtp);
    assert_eq!(c.read_reply().code, 220);
    c.ehlo("client.test");
    assert_eq!(c.cmd("MAIL FROM:<sender@client.test>").code, 250);
    assert_eq!(c.cmd("RCPT TO:<rcpt@far.example>").code, 250);
    let (a, b) = msg.split_at(1234);
    c.send(format!("BDAT {}\r\n", a.len()).as_bytes());
    c.send(a);
    assert_eq!(c.read_reply().code, 250);
    c.send(format!("BDAT {} LAST\r\n", b.len()).as_bytes());
    c.send(b);
    assert_eq!(c.read_reply().code, 250);
    c.quit();
}

/// The message as the receiver got it, from our Received header on.
fn received(sink: &Sink, marker: &str) -> String {
    let messages = sink.wait_for(1, WAIT);
    let m = messages
        .iter()
        .find(|m| m["data"].as_str().unwrap_or("").contains(marker))
        .unwrap_or_else(|| panic!("no {marker}: {messages:#?}"));
    m["data"].as_str().unwrap().to_owned()
}

/// Everything after our Received header (its lines begin with TAB).
fn after_trace(data: &str) -> &str {
    let start = data.find("From: ").expect("the message's own header");
    &data[start..]
}

#[test]
fn long_lines_arrive_folded_over_data_and_bdat() {
    for (how, send) in [
        ("data", send_data as fn(&TestServer, &[u8])),
        ("bdat", send_bdat),
    ] {
        let sink = Sink::start();
        let server = TestServer::start(Tweaks::default().extra(&sink.route("far.example")));
        let marker = format!("long-{how}");
        let original = long_message(&marker);
        send(&server, &original);
        let data = received(&sink, &marker);
        for line in data.split("\r\n") {
            assert!(line.len() <= 998, "{how}: a line of {} octets", line.len());
        }
        let unfolded = after_trace(&data).replace("\r\n ", "");
        assert_eq!(
            unfolded,
            String::from_utf8(original).unwrap(),
            "{how}: only folds were added"
        );
    }
}

#[test]
fn with_folding_off_long_lines_go_as_they_came() {
    let sink = Sink::start();
    let server = TestServer::start(
        Tweaks::default()
            .smtp("body_line_limit", 0)
            .extra(&sink.route("far.example")),
    );
    let original = long_message("unfolded");
    send_data(&server, &original);
    let data = received(&sink, "unfolded");
    assert_eq!(after_trace(&data), String::from_utf8(original).unwrap());
}
