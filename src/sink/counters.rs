//! What `spate sink` counted: connections, messages, recipients, bytes,
//! injected faults, per recipient domain, per client (source) address
//! with the EHLO names it gave. One `Counters` per core, merged when
//! printed. It counts; it decides nothing.

use std::collections::BTreeMap;

use serde::Serialize;

/// The counters of one core, or of all merged.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Counters {
    pub connections: u64,
    /// Refused before the greeting: over `--max-per-ip`.
    pub refused_connections: u64,
    /// Messages accepted (250 after the content).
    pub messages: u64,
    /// Recipients of accepted messages.
    pub recipients: u64,
    /// Content bytes of accepted messages (as received, still dot-stuffed).
    pub bytes: u64,
    /// Injected failure replies, by `stage:code`.
    pub faults: BTreeMap<String, u64>,
    /// Accepted recipients by domain (with `--count-domains`).
    pub domains: BTreeMap<String, u64>,
    /// STARTTLS handshakes completed.
    pub tls: u64,
    /// Commands refused as unknown or bad syntax.
    pub protocol_errors: u64,
    /// Messages refused because `--stop-after` was reached.
    pub over_limit: u64,
    /// By client (source) address: what each sender's address did, so a
    /// test can see each egress source's share.
    pub sources: BTreeMap<String, SourceCounts>,
}

/// Distinct client addresses counted by name; more are counted together
/// under [`OTHER`], so clients cannot grow the map without bound.
pub const MAX_COUNTED_SOURCES: usize = 10_000;
/// Distinct EHLO names counted per client address; more go under [`OTHER`].
pub const MAX_HELO_NAMES: usize = 16;
/// The key of what is over a bound.
pub const OTHER: &str = "(other)";

/// What one client address did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SourceCounts {
    pub connections: u64,
    /// Messages accepted, and their recipients.
    pub messages: u64,
    pub recipients: u64,
    /// The names given in EHLO or HELO, each with how often.
    pub helo: BTreeMap<String, u64>,
}

impl SourceCounts {
    fn merge(&mut self, other: &SourceCounts) {
        self.connections += other.connections;
        self.messages += other.messages;
        self.recipients += other.recipients;
        for (k, v) in &other.helo {
            *self.helo.entry(k.clone()).or_default() += v;
        }
    }

    /// Counts one EHLO or HELO name.
    pub fn record_helo(&mut self, name: &str) {
        if let Some(n) = self.helo.get_mut(name) {
            *n += 1;
        } else if self.helo.len() < MAX_HELO_NAMES {
            self.helo.insert(name.to_owned(), 1);
        } else {
            *self.helo.entry(OTHER.to_owned()).or_default() += 1;
        }
    }
}

impl Counters {
    pub fn merge(&mut self, other: &Counters) {
        self.connections += other.connections;
        self.refused_connections += other.refused_connections;
        self.messages += other.messages;
        self.recipients += other.recipients;
        self.bytes += other.bytes;
        for (k, v) in &other.faults {
            *self.faults.entry(k.clone()).or_default() += v;
        }
        for (k, v) in &other.domains {
            *self.domains.entry(k.clone()).or_default() += v;
        }
        self.tls += other.tls;
        self.protocol_errors += other.protocol_errors;
        self.over_limit += other.over_limit;
        for (k, v) in &other.sources {
            self.sources.entry(k.clone()).or_default().merge(v);
        }
    }

    /// The counts of client address `source` (its text form), made on
    /// first use; past [`MAX_COUNTED_SOURCES`] addresses, the shared
    /// [`OTHER`] entry.
    pub fn source(&mut self, source: &str) -> &mut SourceCounts {
        let known = self.sources.contains_key(source);
        let key = if known || self.sources.len() < MAX_COUNTED_SOURCES {
            source
        } else {
            OTHER
        };
        if self.sources.contains_key(key) {
            // The common case takes no allocation.
            return self.sources.get_mut(key).expect("present: checked above");
        }
        self.sources.entry(key.to_owned()).or_default()
    }

    pub fn record_fault(&mut self, stage: super::fault::Stage, code: u16) {
        *self
            .faults
            .entry(format!("{}:{code}", stage.name()))
            .or_default() += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_adds_everything() {
        let mut a = Counters {
            messages: 2,
            ..Counters::default()
        };
        a.record_fault(super::super::fault::Stage::Rcpt, 450);
        a.domains.insert("a.test".into(), 1);
        let mut b = a.clone();
        b.domains.insert("b.test".into(), 4);
        a.merge(&b);
        assert_eq!(a.messages, 4);
        assert_eq!(a.faults["rcpt:450"], 2);
        assert_eq!(a.domains["a.test"], 2);
        assert_eq!(a.domains["b.test"], 4);
        let json = serde_json::to_string(&a).unwrap();
        assert!(json.contains("\"rcpt:450\":2"), "{json}");
    }

    #[test]
    fn sources_are_counted_within_bounds() {
        let mut a = Counters::default();
        a.source("127.0.0.31").connections += 1;
        a.source("127.0.0.31").record_helo("mta1.test");
        let mut b = a.clone();
        b.source("127.0.0.32").messages += 3;
        a.merge(&b);
        assert_eq!(a.sources["127.0.0.31"].connections, 2);
        assert_eq!(a.sources["127.0.0.31"].helo["mta1.test"], 2);
        assert_eq!(a.sources["127.0.0.32"].messages, 3);
        for i in 0..MAX_HELO_NAMES + 3 {
            a.source("127.0.0.31").record_helo(&format!("n{i}"));
        }
        assert_eq!(a.sources["127.0.0.31"].helo.len(), MAX_HELO_NAMES + 1);
        for i in 0..MAX_COUNTED_SOURCES {
            a.source(&format!("10.0.{}.{}", i / 256, i % 256));
        }
        a.source("192.0.2.1").connections += 1;
        assert_eq!(a.sources.len(), MAX_COUNTED_SOURCES + 1);
        assert_eq!(a.sources[OTHER].connections, 1);
        let json = serde_json::to_string(&a).unwrap();
        assert!(json.contains("\"sources\":{"), "{json}");
    }
}
