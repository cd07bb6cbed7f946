//! Tests of the IMAP core: the reader's framing and bounds, every command form through the
//! parser, reply encoding, and random input. It refuses nothing but a panic or a wrong value.

use std::borrow::Cow;
use std::num::NonZeroU32;

use chrono::{NaiveDate, TimeZone};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::command::*;
use super::parser::{parse_command, ParseError, Usage, MAX_DEPTH};
use super::reader::{
    is_done, CommandReader, Limit, LineStep, ReaderConfig, Step, CONTINUATION, LITERAL_MINUS_MAX,
};
use super::response::*;

// ---------------------------------------------------------------- helpers

fn body(line: &str) -> CommandBody<'_> {
    match parse_command(line.as_bytes()) {
        Ok(c) => c.body,
        Err(e) => panic!("{line:?}: {e:?}"),
    }
}

fn err(line: &str) -> ParseError {
    match parse_command(line.as_bytes()) {
        Ok(c) => panic!("{line:?} parsed: {c:?}"),
        Err(e) => e.error,
    }
}

fn b(s: &str) -> IString<'_> {
    Cow::Borrowed(s.as_bytes())
}

fn mbox(s: &str) -> Mailbox<'_> {
    Mailbox::new(b(s))
}

fn n(v: u32) -> SeqNumber {
    SeqNumber::Value(NonZeroU32::new(v).unwrap())
}

fn set(ranges: &[(SeqNumber, SeqNumber)]) -> SequenceSet {
    SequenceSet::Ranges(
        ranges
            .iter()
            .map(|&(start, end)| SeqRange { start, end })
            .collect(),
    )
}

fn one(v: u32) -> SequenceSet {
    set(&[(n(v), n(v))])
}

fn date(y: i32, m: u32, d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, d).unwrap()
}

/// What the reader produced, owned so runs can be compared.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Ev {
    Cmd(Vec<u8>),
    Cont,
    Rej(Option<String>, Option<String>, Limit),
}

fn drain(reader: &mut CommandReader, out: &mut Vec<Ev>) {
    loop {
        match reader.next_command() {
            Step::Command(c) => out.push(Ev::Cmd(c.to_vec())),
            Step::NeedContinuation => out.push(Ev::Cont),
            Step::Rejected(r) => out.push(Ev::Rej(
                r.tag.map(str::to_owned),
                r.command.map(str::to_owned),
                r.limit,
            )),
            Step::Incomplete => return,
        }
    }
}

/// Feeds `chunks` in order, draining after each push; checks the buffer
/// bound all along.
fn run<'a>(config: ReaderConfig, chunks: impl IntoIterator<Item = &'a [u8]>) -> Vec<Ev> {
    let mut reader = CommandReader::new(config);
    let mut out = Vec::new();
    for chunk in chunks {
        let mut rest = chunk;
        loop {
            let taken = reader.push(rest);
            assert!(reader.buffered() <= config.capacity());
            rest = &rest[taken..];
            drain(&mut reader, &mut out);
            if rest.is_empty() {
                break;
            }
            assert!(
                taken > 0 || reader.buffered() < config.capacity(),
                "reader stuck with a full buffer"
            );
        }
    }
    out
}

fn cmd(s: &str) -> Ev {
    Ev::Cmd(s.as_bytes().to_vec())
}

fn small() -> ReaderConfig {
    ReaderConfig {
        max_line: 64,
        max_literal: 100,
        max_nonsync_literal: 20,
        max_command: 200,
    }
}

// ----------------------------------------------------------------- reader

#[test]
fn reader_plain_lines_and_pipelining() {
    let evs = run(
        ReaderConfig::default(),
        [&b"a NOOP\r\nb CAPABILITY\nc LOG"[..], b"OUT\r\n"],
    );
    assert_eq!(evs, [cmd("a NOOP"), cmd("b CAPABILITY"), cmd("c LOGOUT")]);
}

#[test]
fn reader_synchronising_literal_asks_for_continuation() {
    let mut r = CommandReader::new(ReaderConfig::default());
    r.push(b"a LOGIN {3}\r\n");
    assert_eq!(r.next_command(), Step::NeedContinuation);
    assert_eq!(r.next_command(), Step::Incomplete);
    r.push(b"tim {4}\r\n");
    assert_eq!(r.next_command(), Step::NeedContinuation);
    r.push(b"pa\r\n\r\n");
    let Step::Command(c) = r.next_command() else {
        panic!()
    };
    assert_eq!(c, b"a LOGIN {3}\r\ntim {4}\r\npa\r\n");
    let c = parse_command(c).unwrap();
    assert_eq!(
        c.body,
        CommandBody::Login {
            username: b("tim"),
            password: b("pa\r\n")
        }
    );
    assert_eq!(CONTINUATION, b"+ Ready for literal data\r\n");
}

#[test]
fn reader_non_synchronising_and_literal8() {
    let evs = run(
        ReaderConfig::default(),
        [&b"a LOGIN {3+}\r\ntim {2+}\r\npw\r\nb APPEND x ~{3}\r\n\x00\x01\x02\r\n"[..]],
    );
    assert_eq!(
        evs,
        [
            cmd("a LOGIN {3+}\r\ntim {2+}\r\npw"),
            Ev::Cont,
            Ev::Cmd(b"b APPEND x ~{3}\r\n\x00\x01\x02".to_vec()),
        ]
    );
    let Ev::Cmd(append) = &evs[2] else { panic!() };
    match parse_command(append).unwrap().body {
        CommandBody::Append {
            message, binary, ..
        } => {
            assert_eq!(message, b"\x00\x01\x02");
            assert!(binary);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn reader_literal_holding_crlf_and_braces_is_not_reframed() {
    // The literal's own content ends in "{5}\r\n": it must not be taken as
    // another literal marker.
    let evs = run(
        ReaderConfig::default(),
        [&b"a LOGIN {7+}\r\nx {5}\r\n \"p\"\r\nb NOOP\r\n"[..]],
    );
    assert_eq!(evs, [cmd("a LOGIN {7+}\r\nx {5}\r\n \"p\""), cmd("b NOOP")]);
}

#[test]
fn reader_zero_length_literals() {
    let evs = run(
        ReaderConfig::default(),
        [&b"a LOGIN {0}\r\n {0+}\r\n\r\n"[..]],
    );
    assert_eq!(evs, [Ev::Cont, cmd("a LOGIN {0}\r\n {0+}\r\n")]);
    let Ev::Cmd(c) = &evs[1] else { panic!() };
    assert_eq!(
        parse_command(c).unwrap().body,
        CommandBody::Login {
            username: b(""),
            password: b("")
        }
    );
}

#[test]
fn reader_refuses_big_synchronising_literal_without_continuation() {
    let evs = run(small(), [&b"a1 APPEND INBOX {101}\r\nb NOOP\r\n"[..]]);
    assert_eq!(
        evs,
        [
            Ev::Rej(
                Some("a1".into()),
                Some("APPEND".into()),
                Limit::LiteralTooBig {
                    size: 101,
                    nonsync: false
                }
            ),
            cmd("b NOOP"),
        ]
    );
}

#[test]
fn reader_swallows_refused_non_synchronising_literal() {
    // LITERAL-: 21 octets is over the non-sync limit of 20, though under
    // max_literal; they are dropped, then the rest of the command's line
    // (and a further literal in it), then the next command parses.
    let evs = run(
        small(),
        [&b"a LOGIN {21+}\r\n{5}\r\n\r\n\r\n\r\n\r\nx {3+}\r\nabc\r\nb NOOP\r\n"[..]],
    );
    assert_eq!(
        evs,
        [
            Ev::Rej(
                Some("a".into()),
                Some("LOGIN".into()),
                Limit::LiteralTooBig {
                    size: 21,
                    nonsync: true
                }
            ),
            cmd("b NOOP"),
        ]
    );
}

#[test]
fn reader_discard_ends_at_a_synchronising_literal() {
    // After the BAD the client will not send a sync literal's octets.
    let evs = run(
        small(),
        [&b"a LOGIN {21+}\r\n012345678901234567890 {5}\r\nb NOOP\r\n"[..]],
    );
    assert_eq!(evs.len(), 2);
    assert_eq!(evs[1], cmd("b NOOP"));
}

#[test]
fn reader_command_total_is_bounded() {
    // Each literal fits, the sum does not.
    let evs = run(
        small(),
        [
            &b"t LOGIN {90}\r\n"[..],
            &[b'x'; 90],
            b" {90}\r\nt2 NOOP\r\n",
        ],
    );
    assert_eq!(
        evs,
        [
            Ev::Cont,
            Ev::Rej(Some("t".into()), Some("LOGIN".into()), Limit::CommandTooBig),
            cmd("t2 NOOP"),
        ]
    );
}

#[test]
fn reader_overlong_line_is_rejected_and_dropped_with_bounded_memory() {
    let config = small();
    let mut long = b"tag SEARCH ".to_vec();
    long.extend(std::iter::repeat_n(b'x', 1_000_000));
    long.extend_from_slice(b"\r\nb NOOP\r\n");
    let evs = run(config, long.chunks(4096));
    assert_eq!(
        evs,
        [
            Ev::Rej(
                Some("tag".into()),
                Some("SEARCH".into()),
                Limit::LineTooLong
            ),
            cmd("b NOOP"),
        ]
    );
    // Without a tag the rejection is untagged.
    let evs = run(config, [&[b'x'; 300][..], b"\r\n"]);
    assert_eq!(evs, [Ev::Rej(None, None, Limit::LineTooLong)]);
}

#[test]
fn reader_overlong_line_ending_in_non_sync_literal_swallows_it() {
    let mut input = b"a SEARCH ".to_vec();
    input.extend(std::iter::repeat_n(b'y', 500));
    input.extend_from_slice(b" {4+}\r\n\r\n\r\n\r\nb NOOP\r\n");
    for chunk in [1, 7, 64, 1000] {
        let evs = run(small(), input.chunks(chunk));
        assert_eq!(evs.len(), 2, "chunk {chunk}: {evs:?}");
        assert_eq!(evs[1], cmd("b NOOP"));
    }
}

#[test]
fn reader_huge_non_sync_literal_is_dropped_in_bounded_memory() {
    let config = ReaderConfig {
        max_line: 1024,
        max_literal: 10_000,
        max_nonsync_literal: LITERAL_MINUS_MAX,
        max_command: 12_000,
    };
    let size = 5_000_000usize;
    let mut input = format!("A001 APPEND INBOX {{{size}+}}\r\n").into_bytes();
    input.extend(std::iter::repeat_n(b'm', size));
    input.extend_from_slice(b"\r\nA002 NOOP\r\n");
    let evs = run(config, input.chunks(65536));
    assert_eq!(
        evs,
        [
            Ev::Rej(
                Some("A001".into()),
                Some("APPEND".into()),
                Limit::LiteralTooBig {
                    size: size as u64,
                    nonsync: true
                }
            ),
            cmd("A002 NOOP"),
        ]
    );
}

#[test]
fn reader_literal_size_overflow_is_refused() {
    let evs = run(
        small(),
        [&b"a LOGIN {99999999999999999999999}\r\nb NOOP\r\n"[..]],
    );
    assert!(matches!(
        evs[0],
        Ev::Rej(_, _, Limit::LiteralTooBig { size: u64::MAX, .. })
    ));
    assert_eq!(evs[1], cmd("b NOOP"));
}

fn chunking_script() -> Vec<u8> {
    let mut s = Vec::new();
    s.extend_from_slice(b"1 CAPABILITY\r\n");
    s.extend_from_slice(b"2 LOGIN {3}\r\ntim {5+}\r\nsecre\r\n");
    s.extend_from_slice(b"3 SELECT inbox (CONDSTORE)\r\n");
    let message = b"Subject: hi\r\n\r\nbody {3}\r\nline\r\n";
    s.extend_from_slice(format!("4 APPEND Drafts (\\Seen) {{{}}}\r\n", message.len()).as_bytes());
    s.extend_from_slice(message);
    s.extend_from_slice(b"\r\n\r\n"); // an empty line after it is skipped
    s.extend_from_slice(b"5 APPEND Drafts {150}\r\n"); // refused, nothing follows
    s.extend_from_slice(b"6 LOGIN {25+}\r\n0123456789012345678901234 x\r\n"); // refused, swallowed
    s.extend_from_slice(b"7 SEARCH ");
    s.extend(std::iter::repeat_n(b'z', 100));
    s.extend_from_slice(b"\r\n"); // too long
    s.extend_from_slice(
        b"8 UID FETCH 1:* (FLAGS BODY.PEEK[HEADER.FIELDS (From {4+}\r\nTo\r\n)])\r\n",
    );
    s.extend_from_slice(b"9 IDLE\r\n");
    s
}

#[test]
fn reader_gives_the_same_steps_whatever_the_chunking() {
    let script = chunking_script();
    let whole = run(small(), [&script[..]]);
    assert_eq!(whole.len(), 11, "{whole:?}");
    assert_eq!(whole.iter().filter(|e| **e == Ev::Cont).count(), 2);
    assert!(matches!(whole.last(), Some(Ev::Cmd(c)) if c == b"9 IDLE"));
    let bytewise = run(small(), script.chunks(1));
    assert_eq!(bytewise, whole);
    let mut rng = StdRng::seed_from_u64(0x1a9a);
    for _ in 0..300 {
        let mut chunks = Vec::new();
        let mut rest = &script[..];
        while !rest.is_empty() {
            let k = rng.gen_range(1..=rest.len().min(40));
            chunks.push(&rest[..k]);
            rest = &rest[k..];
        }
        assert_eq!(run(small(), chunks), whole);
    }
    // And every command in it that framed parses (or is refused) sanely.
    for ev in &whole {
        if let Ev::Cmd(c) = ev {
            parse_command(c).unwrap();
        }
    }
}

#[test]
fn reader_push_is_bounded_by_capacity() {
    let config = small();
    let mut r = CommandReader::new(config);
    let flood = vec![b'a'; config.capacity() * 3];
    let taken = r.push(&flood);
    assert_eq!(taken, config.capacity());
    assert_eq!(r.push(b"x"), 0);
    // Draining (here: rejecting and discarding) frees room.
    assert!(matches!(r.next_command(), Step::Rejected(_)));
    assert_eq!(r.next_command(), Step::Incomplete);
    assert!(r.push(&flood) > 0);
    r.clear();
    assert_eq!(r.buffered(), 0);
    r.push(b"a NOOP\r\n");
    assert_eq!(r.next_command(), Step::Command(b"a NOOP"));
}

#[test]
fn reader_raw_lines_for_idle_and_sasl() {
    let mut r = CommandReader::new(small());
    r.push(b"a IDLE\r\ndone\r\nb AUTHENTICATE PLAIN\r\nAHRpbQB0YW5zdGFhZg==\r\n");
    assert_eq!(r.next_command(), Step::Command(b"a IDLE"));
    let LineStep::Line(line) = r.next_line() else {
        panic!()
    };
    assert!(is_done(line));
    assert!(!is_done(b"DONE "));
    assert_eq!(r.next_command(), Step::Command(b"b AUTHENTICATE PLAIN"));
    assert_eq!(r.next_line(), LineStep::Line(b"AHRpbQB0YW5zdGFhZg=="));
    assert_eq!(r.next_line(), LineStep::Incomplete);
    // An over-long raw line is dropped, reported once at its end.
    r.push(&[b'q'; 100]);
    assert_eq!(r.next_line(), LineStep::Incomplete);
    r.push(b"qqq\r\nDONE\r\n");
    assert_eq!(r.next_line(), LineStep::TooLong);
    assert_eq!(r.next_line(), LineStep::Line(b"DONE"));
}

#[test]
fn reader_rejects_in_mid_command_line_after_literal() {
    // The line limit counts every line of the command.
    let mut input = b"a LOGIN {2+}\r\nab ".to_vec();
    input.extend(std::iter::repeat_n(b'p', 70));
    input.extend_from_slice(b"\r\nb NOOP\r\n");
    let evs = run(small(), [&input[..]]);
    assert_eq!(
        evs,
        [
            Ev::Rej(Some("a".into()), Some("LOGIN".into()), Limit::LineTooLong),
            cmd("b NOOP"),
        ]
    );
}

// ------------------------------------------------------ parser: any state

#[test]
fn any_state_commands_and_case() {
    assert_eq!(body("a CAPABILITY"), CommandBody::Capability);
    assert_eq!(body("a capability"), CommandBody::Capability);
    assert_eq!(body("a NoOp"), CommandBody::Noop);
    assert_eq!(body("a LOGOUT"), CommandBody::Logout);
    assert_eq!(err("a LOGOUT\r\n"), ParseError::Syntax(Usage::NoArguments));
    assert_eq!(body("a STARTTLS"), CommandBody::StartTls);
    assert_eq!(body("a NAMESPACE"), CommandBody::Namespace);
    assert_eq!(body("a CHECK"), CommandBody::Check);
    assert_eq!(body("a close"), CommandBody::Close);
    assert_eq!(body("a UNSELECT"), CommandBody::Unselect);
    assert_eq!(body("a EXPUNGE"), CommandBody::Expunge);
    assert_eq!(body("a IDLE"), CommandBody::Idle);
    let c = parse_command(b"A.b-1] NOOP").unwrap();
    assert_eq!(c.tag, "A.b-1]");
    for extra in ["a NOOP x", "a NOOP ", "a CAPABILITY  ", "a IDLE DONE"] {
        assert_eq!(
            err(extra),
            ParseError::Syntax(Usage::NoArguments),
            "{extra}"
        );
    }
}

#[test]
fn tags_and_unknown_commands() {
    for bad in [
        "",
        "NOOP",
        " a NOOP",
        "a+b NOOP",
        "* NOOP",
        "(a) NOOP",
        "\"a\" NOOP",
    ] {
        let e = parse_command(bad.as_bytes()).unwrap_err();
        assert_eq!(e.tag, None, "{bad:?}");
        assert_eq!(e.error, ParseError::InvalidTag, "{bad:?}");
    }
    let e = parse_command(b"t1 XYZZY").unwrap_err();
    assert_eq!((e.tag, e.error), (Some("t1"), ParseError::UnknownCommand));
    assert_eq!(err("t1 "), ParseError::UnknownCommand);
    assert_eq!(err("t1 NOOPNOOPNOOPNOOP"), ParseError::UnknownCommand);
    assert_eq!(err("t1 NOOP\x00"), ParseError::Syntax(Usage::NoArguments));
}

#[test]
fn authenticate_and_login() {
    assert_eq!(
        body("a AUTHENTICATE PLAIN"),
        CommandBody::Authenticate {
            mechanism: "PLAIN",
            initial: None
        }
    );
    assert_eq!(
        body("a authenticate plain AHRpbQB0YW5zdGFhZg=="),
        CommandBody::Authenticate {
            mechanism: "plain",
            initial: Some(b"AHRpbQB0YW5zdGFhZg==")
        }
    );
    assert_eq!(
        body("a AUTHENTICATE PLAIN ="),
        CommandBody::Authenticate {
            mechanism: "PLAIN",
            initial: Some(b"=")
        }
    );
    assert_eq!(
        err("a AUTHENTICATE"),
        ParseError::Syntax(Usage::Authenticate)
    );
    assert_eq!(
        err("a AUTHENTICATE PLAIN a*b"),
        ParseError::Syntax(Usage::Authenticate)
    );
    assert_eq!(
        body("a LOGIN tim \"pa ss\\\"w\\\\d\""),
        CommandBody::Login {
            username: b("tim"),
            password: Cow::Owned(b"pa ss\"w\\d".to_vec())
        }
    );
    // A quoted string without escapes borrows.
    match body("a LOGIN \"tim\" pw") {
        CommandBody::Login { username, .. } => assert!(matches!(username, Cow::Borrowed(b"tim"))),
        other => panic!("{other:?}"),
    }
    assert_eq!(err("a LOGIN tim"), ParseError::Syntax(Usage::Login));
    assert_eq!(err("a LOGIN tim  pw"), ParseError::Syntax(Usage::Login));
    assert_eq!(err("a LOGIN tim pw x"), ParseError::Syntax(Usage::Login));
    assert_eq!(err("a LOGIN \"tim pw"), ParseError::InvalidString);
    assert_eq!(err("a LOGIN \"t\\im\" pw"), ParseError::InvalidString);
    assert_eq!(err("a LOGIN {5}\r\nab"), ParseError::InvalidString);
    assert_eq!(err("a LOGIN {2}\r\na\0 b"), ParseError::NulInLiteral);
    assert_eq!(err("a LOGIN ti(m pw"), ParseError::Syntax(Usage::Login));
}

#[test]
fn enable_and_id() {
    assert_eq!(
        body("a ENABLE CONDSTORE UTF8=ACCEPT"),
        CommandBody::Enable(vec!["CONDSTORE", "UTF8=ACCEPT"])
    );
    assert_eq!(err("a ENABLE"), ParseError::Syntax(Usage::Enable));
    assert_eq!(body("a ID NIL"), CommandBody::Id(None));
    assert_eq!(body("a ID ()"), CommandBody::Id(Some(vec![])));
    assert_eq!(
        body("a ID (\"name\" \"sodr\" \"version\" NIL)"),
        CommandBody::Id(Some(vec![
            (b("name"), Some(b("sodr"))),
            (b("version"), None)
        ]))
    );
    assert_eq!(err("a ID (\"name\")"), ParseError::Syntax(Usage::Id));
    assert_eq!(err("a ID (name \"x\")"), ParseError::Syntax(Usage::Id));
    assert_eq!(err("a ID"), ParseError::Syntax(Usage::Id));
    let many = (0..31)
        .map(|i| format!("\"k{i}\" \"v\""))
        .collect::<Vec<_>>()
        .join(" ");
    assert_eq!(err(&format!("a ID ({many})")), ParseError::TooMany);
}

// ---------------------------------------------- parser: mailbox commands

#[test]
fn select_examine_and_inbox() {
    assert_eq!(
        body("a SELECT inBoX"),
        CommandBody::Select {
            mailbox: mbox("INBOX"),
            read_only: false,
            condstore: false,
            qresync: None
        }
    );
    match body("a SELECT \"inbox\"") {
        CommandBody::Select { mailbox, .. } => {
            assert!(mailbox.is_inbox());
            assert_eq!(mailbox.as_bytes(), b"INBOX");
        }
        other => panic!("{other:?}"),
    }
    match body("a SELECT INBOX.sub") {
        CommandBody::Select { mailbox, .. } => assert!(!mailbox.is_inbox()),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        body("a EXAMINE Drafts (condstore)"),
        CommandBody::Select {
            mailbox: mbox("Drafts"),
            read_only: true,
            condstore: true,
            qresync: None
        }
    );
    // RFC 7162 3.2.5: QRESYNC (uidvalidity modseq [known-uids]
    // [(seqs uids)]).
    let nz = |n| NonZeroU32::new(n).unwrap();
    let range = |a, b| SeqRange {
        start: SeqNumber::Value(nz(a)),
        end: SeqNumber::Value(nz(b)),
    };
    match body("a SELECT INBOX (QRESYNC (67890007 90060115194045000 41:211 (1,3 41,43)))") {
        CommandBody::Select {
            qresync: Some(q), ..
        } => {
            assert_eq!(q.uid_validity, nz(67890007));
            assert_eq!(q.modseq, 90060115194045000);
            assert_eq!(
                q.known_uids,
                Some(SequenceSet::Ranges(vec![range(41, 211)]))
            );
            let (seqs, uids) = q.seq_match.unwrap();
            assert_eq!(seqs, SequenceSet::Ranges(vec![range(1, 1), range(3, 3)]));
            assert_eq!(
                uids,
                SequenceSet::Ranges(vec![range(41, 41), range(43, 43)])
            );
        }
        other => panic!("{other:?}"),
    }
    match body("a EXAMINE x (CONDSTORE QRESYNC (1 0 (1 5)))") {
        CommandBody::Select {
            condstore: true,
            qresync: Some(q),
            ..
        } => {
            assert_eq!(q.known_uids, None);
            assert!(q.seq_match.is_some());
        }
        other => panic!("{other:?}"),
    }
    for bad in [
        "a SELECT INBOX (QRESYNC (0 2))",
        "a SELECT INBOX (QRESYNC (1))",
        "a SELECT INBOX (QRESYNC (1 2 $))",
        "a SELECT INBOX (QRESYNC (1 2 1:5 (1 2)",
        "a SELECT INBOX (QRESYNC (1 2) QRESYNC (1 2))",
        "a SELECT INBOX (QRESYNC 1 2)",
    ] {
        assert!(parse_command(bad.as_bytes()).is_err(), "{bad}");
    }
    // RFC 7162 3.2.6: VANISHED only with CHANGEDSINCE.
    match body("a UID FETCH 1:* FLAGS (CHANGEDSINCE 5 VANISHED)") {
        CommandBody::Fetch {
            uid: true,
            changed_since: Some(5),
            vanished: true,
            ..
        } => {}
        other => panic!("{other:?}"),
    }
    assert!(parse_command(b"a UID FETCH 1:* FLAGS (VANISHED)").is_err());
    assert_eq!(err("a SELECT"), ParseError::Syntax(Usage::Select));
    assert_eq!(err("a EXAMINE a b"), ParseError::Syntax(Usage::Examine));
    assert_eq!(
        body("a SELECT {5+}\r\nA b)c"),
        CommandBody::Select {
            mailbox: mbox("A b)c"),
            read_only: false,
            condstore: false,
            qresync: None
        }
    );
}

#[test]
fn create_delete_rename_subscribe() {
    assert_eq!(
        body("a CREATE foo/bar"),
        CommandBody::Create(mbox("foo/bar"))
    );
    assert_eq!(body("a DELETE \"a b\""), CommandBody::Delete(mbox("a b")));
    assert_eq!(
        body("a RENAME old new"),
        CommandBody::Rename {
            from: mbox("old"),
            to: mbox("new")
        }
    );
    assert_eq!(body("a SUBSCRIBE x"), CommandBody::Subscribe(mbox("x")));
    assert_eq!(body("a UNSUBSCRIBE x"), CommandBody::Unsubscribe(mbox("x")));
    assert_eq!(err("a CREATE"), ParseError::Syntax(Usage::Create));
    assert_eq!(err("a DELETE a b"), ParseError::Syntax(Usage::Delete));
    assert_eq!(err("a RENAME old"), ParseError::Syntax(Usage::Rename));
    assert_eq!(err("a SUBSCRIBE"), ParseError::Syntax(Usage::Subscribe));
    assert_eq!(err("a UNSUBSCRIBE"), ParseError::Syntax(Usage::Unsubscribe));
    assert_eq!(err("a CREATE fo%o"), ParseError::Syntax(Usage::Create));
}

#[test]
fn list_basic_and_extended() {
    assert_eq!(
        body("a LIST \"\" *"),
        CommandBody::List(List {
            reference: b(""),
            patterns: vec![b("*")],
            select: ListSelect::default(),
            ret: ListReturn::default(),
            extended: false,
        })
    );
    assert_eq!(
        body("a LIST ~/Mail/ %/x]"),
        CommandBody::List(List {
            reference: b("~/Mail/"),
            patterns: vec![b("%/x]")],
            select: ListSelect::default(),
            ret: ListReturn::default(),
            extended: false,
        })
    );
    assert_eq!(
        body(
            "a LIST (SUBSCRIBED RECURSIVEMATCH remote) \"\" (\"foo\" bar*) \
             RETURN (CHILDREN SPECIAL-USE SUBSCRIBED STATUS (MESSAGES UIDNEXT))"
        ),
        CommandBody::List(List {
            reference: b(""),
            patterns: vec![b("foo"), b("bar*")],
            select: ListSelect {
                subscribed: true,
                remote: true,
                recursive_match: true,
                special_use: false
            },
            ret: ListReturn {
                subscribed: true,
                children: true,
                special_use: true,
                status: Some(vec![StatusItem::Messages, StatusItem::UidNext]),
            },
            extended: true,
        })
    );
    match body("a LIST (SPECIAL-USE) \"\" *") {
        CommandBody::List(l) => assert!(l.select.special_use && l.extended),
        other => panic!("{other:?}"),
    }
    match body("a LIST () \"\" % RETURN ()") {
        CommandBody::List(l) => assert!(l.extended && l.ret == ListReturn::default()),
        other => panic!("{other:?}"),
    }
    assert_eq!(err("a LIST (FOO) \"\" *"), ParseError::UnknownOption);
    assert_eq!(err("a LIST \"\" * RETURN (FOO)"), ParseError::UnknownOption);
    assert_eq!(
        err("a LIST (RECURSIVEMATCH) \"\" *"),
        ParseError::Syntax(Usage::List)
    );
    assert_eq!(err("a LIST \"\""), ParseError::Syntax(Usage::List));
    assert_eq!(err("a LIST \"\" * EXTRA"), ParseError::Syntax(Usage::List));
    assert_eq!(err("a LIST \"\" ()"), ParseError::Syntax(Usage::List));
    assert_eq!(
        body("a LSUB \"\" *"),
        CommandBody::Lsub {
            reference: b(""),
            pattern: b("*")
        }
    );
    assert_eq!(err("a LSUB \"\""), ParseError::Syntax(Usage::Lsub));
}

#[test]
fn status() {
    assert_eq!(
        body("a STATUS INBOX (MESSAGES RECENT UIDNEXT UIDVALIDITY UNSEEN DELETED SIZE HIGHESTMODSEQ)"),
        CommandBody::Status {
            mailbox: mbox("INBOX"),
            items: vec![
                StatusItem::Messages,
                StatusItem::Recent,
                StatusItem::UidNext,
                StatusItem::UidValidity,
                StatusItem::Unseen,
                StatusItem::Deleted,
                StatusItem::Size,
                StatusItem::HighestModSeq,
            ]
        }
    );
    assert_eq!(err("a STATUS INBOX ()"), ParseError::Syntax(Usage::Status));
    assert_eq!(
        err("a STATUS INBOX MESSAGES"),
        ParseError::Syntax(Usage::Status)
    );
    assert_eq!(err("a STATUS INBOX (FOO)"), ParseError::UnknownOption);
    assert_eq!(
        err("a STATUS INBOX (MESSAGES"),
        ParseError::Syntax(Usage::Status)
    );
}

#[test]
fn append_forms() {
    let c = body("a APPEND saved (\\Seen $Forwarded) \" 7-Feb-1994 21:52:25 -0800\" {5}\r\nhello");
    let CommandBody::Append {
        mailbox,
        flags,
        date,
        message,
        binary,
    } = c
    else {
        panic!("{c:?}")
    };
    assert_eq!(mailbox, mbox("saved"));
    assert_eq!(flags, [Flag::Seen, Flag::Keyword("$Forwarded")]);
    let expected = chrono::FixedOffset::west_opt(8 * 3600)
        .unwrap()
        .with_ymd_and_hms(1994, 2, 7, 21, 52, 25)
        .unwrap();
    assert_eq!(date, Some(expected));
    assert_eq!(message, b"hello");
    assert!(!binary);
    match body("a APPEND x \"17-Jul-1996 02:44:25 +0130\" {0+}\r\n") {
        CommandBody::Append {
            flags,
            date,
            message,
            ..
        } => {
            assert!(flags.is_empty());
            assert_eq!(date.unwrap().offset().local_minus_utc(), 5400);
            assert_eq!(message, b"");
        }
        other => panic!("{other:?}"),
    }
    match body("a APPEND x () {1}\r\nm") {
        CommandBody::Append { flags, .. } => assert!(flags.is_empty()),
        other => panic!("{other:?}"),
    }
    assert_eq!(err("a APPEND x"), ParseError::Syntax(Usage::Append));
    assert_eq!(err("a APPEND x \"hello\""), ParseError::InvalidDate);
    assert_eq!(err("a APPEND x {3}\r\nab"), ParseError::InvalidString);
    assert_eq!(
        err("a APPEND x {1}\r\nab"),
        ParseError::Syntax(Usage::Append)
    );
    assert_eq!(err("a APPEND x {1}\r\n\0"), ParseError::NulInLiteral);
    for bad_date in [
        "\"31-Feb-2020 00:00:00 +0000\"",
        "\"01-Foo-2020 00:00:00 +0000\"",
        "\"01-Jan-2020 24:00:00 +0000\"",
        "\"01-Jan-2020 00:00:00 +0060\"",
        "\"01-Jan-20 00:00:00 +0000\"",
        "\"01-Jan-2020 00:00:00 0000\"",
        "\"001-Jan-2020 00:00:00 +0000\"",
        "\"01-Jan-2020 0:00:00 +0000\"",
        "\"01-Jan-2020 00:00:00 +0000",
    ] {
        let line = format!("a APPEND x {bad_date} {{1}}\r\nm");
        assert_eq!(err(&line), ParseError::InvalidDate, "{bad_date}");
    }
    assert_eq!(err("a APPEND x (\\) {1}\r\nm"), ParseError::InvalidFlag);
}

// --------------------------------------------- parser: selected commands

#[test]
fn sequence_sets() {
    match body("a FETCH 1:*,3,5:2,* FLAGS") {
        CommandBody::Fetch { set: s, .. } => {
            assert_eq!(
                s,
                set(&[
                    (n(1), SeqNumber::Largest),
                    (n(3), n(3)),
                    (n(5), n(2)),
                    (SeqNumber::Largest, SeqNumber::Largest),
                ])
            );
            assert!(s.contains(4, 10) && s.contains(10, 10));
            let mut out = Vec::new();
            write_sequence_set(&mut out, &s);
            assert_eq!(out, b"1:*,3,5:2,*");
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        body("a UID FETCH $ UID"),
        CommandBody::Fetch {
            uid: true,
            set: SequenceSet::Saved,
            ..
        }
    ));
    assert_eq!(err("a FETCH 0 FLAGS"), ParseError::InvalidSequenceSet);
    assert_eq!(err("a FETCH 1:0 FLAGS"), ParseError::InvalidSequenceSet);
    assert_eq!(err("a FETCH 1, FLAGS"), ParseError::InvalidSequenceSet);
    assert_eq!(err("a FETCH ,1 FLAGS"), ParseError::InvalidSequenceSet);
    assert_eq!(err("a FETCH 4294967296 FLAGS"), ParseError::InvalidNumber);
    assert_eq!(err("a FETCH $,1 FLAGS"), ParseError::Syntax(Usage::Fetch));
}

#[test]
fn fetch_items() {
    use FetchAttribute::*;
    let fetch = |line| match body(line) {
        CommandBody::Fetch { items, .. } => items,
        other => panic!("{other:?}"),
    };
    assert_eq!(fetch("a FETCH 1 ALL"), FetchItems::All);
    assert_eq!(fetch("a FETCH 1 fast"), FetchItems::Fast);
    assert_eq!(fetch("a FETCH 1 FULL"), FetchItems::Full);
    assert_eq!(FetchItems::Fast.expand(), [Flags, InternalDate, Rfc822Size]);
    assert_eq!(fetch("a FETCH 1 body"), FetchItems::List(vec![Body]));
    assert_eq!(
        fetch(
            "a FETCH 1 (FLAGS INTERNALDATE RFC822 RFC822.HEADER RFC822.SIZE RFC822.TEXT \
             ENVELOPE BODY BODYSTRUCTURE UID MODSEQ)"
        ),
        FetchItems::List(vec![
            Flags,
            InternalDate,
            Rfc822,
            Rfc822Header,
            Rfc822Size,
            Rfc822Text,
            Envelope,
            Body,
            BodyStructure,
            Uid,
            ModSeq
        ])
    );
    let p = |v: u32| NonZeroU32::new(v).unwrap();
    assert_eq!(
        fetch("a FETCH 1 (BODY[] BODY.PEEK[1.2.MIME]<0.1024> BODY[HEADER.FIELDS (From \"To\")] BODY[3.HEADER.FIELDS.NOT (X)] BODY[TEXT] BODY[2] BODY[4.TEXT]<10.5>)"),
        FetchItems::List(vec![
            BodySection { peek: false, section: Section::default(), partial: None },
            BodySection {
                peek: true,
                section: Section { part: vec![p(1), p(2)], text: Some(SectionText::Mime) },
                partial: Some(Partial { offset: 0, length: 1024 }),
            },
            BodySection {
                peek: false,
                section: Section {
                    part: vec![],
                    text: Some(SectionText::HeaderFields { not: false, fields: vec![b("From"), b("To")] }),
                },
                partial: None,
            },
            BodySection {
                peek: false,
                section: Section {
                    part: vec![p(3)],
                    text: Some(SectionText::HeaderFields { not: true, fields: vec![b("X")] }),
                },
                partial: None,
            },
            BodySection { peek: false, section: Section { part: vec![], text: Some(SectionText::Text) }, partial: None },
            BodySection { peek: false, section: Section { part: vec![p(2)], text: None }, partial: None },
            BodySection {
                peek: false,
                section: Section { part: vec![p(4)], text: Some(SectionText::Text) },
                partial: Some(Partial { offset: 10, length: 5 }),
            },
        ])
    );
    assert_eq!(
        fetch("a FETCH 1 (BINARY[1] BINARY.PEEK[]<0.10> BINARY.SIZE[2.1])"),
        FetchItems::List(vec![
            Binary {
                peek: false,
                part: vec![p(1)],
                partial: None
            },
            Binary {
                peek: true,
                part: vec![],
                partial: Some(Partial {
                    offset: 0,
                    length: 10
                })
            },
            BinarySize {
                part: vec![p(2), p(1)]
            },
        ])
    );
    assert!(matches!(
        body("a FETCH 1:* (FLAGS) (CHANGEDSINCE 12345)"),
        CommandBody::Fetch {
            changed_since: Some(12345),
            ..
        }
    ));
    assert_eq!(
        err("a FETCH 1 (FLAGS) (CHANGEDSINCE 0)"),
        ParseError::InvalidNumber
    );
    assert_eq!(
        err("a FETCH 1 (FLAGS) (VANISHED)"),
        ParseError::Syntax(Usage::Fetch)
    );
    assert_eq!(err("a FETCH 1 FOO"), ParseError::UnknownFetchAttribute);
    assert_eq!(err("a FETCH 1 BODY.PEEK"), ParseError::Syntax(Usage::Fetch));
    assert_eq!(
        err("a FETCH 1 BODY[MIME]"),
        ParseError::UnknownFetchAttribute
    );
    assert_eq!(err("a FETCH 1 BODY[0]"), ParseError::InvalidNumber);
    assert_eq!(err("a FETCH 1 BODY[1.]"), ParseError::Syntax(Usage::Fetch));
    assert_eq!(err("a FETCH 1 BODY[]<0.0>"), ParseError::InvalidNumber);
    assert_eq!(err("a FETCH 1 BODY[]<5>"), ParseError::Syntax(Usage::Fetch));
    assert_eq!(
        err("a FETCH 1 BODY[HEADER.FIELDS ()]"),
        ParseError::Syntax(Usage::Fetch)
    );
    assert_eq!(err("a FETCH 1 (FLAGS"), ParseError::Syntax(Usage::Fetch));
    assert_eq!(err("a FETCH 1 ()"), ParseError::Syntax(Usage::Fetch));
    assert_eq!(err("a FETCH 1"), ParseError::Syntax(Usage::Fetch));
    assert_eq!(
        err("a FETCH 1 BINARY[TEXT]"),
        ParseError::Syntax(Usage::Fetch)
    );
}

#[test]
fn store_forms() {
    assert_eq!(
        body("a STORE 2:4 +FLAGS (\\Deleted)"),
        CommandBody::Store {
            uid: false,
            set: set(&[(n(2), n(4))]),
            action: StoreAction::Add,
            silent: false,
            flags: vec![Flag::Deleted],
            unchanged_since: None
        }
    );
    assert_eq!(
        body("a UID STORE 1 (UNCHANGEDSINCE 0) -flags.silent \\seen $Junk \\Custom"),
        CommandBody::Store {
            uid: true,
            set: one(1),
            action: StoreAction::Remove,
            silent: true,
            flags: vec![
                Flag::Seen,
                Flag::Keyword("$Junk"),
                Flag::Extension("Custom")
            ],
            unchanged_since: Some(0)
        }
    );
    assert!(matches!(
        body("a STORE 1 FLAGS ()"),
        CommandBody::Store { action: StoreAction::Replace, ref flags, .. } if flags.is_empty()
    ));
    assert_eq!(err("a STORE 1 FLAGS"), ParseError::Syntax(Usage::Store));
    assert_eq!(
        err("a STORE 1 LABELS (x)"),
        ParseError::Syntax(Usage::Store)
    );
    assert_eq!(
        err("a STORE 1 *FLAGS (x)"),
        ParseError::Syntax(Usage::Store)
    );
    assert_eq!(err("a STORE 1 FLAGS (\\)"), ParseError::InvalidFlag);
    assert_eq!(
        err("a STORE 1 (FOO 1) FLAGS (x)"),
        ParseError::UnknownOption
    );
    assert_eq!(err("a UID STORE 1 FLAGS"), ParseError::Syntax(Usage::Store));
}

#[test]
fn copy_move_uid_expunge() {
    assert_eq!(
        body("a COPY 1:3 Archive"),
        CommandBody::Copy {
            uid: false,
            set: set(&[(n(1), n(3))]),
            mailbox: mbox("Archive")
        }
    );
    assert_eq!(
        body("a uid move 7 inbox"),
        CommandBody::Move {
            uid: true,
            set: one(7),
            mailbox: mbox("INBOX")
        }
    );
    assert_eq!(
        body("a UID EXPUNGE 3:5,9"),
        CommandBody::UidExpunge(set(&[(n(3), n(5)), (n(9), n(9))]))
    );
    assert_eq!(body("a UID COPY 1 x").name(), "UID COPY");
    assert_eq!(err("a COPY 1"), ParseError::Syntax(Usage::Copy));
    assert_eq!(err("a MOVE x y"), ParseError::InvalidSequenceSet);
    assert_eq!(err("a UID EXPUNGE"), ParseError::Syntax(Usage::UidExpunge));
    assert_eq!(err("a UID"), ParseError::Syntax(Usage::Uid));
    assert_eq!(err("a UID NOOP"), ParseError::Syntax(Usage::Uid));
    assert_eq!(err("a UID LOGIN a b"), ParseError::Syntax(Usage::Uid));
}

#[test]
fn search_keys() {
    use SearchKey::*;
    let search = |line| match body(line) {
        CommandBody::Search {
            criteria,
            charset,
            result,
            uid,
        } => (criteria, charset, result, uid),
        other => panic!("{other:?}"),
    };
    let (keys, charset, result, uid) = search(
        "a SEARCH ALL ANSWERED BCC x BEFORE 1-Feb-1994 BODY \"b c\" CC y DELETED DRAFT FLAGGED \
         FROM z HEADER X-Foo {3}\r\nbar KEYWORD $Junk LARGER 100 NEW NOT SEEN OLD ON \"07-Jul-2020\" \
         OR RECENT UNSEEN SENTBEFORE 1-Jan-2000 SENTON 2-Jan-2000 SENTSINCE 3-Jan-2000 \
         SINCE 4-Jan-2000 SMALLER 5 SUBJECT s TEXT t TO u UID 1:* UNANSWERED UNDELETED UNDRAFT \
         UNFLAGGED UNKEYWORD foo 2,4:* (SEEN (FLAGGED)) MODSEQ 5 \
         MODSEQ \"/flags/\\\\draft\" all 620162338",
    );
    assert_eq!(charset, None);
    assert_eq!(result, None);
    assert!(!uid);
    assert_eq!(
        keys,
        [
            All,
            Answered,
            Bcc(b("x")),
            Before(date(1994, 2, 1)),
            Body(b("b c")),
            Cc(b("y")),
            Deleted,
            Draft,
            Flagged,
            From(b("z")),
            Header(b("X-Foo"), b("bar")),
            Keyword(Flag::Keyword("$Junk")),
            Larger(100),
            New,
            Not(Box::new(Seen)),
            Old,
            On(date(2020, 7, 7)),
            Or(Box::new(Recent), Box::new(Unseen)),
            SentBefore(date(2000, 1, 1)),
            SentOn(date(2000, 1, 2)),
            SentSince(date(2000, 1, 3)),
            Since(date(2000, 1, 4)),
            Smaller(5),
            Subject(b("s")),
            Text(b("t")),
            To(b("u")),
            Uid(set(&[(n(1), SeqNumber::Largest)])),
            Unanswered,
            Undeleted,
            Undraft,
            Unflagged,
            Unkeyword(Flag::Keyword("foo")),
            SequenceSet(set(&[(n(2), n(2)), (n(4), SeqNumber::Largest)])),
            And(vec![Seen, And(vec![Flagged])]),
            ModSeq {
                entry: None,
                modseq: 5
            },
            ModSeq {
                entry: Some((Cow::Owned(b"/flags/\\draft".to_vec()), EntryType::All)),
                modseq: 620162338
            },
        ]
    );
    let (keys, charset, result, uid) =
        search("a UID SEARCH RETURN (MIN COUNT SAVE) CHARSET UTF-8 TEXT \"x\"");
    assert!(uid);
    assert_eq!(charset, Some(b("UTF-8")));
    assert_eq!(
        result,
        Some(vec![
            SearchReturn::Min,
            SearchReturn::Count,
            SearchReturn::Save
        ])
    );
    assert_eq!(keys, [Text(b("x"))]);
    let (_, _, result, _) = search("a SEARCH RETURN () ALL");
    assert_eq!(result, Some(vec![SearchReturn::All]));
    let (keys, _, _, _) = search("a SEARCH $");
    assert_eq!(keys, [SequenceSet(super::command::SequenceSet::Saved)]);
    let (keys, _, _, _) = search("a search or (from a) not to b");
    assert_eq!(
        keys,
        [Or(
            Box::new(And(vec![From(b("a"))])),
            Box::new(Not(Box::new(To(b("b")))))
        )]
    );

    assert_eq!(err("a SEARCH"), ParseError::Syntax(Usage::Search));
    assert_eq!(err("a SEARCH FOO"), ParseError::UnknownSearchKey);
    assert_eq!(
        err("a SEARCH VERYLONGUNKNOWNKEY"),
        ParseError::UnknownSearchKey
    );
    assert_eq!(err("a SEARCH FROM"), ParseError::Syntax(Usage::Search));
    assert_eq!(err("a SEARCH OR SEEN"), ParseError::Syntax(Usage::Search));
    assert_eq!(err("a SEARCH (SEEN"), ParseError::Syntax(Usage::Search));
    assert_eq!(err("a SEARCH ()"), ParseError::Syntax(Usage::Search));
    assert_eq!(
        err("a SEARCH SEEN  UNSEEN"),
        ParseError::Syntax(Usage::Search)
    );
    assert_eq!(err("a SEARCH BEFORE 32-Jan-2020"), ParseError::InvalidDate);
    assert_eq!(
        err("a SEARCH BEFORE 1-Jan-2020\""),
        ParseError::Syntax(Usage::Search)
    );
    assert_eq!(err("a SEARCH SINCE \"1-Jan-2020"), ParseError::InvalidDate);
    assert_eq!(err("a SEARCH LARGER x"), ParseError::InvalidNumber);
    assert_eq!(err("a SEARCH KEYWORD \\Seen"), ParseError::InvalidFlag);
    assert_eq!(err("a SEARCH RETURN (FOO) ALL"), ParseError::UnknownOption);
    assert_eq!(
        err("a SEARCH MODSEQ \"/flags/x\" bogus 1"),
        ParseError::Syntax(Usage::Search)
    );
    assert_eq!(err("a SEARCH CHARSET"), ParseError::UnknownSearchKey);
    let deep = format!(
        "a SEARCH {}ALL{}",
        "(".repeat(MAX_DEPTH),
        ")".repeat(MAX_DEPTH)
    );
    assert_eq!(err(&deep), ParseError::TooDeep);
    let deep = format!("a SEARCH {}ALL", "NOT ".repeat(10_000));
    assert_eq!(err(&deep), ParseError::TooDeep);
    let ok = format!(
        "a SEARCH {}ALL{}",
        "(".repeat(MAX_DEPTH - 1),
        ")".repeat(MAX_DEPTH - 1)
    );
    parse_command(ok.as_bytes()).unwrap();
}

#[test]
fn command_names() {
    assert_eq!(body("a EXAMINE x").name(), "EXAMINE");
    assert_eq!(body("a UID SEARCH ALL").name(), "UID SEARCH");
    assert_eq!(body("a ID NIL").name(), "ID");
}

// ---------------------------------------------------------------- replies

#[test]
fn replies_for_errors_and_rejections() {
    let mut out = Vec::new();
    write_command_error(&mut out, &parse_command(b"a7 LOGIN x").unwrap_err());
    assert_eq!(out, b"a7 BAD Syntax: LOGIN user password\r\n");
    out.clear();
    write_command_error(&mut out, &parse_command(b"+ NOOP").unwrap_err());
    assert_eq!(out, b"* BAD Missing or invalid tag\r\n");
    out.clear();
    write_command_error(&mut out, &parse_command(b"x FETCH 0 ALL").unwrap_err());
    assert_eq!(out, b"x BAD Invalid sequence set\r\n");

    let mut r = CommandReader::new(small());
    r.push(b"A1 APPEND INBOX {1000}\r\nA2 LOGIN {1000}\r\n");
    let Step::Rejected(rej) = r.next_command() else {
        panic!()
    };
    out.clear();
    write_rejection(&mut out, &rej);
    assert_eq!(out, b"A1 BAD [TOOBIG] Message too big\r\n");
    let Step::Rejected(rej) = r.next_command() else {
        panic!()
    };
    out.clear();
    write_rejection(&mut out, &rej);
    assert_eq!(out, b"A2 BAD Literal too big\r\n");
}

#[test]
fn status_lines_and_codes() {
    let mut out = Vec::new();
    write_tagged(
        &mut out,
        "a",
        Status::Ok,
        Some(&Code::ReadWrite),
        "SELECT completed",
    );
    write_untagged_status(
        &mut out,
        Status::Ok,
        Some(&Code::UidValidity(3857529045)),
        "UIDs valid",
    );
    write_untagged_status(
        &mut out,
        Status::Ok,
        Some(&Code::PermanentFlags {
            flags: &[Flag::Deleted, Flag::Seen, Flag::Extension("Foo")],
            allow_keywords: true,
        }),
        "Limited",
    );
    write_tagged(
        &mut out,
        "b",
        Status::Ok,
        Some(&Code::CopyUid {
            validity: 38505,
            source: &[304, 319, 320],
            destination: &[3956, 3957, 3958],
        }),
        "Done",
    );
    write_tagged(
        &mut out,
        "c",
        Status::Ok,
        Some(&Code::AppendUid {
            validity: 38505,
            uid: 3955,
        }),
        "APPEND completed",
    );
    write_untagged_status(
        &mut out,
        Status::Ok,
        Some(&Code::Capability(&["IMAP4rev1", "LITERAL-", "AUTH=PLAIN"])),
        "ready\r\nevil",
    );
    write_tagged(&mut out, "d", Status::No, Some(&Code::TryCreate), "");
    write_untagged_status(&mut out, Status::Bye, Some(&Code::Alert), "bye");
    write_continuation(&mut out, Text::ReadyForLiteral.as_str());
    write_continuation(&mut out, "");
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "a OK [READ-WRITE] SELECT completed\r\n\
         * OK [UIDVALIDITY 3857529045] UIDs valid\r\n\
         * OK [PERMANENTFLAGS (\\Deleted \\Seen \\Foo \\*)] Limited\r\n\
         b OK [COPYUID 38505 304,319:320 3956:3958] Done\r\n\
         c OK [APPENDUID 38505 3955] APPEND completed\r\n\
         * OK [CAPABILITY IMAP4rev1 LITERAL- AUTH=PLAIN] ready  evil\r\n\
         d NO [TRYCREATE] ok\r\n\
         * BYE [ALERT] bye\r\n\
         + Ready for literal data\r\n\
         + \r\n"
    );
    for (code, text) in [
        (Code::NonExistent, "[NONEXISTENT]"),
        (Code::AlreadyExists, "[ALREADYEXISTS]"),
        (Code::AuthenticationFailed, "[AUTHENTICATIONFAILED]"),
        (Code::PrivacyRequired, "[PRIVACYREQUIRED]"),
        (Code::TooBig, "[TOOBIG]"),
        (Code::Limit, "[LIMIT]"),
        (Code::ServerBug, "[SERVERBUG]"),
        (Code::ReadOnly, "[READ-ONLY]"),
        (Code::UidNext(4392), "[UIDNEXT 4392]"),
        (
            Code::HighestModSeq(715194045007),
            "[HIGHESTMODSEQ 715194045007]",
        ),
        (Code::Modified(&[7, 9]), "[MODIFIED 7,9]"),
        (
            Code::PermanentFlags {
                flags: &[],
                allow_keywords: false,
            },
            "[PERMANENTFLAGS ()]",
        ),
    ] {
        let mut out = Vec::new();
        write_code(&mut out, &code);
        assert_eq!(out, text.as_bytes());
    }
}

#[test]
fn uid_set_compression() {
    let enc = |v: &[u32]| {
        let mut out = Vec::new();
        write_uid_set(&mut out, v);
        String::from_utf8(out).unwrap()
    };
    assert_eq!(enc(&[]), "");
    assert_eq!(enc(&[7]), "7");
    assert_eq!(enc(&[1, 2, 3, 4, 5, 7]), "1:5,7");
    assert_eq!(enc(&[1, 3, 5]), "1,3,5");
    assert_eq!(enc(&[2, 3, 10, 11, 12, 20]), "2:3,10:12,20");
    assert_eq!(enc(&[5, 4, 3]), "5,4,3");
    assert_eq!(enc(&[u32::MAX - 1, u32::MAX]), "4294967294:4294967295");
}

#[test]
fn strings_atoms_and_lists() {
    let enc = |f: &dyn Fn(&mut Vec<u8>)| {
        let mut out = Vec::new();
        f(&mut out);
        out
    };
    assert_eq!(enc(&|o| write_string(o, b"hello")), b"\"hello\"");
    assert_eq!(enc(&|o| write_string(o, b"a\"b\\c")), b"\"a\\\"b\\\\c\"");
    assert_eq!(enc(&|o| write_string(o, b"a\r\nb")), b"{4}\r\na\r\nb");
    assert_eq!(
        enc(&|o| write_string(o, "é".as_bytes())),
        b"{2}\r\n\xc3\xa9"
    );
    let long = vec![b'a'; MAX_QUOTED + 1];
    assert!(enc(&|o| write_string(o, &long)).starts_with(b"{1025}\r\n"));
    assert_eq!(enc(&|o| write_literal8(o, b"\0")), b"~{1}\r\n\0");
    assert_eq!(enc(&|o| write_nstring(o, None)), b"NIL");
    assert_eq!(enc(&|o| write_nstring(o, Some(b""))), b"\"\"");
    assert_eq!(enc(&|o| write_astring(o, b"INBOX")), b"INBOX");
    assert_eq!(enc(&|o| write_astring(o, b"nil")), b"\"nil\"");
    assert_eq!(enc(&|o| write_astring(o, b"a b")), b"\"a b\"");
    assert_eq!(enc(&|o| write_astring(o, b"")), b"\"\"");
    assert_eq!(enc(&|o| write_atom(o, "FLAGS")), b"FLAGS");
    assert_eq!(
        enc(&|o| write_flags(o, &[Flag::Seen, Flag::Recent, Flag::Keyword("$Junk")])),
        b"(\\Seen \\Recent $Junk)"
    );
    assert_eq!(
        enc(&|o| write_list(o, [1, 2, 3], |o, i: i32| o
            .extend_from_slice(i.to_string().as_bytes()))),
        b"(1 2 3)"
    );
    assert_eq!(enc(&|o| write_list(o, Vec::<u8>::new(), |_, _| {})), b"()");
}

#[test]
fn date_time_round_trip() {
    let c = parse_command(b"a APPEND x \" 7-Feb-1994 21:52:05 -0800\" {0}\r\n").unwrap();
    let CommandBody::Append { date: Some(d), .. } = c.body else {
        panic!()
    };
    let mut out = Vec::new();
    write_date_time(&mut out, &d);
    assert_eq!(out, b"\"07-Feb-1994 21:52:05 -0800\"");
    let line = [&b"a APPEND x "[..], &out, b" {0}\r\n"].concat();
    assert!(matches!(
        parse_command(&line).unwrap().body,
        CommandBody::Append { date: Some(e), .. } if e == d
    ));
}

// ----------------------------------------------------------------- random

/// Valid commands to mutate: the random test flips and splices bytes of
/// these, which reaches deeper than random bytes alone.
const SEEDS: &[&[u8]] = &[
    b"a SEARCH OR (FROM x SINCE 1-Jan-2000) NOT UID 1:*,5 HEADER a {1+}\r\nb MODSEQ \"/flags/\\\\seen\" all 3",
    b"a UID FETCH 1:* (BODY.PEEK[1.2.HEADER.FIELDS (A B)]<0.10> BINARY[1] FLAGS) (CHANGEDSINCE 9)",
    b"a APPEND INBOX (\\Seen k) \"01-Jan-2000 00:00:00 +0000\" {3}\r\nabc",
    b"a LIST (SUBSCRIBED) \"\" (\"a\" b) RETURN (STATUS (MESSAGES) CHILDREN)",
    b"a STORE 1 (UNCHANGEDSINCE 5) +FLAGS.SILENT (\\Deleted)",
    b"a ID (\"k\" \"v\" \"n\" NIL)",
    b"a LOGIN \"u\\\\\" {2}\r\npw",
    b"a SELECT INBOX (CONDSTORE)",
];

#[test]
fn random_input_never_panics() {
    let mut rng = StdRng::seed_from_u64(7);
    for _ in 0..20_000 {
        let mut input: Vec<u8> = if rng.gen_bool(0.3) {
            (0..rng.gen_range(0..64)).map(|_| rng.gen()).collect()
        } else {
            let mut v = SEEDS[rng.gen_range(0..SEEDS.len())].to_vec();
            for _ in 0..rng.gen_range(1..4) {
                let at = rng.gen_range(0..=v.len());
                match rng.gen_range(0..3) {
                    0 if at < v.len() => v[at] = rng.gen(),
                    1 if at < v.len() => {
                        v.remove(at);
                    }
                    _ => {
                        let specials = b" (){}[]<>\"\\*$:,.+~\r\n0123456789";
                        v.insert(at, specials[rng.gen_range(0..specials.len())])
                    }
                }
            }
            v
        };
        let _ = parse_command(&input);
        input.extend_from_slice(b"\r\n");
        let mut reader = CommandReader::new(small());
        let mut rest = &input[..];
        loop {
            let taken = reader.push(rest);
            rest = &rest[taken..];
            loop {
                match reader.next_command() {
                    Step::Command(c) => {
                        let _ = parse_command(c);
                    }
                    Step::Incomplete => break,
                    _ => {}
                }
            }
            if rest.is_empty() {
                break;
            }
        }
        assert!(reader.buffered() <= small().capacity());
    }
}

#[test]
fn thread_and_quota_commands_parse() {
    assert_eq!(
        body("a THREAD references utf-8 UNSEEN 2:*"),
        CommandBody::Thread {
            uid: false,
            algorithm: ThreadAlgorithm::References,
            charset: b("utf-8"),
            criteria: vec![
                SearchKey::Unseen,
                SearchKey::SequenceSet(set(&[(n(2), SeqNumber::Largest)]))
            ],
        }
    );
    assert_eq!(
        body("a UID THREAD ORDEREDSUBJECT \"US-ASCII\" ALL"),
        CommandBody::Thread {
            uid: true,
            algorithm: ThreadAlgorithm::OrderedSubject,
            charset: b("US-ASCII"),
            criteria: vec![SearchKey::All],
        }
    );
    assert_eq!(err("a THREAD SHUFFLE UTF-8 ALL"), ParseError::UnknownOption);
    assert_eq!(
        err("a THREAD REFERENCES UTF-8"),
        ParseError::Syntax(Usage::Thread)
    );
    assert_eq!(
        err("a THREAD (REFERENCES) UTF-8 ALL"),
        ParseError::Syntax(Usage::Thread)
    );
    assert_eq!(body("a GETQUOTA \"\""), CommandBody::GetQuota(b("")));
    assert_eq!(
        body("a getquotaroot inbox"),
        CommandBody::GetQuotaRoot(mbox("INBOX"))
    );
    assert_eq!(
        body("a SETQUOTA \"\" (STORAGE 512 MESSAGE 100)"),
        CommandBody::SetQuota {
            root: b(""),
            limits: vec![("STORAGE", 512), ("MESSAGE", 100)],
        }
    );
    assert_eq!(
        body("a SETQUOTA root ()"),
        CommandBody::SetQuota {
            root: b("root"),
            limits: vec![],
        }
    );
    for bad in [
        "a SETQUOTA \"\" (STORAGE)",
        "a SETQUOTA \"\" STORAGE 1",
        "a GETQUOTA",
        "a GETQUOTAROOT",
    ] {
        assert!(matches!(err(bad), ParseError::Syntax(_)), "{bad}");
    }
    assert_eq!(
        body("a STATUS INBOX (DELETED-STORAGE SIZE)"),
        CommandBody::Status {
            mailbox: mbox("INBOX"),
            items: vec![StatusItem::DeletedStorage, StatusItem::Size],
        }
    );
}
