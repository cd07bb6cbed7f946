//! Delivery: what happens to a message after the queue hands it out. For
//! now only DSN generation (`dsn`); outbound SMTP sessions, connection
//! reuse and local hand-off are to come. This file only maps modules.

pub mod dsn;
