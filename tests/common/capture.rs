//! The external destination of relayed and forwarded mail in the mailbox
//! tier's tests: tests/python/capture_sink.py on its own loopback address,
//! reached through a `[[route]]`. Included with `#[path]` by the test
//! files that need it (it is not part of `common`, which every test
//! builds). It only records what arrived; tests judge.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::common::unique_loopback;

/// The sink's port (each sink has its own address, so one port is enough).
const PORT: u16 = 2526;

/// A running capture_sink.py, killed when dropped.
pub struct Sink {
    child: Child,
    out: PathBuf,
    _dir: tempfile::TempDir,
    pub addr: SocketAddr,
}

impl Sink {
    pub fn start() -> Sink {
        Sink::start_with(&[])
    }

    /// Starts a sink with capture_sink.py options (`--reject ADDR`, ...).
    pub fn start_with(args: &[&str]) -> Sink {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("received.jsonl");
        let ip: Ipv4Addr = unique_loopback();
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/capture_sink.py");
        let mut child = Command::new("python3")
            .arg(script)
            .arg(ip.to_string())
            .arg(PORT.to_string())
            .arg(&out)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx.recv_timeout(Duration::from_secs(20)).unwrap_or_default();
        if line.trim() != "ready" {
            let _ = child.kill();
            let _ = child.wait();
            panic!("capture sink did not start on {ip}:{PORT}: {line:?}");
        }
        Sink {
            child,
            out,
            _dir: dir,
            addr: SocketAddr::from((ip, PORT)),
        }
    }

    /// A `[[route]]` section sending `domain` to this sink.
    pub fn route(&self, domain: &str) -> String {
        format!("[[route]]\ndomain = {domain:?}\nto = \"{}\"\n", self.addr)
    }

    /// Every message received so far: `{"from", "to": [...], "data", "at"}`.
    pub fn messages(&self) -> Vec<serde_json::Value> {
        self.events("message")
    }

    /// Every connection so far: `{"open": N, "at": secs}`, `open` the
    /// connections open at that moment, this one included.
    pub fn connections(&self) -> Vec<serde_json::Value> {
        self.events("connection")
    }

    /// The records of one kind, in the order they were written.
    fn events(&self, kind: &str) -> Vec<serde_json::Value> {
        let text = std::fs::read_to_string(&self.out).unwrap_or_default();
        text.lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["event"] == kind)
            .collect()
    }

    /// Waits until `n` messages have arrived; panics after `timeout`.
    pub fn wait_for(&self, n: usize, timeout: Duration) -> Vec<serde_json::Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let m = self.messages();
            if m.len() >= n {
                return m;
            }
            assert!(
                Instant::now() < deadline,
                "the sink got {} of {n} messages within {timeout:?}: {m:#?}",
                m.len()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `done` every 50 ms; panics with `what` after `timeout`.
pub fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}
