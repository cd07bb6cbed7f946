//! The seam through which a site's host-wide limits are shared with
//! other hosts (`cluster`): the ready queues consult a `SharedBudget`
//! beside each site's own buckets, and a site goes only when both allow.
//! Sans-IO and synchronous: an implementation answers from what it holds
//! (a lease of tokens) and never waits for anything. It refuses to know
//! what is on the other side (Redis, a test's fake).

use std::fmt::Debug;
use std::time::Instant;

use super::ready::DestinationKey;
use crate::shaping::Rate;

/// Which host-wide rate of a site.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RateKind {
    /// `message_rate`.
    Messages,
    /// `connection_rate`: new connections.
    Connections,
}

/// See the module header. Called per connection and per batch of
/// messages handed out, never per message.
pub trait SharedBudget: Debug {
    /// Units (messages, new connections) the shared `rate` lets `site`
    /// have on this core now.
    fn available(
        &mut self,
        site: &DestinationKey,
        kind: RateKind,
        rate: Rate,
        now: Instant,
    ) -> usize;

    /// Spends `n` units, at most what [`SharedBudget::available`] said.
    fn take(&mut self, site: &DestinationKey, kind: RateKind, n: usize, now: Instant);

    /// When more may be available, if none is now (`None`: some is, or
    /// nothing is known about `site`).
    fn next_available(
        &mut self,
        site: &DestinationKey,
        kind: RateKind,
        now: Instant,
    ) -> Option<Instant>;

    /// This core's part of a site's connections at once, given the part
    /// it would have if it were the only host (`per_core`).
    fn connections(&self, per_core: usize) -> usize;

    /// The ready queues forgot `site`: what is held for it may go.
    fn forget(&mut self, site: &DestinationKey);
}
