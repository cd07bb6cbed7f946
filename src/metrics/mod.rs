//! Per-core counters and latency histograms, merged when read. Each core
//! owns its own `Metrics` (no atomics, no locks); a scrape asks every core
//! for a [`Snapshot`] (small, fixed-size, `Send`) and adds them up. Nothing
//! here does I/O: the Prometheus text is [`exposition`], the HTTP bits are
//! [`http`], the listening thread is [`endpoint`].

pub mod endpoint;
pub mod exposition;
pub mod http;

use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// The connection kinds counted apart. Implicit-TLS listeners count with
/// their protocol (submissions as submission, pop3s as pop3, imaps as imap).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionKind {
    Smtp = 0,
    Submission = 1,
    Pop3 = 2,
    Imap = 3,
}

impl ConnectionKind {
    pub const ALL: [ConnectionKind; 4] = [
        ConnectionKind::Smtp,
        ConnectionKind::Submission,
        ConnectionKind::Pop3,
        ConnectionKind::Imap,
    ];

    pub fn label(self) -> &'static str {
        match self {
            ConnectionKind::Smtp => "smtp",
            ConnectionKind::Submission => "submission",
            ConnectionKind::Pop3 => "pop3",
            ConnectionKind::Imap => "imap",
        }
    }
}

/// What became of one recipient in one delivery attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecipientResult {
    Delivered = 0,
    Deferred = 1,
    Bounced = 2,
    Expired = 3,
}

impl RecipientResult {
    pub const ALL: [RecipientResult; 4] = [
        RecipientResult::Delivered,
        RecipientResult::Deferred,
        RecipientResult::Bounced,
        RecipientResult::Expired,
    ];

    pub fn label(self) -> &'static str {
        match self {
            RecipientResult::Delivered => "delivered",
            RecipientResult::Deferred => "deferred",
            RecipientResult::Bounced => "bounced",
            RecipientResult::Expired => "expired",
        }
    }
}

/// How a message left the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageResult {
    Delivered = 0,
    Bounced = 1,
    Expired = 2,
    Deleted = 3,
}

impl MessageResult {
    pub const ALL: [MessageResult; 4] = [
        MessageResult::Delivered,
        MessageResult::Bounced,
        MessageResult::Expired,
        MessageResult::Deleted,
    ];

    pub fn label(self) -> &'static str {
        match self {
            MessageResult::Delivered => "delivered",
            MessageResult::Bounced => "bounced",
            MessageResult::Expired => "expired",
            MessageResult::Deleted => "deleted",
        }
    }
}

/// Plain counters of one core (and, summed, of the process). Every field
/// only grows, except `open_connections`, a gauge kept by the session
/// drivers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// SMTP connections (relay, submission, submissions) accepted.
    pub connections: u64,
    /// Connections refused by the connection limits.
    pub connections_refused: u64,
    /// Connections accepted, by [`ConnectionKind`].
    pub connections_by_kind: [u64; 4],
    /// Connections open now, by [`ConnectionKind`].
    pub open_connections: [u64; 4],
    /// SMTP transactions begun (MAIL FROM accepted).
    pub transactions: u64,
    pub messages_received: u64,
    pub bytes_received: u64,
    /// SMTP replies sent, by class: 2xx, 3xx, 4xx, 5xx.
    pub replies: [u64; 4],
    pub store_failures: u64,
    /// Logins refused (SMTP AUTH, POP3, IMAP).
    pub auth_failures: u64,
    /// Logins accepted, by [`ConnectionKind`].
    pub logins: [u64; 4],
    pub tls_handshakes: u64,
    pub tls_handshake_failures: u64,
    /// Recipient outcomes, by [`RecipientResult`].
    pub recipients: [u64; 4],
    /// Messages that left the queue, by [`MessageResult`].
    pub messages_finished: [u64; 4],
    /// Bytes of the messages that left the queue delivered.
    pub bytes_delivered: u64,
    /// Delivery groups held back because their destination's ready queue
    /// was full (not attempts: nothing was tried).
    pub held_by_limits: u64,
    /// Sites suspended by a back-off rule on a receiver's reply.
    pub suspensions: u64,
    /// Steps down of a site's limits by a back-off rule's `throttle`.
    pub throttles: u64,
    /// Sites whose mail a back-off rule's `bounce` returned.
    pub site_bounces: u64,
    /// Recipient failures by bounce class (`shaping::BounceClass`) and
    /// outcome: deferred, bounced, expired.
    pub failures_by_class: [[u64; 3]; 9],
    /// Messages given a DKIM signature at receipt.
    pub dkim_signed: u64,
    /// Messages of a signing domain that could not be signed (accepted
    /// unsigned).
    pub dkim_failures: u64,
    /// Recipients delivered over outbound SMTP, by what protected the
    /// connection (`outbound_tls::TlsOutcome`: none, opportunistic,
    /// mta-sts, dane).
    pub tls_outcomes: [u64; 4],
    /// Next hops not used because they failed a TLS policy, by policy:
    /// MTA-STS `enforce`, DANE.
    pub tls_policy_failures: [u64; 2],
    /// Connections an MTA-STS `testing` policy would have refused.
    pub mta_sts_testing_failures: u64,
}

impl Counters {
    /// Adds another core's counters to these.
    pub fn merge(&mut self, o: &Counters) {
        fn add<const N: usize>(a: &mut [u64; N], b: &[u64; N]) {
            for (x, y) in a.iter_mut().zip(b) {
                *x += y;
            }
        }
        self.connections += o.connections;
        self.connections_refused += o.connections_refused;
        add(&mut self.connections_by_kind, &o.connections_by_kind);
        add(&mut self.open_connections, &o.open_connections);
        self.transactions += o.transactions;
        self.messages_received += o.messages_received;
        self.bytes_received += o.bytes_received;
        add(&mut self.replies, &o.replies);
        self.store_failures += o.store_failures;
        self.auth_failures += o.auth_failures;
        add(&mut self.logins, &o.logins);
        self.tls_handshakes += o.tls_handshakes;
        self.tls_handshake_failures += o.tls_handshake_failures;
        add(&mut self.recipients, &o.recipients);
        add(&mut self.messages_finished, &o.messages_finished);
        self.bytes_delivered += o.bytes_delivered;
        self.held_by_limits += o.held_by_limits;
        self.suspensions += o.suspensions;
        self.throttles += o.throttles;
        self.site_bounces += o.site_bounces;
        for (mine, theirs) in self.failures_by_class.iter_mut().zip(&o.failures_by_class) {
            add(mine, theirs);
        }
        self.dkim_signed += o.dkim_signed;
        self.dkim_failures += o.dkim_failures;
        add(&mut self.tls_outcomes, &o.tls_outcomes);
        add(&mut self.tls_policy_failures, &o.tls_policy_failures);
        self.mta_sts_testing_failures += o.mta_sts_testing_failures;
    }
}

/// A latency histogram in microseconds with the exact sum of what it
/// recorded (Prometheus wants `_sum`; the histogram alone rounds).
#[derive(Debug, Clone)]
pub struct Latency {
    histogram: Histogram<u64>,
    sum_us: u64,
}

/// Longest latency a histogram tells apart: a week (queue residence can
/// be days); longer values count as a week.
const MAX_LATENCY_US: u64 = 7 * 86_400 * 1_000_000;

impl Default for Latency {
    fn default() -> Self {
        Latency {
            // The bounds are constant and valid (low >= 1, high >= 2 * low,
            // 3 significant digits): `new_with_bounds` cannot fail here.
            histogram: Histogram::new_with_bounds(1, MAX_LATENCY_US, 3)
                .expect("valid histogram bounds"),
            sum_us: 0,
        }
    }
}

impl Latency {
    pub fn record(&mut self, latency: Duration) {
        let us = micros(latency);
        self.histogram.saturating_record(us);
        self.sum_us = self.sum_us.saturating_add(us);
    }

    pub fn count(&self) -> u64 {
        self.histogram.len()
    }

    pub fn merge(&mut self, other: &Latency) {
        // Both histograms have the same bounds, so adding cannot fail.
        let _ = self.histogram.add(&other.histogram);
        self.sum_us = self.sum_us.saturating_add(other.sum_us);
    }

    /// The counts per fixed bucket, for the exposition.
    pub fn buckets(&self) -> Buckets {
        let mut b = Buckets {
            sum_us: self.sum_us,
            ..Buckets::default()
        };
        for v in self.histogram.iter_recorded() {
            let value = v.value_iterated_to();
            let n = v.count_at_value();
            let slot = BUCKET_BOUNDS_US
                .iter()
                .position(|&bound| value <= bound)
                .unwrap_or(BUCKET_BOUNDS_US.len());
            b.counts[slot] += n;
            b.count += n;
        }
        b
    }

    fn summary(&self) -> LatencySummary {
        LatencySummary::of(&self.histogram)
    }
}

/// Upper bounds (`le`) of the exposed histogram buckets, in microseconds:
/// 100 us to 5 days, roughly 1-2.5-5 per decade.
pub const BUCKET_BOUNDS_US: [u64; 24] = [
    100,
    250,
    500,
    1_000,
    2_500,
    5_000,
    10_000,
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    30_000_000,
    60_000_000,
    300_000_000,
    900_000_000,
    3_600_000_000,
    21_600_000_000,
    86_400_000_000,
    432_000_000_000,
];

/// A histogram reduced to fixed buckets: what a core sends when scraped.
/// `counts[i]` holds the values in bucket `i` alone (not cumulative); the
/// last slot holds what is above every bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Buckets {
    pub counts: [u64; BUCKET_BOUNDS_US.len() + 1],
    pub count: u64,
    pub sum_us: u64,
}

impl Default for Buckets {
    fn default() -> Self {
        Buckets {
            counts: [0; BUCKET_BOUNDS_US.len() + 1],
            count: 0,
            sum_us: 0,
        }
    }
}

impl Buckets {
    pub fn merge(&mut self, o: &Buckets) {
        for (a, b) in self.counts.iter_mut().zip(&o.counts) {
            *a += b;
        }
        self.count += o.count;
        self.sum_us = self.sum_us.saturating_add(o.sum_us);
    }
}

/// Counters and histograms of one core.
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    pub counters: Counters,
    /// From the end of DATA (or BDAT LAST) to the reply being written: the
    /// cost of durable acknowledgement.
    pub ack_latency: Latency,
    /// From the 250 to the last recipient's delivery, for messages
    /// delivered in full since this start (queue residence).
    pub delivery_latency: Latency,
    /// One delivery attempt of one message to one destination: an SMTP
    /// transaction on an open connection, or a local delivery.
    pub attempt_latency: Latency,
    /// Recipient outcomes by egress source (only mail sent through a
    /// named source; as many keys as `[[egress.source]]` entries).
    pub recipients_by_source: BySource,
}

/// Recipient outcomes, by [`RecipientResult`], per egress source name.
pub type BySource = std::collections::BTreeMap<String, [u64; 4]>;

fn merge_by_source(into: &mut BySource, from: &BySource) {
    for (source, counts) in from {
        let sum = into.entry(source.clone()).or_default();
        for (x, y) in sum.iter_mut().zip(counts) {
            *x += y;
        }
    }
}

/// Queued messages by state, as a scrape sees them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueDepth {
    /// Waiting for their first attempt.
    pub queued: u64,
    /// Waiting for a retry.
    pub deferred: u64,
    /// Being delivered (or expired) now.
    pub active: u64,
    /// Bytes of every queued message.
    pub bytes: u64,
}

impl QueueDepth {
    fn merge(&mut self, o: &QueueDepth) {
        self.queued += o.queued;
        self.deferred += o.deferred;
        self.active += o.active;
        self.bytes += o.bytes;
    }
}

/// One core's figures at one moment (and, merged, the process's), plus
/// what the scraping thread adds: DNS and spool disk usage.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub counters: Counters,
    pub queue: QueueDepth,
    pub ack_latency: Buckets,
    pub queue_residence: Buckets,
    pub attempt_latency: Buckets,
    pub fsync_latency: Buckets,
    /// DNS queries sent and domains answered from the cache (filled in by
    /// the scraper from the resolver thread's shared figures).
    pub dns_queries: u64,
    pub dns_cache_hits: u64,
    /// Bytes of the spool's segment files (filled in by the scraper).
    pub spool_bytes: u64,
    /// The limits shared with other hosts, with `[cluster]` (filled in by
    /// the scraper).
    pub cluster: Option<crate::cluster::ClusterFigures>,
    /// Events posted to webhooks, with `[[events.webhook]]` (filled in
    /// by the scraper).
    pub events: Option<crate::events::EventFigures>,
    pub recipients_by_source: BySource,
}

impl Snapshot {
    /// Adds another core's snapshot to this one.
    pub fn merge(&mut self, o: &Snapshot) {
        self.counters.merge(&o.counters);
        self.queue.merge(&o.queue);
        self.ack_latency.merge(&o.ack_latency);
        self.queue_residence.merge(&o.queue_residence);
        self.attempt_latency.merge(&o.attempt_latency);
        self.fsync_latency.merge(&o.fsync_latency);
        self.dns_queries += o.dns_queries;
        self.dns_cache_hits += o.dns_cache_hits;
        self.spool_bytes += o.spool_bytes;
        self.cluster = self.cluster.or(o.cluster);
        if self.events.is_none() {
            self.events.clone_from(&o.events);
        }
        merge_by_source(&mut self.recipients_by_source, &o.recipients_by_source);
    }
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
        self.ack_latency.record(latency);
    }

    pub fn record_delivery_latency(&mut self, latency: Duration) {
        self.delivery_latency.record(latency);
    }

    /// A connection of `kind` opened; pair with [`Metrics::connection_closed`].
    pub fn connection_opened(&mut self, kind: ConnectionKind) {
        self.counters.connections_by_kind[kind as usize] += 1;
        self.counters.open_connections[kind as usize] += 1;
    }

    pub fn connection_closed(&mut self, kind: ConnectionKind) {
        let open = &mut self.counters.open_connections[kind as usize];
        *open = open.saturating_sub(1);
    }

    pub fn count_tls_handshake(&mut self, ok: bool) {
        if ok {
            self.counters.tls_handshakes += 1;
        } else {
            self.counters.tls_handshake_failures += 1;
        }
    }

    pub fn count_recipient(&mut self, result: RecipientResult) {
        self.counters.recipients[result as usize] += 1;
    }

    /// Counts a failed recipient under its bounce class.
    pub fn count_failure(&mut self, class: crate::shaping::BounceClass, result: RecipientResult) {
        let column = match result {
            RecipientResult::Delivered => return,
            RecipientResult::Deferred => 0,
            RecipientResult::Bounced => 1,
            RecipientResult::Expired => 2,
        };
        self.counters.failures_by_class[class as usize][column] += 1;
    }

    /// Counts a recipient's result, also under the egress source it went
    /// through (if any).
    pub fn count_recipient_via(&mut self, result: RecipientResult, source: Option<&str>) {
        self.count_recipient(result);
        if let Some(source) = source {
            if let Some(counts) = self.recipients_by_source.get_mut(source) {
                counts[result as usize] += 1;
            } else {
                let mut counts = [0; 4];
                counts[result as usize] = 1;
                self.recipients_by_source.insert(source.to_owned(), counts);
            }
        }
    }

    /// A recipient delivered under `outcome`.
    pub fn count_tls(&mut self, outcome: crate::outbound_tls::TlsOutcome) {
        self.counters.tls_outcomes[outcome as usize] += 1;
    }

    /// Adds another core's figures to these.
    pub fn merge(&mut self, other: &Metrics) {
        self.counters.merge(&other.counters);
        self.ack_latency.merge(&other.ack_latency);
        self.delivery_latency.merge(&other.delivery_latency);
        self.attempt_latency.merge(&other.attempt_latency);
        merge_by_source(&mut self.recipients_by_source, &other.recipients_by_source);
    }

    /// This core's part of a scrape; the caller adds what the core's
    /// queue and spool know.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            counters: self.counters,
            ack_latency: self.ack_latency.buckets(),
            queue_residence: self.delivery_latency.buckets(),
            attempt_latency: self.attempt_latency.buckets(),
            recipients_by_source: self.recipients_by_source.clone(),
            ..Snapshot::default()
        }
    }

    pub fn stats(&self) -> Stats {
        let c = &self.counters;
        Stats {
            connections: c.connections,
            connections_refused: c.connections_refused,
            messages: c.messages_received,
            bytes: c.bytes_received,
            store_failures: c.store_failures,
            auth_failures: c.auth_failures,
            ack_latency_us: self.ack_latency.summary(),
            delivery_latency_us: self.delivery_latency.summary(),
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
        a.counters.messages_received = 900;
        b.counters.messages_received = 100;
        a.merge(&b);
        let s = a.stats();
        assert_eq!(s.messages, 1000);
        assert_eq!(s.ack_latency_us.count, 1000);
        assert!((495..=505).contains(&s.ack_latency_us.p50), "{s:?}");
        assert!(s.ack_latency_us.p99 >= 9_990, "{s:?}");
    }

    #[test]
    fn buckets_place_each_value_under_its_first_bound() {
        let mut l = Latency::default();
        l.record(Duration::from_micros(100)); // le 0.0001
        l.record(Duration::from_micros(101)); // le 0.00025
        l.record(Duration::from_millis(3)); // le 0.005
        l.record(Duration::from_secs(30 * 86_400)); // beyond every bound
        let b = l.buckets();
        assert_eq!(b.count, 4);
        assert_eq!(b.counts[0], 1);
        assert_eq!(b.counts[1], 1);
        assert_eq!(b.counts[5], 1);
        assert_eq!(b.counts[BUCKET_BOUNDS_US.len()], 1);
        assert_eq!(b.counts.iter().sum::<u64>(), 4);
        assert_eq!(b.sum_us, 100 + 101 + 3_000 + 30 * 86_400 * 1_000_000);
    }

    #[test]
    fn snapshots_add_up_and_open_connections_never_go_negative() {
        let mut m = Metrics::default();
        m.connection_opened(ConnectionKind::Pop3);
        m.connection_closed(ConnectionKind::Pop3);
        m.connection_closed(ConnectionKind::Pop3);
        assert_eq!(m.counters.open_connections, [0; 4]);
        assert_eq!(m.counters.connections_by_kind, [0, 0, 1, 0]);
        m.count_recipient(RecipientResult::Bounced);
        m.attempt_latency.record(Duration::from_millis(1));
        let mut total = m.snapshot();
        total.merge(&m.snapshot());
        assert_eq!(total.counters.recipients, [0, 0, 2, 0]);
        assert_eq!(total.attempt_latency.count, 2);
        assert_eq!(total.attempt_latency.counts[3], 2);
    }
}
