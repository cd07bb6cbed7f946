//! Evaluates SEARCH criteria (RFC 3501 6.4.4) against one message: flags, sizes, dates,
//! header and body substrings, sequence numbers and UIDs. It refuses to pick messages, read
//! files or write replies: the session gives it each candidate and a way to load the bytes,
//! which are read only when a key needs them.
//!
//! Strings match as case-insensitive substrings of the text a reader sees
//! (see `mime::decode`: encoded words in headers, base64 and
//! quoted-printable bodies, Latin-1 and UTF-8 charsets), or of the stored
//! bytes with ASCII case folding. Dates
//! compare calendar days, disregarding time and timezone (RFC 3501
//! 6.4.4): INTERNALDATE in UTC, the Date header in its own zone.

use std::time::SystemTime;

use chrono::{DateTime, NaiveDate, Utc};
use memchr::memmem;

use super::command::{Flag, SearchKey, SequenceSet};
use super::flag::to_maildir;
use super::mime::address::parse_list;
use super::mime::header::{self, Fields};
use super::mime::Span;
use super::mime::{decode, Address, MessageStructure};
use crate::mailbox::{Flag as MaildirFlag, Flags, KeywordTable};

/// What the session knows about one message without reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate {
    pub seq: u32,
    pub uid: u32,
    pub flags: Flags,
    pub recent: bool,
    pub size: u64,
    pub internal_date: SystemTime,
    pub modseq: u64,
}

/// `*` in sequence sets: the largest sequence number and UID in use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Largest {
    pub seq: u32,
    pub uid: u32,
}

/// Whether any key needs the message's bytes.
pub fn needs_content(keys: &[SearchKey<'_>]) -> bool {
    keys.iter().any(key_needs_content)
}

fn key_needs_content(key: &SearchKey<'_>) -> bool {
    match key {
        SearchKey::Bcc(_)
        | SearchKey::Body(_)
        | SearchKey::Cc(_)
        | SearchKey::From(_)
        | SearchKey::Header(..)
        | SearchKey::SentBefore(_)
        | SearchKey::SentOn(_)
        | SearchKey::SentSince(_)
        | SearchKey::Subject(_)
        | SearchKey::Text(_)
        | SearchKey::To(_) => true,
        SearchKey::Not(k) => key_needs_content(k),
        SearchKey::Or(a, b) => key_needs_content(a) || key_needs_content(b),
        SearchKey::And(keys) => needs_content(keys),
        _ => false,
    }
}

/// One message under evaluation; its bytes are loaded on first need.
pub struct Message<'l> {
    pub candidate: Candidate,
    /// The folder's keyword names, for KEYWORD and UNKEYWORD.
    keywords: &'l KeywordTable,
    load: &'l mut dyn FnMut() -> Option<Vec<u8>>,
    content: Option<Option<Vec<u8>>>,
}

impl<'l> Message<'l> {
    /// `load` returns the stored bytes, `None` when they cannot be read
    /// (expunged meanwhile): content keys then do not match.
    pub fn new(
        candidate: Candidate,
        keywords: &'l KeywordTable,
        load: &'l mut dyn FnMut() -> Option<Vec<u8>>,
    ) -> Self {
        Message {
            candidate,
            keywords,
            load,
            content: None,
        }
    }

    fn content(&mut self) -> Option<&[u8]> {
        if self.content.is_none() {
            self.content = Some((self.load)());
        }
        self.content.as_ref().and_then(|c| c.as_deref())
    }
}

/// Whether the message matches all `keys` (their implicit AND).
pub fn matches_all(keys: &[SearchKey<'_>], m: &mut Message<'_>, largest: Largest) -> bool {
    keys.iter().all(|k| matches(k, m, largest))
}

fn has(m: &Message<'_>, flag: MaildirFlag) -> bool {
    m.candidate.flags.contains(flag)
}

fn keyword(m: &Message<'_>, flag: &Flag<'_>) -> bool {
    match flag {
        Flag::Recent => m.candidate.recent,
        Flag::Keyword(name) => m
            .keywords
            .slot(name)
            .is_some_and(|slot| m.candidate.flags.has_keyword(slot)),
        other => to_maildir(other).is_some_and(|f| has(m, f)),
    }
}

fn in_set(set: &SequenceSet, n: u32, largest: u32) -> bool {
    set.contains(n, largest)
}

fn internal_day(m: &Message<'_>) -> NaiveDate {
    DateTime::<Utc>::from(m.candidate.internal_date).date_naive()
}

fn matches(key: &SearchKey<'_>, m: &mut Message<'_>, largest: Largest) -> bool {
    use SearchKey as K;
    match key {
        K::All => true,
        K::Answered => has(m, MaildirFlag::Replied),
        K::Deleted => has(m, MaildirFlag::Trashed),
        K::Draft => has(m, MaildirFlag::Draft),
        K::Flagged => has(m, MaildirFlag::Flagged),
        K::Seen => has(m, MaildirFlag::Seen),
        K::Unanswered => !has(m, MaildirFlag::Replied),
        K::Undeleted => !has(m, MaildirFlag::Trashed),
        K::Undraft => !has(m, MaildirFlag::Draft),
        K::Unflagged => !has(m, MaildirFlag::Flagged),
        K::Unseen => !has(m, MaildirFlag::Seen),
        K::Recent => m.candidate.recent,
        K::Old => !m.candidate.recent,
        K::New => m.candidate.recent && !has(m, MaildirFlag::Seen),
        K::Keyword(flag) => keyword(m, flag),
        K::Unkeyword(flag) => !keyword(m, flag),
        K::Larger(n) => m.candidate.size > *n,
        K::Smaller(n) => m.candidate.size < *n,
        K::Before(d) => internal_day(m) < *d,
        K::On(d) => internal_day(m) == *d,
        K::Since(d) => internal_day(m) >= *d,
        K::SentBefore(d) => sent_day(m).is_some_and(|s| s < *d),
        K::SentOn(d) => sent_day(m).is_some_and(|s| s == *d),
        K::SentSince(d) => sent_day(m).is_some_and(|s| s >= *d),
        K::Uid(set) => in_set(set, m.candidate.uid, largest.uid),
        K::SequenceSet(set) => in_set(set, m.candidate.seq, largest.seq),
        K::Not(k) => !matches(k, m, largest),
        K::Or(a, b) => matches(a, m, largest) || matches(b, m, largest),
        K::And(keys) => matches_all(keys, m, largest),
        K::ModSeq { modseq, .. } => m.candidate.modseq >= *modseq,
        K::Bcc(s) => address_contains(m, "Bcc", s),
        K::Cc(s) => address_contains(m, "Cc", s),
        K::From(s) => address_contains(m, "From", s),
        K::To(s) => address_contains(m, "To", s),
        K::Subject(s) => header_contains(m, "Subject", s),
        K::Header(name, s) => {
            let name = String::from_utf8_lossy(name);
            header_contains(m, &name, s)
        }
        K::Body(s) => m.content().is_some_and(|raw| {
            let start = header::header_end(raw, 0, raw.len());
            contains_ci(&raw[start..], s) || decoded_bodies_contain(raw, s)
        }),
        K::Text(s) => m.content().is_some_and(|raw| {
            let header = &raw[..header::header_end(raw, 0, raw.len())];
            contains_ci(raw, s)
                || decode::contains_text(
                    &decode::header_text(&header::unfold(header)),
                    &needle_text(s),
                )
                || decoded_bodies_contain(raw, s)
        }),
    }
}

/// The header block of the message.
fn header_span(raw: &[u8]) -> Span {
    Span {
        start: 0,
        end: header::header_end(raw, 0, raw.len()),
    }
}

/// RFC 3501 6.4.4 HEADER: a field with this name whose value holds the
/// string; an empty string matches any such field.
fn header_contains(m: &mut Message<'_>, name: &str, needle: &[u8]) -> bool {
    let Some(raw) = m.content() else {
        return false;
    };
    Fields::new(raw, header_span(raw))
        .filter(|f| f.name.eq_ignore_ascii_case(name.as_bytes()))
        .any(|f| {
            let value = header::unfold(f.value);
            needle.is_empty()
                || contains_ci(&value, needle)
                || decode::contains_text(&decode::header_text(&value), &needle_text(needle))
        })
}

/// RFC 3501 6.4.4 BCC, CC, FROM, TO: "the envelope structure's ... field
/// contains the specified string", so besides the field's text the
/// addresses ENVELOPE parses are searched, written plainly: `name
/// <mailbox@host>`. A header with comments or folding white space inside
/// the address (`a (x) @ (y) b.org`) then matches `a@b.org`, as Dovecot.
fn address_contains(m: &mut Message<'_>, name: &str, needle: &[u8]) -> bool {
    if header_contains(m, name, needle) {
        return true;
    }
    let Some(raw) = m.content() else {
        return false;
    };
    let needle = needle_text(needle);
    Fields::new(raw, header_span(raw))
        .filter(|f| f.name.eq_ignore_ascii_case(name.as_bytes()))
        .flat_map(|f| parse_list(&header::unfold(f.value)))
        .any(|address| decode::contains_text(&plain_address(&address), &needle))
}

/// One parsed address as `name <mailbox@host>` (the name's encoded words
/// decoded), or just `mailbox@host` without a name.
fn plain_address(address: &Address) -> String {
    let text = |part: &Option<Vec<u8>>| {
        part.as_deref()
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .unwrap_or_default()
    };
    let spec = match (&address.mailbox, &address.host) {
        (Some(_), Some(_)) => format!("{}@{}", text(&address.mailbox), text(&address.host)),
        _ => text(&address.mailbox),
    };
    match &address.name {
        Some(name) => format!("{} <{spec}>", decode::header_text(name)),
        None => spec,
    }
}

/// A search string as text (the session accepts only UTF-8 and US-ASCII
/// charsets).
fn needle_text(needle: &[u8]) -> String {
    String::from_utf8_lossy(needle).into_owned()
}

/// Whether a decoded body part holds `needle` (the message is parsed for
/// its parts; only a content key gets here).
fn decoded_bodies_contain(raw: &[u8], needle: &[u8]) -> bool {
    let needle = needle_text(needle);
    let structure = MessageStructure::parse(raw);
    decode::body_texts(raw, &structure.message)
        .iter()
        .any(|text| decode::contains_text(text, &needle))
}

/// The calendar day of the Date header, in the header's own zone.
fn sent_day(m: &mut Message<'_>) -> Option<NaiveDate> {
    let raw = m.content()?;
    let value = header::first(raw, header_span(raw), "Date")?;
    let value = String::from_utf8_lossy(&header::unfold(value)).into_owned();
    parse_date(&value)
}

/// RFC 5322 3.3 dates, with the usual sloppiness tolerated: a trailing
/// comment such as `(UTC)` and a missing day name.
fn parse_date(value: &str) -> Option<NaiveDate> {
    let value = match value.find('(') {
        Some(i) => value[..i].trim(),
        None => value.trim(),
    };
    DateTime::parse_from_rfc2822(value)
        .ok()
        .map(|d| d.date_naive())
}

/// ASCII case-insensitive substring search.
pub fn contains_ci(haystack: &[u8], needle: &[u8]) -> bool {
    if needle.is_empty() {
        return true;
    }
    let haystack = haystack.to_ascii_lowercase();
    let needle = needle.to_ascii_lowercase();
    memmem::find(&haystack, &needle).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_and_substrings() {
        assert_eq!(
            parse_date("Mon, 7 Feb 1994 21:52:25 -0800 (PST)"),
            NaiveDate::from_ymd_opt(1994, 2, 7)
        );
        assert_eq!(
            parse_date("7 Feb 1994 21:52:25 +0000"),
            NaiveDate::from_ymd_opt(1994, 2, 7)
        );
        assert_eq!(parse_date("garbage"), None);
        assert!(contains_ci(b"Hello World", b"o w"));
        let plain: Vec<String> = parse_list(b"Ann <ann (home) @ (x) a.org>, b(y)@b.org")
            .iter()
            .map(plain_address)
            .collect();
        // A comment beside a bare address is its name (as ENVELOPE has it).
        assert_eq!(plain, ["Ann <ann@a.org>", "y <b@b.org>"]);
        assert!(!contains_ci(b"Hello", b"hex"));
    }
}
