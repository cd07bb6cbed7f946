//! The IMAP4rev1/IMAP4rev2 protocol core, sans-IO: bytes in, typed commands out, replies encoded
//! (RFC 3501, RFC 9051 and the extensions named in each file). It refuses to do any I/O, keep
//! time, check passwords or read mailboxes.
//!
//! Map: [`reader`] frames received bytes into complete commands (literals,
//! continuation requests, bounds, discarding refused input), [`parser`]
//! turns one command into a [`Command`] borrowing from the reader's
//! buffer, [`command`] holds the command types, [`response`] encodes
//! replies and holds the fixed reply texts, [`mime`] gives ENVELOPE,
//! BODY/BODYSTRUCTURE and `BODY[section]` byte ranges of stored messages,
//! [`view`] is a session's view of its selected mailbox (sequence numbers,
//! UIDs, `\Recent`, the untagged updates it owes). [`session`] executes
//! commands against the mailbox store through a [`Backend`]; it uses
//! [`authenticated`] (mailbox commands), [`selected`] (message commands
//! and view sync), [`fetch`], [`search`], [`list`] (LIST matching),
//! [`flag`] (IMAP and Maildir flags), [`name`] (modified UTF-7 names) and
//! [`reply`] (the session's texts, store errors as response codes);
//! [`sort`] and [`thread`] order search matches (RFC 5256), [`quota`]
//! answers the RFC 9208 commands.
//! [`condstore`] holds RFC 7162 CONDSTORE/QRESYNC's pieces.

// One module per line, sorted: parallel branches add their own lines.
pub mod authenticated;
pub mod command;
pub mod condstore;
pub mod fetch;
pub mod flag;
pub mod list;
pub mod mime;
pub mod name;
pub mod parser;
pub mod quota;
pub mod reader;
pub mod reply;
pub mod response;
pub mod search;
pub mod selected;
pub mod session;
pub mod sort;
pub mod thread;
pub mod view;

#[cfg(test)]
mod session_tests;
#[cfg(test)]
mod tests;

pub use command::{
    Command, CommandBody, FetchAttribute, FetchItems, Flag, IString, Mailbox, SearchKey,
    SequenceSet,
};
pub use parser::{parse_command, CommandError, ParseError};
pub use reader::{CommandReader, LineStep, ReaderConfig, Rejection, Step};
pub use session::{Backend, ImapConfig, Outcome, PeerInfo, Session};
