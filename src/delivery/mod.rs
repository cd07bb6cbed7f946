//! Delivery: what happens to a message after the queue hands it out:
//! where each recipient goes (`router`) and the bounces (`dsn`); outbound
//! sessions and local hand-off are to come. This file only maps modules.

pub mod dsn;
pub mod engine;
pub mod outbound;
pub mod router;
