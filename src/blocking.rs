//! A pool of unpinned threads for the blocking work of the mailbox tier
//! (fsync-heavy Maildir writes, password hashing, mailbox reads), so no
//! executor stalls on it and several such calls overlap. glommio's own
//! `spawn_blocking` runs on one helper thread pinned to the executor's CPU,
//! which serialises every fsync of a core. The pool knows nothing of what
//! the jobs do.

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

/// See the module header. Create it on an unpinned thread (the main one):
/// threads inherit their creator's CPU affinity.
#[derive(Debug)]
pub struct BlockingPool {
    jobs: Sender<Job>,
}

impl BlockingPool {
    /// Starts `threads` workers (at least one).
    pub fn new(threads: usize) -> std::io::Result<Arc<BlockingPool>> {
        let (jobs, queue) = crossbeam_channel::unbounded::<Job>();
        for n in 0..threads.max(1) {
            let queue: Receiver<Job> = queue.clone();
            thread::Builder::new()
                .name(format!("spate-io-{n}"))
                .spawn(move || {
                    // Ends when every sender (the pool) is dropped.
                    for job in queue {
                        // A panicking job drops its result sender, which
                        // its caller sees as `JobFailed`; the worker lives on.
                        let _ = catch_unwind(AssertUnwindSafe(job));
                    }
                })?;
        }
        Ok(Arc::new(BlockingPool { jobs }))
    }

    /// Runs `job` on a worker; the future resolves with its result.
    pub fn run<F, R>(&self, job: F) -> impl Future<Output = Result<R, JobFailed>> + use<F, R>
    where
        F: FnOnce() -> R + Send + 'static,
        R: Send + 'static,
    {
        let (done, result) = futures_channel::oneshot::channel();
        let sent = self
            .jobs
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
                pool.run(move || {
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
        let failed = futures_lite::future::block_on(pool.run(|| -> u8 { panic!("boom") }));
        assert_eq!(failed, Err(JobFailed));
        assert_eq!(futures_lite::future::block_on(pool.run(|| 7)), Ok(7));
    }
}
