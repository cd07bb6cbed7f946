//! What a delivery attempt says about each recipient: the one type the
//! scheduler, the agents and the recorder pass between them.

use crate::smtp::client::Outcome;

/// One recipient's result, from an agent (SMTP or the mailbox tier) or
/// from routing and resolution.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecipientReport {
    /// The recipient's index in the envelope.
    pub index: u32,
    pub outcome: Outcome,
    pub reply: String,
}

/// The same result for every recipient of a group.
pub fn same_result(recipients: &[u32], outcome: Outcome, reply: &str) -> Vec<RecipientReport> {
    recipients
        .iter()
        .map(|&index| RecipientReport {
            index,
            outcome,
            reply: reply.to_owned(),
        })
        .collect()
}

/// A temporary failure for every recipient of a group.
pub fn transient(recipients: &[u32], reply: &str) -> Vec<RecipientReport> {
    same_result(recipients, Outcome::TransientFailure, reply)
}
