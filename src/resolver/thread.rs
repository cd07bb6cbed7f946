//! The resolver thread and its handles: one std thread running a
//! current-thread tokio runtime with hickory-resolver, fed by every core
//! through a bounded channel. Each wake-up drains all queued requests and
//! all finished queries at once, so concurrent lookups merge. It refuses to
//! hold any mail rule or cache logic (that is `batch.rs`) and to let a
//! caller's executor touch tokio: handles only use runtime-agnostic
//! channels.

use std::future::{poll_fn, Future};
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::thread::JoinHandle;
use std::time::Instant;

use futures_channel::oneshot;
use futures_lite::FutureExt;
use hickory_resolver::TokioResolver;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use super::batch::{Batcher, HostAnswer, MxAnswer, Query};
use super::rules::Rng;
use super::{dns, MxResolver, Resolution, ResolverConfig, ResolverError, ResolverStats};

/// The answer a request waits for.
type Reply = oneshot::Sender<Vec<(String, Resolution)>>;

/// What a core sends to the resolver thread.
struct Request {
    domains: Vec<String>,
    reply: Reply,
}

/// A finished lookup, as the spawned task reports it.
enum Done {
    Mx(String, MxAnswer),
    Host(String, HostAnswer),
}

/// Counters shared between the thread (writer) and the handles (readers).
type SharedStats = Arc<Mutex<ResolverStats>>;

/// Owner of the resolver thread. Hand [`DnsResolver::handle`]s to the cores;
/// the thread ends once this owner and every handle are dropped and the
/// lookups still in flight are answered.
pub struct DnsResolver {
    handle: ResolverHandle,
    thread: JoinHandle<()>,
}

/// A core's way to the resolver thread: cheap to clone, `Send`, usable from
/// any executor (the futures it returns need no tokio).
#[derive(Clone)]
pub struct ResolverHandle {
    tx: mpsc::Sender<Request>,
    stats: SharedStats,
}

impl DnsResolver {
    /// Starts the thread and waits until hickory is configured, so a bad
    /// system DNS configuration is reported here and not on the first mail.
    pub fn start(config: ResolverConfig) -> Result<DnsResolver, ResolverError> {
        let (tx, rx) = mpsc::channel(config.queue_depth.max(1));
        let stats = SharedStats::default();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread_stats = Arc::clone(&stats);
        let thread = std::thread::Builder::new()
            .name("spate-resolver".into())
            .spawn(move || run(config, rx, thread_stats, ready_tx))
            .map_err(ResolverError::Start)?;
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(DnsResolver {
                handle: ResolverHandle { tx, stats },
                thread,
            }),
            Ok(Err(e)) => {
                let _ = thread.join();
                Err(e)
            }
            Err(_) => {
                let _ = thread.join();
                Err(ResolverError::Start(std::io::Error::other(
                    "resolver thread ended before it was ready",
                )))
            }
        }
    }

    /// A handle for one core (or one test thread).
    pub fn handle(&self) -> ResolverHandle {
        self.handle.clone()
    }

    /// Drops the owner's handle and waits for the thread to end. Blocks
    /// until every other handle is dropped too.
    pub fn join(self) -> std::thread::Result<()> {
        drop(self.handle);
        self.thread.join()
    }
}

impl ResolverHandle {
    /// The thread's counters as of its last wake-up.
    pub fn stats(&self) -> ResolverStats {
        *self.stats.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl MxResolver for ResolverHandle {
    fn resolve_batch(
        &self,
        domains: Vec<String>,
    ) -> impl Future<Output = Vec<(String, Resolution)>> {
        let tx = self.tx.clone();
        async move {
            if domains.is_empty() {
                return Vec::new();
            }
            // Kept to answer every domain even if the thread died.
            let asked = domains.clone();
            let (reply, answer) = oneshot::channel();
            if tx.send(Request { domains, reply }).await.is_ok() {
                if let Ok(answers) = answer.await {
                    return answers;
                }
            }
            asked
                .into_iter()
                .map(|d| {
                    (
                        d,
                        Resolution::TempFail("the resolver thread stopped".into()),
                    )
                })
                .collect()
        }
    }
}

/// What woke the loop up.
enum Event {
    Request(Request),
    Closed,
    Done(Done),
}

fn run(
    config: ResolverConfig,
    mut rx: mpsc::Receiver<Request>,
    stats: SharedStats,
    ready: std::sync::mpsc::Sender<Result<(), ResolverError>>,
) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            let _ = ready.send(Err(ResolverError::Start(e)));
            return;
        }
    };
    runtime.block_on(async move {
        let resolver = match dns::build(&config) {
            Ok(r) => r,
            Err(e) => {
                let _ = ready.send(Err(e));
                return;
            }
        };
        let _ = ready.send(Ok(()));
        let rng = config.seed.map_or_else(Rng::from_entropy, Rng::from_seed);
        let mut batcher: Batcher<Reply> = Batcher::new(&config.own_hostname, config.cache, rng);
        let mut tasks: JoinSet<Done> = JoinSet::new();
        let max_in_flight = config.max_in_flight.max(1);
        // Requests held here beyond the channel's own bound: past it the
        // channel fills and senders wait, so memory stays bounded.
        let max_pending = config.queue_depth.max(1);
        let mut open = true;
        loop {
            if !open && tasks.is_empty() && batcher.is_idle() {
                break;
            }
            let event = poll_fn(|cx| {
                if open && batcher.pending() < max_pending {
                    if let Poll::Ready(r) = rx.poll_recv(cx) {
                        return Poll::Ready(r.map_or(Event::Closed, Event::Request));
                    }
                }
                loop {
                    match tasks.poll_join_next(cx) {
                        Poll::Ready(Some(Ok(done))) => return Poll::Ready(Event::Done(done)),
                        // The task wrapper catches panics; a join error is a
                        // cancelled task, which never happens (nothing
                        // aborts them). Skip it and keep the waker armed.
                        Poll::Ready(Some(Err(_))) => continue,
                        // Empty: new tasks are only spawned by this loop.
                        Poll::Ready(None) | Poll::Pending => return Poll::Pending,
                    }
                }
            })
            .await;
            let now = Instant::now();
            // Everything else that is ready now joins this round.
            let mut draining = open && !matches!(event, Event::Closed);
            let mut taken = batcher.pending() + usize::from(matches!(event, Event::Request(_)));
            let mut events = vec![event];
            while draining && taken < max_pending {
                match rx.try_recv() {
                    Ok(r) => {
                        events.push(Event::Request(r));
                        taken += 1;
                    }
                    Err(mpsc::error::TryRecvError::Empty) => draining = false,
                    Err(mpsc::error::TryRecvError::Disconnected) => {
                        events.push(Event::Closed);
                        draining = false;
                    }
                }
            }
            while let Some(done) = tasks.try_join_next() {
                if let Ok(done) = done {
                    events.push(Event::Done(done));
                }
            }
            for event in events {
                match event {
                    Event::Request(r) => batcher.handle_request(r.reply, r.domains, now),
                    Event::Closed => open = false,
                    Event::Done(Done::Mx(domain, answer)) => {
                        batcher.handle_mx(&domain, answer, now)
                    }
                    Event::Done(Done::Host(host, answer)) => {
                        batcher.handle_host(&host, answer, now)
                    }
                }
            }
            while tasks.len() < max_in_flight {
                let Some(query) = batcher.poll_query() else {
                    break;
                };
                tasks.spawn(lookup(resolver.clone(), query));
            }
            // Published before the replies, so a caller that got its answer
            // reads counters that include it.
            *stats.lock().unwrap_or_else(|p| p.into_inner()) = batcher.stats();
            while let Some((reply, answers)) = batcher.poll_reply() {
                // The caller may have given up waiting; that is fine.
                let _ = reply.send(answers);
            }
        }
    });
}

/// Performs one polled query; a panic inside hickory becomes a transient
/// failure of that name instead of a lost answer.
async fn lookup(resolver: TokioResolver, query: Query) -> Done {
    match query {
        Query::Mx(domain) => {
            let answer = AssertUnwindSafe(dns::lookup_mx(&resolver, &domain))
                .catch_unwind()
                .await
                .unwrap_or_else(|_| MxAnswer::TempFail(format!("MX {domain}: resolver panic")));
            Done::Mx(domain, answer)
        }
        Query::Host(host) => {
            let answer = match AssertUnwindSafe(dns::lookup_host(&resolver, &host))
                .catch_unwind()
                .await
            {
                Ok(a) => a,
                Err(_) => {
                    let fail =
                        || super::batch::AddrAnswer::TempFail(format!("{host}: resolver panic"));
                    HostAnswer::join(fail(), fail())
                }
            };
            Done::Host(host, answer)
        }
    }
}
