//! Writes the data items of one `* n FETCH (...)` response (RFC 3501 6.4.5, 7.4.2) from a
//! message's stored bytes, parsed structure and metadata. It refuses to pick messages, read
//! files, change flags or cache structures: the session does, and tells it what it has.

use std::time::SystemTime;

use chrono::{DateTime, FixedOffset, Utc};

use super::command::{FetchAttribute, Flag, Section, SectionText};
use super::mime::{self, MessageStructure, SectionPart};
use super::response::{write_astring, write_date_time, write_flags, write_literal, write_nil};

/// What the session knows about one message for FETCH.
#[derive(Debug, Clone, Copy)]
pub struct Fetched<'a> {
    pub seq: u32,
    pub uid: u32,
    /// The flags to report (`\Recent` included when it applies).
    pub flags: &'a [Flag<'a>],
    pub size: u64,
    pub internal_date: SystemTime,
    /// RFC 7162 3.1.4.2 MODSEQ.
    pub modseq: u64,
    /// The stored bytes, when an item needs them.
    pub raw: Option<&'a [u8]>,
    /// The parsed structure, when an item needs it.
    pub structure: Option<&'a MessageStructure>,
}

/// What the items need beyond the session's metadata.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Needs {
    pub raw: bool,
    pub structure: bool,
    /// Some item sets `\Seen` (RFC 3501 6.4.5: BODY[...] without PEEK,
    /// RFC822, RFC822.TEXT).
    pub sets_seen: bool,
    pub flags: bool,
    pub uid: bool,
    /// MODSEQ is asked for (RFC 7162: a CONDSTORE enabling FETCH).
    pub modseq: bool,
}

/// Whether the session can answer every item (BINARY is not offered:
/// RFC 3516 is not advertised).
pub fn supported(attr: &FetchAttribute<'_>) -> bool {
    !matches!(
        attr,
        FetchAttribute::Binary { .. } | FetchAttribute::BinarySize { .. }
    )
}

pub fn needs(attrs: &[FetchAttribute<'_>]) -> Needs {
    let mut n = Needs::default();
    for attr in attrs {
        match attr {
            FetchAttribute::Envelope | FetchAttribute::Body | FetchAttribute::BodyStructure => {
                n.structure = true
            }
            FetchAttribute::Rfc822 => {
                n.raw = true;
                n.sets_seen = true;
            }
            FetchAttribute::Rfc822Text => {
                n.raw = true;
                n.structure = true;
                n.sets_seen = true;
            }
            FetchAttribute::Rfc822Header => {
                n.raw = true;
                n.structure = true;
            }
            FetchAttribute::BodySection { peek, .. } => {
                n.raw = true;
                n.structure = true;
                n.sets_seen |= !peek;
            }
            FetchAttribute::Flags => n.flags = true,
            FetchAttribute::Uid => n.uid = true,
            FetchAttribute::ModSeq => n.modseq = true,
            _ => {}
        }
    }
    n
}

/// The structure's section for a parsed section spec.
fn mime_section(section: &Section<'_>) -> mime::Section {
    let names = |fields: &[std::borrow::Cow<'_, [u8]>]| {
        fields
            .iter()
            .map(|f| String::from_utf8_lossy(f).into_owned())
            .collect()
    };
    mime::Section {
        part: section.part.iter().map(|n| n.get()).collect(),
        kind: section.text.as_ref().map(|t| match t {
            SectionText::Header => SectionPart::Header,
            SectionText::HeaderFields { not: false, fields } => {
                SectionPart::HeaderFields(names(fields))
            }
            SectionText::HeaderFields { not: true, fields } => {
                SectionPart::HeaderFieldsNot(names(fields))
            }
            SectionText::Text => SectionPart::Text,
            SectionText::Mime => SectionPart::Mime,
        }),
    }
}

/// `[section]` as the client wrote it (RFC 3501 7.4.2 BODY[section]).
fn write_section(out: &mut Vec<u8>, section: &Section<'_>) {
    out.push(b'[');
    for (i, n) in section.part.iter().enumerate() {
        if i > 0 {
            out.push(b'.');
        }
        out.extend_from_slice(n.to_string().as_bytes());
    }
    if let Some(text) = &section.text {
        if !section.part.is_empty() {
            out.push(b'.');
        }
        match text {
            SectionText::Header => out.extend_from_slice(b"HEADER"),
            SectionText::Text => out.extend_from_slice(b"TEXT"),
            SectionText::Mime => out.extend_from_slice(b"MIME"),
            SectionText::HeaderFields { not, fields } => {
                out.extend_from_slice(if *not {
                    b"HEADER.FIELDS.NOT (".as_slice()
                } else {
                    b"HEADER.FIELDS (".as_slice()
                });
                for (i, f) in fields.iter().enumerate() {
                    if i > 0 {
                        out.push(b' ');
                    }
                    write_astring(out, f);
                }
                out.push(b')');
            }
        }
    }
    out.push(b']');
}

/// INTERNALDATE as a date-time, in UTC.
pub fn internal_date(at: SystemTime) -> DateTime<FixedOffset> {
    DateTime::<Utc>::from(at).fixed_offset()
}

/// `* seq FETCH (...)` CRLF. `uid` and `flags` are added first when the
/// items lack them but the reply must carry them (UID FETCH, an implicit
/// `\Seen`).
pub fn write_fetch(
    out: &mut Vec<u8>,
    m: &Fetched<'_>,
    attrs: &[FetchAttribute<'_>],
    add_uid: bool,
    add_flags: bool,
    add_modseq: bool,
) {
    out.extend_from_slice(b"* ");
    out.extend_from_slice(m.seq.to_string().as_bytes());
    out.extend_from_slice(b" FETCH (");
    let mut first = true;
    let mut sep = |out: &mut Vec<u8>| {
        if !first {
            out.push(b' ');
        }
        first = false;
    };
    if add_uid {
        sep(out);
        write_uid(out, m.uid);
    }
    if add_flags {
        sep(out);
        out.extend_from_slice(b"FLAGS ");
        write_flags(out, m.flags);
    }
    if add_modseq {
        sep(out);
        write_modseq(out, m.modseq);
    }
    let raw = m.raw.unwrap_or_default();
    for attr in attrs {
        sep(out);
        match attr {
            FetchAttribute::Uid => write_uid(out, m.uid),
            FetchAttribute::Flags => {
                out.extend_from_slice(b"FLAGS ");
                write_flags(out, m.flags);
            }
            FetchAttribute::InternalDate => {
                out.extend_from_slice(b"INTERNALDATE ");
                write_date_time(out, &internal_date(m.internal_date));
            }
            FetchAttribute::Rfc822Size => {
                out.extend_from_slice(b"RFC822.SIZE ");
                out.extend_from_slice(m.size.to_string().as_bytes());
            }
            FetchAttribute::Envelope => {
                out.extend_from_slice(b"ENVELOPE ");
                match m.structure {
                    Some(s) => s.write_envelope(out),
                    None => write_nil(out),
                }
            }
            FetchAttribute::Body | FetchAttribute::BodyStructure => {
                let extensible = matches!(attr, FetchAttribute::BodyStructure);
                out.extend_from_slice(if extensible {
                    b"BODYSTRUCTURE ".as_slice()
                } else {
                    b"BODY ".as_slice()
                });
                match m.structure {
                    Some(s) => s.write_body(out, extensible),
                    None => write_nil(out),
                }
            }
            FetchAttribute::Rfc822 => {
                out.extend_from_slice(b"RFC822 ");
                write_literal(out, raw);
            }
            FetchAttribute::Rfc822Header | FetchAttribute::Rfc822Text => {
                let header = matches!(attr, FetchAttribute::Rfc822Header);
                out.extend_from_slice(if header {
                    b"RFC822.HEADER ".as_slice()
                } else {
                    b"RFC822.TEXT ".as_slice()
                });
                let kind = if header {
                    SectionPart::Header
                } else {
                    SectionPart::Text
                };
                let section = mime::Section {
                    part: Vec::new(),
                    kind: Some(kind),
                };
                match m.structure {
                    Some(s) => write_literal(out, &mime::section_bytes(raw, s, &section)),
                    None => write_nil(out),
                }
            }
            FetchAttribute::BodySection {
                section, partial, ..
            } => {
                out.extend_from_slice(b"BODY");
                write_section(out, section);
                let bytes = match m.structure {
                    Some(s) => mime::section_bytes(raw, s, &mime_section(section)),
                    None => std::borrow::Cow::Borrowed(&[][..]),
                };
                match partial {
                    Some(p) => {
                        // RFC 3501 7.4.2: only the origin is echoed.
                        out.push(b'<');
                        out.extend_from_slice(p.offset.to_string().as_bytes());
                        out.extend_from_slice(b"> ");
                        write_literal(out, mime::partial(&bytes, p.offset, p.length));
                    }
                    None => {
                        out.push(b' ');
                        write_literal(out, &bytes);
                    }
                }
            }
            FetchAttribute::ModSeq => write_modseq(out, m.modseq),
            // Refused before any message is written (see `supported`).
            FetchAttribute::Binary { .. } | FetchAttribute::BinarySize { .. } => write_nil(out),
        }
    }
    out.extend_from_slice(b")\r\n");
}

/// `MODSEQ (n)` (RFC 7162 7 `fetch-mod-resp`).
pub fn write_modseq(out: &mut Vec<u8>, modseq: u64) {
    out.extend_from_slice(b"MODSEQ (");
    out.extend_from_slice(modseq.to_string().as_bytes());
    out.push(b')');
}

fn write_uid(out: &mut Vec<u8>, uid: u32) {
    out.extend_from_slice(b"UID ");
    out.extend_from_slice(uid.to_string().as_bytes());
}
