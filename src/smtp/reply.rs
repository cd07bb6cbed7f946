//! The table of every reply the SMTP server sends: code, enhanced status code (RFC 2034, RFC 3463)
//! and text, rendered to bytes. It refuses to decide when a reply is sent; the session does.
//!
//! RFC 2034 3 (4): every 2xx/4xx/5xx reply carries an enhanced status code,
//! except the greeting and the replies to HELO/EHLO; 3xx replies never do.

use super::data::BodyError;
use super::param::ParamError;
use super::parser::{ParseError, Usage};

/// Sent by the glue, without a session, when the server is at its total
/// connection limit (RFC 5321 3.1: a server may refuse with 421 instead of 220).
pub const TOO_MANY_CONNECTIONS: &[u8] =
    b"421 4.7.0 Error: too many connections, try again later\r\n";

/// Sent by the glue, without a session, when one client address holds too
/// many connections.
pub const TOO_MANY_CONNECTIONS_FROM_IP: &[u8] =
    b"421 4.7.0 Error: too many connections from your IP address, try again later\r\n";

/// Which ordering rule a command broke (all 503 5.5.1, RFC 5321 4.3.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sequence {
    SendHeloFirst,
    /// LMTP's form of `SendHeloFirst` (RFC 2033 4.1).
    SendLhloFirst,
    NeedMail,
    NestedMail,
    /// DATA after BDAT in one transaction (RFC 3030 2).
    DataAfterBdat,
    /// RCPT while BDAT chunks are arriving.
    BdatInProgress,
    /// STARTTLS inside a mail transaction.
    TransactionInProgress,
}

/// One reply. Borrowed parts (host names, addresses, queue IDs) are
/// rendered as given; every source of them is printable by construction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply<'a> {
    /// The 220 greeting (no enhanced code, RFC 2034).
    Greeting {
        host: &'a str,
    },
    /// The multi-line EHLO reply listing our extensions.
    Ehlo {
        host: &'a str,
        max_size: usize,
        starttls: bool,
        /// SMTP AUTH is offered (RFC 4954 3), with these mechanisms.
        auth: bool,
    },
    Helo {
        host: &'a str,
    },
    /// The LMTP greeting (RFC 2033 4: as SMTP's, no enhanced code).
    LmtpGreeting {
        host: &'a str,
    },
    /// The multi-line LHLO reply (RFC 2033 4.1): EHLO's extensions that
    /// make sense for final delivery (no DSN, no AUTH).
    Lhlo {
        host: &'a str,
        max_size: usize,
        starttls: bool,
    },
    /// RFC 2033 4.1: HELO and EHLO on an LMTP server get 500.
    UseLhlo,
    /// LMTP is final delivery: a recipient outside our local domains (or
    /// an address literal) is refused at RCPT (RFC 3463 X.1.2).
    NotLocalRecipient {
        address: &'a str,
    },
    /// LMTP's reply for one recipient after the message (RFC 2033 4.2):
    /// its mailbox has the message, durably; aliases that point outside
    /// had a copy queued as `forwarded_as`.
    Delivered {
        address: &'a str,
        forwarded_as: Option<&'a str>,
    },
    /// LMTP's reply for one recipient the mailbox tier refused: its own
    /// reply line (`452 4.2.2 ...`), written as one clean line; anything
    /// that is not a 4xx/5xx line becomes 451 4.3.0.
    DeliveryRefused {
        address: &'a str,
        line: &'a str,
    },
    Ok,
    SenderOk,
    RecipientOk,
    /// 354, after DATA.
    StartData,
    Queued {
        id: &'a str,
    },
    /// RFC 3030: each non-LAST chunk is acknowledged.
    ChunkReceived {
        octets: u64,
    },
    CannotVrfy,
    Help,
    Bye,
    /// RFC 3207 4: 220 to STARTTLS; TLS negotiation follows.
    ReadyForTls,
    ShuttingDown {
        host: &'a str,
    },
    Timeout {
        host: &'a str,
    },
    TooManyErrors {
        host: &'a str,
    },
    /// 421 when the output buffer overflows: the client is not reading.
    OutputOverflow {
        host: &'a str,
    },
    LineTooLong,
    /// A command line ended with LF alone.
    BareLineFeed,
    UnknownCommand,
    NotImplemented,
    Syntax(Usage),
    BadSender,
    BadRecipient,
    Parameter(ParamError),
    /// RFC 5321 4.1.1.11: MAIL/RCPT parameters after a plain HELO, where no
    /// service extension was negotiated.
    ParametersNeedEhlo,
    BadSequence(Sequence),
    MessageTooBig,
    NonAsciiAddress,
    RelayDenied {
        address: &'a str,
    },
    TooManyRecipients,
    NoValidRecipients,
    BareLineEnding,
    TooManyHops,
    DiskFull,
    StoreFailed,
    /// RFC 4954 4: `334 <base64 challenge>`.
    AuthChallenge {
        text: &'a str,
    },
    AuthSucceeded,
    /// RFC 4954 6: 535 5.7.8, the credentials are wrong.
    AuthFailed,
    /// RFC 4954 6: 454 4.7.0, we could not check them now.
    AuthTemporaryFailure,
    /// RFC 4954 4: the client cancelled with `*`.
    AuthCancelled,
    /// RFC 4954 4: a response that is not base64 (or not the mechanism's form).
    AuthBadResponse,
    /// RFC 4954 4: 504 for a mechanism we do not offer.
    AuthUnknownMechanism,
    /// RFC 4954 4: AUTH after a successful AUTH, or inside a transaction.
    AuthNotNow,
    /// RFC 4954 6: 538 5.7.11, plaintext AUTH needs TLS first.
    EncryptionRequired,
    /// RFC 4954 6: 530 5.7.0, this listener takes mail only after AUTH.
    AuthRequired,
    /// The authenticated user may not use this envelope sender.
    SenderNotOwned {
        address: &'a str,
    },
    /// An address literal from a client that may not use one (RFC 3463
    /// X.7.1: delivery not authorized).
    AddressLiteralRefused {
        address: &'a str,
    },
    /// RFC 5321 4.2.2 / RFC 3463 X.1.1: no such local user.
    UnknownLocalUser {
        address: &'a str,
    },
    /// RFC 3463 X.2.2: the recipient's mailbox is full; 452 4.2.2 or 552 5.2.2.
    MailboxFull {
        address: &'a str,
        permanent: bool,
    },
    /// RFC 3463 X.2.2 and RFC 1870 6.4: the message (its declared SIZE at
    /// RCPT, its size at the end of DATA) is larger than the recipient's
    /// whole quota: it will never fit.
    LargerThanQuota {
        address: &'a str,
    },
}

/// Writes one reply line: `code` `sep` [`status` SP] text... CRLF.
fn line(out: &mut Vec<u8>, code: &str, last: bool, status: Option<&str>, text: &[&str]) {
    out.extend_from_slice(code.as_bytes());
    out.push(if last { b' ' } else { b'-' });
    if let Some(status) = status {
        out.extend_from_slice(status.as_bytes());
        out.push(b' ');
    }
    for part in text {
        out.extend_from_slice(part.as_bytes());
    }
    out.extend_from_slice(b"\r\n");
}

/// The EHLO (or LHLO) reply: our name, then one extension per line.
fn extensions(
    out: &mut Vec<u8>,
    host: &str,
    max_size: usize,
    dsn: bool,
    auth: bool,
    starttls: bool,
) {
    let size = format!("SIZE {max_size}");
    let mut lines = vec![
        host,
        "PIPELINING",
        &size,
        "8BITMIME",
        "ENHANCEDSTATUSCODES",
        "SMTPUTF8",
        "CHUNKING",
    ];
    if dsn {
        lines.push("DSN");
    }
    let auth_line = format!("AUTH {}", super::auth::MECHANISMS);
    if auth {
        lines.push(&auth_line);
    }
    if starttls {
        lines.push("STARTTLS");
    }
    let n = lines.len();
    for (i, text) in lines.into_iter().enumerate() {
        line(out, "250", i + 1 == n, None, &[text]);
    }
}

/// Single-line reply.
fn one(out: &mut Vec<u8>, code: &str, status: &str, text: &[&str]) {
    line(out, code, true, Some(status), text);
}

impl Reply<'_> {
    /// Appends the reply, CRLF-terminated, to `out`.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        match *self {
            Reply::Greeting { host } => line(out, "220", true, None, &[host, " ESMTP spate"]),
            Reply::Ehlo {
                host,
                max_size,
                starttls,
                auth,
            } => extensions(out, host, max_size, true, auth, starttls),
            Reply::Helo { host } => line(out, "250", true, None, &[host]),
            Reply::LmtpGreeting { host } => line(out, "220", true, None, &[host, " LMTP spate"]),
            Reply::Lhlo {
                host,
                max_size,
                starttls,
            } => extensions(out, host, max_size, false, false, starttls),
            Reply::UseLhlo => one(out, "500", "5.5.1", &["Error: this is LMTP, use LHLO"]),
            Reply::NotLocalRecipient { address } => one(
                out,
                "550",
                "5.1.2",
                &[
                    "<",
                    address,
                    ">: Recipient address rejected: LMTP delivers to local mailboxes only",
                ],
            ),
            Reply::Delivered {
                address,
                forwarded_as: None,
            } => one(out, "250", "2.0.0", &["<", address, ">: delivered to mailbox"]),
            Reply::Delivered {
                address,
                forwarded_as: Some(id),
            } => {
                let id: String = id.chars().filter(|c| c.is_ascii_graphic()).collect();
                one(
                    out,
                    "250",
                    "2.0.0",
                    &["<", address, ">: delivered, forwarded as ", &id],
                );
            }
            Reply::DeliveryRefused { address, line: text } => {
                let clean: String = text
                    .chars()
                    .map(|c| if c.is_control() { ' ' } else { c })
                    .collect();
                let b = clean.as_bytes();
                let well_formed = b.len() > 4
                    && matches!(b[0], b'4' | b'5')
                    && b[1].is_ascii_digit()
                    && b[2].is_ascii_digit()
                    && b[3] == b' ';
                if well_formed {
                    out.extend_from_slice(b);
                    out.extend_from_slice(b"\r\n");
                } else {
                    one(
                        out,
                        "451",
                        "4.3.0",
                        &["<", address, ">: local delivery failed"],
                    );
                }
            }
            Reply::Ok => one(out, "250", "2.0.0", &["Ok"]),
            Reply::SenderOk => one(out, "250", "2.1.0", &["Ok"]),
            Reply::RecipientOk => one(out, "250", "2.1.5", &["Ok"]),
            Reply::StartData => line(out, "354", true, None, &["End data with <CR><LF>.<CR><LF>"]),
            Reply::Queued { id } => {
                // The ID comes from our spool; keep the reply one clean line anyway.
                let id: String = id.chars().filter(|c| c.is_ascii_graphic()).collect();
                one(out, "250", "2.0.0", &["Ok: queued as ", &id]);
            }
            Reply::ChunkReceived { octets } => one(
                out,
                "250",
                "2.0.0",
                &[&octets.to_string(), " octets received"],
            ),
            Reply::CannotVrfy => one(
                out,
                "252",
                "2.5.0",
                &["Cannot VRFY user, but will accept message and attempt delivery"],
            ),
            Reply::Help => one(
                out,
                "214",
                "2.0.0",
                &["Commands: EHLO HELO MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY HELP STARTTLS AUTH"],
            ),
            Reply::Bye => one(out, "221", "2.0.0", &["Bye"]),
            Reply::ReadyForTls => one(out, "220", "2.0.0", &["Ready to start TLS"]),
            Reply::ShuttingDown { host } => one(
                out,
                "421",
                "4.3.2",
                &[host, " Service shutting down, closing transmission channel"],
            ),
            Reply::Timeout { host } => {
                one(out, "421", "4.4.2", &[host, " Error: timeout exceeded"])
            }
            Reply::TooManyErrors { host } => {
                one(out, "421", "4.7.0", &[host, " Error: too many errors"])
            }
            Reply::OutputOverflow { host } => one(
                out,
                "421",
                "4.7.0",
                &[host, " Error: too much unread output"],
            ),
            Reply::LineTooLong => one(out, "500", "5.5.2", &["Line too long"]),
            Reply::BareLineFeed => one(out, "500", "5.5.2", &["Error: bare <LF> received"]),
            Reply::UnknownCommand => one(out, "500", "5.5.2", &["Error: command not recognized"]),
            Reply::NotImplemented => one(out, "502", "5.5.1", &["Error: command not implemented"]),
            Reply::Syntax(usage) => one(out, "501", "5.5.4", &["Syntax: ", usage.text()]),
            // RFC 3463: X.1.7 bad sender's address syntax, X.1.3 bad
            // destination address syntax.
            Reply::BadSender => one(out, "501", "5.1.7", &["Bad sender address syntax"]),
            Reply::BadRecipient => one(out, "501", "5.1.3", &["Bad recipient address syntax"]),
            Reply::Parameter(e) => match e {
                ParamError::Syntax => one(out, "501", "5.5.4", &["Bad parameter syntax"]),
                ParamError::BadValue(k) => one(
                    out,
                    "501",
                    "5.5.4",
                    &["Bad ", k.as_str(), " parameter value"],
                ),
                // RFC 5321 4.2.3: 555 "MAIL FROM/RCPT TO parameters not
                // recognized or not implemented".
                ParamError::Unknown => one(out, "555", "5.5.4", &["Unsupported parameter"]),
                ParamError::Duplicate => one(out, "555", "5.5.4", &["Duplicate parameter"]),
                ParamError::Unsupported(k) => one(
                    out,
                    "555",
                    "5.5.4",
                    &["Unsupported ", k.as_str(), " parameter value"],
                ),
            },
            Reply::ParametersNeedEhlo => one(
                out,
                "555",
                "5.5.4",
                &["Parameters not recognized after HELO: use EHLO"],
            ),
            Reply::BadSequence(s) => {
                let text = match s {
                    Sequence::SendHeloFirst => "Error: send HELO/EHLO first",
                    Sequence::SendLhloFirst => "Error: send LHLO first",
                    Sequence::NeedMail => "Error: need MAIL command",
                    Sequence::NestedMail => "Error: nested MAIL command",
                    Sequence::DataAfterBdat => "Error: DATA after BDAT in the same transaction",
                    Sequence::BdatInProgress => "Error: BDAT transfer in progress",
                    Sequence::TransactionInProgress => "Error: MAIL transaction in progress",
                };
                one(out, "503", "5.5.1", &[text]);
            }
            // RFC 1870 6.1 and RFC 3463 X.3.4.
            Reply::MessageTooBig => one(
                out,
                "552",
                "5.3.4",
                &["Message size exceeds fixed maximum message size"],
            ),
            Reply::NonAsciiAddress => one(
                out,
                "553",
                "5.6.7",
                &["Non-ASCII address requires the SMTPUTF8 parameter"],
            ),
            Reply::RelayDenied { address } => one(
                out,
                "554",
                "5.7.1",
                &["<", address, ">: Relay access denied"],
            ),
            // RFC 5321 4.5.3.1.10: 452 for too many recipients.
            Reply::TooManyRecipients => one(out, "452", "4.5.3", &["Error: too many recipients"]),
            Reply::NoValidRecipients => one(out, "554", "5.5.1", &["Error: no valid recipients"]),
            Reply::BareLineEnding => one(out, "550", "5.5.2", &["Message contains bare CR or LF"]),
            Reply::TooManyHops => one(out, "554", "5.4.6", &["Too many hops (mail loop)"]),
            Reply::DiskFull => one(out, "452", "4.3.1", &["Insufficient system storage"]),
            Reply::StoreFailed => one(out, "451", "4.3.0", &["Error: queue file write error"]),
            Reply::AuthChallenge { text } => line(out, "334", true, None, &[text]),
            Reply::AuthSucceeded => one(out, "235", "2.7.0", &["Authentication successful"]),
            Reply::AuthFailed => one(
                out,
                "535",
                "5.7.8",
                &["Error: authentication credentials invalid"],
            ),
            Reply::AuthTemporaryFailure => one(
                out,
                "454",
                "4.7.0",
                &["Temporary authentication failure, try again later"],
            ),
            Reply::AuthCancelled => one(out, "501", "5.0.0", &["Authentication cancelled"]),
            Reply::AuthBadResponse => one(
                out,
                "501",
                "5.5.2",
                &["Error: cannot decode the authentication response"],
            ),
            Reply::AuthUnknownMechanism => one(
                out,
                "504",
                "5.5.4",
                &["Unrecognized authentication type"],
            ),
            Reply::AuthNotNow => one(
                out,
                "503",
                "5.5.1",
                &["Error: already authenticated, or inside a mail transaction"],
            ),
            Reply::EncryptionRequired => one(
                out,
                "538",
                "5.7.11",
                &["Encryption required for requested authentication mechanism"],
            ),
            Reply::AuthRequired => one(out, "530", "5.7.0", &["Authentication required"]),
            Reply::SenderNotOwned { address } => one(
                out,
                "553",
                "5.7.1",
                &["<", address, ">: Sender address rejected: not owned by the authenticated user"],
            ),
            Reply::AddressLiteralRefused { address } => one(
                out,
                "550",
                "5.7.1",
                &["<", address, ">: Address literals are not accepted from your network"],
            ),
            Reply::UnknownLocalUser { address } => one(
                out,
                "550",
                "5.1.1",
                &["<", address, ">: Recipient address rejected: User unknown"],
            ),
            Reply::MailboxFull {
                address,
                permanent: false,
            } => one(out, "452", "4.2.2", &["<", address, ">: Mailbox full, try again later"]),
            Reply::MailboxFull {
                address,
                permanent: true,
            } => one(out, "552", "5.2.2", &["<", address, ">: Mailbox full"]),
            Reply::LargerThanQuota { address } => one(
                out,
                "552",
                "5.2.2",
                &["<", address, ">: Message larger than the mailbox quota"],
            ),
        }
    }

    /// The reply as bytes (tests, logs, the glue).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.write_to(&mut out);
        out
    }

    /// The three-digit reply code.
    pub fn code(&self) -> u16 {
        self.to_bytes().iter().take(3).fold(0u16, |acc, &d| {
            acc * 10 + u16::from(d.wrapping_sub(b'0') % 10)
        })
    }
}

/// The one place parse errors become replies.
impl From<ParseError> for Reply<'static> {
    fn from(e: ParseError) -> Self {
        match e {
            ParseError::UnknownCommand => Reply::UnknownCommand,
            ParseError::Syntax(usage) => Reply::Syntax(usage),
            ParseError::Sender(_) => Reply::BadSender,
            ParseError::Recipient(_) => Reply::BadRecipient,
            ParseError::Param(p) => Reply::Parameter(p),
        }
    }
}

/// The one place body failures become replies.
impl From<BodyError> for Reply<'static> {
    fn from(e: BodyError) -> Self {
        match e {
            BodyError::TooBig => Reply::MessageTooBig,
            BodyError::BareLineEnding => Reply::BareLineEnding,
            BodyError::TooManyHops => Reply::TooManyHops,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::smtp::param::Keyword;

    fn text(r: Reply<'_>) -> String {
        String::from_utf8(r.to_bytes()).unwrap()
    }

    #[test]
    fn greeting_and_helo_have_no_enhanced_code() {
        assert_eq!(
            text(Reply::Greeting { host: "mx.test" }),
            "220 mx.test ESMTP spate\r\n"
        );
        assert_eq!(text(Reply::Helo { host: "mx.test" }), "250 mx.test\r\n");
    }

    #[test]
    fn ehlo_lists_extensions() {
        let r = text(Reply::Ehlo {
            host: "mx.test",
            max_size: 1000,
            starttls: true,
            auth: false,
        });
        assert_eq!(
            r,
            "250-mx.test\r\n250-PIPELINING\r\n250-SIZE 1000\r\n250-8BITMIME\r\n\
             250-ENHANCEDSTATUSCODES\r\n250-SMTPUTF8\r\n250-CHUNKING\r\n250-DSN\r\n250 STARTTLS\r\n"
        );
        let r = text(Reply::Ehlo {
            host: "mx.test",
            max_size: 1,
            starttls: false,
            auth: false,
        });
        assert!(r.ends_with("250 DSN\r\n") && !r.contains("STARTTLS"));
        let r = text(Reply::Ehlo {
            host: "mx.test",
            max_size: 1,
            starttls: false,
            auth: true,
        });
        assert!(r.ends_with("250-DSN\r\n250 AUTH PLAIN LOGIN\r\n"), "{r}");
    }

    #[test]
    fn every_other_reply_has_a_matching_enhanced_code() {
        let all = [
            Reply::Ok,
            Reply::SenderOk,
            Reply::RecipientOk,
            Reply::Queued { id: "ABC\r\n123" },
            Reply::ChunkReceived { octets: 42 },
            Reply::CannotVrfy,
            Reply::Help,
            Reply::Bye,
            Reply::ReadyForTls,
            Reply::ShuttingDown { host: "h" },
            Reply::Timeout { host: "h" },
            Reply::TooManyErrors { host: "h" },
            Reply::OutputOverflow { host: "h" },
            Reply::LineTooLong,
            Reply::BareLineFeed,
            Reply::UnknownCommand,
            Reply::NotImplemented,
            Reply::Syntax(Usage::Mail),
            Reply::BadSender,
            Reply::BadRecipient,
            Reply::Parameter(ParamError::Syntax),
            Reply::Parameter(ParamError::Unknown),
            Reply::Parameter(ParamError::Duplicate),
            Reply::Parameter(ParamError::BadValue(Keyword::Size)),
            Reply::Parameter(ParamError::Unsupported(Keyword::Body)),
            Reply::ParametersNeedEhlo,
            Reply::BadSequence(Sequence::NeedMail),
            Reply::MessageTooBig,
            Reply::NonAsciiAddress,
            Reply::RelayDenied { address: "a@b" },
            Reply::AddressLiteralRefused {
                address: "a@[192.0.2.1]",
            },
            Reply::TooManyRecipients,
            Reply::LargerThanQuota { address: "a@b" },
            Reply::NoValidRecipients,
            Reply::BareLineEnding,
            Reply::TooManyHops,
            Reply::DiskFull,
            Reply::StoreFailed,
        ];
        for r in all {
            let t = text(r);
            let b = t.as_bytes();
            assert_eq!(b[3], b' ', "{t}");
            assert_eq!(b[0], b[4], "class of code and status differ: {t}");
            assert_eq!(b[5], b'.', "{t}");
            assert!(t.ends_with("\r\n") && t.matches("\r\n").count() == 1, "{t}");
            assert_eq!(u32::from(r.code()), t[..3].parse::<u32>().unwrap());
        }
    }

    #[test]
    fn exact_texts_the_glue_and_clients_rely_on() {
        assert_eq!(text(Reply::LineTooLong), "500 5.5.2 Line too long\r\n");
        assert_eq!(
            text(Reply::Queued { id: "Q1" }),
            "250 2.0.0 Ok: queued as Q1\r\n"
        );
        assert_eq!(
            text(Reply::Queued { id: "Q\r\n2" }),
            "250 2.0.0 Ok: queued as Q2\r\n"
        );
        assert_eq!(
            text(Reply::ChunkReceived { octets: 7 }),
            "250 2.0.0 7 octets received\r\n"
        );
        assert_eq!(
            text(Reply::RelayDenied {
                address: "a@b.example"
            }),
            "554 5.7.1 <a@b.example>: Relay access denied\r\n"
        );
        assert_eq!(text(Reply::ReadyForTls), "220 2.0.0 Ready to start TLS\r\n");
        assert_eq!(
            text(Reply::Timeout { host: "h" }),
            "421 4.4.2 h Error: timeout exceeded\r\n"
        );
        assert!(TOO_MANY_CONNECTIONS.starts_with(b"421 4.7.0 "));
        assert!(TOO_MANY_CONNECTIONS_FROM_IP.starts_with(b"421 4.7.0 "));
        assert!(TOO_MANY_CONNECTIONS_FROM_IP.ends_with(b"\r\n"));
    }
}
