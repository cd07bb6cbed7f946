//! Durable acknowledgement, proven through the spool's own I/O seam: a
//! shard runs in-process with a segment store whose fdatasync the test
//! holds or fails. No 250 may leave before the sync that covers the
//! message has completed, and a failed sync answers 451 and keeps nothing
//! (the segment is retired; the next message goes to a new one).

mod common;

use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use common::smtp::Client;
use spate::config::Config;
use spate::session::limits::{ConnectionLimits, PerAddress};
use spate::shard::{self, ShardPlan, ShardReport};
use spate::spool::{GlommioSegmentFile, GlommioStore, SegmentFile, SegmentStore};

/// What the test controls and observes from its own thread.
#[derive(Clone, Default)]
struct Control {
    hold_syncs: Arc<AtomicBool>,
    /// The next this many syncs fail with EIO.
    fail_next_syncs: Arc<AtomicUsize>,
    syncs_started: Arc<AtomicUsize>,
    syncs_completed: Arc<AtomicUsize>,
}

/// The production store with a sync the test can hold or fail.
struct ControlledStore {
    inner: GlommioStore,
    control: Control,
}

struct ControlledFile {
    inner: GlommioSegmentFile,
    control: Control,
}

impl SegmentFile for ControlledFile {
    async fn write_at(&self, buf: Vec<u8>, pos: u64) -> io::Result<usize> {
        self.inner.write_at(buf, pos).await
    }

    async fn sync_data(&self) -> io::Result<()> {
        self.control.syncs_started.fetch_add(1, Ordering::SeqCst);
        while self.control.hold_syncs.load(Ordering::SeqCst) {
            glommio::timer::sleep(Duration::from_millis(2)).await;
        }
        let fail = self
            .control
            .fail_next_syncs
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if fail {
            return Err(io::Error::from_raw_os_error(libc::EIO));
        }
        self.inner.sync_data().await?;
        self.control.syncs_completed.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    async fn allocate(&self, len: u64) -> io::Result<()> {
        self.inner.allocate(len).await
    }
}

impl SegmentStore for ControlledStore {
    type File = ControlledFile;

    async fn create(&self, path: &Path) -> io::Result<ControlledFile> {
        Ok(ControlledFile {
            inner: self.inner.create(path).await?,
            control: self.control.clone(),
        })
    }

    async fn remove(&self, path: &Path) -> io::Result<()> {
        self.inner.remove(path).await
    }

    async fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.inner.sync_dir(dir).await
    }
}

/// One in-process shard on its own loopback address.
struct Shard {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    control: Control,
    _control_inbox: async_channel::Sender<spate::control::ShardCommand>,
    _reload_inbox: async_channel::Sender<Arc<spate::reload::LiveSettings>>,
    handle: Option<glommio::ExecutorJoinHandle<spate::metrics::Metrics>>,
    _dir: tempfile::TempDir,
    spool_dir: std::path::PathBuf,
}

impl Shard {
    fn start(control: &Control) -> Shard {
        let dir = tempfile::tempdir().expect("tempdir");
        let spool_dir = dir.path().join("spool");
        let ip = common::unique_loopback();
        let port = std::net::TcpListener::bind((ip, 0))
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let addr = SocketAddr::from((ip, port));
        let config = Config::parse(&format!(
            "hostname = \"mx.test\"\nspool_dir = {:?}\n[[listener]]\naddress = \"{addr}\"\nprotocol = \"smtp\"\n\
             [local]\ndomains = [\"example.test\"]\n[dns]\nnameservers = [\"{ip}:53\"]\n",
            spool_dir.display().to_string()
        ))
        .expect("config");
        let config = Arc::new(config);
        let (reports, inbox) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let resolver = spate::resolver::DnsResolver::start(
            spate::resolver::ResolverConfig::from_config(&config),
        )
        .expect("resolver thread");
        // Nothing sends control requests here; the inbox just stays open.
        let (control_inbox, control_requests) = async_channel::unbounded();
        // Nor reloads.
        let (reload_inbox, reloads) = async_channel::unbounded();
        let plan = ShardPlan {
            index: 0,
            adopt: vec![0],
            limits: ConnectionLimits::new(100, PerAddress::same(100)),
            listeners: vec![(spate::config::Protocol::Smtp, addr)],
            local: None,
            blocking: spate::blocking::BlockingPool::new(1).unwrap(),
            live: Arc::new(spate::reload::LiveSettings::load(&config).expect("no tls")),
            reloads,
            config,
            stop: Arc::clone(&stop),
            reports,
            resolver: resolver.handle(),
            outbound_tls: spate::tls::client_config(false, None).expect("tls"),
            smarthost_tls: None,
            control: control_requests,
            // No metrics endpoint: a closed inbox ends the shard's scrape task.
            snapshots: async_channel::bounded(1).1,
            sites: Default::default(),
            cluster: None,
            // No panic hook is installed in this process: inert.
            fatal: Default::default(),
            events: None,
        };
        let control_for_test = control.clone();
        let control = control.clone();
        let handle = shard::spawn_with(plan, 0, move || ControlledStore {
            inner: GlommioStore,
            control,
        })
        .expect("spawn shard");
        match inbox.recv_timeout(Duration::from_secs(20)) {
            Ok(ShardReport::Ready { .. }) => {}
            other => panic!("shard did not start: {other:?}"),
        }
        Shard {
            addr,
            stop,
            control: control_for_test,
            _control_inbox: control_inbox,
            _reload_inbox: reload_inbox,
            handle: Some(handle),
            _dir: dir,
            spool_dir,
        }
    }

    fn stop(&mut self) {
        // A held sync would keep the shard from ever finishing.
        self.control.hold_syncs.store(false, Ordering::SeqCst);
        self.stop.store(true, Ordering::SeqCst);
        if let Some(handle) = self.handle.take() {
            handle.join().expect("shard exits cleanly");
        }
    }
}

impl Drop for Shard {
    fn drop(&mut self) {
        self.stop();
    }
}

fn start_data(client: &mut Client, from: &str) {
    assert_eq!(client.cmd(&format!("MAIL FROM:<{from}>")).code, 250);
    assert_eq!(client.cmd("RCPT TO:<rcpt@example.test>").code, 250);
    assert_eq!(client.cmd("DATA").code, 354);
    client.send(b"Subject: durable\r\n\r\nbody\r\n.\r\n");
}

#[test]
fn no_250_before_the_covering_sync_completes() {
    let control = Control::default();
    let mut shard = Shard::start(&control);
    let mut client = Client::connect(shard.addr);
    client.read_reply();
    client.ehlo("client.test");
    control.hold_syncs.store(true, Ordering::SeqCst);
    start_data(&mut client, "held@client.test");

    // The message is written and its sync has begun, but is held: no reply
    // may come, however long we wait.
    let deadline = Instant::now() + Duration::from_secs(10);
    while control.syncs_started.load(Ordering::SeqCst) == 0 {
        assert!(Instant::now() < deadline, "no sync was ever started");
        std::thread::sleep(Duration::from_millis(5));
    }
    match client.read_reply_within(Duration::from_millis(800)) {
        Err(e) if e.kind() == io::ErrorKind::TimedOut => {}
        other => panic!("a reply left before the sync completed: {other:?}"),
    }
    assert_eq!(control.syncs_completed.load(Ordering::SeqCst), 0);

    control.hold_syncs.store(false, Ordering::SeqCst);
    let reply = client.read_reply();
    assert_eq!(reply.status(), "250 2.0.0", "{reply:?}");
    assert!(control.syncs_completed.load(Ordering::SeqCst) >= 1);
    let id = reply.queue_id().expect("queue id");
    client.quit();
    shard.stop();
    let queued = spate::spool::scan_dir(&shard.spool_dir).expect("scan");
    assert_eq!(queued.len(), 1);
    assert_eq!(queued[0].id.to_string(), id);
}

#[test]
fn a_failed_sync_answers_451_and_keeps_nothing() {
    let control = Control::default();
    let mut shard = Shard::start(&control);
    let mut client = Client::connect(shard.addr);
    client.read_reply();
    client.ehlo("client.test");

    control.fail_next_syncs.store(1, Ordering::SeqCst);
    start_data(&mut client, "lost@client.test");
    let reply = client.read_reply();
    assert_eq!(reply.status(), "451 4.3.0", "{reply:?}");

    // The session goes on; the failed segment is retired, the next message
    // lands in a new one and is acknowledged.
    start_data(&mut client, "kept@client.test");
    let reply = client.read_reply();
    assert_eq!(reply.status(), "250 2.0.0", "{reply:?}");
    client.quit();
    shard.stop();

    let queued = spate::spool::scan_dir(&shard.spool_dir).expect("scan");
    let senders: Vec<&str> = queued.iter().map(|m| m.envelope.sender.as_str()).collect();
    assert_eq!(
        senders,
        ["kept@client.test"],
        "the 451 message must not survive"
    );
}
