//! `spate sink`, the SMTP sink (a modern smtp-sink): it accepts and
//! discards mail, writes it to a directory, or counts it per recipient
//! domain, and injects failures and delays to test senders. It refuses to
//! relay or to store durably.
//!
//! Map: [`fault`] the fault plan and its deterministic decisions,
//! [`session`] the sans-IO session of one connection, [`counters`] what is
//! counted, [`driver`] the glommio executors, listeners and sessions.

pub mod counters;
pub mod driver;
pub mod fault;
pub mod session;
