//! Runtime glue for client sessions: drives the sans-IO protocol cores
//! over glommio sockets. Protocol decisions stay in the cores.

pub mod counted;
pub mod imap;
pub mod limits;
pub mod lmtp;
pub mod login;
pub mod pop3;
pub mod shutdown;
pub mod smtp;
pub mod stream;
