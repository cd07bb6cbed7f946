//! Delivery: what happens to a message after the queue hands it out, in
//! Postfix's shape. `scheduler` decides what goes where and when (no
//! I/O: routing by `router`, ready queues, held messages); the agents
//! (`agent`) deliver, over `outbound` SMTP connections or to the mailbox
//! tier, and report per recipient (`report`); `recorder` turns reports
//! into spool records, DSNs (`dsn`) and finished messages, with the
//! attempts in flight (`attempts`); `suspensions` and `throttles` are the
//! host-wide tables of suspended (or bouncing) and throttled sites, which
//! back-off rules fill; `engine` is the loop on each core that joins them.
//! This file only maps modules.

pub mod agent;
pub mod attempts;
pub mod dsn;
pub mod engine;
pub mod outbound;
pub mod recorder;
pub mod report;
pub mod router;
pub mod scheduler;
pub mod suspensions;
pub mod throttles;
