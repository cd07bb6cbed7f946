//! Turns one complete IMAP command (as framed by [`super::reader`], literals inline) into a typed
//! [`Command`] borrowing from it, per RFC 3501 section 9 / RFC 9051 section 9 and the extensions
//! named in [`super::command`]. It refuses to know session state, capabilities or limits (the
//! reader bounds the input), and never panics on any input.
//!
//! Strictness follows the grammar (RFC 9051 9, notes 1 and 2): keywords are
//! case-insensitive, SP is exactly one space, no trailing spaces. One
//! leniency: a literal's CRLF may be a bare LF (the reader accepts it
//! too). Search keys nest at
//! most [`MAX_DEPTH`] levels, so recursion is bounded.

use std::borrow::Cow;
use std::num::NonZeroU32;

use chrono::{DateTime, FixedOffset, NaiveDate, NaiveTime, TimeZone};
use thiserror::Error;

use super::command::{
    Command, CommandBody, EntryType, FetchAttribute, FetchItems, Flag, IString, List, ListReturn,
    ListSelect, Mailbox, Partial, Qresync, SearchKey, SearchReturn, Section, SectionText,
    SeqNumber, SeqRange, SequenceSet, SortBy, SortKey, StatusItem, StoreAction, ThreadAlgorithm,
};

/// Deepest nesting of search keys (parentheses, NOT, OR) we follow.
pub const MAX_DEPTH: usize = 32;

/// RFC 2971 3.3: at most 30 field-value pairs in ID.
pub const MAX_ID_PAIRS: usize = 30;

/// Which command's syntax was wrong, so the BAD reply can show its form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Usage {
    /// Before the command is known, or in a shared production.
    Generic,
    NoArguments,
    Authenticate,
    Login,
    Enable,
    Select,
    Examine,
    Create,
    Delete,
    Rename,
    Subscribe,
    Unsubscribe,
    List,
    Lsub,
    Status,
    Append,
    Search,
    Sort,
    Thread,
    GetQuota,
    GetQuotaRoot,
    SetQuota,
    Fetch,
    Store,
    Copy,
    Move,
    Uid,
    UidExpunge,
    Id,
}

impl Usage {
    /// The correct form, for the BAD reply.
    pub fn text(self) -> &'static str {
        match self {
            Usage::Generic => "syntax error",
            Usage::NoArguments => "command takes no arguments",
            Usage::Authenticate => "AUTHENTICATE mechanism [initial-response]",
            Usage::Login => "LOGIN user password",
            Usage::Enable => "ENABLE capability ...",
            Usage::Select => "SELECT mailbox [(CONDSTORE | QRESYNC (uidvalidity modseq ...))]",
            Usage::Examine => "EXAMINE mailbox [(CONDSTORE | QRESYNC (uidvalidity modseq ...))]",
            Usage::Create => "CREATE mailbox",
            Usage::Delete => "DELETE mailbox",
            Usage::Rename => "RENAME mailbox new-name",
            Usage::Subscribe => "SUBSCRIBE mailbox",
            Usage::Unsubscribe => "UNSUBSCRIBE mailbox",
            Usage::List => "LIST [(options)] reference pattern [RETURN (options)]",
            Usage::Lsub => "LSUB reference pattern",
            Usage::Status => "STATUS mailbox (items)",
            Usage::Append => "APPEND mailbox [(flags)] [date-time] literal",
            Usage::Search => "SEARCH [RETURN (options)] [CHARSET charset] criteria",
            Usage::Sort => "SORT (criteria) charset search-criteria",
            Usage::Thread => "THREAD ORDEREDSUBJECT|REFERENCES charset search-criteria",
            Usage::GetQuota => "GETQUOTA quota-root",
            Usage::GetQuotaRoot => "GETQUOTAROOT mailbox",
            Usage::SetQuota => "SETQUOTA quota-root (resource limit ...)",
            Usage::Fetch => "FETCH sequence-set items [(CHANGEDSINCE modseq [VANISHED])]",
            Usage::Store => {
                "STORE sequence-set [(UNCHANGEDSINCE modseq)] [+|-]FLAGS[.SILENT] (flags)"
            }
            Usage::Copy => "COPY sequence-set mailbox",
            Usage::Move => "MOVE sequence-set mailbox",
            Usage::Uid => "UID COPY|MOVE|FETCH|SEARCH|SORT|THREAD|STORE|EXPUNGE arguments",
            Usage::UidExpunge => "UID EXPUNGE sequence-set",
            Usage::Id => "ID (field value ...) or ID NIL",
        }
    }
}

/// Why a command is not valid. Every one is the client's error, answered
/// BAD (texts in [`super::response`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum ParseError {
    #[error("missing or invalid tag")]
    InvalidTag,
    #[error("unknown command")]
    UnknownCommand,
    #[error("syntax: {}", .0.text())]
    Syntax(Usage),
    /// Not digits, or too large for its type.
    #[error("invalid number")]
    InvalidNumber,
    /// A zero, a stray separator, or a `$` mixed with numbers.
    #[error("invalid sequence set")]
    InvalidSequenceSet,
    #[error("invalid date or time")]
    InvalidDate,
    /// Unterminated or badly escaped quoted string, CR/LF inside one, or a
    /// literal longer than the command.
    #[error("invalid string")]
    InvalidString,
    /// RFC 3501 9: `literal` is CHAR8 (no NUL); only literal8 may hold NUL.
    #[error("NUL octet in literal")]
    NulInLiteral,
    #[error("unknown search key")]
    UnknownSearchKey,
    #[error("unknown fetch attribute")]
    UnknownFetchAttribute,
    #[error("invalid flag")]
    InvalidFlag,
    /// An option or item we do not implement (RFC 5258 3: answer BAD).
    #[error("unknown option")]
    UnknownOption,
    #[error("search keys nested too deeply")]
    TooDeep,
    #[error("too many items")]
    TooMany,
}

/// A command that did not parse, with its tag when the tag itself was
/// valid (the reply is then tagged BAD, else untagged `* BAD`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error("{error}")]
pub struct CommandError<'a> {
    pub tag: Option<&'a str>,
    pub error: ParseError,
}

type R<T> = Result<T, ParseError>;

const SYNTAX: ParseError = ParseError::Syntax(Usage::Generic);

/// Parses one command as the reader yields it: without its final CRLF
/// (which cannot be stripped here: it may end a literal's content).
pub fn parse_command(input: &[u8]) -> Result<Command<'_>, CommandError<'_>> {
    let mut c = Cursor::new(input);
    let tag = match c.tag() {
        Some(tag) if c.eat(b' ') => tag,
        _ => {
            return Err(CommandError {
                tag: None,
                error: ParseError::InvalidTag,
            })
        }
    };
    let fail = |error| CommandError {
        tag: Some(tag),
        error,
    };
    let name = c.keyword();
    let mut upper = [0u8; 12];
    if name.len() > upper.len() {
        return Err(fail(ParseError::UnknownCommand));
    }
    upper[..name.len()].copy_from_slice(name);
    upper.make_ascii_uppercase();
    let name = &upper[..name.len()];
    let (body, usage) = match command_body(&mut c, name) {
        Ok(parsed) => parsed,
        Err((error, usage)) => return Err(fail(with_usage(error, usage))),
    };
    if !c.at_end() {
        return Err(fail(ParseError::Syntax(usage)));
    }
    Ok(Command { tag, body })
}

/// `Syntax(Generic)` from a shared production becomes the command's usage.
fn with_usage(error: ParseError, usage: Usage) -> ParseError {
    match error {
        ParseError::Syntax(Usage::Generic) => ParseError::Syntax(usage),
        other => other,
    }
}

type BodyResult<'a> = Result<(CommandBody<'a>, Usage), (ParseError, Usage)>;

fn command_body<'a>(c: &mut Cursor<'a>, name: &[u8]) -> BodyResult<'a> {
    let usage = match name {
        b"CAPABILITY" | b"NOOP" | b"LOGOUT" | b"STARTTLS" | b"NAMESPACE" | b"CHECK" | b"CLOSE"
        | b"UNSELECT" | b"EXPUNGE" | b"IDLE" => Usage::NoArguments,
        b"AUTHENTICATE" => Usage::Authenticate,
        b"LOGIN" => Usage::Login,
        b"ENABLE" => Usage::Enable,
        b"SELECT" => Usage::Select,
        b"EXAMINE" => Usage::Examine,
        b"CREATE" => Usage::Create,
        b"DELETE" => Usage::Delete,
        b"RENAME" => Usage::Rename,
        b"SUBSCRIBE" => Usage::Subscribe,
        b"UNSUBSCRIBE" => Usage::Unsubscribe,
        b"LIST" => Usage::List,
        b"LSUB" => Usage::Lsub,
        b"STATUS" => Usage::Status,
        b"APPEND" => Usage::Append,
        b"SEARCH" => Usage::Search,
        b"SORT" => Usage::Sort,
        b"THREAD" => Usage::Thread,
        b"GETQUOTA" => Usage::GetQuota,
        b"GETQUOTAROOT" => Usage::GetQuotaRoot,
        b"SETQUOTA" => Usage::SetQuota,
        b"FETCH" => Usage::Fetch,
        b"STORE" => Usage::Store,
        b"COPY" => Usage::Copy,
        b"MOVE" => Usage::Move,
        b"UID" => Usage::Uid,
        b"ID" => Usage::Id,
        _ => return Err((ParseError::UnknownCommand, Usage::Generic)),
    };
    let parsed = if usage == Usage::NoArguments {
        Ok(match name {
            b"CAPABILITY" => CommandBody::Capability,
            b"NOOP" => CommandBody::Noop,
            b"LOGOUT" => CommandBody::Logout,
            b"STARTTLS" => CommandBody::StartTls,
            b"NAMESPACE" => CommandBody::Namespace,
            b"CHECK" => CommandBody::Check,
            b"CLOSE" => CommandBody::Close,
            b"UNSELECT" => CommandBody::Unselect,
            b"EXPUNGE" => CommandBody::Expunge,
            _ => CommandBody::Idle,
        })
    } else if usage == Usage::Uid {
        return uid_command(c);
    } else {
        c.sp().and_then(|()| arguments(c, usage))
    };
    parsed.map(|b| (b, usage)).map_err(|e| (e, usage))
}

/// After `UID SP`: the wrapped command, its usage for errors.
fn uid_command<'a>(c: &mut Cursor<'a>) -> BodyResult<'a> {
    let fail = |e| (e, Usage::Uid);
    c.sp().map_err(fail)?;
    let name = c.keyword();
    let usage = if name.eq_ignore_ascii_case(b"COPY") {
        Usage::Copy
    } else if name.eq_ignore_ascii_case(b"MOVE") {
        Usage::Move
    } else if name.eq_ignore_ascii_case(b"FETCH") {
        Usage::Fetch
    } else if name.eq_ignore_ascii_case(b"SEARCH") {
        Usage::Search
    } else if name.eq_ignore_ascii_case(b"SORT") {
        Usage::Sort
    } else if name.eq_ignore_ascii_case(b"THREAD") {
        Usage::Thread
    } else if name.eq_ignore_ascii_case(b"STORE") {
        Usage::Store
    } else if name.eq_ignore_ascii_case(b"EXPUNGE") {
        Usage::UidExpunge
    } else {
        return Err(fail(SYNTAX));
    };
    let parsed = c.sp().and_then(|()| {
        let mut body = arguments(c, usage)?;
        match &mut body {
            CommandBody::Copy { uid, .. }
            | CommandBody::Move { uid, .. }
            | CommandBody::Fetch { uid, .. }
            | CommandBody::Search { uid, .. }
            | CommandBody::Sort { uid, .. }
            | CommandBody::Thread { uid, .. }
            | CommandBody::Store { uid, .. } => *uid = true,
            _ => {}
        }
        Ok(body)
    });
    parsed.map(|b| (b, usage)).map_err(|e| (e, usage))
}

/// The arguments after `NAME SP`, for commands that have some.
fn arguments<'a>(c: &mut Cursor<'a>, usage: Usage) -> R<CommandBody<'a>> {
    Ok(match usage {
        Usage::Authenticate => {
            let mechanism = c.atom()?;
            let initial = if c.eat(b' ') {
                // RFC 4959: base64, or "=" for an empty response.
                let text = c.take_while(|b| b.is_ascii_alphanumeric() || b"+/=".contains(&b));
                if text.is_empty() {
                    return Err(SYNTAX);
                }
                Some(text)
            } else {
                None
            };
            CommandBody::Authenticate { mechanism, initial }
        }
        Usage::Login => {
            let username = c.astring()?;
            c.sp()?;
            let password = c.astring()?;
            CommandBody::Login { username, password }
        }
        Usage::Enable => {
            let mut names = vec![c.atom()?];
            while c.eat(b' ') {
                names.push(c.atom()?);
            }
            CommandBody::Enable(names)
        }
        Usage::Select | Usage::Examine => {
            let mailbox = c.mailbox()?;
            let mut condstore = false;
            let mut qresync = None;
            if c.eat(b' ') {
                c.expect(b'(')?;
                if !c.eat(b')') {
                    loop {
                        let param = c.keyword();
                        if param.eq_ignore_ascii_case(b"CONDSTORE") {
                            condstore = true;
                        } else if param.eq_ignore_ascii_case(b"QRESYNC") && qresync.is_none() {
                            c.sp()?;
                            qresync = Some(c.qresync()?);
                        } else if param.is_empty() {
                            return Err(SYNTAX);
                        } else {
                            return Err(ParseError::UnknownOption);
                        }
                        if c.eat(b')') {
                            break;
                        }
                        c.sp()?;
                    }
                }
            }
            CommandBody::Select {
                mailbox,
                read_only: usage == Usage::Examine,
                condstore,
                qresync,
            }
        }
        Usage::Create => CommandBody::Create(c.mailbox()?),
        Usage::Delete => CommandBody::Delete(c.mailbox()?),
        Usage::Subscribe => CommandBody::Subscribe(c.mailbox()?),
        Usage::Unsubscribe => CommandBody::Unsubscribe(c.mailbox()?),
        Usage::Rename => {
            let from = c.mailbox()?;
            c.sp()?;
            let to = c.mailbox()?;
            CommandBody::Rename { from, to }
        }
        Usage::List => CommandBody::List(list(c)?),
        Usage::Lsub => {
            let reference = c.astring()?;
            c.sp()?;
            let pattern = c.list_mailbox()?;
            CommandBody::Lsub { reference, pattern }
        }
        Usage::Status => {
            let mailbox = c.mailbox()?;
            c.sp()?;
            let items = status_items(c)?;
            CommandBody::Status { mailbox, items }
        }
        Usage::Append => append(c)?,
        Usage::Search => search(c)?,
        Usage::Sort => sort(c)?,
        Usage::Thread => thread(c)?,
        Usage::GetQuota => CommandBody::GetQuota(c.astring()?),
        Usage::GetQuotaRoot => CommandBody::GetQuotaRoot(c.mailbox()?),
        Usage::SetQuota => set_quota(c)?,
        Usage::Fetch => fetch(c)?,
        Usage::Store => store(c)?,
        Usage::Copy | Usage::Move => {
            let set = c.sequence_set()?;
            c.sp()?;
            let mailbox = c.mailbox()?;
            if usage == Usage::Copy {
                CommandBody::Copy {
                    uid: false,
                    set,
                    mailbox,
                }
            } else {
                CommandBody::Move {
                    uid: false,
                    set,
                    mailbox,
                }
            }
        }
        Usage::UidExpunge => CommandBody::UidExpunge(c.sequence_set()?),
        Usage::Id => CommandBody::Id(id_params(c)?),
        Usage::Generic | Usage::NoArguments | Usage::Uid => return Err(SYNTAX),
    })
}

/// RFC 5258 3: `[(select-opts) SP] reference SP (pattern / (patterns))
/// [SP RETURN (return-opts)]`.
fn list<'a>(c: &mut Cursor<'a>) -> R<List<'a>> {
    let mut select = ListSelect::default();
    let mut extended = false;
    if c.eat(b'(') {
        extended = true;
        let mut any_base = false;
        let mut any = false;
        if !c.eat(b')') {
            loop {
                let opt = c.keyword();
                if opt.eq_ignore_ascii_case(b"SUBSCRIBED") {
                    select.subscribed = true;
                    any_base = true;
                } else if opt.eq_ignore_ascii_case(b"SPECIAL-USE") {
                    select.special_use = true;
                    any_base = true;
                } else if opt.eq_ignore_ascii_case(b"REMOTE") {
                    select.remote = true;
                } else if opt.eq_ignore_ascii_case(b"RECURSIVEMATCH") {
                    select.recursive_match = true;
                } else if opt.is_empty() {
                    return Err(SYNTAX);
                } else {
                    return Err(ParseError::UnknownOption);
                }
                any = true;
                if c.eat(b')') {
                    break;
                }
                c.sp()?;
            }
        }
        // RFC 5258 3.1: RECURSIVEMATCH needs a base option beside it.
        if any && select.recursive_match && !any_base {
            return Err(SYNTAX);
        }
        c.sp()?;
    }
    let reference = c.astring()?;
    c.sp()?;
    let mut patterns = Vec::new();
    if c.eat(b'(') {
        extended = true;
        patterns.push(c.list_mailbox()?);
        while c.eat(b' ') {
            patterns.push(c.list_mailbox()?);
        }
        c.expect(b')')?;
    } else {
        patterns.push(c.list_mailbox()?);
    }
    let mut ret = ListReturn::default();
    if c.eat(b' ') {
        if !c.keyword().eq_ignore_ascii_case(b"RETURN") {
            return Err(SYNTAX);
        }
        extended = true;
        c.sp()?;
        c.expect(b'(')?;
        if !c.eat(b')') {
            loop {
                let opt = c.keyword();
                if opt.eq_ignore_ascii_case(b"SUBSCRIBED") {
                    ret.subscribed = true;
                } else if opt.eq_ignore_ascii_case(b"CHILDREN") {
                    ret.children = true;
                } else if opt.eq_ignore_ascii_case(b"SPECIAL-USE") {
                    ret.special_use = true;
                } else if opt.eq_ignore_ascii_case(b"STATUS") {
                    c.sp()?;
                    ret.status = Some(status_items(c)?);
                } else if opt.is_empty() {
                    return Err(SYNTAX);
                } else {
                    return Err(ParseError::UnknownOption);
                }
                if c.eat(b')') {
                    break;
                }
                c.sp()?;
            }
        }
    }
    Ok(List {
        reference,
        patterns,
        select,
        ret,
        extended,
    })
}

/// `"(" status-att *(SP status-att) ")"`.
fn status_items(c: &mut Cursor<'_>) -> R<Vec<StatusItem>> {
    c.expect(b'(')?;
    let mut items = Vec::new();
    loop {
        let name = c.keyword();
        let item = [
            StatusItem::Messages,
            StatusItem::Recent,
            StatusItem::UidNext,
            StatusItem::UidValidity,
            StatusItem::Unseen,
            StatusItem::Deleted,
            StatusItem::Size,
            StatusItem::HighestModSeq,
            StatusItem::DeletedStorage,
        ]
        .into_iter()
        .find(|i| name.eq_ignore_ascii_case(i.name().as_bytes()));
        match item {
            Some(item) => items.push(item),
            None if name.is_empty() => return Err(SYNTAX),
            None => return Err(ParseError::UnknownOption),
        }
        if c.eat(b')') {
            return Ok(items);
        }
        c.sp()?;
    }
}

/// RFC 3501 6.3.11: `mailbox [SP flag-list] [SP date-time] SP literal`;
/// RFC 3516 allows a literal8 instead.
fn append<'a>(c: &mut Cursor<'a>) -> R<CommandBody<'a>> {
    let mailbox = c.mailbox()?;
    c.sp()?;
    let mut flags = Vec::new();
    if c.peek() == Some(b'(') {
        flags = c.flag_list()?;
        c.sp()?;
    }
    let mut date = None;
    if c.peek() == Some(b'"') {
        date = Some(c.date_time()?);
        c.sp()?;
    }
    let binary = c.eat(b'~');
    if c.peek() != Some(b'{') {
        return Err(SYNTAX);
    }
    let message = c.literal(binary)?;
    Ok(CommandBody::Append {
        mailbox,
        flags,
        date,
        message,
        binary,
    })
}

/// RFC 9051 6.4.4: `[RETURN (opts) SP] [CHARSET charset SP] key *(SP key)`.
fn search<'a>(c: &mut Cursor<'a>) -> R<CommandBody<'a>> {
    let mut result = None;
    let mut charset = None;
    let mut criteria = Vec::new();
    let mut first = true;
    loop {
        let save = c.pos;
        if first {
            let word = c.keyword();
            if word.eq_ignore_ascii_case(b"RETURN") && c.peek() == Some(b' ') && result.is_none() {
                c.sp()?;
                result = Some(search_return(c)?);
                c.sp()?;
                continue;
            } else if word.eq_ignore_ascii_case(b"CHARSET") && c.peek() == Some(b' ') {
                c.sp()?;
                charset = Some(c.astring()?);
                c.sp()?;
            } else {
                c.pos = save;
            }
            first = false;
        }
        criteria.push(c.search_key(0)?);
        if !c.eat(b' ') {
            break;
        }
    }
    Ok(CommandBody::Search {
        uid: false,
        charset,
        criteria,
        result,
    })
}

/// RFC 5256 5: `"(" sort-criterion *(SP sort-criterion) ")" SP
/// search-charset 1*(SP search-key)`.
fn sort<'a>(c: &mut Cursor<'a>) -> R<CommandBody<'a>> {
    c.expect(b'(')?;
    let mut keys = Vec::new();
    loop {
        let mut word = c.keyword();
        let reverse = word.eq_ignore_ascii_case(b"REVERSE");
        if reverse {
            c.sp()?;
            word = c.keyword();
        }
        let by = match () {
            _ if word.eq_ignore_ascii_case(b"ARRIVAL") => SortBy::Arrival,
            _ if word.eq_ignore_ascii_case(b"CC") => SortBy::Cc,
            _ if word.eq_ignore_ascii_case(b"DATE") => SortBy::Date,
            _ if word.eq_ignore_ascii_case(b"FROM") => SortBy::From,
            _ if word.eq_ignore_ascii_case(b"SIZE") => SortBy::Size,
            _ if word.eq_ignore_ascii_case(b"SUBJECT") => SortBy::Subject,
            _ if word.eq_ignore_ascii_case(b"TO") => SortBy::To,
            _ => return Err(SYNTAX),
        };
        if keys.len() < 16 {
            keys.push(SortKey { reverse, by });
        }
        if c.eat(b')') {
            break;
        }
        c.sp()?;
    }
    c.sp()?;
    let (charset, criteria) = charset_and_criteria(c)?;
    Ok(CommandBody::Sort {
        uid: false,
        keys,
        charset,
        criteria,
    })
}

/// RFC 5256 5: `charset 1*(SP search-key)`, the tail of SORT and THREAD.
fn charset_and_criteria<'a>(c: &mut Cursor<'a>) -> R<(Cow<'a, [u8]>, Vec<SearchKey<'a>>)> {
    let charset = c.astring()?;
    let mut criteria = Vec::new();
    while c.eat(b' ') {
        criteria.push(c.search_key(0)?);
    }
    if criteria.is_empty() {
        return Err(SYNTAX);
    }
    Ok((charset, criteria))
}

/// RFC 5256 5: `thread-alg SP search-criteria`. An algorithm we do not
/// offer is the client's error (BAD): CAPABILITY names ours.
fn thread<'a>(c: &mut Cursor<'a>) -> R<CommandBody<'a>> {
    let name = c.atom()?;
    let algorithm = if name.eq_ignore_ascii_case("ORDEREDSUBJECT") {
        ThreadAlgorithm::OrderedSubject
    } else if name.eq_ignore_ascii_case("REFERENCES") {
        ThreadAlgorithm::References
    } else {
        return Err(ParseError::UnknownOption);
    };
    c.sp()?;
    let (charset, criteria) = charset_and_criteria(c)?;
    Ok(CommandBody::Thread {
        uid: false,
        algorithm,
        charset,
        criteria,
    })
}

/// RFC 9208 7: `quota-root-name SP "(" [resource-name SP resource-limit
/// *(SP ...)] ")"`.
fn set_quota<'a>(c: &mut Cursor<'a>) -> R<CommandBody<'a>> {
    let root = c.astring()?;
    c.sp()?;
    c.expect(b'(')?;
    let mut limits = Vec::new();
    if !c.eat(b')') {
        loop {
            let resource = c.atom()?;
            c.sp()?;
            let limit = c.number64()?;
            if limits.len() >= 16 {
                return Err(ParseError::TooMany);
            }
            limits.push((resource, limit));
            if c.eat(b')') {
                break;
            }
            c.sp()?;
        }
    }
    Ok(CommandBody::SetQuota { root, limits })
}

/// `"(" [search-return-opt *(SP ...)] ")"`. RFC 4731 3.1: an empty list
/// means ALL.
fn search_return(c: &mut Cursor<'_>) -> R<Vec<SearchReturn>> {
    c.expect(b'(')?;
    let mut opts = Vec::new();
    if c.eat(b')') {
        opts.push(SearchReturn::All);
        return Ok(opts);
    }
    loop {
        let name = c.keyword();
        let opt = match () {
            _ if name.eq_ignore_ascii_case(b"MIN") => SearchReturn::Min,
            _ if name.eq_ignore_ascii_case(b"MAX") => SearchReturn::Max,
            _ if name.eq_ignore_ascii_case(b"ALL") => SearchReturn::All,
            _ if name.eq_ignore_ascii_case(b"COUNT") => SearchReturn::Count,
            _ if name.eq_ignore_ascii_case(b"SAVE") => SearchReturn::Save,
            _ if name.is_empty() => return Err(SYNTAX),
            _ => return Err(ParseError::UnknownOption),
        };
        if !opts.contains(&opt) {
            opts.push(opt);
        }
        if c.eat(b')') {
            return Ok(opts);
        }
        c.sp()?;
    }
}

/// `sequence-set SP items [SP "(" CHANGEDSINCE n ")"]`.
fn fetch<'a>(c: &mut Cursor<'a>) -> R<CommandBody<'a>> {
    let set = c.sequence_set()?;
    c.sp()?;
    let items = if c.eat(b'(') {
        let mut list = vec![c.fetch_attribute()?];
        while c.eat(b' ') {
            list.push(c.fetch_attribute()?);
        }
        c.expect(b')')?;
        FetchItems::List(list)
    } else {
        let save = c.pos;
        let word = c.keyword();
        if word.eq_ignore_ascii_case(b"ALL") {
            FetchItems::All
        } else if word.eq_ignore_ascii_case(b"FAST") {
            FetchItems::Fast
        } else if word.eq_ignore_ascii_case(b"FULL") {
            FetchItems::Full
        } else {
            c.pos = save;
            FetchItems::List(vec![c.fetch_attribute()?])
        }
    };
    let mut changed_since = None;
    let mut vanished = false;
    if c.eat(b' ') {
        c.expect(b'(')?;
        loop {
            let name = c.keyword();
            if name.eq_ignore_ascii_case(b"CHANGEDSINCE") {
                c.sp()?;
                changed_since = Some(c.mod_sequence(false)?);
            } else if name.eq_ignore_ascii_case(b"VANISHED") {
                vanished = true;
            } else if name.is_empty() {
                return Err(SYNTAX);
            } else {
                return Err(ParseError::UnknownOption);
            }
            if c.eat(b')') {
                break;
            }
            c.sp()?;
        }
    }
    // RFC 7162 3.2.6: VANISHED only with CHANGEDSINCE.
    if vanished && changed_since.is_none() {
        return Err(SYNTAX);
    }
    Ok(CommandBody::Fetch {
        uid: false,
        set,
        items,
        changed_since,
        vanished,
    })
}

/// `sequence-set [SP "(" UNCHANGEDSINCE n ")"] SP [+|-]FLAGS[.SILENT] SP
/// (flag-list / flag *(SP flag))` (RFC 3501 6.4.6, RFC 7162 3.1.3).
fn store<'a>(c: &mut Cursor<'a>) -> R<CommandBody<'a>> {
    let set = c.sequence_set()?;
    c.sp()?;
    let mut unchanged_since = None;
    if c.eat(b'(') {
        loop {
            let name = c.keyword();
            if name.eq_ignore_ascii_case(b"UNCHANGEDSINCE") {
                c.sp()?;
                unchanged_since = Some(c.mod_sequence(true)?);
            } else if name.is_empty() {
                return Err(SYNTAX);
            } else {
                return Err(ParseError::UnknownOption);
            }
            if c.eat(b')') {
                break;
            }
            c.sp()?;
        }
        c.sp()?;
    }
    let action = if c.eat(b'+') {
        StoreAction::Add
    } else if c.eat(b'-') {
        StoreAction::Remove
    } else {
        StoreAction::Replace
    };
    let item = c.keyword();
    let silent = if item.eq_ignore_ascii_case(b"FLAGS") {
        false
    } else if item.eq_ignore_ascii_case(b"FLAGS.SILENT") {
        true
    } else {
        return Err(SYNTAX);
    };
    c.sp()?;
    let flags = if c.peek() == Some(b'(') {
        c.flag_list()?
    } else {
        let mut flags = vec![c.flag()?];
        while c.eat(b' ') {
            flags.push(c.flag()?);
        }
        flags
    };
    Ok(CommandBody::Store {
        uid: false,
        set,
        action,
        silent,
        flags,
        unchanged_since,
    })
}

/// RFC 2971: `"(" [string SP nstring *(SP string SP nstring)] ")" / NIL`.
/// RFC 2971 `id-params-list` or NIL.
type IdParams<'a> = Option<Vec<(IString<'a>, Option<IString<'a>>)>>;

fn id_params<'a>(c: &mut Cursor<'a>) -> R<IdParams<'a>> {
    if !c.eat(b'(') {
        return if c.keyword().eq_ignore_ascii_case(b"NIL") {
            Ok(None)
        } else {
            Err(SYNTAX)
        };
    }
    let mut pairs = Vec::new();
    if c.eat(b')') {
        return Ok(Some(pairs));
    }
    loop {
        if pairs.len() == MAX_ID_PAIRS {
            return Err(ParseError::TooMany);
        }
        let field = c.string()?;
        c.sp()?;
        let value = c.nstring()?;
        pairs.push((field, value));
        if c.eat(b')') {
            return Ok(Some(pairs));
        }
        c.sp()?;
    }
}

/// The reading position in one command.
struct Cursor<'a> {
    s: &'a [u8],
    pos: usize,
}

/// RFC 9051 9: ATOM-CHAR is any CHAR but atom-specials
/// (`( ) { SP CTL % * " \ ]`).
fn is_atom_char(b: u8) -> bool {
    (0x21..0x7f).contains(&b) && !b"(){%*\"\\]".contains(&b)
}

fn is_astring_char(b: u8) -> bool {
    is_atom_char(b) || b == b']'
}

fn is_list_char(b: u8) -> bool {
    is_astring_char(b) || b == b'%' || b == b'*'
}

fn month(name: &[u8]) -> Option<u32> {
    const MONTHS: [&[u8]; 12] = [
        b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov",
        b"Dec",
    ];
    let k = MONTHS.iter().position(|m| m.eq_ignore_ascii_case(name))?;
    u32::try_from(k + 1).ok()
}

impl<'a> Cursor<'a> {
    fn new(s: &'a [u8]) -> Self {
        Cursor { s, pos: 0 }
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.pos).copied()
    }

    fn at_end(&self) -> bool {
        self.pos >= self.s.len()
    }

    fn eat(&mut self, b: u8) -> bool {
        if self.peek() == Some(b) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn expect(&mut self, b: u8) -> R<()> {
        if self.eat(b) {
            Ok(())
        } else {
            Err(SYNTAX)
        }
    }

    fn sp(&mut self) -> R<()> {
        self.expect(b' ')
    }

    fn take_while(&mut self, f: impl Fn(u8) -> bool) -> &'a [u8] {
        let start = self.pos;
        while self.peek().is_some_and(&f) {
            self.pos += 1;
        }
        &self.s[start..self.pos]
    }

    /// A keyword-like run (letters, digits, `-`, `.`, `_`), possibly empty.
    fn keyword(&mut self) -> &'a [u8] {
        self.take_while(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
    }

    /// RFC 3501 9 `tag`: 1*<ASTRING-CHAR except "+">.
    fn tag(&mut self) -> Option<&'a str> {
        let tag = self.take_while(|b| is_astring_char(b) && b != b'+');
        // ASTRING-CHARs are ASCII.
        std::str::from_utf8(tag).ok().filter(|t| !t.is_empty())
    }

    fn atom(&mut self) -> R<&'a str> {
        let atom = self.take_while(is_atom_char);
        if atom.is_empty() {
            return Err(SYNTAX);
        }
        // ATOM-CHARs are ASCII.
        std::str::from_utf8(atom).map_err(|_| SYNTAX)
    }

    fn digits(&mut self) -> &'a [u8] {
        self.take_while(|b| b.is_ascii_digit())
    }

    fn number64(&mut self) -> R<u64> {
        let digits = self.digits();
        if digits.is_empty() {
            return Err(ParseError::InvalidNumber);
        }
        digits.iter().try_fold(0u64, |n, &d| {
            n.checked_mul(10)
                .and_then(|n| n.checked_add(u64::from(d - b'0')))
                .ok_or(ParseError::InvalidNumber)
        })
    }

    fn number(&mut self) -> R<u32> {
        u32::try_from(self.number64()?).map_err(|_| ParseError::InvalidNumber)
    }

    fn nz_number(&mut self) -> R<NonZeroU32> {
        NonZeroU32::new(self.number()?).ok_or(ParseError::InvalidNumber)
    }

    /// RFC 7162 7: `mod-sequence-value` is 1..2^63-1; `valzer` allows 0.
    fn mod_sequence(&mut self, allow_zero: bool) -> R<u64> {
        let n = self.number64()?;
        if n > i64::MAX as u64 || (n == 0 && !allow_zero) {
            return Err(ParseError::InvalidNumber);
        }
        Ok(n)
    }

    /// RFC 7162 7: `"(" uidvalidity SP mod-sequence-value [SP known-uids]
    /// [SP seq-match-data] ")"`, after `QRESYNC SP`.
    fn qresync(&mut self) -> R<Qresync> {
        self.expect(b'(')?;
        let uid_validity = self.nz_number()?;
        self.sp()?;
        let modseq = self.mod_sequence(true)?;
        let mut known_uids = None;
        let mut seq_match = None;
        if self.eat(b' ') {
            if self.peek() != Some(b'(') {
                known_uids = Some(self.plain_sequence_set()?);
                if self.eat(b' ') {
                    seq_match = Some(self.seq_match()?);
                }
            } else {
                seq_match = Some(self.seq_match()?);
            }
        }
        self.expect(b')')?;
        Ok(Qresync {
            uid_validity,
            modseq,
            known_uids,
            seq_match,
        })
    }

    /// `seq-match-data = "(" known-sequence-set SP known-uid-set ")"`.
    fn seq_match(&mut self) -> R<(SequenceSet, SequenceSet)> {
        self.expect(b'(')?;
        let seqs = self.plain_sequence_set()?;
        self.sp()?;
        let uids = self.plain_sequence_set()?;
        self.expect(b')')?;
        Ok((seqs, uids))
    }

    /// A sequence set without `$` (RFC 7162's sets are the client's).
    fn plain_sequence_set(&mut self) -> R<SequenceSet> {
        match self.sequence_set()? {
            SequenceSet::Saved => Err(ParseError::InvalidSequenceSet),
            set => Ok(set),
        }
    }

    /// `quoted`: DQUOTE *QUOTED-CHAR DQUOTE; borrowed unless escaped. 8-bit
    /// octets are taken as they come (UTF-8 in IMAP4rev2).
    fn quoted(&mut self) -> R<IString<'a>> {
        self.expect(b'"')?;
        let start = self.pos;
        let mut owned: Option<Vec<u8>> = None;
        loop {
            let b = self.peek().ok_or(ParseError::InvalidString)?;
            self.pos += 1;
            match b {
                b'"' => {
                    let end = self.pos - 1;
                    return Ok(match owned {
                        Some(v) => Cow::Owned(v),
                        None => Cow::Borrowed(&self.s[start..end]),
                    });
                }
                b'\\' => {
                    let e = self.peek().ok_or(ParseError::InvalidString)?;
                    if e != b'"' && e != b'\\' {
                        return Err(ParseError::InvalidString);
                    }
                    let v = owned.get_or_insert_with(|| self.s[start..self.pos - 1].to_vec());
                    v.push(e);
                    self.pos += 1;
                }
                b'\r' | b'\n' | 0 => return Err(ParseError::InvalidString),
                _ => {
                    if let Some(v) = owned.as_mut() {
                        v.push(b);
                    }
                }
            }
        }
    }

    /// `literal` (`{n}` / `{n+}` CRLF n octets) or, with `binary`, the
    /// part of a literal8 after its `~`. Borrowed.
    fn literal(&mut self, binary: bool) -> R<&'a [u8]> {
        self.expect(b'{')?;
        let n = self.number64()?;
        self.eat(b'+');
        self.expect(b'}')?;
        self.eat(b'\r');
        self.expect(b'\n')?;
        let n = usize::try_from(n).map_err(|_| ParseError::InvalidString)?;
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.s.len())
            .ok_or(ParseError::InvalidString)?;
        let data = &self.s[self.pos..end];
        if !binary && memchr::memchr(0, data).is_some() {
            return Err(ParseError::NulInLiteral);
        }
        self.pos = end;
        Ok(data)
    }

    fn string(&mut self) -> R<IString<'a>> {
        match self.peek() {
            Some(b'"') => self.quoted(),
            Some(b'{') => self.literal(false).map(Cow::Borrowed),
            _ => Err(SYNTAX),
        }
    }

    fn astring(&mut self) -> R<IString<'a>> {
        match self.peek() {
            Some(b'"' | b'{') => self.string(),
            _ => {
                let chars = self.take_while(is_astring_char);
                if chars.is_empty() {
                    return Err(SYNTAX);
                }
                Ok(Cow::Borrowed(chars))
            }
        }
    }

    fn nstring(&mut self) -> R<Option<IString<'a>>> {
        match self.peek() {
            Some(b'"' | b'{') => self.string().map(Some),
            _ if self.keyword().eq_ignore_ascii_case(b"NIL") => Ok(None),
            _ => Err(SYNTAX),
        }
    }

    fn mailbox(&mut self) -> R<Mailbox<'a>> {
        self.astring().map(Mailbox::new)
    }

    /// `list-mailbox = 1*list-char / string`.
    fn list_mailbox(&mut self) -> R<IString<'a>> {
        match self.peek() {
            Some(b'"' | b'{') => self.string(),
            _ => {
                let chars = self.take_while(is_list_char);
                if chars.is_empty() {
                    return Err(SYNTAX);
                }
                Ok(Cow::Borrowed(chars))
            }
        }
    }

    fn seq_number(&mut self) -> R<SeqNumber> {
        if self.eat(b'*') {
            return Ok(SeqNumber::Largest);
        }
        if !self.peek().is_some_and(|b| b.is_ascii_digit()) {
            return Err(ParseError::InvalidSequenceSet);
        }
        NonZeroU32::new(self.number()?)
            .map(SeqNumber::Value)
            .ok_or(ParseError::InvalidSequenceSet)
    }

    /// RFC 9051 9 `sequence-set`, and `$` (RFC 5182) alone.
    fn sequence_set(&mut self) -> R<SequenceSet> {
        if self.eat(b'$') {
            return Ok(SequenceSet::Saved);
        }
        let mut ranges = Vec::new();
        loop {
            let start = self.seq_number()?;
            let end = if self.eat(b':') {
                self.seq_number()?
            } else {
                start
            };
            ranges.push(SeqRange { start, end });
            if !self.eat(b',') {
                return Ok(SequenceSet::Ranges(ranges));
            }
        }
    }

    /// RFC 3501 9 `flag`: system flags (case-insensitive), `\atom`
    /// extensions, keywords.
    fn flag(&mut self) -> R<Flag<'a>> {
        let system = self.eat(b'\\');
        let name = self.take_while(is_atom_char);
        if name.is_empty() {
            return Err(ParseError::InvalidFlag);
        }
        // ATOM-CHARs are ASCII.
        let name = std::str::from_utf8(name).map_err(|_| ParseError::InvalidFlag)?;
        if !system {
            return Ok(Flag::Keyword(name));
        }
        Ok(match () {
            _ if name.eq_ignore_ascii_case("Seen") => Flag::Seen,
            _ if name.eq_ignore_ascii_case("Answered") => Flag::Answered,
            _ if name.eq_ignore_ascii_case("Flagged") => Flag::Flagged,
            _ if name.eq_ignore_ascii_case("Deleted") => Flag::Deleted,
            _ if name.eq_ignore_ascii_case("Draft") => Flag::Draft,
            _ if name.eq_ignore_ascii_case("Recent") => Flag::Recent,
            _ => Flag::Extension(name),
        })
    }

    fn flag_list(&mut self) -> R<Vec<Flag<'a>>> {
        self.expect(b'(')?;
        let mut flags = Vec::new();
        if self.eat(b')') {
            return Ok(flags);
        }
        loop {
            flags.push(self.flag()?);
            if self.eat(b')') {
                return Ok(flags);
            }
            self.sp()?;
        }
    }

    /// `date-day "-" date-month "-" date-year`, optionally quoted.
    fn date(&mut self) -> R<NaiveDate> {
        let quoted = self.eat(b'"');
        let day = self.digits();
        if day.is_empty() || day.len() > 2 {
            return Err(ParseError::InvalidDate);
        }
        let date = self.date_rest(day)?;
        if quoted && !self.eat(b'"') {
            return Err(ParseError::InvalidDate);
        }
        Ok(date)
    }

    /// `"-" date-month "-" date-year` after the day's digits.
    fn date_rest(&mut self, day: &[u8]) -> R<NaiveDate> {
        let bad = ParseError::InvalidDate;
        let day = day.iter().fold(0u32, |n, &d| n * 10 + u32::from(d - b'0'));
        if !self.eat(b'-') {
            return Err(bad);
        }
        let name = self.take_while(|b| b.is_ascii_alphabetic());
        let month = month(name).ok_or(bad)?;
        if !self.eat(b'-') {
            return Err(bad);
        }
        let year = self.digits();
        if year.len() != 4 {
            return Err(bad);
        }
        let year = year.iter().fold(0i32, |n, &d| n * 10 + i32::from(d - b'0'));
        NaiveDate::from_ymd_opt(year, month, day).ok_or(bad)
    }

    fn two_digits(&mut self) -> R<u32> {
        let d = self
            .s
            .get(self.pos..self.pos + 2)
            .ok_or(ParseError::InvalidDate)?;
        if !d.iter().all(u8::is_ascii_digit) {
            return Err(ParseError::InvalidDate);
        }
        self.pos += 2;
        Ok(u32::from(d[0] - b'0') * 10 + u32::from(d[1] - b'0'))
    }

    /// RFC 3501 9 `date-time`: `"dd-Mon-yyyy hh:mm:ss +zzzz"`, the day
    /// either two digits or a space and one digit.
    fn date_time(&mut self) -> R<DateTime<FixedOffset>> {
        let bad = ParseError::InvalidDate;
        if !self.eat(b'"') {
            return Err(bad);
        }
        self.eat(b' ');
        let day = self.digits();
        if day.is_empty() || day.len() > 2 {
            return Err(bad);
        }
        let date = self.date_rest(day)?;
        if !self.eat(b' ') {
            return Err(bad);
        }
        let hour = self.two_digits()?;
        if !self.eat(b':') {
            return Err(bad);
        }
        let minute = self.two_digits()?;
        if !self.eat(b':') {
            return Err(bad);
        }
        let second = self.two_digits()?;
        if !self.eat(b' ') {
            return Err(bad);
        }
        let sign = match self.peek() {
            Some(b'+') => 1,
            Some(b'-') => -1,
            _ => return Err(bad),
        };
        self.pos += 1;
        let zh = self.two_digits()?;
        let zm = self.two_digits()?;
        if zm >= 60 || !self.eat(b'"') {
            return Err(bad);
        }
        let time = NaiveTime::from_hms_opt(hour, minute, second).ok_or(bad)?;
        // Both under 100, so the product fits easily.
        let offset = sign * i32::try_from(zh * 3600 + zm * 60).map_err(|_| bad)?;
        let zone = FixedOffset::east_opt(offset).ok_or(bad)?;
        zone.from_local_datetime(&date.and_time(time))
            .single()
            .ok_or(bad)
    }

    /// One search key (RFC 3501 6.4.4), `depth` levels inside others.
    fn search_key(&mut self, depth: usize) -> R<SearchKey<'a>> {
        if depth >= MAX_DEPTH {
            return Err(ParseError::TooDeep);
        }
        match self.peek() {
            Some(b'(') => {
                self.pos += 1;
                let mut keys = vec![self.search_key(depth + 1)?];
                while self.eat(b' ') {
                    keys.push(self.search_key(depth + 1)?);
                }
                self.expect(b')')?;
                return Ok(SearchKey::And(keys));
            }
            Some(b'0'..=b'9' | b'*' | b'$') => {
                return self.sequence_set().map(SearchKey::SequenceSet);
            }
            _ => {}
        }
        let name = self.keyword();
        let mut upper = [0u8; 10];
        if name.len() > upper.len() || name.is_empty() {
            return Err(if name.is_empty() {
                SYNTAX
            } else {
                ParseError::UnknownSearchKey
            });
        }
        upper[..name.len()].copy_from_slice(name);
        upper.make_ascii_uppercase();
        let key = match &upper[..name.len()] {
            b"ALL" => SearchKey::All,
            b"ANSWERED" => SearchKey::Answered,
            b"DELETED" => SearchKey::Deleted,
            b"DRAFT" => SearchKey::Draft,
            b"FLAGGED" => SearchKey::Flagged,
            b"NEW" => SearchKey::New,
            b"OLD" => SearchKey::Old,
            b"RECENT" => SearchKey::Recent,
            b"SEEN" => SearchKey::Seen,
            b"UNANSWERED" => SearchKey::Unanswered,
            b"UNDELETED" => SearchKey::Undeleted,
            b"UNDRAFT" => SearchKey::Undraft,
            b"UNFLAGGED" => SearchKey::Unflagged,
            b"UNSEEN" => SearchKey::Unseen,
            b"BCC" => SearchKey::Bcc(self.sp_then(Self::astring)?),
            b"BODY" => SearchKey::Body(self.sp_then(Self::astring)?),
            b"CC" => SearchKey::Cc(self.sp_then(Self::astring)?),
            b"FROM" => SearchKey::From(self.sp_then(Self::astring)?),
            b"SUBJECT" => SearchKey::Subject(self.sp_then(Self::astring)?),
            b"TEXT" => SearchKey::Text(self.sp_then(Self::astring)?),
            b"TO" => SearchKey::To(self.sp_then(Self::astring)?),
            b"BEFORE" => SearchKey::Before(self.sp_then(Self::date)?),
            b"ON" => SearchKey::On(self.sp_then(Self::date)?),
            b"SINCE" => SearchKey::Since(self.sp_then(Self::date)?),
            b"SENTBEFORE" => SearchKey::SentBefore(self.sp_then(Self::date)?),
            b"SENTON" => SearchKey::SentOn(self.sp_then(Self::date)?),
            b"SENTSINCE" => SearchKey::SentSince(self.sp_then(Self::date)?),
            b"LARGER" => SearchKey::Larger(self.sp_then(Self::number64)?),
            b"SMALLER" => SearchKey::Smaller(self.sp_then(Self::number64)?),
            b"KEYWORD" | b"UNKEYWORD" => {
                self.sp()?;
                // flag-keyword: an atom; a "\" flag is not a keyword.
                let keyword = self.atom().map_err(|_| ParseError::InvalidFlag)?;
                if upper[0] == b'K' {
                    SearchKey::Keyword(Flag::Keyword(keyword))
                } else {
                    SearchKey::Unkeyword(Flag::Keyword(keyword))
                }
            }
            b"HEADER" => {
                self.sp()?;
                let field = self.astring()?;
                self.sp()?;
                SearchKey::Header(field, self.astring()?)
            }
            b"UID" => SearchKey::Uid(self.sp_then(Self::sequence_set)?),
            b"NOT" => {
                self.sp()?;
                SearchKey::Not(Box::new(self.search_key(depth + 1)?))
            }
            b"OR" => {
                self.sp()?;
                let a = self.search_key(depth + 1)?;
                self.sp()?;
                let b = self.search_key(depth + 1)?;
                SearchKey::Or(Box::new(a), Box::new(b))
            }
            b"MODSEQ" => self.search_modseq()?,
            _ => return Err(ParseError::UnknownSearchKey),
        };
        Ok(key)
    }

    fn sp_then<T>(&mut self, f: impl FnOnce(&mut Self) -> R<T>) -> R<T> {
        self.sp()?;
        f(self)
    }

    /// RFC 7162 3.1.5: `MODSEQ [SP entry-name SP entry-type-req] SP
    /// mod-sequence-valzer`.
    fn search_modseq(&mut self) -> R<SearchKey<'a>> {
        self.sp()?;
        let mut entry = None;
        if self.peek() == Some(b'"') {
            let name = self.quoted()?;
            self.sp()?;
            let kind = self.keyword();
            let kind = match () {
                _ if kind.eq_ignore_ascii_case(b"priv") => EntryType::Private,
                _ if kind.eq_ignore_ascii_case(b"shared") => EntryType::Shared,
                _ if kind.eq_ignore_ascii_case(b"all") => EntryType::All,
                _ => return Err(SYNTAX),
            };
            self.sp()?;
            entry = Some((name, kind));
        }
        let modseq = self.mod_sequence(true)?;
        Ok(SearchKey::ModSeq { entry, modseq })
    }

    /// One FETCH attribute (RFC 3501 6.4.5, RFC 3516, RFC 7162).
    fn fetch_attribute(&mut self) -> R<FetchAttribute<'a>> {
        let name = self.keyword();
        let is = |n: &[u8]| name.eq_ignore_ascii_case(n);
        Ok(match () {
            _ if is(b"ENVELOPE") => FetchAttribute::Envelope,
            _ if is(b"FLAGS") => FetchAttribute::Flags,
            _ if is(b"INTERNALDATE") => FetchAttribute::InternalDate,
            _ if is(b"RFC822") => FetchAttribute::Rfc822,
            _ if is(b"RFC822.HEADER") => FetchAttribute::Rfc822Header,
            _ if is(b"RFC822.SIZE") => FetchAttribute::Rfc822Size,
            _ if is(b"RFC822.TEXT") => FetchAttribute::Rfc822Text,
            _ if is(b"BODYSTRUCTURE") => FetchAttribute::BodyStructure,
            _ if is(b"UID") => FetchAttribute::Uid,
            _ if is(b"MODSEQ") => FetchAttribute::ModSeq,
            _ if is(b"BODY") && self.peek() != Some(b'[') => FetchAttribute::Body,
            _ if is(b"BODY") || is(b"BODY.PEEK") => {
                let section = self.section()?;
                let partial = self.partial()?;
                FetchAttribute::BodySection {
                    peek: name.len() > 4,
                    section,
                    partial,
                }
            }
            _ if is(b"BINARY") || is(b"BINARY.PEEK") => {
                let part = self.section_binary()?;
                let partial = self.partial()?;
                FetchAttribute::Binary {
                    peek: name.len() > 6,
                    part,
                    partial,
                }
            }
            _ if is(b"BINARY.SIZE") => FetchAttribute::BinarySize {
                part: self.section_binary()?,
            },
            _ if name.is_empty() => return Err(SYNTAX),
            _ => return Err(ParseError::UnknownFetchAttribute),
        })
    }

    /// `section-part`: nz-number *("." nz-number); stops before a "."
    /// that is not followed by a digit.
    fn section_part(&mut self) -> R<Vec<NonZeroU32>> {
        let mut part = Vec::new();
        while self.peek().is_some_and(|b| b.is_ascii_digit()) {
            part.push(self.nz_number()?);
            let digit_next = self.s.get(self.pos + 1).is_some_and(|b| b.is_ascii_digit());
            if self.peek() == Some(b'.') && digit_next {
                self.pos += 1;
            } else {
                break;
            }
        }
        Ok(part)
    }

    /// `"[" [section-spec] "]"`.
    fn section(&mut self) -> R<Section<'a>> {
        self.expect(b'[')?;
        let part = self.section_part()?;
        let text = if self.peek() == Some(b']') {
            None
        } else {
            if !part.is_empty() {
                self.expect(b'.')?;
            }
            let name = self.keyword();
            let is = |n: &[u8]| name.eq_ignore_ascii_case(n);
            Some(match () {
                _ if is(b"HEADER") => SectionText::Header,
                _ if is(b"TEXT") => SectionText::Text,
                _ if is(b"MIME") && !part.is_empty() => SectionText::Mime,
                _ if name.is_empty() => return Err(SYNTAX),
                _ if is(b"HEADER.FIELDS") || is(b"HEADER.FIELDS.NOT") => {
                    self.sp()?;
                    self.expect(b'(')?;
                    let mut fields = vec![self.astring()?];
                    while self.eat(b' ') {
                        fields.push(self.astring()?);
                    }
                    self.expect(b')')?;
                    SectionText::HeaderFields {
                        not: name.len() > 13,
                        fields,
                    }
                }
                _ => return Err(ParseError::UnknownFetchAttribute),
            })
        };
        self.expect(b']')?;
        Ok(Section { part, text })
    }

    /// RFC 3516 `section-binary = "[" [section-part] "]"`.
    fn section_binary(&mut self) -> R<Vec<NonZeroU32>> {
        self.expect(b'[')?;
        let part = self.section_part()?;
        self.expect(b']')?;
        Ok(part)
    }

    /// `["<" number "." nz-number ">"]`.
    fn partial(&mut self) -> R<Option<Partial>> {
        if !self.eat(b'<') {
            return Ok(None);
        }
        let offset = self.number64()?;
        self.expect(b'.')?;
        let length = self.number64()?;
        if length == 0 {
            return Err(ParseError::InvalidNumber);
        }
        self.expect(b'>')?;
        Ok(Some(Partial { offset, length }))
    }
}
