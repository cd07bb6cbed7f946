//! The RFC5322.From domain of a message: the one From field of its header
//! section, its mailboxes' domains (comments and quoted strings skipped),
//! as an ASCII (A-label) lower-case name. Pure byte work; it refuses to
//! guess when the field is missing, repeated, or names several domains.

/// The domain every mailbox of the message's single From field is at,
/// lower-case and in A-labels (RFC 6376 3.5 `d=` is a domain name; RFC
/// 8616 3.2: internationalized names are signed in A-label form). `None`
/// when there is no From field or more than one (RFC 5322 3.6 allows
/// exactly one), when a mailbox has no domain (a group with no members)
/// or a domain literal, or when the mailboxes are at different domains:
/// no one key could speak for them all.
pub fn from_domain(message: &[u8]) -> Option<String> {
    let mut from = None;
    for (name, value) in fields(message) {
        if name.trim_ascii_end().eq_ignore_ascii_case(b"From") {
            if from.is_some() {
                return None;
            }
            from = Some(value);
        }
    }
    let mut domain: Option<String> = None;
    for mailbox in mailboxes(from?) {
        let found = mailbox_domain(&mailbox)?;
        match &domain {
            Some(d) if *d != found => return None,
            Some(_) => {}
            None => domain = Some(found),
        }
    }
    domain
}

/// The header section's fields as (name, value): the value from after
/// the colon to the field's last line end, continuation lines included.
/// A line without a colon (not a field) is skipped; the section ends at
/// the first empty line.
pub(crate) fn fields(message: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    let mut pos = 0;
    std::iter::from_fn(move || loop {
        if pos >= message.len() || message[pos..].starts_with(b"\r\n") || message[pos] == b'\n' {
            return None;
        }
        let start = pos;
        pos = line_end(message, pos);
        while pos < message.len() && matches!(message[pos], b' ' | b'\t') {
            pos = line_end(message, pos);
        }
        let field = &message[start..pos];
        if let Some(colon) = memchr::memchr(b':', field) {
            return Some((&field[..colon], &field[colon + 1..]));
        }
    })
}

/// The index just past the line starting at `pos` (its LF, or the end).
fn line_end(buf: &[u8], pos: usize) -> usize {
    memchr::memchr(b'\n', &buf[pos..]).map_or(buf.len(), |k| pos + k + 1)
}

/// The field value with comments and quoted strings removed (their
/// content can hold `@`, `,` and `<`), folding undone, split at the
/// commas between mailboxes; a group's `name:` and `;` are dropped.
fn mailboxes(value: &[u8]) -> Vec<Vec<u8>> {
    let mut out = vec![Vec::new()];
    let mut depth = 0usize; // comment nesting
    let mut quoted = false;
    let mut escaped = false;
    for &b in value {
        if escaped {
            escaped = false;
            continue;
        }
        match b {
            b'\\' if quoted || depth > 0 => escaped = true,
            b'"' if depth == 0 => quoted = !quoted,
            _ if quoted => {}
            b'(' => depth += 1,
            b')' if depth > 0 => depth -= 1,
            _ if depth > 0 => {}
            b',' => out.push(Vec::new()),
            // A group: `name: a@x, b@y;`. What came before the colon is
            // the group's name, unless we are inside an angle address.
            b':' if !out.last().is_some_and(|m| m.contains(&b'<')) => {
                if let Some(last) = out.last_mut() {
                    last.clear();
                }
            }
            b';' => {}
            b'\r' | b'\n' => {}
            _ => {
                if let Some(last) = out.last_mut() {
                    last.push(b);
                }
            }
        }
    }
    out.retain(|m| !m.trim_ascii().is_empty());
    out
}

/// The domain of one mailbox: of its angle address when it has one, else
/// of the bare addr-spec.
fn mailbox_domain(mailbox: &[u8]) -> Option<String> {
    let spec = match memchr::memrchr(b'<', mailbox) {
        Some(open) => {
            let rest = &mailbox[open + 1..];
            &rest[..memchr::memchr(b'>', rest)?]
        }
        None => mailbox,
    };
    let at = memchr::memrchr(b'@', spec)?;
    let domain = std::str::from_utf8(spec[at + 1..].trim_ascii()).ok()?;
    let domain = domain.trim_end_matches('.');
    if domain.is_empty() || domain.starts_with('[') {
        return None;
    }
    let ascii = idna::domain_to_ascii(domain).ok()?;
    (!ascii.is_empty()).then_some(ascii)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn domain(from: &str) -> Option<String> {
        from_domain(format!("Received: x\r\n\ty\r\nFrom:{from}\r\nTo: a@b.test\r\n\r\nbody\r\nFrom: x@evil.test\r\n").as_bytes())
    }

    #[test]
    fn the_from_domain_is_found_in_every_address_form() {
        for (from, want) in [
            (" a@Example.COM", "example.com"),
            (" <a@example.com>", "example.com"),
            (" Alice <alice@example.com>", "example.com"),
            (
                " \"Smith, J. <j@evil.test>\" <j@example.com>",
                "example.com",
            ),
            (
                " (comment a@evil.test) a@example.com (more, <x@evil.test>)",
                "example.com",
            ),
            (" a@example.com, b@EXAMPLE.com", "example.com"),
            (" Team: a@example.com, b@example.com;", "example.com"),
            (" \"a\\\"@evil.test\"@example.com", "example.com"),
            ("\r\n Folded Name\r\n <a@example.com.>", "example.com"),
            (
                " =?utf-8?q?Caf=C3=A9?= <a@b\u{fc}cher.example>",
                "xn--bcher-kva.example",
            ),
            (" <@route.test:a@example.com>", "example.com"),
        ] {
            assert_eq!(domain(from).as_deref(), Some(want), "{from:?}");
        }
    }

    #[test]
    fn no_domain_when_it_is_missing_ambiguous_or_repeated() {
        for from in [
            " undisclosed-recipients:;",
            " a@example.com, b@other.test",
            " a@[192.0.2.1]",
            " nobody",
            "",
            " <>",
        ] {
            assert_eq!(domain(from), None, "{from:?}");
        }
        assert_eq!(from_domain(b"To: a@b.test\r\n\r\nFrom: a@b.test\r\n"), None);
        assert_eq!(
            from_domain(b"From: a@b.test\r\nfrom : c@b.test\r\n\r\n"),
            None,
            "two From fields"
        );
    }
}
