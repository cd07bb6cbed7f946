//! The control socket: how `spate queue flush|delete|bounce` (and the crash
//! drill `spate debug panic`) reach a running server. One request line, one
//! reply line, over a Unix socket beside the spool, mode 0600, answering
//! only root and the server's own user (peer credentials). This module
//! speaks the protocol, checks who asks and routes requests to shards;
//! what a shard does with them belongs to the shard.

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
const MAX_LINE: usize = 256;
/// How long a client or the server waits for the other side.
const TIMEOUT: Duration = Duration::from_secs(30);

/// Where the control socket of a spool lives.
pub fn socket_path(spool_dir: &Path) -> PathBuf {
    spool_dir.join("control.sock")
}

/// What an operator asks of a running server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Retry every deferred message now.
    Flush,
    /// Drop a message without notice.
    Delete(SpoolId),
    /// Return a message to its sender now (a DSN), then drop it.
    Bounce(SpoolId),
    /// Suspend a site (as `mx:HOSTS` or `[HOST]:PORT`) for some seconds:
    /// every shard stops sending to it.
    Suspend(DestinationKey, u64),
    /// End a site's suspension.
    Resume(DestinationKey),
    /// List the suspensions in force.
    Suspensions,
    /// Fault injection for the crash policy (`spate debug panic`): shard
    /// N panics, which ends the process with status 70 (see `crash`), so
    /// an operator or a test can check that the service manager restarts
    /// it. Not a queue operation; no delivery code sees it.
    Panic(usize),
}

/// Why a request line is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad control request {0:?}: expected flush, delete ID, bounce ID, suspend SITE SECONDS, resume SITE, suspensions or panic SHARD")]
pub struct BadRequest(pub String);

impl FromStr for Request {
    type Err = BadRequest;

    fn from_str(line: &str) -> Result<Self, BadRequest> {
        let bad = || BadRequest(line.chars().take(80).collect());
        let mut words = line.split_ascii_whitespace();
        let verb = words.next().ok_or_else(bad)?;
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
        let id = || {
            argument
                .and_then(|id| id.parse::<SpoolId>().ok())
                .ok_or_else(bad)
        };
        match verb {
            "flush" if line.trim() == "flush" => Ok(Request::Flush),
            "delete" => Ok(Request::Delete(id()?)),
            "bounce" => Ok(Request::Bounce(id()?)),
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
            Request::Delete(id) => write!(f, "delete {id}"),
            Request::Bounce(id) => write!(f, "bounce {id}"),
            Request::Suspend(site, seconds) => write!(f, "suspend {site} {seconds}"),
            Request::Resume(site) => write!(f, "resume {site}"),
            Request::Suspensions => write!(f, "suspensions"),
            Request::Panic(shard) => write!(f, "panic {shard}"),
        }
    }
}

/// A shard's answer: done (with a short account) or refused (with why).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Done(String),
    Failed(String),
}

impl Reply {
    fn to_line(&self) -> String {
        match self {
            Reply::Done(text) => format!("ok {}\n", one_line(text)),
            Reply::Failed(text) => format!("error {}\n", one_line(text)),
        }
    }

    fn from_line(line: &str) -> Reply {
        let line = line.trim_end();
        match line.split_once(' ') {
            Some(("ok", text)) => Reply::Done(text.to_owned()),
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
    stream.set_read_timeout(Some(TIMEOUT))?;
    stream.set_write_timeout(Some(TIMEOUT))?;
    (&stream).write_all(format!("{request}\n").as_bytes())?;
    let mut line = String::new();
    if BufReader::new((&stream).take(4096)).read_line(&mut line)? == 0 {
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

/// Flush goes to every shard; delete and bounce to the shard that owns the
/// message (the one that adopted its shard directory); panic to the shard
/// named.
fn dispatch(request: Request, shards: &ShardInboxes) -> Reply {
    if shards.is_empty() {
        return Reply::Failed("no shard is running".into());
    }
    let targets: Vec<usize> = match request {
        // The table is shared: one shard changes it, every shard is told
        // so it looks again at once.
        Request::Flush | Request::Suspend(..) | Request::Resume(_) => (0..shards.len()).collect(),
        Request::Suspensions => vec![0],
        Request::Delete(id) | Request::Bounce(id) => vec![usize::from(id.shard()) % shards.len()],
        Request::Panic(shard) if shard < shards.len() => vec![shard],
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
    for replies in waiting {
        match replies.recv_timeout(TIMEOUT) {
            Ok(Reply::Done(text)) => done.push(text),
            Ok(failed @ Reply::Failed(_)) => return failed,
            Err(_) => return Reply::Failed("a shard did not answer".into()),
        }
    }
    if asked == 0 {
        return Reply::Failed("the server is stopping".into());
    }
    Reply::Done(done.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_parse_and_print() {
        let id: SpoolId = "0100000200000040".parse().unwrap();
        assert_eq!("flush".parse(), Ok(Request::Flush));
        assert_eq!("delete 0100000200000040".parse(), Ok(Request::Delete(id)));
        assert_eq!("bounce  0100000200000040 ".parse(), Ok(Request::Bounce(id)));
        assert_eq!(Request::Bounce(id).to_string(), "bounce 0100000200000040");
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
            request(dir.path(), Request::Delete(id)).unwrap(),
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
