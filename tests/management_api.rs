//! The HTTP management API (`[api]`), driven with curl as an operator
//! would: refused without its bearer token; the queue summary by domain,
//! tenant and site, the same as `spate queue summary --json`; suspend and
//! resume a site and a recipient domain; retry, bounce and delete by
//! selection (the bounced senders get their DSNs, the deleted mail never
//! leaves); the shaping state; TLS when `[tls]` is configured.

#[path = "common/capture.rs"]
mod capture;
mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use capture::{wait_until, Sink};
use common::{TestServer, Tweaks};

const TOKEN: &str = "test-token-0123456789abcdef";
const WAIT: Duration = Duration::from_secs(30);

/// An API call with curl: (HTTP status, JSON body).
fn curl(
    url: &str,
    method: &str,
    token: Option<&str>,
    body: Option<&str>,
    extra: &[&str],
) -> (u16, serde_json::Value) {
    let mut cmd = Command::new("curl");
    cmd.args([
        "-sS",
        "--max-time",
        "60",
        "-X",
        method,
        "-w",
        "\n%{http_code}",
    ]);
    if let Some(token) = token {
        cmd.args(["-H", &format!("Authorization: Bearer {token}")]);
    }
    if let Some(body) = body {
        cmd.args(["-H", "Content-Type: application/json", "--data", body]);
    }
    cmd.args(extra).arg(url);
    let out = common::run_with_timeout(cmd, Duration::from_secs(90));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (json, code) = text
        .trim_end()
        .rsplit_once('\n')
        .unwrap_or(("", text.trim()));
    let code: u16 = code.trim().parse().unwrap_or_else(|_| {
        panic!(
            "curl {url}: {text} {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (
        code,
        serde_json::from_str(json).unwrap_or(serde_json::Value::Null),
    )
}

struct Api {
    base: String,
}

impl Api {
    fn of(server: &TestServer) -> Api {
        let addr: SocketAddr = server.listener("api");
        Api {
            base: format!("http://{addr}"),
        }
    }

    fn get(&self, path: &str) -> serde_json::Value {
        let (code, body) = curl(
            &format!("{}{path}", self.base),
            "GET",
            Some(TOKEN),
            None,
            &[],
        );
        assert_eq!(code, 200, "GET {path}: {body}");
        body
    }

    fn post(&self, path: &str, body: &str) -> serde_json::Value {
        let (code, answer) = curl(
            &format!("{}{path}", self.base),
            "POST",
            Some(TOKEN),
            Some(body),
            &[],
        );
        assert_eq!(code, 200, "POST {path} {body}: {answer}");
        answer
    }

    fn summary(&self) -> serde_json::Value {
        self.get("/api/v1/queue/summary")
    }
}

fn api_config(dir: &Path) -> String {
    let token_file = dir.join("api-token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    format!(
        "[api]\naddress = \"127.0.0.1:0\"\ntoken_file = {:?}\n",
        token_file.display()
    )
}

/// One message from `from` to `to`, tagged with a tenant header.
fn send(server: &TestServer, from: &str, to: &str, tenant: &str, n: usize) {
    let mut client = server.session();
    for i in 0..n {
        let msg = format!(
            "From: <{from}>\r\nTo: <{to}>\r\nX-Tenant: {tenant}\r\nSubject: api {i}\r\n\r\nbody {i}\r\n"
        );
        client
            .send_message(from, &[to], msg.as_bytes())
            .unwrap_or_else(|r| panic!("refused: {r:?}"));
    }
    client.quit();
}

#[test]
fn the_api_steers_the_queue_and_refuses_strangers() {
    let sink = Sink::start();
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(
        Tweaks::default()
            .extra(&sink.route("a.test"))
            .extra(&sink.route("b.test"))
            .extra(&sink.route("client.test"))
            .extra("[delivery]\nminimal_backoff = \"1h\"\nmaximal_backoff = \"2h\"\n")
            .extra("[egress]\ntenant_header = \"X-Tenant\"\n")
            .extra(&api_config(dir.path())),
    );
    let api = Api::of(&server);
    let summary_url = format!("{}/api/v1/queue/summary", api.base);

    // No token, a wrong one, another scheme: 401, nothing said.
    for token in [None, Some("wrong-token-0123456789abcdef")] {
        let (code, body) = curl(&summary_url, "GET", token, None, &[]);
        assert_eq!(code, 401, "{body}");
        assert!(body.get("messages").is_none());
    }
    let (code, _) = curl(
        &summary_url,
        "GET",
        None,
        None,
        &["-u", &format!("x:{TOKEN}")],
    );
    assert_eq!(code, 401, "basic auth is not the token");

    // Hold everything at the sink's site, then queue mail.
    let site = format!("[{}]:{}", sink.addr.ip(), sink.addr.port());
    let said = api.post(
        "/api/v1/suspend",
        &format!(r#"{{"site":"{site}","duration":"2h"}}"#),
    );
    assert!(
        said["result"]
            .as_str()
            .unwrap()
            .contains("suspended for 7200 s"),
        "{said}"
    );
    send(&server, "s1@client.test", "u1@a.test", "acme", 3);
    send(&server, "s2@client.test", "u2@A.test", "acme", 3);
    send(&server, "s1@client.test", "u3@b.test", "zeta", 4);

    let mut summary = serde_json::Value::Null;
    wait_until("ten messages held at the site", WAIT, || {
        summary = api.summary();
        summary["messages"] == 10 && summary["sites"][&site]["held"] == 10
    });
    assert_eq!(summary["recipients"], 10);
    assert_eq!(summary["domains"]["a.test"], 6, "{summary}");
    assert_eq!(summary["domains"]["b.test"], 4);
    assert_eq!(summary["tenants"]["acme"]["messages"], 6);
    assert_eq!(summary["tenants"]["zeta"]["recipients"], 4);
    assert_eq!(summary["held"], 10);

    // `spate queue summary` asks the same operation.
    let out = server.spate_command(&["queue", "summary", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cli: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(cli["domains"], summary["domains"]);
    assert_eq!(cli["tenants"], summary["tenants"]);
    let table = server.spate_command(&["queue", "summary"]);
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(
        table.starts_with("10 message(s), 10 recipient(s)"),
        "{table}"
    );

    // The shaping state names the suspension.
    let shaping = api.get("/api/v1/shaping");
    let suspensions = shaping["suspensions"].as_array().unwrap();
    assert_eq!(suspensions.len(), 1, "{shaping}");
    assert_eq!(suspensions[0]["target"], site.as_str());
    assert!(suspensions[0]["seconds_left"].as_u64().unwrap() > 7000);

    // Retry by selection reaches the waiting mail of that domain only.
    let retried = api.post("/api/v1/retry", r#"{"domain":"b.test"}"#);
    assert_eq!(retried["matched"], 4, "{retried}");

    // Suspend a.test, resume the site: b.test's mail leaves, a.test's waits.
    api.post("/api/v1/suspend", r#"{"domain":"a.test","duration":3600}"#);
    let resumed = api.post("/api/v1/resume", &format!(r#"{{"site":"{site}"}}"#));
    assert!(
        resumed["result"].as_str().unwrap().contains("resumed"),
        "{resumed}"
    );
    sink.wait_for(4, WAIT);
    wait_until("a.test's six held for their domain", WAIT, || {
        summary = api.summary();
        summary["messages"] == 6 && summary["held_for_domains"]["a.test"] == 6
    });
    assert!(summary["domains"].get("b.test").is_none(), "{summary}");
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        sink.messages().len(),
        4,
        "a.test's mail left while its domain was suspended"
    );

    // Bounce s1's three (their sender gets DSNs), delete the rest.
    let bounced = api.post(
        "/api/v1/bounce",
        r#"{"domain":"a.test","sender":"s1@client.test"}"#,
    );
    assert_eq!(bounced["bounced"], 3, "{bounced}");
    let deleted = api.post("/api/v1/delete", r#"{"tenant":"acme"}"#);
    assert_eq!(deleted["deleted"], 3, "{deleted}");
    let arrived = sink.wait_for(7, WAIT);
    let dsns: Vec<_> = arrived
        .iter()
        .filter(|m| m["to"][0] == "s1@client.test")
        .collect();
    assert_eq!(dsns.len(), 3, "one DSN per bounced message: {arrived:?}");
    assert!(
        arrived
            .iter()
            .all(|m| m["to"][0] != "u1@a.test" && m["to"][0] != "u2@A.test"),
        "bounced or deleted mail was delivered"
    );
    wait_until("an empty queue", WAIT, || api.summary()["messages"] == 0);
    let summary = api.summary();
    assert_eq!(summary["domains"], serde_json::json!({}), "{summary}");
    assert_eq!(summary["tenants"], serde_json::json!({}));

    // Refusals are clear JSON errors.
    let (code, body) = curl(
        &format!("{}/api/v1/delete", api.base),
        "POST",
        Some(TOKEN),
        Some("{}"),
        &[],
    );
    assert_eq!(code, 400, "{body}");
    assert!(body["error"].as_str().unwrap().contains("select"));
    let (code, _) = curl(
        &format!("{}/api/v1/nope", api.base),
        "GET",
        Some(TOKEN),
        None,
        &[],
    );
    assert_eq!(code, 404);
    let (code, body) = curl(
        &format!("{}/api/v1/delete", api.base),
        "POST",
        Some(TOKEN),
        Some(r#"{"id":"0100000200000040"}"#),
        &[],
    );
    assert_eq!(code, 409, "{body}");
    assert!(body["error"]
        .as_str()
        .unwrap()
        .contains("no queued message"));
    api.post("/api/v1/resume", r#"{"domain":"a.test"}"#);
    let stderr = server.stderr_text();
    assert!(
        stderr.contains("API request without a valid token"),
        "{stderr}"
    );
}

#[test]
fn the_api_speaks_tls_when_tls_is_configured() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(Tweaks::default().tls().extra(&api_config(dir.path())));
    let addr = server.listener("api");
    let ca = server
        .tls
        .as_ref()
        .expect("tls files")
        .ca
        .display()
        .to_string();
    let url = format!("https://localhost:{}/api/v1/queue/summary", addr.port());
    let resolve = format!("localhost:{}:127.0.0.1", addr.port());
    let tls = ["--cacert", &ca, "--resolve", &resolve];
    let (code, body) = curl(&url, "GET", Some(TOKEN), None, &tls);
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["messages"], 0);
    let (code, _) = curl(&url, "GET", None, None, &tls);
    assert_eq!(code, 401);
    // Plain HTTP gets no answer from a TLS listener.
    let plain = Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "5",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
        ])
        .arg(format!("http://{addr}/api/v1/queue/summary"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&plain.stdout), "000");
}

#[test]
fn an_api_address_without_a_token_file_is_refused_at_startup() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("spate.toml");
    std::fs::write(
        &config,
        format!(
            "spool_dir = {:?}\n[[listener]]\naddress = \"127.0.0.1:0\"\nprotocol = \"smtp\"\n[api]\naddress = \"127.0.0.1:0\"\n",
            dir.path().join("spool").display()
        ),
    )
    .unwrap();
    let mut cmd = Command::new(common::SPATE);
    cmd.args(["serve", "--config"]).arg(&config);
    let out = common::run_with_timeout(cmd, Duration::from_secs(30));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("api.address needs api.token_file"), "{err}");
}
