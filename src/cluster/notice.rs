//! The suspension notices hosts exchange through Redis: a JSON payload
//! published on one channel, and kept under a key per site that expires
//! with the suspension, so a host that starts later finds what is in
//! force. Each notice names the host that made it, so no host applies its
//! own (no echo). Pure data: encoding and decoding only.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::delivery::suspensions::{Change, Suspension};
use crate::queue::DestinationKey;

/// One change, as published.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notice {
    /// The instance that made the change.
    pub origin: String,
    /// As `DestinationKey` writes it.
    pub site: String,
    /// Until when (ms since the epoch); absent for a resume.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    /// The site's mail is bounced meanwhile (a back-off rule's `bounce`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub bounce: bool,
}

/// What a notice asks of the hosts that receive it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Suspend {
        site: DestinationKey,
        suspension: Suspension,
    },
    Resume {
        site: DestinationKey,
    },
}

fn millis(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Notice {
    pub fn from_change(origin: &str, change: &Change) -> Notice {
        match change {
            Change::Suspended { site, suspension } => Notice {
                origin: origin.to_owned(),
                site: site.to_string(),
                until_ms: Some(millis(suspension.until)),
                reason: suspension.reason.clone(),
                bounce: suspension.bounce,
            },
            Change::Resumed { site } => Notice {
                origin: origin.to_owned(),
                site: site.to_string(),
                until_ms: None,
                reason: String::new(),
                bounce: false,
            },
        }
    }

    /// The site this notice is about, as a key and a channel name part.
    pub fn site(&self) -> &str {
        &self.site
    }

    pub fn encode(&self) -> String {
        // A struct of strings and numbers always serialises.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// `None` for a payload that is not a notice, for one of `own`'s, and
    /// for a site that does not parse.
    pub fn decode(payload: &[u8], own: &str) -> Option<Action> {
        let notice: Notice = serde_json::from_slice(payload).ok()?;
        if notice.origin == own {
            return None;
        }
        let site: DestinationKey = notice.site.parse().ok()?;
        Some(match notice.until_ms {
            Some(ms) => Action::Suspend {
                site,
                suspension: Suspension {
                    until: UNIX_EPOCH + Duration::from_millis(ms),
                    reason: format!("on {}: {}", host_part(&notice.origin), notice.reason),
                    bounce: notice.bounce,
                },
            },
            None => Action::Resume { site },
        })
    }
}

/// The name part of an instance id (`name#nonce`).
fn host_part(origin: &str) -> &str {
    origin.split_once('#').map_or(origin, |(name, _)| name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notices_round_trip_and_own_ones_are_dropped() {
        let site = DestinationKey::route("sink.test", 2526);
        let until = UNIX_EPOCH + Duration::from_millis(1_800_000_000_123);
        let change = Change::Suspended {
            site: site.clone(),
            suspension: Suspension {
                until,
                reason: "421 4.7.28 slow down".into(),
                bounce: true,
            },
        };
        let payload = Notice::from_change("relay-a#1f", &change).encode();
        assert_eq!(
            Notice::decode(payload.as_bytes(), "relay-a#1f"),
            None,
            "own"
        );
        assert_eq!(
            Notice::decode(payload.as_bytes(), "relay-b#2e"),
            Some(Action::Suspend {
                site: site.clone(),
                suspension: Suspension {
                    until,
                    reason: "on relay-a: 421 4.7.28 slow down".into(),
                    bounce: true,
                },
            })
        );
        let resume = Notice::from_change("relay-a#1f", &Change::Resumed { site: site.clone() });
        assert_eq!(
            Notice::decode(resume.encode().as_bytes(), "relay-b#2e"),
            Some(Action::Resume { site })
        );
        assert_eq!(Notice::decode(b"not json", "x"), None);
        assert_eq!(
            Notice::decode(br#"{"origin":"a","site":"nonsense"}"#, "x"),
            None
        );
    }
}
