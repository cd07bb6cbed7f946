//! The crash policy: a panic on a shard thread ends the whole process with
//! status [`PANIC_EXIT_STATUS`], at once, so the service manager restarts
//! it (the unit has `Restart=on-failure`) and recovery rebuilds the queue
//! from the spool, which holds every acknowledged message. Without it a
//! panicking shard would take its listeners, queue and spool down with it
//! while the process stayed up, serving less or nothing. A shard's state
//! (the spool's ledger, the queue) is not made to survive a panic halfway
//! through a change, so its sessions are not caught one by one.
//!
//! Threads that contain their panics on purpose (the resolver's lookups,
//! the blocking pool's jobs) are not shard threads and keep doing so. It
//! decides nothing else.

use std::sync::{Arc, Mutex, PoisonError};
use std::thread::ThreadId;

/// The exit status after a shard's panic (EX_SOFTWARE, sysexits.h).
pub const PANIC_EXIT_STATUS: i32 = 70;

/// The threads whose panic ends the process. Shards add themselves when
/// they start, before they touch the spool; the panic hook reads it.
#[derive(Debug, Clone, Default)]
pub struct FatalThreads(Arc<Mutex<Vec<ThreadId>>>);

impl FatalThreads {
    /// Marks the calling thread: from now on its panic ends the process
    /// (once [`install`] has run; without it nothing changes, as in tests
    /// that run shards inside the test process).
    pub fn add_current_thread(&self) {
        let id = std::thread::current().id();
        // A panic while the lock is held cannot leave the list half
        // changed: a poisoned lock is as good as a clean one.
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(id);
    }

    fn contains(&self, id: ThreadId) -> bool {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(&id)
    }
}

/// Installs the process's panic hook: the usual report (message,
/// location, a backtrace with `RUST_BACKTRACE=1`), then, for a thread of
/// `fatal`, a log line and the exit. `spate serve` calls it once, before
/// the shards start.
pub fn install(fatal: FatalThreads) {
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        report(info);
        let thread = std::thread::current();
        if !fatal.contains(thread.id()) {
            return;
        }
        let payload = info.payload();
        let message = payload
            .downcast_ref::<&str>()
            .copied()
            .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
            .unwrap_or("(not text)");
        tracing::error!(
            thread = thread.name().unwrap_or("unnamed"),
            message,
            location = %info.location().map_or("unknown".into(), |l| l.to_string()),
            status = PANIC_EXIT_STATUS,
            "a shard panicked: exiting so the service manager restarts spate; acknowledged mail is in the spool"
        );
        std::process::exit(PANIC_EXIT_STATUS);
    }));
}
