//! Group commit: one fdatasync covers every write that completed before it
//! started; callers wait for such a sync. Also the two single-thread wait
//! primitives it needs. It refuses to know what is being written or how a
//! failure is repaired (that is the spool's job).

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Poll, Waker};
use std::time::Instant;

use super::io::SegmentFile;
use crate::metrics::Latency;

/// Wakes every waiter when something changed. Single-threaded: wakers are
/// kept in a RefCell, no locks.
#[derive(Default)]
pub(crate) struct Signal {
    generation: Cell<u64>,
    wakers: RefCell<Vec<Waker>>,
}

impl Signal {
    pub(crate) fn notify_all(&self) {
        self.generation.set(self.generation.get().wrapping_add(1));
        for w in self.wakers.take() {
            w.wake();
        }
    }

    /// A ticket taken before checking a condition; `changed(ticket)` then
    /// cannot miss a notification that happens after the check.
    pub(crate) fn ticket(&self) -> u64 {
        self.generation.get()
    }

    pub(crate) fn changed(&self, ticket: u64) -> impl Future<Output = ()> + '_ {
        std::future::poll_fn(move |cx| {
            if self.generation.get() != ticket {
                Poll::Ready(())
            } else {
                self.wakers.borrow_mut().push(cx.waker().clone());
                Poll::Pending
            }
        })
    }
}

/// An async mutual-exclusion gate for the few steps that must not
/// interleave across awaits (reserving space, rolling a segment,
/// preallocating). Released on drop, so a cancelled holder cannot wedge it.
#[derive(Default)]
pub(crate) struct Gate {
    held: Cell<bool>,
    signal: Signal,
}

pub(crate) struct GateGuard<'a>(&'a Gate);

impl Gate {
    pub(crate) async fn enter(&self) -> GateGuard<'_> {
        loop {
            let t = self.signal.ticket();
            if !self.held.get() {
                self.held.set(true);
                return GateGuard(self);
            }
            self.signal.changed(t).await;
        }
    }
}

impl Drop for GateGuard<'_> {
    fn drop(&mut self) {
        self.0.held.set(false);
        self.0.signal.notify_all();
    }
}

/// Why a commit did not make the caller's writes durable.
#[derive(Debug, Clone)]
pub(crate) struct CommitFailed {
    /// Text of the io::Error of the failed sync (shared by a whole batch).
    pub detail: String,
}

/// Group-commit state of one segment file.
///
/// Syncs are numbered; `started` counts syncs begun, `durable` is the
/// number of the last one that succeeded. A caller whose writes are done
/// needs sync number `started + 1` (any sync already running may have begun
/// before its writes finished). The first waiter to find no sync running
/// starts one; everyone else waits for the result. Once a sync fails the
/// file is never trusted again: every later commit fails.
///
/// The sync in progress belongs to this state, not to the task that
/// started it: if that task is dropped (its session went away), another
/// waiter, or the next commit, drives the same sync to its end. Were the
/// sync abandoned instead, its failure would never be seen, and since the
/// kernel reports a writeback error once, the next fdatasync would succeed
/// over pages it had dropped (the deterministic simulation found this).
#[derive(Default)]
pub(crate) struct GroupCommit {
    started: Cell<u64>,
    durable: Cell<u64>,
    running: RefCell<Option<RunningSync>>,
    /// A task is polling `running` now.
    driving: Cell<bool>,
    failure: RefCell<Option<CommitFailed>>,
    signal: Signal,
}

/// One fdatasync in flight, with its number and start time.
struct RunningSync {
    number: u64,
    began: Instant,
    future: Pin<Box<dyn Future<Output = io::Result<()>>>>,
}

/// Gives up the driver role if the driving task is dropped mid-sync; the
/// sync stays in `running` for the next driver.
struct DriverGuard<'a>(&'a GroupCommit);

impl Drop for DriverGuard<'_> {
    fn drop(&mut self) {
        self.0.driving.set(false);
        self.0.signal.notify_all();
    }
}

impl GroupCommit {
    /// Returns once a sync that started after this call began has
    /// succeeded. Call it only after the caller's writes completed.
    /// The sync time is added to `latency`.
    pub(crate) async fn commit<F: SegmentFile + 'static>(
        &self,
        file: &Rc<F>,
        latency: &RefCell<Latency>,
    ) -> Result<(), CommitFailed> {
        let target = self.started.get() + 1;
        loop {
            if self.durable.get() >= target {
                return Ok(());
            }
            if let Some(f) = self.failure.borrow().as_ref() {
                return Err(f.clone());
            }
            let ticket = self.signal.ticket();
            if self.running.borrow().is_none() {
                let number = self.started.get() + 1;
                self.started.set(number);
                let file = Rc::clone(file);
                *self.running.borrow_mut() = Some(RunningSync {
                    number,
                    began: Instant::now(),
                    future: Box::pin(async move { file.sync_data().await }),
                });
            }
            if !self.driving.get() {
                self.driving.set(true);
                let guard = DriverGuard(self);
                let result = std::future::poll_fn(|cx| match self.running.borrow_mut().as_mut() {
                    Some(run) => run.future.as_mut().poll(cx),
                    // Only the driver takes the sync out, and it is us.
                    None => Poll::Ready(Ok(())),
                })
                .await;
                if let Some(run) = self.running.take() {
                    match result {
                        Ok(()) => {
                            latency.borrow_mut().record(run.began.elapsed());
                            self.durable.set(self.durable.get().max(run.number));
                        }
                        Err(e) => self.fail(&e),
                    }
                }
                drop(guard); // wakes the other waiters
                continue;
            }
            self.signal.changed(ticket).await;
        }
    }

    fn fail(&self, e: &io::Error) {
        let mut f = self.failure.borrow_mut();
        if f.is_none() {
            *f = Some(CommitFailed {
                detail: e.to_string(),
            });
        }
    }

    /// True once a sync of this file failed: the file must be retired.
    pub(crate) fn failed(&self) -> bool {
        self.failure.borrow().is_some()
    }
}
