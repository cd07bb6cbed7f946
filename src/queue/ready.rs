//! Ready queues per destination site: work that is due waits here for a
//! connection, under a per-destination window (messages in flight), each
//! site's shaping limits (connections at once, new connections and
//! messages per period: see `shaping`) and a total outbound connection
//! limit, served round-robin so one busy destination cannot starve the
//! others; host-wide rates and connections shared with other hosts are
//! asked of a `SharedBudget` when there is one. Sans-IO (time is passed
//! in) and generic over the work item; it refuses to resolve names, open
//! sockets or decide what a failure means.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::time::{Duration, Instant};

use super::error::QueueError;
use super::shared::{RateKind, SharedBudget};
use crate::shaping::{SiteLimits, TokenBucket};

/// Where a connection goes. Messages with equal keys share connections:
/// that is what makes a destination "site" (Postfix's nexthop), so the key
/// is normalised on construction (lowercase names, no trailing dot, MX
/// sets sorted and de-duplicated) and has no public fields. With egress
/// sources the key is a site and the source its connections leave from:
/// limits, connections and suspensions then hold per (site, source), and
/// a suspension of the site alone covers every source.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DestinationKey {
    dest: Dest,
    /// The egress source's name (`[[egress.source]]`), if any.
    source: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Dest {
    /// A configured smarthost or per-domain route: one host and port.
    Route { host: String, port: u16 },
    /// Delivery by MX on port 25: the set of MX hosts of the domain (or
    /// the domain itself for an implicit MX). Preferences are left out on
    /// purpose: domains served by the same hosts share connections.
    Mx(Vec<String>),
    /// Not a site: a recipient domain, as a suspension names it (`spate
    /// queue suspend domain:NAME`). Its mail is held before any site is
    /// chosen; no ready queue ever has this key.
    Domain(String),
    /// Not a site: every site, as a suspension of one egress source names
    /// it (`*@SOURCE`): a suspension of the source wherever it sends.
    EverySite,
}

fn normalise(host: &str) -> String {
    host.trim_end_matches('.').to_ascii_lowercase()
}

impl DestinationKey {
    /// A smarthost or `[[route]]` target.
    pub fn route(host: &str, port: u16) -> Self {
        DestinationKey {
            dest: Dest::Route {
                host: normalise(host),
                port,
            },
            source: None,
        }
    }

    /// The MX host names of a resolution, in any order (the glue passes
    /// what the resolver returned; the implicit MX is the domain itself).
    /// Refuses an empty set: a null MX or failed lookup routes nowhere.
    pub fn mx_set<I, S>(hosts: I) -> Result<Self, QueueError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut v: Vec<String> = hosts
            .into_iter()
            .map(|h| normalise(h.as_ref()))
            .filter(|h| !h.is_empty())
            .collect();
        v.sort();
        v.dedup();
        if v.is_empty() {
            return Err(QueueError::NoHosts);
        }
        Ok(DestinationKey {
            dest: Dest::Mx(v),
            source: None,
        })
    }

    /// The same site reached from egress source `source`.
    pub fn with_source(&self, source: &str) -> Self {
        DestinationKey {
            dest: self.dest.clone(),
            source: Some(source.to_owned()),
        }
    }

    /// A recipient domain as a suspension names it (not a site: see
    /// [`Dest::Domain`]).
    pub fn domain(domain: &str) -> Self {
        DestinationKey {
            dest: Dest::Domain(normalise(domain)),
            source: None,
        }
    }

    /// Every site reached from egress source `source`: what a suspension
    /// of the source names.
    pub fn every_site(source: &str) -> Self {
        DestinationKey {
            dest: Dest::EverySite,
            source: Some(source.to_owned()),
        }
    }

    /// The recipient domain, when the key names one rather than a site.
    pub fn as_domain(&self) -> Option<&str> {
        match &self.dest {
            Dest::Domain(domain) => Some(domain),
            _ => None,
        }
    }

    /// Whether the key names a site one can connect to (not a domain or
    /// every site of a source).
    pub fn is_site(&self) -> bool {
        matches!(self.dest, Dest::Route { .. } | Dest::Mx(_))
    }

    /// The egress source, if the key names one.
    pub fn source(&self) -> Option<&str> {
        self.source.as_deref()
    }

    /// The site alone (without its source).
    pub fn site(&self) -> Self {
        DestinationKey {
            dest: self.dest.clone(),
            source: None,
        }
    }
}

/// An egress source's name as keys carry it (as `[[egress.source]]`
/// allows them).
fn is_source_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// A site name that is not `mx:HOST[,HOST...]` or `[HOST]:PORT`, each
/// optionally followed by `@SOURCE`, nor `domain:NAME` or `*@SOURCE`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad site {0:?}: want mx:HOST[,HOST...] or [HOST]:PORT, optionally @SOURCE, or domain:NAME, or *@SOURCE, as `spate queue suspensions` shows them")]
pub struct BadSite(pub String);

/// Reads a site as [`DestinationKey`]'s `Display` writes it.
impl std::str::FromStr for DestinationKey {
    type Err = BadSite;

    fn from_str(text: &str) -> Result<Self, BadSite> {
        let bad = || BadSite(text.chars().take(200).collect());
        if let Some((site, source)) = text.rsplit_once('@') {
            if !is_source_name(source) {
                return Err(bad());
            }
            if site.contains('@') {
                return Err(bad());
            }
            if site == "*" {
                return Ok(DestinationKey::every_site(source));
            }
            let site: DestinationKey = site.parse().map_err(|_| bad())?;
            if !site.is_site() {
                return Err(bad());
            }
            return Ok(site.with_source(source));
        }
        if let Some(domain) = text.strip_prefix("domain:") {
            let domain = normalise(domain);
            let valid = !domain.is_empty()
                && domain.len() <= 255
                && domain
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'));
            return if valid {
                Ok(DestinationKey::domain(&domain))
            } else {
                Err(bad())
            };
        }
        if let Some(hosts) = text.strip_prefix("mx:") {
            return DestinationKey::mx_set(hosts.split(',')).map_err(|_| bad());
        }
        let (host, port) = text
            .strip_prefix('[')
            .and_then(|rest| rest.rsplit_once("]:"))
            .ok_or_else(bad)?;
        let port: u16 = port.parse().map_err(|_| bad())?;
        if host.is_empty() || port == 0 {
            return Err(bad());
        }
        Ok(DestinationKey::route(host, port))
    }
}

impl fmt::Display for DestinationKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.dest {
            Dest::Route { host, port } => write!(f, "[{host}]:{port}")?,
            Dest::Mx(hosts) => write!(f, "mx:{}", hosts.join(","))?,
            Dest::Domain(domain) => write!(f, "domain:{domain}")?,
            Dest::EverySite => write!(f, "*")?,
        }
        match &self.source {
            Some(source) => write!(f, "@{source}"),
            None => Ok(()),
        }
    }
}

/// The bounds of the ready queues. Defaults after Postfix: 100 outbound
/// connections in all (`default_process_limit`), 20 per destination
/// (`default_destination_concurrency_limit`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadyLimits {
    /// Outbound connections open at once, all destinations together.
    pub max_connections: usize,
    /// Connections open at once to one destination.
    pub max_connections_per_destination: usize,
    /// Messages of one destination handed out and not yet done: the
    /// window that bounds what one destination can hold up.
    pub window_per_destination: usize,
    /// Messages handed to a connection at a time; it asks for more with
    /// [`ReadyQueues::next_batch`] (connection reuse).
    pub batch_per_connection: usize,
    /// Messages waiting for one destination; past it `push` refuses and
    /// the caller holds the message back in its queue.
    pub max_queued_per_destination: usize,
    /// Cores that share host-wide rates: each enforces its share.
    pub share: usize,
}

impl Default for ReadyLimits {
    fn default() -> Self {
        ReadyLimits {
            max_connections: 100,
            max_connections_per_destination: 20,
            window_per_destination: 200,
            batch_per_connection: 10,
            max_queued_per_destination: 20_000,
            share: 1,
        }
    }
}

impl ReadyLimits {
    /// Refuses limits under which nothing could ever leave.
    pub fn validate(&self) -> Result<(), QueueError> {
        let fields = [
            (self.max_connections, "max_connections"),
            (
                self.max_connections_per_destination,
                "max_connections_per_destination",
            ),
            (self.window_per_destination, "window_per_destination"),
            (self.batch_per_connection, "batch_per_connection"),
            (
                self.max_queued_per_destination,
                "max_queued_per_destination",
            ),
            (self.share, "share"),
        ];
        match fields.iter().find(|(v, _)| *v == 0) {
            Some((_, name)) => Err(QueueError::Limits(name)),
            None => Ok(()),
        }
    }
}

/// `push` refused: the destination's queue is full. The work comes back
/// so the caller can defer it (it then has a retry time, not a limbo).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("ready queue of the destination is full")]
pub struct ReadyFull<W>(pub W);

#[derive(Debug)]
struct Site<W> {
    queue: VecDeque<W>,
    connections: usize,
    in_flight: usize,
    /// The shaping limits, fixed when the site became active ...
    base: SiteLimits,
    /// ... as a back-off throttle lowers them (`factor` in (0, 1]).
    limits: SiteLimits,
    factor: f64,
    /// Message and new-connection rates, from the first use on.
    messages: Option<TokenBucket>,
    new_connections: Option<TokenBucket>,
    /// Whether the key is in the rotation (it is whenever `queue` is not
    /// empty; stale entries are dropped lazily).
    rotating: bool,
}

impl<W> Site<W> {
    fn new(base: SiteLimits, factor: f64) -> Self {
        Site {
            queue: VecDeque::new(),
            connections: 0,
            in_flight: 0,
            limits: base.scaled(factor),
            base,
            factor,
            messages: None,
            new_connections: None,
            rotating: false,
        }
    }

    /// The rate buckets, made on first use (full).
    fn buckets(&mut self, now: Instant, share: usize) {
        if let (None, Some(rate)) = (&self.messages, self.limits.message_rate) {
            self.messages = Some(TokenBucket::new(rate, share, now));
        }
        if let (None, Some(rate)) = (&self.new_connections, self.limits.connection_rate) {
            self.new_connections = Some(TokenBucket::new(rate, share, now));
        }
    }

    /// Applies a throttle factor: the limits from the base, the rate
    /// buckets slowed or sped up without a burst.
    fn throttle(&mut self, factor: f64, now: Instant, share: usize) {
        if factor == self.factor {
            return;
        }
        self.factor = factor;
        self.limits = self.base.scaled(factor);
        let pairs = [
            (&mut self.messages, self.limits.message_rate),
            (&mut self.new_connections, self.limits.connection_rate),
        ];
        for (bucket, rate) in pairs {
            if let (Some(b), Some(rate)) = (bucket.as_mut(), rate) {
                b.set_rate(rate, share, now);
            }
        }
    }

    /// Messages the message rate lets out now (this core's bucket, and
    /// the shared budget when the rate is shared).
    fn messages_allowed(
        &mut self,
        dest: &DestinationKey,
        shared: Shared<'_>,
        now: Instant,
    ) -> usize {
        let local = self
            .messages
            .as_mut()
            .map_or(usize::MAX, |b| b.available(now));
        match (shared, self.limits.message_rate) {
            (Some(budget), Some(rate)) if local > 0 => {
                local.min(budget.available(dest, RateKind::Messages, rate, now))
            }
            _ => local,
        }
    }

    /// Spends `n` of the message rate.
    fn take_messages(&mut self, dest: &DestinationKey, shared: Shared<'_>, n: usize, now: Instant) {
        if let Some(b) = self.messages.as_mut() {
            b.take(now, n);
        }
        if let (Some(budget), Some(_)) = (shared, self.limits.message_rate) {
            budget.take(dest, RateKind::Messages, n, now);
        }
    }

    /// A new connection may open now (its rate, and a message to send).
    fn may_connect(&mut self, dest: &DestinationKey, mut shared: Shared<'_>, now: Instant) -> bool {
        let local = self
            .new_connections
            .as_mut()
            .is_none_or(|b| b.available(now) >= 1);
        let across = match (shared.as_deref_mut(), self.limits.connection_rate) {
            (Some(budget), Some(rate)) if local => {
                budget.available(dest, RateKind::Connections, rate, now) >= 1
            }
            _ => true,
        };
        local && across && self.messages_allowed(dest, shared, now) >= 1
    }

    /// Spends one of the new-connection rate.
    fn take_connection(&mut self, dest: &DestinationKey, shared: Shared<'_>, now: Instant) {
        if let Some(b) = self.new_connections.as_mut() {
            b.take(now, 1);
        }
        if let (Some(budget), Some(_)) = (shared, self.limits.connection_rate) {
            budget.take(dest, RateKind::Connections, 1, now);
        }
    }

    /// Connections at once this core may have open to the site.
    fn connection_limit(&self, shared: Option<&dyn SharedBudget>) -> usize {
        shared.map_or(self.limits.connections, |budget| {
            budget.connections(self.limits.connections)
        })
    }

    /// When a rate that holds queued work back lets it go (`None` when no
    /// rate holds it).
    fn rate_wakeup(
        &mut self,
        dest: &DestinationKey,
        shared: Shared<'_>,
        now: Instant,
    ) -> Option<Instant> {
        let mut at: Option<Instant> = None;
        let mut later = |next: Instant| {
            if next > now {
                at = Some(at.map_or(next, |a| a.max(next)));
            }
        };
        for bucket in [self.messages.as_mut(), self.new_connections.as_mut()]
            .into_iter()
            .flatten()
        {
            later(bucket.next_token(now));
        }
        if let Some(budget) = shared {
            let kinds = [
                (RateKind::Messages, self.limits.message_rate),
                (RateKind::Connections, self.limits.connection_rate),
            ];
            for (kind, rate) in kinds {
                if rate.is_some() {
                    if let Some(next) = budget.next_available(dest, kind, now) {
                        later(next);
                    }
                }
            }
        }
        at
    }

    /// Nothing is waiting, open or in flight, and no rate remembers it.
    fn is_forgettable(&mut self, now: Option<Instant>) -> bool {
        let idle =
            self.queue.is_empty() && self.connections == 0 && self.in_flight == 0 && !self.rotating;
        let cold = |b: &mut Option<TokenBucket>| match (b.as_mut(), now) {
            (None, _) => true,
            (Some(b), Some(now)) => b.is_full(now),
            (Some(_), None) => true,
        };
        idle && cold(&mut self.messages) && cold(&mut self.new_connections)
    }
}

/// When the suspension covering `dest` ends, if any: its own, or its
/// site's (a suspension without a source covers every source).
fn suspension_end(
    suspended: &HashMap<DestinationKey, Instant>,
    dest: &DestinationKey,
) -> Option<Instant> {
    if suspended.is_empty() {
        return None;
    }
    let own = suspended.get(dest).copied();
    let (site, source) = match &dest.source {
        Some(source) => (
            suspended.get(&dest.site()).copied(),
            suspended.get(&DestinationKey::every_site(source)).copied(),
        ),
        None => (None, None),
    };
    own.max(site).max(source)
}

/// The shared budget as the site methods take it.
type Shared<'a> = Option<&'a mut (dyn SharedBudget + 'static)>;

/// The ready queues of one core.
#[derive(Debug)]
pub struct ReadyQueues<W> {
    limits: ReadyLimits,
    sites: HashMap<DestinationKey, Site<W>>,
    /// Destinations with waiting work, in turn order.
    rotation: VecDeque<DestinationKey>,
    connections: usize,
    queued: usize,
    /// The last time the caller passed in (rates are judged by it when a
    /// site may be forgotten).
    clock: Option<Instant>,
    /// Suspended sites and until when: no connection, no work taken.
    suspended: HashMap<DestinationKey, Instant>,
    /// Host-wide limits shared with other hosts (`[cluster]`), if any.
    shared: Option<Box<dyn SharedBudget>>,
    /// Throttled sites and the factor their limits are multiplied by.
    throttled: HashMap<DestinationKey, f64>,
}

impl<W> ReadyQueues<W> {
    pub fn new(limits: ReadyLimits) -> Result<Self, QueueError> {
        Self::with_shared(limits, None)
    }

    /// Ready queues whose sites' host-wide rates and connections are
    /// also held to `shared` (limits shared with other hosts).
    pub fn with_shared(
        limits: ReadyLimits,
        shared: Option<Box<dyn SharedBudget>>,
    ) -> Result<Self, QueueError> {
        limits.validate()?;
        Ok(ReadyQueues {
            limits,
            sites: HashMap::new(),
            rotation: VecDeque::new(),
            connections: 0,
            queued: 0,
            clock: None,
            suspended: HashMap::new(),
            shared,
            throttled: HashMap::new(),
        })
    }

    /// Replaces the suspended sites (the engine's copy of the shared
    /// table).
    pub fn set_suspended(&mut self, suspended: HashMap<DestinationKey, Instant>) {
        self.suspended = suspended;
    }

    /// Whether any site is suspended (or was, until the next wakeup
    /// forgets it).
    pub fn has_suspensions(&self) -> bool {
        !self.suspended.is_empty()
    }

    /// Whether the table in force suspends `dest` (itself or its whole
    /// site), whatever the time.
    pub fn is_suspended(&self, dest: &DestinationKey) -> bool {
        suspension_end(&self.suspended, dest).is_some()
    }

    /// The destinations with work waiting in their queues.
    pub fn waiting(&self) -> impl Iterator<Item = &DestinationKey> {
        self.sites
            .iter()
            .filter(|(_, site)| !site.queue.is_empty())
            .map(|(dest, _)| dest)
    }

    /// Replaces the throttled sites (the engine's copy of the shared
    /// table); active sites take their new limits at once.
    pub fn set_throttled(&mut self, throttled: HashMap<DestinationKey, f64>, now: Instant) {
        let share = self.limits.share;
        for (dest, site) in &mut self.sites {
            site.throttle(throttled.get(dest).copied().unwrap_or(1.0), now, share);
        }
        self.throttled = throttled;
    }

    /// Whether `dest` is throttled (its deliveries count toward easing).
    pub fn is_throttled(&self, dest: &DestinationKey) -> bool {
        self.throttled.contains_key(dest)
    }

    /// Takes every piece of work waiting for `dest` out of its queue (its
    /// mail is to be bounced); work in flight stays counted until done.
    pub fn drain(&mut self, dest: &DestinationKey) -> Vec<W> {
        let Some(site) = self.sites.get_mut(dest) else {
            return Vec::new();
        };
        let work: Vec<W> = site.queue.drain(..).collect();
        self.queued -= work.len();
        if site.rotating {
            site.rotating = false;
            self.rotation.retain(|d| d != dest);
        }
        self.forget_if_idle(dest);
        work
    }

    /// Until when `dest` is suspended (itself or its whole site), if it
    /// is at `now`.
    pub fn suspended_until(&self, dest: &DestinationKey, now: Instant) -> Option<Instant> {
        suspension_end(&self.suspended, dest).filter(|&until| until > now)
    }

    /// The limits of a site without shaping rules: the per-destination
    /// connection limit, no rates.
    fn plain_site(limits: &ReadyLimits) -> SiteLimits {
        SiteLimits {
            connections: limits.max_connections_per_destination,
            deliveries_per_connection: usize::MAX,
            message_rate: None,
            connection_rate: None,
            idle: Duration::from_secs(2),
            rule: "default".to_owned(),
        }
    }

    fn tick(&mut self, now: Instant) {
        self.clock = Some(self.clock.map_or(now, |c| c.max(now)));
    }

    pub fn limits(&self) -> &ReadyLimits {
        &self.limits
    }

    /// Queues work for a destination, behind what is already waiting
    /// (a new site gets the per-destination connection limit, no rates).
    pub fn push(&mut self, dest: DestinationKey, work: W) -> Result<(), ReadyFull<W>> {
        let plain = Self::plain_site(&self.limits);
        self.push_shaped(dest, work, || plain)
    }

    /// Like [`ReadyQueues::push`]; a site that is not active yet takes
    /// the limits `shape` gives (asked only then: once per site's
    /// active period, not per message).
    pub fn push_shaped(
        &mut self,
        dest: DestinationKey,
        work: W,
        shape: impl FnOnce() -> SiteLimits,
    ) -> Result<(), ReadyFull<W>> {
        let factor = self.throttled.get(&dest).copied().unwrap_or(1.0);
        let site = self
            .sites
            .entry(dest.clone())
            .or_insert_with(|| Site::new(shape(), factor));
        if site.queue.len() >= self.limits.max_queued_per_destination {
            return Err(ReadyFull(work));
        }
        site.queue.push_back(work);
        self.queued += 1;
        if !site.rotating {
            site.rotating = true;
            self.rotation.push_back(dest);
        }
        Ok(())
    }

    /// Opens a connection's worth of work: the next destination in turn
    /// that has work waiting and room under every limit gets one more
    /// connection and up to a batch of messages. `None` when nothing may
    /// start now (no work, or every destination with work is at a limit).
    /// The caller must later call [`ReadyQueues::done`] for every message
    /// and [`ReadyQueues::connection_closed`] once.
    pub fn next_connection(&mut self, now: Instant) -> Option<(DestinationKey, Vec<W>)> {
        self.tick(now);
        if self.connections >= self.limits.max_connections {
            return None;
        }
        let share = self.limits.share;
        for _ in 0..self.rotation.len() {
            let dest = self.rotation.pop_front()?;
            let Some(site) = self.sites.get_mut(&dest) else {
                continue;
            };
            site.rotating = false;
            if site.queue.is_empty() {
                self.forget_if_idle(&dest);
                continue;
            }
            site.buckets(now, share);
            let suspended = suspension_end(&self.suspended, &dest).is_some_and(|until| until > now);
            let open = !suspended
                && site.connections < site.connection_limit(self.shared.as_deref())
                && site.in_flight < self.limits.window_per_destination
                && site.may_connect(&dest, self.shared.as_deref_mut(), now);
            if open {
                site.connections += 1;
                self.connections += 1;
                site.take_connection(&dest, self.shared.as_deref_mut(), now);
            }
            let batch = if open {
                self.take(&dest, now)
            } else {
                Vec::new()
            };
            // Back in line behind the others if work is left.
            if let Some(site) = self.sites.get_mut(&dest) {
                if !site.queue.is_empty() {
                    site.rotating = true;
                    self.rotation.push_back(dest.clone());
                }
            }
            if open {
                return Some((dest, batch));
            }
        }
        None
    }

    /// More work for a connection already open to `dest` (reuse instead of
    /// a new connection), within the window; empty if none or no room.
    /// It does not use up the destination's turn for new connections.
    pub fn next_batch(&mut self, dest: &DestinationKey, now: Instant) -> Vec<W> {
        self.tick(now);
        match self.sites.get(dest) {
            Some(site) if site.connections > 0 => self.take(dest, now),
            _ => Vec::new(),
        }
    }

    /// Takes up to a batch within the window; a destination left without
    /// work leaves the rotation (so "in the rotation iff work waits").
    fn take(&mut self, dest: &DestinationKey, now: Instant) -> Vec<W> {
        let limits = self.limits;
        if self.suspended_until(dest, now).is_some() {
            return Vec::new();
        }
        let Some(site) = self.sites.get_mut(dest) else {
            return Vec::new();
        };
        site.buckets(now, limits.share);
        let room = limits.window_per_destination.saturating_sub(site.in_flight);
        let n = limits.batch_per_connection.min(room).min(site.queue.len());
        let n = if n == 0 {
            0
        } else {
            n.min(site.messages_allowed(dest, self.shared.as_deref_mut(), now))
        };
        site.take_messages(dest, self.shared.as_deref_mut(), n, now);
        site.in_flight += n;
        self.queued -= n;
        let batch = site.queue.drain(..n).collect();
        if site.queue.is_empty() && site.rotating {
            site.rotating = false;
            self.rotation.retain(|d| d != dest);
        }
        batch
    }

    /// `count` messages handed out for `dest` are done with (delivered,
    /// deferred or bounced): they leave the window.
    pub fn done(&mut self, dest: &DestinationKey, count: usize) {
        if let Some(site) = self.sites.get_mut(dest) {
            site.in_flight = site.in_flight.saturating_sub(count);
        }
        self.forget_if_idle(dest);
    }

    /// A connection to `dest` closed (whatever the reason). Messages it
    /// still held must be reported with [`ReadyQueues::done`] too.
    pub fn connection_closed(&mut self, dest: &DestinationKey) {
        if let Some(site) = self.sites.get_mut(dest) {
            if site.connections > 0 {
                site.connections -= 1;
                self.connections -= 1;
            }
        }
        self.forget_if_idle(dest);
    }

    /// Drops a destination's bookkeeping once nothing refers to it, so
    /// the map does not grow with every domain ever seen.
    fn forget_if_idle(&mut self, dest: &DestinationKey) {
        let clock = self.clock;
        if self
            .sites
            .get_mut(dest)
            .is_some_and(|s| s.is_forgettable(clock))
        {
            self.sites.remove(dest);
            if let Some(budget) = self.shared.as_deref_mut() {
                budget.forget(dest);
            }
        }
    }

    /// When a rate that holds work back lets it go, the earliest over all
    /// sites (`None`: no work waits for a rate). Forgets the sites whose
    /// rates have nothing more to remember.
    pub fn next_wakeup(&mut self, now: Instant) -> Option<Instant> {
        self.tick(now);
        let clock = self.clock;
        let shared = &mut self.shared;
        self.sites.retain(|dest, s| {
            let forget = s.is_forgettable(clock);
            if let (true, Some(budget)) = (forget, shared.as_deref_mut()) {
                budget.forget(dest);
            }
            !forget
        });
        self.suspended.retain(|_, until| *until > now);
        let suspended = &self.suspended;
        let mut shared = self.shared.as_deref_mut();
        self.sites
            .iter_mut()
            .filter(|(_, s)| !s.queue.is_empty())
            .filter_map(|(dest, s)| match suspension_end(suspended, dest) {
                Some(until) => Some(until),
                None => s.rate_wakeup(dest, shared.as_deref_mut(), now),
            })
            .min()
    }

    /// When a rate lets `dest` have more work (`None`: none holds it).
    pub fn wakeup_for(&mut self, dest: &DestinationKey, now: Instant) -> Option<Instant> {
        if let Some(until) = self.suspended_until(dest, now) {
            return Some(until);
        }
        let site = self.sites.get_mut(dest)?;
        if site.queue.is_empty() {
            return None;
        }
        site.rate_wakeup(dest, self.shared.as_deref_mut(), now)
    }

    /// The shaping limits `dest` runs under, while it is active.
    pub fn site_limits(&self, dest: &DestinationKey) -> Option<&SiteLimits> {
        self.sites.get(dest).map(|s| &s.limits)
    }

    /// Messages waiting for a connection, all destinations.
    pub fn queued(&self) -> usize {
        self.queued
    }

    /// Messages waiting for `dest`.
    pub fn queued_for(&self, dest: &DestinationKey) -> usize {
        self.sites.get(dest).map_or(0, |s| s.queue.len())
    }

    /// Messages of `dest` handed out and not done.
    pub fn in_flight(&self, dest: &DestinationKey) -> usize {
        self.sites.get(dest).map_or(0, |s| s.in_flight)
    }

    /// Open connections to `dest`.
    pub fn connections_to(&self, dest: &DestinationKey) -> usize {
        self.sites.get(dest).map_or(0, |s| s.connections)
    }

    /// Every connection slot is taken while work waits for some site: an
    /// idle connection should give its slot up rather than linger.
    pub fn starved(&self) -> bool {
        self.connections >= self.limits.max_connections && self.queued > 0
    }

    /// Open outbound connections, all destinations.
    pub fn connections(&self) -> usize {
        self.connections
    }

    /// Each active destination as the management API shows it.
    pub fn site_states(&self) -> impl Iterator<Item = (&DestinationKey, SiteState<'_>)> + '_ {
        self.sites.iter().map(|(dest, site)| {
            (
                dest,
                SiteState {
                    queued: site.queue.len(),
                    in_flight: site.in_flight,
                    connections: site.connections,
                    limits: &site.limits,
                    factor: site.factor,
                },
            )
        })
    }
}

/// One active destination's counts and the limits it runs under now.
#[derive(Debug, Clone, Copy)]
pub struct SiteState<'a> {
    /// Messages waiting for a connection.
    pub queued: usize,
    /// Messages handed out and not done.
    pub in_flight: usize,
    pub connections: usize,
    /// Its shaping limits, a back-off throttle applied.
    pub limits: &'a SiteLimits,
    /// The throttle's factor (1 when not throttled).
    pub factor: f64,
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use super::*;

    fn limits(total: usize, per: usize, window: usize, batch: usize) -> ReadyLimits {
        ReadyLimits {
            max_connections: total,
            max_connections_per_destination: per,
            window_per_destination: window,
            batch_per_connection: batch,
            max_queued_per_destination: 1000,
            share: 1,
        }
    }

    /// Time for the tests without rates (any instant will do).
    fn now() -> Instant {
        Instant::now()
    }

    fn mx(h: &str) -> DestinationKey {
        DestinationKey::mx_set([h]).expect("one host")
    }

    #[test]
    fn an_idle_connection_is_told_when_others_wait_for_its_slot() {
        let mut r = ReadyQueues::new(limits(1, 1, 10, 10)).unwrap();
        let now = Instant::now();
        let a = DestinationKey::route("a.test", 25);
        let b = DestinationKey::route("b.test", 25);
        r.push(a.clone(), 1u32).unwrap();
        let (dest, work) = r.next_connection(now).unwrap();
        assert_eq!((dest, work), (a.clone(), vec![1]));
        r.done(&a, 1);
        assert!(!r.starved(), "nothing waits");
        r.push(b.clone(), 2).unwrap();
        assert!(r.next_connection(now).is_none(), "the one slot is a's");
        assert!(r.starved(), "b waits for a's idle slot");
        r.connection_closed(&a);
        assert!(!r.starved());
        assert_eq!(r.next_connection(now).unwrap().0, b);
    }

    #[test]
    fn keys_are_normalised() {
        let a =
            DestinationKey::mx_set(["MX2.Example.TEST.", "mx1.example.test", "mx2.example.test"])
                .expect("hosts");
        let b = DestinationKey::mx_set(["mx1.example.test.", "mx2.example.test"]).expect("hosts");
        assert_eq!(a, b);
        assert_eq!(a.to_string(), "mx:mx1.example.test,mx2.example.test");
        assert_ne!(a, mx("mx1.example.test"));
        assert_eq!(
            DestinationKey::route("Relay.Example.", 25),
            DestinationKey::route("relay.example", 25)
        );
        assert_ne!(
            DestinationKey::route("relay.example", 25),
            DestinationKey::route("relay.example", 587)
        );
        assert_ne!(
            DestinationKey::route("relay.example", 25),
            mx("relay.example")
        );
        assert_eq!(
            DestinationKey::mx_set(Vec::<String>::new()),
            Err(QueueError::NoHosts)
        );
        assert_eq!(DestinationKey::mx_set(["."]), Err(QueueError::NoHosts));
    }

    #[test]
    fn site_names_read_back() {
        for key in [
            DestinationKey::mx_set(["mx2.example.test", "mx1.example.test"]).unwrap(),
            DestinationKey::route("relay.example", 587),
            DestinationKey::route("192.0.2.7", 25),
        ] {
            assert_eq!(key.to_string().parse::<DestinationKey>(), Ok(key));
        }
        for bad in [
            "",
            "mx:",
            "relay.example",
            "[relay.example]",
            "[]:25",
            "[a]:0",
            "[a]:x",
        ] {
            assert!(bad.parse::<DestinationKey>().is_err(), "{bad}");
        }
    }

    #[test]
    fn keys_with_a_source_read_back_and_differ_by_source() {
        let site = DestinationKey::mx_set(["mx2.example.test", "mx1.example.test"]).unwrap();
        let ip1 = site.with_source("ip1");
        assert_eq!(ip1.to_string(), "mx:mx1.example.test,mx2.example.test@ip1");
        assert_eq!(ip1.source(), Some("ip1"));
        assert_eq!(ip1.site(), site);
        assert_ne!(ip1, site.with_source("ip2"));
        assert_ne!(ip1, site);
        let route = DestinationKey::route("127.0.0.9", 2526).with_source("s-2.a");
        for key in [ip1, route] {
            assert_eq!(key.to_string().parse::<DestinationKey>(), Ok(key));
        }
        for bad in ["mx:a@", "mx:a@b c", "@ip1", "[a]:25@x@y", "relay@ip1"] {
            assert!(bad.parse::<DestinationKey>().is_err(), "{bad}");
        }
    }

    #[test]
    fn a_site_suspension_covers_every_source_and_a_source_one_only_its_own() {
        let mut r = ReadyQueues::new(limits(10, 2, 100, 5)).expect("limits");
        let site = mx("a");
        let (ip1, ip2) = (site.with_source("ip1"), site.with_source("ip2"));
        for i in 0..5 {
            r.push(ip1.clone(), i).expect("room");
            r.push(ip2.clone(), 10 + i).expect("room");
        }
        let t0 = now();
        let until = t0 + Duration::from_secs(600);
        r.set_suspended(HashMap::from([(ip1.clone(), until)]));
        assert_eq!(r.suspended_until(&ip1, t0), Some(until));
        assert_eq!(r.suspended_until(&ip2, t0), None);
        let (dest, _) = r.next_connection(t0).expect("ip2 goes on");
        assert_eq!(dest, ip2);
        assert!(r.next_batch(&ip1, t0).is_empty());
        r.set_suspended(HashMap::from([(site.clone(), until)]));
        assert_eq!(r.suspended_until(&ip1, t0), Some(until));
        assert_eq!(r.suspended_until(&ip2, t0), Some(until));
        assert!(r.next_connection(t0).is_none(), "the whole site waits");
        assert_eq!(r.next_wakeup(t0), Some(until));
    }

    #[test]
    fn domain_and_every_site_keys_read_back_and_are_not_sites() {
        let domain = DestinationKey::domain("Example.COM.");
        assert_eq!(domain.to_string(), "domain:example.com");
        assert_eq!(domain.as_domain(), Some("example.com"));
        assert!(!domain.is_site());
        let every = DestinationKey::every_site("ip1");
        assert_eq!(every.to_string(), "*@ip1");
        assert!(!every.is_site());
        assert!(mx("a").is_site());
        for key in [domain, every] {
            assert_eq!(key.to_string().parse::<DestinationKey>(), Ok(key));
        }
        for bad in [
            "domain:",
            "domain:a b",
            "domain:a@b",
            "*",
            "*@",
            "domain:x@ip1",
        ] {
            assert!(bad.parse::<DestinationKey>().is_err(), "{bad}");
        }
    }

    #[test]
    fn a_source_suspended_everywhere_covers_that_source_at_every_site() {
        let mut r: ReadyQueues<u32> = ReadyQueues::new(limits(10, 2, 100, 5)).expect("limits");
        let t0 = now();
        let until = t0 + Duration::from_secs(600);
        r.set_suspended(HashMap::from([(DestinationKey::every_site("ip1"), until)]));
        assert_eq!(
            r.suspended_until(&mx("a").with_source("ip1"), t0),
            Some(until)
        );
        assert_eq!(
            r.suspended_until(&mx("b").with_source("ip1"), t0),
            Some(until)
        );
        assert_eq!(r.suspended_until(&mx("a").with_source("ip2"), t0), None);
        assert_eq!(r.suspended_until(&mx("a"), t0), None);
    }

    #[test]
    fn a_suspended_site_gets_no_connection_and_keeps_its_work() {
        let mut r = ReadyQueues::new(limits(10, 2, 100, 5)).expect("limits");
        let (a, b) = (mx("a"), mx("b"));
        for i in 0..10 {
            r.push(a.clone(), i).expect("room");
            r.push(b.clone(), 100 + i).expect("room");
        }
        let t0 = now();
        let until = t0 + Duration::from_secs(3600);
        r.set_suspended(HashMap::from([(a.clone(), until)]));
        let (dest, _) = r.next_connection(t0).expect("b");
        assert_eq!(dest, b);
        let (dest, _) = r.next_connection(t0).expect("b again");
        assert_eq!(dest, b);
        assert!(
            r.next_connection(t0).is_none(),
            "a is suspended, b at its limit"
        );
        assert_eq!(r.queued_for(&a), 10, "a's work waits");
        assert_eq!(r.next_wakeup(t0), Some(until));
        // Over: a gets its connection.
        let (dest, batch) = r.next_connection(until).expect("a");
        assert_eq!((dest, batch.len()), (a.clone(), 5));
        // Suspended while connected: no more work for that connection.
        r.set_suspended(HashMap::from([(
            a.clone(),
            until + Duration::from_secs(60),
        )]));
        assert!(r.next_batch(&a, until).is_empty());
    }

    #[test]
    fn limits_are_respected() {
        let mut r = ReadyQueues::new(limits(3, 2, 5, 2)).expect("limits");
        let (a, b) = (mx("a"), mx("b"));
        for i in 0..20 {
            r.push(a.clone(), i).expect("room");
            r.push(b.clone(), 100 + i).expect("room");
        }
        let c1 = r.next_connection(now()).expect("first");
        let c2 = r.next_connection(now()).expect("second");
        let c3 = r.next_connection(now()).expect("third");
        assert!(r.next_connection(now()).is_none(), "total limit 3");
        assert_eq!(r.connections(), 3);
        let to_a = [&c1, &c2, &c3].iter().filter(|c| c.0 == a).count();
        assert!(r.connections_to(&a) <= 2 && r.connections_to(&b) <= 2);
        assert_eq!(to_a, r.connections_to(&a));
        for c in [&c1, &c2, &c3] {
            assert_eq!(c.1.len(), 2, "batch");
        }
        // window: a has at most 5 in flight however it asks
        let dest_with_two = if r.connections_to(&a) == 2 { &a } else { &b };
        let more = r.next_batch(dest_with_two, now());
        assert_eq!(more.len(), 1, "4 in flight + 1 = window 5");
        assert!(r.next_batch(dest_with_two, now()).is_empty());
        assert_eq!(r.in_flight(dest_with_two), 5);
        r.done(dest_with_two, 3);
        assert_eq!(r.next_batch(dest_with_two, now()).len(), 2);
        // closing frees a connection slot
        r.connection_closed(&c1.0);
        assert!(r.next_connection(now()).is_some());
        assert!(r.next_connection(now()).is_none());
        // no batch for a destination without a connection
        assert!(r.next_batch(&mx("zzz"), now()).is_empty());
    }

    #[test]
    fn fair_across_destinations() {
        let mut r = ReadyQueues::new(limits(1, 1, 100, 1)).expect("limits");
        let (a, b, c) = (mx("a"), mx("b"), mx("c"));
        for i in 0..1000 {
            r.push(a.clone(), ("a", i)).expect("room");
        }
        for i in 0..3 {
            r.push(b.clone(), ("b", i)).expect("room");
            r.push(c.clone(), ("c", i)).expect("room");
        }
        let mut order = Vec::new();
        for _ in 0..9 {
            let (d, w) = r.next_connection(now()).expect("work");
            assert_eq!(w.len(), 1);
            order.push(w[0].0);
            r.done(&d, 1);
            r.connection_closed(&d);
        }
        assert_eq!(order, ["a", "b", "c", "a", "b", "c", "a", "b", "c"]);
        // reuse of a's connection does not skip others' turns forever
        let (d, _) = r.next_connection(now()).expect("a");
        assert_eq!(d, a);
        for _ in 0..5 {
            let w = r.next_batch(&a, now());
            r.done(&a, w.len());
        }
        r.done(&a, 1);
        r.connection_closed(&a);
        // b arrives late: it waits behind a's turn, not behind a's backlog
        r.push(b.clone(), ("b", 9)).expect("room");
        let mut got = Vec::new();
        for _ in 0..2 {
            let (d, w) = r.next_connection(now()).expect("work");
            got.push(d.clone());
            r.done(&d, w.len());
            r.connection_closed(&d);
        }
        assert_eq!(got, vec![a.clone(), b.clone()]);
    }

    #[test]
    fn full_destination_hands_work_back() {
        let mut r = ReadyQueues::new(ReadyLimits {
            max_queued_per_destination: 2,
            ..ReadyLimits::default()
        })
        .expect("limits");
        r.push(mx("a"), 1).expect("room");
        r.push(mx("a"), 2).expect("room");
        assert_eq!(r.push(mx("a"), 3), Err(ReadyFull(3)));
        r.push(mx("b"), 4).expect("other destination");
        assert_eq!(r.queued(), 3);
        assert!(ReadyQueues::<u8>::new(ReadyLimits {
            window_per_destination: 0,
            ..ReadyLimits::default()
        })
        .is_err());
    }

    /// A shared budget that holds a fixed number of messages and knows
    /// when more come; two hosts' worth of connections. The test keeps a
    /// handle on its state.
    #[derive(Debug, Default)]
    struct FakeState {
        messages: usize,
        more_at: Option<Instant>,
        forgotten: Vec<DestinationKey>,
    }

    #[derive(Debug)]
    struct FakeShared(std::rc::Rc<std::cell::RefCell<FakeState>>);

    impl SharedBudget for FakeShared {
        fn available(
            &mut self,
            _: &DestinationKey,
            kind: RateKind,
            _: crate::shaping::Rate,
            _: Instant,
        ) -> usize {
            match kind {
                RateKind::Messages => self.0.borrow().messages,
                RateKind::Connections => usize::MAX,
            }
        }
        fn take(&mut self, _: &DestinationKey, kind: RateKind, n: usize, _: Instant) {
            if kind == RateKind::Messages {
                self.0.borrow_mut().messages -= n;
            }
        }
        fn next_available(
            &mut self,
            _: &DestinationKey,
            _: RateKind,
            _: Instant,
        ) -> Option<Instant> {
            let state = self.0.borrow();
            (state.messages == 0).then_some(state.more_at).flatten()
        }
        fn connections(&self, per_core: usize) -> usize {
            (per_core / 2).max(1)
        }
        fn forget(&mut self, site: &DestinationKey) {
            self.0.borrow_mut().forgotten.push(site.clone());
        }
    }

    #[test]
    fn a_shared_budget_holds_a_rated_site_beside_its_own_bucket() {
        let t0 = now();
        let state = std::rc::Rc::new(std::cell::RefCell::new(FakeState {
            messages: 3,
            more_at: Some(t0 + Duration::from_millis(250)),
            ..FakeState::default()
        }));
        let budget = FakeShared(std::rc::Rc::clone(&state));
        let mut r = ReadyQueues::with_shared(limits(10, 4, 100, 2), Some(Box::new(budget)))
            .expect("limits");
        let (rated, plain) = (mx("rated"), mx("plain"));
        let shaped = SiteLimits {
            message_rate: Some("1000/s".parse().expect("rate")),
            ..ReadyQueues::<u32>::plain_site(r.limits())
        };
        for i in 0..10 {
            r.push_shaped(rated.clone(), i, || shaped.clone())
                .expect("room");
            r.push(plain.clone(), 100 + i).expect("room");
        }
        let mut got = HashMap::new();
        while let Some((dest, batch)) = r.next_connection(t0) {
            *got.entry(dest).or_insert(0) += batch.len();
        }
        // The site's own bucket would let 10 go; the shared budget 3.
        assert_eq!(got.get(&rated), Some(&3));
        // A site without a rate never asks; two hosts: 4 connections per
        // core become 2.
        assert_eq!(got.get(&plain), Some(&4));
        assert_eq!(r.connections_to(&plain), 2);
        assert_eq!(
            r.wakeup_for(&rated, t0),
            Some(t0 + Duration::from_millis(250))
        );
        assert_eq!(r.next_wakeup(t0), Some(t0 + Duration::from_millis(250)));
        // More granted: an open connection takes it.
        state.borrow_mut().messages = 5;
        assert_eq!(r.next_batch(&rated, t0).len(), 2);
        // A site forgotten is forgotten by the budget too.
        r.done(&plain, 4);
        loop {
            let more = r.next_batch(&plain, t0);
            if more.is_empty() {
                break;
            }
            r.done(&plain, more.len());
        }
        r.connection_closed(&plain);
        r.connection_closed(&plain);
        assert_eq!(state.borrow().forgotten, vec![plain]);
    }

    /// Property: under random pushes, hand-outs, completions and closes,
    /// no limit is ever exceeded, nothing is handed out twice, and once
    /// connections keep cycling every pushed item comes out.
    #[test]
    fn limits_hold_and_everything_comes_out() {
        for seed in 0..30u64 {
            let mut rng = StdRng::seed_from_u64(seed);
            let l = limits(4, 2, 6, 3);
            let mut r = ReadyQueues::new(l).expect("limits");
            let dests: Vec<_> = (0..5).map(|i| mx(&format!("d{i}"))).collect();
            let mut open: Vec<(DestinationKey, Vec<u32>)> = Vec::new();
            let mut pushed = 0u32;
            let mut out = HashSet::new();
            let mut step = |r: &mut ReadyQueues<u32>,
                            open: &mut Vec<(DestinationKey, Vec<u32>)>,
                            rng: &mut StdRng,
                            pushing: bool| {
                match rng.gen_range(0..6) {
                    0 | 1 if pushing => {
                        let d = dests[rng.gen_range(0..dests.len())].clone();
                        r.push(d, pushed).expect("room");
                        pushed += 1;
                    }
                    2 => {
                        if let Some((d, w)) = r.next_connection(now()) {
                            open.push((d, w));
                        }
                    }
                    3 if !open.is_empty() => {
                        let i = rng.gen_range(0..open.len());
                        let more = r.next_batch(&open[i].0, now());
                        open[i].1.extend(more);
                    }
                    _ if !open.is_empty() => {
                        let i = rng.gen_range(0..open.len());
                        let (d, w) = open.swap_remove(i);
                        for x in &w {
                            assert!(out.insert(*x), "{x} handed out twice");
                        }
                        r.done(&d, w.len());
                        r.connection_closed(&d);
                    }
                    _ => {}
                }
                assert!(r.connections() <= l.max_connections);
                assert_eq!(r.connections(), open.len());
                for d in &dests {
                    assert!(r.connections_to(d) <= l.max_connections_per_destination);
                    assert!(r.in_flight(d) <= l.window_per_destination);
                }
            };
            for _ in 0..500 {
                step(&mut r, &mut open, &mut rng, true);
            }
            let mut rounds = 0;
            while r.queued() > 0 || !open.is_empty() {
                step(&mut r, &mut open, &mut rng, false);
                rounds += 1;
                assert!(rounds < 100_000, "seed {seed}: work stuck");
            }
            assert_eq!(out.len() as u32, pushed);
            assert!(r.sites.is_empty(), "idle destinations forgotten");
        }
    }
}
