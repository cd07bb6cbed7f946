//! One outbound SMTP connection: connects (from an egress source's
//! address when given), drives the sans-IO `ClientSession` over a glommio
//! socket (STARTTLS through rustls when offered), and sends each body
//! straight from the spool's memory map through `DotStuffer`, without
//! copying it. It reports per-recipient results; what they mean for the
//! queue is the engine's business.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd};
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;

use crate::envelope::{BodyType, Envelope};
use crate::session::stream::{ClientConnection, Connection, ReadBuffer};
use crate::smtp::client::{
    ClientConfig, ClientEvent, ClientSession, Outcome, RecipientResult, ReplyText,
};
use crate::smtp::dot_stuff::DotStuffer;

/// Replies are small; a server that keeps this full is broken.
const READ_BUFFER: usize = 4096;
const MAX_READ_BUFFER: usize = 64 * 1024;

/// Why no transaction can be attempted on this host: the caller tries
/// the next one, and reports the last reason if every host fails.
#[derive(Debug, Clone)]
pub struct HostFailed {
    pub reply: ReplyText,
    /// False only for a 5xx greeting or HELO refusal.
    pub transient: bool,
}

/// What one transaction gave.
#[derive(Debug)]
pub struct Transaction {
    /// One per recipient given, in that order.
    pub results: Vec<RecipientResult>,
    /// The connection may carry another transaction.
    pub reusable: bool,
}

/// An open, greeted connection to one next-hop host.
pub struct Outbound {
    link: ClientConnection,
    client: ClientSession,
    input: ReadBuffer,
    tls: Option<(
        futures_rustls::TlsConnector,
        rustls::pki_types::ServerName<'static>,
    )>,
    /// A name for logs and DSNs: `host[ip]:port`.
    pub remote: String,
    /// Why the TLS handshake failed, if it did (a certificate refused by
    /// a DANE or MTA-STS verifier says so here).
    tls_error: Option<String>,
}

/// Connects to `addr` from local address `local` (an egress source):
/// glommio 0.9 connects only sockets it makes itself, so the socket is
/// made here, bound, and connected without blocking; glommio's write path
/// then waits for it to become writable (a zero-length write returns
/// once the connection is up, or its error).
async fn connect_from(local: IpAddr, addr: SocketAddr) -> glommio::Result<TcpStream, ()> {
    use socket2::{Domain, Socket, Type};
    if local.is_ipv4() != addr.is_ipv4() {
        return Err(io::Error::new(
            io::ErrorKind::AddrNotAvailable,
            format!("source address {local} cannot reach {addr}"),
        )
        .into());
    }
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    // Take the port at connect time, by the whole 4-tuple: many
    // connections from one source address to many hosts share ports.
    let no_port: libc::c_int = 1;
    // SAFETY: a valid socket and a c_int option of the right size; a
    // failure (an older kernel) only means ports are picked at bind.
    unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&no_port as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
    socket.bind(&SocketAddr::new(local, 0).into())?;
    socket.set_nonblocking(true)?;
    match socket.connect(&addr.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e.into()),
    }
    // glommio links socket2 0.4, so the socket goes over as a descriptor.
    // SAFETY: `into_raw_fd` hands over the only owner of an open socket.
    let mut stream = unsafe { TcpStream::from_raw_fd(socket.into_raw_fd()) };
    stream.write(&[]).await?;
    // Connected: a failed connect reports its error on the write above.
    stream.peer_addr()?;
    Ok(stream)
}

/// What the driver waits for.
enum Want {
    Ready,
    Transaction,
    Closed,
}

impl Outbound {
    /// Whether the server announced DSN (RFC 3461) in its EHLO reply:
    /// then it takes the NOTIFY, RET, ENVID and ORCPT parameters on.
    pub fn offers_dsn(&self) -> bool {
        self.client.capabilities().dsn
    }

    /// Connects (from local address `bind` when given: an egress
    /// source), reads the greeting, says EHLO (with `config`'s name) and
    /// does STARTTLS when the server offers it (and `tls` is given), until
    /// the session is ready for a transaction.
    pub async fn open(
        addr: SocketAddr,
        host_name: &str,
        config: Rc<ClientConfig>,
        tls: Option<futures_rustls::TlsConnector>,
        connect_timeout: Duration,
        bind: Option<IpAddr>,
    ) -> Result<Outbound, HostFailed> {
        let remote = format!("{host_name}[{}]:{}", addr.ip(), addr.port());
        let connecting = async {
            match bind {
                Some(local) => connect_from(local, addr).await,
                None => Ok(TcpStream::connect(addr).await?),
            }
        };
        let connected = glommio::timer::timeout(connect_timeout, connecting).await;
        let stream = connected.map_err(|e| HostFailed {
            reply: ReplyText::local(
                421,
                crate::smtp::client::EnhancedCode::new(4, 4, 1),
                format!("connect to {remote}: {e}"),
            ),
            transient: true,
        })?;
        // Small replies and commands: never wait for delayed ACKs.
        let _ = stream.set_nodelay(true);
        let server_name = rustls::pki_types::ServerName::try_from(host_name.to_owned())
            .unwrap_or_else(|_| rustls::pki_types::ServerName::IpAddress(addr.ip().into()));
        let mut outbound = Outbound {
            link: Connection::Plain(stream),
            client: ClientSession::new(config, Instant::now()),
            input: ReadBuffer::new(READ_BUFFER, MAX_READ_BUFFER),
            tls: tls.map(|connector| (connector, server_name)),
            remote,
            tls_error: None,
        };
        match outbound.run(Want::Ready, None).await {
            Ok(_) => Ok(outbound),
            Err(mut failed) => {
                outbound.close().await;
                if let Some(error) = outbound.tls_error.take() {
                    failed.reply = ReplyText::local(
                        failed.reply.code,
                        failed
                            .reply
                            .enhanced
                            .unwrap_or(crate::smtp::client::EnhancedCode::new(4, 7, 5)),
                        format!("TLS handshake with {} failed: {error}", outbound.remote),
                    );
                }
                Err(failed)
            }
        }
    }

    /// One transaction for `recipients` (indexes into the envelope) with
    /// the body sent from `body` (the spool's memory map).
    pub async fn send(
        &mut self,
        envelope: &Envelope,
        recipients: &[usize],
        body: &[u8],
    ) -> Transaction {
        let needs_8bit = envelope.body_type != BodyType::SevenBit;
        let started = self.client.start_transaction(
            envelope,
            recipients,
            body.len() as u64,
            envelope.smtputf8,
            needs_8bit,
            Instant::now(),
        );
        if let Err(refused) = started {
            let outcome = if refused.is_permanent() {
                Outcome::PermanentFailure
            } else {
                Outcome::TransientFailure
            };
            let reply = refused.reply();
            return Transaction {
                results: recipients
                    .iter()
                    .map(|&index| RecipientResult {
                        index,
                        outcome,
                        reply: reply.clone(),
                    })
                    .collect(),
                reusable: self.client.is_ready(),
            };
        }
        match self.run(Want::Transaction, Some(body)).await {
            Ok(Some(results)) => Transaction {
                results,
                reusable: self.client.is_ready(),
            },
            Ok(None) | Err(_) => Transaction {
                // The core answers every started transaction; this is the
                // belt to its braces.
                results: recipients
                    .iter()
                    .map(|&index| RecipientResult {
                        index,
                        outcome: Outcome::TransientFailure,
                        reply: ReplyText::local(
                            451,
                            crate::smtp::client::EnhancedCode::new(4, 4, 2),
                            "connection lost".into(),
                        ),
                    })
                    .collect(),
                reusable: false,
            },
        }
    }

    /// Whether the session runs under TLS (STARTTLS succeeded).
    pub fn is_tls(&self) -> bool {
        self.client.is_tls()
    }

    /// How many more transactions this connection may carry.
    pub fn messages_left(&self) -> usize {
        if self.client.is_ready() {
            self.client.messages_left()
        } else {
            0
        }
    }

    /// QUIT (when the session is still usable) and close.
    pub async fn quit(mut self) {
        if self.client.is_ready() {
            self.client.quit(Instant::now());
            let _ = self.run(Want::Closed, None).await;
        }
        self.close().await;
    }

    async fn close(&mut self) {
        let _ = glommio::timer::timeout(Duration::from_secs(5), async {
            self.link.close().await.map_err(glommio::GlommioError::from)
        })
        .await;
    }

    /// Moves bytes until the wanted event. `Ok(Some(results))` ends a
    /// transaction; `Err` means the connection is unusable.
    async fn run(
        &mut self,
        want: Want,
        body: Option<&[u8]>,
    ) -> Result<Option<Vec<RecipientResult>>, HostFailed> {
        let mut done: Option<Vec<RecipientResult>> = None;
        loop {
            while let Some(event) = self.client.poll_event() {
                match event {
                    ClientEvent::Ready => {
                        if matches!(want, Want::Ready) {
                            return Ok(None);
                        }
                    }
                    ClientEvent::StartTls => self.start_tls().await,
                    ClientEvent::SendBody => {
                        let body = body.unwrap_or_default();
                        if self.write_body(body).await.is_err() {
                            self.client.handle_eof(Instant::now());
                        } else {
                            self.client.handle_body_sent(Instant::now());
                        }
                    }
                    ClientEvent::TransactionDone(results) => {
                        if matches!(want, Want::Transaction) {
                            if self.client.is_ready() {
                                return Ok(Some(results));
                            }
                            // A ConnectionFailed may follow; it must not
                            // lose these results.
                            done = Some(results);
                        }
                    }
                    ClientEvent::ConnectionFailed {
                        error, transient, ..
                    } => {
                        self.flush_output().await;
                        if let Some(results) = done.take() {
                            return Ok(Some(results));
                        }
                        return Err(HostFailed {
                            reply: error.reply(),
                            transient,
                        });
                    }
                    ClientEvent::Closed => {
                        self.flush_output().await;
                        if let Some(results) = done.take() {
                            return Ok(Some(results));
                        }
                        return match want {
                            Want::Closed => Ok(None),
                            _ => Err(HostFailed {
                                reply: ReplyText::local(
                                    421,
                                    crate::smtp::client::EnhancedCode::new(4, 4, 2),
                                    "connection closed".into(),
                                ),
                                transient: true,
                            }),
                        };
                    }
                }
            }
            if let Some(results) = done.take() {
                return Ok(Some(results));
            }
            if self.write_output().await.is_err() {
                self.client.handle_eof(Instant::now());
                continue;
            }
            self.read_some().await;
        }
    }

    /// Reads once (or times out) and feeds the core.
    async fn read_some(&mut self) {
        let deadline = self.client.deadline();
        let link = &mut self.link;
        let input = &mut self.input;
        let read = async { Some(link.read(input.spare()).await) };
        let timer = async {
            match deadline {
                Some(at) => {
                    glommio::timer::sleep(at.saturating_duration_since(Instant::now())).await
                }
                None => futures_lite::future::pending::<()>().await,
            }
            None
        };
        match futures_lite::future::or(read, timer).await {
            Some(Ok(0)) | Some(Err(_)) => self.client.handle_eof(Instant::now()),
            Some(Ok(n)) => {
                self.input.commit(n);
                let consumed = self
                    .client
                    .handle_input(self.input.filled(), Instant::now());
                self.input.consume(consumed);
            }
            None => self.client.handle_timeout(Instant::now()),
        }
    }

    async fn write_output(&mut self) -> io::Result<()> {
        while let Some(out) = self.client.poll_output() {
            let n = self.link.write(out).await?;
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            self.client.consume_output(n);
        }
        self.link.flush().await
    }

    async fn flush_output(&mut self) {
        let _ = glommio::timer::timeout(Duration::from_secs(5), async {
            self.write_output()
                .await
                .map_err(glommio::GlommioError::from)
        })
        .await;
    }

    /// The body pieces go to the socket as they are: slices of the memory
    /// map and the few static bytes dot-stuffing inserts.
    async fn write_body(&mut self, body: &[u8]) -> io::Result<()> {
        let mut stuffer = DotStuffer::new(body);
        while let Some(piece) = stuffer.peek() {
            let n = self.link.write(piece).await?;
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            stuffer.advance(n);
            self.client.handle_body_progress(Instant::now());
        }
        self.link.flush().await
    }

    async fn start_tls(&mut self) {
        self.flush_output().await;
        self.input.clear();
        let (Some((connector, name)), Connection::Plain(_)) = (self.tls.clone(), &self.link) else {
            self.client.handle_tls_failed(Instant::now());
            return;
        };
        let Connection::Plain(tcp) = std::mem::replace(&mut self.link, Connection::Upgrading)
        else {
            return;
        };
        let handshake = crate::session::stream::client_tls_handshake(
            &connector,
            name,
            tcp,
            Duration::from_secs(60),
        )
        .await;
        match handshake {
            Ok(tls) => {
                self.link = Connection::Tls(Box::new(tls));
                self.client.handle_tls_established(Instant::now());
            }
            Err(e) => {
                tracing::debug!(remote = %self.remote, error = %e, "outbound TLS handshake failed");
                self.tls_error = Some(e.to_string());
                self.client.handle_tls_failed(Instant::now());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run<T>(f: impl std::future::Future<Output = T>) -> T {
        glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .make()
            .expect("glommio executor (needs io_uring and locked memory)")
            .run(f)
    }

    #[test]
    fn a_connection_leaves_from_the_source_address() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let source: IpAddr = "127.0.0.33".parse().unwrap();
        let peer = std::thread::spawn(move || listener.accept().unwrap().1);
        let local = run(async move {
            let stream = connect_from(source, addr).await.expect("connects");
            stream.local_addr().unwrap()
        });
        assert_eq!(local.ip(), source);
        assert_eq!(peer.join().unwrap(), local, "the server sees the source");
    }

    #[test]
    fn a_refused_or_impossible_connection_is_an_error() {
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let source: IpAddr = "127.0.0.34".parse().unwrap();
        let refused = run(async move { connect_from(source, closed).await.map(|_| ()) });
        let e = refused.expect_err("nothing listens");
        assert!(e.to_string().to_lowercase().contains("refused"), "{e}");
        let v6: SocketAddr = "[::1]:25".parse().unwrap();
        let mismatch = run(async move { connect_from(source, v6).await.map(|_| ()) });
        assert!(mismatch.is_err());
    }
}
