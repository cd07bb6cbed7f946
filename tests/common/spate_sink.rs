//! `spate sink` as a test receiver: started on a private loopback address
//! (port picked by the kernel), its counters read on SIGUSR1 (per client
//! address too, with the EHLO names), and with `keeping` the messages it
//! accepted read back from its directory. Included with `#[path]` by the
//! test files that need it. It only reports what arrived; tests judge.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, SocketAddr};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use crate::common::{COMMAND_TIMEOUT, SPATE};

const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A running `spate sink`; killed when dropped.
pub struct SpateSink {
    child: Child,
    lines: Receiver<String>,
    pub addr: SocketAddr,
    /// With `keeping`: where the accepted messages are written.
    dir: Option<tempfile::TempDir>,
}

/// One accepted message as `--dir` kept it.
#[derive(Debug, Clone)]
pub struct Kept {
    /// `X-Sink-Peer`: the client (source) address.
    pub peer: String,
    /// `X-Sink-Helo`: the name it gave in EHLO.
    pub helo: String,
    /// The message as received (after the `X-Sink-*` lines).
    pub content: String,
}

impl SpateSink {
    /// `spate sink --listen IP:0 ARGS`.
    pub fn start(ip: Ipv4Addr, args: &[&str]) -> SpateSink {
        Self::spawn(ip, args, None)
    }

    /// The same, writing every accepted message to a directory of its own.
    pub fn keeping(ip: Ipv4Addr, args: &[&str]) -> SpateSink {
        let dir = tempfile::tempdir().expect("tempdir");
        Self::spawn(ip, args, Some(dir))
    }

    fn spawn(ip: Ipv4Addr, args: &[&str], dir: Option<tempfile::TempDir>) -> SpateSink {
        let mut cmd = Command::new(SPATE);
        cmd.arg("sink")
            .arg("--listen")
            .arg(format!("{ip}:0"))
            .args(args);
        if let Some(dir) = &dir {
            cmd.arg("--dir").arg(dir.path());
        }
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn spate sink");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let deadline = Instant::now() + START_TIMEOUT;
        let mut addr = None;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = lines.recv_timeout(left).expect("sink never printed ready");
            if let Some(a) = line.strip_prefix("listening smtp ") {
                addr = Some(a.parse().expect("listen address"));
            }
            if line == "ready" {
                break;
            }
        }
        SpateSink {
            child,
            lines,
            addr: addr.expect("a listening line"),
            dir,
        }
    }

    /// A `[[route]]` section sending `domain` to this sink.
    pub fn route(&self, domain: &str) -> String {
        format!("[[route]]\ndomain = {domain:?}\nto = \"{}\"\n", self.addr)
    }

    pub fn signal(&self, signal: i32) {
        // The pid is our own child's.
        unsafe { libc::kill(self.child.id() as i32, signal) };
    }

    /// The next `counters {json}` line.
    pub fn next_counters(&self) -> serde_json::Value {
        let deadline = Instant::now() + COMMAND_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self.lines.recv_timeout(left).expect("no counters line");
            if let Some(json) = line.strip_prefix("counters ") {
                return serde_json::from_str(json).expect("counters JSON");
            }
        }
    }

    /// The counters now (SIGUSR1).
    pub fn counters(&self) -> serde_json::Value {
        self.signal(libc::SIGUSR1);
        self.next_counters()
    }

    /// Waits until `n` messages were accepted (and, with `keeping`, their
    /// files written whole); the counters then.
    pub fn wait_for(&self, n: u64, timeout: Duration) -> serde_json::Value {
        let deadline = Instant::now() + timeout;
        loop {
            let c = self.counters();
            // A keeping sink counts a message before its file is whole:
            // wait for the files too.
            let kept = self.dir.is_none() || self.kept_files().len() as u64 >= n;
            if c["messages"].as_u64().unwrap_or(0) >= n && kept {
                return c;
            }
            assert!(
                Instant::now() < deadline,
                "the sink got {} of {n} messages within {timeout:?}: {c:#}",
                c["messages"]
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The files of the messages kept so far, whole (one still being
    /// written has a hidden name).
    fn kept_files(&self) -> Vec<std::path::PathBuf> {
        let dir = self.dir.as_ref().expect("a sink started with keeping()");
        std::fs::read_dir(dir.path())
            .expect("sink directory")
            .map(|entry| entry.expect("entry").path())
            .filter(|p| {
                !p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with('.'))
            })
            .collect()
    }

    /// The messages accepted so far (with `keeping`).
    pub fn kept(&self) -> Vec<Kept> {
        let mut out = Vec::new();
        for path in self.kept_files() {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            let mut kept = Kept {
                peer: String::new(),
                helo: String::new(),
                content: String::new(),
            };
            let mut rest = text.as_str();
            while let Some((line, after)) = rest.split_once("\r\n") {
                if let Some(v) = line.strip_prefix("X-Sink-Peer: ") {
                    kept.peer = v.to_owned();
                } else if let Some(v) = line.strip_prefix("X-Sink-Helo: ") {
                    kept.helo = v.to_owned();
                } else if !line.starts_with("X-Sink-") {
                    break;
                }
                rest = after;
            }
            kept.content = rest.to_owned();
            out.push(kept);
        }
        out
    }

    /// The messages accepted so far (with `keeping`) byte for byte, 8-bit
    /// octets included, without the sink's `X-Sink-*` lines.
    pub fn kept_bytes(&self) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        for path in self.kept_files() {
            let bytes = std::fs::read(path).unwrap_or_default();
            let mut rest = &bytes[..];
            while rest.starts_with(b"X-Sink-") {
                match rest.windows(2).position(|w| w == b"\r\n") {
                    Some(end) => rest = &rest[end + 2..],
                    None => break,
                }
            }
            out.push(rest.to_vec());
        }
        out
    }

    /// SIGTERM, then the final counters and a clean exit.
    pub fn stop(mut self) -> serde_json::Value {
        self.signal(libc::SIGTERM);
        let counters = self.next_counters();
        self.wait_exit();
        counters
    }

    pub fn wait_exit(&mut self) {
        let deadline = Instant::now() + COMMAND_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                assert!(status.success(), "sink exited with {status}");
                return;
            }
            assert!(Instant::now() < deadline, "sink did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for SpateSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
