//! Serializes ENVELOPE and BODY/BODYSTRUCTURE in the exact syntax of RFC 3501 section 9
//! (`envelope`, `body`, `body-ext-1part`, `body-ext-mpart`); it refuses to decide what goes in
//! them (the parser did) or to write anything but the value itself.
//!
//! Strings are quoted with `\"` and `\\` escapes when they can be; a
//! string with CR, LF or 8-bit bytes is a literal (RFC 3501 4.3: quoted
//! strings hold 7-bit TEXT-CHARs only). NUL is not allowed even in a
//! literal (CHAR8), so NUL bytes are dropped.

use super::{Address, Envelope, Param, Part, PartKind};

/// A `string`: quoted when possible, otherwise a literal.
pub fn string(out: &mut Vec<u8>, s: &[u8]) {
    if s.iter().any(|&b| b == b'\r' || b == b'\n' || b >= 0x80) {
        let len = s.iter().filter(|&&b| b != 0).count();
        out.extend_from_slice(format!("{{{len}}}\r\n").as_bytes());
        out.extend(s.iter().copied().filter(|&b| b != 0));
        return;
    }
    out.push(b'"');
    for &b in s {
        match b {
            b'"' | b'\\' => out.extend_from_slice(&[b'\\', b]),
            0 => {}
            _ => out.push(b),
        }
    }
    out.push(b'"');
}

/// An `nstring`: NIL for `None`.
pub fn nstring(out: &mut Vec<u8>, s: Option<&[u8]>) {
    match s {
        Some(s) => string(out, s),
        None => out.extend_from_slice(b"NIL"),
    }
}

fn number(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(n.to_string().as_bytes());
}

/// `envelope` (RFC 3501 7.4.2).
pub fn envelope(out: &mut Vec<u8>, e: &Envelope) {
    out.push(b'(');
    nstring(out, e.date.as_deref());
    out.push(b' ');
    nstring(out, e.subject.as_deref());
    for list in [&e.from, &e.sender, &e.reply_to, &e.to, &e.cc, &e.bcc] {
        out.push(b' ');
        addresses(out, list);
    }
    out.push(b' ');
    nstring(out, e.in_reply_to.as_deref());
    out.push(b' ');
    nstring(out, e.message_id.as_deref());
    out.push(b')');
}

/// `"(" 1*address ")" / nil`
fn addresses(out: &mut Vec<u8>, list: &[Address]) {
    if list.is_empty() {
        out.extend_from_slice(b"NIL");
        return;
    }
    out.push(b'(');
    for a in list {
        out.push(b'(');
        nstring(out, a.name.as_deref());
        out.push(b' ');
        nstring(out, a.adl.as_deref());
        out.push(b' ');
        nstring(out, a.mailbox.as_deref());
        out.push(b' ');
        nstring(out, a.host.as_deref());
        out.push(b')');
    }
    out.push(b')');
}

/// `body-fld-param`: NIL when there are none.
fn params(out: &mut Vec<u8>, params: &[Param]) {
    if params.is_empty() {
        out.extend_from_slice(b"NIL");
        return;
    }
    out.push(b'(');
    for (i, p) in params.iter().enumerate() {
        if i > 0 {
            out.push(b' ');
        }
        string(out, &p.name);
        out.push(b' ');
        string(out, &p.value);
    }
    out.push(b')');
}

/// `body-fld-dsp SP body-fld-lang SP body-fld-loc`, shared by both kinds
/// of extension data.
fn dsp_lang_loc(out: &mut Vec<u8>, part: &Part) {
    out.push(b' ');
    match &part.disposition {
        Some(d) => {
            out.push(b'(');
            string(out, &d.kind);
            out.push(b' ');
            params(out, &d.params);
            out.push(b')');
        }
        None => out.extend_from_slice(b"NIL"),
    }
    out.push(b' ');
    if part.language.is_empty() {
        out.extend_from_slice(b"NIL");
    } else {
        out.push(b'(');
        for (i, tag) in part.language.iter().enumerate() {
            if i > 0 {
                out.push(b' ');
            }
            string(out, tag);
        }
        out.push(b')');
    }
    out.push(b' ');
    nstring(out, part.location.as_deref());
}

/// What a multipart without parts shows as its one part (Dovecot's
/// choice; the grammar needs `1*body`).
const EMPTY_BODY: &[u8] = b"(\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 0 0)";
const EMPTY_BODYSTRUCTURE: &[u8] =
    b"(\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 0 0 NIL NIL NIL NIL)";

/// `body` (RFC 3501 9): BODYSTRUCTURE when `extensible`, else BODY.
pub fn body(out: &mut Vec<u8>, part: &Part, extensible: bool) {
    out.push(b'(');
    match &part.kind {
        PartKind::Multipart(children) => {
            if children.is_empty() {
                out.extend_from_slice(if extensible {
                    EMPTY_BODYSTRUCTURE
                } else {
                    EMPTY_BODY
                });
            }
            for child in children {
                body(out, child, extensible);
            }
            out.push(b' ');
            string(out, &part.media_subtype);
            if extensible {
                out.push(b' ');
                params(out, &part.params);
                dsp_lang_loc(out, part);
            }
        }
        kind => {
            string(out, &part.media_type);
            out.push(b' ');
            string(out, &part.media_subtype);
            out.push(b' ');
            params(out, &part.params);
            out.push(b' ');
            nstring(out, part.id.as_deref());
            out.push(b' ');
            nstring(out, part.description.as_deref());
            out.push(b' ');
            string(out, &part.encoding);
            out.push(b' ');
            number(out, part.size() as u64);
            if let PartKind::Message(inner) = kind {
                out.push(b' ');
                envelope(out, &inner.envelope);
                out.push(b' ');
                body(out, &inner.root, extensible);
                out.push(b' ');
                number(out, part.lines);
            } else if is_message_rfc822(part) {
                // Not parsed (encoded, RFC 2046 5.2.1), but the type
                // promises body-type-msg: an empty envelope and body, as
                // Dovecot writes, keep clients' parsers on track.
                out.extend_from_slice(b" (NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL) ");
                out.extend_from_slice(if extensible {
                    EMPTY_BODYSTRUCTURE
                } else {
                    EMPTY_BODY
                });
                out.push(b' ');
                number(out, part.lines);
            } else if part.is_type("text") {
                out.push(b' ');
                number(out, part.lines);
            }
            if extensible {
                out.push(b' ');
                nstring(out, part.md5.as_deref());
                dsp_lang_loc(out, part);
            }
        }
    }
    out.push(b')');
}

/// RFC 3501 9 `media-message` is exactly MESSAGE/RFC822.
fn is_message_rfc822(part: &Part) -> bool {
    part.is_type("message") && part.media_subtype.eq_ignore_ascii_case(b"rfc822")
}
