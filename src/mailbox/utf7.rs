//! Modified UTF-7 (RFC 3501 section 5.1.3), the on-disk form of folder
//! names, as Dovecot and Courier store them; it knows nothing about
//! hierarchy separators or which names are allowed (see `name`).

/// The modified base64 alphabet: `,` replaces `/`, and there is no padding.
const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+,";

/// Encodes UTF-8 text. Printable US-ASCII stands for itself (`&` becomes
/// `&-`); every run of other characters becomes `&<base64 of UTF-16>-`.
pub fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut run: Vec<u16> = Vec::new();
    for c in text.chars() {
        if (' '..='~').contains(&c) {
            flush(&mut run, &mut out);
            if c == '&' {
                out.push_str("&-");
            } else {
                out.push(c);
            }
        } else {
            let mut units = [0u16; 2];
            run.extend_from_slice(c.encode_utf16(&mut units));
        }
    }
    flush(&mut run, &mut out);
    out
}

/// Writes one shifted run `&...-` and empties it.
fn flush(run: &mut Vec<u16>, out: &mut String) {
    if run.is_empty() {
        return;
    }
    let bytes: Vec<u8> = run.iter().flat_map(|u| u.to_be_bytes()).collect();
    out.push('&');
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        let sextets = chunk.len() + 1;
        for i in 0..sextets {
            out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
        }
    }
    out.push('-');
    run.clear();
}

/// Decodes modified UTF-7; `None` when the text is not the canonical
/// encoding of some string (so every on-disk name maps to exactly one name
/// and back).
pub fn decode(text: &str) -> Option<String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(pos) = rest.find('&') {
        let plain = &rest[..pos];
        if !plain.chars().all(|c| (' '..='~').contains(&c)) {
            return None;
        }
        out.push_str(plain);
        let after = &rest[pos + 1..];
        let end = after.find('-')?;
        let shifted = &after[..end];
        if shifted.is_empty() {
            out.push('&');
        } else {
            out.push_str(&decode_run(shifted)?);
        }
        rest = &after[end + 1..];
    }
    if !rest.chars().all(|c| (' '..='~').contains(&c)) {
        return None;
    }
    out.push_str(rest);
    (encode(&out) == text).then_some(out)
}

/// Decodes the base64 between `&` and `-` into UTF-16 and then text.
fn decode_run(shifted: &str) -> Option<String> {
    let mut bits: u32 = 0;
    let mut nbits = 0;
    let mut bytes = Vec::with_capacity(shifted.len());
    for b in shifted.bytes() {
        let v = ALPHABET.iter().position(|&a| a == b)? as u32;
        bits = bits << 6 | v;
        nbits += 6;
        if nbits >= 8 {
            nbits -= 8;
            bytes.push((bits >> nbits) as u8);
            bits &= (1 << nbits) - 1;
        }
    }
    if bytes.len() % 2 != 0 {
        return None;
    }
    let units: Vec<u16> = bytes
        .chunks(2)
        .map(|p| u16::from_be_bytes([p[0], p[1]]))
        .collect();
    let text = String::from_utf16(&units).ok()?;
    // A shifted run that only holds printable ASCII is not canonical.
    if text.chars().any(|c| (' '..='~').contains(&c)) {
        return None;
    }
    Some(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3501_example() {
        // RFC 3501 5.1.3: "~peter/mail/台北/日本語"
        let name = "~peter/mail/\u{53f0}\u{5317}/\u{65e5}\u{672c}\u{8a9e}";
        assert_eq!(encode(name), "~peter/mail/&U,BTFw-/&ZeVnLIqe-");
        assert_eq!(decode("~peter/mail/&U,BTFw-/&ZeVnLIqe-").unwrap(), name);
    }

    #[test]
    fn ampersand_and_round_trips() {
        assert_eq!(encode("A&B"), "A&-B");
        assert_eq!(decode("A&-B").unwrap(), "A&B");
        for s in ["Entwürfe", "Gelöschte Elemente", "😀 x", "é&ü", "plain"] {
            assert_eq!(decode(&encode(s)).unwrap(), s, "{s}");
        }
    }

    #[test]
    fn rejects_non_canonical_and_broken() {
        assert_eq!(decode("&AGE-"), None); // "a" shifted
        assert_eq!(decode("&U,BTFw"), None); // unterminated
        assert_eq!(decode("&!!-"), None);
        assert_eq!(decode("caf\u{e9}"), None); // raw 8-bit
    }
}
