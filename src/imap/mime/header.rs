//! Finds the header block of a message or MIME part in the raw bytes and walks its fields,
//! with byte offsets; it refuses to interpret field values (see `param` and `address`).
//!
//! Line ends are taken as stored: CRLF or a bare LF both end a line, so a
//! message kept with LF-only line ends is split at the same places as its
//! CRLF twin, and every offset points into the bytes actually stored.

use memchr::memchr;

use super::Span;

/// Where a header block ends inside `raw[start..end]`: the returned offset is
/// the first byte of the body. The header span `start..returned` includes
/// the empty line that ends it (IMAP's BODY[HEADER] includes it too,
/// RFC 3501 6.4.5). Without an empty line everything is header and the body
/// is empty.
pub(crate) fn header_end(raw: &[u8], start: usize, end: usize) -> usize {
    let mut line = start;
    while line < end {
        let next = match memchr(b'\n', &raw[line..end]) {
            Some(i) => line + i + 1,
            None => end,
        };
        let content = trim_line_end(&raw[line..next]);
        if content.is_empty() {
            return next;
        }
        line = next;
    }
    end
}

/// The bytes of a line without its trailing LF or CRLF.
pub(crate) fn trim_line_end(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// One header field as stored: `span` covers the name, the colon, the value
/// and every continuation line with their line ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Field<'a> {
    /// The field name, trailing blanks removed; empty for a continuation
    /// line that had no field before it. A line without a colon is a field
    /// whose name is the whole line and whose value is empty.
    pub name: &'a [u8],
    /// Everything after the colon, folded as stored, without the final line end.
    pub value: &'a [u8],
    pub span: Span,
}

/// Walks the fields of the header block `raw[span]`, stopping at the empty line.
pub(crate) struct Fields<'a> {
    raw: &'a [u8],
    pos: usize,
    end: usize,
}

impl<'a> Fields<'a> {
    pub(crate) fn new(raw: &'a [u8], span: Span) -> Self {
        let end = span.end.min(raw.len());
        Fields {
            raw,
            pos: span.start.min(end),
            end,
        }
    }

    /// The end of the line starting at `pos`, after its LF.
    fn line_end(&self, pos: usize) -> usize {
        match memchr(b'\n', &self.raw[pos..self.end]) {
            Some(i) => pos + i + 1,
            None => self.end,
        }
    }
}

impl<'a> Iterator for Fields<'a> {
    type Item = Field<'a>;

    fn next(&mut self) -> Option<Field<'a>> {
        if self.pos >= self.end {
            return None;
        }
        let start = self.pos;
        let mut next = self.line_end(start);
        if trim_line_end(&self.raw[start..next]).is_empty() {
            // The empty line ending the header block.
            self.pos = self.end;
            return None;
        }
        // RFC 5322 2.2.3: a line starting with a blank continues the field.
        while next < self.end && matches!(self.raw[next], b' ' | b'\t') {
            next = self.line_end(next);
        }
        self.pos = next;
        let text = trim_line_end(&self.raw[start..next]);
        let leading_blank = matches!(text.first(), Some(b' ' | b'\t'));
        let (name, value): (&[u8], &[u8]) = match memchr(b':', text) {
            Some(colon) if !leading_blank => (trim_end(&text[..colon]), &text[colon + 1..]),
            _ if leading_blank => (&[], text),
            _ => (text, &[]),
        };
        Some(Field {
            name,
            value,
            span: Span { start, end: next },
        })
    }
}

/// The first field named `name` (ASCII case-insensitive) in a header block.
pub(crate) fn first<'a>(raw: &'a [u8], span: Span, name: &str) -> Option<&'a [u8]> {
    Fields::new(raw, span)
        .find(|f| f.name.eq_ignore_ascii_case(name.as_bytes()))
        .map(|f| f.value)
}

/// RFC 5322 2.2.3 unfolding (CR and LF removed), then blanks trimmed at both
/// ends. A tab that folded a line becomes a space, as Dovecot shows it.
/// NUL bytes are dropped too: no IMAP string may carry them.
pub(crate) fn unfold(value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(value.len());
    let mut after_lf = false;
    for &b in value {
        match b {
            b'\r' | 0 => {}
            b'\n' => after_lf = true,
            b'\t' if after_lf => {
                out.push(b' ');
                after_lf = false;
            }
            _ => {
                out.push(b);
                after_lf = false;
            }
        }
    }
    let trimmed = trim(&out);
    if trimmed.len() == out.len() {
        out
    } else {
        trimmed.to_vec()
    }
}

pub(crate) fn trim(s: &[u8]) -> &[u8] {
    trim_end(trim_start(s))
}

pub(crate) fn trim_start(s: &[u8]) -> &[u8] {
    let n = s.iter().take_while(|b| is_blank(**b)).count();
    &s[n..]
}

pub(crate) fn trim_end(s: &[u8]) -> &[u8] {
    let n = s.iter().rev().take_while(|b| is_blank(**b)).count();
    &s[..s.len() - n]
}

pub(crate) fn is_blank(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}
