//! Fuzz target of the IMAP command path: the `CommandReader` framing bytes split at arbitrary
//! points under small limits, and `parse_command` on every framed command. Invariants: no panic,
//! every buffer within its bound, no stall; a parsed command rendered back with the server's own
//! string writers parses to the same command and frames back to the same bytes; every BAD reply
//! is one well-formed line. It refuses to run the session (that needs a mailbox store on disk).

use chrono::Datelike;

use super::{crlf_lines, Rng};
use crate::imap::command::{
    EntryType, FetchAttribute, FetchItems, Flag, Partial, SearchKey, SearchReturn, Section,
    SectionText, SequenceSet, SortBy, StatusItem, StoreAction, ThreadAlgorithm,
};
use crate::imap::reader::{CommandReader, Limit, LineStep, ReaderConfig, Step};
use crate::imap::response::{
    write_astring, write_command_error, write_date_time, write_list, write_rejection,
    write_sequence_set, write_string,
};
use crate::imap::{parse_command, Command, CommandBody};

/// Commands, literals and line-ending games for the mutator.
pub const TOKENS: &[&[u8]] = &[
    b"a1 ",
    b"LOGIN ",
    b"SELECT INBOX\r\n",
    b"UID FETCH 1:* (FLAGS BODY.PEEK[HEADER.FIELDS (FROM TO)]<0.100>)\r\n",
    b"BODY[1.2.MIME]",
    b"BINARY.PEEK[1]",
    b"SEARCH RETURN (MIN MAX COUNT) CHARSET UTF-8 ",
    b"OR (SEEN UNSEEN) NOT UID 1:3,5",
    b"SINCE 1-Feb-2024",
    b"HEADER Subject \"x\"",
    b"MODSEQ \"/flags/\\\\seen\" all 5",
    b"APPEND INBOX (\\Seen) \" 1-Jan-2024 10:00:00 +0100\" ",
    b"{5}\r\n",
    b"{5+}\r\n",
    b"~{3}\r\n",
    b"{0}\r\n",
    b"{4294967296}\r\n",
    b"STORE 1 +FLAGS.SILENT (\\Deleted $Junk)",
    b"LIST (SUBSCRIBED RECURSIVEMATCH) \"\" (\"*\" %) RETURN (CHILDREN STATUS (MESSAGES))",
    b"ID (\"name\" NIL)",
    b"AUTHENTICATE PLAIN =\r\n",
    b"IDLE\r\nDONE\r\n",
    b"SORT (REVERSE DATE) UTF-8 ALL",
    b"THREAD REFERENCES UTF-8 ALL",
    b"GETQUOTAROOT INBOX",
    b"SETQUOTA \"\" (STORAGE 1)",
    b" (CHANGEDSINCE 1)",
    b"$",
    b"*",
    b"\"",
    b"\\",
    b"(",
    b")",
    b"\r\n",
    b"\n",
    b"\r",
    b"\0",
];

/// Length of the limits-and-chunking prefix of an input.
pub const PREFIX: usize = 4;

/// The whole input parsed as one command, then the input after a
/// [`PREFIX`]-byte prefix (limits and chunk size) framed and parsed as a
/// session would, IDLE and AUTHENTICATE taking their raw line.
pub fn imap_command(data: &[u8]) {
    let _ = check_parse(data);
    let Some((ctl, input)) = data.split_first_chunk::<PREFIX>() else {
        return;
    };
    let config = ReaderConfig {
        max_line: 16 + usize::from(ctl[0]) * 4,
        max_literal: u64::from(ctl[1]) * 8,
        max_nonsync_literal: u64::from(ctl[2]) * 4,
        max_command: 64 + u64::from(ctl[1]) * 16,
    };
    let mut rng = Rng::from_bytes(ctl);
    let max_chunk = 1 + usize::from(ctl[3]);
    let chunked = frame(config, input, || rng.chunk(max_chunk));
    // Where the client's bytes are split changes nothing.
    let whole = frame(config, input, || usize::MAX);
    assert!(
        chunked == whole,
        "framed in chunks: {chunked:?}; framed at once: {whole:?}"
    );
}

/// What the reader made of the input, step by step.
#[derive(Debug, PartialEq, Eq)]
enum Framed {
    Command(Vec<u8>),
    Rejected(Option<String>, Option<String>, Limit),
    Continuation,
    Line(Vec<u8>),
    LineTooLong,
}

/// Frames `input` pushed in chunks of `next_chunk()` bytes as a session
/// would, IDLE and AUTHENTICATE taking their raw line; checks every
/// command and reply on the way.
fn frame(config: ReaderConfig, input: &[u8], mut next_chunk: impl FnMut() -> usize) -> Vec<Framed> {
    let mut steps = Vec::new();
    let mut reader = CommandReader::new(config);
    let mut raw_lines = 0u8;
    let mut fed = 0;
    while fed < input.len() {
        let k = next_chunk().clamp(1, input.len() - fed);
        let mut rest = &input[fed..fed + k];
        fed += k;
        loop {
            let taken = reader.push(rest);
            rest = &rest[taken..];
            assert!(
                reader.buffered() <= config.capacity(),
                "the reader holds {} octets, over its capacity {}",
                reader.buffered(),
                config.capacity()
            );
            loop {
                if raw_lines > 0 {
                    match reader.next_line() {
                        LineStep::Incomplete => break,
                        LineStep::Line(line) => {
                            assert!(line.len() <= config.max_line, "raw line over max_line");
                            assert!(!line.contains(&b'\n'), "raw line holds its LF");
                            steps.push(Framed::Line(line.to_vec()));
                        }
                        LineStep::TooLong => steps.push(Framed::LineTooLong),
                    }
                    raw_lines -= 1;
                    continue;
                }
                match reader.next_command() {
                    Step::Command(bytes) => {
                        assert!(
                            bytes.len() as u64 <= config.max_command,
                            "a framed command of {} octets passed max_command {}",
                            bytes.len(),
                            config.max_command
                        );
                        steps.push(Framed::Command(bytes.to_vec()));
                        if let Some(command) = check_parse(bytes) {
                            if matches!(
                                command.body,
                                CommandBody::Idle | CommandBody::Authenticate { .. }
                            ) {
                                raw_lines = 1;
                            }
                        }
                    }
                    Step::Rejected(r) => {
                        let mut out = Vec::new();
                        write_rejection(&mut out, &r);
                        check_status_reply(&out);
                        // A tag or name longer than a line cannot be
                        // read whole from what was buffered when the line
                        // was refused; how much was buffered depends on
                        // the split, so only shorter ones must agree.
                        let tag = r.tag.filter(|t| t.len() < config.max_line);
                        let name = r.command.filter(|c| {
                            tag.is_some_and(|t| t.len() + 1 + c.len() < config.max_line)
                        });
                        steps.push(Framed::Rejected(
                            tag.map(str::to_owned),
                            name.map(str::to_owned),
                            r.limit,
                        ));
                    }
                    Step::NeedContinuation => steps.push(Framed::Continuation),
                    Step::Incomplete => break,
                }
            }
            if rest.is_empty() {
                break;
            }
            // A full buffer with nothing left to frame would be a stall.
            assert!(
                taken > 0,
                "the reader took nothing with {} octets buffered",
                reader.buffered()
            );
        }
    }
    steps
}

/// Parses one framed command and checks what follows from the result:
/// the command when it parsed, after its BAD reply was checked otherwise.
fn check_parse(bytes: &[u8]) -> Option<Command<'_>> {
    match parse_command(bytes) {
        Ok(command) => {
            check_round_trip(&command);
            Some(command)
        }
        Err(e) => {
            let mut out = Vec::new();
            write_command_error(&mut out, &e);
            check_status_reply(&out);
            None
        }
    }
}

/// One `tag STATUS text` or `* STATUS text` line.
fn check_status_reply(out: &[u8]) {
    let lines = crlf_lines(out, "IMAP");
    assert_eq!(lines.len(), 1, "{:?}", String::from_utf8_lossy(out));
    let mut words = lines[0].splitn(3, |&b| b == b' ');
    let tag = words.next().unwrap_or_default();
    let status = words.next().unwrap_or_default();
    assert!(
        tag == b"*"
            || (!tag.is_empty()
                && tag
                    .iter()
                    .all(|&b| (0x21..0x7f).contains(&b) && !b"(){%*\"\\+".contains(&b))),
        "bad tag in {:?}",
        String::from_utf8_lossy(out)
    );
    assert!(
        [&b"OK"[..], b"NO", b"BAD", b"BYE"].contains(&status),
        "bad status in {:?}",
        String::from_utf8_lossy(out)
    );
}

/// Renders `command`, parses it again, and frames it again.
fn check_round_trip(command: &Command<'_>) {
    let rendered = render(command);
    let shown = || String::from_utf8_lossy(&rendered).into_owned();
    match parse_command(&rendered) {
        Ok(again) => assert_eq!(&again, command, "re-rendered as {:?}", shown()),
        Err(e) => panic!(
            "{command:?} re-rendered as {:?}, which does not parse: {e:?}",
            shown()
        ),
    }
    // What a client sends, with its CRLF, frames back to the same bytes.
    if rendered.len() > 60_000 {
        return;
    }
    let mut reader = CommandReader::new(ReaderConfig::default());
    let mut wire = rendered.clone();
    wire.extend_from_slice(b"\r\n");
    assert_eq!(reader.push(&wire), wire.len());
    loop {
        match reader.next_command() {
            Step::NeedContinuation => continue,
            Step::Command(framed) => {
                assert_eq!(framed, &rendered[..], "framed differently");
                break;
            }
            other => panic!("{:?} framed as {other:?}", shown()),
        }
    }
}

/// The command as a client could send it (without the final CRLF); every
/// string through the server's own writers.
fn render(command: &Command<'_>) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(command.tag.as_bytes());
    out.push(b' ');
    let o = &mut out;
    use CommandBody as C;
    match &command.body {
        C::Capability
        | C::Noop
        | C::Logout
        | C::StartTls
        | C::Namespace
        | C::Check
        | C::Close
        | C::Unselect
        | C::Expunge
        | C::Idle => o.extend_from_slice(command.body.name().as_bytes()),
        C::Authenticate { mechanism, initial } => {
            push(o, "AUTHENTICATE ");
            push(o, mechanism);
            if let Some(initial) = initial {
                o.push(b' ');
                o.extend_from_slice(initial);
            }
        }
        C::Login { username, password } => {
            push(o, "LOGIN ");
            write_astring(o, username);
            o.push(b' ');
            write_astring(o, password);
        }
        C::Enable(names) => {
            push(o, "ENABLE");
            for name in names {
                o.push(b' ');
                push(o, name);
            }
        }
        C::Select {
            mailbox,
            read_only,
            condstore,
            qresync,
        } => {
            push(o, if *read_only { "EXAMINE " } else { "SELECT " });
            write_astring(o, mailbox.as_bytes());
            let mut params = Vec::new();
            if *condstore {
                params.push("CONDSTORE".to_owned());
            }
            if let Some(q) = qresync {
                let mut text = format!("QRESYNC ({} {}", q.uid_validity, q.modseq);
                let set = |s: &SequenceSet| {
                    let mut bytes = Vec::new();
                    write_sequence_set(&mut bytes, s);
                    String::from_utf8_lossy(&bytes).into_owned()
                };
                if let Some(known) = &q.known_uids {
                    text.push(' ');
                    text.push_str(&set(known));
                }
                if let Some((seqs, uids)) = &q.seq_match {
                    text.push_str(&format!(" ({} {})", set(seqs), set(uids)));
                }
                text.push(')');
                params.push(text);
            }
            if !params.is_empty() {
                push(o, &format!(" ({})", params.join(" ")));
            }
        }
        C::Create(m) | C::Delete(m) | C::Subscribe(m) | C::Unsubscribe(m) => {
            push(o, command.body.name());
            o.push(b' ');
            write_astring(o, m.as_bytes());
        }
        C::Rename { from, to } => {
            push(o, "RENAME ");
            write_astring(o, from.as_bytes());
            o.push(b' ');
            write_astring(o, to.as_bytes());
        }
        C::List(list) => {
            push(o, "LIST ");
            if list.extended {
                let s = list.select;
                let opts: Vec<&str> = [
                    (s.subscribed, "SUBSCRIBED"),
                    (s.remote, "REMOTE"),
                    (s.recursive_match, "RECURSIVEMATCH"),
                    (s.special_use, "SPECIAL-USE"),
                ]
                .iter()
                .filter(|(on, _)| *on)
                .map(|(_, n)| *n)
                .collect();
                push(o, &format!("({}) ", opts.join(" ")));
            }
            write_astring(o, &list.reference);
            o.push(b' ');
            if list.extended {
                o.push(b'(');
            }
            for (i, pattern) in list.patterns.iter().enumerate() {
                if i > 0 {
                    o.push(b' ');
                }
                write_astring(o, pattern);
            }
            if list.extended {
                o.push(b')');
            }
            let r = &list.ret;
            if r.subscribed || r.children || r.special_use || r.status.is_some() {
                let mut opts: Vec<String> = [
                    (r.subscribed, "SUBSCRIBED"),
                    (r.children, "CHILDREN"),
                    (r.special_use, "SPECIAL-USE"),
                ]
                .iter()
                .filter(|(on, _)| *on)
                .map(|(_, n)| (*n).to_owned())
                .collect();
                if let Some(items) = &r.status {
                    opts.push(format!("STATUS {}", status_items(items)));
                }
                push(o, &format!(" RETURN ({})", opts.join(" ")));
            }
        }
        C::Lsub { reference, pattern } => {
            push(o, "LSUB ");
            write_astring(o, reference);
            o.push(b' ');
            write_astring(o, pattern);
        }
        C::Status { mailbox, items } => {
            push(o, "STATUS ");
            write_astring(o, mailbox.as_bytes());
            o.push(b' ');
            push(o, &status_items(items));
        }
        C::Append {
            mailbox,
            flags,
            date,
            message,
            binary,
        } => {
            push(o, "APPEND ");
            write_astring(o, mailbox.as_bytes());
            o.push(b' ');
            if !flags.is_empty() {
                write_flags(o, flags);
                o.push(b' ');
            }
            if let Some(date) = date {
                write_date_time(o, date);
                o.push(b' ');
            }
            if *binary {
                o.push(b'~');
            }
            push(o, &format!("{{{}}}\r\n", message.len()));
            o.extend_from_slice(message);
        }
        C::UidExpunge(set) => {
            push(o, "UID EXPUNGE ");
            write_sequence_set(o, set);
        }
        C::Search {
            uid,
            charset,
            criteria,
            result,
        } => {
            push(o, if *uid { "UID SEARCH" } else { "SEARCH" });
            if let Some(opts) = result {
                let names: Vec<&str> = opts
                    .iter()
                    .map(|r| match r {
                        SearchReturn::Min => "MIN",
                        SearchReturn::Max => "MAX",
                        SearchReturn::All => "ALL",
                        SearchReturn::Count => "COUNT",
                        SearchReturn::Save => "SAVE",
                    })
                    .collect();
                push(o, &format!(" RETURN ({})", names.join(" ")));
            }
            if let Some(charset) = charset {
                push(o, " CHARSET ");
                write_astring(o, charset);
            }
            for key in criteria {
                o.push(b' ');
                write_search_key(o, key);
            }
        }
        C::Sort {
            uid,
            keys,
            charset,
            criteria,
        } => {
            push(o, if *uid { "UID SORT (" } else { "SORT (" });
            for (i, key) in keys.iter().enumerate() {
                if i > 0 {
                    o.push(b' ');
                }
                if key.reverse {
                    push(o, "REVERSE ");
                }
                push(
                    o,
                    match key.by {
                        SortBy::Arrival => "ARRIVAL",
                        SortBy::Cc => "CC",
                        SortBy::Date => "DATE",
                        SortBy::From => "FROM",
                        SortBy::Size => "SIZE",
                        SortBy::Subject => "SUBJECT",
                        SortBy::To => "TO",
                    },
                );
            }
            push(o, ") ");
            write_astring(o, charset);
            for key in criteria {
                o.push(b' ');
                write_search_key(o, key);
            }
        }
        C::Thread {
            uid,
            algorithm,
            charset,
            criteria,
        } => {
            push(o, if *uid { "UID THREAD " } else { "THREAD " });
            push(
                o,
                match algorithm {
                    ThreadAlgorithm::OrderedSubject => "ORDEREDSUBJECT ",
                    ThreadAlgorithm::References => "REFERENCES ",
                },
            );
            write_astring(o, charset);
            for key in criteria {
                o.push(b' ');
                write_search_key(o, key);
            }
        }
        C::GetQuota(root) => {
            push(o, "GETQUOTA ");
            write_astring(o, root);
        }
        C::GetQuotaRoot(m) => {
            push(o, "GETQUOTAROOT ");
            write_astring(o, m.as_bytes());
        }
        C::SetQuota { root, limits } => {
            push(o, "SETQUOTA ");
            write_astring(o, root);
            push(o, " (");
            for (i, (resource, limit)) in limits.iter().enumerate() {
                if i > 0 {
                    o.push(b' ');
                }
                push(o, &format!("{resource} {limit}"));
            }
            o.push(b')');
        }
        C::Fetch {
            uid,
            set,
            items,
            changed_since,
            vanished,
        } => {
            push(o, if *uid { "UID FETCH " } else { "FETCH " });
            write_sequence_set(o, set);
            o.push(b' ');
            match items {
                FetchItems::All => push(o, "ALL"),
                FetchItems::Fast => push(o, "FAST"),
                FetchItems::Full => push(o, "FULL"),
                FetchItems::List(attributes) => {
                    write_list(o, attributes, |o, a| write_fetch_attribute(o, a));
                }
            }
            if let Some(n) = changed_since {
                let vanished = if *vanished { " VANISHED" } else { "" };
                push(o, &format!(" (CHANGEDSINCE {n}{vanished})"));
            }
        }
        C::Store {
            uid,
            set,
            action,
            silent,
            flags,
            unchanged_since,
        } => {
            push(o, if *uid { "UID STORE " } else { "STORE " });
            write_sequence_set(o, set);
            if let Some(n) = unchanged_since {
                push(o, &format!(" (UNCHANGEDSINCE {n})"));
            }
            o.push(b' ');
            push(
                o,
                match action {
                    StoreAction::Replace => "",
                    StoreAction::Add => "+",
                    StoreAction::Remove => "-",
                },
            );
            push(o, if *silent { "FLAGS.SILENT " } else { "FLAGS " });
            write_flags(o, flags);
        }
        C::Copy { uid, set, mailbox } | C::Move { uid, set, mailbox } => {
            if *uid {
                push(o, "UID ");
            }
            push(
                o,
                if matches!(command.body, C::Copy { .. }) {
                    "COPY "
                } else {
                    "MOVE "
                },
            );
            write_sequence_set(o, set);
            o.push(b' ');
            write_astring(o, mailbox.as_bytes());
        }
        C::Id(None) => push(o, "ID NIL"),
        C::Id(Some(pairs)) => {
            push(o, "ID (");
            for (i, (field, value)) in pairs.iter().enumerate() {
                if i > 0 {
                    o.push(b' ');
                }
                write_string(o, field);
                o.push(b' ');
                match value {
                    Some(v) => write_string(o, v),
                    None => push(o, "NIL"),
                }
            }
            o.push(b')');
        }
    }
    out
}

fn push(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(s.as_bytes());
}

fn status_items(items: &[StatusItem]) -> String {
    let names: Vec<&str> = items.iter().map(|i| i.name()).collect();
    format!("({})", names.join(" "))
}

fn write_flag(out: &mut Vec<u8>, flag: &Flag<'_>) {
    match flag {
        Flag::Seen => push(out, "\\Seen"),
        Flag::Answered => push(out, "\\Answered"),
        Flag::Flagged => push(out, "\\Flagged"),
        Flag::Deleted => push(out, "\\Deleted"),
        Flag::Draft => push(out, "\\Draft"),
        Flag::Recent => push(out, "\\Recent"),
        Flag::Extension(name) => push(out, &format!("\\{name}")),
        Flag::Keyword(name) => push(out, name),
    }
}

fn write_flags(out: &mut Vec<u8>, flags: &[Flag<'_>]) {
    out.push(b'(');
    for (i, flag) in flags.iter().enumerate() {
        if i > 0 {
            out.push(b' ');
        }
        write_flag(out, flag);
    }
    out.push(b')');
}

/// `d-Mon-yyyy` as SEARCH takes it.
fn write_date(out: &mut Vec<u8>, date: &chrono::NaiveDate) {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let month = MONTHS[date.month0() as usize];
    push(out, &format!("{}-{month}-{:04}", date.day(), date.year()));
}

/// A quoted string (MODSEQ's entry name takes no other form); the parser
/// never yields CR, LF or NUL in one.
fn write_quoted(out: &mut Vec<u8>, s: &[u8]) {
    out.push(b'"');
    for &b in s {
        if b == b'"' || b == b'\\' {
            out.push(b'\\');
        }
        out.push(b);
    }
    out.push(b'"');
}

fn write_search_key(out: &mut Vec<u8>, key: &SearchKey<'_>) {
    use SearchKey as K;
    let word = |out: &mut Vec<u8>, w: &str, s: &[u8]| {
        push(out, w);
        out.push(b' ');
        write_astring(out, s);
    };
    match key {
        K::All => push(out, "ALL"),
        K::Answered => push(out, "ANSWERED"),
        K::Deleted => push(out, "DELETED"),
        K::Draft => push(out, "DRAFT"),
        K::Flagged => push(out, "FLAGGED"),
        K::New => push(out, "NEW"),
        K::Old => push(out, "OLD"),
        K::Recent => push(out, "RECENT"),
        K::Seen => push(out, "SEEN"),
        K::Unanswered => push(out, "UNANSWERED"),
        K::Undeleted => push(out, "UNDELETED"),
        K::Undraft => push(out, "UNDRAFT"),
        K::Unflagged => push(out, "UNFLAGGED"),
        K::Unseen => push(out, "UNSEEN"),
        K::Bcc(s) => word(out, "BCC", s),
        K::Body(s) => word(out, "BODY", s),
        K::Cc(s) => word(out, "CC", s),
        K::From(s) => word(out, "FROM", s),
        K::Subject(s) => word(out, "SUBJECT", s),
        K::Text(s) => word(out, "TEXT", s),
        K::To(s) => word(out, "TO", s),
        K::Before(d)
        | K::On(d)
        | K::Since(d)
        | K::SentBefore(d)
        | K::SentOn(d)
        | K::SentSince(d) => {
            push(
                out,
                match key {
                    K::Before(_) => "BEFORE ",
                    K::On(_) => "ON ",
                    K::Since(_) => "SINCE ",
                    K::SentBefore(_) => "SENTBEFORE ",
                    K::SentOn(_) => "SENTON ",
                    _ => "SENTSINCE ",
                },
            );
            write_date(out, d);
        }
        K::Larger(n) => push(out, &format!("LARGER {n}")),
        K::Smaller(n) => push(out, &format!("SMALLER {n}")),
        K::Keyword(flag) | K::Unkeyword(flag) => {
            push(
                out,
                if matches!(key, K::Keyword(_)) {
                    "KEYWORD "
                } else {
                    "UNKEYWORD "
                },
            );
            write_flag(out, flag);
        }
        K::Header(field, value) => {
            push(out, "HEADER ");
            write_astring(out, field);
            out.push(b' ');
            write_astring(out, value);
        }
        K::Uid(set) => {
            push(out, "UID ");
            write_sequence_set(out, set);
        }
        K::SequenceSet(set) => write_sequence_set(out, set),
        K::Not(inner) => {
            push(out, "NOT ");
            write_search_key(out, inner);
        }
        K::Or(a, b) => {
            push(out, "OR ");
            write_search_key(out, a);
            out.push(b' ');
            write_search_key(out, b);
        }
        K::And(keys) => {
            out.push(b'(');
            for (i, k) in keys.iter().enumerate() {
                if i > 0 {
                    out.push(b' ');
                }
                write_search_key(out, k);
            }
            out.push(b')');
        }
        K::ModSeq { entry, modseq } => {
            push(out, "MODSEQ ");
            if let Some((name, kind)) = entry {
                write_quoted(out, name);
                push(
                    out,
                    match kind {
                        EntryType::Private => " priv ",
                        EntryType::Shared => " shared ",
                        EntryType::All => " all ",
                    },
                );
            }
            push(out, &modseq.to_string());
        }
    }
}

fn write_part(out: &mut Vec<u8>, part: &[std::num::NonZeroU32]) {
    let numbers: Vec<String> = part.iter().map(|n| n.to_string()).collect();
    push(out, &numbers.join("."));
}

fn write_partial(out: &mut Vec<u8>, partial: &Option<Partial>) {
    if let Some(p) = partial {
        push(out, &format!("<{}.{}>", p.offset, p.length));
    }
}

fn write_section(out: &mut Vec<u8>, section: &Section<'_>) {
    out.push(b'[');
    write_part(out, &section.part);
    if let Some(text) = &section.text {
        if !section.part.is_empty() {
            out.push(b'.');
        }
        match text {
            SectionText::Header => push(out, "HEADER"),
            SectionText::Text => push(out, "TEXT"),
            SectionText::Mime => push(out, "MIME"),
            SectionText::HeaderFields { not, fields } => {
                push(
                    out,
                    if *not {
                        "HEADER.FIELDS.NOT ("
                    } else {
                        "HEADER.FIELDS ("
                    },
                );
                for (i, f) in fields.iter().enumerate() {
                    if i > 0 {
                        out.push(b' ');
                    }
                    write_astring(out, f);
                }
                out.push(b')');
            }
        }
    }
    out.push(b']');
}

fn write_fetch_attribute(out: &mut Vec<u8>, attribute: &FetchAttribute<'_>) {
    use FetchAttribute as A;
    match attribute {
        A::Envelope => push(out, "ENVELOPE"),
        A::Flags => push(out, "FLAGS"),
        A::InternalDate => push(out, "INTERNALDATE"),
        A::Rfc822 => push(out, "RFC822"),
        A::Rfc822Header => push(out, "RFC822.HEADER"),
        A::Rfc822Size => push(out, "RFC822.SIZE"),
        A::Rfc822Text => push(out, "RFC822.TEXT"),
        A::Body => push(out, "BODY"),
        A::BodyStructure => push(out, "BODYSTRUCTURE"),
        A::Uid => push(out, "UID"),
        A::ModSeq => push(out, "MODSEQ"),
        A::BodySection {
            peek,
            section,
            partial,
        } => {
            push(out, if *peek { "BODY.PEEK" } else { "BODY" });
            write_section(out, section);
            write_partial(out, partial);
        }
        A::Binary {
            peek,
            part,
            partial,
        } => {
            push(out, if *peek { "BINARY.PEEK[" } else { "BINARY[" });
            write_part(out, part);
            out.push(b']');
            write_partial(out, partial);
        }
        A::BinarySize { part } => {
            push(out, "BINARY.SIZE[");
            write_part(out, part);
            out.push(b']');
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_of_every_kind_render_back_to_themselves() {
        for line in [
            &b"a LOGIN {3}\r\nbob \"pa\\\"ss\""[..],
            b"b APPEND inbox (\\Seen kw) \" 1-Jan-2024 10:00:00 -0130\" ~{3}\r\na\0b",
            b"c UID FETCH 1:*,3 (BODY.PEEK[1.2.HEADER.FIELDS.NOT (a \"b c\")]<0.10> BINARY[1] \
              BINARY.SIZE[] ENVELOPE) (CHANGEDSINCE 5)",
            b"d SEARCH RETURN () CHARSET utf-8 OR NOT (SEEN 1:2) MODSEQ \"/x\" priv 0 \
              SINCE 01-Feb-0999 HEADER {1}\r\nX y",
            b"e LIST (SUBSCRIBED) \"\" (% *) RETURN (STATUS (MESSAGES SIZE))",
            b"f UID SORT (REVERSE ARRIVAL TO) us-ascii ALL",
            b"g STORE 2 (UNCHANGEDSINCE 0) -FLAGS.SILENT \\Answered x",
            b"h ID (\"a\" NIL \"b\" {1}\r\nc)",
            b"i SELECT INBOX (CONDSTORE)",
            b"j UID THREAD orderedsubject \"UTF-8\" NOT DELETED",
            b"k SETQUOTA \"\" (STORAGE 512 MESSAGE 10)",
            b"l GETQUOTA \"\"",
            b"m GETQUOTAROOT {5}\r\ninbox",
            b"n EXAMINE INBOX (QRESYNC (7 0 1:9,12 (1,3 2,*)) CONDSTORE)",
            b"o SELECT INBOX (QRESYNC (7 99))",
            b"p UID FETCH 1:* FLAGS (CHANGEDSINCE 3 VANISHED)",
        ] {
            match parse_command(line) {
                Ok(_) => {}
                Err(e) => panic!("{:?}: {e:?}", String::from_utf8_lossy(line)),
            }
            assert!(check_parse(line).is_some());
        }
    }
}
