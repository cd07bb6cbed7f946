//! Recovery from damaged spool files, done to the files of a stopped
//! server: a flipped byte inside one message's record is detected (the
//! records are checksummed) and that message is quarantined, with a log
//! line, while the messages around it stay listed; a torn tail (the last
//! record cut short, as by a crash in the middle of a write) is ignored.
//! The server starts in both cases and keeps accepting mail.

mod common;

use std::path::PathBuf;

use common::{TestServer, Tweaks};

/// The spool file holding `needle`, and its offset there.
fn locate(server: &TestServer, needle: &[u8]) -> (PathBuf, usize) {
    let mut stack = vec![server.spool_dir.clone()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("read spool dir").flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            let bytes = std::fs::read(&p).expect("read spool file");
            if let Some(at) = bytes.windows(needle.len()).position(|w| w == needle) {
                return (p, at);
            }
        }
    }
    panic!(
        "{:?} not found in the spool",
        String::from_utf8_lossy(needle)
    );
}

/// Three messages on one core (so they share a segment), server stopped.
fn three_messages() -> (TestServer, Vec<String>, Vec<Vec<u8>>) {
    let mut server = TestServer::start(Tweaks::default().cores(1));
    let mut c = server.session();
    let mut ids = Vec::new();
    let mut msgs = Vec::new();
    for name in ["alpha", "bravo", "charlie"] {
        let msg = common::message(&format!("recovery-{name}"), 20_000);
        ids.push(
            c.send_message(
                &format!("{name}@example.test"),
                &["rcpt@example.test"],
                &msg,
            )
            .expect("accepted"),
        );
        msgs.push(msg);
    }
    c.quit();
    let down = server.terminate();
    assert!(down.status.success());
    (server, ids, msgs)
}

#[test]
fn corrupt_record_is_quarantined_and_the_others_recovered() {
    let (mut server, ids, _) = three_messages();
    let (file, at) = locate(&server, b"recovery-bravo line 000100");
    let mut bytes = std::fs::read(&file).unwrap();
    bytes[at + 3] ^= 0x20;
    std::fs::write(&file, &bytes).unwrap();

    // Offline listing must not crash on the damage.
    let offline: Vec<String> = server.queue_list().into_iter().map(|m| m.id).collect();
    assert!(
        !offline.contains(&ids[1]),
        "corrupt message listed offline: {offline:?}"
    );

    server.restart();
    let q = server.queue_list();
    let listed: Vec<&str> = q.iter().map(|m| m.id.as_str()).collect();
    assert!(listed.contains(&ids[0].as_str()), "{listed:?}");
    assert!(
        listed.contains(&ids[2].as_str()),
        "message after the corrupt one lost: {listed:?}"
    );
    assert!(
        !listed.contains(&ids[1].as_str()),
        "corrupt message still queued: {listed:?}"
    );
    assert_eq!(q.len(), 2);
    let log = server.stderr_text().to_ascii_lowercase();
    assert!(
        log.contains("quarantin") || log.contains("corrupt"),
        "no log line about the corrupt record:\n{log}"
    );
    // Still accepting, and stable over another restart.
    let mut c = server.session();
    let id = c
        .send_message(
            "delta@example.test",
            &["rcpt@example.test"],
            &common::message("delta", 1000),
        )
        .expect("accepted after recovery");
    c.quit();
    server.terminate();
    server.restart();
    let listed: Vec<String> = server.queue_list().into_iter().map(|m| m.id).collect();
    assert_eq!(listed.len(), 3, "{listed:?}");
    assert!(listed.contains(&id));
}

#[test]
fn torn_tail_is_ignored() {
    let (mut server, ids, msgs) = three_messages();
    // Cut the last record in the middle of its body: zero everything from
    // there to the end of the file (segments are preallocated, so a torn
    // write leaves zeros behind it).
    let (file, at) = locate(&server, b"recovery-charlie line 000100");
    let mut bytes = std::fs::read(&file).unwrap();
    for b in &mut bytes[at..] {
        *b = 0;
    }
    std::fs::write(&file, &bytes).unwrap();
    server.restart();
    let listed: Vec<String> = server.queue_list().into_iter().map(|m| m.id).collect();
    assert_eq!(listed.len(), 2, "{listed:?}");
    assert!(
        listed.contains(&ids[0]) && listed.contains(&ids[1]),
        "{listed:?}"
    );
    // New mail is appended after the torn record and survives a restart.
    let mut c = server.session();
    let id = c
        .send_message("charlie@example.test", &["rcpt@example.test"], &msgs[2])
        .expect("accepted after a torn tail");
    c.quit();
    server.kill9();
    server.restart();
    let listed: Vec<String> = server.queue_list().into_iter().map(|m| m.id).collect();
    assert_eq!(listed.len(), 3, "{listed:?}");
    assert!(listed.contains(&id));
}

#[test]
fn truncated_segment_file_is_recovered() {
    let (mut server, ids, _) = three_messages();
    let (file, at) = locate(&server, b"recovery-charlie line 000100");
    let f = std::fs::OpenOptions::new().write(true).open(&file).unwrap();
    f.set_len(at as u64).unwrap();
    drop(f);
    server.restart();
    let listed: Vec<String> = server.queue_list().into_iter().map(|m| m.id).collect();
    assert_eq!(listed.len(), 2, "{listed:?}");
    assert!(
        listed.contains(&ids[0]) && listed.contains(&ids[1]),
        "{listed:?}"
    );
    let mut c = server.session();
    c.send_message(
        "echo@example.test",
        &["rcpt@example.test"],
        &common::message("echo", 1000),
    )
    .expect("accepted after truncation");
    c.quit();
}
