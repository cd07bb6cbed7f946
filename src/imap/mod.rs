//! IMAP4rev1 server pieces (RFC 3501, RFC 9051), sans-IO like the other protocol cores; this
//! file only lists them and refuses to hold code.

pub mod mime;
pub mod view;
