//! `spate queue list`: with the server running and stopped, as JSON lines
//! and as text; the listed sizes match the bytes sent (dot-unstuffed) plus
//! the Received header; the spool holds the message bytes verbatim.

mod common;

use common::{TestServer, Tweaks, MAX_TRACE_HEADER};

#[test]
fn queue_list_while_running_and_after_stop() {
    let mut server = TestServer::start(Tweaks::default());
    assert!(server.queue_list().is_empty(), "fresh spool lists nothing");
    let mut c = server.session();
    let m1 = common::message("first", 300);
    let m2 = common::message("second", 5000);
    let m3 = common::message("bounce", 100);
    let id1 = c
        .send_message("alice@example.test", &["bob@example.test"], &m1)
        .expect("m1");
    let id2 = c
        .send_message(
            "alice@example.test",
            &[
                "bob@example.test",
                "carol@example.test",
                "dave@relay.example",
            ],
            &m2,
        )
        .expect("m2");
    let id3 = c
        .send_message("", &["postmaster@example.test"], &m3)
        .expect("null sender");
    c.quit();
    for id in [&id1, &id2, &id3] {
        assert!(common::is_queue_id(id), "{id:?} is not 16 hex digits");
    }
    let expected = [
        (
            &id1,
            "alice@example.test",
            vec!["bob@example.test"],
            m1.len(),
        ),
        (
            &id2,
            "alice@example.test",
            vec![
                "bob@example.test",
                "carol@example.test",
                "dave@relay.example",
            ],
            m2.len(),
        ),
        (&id3, "", vec!["postmaster@example.test"], m3.len()),
    ];
    let check = |when: &str, server: &TestServer| {
        let q = server.queue_list();
        assert_eq!(q.len(), 3, "{when}: {q:?}");
        for (id, from, to, size) in &expected {
            let m = q
                .iter()
                .find(|m| &&m.id == id)
                .unwrap_or_else(|| panic!("{when}: {id} not listed in {q:?}"));
            assert_eq!(m.from, *from, "{when}");
            assert_eq!(m.to, *to, "{when}");
            assert!(
                m.size >= *size as u64 && m.size <= *size as u64 + MAX_TRACE_HEADER,
                "{when}: size {} for {size} bytes sent",
                m.size
            );
            let age = m
                .age_seconds
                .unwrap_or_else(|| panic!("{when}: no age_seconds in {:?}", m.raw));
            assert!(age < 120, "{when}: age {age}");
        }
        // Text output names every message too.
        let text =
            String::from_utf8(server.spate_command(&["queue", "list"]).stdout).expect("utf-8");
        for (id, ..) in &expected {
            assert!(
                text.contains(id.as_str()),
                "{when}: text listing lacks {id}:\n{text}"
            );
        }
    };
    check("running", &server);
    let down = server.terminate();
    assert!(down.status.success());
    check("stopped", &server);
}

/// Two messages that differ only by 1000 body bytes are listed 1000 bytes
/// apart; 100 dot-stuffed lines count one byte less each than on the wire.
#[test]
fn sizes_match_the_bytes_sent() {
    let server = TestServer::start(Tweaks::default());
    let mut c = server.session();
    let base = common::message("sizes", 2000);
    let mut longer = base.clone();
    for _ in 0..10 {
        longer.extend_from_slice(format!("{}\r\n", "L".repeat(98)).as_bytes());
    }
    assert_eq!(longer.len(), base.len() + 1000);
    let mut stuffed = base.clone();
    for _ in 0..100 {
        stuffed.extend_from_slice(b".dot line\r\n");
    }
    let same_from = "sizes@example.test";
    let a = c
        .send_message(same_from, &["rcpt@example.test"], &base)
        .expect("base");
    let b = c
        .send_message(same_from, &["rcpt@example.test"], &longer)
        .expect("longer");
    let s = c
        .send_message(same_from, &["rcpt@example.test"], &stuffed)
        .expect("stuffed");
    c.quit();
    let q = server.queue_list();
    let size = |id: &str| q.iter().find(|m| m.id == id).expect("listed").size as i64;
    // The Received headers differ only by the queue id (same length) and
    // the time stamp; allow a few bytes for the latter.
    let d = size(&b) - size(&a);
    assert!(
        (996..=1004).contains(&d),
        "1000 more bytes sent, listed {d} more"
    );
    let d = size(&s) - size(&a);
    let added = 100 * ".dot line\r\n".len() as i64;
    assert!(
        (added - 4..=added + 4).contains(&d),
        "{added} more bytes after unstuffing, listed {d} more"
    );
}

/// The body is stored as sent (after unstuffing), behind a Received header.
#[test]
fn spool_holds_the_message_verbatim() {
    let mut server = TestServer::start(Tweaks::default());
    let mut c = server.session();
    let mut msg = common::message("verbatim-7f3a", 1500);
    msg.extend_from_slice(b".leading dot kept once\r\n\tTAB \x7f 8bit \xc3\xa9\r\n");
    let id = c
        .send_message("v@example.test", &["rcpt@example.test"], &msg)
        .expect("accepted");
    c.quit();
    server.terminate();
    let spool = server.spool_bytes();
    assert!(
        common::contains(&spool, &msg),
        "message bytes not found verbatim in {}",
        server.spool_dir.display()
    );
    assert!(
        !common::contains(&spool, b"..leading dot"),
        "stored still dot-stuffed"
    );
    // A Received header naming us precedes the message.
    let at = spool
        .windows(msg.len())
        .position(|w| w == msg.as_slice())
        .expect("found above");
    let before = &spool[at.saturating_sub(MAX_TRACE_HEADER as usize)..at];
    let text = String::from_utf8_lossy(before);
    assert!(
        text.contains("Received:"),
        "no Received header before the message: {text:?}"
    );
    assert!(
        text.contains("mx.test"),
        "Received header lacks our hostname: {text:?}"
    );
    assert!(
        text.ends_with("\r\n"),
        "Received header must end with CRLF right before the message: {text:?}"
    );
    let q = server.queue_list();
    assert_eq!(q.len(), 1);
    assert_eq!(q[0].id, id);
}
