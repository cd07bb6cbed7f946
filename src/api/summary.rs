//! The queue summary and the shaping state as the management API and
//! `spate queue summary` show them: plain data, built per shard from the
//! queue's census and the scheduler's destinations, summed across shards
//! by `control::merge` (every count is a number, so a sum is right).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::queue::TenantCount;

/// See the module header. Recipients are pending ones; a message with
/// recipients in two domains counts in both.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct QueueSummary {
    pub messages: u64,
    pub recipients: u64,
    pub bytes: u64,
    /// Waiting for their first attempt.
    pub new: u64,
    /// Waiting for a retry.
    pub deferred: u64,
    /// Being delivered, or placed at a site and waiting for a connection.
    pub active: u64,
    /// Held back by spate's own limits (a full site, a suspension).
    pub held: u64,
    /// Pending recipients per recipient domain.
    pub domains: BTreeMap<String, u64>,
    pub tenants: BTreeMap<String, TenantCount>,
    /// Per destination site (`mx:...`, `[host]:port`), all sources.
    pub sites: BTreeMap<String, PathCounts>,
    /// Per egress source, all sites.
    pub sources: BTreeMap<String, PathCounts>,
    /// Messages held for a suspended recipient domain.
    pub held_for_domains: BTreeMap<String, u64>,
}

/// Mail at one site or source.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PathCounts {
    /// Waiting in its ready queue for a connection.
    pub ready: u64,
    /// Handed to a connection, not done yet.
    pub in_flight: u64,
    pub connections: u64,
    /// Held back until it has room (or its suspension ends).
    pub held: u64,
}

impl PathCounts {
    pub fn add(&mut self, other: PathCounts) {
        self.ready += other.ready;
        self.in_flight += other.in_flight;
        self.connections += other.connections;
        self.held += other.held;
    }
}

impl QueueSummary {
    /// The summary as text tables, largest first.
    pub fn to_table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{} message(s), {} recipient(s), {} byte(s): {} new, {} deferred, {} active, {} held",
            self.messages,
            self.recipients,
            self.bytes,
            self.new,
            self.deferred,
            self.active,
            self.held
        );
        let mut domains: Vec<_> = self.domains.iter().collect();
        domains.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        if !domains.is_empty() {
            let _ = writeln!(out, "\n{:>10}  domain", "recipients");
            for (domain, n) in domains {
                let _ = writeln!(out, "{n:>10}  {domain}");
            }
        }
        if !self.tenants.is_empty() {
            let _ = writeln!(out, "\n{:>10} {:>10}  tenant", "messages", "recipients");
            for (tenant, n) in &self.tenants {
                let _ = writeln!(out, "{:>10} {:>10}  {tenant}", n.messages, n.recipients);
            }
        }
        for (title, map) in [("site", &self.sites), ("source", &self.sources)] {
            if map.is_empty() {
                continue;
            }
            let _ = writeln!(
                out,
                "\n{:>8} {:>9} {:>11} {:>8}  {title}",
                "ready", "in-flight", "connections", "held"
            );
            for (name, c) in map {
                let _ = writeln!(
                    out,
                    "{:>8} {:>9} {:>11} {:>8}  {name}",
                    c.ready, c.in_flight, c.connections, c.held
                );
            }
        }
        if !self.held_for_domains.is_empty() {
            let _ = writeln!(out, "\n{:>8}  held for a suspended domain", "held");
            for (domain, n) in &self.held_for_domains {
                let _ = writeln!(out, "{n:>8}  {domain}");
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_summaries_merge_by_summing() {
        let mut a = QueueSummary {
            messages: 2,
            recipients: 3,
            domains: BTreeMap::from([("a.test".into(), 2), ("b.test".into(), 1)]),
            sources: BTreeMap::from([(
                "ip1".into(),
                PathCounts {
                    ready: 1,
                    ..PathCounts::default()
                },
            )]),
            ..QueueSummary::default()
        };
        let b = QueueSummary {
            messages: 1,
            recipients: 1,
            domains: BTreeMap::from([("a.test".into(), 1)]),
            sources: BTreeMap::from([(
                "ip1".into(),
                PathCounts {
                    ready: 4,
                    held: 1,
                    ..PathCounts::default()
                },
            )]),
            ..QueueSummary::default()
        };
        let mut merged = serde_json::to_value(&a).unwrap();
        crate::control::merge(&mut merged, serde_json::to_value(&b).unwrap());
        let merged: QueueSummary = serde_json::from_value(merged).unwrap();
        a.messages = 3;
        a.recipients = 4;
        a.domains.insert("a.test".into(), 3);
        a.sources.insert(
            "ip1".into(),
            PathCounts {
                ready: 5,
                held: 1,
                ..PathCounts::default()
            },
        );
        assert_eq!(merged, a);
        let table = merged.to_table();
        assert!(table.starts_with("3 message(s), 4 recipient(s)"), "{table}");
        assert!(table.find("a.test").unwrap() < table.find("b.test").unwrap());
    }
}
