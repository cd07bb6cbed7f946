//! Per-core counters and latency histograms, merged when read. Each core
//! owns its own `Metrics` (no atomics, no locks); nothing here does I/O.

use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Counters and histograms of one core.
#[derive(Debug, Clone)]
pub struct Metrics {
    pub connections: u64,
    pub connections_refused: u64,
    pub messages_received: u64,
    pub bytes_received: u64,
    pub store_failures: u64,
    /// Logins refused (SMTP AUTH, POP3).
    pub auth_failures: u64,
    /// Microseconds from the end of DATA (or BDAT LAST) to the reply
    /// being written: the cost of durable acknowledgement.
    pub ack_latency: Histogram<u64>,
    /// Microseconds from the 250 to the last recipient's delivery, for
    /// messages delivered in full since this start.
    pub delivery_latency: Histogram<u64>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            connections: 0,
            connections_refused: 0,
            messages_received: 0,
            bytes_received: 0,
            store_failures: 0,
            auth_failures: 0,
            // 1 us to 1 hour at 3 significant digits is a valid range.
            ack_latency: latency_histogram(),
            delivery_latency: latency_histogram(),
        }
    }
}

/// 1 us to 1 hour at 3 significant digits.
fn latency_histogram() -> Histogram<u64> {
    // The bounds are constant and valid (low >= 1, high >= 2 * low).
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds")
}

/// Percentiles of a latency histogram in microseconds.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct LatencySummary {
    pub count: u64,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
}

/// What `spate serve` prints when it stops.
#[derive(Debug, Clone, Serialize)]
pub struct Stats {
    pub connections: u64,
    pub connections_refused: u64,
    pub messages: u64,
    pub bytes: u64,
    pub store_failures: u64,
    pub auth_failures: u64,
    pub ack_latency_us: LatencySummary,
    pub delivery_latency_us: LatencySummary,
}

impl Metrics {
    pub fn record_ack_latency(&mut self, latency: Duration) {
        self.ack_latency.saturating_record(micros(latency));
    }

    pub fn record_delivery_latency(&mut self, latency: Duration) {
        self.delivery_latency.saturating_record(micros(latency));
    }

    /// Adds another core's figures to these.
    pub fn merge(&mut self, other: &Metrics) {
        self.connections += other.connections;
        self.connections_refused += other.connections_refused;
        self.messages_received += other.messages_received;
        self.bytes_received += other.bytes_received;
        self.store_failures += other.store_failures;
        self.auth_failures += other.auth_failures;
        // Both histograms have the same bounds, so adding cannot fail.
        let _ = self.ack_latency.add(&other.ack_latency);
        let _ = self.delivery_latency.add(&other.delivery_latency);
    }

    pub fn stats(&self) -> Stats {
        Stats {
            connections: self.connections,
            connections_refused: self.connections_refused,
            messages: self.messages_received,
            bytes: self.bytes_received,
            store_failures: self.store_failures,
            auth_failures: self.auth_failures,
            ack_latency_us: LatencySummary::of(&self.ack_latency),
            delivery_latency_us: LatencySummary::of(&self.delivery_latency),
        }
    }
}

impl LatencySummary {
    /// The percentiles of `h` (zeros when empty).
    pub fn of(h: &Histogram<u64>) -> Self {
        LatencySummary {
            count: h.len(),
            p50: h.value_at_quantile(0.5),
            p90: h.value_at_quantile(0.9),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
        }
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merged_percentiles_cover_both_cores() {
        let mut a = Metrics::default();
        let mut b = Metrics::default();
        for us in 1..=900 {
            a.record_ack_latency(Duration::from_micros(us));
        }
        for _ in 0..100 {
            b.record_ack_latency(Duration::from_millis(10));
        }
        a.messages_received = 900;
        b.messages_received = 100;
        a.merge(&b);
        let s = a.stats();
        assert_eq!(s.messages, 1000);
        assert_eq!(s.ack_latency_us.count, 1000);
        assert!((495..=505).contains(&s.ack_latency_us.p50), "{s:?}");
        assert!(s.ack_latency_us.p99 >= 9_990, "{s:?}");
    }
}
