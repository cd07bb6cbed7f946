//! What `spate sink` counted: connections, messages, recipients, bytes,
//! injected faults, per recipient domain. One `Counters` per core,
//! merged when printed. It counts; it decides nothing.

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
}
