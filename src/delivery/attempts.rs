//! The attempts in flight on one core, as the recorder keeps them: for
//! each message handed out, the destination groups (SMTP sites, the local
//! tier) that have not reported yet, the last temporary failure, the
//! permanent failures waiting for their DSN, and whether a group was held
//! back by a limit of spate's own. Then, once every group reported, what
//! becomes of the message ([`next_step`]). Sans-IO: the engine does the
//! spool writes these decisions call for.

use std::collections::HashMap;

use crate::delivery::dsn::DsnAction;
use crate::queue::DestinationKey;
use crate::spool::{FinishReason, RecipientOutcome, SpoolId};

/// One attempt at a message, possibly split over several destinations.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Attempt {
    /// Destination groups not reported yet.
    outstanding: usize,
    /// The last temporary failure, for the deferral record.
    pub transient: Option<String>,
    /// Recipients that failed for good in this attempt, not recorded yet:
    /// their outcome is recorded only once the DSN they are owed is
    /// spooled, so a crash or a full disk in between retries them (a
    /// duplicate DSN at worst) instead of losing the DSN.
    pub bounced: Vec<(u32, RecipientOutcome)>,
    /// Recipients delivered in this attempt that asked for a success DSN
    /// (NOTIFY=SUCCESS, owed as `delivered` or `relayed`): recorded, like
    /// the bounced, once that DSN is spooled.
    pub succeeded: Vec<(u32, RecipientOutcome, DsnAction)>,
    /// A group was held back by a full ready queue of this destination:
    /// without a real failure, the attempt is not counted.
    pub held: Option<DestinationKey>,
}

/// See the module header.
#[derive(Debug, Default)]
pub struct Attempts {
    by_message: HashMap<SpoolId, Attempt>,
}

impl Attempts {
    /// A message was handed out and split into `groups` destination
    /// groups (replacing any attempt of it still recorded).
    pub fn begin(&mut self, id: SpoolId, groups: usize) {
        self.by_message.insert(
            id,
            Attempt {
                outstanding: groups,
                ..Attempt::default()
            },
        );
    }

    /// A recipient failed temporarily (the reply goes in the deferral).
    pub fn transient(&mut self, id: SpoolId, reply: String) {
        if let Some(a) = self.by_message.get_mut(&id) {
            a.transient = Some(reply);
        }
    }

    /// A recipient failed for good: recorded after the DSN is spooled.
    pub fn bounced(&mut self, id: SpoolId, index: u32, outcome: RecipientOutcome) {
        if let Some(a) = self.by_message.get_mut(&id) {
            a.bounced.push((index, outcome));
        }
    }

    /// A recipient was delivered and is owed a success DSN: recorded after
    /// the DSN is spooled.
    pub fn succeeded(
        &mut self,
        id: SpoolId,
        index: u32,
        outcome: RecipientOutcome,
        action: DsnAction,
    ) {
        if let Some(a) = self.by_message.get_mut(&id) {
            a.succeeded.push((index, outcome, action));
        }
    }

    /// A group waits for room at `dest` instead of being tried.
    pub fn held(&mut self, id: SpoolId, dest: DestinationKey) {
        if let Some(a) = self.by_message.get_mut(&id) {
            a.held = Some(dest);
        }
    }

    /// One group reported (or was held back); the attempt, taken out,
    /// when it was the last one.
    pub fn group_done(&mut self, id: SpoolId) -> Option<Attempt> {
        let a = self.by_message.get_mut(&id)?;
        a.outstanding = a.outstanding.saturating_sub(1);
        if a.outstanding > 0 {
            return None;
        }
        self.by_message.remove(&id)
    }

    /// Takes the attempt out whatever is outstanding (an attempt with no
    /// group at all; an expiry).
    pub fn take(&mut self, id: SpoolId) -> Attempt {
        self.by_message.remove(&id).unwrap_or_default()
    }

    /// Attempts in flight.
    pub fn len(&self) -> usize {
        self.by_message.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_message.is_empty()
    }
}

/// What becomes of a message once every group of its attempt reported
/// and the bounces' DSN was dealt with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NextStep {
    /// Nothing is pending: the message leaves the queue.
    Finish(FinishReason),
    /// Only held back by a limit of spate's own: waits, uncounted, for
    /// room at this destination.
    Hold(DestinationKey),
    /// A real temporary failure: the next attempt after the backoff.
    Defer(String),
}

/// The decision after an attempt: finish when no recipient is pending
/// (bounced when one of them bounced in it), else hold when the only thing
/// that kept recipients back was a full ready queue, else defer with the
/// last temporary failure.
pub fn next_step(attempt: &Attempt, nothing_pending: bool, bounced_any: bool) -> NextStep {
    if nothing_pending {
        return NextStep::Finish(if bounced_any {
            FinishReason::Bounced
        } else {
            FinishReason::Delivered
        });
    }
    match (&attempt.transient, &attempt.held) {
        (None, Some(dest)) => NextStep::Hold(dest.clone()),
        (Some(reply), _) => NextStep::Defer(reply.clone()),
        (None, None) => NextStep::Defer("451 4.4.0 not delivered".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spool::OutcomeKind;

    fn id(n: u64) -> SpoolId {
        SpoolId::from_u64(n)
    }

    fn bounce() -> RecipientOutcome {
        RecipientOutcome {
            kind: OutcomeKind::Bounced,
            reply: "550 5.1.1 no".to_owned(),
            remote_mta: None,
        }
    }

    #[test]
    fn an_attempt_completes_with_its_last_group() {
        let mut attempts = Attempts::default();
        attempts.begin(id(1), 3);
        attempts.begin(id(2), 1);
        attempts.transient(id(1), "421 busy".to_owned());
        attempts.bounced(id(1), 2, bounce());
        assert_eq!(attempts.group_done(id(1)), None);
        assert_eq!(attempts.group_done(id(1)), None);
        let done = attempts.group_done(id(1)).expect("the last group");
        assert_eq!(done.transient.as_deref(), Some("421 busy"));
        assert_eq!(done.bounced, vec![(2, bounce())]);
        assert_eq!(attempts.len(), 1, "the other message is still out");
        // Reports for a message no longer out change nothing.
        attempts.transient(id(1), "late".to_owned());
        assert_eq!(attempts.group_done(id(1)), None);
        assert!(attempts.group_done(id(2)).is_some());
        assert!(attempts.is_empty());
    }

    #[test]
    fn held_only_is_held_and_a_real_failure_wins() {
        let dest = DestinationKey::route("smarthost.test", 25);
        let mut held = Attempt {
            held: Some(dest.clone()),
            ..Attempt::default()
        };
        assert_eq!(next_step(&held, false, false), NextStep::Hold(dest));
        held.transient = Some("451 4.4.1 timeout".to_owned());
        assert_eq!(
            next_step(&held, false, false),
            NextStep::Defer("451 4.4.1 timeout".to_owned())
        );
        assert_eq!(
            next_step(&Attempt::default(), false, false),
            NextStep::Defer("451 4.4.0 not delivered".to_owned())
        );
        assert_eq!(
            next_step(&held, true, true),
            NextStep::Finish(FinishReason::Bounced)
        );
        assert_eq!(
            next_step(&Attempt::default(), true, false),
            NextStep::Finish(FinishReason::Delivered)
        );
    }
}
