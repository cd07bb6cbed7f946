//! `spate blast`, the SMTP load generator (a modern smtp-source). It
//! refuses to be a mail client: it sends generated (or one given) message
//! as fast as asked and measures what happens.
//!
//! Map: [`options`] the typed command line, [`message`] envelopes and
//! content, [`client`] the sans-IO core of one connection (pipelining,
//! BDAT, STARTTLS, AUTH PLAIN), [`driver`] the glommio executors and
//! connection tasks, [`report`] counters, latency percentiles, JSON and the
//! HdrHistogram percentile file.

pub mod client;
pub mod driver;
pub mod message;
pub mod options;
pub mod report;
