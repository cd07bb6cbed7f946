//! The delivery engine of one core: takes due messages from the queue,
//! routes and resolves their recipients, fills the ready queues per
//! destination, opens outbound connections within the limits, and turns
//! results into spool records: outcomes, deferrals, DSNs, finished
//! messages. It speaks no SMTP itself (see `outbound`) and decides no
//! retry timing (see `queue`).

use std::cell::{Cell, RefCell};
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_lite::future::or;

use crate::blocking::Lane;
use crate::control::{Reply, Request};
use crate::delivery::attempts::{next_step, Attempt, Attempts, NextStep};
use crate::delivery::dsn::{build_dsn, status_of, DsnAction, FailedRecipient};
use crate::delivery::outbound::{HostFailed, Outbound};
use crate::delivery::router::{HostPort, NextHop, Route};
use crate::delivery::suspensions::Suspensions;
use crate::local::LocalOutcome;
use crate::metrics::{MessageResult, RecipientResult};
use crate::queue::{
    AttemptId, Deferral, DestinationKey, Dispatch, MessageState, QueueEntry, QueueError,
    ReadyLimits, ReadyQueues, SharedBudget, Task, UnixTime,
};
use crate::resolver::{MxHost, MxResolver, ResolverHandle};
use crate::shard::ShardContext;
use crate::smtp::client::{ClientConfig, Outcome, StartTlsPolicy};
use crate::spool::{FinishReason, OutcomeKind, RecipientOutcome, SegmentStore, SpoolId};

/// The longest the engine sleeps without looking at the queue.
const MAX_IDLE: Duration = Duration::from_secs(60);
/// The longest a message held back by a limit of spate's own (a full
/// ready queue) waits before it is handed out again, if no room was made
/// for it earlier.
const HOLD_RECHECK: Duration = Duration::from_secs(60);
/// How long an idle outbound connection waits for more work to its
/// destination before QUIT (Postfix's smtp_connection_cache_time_limit).
const CONNECTION_LINGER: Duration = Duration::from_secs(2);

/// Local recipients while `[local] mailbox_dir` is unset: a configuration
/// error (RFC 3463 X.3.5), retried until it is fixed.
const NO_MAILBOX_TIER: &str = "451 4.3.5 local delivery is not configured ([local] mailbox_dir)";
/// How local deliveries show as the remote MTA in DSNs and logs.
const LOCAL_MTA: &str = "local";
/// The next hop in log lines when no host was reached (resolution or
/// connection failed, expiry).
const NO_RELAY: &str = "none";

/// How the addresses of a destination are found.
#[derive(Debug)]
enum Hop {
    Fixed(HostPort),
    Mx(Vec<MxHost>),
}

/// Recipients of one message bound for one destination, in one attempt.
#[derive(Debug, Clone)]
struct Work {
    id: SpoolId,
    attempt: AttemptId,
    recipients: Vec<u32>,
    hop: Rc<Hop>,
}

/// One recipient's result, from SMTP or from routing and resolution.
struct RecipientReport {
    index: u32,
    outcome: Outcome,
    reply: String,
}

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
    ready: RefCell<ReadyQueues<Work>>,
    attempts: RefCell<Attempts>,
    /// Wakes idle connections when work is queued, so they take it before
    /// a new connection is opened.
    work_arrived: event_listener::Event,
    /// Messages held back per destination whose ready queue was full,
    /// released as it makes room (a set of ids: memory-light).
    held: RefCell<HashMap<DestinationKey, BTreeSet<SpoolId>>>,
    /// Suspended sites, shared by every core, and the version of the
    /// table last copied into `ready`.
    suspensions: Arc<Suspensions>,
    suspensions_seen: Cell<u64>,
}

/// Seconds since the epoch, as the queue counts time.
pub fn unix_now() -> UnixTime {
    UnixTime(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    )
}

impl<S: SegmentStore + 'static> Engine<S> {
    pub fn new(
        ctx: Rc<ShardContext<S>>,
        resolver: ResolverHandle,
        tls: std::sync::Arc<rustls::ClientConfig>,
        smarthost_tls: Option<std::sync::Arc<rustls::ClientConfig>>,
        limits: ReadyLimits,
        suspensions: Arc<Suspensions>,
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
        Ok(Rc::new(Engine {
            resolver,
            verified_smarthost,
            client: Rc::new(client),
            tls: futures_rustls::TlsConnector::from(tls),
            ready: RefCell::new(ReadyQueues::with_shared(limits, shared)?),
            attempts: RefCell::new(Attempts::default()),
            work_arrived: event_listener::Event::new(),
            held: RefCell::new(HashMap::new()),
            suspensions,
            suspensions_seen: Cell::new(u64::MAX),
            ctx,
        }))
    }

    /// Runs until the shard stops.
    pub async fn run(self: Rc<Self>) {
        while !self.ctx.shutdown.is_fired() {
            let now = unix_now();
            self.sync_suspensions();
            self.release_held(now);
            let due = self.ctx.queue.borrow_mut().due(now);
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
            // Work that a site's rate holds back: look again when it may go.
            let clock = std::time::Instant::now();
            if let Some(at) = self.ready.borrow_mut().next_wakeup(clock) {
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
    }

    /// Hands out due messages: expiries, and deliveries split by
    /// destination (one batched resolver call for every MX domain).
    async fn dispatch(self: &Rc<Self>, due: Vec<Dispatch>) {
        let mut by_domain: HashMap<String, Vec<(SpoolId, AttemptId, Vec<u32>)>> = HashMap::new();
        let mut local_only = Vec::new();
        for d in due {
            if d.task == Task::Expire {
                self.expire(d).await;
                continue;
            }
            let Some(pending) = self.ctx.queue.borrow().pending_recipients(d.id) else {
                continue;
            };
            let envelope = match self.ctx.spool.read_message(d.id) {
                Ok(message) => message.envelope().clone(),
                Err(e) => {
                    tracing::error!(id = %d.id, error = %e, "cannot read a queued message");
                    self.attempts.borrow_mut().begin(d.id, 1);
                    let results = transient(&pending, &format!("451 4.3.0 spool read error: {e}"));
                    self.report(d.id, d.attempt, results, None).await;
                    continue;
                }
            };
            let mut local = Vec::new();
            let mut fixed: HashMap<HostPort, Vec<u32>> = HashMap::new();
            let mut mx: HashMap<String, Vec<u32>> = HashMap::new();
            let router = self.ctx.router();
            for index in pending {
                let Some(recipient) = envelope.recipients.get(index as usize) else {
                    continue;
                };
                match router.route(&recipient.address) {
                    Route::Local => local.push(index),
                    Route::Relay(NextHop::Fixed(hop)) => fixed.entry(hop).or_default().push(index),
                    Route::Relay(NextHop::Mx(domain)) => mx.entry(domain).or_default().push(index),
                }
            }
            let groups = usize::from(!local.is_empty()) + fixed.len() + mx.len();
            self.attempts.borrow_mut().begin(d.id, groups);
            if groups == 0 {
                // Every recipient finished before a restart: complete it.
                let done = self.attempts.borrow_mut().take(d.id);
                self.complete(d.id, d.attempt, done).await;
                continue;
            }
            for (hop, recipients) in fixed {
                let key = DestinationKey::route(&hop.host, hop.port);
                self.enqueue(
                    key,
                    None,
                    Work {
                        id: d.id,
                        attempt: d.attempt,
                        recipients,
                        hop: Rc::new(Hop::Fixed(hop)),
                    },
                )
                .await;
            }
            for (domain, recipients) in mx {
                by_domain
                    .entry(domain)
                    .or_default()
                    .push((d.id, d.attempt, recipients));
            }
            if !local.is_empty() {
                local_only.push((d.id, d.attempt, local));
            }
        }
        for (id, attempt, local) in local_only {
            let engine = Rc::clone(self);
            glommio::spawn_local(async move { engine.deliver_local(id, attempt, local).await })
                .detach();
        }
        if by_domain.is_empty() {
            return;
        }
        let domains: Vec<String> = by_domain.keys().cloned().collect();
        let answers = self.resolver.resolve_batch(domains).await;
        for (domain, resolution) in answers {
            let Some(groups) = by_domain.remove(&domain) else {
                continue;
            };
            match resolution.into_hosts() {
                Ok(hosts) => {
                    let key = DestinationKey::mx_set(hosts.iter().map(|h| h.name.as_str()));
                    let hop = Rc::new(Hop::Mx(hosts));
                    for (id, attempt, recipients) in groups {
                        match &key {
                            Ok(key) => {
                                let work = Work {
                                    id,
                                    attempt,
                                    recipients,
                                    hop: Rc::clone(&hop),
                                };
                                self.enqueue(key.clone(), Some(&domain), work).await;
                            }
                            Err(e) => {
                                let reply = format!("451 4.4.3 {domain}: {e}");
                                self.report(id, attempt, transient(&recipients, &reply), None)
                                    .await;
                            }
                        }
                    }
                }
                Err(e) => {
                    let (code, outcome) = if e.is_transient() {
                        (451, Outcome::TransientFailure)
                    } else {
                        (550, Outcome::PermanentFailure)
                    };
                    let reply = format!("{code} {} {domain}: {e}", e.status());
                    for (id, attempt, recipients) in groups {
                        let results = same_result(&recipients, outcome, &reply);
                        self.report(id, attempt, results, None).await;
                    }
                }
            }
        }
    }

    /// Queues work for a site; a site becoming active takes its shaping
    /// limits from the rules in force (by `domain`, the recipient domain
    /// of MX delivery, and the site's host names).
    async fn enqueue(self: &Rc<Self>, key: DestinationKey, domain: Option<&str>, work: Work) {
        let hop = Rc::clone(&work.hop);
        let shape = || self.site_limits(domain, &hop);
        let pushed = self
            .ready
            .borrow_mut()
            .push_shaped(key.clone(), work, shape);
        if pushed.is_ok() {
            self.work_arrived.notify(usize::MAX);
        }
        if let Err(full) = pushed {
            // Not an attempt: nothing was tried. The message waits in the
            // queue, uncounted, until the destination makes room.
            let work = full.0;
            tracing::debug!(id = %work.id, dest = %key, "held: the destination's ready queue is full");
            self.ctx.metrics.borrow_mut().counters.held_by_limits += 1;
            self.attempts.borrow_mut().held(work.id, key);
            self.group_done(work.id, work.attempt).await;
        }
    }

    /// Copies the shared suspension table into the ready queues when it
    /// changed.
    fn sync_suspensions(&self) {
        let version = self.suspensions.version();
        if version == self.suspensions_seen.replace(version) {
            return;
        }
        let (wall, clock) = (SystemTime::now(), std::time::Instant::now());
        let table = self
            .suspensions
            .active(wall)
            .into_iter()
            .map(|(site, s)| {
                let left = s.until.duration_since(wall).unwrap_or_default();
                (site, clock + left)
            })
            .collect();
        self.ready.borrow_mut().set_suspended(table);
    }

    /// A receiver's reply matched a back-off rule: the site is suspended
    /// (every core stops sending to it; its mail waits, uncounted).
    fn back_off(&self, dest: &DestinationKey, reply: &str) {
        let shaping = self.ctx.shaping();
        let Some(rule) = shaping.backoff_for(reply) else {
            return;
        };
        // Every recipient of a refused transaction says the same: one
        // suspension is enough.
        let clock = std::time::Instant::now();
        if self.ready.borrow().suspended_until(dest, clock).is_some() {
            return;
        }
        let until = SystemTime::now() + rule.suspend;
        if self
            .suspensions
            .suspend(dest.clone(), until, reply.to_owned())
        {
            tracing::warn!(site = %dest, reply, rule = rule.pattern(), suspend = ?rule.suspend, "site suspended");
            self.ctx.metrics.borrow_mut().counters.suspensions += 1;
            self.sync_suspensions();
        }
    }

    /// The shaping limits of a site reached through `hop` for `domain`,
    /// with `[delivery]` as the fallback.
    fn site_limits(&self, domain: Option<&str>, hop: &Hop) -> crate::shaping::SiteLimits {
        let d = &self.ctx.config.delivery;
        let cores = self.ctx.config.executor_count();
        let fallback = crate::shaping::Limits {
            // [delivery] counts are per core; the rules' are host-wide.
            connections: Some(d.max_connections_per_destination.saturating_mul(cores)),
            deliveries_per_connection: Some(d.max_messages_per_connection),
            ..crate::shaping::Limits::default()
        };
        let hosts: Vec<&str> = match hop {
            Hop::Fixed(hp) => vec![hp.host.as_str()],
            Hop::Mx(hosts) => hosts.iter().map(|h| h.name.as_str()).collect(),
        };
        let limits = self
            .ctx
            .shaping()
            .site_limits(domain, &hosts, &fallback, cores);
        tracing::debug!(domain, rule = %limits.rule, connections = limits.connections, "site shaped");
        limits
    }

    /// Hands held messages back to the queue, due now, as far as their
    /// destinations have room in their ready queues.
    fn release_held(&self, now: UnixTime) {
        let limit = self.ready.borrow().limits().max_queued_per_destination;
        let mut held = self.held.borrow_mut();
        let mut queue = self.ctx.queue.borrow_mut();
        held.retain(|dest, ids| {
            let mut room = limit.saturating_sub(self.ready.borrow().queued_for(dest));
            while room > 0 {
                let Some(id) = ids.pop_first() else { break };
                if queue.release(id, now) {
                    room -= 1;
                }
            }
            !ids.is_empty()
        });
    }

    /// Makes every message held for `site` due now (its suspension ended
    /// by hand); how many.
    fn release_site(&self, site: &DestinationKey) -> usize {
        let Some(ids) = self.held.borrow_mut().remove(site) else {
            return 0;
        };
        let now = unix_now();
        let mut queue = self.ctx.queue.borrow_mut();
        ids.into_iter().filter(|&id| queue.release(id, now)).count()
    }

    /// Work for `dest` left its ready queue: wake the engine if messages
    /// wait for that room.
    fn room_made(&self, dest: &DestinationKey) {
        if self.held.borrow().contains_key(dest) {
            self.ctx.delivery_wake.notify();
        }
    }

    fn open_connections(self: &Rc<Self>) {
        loop {
            let next = self
                .ready
                .borrow_mut()
                .next_connection(std::time::Instant::now());
            let Some((dest, works)) = next else { return };
            self.room_made(&dest);
            let engine = Rc::clone(self);
            glommio::spawn_local(async move { engine.connection(dest, works).await }).detach();
        }
    }

    /// One connection's life: tries the destination's hosts in order until
    /// one takes the work; reuses it for more work of the same destination.
    async fn connection(self: Rc<Self>, dest: DestinationKey, works: Vec<Work>) {
        let mut queue: VecDeque<Work> = works.into();
        let hop = match queue.front() {
            Some(work) => Rc::clone(&work.hop),
            None => {
                self.ready.borrow_mut().connection_closed(&dest);
                return;
            }
        };
        let mut last_failure: Option<HostFailed> = None;
        for (name, addr) in self.addresses(&hop).await {
            // A connection that carried its maximum of messages is replaced
            // by a new one to the same host; any other end (a failure)
            // moves the rest of the work on to the next host.
            while !queue.is_empty() {
                let (tls, client) = self.tls_for(&hop);
                let client = self.shaped_client(&dest, client);
                let timeout = self.ctx.config.delivery.connect_timeout;
                let mut out = match Outbound::open(addr, &name, client, Some(tls), timeout).await {
                    Ok(out) => out,
                    Err(failed) => {
                        tracing::debug!(%dest, %addr, reply = %failed.reply, "next hop failed");
                        last_failure = Some(failed);
                        break;
                    }
                };
                let spent = self.deliver_over(&mut out, &dest, &mut queue).await;
                out.quit().await;
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
            self.report(work.id, work.attempt, results, None).await;
            self.ready.borrow_mut().done(&dest, 1);
        }
        self.ready.borrow_mut().connection_closed(&dest);
        self.ctx.delivery_wake.notify();
    }

    /// Sends the work in `queue` (and more for `dest`, while it comes)
    /// over one open connection. Returns true when the connection carried
    /// its maximum of messages and work is left for a new one.
    async fn deliver_over(
        self: &Rc<Self>,
        out: &mut Outbound,
        dest: &DestinationKey,
        queue: &mut VecDeque<Work>,
    ) -> bool {
        loop {
            if queue.is_empty() && out.messages_left() > 0 {
                self.wait_for_work(dest, queue).await;
            }
            if out.messages_left() == 0 {
                return !queue.is_empty();
            }
            let Some(work) = queue.pop_front() else {
                return false;
            };
            let begun = self
                .ctx
                .queue
                .borrow_mut()
                .begin(work.id, work.attempt, unix_now());
            if begun.is_err() {
                // The queue gave up on this attempt (its deadline
                // passed); the message has a newer one.
                self.ready.borrow_mut().done(dest, 1);
                continue;
            }
            let message = match self.ctx.spool.read_message(work.id) {
                Ok(message) => message,
                Err(e) => {
                    let reply = format!("451 4.3.0 spool read error: {e}");
                    self.report(
                        work.id,
                        work.attempt,
                        transient(&work.recipients, &reply),
                        None,
                    )
                    .await;
                    self.ready.borrow_mut().done(dest, 1);
                    continue;
                }
            };
            let indexes: Vec<usize> = work.recipients.iter().map(|&i| i as usize).collect();
            let began = std::time::Instant::now();
            let tx = out.send(message.envelope(), &indexes, message.body()).await;
            self.ctx
                .metrics
                .borrow_mut()
                .attempt_latency
                .record(began.elapsed());
            let results = tx
                .results
                .iter()
                .map(|r| RecipientReport {
                    index: u32::try_from(r.index).unwrap_or(u32::MAX),
                    outcome: r.outcome,
                    reply: r.reply.to_string(),
                })
                .collect();
            for r in &tx.results {
                if r.outcome != Outcome::Delivered {
                    self.back_off(dest, &r.reply.to_string());
                }
            }
            self.report(work.id, work.attempt, results, Some(out.remote.clone()))
                .await;
            self.ready.borrow_mut().done(dest, 1);
            if !tx.reusable {
                return false;
            }
        }
    }

    /// Hands a message's local recipients to the mailbox tier, off the
    /// executor (fsyncs), then queues one new message for the external
    /// addresses aliases forwarded to; a recipient counts as delivered only
    /// once its copies and that forward are durable.
    async fn deliver_local(self: Rc<Self>, id: SpoolId, attempt: AttemptId, recipients: Vec<u32>) {
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
            return self
                .report(id, attempt, transient(&recipients, NO_MAILBOX_TIER), None)
                .await;
        };
        let (envelope, body) = match self.ctx.spool.read_message(id) {
            // The blocking thread needs its own copy; the fsyncs cost more.
            Ok(message) => (message.envelope().clone(), message.body().to_vec()),
            Err(e) => {
                let reply = format!("451 4.3.0 spool read error: {e}");
                return self
                    .report(id, attempt, transient(&recipients, &reply), None)
                    .await;
            }
        };
        let addresses: Vec<(u32, String)> = recipients
            .iter()
            .filter_map(|&i| {
                let r = envelope.recipients.get(i as usize)?;
                Some((i, r.address.clone()))
            })
            .collect();
        let sender = envelope.sender.clone();
        let began = std::time::Instant::now();
        // The job hands the body back, for a forwarded copy.
        // The urgent lane: mailbox reads never hold up a delivery.
        let job = self.ctx.blocking.run(Lane::Urgent, move || {
            let outcomes = addresses
                .into_iter()
                .map(|(index, address)| {
                    let trace = local_trace_headers(&sender, &address);
                    let outcome = tier.deliver(&address, &[trace.as_bytes(), &body]);
                    (index, address, outcome)
                })
                .collect::<Vec<_>>();
            (outcomes, body)
        });
        let finished = job.await;
        self.ctx
            .metrics
            .borrow_mut()
            .attempt_latency
            .record(began.elapsed());
        let Ok((outcomes, body)) = finished else {
            let reply = "451 4.3.0 local delivery failed unexpectedly";
            return self
                .report(id, attempt, transient(&recipients, reply), None)
                .await;
        };
        let mut results = Vec::with_capacity(outcomes.len());
        let mut forwarded: Vec<u32> = Vec::new();
        let mut forward_to: Vec<String> = Vec::new();
        for (index, _address, outcome) in outcomes {
            let (outcome, reply) = match outcome {
                LocalOutcome::Delivered { forward } if forward.is_empty() => (
                    Outcome::Delivered,
                    "250 2.0.0 delivered to mailbox".to_owned(),
                ),
                LocalOutcome::Delivered { forward } => {
                    forwarded.push(index);
                    for to in forward {
                        if !forward_to.contains(&to) {
                            forward_to.push(to);
                        }
                    }
                    continue;
                }
                LocalOutcome::Deferred(reply) => (Outcome::TransientFailure, reply),
                LocalOutcome::Failed(reply) => (Outcome::PermanentFailure, reply),
            };
            results.push(RecipientReport {
                index,
                outcome,
                reply,
            });
        }
        if !forwarded.is_empty() {
            let reply = match self.forward(&envelope, body, forward_to).await {
                Ok(new_id) => format!("250 2.0.0 delivered, forwarded as {new_id}"),
                Err(e) => format!("451 4.3.0 cannot queue the forwarded copy: {e}"),
            };
            let outcome = if reply.starts_with('2') {
                Outcome::Delivered
            } else {
                Outcome::TransientFailure
            };
            results.extend(same_result(&forwarded, outcome, &reply));
        }
        self.report(id, attempt, results, Some(LOCAL_MTA.to_owned()))
            .await;
    }

    /// Queues a copy of a message (`original`, `body`) for `to` (alias
    /// targets outside our domains), with the original sender so bounces
    /// reach its author.
    async fn forward(
        &self,
        original: &crate::envelope::Envelope,
        body: Vec<u8>,
        to: Vec<String>,
    ) -> Result<SpoolId, crate::spool::SpoolError> {
        let envelope = crate::envelope::Envelope {
            recipients: to
                .into_iter()
                .map(|address| crate::envelope::Recipient {
                    address,
                    notify: None,
                    orcpt: None,
                })
                .collect(),
            received_at: unix_now().0,
            ..original.clone()
        };
        self.queue_new(envelope, body).await
    }

    /// Stores a message we create (DSN, forward) and queues it.
    async fn queue_new(
        &self,
        envelope: crate::envelope::Envelope,
        body: Vec<u8>,
    ) -> Result<SpoolId, crate::spool::SpoolError> {
        let size = body.len() as u64;
        let new_id = self.ctx.spool.store(&envelope, body).await?;
        self.ctx.queue.borrow_mut().insert(
            new_id,
            QueueEntry {
                size,
                recipients: envelope.recipients.len(),
                received_at: envelope.received_at,
                acknowledged_at: None,
            },
        );
        self.ctx.delivery_wake.notify();
        Ok(new_id)
    }

    /// Recipient indexes of a message still to be tried (none if the
    /// message is no longer queued).
    fn pending(&self, id: SpoolId) -> Vec<u32> {
        self.ctx
            .queue
            .borrow()
            .pending_recipients(id)
            .unwrap_or_default()
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

    /// The client policy with the site's deliveries per connection.
    fn shaped_client(&self, dest: &DestinationKey, client: Rc<ClientConfig>) -> Rc<ClientConfig> {
        let limit = self
            .ready
            .borrow()
            .site_limits(dest)
            .map(|l| l.deliveries_per_connection);
        match limit {
            Some(n) if n != client.max_messages_per_connection => Rc::new(ClientConfig {
                max_messages_per_connection: n,
                ..(*client).clone()
            }),
            _ => client,
        }
    }

    /// Fills `queue` with more work for `dest`, waiting for it as long as
    /// the site's idle time (so a busy destination keeps reusing this
    /// connection), and for a rate that holds its work back.
    async fn wait_for_work(&self, dest: &DestinationKey, queue: &mut VecDeque<Work>) {
        let idle = self
            .ready
            .borrow()
            .site_limits(dest)
            .map_or(CONNECTION_LINGER, |l| l.idle);
        let deadline = std::time::Instant::now() + idle;
        loop {
            let now = std::time::Instant::now();
            queue.extend(self.ready.borrow_mut().next_batch(dest, now));
            if !queue.is_empty() {
                self.room_made(dest);
                return;
            }
            if self.ctx.shutdown.is_fired() {
                return;
            }
            let listener = self.work_arrived.listen();
            queue.extend(self.ready.borrow_mut().next_batch(dest, now));
            if !queue.is_empty() {
                self.room_made(dest);
                return;
            }
            // Work held back by a rate keeps the connection while the
            // rate lets it go before the idle time is up.
            let until = match self.ready.borrow_mut().wakeup_for(dest, now) {
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
            Hop::Mx(hosts) => flatten(hosts, self.ctx.config.delivery.mx_port),
        }
    }

    /// Records each recipient's result of one destination group; when the
    /// attempt's last group reports, completes the attempt.
    async fn report(
        self: &Rc<Self>,
        id: SpoolId,
        attempt: AttemptId,
        results: Vec<RecipientReport>,
        remote: Option<String>,
    ) {
        self.log_outcomes(id, &results, remote.as_deref());
        for r in results {
            let kind = match r.outcome {
                Outcome::Delivered => OutcomeKind::Delivered,
                Outcome::PermanentFailure => OutcomeKind::Bounced,
                Outcome::TransientFailure => {
                    self.attempts.borrow_mut().transient(id, r.reply);
                    continue;
                }
            };
            let outcome = RecipientOutcome {
                kind,
                reply: r.reply,
                remote_mta: remote.clone(),
            };
            if kind == OutcomeKind::Bounced {
                // Recorded in complete(), after the DSN is spooled.
                self.attempts.borrow_mut().bounced(id, r.index, outcome);
                continue;
            }
            if let Err(reply) = self.record_outcome(id, r.index, &outcome).await {
                self.attempts.borrow_mut().transient(id, reply);
            }
        }
        self.group_done(id, attempt).await;
    }

    /// One destination group of the attempt reported (or was held back);
    /// after the last one, the attempt completes.
    async fn group_done(self: &Rc<Self>, id: SpoolId, attempt: AttemptId) {
        let done = self.attempts.borrow_mut().group_done(id);
        if let Some(done) = done {
            self.complete(id, attempt, done).await;
        }
    }

    /// One log line and one count per recipient result: the message's
    /// life as operators follow it (`delivered`, `deferred`, `bounced`).
    fn log_outcomes(&self, id: SpoolId, results: &[RecipientReport], relay: Option<&str>) {
        let attempts = self.ctx.queue.borrow().attempts(id).unwrap_or(0) + 1;
        let message = self.ctx.spool.read_message(id).ok();
        let envelope = message.as_ref().map(|m| m.envelope());
        let from = envelope.map_or("", |e| e.sender.as_str());
        let relay = relay.unwrap_or(NO_RELAY);
        let mut metrics = self.ctx.metrics.borrow_mut();
        for r in results {
            let to = envelope
                .and_then(|e| e.recipients.get(r.index as usize))
                .map_or("", |x| x.address.as_str());
            let reply = r.reply.as_str();
            match r.outcome {
                Outcome::Delivered => {
                    metrics.count_recipient(RecipientResult::Delivered);
                    tracing::info!(%id, from, to, relay, reply, attempts, "delivered");
                }
                Outcome::TransientFailure => {
                    metrics.count_recipient(RecipientResult::Deferred);
                    tracing::info!(%id, from, to, relay, reply, attempts, "deferred");
                }
                Outcome::PermanentFailure => {
                    metrics.count_recipient(RecipientResult::Bounced);
                    tracing::info!(%id, from, to, relay, reply, attempts, "bounced");
                }
            }
        }
    }

    /// The attempt is over: DSN for what bounced (then its outcomes are
    /// recorded), then finish, hold or defer the message (see
    /// `attempts::next_step`).
    async fn complete(self: &Rc<Self>, id: SpoolId, attempt: AttemptId, mut done: Attempt) {
        let mut bounced_any = false;
        if !done.bounced.is_empty() {
            let failed: Vec<FailedRecipient> = done
                .bounced
                .iter()
                .filter_map(|(index, outcome)| FailedRecipient::from_outcome(*index, outcome))
                .collect();
            match self.send_dsn(id, &failed).await {
                Ok(()) => {
                    for (index, outcome) in &done.bounced {
                        match self.record_outcome(id, *index, outcome).await {
                            Ok(()) => bounced_any = true,
                            Err(reply) => done.transient = Some(reply),
                        }
                    }
                }
                Err(e) => {
                    done.transient = Some(format!("451 4.3.0 cannot spool a DSN: {e}"));
                }
            }
        }
        let mut step = next_step(&done, self.pending(id).is_empty(), bounced_any);
        if let NextStep::Finish(reason) = step {
            if self.finish(id, reason).await {
                return;
            }
            // Retried after a backoff; with nothing pending, that attempt
            // only finishes it.
            step = NextStep::Defer("451 4.3.0 cannot mark the message finished".into());
        }
        let error = match step {
            NextStep::Hold(dest) => {
                // A suspended site's mail waits for the suspension's end.
                let clock = std::time::Instant::now();
                let wait = self
                    .ready
                    .borrow()
                    .suspended_until(&dest, clock)
                    .map_or(HOLD_RECHECK, |until| {
                        until.saturating_duration_since(clock).max(HOLD_RECHECK)
                    });
                let until = unix_now().plus(wait);
                if self.ctx.queue.borrow_mut().hold(id, attempt, until).is_ok() {
                    self.held.borrow_mut().entry(dest).or_default().insert(id);
                }
                return;
            }
            NextStep::Defer(error) => error,
            NextStep::Finish(_) => return, // replaced just above
        };
        let deferral = self
            .ctx
            .queue
            .borrow_mut()
            .defer(id, attempt, unix_now(), &error);
        match deferral {
            Ok(Deferral::Retry(deferred)) => {
                if let Err(e) = self.ctx.spool.record_deferral(id, &deferred).await {
                    tracing::warn!(%id, error = %e, "cannot record a deferral");
                }
                tracing::debug!(%id, attempts = deferred.attempts, next = deferred.next_attempt_unix, error = %error, "retry scheduled");
            }
            Ok(Deferral::Expired(dispatch)) => Box::pin(self.expire(dispatch)).await,
            Err(e) => tracing::debug!(%id, error = %e, "stale delivery report"),
        }
    }

    /// The lifetime is over: every pending recipient expires, with a DSN.
    /// The DSN is spooled before the expiries are recorded and the message
    /// finished: if it cannot be, nothing changes and the queue hands the
    /// expiry out again after its deadline.
    async fn expire(self: &Rc<Self>, dispatch: Dispatch) {
        let id = dispatch.id;
        let pending = self.pending(id);
        let last = self.ctx.queue.borrow().last_error(id).map(str::to_owned);
        let reply = format!(
            "451 4.4.7 delivery time expired{}",
            last.map(|e| format!(" (last error: {e})"))
                .unwrap_or_default()
        );
        let outcome = RecipientOutcome {
            kind: OutcomeKind::Expired,
            reply: reply.clone(),
            remote_mta: None,
        };
        let failed: Vec<FailedRecipient> = pending
            .iter()
            .filter_map(|&index| FailedRecipient::from_outcome(index, &outcome))
            .collect();
        if let Err(e) = self.send_dsn(id, &failed).await {
            tracing::warn!(%id, error = %e, "expiry postponed: cannot spool its DSN");
            return;
        }
        let attempts = self.ctx.queue.borrow().attempts(id).unwrap_or(0);
        let message = self.ctx.spool.read_message(id).ok();
        let envelope = message.as_ref().map(|m| m.envelope());
        let from = envelope.map_or("", |e| e.sender.as_str());
        for &index in &pending {
            let to = envelope
                .and_then(|e| e.recipients.get(index as usize))
                .map_or("", |x| x.address.as_str());
            tracing::info!(%id, from, to, relay = NO_RELAY, reply = %reply, attempts, "expired");
            self.ctx
                .metrics
                .borrow_mut()
                .count_recipient(RecipientResult::Expired);
        }
        drop(message);
        for index in pending {
            if self.record_outcome(id, index, &outcome).await.is_err() {
                return; // tried again after the expiry's deadline
            }
        }
        self.finish(id, FinishReason::Expired).await;
    }

    /// Records a recipient's outcome durably and tells the queue; if the
    /// spool could not, the reply to defer with (the recipient stays
    /// pending and is tried again).
    async fn record_outcome(
        &self,
        id: SpoolId,
        index: u32,
        outcome: &RecipientOutcome,
    ) -> Result<(), String> {
        if let Err(e) = self
            .ctx
            .spool
            .record_recipient_outcome(id, index, outcome)
            .await
        {
            tracing::error!(%id, error = %e, "cannot record a delivery outcome");
            return Err(format!("451 4.3.0 spool write error: {e}"));
        }
        let _ = self.ctx.queue.borrow_mut().recipient_finished(id, index);
        Ok(())
    }

    /// Spools a DSN to the sender (none is owed to the null sender, or
    /// when NOTIFY says so). An error means the DSN is not kept: the
    /// caller must not record the failures it reports.
    async fn send_dsn(
        self: &Rc<Self>,
        id: SpoolId,
        failed: &[FailedRecipient],
    ) -> Result<(), crate::spool::SpoolError> {
        if failed.is_empty() {
            return Ok(());
        }
        let dsn = match self.ctx.spool.read_message(id) {
            Ok(message) => build_dsn(
                message.envelope(),
                message.body(),
                failed,
                &self.ctx.config.hostname,
                message.envelope().received_at,
                SystemTime::now(),
                self.ctx.config.delivery.bounce_size_limit,
            ),
            Err(e) => {
                // Damaged beyond reading: no DSN can quote it, and waiting
                // will not repair it.
                tracing::error!(%id, error = %e, "cannot read a message to bounce it");
                None
            }
        };
        let Some(dsn) = dsn else { return Ok(()) };
        let to = dsn
            .envelope
            .recipients
            .first()
            .map_or(String::new(), |r| r.address.clone());
        match self.queue_new(dsn.envelope, dsn.body).await {
            Ok(bounce) => {
                tracing::info!(%id, %bounce, %to, "dsn queued");
                Ok(())
            }
            Err(e) => {
                tracing::error!(%id, error = %e, "cannot spool a DSN");
                Err(e)
            }
        }
    }

    /// Marks a message finished and forgets it. If the spool cannot, the
    /// message stays queued (its attempt's deadline hands it out again,
    /// and that attempt, with nothing pending, finishes it): never listed
    /// after it is finished, never forgotten before.
    async fn finish(&self, id: SpoolId, reason: FinishReason) -> bool {
        if let Err(e) = self.ctx.spool.finish(id, reason).await {
            tracing::error!(%id, error = %e, "cannot mark a message finished; it stays queued");
            return false;
        }
        let entry = self.ctx.queue.borrow_mut().remove(id);
        let mut metrics = self.ctx.metrics.borrow_mut();
        let result = match reason {
            FinishReason::Delivered => Some(MessageResult::Delivered),
            FinishReason::Bounced => Some(MessageResult::Bounced),
            FinishReason::Expired => Some(MessageResult::Expired),
            FinishReason::Deleted => Some(MessageResult::Deleted),
            FinishReason::Discarded => None,
        };
        if let (Some(result), Some(_)) = (result, &entry) {
            metrics.counters.messages_finished[result as usize] += 1;
        }
        if let (FinishReason::Delivered, Some(entry)) = (reason, &entry) {
            metrics.counters.bytes_delivered += entry.size;
            if let Some(at) = entry.acknowledged_at {
                metrics.record_delivery_latency(at.elapsed());
            }
        }
        true
    }

    /// Answers a control request for this shard.
    pub async fn control(self: &Rc<Self>, request: Request) -> Reply {
        let index = self.ctx.index;
        match request {
            Request::Flush => {
                let n = self.ctx.queue.borrow_mut().flush(unix_now());
                self.ctx.delivery_wake.notify();
                Reply::Done(format!("shard {index}: {n} message(s) due now"))
            }
            Request::Delete(id) | Request::Bounce(id) => {
                match self.ctx.queue.borrow().state(id) {
                    None => return Reply::Failed(format!("no queued message {id}")),
                    Some(MessageState::Active { .. }) => {
                        return Reply::Failed(format!(
                            "{id} is being delivered; try again in a moment"
                        ))
                    }
                    Some(MessageState::Waiting { .. }) => {}
                }
                if matches!(request, Request::Bounce(_)) {
                    let pending = self.pending(id);
                    let failed: Vec<FailedRecipient> = pending
                        .into_iter()
                        .map(|index| FailedRecipient {
                            index,
                            status: "5.0.0".into(),
                            diagnostic: "550 5.0.0 message returned by the postmaster".into(),
                            remote_mta: None,
                            action: DsnAction::Failed,
                        })
                        .collect();
                    if let Err(e) = self.send_dsn(id, &failed).await {
                        return Reply::Failed(format!("{id} kept: cannot spool its DSN: {e}"));
                    }
                    if !self.finish(id, FinishReason::Bounced).await {
                        return Reply::Failed(format!("{id} kept: the spool cannot finish it"));
                    }
                    Reply::Done(format!("bounced {id}"))
                } else {
                    if !self.finish(id, FinishReason::Deleted).await {
                        return Reply::Failed(format!("{id} kept: the spool cannot finish it"));
                    }
                    Reply::Done(format!("deleted {id}"))
                }
            }
            Request::Suspend(site, seconds) => {
                let until = SystemTime::now() + Duration::from_secs(seconds);
                self.suspensions
                    .suspend(site.clone(), until, "suspended by hand".into());
                self.sync_suspensions();
                self.ctx.delivery_wake.notify();
                Reply::Done(format!("shard {index}: {site} suspended for {seconds} s"))
            }
            Request::Resume(site) => {
                let resumed = self.suspensions.resume(&site);
                self.sync_suspensions();
                let released = self.release_site(&site);
                self.ctx.delivery_wake.notify();
                if resumed {
                    tracing::info!(%site, "site resumed by hand");
                }
                Reply::Done(format!(
                    "shard {index}: {site} {}; {released} held message(s) due now",
                    if resumed {
                        "resumed"
                    } else {
                        "was not suspended"
                    }
                ))
            }
            Request::Suspensions => {
                let wall = SystemTime::now();
                let lines: Vec<String> = self
                    .suspensions
                    .active(wall)
                    .into_iter()
                    .map(|(site, s)| {
                        let left = s.until.duration_since(wall).unwrap_or_default().as_secs();
                        format!("{site} for {left} s: {}", s.reason)
                    })
                    .collect();
                if lines.is_empty() {
                    Reply::Done("no site is suspended".into())
                } else {
                    Reply::Done(lines.join("; "))
                }
            }
            // The crash drill is the shard's (`shard::serve_control`), not
            // delivery's.
            Request::Panic(_) => Reply::Failed("panic is not a delivery request".into()),
        }
    }
}

/// The same result for every recipient of a group.
fn same_result(recipients: &[u32], outcome: Outcome, reply: &str) -> Vec<RecipientReport> {
    recipients
        .iter()
        .map(|&index| RecipientReport {
            index,
            outcome,
            reply: reply.to_owned(),
        })
        .collect()
}

fn transient(recipients: &[u32], reply: &str) -> Vec<RecipientReport> {
    same_result(recipients, Outcome::TransientFailure, reply)
}

/// RFC 5321 4.4 and RFC 9228: the final delivery's Return-Path and
/// Delivered-To, written above the message in the mailbox.
fn local_trace_headers(sender: &str, recipient: &str) -> String {
    format!("Return-Path: <{sender}>\r\nDelivered-To: {recipient}\r\n")
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

/// The enhanced status of a reply text, for DSNs (`5.0.0` when none).
pub fn status_or_default(reply: &str) -> String {
    status_of(reply).unwrap_or_else(|| "5.0.0".into())
}
