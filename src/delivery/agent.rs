//! Delivery agents, behind one interface: each takes a message (as read
//! once for the attempt) and a batch of its recipients, delivers, and
//! reports per recipient. [`SmtpAgent`] is one open outbound connection
//! (`outbound`); [`LocalAgent`] hands the recipients to the mailbox tier
//! on the blocking pool. What the reports mean for the queue is the
//! recorder's business.

use std::sync::Arc;

use crate::blocking::{BlockingPool, Lane};
use crate::delivery::dsn::DsnAction;
use crate::delivery::outbound::Outbound;
use crate::delivery::report::{transient, RecipientReport};
use crate::local::{LocalOutcome, LocalTier};
use crate::smtp::client::Outcome;
use crate::spool::StoredMessage;

/// How local deliveries show as the remote MTA in DSNs and logs.
pub const LOCAL_MTA: &str = "local";

/// What one delivery gave.
#[derive(Debug, Default)]
pub struct Delivery {
    /// One per recipient, except those in `forward`.
    pub reports: Vec<RecipientReport>,
    /// The agent can take another message (an SMTP connection still
    /// usable).
    pub reusable: bool,
    /// Recipients delivered locally whose aliases also point outside:
    /// they count as delivered once a copy for `forward.to` is queued.
    pub forward: Option<Forward>,
}

/// See [`Delivery::forward`].
#[derive(Debug, Default)]
pub struct Forward {
    pub recipients: Vec<u32>,
    pub to: Vec<String>,
}

/// See the module header.
// The agents run on one core's executor; nothing needs their futures to be
// `Send`.
#[allow(async_fn_in_trait)]
pub trait DeliveryAgent {
    /// Delivers `message` to `recipients` (indexes into its envelope).
    async fn deliver(&mut self, message: &StoredMessage, recipients: &[u32]) -> Delivery;

    /// The MTA reached, as logs and DSNs name it.
    fn remote(&self) -> &str;

    /// The DSN a successful delivery through this agent owes a recipient
    /// that asked for NOTIFY=SUCCESS: `delivered` into a mailbox,
    /// `relayed` to a next hop without DSN (RFC 3461 5.2.2 (b)); none
    /// when the next hop offers DSN, which then carries the request on.
    fn success_action(&self) -> Option<DsnAction>;
}

/// One open outbound SMTP connection.
pub struct SmtpAgent {
    pub connection: Outbound,
}

impl DeliveryAgent for SmtpAgent {
    async fn deliver(&mut self, message: &StoredMessage, recipients: &[u32]) -> Delivery {
        let indexes: Vec<usize> = recipients.iter().map(|&i| i as usize).collect();
        let tx = self
            .connection
            .send(message.envelope(), &indexes, message.body())
            .await;
        Delivery {
            reports: tx
                .results
                .iter()
                .map(|r| RecipientReport {
                    index: u32::try_from(r.index).unwrap_or(u32::MAX),
                    outcome: r.outcome,
                    reply: r.reply.to_string(),
                })
                .collect(),
            reusable: tx.reusable,
            forward: None,
        }
    }

    fn success_action(&self) -> Option<DsnAction> {
        (!self.connection.offers_dsn()).then_some(DsnAction::Relayed)
    }

    fn remote(&self) -> &str {
        &self.connection.remote
    }
}

/// The mailbox tier of this host.
pub struct LocalAgent {
    pub tier: Arc<LocalTier>,
    pub blocking: Arc<BlockingPool>,
}

impl DeliveryAgent for LocalAgent {
    /// Off the executor (the tier fsyncs), in the urgent lane: mailbox
    /// reads never hold up a delivery.
    async fn deliver(&mut self, message: &StoredMessage, recipients: &[u32]) -> Delivery {
        let envelope = message.envelope();
        let addresses: Vec<(u32, String)> = recipients
            .iter()
            .filter_map(|&i| {
                let r = envelope.recipients.get(i as usize)?;
                Some((i, r.address.clone()))
            })
            .collect();
        let sender = envelope.sender.clone();
        // The blocking thread needs its own copy; the fsyncs cost more.
        let body = message.body().to_vec();
        let tier = Arc::clone(&self.tier);
        let job = self.blocking.run(Lane::Urgent, move || {
            addresses
                .into_iter()
                .map(|(index, address)| {
                    let trace = local_trace_headers(&sender, &address);
                    (index, tier.deliver(&address, &[trace.as_bytes(), &body]))
                })
                .collect::<Vec<_>>()
        });
        let Ok(outcomes) = job.await else {
            return Delivery {
                reports: transient(recipients, "451 4.3.0 local delivery failed unexpectedly"),
                ..Delivery::default()
            };
        };
        let mut delivery = Delivery::default();
        let mut forward = Forward::default();
        for (index, outcome) in outcomes {
            let (outcome, reply) = match outcome {
                LocalOutcome::Delivered { forward: to } if to.is_empty() => (
                    Outcome::Delivered,
                    "250 2.0.0 delivered to mailbox".to_owned(),
                ),
                LocalOutcome::Delivered { forward: to } => {
                    forward.recipients.push(index);
                    for address in to {
                        if !forward.to.contains(&address) {
                            forward.to.push(address);
                        }
                    }
                    continue;
                }
                LocalOutcome::Deferred(reply) => (Outcome::TransientFailure, reply),
                LocalOutcome::Failed(reply) => (Outcome::PermanentFailure, reply),
            };
            delivery.reports.push(RecipientReport {
                index,
                outcome,
                reply,
            });
        }
        if !forward.recipients.is_empty() {
            delivery.forward = Some(forward);
        }
        delivery
    }

    fn remote(&self) -> &str {
        LOCAL_MTA
    }

    fn success_action(&self) -> Option<DsnAction> {
        Some(DsnAction::Delivered)
    }
}

/// RFC 5321 4.4 and RFC 9228: the final delivery's Return-Path and
/// Delivered-To, written above the message in the mailbox.
pub fn local_trace_headers(sender: &str, recipient: &str) -> String {
    format!("Return-Path: <{sender}>\r\nDelivered-To: {recipient}\r\n")
}
