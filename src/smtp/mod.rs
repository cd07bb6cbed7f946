//! The SMTP protocol cores, sans-IO: bytes in, replies, commands and events out, for both the
//! server and the outbound client. It refuses to do any I/O, keep time or touch TLS; the runtime
//! glue does.
//!
//! Map: server side: [`address`] parses paths, [`param`] ESMTP parameters, [`parser`]
//! whole command lines, [`data`] receives message bodies (DATA and BDAT),
//! [`reply`] holds every reply text, [`session`] is the state machine (SMTP, or LMTP
//! when `ServerConfig::lmtp` is set).
//! Client side: [`client`] is the outbound state machine for one connection
//! (replies in, commands and per-recipient results out), [`dot_stuff`]
//! dot-stuffs a stored body on the fly for DATA without copying it.

pub mod address;
pub mod auth;
pub mod client;
pub mod data;
pub mod dot_stuff;
#[cfg(test)]
mod lmtp_tests;
pub mod param;
pub mod parser;
pub mod policy;
pub mod reply;
pub mod session;

pub use client::{
    Capabilities, ClientConfig, ClientEvent, ClientSession, ClientTimeouts, ConnectionError,
    EnhancedCode, Outcome, RecipientResult, ReplyOrigin, ReplyText, StartTlsPolicy, Step,
    TransactionRefused,
};
pub use dot_stuff::DotStuffer;
pub use parser::{parse_command, Command};
pub use reply::Reply;
pub use session::{
    AuthOutcome, BareLineEndings, Event, Message, PeerInfo, RecipientDelivery, ServerConfig,
    ServerSession, StoreFailure, Timeouts,
};
