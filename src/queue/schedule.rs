//! The scheduled queue of one core: every message this core holds and has
//! not finished, its state, and the time of its next action, kept in one
//! timer index so that the earliest deadline is always known. Sans-IO: the
//! caller passes `now` and persists what it is told to (deferrals,
//! outcomes); it refuses to resolve, connect, or touch the spool.
//!
//! A message is always in exactly one of two states, each with a time:
//! - `Waiting { at }`: its next attempt is due at `at` (a new message is
//!   due at once);
//! - `Active { attempt, task, deadline }`: `due` handed it out (to deliver
//!   it, or to expire it) and the holder must report by `deadline`. If it
//!   does not, the attempt counts as failed and the message is rescheduled
//!   (or expired); late reports of that attempt are refused as stale.
//!
//! Expiry follows Postfix: a temporary failure after the queue lifetime is
//! final (`now - received_at > maximal_queue_lifetime`), and retries are
//! never scheduled past the end of the lifetime, so the last attempt falls
//! right after it and the DSN is not late by up to a whole backoff.

use std::collections::{BTreeSet, HashSet};
use std::fmt;
use std::num::NonZeroU64;
use std::rc::Rc;
use std::time::Instant;

use crate::chunked::{ChunkedMap, ChunkedSet};
use crate::spool::{Deferred, DeliveryState, SpoolId};

use super::census::{Census, Shape};
use super::error::QueueError;
use super::policy::{Jitter, NoJitter, RetryPolicy};
use super::time::UnixTime;

/// What the queue knows of one message without reading the spool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueEntry {
    pub size: u64,
    pub recipients: usize,
    /// Seconds since the Unix epoch.
    pub received_at: u64,
    /// When the 250 left, for the acknowledgement-to-delivery latency;
    /// `None` for messages restored from the spool after a restart.
    pub acknowledged_at: Option<std::time::Instant>,
    /// Its recipients' domains and its tenant, for the census.
    pub shape: Rc<Shape>,
}

/// Names one hand-out of a message by `due`. Reports carry it so that a
/// report from an attempt the queue already gave up on cannot change the
/// message's newer state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AttemptId(NonZeroU64);

impl fmt::Display for AttemptId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// What the holder of an active message is to do with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Task {
    /// Try the pending recipients. With none pending (all finished before
    /// a restart), just complete it: DSN for failures, then finish.
    Deliver,
    /// The lifetime is over: record the pending recipients as expired,
    /// send the DSN they call for, finish the message, `remove` it.
    Expire,
}

/// A message's state; see the module documentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageState {
    Waiting {
        at: UnixTime,
    },
    Active {
        attempt: AttemptId,
        task: Task,
        deadline: UnixTime,
    },
}

impl MessageState {
    /// The time of the next action: every state has one.
    pub fn deadline(&self) -> UnixTime {
        match *self {
            MessageState::Waiting { at } => at,
            MessageState::Active { deadline, .. } => deadline,
        }
    }
}

/// One message handed out by [`Queue::due`] or [`Queue::defer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dispatch {
    pub id: SpoolId,
    pub attempt: AttemptId,
    pub task: Task,
}

/// Messages by state ([`Queue::count_by_state`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StateCounts {
    /// Waiting for their first attempt.
    pub new: u64,
    /// Waiting for a retry after failed attempts.
    pub deferred: u64,
    /// Being delivered or expired now.
    pub active: u64,
}

/// The result of [`Queue::defer`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Deferral {
    /// Try again later: persist this record (`Spool::record_deferral`).
    Retry(Deferred),
    /// The lifetime is over: the message is now active with
    /// [`Task::Expire`] under this dispatch.
    Expired(Dispatch),
}

/// A message as the queue keeps it, packed (a million may wait: issue
/// 13): [`QueueEntry`]'s fields, the state as a time and the current
/// hand-out, and behind pointers what few messages need: a last error
/// (one copy per distinct text, shared by every message that failed the
/// same way) and the finished recipients of a partly delivered message.
#[derive(Debug, Clone)]
struct Message {
    size: u64,
    /// Seconds since the Unix epoch, in 32 bits (enough until 2106; a
    /// later time saturates): 8 bytes less per message of a million.
    received_at: u32,
    /// When the 250 left, as [`Stamp`] counts it.
    acknowledged_at: Stamp,
    /// Waiting: when it is due; active: the holder's deadline.
    at: UnixTime,
    /// The current hand-out while active, `None` while waiting.
    attempt: Option<AttemptId>,
    task: Task,
    /// Waiting because a limit of spate's own held it ([`Queue::hold`]),
    /// not for a retry: only such a message may be released early. (The
    /// delivery engine's held sets can name a message that has moved on
    /// since; this keeps them from releasing a deferred retry.)
    held: bool,
    /// The sender was sent its "delayed" DSN: never a second.
    delay_noticed: bool,
    recipients: u32,
    attempts: u32,
    last_error: Option<Rc<str>>,
    /// Recipients that need no more attempts, by envelope index. Boxed:
    /// 8 bytes in every message instead of an empty set's 24.
    #[allow(clippy::box_collection)]
    finished: Option<Box<BTreeSet<u32>>>,
    /// Shared with every message shaped alike ([`Census::intern`]).
    shape: Rc<Shape>,
}

impl Message {
    fn state(&self) -> MessageState {
        match self.attempt {
            None => MessageState::Waiting { at: self.at },
            Some(attempt) => MessageState::Active {
                attempt,
                task: self.task,
                deadline: self.at,
            },
        }
    }

    fn set_state(&mut self, state: MessageState) {
        self.held = false;
        match state {
            MessageState::Waiting { at } => {
                self.at = at;
                self.attempt = None;
            }
            MessageState::Active {
                attempt,
                task,
                deadline,
            } => {
                self.at = deadline;
                self.attempt = Some(attempt);
                self.task = task;
            }
        }
    }

    fn is_finished(&self, index: u32) -> bool {
        self.finished.as_ref().is_some_and(|f| f.contains(&index))
    }

    fn finished_count(&self) -> usize {
        self.finished.as_ref().map_or(0, |f| f.len())
    }

    fn entry(&self, epoch: Instant) -> QueueEntry {
        QueueEntry {
            size: self.size,
            recipients: self.recipients as usize,
            received_at: u64::from(self.received_at),
            acknowledged_at: self.acknowledged_at.instant(epoch),
            shape: Rc::clone(&self.shape),
        }
    }

    /// Recipient indexes still to be tried, in envelope order.
    fn pending(&self) -> impl Iterator<Item = u32> + '_ {
        (0..self.recipients).filter(|&i| !self.is_finished(i))
    }
}

/// An `Option<Instant>` in 8 bytes: nanoseconds after the queue's epoch,
/// plus one; 0 for none. (An instant before the epoch, which the queue
/// never sees, would count as the epoch.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp(u64);

impl Stamp {
    fn new(at: Option<Instant>, epoch: Instant) -> Self {
        at.map_or(Stamp(0), |at| {
            let nanos = at.saturating_duration_since(epoch).as_nanos();
            Stamp(u64::try_from(nanos).unwrap_or(u64::MAX - 1) + 1)
        })
    }

    fn instant(self, epoch: Instant) -> Option<Instant> {
        let nanos = self.0.checked_sub(1)?;
        epoch.checked_add(std::time::Duration::from_nanos(nanos))
    }
}

/// The last-error texts of the queued messages, one copy each: a site
/// that fails every message the same way costs one string, not one per
/// message.
#[derive(Debug, Default)]
struct ErrorTexts(HashSet<Rc<str>>);

impl ErrorTexts {
    fn intern(&mut self, text: &str) -> Rc<str> {
        if let Some(shared) = self.0.get(text) {
            return Rc::clone(shared);
        }
        let shared: Rc<str> = Rc::from(text);
        self.0.insert(Rc::clone(&shared));
        shared
    }

    /// A message let go of `text`: forgotten once no message holds it.
    fn release(&mut self, text: Option<Rc<str>>) {
        if let Some(text) = text {
            // This copy and the set's: no message holds it any more.
            if Rc::strong_count(&text) <= 2 {
                self.0.remove(&*text);
            }
        }
    }
}

/// The per-core scheduled queue. Generic over the jitter so tests can
/// use none; `Queue` alone means no jitter.
#[derive(Debug)]
pub struct Queue<J: Jitter = NoJitter> {
    policy: RetryPolicy,
    jitter: J,
    messages: ChunkedMap<SpoolId, Message>,
    /// Exactly one entry per message: its state's deadline.
    timers: ChunkedSet<(UnixTime, SpoolId)>,
    bytes: u64,
    next_attempt: u64,
    errors: ErrorTexts,
    census: Census,
    /// What acknowledgement times are counted from.
    epoch: Instant,
}

impl Default for Queue {
    fn default() -> Self {
        Queue::with_jitter(RetryPolicy::default(), NoJitter)
    }
}

impl Queue {
    /// A queue with the default (Postfix-like) policy and no jitter.
    pub fn new() -> Self {
        Self::default()
    }
}

impl<J: Jitter> Queue<J> {
    /// A queue with its own timing; refuses a policy that cannot work.
    pub fn with_policy(policy: RetryPolicy, jitter: J) -> Result<Self, QueueError> {
        policy.validate()?;
        Ok(Self::with_jitter(policy, jitter))
    }

    fn with_jitter(policy: RetryPolicy, jitter: J) -> Self {
        Queue {
            policy,
            jitter,
            messages: ChunkedMap::new(),
            timers: ChunkedSet::new(),
            bytes: 0,
            next_attempt: 0,
            errors: ErrorTexts::default(),
            census: Census::default(),
            epoch: Instant::now(),
        }
    }

    pub fn policy(&self) -> &RetryPolicy {
        &self.policy
    }

    /// Queues a newly accepted message, due at once (at its `received_at`).
    /// Inserting an id again replaces it.
    pub fn insert(&mut self, id: SpoolId, entry: QueueEntry) {
        let message = self.pack(&entry);
        self.put(id, message);
    }

    /// Queues a message recovered from the spool where it stopped: its
    /// finished recipients, attempt count, last error and retry time (due
    /// at once if it was never deferred).
    pub fn restore(&mut self, id: SpoolId, entry: QueueEntry, delivery: &DeliveryState) {
        let mut message = self.pack(&entry);
        message.at = UnixTime(delivery.next_attempt_unix().unwrap_or(entry.received_at));
        message.attempts = delivery.attempts();
        message.last_error = delivery.last_error().map(|e| self.errors.intern(e));
        message.delay_noticed = delivery.delay_noticed;
        let finished: BTreeSet<u32> = delivery
            .outcomes
            .keys()
            .copied()
            .filter(|&i| i < message.recipients)
            .collect();
        if !finished.is_empty() {
            message.finished = Some(Box::new(finished));
        }
        self.put(id, message);
    }

    /// A new message's packed form: waiting, due at its `received_at`.
    fn pack(&mut self, entry: &QueueEntry) -> Message {
        Message {
            shape: self.census.intern(Rc::clone(&entry.shape)),
            size: entry.size,
            received_at: u32::try_from(entry.received_at).unwrap_or(u32::MAX),
            acknowledged_at: Stamp::new(entry.acknowledged_at, self.epoch),
            at: UnixTime(entry.received_at),
            attempt: None,
            task: Task::Deliver,
            held: false,
            delay_noticed: false,
            recipients: u32::try_from(entry.recipients).unwrap_or(u32::MAX),
            attempts: 0,
            last_error: None,
            finished: None,
        }
    }

    fn put(&mut self, id: SpoolId, message: Message) {
        self.remove(id);
        self.census.enter(&message.shape, message.pending());
        self.bytes += message.size;
        self.timers.add((message.at, id));
        self.messages.insert(id, message);
    }

    /// Forgets a message (finished in the spool, or deleted).
    pub fn remove(&mut self, id: SpoolId) -> Option<QueueEntry> {
        let mut m = self.messages.remove(&id)?;
        self.timers.remove(&(m.at, id));
        self.bytes -= m.size;
        self.errors.release(m.last_error.take());
        self.census.leave(&m.shape, m.pending());
        self.census.release(&m.shape);
        Some(m.entry(self.epoch))
    }

    fn set_state(&mut self, id: SpoolId, state: MessageState) {
        if let Some(m) = self.messages.get_mut(&id) {
            self.timers.remove(&(m.at, id));
            m.set_state(state);
            self.timers.add((m.at, id));
        }
    }

    fn activate(&mut self, id: SpoolId, task: Task, now: UnixTime) -> Dispatch {
        self.next_attempt += 1;
        let attempt = AttemptId(NonZeroU64::MIN.saturating_add(self.next_attempt - 1));
        let deadline = now.plus(self.policy.attempt_timeout);
        self.set_state(
            id,
            MessageState::Active {
                attempt,
                task,
                deadline,
            },
        );
        Dispatch { id, attempt, task }
    }

    /// When the lifetime of a message ends: after this second, a temporary
    /// failure is final.
    fn expires_at(&self, received_at: u64) -> UnixTime {
        UnixTime(received_at).plus(self.policy.maximal_queue_lifetime)
    }

    /// Everything whose time has come, oldest deadline first: waiting
    /// messages become active (to deliver), and active ones whose holder
    /// missed its deadline count as a failed attempt (rescheduled, so not
    /// returned, or expired, so returned with [`Task::Expire`]; a missed
    /// expiry is handed out again).
    pub fn due(&mut self, now: UnixTime) -> Vec<Dispatch> {
        let mut out = Vec::new();
        while let Some((&(at, id), ())) = self.timers.first() {
            if at > now {
                break;
            }
            self.act(at, id, now, &mut out);
        }
        out
    }

    /// [`Queue::due`] for at most `max` timers, the rest staying due for
    /// the next call: half of them the oldest due, half the newest. A
    /// million messages due at once (after a restart, at the end of a
    /// suspension) are then handed out a batch at a time, so what a batch
    /// costs to plan stays small and other work runs between batches; and
    /// a message that just became due (new mail for another site) goes in
    /// the next batch, not after the whole backlog.
    pub fn due_at_most(&mut self, now: UnixTime, max: usize) -> Vec<Dispatch> {
        let mut out = Vec::new();
        let latest = (now, SpoolId::from_u64(u64::MAX));
        for acted in 0..max {
            let next = if acted % 2 == 0 {
                self.timers.first()
            } else {
                self.timers.last_at_most(&latest)
            };
            let Some((&(at, id), ())) = next else { break };
            if at > now {
                break;
            }
            self.act(at, id, now, &mut out);
        }
        out
    }

    /// The timer `(at, id)` is due: a waiting message becomes active, an
    /// active one whose holder missed its deadline counts as failed.
    fn act(&mut self, at: UnixTime, id: SpoolId, now: UnixTime, out: &mut Vec<Dispatch>) {
        let Some(state) = self.messages.get(&id).map(Message::state) else {
            // Cannot happen (timers and messages change together);
            // drop the stray timer rather than loop on it.
            self.timers.remove(&(at, id));
            return;
        };
        match state {
            MessageState::Waiting { .. } => out.push(self.activate(id, Task::Deliver, now)),
            MessageState::Active {
                attempt,
                task: Task::Deliver,
                ..
            } => {
                let lost = "delivery attempt did not report before its deadline";
                if let Ok(Deferral::Expired(d)) = self.defer(id, attempt, now, lost) {
                    out.push(d);
                }
            }
            MessageState::Active {
                task: Task::Expire, ..
            } => out.push(self.activate(id, Task::Expire, now)),
        }
    }

    /// The earliest deadline of any message: when the caller should next
    /// call [`Queue::due`]. `None` only when the queue is empty.
    pub fn next_wakeup(&self) -> Option<UnixTime> {
        self.timers.first().map(|(&(at, _), ())| at)
    }

    /// Delivery took a dispatched message out of a ready queue to start
    /// its transaction: checks the attempt is still current (skip the
    /// message if not) and restarts its deadline, so the time spent waiting
    /// for a connection does not eat into the transaction's.
    pub fn begin(
        &mut self,
        id: SpoolId,
        attempt: AttemptId,
        now: UnixTime,
    ) -> Result<(), QueueError> {
        let task = self.current(id, attempt)?;
        let deadline = now.plus(self.policy.attempt_timeout);
        self.set_state(
            id,
            MessageState::Active {
                attempt,
                task,
                deadline,
            },
        );
        Ok(())
    }

    /// Whether `attempt` is the message's current hand-out.
    pub fn is_current(&self, id: SpoolId, attempt: AttemptId) -> bool {
        self.current(id, attempt).is_ok()
    }

    fn current(&self, id: SpoolId, attempt: AttemptId) -> Result<Task, QueueError> {
        let m = self
            .messages
            .get(&id)
            .ok_or(QueueError::UnknownMessage(id))?;
        match m.state() {
            MessageState::Active {
                attempt: a, task, ..
            } if a == attempt => Ok(task),
            _ => Err(QueueError::StaleAttempt { id, attempt }),
        }
    }

    /// The attempt failed temporarily (4xx, network, resolver): schedule
    /// the next one after the backoff for this attempt count (jittered,
    /// never past the end of the lifetime), or expire the message if its
    /// lifetime is over.
    pub fn defer(
        &mut self,
        id: SpoolId,
        attempt: AttemptId,
        now: UnixTime,
        error: &str,
    ) -> Result<Deferral, QueueError> {
        self.current(id, attempt)?;
        let policy = self.policy;
        let m = self
            .messages
            .get_mut(&id)
            .ok_or(QueueError::UnknownMessage(id))?;
        m.attempts = m.attempts.saturating_add(1);
        let text = self.errors.intern(error);
        self.errors.release(m.last_error.replace(text));
        let attempts = m.attempts;
        let expires_at = UnixTime(u64::from(m.received_at)).plus(policy.maximal_queue_lifetime);
        if now > expires_at {
            return Ok(Deferral::Expired(self.activate(id, Task::Expire, now)));
        }
        let delay = self
            .jitter
            .adjust(id, attempts, policy.backoff(attempts))
            .clamp(std::time::Duration::from_secs(1), policy.maximal_backoff);
        let at = now
            .plus(delay)
            .min(UnixTime(expires_at.0.saturating_add(1)));
        self.set_state(id, MessageState::Waiting { at });
        Ok(Deferral::Retry(Deferred {
            attempts,
            next_attempt_unix: at.0,
            last_error: error.to_owned(),
        }))
    }

    /// A limit of spate's own (a destination's ready queue is full) held
    /// the attempt back before anything was tried: the message waits
    /// until `until` (or an earlier [`Queue::release`]) with its attempt
    /// count, last error and backoff untouched, and nothing is persisted:
    /// it was never tried, so a restart simply makes it due. Postfix's
    /// active queue likewise takes a message only when there is room.
    pub fn hold(
        &mut self,
        id: SpoolId,
        attempt: AttemptId,
        until: UnixTime,
    ) -> Result<(), QueueError> {
        self.current(id, attempt)?;
        self.set_state(id, MessageState::Waiting { at: until });
        if let Some(m) = self.messages.get_mut(&id) {
            m.held = true;
        }
        Ok(())
    }

    /// Makes a held message due at `now` (room opened for it); false when
    /// it is not held (waiting for a retry, active, gone) or already due.
    pub fn release(&mut self, id: SpoolId, now: UnixTime) -> bool {
        let waiting_later = self
            .messages
            .get(&id)
            .is_some_and(|m| m.held && m.attempt.is_none() && m.at > now);
        if waiting_later {
            self.set_state(id, MessageState::Waiting { at: now });
        }
        waiting_later
    }

    /// Whether the sender of `id` was sent its "delayed" DSN.
    pub fn delay_noticed(&self, id: SpoolId) -> bool {
        self.messages.get(&id).is_some_and(|m| m.delay_noticed)
    }

    /// Notes that the sender of `id` was sent its "delayed" DSN.
    pub fn note_delay_notice(&mut self, id: SpoolId) {
        if let Some(m) = self.messages.get_mut(&id) {
            m.delay_noticed = true;
        }
    }

    /// Notes that a recipient needs no more attempts (its outcome was
    /// recorded in the spool). Returns the recipients still pending.
    pub fn recipient_finished(&mut self, id: SpoolId, index: u32) -> Result<usize, QueueError> {
        let m = self
            .messages
            .get_mut(&id)
            .ok_or(QueueError::UnknownMessage(id))?;
        if index < m.recipients && m.finished.get_or_insert_with(Box::default).insert(index) {
            self.census.recipient_done(&m.shape, index);
        }
        Ok((m.recipients as usize).saturating_sub(m.finished_count()))
    }

    /// Recipient indexes still to be tried, in envelope order.
    pub fn pending_recipients(&self, id: SpoolId) -> Option<Vec<u32>> {
        let m = self.messages.get(&id)?;
        Some(m.pending().collect())
    }

    /// Makes every waiting message due at `now` (`spate queue flush`).
    /// Active messages keep their holder. Returns how many were moved.
    pub fn flush(&mut self, now: UnixTime) -> usize {
        let waiting: Vec<SpoolId> = self
            .messages
            .iter()
            .filter(|(_, m)| m.attempt.is_none() && m.at > now)
            .map(|(id, _)| *id)
            .collect();
        for id in &waiting {
            self.set_state(*id, MessageState::Waiting { at: now });
        }
        waiting.len()
    }

    /// Makes the waiting messages among `ids` due at `now` (`spate queue
    /// flush` with a selection). Returns how many were moved.
    pub fn flush_only(&mut self, ids: &[SpoolId], now: UnixTime) -> usize {
        let mut moved = 0;
        for &id in ids {
            let later = self
                .messages
                .get(&id)
                .is_some_and(|m| m.attempt.is_none() && m.at > now);
            if later {
                self.set_state(id, MessageState::Waiting { at: now });
                moved += 1;
            }
        }
        moved
    }

    /// The waiting messages (none being delivered) that `wanted` takes,
    /// given each one's shape and pending recipients, in spool order.
    pub fn waiting_where(
        &self,
        mut wanted: impl FnMut(&Shape, &mut dyn Iterator<Item = u32>) -> bool,
    ) -> Vec<SpoolId> {
        self.messages
            .iter()
            .filter(|(_, m)| m.attempt.is_none() && wanted(&m.shape, &mut m.pending()))
            .map(|(id, _)| *id)
            .collect()
    }

    /// The pending recipients per domain and the messages per tenant.
    pub fn census(&self) -> &Census {
        &self.census
    }

    /// The message's state (and so its next action and time).
    pub fn state(&self, id: SpoolId) -> Option<MessageState> {
        self.messages.get(&id).map(Message::state)
    }

    /// When the message's lifetime ends, for `spate queue list`.
    pub fn expiry(&self, id: SpoolId) -> Option<UnixTime> {
        self.messages
            .get(&id)
            .map(|m| self.expires_at(u64::from(m.received_at)))
    }

    /// Failed attempts so far.
    pub fn attempts(&self, id: SpoolId) -> Option<u32> {
        self.messages.get(&id).map(|m| m.attempts)
    }

    /// Why the last attempt failed.
    pub fn last_error(&self, id: SpoolId) -> Option<&str> {
        self.messages.get(&id).and_then(|m| m.last_error.as_deref())
    }

    pub fn len(&self) -> usize {
        self.messages.len()
    }

    pub fn is_empty(&self) -> bool {
        self.messages.is_empty()
    }

    /// Bytes of message data held.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Messages by state, for the metrics (walks the queue: call it when
    /// scraped, not per message).
    pub fn count_by_state(&self) -> StateCounts {
        let mut counts = StateCounts::default();
        for m in self.messages.values() {
            match m.attempt {
                Some(_) => counts.active += 1,
                None if m.attempts == 0 => counts.new += 1,
                None => counts.deferred += 1,
            }
        }
        counts
    }

    /// Messages in spool order (ids grow with segment and offset).
    pub fn iter(&self) -> impl Iterator<Item = (SpoolId, QueueEntry)> + '_ {
        self.messages
            .iter()
            .map(|(id, m)| (*id, m.entry(self.epoch)))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use crate::queue::TenantCount;
    use crate::spool::{OutcomeKind, RecipientOutcome};

    use super::*;

    const T0: u64 = 1_700_000_000;

    fn id(n: u64) -> SpoolId {
        SpoolId::from_u64(n)
    }

    fn entry(received_at: u64) -> QueueEntry {
        QueueEntry {
            acknowledged_at: None,
            shape: Default::default(),
            size: 100,
            recipients: 3,
            received_at,
        }
    }

    fn t(secs: u64) -> UnixTime {
        UnixTime(T0 + secs)
    }

    /// Every message has exactly one timer, equal to its state's deadline.
    fn check<J: Jitter>(q: &Queue<J>) {
        assert_eq!(q.timers.len(), q.messages.len());
        for (id, m) in q.messages.iter() {
            assert!(
                q.timers.get(&(m.state().deadline(), *id)).is_some(),
                "{id} has no timer"
            );
        }
        assert_eq!(q.bytes, q.messages.values().map(|m| m.size).sum::<u64>());
        assert_eq!(q.next_wakeup(), q.timers.first().map(|t| t.0 .0));
    }

    fn one(q: &mut Queue, now: UnixTime) -> Dispatch {
        let d = q.due(now);
        assert_eq!(d.len(), 1, "{d:?}");
        d[0]
    }

    #[test]
    fn new_message_is_due_at_once_and_nothing_before_its_time() {
        let mut q = Queue::new();
        q.insert(id(1), entry(T0));
        assert_eq!(q.next_wakeup(), Some(t(0)));
        assert!(q.due(UnixTime(T0 - 1)).is_empty());
        let d = one(&mut q, t(0));
        assert_eq!((d.id, d.task), (id(1), Task::Deliver));
        assert!(q.due(t(0)).is_empty(), "handed out once");
        assert_eq!(q.next_wakeup(), Some(t(3600)), "attempt deadline");
        check(&q);
    }

    #[test]
    fn a_held_message_keeps_its_attempts_and_backoff() {
        let mut q = Queue::new();
        q.insert(id(1), entry(T0));
        let d = one(&mut q, t(0));
        // A real failure counts: attempt 1, next try after the backoff.
        q.defer(d.id, d.attempt, t(0), "421 busy").expect("defer");
        assert_eq!(q.attempts(id(1)), Some(1));
        let d = one(&mut q, t(300));
        // Held by a limit of our own: nothing counted, nothing changed
        // but the time it waits, and a stale attempt cannot hold it.
        q.hold(d.id, d.attempt, t(360)).expect("hold");
        assert!(q.hold(d.id, d.attempt, t(999)).is_err(), "not current");
        assert_eq!(q.attempts(id(1)), Some(1));
        assert_eq!(q.last_error(id(1)), Some("421 busy"));
        assert_eq!(q.state(id(1)), Some(MessageState::Waiting { at: t(360) }));
        assert!(q.due(t(301)).is_empty());
        // Room opened: released at once, handed out again.
        assert!(q.release(id(1), t(301)));
        assert!(!q.release(id(1), t(301)), "already due");
        let d = one(&mut q, t(301));
        assert_eq!(d.task, Task::Deliver);
        assert!(
            !q.release(id(1), t(302)),
            "active messages stay with their holder"
        );
        assert!(!q.release(id(9), t(302)), "unknown");
        // Deferred by a real failure: a release (a stale held entry) does
        // not cut its backoff short.
        q.defer(d.id, d.attempt, t(302), "421 busy").expect("defer");
        assert!(!q.release(id(1), t(303)), "a retry is not held");
        assert!(q.due(t(303)).is_empty());
        check(&q);
    }

    #[test]
    fn due_at_most_hands_out_the_oldest_and_the_newest_and_keeps_the_rest_due() {
        let mut q = Queue::new();
        for n in (1..=6).rev() {
            q.insert(id(n), entry(T0 + n));
        }
        let ids = |d: Vec<Dispatch>| d.iter().map(|d| d.id).collect::<Vec<_>>();
        // Due at t(5): 1..=5; 6 is not yet.
        assert_eq!(ids(q.due_at_most(t(5), 3)), vec![id(1), id(5), id(2)]);
        assert_eq!(q.next_wakeup(), Some(t(3)), "the rest still due");
        assert!(q.due_at_most(t(5), 0).is_empty());
        assert_eq!(ids(q.due_at_most(t(5), 10)), vec![id(3), id(4)]);
        assert_eq!(ids(q.due(t(10))), vec![id(6)]);
        check(&q);
    }

    #[test]
    fn messages_are_counted_by_state() {
        let mut q = Queue::new();
        for n in 1..=3 {
            q.insert(id(n), entry(T0));
        }
        assert_eq!(
            q.count_by_state(),
            StateCounts {
                new: 3,
                deferred: 0,
                active: 0
            }
        );
        let due = q.due(t(0));
        assert_eq!(due.len(), 3);
        q.defer(due[0].id, due[0].attempt, t(0), "421 busy")
            .expect("defer");
        q.remove(due[1].id);
        // due[2] is still out for delivery.
        assert_eq!(
            q.count_by_state(),
            StateCounts {
                new: 0,
                deferred: 1,
                active: 1
            }
        );
    }

    #[test]
    fn backoff_sequence_with_a_fake_clock() {
        let mut q = Queue::new();
        q.insert(id(1), entry(T0));
        let mut now = t(0);
        let mut delays = Vec::new();
        for _ in 0..8 {
            let d = one(&mut q, now);
            let Deferral::Retry(rec) = q.defer(d.id, d.attempt, now, "421 busy").expect("defer")
            else {
                panic!("expired too early");
            };
            delays.push(rec.next_attempt_unix - now.0);
            assert_eq!(q.next_wakeup(), Some(UnixTime(rec.next_attempt_unix)));
            assert!(q.due(UnixTime(rec.next_attempt_unix - 1)).is_empty());
            now = UnixTime(rec.next_attempt_unix);
            check(&q);
        }
        assert_eq!(delays, vec![300, 600, 1200, 2400, 4000, 4000, 4000, 4000]);
        assert_eq!(q.attempts(id(1)), Some(8));
        assert_eq!(q.last_error(id(1)), Some("421 busy"));
    }

    #[test]
    fn expiry_exactly_at_the_lifetime() {
        let policy = RetryPolicy::default();
        let life = policy.maximal_queue_lifetime.as_secs();
        for (fail_at, expired) in [(life - 1, false), (life, false), (life + 1, true)] {
            let mut q = Queue::new();
            q.insert(id(1), entry(T0));
            let d = one(&mut q, t(0));
            // the holder reports only at fail_at (begin keeps it current)
            q.begin(d.id, d.attempt, t(fail_at)).expect("current");
            match q
                .defer(d.id, d.attempt, t(fail_at), "451 later")
                .expect("defer")
            {
                Deferral::Retry(rec) => {
                    assert!(!expired, "{fail_at}");
                    // never scheduled past the end of the lifetime
                    assert_eq!(rec.next_attempt_unix, T0 + life + 1);
                    // that last attempt failing too expires the message
                    let d = one(&mut q, UnixTime(rec.next_attempt_unix));
                    let r = q.defer(d.id, d.attempt, UnixTime(rec.next_attempt_unix), "x");
                    assert!(matches!(r, Ok(Deferral::Expired(_))), "{r:?}");
                }
                Deferral::Expired(x) => {
                    assert!(expired, "{fail_at}");
                    assert_eq!(x.task, Task::Expire);
                    assert_eq!(
                        q.state(id(1)),
                        Some(MessageState::Active {
                            attempt: x.attempt,
                            task: Task::Expire,
                            deadline: t(fail_at + 3600)
                        })
                    );
                    // an expiry not acted on is handed out again
                    let again = one(&mut q, t(fail_at + 3600));
                    assert_eq!(again.task, Task::Expire);
                    assert_ne!(again.attempt, x.attempt);
                    assert!(q.remove(id(1)).is_some());
                }
            }
            check(&q);
        }
    }

    #[test]
    fn flush_makes_deferred_messages_due_now() {
        let mut q = Queue::new();
        for n in 1..=3 {
            q.insert(id(n), entry(T0));
        }
        let ds = q.due(t(0));
        assert_eq!(ds.len(), 3);
        // 1 and 2 deferred, 3 still in flight
        for d in &ds[..2] {
            q.defer(d.id, d.attempt, t(10), "421").expect("defer");
        }
        assert!(q.due(t(11)).is_empty());
        assert_eq!(q.flush(t(11)), 2);
        let again = q.due(t(11));
        assert_eq!(
            again.iter().map(|d| d.id).collect::<Vec<_>>(),
            vec![id(1), id(2)]
        );
        assert!(
            q.is_current(ds[2].id, ds[2].attempt),
            "active one untouched"
        );
        check(&q);
    }

    #[test]
    fn lost_attempt_is_rescheduled_and_its_late_report_refused() {
        let mut q = Queue::new();
        q.insert(id(1), entry(T0));
        let d = one(&mut q, t(0));
        assert!(q.due(t(3599)).is_empty());
        assert!(q.due(t(3600)).is_empty(), "rescheduled, not handed out");
        assert_eq!(
            q.state(id(1)),
            Some(MessageState::Waiting { at: t(3600 + 300) })
        );
        assert_eq!(q.attempts(id(1)), Some(1));
        assert_eq!(
            q.defer(d.id, d.attempt, t(3700), "late"),
            Err(QueueError::StaleAttempt {
                id: id(1),
                attempt: d.attempt
            })
        );
        assert!(!q.is_current(d.id, d.attempt));
        assert!(q.begin(d.id, d.attempt, t(3700)).is_err());
        assert_eq!(
            q.defer(id(9), d.attempt, t(1), "x"),
            Err(QueueError::UnknownMessage(id(9)))
        );
        let d2 = one(&mut q, t(3900));
        assert_ne!(d2.attempt, d.attempt);
        check(&q);
    }

    #[test]
    fn restore_resumes_where_the_spool_stopped() {
        let mut delivery = DeliveryState::default();
        delivery.outcomes.insert(
            1,
            RecipientOutcome {
                kind: OutcomeKind::Delivered,
                reply: "250".into(),
                remote_mta: None,
            },
        );
        // an index past the recipients (a caller's bug) is ignored
        let stray = delivery.outcomes[&1].clone();
        delivery.outcomes.insert(7, stray);
        delivery.deferred = Some(Deferred {
            attempts: 4,
            next_attempt_unix: T0 + 5000,
            last_error: "421 x".into(),
        });
        let mut q = Queue::new();
        q.restore(id(1), entry(T0), &delivery);
        q.restore(id(2), entry(T0 + 7), &DeliveryState::default());
        assert_eq!(q.attempts(id(1)), Some(4));
        assert_eq!(q.last_error(id(1)), Some("421 x"));
        assert_eq!(q.pending_recipients(id(1)), Some(vec![0, 2]));
        assert_eq!(q.state(id(1)), Some(MessageState::Waiting { at: t(5000) }));
        assert_eq!(q.state(id(2)), Some(MessageState::Waiting { at: t(7) }));
        let d = one(&mut q, t(4999));
        assert_eq!(d.id, id(2));
        let d = one(&mut q, t(5000));
        let Deferral::Retry(rec) = q.defer(d.id, d.attempt, t(5000), "e").expect("defer") else {
            panic!("expired");
        };
        assert_eq!(rec.attempts, 5);
        assert_eq!(rec.next_attempt_unix, T0 + 5000 + 4000);
        assert_eq!(q.recipient_finished(id(1), 0), Ok(1));
        assert_eq!(
            q.recipient_finished(id(1), 99),
            Ok(1),
            "out of range ignored"
        );
        check(&q);
    }

    #[test]
    fn jitter_is_applied_and_clamped() {
        struct Wild;
        impl Jitter for Wild {
            fn adjust(&mut self, _: SpoolId, attempts: u32, _: Duration) -> Duration {
                if attempts % 2 == 1 {
                    Duration::ZERO
                } else {
                    Duration::MAX
                }
            }
        }
        let mut q = Queue::with_policy(RetryPolicy::default(), Wild).expect("policy");
        q.insert(id(1), entry(T0));
        let d = q.due(t(0))[0];
        let Ok(Deferral::Retry(r)) = q.defer(d.id, d.attempt, t(0), "e") else {
            panic!()
        };
        assert_eq!(r.next_attempt_unix, T0 + 1, "never the same second");
        let d = q.due(t(1))[0];
        let Ok(Deferral::Retry(r)) = q.defer(d.id, d.attempt, t(1), "e") else {
            panic!()
        };
        assert_eq!(r.next_attempt_unix, T0 + 1 + 4000, "capped");
        assert!(Queue::with_policy(
            RetryPolicy {
                minimal_backoff: Duration::ZERO,
                ..RetryPolicy::default()
            },
            NoJitter
        )
        .is_err());
    }

    /// Property: after any sequence of operations every queued message has
    /// a deadline (exactly one timer, matching its state); and a delivery
    /// layer that only ever defers or forgets still sees every message
    /// leave by its lifetime plus one attempt timeout and one expiry.
    #[test]
    fn nothing_sits_forever() {
        let policy = RetryPolicy {
            minimal_backoff: Duration::from_secs(5),
            maximal_backoff: Duration::from_secs(40),
            maximal_queue_lifetime: Duration::from_secs(400),
            attempt_timeout: Duration::from_secs(30),
        };
        for seed in 0..40u64 {
            let mut rng = StdRng::seed_from_u64(seed);
            let mut q = Queue::with_policy(policy, NoJitter).expect("policy");
            let mut now = T0;
            let mut held: Vec<Dispatch> = Vec::new();
            let mut next_id = 0u64;
            for _ in 0..600 {
                match rng.gen_range(0..10) {
                    0 | 1 => {
                        next_id += 1;
                        q.insert(id(next_id), entry(now));
                    }
                    2 | 3 => held.extend(q.due(UnixTime(now))),
                    4 | 5 if !held.is_empty() => {
                        let d = held.swap_remove(rng.gen_range(0..held.len()));
                        match d.task {
                            Task::Deliver => match q.defer(d.id, d.attempt, UnixTime(now), "4xx") {
                                Ok(Deferral::Expired(x)) => held.push(x),
                                Ok(Deferral::Retry(_))
                                | Err(
                                    QueueError::StaleAttempt { .. } | QueueError::UnknownMessage(_),
                                ) => {}
                                Err(e) => panic!("{e}"),
                            },
                            Task::Expire => {
                                if q.is_current(d.id, d.attempt) {
                                    q.remove(d.id);
                                }
                            }
                        }
                    }
                    6 if !held.is_empty() => {
                        // delivery forgets a message
                        held.swap_remove(rng.gen_range(0..held.len()));
                    }
                    7 => {
                        q.flush(UnixTime(now));
                    }
                    8 if !held.is_empty() => {
                        let d = held[rng.gen_range(0..held.len())];
                        let _ = q.begin(d.id, d.attempt, UnixTime(now));
                        let _ = q.recipient_finished(d.id, rng.gen_range(0..3));
                    }
                    _ => now += rng.gen_range(0..60),
                }
                check(&q);
            }
            // Drain: nobody delivers any more; act only on expiries.
            let horizon = now + 400 + 40 + 30 + 30 + 1;
            while let Some(at) = q.next_wakeup() {
                assert!(at.0 <= horizon, "seed {seed}: {at} past {horizon}");
                now = now.max(at.0);
                for d in q.due(UnixTime(now)) {
                    if d.task == Task::Expire {
                        q.remove(d.id);
                    }
                }
                check(&q);
            }
            assert!(q.is_empty());
        }
    }

    /// The census kept as messages come, finish recipients and go equals
    /// a count made from scratch, and shapes are shared and forgotten.
    #[test]
    fn the_census_matches_a_recount_under_random_changes() {
        use std::collections::BTreeMap;
        for seed in 0..50u64 {
            let mut rng = StdRng::seed_from_u64(seed);
            let mut q = Queue::new();
            let domains = ["a.test", "B.test", "c.test"];
            let tenants = [None, Some("acme"), Some("zeta")];
            for step in 0..300u64 {
                match rng.gen_range(0..4) {
                    0 | 1 => {
                        let n = rng.gen_range(1..4);
                        let rcpts: Vec<String> = (0..n)
                            .map(|i| format!("u{i}@{}", domains[rng.gen_range(0..3)]))
                            .collect();
                        let tenant = tenants[rng.gen_range(0..3)];
                        let shape = Shape::new(tenant, rcpts.iter().map(String::as_str));
                        q.insert(
                            id(rng.gen_range(0..40)),
                            QueueEntry {
                                recipients: n,
                                shape: Rc::new(shape),
                                ..entry(T0 + step)
                            },
                        );
                    }
                    2 => {
                        let _ = q.recipient_finished(id(rng.gen_range(0..40)), rng.gen_range(0..4));
                    }
                    _ => {
                        q.remove(id(rng.gen_range(0..40)));
                    }
                }
                let mut by_domain: BTreeMap<String, u64> = BTreeMap::new();
                let mut by_tenant: BTreeMap<String, TenantCount> = BTreeMap::new();
                for (message, e) in q.iter() {
                    let pending = q.pending_recipients(message).unwrap();
                    for &i in &pending {
                        *by_domain
                            .entry(e.shape.domains[i as usize].to_string())
                            .or_default() += 1;
                    }
                    if let Some(t) = &e.shape.tenant {
                        let c = by_tenant.entry(t.to_string()).or_default();
                        c.messages += 1;
                        c.recipients += pending.len() as u64;
                    }
                }
                assert_eq!(q.census().domains(), by_domain, "seed {seed} step {step}");
                assert_eq!(q.census().tenants(), by_tenant, "seed {seed} step {step}");
                assert!(q.census().shapes() <= q.len(), "shapes are forgotten");
            }
            assert!(!q.census().domains().contains_key("B.test"), "lower case");
        }
    }
}
