//! One endpoint's poster thread: reads the durable event log from the
//! endpoint's acknowledged number on, posts batches (a JSON array) and
//! records each acknowledgement (a 2xx answer); a failure is retried
//! with capped exponential backoff and jitter. It never touches the mail
//! path: a slow endpoint only falls behind in the log.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::http::HttpClient;
use super::log::{write_acknowledged, LogReader, Record};
use super::{Endpoint, Shared};
use crate::config::Webhook;

/// How often a failing endpoint is warned about (its first failure is
/// always logged, and its recovery).
const WARN_EVERY: Duration = Duration::from_secs(60);

/// Backoff between failed posts: doubles from `min` to `max`, each wait
/// drawn between half and all of the current step (jitter, so endpoints
/// coming back are not hit in step).
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    step: Option<Duration>,
    random: u64,
}

impl Backoff {
    /// `seed` picks the jitter sequence (any value but 0 is as good).
    pub fn new(min: Duration, max: Duration, seed: u64) -> Backoff {
        Backoff {
            min,
            max: max.max(min),
            step: None,
            random: seed | 1,
        }
    }

    /// The wait after one more failure.
    pub fn next_wait(&mut self) -> Duration {
        let step = match self.step {
            None => self.min,
            Some(step) => step.saturating_mul(2).min(self.max),
        };
        self.step = Some(step);
        // xorshift64: enough for jitter.
        self.random ^= self.random << 13;
        self.random ^= self.random >> 7;
        self.random ^= self.random << 17;
        let half = step / 2;
        let spread = u64::try_from((step - half).as_micros()).unwrap_or(u64::MAX);
        half + Duration::from_micros(self.random % spread.max(1))
    }

    /// A success: the next failure starts again from `min`.
    pub fn reset(&mut self) {
        self.step = None;
    }
}

/// The body of one POST: the records' JSON objects as one array.
pub fn batch_body(records: &[Record]) -> Vec<u8> {
    let size = records.iter().map(|r| r.payload.len() + 1).sum::<usize>() + 2;
    let mut body = Vec::with_capacity(size);
    body.push(b'[');
    for (i, record) in records.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(&record.payload);
    }
    body.push(b']');
    body
}

/// A batch read from the log and not yet acknowledged.
struct Batch {
    body: Vec<u8>,
    last_seq: u64,
    count: u64,
}

/// Runs one endpoint's poster until the events service stops.
pub(super) fn run(index: usize, config: Webhook, dir: PathBuf, shared: Arc<Shared>) {
    let endpoint: &Endpoint = &shared.endpoints[index];
    let mut reader = LogReader::new(&dir, endpoint.acked() + 1);
    let mut headers: Vec<(String, String)> = config
        .headers
        .iter()
        .map(|(name, value)| (name.clone(), value.0.clone()))
        .collect();
    if let Some(token) = &config.bearer_token {
        headers.push(("Authorization".into(), format!("Bearer {}", token.0)));
    }
    let mut client = HttpClient::new(config.url.clone(), config.timeout, &headers);
    let seed = u64::from(std::process::id()) ^ (index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let mut backoff = Backoff::new(config.min_backoff, config.max_backoff, seed);
    let mut pending: Option<Batch> = None;
    let mut failing_since: Option<Instant> = None;
    let mut last_warning: Option<Instant> = None;
    while !shared.stopping() {
        let batch = match pending.take() {
            Some(batch) => batch,
            None => {
                let Some(durable) =
                    shared.wait_for_events(reader.next_seq(), config.batch_size, config.batch_wait)
                else {
                    return; // stopping
                };
                let records = match reader.read(durable, config.batch_size) {
                    Ok(records) => records,
                    Err(e) => {
                        tracing::error!(endpoint = %endpoint.name, error = %e, "cannot read the event log");
                        shared.sleep(backoff.next_wait());
                        continue;
                    }
                };
                let Some(last) = records.last() else {
                    continue;
                };
                Batch {
                    last_seq: last.seq,
                    count: records.len() as u64,
                    body: batch_body(&records),
                }
            }
        };
        let failure = match client.post_json(&batch.body) {
            Ok(status) if (200..300).contains(&status) => None,
            Ok(status) => Some(format!("answered HTTP {status}")),
            Err(e) => Some(e.to_string()),
        };
        match failure {
            None => {
                if let Err(e) = write_acknowledged(&dir, &endpoint.name, batch.last_seq) {
                    // Posted again after a restart: at least once holds.
                    tracing::error!(endpoint = %endpoint.name, error = %e, "cannot record an acknowledgement");
                }
                endpoint.acknowledge(batch.last_seq, batch.count);
                backoff.reset();
                if let Some(since) = failing_since.take() {
                    tracing::info!(endpoint = %endpoint.name, down_for = ?since.elapsed(), "event endpoint is back");
                }
                last_warning = None;
            }
            Some(reason) => {
                endpoint.failed();
                failing_since.get_or_insert_with(Instant::now);
                let wait = backoff.next_wait();
                if last_warning.is_none_or(|at| at.elapsed() >= WARN_EVERY) {
                    last_warning = Some(Instant::now());
                    tracing::warn!(
                        endpoint = %endpoint.name,
                        error = %reason,
                        backlog = shared.durable().saturating_sub(endpoint.acked()),
                        retry_in = ?wait,
                        "cannot post events; retrying with backoff (warned at most once a minute)"
                    );
                }
                pending = Some(batch);
                shared.sleep(wait);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_its_cap_with_jitter_and_resets() {
        let (min, max) = (Duration::from_millis(100), Duration::from_secs(1));
        let mut backoff = Backoff::new(min, max, 42);
        let steps = [100, 200, 400, 800, 1000, 1000];
        for step in steps {
            let wait = backoff.next_wait();
            let step = Duration::from_millis(step);
            assert!(
                wait >= step / 2 && wait <= step,
                "{wait:?} for step {step:?}"
            );
        }
        backoff.reset();
        assert!(backoff.next_wait() <= min);
    }

    #[test]
    fn jitter_spreads_the_waits() {
        let mut a = Backoff::new(Duration::from_secs(1), Duration::from_secs(1), 1);
        let waits: std::collections::BTreeSet<Duration> = (0..20).map(|_| a.next_wait()).collect();
        assert!(waits.len() > 10);
    }

    #[test]
    fn a_batch_is_one_json_array() {
        let records: Vec<Record> = [r#"{"seq":1}"#, r#"{"seq":2}"#]
            .iter()
            .enumerate()
            .map(|(i, p)| Record {
                seq: i as u64 + 1,
                payload: p.as_bytes().to_vec(),
            })
            .collect();
        let body = batch_body(&records);
        let parsed: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
        assert_eq!(parsed, serde_json::json!([{"seq": 1}, {"seq": 2}]));
        assert_eq!(batch_body(&[]), b"[]");
    }
}
