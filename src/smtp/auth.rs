//! The SASL exchange of SMTP AUTH (RFC 4954): turns the AUTH command's
//! mechanism and initial response, and the client's answers to our 334
//! challenges, into credentials for PLAIN (RFC 4616) and LOGIN. It never
//! checks a password and never decides who may authenticate; the session
//! and the glue do.

use crate::sasl::{self, Password};

/// The mechanisms we offer, in the order EHLO lists them.
pub const MECHANISMS: &str = "PLAIN LOGIN";

/// What a client presented. The password's `Debug` is redacted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The identity to act as (RFC 4616 authzid); empty means the same as
    /// `username`.
    pub authzid: String,
    pub username: String,
    pub password: Password,
}

/// Why an exchange ended without credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SaslError {
    #[error("unrecognized authentication mechanism")]
    UnknownMechanism,
    /// RFC 4954 4: the client answered `*`.
    #[error("authentication cancelled")]
    Cancelled,
    /// Not base64, or not the mechanism's format.
    #[error("malformed authentication response: {0}")]
    Malformed(sasl::SaslError),
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
        match (initial, &exchange) {
            (None, Exchange::Plain) => Step::Challenge(exchange, ""),
            (None, _) => Step::Challenge(exchange, sasl::LOGIN_USERNAME_PROMPT),
            // RFC 4954 4: "=" is a present but empty initial response.
            (Some(response), Exchange::Plain) => {
                finish(sasl::decode_initial_response(response).and_then(|m| sasl::parse_plain(&m)))
            }
            (Some(response), _) => exchange.respond(response),
        }
    }

    /// Takes the client's answer to our last challenge, without its CRLF.
    pub fn respond(self, line: &[u8]) -> Step {
        if sasl::is_cancel(line) {
            return Step::Failed(SaslError::Cancelled);
        }
        match self {
            Exchange::Plain => finish(sasl::decode_plain(line)),
            Exchange::LoginUsername => match sasl::decode_login_response(line) {
                Ok(username) => Step::Challenge(
                    Exchange::LoginPassword { username },
                    sasl::LOGIN_PASSWORD_PROMPT,
                ),
                Err(e) => Step::Failed(SaslError::Malformed(e)),
            },
            Exchange::LoginPassword { username } => match sasl::decode_login_response(line) {
                Ok(password) => Step::Done(Credentials {
                    authzid: String::new(),
                    username,
                    password: Password::new(password),
                }),
                Err(e) => Step::Failed(SaslError::Malformed(e)),
            },
        }
    }
}

fn finish(plain: Result<sasl::PlainCredentials, sasl::SaslError>) -> Step {
    match plain {
        Ok(c) => Step::Done(Credentials {
            authzid: c.authzid,
            username: c.authcid,
            password: c.password,
        }),
        Err(e) => Step::Failed(SaslError::Malformed(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use base64::engine::general_purpose::STANDARD;
    use base64::Engine as _;

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
        assert_eq!(c.password.expose(), "s3cret");
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
        assert_eq!((c.username.as_str(), c.password.expose()), ("u", "p"));
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
            (c.username.as_str(), c.password.expose()),
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
        let malformed = |step| matches!(step, Step::Failed(SaslError::Malformed(_)));
        assert!(malformed(Exchange::Plain.respond(b"!!!")));
        for bad in [
            &b"\0alice"[..],
            b"a\0b\0c\0d",
            b"\0\0pw",
            b"\0u\0",
            b"\0\xff\0p",
        ] {
            assert!(malformed(Exchange::Plain.respond(&b64(bad))), "{bad:?}");
        }
        assert!(malformed(Exchange::start("PLAIN", Some(b"="))));
        assert!(malformed(
            Exchange::LoginUsername.respond(&b64(&[b'a'; 5000]))
        ));
    }
}
