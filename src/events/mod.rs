//! Message-life events posted to webhooks (`[events]`). The cores hand
//! each event to an [`EventSink`] (a bounded in-memory channel: never a
//! wait, a full channel drops the event and counts it); one writer thread
//! numbers the events and appends them to a durable log under the events
//! directory, synced in batches; one poster thread per endpoint posts the
//! log in order and records what the endpoint acknowledged. The mail path
//! never waits for the disk or an endpoint here.
//!
//! Guarantee: at least once, in order (of `seq`, hence per message) to
//! every endpoint, for each event that reached the log. See README
//! "Events" for what a crash can lose.

pub mod event;
pub mod http;
pub mod log;
pub mod webhook;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError};
use futures_channel::oneshot;

use crate::config::EventsConfig;
pub use event::{Event, EventKind};
use log::{LogError, LogWriter};

/// How long the writer waits for events before looking after the log
/// (acknowledged segments, warnings, stopping).
const TICK: Duration = Duration::from_millis(100);
/// The most events appended under one sync.
const MAX_APPEND: usize = 4096;
/// The largest segment file; smaller when the log's bound is small.
const SEGMENT_BYTES: u64 = 4 << 20;
/// How often dropped events are warned about.
const WARN_EVERY: Duration = Duration::from_secs(60);

/// Why the events service could not start.
#[derive(Debug, thiserror::Error)]
pub enum EventsError {
    #[error(transparent)]
    Log(#[from] LogError),
    #[error("cannot start an events thread: {0}")]
    Thread(std::io::Error),
}

/// An event on its way to the writer, with whom to tell once it is
/// durable.
struct Submission {
    event: Event,
    durable: Option<oneshot::Sender<()>>,
}

/// The cores' end: cheap to clone, never blocks.
#[derive(Clone)]
pub struct EventSink {
    sender: Sender<Submission>,
    shared: Arc<Shared>,
}

impl EventSink {
    /// Hands `event` to the writer thread; when it is that far behind
    /// (the channel is full) the event is dropped and counted.
    pub fn send(&self, event: Event) {
        self.submit(Submission {
            event,
            durable: None,
        });
    }

    /// [`send`](Self::send), and a receiver that resolves once the event
    /// is synced to the log (or is cancelled when it was dropped).
    pub fn send_durable(&self, event: Event) -> oneshot::Receiver<()> {
        let (durable, synced) = oneshot::channel();
        self.submit(Submission {
            event,
            durable: Some(durable),
        });
        synced
    }

    fn submit(&self, submission: Submission) {
        match self.sender.try_send(submission) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.shared.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// How long the 250 of a message may wait for its `received` event
    /// to be durable (`[events] received_sync_wait`; zero: no wait).
    pub fn received_sync_wait(&self) -> Duration {
        self.shared.received_sync_wait
    }
}

/// The events service: its threads and what they share.
pub struct Events {
    sink: EventSink,
    shared: Arc<Shared>,
    writer: Option<JoinHandle<()>>,
}

/// What the writer and the posters share.
pub(crate) struct Shared {
    /// The highest number durable in the log (0: none yet).
    durable: Mutex<u64>,
    /// Signalled when `durable` grows, an endpoint acknowledges, and at
    /// stop.
    changed: Condvar,
    stop: AtomicBool,
    /// Events the log took.
    written: AtomicU64,
    /// Events dropped: channel full, log full or unwritable.
    dropped: AtomicU64,
    endpoints: Vec<Endpoint>,
    /// See [`EventSink::received_sync_wait`].
    received_sync_wait: Duration,
}

/// One endpoint's progress.
pub(crate) struct Endpoint {
    /// As in metrics, logs and the acknowledgement file.
    name: String,
    acked: AtomicU64,
    posted: AtomicU64,
    failures: AtomicU64,
}

impl Endpoint {
    fn acked(&self) -> u64 {
        self.acked.load(Ordering::Acquire)
    }

    fn acknowledge(&self, seq: u64, count: u64) {
        self.acked.store(seq, Ordering::Release);
        self.posted.fetch_add(count, Ordering::Relaxed);
    }

    fn failed(&self) {
        self.failures.fetch_add(1, Ordering::Relaxed);
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, u64> {
        // A poisoned lock only means a thread panicked holding it; the
        // number inside is still right.
        self.durable
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn durable(&self) -> u64 {
        *self.lock()
    }

    fn stopping(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    fn publish(&self, durable: u64) {
        *self.lock() = durable;
        self.changed.notify_all();
    }

    /// Waits until event `next` is durable, then (up to `batch_wait`)
    /// until `batch_size` events from it are; the highest durable number.
    /// `None` when stopping.
    fn wait_for_events(&self, next: u64, batch_size: usize, batch_wait: Duration) -> Option<u64> {
        let mut durable = self.lock();
        while *durable < next {
            if self.stopping() {
                return None;
            }
            durable = self
                .changed
                .wait_timeout(durable, TICK)
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .0;
        }
        let full = next.saturating_add(batch_size as u64).saturating_sub(1);
        let deadline = Instant::now() + batch_wait;
        while *durable < full && !self.stopping() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            durable = self
                .changed
                .wait_timeout(durable, left)
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .0;
        }
        Some(*durable)
    }

    /// Sleeps for `wait`, or until stopping.
    fn sleep(&self, wait: Duration) {
        let deadline = Instant::now() + wait;
        let mut guard = self.lock();
        while !self.stopping() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            guard = self
                .changed
                .wait_timeout(guard, left.min(TICK))
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .0;
        }
    }

    /// The lowest number every endpoint acknowledged.
    fn acknowledged_by_all(&self) -> u64 {
        self.endpoints
            .iter()
            .map(Endpoint::acked)
            .min()
            .unwrap_or(0)
    }
}

/// The events figures for the metrics endpoint.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventFigures {
    /// Events the log took.
    pub written: u64,
    /// Events dropped (channel full, log full or unwritable).
    pub dropped: u64,
    pub endpoints: Vec<EndpointFigures>,
}

/// One endpoint's figures.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EndpointFigures {
    pub name: String,
    /// Events posted and acknowledged since the start.
    pub posted: u64,
    /// Posts that failed (refused, no answer, not 2xx).
    pub failures: u64,
    /// Events durable in the log and not yet acknowledged.
    pub backlog: u64,
}

impl Events {
    /// Starts the writer and one poster per webhook; `None` without a
    /// webhook (no events are made at all then).
    pub fn start(config: &EventsConfig, spool_dir: &Path) -> Result<Option<Events>, EventsError> {
        if config.webhooks.is_empty() {
            return Ok(None);
        }
        let dir = config
            .dir
            .clone()
            .unwrap_or_else(|| spool_dir.join("events"));
        std::fs::create_dir_all(&dir).map_err(|source| LogError::Io {
            path: dir.clone(),
            source,
        })?;
        let mut endpoints = Vec::with_capacity(config.webhooks.len());
        for webhook in &config.webhooks {
            let name = webhook.name().to_owned();
            let acked = log::read_acknowledged(&dir, &name)?;
            endpoints.push(Endpoint {
                name,
                acked: AtomicU64::new(acked),
                posted: AtomicU64::new(0),
                failures: AtomicU64::new(0),
            });
        }
        let highest_acked = endpoints.iter().map(Endpoint::acked).max().unwrap_or(0);
        let segment_bytes = SEGMENT_BYTES.min(config.max_queue_bytes / 4);
        let log = LogWriter::open(&dir, segment_bytes, highest_acked)?;
        let shared = Arc::new(Shared {
            durable: Mutex::new(log.next_seq() - 1),
            changed: Condvar::new(),
            stop: AtomicBool::new(false),
            written: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            endpoints,
            received_sync_wait: config.received_sync_wait,
        });
        let (sender, receiver) = crossbeam_channel::bounded(config.memory_queue);
        let writer = Writer {
            log,
            dir: dir.clone(),
            segment_bytes,
            max_bytes: config.max_queue_bytes,
            receiver,
            shared: Arc::clone(&shared),
            last_dropped: 0,
            last_warning: None,
        };
        let writer = std::thread::Builder::new()
            .name("spate-events".into())
            .spawn(move || writer.run())
            .map_err(EventsError::Thread)?;
        for (index, webhook) in config.webhooks.iter().enumerate() {
            let (webhook, dir, shared) = (webhook.clone(), dir.clone(), Arc::clone(&shared));
            // Detached: a poster stuck on a silent endpoint must not hold
            // up the process's exit; what it acknowledged is on disk.
            std::thread::Builder::new()
                .name(format!("spate-webhook-{index}"))
                .spawn(move || webhook::run(index, webhook, dir, shared))
                .map_err(EventsError::Thread)?;
        }
        tracing::info!(dir = %dir.display(), endpoints = config.webhooks.len(), next_seq = shared.durable() + 1, "events: posting to webhooks");
        Ok(Some(Events {
            sink: EventSink {
                sender,
                shared: Arc::clone(&shared),
            },
            shared,
            writer: Some(writer),
        }))
    }

    /// A handle for a core.
    pub fn sink(&self) -> EventSink {
        self.sink.clone()
    }

    /// A reader of the figures, for the metrics endpoint's thread.
    pub fn figures_handle(&self) -> impl Fn() -> EventFigures + Send + 'static {
        let shared = Arc::clone(&self.shared);
        move || {
            let durable = shared.durable();
            EventFigures {
                written: shared.written.load(Ordering::Relaxed),
                dropped: shared.dropped.load(Ordering::Relaxed),
                endpoints: shared
                    .endpoints
                    .iter()
                    .map(|e| EndpointFigures {
                        name: e.name.clone(),
                        posted: e.posted.load(Ordering::Relaxed),
                        failures: e.failures.load(Ordering::Relaxed),
                        backlog: durable.saturating_sub(e.acked()),
                    })
                    .collect(),
            }
        }
    }

    /// Stops: the writer takes every event already handed over (call
    /// this after the cores stopped) and syncs the log; the posters stop
    /// after their current post. What is not yet acknowledged is posted
    /// after the next start.
    pub fn stop(mut self) {
        self.shared.stop.store(true, Ordering::Release);
        self.shared.changed.notify_all();
        if let Some(writer) = self.writer.take() {
            if writer.join().is_err() {
                tracing::error!("the events writer thread panicked");
            }
        }
    }
}

/// The writer thread's state.
struct Writer {
    log: LogWriter,
    dir: PathBuf,
    segment_bytes: u64,
    max_bytes: u64,
    receiver: Receiver<Submission>,
    shared: Arc<Shared>,
    /// `dropped` when last warned about.
    last_dropped: u64,
    last_warning: Option<Instant>,
}

impl Writer {
    fn run(mut self) {
        let mut batch = Vec::with_capacity(MAX_APPEND);
        let mut acknowledged = 0;
        loop {
            let stopping = self.shared.stopping();
            match self.receiver.recv_timeout(TICK) {
                Ok(event) => batch.push(event),
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => {}
            }
            while batch.len() < MAX_APPEND {
                match self.receiver.try_recv() {
                    Ok(event) => batch.push(event),
                    Err(_) => break,
                }
            }
            // Room first: what the endpoints acknowledged meanwhile no
            // longer counts against the bound.
            let by_all = self.shared.acknowledged_by_all();
            if by_all > acknowledged {
                acknowledged = by_all;
                if let Err(e) = self.log.remove_acknowledged(by_all) {
                    tracing::warn!(error = %e, "event log: cannot delete an acknowledged segment");
                }
            }
            if !batch.is_empty() {
                self.write(&mut batch);
            }
            self.warn_of_drops();
            if stopping && self.receiver.is_empty() {
                return;
            }
        }
    }

    /// Numbers, appends and syncs `batch` (emptied); what the log's bound
    /// leaves no room for is dropped. Whoever waits for an event is told
    /// once it is synced (or, dropped, by the cancellation).
    fn write(&mut self, batch: &mut Vec<Submission>) {
        let mut encoded = Vec::with_capacity(batch.len() * 400);
        let first = self.log.next_seq();
        let mut count = 0u64;
        let mut refused = 0u64;
        let mut json = Vec::with_capacity(512);
        let mut waiting = Vec::new();
        for Submission { event, durable } in batch.drain(..) {
            json.clear();
            let numbered = event::Numbered {
                seq: first + count,
                event: &event,
            };
            if serde_json::to_writer(&mut json, &numbered).is_err() {
                refused += 1;
                continue;
            }
            let room =
                self.log.bytes() + encoded.len() as u64 + (json.len() + log::HEADER_LEN) as u64;
            if room > self.max_bytes || log::encode(first + count, &json, &mut encoded).is_err() {
                refused += 1;
                continue;
            }
            count += 1;
            waiting.extend(durable);
        }
        let written = self
            .log
            .append(&encoded, count)
            .and_then(|()| self.log.sync());
        match written {
            Ok(()) => {
                self.shared.written.fetch_add(count, Ordering::Relaxed);
                self.shared.publish(self.log.next_seq() - 1);
                for durable in waiting {
                    let _ = durable.send(());
                }
            }
            Err(e) => {
                tracing::error!(error = %e, events = count, "event log: cannot write; these events are dropped");
                refused += count;
                self.reopen();
            }
        }
        if refused > 0 {
            self.shared.dropped.fetch_add(refused, Ordering::Relaxed);
        }
    }

    /// After a failed write: the log as the next start would find it
    /// (a torn tail cut), numbering on from what is really there.
    fn reopen(&mut self) {
        let acknowledged = self
            .shared
            .endpoints
            .iter()
            .map(Endpoint::acked)
            .max()
            .unwrap_or(0);
        match LogWriter::open(&self.dir, self.segment_bytes, acknowledged) {
            Ok(log) => {
                self.log = log;
                self.shared.publish(self.log.next_seq() - 1);
            }
            Err(e) => {
                tracing::error!(error = %e, "event log: cannot reopen; trying again at the next write")
            }
        }
    }

    /// At most once a minute, how many events were dropped since the
    /// last warning.
    fn warn_of_drops(&mut self) {
        let dropped = self.shared.dropped.load(Ordering::Relaxed);
        if dropped == self.last_dropped {
            return;
        }
        if self
            .last_warning
            .is_some_and(|at| at.elapsed() < WARN_EVERY)
        {
            return;
        }
        tracing::warn!(
            dropped = dropped - self.last_dropped,
            log_bytes = self.log.bytes(),
            max_queue_bytes = self.max_bytes,
            "events dropped: the event log is full (endpoints down or behind) or the writer is behind; mail is not held up"
        );
        self.last_dropped = dropped;
        self.last_warning = Some(Instant::now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shared() -> Arc<Shared> {
        Arc::new(Shared {
            durable: Mutex::new(0),
            changed: Condvar::new(),
            stop: AtomicBool::new(false),
            written: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            endpoints: Vec::new(),
            received_sync_wait: Duration::ZERO,
        })
    }

    #[test]
    fn a_batch_waits_to_fill_but_no_longer_than_its_wait() {
        let shared = shared();
        shared.publish(3);
        let start = Instant::now();
        let wait = Duration::from_millis(50);
        assert_eq!(shared.wait_for_events(1, 10, wait), Some(3));
        assert!(start.elapsed() >= wait, "a partial batch waited to fill");
        // A full batch goes at once.
        shared.publish(20);
        let start = Instant::now();
        assert_eq!(
            shared.wait_for_events(4, 10, Duration::from_secs(10)),
            Some(20)
        );
        assert!(start.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn a_poster_wakes_when_events_become_durable_and_at_stop() {
        let shared = shared();
        let publisher = Arc::clone(&shared);
        let thread = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(30));
            publisher.publish(1);
        });
        assert_eq!(shared.wait_for_events(1, 1, Duration::ZERO), Some(1));
        thread.join().expect("publisher");
        shared.stop.store(true, Ordering::Release);
        shared.changed.notify_all();
        assert_eq!(shared.wait_for_events(2, 1, Duration::ZERO), None);
    }

    #[test]
    fn a_full_channel_drops_and_counts_without_waiting() {
        let shared = shared();
        let (sender, _receiver) = crossbeam_channel::bounded(1);
        let sink = EventSink {
            sender,
            shared: Arc::clone(&shared),
        };
        sink.send(Event::new(EventKind::Received, 1));
        let mut synced = sink.send_durable(Event::new(EventKind::Received, 2));
        assert_eq!(shared.dropped.load(Ordering::Relaxed), 1);
        // Whoever waits for a dropped event is not left waiting.
        assert!(synced.try_recv().is_err());
    }
}
