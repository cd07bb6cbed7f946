//! Text as a reader sees it, for SEARCH: header values with RFC 2047
//! encoded words decoded, body parts with their transfer encoding
//! (base64, quoted-printable) undone and their charset made UTF-8. It is
//! lenient (bad input decodes to something, never fails) and knows only
//! the charsets mail mostly uses: UTF-8, US-ASCII, ISO-8859-1 and
//! Windows-1252 (as Latin-1); others are read as UTF-8 with replacement.

use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine as _;

use super::{Message, Part, PartKind};

const BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// A header value (already unfolded) with its encoded words decoded (RFC
/// 2047 6.2: white space between two encoded words is dropped).
pub fn header_text(value: &[u8]) -> String {
    let mut out = String::new();
    let mut rest = value;
    let mut after_word = false;
    while !rest.is_empty() {
        match find_encoded_word(rest) {
            Some((start, end, decoded)) => {
                let gap = &rest[..start];
                if !(after_word && gap.iter().all(|b| b.is_ascii_whitespace())) {
                    out.push_str(&String::from_utf8_lossy(gap));
                }
                out.push_str(&decoded);
                rest = &rest[end..];
                after_word = true;
            }
            None => {
                out.push_str(&String::from_utf8_lossy(rest));
                break;
            }
        }
    }
    out
}

/// The first `=?charset?enc?text?=` in `s`: its start, end and text.
fn find_encoded_word(s: &[u8]) -> Option<(usize, usize, String)> {
    let mut from = 0;
    while let Some(pos) = memchr::memmem::find(&s[from..], b"=?") {
        let start = from + pos;
        if let Some((end, text)) = encoded_word_at(s, start) {
            return Some((start, end, text));
        }
        from = start + 2;
    }
    None
}

fn encoded_word_at(s: &[u8], start: usize) -> Option<(usize, String)> {
    let body = &s[start + 2..];
    let q1 = body.iter().position(|&b| b == b'?')?;
    let charset = std::str::from_utf8(&body[..q1]).ok()?;
    let charset = charset.split('*').next().unwrap_or(charset); // RFC 2231 language
    let enc = *body.get(q1 + 1)?;
    if body.get(q1 + 2) != Some(&b'?') {
        return None;
    }
    let text_start = q1 + 3;
    let text_len = memchr::memmem::find(&body[text_start..], b"?=")?;
    let text = &body[text_start..text_start + text_len];
    if text.iter().any(|b| b.is_ascii_whitespace()) {
        return None;
    }
    let bytes = match enc.to_ascii_uppercase() {
        b'B' => BASE64.decode(text).ok()?,
        b'Q' => quoted_printable(text, true),
        _ => return None,
    };
    Some((
        start + 2 + text_start + text_len + 2,
        to_utf8(&bytes, charset),
    ))
}

/// The decoded text of every leaf part of `message`, in order (the
/// bodies of encapsulated messages too, with their headers).
pub fn body_texts(raw: &[u8], message: &Message) -> Vec<String> {
    let mut out = Vec::new();
    collect(raw, &message.root, &mut out);
    out
}

fn collect(raw: &[u8], part: &Part, out: &mut Vec<String>) {
    match &part.kind {
        PartKind::Multipart(parts) => parts.iter().for_each(|p| collect(raw, p, out)),
        PartKind::Message(inner) => {
            let header = &raw[inner.root.header.start..inner.root.header.end];
            out.push(header_text(header));
            collect(raw, &inner.root, out);
        }
        PartKind::Leaf => {
            let body = &raw[part.body.start..part.body.end.min(raw.len())];
            let bytes = match part.encoding.to_ascii_lowercase().as_slice() {
                b"base64" => {
                    let clean: Vec<u8> = body
                        .iter()
                        .copied()
                        .filter(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/'))
                        .collect();
                    // A lone trailing character makes no byte: dropped.
                    let whole = clean.len() - usize::from(clean.len() % 4 == 1);
                    BASE64.decode(&clean[..whole]).unwrap_or_default()
                }
                b"quoted-printable" => quoted_printable(body, false),
                _ => body.to_vec(),
            };
            let charset = part
                .params
                .iter()
                .find(|p| p.name.eq_ignore_ascii_case(b"charset"))
                .map(|p| p.decoded())
                .unwrap_or_default();
            out.push(to_utf8(&bytes, &charset));
        }
    }
}

/// RFC 2045 6.7 (and RFC 2047 4.2 with `underscore_is_space`): `=XX`
/// escapes, soft line breaks; bad escapes are kept as they are.
fn quoted_printable(s: &[u8], underscore_is_space: bool) -> Vec<u8> {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        match s[i] {
            b'=' if s[i + 1..].starts_with(b"\r\n") => i += 3,
            b'=' if s[i + 1..].starts_with(b"\n") => i += 2,
            b'=' if i + 2 < s.len() => match (hex(s[i + 1]), hex(s[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 3;
                }
                _ => {
                    out.push(b'=');
                    i += 1;
                }
            },
            b'_' if underscore_is_space => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    out
}

/// `bytes` in `charset` as UTF-8.
fn to_utf8(bytes: &[u8], charset: &str) -> String {
    let latin1 = [
        "iso-8859-1",
        "iso8859-1",
        "latin1",
        "latin-1",
        "windows-1252",
        "cp1252",
    ];
    if latin1.iter().any(|c| charset.eq_ignore_ascii_case(c)) {
        bytes.iter().map(|&b| char::from(b)).collect()
    } else {
        String::from_utf8_lossy(bytes).into_owned()
    }
}

/// Case-insensitive (Unicode simple lowercase) substring test.
pub fn contains_text(haystack: &str, needle: &str) -> bool {
    needle.is_empty() || haystack.to_lowercase().contains(&needle.to_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::imap::mime::MessageStructure;

    #[test]
    fn encoded_words_in_headers() {
        assert_eq!(
            header_text(b"=?UTF-8?B?R3LDvMOfZQ==?= aus Bern"),
            "Grüße aus Bern"
        );
        assert_eq!(
            header_text(b"=?iso-8859-1?q?caf=E9_cr=E8me?="),
            "café crème"
        );
        assert_eq!(
            header_text(b"=?utf-8?q?a?= =?utf-8?q?b?="),
            "ab",
            "space between words dropped"
        );
        assert_eq!(header_text(b"plain =?x?y?z"), "plain =?x?y?z");
        assert_eq!(header_text(b"=?utf-8?B?!!!?= ok"), "=?utf-8?B?!!!?= ok");
    }

    #[test]
    fn bodies_decoded_by_part() {
        let raw = b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\
Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n\
w6RwZmVsIHVuZCBCaXJuZW4=\r\n--b\r\n\
Content-Type: text/plain; charset=iso-8859-1\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n\
K=E4se und Brot=\r\n mit Butter\r\n--b--\r\n";
        let s = MessageStructure::parse(raw);
        let texts = body_texts(raw, &s.message);
        assert_eq!(texts[0], "äpfel und Birnen");
        assert_eq!(texts[1], "Käse und Brot mit Butter");
        assert!(contains_text(&texts[0], "ÄPFEL"));
    }

    #[test]
    fn quoted_printable_edges() {
        assert_eq!(quoted_printable(b"a=3Db=", false), b"a=b=");
        assert_eq!(quoted_printable(b"x=zz", false), b"x=zz");
        assert_eq!(quoted_printable(b"a_b", true), b"a b");
    }
}
