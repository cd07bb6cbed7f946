//! Turns one POP3 command line (CRLF already removed) into a typed [`Command`] borrowing from
//! the line. It refuses to know session state, limits or policy, and never allocates.
//!
//! RFC 1939 3: a keyword of three or four characters, case-insensitive,
//! then arguments separated by single spaces. We also take runs of spaces
//! and trailing spaces, which some clients send, except in PASS, whose
//! argument is the rest of the line (RFC 1939 7: a password may hold
//! spaces).

use thiserror::Error;

/// A message number as the client wrote it: 1-based, not yet checked
/// against the maildrop (0 parses, and is then "no such message").
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MessageNumber(pub u32);

/// One parsed command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command<'a> {
    /// RFC 1939 7. The mailbox name: one printable token.
    User(&'a str),
    /// RFC 1939 7. The rest of the line, spaces included.
    Pass(&'a str),
    /// RFC 5034 4. `mechanism` is as sent (compare case-insensitively);
    /// `initial` is the raw initial response ("=" for an empty one).
    /// `None` mechanism is the old RFC 1734 form "AUTH" alone, which asks
    /// for the list of mechanisms.
    Auth {
        mechanism: Option<&'a str>,
        initial: Option<&'a str>,
    },
    Stat,
    List(Option<MessageNumber>),
    Retr(MessageNumber),
    Dele(MessageNumber),
    Noop,
    Rset,
    Quit,
    /// RFC 1939 7: TOP msg n.
    Top(MessageNumber, u32),
    Uidl(Option<MessageNumber>),
    /// RFC 2449 5.
    Capa,
    /// RFC 2595 4.
    Stls,
}

/// Which command's syntax was wrong, so the reply can show the right form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Usage {
    User,
    Pass,
    Auth,
    List,
    Retr,
    Dele,
    Top,
    Uidl,
    NoArguments,
}

impl Usage {
    /// The correct form, for the -ERR reply.
    pub fn text(self) -> &'static str {
        match self {
            Usage::User => "USER name",
            Usage::Pass => "PASS password",
            Usage::Auth => "AUTH mechanism [initial-response]",
            Usage::List => "LIST [msg]",
            Usage::Retr => "RETR msg",
            Usage::Dele => "DELE msg",
            Usage::Top => "TOP msg lines",
            Usage::Uidl => "UIDL [msg]",
            Usage::NoArguments => "command takes no arguments",
        }
    }
}

/// Why a line is not a valid command. Each is the client's error, answered
/// -ERR (the session maps them through its reply table).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum ParseError {
    #[error("unknown command")]
    UnknownCommand,
    #[error("syntax: {}", .0.text())]
    Syntax(Usage),
    /// Not a decimal number that fits 32 bits (signs, junk, overflow).
    #[error("invalid number")]
    InvalidNumber,
    /// Bytes outside printable ASCII where a token is expected, or an
    /// argument that is not UTF-8.
    #[error("invalid characters in command")]
    InvalidCharacters,
}

/// Parses one line without its CRLF.
pub fn parse_command(line: &[u8]) -> Result<Command<'_>, ParseError> {
    let (keyword, rest) = match line.iter().position(|&b| b == b' ') {
        Some(k) => (&line[..k], &line[k + 1..]),
        None => (line, &b""[..]),
    };
    if keyword.len() > 4 || keyword.is_empty() {
        return Err(ParseError::UnknownCommand);
    }
    let mut upper = [0u8; 4];
    upper[..keyword.len()].copy_from_slice(keyword);
    upper.make_ascii_uppercase();
    let keyword = &upper[..keyword.len()];
    if keyword == b"PASS" {
        // The whole rest is the password; an empty one is still a syntax error.
        let password = std::str::from_utf8(rest).map_err(|_| ParseError::InvalidCharacters)?;
        if password.is_empty() {
            return Err(ParseError::Syntax(Usage::Pass));
        }
        return Ok(Command::Pass(password));
    }
    let args = Args::new(rest)?;
    match keyword {
        b"USER" => match args.take::<1>() {
            Some([name]) => Ok(Command::User(name)),
            None => Err(ParseError::Syntax(Usage::User)),
        },
        b"AUTH" => match args.count() {
            0 => Ok(Command::Auth {
                mechanism: None,
                initial: None,
            }),
            1 | 2 => {
                let mut it = args.iter();
                Ok(Command::Auth {
                    mechanism: it.next(),
                    initial: it.next(),
                })
            }
            _ => Err(ParseError::Syntax(Usage::Auth)),
        },
        b"STAT" => args.none(Command::Stat),
        b"LIST" => Ok(Command::List(args.optional_number(Usage::List)?)),
        b"RETR" => Ok(Command::Retr(args.number(Usage::Retr)?)),
        b"DELE" => Ok(Command::Dele(args.number(Usage::Dele)?)),
        b"NOOP" => args.none(Command::Noop),
        b"RSET" => args.none(Command::Rset),
        b"QUIT" => args.none(Command::Quit),
        b"TOP" => match args.take::<2>() {
            Some([msg, lines]) => Ok(Command::Top(
                MessageNumber(parse_number(msg)?),
                parse_number(lines)?,
            )),
            None => Err(ParseError::Syntax(Usage::Top)),
        },
        b"UIDL" => Ok(Command::Uidl(args.optional_number(Usage::Uidl)?)),
        b"CAPA" => args.none(Command::Capa),
        b"STLS" => args.none(Command::Stls),
        _ => Err(ParseError::UnknownCommand),
    }
}

/// RFC 1939 3: a decimal number. Digits only (no sign, no spaces); too
/// many digits for 32 bits is an error, never a wrap.
fn parse_number(text: &str) -> Result<u32, ParseError> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ParseError::InvalidNumber);
    }
    text.parse().map_err(|_| ParseError::InvalidNumber)
}

/// The space-separated arguments after a keyword: printable ASCII only.
#[derive(Debug, Clone, Copy)]
struct Args<'a> {
    text: &'a str,
}

impl<'a> Args<'a> {
    fn new(rest: &'a [u8]) -> Result<Self, ParseError> {
        if !rest.iter().all(|&b| b == b' ' || b.is_ascii_graphic()) {
            return Err(ParseError::InvalidCharacters);
        }
        // Checked just above: printable ASCII is UTF-8.
        let text = std::str::from_utf8(rest).map_err(|_| ParseError::InvalidCharacters)?;
        Ok(Args { text })
    }

    fn iter(self) -> impl Iterator<Item = &'a str> {
        self.text.split(' ').filter(|s| !s.is_empty())
    }

    fn count(self) -> usize {
        self.iter().count()
    }

    /// Exactly `N` arguments.
    fn take<const N: usize>(self) -> Option<[&'a str; N]> {
        let mut out = [""; N];
        let mut it = self.iter();
        for slot in &mut out {
            *slot = it.next()?;
        }
        it.next().is_none().then_some(out)
    }

    fn none(self, command: Command<'a>) -> Result<Command<'a>, ParseError> {
        match self.count() {
            0 => Ok(command),
            _ => Err(ParseError::Syntax(Usage::NoArguments)),
        }
    }

    fn number(self, usage: Usage) -> Result<MessageNumber, ParseError> {
        match self.take::<1>() {
            Some([n]) => Ok(MessageNumber(parse_number(n)?)),
            None => Err(ParseError::Syntax(usage)),
        }
    }

    fn optional_number(self, usage: Usage) -> Result<Option<MessageNumber>, ParseError> {
        match self.count() {
            0 => Ok(None),
            _ => self.number(usage).map(Some),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(line: &str) -> Result<Command<'_>, ParseError> {
        parse_command(line.as_bytes())
    }

    #[test]
    fn keywords_are_case_insensitive() {
        assert_eq!(parse("stat"), Ok(Command::Stat));
        assert_eq!(parse("StAt"), Ok(Command::Stat));
        assert_eq!(parse("capa"), Ok(Command::Capa));
        assert_eq!(parse("stls"), Ok(Command::Stls));
        assert_eq!(parse("quit"), Ok(Command::Quit));
        assert_eq!(parse("noop"), Ok(Command::Noop));
        assert_eq!(parse("rset"), Ok(Command::Rset));
    }

    #[test]
    fn unknown_commands() {
        for line in ["", "APOP a b", "HELO", "STATS", "XYZZY", " STAT", "LAST"] {
            assert_eq!(parse(line), Err(ParseError::UnknownCommand), "{line:?}");
        }
    }

    #[test]
    fn message_numbers() {
        assert_eq!(parse("LIST"), Ok(Command::List(None)));
        assert_eq!(parse("LIST 1"), Ok(Command::List(Some(MessageNumber(1)))));
        assert_eq!(parse("list  2 "), Ok(Command::List(Some(MessageNumber(2)))));
        assert_eq!(parse("RETR 007"), Ok(Command::Retr(MessageNumber(7))));
        assert_eq!(parse("DELE 0"), Ok(Command::Dele(MessageNumber(0))));
        assert_eq!(
            parse("RETR 4294967295"),
            Ok(Command::Retr(MessageNumber(u32::MAX)))
        );
        for junk in [
            "RETR 4294967296",
            "RETR 99999999999999999999999",
            "RETR -1",
            "RETR +1",
            "RETR 1a",
            "RETR 0x1",
            "LIST one",
            "UIDL 1.0",
            "TOP 1 -1",
            "TOP 1 x",
        ] {
            assert_eq!(parse(junk), Err(ParseError::InvalidNumber), "{junk:?}");
        }
        assert_eq!(parse("RETR"), Err(ParseError::Syntax(Usage::Retr)));
        assert_eq!(parse("RETR 1 2"), Err(ParseError::Syntax(Usage::Retr)));
        assert_eq!(parse("LIST 1 2"), Err(ParseError::Syntax(Usage::List)));
        assert_eq!(parse("TOP 1"), Err(ParseError::Syntax(Usage::Top)));
        assert_eq!(parse("TOP 1 2 3"), Err(ParseError::Syntax(Usage::Top)));
        assert_eq!(parse("TOP 3 10"), Ok(Command::Top(MessageNumber(3), 10)));
        assert_eq!(parse("STAT 1"), Err(ParseError::Syntax(Usage::NoArguments)));
    }

    #[test]
    fn user_and_pass() {
        assert_eq!(parse("USER tim"), Ok(Command::User("tim")));
        assert_eq!(parse("USER"), Err(ParseError::Syntax(Usage::User)));
        assert_eq!(parse("USER a b"), Err(ParseError::Syntax(Usage::User)));
        assert_eq!(parse("USER t\x01m"), Err(ParseError::InvalidCharacters));
        assert_eq!(parse("PASS a b  c "), Ok(Command::Pass("a b  c ")));
        assert_eq!(parse("pass ünïcödé"), Ok(Command::Pass("ünïcödé")));
        assert_eq!(parse("PASS"), Err(ParseError::Syntax(Usage::Pass)));
        assert_eq!(parse("PASS "), Err(ParseError::Syntax(Usage::Pass)));
        assert_eq!(
            parse_command(b"PASS \xff"),
            Err(ParseError::InvalidCharacters)
        );
    }

    #[test]
    fn auth_forms() {
        assert_eq!(
            parse("AUTH"),
            Ok(Command::Auth {
                mechanism: None,
                initial: None
            })
        );
        assert_eq!(
            parse("auth plain"),
            Ok(Command::Auth {
                mechanism: Some("plain"),
                initial: None
            })
        );
        assert_eq!(
            parse("AUTH PLAIN AHRpbQB0YW5zdGFhZg=="),
            Ok(Command::Auth {
                mechanism: Some("PLAIN"),
                initial: Some("AHRpbQB0YW5zdGFhZg==")
            })
        );
        assert_eq!(parse("AUTH A B C"), Err(ParseError::Syntax(Usage::Auth)));
    }
}
