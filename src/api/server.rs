//! The management API's sockets: one std thread accepts on `[api]
//! address`; each connection (at most [`MAX_CONNECTIONS`] at once, more
//! are answered 503) gets a thread that reads one request under a time
//! limit, over TLS when `[tls]` is configured, has `routes` judge it,
//! sends the control request to the shards (`control::dispatch`, as the
//! control socket does) and writes the answer.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::control::{self, ShardInboxes};

use super::routes::{self, Answer, Received};

/// Connections served at once.
pub const MAX_CONNECTIONS: usize = 8;
/// How long a client may take to send its request (and to read the
/// answer, once it is ready).
const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the idle accept loop looks at the stop flag.
const STOP_POLL: Duration = Duration::from_millis(50);

/// Why the API cannot start.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("cannot read the API token file {path}: {source}")]
    TokenFile {
        path: String,
        source: std::io::Error,
    },
    #[error("the API token in {path} is shorter than 16 characters")]
    ShortToken { path: String },
    #[error("cannot listen on {address} for the API: {source}")]
    Bind {
        address: SocketAddr,
        source: std::io::Error,
    },
}

/// Reads the bearer token (surrounding blanks dropped; 16 characters at
/// least).
pub fn read_token(path: &std::path::Path) -> Result<String, ApiError> {
    let text = std::fs::read_to_string(path).map_err(|source| ApiError::TokenFile {
        path: path.display().to_string(),
        source,
    })?;
    let token = text.trim().to_owned();
    if token.len() < 16 {
        return Err(ApiError::ShortToken {
            path: path.display().to_string(),
        });
    }
    Ok(token)
}

/// Binds the API's address (port 0 picks one; the caller prints it).
pub fn bind(address: SocketAddr) -> Result<TcpListener, ApiError> {
    let bound = TcpListener::bind(address).and_then(|l| {
        l.set_nonblocking(true)?;
        Ok(l)
    });
    bound.map_err(|source| ApiError::Bind { address, source })
}

/// What every connection thread needs.
struct Shared {
    token: String,
    tls: Option<Arc<rustls::ServerConfig>>,
    shards: ShardInboxes,
    open: AtomicUsize,
}

/// Serves the API on its own threads until `stop` is set.
pub fn serve(
    listener: TcpListener,
    token: String,
    tls: Option<Arc<rustls::ServerConfig>>,
    shards: ShardInboxes,
    stop: Arc<AtomicBool>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    let shared = Arc::new(Shared {
        token,
        tls,
        shards,
        open: AtomicUsize::new(0),
    });
    std::thread::Builder::new()
        .name("spate-api".into())
        .spawn(move || {
            while !stop.load(Ordering::Acquire) {
                match listener.accept() {
                    Ok((stream, _)) => admit(stream, &shared),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        wait_readable(&listener, STOP_POLL);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "API accept failed");
                        std::thread::sleep(STOP_POLL);
                    }
                }
            }
        })
}

/// Waits until a connection is waiting to be accepted, or `at_most`: a
/// caller is answered at once, and the stop flag is still seen.
fn wait_readable(listener: &TcpListener, at_most: Duration) {
    use std::os::fd::AsRawFd;
    let mut fd = libc::pollfd {
        fd: listener.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let millis = libc::c_int::try_from(at_most.as_millis()).unwrap_or(libc::c_int::MAX);
    // SAFETY: one valid pollfd for the duration of the call; an error
    // (EINTR) only means the loop tries accept again.
    unsafe {
        libc::poll(&mut fd, 1, millis);
    }
}

/// Gives the connection a thread, or a 503 when too many are open.
fn admit(mut stream: TcpStream, shared: &Arc<Shared>) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(CLIENT_TIMEOUT));
    let _ = stream.set_write_timeout(Some(CLIENT_TIMEOUT));
    if shared.open.fetch_add(1, Ordering::AcqRel) >= MAX_CONNECTIONS {
        shared.open.fetch_sub(1, Ordering::AcqRel);
        if shared.tls.is_none() {
            let busy = Answer {
                status: 503,
                body: serde_json::json!({ "error": "too many API connections" }),
            };
            let _ = stream.write_all(&busy.to_bytes());
        }
        return;
    }
    let shared = Arc::clone(shared);
    let spawned = std::thread::Builder::new()
        .name("spate-api-conn".into())
        .spawn(move || {
            match shared.tls.clone() {
                None => converse(&mut stream, &shared),
                Some(config) => match rustls::ServerConnection::new(config) {
                    Ok(conn) => {
                        let mut tls = rustls::StreamOwned::new(conn, stream);
                        converse(&mut tls, &shared);
                        tls.conn.send_close_notify();
                        let _ = tls.flush();
                    }
                    Err(e) => tracing::warn!(error = %e, "API TLS session failed"),
                },
            }
            shared.open.fetch_sub(1, Ordering::AcqRel);
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot start an API connection thread");
    }
}

/// Reads one request (bounded in size and time), answers it.
fn converse(stream: &mut impl ReadWrite, shared: &Shared) {
    let deadline = Instant::now() + CLIENT_TIMEOUT;
    let mut received = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    let answer = loop {
        match routes::read_request(&received) {
            Received::Incomplete => {}
            Received::Refused(answer) => break answer,
            Received::Request(request) => {
                break match routes::route(&request, &shared.token) {
                    Ok(request) => {
                        tracing::info!(%request, "API request");
                        routes::answer(control::dispatch(request, &shared.shards))
                    }
                    Err(refused) => {
                        if refused.status == 401 {
                            tracing::warn!(path = %request.path, "API request without a valid token");
                        }
                        refused
                    }
                };
            }
        }
        if Instant::now() >= deadline {
            return;
        }
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => received.extend_from_slice(&chunk[..n]),
        }
    };
    let _ = stream.write_all(&answer.to_bytes());
    let _ = stream.flush();
}

/// A plain or TLS stream.
trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}
