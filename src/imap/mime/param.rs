//! Parses the values of Content-Type and Content-Disposition (RFC 2045 5.1, RFC 2183) into a
//! type, a subtype and parameters, merging RFC 2231 continuations; it refuses to decode
//! RFC 2231 charsets (IMAP clients do that, see below) or to know what a type means.
//!
//! RFC 2231 section 3 continuations (`name*0=`, `name*1*=`) are joined into
//! one parameter. A value with a charset (`name*=utf-8''%E2%82%AC`) keeps its
//! encoded form and its starred name, as Dovecot does: BODYSTRUCTURE strings
//! stay 7-bit and clients decode RFC 2231 themselves. Joined parameters
//! follow the plain ones, again as in Dovecot. [`Param::decoded`] gives the
//! decoded text for callers that want it.
//!
//! Real mail is sloppy, so the parser is lenient: an unquoted value runs to
//! the next `;` or blank, junk between parameters is skipped, and a value
//! that cannot be parsed at all yields `None` (the caller then applies the
//! RFC 2045 5.2 default).

use super::header::is_blank;

/// At most this many parameters are kept from one field; the rest are
/// dropped. Real mail has a handful; this bounds hostile input.
pub const MAX_PARAMS: usize = 64;

/// RFC 2231 continuation numbers above this are not joined (kept as they are).
const MAX_SECTION: u32 = 999;

/// One `attribute=value` parameter, attribute case as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Param {
    pub name: Vec<u8>,
    pub value: Vec<u8>,
}

impl Param {
    /// The value with RFC 2231 decoding applied when the name ends in `*`
    /// (`charset'language'percent-encoded`): UTF-8 and US-ASCII are decoded,
    /// ISO-8859-1 is mapped, other charsets are decoded as UTF-8 lossily.
    /// A plain value is returned as UTF-8 text (lossy).
    pub fn decoded(&self) -> String {
        if !self.name.ends_with(b"*") {
            return String::from_utf8_lossy(&self.value).into_owned();
        }
        let mut pieces = self.value.splitn(3, |&b| b == b'\'');
        let (charset, _lang, text) = match (pieces.next(), pieces.next(), pieces.next()) {
            (Some(c), Some(l), Some(t)) => (c, l, t),
            _ => (&b""[..], &b""[..], &self.value[..]),
        };
        let bytes = percent_decode(text);
        if charset.eq_ignore_ascii_case(b"iso-8859-1") || charset.eq_ignore_ascii_case(b"latin1") {
            bytes.iter().map(|&b| char::from(b)).collect()
        } else {
            String::from_utf8_lossy(&bytes).into_owned()
        }
    }
}

/// A parsed Content-Type or Content-Disposition value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypeAndParams {
    pub kind: Vec<u8>,
    /// Empty for Content-Disposition, and for a Content-Type without one
    /// (`Content-Type: text`; Dovecot reports `"text" ""` too).
    pub subtype: Vec<u8>,
    pub params: Vec<Param>,
}

/// Parses `type/subtype *(; param)`; `with_subtype` is false for
/// Content-Disposition. `None` when there is not even a type token.
pub(crate) fn parse(value: &[u8], with_subtype: bool) -> Option<TypeAndParams> {
    let mut p = Cursor { s: value, i: 0 };
    p.skip_cfws();
    let kind = p.token();
    if kind.is_empty() {
        return None;
    }
    p.skip_cfws();
    let mut subtype = Vec::new();
    if with_subtype && p.peek() == Some(b'/') {
        p.i += 1;
        p.skip_cfws();
        subtype = p.token().to_vec();
    }
    let raw_params = p.params();
    Some(TypeAndParams {
        kind: kind.to_vec(),
        subtype,
        params: join_continuations(raw_params),
    })
}

struct Cursor<'a> {
    s: &'a [u8],
    i: usize,
}

impl<'a> Cursor<'a> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    /// Skips blanks and RFC 822 comments (nested, with quoted pairs).
    fn skip_cfws(&mut self) {
        loop {
            match self.peek() {
                Some(b) if is_blank(b) => self.i += 1,
                Some(b'(') => {
                    let mut depth = 0usize;
                    while let Some(b) = self.peek() {
                        self.i += 1;
                        match b {
                            // A quoted pair; a backslash last in the value
                            // quotes nothing (the cursor stays in bounds).
                            b'\\' => self.i = (self.i + 1).min(self.s.len()),
                            b'(' => depth += 1,
                            b')' => {
                                depth -= 1;
                                if depth == 0 {
                                    break;
                                }
                            }
                            _ => {}
                        }
                    }
                }
                _ => return,
            }
        }
    }

    /// An RFC 2045 token: any CHAR except SPACE, CTLs and tspecials. Bytes
    /// above 127 are accepted too (sloppy mail), they cannot be confused
    /// with syntax.
    fn token(&mut self) -> &'a [u8] {
        let start = self.i;
        while let Some(b) = self.peek() {
            if b <= b' ' || b == 0x7f || b"()<>@,;:\\\"/[]?=".contains(&b) {
                break;
            }
            self.i += 1;
        }
        &self.s[start..self.i]
    }

    /// A quoted string's content with quoted pairs resolved; the opening
    /// quote is at the cursor. An unterminated one runs to the end.
    fn quoted(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        self.i += 1;
        while let Some(b) = self.peek() {
            self.i += 1;
            match b {
                b'"' => break,
                b'\\' => {
                    if let Some(c) = self.peek() {
                        out.push(c);
                        self.i += 1;
                    }
                }
                b'\r' | b'\n' => {}
                _ => out.push(b),
            }
        }
        out
    }

    fn params(&mut self) -> Vec<Param> {
        let mut out = Vec::new();
        loop {
            // Skip to the next ';' (junk after a value is dropped).
            while let Some(b) = self.peek() {
                match b {
                    b';' => break,
                    b'"' => {
                        self.quoted();
                    }
                    b'(' => self.skip_cfws(),
                    _ => self.i += 1,
                }
            }
            if self.peek().is_none() {
                return out;
            }
            self.i += 1;
            self.skip_cfws();
            let name = self.token();
            self.skip_cfws();
            if name.is_empty() || self.peek() != Some(b'=') {
                continue;
            }
            self.i += 1;
            self.skip_cfws();
            let value = if self.peek() == Some(b'"') {
                self.quoted()
            } else {
                let start = self.i;
                while let Some(b) = self.peek() {
                    if b == b';' || b == b'"' || b == b'(' || is_blank(b) {
                        break;
                    }
                    self.i += 1;
                }
                self.s[start..self.i].to_vec()
            };
            if out.len() < MAX_PARAMS {
                out.push(Param {
                    name: name.to_vec(),
                    value,
                });
            }
        }
    }
}

/// `name*N`, `name*N*` or `name*` (a lone section 0): (base name, N, extended).
fn continuation(name: &[u8]) -> Option<(&[u8], u32, bool)> {
    let (name, extended) = match name.strip_suffix(b"*") {
        Some(n) => (n, true),
        None => (name, false),
    };
    let Some(star) = name.iter().rposition(|&b| b == b'*') else {
        return (extended && !name.is_empty()).then_some((name, 0, true));
    };
    let digits = &name[star + 1..];
    if digits.is_empty() || digits.len() > 3 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    // RFC 2231 3: no leading zeros ("*01" is not section 1).
    if digits.len() > 1 && digits[0] == b'0' {
        return None;
    }
    let n = digits
        .iter()
        .fold(0u32, |n, d| n * 10 + u32::from(d - b'0'));
    (n <= MAX_SECTION).then_some((&name[..star], n, extended))
}

/// One RFC 2231 section: (number, extended, value).
type Section = (u32, bool, Vec<u8>);

/// RFC 2231 3: joins `name*0`, `name*1`, ... into one parameter, placed
/// after the plain ones (so is a lone `name*`, as Dovecot orders them). Sections must run from 0 without gaps; otherwise
/// they are kept as they came.
fn join_continuations(params: Vec<Param>) -> Vec<Param> {
    if !params.iter().any(|p| continuation(&p.name).is_some()) {
        return params;
    }
    let mut plain = Vec::new();
    // Base names with their sections, in order of first appearance.
    let mut groups: Vec<(Vec<u8>, Vec<Section>)> = Vec::new();
    for p in params {
        match continuation(&p.name) {
            Some((base, n, extended)) => {
                match groups
                    .iter_mut()
                    .find(|(b, _)| b.eq_ignore_ascii_case(base))
                {
                    Some((_, sections)) => sections.push((n, extended, p.value)),
                    None => groups.push((base.to_vec(), vec![(n, extended, p.value)])),
                }
            }
            None => plain.push(p),
        }
    }
    for (base, mut sections) in groups {
        sections.sort_by_key(|s| s.0);
        let complete = sections.iter().enumerate().all(|(i, s)| s.0 as usize == i);
        if !complete {
            for (n, extended, value) in sections {
                let mut name = base.clone();
                name.extend_from_slice(format!("*{n}").as_bytes());
                if extended {
                    name.push(b'*');
                }
                plain.push(Param { name, value });
            }
            continue;
        }
        // RFC 2231 4.1: only section 0 carries charset'language'; if it is
        // extended, plain sections after it must be percent-encoded to be
        // joined into the extended value.
        // Not empty: a group is created with its first section.
        let extended = sections[0].1;
        let mut value = Vec::new();
        for (_, ext, v) in &sections {
            if extended && !ext {
                percent_encode_into(v, &mut value);
            } else {
                value.extend_from_slice(v);
            }
        }
        let mut name = base;
        if extended {
            name.push(b'*');
        }
        plain.push(Param { name, value });
    }
    plain.truncate(MAX_PARAMS);
    plain
}

fn percent_encode_into(v: &[u8], out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in v {
        if b.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&b) {
            out.push(b);
        } else {
            out.extend_from_slice(&[b'%', HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]]);
        }
    }
}

fn percent_decode(v: &[u8]) -> Vec<u8> {
    let hex = |b: u8| (b as char).to_digit(16);
    let mut out = Vec::with_capacity(v.len());
    let mut i = 0;
    while i < v.len() {
        if v[i] == b'%' && i + 2 < v.len() {
            if let (Some(h), Some(l)) = (hex(v[i + 1]), hex(v[i + 2])) {
                // Two hex digits are below 256.
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(v[i]);
        i += 1;
    }
    out
}
