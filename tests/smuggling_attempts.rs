//! SMTP smuggling (SEC Consult, December 2023, and the variants published
//! after it): a message whose data contains an end-of-data look-alike
//! followed by a second, smuggled transaction. Only `<CRLF>.<CRLF>` may end
//! DATA. With `bare_line_endings = "reject"` (the default) every message
//! containing a bare CR or LF is refused with 550 5.5.2; with "normalize"
//! it may be accepted, but as ONE message. In no case may the queue hold
//! more messages than the client legitimately completed, nor any message
//! from the smuggled sender.

mod common;

use std::time::Duration;

use common::{Client, TestServer, Tweaks};

/// (name, the end-of-data look-alike). A leading CRLF belongs to the line
/// before it.
const VARIANTS: &[(&str, &[u8])] = &[
    ("<LF>.<LF>", b"\n.\n"),
    ("<LF>.<CR><LF>", b"\n.\r\n"),
    ("<CR>.<CR>", b"\r.\r"),
    ("<CR>.<CR><LF>", b"\r.\r\n"),
    ("<CR><LF>.<CR>", b"\r\n.\r"),
    ("<CR><LF>.<LF>", b"\r\n.\n"),
    ("<CR><LF><NUL>.<CR><LF>", b"\r\n\x00.\r\n"),
    ("<CR><LF>.<CR><CR><LF>", b"\r\n.\r\r\n"),
    ("<CR><CR><LF>.<CR><CR><LF>", b"\r\r\n.\r\r\n"),
    ("<LF>.<CR>", b"\n.\r"),
    ("<CR>.<LF>", b"\r.\n"),
    ("<LF><LF>.<LF><LF>", b"\n\n.\n\n"),
    ("bare <LF> in text", b"\nplain text after a bare LF"),
    ("bare <CR> in text", b"\rplain text after a bare CR"),
];

/// Look-alikes placed at the very start of the data (right after 354).
const AT_START: &[(&str, &[u8])] = &[(".<LF> at start", b".\n"), (".<CR> at start", b".\r")];

const EVIL: &str = "evil@example.test";

fn smuggled_transaction() -> Vec<u8> {
    format!(
        "MAIL FROM:<{EVIL}>\r\nRCPT TO:<victim@example.test>\r\nDATA\r\n\
         From: <{EVIL}>\r\nSubject: smuggled\r\n\r\nsmuggled body\r\n.\r\n"
    )
    .into_bytes()
}

/// The DATA payload (after 354), ending with the real CRLF.CRLF.
fn payload(name: &str, lookalike: &[u8], at_start: bool, smuggle: bool) -> Vec<u8> {
    let mut p = Vec::new();
    if !at_start {
        p.extend_from_slice(
            format!("Subject: smuggling {name}\r\n\r\nlegit body\r\nlast legit line").as_bytes(),
        );
    }
    p.extend_from_slice(lookalike);
    if smuggle {
        p.extend_from_slice(&smuggled_transaction());
    } else {
        p.extend_from_slice(b"text after the look-alike\r\n.\r\n");
    }
    p
}

fn has_bare_line_ending(b: &[u8]) -> bool {
    b.iter().enumerate().any(|(i, &c)| {
        (c == b'\r' && b.get(i + 1) != Some(&b'\n'))
            || (c == b'\n' && (i == 0 || b[i - 1] != b'\r'))
    })
}

struct Outcome {
    /// Replies after the 354, QUIT's included.
    replies: Vec<common::Reply>,
    queued: usize,
    transcript: String,
}

/// One attempt on a fresh connection. `split` sends the payload in one-byte
/// writes so the look-alike straddles many reads.
fn attempt(server: &TestServer, n: usize, data: &[u8], split: bool) -> Outcome {
    let mut c = server.session();
    let r = c.cmd(&format!("MAIL FROM:<legit-{n}@example.test>"));
    assert_eq!(r.code, 250, "{}", c.transcript);
    let r = c.cmd("RCPT TO:<rcpt@example.test>");
    assert_eq!(r.code, 250, "{}", c.transcript);
    let r = c.cmd("DATA");
    assert_eq!(r.code, 354, "{}", c.transcript);
    if split {
        for b in data {
            if c.try_send(std::slice::from_ref(b)).is_err() {
                break;
            }
            std::thread::sleep(Duration::from_micros(300));
        }
    } else {
        let _ = c.try_send(data);
    }
    let _ = c.try_send(b"QUIT\r\n");
    let (replies, closed) = c.read_until_close(Duration::from_secs(15));
    assert!(closed, "server did not close after QUIT\n{}", c.transcript);
    let queued = replies.iter().filter(|r| r.queue_id().is_some()).count();
    Outcome {
        replies,
        queued,
        transcript: c.transcript.clone(),
    }
}

fn run_all(policy: &str) {
    let server = TestServer::start(Tweaks::default().smtp_str("bare_line_endings", policy));
    let mut completed = 0usize;
    let mut n = 0usize;
    let mut failures = Vec::new();
    let cases = VARIANTS
        .iter()
        .map(|&(a, b)| (a, b, false))
        .chain(AT_START.iter().map(|&(a, b)| (a, b, true)));
    for (name, lookalike, at_start) in cases {
        for smuggle in [false, true] {
            for split in [false, true] {
                n += 1;
                let data = payload(name, lookalike, at_start, smuggle);
                let out = attempt(&server, n, &data, split);
                completed += out.queued;
                let label = format!("{name} smuggle={smuggle} split={split} policy={policy}");
                let queue = server.queue_list();
                if out.queued > 1 {
                    failures.push(format!(
                        "{label}: {} messages acknowledged for one DATA\n{}",
                        out.queued, out.transcript
                    ));
                }
                if queue.len() != completed {
                    failures.push(format!(
                        "{label}: queue holds {} messages, client completed {completed}\n{}",
                        queue.len(),
                        out.transcript
                    ));
                    completed = queue.len();
                }
                if let Some(q) = queue.iter().find(|q| q.from == EVIL) {
                    failures.push(format!(
                        "{label}: smuggled message queued: {q:?}\n{}",
                        out.transcript
                    ));
                }
                let first = out.replies.first().map(|r| r.status()).unwrap_or_default();
                if policy == "reject" && has_bare_line_ending(&data) {
                    if first != "550 5.5.2" || out.queued != 0 {
                        failures.push(format!(
                            "{label}: expected `550 5.5.2` for bare CR/LF, got {first:?} (queued {})\n{}",
                            out.queued, out.transcript
                        ));
                    }
                } else if policy == "normalize" && out.queued == 1 && out.replies.len() != 2 {
                    // One reply for the data, one for QUIT: anything else means
                    // part of the data was executed as commands.
                    failures.push(format!(
                        "{label}: extra replies {:?}\n{}",
                        out.replies, out.transcript
                    ));
                }
                if out.replies.iter().any(|r| r.code == 354) {
                    failures.push(format!(
                        "{label}: a smuggled DATA got 354\n{}",
                        out.transcript
                    ));
                }
            }
        }
    }
    // Legit messages still work on the same server afterwards.
    let mut c = server.session();
    let id = c
        .send_message(
            "after@example.test",
            &["rcpt@example.test"],
            &common::message("after", 300),
        )
        .expect("a plain message after the attempts");
    assert!(server.queue_list().iter().any(|q| q.id == id));
    assert!(
        failures.is_empty(),
        "{} smuggling failures:\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

#[test]
fn smuggling_is_refused_with_the_default_reject_policy() {
    run_all("reject");
}

#[test]
fn smuggling_never_yields_an_extra_message_with_normalize() {
    run_all("normalize");
}

/// The default policy (no key in the config) is "reject".
#[test]
fn bare_lf_is_refused_by_default() {
    let server = TestServer::start(Tweaks::default());
    let data = payload("default", b"\n.\n", false, true);
    let out = attempt(&server, 1, &data, false);
    assert_eq!(
        out.replies.first().map(|r| r.status()).as_deref(),
        Some("550 5.5.2"),
        "{}",
        out.transcript
    );
    assert!(server.queue_list().is_empty(), "{}", out.transcript);
}

/// A well-formed message that merely contains dot-stuffed lines and a
/// smuggled-looking text after CRLF..CRLF is one message, stored unstuffed.
#[test]
fn dot_stuffed_lookalike_is_one_message() {
    let server = TestServer::start(Tweaks::default());
    let mut c: Client = server.session();
    let msg = format!(
        "Subject: stuffed\r\n\r\nbefore\r\n.\r\nMAIL FROM:<{EVIL}>\r\nRCPT TO:<victim@example.test>\r\nDATA\r\nafter\r\n"
    );
    let id = c
        .send_message("legit@example.test", &["rcpt@example.test"], msg.as_bytes())
        .expect("stuffed message accepted");
    c.quit();
    let q = server.queue_list();
    assert_eq!(q.len(), 1, "{q:?}");
    assert_eq!(q[0].id, id);
    assert_eq!(q[0].from, "legit@example.test");
    assert!(
        q[0].size >= msg.len() as u64,
        "stored {} < sent {}",
        q[0].size,
        msg.len()
    );
}
