//! Encodes the server's side of IMAP: status lines with response codes, continuation requests,
//! and the data types inside untagged data (strings, atoms, NIL, lists, flags, sequence sets,
//! date-times), plus the table of fixed reply texts. It refuses to decide which reply a command
//! gets or when; the session does.
//!
//! Everything appends to a caller's `Vec<u8>`, so a whole reply batch can
//! be built in one buffer and written once.

use chrono::{DateTime, FixedOffset};

use super::command::{Flag, SeqNumber, SequenceSet};
use super::parser::{CommandError, ParseError};
use super::reader::{Limit, Rejection};

/// Longest string we send quoted; longer ones go as literals, which the
/// client reads without scanning for escapes.
pub const MAX_QUOTED: usize = 1024;

/// The fixed reply texts. Texts that carry values are built by the
/// functions below; these are the ones that never change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Text {
    Greeting,
    /// RFC 3501 7.5: the continuation request for a synchronising literal.
    ReadyForLiteral,
    /// RFC 2177 3: the continuation after IDLE.
    Idling,
    Completed,
    LoggingOut,
    /// Followed by the command's correct form.
    Syntax,
    LineTooLong,
    LiteralTooBig,
    CommandTooBig,
    MessageTooBig,
    InvalidTag,
    UnknownCommand,
    InvalidNumber,
    InvalidSequenceSet,
    InvalidDate,
    InvalidString,
    NulInLiteral,
    UnknownSearchKey,
    UnknownFetchAttribute,
    InvalidFlag,
    UnknownOption,
    TooDeep,
    TooMany,
}

impl Text {
    pub fn as_str(self) -> &'static str {
        match self {
            Text::Greeting => "spate IMAP server ready",
            Text::ReadyForLiteral => "Ready for literal data",
            Text::Idling => "idling",
            Text::Completed => "completed",
            Text::LoggingOut => "Logging out",
            Text::Syntax => "Syntax:",
            Text::LineTooLong => "Command line too long",
            Text::LiteralTooBig => "Literal too big",
            Text::CommandTooBig => "Command too big",
            Text::MessageTooBig => "Message too big",
            Text::InvalidTag => "Missing or invalid tag",
            Text::UnknownCommand => "Unknown command",
            Text::InvalidNumber => "Invalid number",
            Text::InvalidSequenceSet => "Invalid sequence set",
            Text::InvalidDate => "Invalid date or time",
            Text::InvalidString => "Invalid string or literal",
            Text::NulInLiteral => "NUL octet in literal (use literal8)",
            Text::UnknownSearchKey => "Unknown search key",
            Text::UnknownFetchAttribute => "Unknown fetch attribute",
            Text::InvalidFlag => "Invalid flag",
            Text::UnknownOption => "Unknown or unsupported option",
            Text::TooDeep => "Search keys nested too deeply",
            Text::TooMany => "Too many items",
        }
    }
}

/// The status of a tagged or untagged status response (RFC 3501 7.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Ok,
    No,
    Bad,
    Preauth,
    Bye,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "OK",
            Status::No => "NO",
            Status::Bad => "BAD",
            Status::Preauth => "PREAUTH",
            Status::Bye => "BYE",
        }
    }
}

/// Response codes (RFC 3501 7.1, RFC 9051 7.1, RFC 5530, RFC 4315,
/// RFC 7162, RFC 4469/RFC 7889 TOOBIG).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code<'a> {
    Alert,
    /// The capability names, without "CAPABILITY".
    Capability(&'a [&'a str]),
    /// `allow_keywords` adds `\*` (new keywords may be created).
    PermanentFlags {
        flags: &'a [Flag<'a>],
        allow_keywords: bool,
    },
    UidValidity(u32),
    UidNext(u32),
    /// RFC 3501 (removed in IMAP4rev2): the first unseen message.
    Unseen(u32),
    ReadOnly,
    ReadWrite,
    TryCreate,
    Parse,
    BadCharset,
    /// RFC 4315 3.
    AppendUid {
        validity: u32,
        uid: u32,
    },
    /// RFC 4315 3: source and destination UIDs, pairwise in order.
    CopyUid {
        validity: u32,
        source: &'a [u32],
        destination: &'a [u32],
    },
    UidNotSticky,
    Unavailable,
    AuthenticationFailed,
    AuthorizationFailed,
    Expired,
    PrivacyRequired,
    ContactAdmin,
    NoPerm,
    InUse,
    ExpungeIssued,
    Corruption,
    ServerBug,
    ClientBug,
    Cannot,
    Limit,
    OverQuota,
    AlreadyExists,
    NonExistent,
    NotSaved,
    HasChildren,
    Closed,
    UnknownCte,
    /// RFC 4469, RFC 7888 5.
    TooBig,
    /// RFC 7162 3.1.2.1.
    HighestModSeq(u64),
    NoModSeq,
    /// RFC 7162 3.1.3: the messages that failed UNCHANGEDSINCE.
    Modified(&'a [u32]),
}

/// Appends one response code, brackets included.
pub fn write_code(out: &mut Vec<u8>, code: &Code<'_>) {
    out.push(b'[');
    let simple = match code {
        Code::Alert => "ALERT",
        Code::ReadOnly => "READ-ONLY",
        Code::ReadWrite => "READ-WRITE",
        Code::TryCreate => "TRYCREATE",
        Code::Parse => "PARSE",
        Code::BadCharset => "BADCHARSET",
        Code::UidNotSticky => "UIDNOTSTICKY",
        Code::Unavailable => "UNAVAILABLE",
        Code::AuthenticationFailed => "AUTHENTICATIONFAILED",
        Code::AuthorizationFailed => "AUTHORIZATIONFAILED",
        Code::Expired => "EXPIRED",
        Code::PrivacyRequired => "PRIVACYREQUIRED",
        Code::ContactAdmin => "CONTACTADMIN",
        Code::NoPerm => "NOPERM",
        Code::InUse => "INUSE",
        Code::ExpungeIssued => "EXPUNGEISSUED",
        Code::Corruption => "CORRUPTION",
        Code::ServerBug => "SERVERBUG",
        Code::ClientBug => "CLIENTBUG",
        Code::Cannot => "CANNOT",
        Code::Limit => "LIMIT",
        Code::OverQuota => "OVERQUOTA",
        Code::AlreadyExists => "ALREADYEXISTS",
        Code::NonExistent => "NONEXISTENT",
        Code::NotSaved => "NOTSAVED",
        Code::HasChildren => "HASCHILDREN",
        Code::Closed => "CLOSED",
        Code::UnknownCte => "UNKNOWN-CTE",
        Code::TooBig => "TOOBIG",
        Code::NoModSeq => "NOMODSEQ",
        Code::Capability(names) => {
            out.extend_from_slice(b"CAPABILITY");
            for name in names.iter() {
                out.push(b' ');
                out.extend_from_slice(name.as_bytes());
            }
            ""
        }
        Code::PermanentFlags {
            flags,
            allow_keywords,
        } => {
            out.extend_from_slice(b"PERMANENTFLAGS (");
            for (i, flag) in flags.iter().enumerate() {
                if i > 0 {
                    out.push(b' ');
                }
                write_flag(out, flag);
            }
            if *allow_keywords {
                if !flags.is_empty() {
                    out.push(b' ');
                }
                out.extend_from_slice(b"\\*");
            }
            out.push(b')');
            ""
        }
        Code::UidValidity(n) => {
            write_number(out, "UIDVALIDITY ", u64::from(*n));
            ""
        }
        Code::UidNext(n) => {
            write_number(out, "UIDNEXT ", u64::from(*n));
            ""
        }
        Code::Unseen(n) => {
            write_number(out, "UNSEEN ", u64::from(*n));
            ""
        }
        Code::HighestModSeq(n) => {
            write_number(out, "HIGHESTMODSEQ ", *n);
            ""
        }
        Code::AppendUid { validity, uid } => {
            write_number(out, "APPENDUID ", u64::from(*validity));
            write_number(out, " ", u64::from(*uid));
            ""
        }
        Code::CopyUid {
            validity,
            source,
            destination,
        } => {
            write_number(out, "COPYUID ", u64::from(*validity));
            out.push(b' ');
            write_uid_set(out, source);
            out.push(b' ');
            write_uid_set(out, destination);
            ""
        }
        Code::Modified(uids) => {
            out.extend_from_slice(b"MODIFIED ");
            write_uid_set(out, uids);
            ""
        }
    };
    out.extend_from_slice(simple.as_bytes());
    out.push(b']');
}

fn write_number(out: &mut Vec<u8>, prefix: &str, n: u64) {
    out.extend_from_slice(prefix.as_bytes());
    out.extend_from_slice(n.to_string().as_bytes());
}

fn write_status_rest(out: &mut Vec<u8>, status: Status, code: Option<&Code<'_>>, text: &str) {
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    if let Some(code) = code {
        write_code(out, code);
        out.push(b' ');
    }
    write_text(out, text);
    out.extend_from_slice(b"\r\n");
}

/// resp-text must hold no CR or LF: anything else goes through, CR/LF
/// become spaces so a text can never end a line early.
fn write_text(out: &mut Vec<u8>, text: &str) {
    let text = if text.is_empty() { "ok" } else { text };
    out.extend(
        text.bytes()
            .map(|b| if b == b'\r' || b == b'\n' { b' ' } else { b }),
    );
}

/// `tag STATUS [code] text CRLF`.
pub fn write_tagged(
    out: &mut Vec<u8>,
    tag: &str,
    status: Status,
    code: Option<&Code<'_>>,
    text: &str,
) {
    out.extend_from_slice(tag.as_bytes());
    out.push(b' ');
    write_status_rest(out, status, code, text);
}

/// `* STATUS [code] text CRLF`.
pub fn write_untagged_status(
    out: &mut Vec<u8>,
    status: Status,
    code: Option<&Code<'_>>,
    text: &str,
) {
    out.extend_from_slice(b"* ");
    write_status_rest(out, status, code, text);
}

/// `+ text CRLF` (an empty text sends "+ " alone, as SASL wants for an
/// empty challenge).
pub fn write_continuation(out: &mut Vec<u8>, text: &str) {
    out.extend_from_slice(b"+ ");
    out.extend(
        text.bytes()
            .map(|b| if b == b'\r' || b == b'\n' { b' ' } else { b }),
    );
    out.extend_from_slice(b"\r\n");
}

/// The reply to a command that did not parse: tagged BAD when the tag
/// was read, `* BAD` otherwise (RFC 3501 7.1.3).
pub fn write_command_error(out: &mut Vec<u8>, error: &CommandError<'_>) {
    let usage;
    let text = match error.error {
        ParseError::Syntax(u) => {
            usage = format!("{} {}", Text::Syntax.as_str(), u.text());
            usage.as_str()
        }
        other => parse_error_text(other).as_str(),
    };
    match error.tag {
        Some(tag) => write_tagged(out, tag, Status::Bad, None, text),
        None => write_untagged_status(out, Status::Bad, None, text),
    }
}

/// The fixed text for a parse error (`Syntax` has its usage added by
/// [`write_command_error`]).
pub fn parse_error_text(error: ParseError) -> Text {
    match error {
        ParseError::InvalidTag => Text::InvalidTag,
        ParseError::UnknownCommand => Text::UnknownCommand,
        ParseError::Syntax(_) => Text::Syntax,
        ParseError::InvalidNumber => Text::InvalidNumber,
        ParseError::InvalidSequenceSet => Text::InvalidSequenceSet,
        ParseError::InvalidDate => Text::InvalidDate,
        ParseError::InvalidString => Text::InvalidString,
        ParseError::NulInLiteral => Text::NulInLiteral,
        ParseError::UnknownSearchKey => Text::UnknownSearchKey,
        ParseError::UnknownFetchAttribute => Text::UnknownFetchAttribute,
        ParseError::InvalidFlag => Text::InvalidFlag,
        ParseError::UnknownOption => Text::UnknownOption,
        ParseError::TooDeep => Text::TooDeep,
        ParseError::TooMany => Text::TooMany,
    }
}

/// The reply to a command the reader refused for size: BAD, with
/// `[TOOBIG]` for APPEND (RFC 7888 5); untagged when no tag was read.
pub fn write_rejection(out: &mut Vec<u8>, rejection: &Rejection<'_>) {
    let (code, text) = match rejection.limit {
        Limit::LineTooLong => (None, Text::LineTooLong),
        Limit::LiteralTooBig { .. } | Limit::CommandTooBig if rejection.is_append() => {
            (Some(Code::TooBig), Text::MessageTooBig)
        }
        Limit::LiteralTooBig { .. } => (None, Text::LiteralTooBig),
        Limit::CommandTooBig => (None, Text::CommandTooBig),
    };
    match rejection.tag {
        Some(tag) => write_tagged(out, tag, Status::Bad, code.as_ref(), text.as_str()),
        None => write_untagged_status(out, Status::Bad, code.as_ref(), text.as_str()),
    }
}

/// An atom as is. The caller vouches that it is one (names, keywords
/// from a parsed command); in debug builds that is checked.
pub fn write_atom(out: &mut Vec<u8>, atom: &str) {
    debug_assert!(
        !atom.is_empty()
            && atom
                .bytes()
                .all(|b| (0x21..0x7f).contains(&b) && !b"(){%*\"\\]".contains(&b)),
        "not an atom: {atom:?}"
    );
    out.extend_from_slice(atom.as_bytes());
}

pub fn write_nil(out: &mut Vec<u8>) {
    out.extend_from_slice(b"NIL");
}

/// Whether `s` can go out as a quoted string: 7-bit, no CR, LF or NUL,
/// not too long (quotes and backslashes are escaped).
fn quotable(s: &[u8]) -> bool {
    s.len() <= MAX_QUOTED
        && s.iter()
            .all(|&b| b != 0 && b != b'\r' && b != b'\n' && b < 0x80)
}

/// A `string`: quoted when [`quotable`], else a literal.
pub fn write_string(out: &mut Vec<u8>, s: &[u8]) {
    if quotable(s) {
        out.push(b'"');
        for &b in s {
            if b == b'"' || b == b'\\' {
                out.push(b'\\');
            }
            out.push(b);
        }
        out.push(b'"');
    } else {
        write_literal(out, s);
    }
}

/// `{n}` CRLF and the octets.
pub fn write_literal(out: &mut Vec<u8>, s: &[u8]) {
    out.push(b'{');
    out.extend_from_slice(s.len().to_string().as_bytes());
    out.extend_from_slice(b"}\r\n");
    out.extend_from_slice(s);
}

/// RFC 3516 `literal8`: `~{n}` CRLF and the octets (may hold NUL).
pub fn write_literal8(out: &mut Vec<u8>, s: &[u8]) {
    out.push(b'~');
    write_literal(out, s);
}

/// An `nstring`: NIL for `None`.
pub fn write_nstring(out: &mut Vec<u8>, s: Option<&[u8]>) {
    match s {
        Some(s) => write_string(out, s),
        None => write_nil(out),
    }
}

/// An `astring`: bare when every octet is an ASTRING-CHAR (and it could
/// not be read as NIL), else a string.
pub fn write_astring(out: &mut Vec<u8>, s: &[u8]) {
    let bare = !s.is_empty()
        && !s.eq_ignore_ascii_case(b"NIL")
        && s.iter()
            .all(|&b| (0x21..0x7f).contains(&b) && !b"(){%*\"\\".contains(&b));
    if bare {
        out.extend_from_slice(s);
    } else {
        write_string(out, s);
    }
}

/// `(item SP item ...)`, each item written by `write`.
pub fn write_list<T>(
    out: &mut Vec<u8>,
    items: impl IntoIterator<Item = T>,
    mut write: impl FnMut(&mut Vec<u8>, T),
) {
    out.push(b'(');
    for (i, item) in items.into_iter().enumerate() {
        if i > 0 {
            out.push(b' ');
        }
        write(out, item);
    }
    out.push(b')');
}

pub fn write_flag(out: &mut Vec<u8>, flag: &Flag<'_>) {
    let name = match flag {
        Flag::Seen => "\\Seen",
        Flag::Answered => "\\Answered",
        Flag::Flagged => "\\Flagged",
        Flag::Deleted => "\\Deleted",
        Flag::Draft => "\\Draft",
        Flag::Recent => "\\Recent",
        Flag::Extension(name) => {
            out.push(b'\\');
            name
        }
        Flag::Keyword(name) => name,
    };
    out.extend_from_slice(name.as_bytes());
}

/// `(\Seen $Forwarded ...)`.
pub fn write_flags(out: &mut Vec<u8>, flags: &[Flag<'_>]) {
    write_list(out, flags, write_flag);
}

/// Compresses numbers into `sequence-set` / `uid-set` form: runs of
/// consecutive ascending numbers become `a:b`, in the order given (COPYUID
/// pairs its two sets by position, so nothing is reordered; sort first
/// for the shortest form). Writes nothing for an empty slice.
pub fn write_uid_set(out: &mut Vec<u8>, numbers: &[u32]) {
    let mut i = 0;
    let mut first = true;
    while i < numbers.len() {
        let start = numbers[i];
        let mut end = start;
        while i + 1 < numbers.len() && end.checked_add(1) == Some(numbers[i + 1]) {
            end = numbers[i + 1];
            i += 1;
        }
        if !first {
            out.push(b',');
        }
        first = false;
        out.extend_from_slice(start.to_string().as_bytes());
        if end != start {
            out.push(b':');
            out.extend_from_slice(end.to_string().as_bytes());
        }
        i += 1;
    }
}

/// A parsed sequence set, as the client could have written it.
pub fn write_sequence_set(out: &mut Vec<u8>, set: &SequenceSet) {
    let write_number = |out: &mut Vec<u8>, n: SeqNumber| match n {
        SeqNumber::Value(n) => out.extend_from_slice(n.to_string().as_bytes()),
        SeqNumber::Largest => out.push(b'*'),
    };
    match set {
        SequenceSet::Saved => out.push(b'$'),
        SequenceSet::Ranges(ranges) => {
            for (i, range) in ranges.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_number(out, range.start);
                if range.end != range.start {
                    out.push(b':');
                    write_number(out, range.end);
                }
            }
        }
    }
}

/// RFC 3501 9 `date-time`: `"dd-Mon-yyyy hh:mm:ss +zzzz"` (two-digit day).
pub fn write_date_time(out: &mut Vec<u8>, at: &DateTime<FixedOffset>) {
    out.push(b'"');
    out.extend_from_slice(at.format("%d-%b-%Y %H:%M:%S %z").to_string().as_bytes());
    out.push(b'"');
}
