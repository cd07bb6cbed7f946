//! The subscriber thread: listens on the cluster's suspension channel
//! and applies the other hosts' suspensions and resumes to this host's
//! table, then wakes every core so its engine sees them at once. On each
//! (re)connect it first reads the suspensions still in force (their keys
//! expire with them), so a host that starts or reconnects later misses
//! none. It publishes nothing (see `client`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::notice::{Action, Notice};
use super::{CoreEvent, Settings};
use crate::delivery::suspensions::Suspensions;

/// How long a read waits before the stop flag is looked at again.
const READ_TICK: Duration = Duration::from_secs(1);
/// Between attempts to reconnect.
const RETRY: Duration = Duration::from_secs(1);

/// See the module header.
pub(super) struct Subscriber {
    client: redis::Client,
    settings: Settings,
    suspensions: Arc<Suspensions>,
    cores: Vec<async_channel::Sender<CoreEvent>>,
    stop: Arc<AtomicBool>,
}

impl Subscriber {
    pub(super) fn new(
        client: redis::Client,
        settings: Settings,
        suspensions: Arc<Suspensions>,
        cores: Vec<async_channel::Sender<CoreEvent>>,
        stop: Arc<AtomicBool>,
    ) -> Subscriber {
        Subscriber {
            client,
            settings,
            suspensions,
            cores,
            stop,
        }
    }

    pub(super) fn run(self) {
        while !self.stop.load(Ordering::Relaxed) {
            if let Err(e) = self.listen() {
                // The client thread reports Redis being away; this one
                // only tries again.
                tracing::debug!(error = %e, "cluster: suspension subscriber reconnecting");
            }
            std::thread::sleep(RETRY);
        }
    }

    /// One connection's life: subscribe, read what is in force, apply
    /// every notice until the connection breaks or the process stops.
    fn listen(&self) -> redis::RedisResult<()> {
        let timeout = self.settings.timeout;
        let mut con = self.client.get_connection_with_timeout(timeout)?;
        con.set_write_timeout(Some(timeout))?;
        let mut pubsub = con.as_pubsub();
        pubsub.subscribe(self.settings.suspension_channel())?;
        pubsub.set_read_timeout(Some(READ_TICK))?;
        // Subscribed first, then read: nothing falls between the two.
        self.read_in_force()?;
        while !self.stop.load(Ordering::Relaxed) {
            match pubsub.get_message() {
                Ok(message) => self.apply(message.get_payload_bytes()),
                Err(e) if e.is_timeout() => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Applies every suspension whose key is still there.
    fn read_in_force(&self) -> redis::RedisResult<()> {
        let mut con = self
            .client
            .get_connection_with_timeout(self.settings.timeout)?;
        con.set_read_timeout(Some(self.settings.timeout))?;
        let pattern = self.settings.suspension_key("*");
        let mut cursor = 0u64;
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(200)
                .query(&mut con)?;
            if !keys.is_empty() {
                let payloads: Vec<Option<Vec<u8>>> =
                    redis::cmd("MGET").arg(&keys).query(&mut con)?;
                for payload in payloads.into_iter().flatten() {
                    self.apply(&payload);
                }
            }
            if next == 0 {
                return Ok(());
            }
            cursor = next;
        }
    }

    fn apply(&self, payload: &[u8]) {
        let changed = match Notice::decode(payload, &self.settings.id) {
            Some(Action::Suspend { site, suspension }) => {
                let reason = suspension.reason.clone();
                let bounce = suspension.bounce;
                let changed = suspension.until > SystemTime::now()
                    && self.suspensions.suspend_from_peer(site.clone(), suspension);
                if changed {
                    tracing::warn!(%site, reason, bounce, "site suspended by another host");
                }
                changed
            }
            Some(Action::Resume { site }) => {
                let changed = self.suspensions.resume_from_peer(&site);
                if changed {
                    tracing::info!(%site, "site resumed by another host");
                }
                changed
            }
            None => false,
        };
        if changed {
            for tx in &self.cores {
                let _ = tx.try_send(CoreEvent::Wake);
            }
        }
    }
}
