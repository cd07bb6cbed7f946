//! Fetches an MTA-STS policy file (RFC 8461 3.3): one blocking HTTPS GET
//! of `https://mta-sts.<domain>/.well-known/mta-sts.txt` over rustls,
//! with a certificate valid for that name, no redirects followed, a 200
//! answer of type text/plain, at most 64 KiB, within a deadline. It
//! speaks just enough HTTP/1.1 for that (Content-Length, chunked or
//! close-delimited bodies) and nothing else.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// RFC 8461 3.3: senders may limit the policy's size; 64 KiB is plenty.
pub const MAX_POLICY: usize = 64 * 1024;
/// Headers on top of the body.
const MAX_HEADERS: usize = 16 * 1024;

/// Why no policy could be fetched.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    #[error("no address for {0}")]
    NoAddress(String),
    #[error("cannot reach {host}: {error}")]
    Io { host: String, error: String },
    #[error("{0}: timed out")]
    Timeout(String),
    #[error("{host} answered {status} (RFC 8461 3.3: only 200, no redirects)")]
    Status { host: String, status: u16 },
    #[error("{0} sent a malformed HTTP answer")]
    Malformed(String),
    #[error("{host} sent a policy of type {kind:?}, not text/plain")]
    NotText { host: String, kind: String },
    #[error("{0} sent a policy over 64 KiB")]
    TooLarge(String),
}

/// Fetches the policy body of `domain` from `addresses` (of
/// `mta-sts.<domain>`) on `port` (443 but in test labs), verifying the
/// certificate with `tls`. Returns the body as text.
pub fn fetch_policy(
    domain: &str,
    addresses: &[IpAddr],
    port: u16,
    tls: &Arc<rustls::ClientConfig>,
    timeout: Duration,
) -> Result<String, FetchError> {
    let host = format!("mta-sts.{domain}");
    let deadline = Instant::now() + timeout;
    let mut last = FetchError::NoAddress(host.clone());
    for ip in addresses {
        match fetch_from(&host, SocketAddr::new(*ip, port), tls, deadline) {
            Ok(body) => return Ok(body),
            // An answer was received: another address will not differ.
            Err(
                e @ (FetchError::Status { .. }
                | FetchError::NotText { .. }
                | FetchError::TooLarge(_)),
            ) => return Err(e),
            Err(e) => last = e,
        }
        if Instant::now() >= deadline {
            return Err(FetchError::Timeout(host));
        }
    }
    Err(last)
}

fn fetch_from(
    host: &str,
    addr: SocketAddr,
    tls: &Arc<rustls::ClientConfig>,
    deadline: Instant,
) -> Result<String, FetchError> {
    let io = |e: std::io::Error| {
        if matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ) {
            FetchError::Timeout(host.to_owned())
        } else {
            FetchError::Io {
                host: host.to_owned(),
                error: e.to_string(),
            }
        }
    };
    let left = || {
        deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1))
    };
    let mut tcp = TcpStream::connect_timeout(&addr, left()).map_err(io)?;
    let _ = tcp.set_nodelay(true);
    let name = rustls::pki_types::ServerName::try_from(host.to_owned())
        .map_err(|_| FetchError::NoAddress(host.to_owned()))?;
    let mut conn =
        rustls::ClientConnection::new(Arc::clone(tls), name).map_err(|e| FetchError::Io {
            host: host.to_owned(),
            error: e.to_string(),
        })?;
    let request = format!(
        "GET /.well-known/mta-sts.txt HTTP/1.1\r\nHost: {host}\r\nUser-Agent: spate\r\nAccept: text/plain\r\nConnection: close\r\n\r\n"
    );
    let mut raw = Vec::new();
    {
        tcp.set_write_timeout(Some(left())).map_err(io)?;
        let mut stream = rustls::Stream::new(&mut conn, &mut tcp);
        stream.write_all(request.as_bytes()).map_err(io)?;
        stream.flush().map_err(io)?;
        let mut buf = [0u8; 8192];
        loop {
            stream.sock.set_read_timeout(Some(left())).map_err(io)?;
            match stream.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    raw.extend_from_slice(&buf[..n]);
                    if raw.len() > MAX_POLICY + MAX_HEADERS {
                        return Err(FetchError::TooLarge(host.to_owned()));
                    }
                    // A server that keeps the connection open after the
                    // whole body: no need to wait for its close.
                    if has_whole_body(&raw) {
                        break;
                    }
                }
                // A server that closes without close_notify: the body is
                // still checked against its length below.
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
                Err(e) => return Err(io(e)),
            }
            if Instant::now() >= deadline {
                return Err(FetchError::Timeout(host.to_owned()));
            }
        }
    }
    parse_response(host, &raw)
}

/// Reads an HTTP/1.1 response: status 200, text/plain, the body.
pub fn parse_response(host: &str, raw: &[u8]) -> Result<String, FetchError> {
    let malformed = || FetchError::Malformed(host.to_owned());
    let split = memchr::memmem::find(raw, b"\r\n\r\n").ok_or_else(malformed)?;
    let head = std::str::from_utf8(&raw[..split]).map_err(|_| malformed())?;
    let body = &raw[split + 4..];
    let mut lines = head.split("\r\n");
    let status_line = lines.next().ok_or_else(malformed)?;
    let mut parts = status_line.split(' ');
    if !parts.next().is_some_and(|v| v.starts_with("HTTP/1.")) {
        return Err(malformed());
    }
    let status: u16 = parts
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or_else(malformed)?;
    if status != 200 {
        return Err(FetchError::Status {
            host: host.to_owned(),
            status,
        });
    }
    let mut length = None;
    let mut chunked = false;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            return Err(malformed());
        };
        let value = value.trim();
        match name.trim().to_ascii_lowercase().as_str() {
            "content-type" => {
                let kind = value.split(';').next().unwrap_or("").trim();
                if !kind.eq_ignore_ascii_case("text/plain") {
                    return Err(FetchError::NotText {
                        host: host.to_owned(),
                        kind: kind.chars().take(60).collect(),
                    });
                }
            }
            "content-length" => length = Some(value.parse::<usize>().map_err(|_| malformed())?),
            "transfer-encoding" => chunked = value.eq_ignore_ascii_case("chunked"),
            _ => {}
        }
    }
    let body = if chunked {
        dechunk(body).ok_or_else(malformed)?
    } else if let Some(n) = length {
        body.get(..n).ok_or_else(malformed)?.to_vec()
    } else {
        body.to_vec()
    };
    if body.len() > MAX_POLICY {
        return Err(FetchError::TooLarge(host.to_owned()));
    }
    String::from_utf8(body).map_err(|_| malformed())
}

/// Whether `raw` holds a whole response with a Content-Length body.
fn has_whole_body(raw: &[u8]) -> bool {
    let Some(split) = memchr::memmem::find(raw, b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&raw[..split]);
    let length = head.split("\r\n").skip(1).find_map(|line| {
        let (name, value) = line.split_once(':')?;
        if name.trim().eq_ignore_ascii_case("content-length") {
            value.trim().parse::<usize>().ok()
        } else {
            None
        }
    });
    length.is_some_and(|n| raw.len() - (split + 4) >= n)
}

/// A chunked body (RFC 9112 7.1), extensions and trailers ignored.
fn dechunk(mut input: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let end = memchr::memmem::find(input, b"\r\n")?;
        let size_text = std::str::from_utf8(&input[..end]).ok()?;
        let size_text = size_text.split(';').next()?.trim();
        let size = usize::from_str_radix(size_text, 16).ok()?;
        input = &input[end + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(input.get(..size)?);
        input = input.get(size + 2..)?;
        if out.len() > MAX_POLICY {
            return Some(out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses() {
        let ok = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 5\r\n\r\nhelloEXTRA";
        assert_eq!(parse_response("h", ok).unwrap(), "hello");
        let chunked = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n";
        assert_eq!(parse_response("h", chunked).unwrap(), "abcde");
        let closed = b"HTTP/1.0 200 OK\r\n\r\nbody";
        assert_eq!(parse_response("h", closed).unwrap(), "body");
        let redirect = b"HTTP/1.1 301 Moved\r\nLocation: https://x/\r\n\r\n";
        assert!(matches!(
            parse_response("h", redirect),
            Err(FetchError::Status { status: 301, .. })
        ));
        let html = b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n\r\n<p>";
        assert!(matches!(
            parse_response("h", html),
            Err(FetchError::NotText { .. })
        ));
        assert!(matches!(
            parse_response("h", b"garbage"),
            Err(FetchError::Malformed(_))
        ));
        assert!(has_whole_body(
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nab"
        ));
        assert!(!has_whole_body(
            b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nab"
        ));
        assert!(!has_whole_body(b"HTTP/1.1 200 OK\r\n\r\nab"));
    }
}
