//! RFC 7162 CONDSTORE and QRESYNC over real sockets with Python's imaplib
//! (tests/python/imap_condstore.py) against a running spate: two sessions
//! where one changes flags and the other resynchronizes with CHANGEDSINCE
//! and gets exactly the changed messages; a conditional STORE that meets a
//! newer change answers `[MODIFIED]`; modseqs strictly increase; a QRESYNC
//! SELECT after expunges gets `VANISHED (EARLIER)` with the right UIDs and
//! the changed flags, and expunges then come as VANISHED; HIGHESTMODSEQ
//! survives a restart of spate.

mod common;

use common::mailbox::deliver;
use common::{python, TestServer, Tweaks};
use serde_json::Value;

const USER: &str = "alice";
const PASSWORD: &str = "pw-alice";

fn start() -> TestServer {
    let server = TestServer::start(Tweaks::default().user(USER, PASSWORD).listener("imap"));
    for n in 1..=6 {
        let msg = format!(
            "From: s@client.test\r\nTo: {USER}@example.test\r\nSubject: m{n}\r\n\r\nbody {n}\r\n"
        );
        deliver(&server, USER, msg.as_bytes());
    }
    server
}

fn scenario(server: &TestServer, name: &str) -> Value {
    let addr = server.listener("imap");
    let args = [
        name.to_owned(),
        addr.ip().to_string(),
        addr.port().to_string(),
        "--user".into(),
        USER.into(),
        "--password".into(),
        PASSWORD.into(),
    ];
    let v = python("imap_condstore.py", &args);
    assert!(v.get("exception").is_none(), "{name}: {v:#}");
    v
}

/// The untagged responses of one command named `name` (as imaplib keeps
/// them: the text after the name, or after the number for FETCH).
fn untagged<'a>(result: &'a Value, name: &str) -> Vec<&'a str> {
    result["untagged"][name]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

fn tagged_text(result: &Value) -> String {
    assert_eq!(result["typ"], "OK", "{result}");
    result["data"][0].as_str().unwrap_or("").to_owned()
}

/// The UIDs named in FETCH responses (`n (UID u ...)`).
fn fetched_uids(result: &Value) -> Vec<u32> {
    let mut uids: Vec<u32> = untagged(result, "FETCH")
        .iter()
        .filter_map(|f| {
            let rest = &f[f.find("UID ")? + 4..];
            rest.split([' ', ')']).next()?.parse().ok()
        })
        .collect();
    uids.sort_unstable();
    uids.dedup();
    uids
}

fn number(text: &str, after: &str) -> u64 {
    let start = text
        .find(after)
        .unwrap_or_else(|| panic!("{after} in {text}"))
        + after.len();
    text[start..]
        .trim_start_matches([' ', '('])
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("number after {after} in {text}"))
}

#[test]
fn changedsince_resync_conditional_store_and_increasing_modseqs() {
    let server = start();
    let v = scenario(&server, "resync");
    assert_eq!(untagged(&v["enable"], "ENABLED"), ["CONDSTORE"], "{v:#}");
    let known: u64 = untagged(&v["b_select"], "HIGHESTMODSEQ")[0]
        .parse()
        .unwrap();
    // Every message has a MODSEQ at or below the folder's.
    let modseqs = untagged(&v["b_modseqs"], "FETCH");
    assert_eq!(modseqs.len(), 6, "{v:#}");
    assert!(
        modseqs.iter().all(|m| number(m, "MODSEQ") <= known),
        "{v:#}"
    );

    // Exactly the two messages A changed, with their new modseqs.
    assert_eq!(fetched_uids(&v["b_changed"]), [2, 4], "{v:#}");
    for f in untagged(&v["b_changed"], "FETCH") {
        assert!(number(f, "MODSEQ") > known, "{v:#}");
    }
    assert!(untagged(&v["b_unchanged"], "FETCH").is_empty(), "{v:#}");
    let search = untagged(&v["b_search"], "SEARCH");
    assert!(search[0].starts_with("2 4 (MODSEQ "), "{v:#}");

    // A changed message 1 after B's last view: B's conditional STORE
    // leaves it alone and says so; message 3 is stored.
    let text = tagged_text(&v["b_conditional"]);
    assert!(text.starts_with("[MODIFIED 1]"), "{v:#}");
    let flags = untagged(&v["b_flags_after"], "FETCH").join(" ");
    assert!(flags.contains("1 (FLAGS (\\Seen))"), "{v:#}");
    assert!(flags.contains("3 (FLAGS (\\Deleted))"), "{v:#}");

    // HIGHESTMODSEQ strictly increases with every change.
    let steps: Vec<u64> = v["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_u64().unwrap())
        .collect();
    assert_eq!(steps.len(), 5, "{v:#}");
    assert!(steps.windows(2).all(|w| w[0] < w[1]), "{steps:?}");
}

#[test]
fn qresync_select_after_expunges_gets_vanished_earlier() {
    let server = start();
    let v = scenario(&server, "qresync");
    assert_eq!(untagged(&v["enable"], "ENABLED"), ["QRESYNC"], "{v:#}");
    // A expunged UIDs 2 and 4 and flagged UID 3 while B was away.
    let resync = &v["b_resync"];
    assert_eq!(untagged(resync, "VANISHED"), ["(EARLIER) 2,4"], "{v:#}");
    assert_eq!(fetched_uids(resync), [3], "{v:#}");
    let fetch = untagged(resync, "FETCH")[0];
    assert!(
        fetch.contains("\\Flagged") && fetch.contains("MODSEQ ("),
        "{v:#}"
    );
    assert_eq!(untagged(resync, "EXISTS"), ["4"], "{v:#}");
    // With known UIDs 3:6 only 4 is reported; the SELECT closed INBOX.
    let known = &v["b_resync_known"];
    assert_eq!(untagged(known, "VANISHED"), ["(EARLIER) 4"], "{v:#}");
    assert!(known["untagged"].get("CLOSED").is_some(), "{v:#}");
    // UID FETCH (CHANGEDSINCE n VANISHED) says the same.
    let fetch = &v["b_vanished_fetch"];
    assert_eq!(untagged(fetch, "VANISHED"), ["(EARLIER) 2,4"], "{v:#}");
    assert_eq!(fetched_uids(fetch), [3], "{v:#}");
    // Live expunges, by another session and by B itself, are VANISHED.
    assert_eq!(untagged(&v["b_noop"], "VANISHED"), ["5"], "{v:#}");
    assert!(untagged(&v["b_noop"], "EXPUNGE").is_empty(), "{v:#}");
    assert_eq!(untagged(&v["b_expunge"], "VANISHED"), ["6"], "{v:#}");
    let text = tagged_text(&v["b_expunge"]);
    assert!(text.starts_with("[HIGHESTMODSEQ "), "{v:#}");
    // A did not enable QRESYNC: it still gets EXPUNGE.
    assert_eq!(untagged(&v["a_noop"], "EXPUNGE"), ["3"], "{v:#}");
    assert_eq!(untagged(&v["b_reselect"], "EXISTS"), ["2"], "{v:#}");
}

#[test]
fn highestmodseq_survives_a_restart() {
    let mut server = start();
    let _ = scenario(&server, "resync");
    let before = scenario(&server, "status");
    let text = before["data"][0].as_str().unwrap().to_owned();
    let highest = number(&text, "HIGHESTMODSEQ");
    assert!(highest > 6, "{before}");
    server.terminate();
    server.restart();
    let after = scenario(&server, "status");
    assert_eq!(
        after, before,
        "the same UIDVALIDITY, HIGHESTMODSEQ and count"
    );
    // And the next change goes past it.
    let v = scenario(&server, "qresync");
    let first: u64 = untagged(&v["b_first"], "HIGHESTMODSEQ")[0].parse().unwrap();
    assert_eq!(first, highest, "{v:#}");
    let again = scenario(&server, "status");
    assert!(
        number(again["data"][0].as_str().unwrap(), "HIGHESTMODSEQ") > highest,
        "{again}"
    );
}
