//! The values SORT compares (RFC 5256 3) and the comparison itself,
//! including RFC 5256 2.1's base subject. It reads no files: the session
//! hands it each message's size, internal date and stored bytes.

use std::cmp::Ordering;
use std::time::SystemTime;

use chrono::DateTime;

use super::command::{SortBy, SortKey};
use super::mime::address::parse_list;
use super::mime::decode::header_text;
use super::mime::header;
use super::mime::Span;

/// Whether sorting by `by` needs the message's header.
pub fn needs_header(by: SortBy) -> bool {
    !matches!(by, SortBy::Arrival | SortBy::Size)
}

/// What one message is compared by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Values {
    size: u64,
    /// Seconds since the epoch.
    arrival: i64,
    /// The Date header in UTC, else the internal date (RFC 5256 3).
    date: i64,
    subject: String,
    from: String,
    to: String,
    cc: String,
}

impl Values {
    /// From the message's size, internal date and (when a key needs the
    /// header) its stored bytes.
    pub fn new(size: u64, internal_date: SystemTime, raw: Option<&[u8]>) -> Values {
        let arrival = seconds(internal_date);
        let mut values = Values {
            size,
            arrival,
            date: arrival,
            subject: String::new(),
            from: String::new(),
            to: String::new(),
            cc: String::new(),
        };
        let Some(raw) = raw else {
            return values;
        };
        let span = Span {
            start: 0,
            end: header::header_end(raw, 0, raw.len()),
        };
        let field = |name: &str| header::first(raw, span, name).map(header::unfold);
        if let Some(date) = field("Date").and_then(|d| parse_date(&String::from_utf8_lossy(&d))) {
            values.date = date;
        }
        if let Some(subject) = field("Subject") {
            values.subject = ascii_casemap(&base_subject(&header_text(&subject)));
        }
        let first_mailbox = |name: &str| {
            field(name)
                .and_then(|v| parse_list(&v).into_iter().find_map(|a| a.mailbox))
                .map(|m| ascii_casemap(&String::from_utf8_lossy(&m)))
                .unwrap_or_default()
        };
        values.from = first_mailbox("From");
        values.to = first_mailbox("To");
        values.cc = first_mailbox("Cc");
        values
    }
}

/// Orders two messages by `keys` in turn (the caller breaks ties by
/// sequence number).
pub fn compare(keys: &[SortKey], a: &Values, b: &Values) -> Ordering {
    for key in keys {
        let order = match key.by {
            SortBy::Arrival => a.arrival.cmp(&b.arrival),
            SortBy::Cc => a.cc.cmp(&b.cc),
            SortBy::Date => a.date.cmp(&b.date),
            SortBy::From => a.from.cmp(&b.from),
            SortBy::Size => a.size.cmp(&b.size),
            SortBy::Subject => a.subject.cmp(&b.subject),
            SortBy::To => a.to.cmp(&b.to),
        };
        let order = if key.reverse { order.reverse() } else { order };
        if order != Ordering::Equal {
            return order;
        }
    }
    Ordering::Equal
}

pub(super) fn seconds(t: SystemTime) -> i64 {
    match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => -(e.duration().as_secs() as i64),
    }
}

pub(super) fn parse_date(value: &str) -> Option<i64> {
    let value = value.split('(').next().unwrap_or(value).trim();
    DateTime::parse_from_rfc2822(value)
        .ok()
        .map(|d| d.timestamp())
}

/// The sort key of a string under the i;ascii-casemap collation that RFC
/// 5256 3 names for SORT: a-z folded to A-Z (RFC 4790 9.2), so `[`, `\\`,
/// `]`, `^`, `_` and `` ` `` sort after the letters, not before them as
/// lower-case folding would have them.
pub(super) fn ascii_casemap(s: &str) -> String {
    s.to_ascii_uppercase()
}

/// RFC 5256 2.1: the subject without reply and forward markers, blobs
/// and trailers, white space collapsed; its case kept (see
/// [`ascii_casemap`] for the comparison).
pub fn base_subject(decoded: &str) -> String {
    base_subject_and_reply(decoded).0
}

/// [`base_subject`], and whether the extraction removed a `subj-refwd`,
/// a `(fwd)` trailer or a `[fwd: ...]` wrapper: RFC 5256 3 (REFERENCES)
/// calls such a message "a reply or forward".
pub fn base_subject_and_reply(decoded: &str) -> (String, bool) {
    let mut s: String = decoded.split_whitespace().collect::<Vec<_>>().join(" ");
    let mut reply = false;
    loop {
        // (2) subj-trailer: "(fwd)" and white space at the end.
        loop {
            let trimmed = s.trim_end();
            let lower = trimmed.to_lowercase();
            if lower.ends_with("(fwd)") {
                s = trimmed[..trimmed.len() - "(fwd)".len()].to_owned();
                reply = true;
            } else {
                s = trimmed.to_owned();
                break;
            }
        }
        // (3)-(5) subj-leader and subj-blob at the start, repeatedly.
        loop {
            let before = s.clone();
            let (rest, refwd) = strip_leader(&s);
            s = rest;
            reply |= refwd;
            if let Some(rest) = strip_blob(&s) {
                if !rest.is_empty() {
                    s = rest;
                }
            }
            if s == before {
                break;
            }
        }
        // (6) "[fwd:" ... "]" wrapping the whole subject.
        let lower = s.to_lowercase();
        if lower.starts_with("[fwd:") && s.ends_with(']') {
            s = s["[fwd:".len()..s.len() - 1].trim().to_owned();
            reply = true;
            continue;
        }
        return (s, reply);
    }
}

/// One `*WSP subj-blob` at the start, if any: what follows it.
fn strip_blob(s: &str) -> Option<String> {
    let t = s.trim_start();
    let rest = t.strip_prefix('[')?;
    let close = rest.find(']')?;
    if rest[..close].contains('[') {
        return None;
    }
    Some(rest[close + 1..].trim_start().to_owned())
}

/// `subj-leader = (*subj-blob subj-refwd) / WSP`, `subj-refwd = ("re" /
/// ("fw" ["d"])) *WSP [subj-blob] ":"`; whether a `subj-refwd` went.
fn strip_leader(s: &str) -> (String, bool) {
    let t = s.trim_start().to_owned();
    let mut blobs = t.clone();
    while let Some(rest) = strip_blob(&blobs) {
        blobs = rest;
    }
    let lower = blobs.to_lowercase();
    let after_word = ["fwd", "fw", "re"]
        .iter()
        .find(|w| lower.starts_with(*w))
        .map(|w| &blobs[w.len()..]);
    if let Some(after) = after_word {
        let after = after.trim_start();
        let after = strip_blob(after).unwrap_or_else(|| after.to_owned());
        if let Some(rest) = after.strip_prefix(':') {
            return (rest.trim_start().to_owned(), true);
        }
    }
    (t, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_subjects() {
        assert_eq!(base_subject("Re: hello"), "hello");
        assert_eq!(
            base_subject("RE: Fwd: [list] Re[2]: Hello  World (fwd)"),
            "Hello World"
        );
        assert_eq!(base_subject("[fwd: re: party]"), "party");
        assert_eq!(base_subject("[only a blob]"), "[only a blob]");
        assert_eq!(base_subject("Recent news"), "Recent news");
        assert_eq!(base_subject(""), "");
    }

    #[test]
    fn replies_and_forwards_are_told_apart() {
        for (subject, reply) in [
            ("Re: hello", true),
            ("FWD: hello", true),
            ("fw[x]: hello", true),
            ("hello (fwd)", true),
            ("[fwd: hello]", true),
            ("[list] hello", false),
            ("Recent news", false),
            ("hello", false),
            ("re hello", false),
        ] {
            let (base, is_reply) = base_subject_and_reply(subject);
            assert_eq!(base, base_subject(subject), "{subject}");
            assert_eq!(is_reply, reply, "{subject}");
        }
    }

    #[test]
    fn subjects_collate_by_ascii_casemap() {
        let t = SystemTime::UNIX_EPOCH;
        let with = |subject: &str| {
            Values::new(
                1,
                t,
                Some(format!("Subject: {subject}\r\n\r\nx\r\n").as_bytes()),
            )
        };
        let by = [SortKey {
            reverse: false,
            by: SortBy::Subject,
        }];
        let order = |a: &str, b: &str| compare(&by, &with(a), &with(b));
        assert_eq!(order("beta", "_under"), Ordering::Less, "B < _");
        assert_eq!(order("zed", "[x"), Ordering::Less, "Z < [");
        assert_eq!(order("Alpha", "alpha"), Ordering::Equal);
    }

    #[test]
    fn keys_in_turn_and_reverse() {
        let raw = |from: &str, date: &str, subject: &str| {
            format!("From: {from}\r\nDate: {date}\r\nSubject: {subject}\r\n\r\nx\r\n")
        };
        let t = SystemTime::UNIX_EPOCH;
        let a = Values::new(
            10,
            t,
            Some(raw("Zed <zed@x>", "Mon, 1 Jan 2024 10:00:00 +0000", "Re: b").as_bytes()),
        );
        let b = Values::new(
            20,
            t,
            Some(raw("amy@x", "Mon, 1 Jan 2024 09:00:00 -0200", "a").as_bytes()),
        );
        let by = |by, reverse| [SortKey { reverse, by }];
        assert_eq!(compare(&by(SortBy::Size, false), &a, &b), Ordering::Less);
        assert_eq!(compare(&by(SortBy::Size, true), &a, &b), Ordering::Greater);
        assert_eq!(
            compare(&by(SortBy::From, false), &a, &b),
            Ordering::Greater,
            "amy < zed"
        );
        assert_eq!(
            compare(&by(SortBy::Date, false), &a, &b),
            Ordering::Less,
            "09:00 -0200 is 11:00 UTC"
        );
        assert_eq!(
            compare(&by(SortBy::Subject, false), &a, &b),
            Ordering::Greater,
            "b > a"
        );
        assert_eq!(
            compare(&by(SortBy::Arrival, false), &a, &b),
            Ordering::Equal
        );
    }
}
