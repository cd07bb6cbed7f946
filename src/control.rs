//! The control socket: how `spate queue ...` (and the crash drill `spate
//! debug panic`) reach a running server. One request line, one reply line,
//! over a Unix socket beside the spool, mode 0600, answering only root and
//! the server's own user (peer credentials). This module speaks the
//! protocol, checks who asks and routes requests to shards, merging their
//! answers; what a shard does with them belongs to the shard. The HTTP
//! management API (`api`) sends the same requests through [`dispatch`].

use crate::queue::DestinationKey;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use crate::peer;
use crate::spool::SpoolId;

/// Longest request line accepted.
const MAX_LINE: usize = 1024;
/// Longest reply line read (a queue summary names every domain).
const MAX_REPLY: u64 = 64 << 20;
/// How long a client or the server waits for the other side.
const TIMEOUT: Duration = Duration::from_secs(30);
/// How long a bulk request (bounce, delete or retry by selection, which
/// may touch a million messages) may take.
const BULK_TIMEOUT: Duration = Duration::from_secs(1800);

/// Where the control socket of a spool lives.
pub fn socket_path(spool_dir: &Path) -> PathBuf {
    spool_dir.join("control.sock")
}

/// Which queued messages a bulk request acts on: one message by id, or
/// every message matching all the fields given (a recipient domain any of
/// its pending recipients is in, its tenant, its sender), or `all`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selection {
    pub id: Option<SpoolId>,
    pub domain: Option<String>,
    pub tenant: Option<String>,
    pub sender: Option<String>,
    /// Every queued message (must be said: an empty selection is refused).
    pub all: bool,
}

impl Selection {
    /// One message.
    pub fn id(id: SpoolId) -> Selection {
        Selection {
            id: Some(id),
            ..Selection::default()
        }
    }

    /// The message, when the selection is one message by id alone.
    pub fn only_id(&self) -> Option<SpoolId> {
        let id = self.id?;
        (*self == Selection::id(id)).then_some(id)
    }

    /// Whether the selection names anything (`all` counts).
    pub fn is_empty(&self) -> bool {
        *self == Selection::default()
    }

    /// Whether a message of this shape, with these pending recipients,
    /// may match (the sender, not in the shape, is checked apart).
    pub fn takes_shape(
        &self,
        shape: &crate::queue::Shape,
        pending: &mut dyn Iterator<Item = u32>,
    ) -> bool {
        if let Some(tenant) = &self.tenant {
            if shape.tenant.as_deref() != Some(tenant.as_str()) {
                return false;
            }
        }
        match &self.domain {
            None => true,
            Some(domain) => {
                for i in pending {
                    let here = shape.domains.get(i as usize);
                    if here.is_some_and(|d| d.eq_ignore_ascii_case(domain)) {
                        return true;
                    }
                }
                false
            }
        }
    }

    /// Whether the sender (the reverse-path, empty for `<>`) matches.
    pub fn takes_sender(&self, sender: &str) -> bool {
        self.sender
            .as_deref()
            .is_none_or(|wanted| wanted.eq_ignore_ascii_case(sender))
    }

    fn parse_words<'a>(words: impl Iterator<Item = &'a str>) -> Option<Selection> {
        let mut selection = Selection::default();
        for word in words {
            if word == "all" {
                selection.all = true;
                continue;
            }
            let Some((key, value)) = word.split_once('=') else {
                selection.id = Some(word.parse().ok()).flatten();
                selection.id?;
                continue;
            };
            let value = unescape(value)?;
            let slot = match key {
                "domain" => &mut selection.domain,
                "tenant" => &mut selection.tenant,
                "sender" => &mut selection.sender,
                "id" => {
                    selection.id = Some(value.parse().ok()?);
                    continue;
                }
                _ => return None,
            };
            if value.is_empty() && key != "sender" {
                return None;
            }
            *slot = Some(value);
        }
        (!selection.is_empty()).then_some(selection)
    }
}

impl std::fmt::Display for Selection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut words = Vec::new();
        if self.all {
            words.push("all".to_owned());
        }
        if let Some(id) = self.id {
            words.push(id.to_string());
        }
        for (key, value) in [
            ("domain", &self.domain),
            ("tenant", &self.tenant),
            ("sender", &self.sender),
        ] {
            if let Some(value) = value {
                words.push(format!("{key}={}", escape(value)));
            }
        }
        write!(f, "{}", words.join(" "))
    }
}

/// A value on the request line: `%`, blanks, controls and `=` as `%XX`.
fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        if c == '%' || c == '=' || c.is_whitespace() || c.is_control() {
            let mut buf = [0; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                out.push_str(&format!("%{b:02X}"));
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn unescape(value: &str) -> Option<String> {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// What an operator asks of a running server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Retry every deferred message now.
    Flush,
    /// Retry the selected waiting messages now.
    Retry(Selection),
    /// Drop the selected messages without notice.
    Delete(Selection),
    /// Return the selected messages to their senders now (a DSN), then
    /// drop them.
    Bounce(Selection),
    /// Suspend a site (as `mx:HOSTS` or `[HOST]:PORT`, optionally
    /// `@SOURCE`), a recipient domain (`domain:NAME`) or an egress source
    /// everywhere (`*@SOURCE`) for some seconds: every shard stops sending
    /// to it.
    Suspend(DestinationKey, u64),
    /// End a suspension.
    Resume(DestinationKey),
    /// List the suspensions in force.
    Suspensions,
    /// The queue by state, recipient domain, tenant, site and source
    /// (JSON; counts kept as mail comes and goes, no message is read).
    Summary,
    /// Suspensions, throttles and the active sites' limits (JSON).
    Shaping,
    /// Fault injection for the crash policy (`spate debug panic`): shard
    /// N panics, which ends the process with status 70 (see `crash`), so
    /// an operator or a test can check that the service manager restarts
    /// it. Not a queue operation; no delivery code sees it.
    Panic(usize),
}

/// Why a request line is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad control request {0:?}: expected flush, retry SELECTION, delete SELECTION, bounce SELECTION, suspend SITE SECONDS, resume SITE, suspensions, summary, shaping or panic SHARD (a SELECTION is an ID, or domain=D tenant=T sender=S, or all)")]
pub struct BadRequest(pub String);

impl FromStr for Request {
    type Err = BadRequest;

    fn from_str(line: &str) -> Result<Self, BadRequest> {
        let bad = || BadRequest(line.chars().take(80).collect());
        let mut words = line.split_ascii_whitespace();
        let verb = words.next().ok_or_else(bad)?;
        if matches!(verb, "retry" | "delete" | "bounce") {
            let selection = Selection::parse_words(words).ok_or_else(bad)?;
            return Ok(match verb {
                "retry" => Request::Retry(selection),
                "delete" => Request::Delete(selection),
                _ => Request::Bounce(selection),
            });
        }
        let argument = words.next();
        if verb == "suspend" {
            let site = argument.and_then(|s| s.parse().ok()).ok_or_else(bad)?;
            let seconds = words.next().and_then(|s| s.parse().ok()).ok_or_else(bad)?;
            if words.next().is_some() {
                return Err(bad());
            }
            return Ok(Request::Suspend(site, seconds));
        }
        if words.next().is_some() {
            return Err(bad());
        }
        match verb {
            "flush" if line.trim() == "flush" => Ok(Request::Flush),
            "summary" if argument.is_none() => Ok(Request::Summary),
            "shaping" if argument.is_none() => Ok(Request::Shaping),
            "resume" => Ok(Request::Resume(
                argument.and_then(|s| s.parse().ok()).ok_or_else(bad)?,
            )),
            "suspensions" if argument.is_none() => Ok(Request::Suspensions),
            "panic" => {
                let shard = argument.and_then(|n| n.parse().ok()).ok_or_else(bad)?;
                Ok(Request::Panic(shard))
            }
            _ => Err(bad()),
        }
    }
}

impl std::fmt::Display for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Request::Flush => write!(f, "flush"),
            Request::Retry(selection) => write!(f, "retry {selection}"),
            Request::Delete(selection) => write!(f, "delete {selection}"),
            Request::Bounce(selection) => write!(f, "bounce {selection}"),
            Request::Summary => write!(f, "summary"),
            Request::Shaping => write!(f, "shaping"),
            Request::Suspend(site, seconds) => write!(f, "suspend {site} {seconds}"),
            Request::Resume(site) => write!(f, "resume {site}"),
            Request::Suspensions => write!(f, "suspensions"),
            Request::Panic(shard) => write!(f, "panic {shard}"),
        }
    }
}

/// A shard's answer: done (with a short account), data (JSON, which the
/// dispatcher merges across shards: see [`merge`]) or refused (with why).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Done(String),
    Data(serde_json::Value),
    Failed(String),
}

impl Reply {
    fn to_line(&self) -> String {
        match self {
            Reply::Done(text) => format!("ok {}\n", one_line(text)),
            Reply::Data(value) => format!("data {value}\n"),
            Reply::Failed(text) => format!("error {}\n", one_line(text)),
        }
    }

    fn from_line(line: &str) -> Reply {
        let line = line.trim_end();
        match line.split_once(' ') {
            Some(("ok", text)) => Reply::Done(text.to_owned()),
            Some(("data", json)) => match serde_json::from_str(json) {
                Ok(value) => Reply::Data(value),
                Err(e) => Reply::Failed(format!("unreadable data reply: {e}")),
            },
            _ if line == "ok" => Reply::Done(String::new()),
            Some(("error", text)) => Reply::Failed(text.to_owned()),
            _ => Reply::Failed(format!("unexpected reply {line:?}")),
        }
    }
}

fn one_line(text: &str) -> String {
    text.replace(['\r', '\n'], " ")
}

/// A request on its way to one shard, with where to answer.
#[derive(Debug)]
pub struct ShardCommand {
    pub request: Request,
    pub reply: mpsc::Sender<Reply>,
}

/// The shards' inboxes, in shard order.
pub type ShardInboxes = Vec<async_channel::Sender<ShardCommand>>;

/// Why the control client got no answer.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("cannot reach the server at {path} (is `spate serve` running?): {source}")]
    Connect {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The server closed the connection without a reply (it stopped, or
    /// exited: what `panic` asks for).
    #[error("the server closed the control connection without a reply")]
    Closed,
    #[error("control socket I/O: {0}")]
    Io(#[from] std::io::Error),
}

/// Sends one request to a running server and returns its reply.
pub fn request(spool_dir: &Path, request: Request) -> Result<Reply, ControlError> {
    let path = socket_path(spool_dir);
    let stream =
        UnixStream::connect(&path).map_err(|source| ControlError::Connect { path, source })?;
    stream.set_read_timeout(Some(request.timeout()))?;
    stream.set_write_timeout(Some(TIMEOUT))?;
    (&stream).write_all(format!("{request}\n").as_bytes())?;
    let mut line = String::new();
    if BufReader::new((&stream).take(MAX_REPLY)).read_line(&mut line)? == 0 {
        return Err(ControlError::Closed);
    }
    Ok(Reply::from_line(&line))
}

/// Serves the control socket on its own thread until `stop` is set.
/// Removes a stale socket file left by a killed server first (the spool
/// lock proves no other server uses it). The socket is 0600: beside the
/// 0700 spool, only the server's user and root reach it, and each
/// connection's peer credentials are checked again, in case the modes
/// were opened up.
pub fn serve(
    spool_dir: &Path,
    shards: ShardInboxes,
    stop: Arc<AtomicBool>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    let path = socket_path(spool_dir);
    match std::fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let listener = UnixListener::bind(&path)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    listener.set_nonblocking(true)?;
    std::thread::Builder::new()
        .name("spate-control".into())
        .spawn(move || {
            while !stop.load(Ordering::Acquire) {
                match listener.accept() {
                    Ok((stream, _)) => answer(stream, &shards),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(50));
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "control socket accept failed");
                        std::thread::sleep(Duration::from_millis(50));
                    }
                }
            }
            let _ = std::fs::remove_file(&path);
        })
}

fn answer(stream: UnixStream, shards: &ShardInboxes) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(TIMEOUT));
    let _ = stream.set_write_timeout(Some(TIMEOUT));
    if let Err(refusal) = check_peer(&stream) {
        tracing::warn!("control socket: {refusal}");
        let _ = (&stream).write_all(Reply::Failed(refusal).to_line().as_bytes());
        return;
    }
    let mut line = String::new();
    let reply = match BufReader::new((&stream).take(MAX_LINE as u64)).read_line(&mut line) {
        Ok(_) => match line.trim_end().parse::<Request>() {
            Ok(request) => dispatch(request, shards),
            Err(e) => Reply::Failed(e.to_string()),
        },
        Err(e) => Reply::Failed(format!("cannot read the request: {e}")),
    };
    let _ = (&stream).write_all(reply.to_line().as_bytes());
}

/// Only root and the server's own user may ask anything; the reason for a
/// refusal otherwise.
fn check_peer(stream: &UnixStream) -> Result<(), String> {
    let cred = peer::peer_credentials(stream)
        .map_err(|e| format!("cannot read the peer's credentials: {e}"))?;
    if peer::is_root_or_self(cred.uid) {
        return Ok(());
    }
    Err(format!(
        "permission denied: uid {} (pid {}) may not use the control socket; only root and uid {} may",
        cred.uid,
        cred.pid,
        peer::effective_uid()
    ))
}

impl Request {
    /// How long an answer may take.
    fn timeout(&self) -> Duration {
        match self {
            Request::Retry(_) | Request::Delete(_) | Request::Bounce(_) => BULK_TIMEOUT,
            _ => TIMEOUT,
        }
    }
}

/// Sends a request to the shards it concerns and merges their answers:
/// flush, suspend, resume, the summary and the shaping state go to every
/// shard; a selection of one message to the shard that owns it (the one
/// that adopted its shard directory), any other selection to every
/// shard; panic to the shard named. Blocks until every shard answered.
pub fn dispatch(request: Request, shards: &ShardInboxes) -> Reply {
    if shards.is_empty() {
        return Reply::Failed("no shard is running".into());
    }
    let timeout = request.timeout();
    let targets: Vec<usize> = match &request {
        Request::Retry(s) | Request::Delete(s) | Request::Bounce(s) if s.id.is_some() && !s.all => {
            let id = s.id.map_or(0, |id| usize::from(id.shard()));
            vec![id % shards.len()]
        }
        // The table is shared: one shard changes it, every shard is told
        // so it looks again at once.
        Request::Flush
        | Request::Suspend(..)
        | Request::Resume(_)
        | Request::Retry(_)
        | Request::Delete(_)
        | Request::Bounce(_)
        | Request::Summary
        | Request::Shaping => (0..shards.len()).collect(),
        Request::Suspensions => vec![0],
        Request::Panic(shard) if *shard < shards.len() => vec![*shard],
        Request::Panic(shard) => {
            return Reply::Failed(format!(
                "no shard {shard}: this server runs shards 0 to {}",
                shards.len() - 1
            ))
        }
    };
    // One reply channel per shard, read in shard order: a stable answer.
    let mut waiting = Vec::new();
    for index in targets {
        let (reply, replies) = mpsc::channel();
        if shards[index]
            .send_blocking(ShardCommand {
                request: request.clone(),
                reply,
            })
            .is_ok()
        {
            waiting.push(replies);
        }
    }
    let asked = waiting.len();
    let mut done = Vec::new();
    let mut data: Option<serde_json::Value> = None;
    for replies in waiting {
        match replies.recv_timeout(timeout) {
            Ok(Reply::Done(text)) => done.push(text),
            Ok(Reply::Data(value)) => match &mut data {
                None => data = Some(value),
                Some(into) => merge(into, value),
            },
            Ok(failed @ Reply::Failed(_)) => return failed,
            Err(_) => return Reply::Failed("a shard did not answer".into()),
        }
    }
    if asked == 0 {
        return Reply::Failed("the server is stopping".into());
    }
    match data {
        Some(value) => Reply::Data(value),
        None => Reply::Done(done.join("; ")),
    }
}

/// Adds one shard's JSON answer into the others': numbers are summed,
/// objects merged key by key, arrays joined; any other value keeps the
/// first shard's.
pub fn merge(into: &mut serde_json::Value, from: serde_json::Value) {
    use serde_json::Value;
    match (into, from) {
        (Value::Number(a), Value::Number(b)) => {
            *a = match (a.as_u64(), b.as_u64()) {
                (Some(x), Some(y)) => x.saturating_add(y).into(),
                _ => match serde_json::Number::from_f64(
                    a.as_f64().unwrap_or(0.0) + b.as_f64().unwrap_or(0.0),
                ) {
                    Some(sum) => sum,
                    None => a.clone(),
                },
            };
        }
        (Value::Object(a), Value::Object(b)) => {
            for (key, value) in b {
                match a.get_mut(&key) {
                    Some(slot) => merge(slot, value),
                    None => {
                        a.insert(key, value);
                    }
                }
            }
        }
        (Value::Array(a), Value::Array(b)) => a.extend(b),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_parse_and_print() {
        let id: SpoolId = "0100000200000040".parse().unwrap();
        assert_eq!("flush".parse(), Ok(Request::Flush));
        let one = Selection::id(id);
        assert_eq!(
            "delete 0100000200000040".parse(),
            Ok(Request::Delete(one.clone()))
        );
        assert_eq!(
            "bounce  0100000200000040 ".parse(),
            Ok(Request::Bounce(one.clone()))
        );
        assert_eq!(
            Request::Bounce(one.clone()).to_string(),
            "bounce 0100000200000040"
        );
        assert_eq!(one.only_id(), Some(id));
        let many = Selection {
            domain: Some("gmail.com".into()),
            tenant: Some("Acme Corp=1%".into()),
            sender: Some(String::new()),
            ..Selection::default()
        };
        assert_eq!(many.only_id(), None);
        let line = Request::Delete(many.clone()).to_string();
        assert_eq!(
            line,
            "delete domain=gmail.com tenant=Acme%20Corp%3D1%25 sender="
        );
        assert_eq!(line.parse(), Ok(Request::Delete(many)));
        let all = Selection {
            all: true,
            ..Selection::default()
        };
        assert_eq!("retry all".parse(), Ok(Request::Retry(all)));
        assert_eq!("summary".parse(), Ok(Request::Summary));
        assert_eq!("shaping".parse(), Ok(Request::Shaping));
        assert_eq!(
            "suspend domain:gmail.com 60".parse(),
            Ok(Request::Suspend(DestinationKey::domain("gmail.com"), 60))
        );
        assert_eq!("panic 1".parse(), Ok(Request::Panic(1)));
        assert_eq!(Request::Panic(1).to_string(), "panic 1");
        for bad in [
            "",
            "flush now",
            "delete",
            "delete xyz",
            "delete 01 02",
            "shutdown",
            "panic",
            "panic x",
            "panic 1 2",
            "delete domain=",
            "delete colour=red",
            "bounce tenant=%zz",
            "retry",
            "summary now",
        ] {
            assert!(bad.parse::<Request>().is_err(), "{bad}");
        }
        assert_eq!(
            Reply::from_line("ok 3 flushed\n"),
            Reply::Done("3 flushed".into())
        );
        assert_eq!(
            Reply::from_line("error no such message\n"),
            Reply::Failed("no such message".into())
        );
        assert_eq!(Reply::Done("a\nb".into()).to_line(), "ok a b\n");
        let data = Reply::Data(serde_json::json!({"n": 1, "s": "a\nb"}));
        assert_eq!(
            Reply::from_line(&data.to_line()),
            data,
            "JSON stays on one line"
        );
    }

    #[test]
    fn socket_round_trip_reaches_the_owning_shard() {
        let dir = tempfile::tempdir().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let (tx0, rx0) = async_channel::unbounded::<ShardCommand>();
        let (tx1, rx1) = async_channel::unbounded::<ShardCommand>();
        let server = serve(dir.path(), vec![tx0, tx1], Arc::clone(&stop)).unwrap();
        for (index, rx) in [(0, rx0), (1, rx1)] {
            std::thread::spawn(move || {
                while let Ok(command) = rx.recv_blocking() {
                    let _ = command
                        .reply
                        .send(Reply::Done(format!("shard {index}: {}", command.request)));
                }
            });
        }
        assert_eq!(
            request(dir.path(), Request::Flush).unwrap(),
            Reply::Done("shard 0: flush; shard 1: flush".into())
        );
        let id: SpoolId = "0300000000000000".parse().unwrap();
        assert_eq!(
            request(dir.path(), Request::Delete(Selection::id(id))).unwrap(),
            Reply::Done(format!("shard 1: delete {id}")),
            "shard dir 3 is adopted by shard 3 % 2 = 1"
        );
        stop.store(true, Ordering::Release);
        server.join().unwrap();
        assert!(matches!(
            request(dir.path(), Request::Flush),
            Err(ControlError::Connect { .. })
        ));
    }
}
