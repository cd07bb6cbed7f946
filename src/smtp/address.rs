//! Parses RFC 5321 section 4.1.2 paths and mailboxes straight out of command bytes, borrowing them.
//! It refuses to judge policy (relay, existence, whether SMTPUTF8 was negotiated) and resolves nothing.

use std::net::Ipv6Addr;
use std::str::FromStr;

use memchr::memchr;
use thiserror::Error;

/// RFC 5321 4.5.3.1.3: a path, angle brackets included, is at most 256 octets.
/// Enforcing it bounds everything we copy out of a MAIL or RCPT command.
pub const MAX_PATH_LENGTH: usize = 256;

/// RFC 5321 4.5.3.1.2: a domain is at most 255 octets.
pub const MAX_DOMAIN_LENGTH: usize = 255;

/// RFC 1035 2.3.4: a DNS label is at most 63 octets.
const MAX_LABEL_LENGTH: usize = 63;

/// Why a path was refused. All are permanent: the client sent bad syntax and
/// resending the same bytes cannot succeed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum AddressError {
    #[error("path must be enclosed in angle brackets")]
    NotBracketed,
    #[error("path longer than 256 octets")]
    TooLong,
    #[error("malformed source route")]
    SourceRoute,
    #[error("malformed local part")]
    LocalPart,
    #[error("mailbox has no domain")]
    MissingDomain,
    #[error("malformed domain")]
    Domain,
    #[error("malformed address literal")]
    Literal,
    #[error("address is not valid UTF-8")]
    NotUtf8,
    #[error("the null path is not allowed here")]
    NullPath,
}

/// The part after `@`: a name, or an address literal kept with its brackets.
/// Kept apart because literals are never local and skip DNS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Domain<'a> {
    Name(&'a str),
    /// `[192.0.2.1]` or `[IPv6:2001:db8::1]`, brackets included.
    Literal(&'a str),
}

impl<'a> Domain<'a> {
    /// The domain as received (a literal keeps its brackets).
    pub fn as_str(&self) -> &'a str {
        match self {
            Domain::Name(s) | Domain::Literal(s) => s,
        }
    }
}

/// `Local-part "@" Domain` as received, borrowed from the command line.
/// `address` is what lands in the envelope: quotes and case kept exactly,
/// since only the destination may interpret a local part (RFC 5321 2.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mailbox<'a> {
    pub address: &'a str,
    pub local_part: &'a str,
    pub domain: Domain<'a>,
}

impl Mailbox<'_> {
    /// True when no UTF-8 appears; a non-ASCII mailbox needs SMTPUTF8
    /// (RFC 6531 3.4).
    pub fn is_ascii(&self) -> bool {
        self.address.is_ascii()
    }
}

/// The MAIL FROM path: `<>` is the null sender used by bounces, which must
/// never be bounced to (RFC 5321 4.5.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReversePath<'a> {
    Null,
    Mailbox(Mailbox<'a>),
}

/// The RCPT TO path. `<Postmaster>` without a domain must be accepted
/// (RFC 5321 4.1.1.3 and 4.5.1); it keeps the spelling the client used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForwardPath<'a> {
    Postmaster(&'a str),
    Mailbox(Mailbox<'a>),
}

/// A path before the MAIL/RCPT specific rules are applied.
enum RawPath<'a> {
    Null,
    LocalOnly(&'a str),
    Mailbox(Mailbox<'a>),
}

/// Parses `<reverse-path>` at the start of `input`; returns it and the bytes
/// after the closing `>`.
pub fn parse_reverse_path(input: &[u8]) -> Result<(ReversePath<'_>, &[u8]), AddressError> {
    let (raw, rest) = parse_path(input)?;
    let path = match raw {
        RawPath::Null => ReversePath::Null,
        RawPath::LocalOnly(_) => return Err(AddressError::MissingDomain),
        RawPath::Mailbox(m) => ReversePath::Mailbox(m),
    };
    Ok((path, rest))
}

/// Parses `<forward-path>` at the start of `input`; returns it and the bytes
/// after the closing `>`. `<>` is refused (it only exists as a sender).
pub fn parse_forward_path(input: &[u8]) -> Result<(ForwardPath<'_>, &[u8]), AddressError> {
    let (raw, rest) = parse_path(input)?;
    let path = match raw {
        RawPath::Null => return Err(AddressError::NullPath),
        // RFC 5321 4.1.1.3: "Postmaster" is case-insensitive.
        RawPath::LocalOnly(s) if s.eq_ignore_ascii_case("postmaster") => ForwardPath::Postmaster(s),
        RawPath::LocalOnly(_) => return Err(AddressError::MissingDomain),
        RawPath::Mailbox(m) => ForwardPath::Mailbox(m),
    };
    Ok((path, rest))
}

/// `Path = "<" [ A-d-l ":" ] Mailbox ">"` (RFC 5321 4.1.2), plus `<>` and a
/// bare local part (for `<Postmaster>`), which the callers narrow down.
fn parse_path(input: &[u8]) -> Result<(RawPath<'_>, &[u8]), AddressError> {
    if input.first() != Some(&b'<') {
        return Err(AddressError::NotBracketed);
    }
    if input.get(1) == Some(&b'>') {
        return Ok((RawPath::Null, &input[2..]));
    }
    let mut i = 1;
    if input.get(i) == Some(&b'@') {
        // A source route: RFC 5321 4.1.1.3 and Appendix C say servers
        // MUST accept it and SHOULD ignore it.
        loop {
            if input.get(i) != Some(&b'@') {
                return Err(AddressError::SourceRoute);
            }
            i = scan_domain_name(input, i + 1).map_err(|_| AddressError::SourceRoute)?;
            match input.get(i) {
                Some(b',') => i += 1,
                Some(b':') => {
                    i += 1;
                    break;
                }
                _ => return Err(AddressError::SourceRoute),
            }
        }
    }
    let start = i;
    i = scan_local_part(input, i)?;
    let local_len = i - start;
    match input.get(i) {
        Some(b'>') => {
            check_path_length(i)?;
            let local = utf8(&input[start..i])?;
            return Ok((RawPath::LocalOnly(local), &input[i + 1..]));
        }
        Some(b'@') => {}
        None => return Err(AddressError::NotBracketed),
        Some(_) => return Err(AddressError::LocalPart),
    }
    i += 1;
    let domain_offset = i - start;
    let literal = input.get(i) == Some(&b'[');
    i = if literal {
        scan_literal(input, i)?
    } else {
        scan_domain_name(input, i)?
    };
    match input.get(i) {
        Some(b'>') => {}
        None => return Err(AddressError::NotBracketed),
        Some(_) if literal => return Err(AddressError::Literal),
        Some(_) => return Err(AddressError::Domain),
    }
    check_path_length(i)?;
    let address = utf8(&input[start..i])?;
    // Both offsets sit next to ASCII bytes ('@'), so they are char
    // boundaries; `get` keeps this panic-free regardless.
    let local_part = address.get(..local_len).ok_or(AddressError::NotUtf8)?;
    let domain = address.get(domain_offset..).ok_or(AddressError::NotUtf8)?;
    let domain = if literal {
        Domain::Literal(domain)
    } else {
        Domain::Name(domain)
    };
    Ok((
        RawPath::Mailbox(Mailbox {
            address,
            local_part,
            domain,
        }),
        &input[i + 1..],
    ))
}

/// `close` is the index of `>`; `<` is at 0, so the path has `close + 1` octets.
fn check_path_length(close: usize) -> Result<(), AddressError> {
    if close + 1 > MAX_PATH_LENGTH {
        Err(AddressError::TooLong)
    } else {
        Ok(())
    }
}

/// Non-ASCII bytes pass the syntax scan (RFC 6531 3.3 extends atext,
/// qtextSMTP and sub-domain with UTF8-non-ascii); here they must form UTF-8.
fn utf8(bytes: &[u8]) -> Result<&str, AddressError> {
    std::str::from_utf8(bytes).map_err(|_| AddressError::NotUtf8)
}

/// atext of RFC 5322 3.2.3, extended with UTF8-non-ascii by RFC 6531 3.3.
fn is_atext(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-/=?^_`{|}~".contains(&b) || b >= 0x80
}

/// qtextSMTP = %d32-33 / %d35-91 / %d93-126 (RFC 5321 4.1.2), plus UTF-8.
fn is_qtext(b: u8) -> bool {
    matches!(b, 32..=33 | 35..=91 | 93..=126) || b >= 0x80
}

/// `Local-part = Dot-string / Quoted-string`; returns the index after it.
fn scan_local_part(input: &[u8], mut i: usize) -> Result<usize, AddressError> {
    if input.get(i) == Some(&b'"') {
        i += 1;
        loop {
            match input.get(i) {
                Some(b'"') => return Ok(i + 1),
                // quoted-pairSMTP = %d92 %d32-126
                Some(b'\\') => match input.get(i + 1) {
                    Some(32..=126) => i += 2,
                    _ => return Err(AddressError::LocalPart),
                },
                Some(&b) if is_qtext(b) => i += 1,
                _ => return Err(AddressError::LocalPart),
            }
        }
    }
    // Dot-string = Atom *("." Atom): no empty atom, so no leading,
    // trailing or doubled dot.
    loop {
        let atom_start = i;
        while input.get(i).is_some_and(|&b| is_atext(b)) {
            i += 1;
        }
        if i == atom_start {
            return Err(AddressError::LocalPart);
        }
        if input.get(i) == Some(&b'.') {
            i += 1;
        } else {
            return Ok(i);
        }
    }
}

/// `Domain = sub-domain *("." sub-domain)`, `sub-domain = Let-dig [Ldh-str]`
/// (a U-label under RFC 6531). One trailing dot is tolerated (a fully
/// qualified spelling some clients use); policy strips it. Returns the index
/// after the domain.
fn scan_domain_name(input: &[u8], start: usize) -> Result<usize, AddressError> {
    let mut i = start;
    loop {
        let label_start = i;
        while input
            .get(i)
            .is_some_and(|&b| b.is_ascii_alphanumeric() || b == b'-' || b >= 0x80)
        {
            i += 1;
        }
        let label = &input[label_start..i];
        match (label.first(), label.last()) {
            (None, _) => {
                // Empty label: fine only as the trailing dot after a label.
                return if i > start {
                    Ok(i)
                } else {
                    Err(AddressError::Domain)
                };
            }
            (Some(b'-'), _) | (_, Some(b'-')) => return Err(AddressError::Domain),
            _ if label.len() > MAX_LABEL_LENGTH => return Err(AddressError::Domain),
            _ => {}
        }
        if i - start > MAX_DOMAIN_LENGTH {
            return Err(AddressError::Domain);
        }
        if input.get(i) == Some(&b'.') {
            i += 1;
        } else {
            return Ok(i);
        }
    }
}

/// `address-literal = "[" ( IPv4 / "IPv6:" IPv6 / General ) "]"`
/// (RFC 5321 4.1.3). General-address-literal needs a tag registered with
/// IANA; only IPv6 is, so every other tag is refused. Returns the index
/// after `]`.
fn scan_literal(input: &[u8], open: usize) -> Result<usize, AddressError> {
    let inner_start = open + 1;
    let rest = input.get(inner_start..).ok_or(AddressError::Literal)?;
    let close = memchr(b']', rest).ok_or(AddressError::Literal)?;
    let inner = &rest[..close];
    let valid = match inner.get(..5) {
        Some(tag) if tag.eq_ignore_ascii_case(b"IPv6:") => std::str::from_utf8(&inner[5..])
            .ok()
            .is_some_and(|s| Ipv6Addr::from_str(s).is_ok()),
        _ => is_ipv4_literal(inner),
    };
    if valid {
        Ok(inner_start + close + 1)
    } else {
        Err(AddressError::Literal)
    }
}

/// `IPv4-address-literal = Snum 3("." Snum)`, `Snum = 1*3DIGIT` with value
/// 0-255 (leading zeros allowed by the grammar, unlike std's parser).
fn is_ipv4_literal(s: &[u8]) -> bool {
    let mut parts = 0;
    for part in s.split(|&b| b == b'.') {
        parts += 1;
        if part.is_empty() || part.len() > 3 || !part.iter().all(u8::is_ascii_digit) {
            return false;
        }
        let value = part
            .iter()
            .fold(0u32, |acc, &d| acc * 10 + u32::from(d - b'0'));
        if value > 255 {
            return false;
        }
    }
    parts == 4
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mailbox(input: &str) -> Mailbox<'_> {
        match parse_reverse_path(input.as_bytes()) {
            Ok((ReversePath::Mailbox(m), rest)) => {
                assert!(rest.is_empty(), "trailing bytes for {input}");
                m
            }
            other => panic!("{input}: {other:?}"),
        }
    }

    fn err(input: &str) -> AddressError {
        match parse_reverse_path(input.as_bytes()) {
            Err(e) => e,
            Ok(p) => panic!("{input} parsed: {p:?}"),
        }
    }

    #[test]
    fn dot_string_mailbox() {
        let m = mailbox("<john.q.public+tag@Example.COM>");
        assert_eq!(m.address, "john.q.public+tag@Example.COM");
        assert_eq!(m.local_part, "john.q.public+tag");
        assert_eq!(m.domain, Domain::Name("Example.COM"));
        assert!(m.is_ascii());
    }

    #[test]
    fn all_atext_specials() {
        let m = mailbox("<!#$%&'*+-/=?^_`{|}~@x.test>");
        assert_eq!(m.local_part, "!#$%&'*+-/=?^_`{|}~");
    }

    #[test]
    fn quoted_local_parts() {
        let m = mailbox(r#"<"john smith"@example.com>"#);
        assert_eq!(m.local_part, r#""john smith""#);
        let m = mailbox(r#"<"a\"b\\c"@example.com>"#);
        assert_eq!(m.local_part, r#""a\"b\\c""#);
        let m = mailbox(r#"<""@example.com>"#);
        assert_eq!(m.local_part, r#""""#);
        let m = mailbox(r#"<"a@b"@example.com>"#);
        assert_eq!(m.domain, Domain::Name("example.com"));
    }

    #[test]
    fn bad_quoted_local_parts() {
        assert_eq!(err(r#"<"abc@example.com>"#), AddressError::LocalPart);
        assert_eq!(err("<\"a\tb\"@example.com>"), AddressError::LocalPart);
        assert_eq!(err("<\"a\\\x01\"@example.com>"), AddressError::LocalPart);
    }

    #[test]
    fn bad_dot_strings() {
        for bad in [
            "<.a@b.c>",
            "<a.@b.c>",
            "<a..b@b.c>",
            "<a b@c.d>",
            "<a(b)@c.d>",
            "<a,b@c.d>",
        ] {
            assert!(parse_reverse_path(bad.as_bytes()).is_err(), "{bad}");
        }
    }

    #[test]
    fn domains() {
        assert_eq!(mailbox("<a@localhost>").domain, Domain::Name("localhost"));
        assert_eq!(
            mailbox("<a@x-y.z9.test>").domain,
            Domain::Name("x-y.z9.test")
        );
        assert_eq!(
            mailbox("<a@example.com.>").domain,
            Domain::Name("example.com.")
        );
        for bad in [
            "<a@-x.test>",
            "<a@x-.test>",
            "<a@x..test>",
            "<a@.x.test>",
            "<a@x_y.test>",
            "<a@>",
            "<a@x.test..>",
        ] {
            assert!(parse_reverse_path(bad.as_bytes()).is_err(), "{bad}");
        }
        let long_label = format!("<a@{}.test>", "x".repeat(64));
        assert_eq!(err(&long_label), AddressError::Domain);
        let ok_label = format!("<a@{}.test>", "x".repeat(63));
        assert!(parse_reverse_path(ok_label.as_bytes()).is_ok());
    }

    #[test]
    fn address_literals() {
        assert_eq!(
            mailbox("<a@[192.0.2.1]>").domain,
            Domain::Literal("[192.0.2.1]")
        );
        assert_eq!(
            mailbox("<a@[001.0.2.1]>").domain,
            Domain::Literal("[001.0.2.1]")
        );
        assert_eq!(
            mailbox("<a@[IPv6:2001:db8::1]>").domain,
            Domain::Literal("[IPv6:2001:db8::1]")
        );
        assert!(parse_reverse_path(b"<a@[ipv6:::ffff:192.0.2.1]>").is_ok());
        for bad in [
            "<a@[256.0.0.1]>",
            "<a@[1.2.3]>",
            "<a@[1.2.3.4.5]>",
            "<a@[1.2.3.4>",
            "<a@[IPv6:2001:db8::g]>",
            "<a@[IPv6:1.2.3.4]>",
            "<a@[X-tag:foo]>",
            "<a@[]>",
            "<a@[1.2.3.4]x>",
        ] {
            assert!(parse_reverse_path(bad.as_bytes()).is_err(), "{bad}");
        }
    }

    #[test]
    fn source_routes_are_ignored() {
        let m = mailbox("<@relay1.test,@relay2.test:user@d.test>");
        assert_eq!(m.address, "user@d.test");
        assert_eq!(err("<@relay1.test user@d.test>"), AddressError::SourceRoute);
        assert_eq!(err("<@:user@d.test>"), AddressError::SourceRoute);
        assert_eq!(err("<@a.test,user@d.test>"), AddressError::SourceRoute);
    }

    #[test]
    fn null_and_postmaster() {
        assert_eq!(parse_reverse_path(b"<>"), Ok((ReversePath::Null, &b""[..])));
        assert_eq!(parse_forward_path(b"<>"), Err(AddressError::NullPath));
        assert_eq!(
            parse_forward_path(b"<PostMaster> X"),
            Ok((ForwardPath::Postmaster("PostMaster"), &b" X"[..]))
        );
        assert_eq!(
            parse_reverse_path(b"<Postmaster>").unwrap_err(),
            AddressError::MissingDomain
        );
        assert_eq!(
            parse_forward_path(b"<bob>").unwrap_err(),
            AddressError::MissingDomain
        );
    }

    #[test]
    fn brackets_required_and_rest_returned() {
        assert_eq!(err("a@b.c"), AddressError::NotBracketed);
        assert_eq!(err("<a@b.c"), AddressError::NotBracketed);
        assert_eq!(err(""), AddressError::NotBracketed);
        let (_, rest) = parse_reverse_path(b"<a@b.c> SIZE=10").unwrap();
        assert_eq!(rest, b" SIZE=10");
    }

    #[test]
    fn utf8_addresses() {
        let m = mailbox("<用户@例子.广告>");
        assert!(!m.is_ascii());
        assert_eq!(m.domain, Domain::Name("例子.广告"));
        let m = mailbox("<\"ü\"@x.test>");
        assert!(!m.is_ascii());
        assert_eq!(err("<\u{1}@x.test>"), AddressError::LocalPart);
        assert_eq!(
            parse_reverse_path(b"<\xff\xfe@x.test>").unwrap_err(),
            AddressError::NotUtf8
        );
    }

    #[test]
    fn length_limit() {
        let local = "l".repeat(64);
        let domain = format!(
            "{}.{}.{}.test",
            "a".repeat(60),
            "b".repeat(60),
            "c".repeat(60)
        );
        let ok = format!("<{local}@{domain}>");
        assert!(ok.len() <= MAX_PATH_LENGTH);
        assert!(parse_reverse_path(ok.as_bytes()).is_ok());
        let too_long = format!("<{}@{domain}>", "l".repeat(80));
        assert_eq!(err(&too_long), AddressError::TooLong);
    }
}
