//! Maildir file names: making unique ones and reading the base name, size
//! and flags back out of them; it does no I/O.
//!
//! A name is `<base>[:2,<flags>]`. spate makes bases like Dovecot does:
//! `<secs>.M<usecs>P<pid>Q<n>.<host>,S=<size>` (the Maildir spec's unique
//! name plus Dovecot's `,S=` size field), so the size of a message is
//! known without a stat. The base never changes while the message stays in
//! a folder; flags live after the `:`.

use std::time::{SystemTime, UNIX_EPOCH};

use super::flag::Flags;

/// The separate parts of a Maildir file name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedName<'a> {
    /// Everything before the first `:`: the message's identity in its
    /// folder, and what the UID index records.
    pub base: &'a str,
    /// The flags after `:2,`, empty when there is no (or another) info.
    pub flags: Flags,
}

/// Splits a file name from `new/` or `cur/`; `None` for names spate does
/// not treat as messages (hidden files, empty bases, line breaks, which
/// the line-based index could not hold).
pub fn parse(name: &str) -> Option<ParsedName<'_>> {
    if name.starts_with('.') || name.contains(['\n', '\r']) {
        return None;
    }
    let (base, info) = match name.split_once(':') {
        Some((base, info)) => (base, Some(info)),
        None => (name, None),
    };
    if base.is_empty() {
        return None;
    }
    let flags = info
        .and_then(|i| i.strip_prefix("2,"))
        .map(Flags::from_letters)
        .unwrap_or_default();
    Some(ParsedName { base, flags })
}

/// The `,S=<size>` field of a base name, if it has one.
pub fn size_from_base(base: &str) -> Option<u64> {
    base.split(',')
        .skip(1)
        .find_map(|field| field.strip_prefix("S=")?.parse().ok())
}

/// Orders bases by arrival: the seconds and microseconds (and counter)
/// of spate's and Dovecot's names compared as numbers, since their digits
/// are not padded ("M99999" came before "M100000"); then the name. Names
/// of another form sort by their leading number, if any.
pub fn arrival_key(base: &str) -> (u64, u64, u64, &str) {
    let number = |s: &str| -> u64 {
        let end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        s[..end].parse().unwrap_or(0)
    };
    let secs = match base.find(|c: char| !c.is_ascii_digit()) {
        Some(0) => u64::MAX,
        Some(end) => base[..end].parse().unwrap_or(u64::MAX),
        None => base.parse().unwrap_or(u64::MAX),
    };
    let rest = base.split_once('.').map_or("", |(_, rest)| rest);
    let unique = rest.split('.').next().unwrap_or("");
    let (mut usecs, mut counter) = (0, 0);
    if let Some(m) = unique.strip_prefix('M') {
        usecs = number(m);
        if let Some((_, q)) = m.split_once('Q') {
            counter = number(q);
        }
    }
    (secs, usecs, counter, base)
}

/// The file name for `base` with `flags`, as it lives in `cur/`.
pub fn with_flags(base: &str, flags: Flags) -> String {
    format!("{base}:2,{}", flags.letters())
}

/// Makes host names safe inside a base name: `/` and `:` are escaped as
/// the Maildir spec says (`\057`, `\072`), and `,` (Dovecot's field
/// separator) as `\054`; whitespace and control characters are dropped.
pub fn sanitize_host(host: &str) -> String {
    let mut out = String::with_capacity(host.len());
    for c in host.chars() {
        match c {
            '/' => out.push_str("\\057"),
            ':' => out.push_str("\\072"),
            ',' => out.push_str("\\054"),
            c if c.is_whitespace() || c.is_control() => {}
            c => out.push(c),
        }
    }
    if out.is_empty() {
        out.push_str("localhost");
    }
    out
}

/// A new unique base name. Uniqueness comes from the time in
/// microseconds, the process id and a per-store counter; the rare clash
/// that remains (two stores in one process in the same microsecond) is
/// caught by the exclusive create in `tmp/` and the link into `new/`,
/// which both fail instead of overwriting.
pub fn unique_base(now: SystemTime, pid: u32, counter: u64, host: &str, size: u64) -> String {
    let since = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    format!(
        "{}.M{}P{}Q{}.{},S={}",
        since.as_secs(),
        since.subsec_micros(),
        pid,
        counter,
        host,
        size
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mailbox::flag::Flag;
    use std::time::Duration;

    #[test]
    fn names_split_and_sizes() {
        let base = unique_base(
            UNIX_EPOCH + Duration::from_micros(1_700_000_000_123_456),
            42,
            7,
            &sanitize_host("mx,1:a/b"),
            1234,
        );
        assert_eq!(base, "1700000000.M123456P42Q7.mx\\0541\\072a\\057b,S=1234");
        assert_eq!(size_from_base(&base), Some(1234));
        let name = with_flags(&base, Flags::empty().with(Flag::Seen).with(Flag::Replied));
        let parsed = parse(&name).unwrap();
        assert_eq!(parsed.base, base);
        assert_eq!(parsed.flags.letters(), "RS");
        assert_eq!(parse("1.2.host").unwrap().flags, Flags::empty());
        assert_eq!(parse("1.2.host:1,xyz").unwrap().flags, Flags::empty());
        assert_eq!(size_from_base("1.2.host,W=5,S=99"), Some(99));
        assert_eq!(size_from_base("1.2.host"), None);
        assert!(parse(".hidden").is_none());
        assert!(parse(":2,S").is_none());
        assert!(parse("a\nb").is_none());
    }

    #[test]
    fn arrival_order_is_numeric() {
        let mut names = vec![
            "1700000001.M5P1Q1.h,S=1",
            "1700000000.M100000P9Q2.h,S=1",
            "foreign",
            "1700000000.M99999P9Q10.h,S=1",
            "1700000000.M99999P9Q9.h,S=1",
            "999999999.x.host",
        ];
        names.sort_by_key(|n| arrival_key(n));
        assert_eq!(
            names,
            vec![
                "999999999.x.host",
                "1700000000.M99999P9Q9.h,S=1",
                "1700000000.M99999P9Q10.h,S=1",
                "1700000000.M100000P9Q2.h,S=1",
                "1700000001.M5P1Q1.h,S=1",
                "foreign",
            ]
        );
    }
}
