//! SASL mechanism codecs shared by the SMTP, POP3 and IMAP cores: strict base64 (RFC 4648 4),
//! the PLAIN message (RFC 4616) and the LOGIN prompts. It refuses to verify credentials, keep
//! state between steps or know which protocol carries the exchange.
//!
//! Base64 is strict as RFC 5034 4 and RFC 4954 4 require: characters outside
//! the alphabet, missing or misplaced padding ("=AAA", "AAA=BBB") and
//! non-zero trailing bits are refused, never skipped.

use std::fmt;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use thiserror::Error;

/// RFC 4616 2: servers MUST accept each of authzid, authcid and passwd up
/// to 255 octets. We take four times that (long passphrases, non-Latin
/// scripts) and no more: past it the input is refused before decoding.
pub const MAX_FIELD_LENGTH: usize = 1024;

/// The longest decoded PLAIN message: three fields and two NULs.
const MAX_PLAIN_LENGTH: usize = 3 * MAX_FIELD_LENGTH + 2;

/// The longest base64 text we decode for one client response.
pub const MAX_ENCODED_LENGTH: usize = MAX_PLAIN_LENGTH.div_ceil(3) * 4;

/// The LOGIN mechanism's first challenge, "Username:" in base64. LOGIN has
/// no RFC; this is the text every client and server agrees on.
pub const LOGIN_USERNAME_PROMPT: &str = "VXNlcm5hbWU6";

/// The LOGIN mechanism's second challenge, "Password:" in base64.
pub const LOGIN_PASSWORD_PROMPT: &str = "UGFzc3dvcmQ6";

/// Why a client response was refused. All are permanent for that
/// exchange: the client must start again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum SaslError {
    #[error("invalid base64")]
    Base64,
    #[error("response too long")]
    TooLong,
    #[error("response is not UTF-8")]
    NotUtf8,
    /// A PLAIN message without its two NUL separators (or with more).
    #[error("malformed PLAIN message")]
    Malformed,
    /// RFC 4616 2: authcid and passwd are `1*SAFE`.
    #[error("empty user name or password")]
    Empty,
}

/// A password on its way to verification. Its `Debug` form hides it, so
/// it never lands in a log through a derived `Debug` of a request.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(String);

impl Password {
    pub fn new(password: String) -> Self {
        Password(password)
    }

    /// The clear text, for the verifier only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(<redacted>)")
    }
}

/// The decoded RFC 4616 message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlainCredentials {
    /// The identity to act as; empty when the client sent none (then it is
    /// derived from `authcid`, RFC 4616 2).
    pub authzid: String,
    /// The identity whose password is checked; never empty.
    pub authcid: String,
    /// Never empty.
    pub password: Password,
}

impl PlainCredentials {
    /// The client asks to act as someone other than itself (a proxy login);
    /// a server without authorization rules must refuse that.
    pub fn is_proxy(&self) -> bool {
        !self.authzid.is_empty() && self.authzid != self.authcid
    }
}

/// Strict base64 (RFC 4648 4, padded) to bytes; empty input is an empty
/// response. Input longer than [`MAX_ENCODED_LENGTH`] is refused undecoded.
pub fn decode_base64(encoded: &[u8]) -> Result<Vec<u8>, SaslError> {
    if encoded.len() > MAX_ENCODED_LENGTH {
        return Err(SaslError::TooLong);
    }
    STANDARD.decode(encoded).map_err(|_| SaslError::Base64)
}

/// Like [`decode_base64`], but for an initial response given on the
/// command line (POP3 AUTH, SMTP AUTH, IMAP SASL-IR), where a single "="
/// stands for a present but empty response (RFC 5034 4, RFC 4954 4).
pub fn decode_initial_response(encoded: &[u8]) -> Result<Vec<u8>, SaslError> {
    if encoded == b"=" {
        return Ok(Vec::new());
    }
    if encoded.is_empty() {
        // "" is no response at all on a command line: the caller should
        // have sent an empty challenge instead.
        return Err(SaslError::Base64);
    }
    decode_base64(encoded)
}

/// Base64 for a server challenge.
pub fn encode_base64(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

/// A client response line that cancels the exchange: a lone "*" (RFC 5034
/// 4, RFC 4954 4, RFC 3501 6.2.2).
pub fn is_cancel(line: &[u8]) -> bool {
    line == b"*"
}

/// Decodes a base64 PLAIN response (RFC 4616 2:
/// `[authzid] NUL authcid NUL passwd`).
pub fn decode_plain(encoded: &[u8]) -> Result<PlainCredentials, SaslError> {
    parse_plain(&decode_base64(encoded)?)
}

/// Parses an already decoded PLAIN message (for an initial response that
/// went through [`decode_initial_response`]).
pub fn parse_plain(message: &[u8]) -> Result<PlainCredentials, SaslError> {
    if message.len() > MAX_PLAIN_LENGTH {
        return Err(SaslError::TooLong);
    }
    let mut fields = message.split(|&b| b == 0);
    let (Some(authzid), Some(authcid), Some(password), None) =
        (fields.next(), fields.next(), fields.next(), fields.next())
    else {
        return Err(SaslError::Malformed);
    };
    if authcid.is_empty() || password.is_empty() {
        return Err(SaslError::Empty);
    }
    Ok(PlainCredentials {
        authzid: field(authzid)?,
        authcid: field(authcid)?,
        password: Password::new(field(password)?),
    })
}

fn field(bytes: &[u8]) -> Result<String, SaslError> {
    if bytes.len() > MAX_FIELD_LENGTH {
        return Err(SaslError::TooLong);
    }
    String::from_utf8(bytes.to_vec()).map_err(|_| SaslError::NotUtf8)
}

/// Decodes one LOGIN response (the user name, then the password): UTF-8,
/// non-empty, at most [`MAX_FIELD_LENGTH`] octets.
pub fn decode_login_response(encoded: &[u8]) -> Result<String, SaslError> {
    let bytes = decode_base64(encoded)?;
    if bytes.is_empty() {
        return Err(SaslError::Empty);
    }
    if bytes.contains(&0) {
        return Err(SaslError::Malformed);
    }
    field(&bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_without_authzid() {
        let creds = decode_plain(encode_base64(b"\0tim\0tanstaaftanstaaf").as_bytes()).unwrap();
        assert_eq!(creds.authzid, "");
        assert_eq!(creds.authcid, "tim");
        assert_eq!(creds.password.expose(), "tanstaaftanstaaf");
        assert!(!creds.is_proxy());
    }

    #[test]
    fn plain_with_authzid() {
        // RFC 4616 4, second example.
        let creds = decode_plain(b"S3VydAB6aWVnbGVyAGZvb2Jhcg==").unwrap();
        assert_eq!(creds.authzid, "Kurt");
        assert_eq!(creds.authcid, "ziegler");
        assert_eq!(creds.password.expose(), "foobar");
        assert!(creds.is_proxy());
        let same = parse_plain(b"bob\0bob\0pw").unwrap();
        assert!(!same.is_proxy());
    }

    #[test]
    fn plain_refuses_malformed() {
        let enc = |m: &[u8]| encode_base64(m);
        assert_eq!(
            decode_plain(enc(b"timpw").as_bytes()),
            Err(SaslError::Malformed)
        );
        assert_eq!(
            decode_plain(enc(b"\0tim").as_bytes()),
            Err(SaslError::Malformed)
        );
        assert_eq!(
            decode_plain(enc(b"a\0b\0c\0d").as_bytes()),
            Err(SaslError::Malformed)
        );
        assert_eq!(
            decode_plain(enc(b"\0\0pw").as_bytes()),
            Err(SaslError::Empty)
        );
        assert_eq!(
            decode_plain(enc(b"\0tim\0").as_bytes()),
            Err(SaslError::Empty)
        );
        assert_eq!(
            decode_plain(enc(b"\0tim\0\xff\xfe").as_bytes()),
            Err(SaslError::NotUtf8)
        );
        assert_eq!(decode_plain(b""), Err(SaslError::Malformed));
    }

    #[test]
    fn base64_is_strict() {
        for bad in [
            &b"=AAA"[..],
            b"AAA=BBBB",
            b"AA A",
            b"AAA",
            b"AA\r\n",
            b"AB==",
            b"*",
        ] {
            assert_eq!(decode_base64(bad), Err(SaslError::Base64), "{bad:?}");
        }
        assert_eq!(decode_base64(b"AA==").unwrap(), vec![0]);
        assert_eq!(decode_base64(b"").unwrap(), Vec::<u8>::new());
    }

    #[test]
    fn initial_response_equals_is_empty() {
        assert_eq!(decode_initial_response(b"=").unwrap(), Vec::<u8>::new());
        assert_eq!(decode_initial_response(b""), Err(SaslError::Base64));
        assert_eq!(decode_initial_response(b"AA==").unwrap(), vec![0]);
    }

    #[test]
    fn bounds() {
        let long = vec![b'A'; MAX_ENCODED_LENGTH + 4];
        assert_eq!(decode_base64(&long), Err(SaslError::TooLong));
        let mut message = b"\0".to_vec();
        message.extend(vec![b'u'; MAX_FIELD_LENGTH + 1]);
        message.extend(b"\0pw");
        assert_eq!(parse_plain(&message), Err(SaslError::TooLong));
        // 255 octets each must work (RFC 4616 2).
        let mut ok = vec![b'z'; 255];
        ok.push(0);
        ok.extend(vec![b'u'; 255]);
        ok.push(0);
        ok.extend(vec![b'p'; 255]);
        assert!(decode_plain(encode_base64(&ok).as_bytes()).is_ok());
    }

    #[test]
    fn login_prompts_and_responses() {
        assert_eq!(
            decode_base64(LOGIN_USERNAME_PROMPT.as_bytes()).unwrap(),
            b"Username:"
        );
        assert_eq!(
            decode_base64(LOGIN_PASSWORD_PROMPT.as_bytes()).unwrap(),
            b"Password:"
        );
        assert_eq!(decode_login_response(b"dGlt").unwrap(), "tim");
        assert_eq!(decode_login_response(b""), Err(SaslError::Empty));
        assert_eq!(decode_login_response(b"AA=="), Err(SaslError::Malformed));
        assert!(is_cancel(b"*"));
        assert!(!is_cancel(b"* "));
    }

    #[test]
    fn password_debug_is_redacted() {
        let creds = parse_plain(b"\0tim\0secret").unwrap();
        assert!(!format!("{creds:?}").contains("secret"));
    }
}
