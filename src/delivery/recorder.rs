//! The recorder of one core: turns the agents' per-recipient reports
//! into durable spool records and queue changes. It keeps the attempts
//! in flight (`attempts`), logs and counts each recipient's result,
//! spools the DSNs owed (before the failures they report are recorded),
//! and at the end of an attempt finishes, defers or (through the
//! scheduler) holds the message; it also expires messages and queues the
//! messages spate makes itself (DSNs, forwarded copies).

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::SystemTime;

use crate::delivery::attempts::{next_step, Attempt, Attempts, NextStep};
use crate::delivery::dsn::{build_dsn, status_of, wants, DsnAction, ReportedRecipient};
use crate::delivery::report::RecipientReport;
use crate::envelope::Envelope;
use crate::events::{Event, EventKind};
use crate::metrics::{MessageResult, RecipientResult};
use crate::outbound_tls::TlsOutcome;
use crate::queue::{AttemptId, Deferral, DestinationKey, Dispatch, QueueEntry, Shape};
use crate::shaping::BounceClass;
use crate::shard::ShardContext;
use crate::smtp::client::Outcome;
use crate::spool::{
    FinishReason, OutcomeKind, RecipientOutcome, SegmentStore, SpoolError, SpoolId, StoredMessage,
};

use super::engine::unix_now;

/// The next hop in log lines when no host was reached (resolution or
/// connection failed, expiry).
const NO_RELAY: &str = "none";
/// Where a group's results came from: for the log lines, the metrics and
/// the success DSNs they may owe.
#[derive(Debug, Clone, Copy, Default)]
pub struct Via<'a> {
    /// The MTA reached (`host[ip]:port`, or `local`); `None` when the
    /// results came without reaching one.
    pub relay: Option<&'a str>,
    /// The egress source the mail left through.
    pub source: Option<&'a str>,
    /// The destination site, when the results are of one.
    pub site: Option<&'a DestinationKey>,
    /// What a delivery owes a recipient that asked NOTIFY=SUCCESS (see
    /// `DeliveryAgent::success_action`).
    pub success: Option<DsnAction>,
    /// What protected the connection (outbound SMTP only).
    pub tls: Option<TlsOutcome>,
    /// What an MTA-STS `testing` policy would have refused about the
    /// connection (RFC 8461 5: reported, not enforced).
    pub tls_testing_failure: Option<&'a str>,
}

/// The reply reported for a message returned by hand (`spate queue
/// bounce`, the API's bounce).
const BOUNCED_BY_HAND: &str = "550 5.0.0 message returned by the postmaster";

/// The `source` of a log line for mail sent without a named egress source.
const NO_SOURCE: &str = "none";

/// An attempt that ended held back by a limit of spate's own: the
/// scheduler keeps the message's id for `dest` until it has room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hold {
    pub id: SpoolId,
    pub attempt: AttemptId,
    pub dest: DestinationKey,
}

/// See the module header.
pub struct Recorder<S: SegmentStore> {
    ctx: Rc<ShardContext<S>>,
    attempts: RefCell<Attempts>,
    /// Each attempt's message, as read once when it began.
    messages: RefCell<HashMap<SpoolId, Rc<StoredMessage>>>,
}

impl<S: SegmentStore + 'static> Recorder<S> {
    pub fn new(ctx: Rc<ShardContext<S>>) -> Self {
        Recorder {
            ctx,
            attempts: RefCell::new(Attempts::default()),
            messages: RefCell::new(HashMap::new()),
        }
    }

    /// An attempt at message `id` begins, split into `groups` destination
    /// groups that each report once. With no group, nothing was left to
    /// deliver (every recipient finished before a restart): it completes
    /// at once.
    pub async fn begin(
        &self,
        id: SpoolId,
        attempt: AttemptId,
        groups: usize,
        message: Option<Rc<StoredMessage>>,
    ) -> Option<Hold> {
        self.attempts.borrow_mut().begin(id, groups);
        match message {
            Some(m) => self.messages.borrow_mut().insert(id, m),
            None => self.messages.borrow_mut().remove(&id),
        };
        if groups > 0 {
            return None;
        }
        let done = self.attempts.borrow_mut().take(id);
        self.complete(id, attempt, done).await
    }

    /// Records each recipient's result of one destination group; when the
    /// attempt's last group reports, completes the attempt.
    pub async fn report(
        &self,
        id: SpoolId,
        attempt: AttemptId,
        results: Vec<RecipientReport>,
        via: Via<'_>,
    ) -> Option<Hold> {
        self.log_outcomes(id, &results, &via);
        // Who asked for a success DSN, if this delivery owes any.
        let wants_success: Vec<(u32, DsnAction)> = match via.success {
            None => Vec::new(),
            Some(action) => self.message(id).map_or_else(Vec::new, |m| {
                results
                    .iter()
                    .filter(|r| r.outcome == Outcome::Delivered)
                    .filter(|r| {
                        m.envelope()
                            .recipients
                            .get(r.index as usize)
                            .is_some_and(|rcpt| wants(rcpt.notify, action))
                    })
                    .map(|r| (r.index, action))
                    .collect()
            }),
        };
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
                remote_mta: via.relay.map(str::to_owned),
            };
            if kind == OutcomeKind::Bounced {
                // Recorded in complete(), after the DSN is spooled.
                self.attempts.borrow_mut().bounced(id, r.index, outcome);
                continue;
            }
            if let Some(&(_, action)) = wants_success.iter().find(|(i, _)| *i == r.index) {
                // Likewise once its success DSN is spooled.
                self.attempts
                    .borrow_mut()
                    .succeeded(id, r.index, outcome, action);
                continue;
            }
            if let Err(reply) = self.record_outcome(id, r.index, &outcome).await {
                self.attempts.borrow_mut().transient(id, reply);
            }
        }
        self.group_done(id, attempt).await
    }

    /// One group was held back by a full ready queue at `dest` (or, with
    /// `budget_spent`, by its egress pool's budgets): not an attempt;
    /// counted, and the group is over.
    pub async fn held(
        &self,
        id: SpoolId,
        attempt: AttemptId,
        dest: DestinationKey,
        budget_spent: bool,
    ) -> Option<Hold> {
        if budget_spent {
            tracing::debug!(%id, %dest, "held: the egress pool's budget is spent");
        } else {
            tracing::debug!(%id, %dest, "held: the destination has no room now (its ready queue is full, or it is suspended)");
        }
        self.ctx.metrics.borrow_mut().counters.held_by_limits += 1;
        self.attempts.borrow_mut().held(id, dest);
        self.group_done(id, attempt).await
    }

    /// One destination group of the attempt reported (or was held back);
    /// after the last one, the attempt completes.
    async fn group_done(&self, id: SpoolId, attempt: AttemptId) -> Option<Hold> {
        let done = self.attempts.borrow_mut().group_done(id)?;
        self.complete(id, attempt, done).await
    }

    /// The message an attempt began with, else read now.
    fn message(&self, id: SpoolId) -> Option<Rc<StoredMessage>> {
        if let Some(m) = self.messages.borrow().get(&id) {
            return Some(Rc::clone(m));
        }
        self.ctx.spool.read_message(id).ok().map(Rc::new)
    }

    /// One log line and one count per recipient result: the message's
    /// life as operators follow it (`delivered`, `deferred`, `bounced`),
    /// with the egress source the mail left through (`none` without one).
    fn log_outcomes(&self, id: SpoolId, results: &[RecipientReport], via: &Via<'_>) {
        let attempts = self.ctx.queue.borrow().attempts(id).unwrap_or(0) + 1;
        let message = self.message(id);
        let envelope = message.as_deref().map(StoredMessage::envelope);
        let from = envelope.map_or("", |e| e.sender.as_str());
        let relay = via.relay.unwrap_or(NO_RELAY);
        let source = via.source.unwrap_or(NO_SOURCE);
        // Outbound SMTP only: local deliveries and failures before any
        // connection have no TLS to speak of.
        let tls = via.tls.map(TlsOutcome::label);
        let tls_testing_failure = via.tls_testing_failure;
        let site = via.site.map(|dest| dest.site().to_string());
        let shaping = self.ctx.shaping();
        let mut metrics = self.ctx.metrics.borrow_mut();
        for r in results {
            let to = envelope
                .and_then(|e| e.recipients.get(r.index as usize))
                .map_or("", |x| x.address.as_str());
            let reply = r.reply.as_str();
            let (kind, class) = match r.outcome {
                Outcome::Delivered => {
                    metrics.count_recipient_via(RecipientResult::Delivered, via.source);
                    if let Some(outcome) = via.tls {
                        metrics.count_tls(outcome);
                    }
                    tracing::info!(%id, from, to, relay, source, tls, tls_testing_failure, reply, attempts, "delivered");
                    (EventKind::Delivered, None)
                }
                Outcome::TransientFailure => {
                    let class = shaping.classify(reply);
                    metrics.count_recipient_via(RecipientResult::Deferred, via.source);
                    metrics.count_failure(class, RecipientResult::Deferred);
                    tracing::info!(%id, from, to, relay, source, tls, tls_testing_failure, reply, %class, attempts, "deferred");
                    (EventKind::Deferred, Some(class))
                }
                Outcome::PermanentFailure => {
                    let class = shaping.classify(reply);
                    metrics.count_recipient_via(RecipientResult::Bounced, via.source);
                    metrics.count_failure(class, RecipientResult::Bounced);
                    tracing::info!(%id, from, to, relay, source, tls, tls_testing_failure, reply, %class, attempts, "bounced");
                    (EventKind::Bounced, Some(class))
                }
            };
            self.ctx.emit(|| {
                Event {
                    id: Some(id.to_string()),
                    sender: Some(from.to_owned()),
                    recipient: Some(to.to_owned()),
                    site: site.clone(),
                    source: via.source.map(str::to_owned),
                    relay: Some(relay.to_owned()),
                    attempt: Some(attempts),
                    class: class.map(BounceClass::label),
                    ..Event::new(kind, unix_now().0)
                }
                .with_reply(reply)
            });
        }
    }

    /// The attempt is over: DSN for what bounced (then its outcomes are
    /// recorded), then finish, hold or defer the message (see
    /// `attempts::next_step`).
    async fn complete(&self, id: SpoolId, attempt: AttemptId, mut done: Attempt) -> Option<Hold> {
        let message = self.messages.borrow_mut().remove(&id);
        let mut bounced_any = false;
        if !done.bounced.is_empty() || !done.succeeded.is_empty() {
            // One DSN for the attempt: the failures and the successes owed.
            let mut reported: Vec<ReportedRecipient> = done
                .bounced
                .iter()
                .filter_map(|(index, outcome)| ReportedRecipient::from_outcome(*index, outcome))
                .collect();
            reported.extend(done.succeeded.iter().map(|(index, outcome, action)| {
                ReportedRecipient::success(*index, outcome, *action)
            }));
            let sent = self.send_dsn(id, message.as_deref(), &reported).await;
            if let Err(e) = &sent {
                done.transient = Some(format!("451 4.3.0 cannot spool a DSN: {e}"));
                if !done.succeeded.is_empty() {
                    // Delivered is delivered: trying again would deliver
                    // twice. The success notice is what is lost.
                    tracing::error!(%id, error = %e, "success DSN lost: cannot spool it");
                }
            }
            if sent.is_ok() {
                for (index, outcome) in &done.bounced {
                    match self.record_outcome(id, *index, outcome).await {
                        Ok(()) => bounced_any = true,
                        Err(reply) => done.transient = Some(reply),
                    }
                }
            }
            for (index, outcome, _) in &done.succeeded {
                if let Err(reply) = self.record_outcome(id, *index, outcome).await {
                    done.transient = Some(reply);
                }
            }
        }
        drop(message);
        let mut step = next_step(&done, self.pending(id).is_empty(), bounced_any);
        if let NextStep::Finish(reason) = step {
            if self.finish(id, reason).await {
                return None;
            }
            // Retried after a backoff; with nothing pending, that attempt
            // only finishes it.
            step = NextStep::Defer("451 4.3.0 cannot mark the message finished".into());
        }
        let error = match step {
            NextStep::Hold(dest) => return Some(Hold { id, attempt, dest }),
            NextStep::Defer(error) => error,
            NextStep::Finish(_) => return None, // replaced just above
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
                self.warn_of_delay(id, &error).await;
            }
            Ok(Deferral::Expired(dispatch)) => Box::pin(self.expire(dispatch)).await,
            Err(e) => tracing::debug!(%id, error = %e, "stale delivery report"),
        }
        None
    }

    /// Past `[delivery] delay_warning_time` in the queue, a message still
    /// being retried gets its sender one "delayed" DSN (Postfix's
    /// `delay_warning_time`) for the pending recipients whose NOTIFY asks
    /// for DELAY (no NOTIFY does, NEVER and FAILURE alone do not: RFC 3461
    /// 4.1). Once per message: the notice is recorded in the spool, so a
    /// restart does not send another; a DSN that cannot be spooled is
    /// tried again at the next deferral.
    async fn warn_of_delay(&self, id: SpoolId, error: &str) {
        let after = self.ctx.config.delivery.delay_warning_time;
        if after.is_zero() || self.ctx.queue.borrow().delay_noticed(id) {
            return;
        }
        let Some(message) = self.message(id) else {
            return;
        };
        let in_queue = unix_now().0.saturating_sub(message.envelope().received_at);
        if in_queue < after.as_secs() {
            return;
        }
        let status = status_of(error)
            .filter(|s| s.starts_with('4'))
            .unwrap_or_else(|| "4.0.0".to_owned());
        let lifetime = self.ctx.config.delivery.maximal_queue_lifetime.as_secs();
        let retry_until = message.envelope().received_at.saturating_add(lifetime);
        let delayed: Vec<ReportedRecipient> = self
            .pending(id)
            .into_iter()
            .map(|index| ReportedRecipient {
                index,
                status: status.clone(),
                diagnostic: error.to_owned(),
                remote_mta: None,
                action: DsnAction::Delayed,
                class: None,
                retry_until: Some(retry_until),
            })
            .collect();
        if let Err(e) = self.send_dsn(id, Some(&message), &delayed).await {
            tracing::warn!(%id, error = %e, "delay notice postponed: cannot spool its DSN");
            return;
        }
        drop(message);
        if let Err(e) = self.ctx.spool.record_delay_notice(id).await {
            tracing::warn!(%id, error = %e, "cannot record the delay notice: a restart may send another");
        }
        self.ctx.queue.borrow_mut().note_delay_notice(id);
    }

    /// The lifetime is over: every pending recipient expires, with a DSN.
    /// The DSN is spooled before the expiries are recorded and the message
    /// finished: if it cannot be, nothing changes and the queue hands the
    /// expiry out again after its deadline.
    pub async fn expire(&self, dispatch: Dispatch) {
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
        let failed: Vec<ReportedRecipient> = pending
            .iter()
            .filter_map(|&index| ReportedRecipient::from_outcome(index, &outcome))
            .collect();
        let message = self.message(id);
        if let Err(e) = self.send_dsn(id, message.as_deref(), &failed).await {
            tracing::warn!(%id, error = %e, "expiry postponed: cannot spool its DSN");
            return;
        }
        let attempts = self.ctx.queue.borrow().attempts(id).unwrap_or(0);
        let envelope = message.as_deref().map(StoredMessage::envelope);
        let from = envelope.map_or("", |e| e.sender.as_str());
        for &index in &pending {
            let to = envelope
                .and_then(|e| e.recipients.get(index as usize))
                .map_or("", |x| x.address.as_str());
            let class = self.ctx.shaping().classify(&reply);
            tracing::info!(%id, from, to, relay = NO_RELAY, reply = %reply, %class, attempts, "expired");
            self.ctx.emit(|| {
                Event {
                    id: Some(id.to_string()),
                    sender: Some(from.to_owned()),
                    recipient: Some(to.to_owned()),
                    attempt: Some(attempts),
                    class: Some(class.label()),
                    ..Event::new(EventKind::Expired, unix_now().0)
                }
                .with_reply(&reply)
            });
            let mut metrics = self.ctx.metrics.borrow_mut();
            metrics.count_recipient(RecipientResult::Expired);
            metrics.count_failure(class, RecipientResult::Expired);
        }
        drop(message);
        for index in pending {
            if self.record_outcome(id, index, &outcome).await.is_err() {
                return; // tried again after the expiry's deadline
            }
        }
        self.finish(id, FinishReason::Expired).await;
    }

    /// Returns a waiting message to its sender by hand: a DSN for every
    /// pending recipient, then the message is finished.
    pub async fn bounce_by_hand(&self, id: SpoolId) -> Result<(), String> {
        let failed: Vec<ReportedRecipient> = self
            .pending(id)
            .into_iter()
            .map(|index| ReportedRecipient {
                index,
                status: "5.0.0".into(),
                diagnostic: BOUNCED_BY_HAND.into(),
                remote_mta: None,
                action: crate::delivery::dsn::DsnAction::Failed,
                class: None,
                retry_until: None,
            })
            .collect();
        let message = self.message(id);
        if let Err(e) = self.send_dsn(id, message.as_deref(), &failed).await {
            return Err(format!("{id} kept: cannot spool its DSN: {e}"));
        }
        if !self.finish(id, FinishReason::Bounced).await {
            return Err(format!("{id} kept: the spool cannot finish it"));
        }
        // The webhooks hear of it as of any bounce, one per recipient.
        let envelope = message.as_deref().map(StoredMessage::envelope);
        let class = self.ctx.shaping().classify(BOUNCED_BY_HAND);
        for f in &failed {
            self.ctx.emit(|| {
                Event {
                    id: Some(id.to_string()),
                    sender: envelope.map(|e| e.sender.clone()),
                    recipient: envelope
                        .and_then(|e| e.recipients.get(f.index as usize))
                        .map(|r| r.address.clone()),
                    class: Some(class.label()),
                    ..Event::new(EventKind::Bounced, unix_now().0)
                }
                .with_reply(BOUNCED_BY_HAND)
            });
        }
        Ok(())
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
    /// caller must not record the failures it reports. `message` is
    /// `None` when it cannot be read: damaged beyond reading, no DSN can
    /// quote it, and waiting will not repair it.
    async fn send_dsn(
        &self,
        id: SpoolId,
        message: Option<&StoredMessage>,
        failed: &[ReportedRecipient],
    ) -> Result<(), SpoolError> {
        if failed.is_empty() {
            return Ok(());
        }
        let Some(message) = message else {
            tracing::error!(%id, "cannot read a message to bounce it");
            return Ok(());
        };
        // Each failure with its bounce class.
        let shaping = self.ctx.shaping();
        let reported: Vec<ReportedRecipient> = failed
            .iter()
            .map(|r| ReportedRecipient {
                class: (!matches!(r.action, DsnAction::Delivered | DsnAction::Relayed))
                    .then(|| shaping.classify(&r.diagnostic).label()),
                ..r.clone()
            })
            .collect();
        let dsn = build_dsn(
            message.envelope(),
            message.body(),
            &reported,
            &self.ctx.config.hostname,
            message.envelope().received_at,
            SystemTime::now(),
            self.ctx.config.delivery.bounce_size_limit,
        );
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

    /// Queues a copy of a message (`original`, `body`) for `to` (alias
    /// targets outside our domains), with the original sender so bounces
    /// reach its author.
    pub async fn forward(
        &self,
        original: &Envelope,
        body: Vec<u8>,
        to: Vec<String>,
    ) -> Result<SpoolId, SpoolError> {
        let envelope = Envelope {
            received_at: unix_now().0,
            ..original.forwarded_to(to)
        };
        self.queue_new(envelope, body).await
    }

    /// Stores a message we create (DSN, forward) and queues it.
    async fn queue_new(&self, envelope: Envelope, body: Vec<u8>) -> Result<SpoolId, SpoolError> {
        let size = body.len() as u64;
        let new_id = self.ctx.spool.store(&envelope, body).await?;
        self.ctx
            .emit(|| Event::received(new_id.to_string(), &envelope, size));
        self.ctx.queue.borrow_mut().insert(
            new_id,
            QueueEntry {
                size,
                recipients: envelope.recipients.len(),
                received_at: envelope.received_at,
                acknowledged_at: None,
                shape: Rc::new(Shape::of(&envelope)),
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

    /// Marks a message finished and forgets it. If the spool cannot, the
    /// message stays queued (its attempt's deadline hands it out again,
    /// and that attempt, with nothing pending, finishes it): never listed
    /// after it is finished, never forgotten before.
    pub async fn finish(&self, id: SpoolId, reason: FinishReason) -> bool {
        if let Err(e) = self.ctx.spool.finish(id, reason).await {
            tracing::error!(%id, error = %e, "cannot mark a message finished; it stays queued");
            return false;
        }
        let entry = self.ctx.queue.borrow_mut().remove(id);
        // An attempt the queue gave up on never reported: forget it too.
        self.messages.borrow_mut().remove(&id);
        self.attempts.borrow_mut().take(id);
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
}
