//! The POP3 server protocol core, sans-IO: bytes in, replies and requests out (RFC 1939, RFC 2449
//! CAPA and response codes, RFC 5034 SASL PLAIN, RFC 2595 STLS). It refuses to do any I/O, keep
//! time, check passwords or read mailboxes; the driver does, answering the session's requests.
//!
//! Map: [`mod@line`] splits input into bounded lines, [`parser`] turns a line
//! into a [`Command`], [`reply`] holds every reply text, [`maildrop`] is
//! the open message list with deletion marks, [`session`] is the state
//! machine (its header describes the driver's side), [`transfer`] encodes
//! a stored message for RETR and TOP (CRLF, dot-stuffing, terminator).

pub mod line;
pub mod maildrop;
pub mod parser;
pub mod reply;
pub mod session;
pub mod transfer;

#[cfg(test)]
mod tests;

pub use maildrop::{InvalidUniqueId, MessageInfo, UniqueId};
pub use parser::{parse_command, Command, MessageNumber};
pub use reply::Reply;
pub use session::{
    AuthMechanism, AuthOutcome, MaildropError, PeerInfo, Pop3Config, Request, Session, UpdateError,
};
pub use transfer::MessageEncoder;
