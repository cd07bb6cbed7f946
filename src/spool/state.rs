//! Per-message delivery state as the spool keeps it: the typed values of
//! RecipientOutcome and Deferred records and how recovery folds many of
//! them into one `DeliveryState`. Plain data and a fold; it never decides
//! when to retry (the queue does) or what a failure means (delivery does).

use std::collections::BTreeMap;

/// Longest reply or error text kept in a state record; longer texts are
/// cut at a character boundary. SMTP replies are short; this bounds what a
/// hostile server can make us store per attempt.
pub const MAX_STATE_TEXT: usize = 2048;

/// How a recipient was finished. Every kind finishes the recipient: it is
/// never tried again after a restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OutcomeKind {
    /// Accepted by the next hop or the mailbox store (2xx).
    Delivered,
    /// Refused permanently (5xx, null MX...): a DSN is owed unless NOTIFY
    /// or the null sender say otherwise.
    Bounced,
    /// Still failing temporarily when the queue lifetime ran out: a DSN
    /// is owed the same way.
    Expired,
}

impl OutcomeKind {
    pub(crate) fn code(self) -> u8 {
        match self {
            OutcomeKind::Delivered => 1,
            OutcomeKind::Bounced => 2,
            OutcomeKind::Expired => 3,
        }
    }

    pub(crate) fn from_code(code: u8) -> Option<Self> {
        match code {
            1 => Some(OutcomeKind::Delivered),
            2 => Some(OutcomeKind::Bounced),
            3 => Some(OutcomeKind::Expired),
            _ => None,
        }
    }
}

/// The final result for one recipient, kept so that a restart neither
/// delivers it twice nor forgets the text a DSN must quote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecipientOutcome {
    pub kind: OutcomeKind,
    /// The remote reply (or local reason) as one line of text, e.g.
    /// `550 5.1.1 <bob@example.test>: user unknown`. A DSN's
    /// Diagnostic-Code and Status come from it.
    pub reply: String,
    /// The host that gave the reply, when one did (DSN Remote-MTA).
    pub remote_mta: Option<String>,
}

/// One temporary failure of a whole message: how many attempts failed so
/// far, when to try next (seconds since the Unix epoch, from the caller's
/// `now`) and why the last one failed. Append-only; the latest wins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deferred {
    pub attempts: u32,
    pub next_attempt_unix: u64,
    pub last_error: String,
}

/// Everything the spool knows of a live message's delivery so far.
/// Default: never tried, no recipient finished.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeliveryState {
    /// Finished recipients by their index in the envelope.
    pub outcomes: BTreeMap<u32, RecipientOutcome>,
    /// The latest deferral (most attempts; on a tie the later retry time),
    /// `None` if the message was never deferred.
    pub deferred: Option<Deferred>,
    /// The sender was sent its "delayed" DSN (once per message).
    pub delay_noticed: bool,
}

impl DeliveryState {
    /// Failed attempts so far.
    pub fn attempts(&self) -> u32 {
        self.deferred.as_ref().map_or(0, |d| d.attempts)
    }

    /// When the next attempt is due; `None`: at once (never deferred).
    pub fn next_attempt_unix(&self) -> Option<u64> {
        self.deferred.as_ref().map(|d| d.next_attempt_unix)
    }

    /// Why the last attempt failed, for `spate queue list`.
    pub fn last_error(&self) -> Option<&str> {
        self.deferred.as_ref().map(|d| d.last_error.as_str())
    }

    /// Whether recipient `index` needs no more attempts.
    pub fn is_finished(&self, index: u32) -> bool {
        self.outcomes.contains_key(&index)
    }

    /// Indexes of the recipients still to be tried, of `recipients`.
    pub fn pending(&self, recipients: usize) -> impl Iterator<Item = u32> + '_ {
        (0..u32::try_from(recipients).unwrap_or(u32::MAX)).filter(|i| !self.is_finished(*i))
    }

    /// Folds one outcome record in. Several outcomes for one recipient
    /// can exist (a crash between recording and acting, then a retry); the
    /// first one read wins, so the fold is deterministic in survey order.
    pub(crate) fn add_outcome(&mut self, index: u32, outcome: RecipientOutcome) {
        self.outcomes.entry(index).or_insert(outcome);
    }

    /// Folds one deferral in: the one with the most attempts wins (ties:
    /// the later retry). Attempts only grow, so this is "the latest"
    /// without depending on the order records are read in, which across
    /// adopted shard directories has no meaning.
    pub(crate) fn add_deferral(&mut self, d: Deferred) {
        let newer = match &self.deferred {
            None => true,
            Some(old) => (d.attempts, d.next_attempt_unix) > (old.attempts, old.next_attempt_unix),
        };
        if newer {
            self.deferred = Some(d);
        }
    }
}

/// Cuts `s` to at most [`MAX_STATE_TEXT`] bytes at a character boundary.
pub(crate) fn bounded(s: &str) -> &str {
    if s.len() <= MAX_STATE_TEXT {
        return s;
    }
    let mut end = MAX_STATE_TEXT;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(attempts: u32, next: u64) -> Deferred {
        Deferred {
            attempts,
            next_attempt_unix: next,
            last_error: format!("{attempts}/{next}"),
        }
    }

    #[test]
    fn latest_deferral_wins_in_any_order() {
        let mut a = DeliveryState::default();
        let mut b = DeliveryState::default();
        let all = [d(1, 10), d(3, 5), d(2, 100), d(3, 7)];
        for x in all.iter().cloned() {
            a.add_deferral(x);
        }
        for x in all.iter().rev().cloned() {
            b.add_deferral(x);
        }
        assert_eq!(a, b);
        assert_eq!(a.attempts(), 3);
        assert_eq!(a.next_attempt_unix(), Some(7));
        assert_eq!(a.last_error(), Some("3/7"));
    }

    #[test]
    fn pending_skips_finished_and_text_is_bounded() {
        let mut s = DeliveryState::default();
        let o = RecipientOutcome {
            kind: OutcomeKind::Delivered,
            reply: "250 ok".into(),
            remote_mta: None,
        };
        s.add_outcome(1, o.clone());
        s.add_outcome(
            1,
            RecipientOutcome {
                kind: OutcomeKind::Bounced,
                ..o.clone()
            },
        );
        assert_eq!(s.outcomes[&1], o, "first outcome wins");
        assert_eq!(s.pending(3).collect::<Vec<_>>(), vec![0, 2]);
        let long = "é".repeat(MAX_STATE_TEXT);
        let cut = bounded(&long);
        assert!(cut.len() <= MAX_STATE_TEXT && cut.len() >= MAX_STATE_TEXT - 1);
        assert_eq!(bounded("short"), "short");
    }
}
