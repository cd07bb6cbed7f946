//! Transcript tests of RFC 7162 CONDSTORE and QRESYNC through the real reader, parser and
//! session (the harness of `session_tests`, of which this is a child module). It refuses
//! nothing but a wrong reply: every test checks what a client would see.

use super::*;

/// The number after `name ` in `text` (e.g. `HIGHESTMODSEQ 7`), the first
/// one.
fn number_after(text: &str, name: &str) -> u64 {
    let start = text
        .find(name)
        .unwrap_or_else(|| panic!("no {name} in {text}"))
        + name.len();
    text[start..]
        .trim_start_matches(['(', ' '])
        .chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .unwrap()
}

fn three_messages(backend: &TestBackend) {
    for n in 1..=3 {
        backend.deliver(&format!("m{n}"), "body");
    }
}

fn uid_validity(c: &mut Client, backend: &TestBackend) -> u64 {
    let r = c.send(backend, "v STATUS INBOX (UIDVALIDITY)\r\n");
    number_after(&r, "UIDVALIDITY")
}

#[test]
fn capabilities_and_enable() {
    let backend = TestBackend::new();
    let mut c = Client::logged_in(&backend);
    let r = c.send(&backend, "a CAPABILITY\r\n");
    assert!(r.contains(" CONDSTORE QRESYNC "), "{r}");
    // Not enabled yet: SELECT says nothing of modseqs.
    three_messages(&backend);
    let r = c.send(&backend, "b SELECT INBOX\r\n");
    assert!(!r.contains("HIGHESTMODSEQ"), "{r}");
    // Enabling with a mailbox selected reports its HIGHESTMODSEQ once.
    let r = c.send(&backend, "c ENABLE CONDSTORE\r\n");
    assert!(r.starts_with("* OK [HIGHESTMODSEQ "), "{r}");
    assert!(
        r.ends_with("* ENABLED CONDSTORE\r\nc OK ENABLE completed\r\n"),
        "{r}"
    );
    let r = c.send(&backend, "d ENABLE CONDSTORE QRESYNC X-UNKNOWN\r\n");
    assert_eq!(r, "* ENABLED QRESYNC\r\nd OK ENABLE completed\r\n");
    // A SELECT that replaces the mailbox says CLOSED first (3.2.11).
    let r = c.send(&backend, "e EXAMINE INBOX\r\n");
    assert!(r.starts_with("* OK [CLOSED]"), "{r}");
    assert!(r.contains("* OK [HIGHESTMODSEQ "), "{r}");
    // Without a selected mailbox there is nothing to close.
    let r = c.send(&backend, "f UNSELECT\r\ng SELECT INBOX\r\n");
    assert!(!r.contains("CLOSED"), "{r}");
}

#[test]
fn select_condstore_and_status_report_the_highest_modseq() {
    let backend = TestBackend::new();
    three_messages(&backend);
    let mut c = Client::logged_in(&backend);
    let r = c.send(&backend, "a STATUS INBOX (HIGHESTMODSEQ MESSAGES)\r\n");
    let status = number_after(&r, "HIGHESTMODSEQ");
    assert!(status >= 4, "three appends after the first modseq: {r}");
    let r = c.send(&backend, "b SELECT INBOX (CONDSTORE)\r\n");
    assert_eq!(number_after(&r, "[HIGHESTMODSEQ"), status, "{r}");
    // An empty folder has a positive HIGHESTMODSEQ too.
    c.send(&backend, "c CREATE Empty\r\n");
    let r = c.send(&backend, "d EXAMINE Empty\r\n");
    assert!(number_after(&r, "[HIGHESTMODSEQ") >= 1, "{r}");
}

#[test]
fn changedsince_gives_exactly_the_messages_another_session_changed() {
    let backend = TestBackend::new();
    three_messages(&backend);
    let mut a = Client::selected(&backend);
    let mut b = Client::logged_in(&backend);
    let r = b.send(&backend, "s SELECT INBOX (CONDSTORE)\r\n");
    let before = number_after(&r, "[HIGHESTMODSEQ");
    let r = b.send(&backend, "f FETCH 1:* (MODSEQ)\r\n");
    let first = number_after(&r, "* 1 FETCH (MODSEQ");
    assert!(first <= before);

    a.send(&backend, "x STORE 2 +FLAGS (\\Flagged)\r\n");
    // Changing nothing does not move the modseq (RFC 7162 3.1).
    a.send(&backend, "y STORE 2 +FLAGS (\\Flagged)\r\n");

    let r = b.send(
        &backend,
        &format!("c UID FETCH 1:* (FLAGS) (CHANGEDSINCE {before})\r\n"),
    );
    let fetches: Vec<&str> = lines(&r)
        .into_iter()
        .filter(|l| l.starts_with("* ") && l.contains(" FETCH "))
        .collect();
    // The unsolicited update and the FETCH answer: both message 2 only.
    assert!(!fetches.is_empty(), "{r}");
    assert!(fetches.iter().all(|l| l.starts_with("* 2 FETCH (")), "{r}");
    let answer = fetches.last().unwrap();
    assert!(
        answer.contains("UID 2") && answer.contains("\\Flagged"),
        "{r}"
    );
    let changed = number_after(answer, "MODSEQ");
    assert!(changed > before, "{r}");
    // The untagged update for the other session's change carries MODSEQ.
    assert!(fetches[0].contains("MODSEQ ("), "{r}");
    let r = b.send(
        &backend,
        &format!("d FETCH 1:* (FLAGS) (CHANGEDSINCE {changed})\r\n"),
    );
    assert_eq!(r, "d OK FETCH completed\r\n");
    // Strictly increasing: the next change is above the last.
    a.send(&backend, "z STORE 1 +FLAGS (\\Seen)\r\n");
    let r = b.send(&backend, "e NOOP\r\n");
    assert!(number_after(&r, "MODSEQ") > changed, "{r}");
    // SEARCH MODSEQ ends with the highest modseq of what it found.
    let r = b.send(&backend, &format!("g UID SEARCH MODSEQ {}\r\n", before + 1));
    let highest = number_after(&r, "(MODSEQ");
    // RFC 7162 7: `(MODSEQ n)`, no inner parentheses.
    assert!(
        r.starts_with(&format!("* SEARCH 1 2 (MODSEQ {highest})\r\n")),
        "{r}"
    );
    assert!(highest > changed);
    let r = b.send(&backend, &format!("h SEARCH MODSEQ {}\r\n", highest + 1));
    assert_eq!(r, "* SEARCH\r\nh OK SEARCH completed\r\n");
    // A FETCH that sets \Seen reports the new MODSEQ with the FLAGS.
    let r = b.send(&backend, "i FETCH 3 (BODY[TEXT])\r\n");
    assert!(r.starts_with("* 3 FETCH (FLAGS (\\Seen) MODSEQ ("), "{r}");
    assert!(number_after(&r, "MODSEQ") > highest, "{r}");
}

#[test]
fn unchangedsince_refuses_messages_changed_since() {
    let backend = TestBackend::new();
    three_messages(&backend);
    let mut a = Client::selected(&backend);
    let mut b = Client::logged_in(&backend);
    let r = b.send(&backend, "s SELECT INBOX (CONDSTORE)\r\n");
    let known = number_after(&r, "[HIGHESTMODSEQ");
    a.send(&backend, "x STORE 3 +FLAGS (\\Seen)\r\n");
    let r = b.send(
        &backend,
        &format!("c STORE 1,3 (UNCHANGEDSINCE {known}) +FLAGS.SILENT (\\Deleted)\r\n"),
    );
    // Message 1 is stored and reported with its MODSEQ even though
    // silent; message 3 changed since and is left alone.
    assert!(r.contains("* 1 FETCH (UID 1 MODSEQ ("), "{r}");
    assert!(
        r.ends_with("c OK [MODIFIED 3] Conditional STORE failed for some messages\r\n"),
        "{r}"
    );
    let r = b.send(&backend, "d FETCH 3 (FLAGS)\r\n");
    assert!(r.contains("FLAGS (\\Seen)"), "untouched: {r}");
    // UID STORE lists UIDs; 0 always fails.
    let r = b.send(
        &backend,
        "e UID STORE 2 (UNCHANGEDSINCE 0) +FLAGS (\\Answered)\r\n",
    );
    assert_eq!(
        r,
        "e OK [MODIFIED 2] Conditional STORE failed for some messages\r\n"
    );
}

#[test]
fn qresync_select_reports_vanished_and_changed_flags() {
    let backend = TestBackend::new();
    for n in 1..=6 {
        backend.deliver(&format!("m{n}"), "body");
    }
    let mut b = Client::logged_in(&backend);
    let validity = uid_validity(&mut b, &backend);
    // QRESYNC parameters need ENABLE QRESYNC first.
    let r = b.send(
        &backend,
        &format!("a SELECT INBOX (QRESYNC ({validity} 1))\r\n"),
    );
    assert!(r.starts_with("a BAD"), "{r}");
    b.send(&backend, "b ENABLE QRESYNC\r\n");
    let r = b.send(&backend, "c SELECT INBOX\r\n");
    let known = number_after(&r, "[HIGHESTMODSEQ");
    b.send(&backend, "d UNSELECT\r\n");

    let mut a = Client::selected(&backend);
    a.send(&backend, "x STORE 2,5 +FLAGS.SILENT (\\Deleted)\r\n");
    a.send(&backend, "y EXPUNGE\r\n");
    a.send(&backend, "z UID STORE 3 +FLAGS.SILENT (\\Flagged)\r\n");

    let r = b.send(
        &backend,
        &format!("e SELECT INBOX (QRESYNC ({validity} {known}))\r\n"),
    );
    let now = number_after(&r, "[HIGHESTMODSEQ");
    let l = lines(&r);
    let vanished = l
        .iter()
        .position(|x| *x == "* VANISHED (EARLIER) 2,5")
        .expect(&r);
    let fetch = l
        .iter()
        .position(|x| x.starts_with("* 2 FETCH (UID 3 FLAGS (\\Flagged) MODSEQ ("))
        .expect(&r);
    assert!(vanished < fetch, "VANISHED before FETCH: {r}");
    assert_eq!(l.iter().filter(|x| x.contains(" FETCH ")).count(), 1, "{r}");
    assert!(r.ends_with("e OK [READ-WRITE] SELECT completed\r\n"), "{r}");

    // Known UIDs narrow the report; a wrong UIDVALIDITY skips it.
    let r = b.send(
        &backend,
        &format!("f EXAMINE INBOX (QRESYNC ({validity} {known} 3:6))\r\n"),
    );
    assert!(r.contains("* VANISHED (EARLIER) 5\r\n"), "{r}");
    let r = b.send(
        &backend,
        &format!("g EXAMINE INBOX (QRESYNC ({} {known}))\r\n", validity + 1),
    );
    assert!(!r.contains("VANISHED") && !r.contains(" FETCH "), "{r}");

    // UID FETCH (VANISHED): the same from inside the mailbox.
    let r = b.send(
        &backend,
        &format!("h UID FETCH 1:* (FLAGS) (CHANGEDSINCE {known} VANISHED)\r\n"),
    );
    assert!(
        r.starts_with("* VANISHED (EARLIER) 2,5\r\n* 2 FETCH (UID 3 "),
        "{r}"
    );
    let r = b.send(
        &backend,
        &format!("i FETCH 1:* (FLAGS) (CHANGEDSINCE {known} VANISHED)\r\n"),
    );
    assert!(r.starts_with("i BAD"), "{r}");

    // From a later modseq only the later expunge is named: the history,
    // not "everything that is gone".
    a.send(
        &backend,
        "w UID STORE 6 +FLAGS.SILENT (\\Deleted)\r\nv EXPUNGE\r\n",
    );
    let r = b.send(
        &backend,
        &format!("j UID FETCH 1:* (FLAGS) (CHANGEDSINCE {now} VANISHED)\r\n"),
    );
    assert!(r.contains("* VANISHED (EARLIER) 6\r\n"), "{r}");
}

#[test]
fn under_qresync_expunges_are_vanished_responses() {
    let backend = TestBackend::new();
    three_messages(&backend);
    let mut a = Client::logged_in(&backend);
    a.send(&backend, "e ENABLE QRESYNC\r\n");
    let r = a.send(&backend, "s SELECT INBOX\r\n");
    let before = number_after(&r, "[HIGHESTMODSEQ");
    let mut b = Client::selected(&backend);
    b.send(&backend, "x STORE 1 +FLAGS.SILENT (\\Deleted)\r\n");
    // Another session's flag change: UID and MODSEQ in the update.
    let r = a.send(&backend, "n NOOP\r\n");
    assert!(r.starts_with("* 1 FETCH (UID 1 FLAGS (\\Deleted "), "{r}");
    assert!(r.contains(") MODSEQ ("), "{r}");
    let r = a.send(
        &backend,
        "d STORE 3 +FLAGS.SILENT (\\Deleted)\r\nf EXPUNGE\r\n",
    );
    let l = lines(&r);
    assert!(l.contains(&"* VANISHED 1,3"), "{r}");
    assert!(!r.contains(" EXPUNGE\r\n"), "{r}");
    let after = number_after(l.last().unwrap(), "[HIGHESTMODSEQ");
    assert!(after > before, "{r}");
    assert!(l.last().unwrap().starts_with("f OK [HIGHESTMODSEQ "), "{r}");
    // The other session (no QRESYNC) still gets EXPUNGE.
    let r = b.send(&backend, "n NOOP\r\n");
    assert_eq!(r, "* 1 EXPUNGE\r\n* 2 EXPUNGE\r\nn OK NOOP completed\r\n");
    // And expunges by another session reach a QRESYNC one as VANISHED.
    b.send(
        &backend,
        "y STORE 1 +FLAGS.SILENT (\\Deleted)\r\nz EXPUNGE\r\n",
    );
    let r = a.send(&backend, "m NOOP\r\n");
    assert_eq!(r, "* VANISHED 2\r\nm OK NOOP completed\r\n");
}
