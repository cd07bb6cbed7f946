//! LMTP's final delivery (RFC 2033): a message the SMTP core accepted in
//! LMTP mode goes straight into its recipients' mailboxes on the blocking
//! pool (each copy fsynced, as local delivery from the queue is), and each
//! recipient's outcome comes back in RCPT order for the core's replies.
//! There is no spool hop; only a copy for alias targets outside our
//! domains is queued, as local delivery from the queue does. It makes no
//! protocol decision.

use std::rc::Rc;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::blocking::Lane;
use crate::delivery::agent::local_trace_headers;
use crate::envelope::Envelope;
use crate::local::LocalOutcome;
use crate::queue::{QueueEntry, Shape};
use crate::shard::ShardContext;
use crate::smtp::{Message, RecipientDelivery};
use crate::spool::{SegmentStore, SpoolError, SpoolId, TRACE_ID_LEN};

/// The reply for every recipient when no mailbox tier is configured (the
/// listener refuses to start without one; kept for a tier that is gone).
const NO_MAILBOX_TIER: &str = "451 4.3.5 no mailbox tier is configured";
/// The reply for every recipient when the delivery job itself failed.
const JOB_FAILED: &str = "451 4.3.0 local delivery failed unexpectedly";

/// Delivers `message` to each of its recipients' mailboxes; one verdict
/// per envelope recipient, in order. Returns only once every delivered
/// copy is durable, so the replies built from it may leave at once.
pub async fn deliver<S: SegmentStore>(
    ctx: &ShardContext<S>,
    message: Message,
) -> Vec<RecipientDelivery> {
    let Message {
        envelope,
        mut body,
        trace_id_at,
    } = message;
    let count = envelope.recipients.len();
    let Some(tier) = ctx.local.clone() else {
        return refuse_all(count, NO_MAILBOX_TIER);
    };
    let id = trace_id(ctx.index);
    if let Some(slot) = trace_id_at.and_then(|at| body.get_mut(at..at + TRACE_ID_LEN)) {
        slot.copy_from_slice(id.as_bytes());
    }
    let body = Arc::new(body);
    let job_body = Arc::clone(&body);
    let sender = envelope.sender.clone();
    let addresses: Vec<String> = envelope
        .recipients
        .iter()
        .map(|r| r.address.clone())
        .collect();
    let outcomes = ctx
        .blocking
        .run(Lane::Urgent, move || {
            addresses
                .iter()
                .map(|address| {
                    let trace = local_trace_headers(&sender, address);
                    tier.deliver(address, &[trace.as_bytes(), &job_body])
                })
                .collect::<Vec<_>>()
        })
        .await;
    let Ok(outcomes) = outcomes else {
        return refuse_all(count, JOB_FAILED);
    };
    // Alias targets outside our domains: one queued copy for all of them.
    let mut forward_to: Vec<String> = Vec::new();
    for outcome in &outcomes {
        if let LocalOutcome::Delivered { forward } = outcome {
            for address in forward {
                if !forward_to.contains(address) {
                    forward_to.push(address.clone());
                }
            }
        }
    }
    let forwarded = if forward_to.is_empty() {
        None
    } else {
        Some(queue_forward(ctx, &envelope, body.as_ref().clone(), forward_to).await)
    };
    let verdicts: Vec<RecipientDelivery> = outcomes
        .into_iter()
        .map(|outcome| match outcome {
            LocalOutcome::Delivered { forward } if forward.is_empty() => {
                RecipientDelivery::Delivered { forwarded_as: None }
            }
            LocalOutcome::Delivered { .. } => match &forwarded {
                Some(Ok(new_id)) => RecipientDelivery::Delivered {
                    forwarded_as: Some(new_id.to_string()),
                },
                Some(Err(e)) => RecipientDelivery::Refused(format!(
                    "451 4.3.0 cannot queue the forwarded copy: {e}"
                )),
                None => RecipientDelivery::Refused(JOB_FAILED.to_owned()),
            },
            LocalOutcome::Deferred(reply) | LocalOutcome::Failed(reply) => {
                RecipientDelivery::Refused(reply)
            }
        })
        .collect();
    let delivered = verdicts
        .iter()
        .filter(|v| matches!(v, RecipientDelivery::Delivered { .. }))
        .count();
    {
        let mut metrics = ctx.metrics.borrow_mut();
        metrics.counters.messages_received += 1;
        metrics.counters.bytes_received += body.len() as u64;
    }
    tracing::info!(
        id = %id,
        from = %envelope.sender,
        recipients = count,
        delivered,
        size = body.len(),
        client = %envelope.client_ip,
        "delivered over lmtp"
    );
    verdicts
}

/// Queues one copy of the message for alias targets outside our domains,
/// with the original sender so bounces reach its author.
async fn queue_forward<S: SegmentStore>(
    ctx: &ShardContext<S>,
    original: &Envelope,
    body: Vec<u8>,
    to: Vec<String>,
) -> Result<SpoolId, SpoolError> {
    let envelope = original.forwarded_to(to);
    let size = body.len() as u64;
    let id = ctx.spool.store(&envelope, body).await?;
    ctx.queue.borrow_mut().insert(
        id,
        QueueEntry {
            size,
            recipients: envelope.recipients.len(),
            received_at: envelope.received_at,
            acknowledged_at: None,
            shape: Rc::new(Shape::of(&envelope)),
        },
    );
    ctx.delivery_wake.notify();
    Ok(id)
}

fn refuse_all(count: usize, reply: &str) -> Vec<RecipientDelivery> {
    vec![RecipientDelivery::Refused(reply.to_owned()); count]
}

/// The id our Received header names for a message that never had a queue
/// id: 16 hex digits, as a queue id, from the clock and the shard.
fn trace_id(shard: usize) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    // The low 60 bits of the time (they wrap after decades) and the shard.
    let mixed = (nanos as u64 & (u64::MAX >> 4)) | ((shard as u64 & 0xf) << 60);
    format!("{mixed:016x}")
}
