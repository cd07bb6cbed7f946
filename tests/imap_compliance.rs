//! The groups of Dovecot's `imaptest` compliance scripts that spate failed
//! (issue 15), each replayed step by step over real sockets with the raw
//! line client: flag changes from two sessions on one message, `\Recent`
//! on messages that arrive by COPY or APPEND with flags, the wording of
//! `[EXPUNGEISSUED]`, SORT SUBJECT's collation, LSUB's `\Noselect`
//! parents, SEARCH FROM on an address with comments, and LIST-EXTENDED's
//! CHILDINFO. imaptest itself is not packaged, so it cannot run here.

mod common;
#[path = "common/line.rs"]
mod line;

use common::{TestServer, Tweaks};
use line::Line;

const USER: &str = "alice";
const PASSWORD: &str = "pw-alice";

fn server() -> TestServer {
    TestServer::start(Tweaks::default().user(USER, PASSWORD).listener("imap"))
}

/// A logged-in session.
fn login(server: &TestServer) -> Line {
    let mut c = Line::connect(server.listener("imap"));
    let greeting = c.line();
    assert!(greeting.starts_with("* OK"), "{greeting}");
    let reply = c.imap("l", &format!("LOGIN {USER} {PASSWORD}"));
    assert!(reply.starts_with("l OK"), "{reply}\n{}", c.transcript);
    c
}

/// Sends `command` and returns every line up to and with the tagged reply,
/// which must be OK.
fn ok(c: &mut Line, tag: &str, command: &str) -> Vec<String> {
    c.send(format!("{tag} {command}\r\n").as_bytes());
    let lines = until_tagged(c, tag);
    let last = lines.last().map(String::as_str).unwrap_or("");
    assert!(
        last.starts_with(&format!("{tag} OK")),
        "{command}: {last}\ntranscript:\n{}",
        c.transcript
    );
    lines
}

fn until_tagged(c: &mut Line, tag: &str) -> Vec<String> {
    let mut lines = Vec::new();
    loop {
        let l = c.line();
        let done = l.starts_with(&format!("{tag} "));
        lines.push(l);
        if done {
            return lines;
        }
    }
}

/// APPENDs `message` to `folder` with `flags` (e.g. `"(\\Seen)"` or `""`).
fn append(c: &mut Line, folder: &str, flags: &str, message: &str) {
    let flags = if flags.is_empty() {
        String::new()
    } else {
        format!("{flags} ")
    };
    c.send(format!("ap APPEND {folder} {flags}{{{}}}\r\n", message.len()).as_bytes());
    let go = c.line();
    assert!(go.starts_with('+'), "{go}\n{}", c.transcript);
    c.send(format!("{message}\r\n").as_bytes());
    let lines = until_tagged(c, "ap");
    let last = lines.last().map(String::as_str).unwrap_or("");
    assert!(last.starts_with("ap OK"), "{last}\n{}", c.transcript);
}

fn message(subject: &str, from: &str) -> String {
    format!(
        "From: {from}\r\nTo: alice@example.test\r\nSubject: {subject}\r\n\
         Date: Mon, 02 Nov 2026 10:00:00 +0000\r\n\r\nbody of {subject}\r\n"
    )
}

/// The flags in `* n FETCH (... FLAGS (...) ...)` lines for message `seq`,
/// the last one given.
fn fetched_flags(lines: &[String], seq: u32) -> Option<String> {
    let prefix = format!("* {seq} FETCH (");
    lines
        .iter()
        .filter(|l| l.starts_with(&prefix))
        .filter_map(|l| {
            let start = l.find("FLAGS (")? + "FLAGS (".len();
            let end = start + l[start..].find(')')?;
            Some(l[start..end].to_owned())
        })
        .next_back()
}

/// The flags of a FETCH FLAGS, sorted, without `\Recent` (which session
/// holds it is not what these tests look at).
fn flag_set(flags: &str) -> Vec<String> {
    let mut v: Vec<String> = flags
        .split_whitespace()
        .filter(|f| *f != "\\Recent")
        .map(str::to_owned)
        .collect();
    v.sort();
    v
}

// ------------------------------------------------- flags of two sessions

/// imaptest's `flags` group: session A adds `\Answered`, session B (not
/// synced since) removes `\Seen`; both changes must stay.
#[test]
fn a_flag_change_of_another_session_is_kept() {
    let server = server();
    let mut a = login(&server);
    append(
        &mut a,
        "INBOX",
        "(\\Seen)",
        &message("one", "x@example.test"),
    );
    ok(&mut a, "s", "SELECT INBOX");
    let mut b = login(&server);
    ok(&mut b, "s", "SELECT INBOX");

    let stored = ok(&mut a, "f1", "STORE 1 +FLAGS (\\Answered)");
    assert_eq!(
        flag_set(&fetched_flags(&stored, 1).expect("FETCH after STORE")),
        ["\\Answered", "\\Seen"].map(String::from)
    );
    // B has not synced: it still believes the flags are (\Seen).
    let stored = ok(&mut b, "f2", "STORE 1 -FLAGS (\\Seen)");
    assert_eq!(
        flag_set(&fetched_flags(&stored, 1).unwrap_or_default()),
        ["\\Answered"].map(String::from),
        "B's STORE answers the flags the message now has\n{}",
        b.transcript
    );
    // A .SILENT store still tells of a change the client did not ask for.
    let silent = ok(&mut b, "f3", "STORE 1 +FLAGS.SILENT (\\Flagged)");
    assert_eq!(fetched_flags(&silent, 1), None, "{}", b.transcript);

    let seen_by_a = ok(&mut a, "f4", "FETCH 1 FLAGS");
    assert_eq!(
        flag_set(&fetched_flags(&seen_by_a, 1).expect("FETCH FLAGS")),
        ["\\Answered", "\\Flagged"].map(String::from),
        "{}",
        a.transcript
    );
    let mut c = login(&server);
    let examined = ok(&mut c, "e", "EXAMINE INBOX");
    let fetched = ok(&mut c, "f", "FETCH 1 FLAGS");
    assert_eq!(
        flag_set(&fetched_flags(&fetched, 1).expect("FETCH FLAGS")),
        ["\\Answered", "\\Flagged"].map(String::from),
        "a new session reads the same from disk: {examined:?}"
    );
}

/// FETCH BODY[] sets `\Seen` on the flags on disk, not on a stale copy.
#[test]
fn fetching_a_body_keeps_another_sessions_flags() {
    let server = server();
    let mut a = login(&server);
    append(&mut a, "INBOX", "", &message("one", "x@example.test"));
    ok(&mut a, "s", "SELECT INBOX");
    let mut b = login(&server);
    ok(&mut b, "s", "SELECT INBOX");
    ok(&mut a, "f1", "STORE 1 +FLAGS (\\Flagged)");
    let fetched = ok(&mut b, "f2", "FETCH 1 BODY[]");
    assert_eq!(
        flag_set(&fetched_flags(&fetched, 1).expect("FLAGS with BODY[]")),
        ["\\Flagged", "\\Seen"].map(String::from),
        "{}",
        b.transcript
    );
    let seen_by_a = ok(&mut a, "f3", "FETCH 1 FLAGS");
    let flags = fetched_flags(&seen_by_a, 1).expect("FETCH FLAGS");
    assert!(
        flag_set(&flags).contains(&"\\Flagged".to_owned()),
        "{flags}"
    );
    assert!(flag_set(&flags).contains(&"\\Seen".to_owned()), "{flags}");
}

// ------------------------------------------------------------ \Recent

/// imaptest's `copy` and `append` groups: a message that arrives by COPY
/// or by APPEND with flags is `\Recent` in the next session that selects
/// its folder (RFC 3501 2.3.2), and keeps its flags.
#[test]
fn messages_copied_or_appended_with_flags_are_recent() {
    let server = server();
    let mut a = login(&server);
    ok(&mut a, "c", "CREATE Box");
    append(
        &mut a,
        "INBOX",
        "(\\Flagged)",
        &message("inbox", "x@example.test"),
    );
    append(
        &mut a,
        "Box",
        "(\\Seen)",
        &message("appended", "x@example.test"),
    );
    ok(&mut a, "s", "SELECT INBOX");
    ok(&mut a, "cp", "COPY 1 Box");
    ok(&mut a, "st", "STORE 1 +FLAGS (\\Answered)");
    ok(&mut a, "cp2", "COPY 1 Box");

    let mut b = login(&server);
    let selected = ok(&mut b, "s", "SELECT Box");
    assert!(
        selected.iter().any(|l| l == "* 3 RECENT"),
        "all three arrivals are \\Recent: {selected:?}"
    );
    let fetched = ok(&mut b, "f", "FETCH 1:3 FLAGS");
    for (seq, want) in [
        (1, "\\Recent \\Seen"),
        (2, "\\Flagged \\Recent"),
        (3, "\\Answered \\Flagged \\Recent"),
    ] {
        let flags = fetched_flags(&fetched, seq).expect("FETCH FLAGS");
        let mut got: Vec<&str> = flags.split_whitespace().collect();
        got.sort_unstable();
        assert_eq!(got.join(" "), want, "message {seq}: {fetched:?}");
    }
    // Only one session holds \Recent.
    let mut c = login(&server);
    let again = ok(&mut c, "s", "SELECT Box");
    assert!(again.iter().any(|l| l == "* 0 RECENT"), "{again:?}");
}

// ------------------------------------------------------- EXPUNGEISSUED

/// imaptest's `expunge` checks: a FETCH whose messages another session
/// expunges while the reply is being written completes with the rest and
/// says so in words imaptest knows (`OK [EXPUNGEISSUED] ... no longer
/// exist`, as Dovecot); the race is no I/O trouble, so nothing is logged
/// as a warning.
#[test]
fn a_fetch_racing_an_expunge_says_expungeissued_without_a_warning() {
    use std::io::Read;
    let server = server();
    let mut a = login(&server);
    append(&mut a, "INBOX", "", &message("first", "x@example.test"));
    let cur = server.mail_dir().join(USER).join("cur");
    // Far more than the socket buffers hold (about 20 MB).
    let count = 300usize;
    let filler =
        "0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqr\r\n".repeat(1000);
    for i in 0..count {
        let msg = format!("Subject: bulk {i:03}\r\n\r\n{filler}");
        std::fs::write(cur.join(format!("17000{i:05}.M1P1Q{i}.bulk:2,S")), msg).unwrap();
    }
    let selected = ok(&mut a, "s", "SELECT INBOX");
    assert!(
        selected
            .iter()
            .any(|l| l == &format!("* {} EXISTS", count + 1)),
        "{selected:?}"
    );
    let mut b = login(&server);
    ok(&mut b, "s", "SELECT INBOX");
    // A asks for every body and does not read: the server blocks on it.
    a.send(b"f FETCH 1:* BODY.PEEK[]\r\n");
    std::thread::sleep(std::time::Duration::from_millis(500));
    ok(
        &mut b,
        "d",
        &format!("STORE {}:* +FLAGS.SILENT (\\Deleted)", count - 10),
    );
    ok(&mut b, "x", "EXPUNGE");
    let mut bodies = 0;
    let tagged = loop {
        let l = a.line();
        if l.starts_with("f ") {
            break l;
        }
        if let Some((_, size)) = l.strip_suffix('}').and_then(|l| l.rsplit_once('{')) {
            let mut body = vec![0; size.parse().unwrap()];
            a.reader.read_exact(&mut body).unwrap();
            bodies += 1;
        }
    };
    assert!(
        bodies < count + 1,
        "some were expunged first: {bodies}\n{}",
        b.transcript
    );
    assert!(
        tagged.starts_with("f OK [EXPUNGEISSUED] ") && tagged.contains("no longer exist"),
        "{tagged}"
    );
    let warnings: Vec<String> = server
        .stderr_lines_with("WARN")
        .into_iter()
        .filter(|l| l.contains("imap") || l.contains("FETCH"))
        .collect();
    assert!(warnings.is_empty(), "{warnings:?}");
    let noop = ok(&mut a, "n", "NOOP");
    assert!(noop.iter().any(|l| l.ends_with(" EXPUNGE")), "{noop:?}");
}

// --------------------------------------------------------------- SORT

/// imaptest's `sort` group: SORT SUBJECT compares base subjects with
/// i;ascii-casemap (RFC 5256 3, RFC 4790 9.2: a-z folded to A-Z), so `[`
/// and `_` sort after the letters; FROM compares the same way.
#[test]
fn sort_subject_folds_to_upper_case() {
    let server = server();
    let mut a = login(&server);
    for (subject, from) in [
        ("_under", "_x@example.test"),
        ("[bracket", "zed@example.test"),
        ("beta", "Amy@example.test"),
        ("Alpha", "bob@example.test"),
    ] {
        append(&mut a, "INBOX", "", &message(subject, from));
    }
    ok(&mut a, "s", "SELECT INBOX");
    let sorted = ok(&mut a, "o", "SORT (SUBJECT) UTF-8 ALL");
    assert!(
        sorted.iter().any(|l| l == "* SORT 4 3 2 1"),
        "Alpha beta [bracket _under: {sorted:?}"
    );
    let sorted = ok(&mut a, "o2", "SORT (FROM) UTF-8 ALL");
    assert!(
        sorted.iter().any(|l| l == "* SORT 3 4 2 1"),
        "AMY BOB ZED _X: {sorted:?}"
    );
}

// ------------------------------------------------ LSUB and LIST-EXTENDED

/// Folders `Top/Sub` (subscribed, `Top` not) and `Lone` (subscribed).
fn subscribed_children(server: &TestServer) -> Line {
    let mut a = login(server);
    ok(&mut a, "c1", "CREATE Top/Sub");
    ok(&mut a, "c2", "CREATE Lone");
    ok(&mut a, "u1", "SUBSCRIBE Top/Sub");
    ok(&mut a, "u2", "SUBSCRIBE Lone");
    a
}

/// imaptest's `lsub` group: LSUB with `%` returns the parent of a
/// subscribed child, flagged `\Noselect` (RFC 3501 6.3.9), and not the
/// child; with `*` only the subscribed names.
#[test]
fn lsub_percent_shows_the_parent_of_a_subscribed_child_as_noselect() {
    let server = server();
    let mut a = subscribed_children(&server);
    let mut lsub = ok(&mut a, "l", "LSUB \"\" %");
    lsub.pop();
    lsub.sort();
    assert_eq!(
        lsub,
        ["* LSUB () \"/\" Lone", "* LSUB (\\Noselect) \"/\" Top"],
        "{}",
        a.transcript
    );
    let mut lsub = ok(&mut a, "l2", "LSUB \"\" *");
    lsub.pop();
    lsub.sort();
    assert_eq!(lsub, ["* LSUB () \"/\" Lone", "* LSUB () \"/\" Top/Sub",]);
    let lsub = ok(&mut a, "l3", "LSUB \"\" Top/%");
    assert_eq!(lsub[0], "* LSUB () \"/\" Top/Sub", "{lsub:?}");
    assert_eq!(lsub.len(), 2, "{lsub:?}");
}

/// imaptest's `list-extended` group: LIST (SUBSCRIBED RECURSIVEMATCH)
/// returns CHILDINFO ("SUBSCRIBED") for names with a subscribed
/// descendant (RFC 5258 3.5, examples 8 and 9).
#[test]
fn list_recursivematch_returns_childinfo() {
    let server = server();
    let mut a = subscribed_children(&server);
    let mut list = ok(&mut a, "l", "LIST (SUBSCRIBED RECURSIVEMATCH) \"\" %");
    list.pop();
    list.sort();
    assert_eq!(
        list,
        [
            "* LIST (\\HasNoChildren \\Subscribed) \"/\" Lone",
            // RFC 5258 example 8 A2: Top is only implied by Top/Sub.
            "* LIST (\\NonExistent \\HasChildren) \"/\" Top (\"CHILDINFO\" (\"SUBSCRIBED\"))",
        ],
        "{}",
        a.transcript
    );
    // With "*" the children are listed too, and the parents still carry
    // CHILDINFO (RFC 5258 example 9).
    let list = ok(&mut a, "l2", "LIST (SUBSCRIBED RECURSIVEMATCH) \"\" *");
    assert!(
        list.iter().any(|l| l
            == "* LIST (\\NonExistent \\HasChildren) \"/\" Top (\"CHILDINFO\" (\"SUBSCRIBED\"))"),
        "{list:?}"
    );
    assert!(
        list.iter()
            .any(|l| l == "* LIST (\\HasNoChildren \\Subscribed) \"/\" Top/Sub"),
        "{list:?}"
    );
    // Without RECURSIVEMATCH: no CHILDINFO, no unsubscribed parents.
    let list = ok(&mut a, "l3", "LIST (SUBSCRIBED) \"\" %");
    assert!(
        !list
            .iter()
            .any(|l| l.contains("CHILDINFO") || l.contains("Top")),
        "{list:?}"
    );
}

// ------------------------------------------------------ SEARCH addresses

/// imaptest's `search-addresses` group: SEARCH FROM/TO/CC with a whole
/// address matches the address ENVELOPE parses, comments and white space
/// in the header or not (RFC 3501 6.4.4 searches the structure's field).
#[test]
fn search_from_matches_the_parsed_address_despite_comments() {
    let server = server();
    let mut a = login(&server);
    append(
        &mut a,
        "INBOX",
        "",
        &message(
            "one",
            "Some One <some.one (the first) @ (at home) example.org>",
        ),
    );
    append(
        &mut a,
        "INBOX",
        "",
        &message("two", "user(x)@example.net (User Two)"),
    );
    append(&mut a, "INBOX", "", &message("three", "other@example.com"));
    ok(&mut a, "s", "SELECT INBOX");
    let envelope = ok(&mut a, "e", "FETCH 1 ENVELOPE");
    assert!(
        envelope[0].contains("((\"Some One\" NIL \"some.one\" \"example.org\"))"),
        "{envelope:?}"
    );
    for (query, want) in [
        ("FROM some.one@example.org", "* SEARCH 1"),
        ("FROM user@example.net", "* SEARCH 2"),
        ("FROM \"Some One <some.one@example.org>\"", "* SEARCH 1"),
        ("FROM \"User Two\"", "* SEARCH 2"),
        ("FROM example", "* SEARCH 1 2 3"),
        ("FROM nobody@example.org", "* SEARCH"),
        ("TO alice@example.test", "* SEARCH 1 2 3"),
    ] {
        let found = ok(&mut a, "f", &format!("SEARCH {query}"));
        assert_eq!(found[0], want, "SEARCH {query}");
    }
}
