//! The management API's HTTP, sans-IO: reads one HTTP/1.1 request from
//! received bytes (head and a `Content-Length` body, both bounded),
//! checks the bearer token, and maps the route to a `control::Request`;
//! turns the shards' reply into a JSON response. No socket here.
//!
//! Routes (all JSON; every request needs `Authorization: Bearer TOKEN`):
//! - `GET  /api/v1/queue/summary`: the queue by state, domain, tenant,
//!   site and source
//! - `GET  /api/v1/shaping`: suspensions, throttles, active sites' limits
//! - `POST /api/v1/suspend`: `{"site"|"domain"|"source": NAME, "duration": SECONDS|"2h"}`
//! - `POST /api/v1/resume`: `{"site"|"domain"|"source": NAME}`
//! - `POST /api/v1/retry`: a selection, or nothing for every message
//! - `POST /api/v1/bounce`, `POST /api/v1/delete`: a selection
//!
//! A selection is `{"id": QUEUE_ID}` or any of `domain`, `tenant`,
//! `sender`, or `{"all": true}`.

use std::time::Duration;

use serde::Deserialize;

use crate::control::{Reply, Request, Selection};
use crate::queue::DestinationKey;

/// The longest request head read.
pub const MAX_HEAD: usize = 8 * 1024;
/// The longest request body read.
pub const MAX_BODY: usize = 64 * 1024;

/// An HTTP answer: a status and a JSON body.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    pub status: u16,
    pub body: serde_json::Value,
}

impl Answer {
    fn error(status: u16, text: impl Into<String>) -> Answer {
        Answer {
            status,
            body: serde_json::json!({ "error": text.into() }),
        }
    }

    /// The whole response, closing the connection after it.
    pub fn to_bytes(&self) -> Vec<u8> {
        let body = format!("{}\n", self.body);
        let reason = match self.status {
            200 => "OK",
            400 => "Bad Request",
            401 => "Unauthorized",
            404 => "Not Found",
            405 => "Method Not Allowed",
            409 => "Conflict",
            411 => "Length Required",
            413 => "Content Too Large",
            431 => "Request Header Fields Too Large",
            503 => "Service Unavailable",
            _ => "Error",
        };
        let challenge = if self.status == 401 {
            "WWW-Authenticate: Bearer realm=\"spate\"\r\n"
        } else {
            ""
        };
        let mut out = format!(
            "HTTP/1.1 {} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{challenge}Cache-Control: no-store\r\nConnection: close\r\n\r\n",
            self.status,
            body.len()
        )
        .into_bytes();
        out.extend_from_slice(body.as_bytes());
        out
    }
}

/// One request read whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpRequest {
    pub method: String,
    pub path: String,
    pub authorization: Option<String>,
    pub body: Vec<u8>,
}

/// What the bytes received so far make.
#[derive(Debug, Clone, PartialEq)]
pub enum Received {
    /// Read more.
    Incomplete,
    Request(HttpRequest),
    /// Answer this and close.
    Refused(Answer),
}

/// Judges the bytes received so far on a connection.
pub fn read_request(received: &[u8]) -> Received {
    let Some(head_end) = crate::metrics::http::find_head_end(received) else {
        return if received.len() > MAX_HEAD {
            Received::Refused(Answer::error(431, "request head too large"))
        } else {
            Received::Incomplete
        };
    };
    if head_end > MAX_HEAD {
        return Received::Refused(Answer::error(431, "request head too large"));
    }
    let Ok(head) = std::str::from_utf8(&received[..head_end]) else {
        return Received::Refused(Answer::error(400, "request head is not UTF-8"));
    };
    let mut lines = head.split('\n').map(|l| l.trim_end_matches('\r'));
    let request_line = lines.next().unwrap_or_default();
    let mut words = request_line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (words.next(), words.next(), words.next(), words.next())
    else {
        return Received::Refused(Answer::error(400, "bad request line"));
    };
    if version != "HTTP/1.1" && version != "HTTP/1.0" {
        return Received::Refused(Answer::error(400, "HTTP/1.0 or HTTP/1.1 only"));
    }
    let mut authorization = None;
    let mut length = 0usize;
    for line in lines.filter(|l| !l.is_empty()) {
        let Some((name, value)) = line.split_once(':') else {
            return Received::Refused(Answer::error(400, "bad header line"));
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("authorization") {
            authorization = Some(value.to_owned());
        } else if name.eq_ignore_ascii_case("content-length") {
            match value.parse::<usize>() {
                Ok(n) if value.bytes().all(|b| b.is_ascii_digit()) => length = n,
                _ => return Received::Refused(Answer::error(400, "bad Content-Length")),
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            return Received::Refused(Answer::error(411, "send a Content-Length body"));
        }
    }
    if length > MAX_BODY {
        return Received::Refused(Answer::error(413, "request body too large"));
    }
    let body = &received[head_end..];
    if body.len() < length {
        return Received::Incomplete;
    }
    let path = target.split_once('?').map_or(target, |(p, _)| p);
    Received::Request(HttpRequest {
        method: method.to_owned(),
        path: path.to_owned(),
        authorization,
        body: body[..length].to_vec(),
    })
}

/// Whether the request carries the token, compared in constant time.
pub fn authorized(request: &HttpRequest, token: &str) -> bool {
    let Some(given) = request
        .authorization
        .as_deref()
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim())
    else {
        return false;
    };
    // The length may show; the contents may not (no early exit).
    let (a, b) = (given.as_bytes(), token.as_bytes());
    if a.len() != b.len() || b.is_empty() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |differ, (x, y)| differ | (x ^ y)) == 0
}

/// The control request a route asks for, or the answer that refuses it.
pub fn route(request: &HttpRequest, token: &str) -> Result<Request, Answer> {
    if !authorized(request, token) {
        return Err(Answer::error(401, "a valid bearer token is required"));
    }
    let method = request.method.as_str();
    let want = |expected: &str| {
        if method == expected {
            Ok(())
        } else {
            Err(Answer::error(405, format!("use {expected}")))
        }
    };
    match request.path.trim_end_matches('/') {
        "/api/v1/queue/summary" => want("GET").map(|()| Request::Summary),
        "/api/v1/shaping" => want("GET").map(|()| Request::Shaping),
        "/api/v1/suspend" => {
            want("POST")?;
            let body: TargetBody = json_body(&request.body)?;
            let seconds = body
                .duration
                .as_ref()
                .map_or(Ok(3600), Duration_::seconds)?;
            Ok(Request::Suspend(body.target()?, seconds))
        }
        "/api/v1/resume" => {
            want("POST")?;
            let body: TargetBody = json_body(&request.body)?;
            Ok(Request::Resume(body.target()?))
        }
        "/api/v1/retry" => {
            want("POST")?;
            if request.body.iter().all(u8::is_ascii_whitespace) {
                return Ok(Request::Flush);
            }
            let selection = selection(&request.body)?;
            Ok(Request::Retry(selection))
        }
        "/api/v1/bounce" => {
            want("POST")?;
            Ok(Request::Bounce(selection(&request.body)?))
        }
        "/api/v1/delete" => {
            want("POST")?;
            Ok(Request::Delete(selection(&request.body)?))
        }
        _ => Err(Answer::error(404, "no such route")),
    }
}

/// The shards' reply as the API answers it.
pub fn answer(reply: Reply) -> Answer {
    match reply {
        Reply::Data(body) => Answer { status: 200, body },
        Reply::Done(text) => Answer {
            status: 200,
            body: serde_json::json!({ "result": text }),
        },
        Reply::Failed(text) => Answer::error(409, text),
    }
}

fn json_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, Answer> {
    serde_json::from_slice(body).map_err(|e| Answer::error(400, format!("bad JSON body: {e}")))
}

/// What `suspend` and `resume` name: exactly one of the three.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TargetBody {
    site: Option<String>,
    domain: Option<String>,
    source: Option<String>,
    duration: Option<Duration_>,
}

/// A duration as seconds or as text (`90s`, `2h`).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Duration_ {
    Seconds(u64),
    Text(String),
}

impl Duration_ {
    fn seconds(&self) -> Result<u64, Answer> {
        let secs = match self {
            Duration_::Seconds(n) => *n,
            Duration_::Text(text) => humantime::parse_duration(text)
                .map(|d: Duration| d.as_secs())
                .map_err(|e| Answer::error(400, format!("bad duration {text:?}: {e}")))?,
        };
        if secs == 0 {
            return Err(Answer::error(400, "duration must be at least one second"));
        }
        Ok(secs)
    }
}

impl TargetBody {
    fn target(&self) -> Result<DestinationKey, Answer> {
        let text = match (&self.site, &self.domain, &self.source) {
            (Some(site), None, None) => site.clone(),
            (None, Some(domain), None) => format!("domain:{domain}"),
            (None, None, Some(source)) => format!("*@{source}"),
            _ => {
                return Err(Answer::error(
                    400,
                    "name exactly one of \"site\", \"domain\" or \"source\"",
                ))
            }
        };
        let key: DestinationKey = text
            .parse()
            .map_err(|e: crate::queue::BadSite| Answer::error(400, e.to_string()))?;
        if self.site.is_some() && !key.is_site() {
            return Err(Answer::error(400, format!("{text:?} is not a site")));
        }
        Ok(key)
    }
}

/// A selection body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SelectionBody {
    id: Option<String>,
    domain: Option<String>,
    tenant: Option<String>,
    sender: Option<String>,
    #[serde(default)]
    all: bool,
}

fn selection(body: &[u8]) -> Result<Selection, Answer> {
    let body: SelectionBody = json_body(body)?;
    let id = match body.id {
        Some(id) => Some(
            id.parse()
                .map_err(|_| Answer::error(400, format!("bad queue id {id:?}")))?,
        ),
        None => None,
    };
    let selection = Selection {
        id,
        domain: body.domain,
        tenant: body.tenant,
        sender: body.sender,
        all: body.all,
    };
    if selection.is_empty() {
        return Err(Answer::error(
            400,
            "select messages: \"id\", \"domain\", \"tenant\", \"sender\", or \"all\": true",
        ));
    }
    Ok(selection)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "s3cret-token-0123456789";

    fn request(method: &str, path: &str, auth: Option<&str>, body: &str) -> Vec<u8> {
        let mut r = format!("{method} {path} HTTP/1.1\r\nHost: x\r\n");
        if let Some(auth) = auth {
            r.push_str(&format!("Authorization: {auth}\r\n"));
        }
        r.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
        r.into_bytes()
    }

    fn routed(method: &str, path: &str, body: &str) -> Result<Request, Answer> {
        let bytes = request(method, path, Some(&format!("Bearer {TOKEN}")), body);
        let Received::Request(r) = read_request(&bytes) else {
            panic!("complete");
        };
        route(&r, TOKEN)
    }

    #[test]
    fn requests_are_read_whole_and_bounded() {
        let bytes = request("POST", "/api/v1/delete", None, "{\"all\":true}");
        for cut in 0..bytes.len() {
            assert_eq!(read_request(&bytes[..cut]), Received::Incomplete, "{cut}");
        }
        let Received::Request(r) = read_request(&bytes) else {
            panic!("complete");
        };
        assert_eq!(
            (r.method.as_str(), r.path.as_str()),
            ("POST", "/api/v1/delete")
        );
        assert_eq!(r.body, b"{\"all\":true}");
        let big = format!(
            "POST / HTTP/1.1\r\nContent-Length: {}\r\n\r\n",
            MAX_BODY + 1
        );
        assert!(matches!(read_request(big.as_bytes()), Received::Refused(a) if a.status == 413));
        let chunked = "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert!(
            matches!(read_request(chunked.as_bytes()), Received::Refused(a) if a.status == 411)
        );
        let long = vec![b'a'; MAX_HEAD + 2];
        assert!(matches!(read_request(&long), Received::Refused(a) if a.status == 431));
    }

    #[test]
    fn no_token_or_a_wrong_one_is_refused() {
        for auth in [
            None,
            Some("Bearer wrong"),
            Some("Basic czNjcmV0"),
            Some("Bearer"),
            Some("Bearer s3cret-token-012345678"),
            Some("Bearer s3cret-token-01234567890"),
        ] {
            let bytes = request("GET", "/api/v1/queue/summary", auth, "");
            let Received::Request(r) = read_request(&bytes) else {
                panic!("complete");
            };
            let refused = route(&r, TOKEN).unwrap_err();
            assert_eq!(refused.status, 401, "{auth:?}");
            assert!(
                String::from_utf8_lossy(&refused.to_bytes()).contains("WWW-Authenticate: Bearer")
            );
        }
        assert_eq!(
            routed("GET", "/api/v1/queue/summary", ""),
            Ok(Request::Summary)
        );
    }

    #[test]
    fn routes_map_to_control_requests() {
        assert_eq!(routed("GET", "/api/v1/shaping", ""), Ok(Request::Shaping));
        assert_eq!(
            routed(
                "POST",
                "/api/v1/suspend",
                r#"{"domain":"Gmail.com","duration":"2h"}"#
            ),
            Ok(Request::Suspend(DestinationKey::domain("gmail.com"), 7200))
        );
        assert_eq!(
            routed(
                "POST",
                "/api/v1/suspend",
                r#"{"source":"ip1","duration":60}"#
            ),
            Ok(Request::Suspend(DestinationKey::every_site("ip1"), 60))
        );
        assert_eq!(
            routed("POST", "/api/v1/resume", r#"{"site":"mx:mx.example.test"}"#),
            Ok(Request::Resume("mx:mx.example.test".parse().unwrap()))
        );
        assert_eq!(routed("POST", "/api/v1/retry", ""), Ok(Request::Flush));
        assert_eq!(
            routed("POST", "/api/v1/retry", r#"{"tenant":"acme"}"#),
            Ok(Request::Retry(Selection {
                tenant: Some("acme".into()),
                ..Selection::default()
            }))
        );
        assert_eq!(
            routed(
                "POST",
                "/api/v1/bounce",
                r#"{"domain":"x.test","sender":""}"#
            ),
            Ok(Request::Bounce(Selection {
                domain: Some("x.test".into()),
                sender: Some(String::new()),
                ..Selection::default()
            }))
        );
        let status = |method, path, body| routed(method, path, body).unwrap_err().status;
        assert_eq!(
            status("POST", "/api/v1/delete", "{}"),
            400,
            "an empty selection"
        );
        assert_eq!(status("POST", "/api/v1/delete", "{\"id\":\"xyz\"}"), 400);
        assert_eq!(status("POST", "/api/v1/delete", "not json"), 400);
        assert_eq!(
            status("POST", "/api/v1/suspend", r#"{"site":"domain:x.test"}"#),
            400
        );
        assert_eq!(
            status("POST", "/api/v1/suspend", r#"{"site":"a","domain":"b"}"#),
            400
        );
        assert_eq!(
            status("POST", "/api/v1/suspend", r#"{"domain":"b","duration":0}"#),
            400
        );
        assert_eq!(status("GET", "/api/v1/delete", ""), 405);
        assert_eq!(status("POST", "/api/v1/queue/summary", ""), 405);
        assert_eq!(status("GET", "/nope", ""), 404);
    }

    #[test]
    fn replies_become_json_answers() {
        assert_eq!(answer(Reply::Failed("no".into())).status, 409);
        let done = answer(Reply::Done("ok then".into()));
        assert_eq!(done.body["result"], "ok then");
        let bytes = done.to_bytes();
        let text = String::from_utf8(bytes).unwrap();
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
        assert!(text.contains("Content-Type: application/json"));
    }
}
