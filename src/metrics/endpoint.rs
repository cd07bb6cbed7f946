//! The metrics endpoint: one std thread with a std `TcpListener` that
//! answers `GET /metrics` by asking every shard for a snapshot over its
//! inbox, merging the answers and writing the exposition. One connection
//! at a time, each bounded in size and time. It computes no figure itself.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use super::http::{self, Status, Verdict};
use super::{exposition, Snapshot};

/// How long a client may take to send its request or read the answer.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a scrape waits for the shards' snapshots.
const SHARD_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the idle thread looks at the stop flag.
const STOP_POLL: Duration = Duration::from_millis(50);
/// Scrape requests a shard may have waiting; more are not sent.
pub const INBOX_DEPTH: usize = 4;

/// A scrape's question to one shard: answer with a snapshot here.
#[derive(Debug)]
pub struct SnapshotRequest {
    pub reply: mpsc::Sender<Snapshot>,
}

/// The shards' scrape inboxes, in shard order.
pub type SnapshotInboxes = Vec<async_channel::Sender<SnapshotRequest>>;

/// Adds what no shard knows (DNS figures, spool disk usage) to a merged
/// snapshot; runs on the endpoint thread.
pub type Complete = Box<dyn Fn(&mut Snapshot) + Send>;

/// Binds the endpoint's address (port 0 picks one); the caller prints the
/// bound address.
pub fn bind(address: SocketAddr) -> std::io::Result<TcpListener> {
    let listener = TcpListener::bind(address)?;
    listener.set_nonblocking(true)?;
    Ok(listener)
}

/// Serves scrapes on its own thread until `stop` is set.
pub fn serve(
    listener: TcpListener,
    shards: SnapshotInboxes,
    complete: Complete,
    stop: Arc<AtomicBool>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("spate-metrics".into())
        .spawn(move || {
            while !stop.load(Ordering::Acquire) {
                match listener.accept() {
                    Ok((stream, _)) => answer(stream, &shards, &complete),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(STOP_POLL);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "metrics endpoint accept failed");
                        std::thread::sleep(STOP_POLL);
                    }
                }
            }
        })
}

/// Reads one request (bounded), answers it, closes.
fn answer(mut stream: TcpStream, shards: &SnapshotInboxes, complete: &Complete) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(CLIENT_TIMEOUT));
    let _ = stream.set_write_timeout(Some(CLIENT_TIMEOUT));
    let deadline = Instant::now() + CLIENT_TIMEOUT;
    let mut received = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    let verdict = loop {
        match http::handle_request(&received) {
            Verdict::Incomplete => {}
            decided => break decided,
        }
        if Instant::now() >= deadline {
            return;
        }
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => received.extend_from_slice(&chunk[..n]),
        }
    };
    let response = match verdict {
        Verdict::Metrics { head_only } => match scrape(shards) {
            Some(mut snapshot) => {
                complete(&mut snapshot);
                let body = exposition::render(&snapshot);
                http::ok_response(exposition::CONTENT_TYPE, &body, head_only)
            }
            None => http::error_response(Status::Unavailable),
        },
        Verdict::Error(status) => http::error_response(status),
        Verdict::Incomplete => return,
    };
    let _ = stream.write_all(&response);
    let _ = stream.flush();
}

/// Asks every shard for its snapshot and adds them up; `None` when a
/// shard does not answer in time (a partial sum would look like counters
/// going backwards).
pub fn scrape(shards: &SnapshotInboxes) -> Option<Snapshot> {
    let mut waiting = Vec::with_capacity(shards.len());
    for inbox in shards {
        let (reply, answer) = mpsc::channel();
        inbox.try_send(SnapshotRequest { reply }).ok()?;
        waiting.push(answer);
    }
    let deadline = Instant::now() + SHARD_TIMEOUT;
    let mut total = Snapshot::default();
    for answer in waiting {
        let left = deadline.saturating_duration_since(Instant::now());
        let snapshot = answer.recv_timeout(left).ok()?;
        total.merge(&snapshot);
    }
    Some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two fake shards answering from threads; a real socket on loopback.
    #[test]
    fn scrape_over_http_merges_every_shard() {
        let mut inboxes = Vec::new();
        for shard in 0..2u64 {
            let (tx, rx) = async_channel::bounded::<SnapshotRequest>(INBOX_DEPTH);
            inboxes.push(tx);
            std::thread::spawn(move || {
                while let Ok(request) = rx.recv_blocking() {
                    let mut s = Snapshot::default();
                    s.counters.messages_received = 10 + shard;
                    let _ = request.reply.send(s);
                }
            });
        }
        let listener = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let complete: Complete = Box::new(|s| s.dns_queries = 5);
        let thread = serve(listener, inboxes, complete, Arc::clone(&stop)).unwrap();
        let get = |request: &str| {
            let mut c = TcpStream::connect(addr).unwrap();
            c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            c.write_all(request.as_bytes()).unwrap();
            let mut text = String::new();
            c.read_to_string(&mut text).unwrap();
            text
        };
        let ok = get("GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n");
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(
            ok.contains("\nspate_smtp_messages_received_total 21\n"),
            "{ok}"
        );
        assert!(ok.contains("\nspate_dns_queries_total 5\n"), "{ok}");
        let missing = get("GET /other HTTP/1.0\r\n\r\n");
        assert!(missing.starts_with("HTTP/1.1 404 "), "{missing}");
        stop.store(true, Ordering::Release);
        thread.join().unwrap();
    }

    #[test]
    fn a_silent_shard_makes_the_scrape_unavailable() {
        let (tx, _rx) = async_channel::bounded::<SnapshotRequest>(1);
        assert_eq!(scrape(&vec![tx.clone()]), None, "queued, never answered");
        assert_eq!(scrape(&vec![tx]), None, "inbox full");
    }
}
