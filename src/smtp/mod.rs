//! The SMTP server protocol core, sans-IO: bytes in, replies and events out.
//! It refuses to do any I/O, keep time or touch TLS; the runtime glue does.
//!
//! Map: [`address`] parses paths, [`param`] ESMTP parameters, [`parser`]
//! whole command lines, [`data`] receives message bodies (DATA and BDAT),
//! [`reply`] holds every reply text, [`session`] is the state machine.

pub mod address;
pub mod data;
pub mod dot_stuff;
pub mod param;
pub mod parser;
pub mod reply;
pub mod session;

pub use parser::{parse_command, Command};
pub use reply::Reply;
pub use session::{
    BareLineEndings, Event, Message, PeerInfo, ServerConfig, ServerSession, StoreFailure, Timeouts,
};
