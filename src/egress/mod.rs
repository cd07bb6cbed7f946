//! Egress sources and pools: where outbound mail leaves from. A source is
//! a local address to bind and an EHLO name, with budgets of its own (a
//! message rate, a warm-up schedule of daily volumes); a pool is a
//! weighted set of sources; a message takes a pool by its route, its
//! authenticated user, its tenant header or the default. This module
//! decides; delivery binds and connects.
//!
//! Map: [`plan`] the `[egress]` configuration compiled and checked, and a
//! message's pool; [`chooser`] the source for work bound to a site
//! (weighted rotation, budgets, per core); [`warmup`] calendar days and
//! the warm-up schedule; [`ledger`] the day's counts per source kept
//! across restarts; [`tenant`] the tenant header, read and removed at
//! receipt.

pub mod chooser;
pub mod ledger;
pub mod plan;
pub mod tenant;
pub mod warmup;

pub use chooser::{Choice, Chooser, Clock};
pub use ledger::WarmupLedger;
pub use plan::{EgressError, EgressPlan, Member, Pool, PoolId, PoolInputs, Source};
pub use warmup::{Day, Warmup};
