//! Fuzz target of the MIME splitter behind ENVELOPE, BODYSTRUCTURE and `BODY[section]`: arbitrary
//! bytes as a stored message. Invariants: every part's header and body lie inside the message and
//! inside their parent, siblings in order, within the depth and part bounds; line counts match the
//! bytes; the structure survives its disk cache; ENVELOPE and BODYSTRUCTURE are balanced IMAP
//! syntax; sections are cut from the message; and the cache decoder takes any bytes without
//! panicking. It refuses to read mailboxes or run FETCH.

use std::borrow::Cow;

use crate::imap::mime::decode::{body_texts, header_text};
use crate::imap::mime::{
    partial, section_bytes, MessageStructure, Part, PartKind, Section, SectionPart, MAX_DEPTH,
    MAX_PARTS,
};

/// Header fields, boundaries and encodings for the mutator.
pub const TOKENS: &[&[u8]] = &[
    b"Content-Type: multipart/mixed; boundary=\"b1\"\r\n",
    b"Content-Type: multipart/digest; boundary=d\r\n",
    b"Content-Type: message/rfc822\r\n",
    b"Content-Type: text/plain; charset*0*=us-ascii'en'a%20b; charset*1=c\r\n",
    b"Content-Transfer-Encoding: base64\r\n",
    b"Content-Transfer-Encoding: quoted-printable\r\n",
    b"Content-Disposition: attachment; filename=\"a.txt\"\r\n",
    b"From: \"A\" <a@b.example>, group: c@d.example;\r\n",
    b"Subject: =?utf-8?B?w6k=?=\r\n",
    b"\r\n--b1\r\n",
    b"\r\n--b1--\r\n",
    b"--d\r\n",
    b"\r\n\r\n",
    b"\n\n",
    b"\r\n ",
    b"\r",
    b"\0",
    b"=\r\n",
    b"=C3=A9",
    b"\xc3\xa9",
];

/// See the module header.
pub fn mime_message(raw: &[u8]) {
    let structure = MessageStructure::parse(raw);
    assert_eq!(structure.raw_len, raw.len());
    let root = structure.root();
    assert_eq!(root.header.start, 0, "the root does not start the message");
    assert_eq!(
        root.body.end,
        raw.len(),
        "the root does not end the message"
    );
    let mut parts = 0;
    check_part(raw, root, 0, &mut parts);
    assert!(parts <= MAX_PARTS, "{parts} parts described");

    let cached = structure.to_cache_bytes();
    let back = MessageStructure::from_cache_bytes(&cached).expect("our own cache bytes decode");
    assert_eq!(back, structure, "the structure changed through the cache");

    let mut out = Vec::new();
    structure.write_envelope(&mut out);
    check_syntax(&out, "ENVELOPE");
    for extensible in [false, true] {
        out.clear();
        structure.write_body(&mut out, extensible);
        check_syntax(&out, "BODYSTRUCTURE");
    }

    let mut paths = Vec::new();
    collect_paths(root, &mut Vec::new(), &mut paths, true);
    paths.push(vec![0]);
    paths.push(vec![u32::MAX, 1]);
    for path in paths.iter().take(64) {
        for kind in [
            None,
            Some(SectionPart::Header),
            Some(SectionPart::Text),
            Some(SectionPart::Mime),
            Some(SectionPart::HeaderFields(vec![
                "subject".to_owned(),
                "CONTENT-TYPE".to_owned(),
            ])),
            Some(SectionPart::HeaderFieldsNot(vec!["from".to_owned()])),
        ] {
            let section = Section {
                part: path.clone(),
                kind,
            };
            let bytes = section_bytes(raw, &structure, &section);
            if let Cow::Borrowed(slice) = &bytes {
                let inside = slice.is_empty()
                    || (slice.as_ptr() >= raw.as_ptr()
                        && slice.as_ptr() as usize + slice.len()
                            <= raw.as_ptr() as usize + raw.len());
                assert!(inside, "section {section:?} is not cut from the message");
            }
            let len = bytes.len() as u64;
            assert_eq!(
                partial(&bytes, len / 3, 5).len() as u64,
                5.min(len - len / 3)
            );
            assert!(partial(&bytes, u64::MAX, u64::MAX).is_empty());
        }
    }

    let _ = body_texts(raw, &structure.message);
    if let Some(subject) = &structure.envelope().subject {
        let _ = header_text(subject);
    }

    // The cache decoder on bytes it never wrote.
    if let Ok(s) = MessageStructure::from_cache_bytes(raw) {
        let again = MessageStructure::from_cache_bytes(&s.to_cache_bytes());
        assert_eq!(
            again.as_ref(),
            Ok(&s),
            "a decoded cache entry does not round-trip"
        );
    }
}

/// Spans in order and nested; `parts` counts every part.
fn check_part(raw: &[u8], part: &Part, depth: usize, parts: &mut usize) {
    *parts += 1;
    assert!(depth <= MAX_DEPTH + 1, "nested {depth} deep");
    let (h, b) = (part.header, part.body);
    assert!(
        h.start <= h.end && h.end == b.start && b.start <= b.end && b.end <= raw.len(),
        "header {h:?} and body {b:?} of a part in {} bytes",
        raw.len()
    );
    let lines = memchr::memchr_iter(b'\n', &raw[b.start..b.end]).count() as u64;
    assert_eq!(part.lines, lines, "line count of the body {b:?}");
    match &part.kind {
        PartKind::Leaf => {}
        PartKind::Multipart(children) => {
            let mut at = b.start;
            for child in children {
                assert!(
                    child.header.start >= at && child.body.end <= b.end,
                    "body part {:?}..{:?} outside {at}..{}",
                    child.header,
                    child.body,
                    b.end
                );
                at = child.body.end;
                check_part(raw, child, depth + 1, parts);
            }
        }
        PartKind::Message(inner) => {
            assert_eq!(inner.root.header.start, b.start, "message/rfc822 start");
            assert_eq!(inner.root.body.end, b.end, "message/rfc822 end");
            check_part(raw, &inner.root, depth + 1, parts);
        }
    }
}

/// Part paths as FETCH names them (see `section`): a multipart's children
/// by number, a message's body as part 1 unless it is a multipart.
fn collect_paths(part: &Part, path: &mut Vec<u32>, out: &mut Vec<Vec<u32>>, message: bool) {
    if out.len() >= 64 {
        return;
    }
    out.push(path.clone());
    match &part.kind {
        PartKind::Multipart(children) => {
            for (i, child) in children.iter().enumerate().take(8) {
                path.push(i as u32 + 1);
                collect_paths(child, path, out, false);
                path.pop();
            }
        }
        PartKind::Message(inner) => {
            if !matches!(inner.root.kind, PartKind::Multipart(_)) {
                path.push(1);
                out.push(path.clone());
                path.pop();
            }
            collect_paths(&inner.root, path, out, true);
        }
        PartKind::Leaf if message => {
            path.push(1);
            out.push(path.clone());
            path.pop();
        }
        PartKind::Leaf => {}
    }
}

/// Balanced parentheses, quoted strings with only `\"` and `\\` escapes
/// and no CR, LF, NUL or 8-bit octet inside, literals of the announced
/// length, NIL, numbers and atoms between them: RFC 3501 9 syntax.
fn check_syntax(out: &[u8], what: &str) {
    let shown = || String::from_utf8_lossy(out).into_owned();
    let mut depth = 0usize;
    let mut i = 0;
    while i < out.len() {
        match out[i] {
            b'(' => {
                depth += 1;
                i += 1;
            }
            b')' => {
                assert!(depth > 0, "{what}: unbalanced ')' in {:?}", shown());
                depth -= 1;
                i += 1;
                assert!(
                    matches!(out.get(i), None | Some(b' ' | b')' | b'(')),
                    "{what}: ')' followed by {:?} in {:?}",
                    out.get(i).map(|&b| b as char),
                    shown()
                );
            }
            b' ' => {
                assert!(
                    !matches!(out.get(i + 1), None | Some(b' ' | b')')),
                    "{what}: stray space in {:?}",
                    shown()
                );
                i += 1;
            }
            b'"' => {
                i += 1;
                loop {
                    match out.get(i) {
                        Some(b'"') => break,
                        Some(b'\\') => {
                            assert!(
                                matches!(out.get(i + 1), Some(b'"' | b'\\')),
                                "{what}: bad escape in {:?}",
                                shown()
                            );
                            i += 2;
                        }
                        Some(&b) => {
                            assert!(
                                b != b'\r' && b != b'\n' && b != 0 && b < 0x80,
                                "{what}: octet {b:#x} in a quoted string in {:?}",
                                shown()
                            );
                            i += 1;
                        }
                        None => panic!("{what}: unterminated quoted string in {:?}", shown()),
                    }
                }
                i += 1;
            }
            b'{' => {
                let close = out[i..]
                    .iter()
                    .position(|&b| b == b'}')
                    .map(|k| i + k)
                    .unwrap_or_else(|| panic!("{what}: unterminated literal in {:?}", shown()));
                let n: usize = std::str::from_utf8(&out[i + 1..close])
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or_else(|| panic!("{what}: bad literal length in {:?}", shown()));
                assert_eq!(
                    out.get(close + 1..close + 3),
                    Some(&b"\r\n"[..]),
                    "{what}: literal without CRLF"
                );
                let data = out
                    .get(close + 3..close + 3 + n)
                    .unwrap_or_else(|| panic!("{what}: literal past the end in {:?}", shown()));
                assert!(!data.contains(&0), "{what}: NUL in a literal");
                i = close + 3 + n;
            }
            b if b.is_ascii_alphanumeric() || b == b'-' || b == b'.' => {
                while out
                    .get(i)
                    .is_some_and(|b| b.is_ascii_alphanumeric() || b"-.".contains(b))
                {
                    i += 1;
                }
            }
            b => panic!(
                "{what}: unexpected octet {:?} at {i} in {:?}",
                b as char,
                shown()
            ),
        }
    }
    assert_eq!(depth, 0, "{what}: unbalanced '(' in {:?}", shown());
    assert!(
        out.first() == Some(&b'(') && out.last() == Some(&b')'),
        "{what}: not a parenthesized list"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_multipart_with_a_message_passes() {
        mime_message(
            b"From: a@b.example\r\nSubject: s\r\nContent-Type: multipart/mixed; boundary=o\r\n\r\n\
              pre\r\n--o\r\nContent-Type: text/plain\r\n\r\nhi\r\n--o\r\n\
              Content-Type: message/rfc822\r\n\r\nSubject: in\r\nContent-Type: multipart/alternative; \
              boundary=i\r\n\r\n--i\r\n\r\nx\r\n--i--\r\n--o--\r\nepilogue",
        );
    }
}
