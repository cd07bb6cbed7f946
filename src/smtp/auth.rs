//! The SASL exchange of SMTP AUTH (RFC 4954): turns the AUTH command's
//! mechanism and initial response, and the client's answers to our 334
//! challenges, into credentials for PLAIN (RFC 4616) and LOGIN. It never
//! checks a password and never decides who may authenticate; the session
//! and the glue do.

use std::fmt;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;

/// The mechanisms we offer, in the order EHLO lists them.
pub const MECHANISMS: &str = "PLAIN LOGIN";

/// The LOGIN mechanism's prompts, base64 of "Username:" and "Password:".
const LOGIN_USERNAME_PROMPT: &str = "VXNlcm5hbWU6";
const LOGIN_PASSWORD_PROMPT: &str = "UGFzc3dvcmQ6";

/// Longest decoded credential part accepted: far beyond any real name or
/// password, small enough that a hostile client gains nothing.
const MAX_PART: usize = 1024;

/// What a client presented. `Debug` never shows the password.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The identity to act as (RFC 4616 authzid); empty means the same as
    /// `username`.
    pub authzid: String,
    pub username: String,
    pub password: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("authzid", &self.authzid)
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// Why an exchange ended without credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SaslError {
    #[error("unrecognized authentication mechanism")]
    UnknownMechanism,
    /// RFC 4954 4: the client answered `*`.
    #[error("authentication cancelled")]
    Cancelled,
    #[error("response is not valid base64")]
    BadBase64,
    /// Decoded, but not the mechanism's format (or too long, or not UTF-8).
    #[error("malformed authentication response")]
    Malformed,
}

/// One exchange in progress, waiting for the client's next line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exchange {
    /// PLAIN without an initial response: the whole message comes next.
    Plain,
    /// LOGIN, waiting for the user name.
    LoginUsername,
    /// LOGIN, waiting for the password of this user.
    LoginPassword { username: String },
}

/// What happens after a step of the exchange.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Send `334 <text>` and feed the client's next line to `Exchange::respond`.
    Challenge(Exchange, &'static str),
    Done(Credentials),
    Failed(SaslError),
}

impl Exchange {
    /// Starts an exchange from `AUTH <mechanism> [<initial-response>]`.
    pub fn start(mechanism: &str, initial: Option<&[u8]>) -> Step {
        let exchange = if mechanism.eq_ignore_ascii_case("PLAIN") {
            Exchange::Plain
        } else if mechanism.eq_ignore_ascii_case("LOGIN") {
            Exchange::LoginUsername
        } else {
            return Step::Failed(SaslError::UnknownMechanism);
        };
        match initial {
            None => {
                let prompt = match exchange {
                    Exchange::Plain => "",
                    _ => LOGIN_USERNAME_PROMPT,
                };
                Step::Challenge(exchange, prompt)
            }
            Some(response) => exchange.respond(response),
        }
    }

    /// Takes the client's answer to our last challenge (or the initial
    /// response), without its CRLF.
    pub fn respond(self, line: &[u8]) -> Step {
        if line == b"*" {
            return Step::Failed(SaslError::Cancelled);
        }
        let decoded = match decode(line) {
            Ok(decoded) => decoded,
            Err(e) => return Step::Failed(e),
        };
        match self {
            Exchange::Plain => match parse_plain(&decoded) {
                Ok(credentials) => Step::Done(credentials),
                Err(e) => Step::Failed(e),
            },
            Exchange::LoginUsername => match text(decoded) {
                Ok(username) => {
                    Step::Challenge(Exchange::LoginPassword { username }, LOGIN_PASSWORD_PROMPT)
                }
                Err(e) => Step::Failed(e),
            },
            Exchange::LoginPassword { username } => match text(decoded) {
                Ok(password) => Step::Done(Credentials {
                    authzid: String::new(),
                    username,
                    password,
                }),
                Err(e) => Step::Failed(e),
            },
        }
    }
}

/// RFC 4954 4: "=" is an empty initial response; otherwise base64.
fn decode(line: &[u8]) -> Result<Vec<u8>, SaslError> {
    let line = line.strip_suffix(b" ").unwrap_or(line);
    if line == b"=" {
        return Ok(Vec::new());
    }
    if line.len() > 4 * MAX_PART {
        return Err(SaslError::Malformed);
    }
    STANDARD.decode(line).map_err(|_| SaslError::BadBase64)
}

/// RFC 4616 2: `[authzid] NUL authcid NUL passwd`, UTF-8, no other NULs.
fn parse_plain(message: &[u8]) -> Result<Credentials, SaslError> {
    let mut parts = message.split(|&b| b == 0);
    let (Some(authzid), Some(username), Some(password), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(SaslError::Malformed);
    };
    if username.is_empty() || password.is_empty() {
        return Err(SaslError::Malformed);
    }
    Ok(Credentials {
        authzid: text(authzid.to_vec())?,
        username: text(username.to_vec())?,
        password: text(password.to_vec())?,
    })
}

fn text(bytes: Vec<u8>) -> Result<String, SaslError> {
    if bytes.len() > MAX_PART || bytes.contains(&0) {
        return Err(SaslError::Malformed);
    }
    String::from_utf8(bytes).map_err(|_| SaslError::Malformed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &[u8]) -> Vec<u8> {
        STANDARD.encode(s).into_bytes()
    }

    fn done(step: Step) -> Credentials {
        match step {
            Step::Done(c) => c,
            other => panic!("expected credentials, got {other:?}"),
        }
    }

    #[test]
    fn plain_with_initial_response() {
        let c = done(Exchange::start("plain", Some(&b64(b"\0alice\0s3cret"))));
        assert_eq!(c.username, "alice");
        assert_eq!(c.password, "s3cret");
        assert_eq!(c.authzid, "");
        let c = done(Exchange::start("PLAIN", Some(&b64(b"bob\0alice\0pw"))));
        assert_eq!(c.authzid, "bob");
        assert!(
            !format!("{c:?}").contains("pw\""),
            "password must not show in Debug"
        );
    }

    #[test]
    fn plain_with_a_challenge() {
        let Step::Challenge(exchange, prompt) = Exchange::start("PLAIN", None) else {
            panic!("expected a challenge");
        };
        assert_eq!(prompt, "");
        let c = done(exchange.respond(&b64(b"\0u\0p")));
        assert_eq!((c.username.as_str(), c.password.as_str()), ("u", "p"));
    }

    #[test]
    fn login_walks_both_prompts() {
        let Step::Challenge(exchange, prompt) = Exchange::start("LOGIN", None) else {
            panic!("expected a challenge");
        };
        assert_eq!(STANDARD.decode(prompt).unwrap(), b"Username:");
        let Step::Challenge(exchange, prompt) = exchange.respond(&b64(b"carol")) else {
            panic!("expected the password prompt");
        };
        assert_eq!(STANDARD.decode(prompt).unwrap(), b"Password:");
        let c = done(exchange.respond(&b64(b"pass word")));
        assert_eq!(
            (c.username.as_str(), c.password.as_str()),
            ("carol", "pass word")
        );
        // The user name may come as the initial response.
        let Step::Challenge(exchange, _) = Exchange::start("LOGIN", Some(&b64(b"dave"))) else {
            panic!("expected the password prompt");
        };
        assert_eq!(done(exchange.respond(&b64(b"x"))).username, "dave");
    }

    #[test]
    fn failures() {
        assert_eq!(
            Exchange::start("CRAM-MD5", None),
            Step::Failed(SaslError::UnknownMechanism)
        );
        assert_eq!(
            Exchange::Plain.respond(b"*"),
            Step::Failed(SaslError::Cancelled)
        );
        assert_eq!(
            Exchange::Plain.respond(b"!!!"),
            Step::Failed(SaslError::BadBase64)
        );
        for bad in [
            &b"\0alice"[..],
            b"a\0b\0c\0d",
            b"\0\0pw",
            b"\0u\0",
            b"\0\xff\0p",
        ] {
            assert_eq!(
                Exchange::Plain.respond(&b64(bad)),
                Step::Failed(SaslError::Malformed),
                "{bad:?}"
            );
        }
        assert_eq!(
            Exchange::start("PLAIN", Some(b"=")),
            Step::Failed(SaslError::Malformed)
        );
        let huge = b64(&[b'a'; 5000]);
        assert_eq!(
            Exchange::LoginUsername.respond(&huge),
            Step::Failed(SaslError::Malformed)
        );
    }
}
