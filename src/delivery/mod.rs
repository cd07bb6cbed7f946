//! Delivery: what happens to a message after the queue hands it out:
//! where each recipient goes (`router`), the attempts in flight and what
//! follows them (`attempts`), the bounces (`dsn`), outbound SMTP sessions
//! (`outbound`) and the engine that drives them on each core (`engine`).
//! This file only maps modules.

pub mod attempts;
pub mod dsn;
pub mod engine;
pub mod outbound;
pub mod router;
pub mod suspensions;
