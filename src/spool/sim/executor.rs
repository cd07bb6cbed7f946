//! A single-threaded executor whose only scheduler is the caller: it polls
//! the task it is told to, so a seeded schedule decides every
//! interleaving of tasks at their await points. Tests only; it knows
//! nothing of spools or disks.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Wake, Waker};

struct Flag(AtomicBool);

impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.0.store(true, Ordering::Relaxed);
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.0.store(true, Ordering::Relaxed);
    }
}

struct Task {
    name: String,
    future: Pin<Box<dyn Future<Output = ()>>>,
    woken: Arc<Flag>,
}

/// Tasks by number; a finished or cancelled task leaves its slot empty.
#[derive(Default)]
pub(crate) struct Executor {
    tasks: Vec<Option<Task>>,
}

impl Executor {
    /// Adds a task, runnable at once.
    pub(crate) fn spawn(&mut self, name: String, future: impl Future<Output = ()> + 'static) {
        let task = Task {
            name,
            future: Box::pin(future),
            woken: Arc::new(Flag(AtomicBool::new(true))),
        };
        match self.tasks.iter_mut().find(|t| t.is_none()) {
            Some(slot) => *slot = Some(task),
            None => self.tasks.push(Some(task)),
        }
    }

    /// Tasks that were woken and wait to be polled.
    pub(crate) fn runnable(&self) -> Vec<usize> {
        self.live()
            .filter(|&i| {
                self.tasks[i]
                    .as_ref()
                    .is_some_and(|t| t.woken.0.load(Ordering::Relaxed))
            })
            .collect()
    }

    /// Every task not finished yet.
    pub(crate) fn live(&self) -> impl Iterator<Item = usize> + '_ {
        self.tasks
            .iter()
            .enumerate()
            .filter(|(_, t)| t.is_some())
            .map(|(i, _)| i)
    }

    pub(crate) fn len(&self) -> usize {
        self.live().count()
    }

    pub(crate) fn name(&self, i: usize) -> &str {
        self.tasks[i].as_ref().map_or("", |t| t.name.as_str())
    }

    /// Polls task `i` once; returns true if it finished.
    pub(crate) fn poll(&mut self, i: usize) -> bool {
        let Some(task) = self.tasks[i].as_mut() else {
            return true;
        };
        task.woken.0.store(false, Ordering::Relaxed);
        let waker = Waker::from(Arc::clone(&task.woken));
        let mut cx = Context::from_waker(&waker);
        // Take the future out while polling so the task may spawn nothing
        // re-entrantly into this slot (it cannot reach the executor anyway).
        let done = task.future.as_mut().poll(&mut cx).is_ready();
        if done {
            self.tasks[i] = None;
        }
        done
    }

    /// Drops task `i` at its current await point (a session that went
    /// away, a timeout firing).
    pub(crate) fn cancel(&mut self, i: usize) {
        if let Some(task) = self.tasks.get_mut(i).and_then(Option::take) {
            drop(task);
        }
    }

    /// Drops every task (a crash or the end of a restart).
    pub(crate) fn clear(&mut self) {
        let tasks = std::mem::take(&mut self.tasks);
        drop(tasks);
    }
}
