//! A minimal HTTP/1.1 client for posting event batches: `http://` URLs,
//! one POST at a time over a kept-alive connection, the status code as
//! the answer. It does not follow redirects or speak TLS.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

/// An endpoint's address, parsed from `http://host[:port][/path]`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(try_from = "String")]
pub struct HttpUrl {
    /// As configured: the endpoint's name in logs and metrics.
    pub text: String,
    /// `host:port` as the `Host` header and the connection want it.
    pub authority: String,
    /// The path and query (`/` when none).
    pub path: String,
}

/// A URL spate cannot post to.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    #[error("{0:?}: only http:// URLs are supported (put a TLS proxy in front for https)")]
    Scheme(String),
    #[error("{0:?}: want http://host[:port][/path]")]
    Malformed(String),
}

impl TryFrom<String> for HttpUrl {
    type Error = UrlError;

    fn try_from(text: String) -> Result<HttpUrl, UrlError> {
        let malformed = || UrlError::Malformed(text.clone());
        let Some(rest) = text.strip_prefix("http://") else {
            return Err(UrlError::Scheme(text.clone()));
        };
        let (authority, path) = match rest.find(['/', '?']) {
            Some(at) => (&rest[..at], &rest[at..]),
            None => (rest, "/"),
        };
        let path = if path.starts_with('?') {
            format!("/{path}")
        } else {
            path.to_owned()
        };
        if authority.is_empty()
            || authority.contains('@')
            || path
                .bytes()
                .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
            || authority
                .bytes()
                .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
        {
            return Err(malformed());
        }
        // The port: after the last colon, unless that colon is inside an
        // IPv6 literal.
        let authority = match authority.rsplit_once(':') {
            Some((host, port)) if !port.contains(']') => {
                if host.is_empty() || port.parse::<u16>().map_or(true, |p| p == 0) {
                    return Err(malformed());
                }
                authority.to_owned()
            }
            _ => format!("{authority}:80"),
        };
        Ok(HttpUrl {
            text,
            authority,
            path,
        })
    }
}

/// Why a POST got no answer.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("cannot connect: {0}")]
    Connect(std::io::Error),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("malformed response: {0}")]
    Malformed(&'static str),
}

/// Posts to one endpoint, keeping its connection open between posts.
pub struct HttpClient {
    url: HttpUrl,
    timeout: Duration,
    /// Extra header lines, each ending in CRLF.
    headers: String,
    connection: Option<BufReader<TcpStream>>,
}

impl HttpClient {
    /// `headers` are sent with every request (`Authorization`, ...).
    pub fn new(url: HttpUrl, timeout: Duration, headers: &[(String, String)]) -> HttpClient {
        let headers = headers
            .iter()
            .map(|(name, value)| format!("{name}: {value}\r\n"))
            .collect();
        HttpClient {
            url,
            timeout,
            headers,
            connection: None,
        }
    }

    /// POSTs `body` as JSON; the status code answered. A kept-alive
    /// connection the server closed meanwhile is replaced once.
    pub fn post_json(&mut self, body: &[u8]) -> Result<u16, HttpError> {
        let reused = self.connection.is_some();
        match self.try_post(body) {
            Err(HttpError::Io(_)) if reused => {
                self.connection = None;
                self.try_post(body)
            }
            other => other,
        }
    }

    fn try_post(&mut self, body: &[u8]) -> Result<u16, HttpError> {
        let result = self.exchange(body);
        if result.is_err() {
            self.connection = None;
        }
        result
    }

    fn exchange(&mut self, body: &[u8]) -> Result<u16, HttpError> {
        if self.connection.is_none() {
            self.connection = Some(BufReader::new(self.connect()?));
        }
        let Some(connection) = self.connection.as_mut() else {
            return Err(HttpError::Malformed("no connection"));
        };
        let head = format!(
            "POST {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: spate\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{}\r\n",
            self.url.path,
            self.url.authority,
            body.len(),
            self.headers
        );
        let stream = connection.get_mut();
        stream.write_all(head.as_bytes())?;
        stream.write_all(body)?;
        stream.flush()?;
        let response = read_response(connection)?;
        if !response.keep_alive {
            self.connection = None;
        }
        Ok(response.status)
    }

    fn connect(&self) -> Result<TcpStream, HttpError> {
        let addresses = self
            .url
            .authority
            .to_socket_addrs()
            .map_err(HttpError::Connect)?;
        let mut last = std::io::Error::new(std::io::ErrorKind::NotFound, "no address");
        for address in addresses {
            match TcpStream::connect_timeout(&address, self.timeout) {
                Ok(stream) => {
                    stream.set_nodelay(true)?;
                    stream.set_read_timeout(Some(self.timeout))?;
                    stream.set_write_timeout(Some(self.timeout))?;
                    return Ok(stream);
                }
                Err(e) => last = e,
            }
        }
        Err(HttpError::Connect(last))
    }
}

/// A response's status and whether its connection can carry another
/// request (its body was read to the end).
#[derive(Debug, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub keep_alive: bool,
}

/// The longest response head line accepted.
const MAX_LINE: usize = 8192;

/// Reads one response: its head, then its body (discarded).
pub fn read_response(reader: &mut impl BufRead) -> Result<Response, HttpError> {
    let status_line = read_line(reader)?;
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    let status: u16 = parts
        .next()
        .and_then(|code| code.parse().ok())
        .filter(|code| (100..600).contains(code))
        .ok_or(HttpError::Malformed("status line"))?;
    if !version.starts_with("HTTP/1.") {
        return Err(HttpError::Malformed("status line"));
    }
    let mut keep_alive = version == "HTTP/1.1";
    let mut length = None;
    let mut chunked = false;
    loop {
        let line = read_line(reader)?;
        if line.is_empty() {
            break;
        }
        let Some((name, value)) = line.split_once(':') else {
            return Err(HttpError::Malformed("header line"));
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            length = Some(
                value
                    .parse::<u64>()
                    .map_err(|_| HttpError::Malformed("content-length"))?,
            );
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.to_ascii_lowercase().contains("chunked");
        } else if name.eq_ignore_ascii_case("connection") {
            keep_alive = !value.eq_ignore_ascii_case("close");
        }
    }
    if chunked {
        skip_chunked(reader)?;
    } else if let Some(length) = length {
        let skipped = std::io::copy(&mut reader.take(length), &mut std::io::sink())?;
        if skipped < length {
            return Err(HttpError::Malformed("body shorter than its length"));
        }
    } else if !(status == 204 || status == 304 || (100..200).contains(&status)) {
        // The body runs to the end of the connection: not read.
        keep_alive = false;
    }
    Ok(Response { status, keep_alive })
}

/// Reads and discards a chunked body and its trailer.
fn skip_chunked(reader: &mut impl BufRead) -> Result<(), HttpError> {
    loop {
        let line = read_line(reader)?;
        let size = line.split(';').next().unwrap_or_default().trim();
        let size = u64::from_str_radix(size, 16).map_err(|_| HttpError::Malformed("chunk size"))?;
        if size == 0 {
            while !read_line(reader)?.is_empty() {}
            return Ok(());
        }
        let skipped = std::io::copy(&mut reader.take(size), &mut std::io::sink())?;
        if skipped < size || !read_line(reader)?.is_empty() {
            return Err(HttpError::Malformed("chunk"));
        }
    }
}

/// One CRLF (or LF) ended line, without its ending.
fn read_line(reader: &mut impl BufRead) -> Result<String, HttpError> {
    let mut line = Vec::new();
    let n = reader
        .take(MAX_LINE as u64 + 2)
        .read_until(b'\n', &mut line)?;
    if n == 0 {
        return Err(HttpError::Io(std::io::ErrorKind::UnexpectedEof.into()));
    }
    if line.last() != Some(&b'\n') {
        return Err(HttpError::Malformed("line too long or cut"));
    }
    while matches!(line.last(), Some(b'\n' | b'\r')) {
        line.pop();
    }
    String::from_utf8(line).map_err(|_| HttpError::Malformed("not UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(text: &str) -> Result<HttpUrl, UrlError> {
        HttpUrl::try_from(text.to_owned())
    }

    #[test]
    fn urls_are_parsed_into_authority_and_path() {
        let u = url("http://127.0.0.1:8080/hooks/mail?x=1").expect("valid");
        assert_eq!(u.authority, "127.0.0.1:8080");
        assert_eq!(u.path, "/hooks/mail?x=1");
        let u = url("http://hooks.example").expect("valid");
        assert_eq!(
            (u.authority.as_str(), u.path.as_str()),
            ("hooks.example:80", "/")
        );
        let u = url("http://[::1]/e").expect("valid");
        assert_eq!(u.authority, "[::1]:80");
        let u = url("http://[::1]:9/e").expect("valid");
        assert_eq!(u.authority, "[::1]:9");
    }

    #[test]
    fn bad_urls_are_refused() {
        assert!(matches!(
            url("https://a.example/"),
            Err(UrlError::Scheme(_))
        ));
        assert!(matches!(url("ftp://a/"), Err(UrlError::Scheme(_))));
        for bad in [
            "http://",
            "http:///path",
            "http://a:0/",
            "http://a:99999/",
            "http://a:x/",
            "http://u@a/",
            "http://a/b c",
        ] {
            assert!(matches!(url(bad), Err(UrlError::Malformed(_))), "{bad}");
        }
    }

    fn response(text: &str) -> Result<Response, HttpError> {
        read_response(&mut text.as_bytes())
    }

    #[test]
    fn responses_give_their_status_and_whether_the_connection_stays() {
        let r = response("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok").expect("valid");
        assert_eq!(
            r,
            Response {
                status: 200,
                keep_alive: true
            }
        );
        let r = response("HTTP/1.1 500 Oops\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
            .expect("valid");
        assert_eq!(
            r,
            Response {
                status: 500,
                keep_alive: false
            }
        );
        let r = response("HTTP/1.1 202 Accepted\r\n\r\n").expect("valid");
        assert_eq!(
            r,
            Response {
                status: 202,
                keep_alive: false
            }
        );
        let r = response("HTTP/1.0 204 No Content\r\n\r\n").expect("valid");
        assert_eq!(
            r,
            Response {
                status: 204,
                keep_alive: false
            }
        );
        let r =
            response("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n")
                .expect("valid");
        assert_eq!(
            r,
            Response {
                status: 200,
                keep_alive: true
            }
        );
    }

    #[test]
    fn malformed_responses_are_errors() {
        assert!(response("").is_err());
        assert!(response("SMTP 220 hi\r\n\r\n").is_err());
        assert!(response("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nab").is_err());
        assert!(response("HTTP/1.1 200 OK\r\nno colon\r\n\r\n").is_err());
    }
}
