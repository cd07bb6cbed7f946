//! `UsageMeter`: one thread that measures users' stored bytes when asked,
//! so a check that must not touch the disk (an SMTP RCPT on an executor)
//! can ask for a figure it lacks, or one gone stale, and find it there a
//! moment later. Requests are deduplicated and bounded: when the queue is
//! full a request is dropped (the next check asks again).

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;

use crossbeam_channel::{Sender, TrySendError};

use super::name::UserName;
use super::store::MailStore;

/// Requests waiting at most; each is one user name.
const QUEUE: usize = 4096;

/// See the module header. Dropping it ends the thread once the queue is
/// empty.
#[derive(Debug)]
pub struct UsageMeter {
    requests: Sender<UserName>,
    /// Users asked for and not yet measured.
    waiting: Arc<Mutex<HashSet<UserName>>>,
}

impl UsageMeter {
    /// Starts the thread, measuring in `store`.
    pub fn start(store: MailStore) -> std::io::Result<UsageMeter> {
        let (requests, queue) = crossbeam_channel::bounded::<UserName>(QUEUE);
        let waiting: Arc<Mutex<HashSet<UserName>>> = Arc::default();
        let done = Arc::clone(&waiting);
        thread::Builder::new()
            .name("spate-usage".to_owned())
            .spawn(move || {
                for name in queue {
                    // A user without a Maildir yet has nothing to measure;
                    // measuring is `stored_bytes`' walk when it is needed.
                    if let Ok(mailbox) = store.user(&name) {
                        if let Err(e) = mailbox.stored_bytes() {
                            tracing::debug!(user = %name, error = %e, "cannot measure mailbox usage");
                        }
                    }
                    done.lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .remove(&name);
                }
            })?;
        Ok(UsageMeter { requests, waiting })
    }

    /// Asks for `name`'s figure to be measured (never blocks).
    pub fn request(&self, name: &UserName) {
        let mut waiting = self.waiting.lock().unwrap_or_else(PoisonError::into_inner);
        if waiting.contains(name) {
            return;
        }
        match self.requests.try_send(name.clone()) {
            Ok(()) => {
                waiting.insert(name.clone());
            }
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn a_requested_figure_appears_without_the_caller_walking() {
        let dir = tempfile::tempdir().unwrap();
        let store = MailStore::new(dir.path().join("mail"), "mx.example.test");
        let alice = UserName::new("alice").unwrap();
        store
            .ensure_user(&alice)
            .unwrap()
            .inbox()
            .deliver(&[b"12345"])
            .unwrap();
        let meter = UsageMeter::start(store.clone()).unwrap();
        assert_eq!(store.known_usage(&alice), None);
        // Asked many times, measured once; a user without a Maildir is
        // skipped.
        for _ in 0..10 {
            meter.request(&alice);
        }
        meter.request(&UserName::new("nobody").unwrap());
        let deadline = Instant::now() + Duration::from_secs(10);
        while store.known_usage(&alice).is_none() {
            assert!(Instant::now() < deadline, "never measured");
            thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(store.known_usage(&alice).unwrap().bytes, 5);
    }
}
