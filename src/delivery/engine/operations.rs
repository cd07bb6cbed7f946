//! The delivery engine's answers to operators: the control socket's and
//! the management API's requests (`control::Request`) as one shard
//! carries them out. Flush, retry, delete and bounce act on this shard's
//! queue; suspend and resume change the tables every shard shares; the
//! summary and the shaping state report this shard's part, which the
//! dispatcher sums.

use std::rc::Rc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::api::summary::{PathCounts, QueueSummary};
use crate::control::{Reply, Request, Selection};
use crate::queue::MessageState;
use crate::spool::{FinishReason, SegmentStore, SpoolId};

use super::{unix_now, Engine};

/// Messages acted on between two yields to the core's other tasks: a bulk
/// delete of a million messages must not stall this core's sessions.
const BULK_SLICE: usize = 64;

impl<S: SegmentStore + 'static> Engine<S> {
    /// Answers a control request for this shard.
    pub async fn control(self: &Rc<Self>, request: Request) -> Reply {
        let index = self.ctx.index;
        let bounce = matches!(request, Request::Bounce(_));
        match request {
            Request::Flush => {
                let n = self.ctx.queue.borrow_mut().flush(unix_now());
                self.ctx.delivery_wake.notify();
                Reply::Done(format!("shard {index}: {n} message(s) due now"))
            }
            Request::Retry(selection) => self.retry(&selection),
            Request::Delete(selection) | Request::Bounce(selection)
                if selection.only_id().is_none() =>
            {
                self.remove_selected(&selection, bounce).await
            }
            Request::Delete(selection) | Request::Bounce(selection) => {
                let Some(id) = selection.only_id() else {
                    return Reply::Failed("no message selected".into());
                };
                match self.ctx.queue.borrow().state(id) {
                    None => return Reply::Failed(format!("no queued message {id}")),
                    Some(MessageState::Active { .. }) => {
                        return Reply::Failed(format!(
                            "{id} is being delivered; try again in a moment"
                        ))
                    }
                    Some(MessageState::Waiting { .. }) => {}
                }
                if bounce {
                    match self.recorder.bounce_by_hand(id).await {
                        Ok(()) => Reply::Done(format!("bounced {id}")),
                        Err(e) => Reply::Failed(e),
                    }
                } else if self.recorder.finish(id, FinishReason::Deleted).await {
                    Reply::Done(format!("deleted {id}"))
                } else {
                    Reply::Failed(format!("{id} kept: the spool cannot finish it"))
                }
            }
            Request::Suspend(site, seconds) => {
                let until = SystemTime::now() + Duration::from_secs(seconds);
                let reason = "suspended by hand";
                if self.suspensions.suspend(site.clone(), until, reason.into()) {
                    self.emit_suspended(&site, reason, until);
                }
                self.sync_tables();
                self.ctx.delivery_wake.notify();
                Reply::Done(format!("shard {index}: {site} suspended for {seconds} s"))
            }
            Request::Resume(site) => {
                let resumed = self.suspensions.resume(&site);
                let lifted = self.throttles.lift(&site);
                self.sync_tables();
                let released = self.scheduler.borrow_mut().release_site(
                    &mut self.ctx.queue.borrow_mut(),
                    &site,
                    unix_now(),
                );
                self.ctx.delivery_wake.notify();
                if resumed || lifted {
                    tracing::info!(%site, "site resumed by hand");
                }
                let state = match (resumed, lifted) {
                    (true, true) => "resumed and its throttle lifted",
                    (true, false) => "resumed",
                    (false, true) => "throttle lifted",
                    (false, false) => "was not suspended",
                };
                Reply::Done(format!(
                    "shard {index}: {site} {state}; {released} held message(s) due now"
                ))
            }
            Request::Suspensions => {
                let wall = SystemTime::now();
                let suspended = self.suspensions.active(wall).into_iter().map(|(site, s)| {
                    let left = s.until.duration_since(wall).unwrap_or_default().as_secs();
                    let what = if s.bounce { "bouncing" } else { "suspended" };
                    format!("{site} {what} for {left} s: {}", s.reason)
                });
                let throttled = self.throttles.active().into_iter().map(|(site, t)| {
                    format!(
                        "{site} throttled to {:.3} of its limits ({} of {} deliveries to the next step up): {}",
                        t.factor, t.successes, t.step.recover_after, t.reason
                    )
                });
                let lines: Vec<String> = suspended.chain(throttled).collect();
                if lines.is_empty() {
                    Reply::Done("no site is suspended or throttled".into())
                } else {
                    Reply::Done(lines.join("; "))
                }
            }
            Request::Summary => match serde_json::to_value(self.summary()) {
                Ok(value) => Reply::Data(value),
                Err(e) => Reply::Failed(format!("cannot write the summary: {e}")),
            },
            Request::Shaping => Reply::Data(self.shaping()),
            // The crash drill is the shard's (`shard::serve_control`), not
            // delivery's.
            Request::Panic(_) => Reply::Failed("panic is not a delivery request".into()),
        }
    }

    /// The waiting messages `selection` takes, in spool order (the sender
    /// is read from the spool only when the selection names one).
    fn selected(&self, selection: &Selection) -> Vec<SpoolId> {
        let mut ids = self
            .ctx
            .queue
            .borrow()
            .waiting_where(|shape, pending| selection.takes_shape(shape, pending));
        if let Some(id) = selection.id {
            ids.retain(|&i| i == id);
        }
        if selection.sender.is_some() {
            ids.retain(|&id| {
                self.ctx
                    .spool
                    .read_message(id)
                    .is_ok_and(|m| selection.takes_sender(&m.envelope().sender))
            });
        }
        ids
    }

    /// Makes the selected waiting messages due now.
    fn retry(&self, selection: &Selection) -> Reply {
        let ids = self.selected(selection);
        let moved = self.ctx.queue.borrow_mut().flush_only(&ids, unix_now());
        self.ctx.delivery_wake.notify();
        Reply::Data(serde_json::json!({ "matched": ids.len(), "retried": moved }))
    }

    /// Deletes (without notice) or bounces (a DSN to each sender) the
    /// selected waiting messages; messages being delivered are left alone.
    async fn remove_selected(&self, selection: &Selection, bounce: bool) -> Reply {
        let ids = self.selected(selection);
        let (mut done, mut failed) = (0u64, 0u64);
        for (n, &id) in ids.iter().enumerate() {
            if n % BULK_SLICE == BULK_SLICE - 1 {
                futures_lite::future::yield_now().await;
            }
            // Taken by a delivery meanwhile: left to it.
            if !matches!(
                self.ctx.queue.borrow().state(id),
                Some(MessageState::Waiting { .. })
            ) {
                continue;
            }
            let ok = if bounce {
                self.recorder.bounce_by_hand(id).await.is_ok()
            } else {
                self.recorder.finish(id, FinishReason::Deleted).await
            };
            if ok {
                done += 1;
            } else {
                failed += 1;
            }
        }
        if done > 0 {
            tracing::info!(
                selection = %selection,
                count = done,
                "{} by hand",
                if bounce { "bounced" } else { "deleted" }
            );
        }
        let verb = if bounce { "bounced" } else { "deleted" };
        Reply::Data(serde_json::json!({ "matched": ids.len(), verb: done, "failed": failed }))
    }

    /// This shard's part of the queue summary.
    fn summary(&self) -> QueueSummary {
        let queue = self.ctx.queue.borrow();
        let states = queue.count_by_state();
        let census = queue.census();
        let domains = census.domains();
        let mut summary = QueueSummary {
            messages: queue.len() as u64,
            recipients: domains.values().sum(),
            bytes: queue.bytes(),
            new: states.new,
            deferred: states.deferred,
            active: states.active,
            domains,
            tenants: census.tenants(),
            ..QueueSummary::default()
        };
        drop(queue);
        let scheduler = self.scheduler.borrow();
        let add = |summary: &mut QueueSummary, dest: &crate::queue::DestinationKey, counts| {
            summary
                .sites
                .entry(dest.site().to_string())
                .or_default()
                .add(counts);
            if let Some(source) = dest.source() {
                summary
                    .sources
                    .entry(source.to_owned())
                    .or_default()
                    .add(counts);
            }
        };
        for (dest, state) in scheduler.site_states() {
            let counts = PathCounts {
                ready: state.queued as u64,
                in_flight: state.in_flight as u64,
                connections: state.connections as u64,
                held: 0,
            };
            add(&mut summary, dest, counts);
        }
        for (dest, n) in scheduler.held_counts() {
            let n = n as u64;
            summary.held += n;
            if let Some(domain) = dest.as_domain() {
                *summary
                    .held_for_domains
                    .entry(domain.to_owned())
                    .or_default() += n;
            } else if dest.is_site() {
                let counts = PathCounts {
                    held: n,
                    ..PathCounts::default()
                };
                add(&mut summary, dest, counts);
            }
        }
        summary
    }

    /// This shard's part of the shaping state: the active sites' limits
    /// (per-core shares, which the dispatcher sums) and, from shard 0
    /// only, the shared tables of suspensions and throttles.
    fn shaping(&self) -> serde_json::Value {
        let scheduler = self.scheduler.borrow();
        let sites: serde_json::Map<String, serde_json::Value> = scheduler
            .site_states()
            .map(|(dest, state)| {
                let limits = state.limits;
                (
                    dest.to_string(),
                    serde_json::json!({
                        "rule": limits.rule,
                        "connections": state.connections,
                        "connection_limit": limits.connections,
                        "deliveries_per_connection": limits.deliveries_per_connection,
                        "message_rate": limits.message_rate.map(|r| r.to_string()),
                        "connection_rate": limits.connection_rate.map(|r| r.to_string()),
                        "ready": state.queued,
                        "in_flight": state.in_flight,
                    }),
                )
            })
            .collect();
        if self.ctx.index != 0 {
            return serde_json::json!({ "sites": sites });
        }
        let wall = SystemTime::now();
        let unix = |t: SystemTime| t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        let suspensions: Vec<serde_json::Value> = self
            .suspensions
            .active(wall)
            .into_iter()
            .map(|(target, s)| {
                serde_json::json!({
                    "target": target.to_string(),
                    "until": unix(s.until),
                    "seconds_left": s.until.duration_since(wall).unwrap_or(Duration::ZERO).as_secs(),
                    "reason": s.reason,
                    "bounce": s.bounce,
                })
            })
            .collect();
        let throttles: Vec<serde_json::Value> = self
            .throttles
            .active()
            .into_iter()
            .map(|(site, t)| {
                serde_json::json!({
                    "site": site.to_string(),
                    "factor": t.factor,
                    "successes": t.successes,
                    "recover_after": t.step.recover_after,
                    "reason": t.reason,
                })
            })
            .collect();
        serde_json::json!({ "suspensions": suspensions, "throttles": throttles, "sites": sites })
    }
}
