//! A connection that is plain TCP or TLS, behind one pair of async
//! read/write traits, plus the read buffer the protocol cores parse in
//! place. It knows nothing of any protocol.

use std::cell::RefCell;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_lite::{AsyncRead, AsyncWrite};
use glommio::net::TcpStream;

use crate::metrics::Metrics;

/// The byte stream under a session, inbound or outbound: plain TCP, or
/// TLS after STARTTLS (`T` is rustls' server or client stream);
/// `Upgrading` only while a handshake owns the TCP stream.
pub enum Connection<T> {
    Plain(TcpStream),
    Tls(Box<T>),
    Upgrading,
}

/// An inbound connection (TLS as the server).
pub type ServerConnection = Connection<futures_rustls::server::TlsStream<TcpStream>>;
/// An outbound connection (TLS as the client).
pub type ClientConnection = Connection<futures_rustls::client::TlsStream<TcpStream>>;

fn upgrading() -> io::Error {
    io::Error::new(
        io::ErrorKind::NotConnected,
        "connection is being upgraded to TLS",
    )
}

impl<T: AsyncRead + Unpin> AsyncRead for Connection<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Connection::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Connection::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Connection::Upgrading => Poll::Ready(Err(upgrading())),
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Connection<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Connection::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Connection::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            Connection::Upgrading => Poll::Ready(Err(upgrading())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Connection::Plain(s) => Pin::new(s).poll_flush(cx),
            Connection::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Connection::Upgrading => Poll::Ready(Err(upgrading())),
        }
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Connection::Plain(s) => Pin::new(s).poll_close(cx),
            Connection::Tls(s) => Pin::new(s.as_mut()).poll_close(cx),
            Connection::Upgrading => Poll::Ready(Ok(())),
        }
    }
}

/// What ended one wait for the client.
pub enum Wake {
    Read(io::Result<usize>),
    Deadline,
    Shutdown,
}

/// Waits for the client's next bytes (read into `input`), the session's
/// `deadline`, or the core's shutdown when `shutdown` is given (once it
/// has been seen, callers stop watching it).
pub async fn wait_for_client(
    conn: &mut ServerConnection,
    input: &mut ReadBuffer,
    deadline: std::time::Instant,
    shutdown: Option<&crate::session::shutdown::Shutdown>,
) -> Wake {
    use futures_lite::future::or;
    use futures_lite::AsyncReadExt;
    let read = async { Wake::Read(conn.read(input.spare()).await) };
    let timer = async {
        glommio::timer::sleep(deadline.saturating_duration_since(std::time::Instant::now())).await;
        Wake::Deadline
    };
    let stop = async {
        match shutdown {
            Some(shutdown) => {
                shutdown.wait().await;
                Wake::Shutdown
            }
            None => futures_lite::future::pending().await,
        }
    };
    or(read, or(timer, stop)).await
}

/// One write to a client: it must take some of `bytes` within `limit`
/// (`[local] write_timeout`), or the write fails with `TimedOut` and the
/// caller closes the connection. Bounding each write, not a whole reply,
/// lets a slow reader go on as long as it reads.
pub async fn write_within<T: AsyncWrite + Unpin>(
    conn: &mut Connection<T>,
    bytes: &[u8],
    limit: Duration,
) -> io::Result<usize> {
    use futures_lite::AsyncWriteExt;
    let n = glommio::timer::timeout(limit, async {
        conn.write(bytes).await.map_err(glommio::GlommioError::from)
    })
    .await
    .map_err(io::Error::from)?;
    if n == 0 && !bytes.is_empty() {
        return Err(io::ErrorKind::WriteZero.into());
    }
    Ok(n)
}

/// Flushes a connection (TLS holds records until then), within `limit`.
pub async fn flush_within<T: AsyncWrite + Unpin>(
    conn: &mut Connection<T>,
    limit: Duration,
) -> io::Result<()> {
    use futures_lite::AsyncWriteExt;
    glommio::timer::timeout(limit, async {
        conn.flush().await.map_err(glommio::GlommioError::from)
    })
    .await
    .map_err(io::Error::from)
}

/// Writes all of `bytes` and flushes, each write within `limit` (see
/// [`write_within`]).
pub async fn write_all_within<T: AsyncWrite + Unpin>(
    conn: &mut Connection<T>,
    mut bytes: &[u8],
    limit: Duration,
) -> io::Result<()> {
    while !bytes.is_empty() {
        let n = write_within(conn, bytes, limit).await?;
        bytes = &bytes[n..];
    }
    flush_within(conn, limit).await
}

/// Closes a connection at the end of a session, giving up after `limit`:
/// TLS sends close_notify, which a client that does not read never takes.
pub async fn close_within<T: AsyncWrite + Unpin>(conn: &mut Connection<T>, limit: Duration) {
    use futures_lite::AsyncWriteExt;
    let _ = glommio::timer::timeout(limit, async {
        conn.close().await.map_err(glommio::GlommioError::from)
    })
    .await;
}

/// Answers a connection refused before any session (limits) with one
/// line and closes it, within 5 seconds.
pub async fn refuse(mut stream: TcpStream, reply: &[u8]) {
    use futures_lite::AsyncWriteExt;
    let _ = glommio::timer::timeout(std::time::Duration::from_secs(5), async {
        stream.write_all(reply).await?;
        stream.close().await?;
        Ok(())
    })
    .await;
}

/// A new connection as its session starts: plain, or already TLS for the
/// implicit-TLS ports (465, 993, 995). `None` when that handshake fails
/// (or no certificate is configured); the failure is logged.
pub async fn open_connection(
    stream: TcpStream,
    implicit_tls: Option<&futures_rustls::TlsAcceptor>,
    limit: std::time::Duration,
    peer: std::net::SocketAddr,
    metrics: &RefCell<Metrics>,
) -> Option<ServerConnection> {
    let Some(acceptor) = implicit_tls else {
        return Some(Connection::Plain(stream));
    };
    match accept_tls(acceptor, stream, limit, metrics).await {
        Ok(conn) => Some(conn),
        Err(e) => {
            tracing::debug!(%peer, error = %e, "implicit TLS handshake failed");
            None
        }
    }
}

/// Whether plaintext passwords may be sent on this connection: over TLS,
/// everywhere if configured, or from loopback when that counts as secure.
pub fn plaintext_allowed(auth: &crate::config::Auth, tls: bool, peer: std::net::IpAddr) -> bool {
    tls || auth.allow_plaintext || (auth.trust_loopback && peer.to_canonical().is_loopback())
}

/// The server side of a TLS handshake (STARTTLS, STLS, or implicit TLS on
/// ports 465 and 995), bounded by `limit`, counted in `metrics`.
pub async fn accept_tls(
    acceptor: &futures_rustls::TlsAcceptor,
    tcp: TcpStream,
    limit: std::time::Duration,
    metrics: &RefCell<Metrics>,
) -> io::Result<ServerConnection> {
    let result = tls_handshake(acceptor, tcp, limit).await;
    metrics.borrow_mut().count_tls_handshake(result.is_ok());
    result
}

/// The server side of a TLS handshake bounded by `limit`, not counted
/// (for tools such as `spate sink` that keep no server metrics).
pub async fn tls_handshake(
    acceptor: &futures_rustls::TlsAcceptor,
    tcp: TcpStream,
    limit: std::time::Duration,
) -> io::Result<ServerConnection> {
    let stream = glommio::timer::timeout(limit, async {
        acceptor
            .accept(tcp)
            .await
            .map_err(glommio::GlommioError::from)
    })
    .await
    .map_err(io::Error::from)?;
    Ok(Connection::Tls(Box::new(stream)))
}

/// The client side of a TLS handshake (outbound STARTTLS, `spate blast
/// --starttls`), bounded by `limit`.
pub async fn client_tls_handshake(
    connector: &futures_rustls::TlsConnector,
    name: rustls::pki_types::ServerName<'static>,
    tcp: TcpStream,
    limit: std::time::Duration,
) -> io::Result<futures_rustls::client::TlsStream<TcpStream>> {
    glommio::timer::timeout(limit, async {
        connector
            .connect(name, tcp)
            .await
            .map_err(glommio::GlommioError::from)
    })
    .await
    .map_err(io::Error::from)
}

/// Received bytes not yet consumed by a protocol core. Starts small so an
/// idle connection costs little, and grows (up to `max`) only while a
/// client keeps it full, as during a large DATA transfer.
pub struct ReadBuffer {
    data: Vec<u8>,
    start: usize,
    end: usize,
    max: usize,
}

impl ReadBuffer {
    pub fn new(initial: usize, max: usize) -> Self {
        ReadBuffer {
            data: Vec::new(),
            start: 0,
            end: 0,
            max: max.max(initial),
        }
        .with_capacity(initial)
    }

    fn with_capacity(mut self, size: usize) -> Self {
        self.data.resize(size, 0);
        self
    }

    /// The bytes waiting to be parsed.
    pub fn filled(&self) -> &[u8] {
        &self.data[self.start..self.end]
    }

    /// Marks `n` waiting bytes as parsed.
    pub fn consume(&mut self, n: usize) {
        self.start = (self.start + n).min(self.end);
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// Forgets every waiting byte (after STARTTLS, RFC 3207 section 4).
    pub fn clear(&mut self) {
        self.start = 0;
        self.end = 0;
    }

    /// Room to read into: compacts, and doubles the buffer when it was
    /// completely full the last time.
    pub fn spare(&mut self) -> &mut [u8] {
        if self.start > 0 {
            self.data.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.end == self.data.len() && self.data.len() < self.max {
            let grown = (self.data.len() * 2).min(self.max);
            self.data.resize(grown, 0);
        }
        &mut self.data[self.end..]
    }

    /// Records that `n` bytes were read into [`ReadBuffer::spare`].
    pub fn commit(&mut self, n: usize) {
        self.end = (self.end + n).min(self.data.len());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffer_compacts_grows_and_stays_bounded() {
        let mut b = ReadBuffer::new(4, 16);
        b.spare()[..4].copy_from_slice(b"abcd");
        b.commit(4);
        b.consume(1);
        assert_eq!(b.filled(), b"bcd");
        assert_eq!(b.spare().len(), 1);
        b.spare()[0] = b'e';
        b.commit(1);
        assert_eq!(b.filled(), b"bcde");
        assert_eq!(b.spare().len(), 4, "full buffer doubles");
        b.commit(4);
        assert_eq!(b.spare().len(), 8);
        b.commit(8);
        assert!(b.spare().is_empty(), "never beyond max");
        b.clear();
        assert!(b.filled().is_empty());
    }
}
