//! The tenant header: found in a received message's header section, its
//! value taken as the tenant's name, and every occurrence removed (folded
//! lines included) so that it never leaves. Pure byte work on the message
//! buffer; it never looks past the header section.

/// The longest tenant name taken; a longer value names no tenant (the
/// header is removed all the same).
pub const MAX_TENANT: usize = 128;

/// Removes every `name:` field (any case) from the header section of
/// `message` and returns the first one's value, unfolded and trimmed, if
/// it is a usable name (1 to [`MAX_TENANT`] printable ASCII characters).
/// The message is left untouched when no such field is there.
pub fn take_header(message: &mut Vec<u8>, name: &str) -> Option<String> {
    let mut remove: Vec<(usize, usize)> = Vec::new();
    let mut value: Option<Option<String>> = None;
    let mut pos = 0;
    while pos < message.len() {
        let end = line_end(message, pos);
        let line = &message[pos..end];
        if line == b"\r\n" || line == b"\n" {
            break; // the end of the header section
        }
        // The field and its continuation lines.
        let mut field_end = end;
        while field_end < message.len() && matches!(message[field_end], b' ' | b'\t') {
            field_end = line_end(message, field_end);
        }
        if let Some(colon) = field_value_start(&message[pos..field_end], name) {
            if value.is_none() {
                value = Some(tenant_name(&message[pos + colon..field_end]));
            }
            remove.push((pos, field_end));
        }
        pos = field_end;
    }
    if remove.is_empty() {
        return None;
    }
    cut(message, &remove);
    value.flatten()
}

/// The index just past the line starting at `pos` (its LF, or the end).
fn line_end(buf: &[u8], pos: usize) -> usize {
    memchr::memchr(b'\n', &buf[pos..]).map_or(buf.len(), |k| pos + k + 1)
}

/// Where the value starts when `field` is a `name:` field (obsolete
/// syntax allows blanks before the colon).
fn field_value_start(field: &[u8], name: &str) -> Option<usize> {
    let head = field.get(..name.len())?;
    if !head.eq_ignore_ascii_case(name.as_bytes()) {
        return None;
    }
    let rest = &field[name.len()..];
    let blanks = rest
        .iter()
        .take_while(|&&b| b == b' ' || b == b'\t')
        .count();
    (rest.get(blanks) == Some(&b':')).then_some(name.len() + blanks + 1)
}

/// A field's value as a tenant name: unfolded, trimmed, checked.
fn tenant_name(raw: &[u8]) -> Option<String> {
    let unfolded: Vec<u8> = raw
        .iter()
        .copied()
        .filter(|&b| b != b'\r' && b != b'\n')
        .map(|b| if b == b'\t' { b' ' } else { b })
        .collect();
    let text = std::str::from_utf8(&unfolded).ok()?.trim();
    let good = !text.is_empty()
        && text.len() <= MAX_TENANT
        && text.bytes().all(|b| b.is_ascii_graphic() || b == b' ');
    good.then(|| text.to_owned())
}

/// Removes the sorted, disjoint `ranges` from `buf` in one pass.
fn cut(buf: &mut Vec<u8>, ranges: &[(usize, usize)]) {
    let mut write = ranges[0].0;
    for (i, &(_, end)) in ranges.iter().enumerate() {
        let next = ranges.get(i + 1).map_or(buf.len(), |r| r.0);
        buf.copy_within(end..next, write);
        write += next - end;
    }
    buf.truncate(write);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn take(message: &str) -> (Option<String>, String) {
        let mut buf = message.as_bytes().to_vec();
        let tenant = take_header(&mut buf, "X-Tenant");
        (tenant, String::from_utf8(buf).unwrap())
    }

    #[test]
    fn the_header_is_taken_and_removed_everywhere_in_the_header_section() {
        let (tenant, rest) = take(
            "Received: from a\r\n\tby b\r\nx-tenant: Acme \r\nSubject: hi\r\nX-TENANT : other\r\n  folded\r\n\r\nX-Tenant: in the body\r\n",
        );
        assert_eq!(tenant.as_deref(), Some("Acme"));
        assert_eq!(
            rest,
            "Received: from a\r\n\tby b\r\nSubject: hi\r\n\r\nX-Tenant: in the body\r\n"
        );
        let (tenant, rest) = take("X-Tenant: big\r\n corp\r\nSubject: x\r\n\r\nbody");
        assert_eq!(tenant.as_deref(), Some("big corp"));
        assert_eq!(rest, "Subject: x\r\n\r\nbody");
    }

    #[test]
    fn other_fields_and_bodies_are_left_alone() {
        for message in [
            "Subject: x\r\n\r\nX-Tenant: body\r\n",
            "X-Tenants: no\r\nX-Tenant-Id: no\r\n\r\n",
            "",
            "Subject: no end of headers",
        ] {
            let (tenant, rest) = take(message);
            assert_eq!(tenant, None);
            assert_eq!(rest, message);
        }
    }

    #[test]
    fn an_unusable_value_names_no_tenant_but_is_removed() {
        let long = format!("X-Tenant: {}\r\nA: b\r\n\r\n", "t".repeat(MAX_TENANT + 1));
        assert_eq!(take(&long), (None, "A: b\r\n\r\n".to_owned()));
        assert_eq!(take("X-Tenant:   \r\n\r\n"), (None, "\r\n".to_owned()));
        assert_eq!(take("X-Tenant: caf\u{e9}\r\n\r\n").0, None);
        // The last line of a message without a body.
        assert_eq!(
            take("A: b\r\nX-Tenant: t"),
            (Some("t".into()), "A: b\r\n".into())
        );
    }
}
