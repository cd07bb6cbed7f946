//! DKIM signing over real sockets, judged by an independent verifier:
//! spate relays to a `spate sink` that keeps every message byte for byte,
//! and dkimpy (Debian's python3-dkim, Ed25519 through python3-nacl) checks
//! each kept message against public keys served by the test's own DNS
//! server on loopback. Mail from an authenticated user (submission) and
//! from an allowed network is signed with the key of its From domain,
//! over DATA and BDAT, with dot lines, 8-bit bodies and long header
//! fields, RSA-2048 and Ed25519; mail from a stranger to a local domain
//! and mail from a domain without a key are not; a SIGHUP brings a new
//! key, and a key that does not load leaves the old one in use.

mod common;
#[path = "common/spate_sink.rs"]
mod spate_sink;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use base64::Engine as _;
use common::dns::{Records, TestDns};
use common::{run_with_timeout, unique_loopback, Client, TestServer, Tweaks, COMMAND_TIMEOUT};
use spate_sink::SpateSink;

const WAIT: Duration = Duration::from_secs(60);
const RELOAD_TIMEOUT: Duration = Duration::from_secs(30);
/// Debian's interpreter: python3-dkim is installed for it, not for
/// another python3 that may come first on PATH.
const PYTHON: &str = "/usr/bin/python3";

/// A private key made by openssl (as an operator would) and its DNS
/// record's `p=`: RSA's SubjectPublicKeyInfo, Ed25519's raw 32 octets
/// (RFC 8463 4).
struct Key {
    path: PathBuf,
    record: String,
}

fn openssl(args: &[&str], input: Option<&Path>) -> Vec<u8> {
    let mut cmd = Command::new("openssl");
    cmd.args(args);
    if let Some(path) = input {
        cmd.arg("-in").arg(path);
    }
    let out = run_with_timeout(cmd, COMMAND_TIMEOUT);
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn make_key(dir: &Path, name: &str, rsa: bool) -> Key {
    let path = dir.join(name);
    let path_text = path.to_str().expect("utf-8 path");
    if rsa {
        openssl(
            &[
                "genpkey",
                "-algorithm",
                "RSA",
                "-pkeyopt",
                "rsa_keygen_bits:2048",
                "-out",
                path_text,
            ],
            None,
        );
    } else {
        openssl(
            &["genpkey", "-algorithm", "ed25519", "-out", path_text],
            None,
        );
    }
    let spki = openssl(&["pkey", "-pubout", "-outform", "DER"], Some(&path));
    let b64 = base64::engine::general_purpose::STANDARD;
    let record = if rsa {
        format!("v=DKIM1; k=rsa; p={}", b64.encode(&spki))
    } else {
        format!(
            "v=DKIM1; k=ed25519; p={}",
            b64.encode(&spki[spki.len() - 32..])
        )
    };
    Key { path, record }
}

/// `[dkim]` with one `[dkim.domain.D]` per (domain, selector, key).
fn dkim_section(domains: &[(&str, &str, &Path)]) -> String {
    let mut text = String::from("\n[dkim]\n");
    for (domain, selector, key) in domains {
        text.push_str(&format!(
            "[dkim.domain.{domain:?}]\nselector = {selector:?}\nprivate_key = {:?}\n",
            key.display().to_string()
        ));
    }
    text
}

/// What the verifier said of one message.
#[derive(Debug)]
struct Verdict {
    signed: bool,
    ok: bool,
    d: Option<String>,
    s: Option<String>,
    a: Option<String>,
    h: Option<String>,
    error: Option<String>,
}

/// Runs dkimpy over `messages` (written to files) with `dns` as the
/// only nameserver.
fn verify(dns: &TestDns, messages: &[Vec<u8>]) -> Vec<Verdict> {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut paths = Vec::new();
    for (i, m) in messages.iter().enumerate() {
        let path = dir.path().join(format!("{i}.eml"));
        std::fs::write(&path, m).expect("write message");
        paths.push(path);
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/dkim_verify.py");
    let mut cmd = Command::new(PYTHON);
    cmd.arg(script).arg(dns.addr().to_string()).args(&paths);
    let out = run_with_timeout(cmd, COMMAND_TIMEOUT);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "dkim_verify.py failed (is python3-dkim installed?): {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_str(stdout.trim()).expect("verifier JSON");
    paths
        .iter()
        .map(|p| {
            let v = &json[p.to_str().expect("utf-8 path")];
            let text = |k: &str| v[k].as_str().map(str::to_owned);
            Verdict {
                signed: v["signed"].as_bool().unwrap_or(false),
                ok: v["ok"].as_bool().unwrap_or(false),
                d: text("d"),
                s: text("s"),
                a: text("a"),
                h: text("h"),
                error: text("error"),
            }
        })
        .collect()
}

/// A message with a marker in its Subject and Message-ID; `extra` goes
/// in the header section, `body` after it.
fn message(from: &str, marker: &str, extra: &str, body: &[u8]) -> Vec<u8> {
    let mut m = format!(
        "From: Sender <{from}>\r\nTo: <rcpt@far.example>\r\nSubject: {marker}\r\n\
         Date: Sat, 6 Dec 2026 19:00:00 +0000\r\nMessage-ID: <{marker}@client.test>\r\n\
         MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\
         Content-Transfer-Encoding: 8bit\r\n{extra}\r\n"
    )
    .into_bytes();
    m.extend_from_slice(body);
    m
}

/// A body with every kind of dot line (stuffed on the wire by the
/// client, unstuffed by spate), 8-bit text, a long line and trailing
/// empty lines (which relaxed canonicalization drops).
fn tricky_body() -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(b".leading dot\r\n..two dots\r\n.\r\n. \r\n");
    b.extend_from_slice(
        "8-bit: caf\u{e9} na\u{ef}ve \u{65e5}\u{672c}\u{8a9e} \u{1f600}\r\n".as_bytes(),
    );
    b.extend_from_slice(b"trailing blanks   \t\r\n");
    b.extend_from_slice(&[b'x'; 900]);
    b.extend_from_slice(b"\r\n\r\n\r\n");
    b
}

/// Long header fields: a 400-character Subject-like field on one line
/// and a References field folded over many lines.
fn long_headers() -> String {
    let mut refs = String::from("References:");
    for i in 0..30 {
        refs.push_str(&format!(" <ref-{i}-{}@client.test>\r\n", "r".repeat(20)));
    }
    let refs = refs.trim_end_matches("\r\n").to_owned() + "\r\n";
    format!(
        "X-Long: {}\r\nIn-Reply-To: <ref-29@client.test>\r\n{refs}",
        "l".repeat(400)
    )
}

/// One transaction with DATA (the client dot-stuffs), BODY=8BITMIME;
/// returns the queue id of the reply.
fn send_data(c: &mut Client, from: &str, msg: &[u8]) -> String {
    let r = c.cmd(&format!("MAIL FROM:<{from}> BODY=8BITMIME"));
    assert_eq!(r.code, 250, "{r:?}");
    let r = c.cmd("RCPT TO:<rcpt@far.example>");
    assert_eq!(r.code, 250, "{r:?}");
    let r = c.cmd("DATA");
    assert_eq!(r.code, 354, "{r:?}");
    // Stuffed, and the end-of-data line appended.
    c.send(&common::dot_stuff(msg));
    let r = c.read_reply();
    assert_eq!(r.code, 250, "{r:?}");
    r.queue_id().expect("a queue id")
}

/// The same with BDAT in two chunks (split inside the header section).
fn send_bdat(c: &mut Client, from: &str, msg: &[u8]) -> String {
    let r = c.cmd(&format!("MAIL FROM:<{from}> BODY=8BITMIME"));
    assert_eq!(r.code, 250, "{r:?}");
    let r = c.cmd("RCPT TO:<rcpt@far.example>");
    assert_eq!(r.code, 250, "{r:?}");
    let (first, second) = msg.split_at(37);
    let mut chunk = format!("BDAT {}\r\n", first.len()).into_bytes();
    chunk.extend_from_slice(first);
    c.send(&chunk);
    assert_eq!(c.read_reply().code, 250);
    let mut chunk = format!("BDAT {} LAST\r\n", second.len()).into_bytes();
    chunk.extend_from_slice(second);
    c.send(&chunk);
    let r = c.read_reply();
    assert_eq!(r.code, 250, "{r:?}");
    r.queue_id().expect("a queue id")
}

/// The kept messages by their Subject marker.
fn kept_by_marker(sink: &SpateSink) -> BTreeMap<String, Vec<u8>> {
    sink.kept_bytes()
        .into_iter()
        .map(|m| {
            let text = String::from_utf8_lossy(&m);
            let marker = text
                .lines()
                .find_map(|l| l.strip_prefix("Subject: "))
                .expect("a Subject")
                .to_owned();
            (marker, m)
        })
        .collect()
}

/// Does the part of the message before the sent header section (what
/// spate adds) hold a DKIM-Signature field? Counts them.
fn signatures(m: &[u8]) -> usize {
    String::from_utf8_lossy(m)
        .split("\r\n\r\n")
        .next()
        .unwrap_or_default()
        .lines()
        .filter(|l| l.to_ascii_lowercase().starts_with("dkim-signature:"))
        .count()
}

#[test]
fn mail_from_an_authenticated_user_is_signed_and_verifies_rsa_and_ed25519() {
    let keys = tempfile::tempdir().expect("tempdir");
    let rsa = make_key(keys.path(), "rsa.pem", true);
    let ed = make_key(keys.path(), "ed.pem", false);
    let dns = TestDns::start(
        Records::new()
            .txt("rsa2048._domainkey.signed.test", &rsa.record)
            .txt("ed1._domainkey.ed.test", &ed.record),
    );
    let sink = SpateSink::keeping(unique_loopback(), &["--cores", "1"]);
    let server = TestServer::start(
        Tweaks::default()
            .no_relay()
            .user("carol", "carol-pw")
            .listener("submission")
            .extra(&sink.route("far.example"))
            .extra(&dkim_section(&[
                ("signed.test", "rsa2048", &rsa.path),
                ("ed.test", "ed1", &ed.path),
            ]))
            .extra("[metrics]\naddress = \"127.0.0.1:0\"\n"),
    );
    let mut c = Client::connect(server.listener("submission"));
    assert_eq!(c.read_reply().code, 220);
    c.ehlo("client.test");
    let token = base64::engine::general_purpose::STANDARD.encode("\0carol\0carol-pw");
    assert_eq!(c.cmd(&format!("AUTH PLAIN {token}")).code, 235);
    let envelope = "carol@example.test";
    let mut sent = Vec::new();
    // Each message's queue id: our Received header names it, below the
    // DKIM-Signature field put on top of it.
    let mut ids = BTreeMap::new();
    for (domain, algorithm) in [("signed.test", "rsa-sha256"), ("ed.test", "ed25519-sha256")] {
        for (how, extra) in [("data", String::new()), ("data-long", long_headers())] {
            let marker = format!("{how}-{domain}");
            let id = send_data(
                &mut c,
                envelope,
                &message(&format!("a@{domain}"), &marker, &extra, &tricky_body()),
            );
            ids.insert(marker.clone(), id);
            sent.push((marker, domain, algorithm));
        }
        let marker = format!("bdat-{domain}");
        let id = send_bdat(
            &mut c,
            envelope,
            &message(
                &format!("a@news.{domain}"),
                &marker,
                &long_headers(),
                &tricky_body(),
            ),
        );
        ids.insert(marker.clone(), id);
        sent.push((marker, domain, algorithm));
    }
    // No key for this domain: relayed unsigned.
    send_data(
        &mut c,
        envelope,
        &message("a@nokey.test", "nokey", "", b"plain\r\n"),
    );
    c.quit();
    sink.wait_for(sent.len() as u64 + 1, WAIT);
    let kept = kept_by_marker(&sink);
    for (marker, id) in &ids {
        let text = String::from_utf8_lossy(&kept[marker]);
        assert!(text.starts_with("DKIM-Signature:"), "{marker}: {text}");
        assert!(
            text.contains(&format!(" id {id}\r\n")),
            "{marker} is {id}: {text}"
        );
    }
    let order: Vec<&String> = sent.iter().map(|(m, _, _)| m).collect();
    let messages: Vec<Vec<u8>> = order.iter().map(|m| kept[*m].clone()).collect();
    let verdicts = verify(&dns, &messages);
    for ((marker, domain, algorithm), v) in sent.iter().zip(&verdicts) {
        eprintln!("{marker}: {v:?}");
        assert!(v.signed && v.ok, "{marker} does not verify: {v:?}");
        assert_eq!(v.d.as_deref(), Some(*domain), "{marker}");
        assert_eq!(v.a.as_deref(), Some(*algorithm), "{marker}");
        let h = v.h.as_deref().unwrap_or_default().to_ascii_lowercase();
        assert_eq!(
            h.split(':').filter(|n| *n == "from").count(),
            2,
            "From over-signed: {h}"
        );
    }
    for (marker, m) in &kept {
        assert!(signatures(m) <= 1, "{marker} signed once");
    }
    // The body arrived as sent (dots unstuffed, 8-bit intact).
    let one = &kept["data-signed.test"];
    assert!(one.windows(tricky_body().len()).any(|w| w == tricky_body()));
    let nokey = verify(&dns, &[kept["nokey"].clone()]);
    assert!(!nokey[0].signed, "{:?}", nokey[0]);
    // The verifier is strict: one changed octet of the body fails it.
    let mut tampered = kept["data-ed.test"].clone();
    let at = tampered.len() - 10;
    tampered[at] ^= 1;
    let v = verify(&dns, &[tampered]);
    assert!(
        v[0].signed && !v[0].ok,
        "a tampered message verified: {:?}",
        v[0]
    );
    let metrics = metric_lines(server.listener("metrics"));
    assert!(
        metrics.contains(&format!("spate_dkim_signed_total {}", sent.len())),
        "{metrics}"
    );
    assert!(metrics.contains("spate_dkim_failures_total 0"), "{metrics}");
}

/// The Prometheus text of the metrics endpoint.
fn metric_lines(addr: std::net::SocketAddr) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).expect("metrics endpoint");
    stream
        .write_all(b"GET /metrics HTTP/1.0\r\n\r\n")
        .expect("request");
    let mut text = String::new();
    stream.read_to_string(&mut text).expect("response");
    text
}

#[test]
fn mail_from_an_allowed_network_is_signed_a_strangers_is_not_and_sighup_brings_a_new_key() {
    let keys = tempfile::tempdir().expect("tempdir");
    let old = make_key(keys.path(), "old.pem", false);
    let new = make_key(keys.path(), "new.pem", true);
    let dns = TestDns::start(
        Records::new()
            .txt("old._domainkey.signed.test", &old.record)
            .txt("new._domainkey.signed.test", &new.record),
    );
    let sink = SpateSink::keeping(unique_loopback(), &["--cores", "1"]);
    let dkim = |selector: &str, key: &Path| dkim_section(&[("signed.test", selector, key)]);
    let server = TestServer::start(
        Tweaks::default()
            .extra(&sink.route("far.example"))
            .extra("[egress]\ntenant_header = \"X-Tenant\"\n")
            .extra(&dkim("old", &old.path)),
    );
    // 127.0.0.0/8 may relay: the test's own address is in it. The tenant
    // header is removed at receipt, before signing: it never leaves, and
    // the signature holds without it.
    let mut c = server.session();
    send_data(
        &mut c,
        "app@client.test",
        &message(
            "a@signed.test",
            "net-data",
            "X-Tenant: acme\r\n",
            &tricky_body(),
        ),
    );
    send_bdat(
        &mut c,
        "app@client.test",
        &message("a@signed.test", "net-bdat", &long_headers(), &tricky_body()),
    );
    c.quit();
    // A stranger's mail for a local domain is not ours to sign (it would
    // wait in the queue here: no mailbox tier).
    let stranger = TestServer::start(Tweaks::default().no_relay().extra(&dkim("old", &old.path)));
    let mut c = stranger.session();
    let r = c.cmd("MAIL FROM:<a@signed.test>");
    assert_eq!(r.code, 250);
    assert_eq!(c.cmd("RCPT TO:<someone@example.test>").code, 250);
    assert_eq!(c.cmd("DATA").code, 354);
    c.send(
        &[
            message("a@signed.test", "stranger", "", b"hello\r\n"),
            b".\r\n".to_vec(),
        ]
        .concat(),
    );
    assert_eq!(c.read_reply().code, 250);
    c.quit();
    let spool = stranger.spool_bytes();
    assert!(spool.windows(8).any(|w| w == b"stranger"), "stored");
    assert!(
        !spool
            .windows(15)
            .any(|w| w.eq_ignore_ascii_case(b"DKIM-Signature:")),
        "a stranger's message was signed"
    );

    // SIGHUP with a new selector and key (RSA this time).
    let config = server.config_text();
    let section = dkim("old", &old.path);
    assert!(config.contains(&section));
    std::fs::write(
        &server.config_path,
        config.replace(&section, &dkim("new", &new.path)),
    )
    .expect("rewrite config");
    server.signal(libc::SIGHUP);
    server.wait_stdout_line("reloaded", RELOAD_TIMEOUT);
    let mut c = server.session();
    send_data(
        &mut c,
        "app@client.test",
        &message("a@signed.test", "after-reload", "", &tricky_body()),
    );
    c.quit();
    // A key file that does not load: the reload is refused, the new key
    // stays in use.
    let broken = keys.path().join("broken.pem");
    std::fs::write(
        &broken,
        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    )
    .expect("write broken key");
    let config = server.config_text();
    std::fs::write(
        &server.config_path,
        config.replace(&dkim("new", &new.path), &dkim("broken", &broken)),
    )
    .expect("rewrite config");
    server.signal(libc::SIGHUP);
    server.wait_stdout_line("reload refused", RELOAD_TIMEOUT);
    // The log is read by another thread than stdout: wait for the line.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while server.stderr_lines_with("broken.pem").is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the refusal names the file:\n{}",
            server.stderr_text()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut c = server.session();
    send_data(
        &mut c,
        "app@client.test",
        &message("a@signed.test", "after-refusal", "", &tricky_body()),
    );
    c.quit();

    sink.wait_for(4, WAIT);
    let kept = kept_by_marker(&sink);
    assert!(
        !String::from_utf8_lossy(&kept["net-data"]).contains("X-Tenant"),
        "the tenant header left"
    );
    let markers = ["net-data", "net-bdat", "after-reload", "after-refusal"];
    let messages: Vec<Vec<u8>> = markers.iter().map(|m| kept[*m].clone()).collect();
    let verdicts = verify(&dns, &messages);
    let want = [
        ("old", "ed25519-sha256"),
        ("old", "ed25519-sha256"),
        ("new", "rsa-sha256"),
        ("new", "rsa-sha256"),
    ];
    for ((marker, v), (selector, algorithm)) in markers.iter().zip(&verdicts).zip(want) {
        eprintln!("{marker}: {v:?}");
        assert!(v.signed && v.ok, "{marker} does not verify: {v:?}");
        assert_eq!(v.s.as_deref(), Some(selector), "{marker}");
        assert_eq!(v.a.as_deref(), Some(algorithm), "{marker}");
        assert_eq!(v.error, None);
    }
}
