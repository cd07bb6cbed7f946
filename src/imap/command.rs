//! The typed values of one IMAP command (RFC 3501 section 9, RFC 9051 section 9 and the
//! extensions we parse), borrowing from the reader's buffer where they can. It refuses to parse
//! (that is [`super::parser`]) or to know session state.
//!
//! Strings are bytes: a quoted string borrows unless it held escapes, a
//! literal always borrows. Nothing here decodes modified UTF-7 mailbox
//! names or checks that a string is UTF-8; the layers above do.

use std::borrow::Cow;
use std::num::NonZeroU32;

use chrono::{DateTime, FixedOffset, NaiveDate};

/// An `astring`, `string` or `nstring` value as bytes: borrowed from the
/// command unless a quoted string had to be unescaped.
pub type IString<'a> = Cow<'a, [u8]>;

/// One complete command: its tag and what it asks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command<'a> {
    /// RFC 3501 2.2.1: echoed in the tagged reply. ASTRING-CHARs but "+".
    pub tag: &'a str,
    pub body: CommandBody<'a>,
}

/// What the command asks, by command (RFC 3501 6, RFC 9051 6 and the
/// extensions named on each variant).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandBody<'a> {
    Capability,
    Noop,
    Logout,
    /// RFC 3501 6.2.1.
    StartTls,
    /// RFC 3501 6.2.2, RFC 4959 (SASL-IR). `initial` is the raw base64
    /// initial response, or `=` for an empty one; the SASL codec decodes it.
    Authenticate {
        mechanism: &'a str,
        initial: Option<&'a [u8]>,
    },
    /// RFC 3501 6.2.3.
    Login {
        username: IString<'a>,
        password: IString<'a>,
    },
    /// RFC 5161: the capability names as sent (compare case-insensitively).
    Enable(Vec<&'a str>),
    /// SELECT (`read_only` false) or EXAMINE (true), RFC 3501 6.3.1/6.3.2;
    /// `condstore` is the RFC 7162 3.1.8 select parameter, `qresync` the
    /// 3.2.5 one.
    Select {
        mailbox: Mailbox<'a>,
        read_only: bool,
        condstore: bool,
        qresync: Option<Qresync>,
    },
    Create(Mailbox<'a>),
    Delete(Mailbox<'a>),
    Rename {
        from: Mailbox<'a>,
        to: Mailbox<'a>,
    },
    Subscribe(Mailbox<'a>),
    Unsubscribe(Mailbox<'a>),
    /// RFC 3501 6.3.8 and RFC 5258 (LIST-EXTENDED).
    List(List<'a>),
    /// RFC 3501 6.3.9: reference and one pattern.
    Lsub {
        reference: IString<'a>,
        pattern: IString<'a>,
    },
    /// RFC 2342.
    Namespace,
    /// RFC 3501 6.3.10 (and RFC 9051 SIZE/DELETED, RFC 7162 HIGHESTMODSEQ).
    Status {
        mailbox: Mailbox<'a>,
        items: Vec<StatusItem>,
    },
    /// RFC 3501 6.3.11. `binary` is a literal8 message (RFC 3516 APPEND
    /// BINARY form, `~{n}`): it may hold NUL octets.
    Append {
        mailbox: Mailbox<'a>,
        flags: Vec<Flag<'a>>,
        date: Option<DateTime<FixedOffset>>,
        message: &'a [u8],
        binary: bool,
    },
    Check,
    Close,
    /// RFC 3691.
    Unselect,
    Expunge,
    /// RFC 4315 2.1: UID EXPUNGE sequence-set.
    UidExpunge(SequenceSet),
    /// RFC 3501 6.4.4 (`uid`: UID SEARCH, 6.4.8). `criteria` is the
    /// implicit AND of the search keys given. `result` is the RFC 4731 /
    /// RFC 9051 RETURN options; `None` when absent (the classic untagged
    /// SEARCH reply).
    Search {
        uid: bool,
        charset: Option<IString<'a>>,
        criteria: Vec<SearchKey<'a>>,
        result: Option<Vec<SearchReturn>>,
    },
    /// RFC 5256 3: the matches of `criteria` in the order of `keys`.
    Sort {
        uid: bool,
        keys: Vec<SortKey>,
        charset: IString<'a>,
        criteria: Vec<SearchKey<'a>>,
    },
    /// RFC 5256 3: the matches of `criteria` as threads.
    Thread {
        uid: bool,
        algorithm: ThreadAlgorithm,
        charset: IString<'a>,
        criteria: Vec<SearchKey<'a>>,
    },
    /// RFC 9208 4.1.1: a quota root's name.
    GetQuota(IString<'a>),
    /// RFC 9208 4.1.2.
    GetQuotaRoot(Mailbox<'a>),
    /// RFC 9208 4.1.3: a quota root and its new limits (resource name,
    /// limit), which we refuse.
    SetQuota {
        root: IString<'a>,
        limits: Vec<(&'a str, u64)>,
    },
    /// RFC 3501 6.4.5; `changed_since` is RFC 7162 3.1.4.1, `vanished`
    /// the 3.2.6 modifier (only with `changed_since`).
    Fetch {
        uid: bool,
        set: SequenceSet,
        items: FetchItems<'a>,
        changed_since: Option<u64>,
        vanished: bool,
    },
    /// RFC 3501 6.4.6; `unchanged_since` is RFC 7162 3.1.3.
    Store {
        uid: bool,
        set: SequenceSet,
        action: StoreAction,
        silent: bool,
        flags: Vec<Flag<'a>>,
        unchanged_since: Option<u64>,
    },
    Copy {
        uid: bool,
        set: SequenceSet,
        mailbox: Mailbox<'a>,
    },
    /// RFC 6851.
    Move {
        uid: bool,
        set: SequenceSet,
        mailbox: Mailbox<'a>,
    },
    /// RFC 2177: the session then reads lines until `DONE`
    /// (see [`super::reader::is_done`]).
    Idle,
    /// RFC 2971: `None` for `ID NIL`; field names with their values.
    Id(Option<Vec<(IString<'a>, Option<IString<'a>>)>>),
}

impl CommandBody<'_> {
    /// The command's name as a client would write it, for logs and
    /// metrics.
    pub fn name(&self) -> &'static str {
        match self {
            CommandBody::Capability => "CAPABILITY",
            CommandBody::Noop => "NOOP",
            CommandBody::Logout => "LOGOUT",
            CommandBody::StartTls => "STARTTLS",
            CommandBody::Authenticate { .. } => "AUTHENTICATE",
            CommandBody::Login { .. } => "LOGIN",
            CommandBody::Enable(_) => "ENABLE",
            CommandBody::Select {
                read_only: false, ..
            } => "SELECT",
            CommandBody::Select {
                read_only: true, ..
            } => "EXAMINE",
            CommandBody::Create(_) => "CREATE",
            CommandBody::Delete(_) => "DELETE",
            CommandBody::Rename { .. } => "RENAME",
            CommandBody::Subscribe(_) => "SUBSCRIBE",
            CommandBody::Unsubscribe(_) => "UNSUBSCRIBE",
            CommandBody::List(_) => "LIST",
            CommandBody::Lsub { .. } => "LSUB",
            CommandBody::Namespace => "NAMESPACE",
            CommandBody::Status { .. } => "STATUS",
            CommandBody::Append { .. } => "APPEND",
            CommandBody::Check => "CHECK",
            CommandBody::Close => "CLOSE",
            CommandBody::Unselect => "UNSELECT",
            CommandBody::Expunge => "EXPUNGE",
            CommandBody::UidExpunge(_) => "UID EXPUNGE",
            CommandBody::Search { uid: false, .. } => "SEARCH",
            CommandBody::Search { uid: true, .. } => "UID SEARCH",
            CommandBody::Sort { uid: false, .. } => "SORT",
            CommandBody::Sort { uid: true, .. } => "UID SORT",
            CommandBody::Thread { uid: false, .. } => "THREAD",
            CommandBody::Thread { uid: true, .. } => "UID THREAD",
            CommandBody::GetQuota(_) => "GETQUOTA",
            CommandBody::GetQuotaRoot(_) => "GETQUOTAROOT",
            CommandBody::SetQuota { .. } => "SETQUOTA",
            CommandBody::Fetch { uid: false, .. } => "FETCH",
            CommandBody::Fetch { uid: true, .. } => "UID FETCH",
            CommandBody::Store { uid: false, .. } => "STORE",
            CommandBody::Store { uid: true, .. } => "UID STORE",
            CommandBody::Copy { uid: false, .. } => "COPY",
            CommandBody::Copy { uid: true, .. } => "UID COPY",
            CommandBody::Move { uid: false, .. } => "MOVE",
            CommandBody::Move { uid: true, .. } => "UID MOVE",
            CommandBody::Idle => "IDLE",
            CommandBody::Id(_) => "ID",
        }
    }
}

/// A mailbox name as sent, still modified UTF-7 (RFC 3501 5.1.3) or UTF-8
/// (RFC 9051 5.1). The name `INBOX` is case-insensitive (RFC 3501 5.1,
/// grammar `mailbox = "INBOX" / astring`): any spelling of it is stored as
/// `INBOX`, so equal names compare equal. Only the whole name is
/// special: `inbox/sub` is kept as sent; the store decides about
/// hierarchies under INBOX.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Mailbox<'a>(IString<'a>);

impl<'a> Mailbox<'a> {
    /// The canonical spelling of the special name.
    pub const INBOX: &'static [u8] = b"INBOX";

    /// Wraps a name, folding any case of `INBOX` to `INBOX`.
    pub fn new(name: IString<'a>) -> Self {
        if name.eq_ignore_ascii_case(Self::INBOX) {
            Mailbox(Cow::Borrowed(Self::INBOX))
        } else {
            Mailbox(name)
        }
    }

    pub fn is_inbox(&self) -> bool {
        *self.0 == *Self::INBOX
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Keeps the name past the command's buffer.
    pub fn into_owned(self) -> Mailbox<'static> {
        Mailbox(Cow::Owned(self.0.into_owned()))
    }
}

/// A message flag (RFC 3501 2.3.2). System flags are matched
/// case-insensitively; keywords and unknown `\` flags keep the client's
/// spelling (keywords are case-insensitive too: compare with
/// `eq_ignore_ascii_case`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Flag<'a> {
    Seen,
    Answered,
    Flagged,
    Deleted,
    Draft,
    /// Only servers set it (RFC 3501 2.3.2); parsed so a STORE of it can be
    /// refused with a clear reply rather than a syntax error.
    Recent,
    /// `\Name` not among the above, without the backslash.
    Extension(&'a str),
    /// An atom such as `$Forwarded` or `NonJunk`.
    Keyword(&'a str),
}

/// One sequence number or UID, or `*`: the largest in use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SeqNumber {
    Value(NonZeroU32),
    /// RFC 3501 9 `seq-number`: the largest number (or UID) in use.
    Largest,
}

impl SeqNumber {
    /// The number, `*` read as `largest`.
    pub fn resolve(self, largest: u32) -> u32 {
        match self {
            SeqNumber::Value(n) => n.get(),
            SeqNumber::Largest => largest,
        }
    }
}

/// `a` or `a:b`; a range may be written in either order (RFC 3501 9:
/// `2:4` and `4:2` are the same).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SeqRange {
    pub start: SeqNumber,
    pub end: SeqNumber,
}

impl SeqRange {
    /// The range as `low..=high`, `*` read as `largest`.
    pub fn resolve(self, largest: u32) -> (u32, u32) {
        let a = self.start.resolve(largest);
        let b = self.end.resolve(largest);
        (a.min(b), a.max(b))
    }
}

/// A `sequence-set`: message sequence numbers or, under UID, UIDs.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SequenceSet {
    /// At least one range.
    Ranges(Vec<SeqRange>),
    /// `$` (RFC 5182 SEARCHRES): the result saved by SEARCH RETURN (SAVE).
    Saved,
}

impl SequenceSet {
    /// Whether `n` is in the set, `*` read as `largest`. Not meaningful for
    /// [`SequenceSet::Saved`] (false): the session resolves `$` first.
    pub fn contains(&self, n: u32, largest: u32) -> bool {
        match self {
            SequenceSet::Ranges(ranges) => ranges.iter().any(|r| {
                let (lo, hi) = r.resolve(largest);
                (lo..=hi).contains(&n)
            }),
            SequenceSet::Saved => false,
        }
    }
}

/// The QRESYNC select parameter (RFC 7162 3.2.5): what the client last
/// knew of the mailbox.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Qresync {
    pub uid_validity: NonZeroU32,
    /// The client's last known modseq (0 is accepted as "knows nothing").
    pub modseq: u64,
    /// The UIDs the client knows; `None` means `1:<UIDNEXT-1>`.
    pub known_uids: Option<SequenceSet>,
    /// RFC 7162 3.2.5.2: sequence numbers and the UIDs the client has for
    /// them.
    pub seq_match: Option<(SequenceSet, SequenceSet)>,
}

/// STATUS data items (RFC 3501 6.3.10, RFC 9051 6.3.11, RFC 7162 3.1.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StatusItem {
    Messages,
    Recent,
    UidNext,
    UidValidity,
    Unseen,
    Deleted,
    Size,
    HighestModSeq,
    /// RFC 9208 4.1.4.
    DeletedStorage,
}

impl StatusItem {
    pub fn name(self) -> &'static str {
        match self {
            StatusItem::Messages => "MESSAGES",
            StatusItem::Recent => "RECENT",
            StatusItem::UidNext => "UIDNEXT",
            StatusItem::UidValidity => "UIDVALIDITY",
            StatusItem::Unseen => "UNSEEN",
            StatusItem::Deleted => "DELETED",
            StatusItem::Size => "SIZE",
            StatusItem::HighestModSeq => "HIGHESTMODSEQ",
            StatusItem::DeletedStorage => "DELETED-STORAGE",
        }
    }
}

/// LIST, basic (RFC 3501 6.3.8) or extended (RFC 5258).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct List<'a> {
    /// The reference name, raw (it is a `mailbox` in the grammar but is
    /// only a prefix, so INBOX is not folded).
    pub reference: IString<'a>,
    /// One pattern, or several in the RFC 5258 `(pat pat)` form.
    pub patterns: Vec<IString<'a>>,
    pub select: ListSelect,
    pub ret: ListReturn,
    /// Selection options, a pattern list or return options were given:
    /// the reply takes the extended form (RFC 5258 3).
    pub extended: bool,
}

/// LIST selection options (RFC 5258 3.1, RFC 6154 SPECIAL-USE).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ListSelect {
    pub subscribed: bool,
    pub remote: bool,
    pub recursive_match: bool,
    pub special_use: bool,
}

/// LIST return options (RFC 5258 3.2, RFC 6154, RFC 5819 LIST-STATUS).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListReturn {
    pub subscribed: bool,
    pub children: bool,
    pub special_use: bool,
    /// RFC 5819 `STATUS (...)`.
    pub status: Option<Vec<StatusItem>>,
}

/// One RFC 5256 sort criterion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SortKey {
    pub reverse: bool,
    pub by: SortBy,
}

/// What a sort criterion compares (RFC 5256 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortBy {
    Arrival,
    Cc,
    Date,
    From,
    Size,
    Subject,
    To,
}

/// The threading algorithms we offer (RFC 5256 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThreadAlgorithm {
    OrderedSubject,
    References,
}

/// RFC 4731 / RFC 9051 6.4.4 search result options; RFC 5182 SAVE.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SearchReturn {
    Min,
    Max,
    All,
    Count,
    Save,
}

/// RFC 7162 3.1.5 `entry-type-req`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EntryType {
    Private,
    Shared,
    All,
}

/// One search key (RFC 3501 6.4.4, RFC 7162 3.1.5 MODSEQ).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SearchKey<'a> {
    All,
    Answered,
    Bcc(IString<'a>),
    Before(NaiveDate),
    Body(IString<'a>),
    Cc(IString<'a>),
    Deleted,
    Draft,
    Flagged,
    From(IString<'a>),
    /// Field name, then the string to find in its value.
    Header(IString<'a>, IString<'a>),
    Keyword(Flag<'a>),
    Larger(u64),
    New,
    Not(Box<SearchKey<'a>>),
    Old,
    On(NaiveDate),
    Or(Box<SearchKey<'a>>, Box<SearchKey<'a>>),
    Recent,
    Seen,
    SentBefore(NaiveDate),
    SentOn(NaiveDate),
    SentSince(NaiveDate),
    Since(NaiveDate),
    Smaller(u64),
    Subject(IString<'a>),
    Text(IString<'a>),
    To(IString<'a>),
    Uid(SequenceSet),
    Unanswered,
    Undeleted,
    Undraft,
    Unflagged,
    Unkeyword(Flag<'a>),
    Unseen,
    /// A bare sequence set: messages by sequence number.
    SequenceSet(SequenceSet),
    /// `( key key ... )`: all must match.
    And(Vec<SearchKey<'a>>),
    /// RFC 7162: `entry` is the optional flag entry name and its type.
    ModSeq {
        entry: Option<(IString<'a>, EntryType)>,
        modseq: u64,
    },
}

/// FETCH's data items: a macro (RFC 3501 6.4.5) or a list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchItems<'a> {
    /// `(FLAGS INTERNALDATE RFC822.SIZE ENVELOPE)`.
    All,
    /// `(FLAGS INTERNALDATE RFC822.SIZE)`.
    Fast,
    /// `(FLAGS INTERNALDATE RFC822.SIZE ENVELOPE BODY)`.
    Full,
    List(Vec<FetchAttribute<'a>>),
}

impl<'a> FetchItems<'a> {
    /// The attributes, macros expanded.
    pub fn expand(self) -> Vec<FetchAttribute<'a>> {
        use FetchAttribute::*;
        match self {
            FetchItems::All => vec![Flags, InternalDate, Rfc822Size, Envelope],
            FetchItems::Fast => vec![Flags, InternalDate, Rfc822Size],
            FetchItems::Full => vec![Flags, InternalDate, Rfc822Size, Envelope, Body],
            FetchItems::List(list) => list,
        }
    }
}

/// One FETCH data item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchAttribute<'a> {
    Envelope,
    Flags,
    InternalDate,
    Rfc822,
    Rfc822Header,
    Rfc822Size,
    Rfc822Text,
    /// `BODY` alone: the non-extensible BODYSTRUCTURE.
    Body,
    BodyStructure,
    Uid,
    /// RFC 7162 3.1.4.
    ModSeq,
    /// `BODY[section]<partial>` or `BODY.PEEK[...]` (peek: \Seen not set).
    BodySection {
        peek: bool,
        section: Section<'a>,
        partial: Option<Partial>,
    },
    /// RFC 3516 `BINARY[part]<partial>` / `BINARY.PEEK`.
    Binary {
        peek: bool,
        part: Vec<NonZeroU32>,
        partial: Option<Partial>,
    },
    /// RFC 3516 `BINARY.SIZE[part]`.
    BinarySize {
        part: Vec<NonZeroU32>,
    },
}

impl FetchAttribute<'_> {
    /// The same item owning its bytes: a FETCH that goes on after its
    /// command's buffer is gone keeps its items so.
    pub fn into_owned(self) -> FetchAttribute<'static> {
        use FetchAttribute as F;
        match self {
            F::Envelope => F::Envelope,
            F::Flags => F::Flags,
            F::InternalDate => F::InternalDate,
            F::Rfc822 => F::Rfc822,
            F::Rfc822Header => F::Rfc822Header,
            F::Rfc822Size => F::Rfc822Size,
            F::Rfc822Text => F::Rfc822Text,
            F::Body => F::Body,
            F::BodyStructure => F::BodyStructure,
            F::Uid => F::Uid,
            F::ModSeq => F::ModSeq,
            F::BodySection {
                peek,
                section,
                partial,
            } => F::BodySection {
                peek,
                section: section.into_owned(),
                partial,
            },
            F::Binary {
                peek,
                part,
                partial,
            } => F::Binary {
                peek,
                part,
                partial,
            },
            F::BinarySize { part } => F::BinarySize { part },
        }
    }
}

/// `section-spec`: part numbers (empty for the whole message) and which
/// text of that part.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Section<'a> {
    pub part: Vec<NonZeroU32>,
    pub text: Option<SectionText<'a>>,
}

impl Section<'_> {
    fn into_owned(self) -> Section<'static> {
        Section {
            part: self.part,
            text: self.text.map(|text| match text {
                SectionText::Header => SectionText::Header,
                SectionText::HeaderFields { not, fields } => SectionText::HeaderFields {
                    not,
                    fields: fields
                        .into_iter()
                        .map(|f| Cow::Owned(f.into_owned()))
                        .collect(),
                },
                SectionText::Text => SectionText::Text,
                SectionText::Mime => SectionText::Mime,
            }),
        }
    }
}

/// `section-msgtext` / `MIME`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SectionText<'a> {
    Header,
    /// `HEADER.FIELDS` (`not` false) or `HEADER.FIELDS.NOT`.
    HeaderFields {
        not: bool,
        fields: Vec<IString<'a>>,
    },
    Text,
    /// Only after part numbers (RFC 3501 6.4.5).
    Mime,
}

/// `<offset.length>`: octets from `offset`, at most `length` (non-zero).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Partial {
    pub offset: u64,
    pub length: u64,
}

/// STORE's flag operation (RFC 3501 6.4.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StoreAction {
    /// `FLAGS`.
    Replace,
    /// `+FLAGS`.
    Add,
    /// `-FLAGS`.
    Remove,
}
