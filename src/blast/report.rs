//! What `spate blast` measured: per-core counters and latency histograms,
//! merged at the end into a summary for people (text) or machines (JSON),
//! and the HdrHistogram percentile distribution for plotting. It does no
//! network I/O and decides nothing about the load.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

use super::client::{Failure, Outcome};
use crate::metrics::LatencySummary;

/// The figures of one core (or, merged, of the whole run).
#[derive(Debug, Clone)]
pub struct BlastStats {
    pub delivered: u64,
    pub failed: u64,
    /// Content bytes of delivered messages.
    pub bytes: u64,
    pub recipients_accepted: u64,
    pub connections: u64,
    /// Errors by stage, then by reply code (or problem word).
    pub errors: BTreeMap<&'static str, BTreeMap<String, u64>>,
    /// TCP connect to the greeting, microseconds.
    pub connect: Histogram<u64>,
    /// MAIL written to the final reply, microseconds.
    pub transaction: Histogram<u64>,
    /// Last content byte written to the final reply, microseconds.
    pub data_end: Histogram<u64>,
}

fn histogram() -> Histogram<u64> {
    // 1 us to 1 hour at 3 significant digits: constant, valid bounds.
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds")
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1)
}

impl Default for BlastStats {
    fn default() -> Self {
        BlastStats {
            delivered: 0,
            failed: 0,
            bytes: 0,
            recipients_accepted: 0,
            connections: 0,
            errors: BTreeMap::new(),
            connect: histogram(),
            transaction: histogram(),
            data_end: histogram(),
        }
    }
}

impl BlastStats {
    pub fn record_error(&mut self, failure: Failure) {
        *self
            .errors
            .entry(failure.stage.name())
            .or_default()
            .entry(failure.problem.key())
            .or_default() += 1;
    }

    /// A connection was set up; `latency` from connect to greeting.
    pub fn record_connection(&mut self, latency: Duration) {
        self.connections += 1;
        self.connect.saturating_record(micros(latency));
    }

    /// A message slot whose connection could not be set up.
    pub fn record_setup_failure(&mut self, failure: Failure) {
        self.failed += 1;
        self.record_error(failure);
    }

    pub fn record_outcome(&mut self, outcome: &Outcome) {
        for failure in &outcome.failures {
            self.record_error(*failure);
        }
        if outcome.delivered {
            self.delivered += 1;
            self.bytes += outcome.size as u64;
            self.recipients_accepted += u64::from(outcome.recipients_accepted);
            self.transaction
                .saturating_record(micros(outcome.finished - outcome.started));
            if let Some(sent) = outcome.content_sent {
                self.data_end
                    .saturating_record(micros(outcome.finished.saturating_duration_since(sent)));
            }
        } else {
            self.failed += 1;
        }
    }

    pub fn merge(&mut self, other: &BlastStats) {
        self.delivered += other.delivered;
        self.failed += other.failed;
        self.bytes += other.bytes;
        self.recipients_accepted += other.recipients_accepted;
        self.connections += other.connections;
        for (stage, codes) in &other.errors {
            let mine = self.errors.entry(stage).or_default();
            for (code, n) in codes {
                *mine.entry(code.clone()).or_default() += n;
            }
        }
        // Same bounds everywhere: adding cannot fail.
        let _ = self.connect.add(&other.connect);
        let _ = self.transaction.add(&other.transaction);
        let _ = self.data_end.add(&other.data_end);
    }

    /// Errors by code (or problem word), all stages together.
    pub fn errors_by_code(&self) -> BTreeMap<String, u64> {
        let mut out = BTreeMap::new();
        for codes in self.errors.values() {
            for (code, n) in codes {
                *out.entry(code.clone()).or_default() += n;
            }
        }
        out
    }
}

/// The run's summary, as `--json` prints it.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub messages: u64,
    pub delivered: u64,
    pub failed: u64,
    pub recipients_accepted: u64,
    pub connections: u64,
    pub seconds: f64,
    pub messages_per_second: f64,
    pub bytes: u64,
    pub bytes_per_second: f64,
    /// Errors by reply code (or a word for connection problems).
    pub errors: BTreeMap<String, u64>,
    /// The same by stage.
    pub errors_by_stage: BTreeMap<&'static str, BTreeMap<String, u64>>,
    pub latency_us: Latencies,
}

#[derive(Debug, Clone, Serialize)]
pub struct Latencies {
    pub connect: LatencySummary,
    pub transaction: LatencySummary,
    pub data_end: LatencySummary,
}

impl Summary {
    pub fn new(stats: &BlastStats, elapsed: Duration) -> Self {
        let seconds = elapsed.as_secs_f64().max(1e-9);
        Summary {
            messages: stats.delivered + stats.failed,
            delivered: stats.delivered,
            failed: stats.failed,
            recipients_accepted: stats.recipients_accepted,
            connections: stats.connections,
            seconds,
            messages_per_second: stats.delivered as f64 / seconds,
            bytes: stats.bytes,
            bytes_per_second: stats.bytes as f64 / seconds,
            errors: stats.errors_by_code(),
            errors_by_stage: stats.errors.clone(),
            latency_us: Latencies {
                connect: LatencySummary::of(&stats.connect),
                transaction: LatencySummary::of(&stats.transaction),
                data_end: LatencySummary::of(&stats.data_end),
            },
        }
    }

    /// The human-readable report.
    pub fn text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "messages     {} delivered, {} failed, in {:.3} s over {} connections",
            self.delivered, self.failed, self.seconds, self.connections
        );
        let _ = writeln!(
            out,
            "rate         {:.1} msg/s, {:.2} MiB/s",
            self.messages_per_second,
            self.bytes_per_second / 1_048_576.0
        );
        if self.errors_by_stage.is_empty() {
            let _ = writeln!(out, "errors       none");
        }
        for (stage, codes) in &self.errors_by_stage {
            for (code, n) in codes {
                let _ = writeln!(out, "errors       {stage} {code}: {n}");
            }
        }
        let _ = writeln!(
            out,
            "latency ms   {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
            "count", "p50", "p90", "p99", "p999", "max"
        );
        for (name, l) in [
            ("connect", &self.latency_us.connect),
            ("transaction", &self.latency_us.transaction),
            ("data end", &self.latency_us.data_end),
        ] {
            let ms = |us: u64| us as f64 / 1000.0;
            let _ = writeln!(
                out,
                "  {name:<10} {:>9} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>9.3}",
                l.count,
                ms(l.p50),
                ms(l.p90),
                ms(l.p99),
                ms(l.p999),
                ms(l.max)
            );
        }
        out
    }
}

/// HdrHistogram's percentile distribution text (values in milliseconds),
/// the format HdrHistogram's plotter reads.
pub fn percentile_distribution(h: &Histogram<u64>) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:>12} {:>14} {:>10} {:>14}\n",
        "Value", "Percentile", "TotalCount", "1/(1-Percentile)"
    );
    let ms = |us: u64| us as f64 / 1000.0;
    if h.is_empty() {
        let _ = writeln!(out, "#[Mean    = 0, StdDeviation   = 0]");
        let _ = writeln!(out, "#[Max     = 0, Total count    = 0]");
        return out;
    }
    for v in h.iter_quantiles(5) {
        let q = v.quantile_iterated_to();
        let inverse = if q < 1.0 {
            format!("{:>14.2}", 1.0 / (1.0 - q))
        } else {
            format!("{:>14}", "inf")
        };
        let _ = writeln!(
            out,
            "{:>12.3} {:>14.12} {:>10} {inverse}",
            ms(v.value_iterated_to()),
            q,
            v.count_since_last_iteration()
        );
        if q >= 1.0 {
            break;
        }
    }
    let _ = writeln!(
        out,
        "#[Mean    = {:>12.3}, StdDeviation   = {:>12.3}]",
        h.mean() / 1000.0,
        h.stdev() / 1000.0
    );
    let _ = writeln!(
        out,
        "#[Max     = {:>12.3}, Total count    = {:>12}]",
        ms(h.max()),
        h.len()
    );
    let _ = writeln!(
        out,
        "#[Buckets = {:>12}, SubBuckets     = {:>12}]",
        h.buckets(),
        h.distinct_values()
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blast::client::{Problem, Stage};
    use std::time::Instant;

    fn outcome(delivered: bool, ms: u64, failures: Vec<Failure>) -> Outcome {
        let t0 = Instant::now();
        Outcome {
            delivered,
            recipients_accepted: u32::from(delivered),
            size: 100,
            started: t0,
            content_sent: Some(t0),
            finished: t0 + Duration::from_millis(ms),
            failures,
        }
    }

    #[test]
    fn merged_stats_summarise() {
        let mut a = BlastStats::default();
        let mut b = BlastStats::default();
        for ms in 1..=99 {
            a.record_outcome(&outcome(true, ms, vec![]));
        }
        let f = Failure {
            stage: Stage::Rcpt,
            problem: Problem::Reply(450),
        };
        b.record_outcome(&outcome(false, 5, vec![f, f]));
        b.record_setup_failure(Failure {
            stage: Stage::Greeting,
            problem: Problem::Reply(421),
        });
        a.merge(&b);
        let s = Summary::new(&a, Duration::from_secs(1));
        assert_eq!(s.messages, 101);
        assert_eq!(s.delivered, 99);
        assert_eq!(s.failed, 2);
        assert_eq!(s.bytes, 9900);
        assert_eq!(s.errors["450"], 2);
        assert_eq!(s.errors["421"], 1);
        assert_eq!(s.errors_by_stage["rcpt"]["450"], 2);
        assert_eq!(s.latency_us.transaction.count, 99);
        assert!((49_000..=51_000).contains(&s.latency_us.transaction.p50));
        let text = s.text();
        assert!(text.contains("rcpt 450: 2"), "{text}");
        let json: serde_json::Value = serde_json::to_value(&s).unwrap();
        assert_eq!(json["errors"]["421"], 1);
        let dist = percentile_distribution(&a.transaction);
        assert!(dist.starts_with("       Value"), "{dist}");
        assert!(dist.contains("Total count    =           99"), "{dist}");
    }
}
