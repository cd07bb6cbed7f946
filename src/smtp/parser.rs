//! Turns one SMTP command line into a typed [`Command`] that borrows from the receive buffer.
//! It refuses to know session state, limits or policy, and never allocates.

use thiserror::Error;

use super::address::{
    parse_forward_path, parse_reverse_path, AddressError, ForwardPath, ReversePath,
};
use super::param::{parse_mail_params, parse_rcpt_params, MailParams, ParamError, RcptParams};

/// Longest HELO/EHLO argument we take: a domain (RFC 5321 4.5.3.1.2) or an
/// address literal, which is shorter.
const MAX_HELO_LENGTH: usize = 255;

/// One parsed command. Everything borrowed points into the line given to
/// [`parse_command`], so nothing is copied until a value is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command<'a> {
    /// The client name (a domain or address literal; printable ASCII).
    Ehlo(&'a str),
    Helo(&'a str),
    /// RFC 2033 4.1: LMTP's greeting command, EHLO's counterpart.
    Lhlo(&'a str),
    Mail {
        from: ReversePath<'a>,
        params: MailParams<'a>,
    },
    Rcpt {
        to: ForwardPath<'a>,
        params: RcptParams<'a>,
    },
    Data,
    /// RFC 3030: `size` octets follow the command line, raw.
    Bdat {
        size: u64,
        last: bool,
    },
    Rset,
    Noop,
    Quit,
    Vrfy,
    /// Recognised so it can be answered "not implemented" (RFC 5321 4.1.1.7
    /// allows refusing it), not "unknown".
    Expn,
    Help,
    StartTls,
    /// RFC 4954 4: `AUTH mechanism [initial-response]`; the response is
    /// still base64 (or `=`), decoded by the SASL exchange.
    Auth {
        mechanism: &'a str,
        initial: Option<&'a [u8]>,
    },
}

/// Which command's syntax was wrong, so the reply can show the right form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Usage {
    Ehlo,
    Helo,
    Lhlo,
    Mail,
    Rcpt,
    Bdat,
    Vrfy,
    Auth,
    NoArguments,
}

impl Usage {
    /// The correct form, for the 501 reply.
    pub fn text(self) -> &'static str {
        match self {
            Usage::Ehlo => "EHLO hostname",
            Usage::Helo => "HELO hostname",
            Usage::Lhlo => "LHLO hostname",
            Usage::Mail => "MAIL FROM:<address> [parameters]",
            Usage::Rcpt => "RCPT TO:<address> [parameters]",
            Usage::Bdat => "BDAT size [LAST]",
            Usage::Vrfy => "VRFY address",
            Usage::Auth => "AUTH mechanism [initial-response]",
            Usage::NoArguments => "command takes no arguments",
        }
    }
}

/// Why a line is not a valid command. All are permanent for that line; the
/// session maps each to its reply through `Reply::from`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum ParseError {
    #[error("command not recognized")]
    UnknownCommand,
    #[error("syntax: {}", .0.text())]
    Syntax(Usage),
    #[error("bad sender address: {0}")]
    Sender(AddressError),
    #[error("bad recipient address: {0}")]
    Recipient(AddressError),
    #[error("bad parameter: {0}")]
    Param(#[from] ParamError),
}

/// Parses one command line. A trailing CRLF (or LF) is tolerated and
/// stripped; the session normally passes the line without it. Verbs are
/// case-insensitive (RFC 5321 2.4).
pub fn parse_command(line: &[u8]) -> Result<Command<'_>, ParseError> {
    let line = line
        .strip_suffix(b"\r\n")
        .or_else(|| line.strip_suffix(b"\n"))
        .unwrap_or(line);
    let (verb, args) = match line.iter().position(|&b| b == b' ') {
        Some(sp) => (&line[..sp], &line[sp + 1..]),
        None => (line, &b""[..]),
    };
    let is = |name: &[u8]| verb.eq_ignore_ascii_case(name);
    if is(b"EHLO") {
        helo_name(args)
            .map(Command::Ehlo)
            .ok_or(ParseError::Syntax(Usage::Ehlo))
    } else if is(b"HELO") {
        helo_name(args)
            .map(Command::Helo)
            .ok_or(ParseError::Syntax(Usage::Helo))
    } else if is(b"LHLO") {
        helo_name(args)
            .map(Command::Lhlo)
            .ok_or(ParseError::Syntax(Usage::Lhlo))
    } else if is(b"MAIL") {
        parse_mail(args)
    } else if is(b"RCPT") {
        parse_rcpt(args)
    } else if is(b"DATA") {
        no_args(args, Command::Data)
    } else if is(b"BDAT") {
        parse_bdat(args)
    } else if is(b"RSET") {
        no_args(args, Command::Rset)
    } else if is(b"NOOP") {
        // RFC 5321 4.1.1.9: any argument is ignored.
        Ok(Command::Noop)
    } else if is(b"QUIT") {
        no_args(args, Command::Quit)
    } else if is(b"VRFY") {
        if trim_spaces(args).is_empty() {
            Err(ParseError::Syntax(Usage::Vrfy))
        } else {
            Ok(Command::Vrfy)
        }
    } else if is(b"EXPN") {
        Ok(Command::Expn)
    } else if is(b"HELP") {
        Ok(Command::Help)
    } else if is(b"STARTTLS") {
        // RFC 3207 4: "STARTTLS" with no parameters.
        no_args(args, Command::StartTls)
    } else if is(b"AUTH") {
        parse_auth(args)
    } else {
        Err(ParseError::UnknownCommand)
    }
}

fn trim_spaces(mut s: &[u8]) -> &[u8] {
    while let [b' ', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' '] = s {
        s = rest;
    }
    s
}

/// Trailing spaces are tolerated; anything else is a syntax error.
/// RFC 4954 4: a mechanism name (RFC 4422 3.1: 1 to 20 of A-Z 0-9 - _,
/// taken case-insensitively) and an optional base64 or "=" response.
fn parse_auth(args: &[u8]) -> Result<Command<'_>, ParseError> {
    let args = trim_spaces(args);
    let (mechanism, initial) = match args.iter().position(|&b| b == b' ') {
        Some(sp) => (&args[..sp], Some(trim_spaces(&args[sp + 1..]))),
        None => (args, None),
    };
    let valid_name = (1..=20).contains(&mechanism.len())
        && mechanism
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    let valid_response = initial.is_none_or(|r| {
        !r.is_empty()
            && r.iter()
                .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'='))
    });
    if !valid_name || !valid_response {
        return Err(ParseError::Syntax(Usage::Auth));
    }
    // Checked just above: ASCII only.
    let mechanism = std::str::from_utf8(mechanism).map_err(|_| ParseError::Syntax(Usage::Auth))?;
    Ok(Command::Auth { mechanism, initial })
}

fn no_args(args: &[u8], cmd: Command<'static>) -> Result<Command<'static>, ParseError> {
    if trim_spaces(args).is_empty() {
        Ok(cmd)
    } else {
        Err(ParseError::Syntax(Usage::NoArguments))
    }
}

/// RFC 5321 4.1.1.1: `EHLO SP ( Domain / address-literal )`. Many clients
/// send names that are not strictly domains (underscores, bare IPs), so any
/// single printable-ASCII token is taken; it only ever reaches our
/// Received header, where printable ASCII without spaces is safe.
fn helo_name(args: &[u8]) -> Option<&str> {
    let name = trim_spaces(args);
    if name.is_empty()
        || name.len() > MAX_HELO_LENGTH
        || !name.iter().all(|&b| (33..=126).contains(&b))
    {
        return None;
    }
    std::str::from_utf8(name).ok()
}

/// Skips a case-insensitive `FROM:`/`TO:` and the space some clients put
/// after the colon (tolerated as Postfix does).
fn after_keyword<'a>(args: &'a [u8], keyword: &[u8]) -> Option<&'a [u8]> {
    let head = args.get(..keyword.len())?;
    if !head.eq_ignore_ascii_case(keyword) {
        return None;
    }
    let mut rest = &args[keyword.len()..];
    while let [b' ', tail @ ..] = rest {
        rest = tail;
    }
    Some(rest)
}

/// `MAIL FROM:<reverse-path> [SP Mail-parameters]` (RFC 5321 4.1.1.2).
fn parse_mail(args: &[u8]) -> Result<Command<'_>, ParseError> {
    let rest = after_keyword(args, b"FROM:").ok_or(ParseError::Syntax(Usage::Mail))?;
    let (from, rest) = parse_reverse_path(rest).map_err(ParseError::Sender)?;
    if !rest.is_empty() && rest[0] != b' ' {
        return Err(ParseError::Syntax(Usage::Mail));
    }
    let params = parse_mail_params(rest)?;
    Ok(Command::Mail { from, params })
}

/// `RCPT TO:<forward-path> [SP Rcpt-parameters]` (RFC 5321 4.1.1.3).
fn parse_rcpt(args: &[u8]) -> Result<Command<'_>, ParseError> {
    let rest = after_keyword(args, b"TO:").ok_or(ParseError::Syntax(Usage::Rcpt))?;
    let (to, rest) = parse_forward_path(rest).map_err(ParseError::Recipient)?;
    if !rest.is_empty() && rest[0] != b' ' {
        return Err(ParseError::Syntax(Usage::Rcpt));
    }
    let params = parse_rcpt_params(rest)?;
    Ok(Command::Rcpt { to, params })
}

/// RFC 3030 2: `"BDAT" SP chunk-size [ SP end-marker ]`,
/// `chunk-size = 1*DIGIT`, `end-marker = "LAST"`. A size beyond u64
/// saturates (and is then simply too big).
fn parse_bdat(args: &[u8]) -> Result<Command<'static>, ParseError> {
    let bad = ParseError::Syntax(Usage::Bdat);
    let mut words = trim_spaces(args)
        .split(|&b| b == b' ')
        .filter(|w| !w.is_empty());
    let size = words.next().ok_or(bad)?;
    if !size.iter().all(u8::is_ascii_digit) {
        return Err(bad);
    }
    let size = size.iter().fold(0u64, |acc, &d| {
        acc.saturating_mul(10).saturating_add(u64::from(d - b'0'))
    });
    let last = match words.next() {
        None => false,
        Some(w) if w.eq_ignore_ascii_case(b"LAST") => true,
        Some(_) => return Err(bad),
    };
    if words.next().is_some() {
        return Err(bad);
    }
    Ok(Command::Bdat { size, last })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::{BodyType, DsnReturn};
    use crate::smtp::address::{Domain, Mailbox};

    fn ok(line: &str) -> Command<'_> {
        match parse_command(line.as_bytes()) {
            Ok(c) => c,
            Err(e) => panic!("{line:?}: {e}"),
        }
    }

    fn err(line: &str) -> ParseError {
        match parse_command(line.as_bytes()) {
            Err(e) => e,
            Ok(c) => panic!("{line:?} parsed as {c:?}"),
        }
    }

    #[test]
    fn simple_verbs_any_case() {
        assert_eq!(ok("DATA"), Command::Data);
        assert_eq!(ok("data"), Command::Data);
        assert_eq!(ok("DaTa\r\n"), Command::Data);
        assert_eq!(ok("RSET"), Command::Rset);
        assert_eq!(ok("NOOP"), Command::Noop);
        assert_eq!(ok("noop anything at all"), Command::Noop);
        assert_eq!(ok("QUIT"), Command::Quit);
        assert_eq!(ok("QUIT  "), Command::Quit);
        assert_eq!(ok("HELP"), Command::Help);
        assert_eq!(ok("HELP mail"), Command::Help);
        assert_eq!(ok("VRFY bob"), Command::Vrfy);
        assert_eq!(ok("EXPN list"), Command::Expn);
        assert_eq!(ok("STARTTLS"), Command::StartTls);
        assert_eq!(ok("starttls\n"), Command::StartTls);
    }

    #[test]
    fn argument_errors() {
        assert_eq!(err("DATA x"), ParseError::Syntax(Usage::NoArguments));
        assert_eq!(err("QUIT now"), ParseError::Syntax(Usage::NoArguments));
        assert_eq!(err("RSET x"), ParseError::Syntax(Usage::NoArguments));
        assert_eq!(err("STARTTLS x"), ParseError::Syntax(Usage::NoArguments));
        assert_eq!(err("VRFY"), ParseError::Syntax(Usage::Vrfy));
        assert_eq!(err("VRFY   "), ParseError::Syntax(Usage::Vrfy));
    }

    #[test]
    fn unknown_commands() {
        for line in [
            "",
            " ",
            "FOO",
            "MAILFROM:<a@b>",
            "DATA\r",
            "DAT",
            "DATAX",
            "\u{0}",
            "ÉHLO x",
            "AUTHX PLAIN",
        ] {
            assert_eq!(err(line), ParseError::UnknownCommand, "{line:?}");
        }
    }

    #[test]
    fn auth() {
        assert_eq!(
            ok("AUTH PLAIN"),
            Command::Auth {
                mechanism: "PLAIN",
                initial: None
            }
        );
        assert_eq!(
            ok("auth login  dXNlcg=="),
            Command::Auth {
                mechanism: "login",
                initial: Some(&b"dXNlcg=="[..])
            }
        );
        assert_eq!(
            ok("AUTH PLAIN ="),
            Command::Auth {
                mechanism: "PLAIN",
                initial: Some(&b"="[..])
            }
        );
        for bad in [
            "AUTH",
            "AUTH  ",
            "AUTH PL@IN",
            "AUTH PLAIN a b",
            "AUTH ABCDEFGHIJKLMNOPQRSTU",
        ] {
            assert_eq!(err(bad), ParseError::Syntax(Usage::Auth), "{bad:?}");
        }
    }

    #[test]
    fn ehlo_and_helo() {
        assert_eq!(ok("EHLO client.example"), Command::Ehlo("client.example"));
        assert_eq!(ok("ehlo [192.0.2.1]"), Command::Ehlo("[192.0.2.1]"));
        assert_eq!(ok("HELO  x_y.example "), Command::Helo("x_y.example"));
        assert_eq!(ok("lhlo mta.example"), Command::Lhlo("mta.example"));
        assert_eq!(err("LHLO"), ParseError::Syntax(Usage::Lhlo));
        assert_eq!(err("EHLO"), ParseError::Syntax(Usage::Ehlo));
        assert_eq!(err("EHLO "), ParseError::Syntax(Usage::Ehlo));
        assert_eq!(err("EHLO a b"), ParseError::Syntax(Usage::Ehlo));
        assert_eq!(err("HELO a\tb"), ParseError::Syntax(Usage::Helo));
        assert_eq!(err("HELO a\rb"), ParseError::Syntax(Usage::Helo));
        assert_eq!(err("EHLO h\u{e9}"), ParseError::Syntax(Usage::Ehlo));
        let long = format!("EHLO {}", "a".repeat(256));
        assert_eq!(err(&long), ParseError::Syntax(Usage::Ehlo));
    }

    #[test]
    fn mail_forms() {
        let Command::Mail { from, params } = ok("MAIL FROM:<a@b.example>") else {
            panic!("not MAIL")
        };
        assert_eq!(
            from,
            ReversePath::Mailbox(Mailbox {
                address: "a@b.example",
                local_part: "a",
                domain: Domain::Name("b.example"),
            })
        );
        assert_eq!(params, MailParams::default());
        assert!(matches!(
            ok("mail from:<>"),
            Command::Mail {
                from: ReversePath::Null,
                ..
            }
        ));
        // Tolerated: a space after the colon (Postfix does the same).
        assert!(matches!(
            ok("MAIL FROM: <a@b.example>"),
            Command::Mail { .. }
        ));
        let Command::Mail { params, .. } =
            ok("MAIL FROM:<a@b.example> SIZE=123 BODY=8BITMIME SMTPUTF8 RET=FULL ENVID=x")
        else {
            panic!("not MAIL")
        };
        assert_eq!(params.size, Some(123));
        assert_eq!(params.body, Some(BodyType::EightBitMime));
        assert!(params.smtputf8);
        assert_eq!(params.ret, Some(DsnReturn::Full));
        assert_eq!(params.envid, Some("x"));
    }

    #[test]
    fn mail_errors() {
        assert_eq!(err("MAIL"), ParseError::Syntax(Usage::Mail));
        assert_eq!(err("MAIL TO:<a@b>"), ParseError::Syntax(Usage::Mail));
        assert_eq!(
            err("MAIL FROM:"),
            ParseError::Sender(AddressError::NotBracketed)
        );
        assert_eq!(
            err("MAIL FROM:a@b"),
            ParseError::Sender(AddressError::NotBracketed)
        );
        assert_eq!(err("MAIL FROM:<a@b>x"), ParseError::Syntax(Usage::Mail));
        assert_eq!(
            err("MAIL FROM:<Postmaster>"),
            ParseError::Sender(AddressError::MissingDomain)
        );
        assert_eq!(
            err("MAIL FROM:<a@b> FOO=1"),
            ParseError::Param(ParamError::Unknown)
        );
        assert_eq!(
            err("MAIL FROM:<a@b> SIZE=1 SIZE=1"),
            ParseError::Param(ParamError::Duplicate)
        );
    }

    #[test]
    fn rcpt_forms() {
        let Command::Rcpt { to, params } = ok("RCPT TO:<@r.example:u@d.example> NOTIFY=NEVER")
        else {
            panic!("not RCPT")
        };
        let ForwardPath::Mailbox(m) = to else {
            panic!("not a mailbox")
        };
        assert_eq!(m.address, "u@d.example");
        assert!(params.notify.unwrap().never);
        assert_eq!(
            ok("rcpt to:<postmaster>"),
            Command::Rcpt {
                to: ForwardPath::Postmaster("postmaster"),
                params: RcptParams::default()
            }
        );
        assert!(matches!(
            ok("RCPT TO: <u@[IPv6:::1]>"),
            Command::Rcpt { .. }
        ));
    }

    #[test]
    fn rcpt_errors() {
        assert_eq!(
            err("RCPT TO:<>"),
            ParseError::Recipient(AddressError::NullPath)
        );
        assert_eq!(
            err("RCPT TO:<bob>"),
            ParseError::Recipient(AddressError::MissingDomain)
        );
        assert_eq!(err("RCPT FROM:<a@b>"), ParseError::Syntax(Usage::Rcpt));
        assert_eq!(
            err("RCPT TO:<a@b> SIZE=1"),
            ParseError::Param(ParamError::Unknown)
        );
        assert_eq!(
            err("RCPT TO:<a@b>NOTIFY=NEVER"),
            ParseError::Syntax(Usage::Rcpt)
        );
    }

    #[test]
    fn bdat_forms() {
        assert_eq!(
            ok("BDAT 0 LAST"),
            Command::Bdat {
                size: 0,
                last: true
            }
        );
        assert_eq!(
            ok("bdat 1000"),
            Command::Bdat {
                size: 1000,
                last: false
            }
        );
        assert_eq!(
            ok("BDAT 12 last"),
            Command::Bdat {
                size: 12,
                last: true
            }
        );
        assert_eq!(
            ok("BDAT 999999999999999999999999"),
            Command::Bdat {
                size: u64::MAX,
                last: false
            }
        );
        for bad in [
            "BDAT",
            "BDAT LAST",
            "BDAT -1",
            "BDAT 1 FIRST",
            "BDAT 1 LAST x",
            "BDAT 0x10",
        ] {
            assert_eq!(err(bad), ParseError::Syntax(Usage::Bdat), "{bad}");
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let mut state = 0x1234_5678u32;
        let mut line = Vec::new();
        for _ in 0..20_000 {
            line.clear();
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            let len = (state % 40) as usize;
            let prefixes: [&[u8]; 5] = [b"MAIL FROM:<", b"RCPT TO:<", b"BDAT ", b"EHLO ", b""];
            line.extend_from_slice(prefixes[(state % 5) as usize]);
            for _ in 0..len {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                let alphabet = b"<>@.:,\"\\[]aZ9 =+-\r\n\x80\xff;";
                line.push(alphabet[state as usize % alphabet.len()]);
            }
            let _ = parse_command(&line);
        }
    }
}
