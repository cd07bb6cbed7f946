//! The Prometheus text exposition format (version 0.0.4) of a merged
//! [`Snapshot`]: names, help, types, labels, histogram buckets in seconds.
//! It only writes text; it neither gathers figures nor speaks HTTP.

use std::fmt::Write;

use super::{Buckets, ConnectionKind, MessageResult, RecipientResult, Snapshot, BUCKET_BOUNDS_US};

/// The `Content-Type` of what [`render`] writes.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Every metric of the snapshot, as Prometheus reads them.
pub fn render(s: &Snapshot) -> String {
    let mut out = Text(String::with_capacity(16 * 1024));
    let c = &s.counters;

    out.header(
        "spate_connections_total",
        "counter",
        "Connections accepted, by protocol.",
    );
    for kind in ConnectionKind::ALL {
        out.labelled(
            "spate_connections_total",
            "protocol",
            kind.label(),
            c.connections_by_kind[kind as usize],
        );
    }
    out.header(
        "spate_connections_open",
        "gauge",
        "Connections open now, by protocol.",
    );
    for kind in ConnectionKind::ALL {
        out.labelled(
            "spate_connections_open",
            "protocol",
            kind.label(),
            c.open_connections[kind as usize],
        );
    }
    out.single(
        "spate_connections_refused_total",
        "counter",
        "Connections refused by the connection limits.",
        c.connections_refused,
    );
    out.single(
        "spate_smtp_transactions_total",
        "counter",
        "SMTP transactions begun (MAIL FROM accepted).",
        c.transactions,
    );
    out.single(
        "spate_smtp_messages_received_total",
        "counter",
        "Messages received and durably queued.",
        c.messages_received,
    );
    out.single(
        "spate_smtp_received_bytes_total",
        "counter",
        "Bytes of the messages received (as stored, our Received header included).",
        c.bytes_received,
    );
    out.header(
        "spate_smtp_replies_total",
        "counter",
        "SMTP replies sent to clients, by class.",
    );
    for (i, class) in ["2xx", "3xx", "4xx", "5xx"].iter().enumerate() {
        out.labelled("spate_smtp_replies_total", "class", class, c.replies[i]);
    }
    out.single(
        "spate_smtp_store_failures_total",
        "counter",
        "Messages that could not be stored (answered 451 or 452).",
        c.store_failures,
    );
    out.header(
        "spate_tls_handshakes_total",
        "counter",
        "Server TLS handshakes (STARTTLS, STLS, implicit TLS), by result.",
    );
    out.labelled(
        "spate_tls_handshakes_total",
        "result",
        "ok",
        c.tls_handshakes,
    );
    out.labelled(
        "spate_tls_handshakes_total",
        "result",
        "failed",
        c.tls_handshake_failures,
    );
    out.single(
        "spate_auth_failures_total",
        "counter",
        "Logins refused (SMTP AUTH, POP3, IMAP).",
        c.auth_failures,
    );
    out.header(
        "spate_logins_total",
        "counter",
        "Logins accepted, by protocol.",
    );
    for kind in ConnectionKind::ALL {
        if kind != ConnectionKind::Smtp {
            out.labelled(
                "spate_logins_total",
                "protocol",
                kind.label(),
                c.logins[kind as usize],
            );
        }
    }
    out.header(
        "spate_delivery_recipients_total",
        "counter",
        "Recipient outcomes of delivery attempts.",
    );
    for r in RecipientResult::ALL {
        out.labelled(
            "spate_delivery_recipients_total",
            "outcome",
            r.label(),
            c.recipients[r as usize],
        );
    }
    out.header(
        "spate_delivery_messages_total",
        "counter",
        "Messages that left the queue, by how.",
    );
    for r in MessageResult::ALL {
        out.labelled(
            "spate_delivery_messages_total",
            "result",
            r.label(),
            c.messages_finished[r as usize],
        );
    }
    out.single(
        "spate_delivery_delivered_bytes_total",
        "counter",
        "Bytes of the messages that left the queue delivered.",
        c.bytes_delivered,
    );
    out.single(
        "spate_delivery_held_total",
        "counter",
        "Messages held back by a full ready queue of their destination (not attempts).",
        c.held_by_limits,
    );
    out.single(
        "spate_delivery_suspensions_total",
        "counter",
        "Sites suspended by a back-off rule on a receiver's reply.",
        c.suspensions,
    );
    out.single(
        "spate_delivery_throttles_total",
        "counter",
        "Steps down of a site's limits by a back-off rule's throttle.",
        c.throttles,
    );
    out.single(
        "spate_delivery_site_bounces_total",
        "counter",
        "Sites whose queued mail a back-off rule's bounce returned to the senders.",
        c.site_bounces,
    );
    let name = "spate_delivery_tls_total";
    out.header(
        name,
        "counter",
        "Recipients delivered over outbound SMTP, by what protected the connection.",
    );
    for outcome in crate::outbound_tls::TlsOutcome::ALL {
        let _ = writeln!(
            out.0,
            "{name}{{outcome=\"{}\"}} {}",
            outcome.label(),
            c.tls_outcomes[outcome as usize]
        );
    }
    let name = "spate_delivery_tls_policy_failures_total";
    out.header(
        name,
        "counter",
        "Next hops not used because they failed an MTA-STS enforce or DANE policy.",
    );
    for (column, policy) in ["mta-sts", "dane"].iter().enumerate() {
        let _ = writeln!(
            out.0,
            "{name}{{policy=\"{policy}\"}} {}",
            c.tls_policy_failures[column]
        );
    }
    out.single(
        "spate_delivery_mta_sts_testing_failures_total",
        "counter",
        "Connections an MTA-STS testing policy would have refused (reported only).",
        c.mta_sts_testing_failures,
    );
    let name = "spate_delivery_failures_total";
    out.header(
        name,
        "counter",
        "Recipient failures by bounce class and outcome (deferred, bounced, expired).",
    );
    for class in crate::shaping::BounceClass::ALL {
        for (column, outcome) in ["deferred", "bounced", "expired"].iter().enumerate() {
            let _ = writeln!(
                out.0,
                "{name}{{class=\"{}\",outcome=\"{outcome}\"}} {}",
                class.label(),
                c.failures_by_class[class as usize][column]
            );
        }
    }
    if !s.recipients_by_source.is_empty() {
        let name = "spate_delivery_source_recipients_total";
        out.header(
            name,
            "counter",
            "Recipient outcomes of delivery attempts, by egress source.",
        );
        // Source names are checked at config load: letters, digits, '.',
        // '_', '-' (no escaping needed).
        for (source, counts) in &s.recipients_by_source {
            for r in RecipientResult::ALL {
                let _ = writeln!(
                    out.0,
                    "{name}{{source=\"{source}\",outcome=\"{}\"}} {}",
                    r.label(),
                    counts[r as usize]
                );
            }
        }
    }
    out.single(
        "spate_dkim_signed_total",
        "counter",
        "Messages given a DKIM signature at receipt.",
        c.dkim_signed,
    );
    out.single(
        "spate_dkim_failures_total",
        "counter",
        "Messages of a signing domain that could not be signed (accepted unsigned).",
        c.dkim_failures,
    );
    out.single(
        "spate_dns_queries_total",
        "counter",
        "DNS queries sent (MX, A and AAAA).",
        s.dns_queries,
    );
    out.single(
        "spate_dns_cache_hits_total",
        "counter",
        "Domains answered from the resolver cache.",
        s.dns_cache_hits,
    );
    if let Some(cluster) = &s.cluster {
        out.single(
            "spate_cluster_redis_up",
            "gauge",
            "1 while the limits are shared through Redis, 0 while this host uses its own share.",
            u64::from(cluster.up),
        );
        out.single(
            "spate_cluster_hosts",
            "gauge",
            "Hosts the shared limits are divided by when Redis is away (and connections always).",
            cluster.hosts,
        );
        out.single(
            "spate_cluster_fallbacks_total",
            "counter",
            "Times Redis was lost and this host fell back to its own share.",
            cluster.fallbacks,
        );
        out.single(
            "spate_cluster_round_trips_total",
            "counter",
            "Round trips to Redis (leases, heartbeats, suspensions).",
            cluster.round_trips,
        );
        out.single(
            "spate_cluster_leases_total",
            "counter",
            "Lease requests Redis answered.",
            cluster.leases,
        );
        out.single(
            "spate_cluster_leased_tokens_total",
            "counter",
            "Tokens (messages, new connections) Redis granted.",
            cluster.tokens,
        );
    }
    if let Some(events) = &s.events {
        render_events(&mut out, events);
    }
    out.header(
        "spate_queue_messages",
        "gauge",
        "Queued messages, by state.",
    );
    for (state, n) in [
        ("queued", s.queue.queued),
        ("deferred", s.queue.deferred),
        ("active", s.queue.active),
    ] {
        out.labelled("spate_queue_messages", "state", state, n);
    }
    out.single(
        "spate_queue_bytes",
        "gauge",
        "Bytes of the queued messages.",
        s.queue.bytes,
    );
    out.single(
        "spate_spool_bytes",
        "gauge",
        "Bytes of the spool's segment files on disk.",
        s.spool_bytes,
    );
    out.histogram(
        "spate_smtp_ack_seconds",
        "From the end of DATA (or BDAT LAST) to the 250 being written.",
        &s.ack_latency,
    );
    out.histogram(
        "spate_queue_residence_seconds",
        "From the 250 to the delivery of a message's last recipient.",
        &s.queue_residence,
    );
    out.histogram(
        "spate_delivery_attempt_seconds",
        "One delivery attempt: an SMTP transaction or a local delivery.",
        &s.attempt_latency,
    );
    out.histogram(
        "spate_spool_fsync_seconds",
        "One group-commit fdatasync of the spool.",
        &s.fsync_latency,
    );
    out.0
}

/// The events service's figures (`[[events.webhook]]`).
fn render_events(out: &mut Text, events: &crate::events::EventFigures) {
    out.single(
        "spate_events_written_total",
        "counter",
        "Message-life events made durable in the event log.",
        events.written,
    );
    out.single(
        "spate_events_dropped_total",
        "counter",
        "Events dropped: the event log full (max_queue_bytes) or the writer behind (memory_queue).",
        events.dropped,
    );
    let backlog = events
        .endpoints
        .iter()
        .map(|e| e.backlog)
        .max()
        .unwrap_or(0);
    out.single(
        "spate_events_queued",
        "gauge",
        "Events in the log not yet acknowledged by every endpoint.",
        backlog,
    );
    for (name, kind, help, value) in [
        (
            "spate_events_posted_total",
            "counter",
            "Events posted and acknowledged (2xx), by endpoint.",
            (|e: &crate::events::EndpointFigures| e.posted)
                as fn(&crate::events::EndpointFigures) -> u64,
        ),
        (
            "spate_events_post_failures_total",
            "counter",
            "Posts that failed (no connection, no answer, not 2xx), by endpoint.",
            |e| e.failures,
        ),
        (
            "spate_events_backlog",
            "gauge",
            "Events in the log not yet acknowledged, by endpoint.",
            |e| e.backlog,
        ),
    ] {
        out.header(name, kind, help);
        for endpoint in &events.endpoints {
            out.labelled(
                name,
                "endpoint",
                &label_value(&endpoint.name),
                value(endpoint),
            );
        }
    }
}

/// A label value as the text format wants it: backslash, quote and
/// newline escaped.
fn label_value(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The text being written; writing to a `String` cannot fail.
struct Text(String);

impl Text {
    fn header(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}");
        let _ = writeln!(self.0, "# TYPE {name} {kind}");
    }

    fn single(&mut self, name: &str, kind: &str, help: &str, value: u64) {
        self.header(name, kind, help);
        let _ = writeln!(self.0, "{name} {value}");
    }

    /// One sample with one label; label values here are our own constants,
    /// which need no escaping.
    fn labelled(&mut self, name: &str, label: &str, value_of_label: &str, value: u64) {
        let _ = writeln!(self.0, "{name}{{{label}=\"{value_of_label}\"}} {value}");
    }

    fn histogram(&mut self, name: &str, help: &str, b: &Buckets) {
        self.header(name, "histogram", help);
        let mut cumulative = 0;
        for (i, bound) in BUCKET_BOUNDS_US.iter().enumerate() {
            cumulative += b.counts[i];
            let _ = writeln!(
                self.0,
                "{name}_bucket{{le=\"{}\"}} {cumulative}",
                seconds(*bound)
            );
        }
        let _ = writeln!(self.0, "{name}_bucket{{le=\"+Inf\"}} {}", b.count);
        let _ = writeln!(self.0, "{name}_sum {}", seconds(b.sum_us));
        let _ = writeln!(self.0, "{name}_count {}", b.count);
    }
}

/// Microseconds as seconds in the shortest exact decimal form.
fn seconds(us: u64) -> String {
    let whole = us / 1_000_000;
    let frac = us % 1_000_000;
    if frac == 0 {
        return whole.to_string();
    }
    let digits = format!("{frac:06}");
    format!("{whole}.{}", digits.trim_end_matches('0'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{Latency, Metrics};
    use std::time::Duration;

    #[test]
    fn seconds_are_exact_decimals() {
        assert_eq!(seconds(100), "0.0001");
        assert_eq!(seconds(2_500), "0.0025");
        assert_eq!(seconds(1_000_000), "1");
        assert_eq!(seconds(432_000_000_000), "432000");
        assert_eq!(seconds(1_234_567), "1.234567");
        assert_eq!(seconds(0), "0");
    }

    /// The value of the sample line `line` (name with labels), if present.
    fn sample(text: &str, line: &str) -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(line)?.strip_prefix(' ')?.parse().ok())
    }

    #[test]
    fn counters_gauges_and_labels_are_exposed() {
        let mut m = Metrics::default();
        m.counters.messages_received = 3;
        m.counters.bytes_received = 12_345;
        m.counters.replies = [10, 1, 2, 3];
        m.connection_opened(ConnectionKind::Imap);
        let mut s = m.snapshot();
        s.queue.deferred = 7;
        s.dns_queries = 4;
        let text = render(&s);
        assert_eq!(
            sample(&text, "spate_smtp_messages_received_total"),
            Some(3.0)
        );
        assert_eq!(
            sample(&text, "spate_smtp_received_bytes_total"),
            Some(12345.0)
        );
        assert_eq!(
            sample(&text, "spate_smtp_replies_total{class=\"4xx\"}"),
            Some(2.0)
        );
        assert_eq!(
            sample(&text, "spate_connections_open{protocol=\"imap\"}"),
            Some(1.0)
        );
        assert_eq!(
            sample(&text, "spate_connections_total{protocol=\"smtp\"}"),
            Some(0.0)
        );
        assert_eq!(
            sample(&text, "spate_queue_messages{state=\"deferred\"}"),
            Some(7.0)
        );
        assert_eq!(sample(&text, "spate_dns_queries_total"), Some(4.0));
        assert!(text.contains("# TYPE spate_smtp_messages_received_total counter\n"));
        assert!(text.contains("# TYPE spate_connections_open gauge\n"));
        assert!(text.ends_with('\n'));
        // Each metric family is declared once, before its samples.
        let mut types: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .map(|l| l.split(' ').next().unwrap_or(""))
            .collect();
        let n = types.len();
        types.sort_unstable();
        types.dedup();
        assert_eq!(types.len(), n, "a family declared twice");
    }

    #[test]
    fn histograms_are_cumulative_in_seconds() {
        let mut l = Latency::default();
        for ms in [1, 1, 3, 20, 2_000] {
            l.record(Duration::from_millis(ms));
        }
        let s = Snapshot {
            ack_latency: l.buckets(),
            ..Snapshot::default()
        };
        let text = render(&s);
        let h = "spate_smtp_ack_seconds";
        assert!(text.contains(&format!("# TYPE {h} histogram\n")));
        assert_eq!(
            sample(&text, &format!("{h}_bucket{{le=\"0.0001\"}}")),
            Some(0.0)
        );
        assert_eq!(
            sample(&text, &format!("{h}_bucket{{le=\"0.001\"}}")),
            Some(2.0)
        );
        assert_eq!(
            sample(&text, &format!("{h}_bucket{{le=\"0.005\"}}")),
            Some(3.0)
        );
        assert_eq!(
            sample(&text, &format!("{h}_bucket{{le=\"0.025\"}}")),
            Some(4.0)
        );
        assert_eq!(
            sample(&text, &format!("{h}_bucket{{le=\"2.5\"}}")),
            Some(5.0)
        );
        assert_eq!(
            sample(&text, &format!("{h}_bucket{{le=\"+Inf\"}}")),
            Some(5.0)
        );
        assert_eq!(sample(&text, &format!("{h}_count")), Some(5.0));
        assert_eq!(sample(&text, &format!("{h}_sum")), Some(2.025));
        // Buckets never decrease.
        let counts: Vec<f64> = text
            .lines()
            .filter(|l| l.starts_with(&format!("{h}_bucket")))
            .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
            .collect();
        assert_eq!(counts.len(), BUCKET_BOUNDS_US.len() + 1);
        assert!(counts.windows(2).all(|w| w[0] <= w[1]), "{counts:?}");
    }
}
