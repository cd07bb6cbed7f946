//! The integration-test harness: runs the real `spate` binary on a private
//! loopback address with a config written into a temporary directory, and
//! gives tests a raw SMTP client, the queue listing, and runners for the
//! Python and swaks clients. Every wait has a timeout; the server process is
//! killed when the harness is dropped. It never talks to a non-loopback
//! address and never uses a fixed port.
#![allow(dead_code)]

pub mod dns;
pub mod mailbox;
pub mod smtp;

use std::collections::hash_map::DefaultHasher;
use std::fmt::Write as _;
use std::hash::{Hash, Hasher};
use std::io::{BufRead, BufReader, Read, Write as _};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[allow(unused_imports)]
pub use smtp::{Client, Reply};

/// The binary under test.
pub const SPATE: &str = env!("CARGO_BIN_EXE_spate");

/// How long a server may take to print `ready`.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a stopping server may take to exit after SIGTERM.
const EXIT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a helper command (queue list, python, swaks) may run.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(45);

/// The local domain every test config declares.
pub const LOCAL_DOMAIN: &str = "example.test";

/// Changes to the default test configuration.
#[derive(Debug, Clone)]
pub struct Tweaks {
    pub cores: usize,
    pub hostname: String,
    pub shutdown_grace: String,
    /// `None`: 127.0.0.0/8 may relay. `Some(vec![])`: nobody may relay.
    pub allow_networks: Option<Vec<String>>,
    pub local_domains: Vec<String>,
    /// Generate a certificate and configure `[tls]`.
    pub tls: bool,
    /// `[smtp]` keys with raw TOML values (`"\"1s\""`, `"5"`).
    pub smtp: Vec<(String, String)>,
    /// `[spool]` keys with raw TOML values.
    pub spool: Vec<(String, String)>,
    /// Use this spool directory instead of one inside the test's tempdir.
    pub spool_dir: Option<PathBuf>,
    /// Listening port (0: any free one). MX tests need one shared port,
    /// which is safe because every server has its own address.
    pub port: u16,
    /// The DNS server for MX lookups (default: a closed local port).
    pub dns: Option<SocketAddr>,
    /// Raw TOML appended to the configuration (`[delivery]`, `[[route]]`).
    pub extra: String,
    /// More `[relay]` keys with raw TOML values.
    pub relay: Vec<(String, String)>,
    /// More listeners on the same address, port 0: "submission",
    /// "submissions", "pop3", "pop3s".
    pub listeners: Vec<String>,
    /// Users (name, password) of the mailbox tier, written with `{PLAIN}`
    /// to `<dir>/users`; with any (or `mailboxes`), `[local] mailbox_dir`
    /// is `<dir>/mail`.
    pub users: Vec<(String, String)>,
    pub mailboxes: bool,
    /// More `[local]` keys with raw TOML values (`quota`, `catch_all`).
    pub local: Vec<(String, String)>,
    /// `<dir>/aliases`, written when non-empty.
    pub aliases: String,
    /// Environment variables for the server process (NOTIFY_SOCKET, ...).
    pub env: Vec<(String, String)>,
    /// The umask the server process starts with (default: the test's).
    pub umask: Option<u32>,
}

impl Default for Tweaks {
    fn default() -> Self {
        Tweaks {
            cores: 2,
            hostname: "mx.test".into(),
            shutdown_grace: "5s".into(),
            allow_networks: None,
            local_domains: vec![LOCAL_DOMAIN.into()],
            tls: false,
            smtp: Vec::new(),
            spool: Vec::new(),
            spool_dir: None,
            port: 0,
            dns: None,
            extra: String::new(),
            relay: Vec::new(),
            listeners: Vec::new(),
            users: Vec::new(),
            mailboxes: false,
            local: Vec::new(),
            aliases: String::new(),
            env: Vec::new(),
            umask: None,
        }
    }
}

impl Tweaks {
    /// Sets an `[smtp]` key to a raw TOML value.
    pub fn smtp(mut self, key: &str, toml_value: impl ToString) -> Self {
        self.smtp.push((key.into(), toml_value.to_string()));
        self
    }
    /// Sets an `[smtp]` key to a TOML string.
    pub fn smtp_str(self, key: &str, value: &str) -> Self {
        let quoted = format!("{value:?}");
        self.smtp(key, quoted)
    }
    pub fn spool(mut self, key: &str, toml_value: impl ToString) -> Self {
        self.spool.push((key.into(), toml_value.to_string()));
        self
    }
    pub fn tls(mut self) -> Self {
        self.tls = true;
        self
    }
    pub fn cores(mut self, n: usize) -> Self {
        self.cores = n;
        self
    }
    pub fn no_relay(mut self) -> Self {
        self.allow_networks = Some(Vec::new());
        self
    }
    pub fn hostname(mut self, name: &str) -> Self {
        self.hostname = name.into();
        self
    }
    pub fn local_domains(mut self, domains: &[&str]) -> Self {
        self.local_domains = domains.iter().map(|d| d.to_string()).collect();
        self
    }
    pub fn port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }
    pub fn dns(mut self, server: SocketAddr) -> Self {
        self.dns = Some(server);
        self
    }
    /// Appends raw TOML (whole sections) to the configuration.
    pub fn extra(mut self, toml: &str) -> Self {
        self.extra.push('\n');
        self.extra.push_str(toml);
        self
    }
    /// Sets a `[relay]` key to a raw TOML value.
    pub fn relay(mut self, key: &str, toml_value: impl ToString) -> Self {
        self.relay.push((key.into(), toml_value.to_string()));
        self
    }
    /// Adds a listener for `protocol` on the server's address.
    pub fn listener(mut self, protocol: &str) -> Self {
        self.listeners.push(protocol.to_owned());
        self
    }

    /// Adds a user of the mailbox tier (and so the tier itself).
    pub fn user(mut self, name: &str, password: &str) -> Self {
        self.users.push((name.to_owned(), password.to_owned()));
        self.mailboxes = true;
        self
    }

    /// Sets a `[local]` key to a raw TOML value.
    pub fn local(mut self, key: &str, toml_value: impl ToString) -> Self {
        self.local.push((key.to_owned(), toml_value.to_string()));
        self.mailboxes = true;
        self
    }

    /// The aliases file's text (`name: target, ...`).
    pub fn aliases(mut self, text: &str) -> Self {
        self.aliases = text.to_owned();
        self.mailboxes = true;
        self
    }

    /// Sets an environment variable of the server process.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Starts the server with this umask (as a shell's `umask` would).
    pub fn umask(mut self, mask: u32) -> Self {
        self.umask = Some(mask);
        self
    }

    pub fn shutdown_grace(mut self, g: &str) -> Self {
        self.shutdown_grace = g.into();
        self
    }
}

/// Certificate files for STARTTLS: a test CA and a leaf signed by it for
/// "localhost" and the server's loopback address.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub ca: PathBuf,
    pub certificate: PathBuf,
    pub private_key: PathBuf,
}

/// One line of `spate queue list --json`.
#[derive(Debug, Clone)]
pub struct Queued {
    pub id: String,
    pub from: String,
    pub to: Vec<String>,
    pub size: u64,
    pub age_seconds: Option<u64>,
    pub raw: serde_json::Value,
}

/// What a stopped server left behind.
#[derive(Debug)]
pub struct Shutdown {
    pub status: ExitStatus,
    /// The JSON of the `stats {json}` line, if one was printed.
    pub stats: Option<serde_json::Value>,
    /// Every stdout line after `ready`.
    pub stdout: Vec<String>,
}

/// A running (or stopped) `spate serve` with its own config, spool and
/// loopback address.
pub struct TestServer {
    pub dir: tempfile::TempDir,
    pub config_path: PathBuf,
    pub spool_dir: PathBuf,
    pub ip: Ipv4Addr,
    /// The first smtp listener's resolved address.
    pub smtp: SocketAddr,
    /// Every `listening <protocol> <addr>` line of the last start.
    pub listeners: Vec<(String, SocketAddr)>,
    pub tls: Option<TlsFiles>,
    pub tweaks: Tweaks,
    child: Option<Child>,
    lines: Option<Receiver<String>>,
    stderr: Arc<Mutex<String>>,
    starts: u32,
}

static SERVERS: AtomicU32 = AtomicU32::new(0);

/// A loopback address unlikely to be used by any other test running at the
/// same time: derived from the test (thread) name, the pid and a counter.
pub fn unique_loopback() -> Ipv4Addr {
    let mut h = DefaultHasher::new();
    std::thread::current().name().unwrap_or("main").hash(&mut h);
    std::process::id().hash(&mut h);
    SERVERS.fetch_add(1, Ordering::Relaxed).hash(&mut h);
    Instant::now().hash(&mut h);
    let v = h.finish();
    // 127.1.0.1 .. 127.254.255.254: never 127.0.0.x (shared by everything).
    let a = 1 + (v % 254) as u8;
    let b = ((v >> 8) % 256) as u8;
    let c = 1 + ((v >> 16) % 254) as u8;
    Ipv4Addr::new(127, a, b, c)
}

impl TestServer {
    /// Writes the config and starts the server; panics (with the server's
    /// stderr) if it does not print `ready` in time.
    pub fn start(tweaks: Tweaks) -> TestServer {
        let dir = tempfile::Builder::new()
            .prefix("spate-test-")
            .tempdir()
            .expect("tempdir");
        let ip = unique_loopback();
        let spool_dir = tweaks
            .spool_dir
            .clone()
            .unwrap_or_else(|| dir.path().join("spool"));
        let tls = tweaks.tls.then(|| make_tls_files(dir.path(), ip));
        let config_path = dir.path().join("spate.toml");
        if tweaks.mailboxes {
            let users: String = tweaks
                .users
                .iter()
                .map(|(name, password)| format!("{name}:{{PLAIN}}{password}\n"))
                .collect();
            std::fs::write(dir.path().join("users"), users).expect("write users");
            if !tweaks.aliases.is_empty() {
                std::fs::write(dir.path().join("aliases"), &tweaks.aliases).expect("write aliases");
            }
        }
        let text = render_config(&tweaks, ip, &spool_dir, tls.as_ref(), dir.path());
        std::fs::write(&config_path, text).expect("write config");
        let mut server = TestServer {
            dir,
            config_path,
            spool_dir,
            ip,
            smtp: SocketAddr::from((ip, 0)),
            listeners: Vec::new(),
            tls,
            tweaks,
            child: None,
            lines: None,
            stderr: Arc::new(Mutex::new(String::new())),
            starts: 0,
        };
        server.spawn();
        server
    }

    /// The config text the server runs on.
    /// The resolved address of the first listener for `protocol`.
    pub fn listener(&self, protocol: &str) -> SocketAddr {
        self.listeners
            .iter()
            .find(|(p, _)| p == protocol)
            .map(|(_, a)| *a)
            .unwrap_or_else(|| panic!("no {protocol} listener: {:?}", self.listeners))
    }

    /// `[local] mailbox_dir` (with `Tweaks::user` and friends).
    pub fn mail_dir(&self) -> PathBuf {
        self.dir.path().join("mail")
    }

    /// The users file, for `spate user` and edits.
    pub fn users_file(&self) -> PathBuf {
        self.dir.path().join("users")
    }

    pub fn config_text(&self) -> String {
        std::fs::read_to_string(&self.config_path).expect("read config")
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("server is running").id()
    }

    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    fn spawn(&mut self) {
        assert!(self.child.is_none(), "server already running");
        self.starts += 1;
        {
            let mut e = self.stderr.lock().unwrap();
            let _ = writeln!(e, "----- start #{} -----", self.starts);
        }
        let mut command = Command::new(SPATE);
        if let Some(mask) = self.tweaks.umask {
            use std::os::unix::process::CommandExt;
            // SAFETY: umask is async-signal-safe and touches no memory, as
            // a pre_exec hook (between fork and exec) must.
            unsafe {
                command.pre_exec(move || {
                    libc::umask(mask as libc::mode_t);
                    Ok(())
                });
            }
        }
        let mut child = command
            .envs(self.tweaks.env.iter().map(|(k, v)| (k, v)))
            .arg("serve")
            .arg("--config")
            .arg(&self.config_path)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {SPATE}: {e}"));
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let sink = Arc::clone(&self.stderr);
        let echo = std::env::var_os("SPATE_TEST_ECHO").is_some();
        // The whole of stderr, never truncated, for tests that count lines
        // of a long run (the in-memory copy keeps only the last MiBs).
        let mut log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.stderr_log())
            .ok();
        if let Some(f) = log.as_mut() {
            let _ = writeln!(f, "----- start #{} -----", self.starts);
        }
        std::thread::spawn(move || {
            let mut r = BufReader::new(stderr);
            let mut line = String::new();
            loop {
                line.clear();
                match r.read_line(&mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        if echo {
                            eprint!("[spate] {line}");
                        }
                        if let Some(f) = log.as_mut() {
                            let _ = f.write_all(line.as_bytes());
                        }
                        let mut s = sink.lock().unwrap();
                        // Keep memory bounded on very chatty servers.
                        if s.len() > 4 << 20 {
                            let cut = s.len() - (2 << 20);
                            let cut = (cut..s.len()).find(|&i| s.is_char_boundary(i)).unwrap_or(0);
                            s.replace_range(..cut, "[...]\n");
                        }
                        s.push_str(&line);
                    }
                }
            }
        });
        self.child = Some(child);
        self.lines = Some(rx);
        self.wait_ready();
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + READY_TIMEOUT;
        let mut listeners = Vec::new();
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let rx = self.lines.as_ref().expect("stdout reader");
            match rx.recv_timeout(left) {
                Ok(line) => {
                    seen.push(line.clone());
                    let line = line.trim();
                    if line == "ready" {
                        break;
                    }
                    let mut words = line.split_whitespace();
                    if words.next() == Some("listening") {
                        let proto = words.next().unwrap_or_default().to_owned();
                        let addr: SocketAddr = words
                            .next()
                            .and_then(|a| a.parse().ok())
                            .unwrap_or_else(|| panic!("bad listening line {line:?}"));
                        listeners.push((proto, addr));
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    self.kill_now();
                    panic!(
                        "spate did not print `ready` within {READY_TIMEOUT:?}; stdout {seen:?}\nstderr:\n{}",
                        self.stderr_text()
                    );
                }
                Err(RecvTimeoutError::Disconnected) => {
                    let status = self.child.as_mut().and_then(|c| c.wait().ok());
                    self.child = None;
                    panic!(
                        "spate exited before `ready` ({status:?}); stdout {seen:?}\nstderr:\n{}",
                        self.stderr_text()
                    );
                }
            }
        }
        let smtp = listeners
            .iter()
            .find(|(p, _)| p == "smtp")
            .map(|(_, a)| *a)
            .unwrap_or_else(|| panic!("no `listening smtp` line before ready: {seen:?}"));
        assert_eq!(
            smtp.ip(),
            std::net::IpAddr::V4(self.ip),
            "listener on the configured ip"
        );
        assert_ne!(
            smtp.port(),
            0,
            "port 0 must be resolved in the listening line"
        );
        self.smtp = smtp;
        self.listeners = listeners;
    }

    /// Waits for the server to print `wanted` as a whole stdout line
    /// (after `ready`); panics with what it printed instead on timeout.
    pub fn wait_stdout_line(&self, wanted: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let rx = self.lines.as_ref().expect("stdout reader");
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) if line.trim() == wanted => return,
                Ok(line) => seen.push(line),
                Err(e) => panic!(
                    "no stdout line {wanted:?} within {timeout:?} ({e:?}); saw {seen:?}\nstderr:\n{}",
                    self.stderr_text()
                ),
            }
        }
    }

    /// Everything the server wrote to stderr so far (all runs).
    pub fn stderr_text(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// The file holding all of the server's stderr (every start, in
    /// full: `stderr_text` keeps only the last MiBs of a chatty server).
    pub fn stderr_log(&self) -> PathBuf {
        self.dir.path().join("spate.stderr")
    }

    /// The lines of the full stderr log that contain `needle`.
    pub fn stderr_lines_with(&self, needle: &str) -> Vec<String> {
        let text = std::fs::read(self.stderr_log()).unwrap_or_default();
        String::from_utf8_lossy(&text)
            .lines()
            .filter(|l| l.contains(needle))
            .map(str::to_owned)
            .collect()
    }

    fn kill_now(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGKILL, and wait for the process to be gone.
    pub fn kill9(&mut self) {
        let mut c = self.child.take().expect("server is running");
        c.kill().expect("kill -9");
        let status = c.wait().expect("wait");
        assert!(!status.success(), "killed server reports success?");
    }

    /// Sends a signal to the server process.
    pub fn signal(&self, sig: i32) {
        let pid = self.pid() as libc::pid_t;
        // SAFETY: kill(2) with our own child's pid; no memory is involved.
        let rc = unsafe { libc::kill(pid, sig) };
        assert_eq!(rc, 0, "kill({pid}, {sig})");
    }

    /// SIGTERM, wait for exit (with a timeout), collect the stats line.
    pub fn terminate(&mut self) -> Shutdown {
        self.stop_with(libc::SIGTERM)
    }

    /// Sends `sig` and waits for the process to exit.
    pub fn stop_with(&mut self, sig: i32) -> Shutdown {
        self.signal(sig);
        self.wait_exit(EXIT_TIMEOUT)
    }

    /// Waits for an already signalled server to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Shutdown {
        let mut c = self.child.take().expect("server is running");
        let status = match wait_timeout(&mut c, timeout) {
            Some(s) => s,
            None => {
                let _ = c.kill();
                let _ = c.wait();
                panic!(
                    "spate did not exit within {timeout:?} after a signal\nstderr:\n{}",
                    self.stderr_text()
                );
            }
        };
        let mut stdout = Vec::new();
        if let Some(rx) = self.lines.take() {
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                match rx.recv_timeout(left) {
                    Ok(l) => stdout.push(l),
                    Err(_) => break,
                }
            }
        }
        let stats = stdout.iter().rev().find_map(|l| {
            let rest = l.trim().strip_prefix("stats")?;
            serde_json::from_str(rest.trim()).ok()
        });
        Shutdown {
            status,
            stats,
            stdout,
        }
    }

    /// Starts the server again on the same config and spool (the port may
    /// change: it is 0 in the config).
    pub fn restart(&mut self) {
        if self.is_running() {
            panic!("restart() while the server still runs: stop it first");
        }
        self.child = None;
        self.spawn();
    }

    /// `spate queue list --json`, parsed.
    pub fn queue_list(&self) -> Vec<Queued> {
        let out = self.spate_command(&["queue", "list", "--json"]);
        let text = String::from_utf8_lossy(&out.stdout);
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| parse_queued(l).unwrap_or_else(|e| panic!("queue list line {l:?}: {e}")))
            .collect()
    }

    /// Runs `spate ARGS --config FILE`, panicking on failure or timeout.
    pub fn spate_command(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(SPATE);
        cmd.args(args).arg("--config").arg(&self.config_path);
        let out = run_with_timeout(cmd, COMMAND_TIMEOUT);
        assert!(
            out.status.success(),
            "spate {args:?} failed: {:?}\nstdout:\n{}\nstderr:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// A connected raw SMTP client (greeting not yet read).
    pub fn connect(&self) -> Client {
        Client::connect(self.smtp)
    }

    /// Sends one 1000-byte message from `MARKER@example.test` to
    /// `rcpt@example.test` and returns its queue id.
    pub fn accept_one(&self, marker: &str) -> String {
        let mut c = self.session();
        let id = c
            .send_message(
                &format!("{marker}@example.test"),
                &["rcpt@example.test"],
                &message(marker, 1000),
            )
            .expect("accepted");
        c.quit();
        id
    }

    /// A connected client that has read the 220 and sent EHLO.
    pub fn session(&self) -> Client {
        let mut c = self.connect();
        let g = c.read_reply();
        assert_eq!(g.code, 220, "greeting: {g:?}");
        let e = c.cmd("EHLO client.test");
        assert_eq!(e.code, 250, "EHLO: {e:?}");
        c
    }

    /// Every file under the spool directory, concatenated (for byte checks).
    pub fn spool_bytes(&self) -> Vec<u8> {
        let mut all = Vec::new();
        let mut stack = vec![self.spool_dir.clone()];
        while let Some(d) = stack.pop() {
            let Ok(rd) = std::fs::read_dir(&d) else {
                continue;
            };
            for e in rd.flatten() {
                let p = e.path();
                if p.is_dir() {
                    stack.push(p);
                } else if let Ok(mut f) = std::fs::File::open(&p) {
                    let _ = f.read_to_end(&mut all);
                }
            }
        }
        all
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.kill_now();
        if std::thread::panicking() {
            let e = self.stderr_text();
            let tail: String = if e.len() > 20_000 {
                let mut cut = e.len() - 20_000;
                while !e.is_char_boundary(cut) {
                    cut += 1;
                }
                format!("[...]{}", &e[cut..])
            } else {
                e
            };
            eprintln!(
                "===== spate stderr ({}) =====\n{tail}\n===== config =====\n{}",
                self.smtp,
                self.config_text()
            );
        }
    }
}

fn parse_queued(line: &str) -> Result<Queued, String> {
    let v: serde_json::Value = serde_json::from_str(line).map_err(|e| e.to_string())?;
    let id = v["id"].as_str().ok_or("no string id")?.to_owned();
    let from = v["from"].as_str().ok_or("no string from")?.to_owned();
    let to = v["to"]
        .as_array()
        .ok_or("no array to")?
        .iter()
        .map(|t| t.as_str().map(str::to_owned).ok_or("non-string recipient"))
        .collect::<Result<Vec<_>, _>>()?;
    let size = v["size"].as_u64().ok_or("no integer size")?;
    let age_seconds = v.get("age_seconds").and_then(|a| a.as_u64());
    Ok(Queued {
        id,
        from,
        to,
        size,
        age_seconds,
        raw: v,
    })
}

fn render_config(
    t: &Tweaks,
    ip: Ipv4Addr,
    spool: &Path,
    tls: Option<&TlsFiles>,
    dir: &Path,
) -> String {
    let mut s = String::new();
    let q = |p: &Path| format!("{:?}", p.display().to_string());
    let _ = writeln!(s, "hostname = {:?}", t.hostname);
    let _ = writeln!(s, "spool_dir = {}", q(spool));
    let _ = writeln!(s, "cores = {}", t.cores);
    let _ = writeln!(s, "shutdown_grace = {:?}", t.shutdown_grace);
    let _ = writeln!(
        s,
        "\n[[listener]]\naddress = \"{ip}:{}\"\nprotocol = \"smtp\"",
        t.port
    );
    for protocol in &t.listeners {
        let _ = writeln!(
            s,
            "\n[[listener]]\naddress = \"{ip}:0\"\nprotocol = {protocol:?}"
        );
    }
    let nets = match &t.allow_networks {
        None => vec!["127.0.0.0/8".to_owned()],
        Some(n) => n.clone(),
    };
    let _ = writeln!(s, "\n[relay]\nallow_networks = {nets:?}");
    for (k, v) in &t.relay {
        let _ = writeln!(s, "{k} = {v}");
    }
    // Never the system's resolver (not on loopback): a closed port on this
    // test's own address, so any MX lookup fails fast and stays local.
    let dns = t.dns.map_or(format!("{ip}:53"), |a| a.to_string());
    let _ = writeln!(s, "\n[dns]\nnameservers = [\"{dns}\"]");
    let _ = writeln!(s, "\n[local]\ndomains = {:?}", t.local_domains);
    if t.mailboxes {
        let _ = writeln!(s, "mailbox_dir = {}", q(&dir.join("mail")));
        let _ = writeln!(s, "users_file = {}", q(&dir.join("users")));
        if !t.aliases.is_empty() {
            let _ = writeln!(s, "aliases_file = {}", q(&dir.join("aliases")));
        }
        for (k, v) in &t.local {
            let _ = writeln!(s, "{k} = {v}");
        }
    }
    if let Some(tls) = tls {
        let _ = writeln!(
            s,
            "\n[tls]\ncertificate = {}\nprivate_key = {}",
            q(&tls.certificate),
            q(&tls.private_key)
        );
    }
    if !t.smtp.is_empty() {
        let _ = writeln!(s, "\n[smtp]");
        for (k, v) in &t.smtp {
            let _ = writeln!(s, "{k} = {v}");
        }
    }
    if !t.spool.is_empty() {
        let _ = writeln!(s, "\n[spool]");
        for (k, v) in &t.spool {
            let _ = writeln!(s, "{k} = {v}");
        }
    }
    s.push_str(&t.extra);
    s
}

/// A CA and a leaf certificate for "localhost" and `ip`, as PEM files.
pub fn make_tls_files(dir: &Path, ip: Ipv4Addr) -> TlsFiles {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
    let ca_key = KeyPair::generate().expect("ca key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "spate test CA");
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca = ca_params.self_signed(&ca_key).expect("ca cert");
    let key = KeyPair::generate().expect("leaf key");
    let mut params =
        CertificateParams::new(vec!["localhost".to_owned(), ip.to_string()]).expect("leaf params");
    params
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let leaf = params.signed_by(&key, &ca, &ca_key).expect("leaf cert");
    let files = TlsFiles {
        ca: dir.join("ca.pem"),
        certificate: dir.join("cert.pem"),
        private_key: dir.join("key.pem"),
    };
    std::fs::write(&files.ca, ca.pem()).expect("write ca");
    std::fs::write(&files.certificate, leaf.pem()).expect("write cert");
    std::fs::write(&files.private_key, key.serialize_pem()).expect("write key");
    files
}

/// Waits for a child with a timeout; `None` when it is still running.
pub fn wait_timeout(c: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        match c.try_wait() {
            Ok(Some(s)) => return Some(s),
            Ok(None) if Instant::now() >= deadline => return None,
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => panic!("wait: {e}"),
        }
    }
}

/// Runs a command to completion with captured output; kills it and panics
/// after `timeout`.
pub fn run_with_timeout(mut cmd: Command, timeout: Duration) -> Output {
    let desc = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {desc}: {e}"));
    let mut so = child.stdout.take().expect("stdout");
    let mut se = child.stderr.take().expect("stderr");
    let to = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = so.read_to_end(&mut v);
        v
    });
    let te = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = se.read_to_end(&mut v);
        v
    });
    let status = match wait_timeout(&mut child, timeout) {
        Some(s) => s,
        None => {
            let _ = child.kill();
            let _ = child.wait();
            let stdout = to.join().unwrap_or_default();
            let stderr = te.join().unwrap_or_default();
            panic!(
                "{desc} did not finish within {timeout:?}\nstdout:\n{}\nstderr:\n{}",
                String::from_utf8_lossy(&stdout),
                String::from_utf8_lossy(&stderr)
            );
        }
    };
    Output {
        status,
        stdout: to.join().unwrap_or_default(),
        stderr: te.join().unwrap_or_default(),
    }
}

/// Runs `python3 tests/python/SCRIPT ARGS` and parses the last stdout line
/// as JSON. Panics with the script's output when it fails.
pub fn python(script: &str, args: &[String]) -> serde_json::Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/python")
        .join(script);
    let mut cmd = Command::new("python3");
    cmd.arg(&path).args(args);
    let out = run_with_timeout(cmd, COMMAND_TIMEOUT);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "python3 {script} {args:?} failed: {:?}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    let last = stdout
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or_else(|| panic!("python3 {script} {args:?} printed nothing\nstderr:\n{stderr}"));
    serde_json::from_str(last)
        .unwrap_or_else(|e| panic!("python3 {script}: not JSON ({e}): {last}\nstderr:\n{stderr}"))
}

/// Runs swaks with `args`; returns its exit code and combined output.
pub fn swaks(args: &[String]) -> (i32, String) {
    let mut cmd = Command::new("swaks");
    cmd.args(args);
    let out = run_with_timeout(cmd, COMMAND_TIMEOUT);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

/// Sends `n` small messages from `sender@client.test` to `to` over one
/// session, each marked `{tag}-{i}`; panics on a refusal.
pub fn send_numbered(server: &TestServer, to: &str, tag: &str, n: usize) {
    let mut c = server.session();
    for i in 0..n {
        c.send_message(
            "sender@client.test",
            &[to],
            &message(&format!("{tag}-{i}"), 200),
        )
        .unwrap_or_else(|r| panic!("refused: {r:?}"));
    }
    c.quit();
}

/// A message with CRLF line endings: headers, an empty line, and a body of
/// about `body_len` bytes of printable lines carrying `marker`.
pub fn message(marker: &str, body_len: usize) -> Vec<u8> {
    let mut m = format!(
        "From: <sender@{LOCAL_DOMAIN}>\r\nTo: <rcpt@{LOCAL_DOMAIN}>\r\nSubject: {marker}\r\nMessage-ID: <{marker}@client.test>\r\n\r\n"
    )
    .into_bytes();
    let mut i = 0usize;
    let header_len = m.len();
    while m.len() - header_len < body_len {
        let line = format!("{marker} line {i:06} abcdefghijklmnopqrstuvwxyz0123456789\r\n");
        m.extend_from_slice(line.as_bytes());
        i += 1;
    }
    m
}

/// Dot-stuffs a CRLF message and appends the end-of-data line.
pub fn dot_stuff(msg: &[u8]) -> Vec<u8> {
    assert!(
        msg.is_empty() || msg.ends_with(b"\r\n"),
        "message must end with CRLF"
    );
    let mut out = Vec::with_capacity(msg.len() + 16);
    let mut at_line_start = true;
    for &b in msg {
        if at_line_start && b == b'.' {
            out.push(b'.');
        }
        out.push(b);
        at_line_start = b == b'\n';
    }
    out.extend_from_slice(b".\r\n");
    out
}

/// Is this a 16-hex-digit queue id?
pub fn is_queue_id(s: &str) -> bool {
    s.len() == 16 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Does `hay` contain `needle`?
pub fn contains(hay: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || hay.windows(needle.len()).any(|w| w == needle)
}

/// The Received header spate prepends is at most this long; used to check
/// that stored sizes are plausible.
pub const MAX_TRACE_HEADER: u64 = 1024;

/// Every sample of a scrape of `addr`'s `/metrics`.
pub fn scrape_metrics(addr: SocketAddr) -> std::collections::HashMap<String, f64> {
    use std::io::{Read, Write};
    let mut c = std::net::TcpStream::connect(addr).expect("metrics endpoint");
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(c, "GET /metrics HTTP/1.1\r\nHost: spate\r\n\r\n").unwrap();
    let mut text = String::new();
    c.read_to_string(&mut text).expect("a response");
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    body.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            Some((name.to_owned(), value.parse().ok()?))
        })
        .collect()
}
