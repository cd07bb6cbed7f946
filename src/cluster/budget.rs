//! The cluster as one core sees it: a `SharedBudget` for its ready queues
//! holding a `Lease` per site and shared rate, which sends a request to
//! the client thread when a lease runs low (a channel send, never a
//! wait), and the core's task that takes the answers in and wakes the
//! delivery engine. Nothing here talks to Redis.

use std::cell::RefCell;
use std::collections::HashMap;
use std::future::Future;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::lease::{Lease, Mode};
use super::{ClusterState, CoreEvent, Request};
use crate::queue::{DestinationKey, RateKind, SharedBudget};
use crate::shaping::Rate;

/// What one core is handed to join the cluster (see `Cluster::start`).
#[derive(Debug)]
pub struct CoreLink {
    pub(super) core: usize,
    pub(super) cores: usize,
    pub(super) lease: Duration,
    pub(super) requests: crossbeam_channel::Sender<Request>,
    pub(super) events: async_channel::Receiver<CoreEvent>,
    pub(super) state: Arc<ClusterState>,
}

impl CoreLink {
    /// The budget for this core's ready queues, and the task (to spawn
    /// on the core) that feeds it the client thread's answers and calls
    /// `wake` whenever delivery may go on (tokens granted, a peer's
    /// suspension applied, the limiter lost or found).
    pub fn attach<F: Fn() + 'static>(
        self,
        wake: F,
    ) -> (Box<dyn SharedBudget>, impl Future<Output = ()>) {
        let leases = Rc::new(RefCell::new(Leases {
            core: self.core,
            cores: self.cores,
            lease: self.lease,
            requests: self.requests,
            state: self.state,
            held: HashMap::new(),
        }));
        let budget = CoreBudget(Rc::clone(&leases));
        let events = self.events;
        let task = async move {
            while let Ok(event) = events.recv().await {
                if let CoreEvent::Granted { site, kind, grant } = &event {
                    leases
                        .borrow_mut()
                        .granted(site, *kind, grant.tokens, grant.wait);
                } else if let CoreEvent::Refused { site, kind } = &event {
                    leases.borrow_mut().refused(site, *kind);
                }
                wake();
            }
        };
        (Box::new(budget), task)
    }
}

/// One core's leases (shared by the budget and the core's task; both run
/// on the core's one thread and never hold the borrow across an await).
#[derive(Debug)]
struct Leases {
    core: usize,
    cores: usize,
    lease: Duration,
    requests: crossbeam_channel::Sender<Request>,
    state: Arc<ClusterState>,
    /// Per site, the leases of its message and connection rates.
    held: HashMap<DestinationKey, [Option<Lease>; 2]>,
}

fn slot(kind: RateKind) -> usize {
    match kind {
        RateKind::Messages => 0,
        RateKind::Connections => 1,
    }
}

impl Leases {
    fn lease(&mut self, site: &DestinationKey, kind: RateKind) -> Option<&mut Lease> {
        self.held.get_mut(site)?[slot(kind)].as_mut()
    }

    fn mode(&self) -> Mode {
        if self.state.up.load(Ordering::Relaxed) {
            Mode::Shared
        } else {
            Mode::Fallback {
                share: self.cores.max(1) * self.state.hosts.load(Ordering::Relaxed).max(1),
            }
        }
    }

    fn available(
        &mut self,
        site: &DestinationKey,
        kind: RateKind,
        rate: Rate,
        now: Instant,
    ) -> usize {
        let mode = self.mode();
        let lease_len = self.lease;
        if !self.held.contains_key(site) {
            self.held.insert(site.clone(), [None, None]);
        }
        let Some(pair) = self.held.get_mut(site) else {
            return 0;
        };
        let lease = pair[slot(kind)].get_or_insert_with(|| Lease::new(rate, lease_len, now));
        if lease.rate() != rate {
            // The rules changed (a reload) and the site became active
            // again under the new rate.
            *lease = Lease::new(rate, lease_len, now);
        }
        let n = lease.available(now, mode);
        if let Some(want) = lease.request(now, mode) {
            let sent = self.requests.send(Request::Lease {
                core: self.core,
                site: site.clone(),
                kind,
                rate,
                want,
            });
            if sent.is_err() {
                lease.refused();
            }
        }
        n
    }

    fn granted(&mut self, site: &DestinationKey, kind: RateKind, tokens: u32, wait: Duration) {
        if let Some(lease) = self.lease(site, kind) {
            lease.granted(tokens, wait, Instant::now());
        }
    }

    fn refused(&mut self, site: &DestinationKey, kind: RateKind) {
        if let Some(lease) = self.lease(site, kind) {
            lease.refused();
        }
    }
}

/// See the module header.
#[derive(Debug)]
struct CoreBudget(Rc<RefCell<Leases>>);

impl SharedBudget for CoreBudget {
    fn available(
        &mut self,
        site: &DestinationKey,
        kind: RateKind,
        rate: Rate,
        now: Instant,
    ) -> usize {
        self.0.borrow_mut().available(site, kind, rate, now)
    }

    fn take(&mut self, site: &DestinationKey, kind: RateKind, n: usize, now: Instant) {
        if let Some(lease) = self.0.borrow_mut().lease(site, kind) {
            lease.take(n, now);
        }
    }

    fn next_available(
        &mut self,
        site: &DestinationKey,
        kind: RateKind,
        now: Instant,
    ) -> Option<Instant> {
        let mut leases = self.0.borrow_mut();
        let mode = leases.mode();
        leases
            .lease(site, kind)
            .and_then(|lease| lease.next_available(now, mode))
    }

    fn connections(&self, per_core: usize) -> usize {
        let hosts = self.0.borrow().state.hosts.load(Ordering::Relaxed).max(1);
        (per_core / hosts).max(1)
    }

    fn forget(&mut self, site: &DestinationKey) {
        self.0.borrow_mut().held.remove(site);
    }
}
