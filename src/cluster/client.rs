//! The client thread: the one connection to Redis that serves the cores'
//! lease requests (all that wait go in one pipelined round trip), beats
//! the host's heart every second (and so counts the hosts), publishes
//! this host's suspensions, and notices when Redis is lost or found:
//! then every core falls back to its share or leases again. It
//! reconnects in the background; nothing on a core ever waits for it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use super::gcra::{Ask, Scripts};
use super::health::{Health, Transition};
use super::notice::Notice;
use super::{ClusterState, CoreEvent, Request, Settings};
use crate::delivery::suspensions::Change;

/// How often the host says it is alive (and Redis is probed).
const HEARTBEAT: Duration = Duration::from_secs(1);
/// A host not heard from for this long no longer counts.
pub(super) const HOST_WINDOW: Duration = Duration::from_secs(5);
/// Lease requests served in one round trip, at most.
const MAX_PIPELINE: usize = 512;

/// See the module header.
pub(super) struct ClientThread {
    client: redis::Client,
    settings: Settings,
    scripts: Scripts,
    con: Option<redis::Connection>,
    health: Health,
    state: Arc<ClusterState>,
    cores: Vec<async_channel::Sender<CoreEvent>>,
    requests: crossbeam_channel::Receiver<Request>,
    feed: crossbeam_channel::Receiver<Change>,
    /// Changes made while Redis was away, published once it is back.
    unpublished: Vec<Change>,
    next_heartbeat: Instant,
    stop: Arc<AtomicBool>,
}

impl ClientThread {
    pub(super) fn new(
        client: redis::Client,
        settings: Settings,
        state: Arc<ClusterState>,
        cores: Vec<async_channel::Sender<CoreEvent>>,
        requests: crossbeam_channel::Receiver<Request>,
        feed: crossbeam_channel::Receiver<Change>,
        stop: Arc<AtomicBool>,
    ) -> ClientThread {
        ClientThread {
            client,
            health: Health::new(settings.hosts),
            settings,
            scripts: Scripts::default(),
            con: None,
            state,
            cores,
            requests,
            feed,
            unpublished: Vec::new(),
            next_heartbeat: Instant::now(),
            stop,
        }
    }

    pub(super) fn run(mut self) {
        while !self.stop.load(Ordering::Relaxed) {
            if Instant::now() >= self.next_heartbeat {
                self.next_heartbeat = Instant::now() + HEARTBEAT;
                self.heartbeat();
            }
            let timeout = self
                .next_heartbeat
                .saturating_duration_since(Instant::now());
            crossbeam_channel::select! {
                recv(self.requests) -> request => match request {
                    Ok(first) => self.serve(first),
                    // Every core is gone: the process is stopping.
                    Err(_) => return,
                },
                recv(self.feed) -> change => match change {
                    Ok(change) => self.publish(change),
                    Err(_) => self.feed = crossbeam_channel::never(),
                },
                default(timeout) => {}
            }
        }
    }

    /// The connection, made now if there is none (a failure is reported
    /// and retried at the next heartbeat).
    fn connection(&mut self) -> Option<&mut redis::Connection> {
        if self.con.is_none() {
            match self.connect() {
                Ok(con) => self.con = Some(con),
                Err(e) => {
                    self.failed(&e);
                    return None;
                }
            }
        }
        self.con.as_mut()
    }

    fn connect(&self) -> redis::RedisResult<redis::Connection> {
        let timeout = self.settings.timeout;
        let mut con = self.client.get_connection_with_timeout(timeout)?;
        con.set_read_timeout(Some(timeout))?;
        con.set_write_timeout(Some(timeout))?;
        self.scripts.load(&mut con)?;
        Ok(con)
    }

    /// Answers `first` and every request waiting behind it in one round
    /// trip.
    fn serve(&mut self, first: Request) {
        let mut batch = vec![first];
        batch.extend(self.requests.try_iter().take(MAX_PIPELINE - 1));
        let asks: Vec<Ask> = batch
            .iter()
            .map(
                |Request::Lease {
                     site,
                     kind,
                     rate,
                     want,
                     ..
                 }| Ask {
                    key: self.settings.rate_key(site, *kind),
                    rate: *rate,
                    want: *want,
                },
            )
            .collect();
        let scripts = self.scripts.clone();
        let result = match self.connection() {
            Some(con) => scripts.grant(con, &asks).map_err(Some),
            None => Err(None),
        };
        self.state.round_trips.fetch_add(1, Ordering::Relaxed);
        match result {
            Ok(grants) => {
                self.succeeded();
                for (
                    Request::Lease {
                        core, site, kind, ..
                    },
                    grant,
                ) in batch.into_iter().zip(grants)
                {
                    self.state.leases.fetch_add(1, Ordering::Relaxed);
                    self.state
                        .tokens
                        .fetch_add(u64::from(grant.tokens), Ordering::Relaxed);
                    self.tell(core, CoreEvent::Granted { site, kind, grant });
                }
            }
            Err(error) => {
                if let Some(e) = error {
                    self.failed(&e);
                }
                for Request::Lease {
                    core, site, kind, ..
                } in batch
                {
                    self.tell(core, CoreEvent::Refused { site, kind });
                }
            }
        }
    }

    fn heartbeat(&mut self) {
        let key = self.settings.hosts_key();
        let id = self.settings.id.clone();
        let scripts = self.scripts.clone();
        let Some(con) = self.connection() else {
            return;
        };
        let result = scripts.heartbeat(con, &key, &id, HOST_WINDOW);
        self.state.round_trips.fetch_add(1, Ordering::Relaxed);
        match result {
            Ok(hosts) => {
                self.health.heard(hosts);
                self.state
                    .hosts
                    .store(self.health.hosts(), Ordering::Relaxed);
                self.succeeded();
            }
            Err(e) => self.failed(&e),
        }
    }

    /// Sets the suspension's key (expiring with it) and publishes it; kept
    /// for later while Redis is away.
    fn publish(&mut self, change: Change) {
        if !self.health.is_up() {
            self.unpublished.push(change);
            return;
        }
        let notice = Notice::from_change(&self.settings.id, &change);
        let key = self.settings.suspension_key(notice.site());
        let channel = self.settings.suspension_channel();
        let payload = notice.encode();
        let mut pipe = redis::pipe();
        match &change {
            Change::Suspended { suspension, .. } => {
                let left = suspension
                    .until
                    .duration_since(SystemTime::now())
                    .unwrap_or_default();
                let ms = u64::try_from(left.as_millis()).unwrap_or(u64::MAX).max(1);
                pipe.cmd("SET")
                    .arg(&key)
                    .arg(&payload)
                    .arg("PX")
                    .arg(ms)
                    .ignore();
            }
            Change::Resumed { .. } => {
                pipe.cmd("DEL").arg(&key).ignore();
            }
        }
        pipe.cmd("PUBLISH").arg(&channel).arg(&payload).ignore();
        let Some(con) = self.connection() else {
            self.unpublished.push(change);
            return;
        };
        let result: redis::RedisResult<()> = pipe.query(con);
        self.state.round_trips.fetch_add(1, Ordering::Relaxed);
        match result {
            Ok(()) => {
                tracing::info!(
                    site = notice.site(),
                    "suspension change published to the cluster"
                );
                self.succeeded();
            }
            Err(e) => {
                self.failed(&e);
                self.unpublished.push(change);
            }
        }
    }

    fn succeeded(&mut self) {
        let Some(transition) = self.health.succeeded() else {
            return;
        };
        self.state.up.store(true, Ordering::Relaxed);
        let addr = self.client.get_connection_info().addr().to_string();
        if transition == Transition::Recovered {
            tracing::warn!(redis = %addr, hosts = self.health.hosts(), "cluster: redis reachable again, limits are shared again");
        } else {
            tracing::info!(redis = %addr, id = %self.settings.id, "cluster: connected to redis");
        }
        self.wake_all();
        for change in std::mem::take(&mut self.unpublished) {
            self.publish(change);
        }
    }

    fn failed(&mut self, error: &redis::RedisError) {
        self.con = None;
        if self.health.failed().is_none() {
            return;
        }
        self.state.up.store(false, Ordering::Relaxed);
        self.state
            .fallbacks
            .store(self.health.fallbacks(), Ordering::Relaxed);
        let addr = self.client.get_connection_info().addr().to_string();
        tracing::warn!(redis = %addr, error = %error, hosts = self.health.hosts(), "cluster: redis unreachable, each limit falls back to this host's share");
        self.wake_all();
    }

    fn tell(&self, core: usize, event: CoreEvent) {
        if let Some(tx) = self.cores.get(core) {
            // Unbounded; a core that stopped no longer listens.
            let _ = tx.try_send(event);
        }
    }

    fn wake_all(&self) {
        for tx in &self.cores {
            let _ = tx.try_send(CoreEvent::Wake);
        }
    }
}
