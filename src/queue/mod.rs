//! The per-core queue, sans-IO: a scheduled queue (retry timing,
//! exponential backoff, expiry) that feeds bounded ready queues per
//! destination site. Every message always has a next action and a time
//! for it. This file only maps the modules and exports the API; it holds
//! no logic, and the queue never touches sockets, files or clocks.
//!
//! Modules, each with one job:
//! - `time`: `UnixTime`, the `now` callers pass in
//! - `policy`: backoff, lifetime and jitter (`RetryPolicy`, `Jitter`)
//! - `schedule`: `Queue`, each message's state and deadline
//! - `ready`: `ReadyQueues` per `DestinationKey`, windows and connection limits
//! - `held`: `HeldMessages`, the ids held back per site until it has room
//! - `shared`: `SharedBudget`, the seam to limits shared with other hosts
//! - `census`: `Census`, queued recipients per domain and tenant
//! - `error`: `QueueError`

mod census;
mod error;
mod held;
mod policy;
mod ready;
mod schedule;
mod shared;
mod time;

pub use census::{Census, Shape, TenantCount};
pub use error::QueueError;
pub use held::HeldMessages;
pub use policy::{Jitter, NoJitter, RetryPolicy, SpreadJitter};
pub use ready::{BadSite, DestinationKey, ReadyFull, ReadyLimits, ReadyQueues, SiteState};
pub use schedule::{
    AttemptId, Deferral, Dispatch, MessageState, Queue, QueueEntry, StateCounts, Task,
};
pub use shared::{RateKind, SharedBudget};
pub use time::UnixTime;
