//! One message-life event as webhooks receive it: its kind and fields,
//! and its JSON shape once the event log has given it a sequence number.
//! It only describes events; it neither stores nor sends them.

use serde::Serialize;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    /// A message was durably queued (answered 250).
    Received,
    /// A recipient was accepted by the next hop (or the mailbox).
    Delivered,
    /// A recipient failed for now; it is tried again later.
    Deferred,
    /// A recipient failed for good; a DSN goes to the sender.
    Bounced,
    /// A recipient was still pending when the queue lifetime ran out.
    Expired,
    /// A site (or a site through one egress source) was suspended.
    Suspended,
}

/// One event, as the cores make it. Fields that do not apply to a kind
/// are `None` and left out of the JSON.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Event {
    #[serde(rename = "type")]
    pub kind: Option<EventKind>,
    /// Unix time in seconds.
    pub time: u64,
    /// The queue id (hex), as log lines and `spate queue` show it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sender: Option<String>,
    /// The recipient of a per-recipient event.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recipient: Option<String>,
    /// Every recipient of a received message.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recipients: Option<Vec<String>>,
    /// The destination site, as `spate queue suspensions` shows it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub site: Option<String>,
    /// The egress source the mail left through.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// The MTA reached (`host[ip]:port`, `local`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub relay: Option<String>,
    /// Which delivery attempt of the message this is (from 1).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
    /// The bounce class of a failure (`shaping::BounceClass::label`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub class: Option<&'static str>,
    /// The reply code of `reply`, when it starts with one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<u16>,
    /// The whole reply (code, enhanced status, text).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reply: Option<String>,
    /// The size in bytes of a received message.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// The client address of a received message.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client: Option<String>,
    /// Until when (unix seconds) a site is suspended.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub until: Option<u64>,
}

impl Event {
    /// An event of `kind` at `time` (unix seconds); the rest is filled in
    /// with struct update syntax.
    pub fn new(kind: EventKind, time: u64) -> Event {
        Event {
            kind: Some(kind),
            time,
            ..Event::default()
        }
    }

    /// A message durably queued as `id`, with its envelope and size.
    pub fn received(id: String, envelope: &crate::envelope::Envelope, size: u64) -> Event {
        Event {
            id: Some(id),
            sender: Some(envelope.sender.clone()),
            recipients: Some(
                envelope
                    .recipients
                    .iter()
                    .map(|r| r.address.clone())
                    .collect(),
            ),
            size: Some(size),
            ..Event::new(EventKind::Received, envelope.received_at)
        }
    }

    /// Sets `reply` and its `code`.
    pub fn with_reply(mut self, reply: &str) -> Event {
        self.code = reply_code(reply);
        self.reply = Some(reply.to_owned());
        self
    }
}

/// `time` in seconds since the Unix epoch (0 before it).
pub fn unix_seconds(time: std::time::SystemTime) -> u64 {
    time.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The three-digit code a reply starts with.
fn reply_code(reply: &str) -> Option<u16> {
    let digits = reply.get(..3)?;
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// An event with the sequence number the log gave it: what is stored and
/// posted. `seq` grows by one per event across restarts; receivers
/// de-duplicate and order by it.
#[derive(Serialize)]
pub struct Numbered<'a> {
    pub seq: u64,
    #[serde(flatten)]
    pub event: &'a Event,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_leaves_out_what_does_not_apply() {
        let event = Event {
            id: Some("00ab".into()),
            recipient: Some("a@b.example".into()),
            attempt: Some(2),
            class: Some("mailbox-full"),
            ..Event::new(EventKind::Deferred, 1_700_000_000)
        }
        .with_reply("452 4.2.2 mailbox full");
        let json = serde_json::to_string(&Numbered {
            seq: 7,
            event: &event,
        })
        .expect("serialisable");
        assert_eq!(
            json,
            r#"{"seq":7,"type":"deferred","time":1700000000,"id":"00ab","recipient":"a@b.example","attempt":2,"class":"mailbox-full","code":452,"reply":"452 4.2.2 mailbox full"}"#
        );
    }

    #[test]
    fn a_reply_without_a_code_has_none() {
        assert_eq!(reply_code("250 ok"), Some(250));
        assert_eq!(reply_code("no code"), None);
        assert_eq!(reply_code("25"), None);
    }
}
