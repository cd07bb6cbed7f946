//! The delivery scheduler of one core: decides what goes where and when,
//! with no I/O of its own. [`plan`] splits each due message's pending
//! recipients by where they go (the mailbox tier, a fixed next hop, the
//! MX hosts of a domain: one batched resolver call for every domain) and
//! reads each message once for the whole attempt; [`Scheduler`] keeps the
//! per-site ready queues under the shaping limits and suspensions, picks
//! the egress source of work whose message has a pool (by route, user,
//! tenant or default: the ready queues are then per site and source),
//! holds what a full ready queue or a spent source budget cannot take (by
//! id only: memory-light), and says which connection may open next. The
//! engine feeds it and carries out what it decides; the tests feed it a
//! fake spool and the fake resolver.

use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::delivery::report::{same_result, transient, RecipientReport};
use crate::delivery::router::{HostPort, NextHop, Route, Router};
use crate::egress::ledger::DayCounts;
use crate::egress::{Choice, Chooser, Clock, Day, EgressPlan, PoolInputs, Source};
use crate::envelope::Envelope;
use crate::queue::{
    AttemptId, DestinationKey, Dispatch, HeldMessages, Queue, QueueError, ReadyLimits, ReadyQueues,
    SharedBudget, SiteState, Task, UnixTime,
};
use crate::resolver::{MxHost, MxResolver};
use crate::shaping::SiteLimits;
use crate::smtp::client::Outcome;
use crate::spool::{SpoolId, StoredMessage};

/// The longest a message held back by a limit of spate's own (a full
/// ready queue) waits before it is handed out again, if no room was made
/// for it earlier.
pub const HOLD_RECHECK: Duration = Duration::from_secs(60);
/// How long a message held for a source suspended at its site waits
/// before it is placed again, while another source of its pool is open.
pub const REROUTE_WAIT: Duration = Duration::from_secs(1);

/// A message as the scheduler needs it: its envelope.
pub trait Addressed {
    fn envelope(&self) -> &Envelope;
}

impl Addressed for StoredMessage {
    fn envelope(&self) -> &Envelope {
        StoredMessage::envelope(self)
    }
}

/// Where the scheduler learns what is pending and reads messages: the
/// queue and the spool in the engine, a map in tests.
pub trait MessageSource<M> {
    /// The recipients still to be tried; `None` once the message is no
    /// longer queued.
    fn pending(&self, id: SpoolId) -> Option<Vec<u32>>;
    /// The message, read once for the whole attempt.
    fn read(&self, id: SpoolId) -> Result<Rc<M>, String>;
}

/// How the recipients of a piece of work are reached.
#[derive(Debug)]
pub enum Hop {
    /// The mailbox tier of this host.
    Local,
    Fixed(HostPort),
    /// Delivery by MX: the recipient domain (whose TLS policy applies)
    /// and its MX hosts.
    Mx {
        domain: String,
        hosts: Vec<MxHost>,
    },
}

impl Hop {
    /// The host names of the site, for shaping rules.
    pub fn host_names(&self) -> Vec<&str> {
        match self {
            Hop::Local => Vec::new(),
            Hop::Fixed(hp) => vec![hp.host.as_str()],
            Hop::Mx { hosts, .. } => hosts.iter().map(|h| h.name.as_str()).collect(),
        }
    }
}

/// Recipients of one message bound for one destination, in one attempt,
/// with the message as read for it.
#[derive(Debug)]
pub struct Work<M> {
    pub id: SpoolId,
    pub attempt: AttemptId,
    pub recipients: Vec<u32>,
    pub hop: Rc<Hop>,
    pub message: Rc<M>,
}

/// Work for a remote site.
#[derive(Debug)]
pub struct Placement<M> {
    pub key: DestinationKey,
    /// The recipient domain of MX delivery, for domain shaping rules.
    pub domain: Option<String>,
    /// The egress pool of the `[[route]]` the recipients take, if it
    /// names one.
    pub route_pool: Option<String>,
    pub work: Work<M>,
}

/// An attempt begun: its message split into `groups` destination groups,
/// each of which reports once (in `failed`, as work that reports, or held).
#[derive(Debug)]
pub struct Begun<M> {
    pub id: SpoolId,
    pub attempt: AttemptId,
    pub groups: usize,
    pub message: Option<Rc<M>>,
}

/// A destination group that failed before any delivery: routing,
/// resolution or reading the message.
#[derive(Debug)]
pub struct Failed {
    pub id: SpoolId,
    pub attempt: AttemptId,
    pub reports: Vec<RecipientReport>,
}

/// What [`plan`] decided for a batch of due messages. The engine begins
/// every attempt in `begun` first, then records `failed`, places
/// `remote`, delivers `local`; a begun attempt with no group at all has
/// nothing left to deliver and completes at once.
#[derive(Debug)]
pub struct Plan<M> {
    pub expiries: Vec<Dispatch>,
    pub begun: Vec<Begun<M>>,
    pub failed: Vec<Failed>,
    pub local: Vec<Work<M>>,
    pub remote: Vec<Placement<M>>,
}

impl<M> Default for Plan<M> {
    fn default() -> Self {
        Plan {
            expiries: Vec::new(),
            begun: Vec::new(),
            failed: Vec::new(),
            local: Vec::new(),
            remote: Vec::new(),
        }
    }
}

/// Recipients of one message waiting for a domain's MX answer.
struct AwaitingMx<M> {
    id: SpoolId,
    attempt: AttemptId,
    recipients: Vec<u32>,
    message: Rc<M>,
}

/// Splits due messages into work per destination (see the module header).
pub async fn plan<M: Addressed>(
    due: Vec<Dispatch>,
    source: &impl MessageSource<M>,
    router: &Router,
    resolver: &impl MxResolver,
) -> Plan<M> {
    let mut plan = Plan::default();
    let mut by_domain: HashMap<String, Vec<AwaitingMx<M>>> = HashMap::new();
    for d in due {
        if d.task == Task::Expire {
            plan.expiries.push(d);
            continue;
        }
        let Some(pending) = source.pending(d.id) else {
            continue;
        };
        let message = match source.read(d.id) {
            Ok(message) => message,
            Err(e) => {
                tracing::error!(id = %d.id, error = %e, "cannot read a queued message");
                plan.begun.push(Begun {
                    id: d.id,
                    attempt: d.attempt,
                    groups: 1,
                    message: None,
                });
                let reply = format!("451 4.3.0 spool read error: {e}");
                plan.failed.push(Failed {
                    id: d.id,
                    attempt: d.attempt,
                    reports: transient(&pending, &reply),
                });
                continue;
            }
        };
        let mut local = Vec::new();
        // By next hop and the route's egress pool.
        let mut fixed: HashMap<(HostPort, Option<String>), Vec<u32>> = HashMap::new();
        let mut mx: HashMap<String, Vec<u32>> = HashMap::new();
        for index in pending {
            let Some(recipient) = message.envelope().recipients.get(index as usize) else {
                continue;
            };
            match router.route(&recipient.address) {
                Route::Local => local.push(index),
                Route::Relay(NextHop::Fixed(hop)) => {
                    let pool = router.route_pool(&recipient.address).map(str::to_owned);
                    fixed.entry((hop, pool)).or_default().push(index);
                }
                Route::Relay(NextHop::Mx(domain)) => mx.entry(domain).or_default().push(index),
            }
        }
        plan.begun.push(Begun {
            id: d.id,
            attempt: d.attempt,
            groups: usize::from(!local.is_empty()) + fixed.len() + mx.len(),
            message: Some(Rc::clone(&message)),
        });
        let work = |recipients, hop| Work {
            id: d.id,
            attempt: d.attempt,
            recipients,
            hop,
            message: Rc::clone(&message),
        };
        for ((hop, route_pool), recipients) in fixed {
            plan.remote.push(Placement {
                key: DestinationKey::route(&hop.host, hop.port),
                domain: None,
                route_pool,
                work: work(recipients, Rc::new(Hop::Fixed(hop))),
            });
        }
        if !local.is_empty() {
            plan.local.push(work(local, Rc::new(Hop::Local)));
        }
        for (domain, recipients) in mx {
            by_domain.entry(domain).or_default().push(AwaitingMx {
                id: d.id,
                attempt: d.attempt,
                recipients,
                message: Rc::clone(&message),
            });
        }
    }
    if by_domain.is_empty() {
        return plan;
    }
    let domains: Vec<String> = by_domain.keys().cloned().collect();
    for (domain, resolution) in resolver.resolve_batch(domains).await {
        let Some(groups) = by_domain.remove(&domain) else {
            continue;
        };
        let failure = match resolution.into_hosts() {
            Ok(hosts) => match DestinationKey::mx_set(hosts.iter().map(|h| h.name.as_str())) {
                Ok(key) => {
                    let hop = Rc::new(Hop::Mx {
                        domain: domain.clone(),
                        hosts,
                    });
                    for g in groups {
                        plan.remote.push(Placement {
                            key: key.clone(),
                            domain: Some(domain.clone()),
                            route_pool: None,
                            work: Work {
                                id: g.id,
                                attempt: g.attempt,
                                recipients: g.recipients,
                                hop: Rc::clone(&hop),
                                message: g.message,
                            },
                        });
                    }
                    continue;
                }
                Err(e) => (
                    Outcome::TransientFailure,
                    format!("451 4.4.3 {domain}: {e}"),
                ),
            },
            Err(e) if e.is_transient() => (
                Outcome::TransientFailure,
                format!("451 {} {domain}: {e}", e.status()),
            ),
            Err(e) => (
                Outcome::PermanentFailure,
                format!("550 {} {domain}: {e}", e.status()),
            ),
        };
        let (outcome, reply) = failure;
        for g in groups {
            plan.failed.push(Failed {
                id: g.id,
                attempt: g.attempt,
                reports: same_result(&g.recipients, outcome, &reply),
            });
        }
    }
    plan
}

/// The reply `dest`'s mail bounces with: its own, or its whole site's (a
/// bounce without a source covers every source).
fn bouncing_for<'a>(
    bouncing: &'a HashMap<DestinationKey, String>,
    dest: &DestinationKey,
) -> Option<&'a String> {
    if bouncing.is_empty() {
        return None;
    }
    bouncing.get(dest).or_else(|| match dest.source() {
        Some(_) => bouncing.get(&dest.site()),
        None => None,
    })
}

/// The egress source a destination key names, in `plan`.
fn source_for<'a>(plan: &'a EgressPlan, dest: &DestinationKey) -> Option<&'a Source> {
    plan.source(dest.source()?)
}

/// Why the scheduler gave work back.
#[derive(Debug)]
pub enum Refused<M> {
    /// The ready queue of `dest` is full or (`budget_spent`) every egress
    /// source of the message's pool is out of budget: the group is held
    /// for `dest` (not an attempt).
    Held {
        work: Work<M>,
        dest: DestinationKey,
        budget_spent: bool,
    },
    /// The site's mail is being bounced (a back-off rule): the reply to
    /// fail the recipients with.
    Bounce(Work<M>, String),
}

/// The ready queues and the held messages of one core (see the module
/// header).
pub struct Scheduler<M> {
    ready: ReadyQueues<Work<M>>,
    /// Messages held back per destination whose ready queue was full,
    /// whose site is suspended or whose egress source is out of budget,
    /// released as it makes room (and, with a source, as its budget
    /// allows): ids only, memory-light.
    held: HeldMessages,
    /// The egress sources and pools in force, and this core's chooser.
    egress: Arc<EgressPlan>,
    chooser: Chooser<DestinationKey>,
    /// Sites whose mail is returned to its senders, with the reply.
    bouncing: HashMap<DestinationKey, String>,
    /// Work drained from a site that began to bounce, to be bounced.
    to_bounce: Vec<(Work<M>, String)>,
    /// Work drained from a (site, source) that was suspended, to be held
    /// and placed again (through another source); and from a suspended
    /// site, to be held until the suspension ends.
    to_reroute: Vec<(Work<M>, DestinationKey)>,
}

/// Past this many sites with held messages, due messages are not checked
/// against the held sets before they are planned (finding a message's
/// site looks in each set).
const RECHECK_SITES: usize = 64;

impl<M> Scheduler<M> {
    /// The scheduler of the first core, with no limits shared with other
    /// hosts and no egress sources until [`Scheduler::set_egress`].
    pub fn new(limits: ReadyLimits) -> Result<Self, QueueError> {
        Self::with_shared(limits, None, 0)
    }

    /// A scheduler for core `core` of `limits.share` (the share splits
    /// egress budgets as it splits rates) whose sites' host-wide limits
    /// are also held to `shared` (limits shared with other hosts,
    /// `cluster`).
    pub fn with_shared(
        limits: ReadyLimits,
        shared: Option<Box<dyn SharedBudget>>,
        core: usize,
    ) -> Result<Self, QueueError> {
        Ok(Scheduler {
            ready: ReadyQueues::with_shared(limits, shared)?,
            held: HeldMessages::new(),
            egress: Arc::new(EgressPlan::default()),
            chooser: Chooser::new(core, limits.share),
            bouncing: HashMap::new(),
            to_bounce: Vec::new(),
            to_reroute: Vec::new(),
        })
    }

    /// The egress sources and pools for work placed from now on (a
    /// reload); budgets already spent are kept by source name.
    pub fn set_egress(&mut self, plan: Arc<EgressPlan>) {
        if !Arc::ptr_eq(&self.egress, &plan) {
            self.egress = plan;
        }
    }

    /// Starts this core's egress counts of `day` from what the host sent
    /// before a restart (see `egress::ledger`).
    pub fn seed_egress_counts(
        &mut self,
        day: Day,
        counts: &DayCounts,
        now: UnixTime,
        clock: Instant,
    ) {
        let clock = Clock {
            now: clock,
            unix: now.0,
        };
        self.chooser.seed(day, counts, clock);
    }

    /// Messages sent through egress sources so far (moves on each).
    pub fn egress_spends(&self) -> u64 {
        self.chooser.spends()
    }

    /// This core's egress counts of the latest day, per source.
    pub fn egress_day_counts(&self) -> Option<(Day, DayCounts)> {
        self.chooser.day_counts()
    }

    /// The egress source work for `dest` leaves from, if any (its bind
    /// address and EHLO name); `None` also when a reload removed it.
    pub fn source_of(&self, dest: &DestinationKey) -> Option<&Source> {
        source_for(&self.egress, dest)
    }

    /// Queues work for its site; a site becoming active takes the limits
    /// `shape` gives. Gives the work back when the site's ready queue is
    /// full or the site is suspended at `clock` (the caller counts that
    /// group as held, not an attempt) or its mail is being bounced.
    pub fn place(
        &mut self,
        key: DestinationKey,
        work: Work<M>,
        shape: impl FnOnce() -> SiteLimits,
        clock: Instant,
    ) -> Result<(), Refused<M>> {
        self.queue_for(key, work, shape, clock).map(|_| ())
    }

    /// Replaces the sites whose mail bounces (from the shared suspension
    /// table), with the receiver's reply that made them. The work already
    /// waiting for a newly bouncing site is set aside for
    /// [`Scheduler::take_bounced`]; the messages held for it are made due,
    /// and bounce as they are placed.
    pub fn set_bouncing(
        &mut self,
        bouncing: HashMap<DestinationKey, String>,
        queue: &mut Queue,
        now: UnixTime,
    ) {
        for (site, reply) in &bouncing {
            if self.bouncing.contains_key(site) {
                continue;
            }
            for work in self.ready.drain(site) {
                self.to_bounce.push((work, reply.clone()));
            }
            self.release_site(queue, site, now);
        }
        self.bouncing = bouncing;
    }

    /// The reply `dest`'s mail is bounced with, while it is (its own
    /// bounce, or its whole site's).
    pub fn bouncing_reply(&self, dest: &DestinationKey) -> Option<String> {
        bouncing_for(&self.bouncing, dest).cloned()
    }

    /// The work to bounce that [`Scheduler::set_bouncing`] set aside.
    pub fn take_bounced(&mut self) -> Vec<(Work<M>, String)> {
        std::mem::take(&mut self.to_bounce)
    }

    /// Replaces the throttled sites' factors (from the shared table).
    pub fn set_throttled(&mut self, factors: HashMap<DestinationKey, f64>, now: Instant) {
        self.ready.set_throttled(factors, now);
    }

    /// Whether `dest` is throttled: its deliveries count toward easing.
    pub fn is_throttled(&self, dest: &DestinationKey) -> bool {
        self.ready.is_throttled(dest)
    }

    /// Queues `placement`'s work for its site, from an egress source when
    /// its message has a pool (the route's, the authenticated user's, the
    /// tenant's or the default; see `egress::plan`): the chooser picks the
    /// source, preferring those not suspended for the site and with room
    /// in their queue, and the work goes to that (site, source) queue. A
    /// site (and source) becoming active takes the limits `shape` gives
    /// for its key. Returns the key used; refused work (a full queue, or
    /// every source of the pool out of budget) comes back with the key to
    /// hold its message for.
    pub fn place_work(
        &mut self,
        placement: Placement<M>,
        clock: Clock,
        shape: impl FnOnce(&DestinationKey) -> SiteLimits,
    ) -> Result<DestinationKey, Refused<M>>
    where
        M: Addressed,
    {
        let Placement {
            key,
            domain,
            route_pool,
            work,
        } = placement;
        let envelope = work.message.envelope();
        // A suspended recipient domain (`domain:NAME`): held before any
        // site or source is chosen, until the suspension ends or is lifted.
        // A route's group may mix domains: one suspended holds the group.
        if self.ready.has_suspensions() {
            let recipient_domains = work.recipients.iter().filter_map(|&i| {
                let address = &envelope.recipients.get(i as usize)?.address;
                address.rsplit_once('@').map(|(_, d)| d)
            });
            let held_for = domain
                .as_deref()
                .into_iter()
                .chain(recipient_domains)
                .map(DestinationKey::domain)
                .find(|key| self.ready.suspended_until(key, clock.now).is_some());
            if let Some(held_for) = held_for {
                return Err(Refused::Held {
                    work,
                    dest: held_for,
                    budget_spent: false,
                });
            }
        }
        // The plan in force for this decision (a reload may swap it).
        let egress = Arc::clone(&self.egress);
        let pool = egress.pool_for(PoolInputs {
            route_pool: route_pool.as_deref(),
            user: envelope.auth_user.as_deref(),
            tenant: envelope.tenant.as_deref(),
        });
        let Some(pool) = pool else {
            let shaped = shape(&key);
            return self.queue_for(key, work, || shaped, clock.now);
        };
        let ready = &self.ready;
        let limit = ready.limits().max_queued_per_destination;
        // Cheap when nothing is suspended and no queue can be full.
        let all_usable = !ready.has_suspensions() && ready.queued() < limit;
        let bouncing = &self.bouncing;
        let all_usable = all_usable && bouncing.is_empty();
        let use_now = |s: &Source| {
            if all_usable {
                return true;
            }
            let dest = key.with_source(&s.name);
            ready.suspended_until(&dest, clock.now).is_none()
                && ready.queued_for(&dest) < limit
                && bouncing_for(bouncing, &dest).is_none()
        };
        let choice = self.chooser.choose(&egress, pool, &key, clock, use_now);
        let sources = egress.sources();
        let (index, exhausted) = match choice {
            Some(Choice::Send(index)) => (index, false),
            Some(Choice::Exhausted { source, .. }) => (source, true),
            // A pool of another plan (cannot happen: the plan is read once
            // above); the work leaves without a source.
            None => {
                let shaped = shape(&key);
                return self.queue_for(key, work, || shaped, clock.now);
            }
        };
        let Some(source) = sources.get(index) else {
            let shaped = shape(&key);
            return self.queue_for(key, work, || shaped, clock.now);
        };
        let dest = key.with_source(&source.name);
        if exhausted {
            return Err(Refused::Held {
                work,
                dest,
                budget_spent: true,
            });
        }
        // No source can take it now (each suspended for the site): held in
        // the queue, for the one whose suspension ends first, rather than
        // waiting in a suspended one's ready queue.
        if self.ready.suspended_until(&dest, clock.now).is_some() {
            let members = egress.pool(pool).map_or(&[][..], |p| &p.members[..]);
            let soonest = members
                .iter()
                .filter_map(|m| sources.get(m.source))
                .map(|s| key.with_source(&s.name))
                .min_by_key(|d| self.ready.suspended_until(d, clock.now))
                .unwrap_or(dest);
            return Err(Refused::Held {
                work,
                dest: soonest,
                budget_spent: false,
            });
        }
        let shaped = shape(&dest);
        let queued = self.queue_for(dest, work, || shaped, clock.now);
        if queued.is_ok() {
            self.chooser.spend(source, clock);
        }
        queued
    }

    /// Queues work for `dest`; a full queue or a suspension gives it back
    /// to be held (a suspended site's mail waits by id only, not read in
    /// a ready queue), a bouncing site to be bounced.
    fn queue_for(
        &mut self,
        dest: DestinationKey,
        work: Work<M>,
        shape: impl FnOnce() -> SiteLimits,
        clock: Instant,
    ) -> Result<DestinationKey, Refused<M>> {
        if let Some(reply) = bouncing_for(&self.bouncing, &dest) {
            return Err(Refused::Bounce(work, reply.clone()));
        }
        if self.ready.suspended_until(&dest, clock).is_some() {
            return Err(Refused::Held {
                work,
                dest,
                budget_spent: false,
            });
        }
        match self.ready.push_shaped(dest.clone(), work, shape) {
            Ok(()) => Ok(dest),
            Err(full) => Err(Refused::Held {
                work: full.0,
                dest,
                budget_spent: false,
            }),
        }
    }

    /// The next connection's worth of work, if any may open now.
    pub fn next_connection(&mut self, now: Instant) -> Option<(DestinationKey, Vec<Work<M>>)> {
        self.ready.next_connection(now)
    }

    /// More work for an open connection to `dest`, as the rate allows.
    pub fn next_batch(&mut self, dest: &DestinationKey, now: Instant) -> Vec<Work<M>> {
        self.ready.next_batch(dest, now)
    }

    /// When work that a rate holds back for `dest` may go.
    pub fn wakeup_for(&mut self, dest: &DestinationKey, now: Instant) -> Option<Instant> {
        self.ready.wakeup_for(dest, now)
    }

    /// When any work held back by a rate may go.
    pub fn next_wakeup(&mut self, now: Instant) -> Option<Instant> {
        self.ready.next_wakeup(now)
    }

    /// `count` pieces of work for `dest` are over (delivered or not).
    pub fn done(&mut self, dest: &DestinationKey, count: usize) {
        self.ready.done(dest, count);
    }

    pub fn connection_closed(&mut self, dest: &DestinationKey) {
        self.ready.connection_closed(dest);
    }

    /// Every connection slot is taken while work waits: an idle
    /// connection gives its slot up instead of lingering.
    pub fn starved(&self) -> bool {
        self.ready.starved()
    }

    /// The limits in force for an active site.
    pub fn site_limits(&self, dest: &DestinationKey) -> Option<&SiteLimits> {
        self.ready.site_limits(dest)
    }

    /// Replaces the suspended sites (a copy of the shared table; call it
    /// after [`Scheduler::set_bouncing`]). Work waiting for a (site,
    /// source) that the table suspends (itself or its whole site) is set
    /// aside for [`Scheduler::take_rerouted`]: held, uncounted, it comes
    /// back to be placed again, and another source of its pool takes it.
    /// So is work waiting for a suspended site without a source: held
    /// until the suspension ends, by id, rather than read and active in a
    /// ready queue, where it would count as a failed attempt once the
    /// attempt's deadline passed (an hour, shorter than many suspensions).
    /// A bouncing site's own work is left to [`Scheduler::set_bouncing`].
    pub fn set_suspended(&mut self, suspended: HashMap<DestinationKey, Instant>) {
        self.ready.set_suspended(suspended);
        let stopped: Vec<DestinationKey> = self
            .ready
            .waiting()
            .filter(|dest| {
                self.ready.is_suspended(dest)
                    && (dest.source().is_some() || bouncing_for(&self.bouncing, dest).is_none())
            })
            .cloned()
            .collect();
        for dest in stopped {
            for work in self.ready.drain(&dest) {
                self.to_reroute.push((work, dest.clone()));
            }
        }
    }

    /// The work that [`Scheduler::set_suspended`] set aside, with the key
    /// it waited for: the caller holds each group.
    pub fn take_rerouted(&mut self) -> Vec<(Work<M>, DestinationKey)> {
        std::mem::take(&mut self.to_reroute)
    }

    pub fn suspended_until(&self, dest: &DestinationKey, now: Instant) -> Option<Instant> {
        self.ready.suspended_until(dest, now)
    }

    /// Holds message `id` back for `dest` in `queue`: until the site's
    /// suspension ends (a suspension of its source alone, while another
    /// source is open: [`REROUTE_WAIT`], to go through that one) or its
    /// source's budget returns, [`HOLD_RECHECK`] at the soonest, unless
    /// room is made for it first. False when the queue no longer had the
    /// attempt.
    pub fn hold(
        &mut self,
        queue: &mut Queue,
        id: SpoolId,
        attempt: AttemptId,
        dest: DestinationKey,
        now: UnixTime,
        clock: Instant,
    ) -> bool {
        // A spent source budget: until it returns (the warm-up's next day).
        let budget = match source_for(&self.egress, &dest) {
            Some(source) => {
                let clock = Clock {
                    now: clock,
                    unix: now.0,
                };
                self.chooser.wait(source, clock)
            }
            None => Duration::ZERO,
        };
        // Suspended for its source only, while another source is not:
        // placed again at once, through another source of its pool.
        let rerouted =
            self.suspended_until(&dest, clock).is_some() && self.another_source_open(&dest, clock);
        let wait = if rerouted {
            REROUTE_WAIT
        } else {
            self.suspended_until(&dest, clock)
                .map_or(HOLD_RECHECK, |until| {
                    until.saturating_duration_since(clock).max(HOLD_RECHECK)
                })
        }
        .max(budget);
        if queue.hold(id, attempt, now.plus(wait)).is_err() {
            return false;
        }
        self.held.hold(dest, id);
        true
    }

    /// How long a message held for `dest`, a site without a source, waits
    /// unless room is made for it first: until the site's suspension
    /// ends, [`HOLD_RECHECK`] at the soonest (as [`Scheduler::hold`]).
    fn plain_hold_wait(&self, dest: &DestinationKey, clock: Instant) -> Duration {
        self.suspended_until(dest, clock)
            .map_or(HOLD_RECHECK, |until| {
                until.saturating_duration_since(clock).max(HOLD_RECHECK)
            })
    }

    /// Whether `dest` names a source and another source of a pool it is
    /// in is not suspended for its site (which pool the message took is
    /// not known here: if that one has no open source, the message is
    /// held again at its next turn).
    fn another_source_open(&self, dest: &DestinationKey, clock: Instant) -> bool {
        let Some(own) = self.egress.source(dest.source().unwrap_or_default()) else {
            return false;
        };
        let site = dest.site();
        if self.ready.suspended_until(&site, clock).is_some() {
            return false;
        }
        let sources = self.egress.sources();
        let open = |index: usize| {
            sources.get(index).is_some_and(|s| {
                s.name != own.name
                    && self
                        .ready
                        .suspended_until(&site.with_source(&s.name), clock)
                        .is_none()
            })
        };
        self.egress
            .pools()
            .iter()
            .filter(|pool| {
                pool.members
                    .iter()
                    .any(|m| sources[m.source].name == own.name)
            })
            .any(|pool| pool.members.iter().any(|m| open(m.source)))
    }

    /// Hands held messages back to the queue, due now, as far as their
    /// destinations have room in their ready queues and, for a
    /// destination with an egress source, as its budget allows.
    pub fn release_held(&mut self, queue: &mut Queue, now: UnixTime, clock: Instant) {
        if self.held.is_empty() {
            return;
        }
        let limit = self.ready.limits().max_queued_per_destination;
        let (ready, bouncing) = (&self.ready, &self.bouncing);
        let (egress, chooser) = (&self.egress, &mut self.chooser);
        let at = Clock {
            now: clock,
            unix: now.0,
        };
        self.held.release(
            |dest| {
                // A suspended site has no room, however empty its queue
                // (a bouncing one has: its mail is bounced as placed).
                if ready.suspended_until(dest, clock).is_some()
                    && bouncing_for(bouncing, dest).is_none()
                {
                    return 0;
                }
                let room = limit.saturating_sub(ready.queued_for(dest));
                match source_for(egress, dest) {
                    Some(source) => {
                        let spare = chooser.spare(source, at);
                        room.min(usize::try_from(spare).unwrap_or(usize::MAX))
                    }
                    None => room,
                }
            },
            |id| queue.release(id, now),
        );
    }

    /// Due messages held for a site without a source that still has no
    /// room (its ready queue full, or suspended) are held again at once,
    /// unread: a million held for a slow site then cost a timer each per
    /// [`HOLD_RECHECK`], not a read and a plan. The rest leave the held
    /// sets and come back, to be planned; so does work held for an egress
    /// source (placing it again is what may reroute it).
    pub fn recheck_held(
        &mut self,
        queue: &mut Queue,
        due: Vec<Dispatch>,
        now: UnixTime,
        clock: Instant,
    ) -> Vec<Dispatch> {
        if self.held.is_empty() || self.held.site_count() > RECHECK_SITES {
            return due;
        }
        let limit = self.ready.limits().max_queued_per_destination;
        let mut room: HashMap<DestinationKey, usize> = HashMap::new();
        let mut out = Vec::with_capacity(due.len());
        for d in due {
            let site = match (d.task, self.held.site_of(d.id)) {
                (Task::Deliver, Some(site)) if site.source().is_none() => site.clone(),
                _ => {
                    out.push(d);
                    continue;
                }
            };
            let left = room.entry(site.clone()).or_insert_with(|| {
                let suspended = self.ready.suspended_until(&site, clock).is_some()
                    && bouncing_for(&self.bouncing, &site).is_none();
                if suspended {
                    0
                } else {
                    limit.saturating_sub(self.ready.queued_for(&site))
                }
            });
            if *left > 0 {
                *left -= 1;
                self.held.forget(&site, d.id);
                out.push(d);
                continue;
            }
            let until = now.plus(self.plain_hold_wait(&site, clock));
            if queue.hold(d.id, d.attempt, until).is_err() {
                out.push(d);
            }
        }
        out
    }

    /// Makes every message held for `site` due now (its suspension ended
    /// by hand); how many.
    pub fn release_site(
        &mut self,
        queue: &mut Queue,
        site: &DestinationKey,
        now: UnixTime,
    ) -> usize {
        let ids = self.held.take_site(site);
        ids.into_iter().filter(|&id| queue.release(id, now)).count()
    }

    /// The active destinations, their counts and limits.
    pub fn site_states(&self) -> impl Iterator<Item = (&DestinationKey, SiteState<'_>)> + '_ {
        self.ready.site_states()
    }

    /// Messages held per destination (a site, a site and source, or a
    /// suspended domain).
    pub fn held_counts(&self) -> impl Iterator<Item = (&DestinationKey, usize)> + '_ {
        self.held.counts()
    }

    /// Whether messages wait for room at `dest` (work leaving its ready
    /// queue should wake the engine).
    pub fn awaits_room(&self, dest: &DestinationKey) -> bool {
        self.held.is_holding(dest)
    }

    /// Whether message `id` is held for `dest`.
    pub fn is_held(&self, dest: &DestinationKey, id: SpoolId) -> bool {
        self.held.contains(dest, id)
    }

    /// Messages held, over every destination.
    pub fn held_count(&self) -> usize {
        self.held.len()
    }

    /// When a spent egress budget that holds messages back lets one go
    /// (`None`: no held message waits for a budget).
    pub fn budget_wakeup(&mut self, now: UnixTime, clock: Instant) -> Option<Instant> {
        let clock = Clock {
            now: clock,
            unix: now.0,
        };
        let mut soonest: Option<Instant> = None;
        for dest in self.held.sites() {
            let Some(source) = source_for(&self.egress, dest) else {
                continue;
            };
            let wait = self.chooser.wait(source, clock);
            if wait.is_zero() {
                continue; // not held for its budget
            }
            let at = clock.now + wait;
            soonest = Some(soonest.map_or(at, |s| s.min(at)));
        }
        soonest
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::collections::BTreeSet;
    use std::net::{IpAddr, Ipv4Addr};

    use super::*;
    use crate::envelope::{BodyType, Recipient};
    use crate::queue::QueueEntry;
    use crate::resolver::{FakeResolver, Resolution};

    /// A message of the fake spool: its envelope.
    #[derive(Debug)]
    struct FakeMessage(Envelope);

    impl Addressed for FakeMessage {
        fn envelope(&self) -> &Envelope {
            &self.0
        }
    }

    /// The fake spool: envelopes by id, what is pending, and how often a
    /// message was read.
    #[derive(Default)]
    struct FakeSpool {
        messages: HashMap<SpoolId, Rc<FakeMessage>>,
        pending: HashMap<SpoolId, Vec<u32>>,
        unreadable: BTreeSet<SpoolId>,
        reads: Cell<usize>,
        queue: Queue,
    }

    impl FakeSpool {
        fn add(&mut self, n: u64, recipients: &[&str]) -> Dispatch {
            let id = SpoolId::from_u64(n);
            let envelope = Envelope {
                sender: "sender@origin.test".into(),
                recipients: recipients
                    .iter()
                    .map(|a| Recipient {
                        address: (*a).to_owned(),
                        notify: None,
                        orcpt: None,
                    })
                    .collect(),
                body_type: BodyType::SevenBit,
                smtputf8: false,
                dsn_return: None,
                envid: None,
                received_at: 0,
                client_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
                helo: "client.test".into(),
                auth_user: None,
                tenant: None,
            };
            self.messages.insert(id, Rc::new(FakeMessage(envelope)));
            let count = u32::try_from(recipients.len()).unwrap();
            self.pending.insert(id, (0..count).collect());
            let attempt = queued(&mut self.queue, n);
            Dispatch {
                id,
                attempt,
                task: Task::Deliver,
            }
        }
    }

    impl MessageSource<FakeMessage> for FakeSpool {
        fn pending(&self, id: SpoolId) -> Option<Vec<u32>> {
            self.pending.get(&id).cloned()
        }

        fn read(&self, id: SpoolId) -> Result<Rc<FakeMessage>, String> {
            self.reads.set(self.reads.get() + 1);
            if self.unreadable.contains(&id) {
                return Err("checksum mismatch".into());
            }
            self.messages.get(&id).cloned().ok_or("gone".into())
        }
    }

    fn router() -> Router {
        let routes = HashMap::from([(
            "routed.test".to_owned(),
            HostPort {
                host: "relay.routed.test".into(),
                port: 2525,
            },
        )]);
        Router::new(vec!["local.test".into()], routes, None)
    }

    fn mx(name: &str) -> Resolution {
        Resolution::Hosts(vec![MxHost {
            name: name.into(),
            preference: 10,
            addresses: vec![IpAddr::V4(Ipv4Addr::new(127, 0, 0, 9))],
        }])
    }

    fn run<T>(future: impl std::future::Future<Output = T>) -> T {
        futures_lite::future::block_on(future)
    }

    fn recipients_by_key(plan: &Plan<FakeMessage>) -> Vec<(String, u64, Vec<u32>)> {
        let mut out: Vec<_> = plan
            .remote
            .iter()
            .map(|p| {
                (
                    p.key.to_string(),
                    p.work.id.to_u64(),
                    p.work.recipients.clone(),
                )
            })
            .collect();
        out.sort();
        out
    }

    #[test]
    fn recipients_split_by_destination_with_one_resolver_batch_and_one_read_each() {
        let mut spool = FakeSpool::default();
        let due = vec![
            spool.add(
                1,
                &[
                    "a@gmail.test",
                    "me@local.test",
                    "b@gmail.test",
                    "c@routed.test",
                ],
            ),
            spool.add(2, &["d@alias.gmail.test", "e@other.test"]),
        ];
        let resolver = FakeResolver::new()
            .with("gmail.test", mx("mx.google.test"))
            .with("alias.gmail.test", mx("mx.google.test"))
            .with("other.test", mx("mx.other.test"));
        let plan = run(plan(due, &spool, &router(), &resolver));

        assert_eq!(spool.reads.get(), 2, "each message read once");
        assert_eq!(resolver.batches(), 1, "one resolver call for every domain");
        let begun: Vec<_> = plan
            .begun
            .iter()
            .map(|b| (b.id.to_u64(), b.groups))
            .collect();
        // Message 1: local, gmail.test, the route; message 2: two domains.
        assert_eq!(begun, [(1, 3), (2, 2)]);
        assert_eq!(plan.local.len(), 1);
        assert_eq!(plan.local[0].recipients, [1]);
        assert!(matches!(*plan.local[0].hop, Hop::Local));
        assert_eq!(
            recipients_by_key(&plan),
            [
                ("[relay.routed.test]:2525".to_owned(), 1, vec![3]),
                ("mx:mx.google.test".to_owned(), 1, vec![0, 2]),
                ("mx:mx.google.test".to_owned(), 2, vec![0]),
                ("mx:mx.other.test".to_owned(), 2, vec![1]),
            ],
            "domains hosted by the same MX share one site (MX rollup)"
        );
        let domains: BTreeSet<_> = plan
            .remote
            .iter()
            .filter_map(|p| p.domain.clone())
            .collect();
        assert_eq!(
            domains,
            BTreeSet::from([
                "alias.gmail.test".into(),
                "gmail.test".into(),
                "other.test".into()
            ])
        );
        assert!(plan.failed.is_empty() && plan.expiries.is_empty());
    }

    #[test]
    fn resolution_failures_report_transient_or_permanent_per_group() {
        let mut spool = FakeSpool::default();
        let due = vec![spool.add(1, &["a@flaky.test", "b@gone.test", "c@flaky.test"])];
        let resolver =
            FakeResolver::new().with("flaky.test", Resolution::TempFail("timeout".into()));
        let plan = run(plan(due, &spool, &router(), &resolver));
        assert_eq!(plan.begun[0].groups, 2);
        let mut failed: Vec<_> = plan
            .failed
            .iter()
            .flat_map(|f| {
                f.reports
                    .iter()
                    .map(|r| (r.index, r.outcome, r.reply.clone()))
            })
            .collect();
        failed.sort_by_key(|f| f.0);
        assert_eq!(failed.len(), 3);
        assert_eq!(failed[0].1, Outcome::TransientFailure);
        assert!(
            failed[0].2.starts_with("451 4.4.3 flaky.test"),
            "{}",
            failed[0].2
        );
        assert_eq!(failed[1].1, Outcome::PermanentFailure, "NXDOMAIN bounces");
        assert!(
            failed[1].2.starts_with("550 5.1.2 gone.test"),
            "{}",
            failed[1].2
        );
        assert_eq!(failed[2].1, Outcome::TransientFailure);
        assert!(plan.remote.is_empty());
    }

    #[test]
    fn unreadable_gone_finished_and_expiring_messages() {
        let mut spool = FakeSpool::default();
        let unreadable = spool.add(1, &["a@other.test", "b@other.test"]);
        spool.unreadable.insert(unreadable.id);
        let gone = spool.add(2, &["c@other.test"]);
        spool.pending.remove(&gone.id);
        let finished = spool.add(3, &["d@other.test"]);
        spool.pending.insert(finished.id, Vec::new());
        let expiring = Dispatch {
            task: Task::Expire,
            ..spool.add(4, &["e@other.test"])
        };
        let resolver = FakeResolver::new();
        let due = vec![unreadable, gone, finished, expiring];
        let plan = run(plan(due, &spool, &router(), &resolver));

        let begun: Vec<_> = plan
            .begun
            .iter()
            .map(|b| (b.id.to_u64(), b.groups, b.message.is_some()))
            .collect();
        // The unreadable one is one failed group; the finished one has no
        // group (it completes at once); the gone one is skipped.
        assert_eq!(begun, [(1, 1, false), (3, 0, true)]);
        assert_eq!(plan.failed.len(), 1);
        let reports = &plan.failed[0].reports;
        assert_eq!(reports.len(), 2);
        assert!(reports
            .iter()
            .all(|r| r.outcome == Outcome::TransientFailure
                && r.reply.starts_with("451 4.3.0 spool read error")));
        assert_eq!(plan.expiries.len(), 1);
        assert_eq!(plan.expiries[0].id.to_u64(), 4);
        assert_eq!(resolver.batches(), 0, "nothing to resolve");
    }

    fn work(n: u64) -> Work<FakeMessage> {
        let mut spool = FakeSpool::default();
        spool.add(n, &["x@other.test"]);
        let attempt = queued(&mut spool.queue, n + 100);
        Work {
            id: SpoolId::from_u64(n),
            attempt,
            recipients: vec![0],
            hop: Rc::new(Hop::Local),
            message: spool.messages.remove(&SpoolId::from_u64(n)).unwrap(),
        }
    }

    fn plain_site() -> SiteLimits {
        SiteLimits {
            connections: 1,
            deliveries_per_connection: 10,
            message_rate: None,
            connection_rate: None,
            idle: Duration::from_secs(2),
            rule: "default".into(),
        }
    }

    /// Queues message `n`, hands it out, and returns its attempt.
    fn queued(queue: &mut Queue, n: u64) -> AttemptId {
        queue.insert(
            SpoolId::from_u64(n),
            QueueEntry {
                size: 10,
                recipients: 1,
                received_at: 1_000,
                acknowledged_at: None,
                shape: Default::default(),
            },
        );
        let due = queue.due(UnixTime(1_000));
        assert_eq!(due.len(), 1);
        due[0].attempt
    }

    #[test]
    fn a_full_site_gives_work_back_and_held_messages_return_as_room_is_made() {
        let limits = ReadyLimits {
            max_queued_per_destination: 2,
            ..ReadyLimits::default()
        };
        let mut scheduler = Scheduler::new(limits).unwrap();
        let site: DestinationKey = "mx:mx.other.test".parse().unwrap();
        assert!(scheduler
            .place(site.clone(), work(1), plain_site, Instant::now())
            .is_ok());
        assert!(scheduler
            .place(site.clone(), work(2), plain_site, Instant::now())
            .is_ok());
        let Err(Refused::Held { work: refused, .. }) =
            scheduler.place(site.clone(), work(3), plain_site, Instant::now())
        else {
            panic!("the third should be given back");
        };
        assert_eq!(refused.id.to_u64(), 3);
        // A bouncing site takes nothing: its work comes back to be bounced,
        // and what waited for it is set aside.
        let mut queue = Queue::new();
        scheduler.set_bouncing(
            HashMap::from([(site.clone(), "550 5.7.606 banned".to_owned())]),
            &mut queue,
            UnixTime(1_000),
        );
        let drained = scheduler.take_bounced();
        assert_eq!(drained.len(), 2);
        assert!(matches!(
            scheduler.place(site.clone(), work(6), plain_site, Instant::now()),
            Err(Refused::Bounce(_, reply)) if reply.contains("5.7.606")
        ));
        scheduler.set_bouncing(HashMap::new(), &mut queue, UnixTime(1_000));
        assert!(scheduler
            .place(site.clone(), work(1), plain_site, Instant::now())
            .is_ok());
        assert!(scheduler
            .place(site.clone(), work(2), plain_site, Instant::now())
            .is_ok());

        let mut queue = Queue::new();
        let clock = Instant::now();
        let mut held = Vec::new();
        for n in [3, 4, 5] {
            let attempt = queued(&mut queue, n);
            assert!(scheduler.hold(
                &mut queue,
                SpoolId::from_u64(n),
                attempt,
                site.clone(),
                UnixTime(1_000),
                clock
            ));
            held.push(SpoolId::from_u64(n));
        }
        assert_eq!(scheduler.held_count(), 3);
        assert!(scheduler.awaits_room(&site));
        assert!(queue.due(UnixTime(1_001)).is_empty(), "held, not due");

        // No room yet: nothing comes back.
        scheduler.release_held(&mut queue, UnixTime(1_001), clock);
        assert!(queue.due(UnixTime(1_001)).is_empty());
        // One connection takes both queued pieces of work: room for two.
        let (dest, works) = scheduler.next_connection(clock).unwrap();
        assert_eq!((dest, works.len()), (site.clone(), 2));
        scheduler.release_held(&mut queue, UnixTime(1_002), clock);
        let due: Vec<_> = queue.due(UnixTime(1_002)).iter().map(|d| d.id).collect();
        assert_eq!(due, held[..2], "the two oldest held, due now");
        assert_eq!(scheduler.held_count(), 1);
        // Resuming by hand releases the rest at once.
        assert_eq!(
            scheduler.release_site(&mut queue, &site, UnixTime(1_003)),
            1
        );
        assert!(!scheduler.awaits_room(&site));
    }

    #[test]
    fn a_held_message_waits_until_its_sites_suspension_ends() {
        let mut scheduler: Scheduler<FakeMessage> = Scheduler::new(ReadyLimits::default()).unwrap();
        let site: DestinationKey = "[relay.routed.test]:2525".parse().unwrap();
        let clock = Instant::now();
        scheduler.set_suspended(HashMap::from([(
            site.clone(),
            clock + Duration::from_secs(7200),
        )]));
        let mut queue = Queue::new();
        let attempt = queued(&mut queue, 1);
        assert!(scheduler.hold(
            &mut queue,
            SpoolId::from_u64(1),
            attempt,
            site,
            UnixTime(1_000),
            clock
        ));
        assert!(queue.due(UnixTime(1_000 + 7_199)).is_empty());
        assert_eq!(
            queue.due(UnixTime(1_000 + 7_200)).len(),
            1,
            "due when it ends"
        );
    }

    /// An egress plan from `[egress]` TOML (and routes).
    fn egress(extra: &str) -> Arc<EgressPlan> {
        let text = format!(
            "hostname = \"relay.test\"\nspool_dir = \"/tmp/s\"\n[[listener]]\naddress = \"127.0.0.1:25\"\nprotocol = \"smtp\"\n{extra}"
        );
        let config = crate::config::Config::parse(&text).expect("valid configuration");
        Arc::new(EgressPlan::build(&config).expect("valid egress"))
    }

    const POOLS: &str = r#"
[[egress.source]]
name = "ip1"
bind = "127.0.0.31"
ehlo = "mta1.test"
[[egress.source]]
name = "ip2"
bind = "127.0.0.32"
message_rate = "20/min"
[[egress.source]]
name = "new"
warmup_start = 2025-12-06
warmup = ["2/day"]
[egress]
default_pool = "main"
[egress.pool.main]
sources = { ip1 = 3, ip2 = 1 }
[egress.pool.bulk]
sources = { ip2 = 1 }
[egress.pool.warming]
sources = { new = 1 }
[egress.tenant.acme]
pool = "bulk"
[egress.user.carol]
pool = "warming"
"#;

    /// 2025-12-06 at noon, UTC.
    const NOON: u64 = 1_765_022_400;

    /// Work for message `n` with the given AUTH user and tenant.
    fn work_of(n: u64, user: Option<&str>, tenant: Option<&str>) -> Work<FakeMessage> {
        let mut w = work(n);
        let mut envelope = w.message.0.clone();
        envelope.auth_user = user.map(str::to_owned);
        envelope.tenant = tenant.map(str::to_owned);
        w.message = Rc::new(FakeMessage(envelope));
        w
    }

    fn placement(
        key: &DestinationKey,
        route_pool: Option<&str>,
        w: Work<FakeMessage>,
    ) -> Placement<FakeMessage> {
        Placement {
            key: key.clone(),
            domain: None,
            route_pool: route_pool.map(str::to_owned),
            work: w,
        }
    }

    #[test]
    fn work_goes_to_its_pools_sources_by_weight() {
        let mut scheduler = Scheduler::new(ReadyLimits::default()).unwrap();
        scheduler.set_egress(egress(POOLS));
        let site: DestinationKey = "mx:mx.other.test".parse().unwrap();
        let clock = Clock {
            now: Instant::now(),
            unix: NOON,
        };
        let mut keys = Vec::new();
        for n in 0..8 {
            let placed = scheduler.place_work(
                placement(&site, None, work_of(n, None, None)),
                clock,
                |_| plain_site(),
            );
            keys.push(placed.unwrap().to_string());
        }
        let ip1 = keys.iter().filter(|k| k.ends_with("@ip1")).count();
        assert_eq!(
            (ip1, keys.len() - ip1),
            (6, 2),
            "3:1 by the default pool: {keys:?}"
        );
        assert!(keys.iter().all(|k| k.starts_with("mx:mx.other.test@")));
        let source = scheduler.source_of(&site.with_source("ip1")).unwrap();
        assert_eq!(
            (source.bind, source.ehlo.as_str()),
            (Some("127.0.0.31".parse().unwrap()), "mta1.test")
        );
        assert!(scheduler.source_of(&site).is_none());
        // A tenant's pool; a user's pool before the tenant's; the route's first.
        let place = |s: &mut Scheduler<FakeMessage>, n, route: Option<&str>, user, tenant| {
            s.place_work(
                placement(&site, route, work_of(n, user, tenant)),
                clock,
                |_| plain_site(),
            )
            .unwrap()
            .to_string()
        };
        assert!(place(&mut scheduler, 20, None, None, Some("ACME")).ends_with("@ip2"));
        assert!(place(&mut scheduler, 21, None, Some("carol"), Some("acme")).ends_with("@new"));
        assert!(place(&mut scheduler, 22, Some("bulk"), Some("carol"), None).ends_with("@ip2"));
        // Without any pool, the site alone.
        scheduler.set_egress(egress(""));
        assert_eq!(
            place(&mut scheduler, 23, None, None, None),
            site.to_string()
        );
    }

    #[test]
    fn a_spent_warmup_holds_work_until_the_next_day_and_releases_by_budget() {
        let mut scheduler = Scheduler::new(ReadyLimits::default()).unwrap();
        scheduler.set_egress(egress(POOLS));
        let site: DestinationKey = "[relay.routed.test]:2525".parse().unwrap();
        let clock = Instant::now();
        let at = |unix| Clock { now: clock, unix };
        let mut queue = Queue::new();
        let mut refused = Vec::new();
        for n in 1..=4 {
            let w = work_of(n, Some("carol"), None);
            match scheduler.place_work(placement(&site, None, w), at(NOON), |_| plain_site()) {
                Ok(dest) => assert_eq!(dest.source(), Some("new")),
                Err(r) => refused.push(r),
            }
        }
        assert_eq!(refused.len(), 2, "two a day");
        for (i, r) in refused.into_iter().enumerate() {
            let Refused::Held {
                dest, budget_spent, ..
            } = r
            else {
                panic!("held, not bounced");
            };
            assert!(budget_spent);
            assert_eq!(dest, site.with_source("new"));
            let n = 10 + i as u64;
            let attempt = queued(&mut queue, n);
            assert!(scheduler.hold(
                &mut queue,
                SpoolId::from_u64(n),
                attempt,
                dest,
                UnixTime(NOON),
                clock
            ));
        }
        // Held until midnight UTC, twelve hours on; nothing released before.
        assert!(queue.due(UnixTime(NOON + 12 * 3600 - 1)).is_empty());
        scheduler.release_held(&mut queue, UnixTime(NOON + 60), clock);
        assert!(
            queue.due(UnixTime(NOON + 60)).is_empty(),
            "no budget: none released"
        );
        assert_eq!(
            scheduler.budget_wakeup(UnixTime(NOON), clock),
            Some(clock + Duration::from_secs(12 * 3600))
        );
        // The next day (warm: the schedule had one step) lets them go.
        let tomorrow = UnixTime(NOON + 86_400);
        scheduler.release_held(&mut queue, tomorrow, clock);
        assert_eq!(queue.due(tomorrow).len(), 2);
        assert_eq!(scheduler.held_count(), 0);
    }

    #[test]
    fn a_suspended_sources_work_goes_through_another_and_waits_when_none_is_open() {
        let mut scheduler = Scheduler::new(ReadyLimits::default()).unwrap();
        scheduler.set_egress(egress(POOLS));
        let site: DestinationKey = "mx:mx.other.test".parse().unwrap();
        let clock = Instant::now();
        let at = Clock {
            now: clock,
            unix: NOON,
        };
        let place = |s: &mut Scheduler<FakeMessage>, n| {
            s.place_work(placement(&site, None, work_of(n, None, None)), at, |_| {
                plain_site()
            })
        };
        for n in 0..4 {
            place(&mut scheduler, n).unwrap();
        }
        let (ip1, ip2) = (site.with_source("ip1"), site.with_source("ip2"));
        let long = clock + Duration::from_secs(7200);
        scheduler.set_suspended(HashMap::from([(ip1.clone(), long)]));
        let rerouted = scheduler.take_rerouted();
        assert_eq!(rerouted.len(), 3, "ip1's three (3:1) are taken back");
        assert!(rerouted.iter().all(|(_, dest)| *dest == ip1));
        assert_eq!(
            place(&mut scheduler, 10).unwrap(),
            ip2,
            "new work avoids ip1"
        );
        // Held for ip1 while ip2 is open: placed again at once.
        let mut queue = Queue::new();
        let attempt = queued(&mut queue, 20);
        let id = SpoolId::from_u64(20);
        assert!(scheduler.hold(&mut queue, id, attempt, ip1.clone(), UnixTime(1_000), clock));
        assert_eq!(queue.due(UnixTime(1_000 + 1)).len(), 1);
        // Both suspended: work is held, not queued, until the first end.
        let short = clock + Duration::from_secs(600);
        scheduler.set_suspended(HashMap::from([(ip1.clone(), long), (ip2.clone(), short)]));
        assert_eq!(scheduler.take_rerouted().len(), 2, "ip2's two");
        let Err(Refused::Held {
            dest, budget_spent, ..
        }) = place(&mut scheduler, 11)
        else {
            panic!("held when no source is open");
        };
        assert!(!budget_spent);
        let attempt = queued(&mut queue, 21);
        let id = SpoolId::from_u64(21);
        assert!(scheduler.hold(
            &mut queue,
            id,
            attempt,
            dest.clone(),
            UnixTime(2_000),
            clock
        ));
        assert_eq!(dest, ip2, "the suspension that ends first");
        assert!(queue.due(UnixTime(2_000 + 599)).is_empty());
        assert_eq!(queue.due(UnixTime(2_000 + 600)).len(), 1);
    }

    #[test]
    fn a_source_suspended_everywhere_is_avoided_at_every_site() {
        let mut scheduler = Scheduler::new(ReadyLimits::default()).unwrap();
        scheduler.set_egress(egress(POOLS));
        let clock = Instant::now();
        let at = Clock {
            now: clock,
            unix: NOON,
        };
        let long = clock + Duration::from_secs(7200);
        scheduler.set_suspended(HashMap::from([(DestinationKey::every_site("ip1"), long)]));
        for (n, site) in ["mx:mx.one.test", "mx:mx.two.test"].into_iter().enumerate() {
            let site: DestinationKey = site.parse().unwrap();
            for k in 0..4 {
                let placed = scheduler
                    .place_work(
                        placement(&site, None, work_of(n as u64 * 10 + k, None, None)),
                        at,
                        |_| plain_site(),
                    )
                    .unwrap();
                assert_eq!(
                    placed,
                    site.with_source("ip2"),
                    "ip1 is suspended everywhere"
                );
            }
        }
    }

    #[test]
    fn a_suspended_domain_holds_its_mail_before_any_site_and_resume_releases_it() {
        let mut scheduler = Scheduler::new(ReadyLimits::default()).unwrap();
        let site: DestinationKey = "mx:mx.shared.test".parse().unwrap();
        let clock = Instant::now();
        let at = Clock {
            now: clock,
            unix: NOON,
        };
        let for_domain = |domain: &str, n| Placement {
            domain: Some(domain.to_owned()),
            ..placement(&site, None, work_of(n, None, None))
        };
        let held_for = DestinationKey::domain("held.test");
        let hour = clock + Duration::from_secs(3600);
        scheduler.set_suspended(HashMap::from([(held_for.clone(), hour)]));
        let Err(Refused::Held { dest, .. }) =
            scheduler.place_work(for_domain("Held.Test", 1), at, |_| plain_site())
        else {
            panic!("the suspended domain's mail is held");
        };
        assert_eq!(dest, held_for);
        assert_eq!(
            scheduler
                .place_work(for_domain("open.test", 2), at, |_| plain_site())
                .unwrap(),
            site,
            "another domain on the same site goes on"
        );
        let mut queue = Queue::new();
        let attempt = queued(&mut queue, 30);
        let id = SpoolId::from_u64(30);
        assert!(scheduler.hold(&mut queue, id, attempt, dest, UnixTime(1_000), clock));
        assert!(
            queue.due(UnixTime(1_000 + 3599)).is_empty(),
            "waits for the suspension's end"
        );
        scheduler.set_suspended(HashMap::new());
        assert_eq!(
            scheduler.release_site(&mut queue, &held_for, UnixTime(1_010)),
            1
        );
        assert_eq!(queue.due(UnixTime(1_010)).len(), 1, "due once resumed");
    }

    /// Where the seeded schedules below believe a message is: the key is
    /// a site, or a (site, source) with egress.
    #[derive(Debug, Clone, PartialEq, Eq)]
    enum At {
        Ready(DestinationKey),
        Taken(DestinationKey),
        Held(DestinationKey),
        /// Deferred by a receiver's 4xx until this time: never due sooner.
        Deferred(u64),
        Bounced,
        Delivered,
    }

    /// Random interleavings of what the engine's tasks do to the
    /// scheduler, 200 seeds: work placed (or held, or bounced), connections
    /// taking work and delivering it (or deferring it on a 4xx, or holding
    /// it when its key got suspended), sites (and with egress, sources at
    /// a site) suspended and resumed, sites bouncing, held messages
    /// released or their hold running out, time passing. After every step
    /// each message is in exactly one place (a ready queue of its key, a
    /// connection, the held set of its key, the queue's retry timer, or
    /// gone), and a deferred retry never comes due before its backoff; at
    /// the end, with everything lifted, nothing is lost. With egress: two
    /// sites, [`POOLS`]: a default pool of two sources (one with a message
    /// rate) and a warming source whose day's volume runs out and comes
    /// back at midnight UTC, which each schedule crosses; the warming source never
    /// sends more than its day allows. Without: three sites, no sources.
    /// Returns how often each path was taken, over all seeds.
    fn seeded_schedules(with_egress: bool) -> HashMap<&'static str, usize> {
        use rand::rngs::StdRng;
        use rand::{Rng, SeedableRng};

        const MIDNIGHT: u64 = NOON + 12 * 3600; // 2025-12-07 00:00 UTC
        const START: u64 = MIDNIGHT - 900;
        let plan = egress(POOLS);
        let seen: std::cell::RefCell<HashMap<&str, usize>> = Default::default();
        for seed in 0..200u64 {
            let mut rng = StdRng::seed_from_u64(seed);
            let site_count = if with_egress { 2 } else { 3 };
            let sites: Vec<DestinationKey> = (0..site_count)
                .map(|i| format!("mx:mx{i}.test").parse().unwrap())
                .collect();
            let mut keys: Vec<DestinationKey> = sites.clone();
            for site in sites.iter().filter(|_| with_egress) {
                for source in ["ip1", "ip2", "new"] {
                    keys.push(site.with_source(source));
                }
            }
            let limits = ReadyLimits {
                max_connections: 3,
                max_connections_per_destination: 2,
                window_per_destination: 4,
                batch_per_connection: 2,
                max_queued_per_destination: 3,
                share: 1,
            };
            let mut scheduler: Scheduler<FakeMessage> = Scheduler::new(limits).unwrap();
            if with_egress {
                scheduler.set_egress(Arc::clone(&plan));
            }
            let mut queue = Queue::new();
            let mut places: HashMap<u64, At> = HashMap::new();
            // Each message's site and whether it takes the warming pool.
            let mut origin: HashMap<u64, (usize, bool)> = HashMap::new();
            let mut open: Vec<(DestinationKey, Vec<Work<FakeMessage>>)> = Vec::new();
            let mut suspended: HashMap<DestinationKey, Instant> = HashMap::new();
            let mut bouncing: HashMap<DestinationKey, String> = HashMap::new();
            let clock = Instant::now();
            let mut now = START;
            // Work placed through the warming source, per UTC day.
            let mut warming_sent: HashMap<u64, u64> = HashMap::new();
            let at_time = |now: u64| Clock {
                now: clock + Duration::from_secs(now - START),
                unix: now,
            };

            // Places message `n`'s work as the engine does: queued for a
            // (site, source), held for one, or bounced.
            let place = |n: u64,
                         attempt: AttemptId,
                         origin: (usize, bool),
                         scheduler: &mut Scheduler<FakeMessage>,
                         queue: &mut Queue,
                         warming_sent: &mut HashMap<u64, u64>,
                         now: u64|
             -> At {
                let (site, warming) = origin;
                let mut w = work_of(n, warming.then_some("carol"), None);
                w.attempt = attempt;
                let at = at_time(now);
                let placed =
                    scheduler.place_work(placement(&sites[site], None, w), at, |_| SiteLimits {
                        connections: 2,
                        ..plain_site()
                    });
                match placed {
                    Ok(key) => {
                        assert_eq!(key.site(), sites[site], "seed {seed}");
                        if key.source() == Some("new") {
                            *warming_sent.entry(now / 86_400).or_default() += 1;
                        }
                        At::Ready(key)
                    }
                    Err(Refused::Held { dest, .. }) => {
                        let id = SpoolId::from_u64(n);
                        assert!(scheduler.hold(
                            queue,
                            id,
                            attempt,
                            dest.clone(),
                            UnixTime(now),
                            at.now
                        ));
                        At::Held(dest)
                    }
                    Err(Refused::Bounce(..)) => {
                        queue.remove(SpoolId::from_u64(n));
                        *seen.borrow_mut().entry("bounced at placing").or_default() += 1;
                        At::Bounced
                    }
                }
            };

            for step in 0..400 {
                let t = at_time(now).now;
                match rng.gen_range(0..11) {
                    // A new message arrives and is placed.
                    0 | 1 => {
                        let n = places.len() as u64 + 1;
                        queue.insert(
                            SpoolId::from_u64(n),
                            QueueEntry {
                                size: 10,
                                recipients: 1,
                                received_at: now,
                                acknowledged_at: None,
                                shape: Default::default(),
                            },
                        );
                        let due = queue.due(UnixTime(now));
                        assert_eq!(due.len(), 1, "seed {seed}: only the new one is due");
                        let warming = with_egress && rng.gen_bool(0.25);
                        let o = (rng.gen_range(0..sites.len()), warming);
                        origin.insert(n, o);
                        let p = place(
                            n,
                            due[0].attempt,
                            o,
                            &mut scheduler,
                            &mut queue,
                            &mut warming_sent,
                            now,
                        );
                        *seen
                            .borrow_mut()
                            .entry(if matches!(p, At::Held(_)) {
                                "held at placing"
                            } else {
                                "placed"
                            })
                            .or_default() += 1;
                        places.insert(n, p);
                    }
                    // A connection opens and takes work.
                    2 => {
                        if let Some((dest, works)) = scheduler.next_connection(t) {
                            for w in &works {
                                assert_eq!(
                                    places[&w.id.to_u64()],
                                    At::Ready(dest.clone()),
                                    "seed {seed} step {step}"
                                );
                                places.insert(w.id.to_u64(), At::Taken(dest.clone()));
                            }
                            open.push((dest, works));
                        }
                    }
                    // An open connection asks for more.
                    3 if !open.is_empty() => {
                        let i = rng.gen_range(0..open.len());
                        let dest = open[i].0.clone();
                        for w in scheduler.next_batch(&dest, t) {
                            assert_eq!(places[&w.id.to_u64()], At::Ready(dest.clone()));
                            places.insert(w.id.to_u64(), At::Taken(dest.clone()));
                            open[i].1.push(w);
                        }
                    }
                    // A connection delivers what it took (a suspended
                    // key's work is held, a bouncing one's bounced).
                    4 if !open.is_empty() => {
                        let (dest, works) = open.swap_remove(rng.gen_range(0..open.len()));
                        for w in works {
                            let n = w.id.to_u64();
                            let p = if scheduler.bouncing_reply(&dest).is_some() {
                                queue.remove(w.id);
                                At::Bounced
                            } else if scheduler.suspended_until(&dest, t).is_some() {
                                *seen.borrow_mut().entry("taken, then held").or_default() += 1;
                                assert!(scheduler.hold(
                                    &mut queue,
                                    w.id,
                                    w.attempt,
                                    dest.clone(),
                                    UnixTime(now),
                                    t
                                ));
                                At::Held(dest.clone())
                            } else if rng.gen_bool(0.3) {
                                // The receiver said 4xx: a retry later.
                                let deferral =
                                    queue.defer(w.id, w.attempt, UnixTime(now), "451 4.3.0 later");
                                let Ok(crate::queue::Deferral::Retry(d)) = deferral else {
                                    panic!("seed {seed}: {deferral:?}");
                                };
                                *seen.borrow_mut().entry("deferred").or_default() += 1;
                                At::Deferred(d.next_attempt_unix)
                            } else {
                                queue.remove(w.id);
                                At::Delivered
                            };
                            places.insert(n, p);
                            scheduler.done(&dest, 1);
                        }
                        scheduler.connection_closed(&dest);
                    }
                    // A site, or a source at a site, is suspended or resumed.
                    5 | 6 => {
                        let dest = keys[rng.gen_range(0..keys.len())].clone();
                        if suspended.remove(&dest).is_none() {
                            suspended.insert(
                                dest.clone(),
                                t + Duration::from_secs(rng.gen_range(1..300)),
                            );
                        } else {
                            scheduler.release_site(&mut queue, &dest, UnixTime(now));
                        }
                        scheduler.set_suspended(suspended.clone());
                        let held =
                            hold_rerouted(&mut scheduler, &mut queue, &mut places, now, t, seed);
                        *seen
                            .borrow_mut()
                            .entry("taken back from a suspended key")
                            .or_default() += held;
                    }
                    // A site starts or stops bouncing.
                    7 => {
                        let dest = sites[rng.gen_range(0..sites.len())].clone();
                        // A bounce rule also suspends the site (as the
                        // shared table gives it to the engine).
                        if bouncing.remove(&dest).is_none() {
                            bouncing.insert(dest.clone(), "550 5.7.606 banned".into());
                            suspended.insert(dest, t + Duration::from_secs(600));
                        } else {
                            suspended.remove(&dest);
                        }
                        scheduler.set_bouncing(bouncing.clone(), &mut queue, UnixTime(now));
                        scheduler.set_suspended(suspended.clone());
                        hold_rerouted(&mut scheduler, &mut queue, &mut places, now, t, seed);
                        for (w, _) in scheduler.take_bounced() {
                            let n = w.id.to_u64();
                            assert!(
                                matches!(places[&n], At::Ready(_)),
                                "seed {seed}: {:?}",
                                places[&n]
                            );
                            queue.remove(w.id);
                            places.insert(n, At::Bounced);
                            *seen.borrow_mut().entry("drained to bounce").or_default() += 1;
                        }
                    }
                    // The engine's turn: held messages with room or budget
                    // come due.
                    8 => scheduler.release_held(&mut queue, UnixTime(now), t),
                    // Time passes.
                    _ => now += rng.gen_range(0..40),
                }
                // What is due now is handed out: held again unread while
                // its key has no room, else placed again.
                let due = queue.due(UnixTime(now));
                for d in &due {
                    let n = d.id.to_u64();
                    match places[&n] {
                        At::Held(_) => {}
                        At::Deferred(until) => assert!(
                            until <= now,
                            "seed {seed} step {step}: {n} deferred until {until} came due at {now}"
                        ),
                        ref p => panic!("seed {seed} step {step}: {n} came due while {p:?}"),
                    }
                }
                let handed_out = due.len();
                let due = scheduler.recheck_held(&mut queue, due, UnixTime(now), at_time(now).now);
                *seen.borrow_mut().entry("held again unread").or_default() +=
                    handed_out - due.len();
                for d in due {
                    let n = d.id.to_u64();
                    let p = place(
                        n,
                        d.attempt,
                        origin[&n],
                        &mut scheduler,
                        &mut queue,
                        &mut warming_sent,
                        now,
                    );
                    *seen
                        .borrow_mut()
                        .entry("held, then placed again")
                        .or_default() += 1;
                    places.insert(n, p);
                }
                // Every message in exactly one place.
                for key in &keys {
                    let ready = places
                        .values()
                        .filter(|p| **p == At::Ready(key.clone()))
                        .count();
                    assert_eq!(
                        scheduler.ready.queued_for(key),
                        ready,
                        "seed {seed} step {step} {key}"
                    );
                }
                // (The held sets may still name a message that came due by
                // its timer and moved on: the queue releases only what it
                // holds, which the deferred ones above check.)
                for (&n, p) in &places {
                    let id = SpoolId::from_u64(n);
                    let state = queue.state(id);
                    match p {
                        At::Held(key) => {
                            assert!(
                                scheduler.is_held(key, id),
                                "seed {seed} step {step}: {n} held for {key}"
                            );
                            assert!(matches!(
                                state,
                                Some(crate::queue::MessageState::Waiting { .. })
                            ));
                        }
                        At::Delivered | At::Bounced => assert!(state.is_none()),
                        At::Deferred(_) => assert!(matches!(
                            state,
                            Some(crate::queue::MessageState::Waiting { .. })
                        )),
                        At::Ready(_) | At::Taken(_) => {
                            assert!(matches!(
                                state,
                                Some(crate::queue::MessageState::Active { .. })
                            ));
                        }
                    }
                }
                let day_one = warming_sent.get(&(START / 86_400)).copied().unwrap_or(0);
                assert!(
                    day_one <= 2,
                    "seed {seed}: the warming source sent {day_one} on its 2-a-day day"
                );
            }
            if with_egress && now >= MIDNIGHT {
                *seen.borrow_mut().entry("crossed midnight").or_default() += 1;
            }
            if warming_sent.get(&(START / 86_400)) == Some(&2) {
                *seen.borrow_mut().entry("warm-up spent").or_default() += 1;
            }

            // Everything lifted: the rest drains, nothing is lost.
            scheduler.set_suspended(HashMap::new());
            assert!(scheduler.take_rerouted().is_empty());
            scheduler.set_bouncing(HashMap::new(), &mut queue, UnixTime(now));
            for _ in 0..20_000 {
                for (dest, works) in open.drain(..) {
                    for w in works {
                        queue.remove(w.id);
                        places.insert(w.id.to_u64(), At::Delivered);
                        scheduler.done(&dest, 1);
                    }
                    scheduler.connection_closed(&dest);
                }
                now += 61;
                let t = at_time(now).now;
                scheduler.release_held(&mut queue, UnixTime(now), t);
                let due = queue.due(UnixTime(now));
                for d in scheduler.recheck_held(&mut queue, due, UnixTime(now), t) {
                    let n = d.id.to_u64();
                    let p = place(
                        n,
                        d.attempt,
                        origin[&n],
                        &mut scheduler,
                        &mut queue,
                        &mut warming_sent,
                        now,
                    );
                    places.insert(n, p);
                }
                while let Some((dest, works)) = scheduler.next_connection(t) {
                    open.push((dest, works));
                }
                if open.is_empty()
                    && places
                        .values()
                        .all(|p| matches!(p, At::Delivered | At::Bounced))
                {
                    break;
                }
            }
            let stuck: Vec<_> = places
                .iter()
                .filter(|(_, p)| !matches!(p, At::Delivered | At::Bounced))
                .collect();
            assert!(stuck.is_empty(), "seed {seed}: lost or stuck {stuck:?}");
            assert!(places.len() > 20, "seed {seed}: too few messages");
        }
        seen.into_inner()
    }

    /// Holds the work a new suspension took back from the ready queues,
    /// as the engine does through the recorder; how many.
    fn hold_rerouted(
        scheduler: &mut Scheduler<FakeMessage>,
        queue: &mut Queue,
        places: &mut HashMap<u64, At>,
        now: u64,
        t: Instant,
        seed: u64,
    ) -> usize {
        let rerouted = scheduler.take_rerouted();
        let count = rerouted.len();
        for (w, held_for) in rerouted {
            let n = w.id.to_u64();
            assert!(
                matches!(places[&n], At::Ready(_)),
                "seed {seed}: {:?}",
                places[&n]
            );
            assert!(scheduler.hold(queue, w.id, w.attempt, held_for.clone(), UnixTime(now), t));
            places.insert(n, At::Held(held_for));
        }
        count
    }

    /// Each path in `paths` was taken more than 20 times over the seeds:
    /// a schedule that never crosses a boundary proves nothing about it.
    fn assert_taken(seen: &HashMap<&str, usize>, paths: &[&str]) {
        for path in paths {
            assert!(
                seen.get(path).copied().unwrap_or(0) > 20,
                "{path}: {seen:?}"
            );
        }
    }

    /// Paths both kinds of schedule must take.
    const COMMON_PATHS: [&str; 6] = [
        "placed",
        "held at placing",
        "taken, then held",
        "taken back from a suspended key",
        "held, then placed again",
        "deferred",
    ];

    #[test]
    fn seeded_schedules_lose_no_message() {
        let seen = seeded_schedules(false);
        assert_taken(&seen, &COMMON_PATHS);
        // Held messages for a site without a source are held again
        // unread while it has no room; a bouncing site's ready queue is
        // drained to bounce.
        assert_taken(&seen, &["held again unread", "drained to bounce"]);
    }

    #[test]
    fn seeded_egress_schedules_lose_no_message() {
        let seen = seeded_schedules(true);
        assert_taken(&seen, &COMMON_PATHS);
        assert_taken(
            &seen,
            &["bounced at placing", "crossed midnight", "warm-up spent"],
        );
    }
}
