//! A pool of unpinned threads for the blocking work of the mailbox tier
//! (fsync-heavy Maildir writes, password hashing, mailbox reads), so no
//! executor stalls on it and several such calls overlap. glommio's own
//! `spawn_blocking` runs on one helper thread pinned to the executor's CPU,
//! which serialises every fsync of a core. The pool knows nothing of what
//! the jobs do, only which [`Lane`] each comes by.
//!
//! Two lanes, so that reading mailboxes can never starve a login or a
//! delivery: the shared workers take urgent jobs before mailbox jobs, and
//! a few more workers (a quarter of the shared ones, at least one) take
//! only urgent jobs, so an urgent job starts at once even while every
//! shared worker runs a slow SEARCH.

use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::thread;

use crossbeam_channel::{Receiver, Sender};
use thiserror::Error;

type Job = Box<dyn FnOnce() + Send>;

/// The job did not produce a result: it panicked, or the pool is gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error("blocking job failed")]
pub struct JobFailed;

/// Which queue a job waits in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lane {
    /// Work for one reader of a mailbox (IMAP commands, POP3 maildrop
    /// reads and expunges): it may be long, and it waits behind urgent
    /// work.
    Mailbox,
    /// Work everyone waits for and that is short: password checks (SMTP
    /// AUTH, POP3, IMAP before login) and local deliveries. Never queued
    /// behind mailbox work.
    Urgent,
}

/// See the module header. Create it on an unpinned thread (the main one):
/// threads inherit their creator's CPU affinity.
#[derive(Debug)]
pub struct BlockingPool {
    mailbox: Sender<Job>,
    urgent: Sender<Job>,
}

/// Workers that serve only the urgent lane, beside `shared` ones.
pub fn urgent_only_threads(shared: usize) -> usize {
    shared.div_ceil(4).max(1)
}

impl BlockingPool {
    /// Starts `threads` shared workers (at least one) and
    /// [`urgent_only_threads`] more for urgent jobs only.
    pub fn new(threads: usize) -> std::io::Result<Arc<BlockingPool>> {
        let shared = threads.max(1);
        let (mailbox, mailbox_queue) = crossbeam_channel::unbounded::<Job>();
        let (urgent, urgent_queue) = crossbeam_channel::unbounded::<Job>();
        for n in 0..shared {
            let urgent_queue: Receiver<Job> = urgent_queue.clone();
            let mailbox_queue: Receiver<Job> = mailbox_queue.clone();
            thread::Builder::new()
                .name(format!("spate-io-{n}"))
                .spawn(move || {
                    while let Some(job) = next_job(&urgent_queue, &mailbox_queue) {
                        run_contained(job);
                    }
                })?;
        }
        for n in 0..urgent_only_threads(shared) {
            let urgent_queue: Receiver<Job> = urgent_queue.clone();
            thread::Builder::new()
                .name(format!("spate-io-urgent-{n}"))
                .spawn(move || {
                    // Ends when every sender (the pool) is dropped.
                    for job in urgent_queue {
                        run_contained(job);
                    }
                })?;
        }
        Ok(Arc::new(BlockingPool { mailbox, urgent }))
    }

    /// Runs `job` on a worker, in `lane`; the future resolves with its
    /// result.
    pub fn run<F, R>(
        &self,
        lane: Lane,
        job: F,
    ) -> impl Future<Output = Result<R, JobFailed>> + use<F, R>
    where
        F: FnOnce() -> R + Send + 'static,
        R: Send + 'static,
    {
        let (done, result) = futures_channel::oneshot::channel();
        let queue = match lane {
            Lane::Mailbox => &self.mailbox,
            Lane::Urgent => &self.urgent,
        };
        let sent = queue
            .send(Box::new(move || {
                let _ = done.send(job());
            }))
            .is_ok();
        async move {
            if !sent {
                return Err(JobFailed);
            }
            result.await.map_err(|_| JobFailed)
        }
    }
}

/// A shared worker's next job: an urgent one if any waits, else whichever
/// comes first. `None` once the pool is gone.
fn next_job(urgent: &Receiver<Job>, mailbox: &Receiver<Job>) -> Option<Job> {
    if let Ok(job) = urgent.try_recv() {
        return Some(job);
    }
    crossbeam_channel::select! {
        recv(urgent) -> job => job.ok().or_else(|| mailbox.recv().ok()),
        recv(mailbox) -> job => job.ok().or_else(|| urgent.recv().ok()),
    }
}

/// A panicking job drops its result sender, which its caller sees as
/// [`JobFailed`]; the worker lives on.
fn run_contained(job: Job) {
    let _ = catch_unwind(AssertUnwindSafe(job));
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn jobs_overlap_and_panics_are_contained() {
        let pool = BlockingPool::new(4).unwrap();
        let t0 = Instant::now();
        let jobs: Vec<_> = (0..4)
            .map(|i| {
                pool.run(Lane::Mailbox, move || {
                    thread::sleep(Duration::from_millis(200));
                    i * 2
                })
            })
            .collect();
        let results: Vec<_> = jobs
            .into_iter()
            .map(futures_lite::future::block_on)
            .collect();
        assert_eq!(results, vec![Ok(0), Ok(2), Ok(4), Ok(6)]);
        assert!(
            t0.elapsed() < Duration::from_millis(700),
            "{:?}",
            t0.elapsed()
        );
        for lane in [Lane::Mailbox, Lane::Urgent] {
            let failed =
                futures_lite::future::block_on(pool.run(lane, || -> u8 { panic!("boom") }));
            assert_eq!(failed, Err(JobFailed));
            assert_eq!(futures_lite::future::block_on(pool.run(lane, || 7)), Ok(7));
        }
    }

    #[test]
    fn urgent_jobs_run_while_every_shared_worker_is_blocked() {
        let pool = BlockingPool::new(2).unwrap();
        let (release, blocked) = crossbeam_channel::unbounded::<()>();
        let (started, starts) = crossbeam_channel::unbounded::<()>();
        // Every shared worker blocked, and more mailbox work queued.
        let slow: Vec<_> = (0..4)
            .map(|_| {
                let blocked = blocked.clone();
                let started = started.clone();
                pool.run(Lane::Mailbox, move || {
                    let _ = started.send(());
                    let _ = blocked.recv();
                })
            })
            .collect();
        for _ in 0..2 {
            starts.recv_timeout(Duration::from_secs(5)).unwrap();
        }
        let t0 = Instant::now();
        let urgent: Vec<_> = (0..3).map(|i| pool.run(Lane::Urgent, move || i)).collect();
        let results: Vec<_> = urgent
            .into_iter()
            .map(futures_lite::future::block_on)
            .collect();
        assert_eq!(results, vec![Ok(0), Ok(1), Ok(2)]);
        assert!(t0.elapsed() < Duration::from_secs(1), "{:?}", t0.elapsed());
        assert!(
            starts.try_recv().is_err(),
            "queued mailbox work stays queued"
        );
        drop(release);
        for job in slow {
            assert_eq!(futures_lite::future::block_on(job), Ok(()));
        }
    }

    #[test]
    fn freed_shared_workers_take_urgent_jobs_first() {
        // One shared worker and (at least) one urgent-only worker, both
        // busy; then a mailbox job and an urgent job queue: the shared
        // worker, once free, takes the urgent one, though it came later.
        let pool = BlockingPool::new(1).unwrap();
        assert_eq!(urgent_only_threads(1), 1);
        let (release_shared, shared_blocked) = crossbeam_channel::unbounded::<()>();
        let (release_urgent, urgent_blocked) = crossbeam_channel::unbounded::<()>();
        let (started, starts) = crossbeam_channel::unbounded::<&str>();
        let first = {
            let started = started.clone();
            pool.run(Lane::Mailbox, move || {
                let _ = started.send("shared busy");
                let _ = shared_blocked.recv();
            })
        };
        // Taken before `hold` is queued (it would take that first).
        assert_eq!(
            starts.recv_timeout(Duration::from_secs(5)),
            Ok("shared busy")
        );
        let hold = {
            let started = started.clone();
            pool.run(Lane::Urgent, move || {
                let _ = started.send("urgent busy");
                let _ = urgent_blocked.recv();
            })
        };
        assert_eq!(
            starts.recv_timeout(Duration::from_secs(5)),
            Ok("urgent busy")
        );
        let (order, ran) = crossbeam_channel::unbounded::<&str>();
        let mailbox = {
            let order = order.clone();
            pool.run(Lane::Mailbox, move || {
                let _ = order.send("mailbox");
            })
        };
        let urgent = pool.run(Lane::Urgent, move || {
            let _ = order.send("urgent");
        });
        drop(release_shared);
        assert_eq!(ran.recv_timeout(Duration::from_secs(5)), Ok("urgent"));
        assert_eq!(ran.recv_timeout(Duration::from_secs(5)), Ok("mailbox"));
        drop(release_urgent);
        assert_eq!(futures_lite::future::block_on(first), Ok(()));
        assert_eq!(futures_lite::future::block_on(hold), Ok(()));
        assert_eq!(futures_lite::future::block_on(mailbox), Ok(()));
        assert_eq!(futures_lite::future::block_on(urgent), Ok(()));
    }
}
