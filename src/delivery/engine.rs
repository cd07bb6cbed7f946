//! The delivery engine of one core, in Postfix's shape: the `scheduler`
//! decides what goes where and when (no I/O), the agents (`agent`: SMTP
//! connections, the mailbox tier) deliver and report per recipient, the
//! `recorder` turns reports into spool records, DSNs and finished
//! messages. The engine is the loop that joins them: it takes due
//! messages from the queue, has them planned and placed, opens the
//! connections the scheduler allows, feeds each its work, applies the
//! back-off rules to what receivers answer, and serves control requests.
//! It speaks no SMTP itself (`outbound`) and decides no retry timing
//! (`queue`).

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_lite::future::or;

use crate::delivery::agent::{DeliveryAgent, LocalAgent, SmtpAgent};
use crate::delivery::outbound::{HostFailed, Outbound};
use crate::delivery::recorder::{Hold, Recorder, Via};
use crate::delivery::report::{same_result, transient, RecipientReport};
use crate::delivery::scheduler::{self, Hop, MessageSource, Placement, Refused, Scheduler, Work};
use crate::delivery::suspensions::Suspensions;
use crate::delivery::throttles::{Change, Throttles};
use crate::egress::WarmupLedger;
use crate::events::{Event, EventKind};
use crate::outbound_tls::{DomainTls, HostTls, TlsOutcome, TlsPolicies};
use crate::queue::{
    AttemptId, DestinationKey, Dispatch, QueueError, ReadyLimits, SharedBudget, UnixTime,
};
use crate::resolver::{MxHost, MxResolver, ResolverHandle};
use crate::shard::ShardContext;
use crate::smtp::client::{ClientConfig, EnhancedCode, Outcome, ReplyText, StartTlsPolicy};
use crate::spool::{SegmentStore, SpoolId, StoredMessage};

/// The longest the engine sleeps without looking at the queue.
const MAX_IDLE: Duration = Duration::from_secs(60);
/// Due messages planned at a time: a million due at once (a restart, the
/// end of a suspension) go a batch at a time, other work running between
/// batches and the plan's memory (each message read) staying small.
const DUE_BATCH: usize = 1000;
/// How long an idle outbound connection waits for more work to its
/// destination before QUIT (Postfix's smtp_connection_cache_time_limit).
const CONNECTION_LINGER: Duration = Duration::from_secs(2);

/// Local recipients while `[local] mailbox_dir` is unset: a configuration
/// error (RFC 3463 X.3.5), retried until it is fixed.
const NO_MAILBOX_TIER: &str = "451 4.3.5 local delivery is not configured ([local] mailbox_dir)";

/// Shared by the engine's tasks on one core.
pub struct Engine<S: SegmentStore> {
    ctx: Rc<ShardContext<S>>,
    resolver: ResolverHandle,
    client: Rc<ClientConfig>,
    tls: futures_rustls::TlsConnector,
    /// How to reach the smarthost (the router's current one) when its
    /// TLS must be verified: a verifying connector and a client that
    /// requires STARTTLS.
    verified_smarthost: Option<(futures_rustls::TlsConnector, Rc<ClientConfig>)>,
    scheduler: RefCell<Scheduler<StoredMessage>>,
    recorder: Recorder<S>,
    /// Wakes idle connections when work is queued, so they take it before
    /// a new connection is opened.
    work_arrived: event_listener::Event,
    /// Suspended and throttled sites, shared by every core, and the
    /// versions of the tables last copied into the scheduler.
    suspensions: Arc<Suspensions>,
    suspensions_seen: Cell<u64>,
    throttles: Arc<Throttles>,
    throttles_seen: Cell<u64>,
    /// Today's messages per egress source, host-wide, kept across
    /// restarts; the chooser's spends last handed in, and when.
    warmup: Arc<WarmupLedger>,
    warmup_handed: Cell<(u64, Instant)>,
    tls_policies: Arc<TlsPolicies>,
}

/// What protected one outbound connection, for its deliveries' log lines
/// and for checking other domains' work against it.
#[derive(Debug, Default)]
struct LinkTls {
    /// The MX host connected to.
    host: String,
    /// The domain whose policy the connection was opened under.
    domain: Option<String>,
    outcome: TlsOutcome,
    /// What an MTA-STS `testing` policy would have refused.
    testing_failure: Option<String>,
}

/// The host-wide tables of sites under a back-off action, and the egress
/// sources' counts of the day.
#[derive(Debug, Default, Clone)]
pub struct SiteTables {
    pub suspensions: Arc<Suspensions>,
    pub throttles: Arc<Throttles>,
    pub warmup: Arc<WarmupLedger>,
    /// The destination domains' outbound TLS policies (MTA-STS, DANE)
    /// and their caches.
    pub tls_policies: Arc<TlsPolicies>,
}

/// The most often a core hands its egress counts in (each hand-in that
/// changes them rewrites a small file); a crash loses at most this much
/// of a warm-up day's count.
const WARMUP_HAND_IN: Duration = Duration::from_secs(1);

/// Seconds since the epoch, as the queue counts time.
pub fn unix_now() -> UnixTime {
    UnixTime(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    )
}

/// The queue and the spool of this shard, as the scheduler reads them.
struct SpoolSource<'a, S: SegmentStore>(&'a ShardContext<S>);

impl<S: SegmentStore> MessageSource<StoredMessage> for SpoolSource<'_, S> {
    fn pending(&self, id: SpoolId) -> Option<Vec<u32>> {
        self.0.queue.borrow().pending_recipients(id)
    }

    fn read(&self, id: SpoolId) -> Result<Rc<StoredMessage>, String> {
        self.0
            .spool
            .read_message(id)
            .map(Rc::new)
            .map_err(|e| e.to_string())
    }
}

impl<S: SegmentStore + 'static> Engine<S> {
    pub fn new(
        ctx: Rc<ShardContext<S>>,
        resolver: ResolverHandle,
        tls: std::sync::Arc<rustls::ClientConfig>,
        smarthost_tls: Option<std::sync::Arc<rustls::ClientConfig>>,
        limits: ReadyLimits,
        sites: SiteTables,
        shared: Option<Box<dyn SharedBudget>>,
    ) -> Result<Rc<Self>, QueueError> {
        let d = &ctx.config.delivery;
        let client = ClientConfig {
            helo_name: ctx.config.hostname.clone(),
            max_messages_per_connection: d.max_messages_per_connection,
            ..ClientConfig::default()
        };
        // Whichever host is the smarthost when a message goes out (it may
        // change on a reload) gets the verifying, required TLS.
        let verified_smarthost = smarthost_tls.map(|tls| {
            let required = ClientConfig {
                starttls: StartTlsPolicy::Required,
                ..client.clone()
            };
            (futures_rustls::TlsConnector::from(tls), Rc::new(required))
        });
        let mut scheduler = Scheduler::with_shared(limits, shared, ctx.index)?;
        let (day, counts) = sites.warmup.start_of(ctx.index);
        scheduler.seed_egress_counts(day, &counts, unix_now(), Instant::now());
        Ok(Rc::new(Engine {
            resolver,
            verified_smarthost,
            client: Rc::new(client),
            tls: futures_rustls::TlsConnector::from(tls),
            warmup_handed: Cell::new((scheduler.egress_spends(), Instant::now())),
            scheduler: RefCell::new(scheduler),
            recorder: Recorder::new(Rc::clone(&ctx)),
            work_arrived: event_listener::Event::new(),
            suspensions: sites.suspensions,
            suspensions_seen: Cell::new(u64::MAX),
            throttles: sites.throttles,
            throttles_seen: Cell::new(u64::MAX),
            warmup: sites.warmup,
            tls_policies: sites.tls_policies,
            ctx,
        }))
    }

    /// Runs until the shard stops.
    pub async fn run(self: Rc<Self>) {
        while !self.ctx.shutdown.is_fired() {
            let now = unix_now();
            self.sync_tables();
            self.scheduler.borrow_mut().set_egress(self.ctx.egress());
            let bounced = self.scheduler.borrow_mut().take_bounced();
            for (work, reply) in bounced {
                self.bounce(work, &reply).await;
            }
            // Work of a source suspended for its site: held, then placed
            // again through another source; of a suspended site: held.
            let rerouted = self.scheduler.borrow_mut().take_rerouted();
            for (work, dest) in rerouted {
                let hold = self.recorder.held(work.id, work.attempt, dest, false).await;
                self.hold(hold);
            }
            let due = {
                let clock = Instant::now();
                let mut queue = self.ctx.queue.borrow_mut();
                let mut scheduler = self.scheduler.borrow_mut();
                scheduler.release_held(&mut queue, now, clock);
                let due = queue.due_at_most(now, DUE_BATCH);
                scheduler.recheck_held(&mut queue, due, now, clock)
            };
            if !due.is_empty() {
                self.dispatch(due).await;
                // Idle connections woken by new work take it first.
                futures_lite::future::yield_now().await;
            }
            self.open_connections();
            let next = self.ctx.queue.borrow().next_wakeup();
            let mut idle = next.map_or(MAX_IDLE, |at| {
                Duration::from_secs(at.0.saturating_sub(unix_now().0)).min(MAX_IDLE)
            });
            // Work that a site's rate or a source's budget holds back:
            // look again when it may go.
            let clock = Instant::now();
            let wakeups = {
                let mut scheduler = self.scheduler.borrow_mut();
                [
                    scheduler.next_wakeup(clock),
                    scheduler.budget_wakeup(unix_now(), clock),
                ]
            };
            if !self.hand_in_warmup(false) {
                idle = idle.min(WARMUP_HAND_IN);
            }
            for at in wakeups.into_iter().flatten() {
                idle = idle.min(
                    at.saturating_duration_since(clock)
                        .max(Duration::from_millis(1)),
                );
            }
            let wake = async {
                if !idle.is_zero() {
                    or(glommio::timer::sleep(idle), self.ctx.delivery_wake.wait()).await;
                }
            };
            or(wake, self.ctx.shutdown.wait()).await;
        }
        self.hand_in_warmup(true);
    }

    /// Hands this core's egress counts to the host's ledger when they
    /// moved, at most every [`WARMUP_HAND_IN`] unless `now_anyway`.
    /// Returns false when counts wait to be handed in.
    fn hand_in_warmup(&self, now_anyway: bool) -> bool {
        let spends = self.scheduler.borrow().egress_spends();
        let (handed, at) = self.warmup_handed.get();
        if spends == handed {
            return true;
        }
        if !now_anyway && at.elapsed() < WARMUP_HAND_IN {
            return false;
        }
        if let Some((day, counts)) = self.scheduler.borrow().egress_day_counts() {
            self.warmup.hand_in(self.ctx.index, day, counts);
        }
        self.warmup_handed.set((spends, Instant::now()));
        true
    }

    /// Hands out due messages as the scheduler plans them: expiries,
    /// failures found before delivery, work placed per site, local work.
    async fn dispatch(self: &Rc<Self>, due: Vec<Dispatch>) {
        let router = self.ctx.router();
        let plan = scheduler::plan(due, &SpoolSource(&self.ctx), &router, &self.resolver).await;
        for expiry in plan.expiries {
            self.recorder.expire(expiry).await;
        }
        for b in plan.begun {
            let hold = self
                .recorder
                .begin(b.id, b.attempt, b.groups, b.message)
                .await;
            self.hold(hold);
        }
        for f in plan.failed {
            self.report(f.id, f.attempt, f.reports, Via::default())
                .await;
        }
        for placement in plan.remote {
            self.place(placement).await;
        }
        for work in plan.local {
            let engine = Rc::clone(self);
            glommio::spawn_local(async move { engine.deliver_local(work).await }).detach();
        }
    }

    /// Queues work for its site (from an egress source, when its message
    /// has a pool); a site becoming active takes its shaping limits from
    /// the rules in force.
    async fn place(&self, placement: Placement<StoredMessage>) {
        let domain = placement.domain.clone();
        let hop = Rc::clone(&placement.work.hop);
        let shape = |dest: &DestinationKey| self.site_limits(domain.as_deref(), &hop, dest);
        let clock = crate::egress::Clock {
            now: Instant::now(),
            unix: unix_now().0,
        };
        let placed = self
            .scheduler
            .borrow_mut()
            .place_work(placement, clock, shape);
        match placed {
            Ok(_) => {
                self.work_arrived.notify(usize::MAX);
            }
            // Not an attempt: nothing was tried. The message waits in the
            // queue, uncounted, until the destination makes room (or its
            // source's budget returns).
            Err(Refused::Held {
                work,
                dest,
                budget_spent,
            }) => {
                let hold = self
                    .recorder
                    .held(work.id, work.attempt, dest, budget_spent)
                    .await;
                self.hold(hold);
            }
            Err(Refused::Bounce(work, reply)) => self.bounce(work, &reply).await,
        }
    }

    /// Has the recorder record a group's results, then applies a hold.
    async fn report(
        &self,
        id: SpoolId,
        attempt: AttemptId,
        results: Vec<RecipientReport>,
        via: Via<'_>,
    ) {
        let hold = self.recorder.report(id, attempt, results, via).await;
        self.hold(hold);
    }

    /// An attempt ended held back by a limit: the scheduler keeps the id.
    fn hold(&self, hold: Option<Hold>) {
        let Some(Hold { id, attempt, dest }) = hold else {
            return;
        };
        let mut queue = self.ctx.queue.borrow_mut();
        self.scheduler
            .borrow_mut()
            .hold(&mut queue, id, attempt, dest, unix_now(), Instant::now());
    }

    /// Copies the shared tables of suspended, bouncing and throttled
    /// sites into the scheduler when they changed.
    fn sync_tables(&self) {
        let version = self.throttles.version();
        if version != self.throttles_seen.replace(version) {
            self.scheduler
                .borrow_mut()
                .set_throttled(self.throttles.factors(), Instant::now());
        }
        let version = self.suspensions.version();
        if version == self.suspensions_seen.replace(version) {
            return;
        }
        let (wall, clock) = (SystemTime::now(), Instant::now());
        let active = self.suspensions.active(wall);
        let bouncing = active
            .iter()
            .filter(|(_, s)| s.bounce)
            .map(|(site, s)| (site.clone(), s.reason.clone()))
            .collect();
        let table = active
            .into_iter()
            .map(|(site, s)| {
                let left = s.until.duration_since(wall).unwrap_or_default();
                (site, clock + left)
            })
            .collect();
        let mut scheduler = self.scheduler.borrow_mut();
        scheduler.set_bouncing(bouncing, &mut self.ctx.queue.borrow_mut(), unix_now());
        scheduler.set_suspended(table);
    }

    /// Fails a piece of work for good: its site's mail is being bounced by
    /// a back-off rule. Its ready-queue slot is given back.
    async fn bounce(&self, work: Work<StoredMessage>, reply: &str) {
        let reply = if reply.starts_with('5') {
            reply.to_owned()
        } else {
            format!("550 5.0.0 returned after the receiver said: {reply}")
        };
        let reports = same_result(&work.recipients, Outcome::PermanentFailure, &reply);
        self.report(work.id, work.attempt, reports, Via::default())
            .await;
    }

    /// A receiver's reply for `dest` matched a back-off rule: its actions
    /// are taken (bounce or suspend the site, throttle it) and logged.
    /// Returns whether the rule fails the recipient for good.
    fn back_off(&self, dest: &DestinationKey, reply: &str) -> bool {
        let shaping = self.ctx.shaping();
        let Some(rule) = shaping.backoff_for(reply) else {
            return false;
        };
        let pattern = rule.pattern();
        if let Some(length) = rule.bounce {
            let until = SystemTime::now() + length;
            if self
                .suspensions
                .bounce(dest.clone(), until, reply.to_owned())
            {
                tracing::warn!(site = %dest, reply, rule = pattern, bounce = ?length, "site bounced: its queued mail returns to the senders");
                self.ctx.metrics.borrow_mut().counters.site_bounces += 1;
            }
        } else if let Some(length) = rule.suspend {
            // Every recipient of a refused transaction says the same: one
            // suspension is enough.
            let suspended = self
                .scheduler
                .borrow()
                .suspended_until(dest, Instant::now())
                .is_some();
            let until = SystemTime::now() + length;
            if !suspended
                && self
                    .suspensions
                    .suspend(dest.clone(), until, reply.to_owned())
            {
                tracing::warn!(site = %dest, reply, rule = pattern, suspend = ?length, "site suspended");
                self.ctx.metrics.borrow_mut().counters.suspensions += 1;
                self.emit_suspended(dest, reply, until);
            }
        }
        if let Some(step) = rule.throttle {
            if let Some(Change::Lowered(factor)) =
                self.throttles.lower(dest, step, reply, Instant::now())
            {
                tracing::warn!(site = %dest, reply, rule = pattern, factor, "site throttled");
                self.ctx.metrics.borrow_mut().counters.throttles += 1;
            }
        }
        // This core at once; the others at their next turn.
        self.sync_tables();
        self.ctx.delivery_wake.notify();
        rule.fail
    }

    /// The `suspended` event of `dest` (a site, or a site through one
    /// egress source) until `until`.
    fn emit_suspended(&self, dest: &DestinationKey, reply: &str, until: SystemTime) {
        let class = self.ctx.shaping().classify(reply);
        self.ctx.emit(|| {
            Event {
                site: Some(dest.site().to_string()),
                source: dest.source().map(str::to_owned),
                class: Some(class.label()),
                until: Some(crate::events::event::unix_seconds(until)),
                ..Event::new(EventKind::Suspended, unix_now().0)
            }
            .with_reply(reply)
        });
    }

    /// A message was delivered to `dest`: a throttled site climbs back
    /// step by step.
    fn delivered(&self, dest: &DestinationKey) {
        if !self.scheduler.borrow().is_throttled(dest) {
            return;
        }
        match self.throttles.delivered(dest) {
            Some(Change::Raised(factor)) => {
                tracing::info!(site = %dest, factor, "site throttle eased");
            }
            Some(Change::Lifted) => tracing::info!(site = %dest, "site throttle lifted"),
            _ => return,
        }
        self.sync_tables();
    }

    /// The shaping limits of a site reached through `hop` for `domain`
    /// (and from `dest`'s egress source), with `[delivery]` as the
    /// fallback.
    fn site_limits(
        &self,
        domain: Option<&str>,
        hop: &Hop,
        dest: &DestinationKey,
    ) -> crate::shaping::SiteLimits {
        let d = &self.ctx.config.delivery;
        let cores = self.ctx.config.executor_count();
        let fallback = crate::shaping::Limits {
            // [delivery] counts are per core; the rules' are host-wide.
            connections: Some(d.max_connections_per_destination.saturating_mul(cores)),
            deliveries_per_connection: Some(d.max_messages_per_connection),
            ..crate::shaping::Limits::default()
        };
        let limits = self.ctx.shaping().site_limits_from(
            domain,
            &hop.host_names(),
            &fallback,
            cores,
            dest.source(),
        );
        tracing::debug!(domain, rule = %limits.rule, connections = limits.connections, "site shaped");
        limits
    }

    /// Work for `dest` left its ready queue: wake the engine if messages
    /// wait for that room.
    fn room_made(&self, dest: &DestinationKey) {
        if self.scheduler.borrow().awaits_room(dest) {
            self.ctx.delivery_wake.notify();
        }
    }

    fn open_connections(self: &Rc<Self>) {
        loop {
            let next = self.scheduler.borrow_mut().next_connection(Instant::now());
            let Some((dest, works)) = next else { return };
            self.room_made(&dest);
            let engine = Rc::clone(self);
            glommio::spawn_local(async move { engine.connection(dest, works).await }).detach();
        }
    }

    /// One connection's life: tries the destination's hosts in order until
    /// one takes the work; reuses it for more work of the same destination.
    async fn connection(self: Rc<Self>, dest: DestinationKey, works: Vec<Work<StoredMessage>>) {
        let mut queue: VecDeque<Work<StoredMessage>> = works.into();
        let hop = match queue.front() {
            Some(work) => Rc::clone(&work.hop),
            None => {
                self.scheduler.borrow_mut().connection_closed(&dest);
                return;
            }
        };
        // The egress source's address and EHLO name, if the key has one.
        let source = self
            .scheduler
            .borrow()
            .source_of(&dest)
            .map(|s| (s.bind, s.ehlo.clone()));
        let bind = source.as_ref().and_then(|(bind, _)| *bind);
        let ehlo = source.map(|(_, ehlo)| ehlo);
        let mut last_failure: Option<HostFailed> = None;
        // The TLS policies of the domains this work is for: one, unless
        // several domains share this MX set.
        let domain_plans = self.domain_plans(&queue).await;
        for (name, addr) in self.addresses(&hop).await {
            let (governing, host_tls) = strictest(&domain_plans, &name);
            if let HostTls::Refused(why) = &host_tls {
                tracing::info!(%dest, host = %name, reason = %why, "next hop refused by TLS policy");
                self.count_policy_failure(why.starts_with("DANE"));
                last_failure = Some(HostFailed {
                    reply: ReplyText::local(451, EnhancedCode::new(4, 7, 5), why.clone()),
                    transient: true,
                });
                continue;
            }
            // A connection that carried its maximum of messages is replaced
            // by a new one to the same host; any other end (a failure)
            // moves the rest of the work on to the next host.
            while !queue.is_empty() {
                let report = crate::outbound_tls::pkix::TestingReport::default();
                let (tls, client) = self.tls_for_host(&hop, &host_tls, &report);
                let client = self.shaped_client(&dest, client, ehlo.as_deref());
                let timeout = self.ctx.config.delivery.connect_timeout;
                let connection =
                    match Outbound::open(addr, &name, client, Some(tls), timeout, bind).await {
                        Ok(out) => out,
                        Err(mut failed) => {
                            if let Some(policy) = required_policy(&host_tls) {
                                self.count_policy_failure(matches!(host_tls, HostTls::Dane(_)));
                                let domain = governing.as_deref().unwrap_or_default();
                                failed.reply = ReplyText::local(
                                    451,
                                    EnhancedCode::new(4, 7, 5),
                                    format!(
                                        "{policy} policy of {domain} not met by {name}: {}",
                                        failed.reply.text
                                    ),
                                );
                                failed.transient = true;
                            }
                            tracing::debug!(%dest, %addr, reply = %failed.reply, "next hop failed");
                            last_failure = Some(failed);
                            break;
                        }
                    };
                let link = self.link_tls(governing.clone(), &name, &host_tls, &connection, &report);
                let mut agent = SmtpAgent { connection };
                let spent = self
                    .deliver_over(&mut agent, &dest, &mut queue, &link)
                    .await;
                agent.connection.quit().await;
                if !spent {
                    break;
                }
            }
            if queue.is_empty() {
                break;
            }
        }
        // Every host failed (or there was none): the rest waits for a retry,
        // or bounces if the last host refused for good.
        if let Some(failed) = &last_failure {
            self.back_off(&dest, &failed.reply.to_string());
        }
        let (outcome, reply) = match &last_failure {
            Some(f) if !f.transient => (Outcome::PermanentFailure, f.reply.to_string()),
            Some(f) => (Outcome::TransientFailure, f.reply.to_string()),
            None => (
                Outcome::TransientFailure,
                format!("451 4.4.4 no reachable host for {dest}"),
            ),
        };
        for work in queue.drain(..) {
            let results = same_result(&work.recipients, outcome, &reply);
            let via = Via {
                source: dest.source(),
                site: Some(&dest),
                ..Via::default()
            };
            self.report(work.id, work.attempt, results, via).await;
            self.scheduler.borrow_mut().done(&dest, 1);
        }
        self.scheduler.borrow_mut().connection_closed(&dest);
        self.ctx.delivery_wake.notify();
    }

    /// Sends the work in `queue` (and more for `dest`, while it comes)
    /// over one open connection. Returns true when the connection carried
    /// its maximum of messages and work is left for a new one.
    async fn deliver_over(
        self: &Rc<Self>,
        agent: &mut SmtpAgent,
        dest: &DestinationKey,
        queue: &mut VecDeque<Work<StoredMessage>>,
        link: &LinkTls,
    ) -> bool {
        loop {
            if queue.is_empty() && agent.connection.messages_left() > 0 {
                self.wait_for_work(dest, queue).await;
            }
            if agent.connection.messages_left() == 0 {
                return !queue.is_empty();
            }
            let Some(work) = queue.pop_front() else {
                return false;
            };
            // A back-off action taken since this work was handed out
            // applies to it too.
            let bouncing = self.scheduler.borrow().bouncing_reply(dest);
            if let Some(reply) = bouncing {
                self.bounce(work, &reply).await;
                self.scheduler.borrow_mut().done(dest, 1);
                continue;
            }
            let suspended = self
                .scheduler
                .borrow()
                .suspended_until(dest, Instant::now())
                .is_some();
            if suspended {
                let hold = self
                    .recorder
                    .held(work.id, work.attempt, dest.clone(), false)
                    .await;
                self.hold(hold);
                self.scheduler.borrow_mut().done(dest, 1);
                continue;
            }
            // Another domain of the same MX set may need more TLS than
            // this connection has: it waits for a connection of its own.
            if let Some(reply) = self.tls_mismatch(&work, link, agent.remote()).await {
                let via = Via {
                    relay: Some(agent.remote()),
                    source: dest.source(),
                    tls: Some(link.outcome),
                    ..Via::default()
                };
                let results = same_result(&work.recipients, Outcome::TransientFailure, &reply);
                self.report(work.id, work.attempt, results, via).await;
                self.scheduler.borrow_mut().done(dest, 1);
                continue;
            }
            let begun = self
                .ctx
                .queue
                .borrow_mut()
                .begin(work.id, work.attempt, unix_now());
            if begun.is_err() {
                // The queue gave up on this attempt (its deadline
                // passed); the message has a newer one.
                self.scheduler.borrow_mut().done(dest, 1);
                continue;
            }
            let mut delivery = self
                .timed(agent.deliver(&work.message, &work.recipients))
                .await;
            let mut delivered = false;
            for r in &mut delivery.reports {
                if r.outcome == Outcome::Delivered {
                    delivered = true;
                } else if self.back_off(dest, &r.reply) && r.outcome == Outcome::TransientFailure {
                    r.outcome = Outcome::PermanentFailure;
                    r.reply = made_permanent(&r.reply);
                }
            }
            if delivered {
                self.delivered(dest);
            }
            self.report(
                work.id,
                work.attempt,
                delivery.reports,
                Via {
                    relay: Some(agent.remote()),
                    source: dest.source(),
                    site: Some(dest),
                    success: agent.success_action(),
                    tls: Some(link.outcome),
                    tls_testing_failure: link.testing_failure.as_deref(),
                },
            )
            .await;
            self.scheduler.borrow_mut().done(dest, 1);
            if !delivery.reusable {
                return false;
            }
        }
    }

    /// Awaits one delivery, recording how long it took.
    async fn timed<T>(&self, delivery: impl std::future::Future<Output = T>) -> T {
        let began = Instant::now();
        let result = delivery.await;
        self.ctx
            .metrics
            .borrow_mut()
            .attempt_latency
            .record(began.elapsed());
        result
    }

    /// Hands a message's local recipients to the mailbox tier, then queues
    /// one new message for the external addresses aliases forwarded to; a
    /// recipient counts as delivered only once its copies and that forward
    /// are durable.
    async fn deliver_local(self: Rc<Self>, work: Work<StoredMessage>) {
        let Work {
            id,
            attempt,
            recipients,
            message,
            ..
        } = work;
        if self
            .ctx
            .queue
            .borrow_mut()
            .begin(id, attempt, unix_now())
            .is_err()
        {
            return; // the queue gave up on this attempt
        }
        let Some(tier) = self.ctx.local.clone() else {
            let reports = transient(&recipients, NO_MAILBOX_TIER);
            return self.report(id, attempt, reports, Via::default()).await;
        };
        let mut agent = LocalAgent {
            tier,
            blocking: Arc::clone(&self.ctx.blocking),
        };
        let delivery = self.timed(agent.deliver(&message, &recipients)).await;
        let mut reports = delivery.reports;
        if let Some(forward) = delivery.forward {
            let body = message.body().to_vec();
            let queued = self
                .recorder
                .forward(message.envelope(), body, forward.to)
                .await;
            let (outcome, reply) = match queued {
                Ok(new_id) => (
                    Outcome::Delivered,
                    format!("250 2.0.0 delivered, forwarded as {new_id}"),
                ),
                Err(e) => (
                    Outcome::TransientFailure,
                    format!("451 4.3.0 cannot queue the forwarded copy: {e}"),
                ),
            };
            reports.extend(same_result(&forward.recipients, outcome, &reply));
        }
        drop(message);
        let via = Via {
            relay: Some(agent.remote()),
            source: None,
            site: None,
            success: agent.success_action(),
            ..Via::default()
        };
        self.report(id, attempt, reports, via).await;
    }

    /// The TLS connector and client policy for a next hop: verifying and
    /// required for a smarthost so configured, opportunistic otherwise.
    fn tls_for(&self, hop: &Hop) -> (futures_rustls::TlsConnector, Rc<ClientConfig>) {
        if let (Hop::Fixed(hp), Some((tls, client))) = (hop, &self.verified_smarthost) {
            if self.ctx.router().smarthost() == Some(hp) {
                return (tls.clone(), Rc::clone(client));
            }
        }
        (self.tls.clone(), Rc::clone(&self.client))
    }

    /// The TLS requirements of the MX domains `queue`'s work is for,
    /// when policies apply.
    async fn domain_plans(
        &self,
        queue: &VecDeque<Work<StoredMessage>>,
    ) -> Vec<(String, Arc<DomainTls>)> {
        let mut plans: Vec<(String, Arc<DomainTls>)> = Vec::new();
        if !self.tls_policies.is_enabled() {
            return plans;
        }
        for work in queue {
            let Hop::Mx { domain, hosts } = &*work.hop else {
                continue;
            };
            if plans.iter().any(|(d, _)| d == domain) {
                continue;
            }
            let names = hosts.iter().map(|h| h.name.clone()).collect();
            let plan = self.tls_policies.domain(domain, names).await;
            plans.push((domain.clone(), plan));
        }
        plans
    }

    /// The TLS connector and client for one host under `host_tls`:
    /// STARTTLS required and the policy's verifier for DANE and MTA-STS
    /// `enforce`; a verifier that writes to `report` for `testing`; as
    /// [`Self::tls_for`] otherwise.
    fn tls_for_host(
        &self,
        hop: &Hop,
        host_tls: &HostTls,
        report: &crate::outbound_tls::pkix::TestingReport,
    ) -> (futures_rustls::TlsConnector, Rc<ClientConfig>) {
        let required = || {
            Rc::new(ClientConfig {
                starttls: StartTlsPolicy::Required,
                ..(*self.client).clone()
            })
        };
        match host_tls {
            HostTls::Dane(config) | HostTls::MtaSts(config) => (
                futures_rustls::TlsConnector::from(Arc::clone(config)),
                required(),
            ),
            HostTls::EncryptOnly => (self.tls.clone(), required()),
            HostTls::MtaStsTesting { .. } => {
                match self.tls_policies.testing_config(Arc::clone(report)) {
                    Some(config) => (
                        futures_rustls::TlsConnector::from(config),
                        Rc::clone(&self.client),
                    ),
                    None => self.tls_for(hop),
                }
            }
            HostTls::Opportunistic | HostTls::Refused(_) => self.tls_for(hop),
        }
    }

    /// What protected a connection just opened under `host_tls`; logs
    /// and counts what an MTA-STS `testing` policy would have refused.
    fn link_tls(
        &self,
        domain: Option<String>,
        host: &str,
        host_tls: &HostTls,
        connection: &Outbound,
        report: &crate::outbound_tls::pkix::TestingReport,
    ) -> LinkTls {
        let outcome = match host_tls {
            HostTls::Dane(_) => TlsOutcome::Dane,
            HostTls::MtaSts(_) => TlsOutcome::MtaSts,
            _ if connection.is_tls() => TlsOutcome::Opportunistic,
            _ => TlsOutcome::None,
        };
        let testing_failure = match host_tls {
            HostTls::MtaStsTesting { mx_listed: false } => {
                Some(format!("MX host {host} is not listed in the policy"))
            }
            HostTls::MtaStsTesting { .. } if !connection.is_tls() => {
                Some("STARTTLS not offered".to_owned())
            }
            HostTls::MtaStsTesting { .. } => {
                report.lock().unwrap_or_else(|p| p.into_inner()).take()
            }
            _ => None,
        };
        if let Some(failure) = &testing_failure {
            self.ctx
                .metrics
                .borrow_mut()
                .counters
                .mta_sts_testing_failures += 1;
            tracing::warn!(
                domain = domain.as_deref().unwrap_or(""),
                remote = %connection.remote,
                failure = %failure,
                "MTA-STS testing policy would refuse this connection"
            );
        }
        LinkTls {
            host: host.to_owned(),
            domain,
            outcome,
            testing_failure,
        }
    }

    /// Why `work` must not go over a connection opened for another
    /// domain (`link`), if its own domain's policy needs more TLS than
    /// that connection has: a 4.7.5 deferral reply.
    async fn tls_mismatch(
        &self,
        work: &Work<StoredMessage>,
        link: &LinkTls,
        remote: &str,
    ) -> Option<String> {
        let Hop::Mx { domain, hosts } = &*work.hop else {
            return None;
        };
        if !self.tls_policies.is_enabled() || link.domain.as_deref() == Some(domain.as_str()) {
            return None;
        }
        let names = hosts.iter().map(|h| h.name.clone()).collect();
        let needed = self
            .tls_policies
            .domain(domain, names)
            .await
            .host(&link.host);
        if needed.met_by(link.outcome) {
            return None;
        }
        if let HostTls::Refused(why) = &needed {
            return Some(format!("451 4.7.5 {why}"));
        }
        Some(format!(
            "451 4.7.5 the connection to {remote} (tls={}) does not meet the {} policy of {domain}; it waits for a connection of its own",
            link.outcome.label(),
            needed.policy_name(),
        ))
    }

    fn count_policy_failure(&self, dane: bool) {
        self.ctx.metrics.borrow_mut().counters.tls_policy_failures[usize::from(dane)] += 1;
    }

    /// The client policy with the site's deliveries per connection and
    /// the egress source's EHLO name.
    fn shaped_client(
        &self,
        dest: &DestinationKey,
        client: Rc<ClientConfig>,
        ehlo: Option<&str>,
    ) -> Rc<ClientConfig> {
        let limit = self
            .scheduler
            .borrow()
            .site_limits(dest)
            .map(|l| l.deliveries_per_connection)
            .filter(|&n| n != client.max_messages_per_connection);
        let ehlo = ehlo.filter(|&name| name != client.helo_name);
        if limit.is_none() && ehlo.is_none() {
            return client;
        }
        Rc::new(ClientConfig {
            max_messages_per_connection: limit.unwrap_or(client.max_messages_per_connection),
            helo_name: ehlo.map_or_else(|| client.helo_name.clone(), str::to_owned),
            ..(*client).clone()
        })
    }

    /// Fills `queue` with more work for `dest`, waiting for it as long as
    /// the site's idle time (so a busy destination keeps reusing this
    /// connection), and for a rate that holds its work back.
    async fn wait_for_work(
        &self,
        dest: &DestinationKey,
        queue: &mut VecDeque<Work<StoredMessage>>,
    ) {
        let idle = self
            .scheduler
            .borrow()
            .site_limits(dest)
            .map_or(CONNECTION_LINGER, |l| l.idle);
        let deadline = Instant::now() + idle;
        loop {
            let now = Instant::now();
            queue.extend(self.scheduler.borrow_mut().next_batch(dest, now));
            if !queue.is_empty() {
                self.room_made(dest);
                return;
            }
            if self.ctx.shutdown.is_fired() {
                return;
            }
            let listener = self.work_arrived.listen();
            queue.extend(self.scheduler.borrow_mut().next_batch(dest, now));
            if !queue.is_empty() {
                self.room_made(dest);
                return;
            }
            // Other sites wait for a connection slot: this one is not
            // kept idle (Postfix's connection cache holds no process).
            if self.scheduler.borrow().starved() {
                return;
            }
            // Work held back by a rate keeps the connection while the
            // rate lets it go before the idle time is up.
            let until = match self.scheduler.borrow_mut().wakeup_for(dest, now) {
                Some(at) if at <= deadline => at,
                _ => deadline,
            };
            let left = until.saturating_duration_since(now);
            if left.is_zero() && until == deadline {
                return;
            }
            let woken = or(
                async {
                    listener.await;
                    true
                },
                async {
                    glommio::timer::sleep(left).await;
                    until < deadline
                },
            )
            .await;
            if !woken {
                return;
            }
        }
    }

    /// The hosts to try, in order, as (name, address).
    async fn addresses(&self, hop: &Hop) -> Vec<(String, SocketAddr)> {
        match hop {
            Hop::Local => Vec::new(),
            Hop::Fixed(hp) => {
                if let Ok(ip) = hp.host.parse::<IpAddr>() {
                    return vec![(hp.host.clone(), SocketAddr::new(ip, hp.port))];
                }
                match self.resolver.resolve(hp.host.clone()).await.into_hosts() {
                    Ok(hosts) => flatten(&hosts, hp.port),
                    Err(e) => {
                        tracing::warn!(host = %hp.host, error = %e, "cannot resolve a next hop");
                        Vec::new()
                    }
                }
            }
            Hop::Mx { hosts, .. } => flatten(hosts, self.ctx.config.delivery.mx_port),
        }
    }
}

/// A temporary failure that a back-off rule's `fail` made permanent:
/// the receiver's reply, kept for the DSN, behind a 5xx code with the
/// same enhanced subject and detail.
fn made_permanent(reply: &str) -> String {
    let status = crate::delivery::dsn::status_of(reply).unwrap_or_else(|| "4.0.0".into());
    let detail = status.split_once('.').map_or("0.0", |(_, rest)| rest);
    format!("550 5.{detail} failed for good by a back-off rule: {reply}")
}

/// The requirement a connection to `host` is opened under, and the
/// domain it comes from: the strictest of the domains' (DANE, MTA-STS
/// `enforce`, encryption only, `testing`, none), so that one connection
/// serves every domain it can. A domain that refuses the host ranks
/// last: its work is deferred by the per-work check while the others'
/// goes; when every domain refuses it, the host is skipped.
fn strictest(plans: &[(String, Arc<DomainTls>)], host: &str) -> (Option<String>, HostTls) {
    let rank = |tls: &HostTls| match tls {
        HostTls::Refused(_) => 0,
        HostTls::Opportunistic => 1,
        HostTls::MtaStsTesting { .. } => 2,
        HostTls::EncryptOnly => 3,
        HostTls::MtaSts(_) => 4,
        HostTls::Dane(_) => 5,
    };
    plans
        .iter()
        .map(|(domain, plan)| (Some(domain.clone()), plan.host(host)))
        .max_by_key(|(_, tls)| rank(tls))
        .unwrap_or((None, HostTls::Opportunistic))
}

/// The policy a requirement enforces (its failures defer), if any.
fn required_policy(host_tls: &HostTls) -> Option<&'static str> {
    match host_tls {
        HostTls::Dane(_) | HostTls::EncryptOnly => Some("DANE"),
        HostTls::MtaSts(_) => Some("MTA-STS"),
        _ => None,
    }
}

fn flatten(hosts: &[MxHost], port: u16) -> Vec<(String, SocketAddr)> {
    hosts
        .iter()
        .flat_map(|h| {
            h.addresses
                .iter()
                .map(move |ip| (h.name.clone(), SocketAddr::new(*ip, port)))
        })
        .collect()
}

mod operations;

#[cfg(test)]
mod tests {
    use super::made_permanent;

    #[test]
    fn a_failure_made_permanent_keeps_the_receivers_reply_and_detail() {
        assert_eq!(
            made_permanent("450 4.1.1 <a@x.test>: no such user"),
            "550 5.1.1 failed for good by a back-off rule: 450 4.1.1 <a@x.test>: no such user"
        );
        assert_eq!(
            made_permanent("451 try later"),
            "550 5.0.0 failed for good by a back-off rule: 451 try later"
        );
    }
}
