//! Builds a [`MessageStructure`] from the stored bytes: header blocks, multipart splitting
//! (RFC 2046 5.1.1), message/rfc822 encapsulation, defaults (RFC 2045 5.2) and the ENVELOPE.
//! It refuses to fail or panic on any input, and to recurse or split beyond its bounds.

use memchr::memmem;

use super::header::{self, Fields};
use super::{
    address, param, Address, Disposition, Envelope, Message, MessageStructure, Part, PartKind,
    Span, MAX_DEPTH, MAX_PARTS,
};

impl MessageStructure {
    /// Parses a stored message. Total: any bytes give a structure.
    pub fn parse(raw: &[u8]) -> MessageStructure {
        let mut builder = Builder {
            raw,
            budget: MAX_PARTS,
        };
        let message = builder.message(
            Span {
                start: 0,
                end: raw.len(),
            },
            0,
        );
        MessageStructure {
            message,
            raw_len: raw.len(),
        }
    }
}

/// What a part without Content-Type is (RFC 2046 5.1.5: in a
/// multipart/digest it is message/rfc822).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Implicit {
    TextPlain,
    MessageRfc822,
}

struct Builder<'a> {
    raw: &'a [u8],
    /// Parts still allowed to be described (`MAX_PARTS`).
    budget: usize,
}

impl Builder<'_> {
    fn message(&mut self, span: Span, depth: usize) -> Message {
        let root = self.entity(span, depth, Implicit::TextPlain);
        let envelope = envelope(self.raw, root.header);
        Message { envelope, root }
    }

    /// One entity in `span`: its header, its body, and below it.
    fn entity(&mut self, span: Span, depth: usize, default: Implicit) -> Part {
        self.budget = self.budget.saturating_sub(1);
        let raw = self.raw;
        let body_start = header::header_end(raw, span.start, span.end);
        let header = Span {
            start: span.start,
            end: body_start,
        };
        let body = Span {
            start: body_start,
            end: span.end,
        };

        let mut content_type = None;
        let mut encoding = None;
        let mut id = None;
        let mut description = None;
        let mut md5 = None;
        let mut disposition = None;
        let mut language = None;
        let mut location = None;
        for field in Fields::new(raw, header) {
            let slot = match field.name {
                n if n.eq_ignore_ascii_case(b"content-type") => &mut content_type,
                n if n.eq_ignore_ascii_case(b"content-transfer-encoding") => &mut encoding,
                n if n.eq_ignore_ascii_case(b"content-id") => &mut id,
                n if n.eq_ignore_ascii_case(b"content-description") => &mut description,
                n if n.eq_ignore_ascii_case(b"content-md5") => &mut md5,
                n if n.eq_ignore_ascii_case(b"content-disposition") => &mut disposition,
                n if n.eq_ignore_ascii_case(b"content-language") => &mut language,
                n if n.eq_ignore_ascii_case(b"content-location") => &mut location,
                _ => continue,
            };
            // The first of repeated fields counts.
            if slot.is_none() {
                *slot = Some(field.value);
            }
        }

        let parsed = content_type.and_then(|v| param::parse(&header::unfold(v), true));
        let (media_type, media_subtype, mut params) = match (parsed, default) {
            (Some(ct), _) => (ct.kind, ct.subtype, ct.params),
            (None, Implicit::TextPlain) => (b"text".to_vec(), b"plain".to_vec(), Vec::new()),
            (None, Implicit::MessageRfc822) => {
                (b"message".to_vec(), b"rfc822".to_vec(), Vec::new())
            }
        };
        let is = |t: &[u8], want: &str| t.eq_ignore_ascii_case(want.as_bytes());
        // RFC 2046 4.1.2: text defaults to US-ASCII; Dovecot spells it out.
        if is(&media_type, "text") && !params.iter().any(|p| is(&p.name, "charset")) {
            params.push(param::Param {
                name: b"charset".to_vec(),
                value: b"us-ascii".to_vec(),
            });
        }
        let encoding = encoding
            .map(header::unfold)
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| b"7bit".to_vec());
        let disposition = disposition
            .and_then(|v| param::parse(&header::unfold(v), false))
            .map(|d| Disposition {
                kind: d.kind,
                params: d.params,
            });
        let language = language
            .map(|v| {
                header::unfold(v)
                    .split(|&b| b == b',')
                    .map(|t| header::trim(t).to_vec())
                    .filter(|t| !t.is_empty())
                    .take(param::MAX_PARAMS)
                    .collect()
            })
            .unwrap_or_default();
        let lines = memchr::memchr_iter(b'\n', body.get(raw).unwrap_or_default()).count() as u64;

        let mut part = Part {
            header,
            body,
            media_type,
            media_subtype,
            params,
            id: id.map(header::unfold),
            description: description.map(header::unfold),
            encoding,
            md5: md5.map(header::unfold),
            disposition,
            language,
            location: location.map(header::unfold),
            lines,
            kind: PartKind::Leaf,
        };

        let multipart = is(&part.media_type, "multipart");
        // RFC 2046 5.2.1: message/rfc822 is 7bit, 8bit or binary; encoded,
        // it is opaque (Dovecot agrees).
        let rfc822 = is(&part.media_type, "message")
            && is(&part.media_subtype, "rfc822")
            && ["7bit", "8bit", "binary"]
                .iter()
                .any(|e| is(&part.encoding, e));
        if !(multipart || rfc822) {
            return part;
        }
        if depth >= MAX_DEPTH || self.budget == 0 {
            part.media_type = b"application".to_vec();
            part.media_subtype = b"octet-stream".to_vec();
            part.params.clear();
            return part;
        }
        if rfc822 {
            let inner = self.message(body, depth + 1);
            part.kind = PartKind::Message(Box::new(inner));
            return part;
        }
        let child_default = if is(&part.media_subtype, "digest") {
            Implicit::MessageRfc822
        } else {
            Implicit::TextPlain
        };
        let boundary = part
            .param("boundary")
            .map(|p| p.value.clone())
            .filter(|b| !b.is_empty());
        let spans = match boundary {
            Some(b) => split(raw, body, &b, self.budget),
            // Dovecot: a multipart without boundary has no parts.
            None => Vec::new(),
        };
        let children = spans
            .into_iter()
            .map(|s| self.entity(s, depth + 1, child_default))
            .collect();
        part.kind = PartKind::Multipart(children);
        part
    }
}

/// RFC 2046 5.1.1: the body parts of a multipart body, each without the
/// line end before the next delimiter (that line end belongs to the
/// delimiter). The preamble and epilogue are dropped. Without a close
/// delimiter the last part runs to the end of `body`. At most `budget`
/// parts; the last one then runs on to the end.
///
/// A delimiter line is `--boundary` at the start of a line followed by
/// only blanks (transport padding), or by `--` for the close delimiter.
/// Requiring that, rather than a prefix match, keeps an outer boundary
/// that extends an inner one (`abc`, `abcdef`) from cutting the inner parts.
///
/// Where an inner close delimiter is followed directly by an outer
/// delimiter (`--in--` CRLF `--out`), the one CRLF between them belongs to
/// the outer delimiter, as RFC 2046's grammar has it, so the inner part
/// ends at `--in--`. Dovecot counts that CRLF into a message/rfc822 part
/// (its sizes are 2 larger there); both agree with their own `BODY[n]`.
fn split(raw: &[u8], body: Span, boundary: &[u8], budget: usize) -> Vec<Span> {
    let Some(text) = body.get(raw) else {
        return Vec::new();
    };
    let mut dash = Vec::with_capacity(boundary.len() + 2);
    dash.extend_from_slice(b"--");
    dash.extend_from_slice(boundary);

    let mut parts = Vec::new();
    // Start of the current part (after a delimiter line), relative to `text`.
    let mut open: Option<usize> = None;
    for at in memmem::find_iter(text, &dash) {
        if at > 0 && text[at - 1] != b'\n' {
            continue;
        }
        let rest_start = at + dash.len();
        let line_end =
            memchr::memchr(b'\n', &text[rest_start..]).map_or(text.len(), |i| rest_start + i + 1);
        let rest = header::trim_line_end(&text[rest_start..line_end]);
        let close = rest.starts_with(b"--");
        if !close && !rest.iter().all(|&b| b == b' ' || b == b'\t') {
            continue;
        }
        if let Some(start) = open {
            if parts.len() + 1 >= budget {
                // Out of parts: this one runs on to the end.
                break;
            }
            // The line end before the delimiter belongs to it.
            let mut end = at;
            if end > start && text[end - 1] == b'\n' {
                end -= 1;
                if end > start && text[end - 1] == b'\r' {
                    end -= 1;
                }
            }
            parts.push((start, end.max(start)));
        }
        if close {
            open = None;
            break;
        }
        open = Some(line_end);
    }
    if let Some(start) = open {
        parts.push((start, text.len()));
    }
    parts
        .into_iter()
        .map(|(s, e)| Span {
            start: body.start + s,
            end: body.start + e,
        })
        .collect()
}

/// The ENVELOPE of the message whose header block is `header`.
fn envelope(raw: &[u8], header: Span) -> Envelope {
    let text = |name: &str| header::first(raw, header, name).map(header::unfold);
    let addresses = |name: &str| {
        header::first(raw, header, name)
            .map(|v| address::parse_list(&header::unfold(v)))
            .unwrap_or_default()
    };
    let from = addresses("from");
    // RFC 3501 7.4.2: absent or empty Sender and Reply-To default to From.
    let or_from = |list: Vec<Address>| if list.is_empty() { from.clone() } else { list };
    Envelope {
        date: text("date"),
        subject: text("subject"),
        sender: or_from(addresses("sender")),
        reply_to: or_from(addresses("reply-to")),
        to: addresses("to"),
        cc: addresses("cc"),
        bcc: addresses("bcc"),
        in_reply_to: text("in-reply-to"),
        message_id: text("message-id"),
        from,
    }
}
