//! The table of every line the POP3 server sends: status, response code (RFC 2449 8, RFC 3206)
//! and text, rendered to bytes. It refuses to decide when a reply is sent; the session does.
//!
//! Response codes: `[AUTH]` for credential problems (RFC 3206 4), `[SYS/TEMP]`
//! for our own transient failures (RFC 3206 5), `[IN-USE]` for a locked
//! maildrop (RFC 2449 8.1.2). Every `-ERR` text starting with "[" is such
//! a code, as the RESP-CODES capability promises (RFC 2449 6.4).

use std::io::Write;

use super::parser::{ParseError, Usage};

/// What we call ourselves in the greeting and CAPA IMPLEMENTATION.
pub const IMPLEMENTATION: &str = "spate";

/// The SASL mechanisms we implement (offered only where plaintext
/// passwords are allowed, RFC 5034 4).
pub const SASL_MECHANISMS: &str = "PLAIN";

/// Sent by the driver, without a session, when the server is at its
/// connection limit.
pub const TOO_MANY_CONNECTIONS: &[u8] =
    b"-ERR [SYS/TEMP] Too many connections, try again later\r\n";

/// One reply line (or, for the multi-line ones, all of their lines).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply<'a> {
    /// RFC 1939 4. No APOP timestamp: APOP is not offered.
    Greeting,
    /// RFC 2449 5: the whole capability list, dot-terminated.
    Capa {
        /// USER and SASL PLAIN are usable on this connection.
        plaintext: bool,
        stls: bool,
    },
    /// "AUTH" alone (the RFC 1734 form old clients send): the mechanisms,
    /// dot-terminated; none where plaintext passwords are not allowed.
    Mechanisms {
        plaintext: bool,
    },
    /// USER is accepted whatever the name, so names cannot be probed.
    UserAccepted,
    /// PASS or AUTH succeeded and the maildrop is open.
    LoggedIn {
        count: usize,
        octets: u64,
    },
    /// RFC 5034 4: the empty server challenge, "+" and one space.
    EmptyChallenge,
    AuthFailed,
    /// The credential store did not answer (RFC 3206 5: SYS/TEMP).
    AuthUnavailable,
    /// RFC 5034 4 / RFC 2595: no plaintext passwords without TLS.
    PlaintextDisallowed,
    /// PASS without a USER before it.
    NeedUser,
    UnsupportedMechanism,
    AuthCancelled,
    InvalidBase64,
    MalformedCredentials,
    /// RFC 2449 8.1.2.
    InUse,
    /// The maildrop could not be opened for a transient reason.
    MaildropUnavailable,
    Stat {
        count: usize,
        octets: u64,
    },
    /// First line of a LIST without argument; items and `End` follow.
    ListHeader {
        count: usize,
        octets: u64,
    },
    /// One line of a LIST listing: "n size".
    ListItem {
        number: usize,
        size: u64,
    },
    /// LIST with an argument: "+OK n size".
    ListOne {
        number: u32,
        size: u64,
    },
    UidlHeader,
    /// One line of a UIDL listing: "n unique-id".
    UidlItem {
        number: usize,
        uid: &'a str,
    },
    UidlOne {
        number: u32,
        uid: &'a str,
    },
    /// The "." that ends a multi-line response.
    End,
    NoSuchMessage,
    AlreadyDeleted {
        number: u32,
    },
    Deleted {
        number: u32,
    },
    /// NOOP.
    Ok,
    /// RSET: the maildrop after unmarking.
    Reset {
        count: usize,
        octets: u64,
    },
    /// Before the message of a RETR.
    Retr {
        octets: u64,
    },
    /// Before the lines of a TOP.
    Top,
    /// QUIT: from AUTHORIZATION, or after a complete UPDATE.
    SigningOff,
    /// RFC 1939 6: the UPDATE could not remove every deleted message.
    UpdateFailed,
    /// RETR or TOP of a message another session removed meanwhile
    /// (`[pop3] lock_session = false`; Dovecot says much the same).
    MessageGone,
    /// RFC 2595 4.
    StlsOk,
    TlsActive,
    StlsUnavailable,
    /// A known command in the wrong state (RFC 1939 3: -ERR).
    WrongState,
    /// RFC 5034 4: no AUTH after a successful login; also USER/PASS.
    AlreadyAuthenticated,
    UnknownCommand,
    Syntax(Usage),
    InvalidNumber,
    InvalidCharacters,
    LineTooLong,
    TooManyErrors,
    /// RFC 1939 3: the autologout timer expired.
    Timeout,
    ShuttingDown,
}

impl From<ParseError> for Reply<'_> {
    fn from(e: ParseError) -> Self {
        match e {
            ParseError::UnknownCommand => Reply::UnknownCommand,
            ParseError::Syntax(usage) => Reply::Syntax(usage),
            ParseError::InvalidNumber => Reply::InvalidNumber,
            ParseError::InvalidCharacters => Reply::InvalidCharacters,
        }
    }
}

/// Appends `parts` and CRLF.
fn line(out: &mut Vec<u8>, parts: &[&str]) {
    for part in parts {
        out.extend_from_slice(part.as_bytes());
    }
    out.extend_from_slice(b"\r\n");
}

impl Reply<'_> {
    /// Appends the reply, CRLF-terminated, to `out`.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        // `write!` into a Vec cannot fail; the results are ignored for that reason.
        match *self {
            Reply::Greeting => line(out, &["+OK ", IMPLEMENTATION, " POP3 ready"]),
            Reply::Capa { plaintext, stls } => {
                line(out, &["+OK Capability list follows"]);
                line(out, &["TOP"]);
                line(out, &["UIDL"]);
                if plaintext {
                    line(out, &["USER"]);
                    line(out, &["SASL ", SASL_MECHANISMS]);
                }
                line(out, &["RESP-CODES"]);
                line(out, &["AUTH-RESP-CODE"]);
                line(out, &["PIPELINING"]);
                if stls {
                    line(out, &["STLS"]);
                }
                line(out, &["IMPLEMENTATION ", IMPLEMENTATION]);
                line(out, &["."]);
            }
            Reply::Mechanisms { plaintext } => {
                line(out, &["+OK Supported mechanisms follow"]);
                if plaintext {
                    for mechanism in SASL_MECHANISMS.split(' ') {
                        line(out, &[mechanism]);
                    }
                }
                line(out, &["."]);
            }
            Reply::UserAccepted => line(out, &["+OK Send PASS"]),
            Reply::LoggedIn { count, octets } => {
                let _ = write!(out, "+OK Logged in, {count} messages ({octets} octets)\r\n");
            }
            Reply::EmptyChallenge => line(out, &["+ "]),
            Reply::AuthFailed => line(out, &["-ERR [AUTH] Authentication failed"]),
            Reply::AuthUnavailable => line(
                out,
                &["-ERR [SYS/TEMP] Authentication temporarily unavailable, try again later"],
            ),
            Reply::PlaintextDisallowed => line(
                out,
                &["-ERR [AUTH] Plaintext authentication disallowed on non-secure connection (use STLS first)"],
            ),
            Reply::NeedUser => line(out, &["-ERR Send USER first"]),
            Reply::UnsupportedMechanism => {
                line(out, &["-ERR Unsupported authentication mechanism"])
            }
            Reply::AuthCancelled => line(out, &["-ERR Authentication cancelled"]),
            Reply::InvalidBase64 => line(out, &["-ERR Invalid base64 data"]),
            Reply::MalformedCredentials => line(out, &["-ERR Malformed authentication data"]),
            Reply::InUse => line(
                out,
                &["-ERR [IN-USE] Mailbox is locked by another POP3 session"],
            ),
            Reply::MaildropUnavailable => line(
                out,
                &["-ERR [SYS/TEMP] Unable to open mailbox, try again later"],
            ),
            Reply::Stat { count, octets } => {
                let _ = write!(out, "+OK {count} {octets}\r\n");
            }
            Reply::ListHeader { count, octets } => {
                let _ = write!(out, "+OK {count} messages ({octets} octets)\r\n");
            }
            Reply::ListItem { number, size } => {
                let _ = write!(out, "{number} {size}\r\n");
            }
            Reply::ListOne { number, size } => {
                let _ = write!(out, "+OK {number} {size}\r\n");
            }
            Reply::UidlHeader => line(out, &["+OK Unique-ID listing follows"]),
            Reply::UidlItem { number, uid } => {
                let _ = write!(out, "{number} {uid}\r\n");
            }
            Reply::UidlOne { number, uid } => {
                let _ = write!(out, "+OK {number} {uid}\r\n");
            }
            Reply::End => line(out, &["."]),
            Reply::NoSuchMessage => line(out, &["-ERR No such message"]),
            Reply::AlreadyDeleted { number } => {
                let _ = write!(out, "-ERR Message {number} already deleted\r\n");
            }
            Reply::Deleted { number } => {
                let _ = write!(out, "+OK Message {number} deleted\r\n");
            }
            Reply::Ok => line(out, &["+OK"]),
            Reply::Reset { count, octets } => {
                let _ = write!(out, "+OK Maildrop has {count} messages ({octets} octets)\r\n");
            }
            Reply::Retr { octets } => {
                let _ = write!(out, "+OK {octets} octets\r\n");
            }
            Reply::Top => line(out, &["+OK Top of message follows"]),
            Reply::SigningOff => line(out, &["+OK ", IMPLEMENTATION, " POP3 server signing off"]),
            Reply::UpdateFailed => line(
                out,
                &["-ERR [SYS/TEMP] Some deleted messages not removed"],
            ),
            Reply::MessageGone => line(
                out,
                &["-ERR Message was deleted by another session"],
            ),
            Reply::StlsOk => line(out, &["+OK Begin TLS negotiation"]),
            Reply::TlsActive => line(out, &["-ERR Command not permitted when TLS active"]),
            Reply::StlsUnavailable => line(out, &["-ERR TLS not available"]),
            Reply::WrongState => line(out, &["-ERR Command not valid in this state"]),
            Reply::AlreadyAuthenticated => line(out, &["-ERR Already authenticated"]),
            Reply::UnknownCommand => line(out, &["-ERR Unknown command"]),
            Reply::Syntax(usage) => line(out, &["-ERR Syntax: ", usage.text()]),
            Reply::InvalidNumber => line(out, &["-ERR Invalid number"]),
            Reply::InvalidCharacters => line(out, &["-ERR Invalid characters in command"]),
            Reply::LineTooLong => line(out, &["-ERR Line too long"]),
            Reply::TooManyErrors => line(out, &["-ERR Too many bad commands, closing connection"]),
            Reply::Timeout => line(out, &["-ERR Disconnected for inactivity"]),
            Reply::ShuttingDown => line(out, &["-ERR [SYS/TEMP] Server shutting down"]),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(reply: Reply<'_>) -> String {
        let mut out = Vec::new();
        reply.write_to(&mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn every_reply_is_crlf_terminated_and_bounded() {
        use Usage::*;
        let all = [
            Reply::Greeting,
            Reply::Capa {
                plaintext: true,
                stls: true,
            },
            Reply::Mechanisms { plaintext: true },
            Reply::UserAccepted,
            Reply::LoggedIn {
                count: usize::MAX,
                octets: u64::MAX,
            },
            Reply::EmptyChallenge,
            Reply::AuthFailed,
            Reply::AuthUnavailable,
            Reply::PlaintextDisallowed,
            Reply::NeedUser,
            Reply::UnsupportedMechanism,
            Reply::AuthCancelled,
            Reply::InvalidBase64,
            Reply::MalformedCredentials,
            Reply::InUse,
            Reply::MaildropUnavailable,
            Reply::Stat {
                count: 1,
                octets: 2,
            },
            Reply::UidlOne {
                number: 1,
                uid: "x",
            },
            Reply::NoSuchMessage,
            Reply::UpdateFailed,
            Reply::MessageGone,
            Reply::Syntax(Top),
            Reply::Syntax(NoArguments),
            Reply::TooManyErrors,
            Reply::Timeout,
            Reply::ShuttingDown,
        ];
        for reply in all {
            let t = text(reply);
            assert!(t.ends_with("\r\n"), "{t:?}");
            assert!(t.starts_with("+OK") || t.starts_with("-ERR") || t.starts_with("+ "));
            // RFC 2449 4: response lines up to 512 octets; CAPA lines too.
            for l in t.split_inclusive("\r\n") {
                assert!(l.len() <= 512);
            }
        }
    }

    #[test]
    fn capa_lists_only_what_applies() {
        let secure = text(Reply::Capa {
            plaintext: true,
            stls: false,
        });
        assert!(secure.contains("\r\nUSER\r\n"));
        assert!(secure.contains("\r\nSASL PLAIN\r\n"));
        assert!(!secure.contains("STLS"));
        assert!(secure.ends_with("\r\n.\r\n"));
        let insecure = text(Reply::Capa {
            plaintext: false,
            stls: true,
        });
        assert!(!insecure.contains("USER"));
        assert!(!insecure.contains("SASL"));
        assert!(insecure.contains("\r\nSTLS\r\n"));
    }

    #[test]
    fn codes() {
        assert_eq!(
            text(Reply::AuthFailed),
            "-ERR [AUTH] Authentication failed\r\n"
        );
        assert!(text(Reply::InUse).starts_with("-ERR [IN-USE] "));
        assert_eq!(text(Reply::EmptyChallenge), "+ \r\n");
        assert_eq!(text(Reply::Greeting), "+OK spate POP3 ready\r\n");
    }
}
