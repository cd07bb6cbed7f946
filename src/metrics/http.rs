//! The little HTTP the metrics endpoint speaks, sans-IO: recognise a
//! complete HTTP/1.0 or 1.1 request head in received bytes and choose the
//! answer; write a whole response. `GET /metrics` only; no keep-alive, no
//! request bodies, no chunking. It opens no socket.

/// The longest request head read; beyond it the answer is 431.
pub const MAX_REQUEST: usize = 8 * 1024;

/// What to answer to the bytes received so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The head is not complete yet: read more.
    Incomplete,
    /// `GET /metrics` (or `HEAD`): send the exposition.
    Metrics { head_only: bool },
    /// An error status to send, then close.
    Error(Status),
}

/// The error answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    BadRequest,
    NotFound,
    MethodNotAllowed,
    HeadTooLarge,
    VersionNotSupported,
    Unavailable,
}

impl Status {
    fn line(self) -> &'static str {
        match self {
            Status::BadRequest => "400 Bad Request",
            Status::NotFound => "404 Not Found",
            Status::MethodNotAllowed => "405 Method Not Allowed",
            Status::HeadTooLarge => "431 Request Header Fields Too Large",
            Status::VersionNotSupported => "505 HTTP Version Not Supported",
            Status::Unavailable => "503 Service Unavailable",
        }
    }
}

/// Judges the bytes received so far on a connection.
pub fn handle_request(received: &[u8]) -> Verdict {
    let Some(end) = find_head_end(received) else {
        return if received.len() >= MAX_REQUEST {
            Verdict::Error(Status::HeadTooLarge)
        } else {
            Verdict::Incomplete
        };
    };
    if end > MAX_REQUEST {
        return Verdict::Error(Status::HeadTooLarge);
    }
    let head = &received[..end];
    let line_end = head.iter().position(|&b| b == b'\n').unwrap_or(head.len());
    let Ok(line) = std::str::from_utf8(&head[..line_end]) else {
        return Verdict::Error(Status::BadRequest);
    };
    let mut words = line.trim_end_matches('\r').split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (words.next(), words.next(), words.next(), words.next())
    else {
        return Verdict::Error(Status::BadRequest);
    };
    if version != "HTTP/1.0" && version != "HTTP/1.1" {
        return if version.starts_with("HTTP/") {
            Verdict::Error(Status::VersionNotSupported)
        } else {
            Verdict::Error(Status::BadRequest)
        };
    }
    let head_only = match method {
        "GET" => false,
        "HEAD" => true,
        _ => return Verdict::Error(Status::MethodNotAllowed),
    };
    // A query string is allowed (Prometheus may add one) and ignored.
    let path = target.split_once('?').map_or(target, |(p, _)| p);
    if path == "/metrics" {
        Verdict::Metrics { head_only }
    } else {
        Verdict::Error(Status::NotFound)
    }
}

/// Where the head ends (after its empty line), accepting bare LF too
/// (also read by the management API, `api::routes`).
pub fn find_head_end(bytes: &[u8]) -> Option<usize> {
    let mut i = 0;
    while let Some(k) = memchr::memchr(b'\n', &bytes[i..]) {
        let nl = i + k;
        let rest = &bytes[nl + 1..];
        if rest.starts_with(b"\r\n") {
            return Some(nl + 3);
        }
        if rest.starts_with(b"\n") {
            return Some(nl + 2);
        }
        i = nl + 1;
    }
    None
}

/// A complete `200 OK` response carrying `body` (or only its head).
pub fn ok_response(content_type: &str, body: &str, head_only: bool) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if !head_only {
        out.extend_from_slice(body.as_bytes());
    }
    out
}

/// A complete error response with a one-line text body.
pub fn error_response(status: Status) -> Vec<u8> {
    let body = format!("{}\n", status.line());
    let mut out = format!(
        "HTTP/1.1 {}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n",
        status.line(),
        body.len()
    );
    if status == Status::MethodNotAllowed {
        out.push_str("Allow: GET, HEAD\r\n");
    }
    out.push_str("\r\n");
    out.push_str(&body);
    out.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn get_metrics_is_recognised_once_the_head_is_complete() {
        let req = b"GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: */*\r\n\r\n";
        for cut in 0..req.len() {
            assert_eq!(handle_request(&req[..cut]), Verdict::Incomplete, "{cut}");
        }
        assert_eq!(handle_request(req), Verdict::Metrics { head_only: false });
        assert_eq!(
            handle_request(b"HEAD /metrics?x=1 HTTP/1.0\n\n"),
            Verdict::Metrics { head_only: true }
        );
    }

    #[test]
    fn everything_else_gets_an_error_status() {
        let cases: [(&[u8], Status); 7] = [
            (b"GET / HTTP/1.1\r\n\r\n", Status::NotFound),
            (b"GET /metricsx HTTP/1.1\r\n\r\n", Status::NotFound),
            (b"POST /metrics HTTP/1.1\r\n\r\n", Status::MethodNotAllowed),
            (
                b"GET /metrics HTTP/2.0\r\n\r\n",
                Status::VersionNotSupported,
            ),
            (b"GET /metrics\r\n\r\n", Status::BadRequest),
            (b"GET  /metrics HTTP/1.1\r\n\r\n", Status::BadRequest),
            (b"\xff\xfe /metrics HTTP/1.1\r\n\r\n", Status::BadRequest),
        ];
        for (req, status) in cases {
            assert_eq!(
                handle_request(req),
                Verdict::Error(status),
                "{:?}",
                String::from_utf8_lossy(req)
            );
        }
        let endless = vec![b'a'; MAX_REQUEST];
        assert_eq!(
            handle_request(&endless),
            Verdict::Error(Status::HeadTooLarge)
        );
        let mut long = b"GET /metrics HTTP/1.1\r\nX: ".to_vec();
        long.extend(vec![b'a'; MAX_REQUEST]);
        long.extend_from_slice(b"\r\n\r\n");
        assert_eq!(handle_request(&long), Verdict::Error(Status::HeadTooLarge));
    }

    #[test]
    fn responses_are_complete() {
        let r = String::from_utf8(ok_response("text/plain", "a 1\n", false)).unwrap();
        assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
        assert!(r.contains("Content-Length: 4\r\n"), "{r}");
        assert!(r.ends_with("\r\n\r\na 1\n"), "{r}");
        let h = String::from_utf8(ok_response("text/plain", "a 1\n", true)).unwrap();
        assert!(h.ends_with("\r\n\r\n"), "{h}");
        let e = String::from_utf8(error_response(Status::NotFound)).unwrap();
        assert!(e.starts_with("HTTP/1.1 404 Not Found\r\n"), "{e}");
        assert!(e.ends_with("\r\n\r\n404 Not Found\n"), "{e}");
    }
}
