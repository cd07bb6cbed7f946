//! Cuts `BODY[section]<origin.count>` out of the stored bytes using a parsed structure (RFC 3501
//! 6.4.5); it refuses to parse section syntax (the command parser maps its result to
//! [`Section`]) or to change the stored bytes beyond what HEADER.FIELDS must select.
//!
//! Part numbering: in a message whose body is a multipart, `n` is its n-th
//! body part; in any other message, part 1 is the body itself. A
//! message/rfc822 part is numbered into like the message it encapsulates,
//! so `2.1` is the first part of the message attached as part 2.
//! HEADER, HEADER.FIELDS, HEADER.FIELDS.NOT and TEXT apply to the message
//! itself (empty path) or to a message/rfc822 part; MIME applies to a part
//! (non-empty path). A section that names no existing part, or a specifier
//! that does not apply there, gives empty bytes, as Dovecot answers.

use std::borrow::Cow;

use super::header::{self, Fields};
use super::{MessageStructure, Part, PartKind, Span};

/// What follows the part numbers in a section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SectionPart {
    Header,
    /// Field names, compared ASCII case-insensitively.
    HeaderFields(Vec<String>),
    HeaderFieldsNot(Vec<String>),
    Text,
    Mime,
}

/// A `BODY[...]` section: part numbers (1-based, empty for the whole message)
/// and an optional specifier.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Section {
    pub part: Vec<u32>,
    pub kind: Option<SectionPart>,
}

/// Where a path leads: the entity and whether it is a message (whose
/// header is a message header: the root, or the inside of a
/// message/rfc822 part) or a body part.
enum Target<'s> {
    Message(&'s Part),
    Part(&'s Part),
}

fn resolve<'s>(root: &'s Part, path: &[u32]) -> Option<Target<'s>> {
    let mut at = Target::Message(root);
    for &n in path {
        let index = usize::try_from(n).ok()?.checked_sub(1)?;
        at = match at {
            Target::Message(m) => match &m.kind {
                PartKind::Multipart(children) => Target::Part(children.get(index)?),
                _ if index == 0 => Target::Part(m),
                _ => return None,
            },
            Target::Part(p) => match &p.kind {
                PartKind::Multipart(children) => Target::Part(children.get(index)?),
                PartKind::Message(inner) => match &inner.root.kind {
                    PartKind::Multipart(children) => Target::Part(children.get(index)?),
                    _ if index == 0 => Target::Part(&inner.root),
                    _ => return None,
                },
                PartKind::Leaf => return None,
            },
        };
    }
    Some(at)
}

/// The message header and body a HEADER/TEXT specifier refers to.
fn message_of<'s>(target: &Target<'s>) -> Option<&'s Part> {
    match target {
        Target::Message(m) => Some(m),
        Target::Part(p) => match &p.kind {
            PartKind::Message(inner) => Some(&inner.root),
            _ => None,
        },
    }
}

/// The bytes of `BODY[section]` (before any partial). Borrowed from `raw`
/// except for HEADER.FIELDS and HEADER.FIELDS.NOT. Empty when the section
/// does not exist, or when `structure` does not fit `raw`.
pub fn section_bytes<'r>(
    raw: &'r [u8],
    structure: &MessageStructure,
    section: &Section,
) -> Cow<'r, [u8]> {
    let empty = Cow::Borrowed(&[][..]);
    let slice = |span: Span| span.get(raw).map_or(Cow::Borrowed(&[][..]), Cow::Borrowed);
    let root = structure.root();
    let Some(target) = resolve(root, &section.part) else {
        return empty;
    };
    match &section.kind {
        None => match target {
            Target::Message(m) => slice(Span {
                start: m.header.start,
                end: m.body.end,
            }),
            Target::Part(p) => slice(p.body),
        },
        Some(SectionPart::Mime) => match target {
            Target::Part(p) => slice(p.header),
            Target::Message(_) => empty,
        },
        Some(SectionPart::Header) => message_of(&target).map_or(empty, |m| slice(m.header)),
        Some(SectionPart::Text) => message_of(&target).map_or(empty, |m| slice(m.body)),
        Some(SectionPart::HeaderFields(names)) => {
            message_of(&target).map_or(empty, |m| Cow::Owned(select(raw, m.header, names, true)))
        }
        Some(SectionPart::HeaderFieldsNot(names)) => {
            message_of(&target).map_or(empty, |m| Cow::Owned(select(raw, m.header, names, false)))
        }
    }
}

/// RFC 3501 6.4.5: the fields whose name is (`keep` true) or is not in
/// `names`, in stored order and as stored, followed by the empty line. The
/// empty line takes the header's own line-end style.
fn select(raw: &[u8], header_span: Span, names: &[String], keep: bool) -> Vec<u8> {
    let Some(header) = header_span.get(raw) else {
        return Vec::new();
    };
    let crlf = match memchr::memchr(b'\n', header) {
        Some(i) => i > 0 && header[i - 1] == b'\r',
        None => true,
    };
    let eol: &[u8] = if crlf { b"\r\n" } else { b"\n" };
    let mut out = Vec::new();
    for field in Fields::new(raw, header_span) {
        let listed = names
            .iter()
            .any(|n| field.name.eq_ignore_ascii_case(n.as_bytes()));
        if listed != keep {
            continue;
        }
        if let Some(bytes) = field.span.get(raw) {
            out.extend_from_slice(bytes);
            if header::trim_line_end(bytes).len() == bytes.len() {
                // The last field of a header without an empty line.
                out.extend_from_slice(eol);
            }
        }
    }
    out.extend_from_slice(eol);
    out
}

/// RFC 3501 6.4.5 partial `<origin.count>`: at most `count` octets from
/// `origin`; empty when `origin` is past the end.
pub fn partial(bytes: &[u8], origin: u64, count: u64) -> &[u8] {
    let len = bytes.len() as u64;
    let start = origin.min(len);
    let end = start.saturating_add(count).min(len);
    // Both are at most bytes.len(), which fits usize.
    &bytes[start as usize..end as usize]
}
