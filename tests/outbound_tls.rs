//! Outbound TLS policy over real sockets on loopback: MTA-STS (RFC 8461)
//! with a local DNS zone and a local HTTPS policy server, DANE (RFC 7672)
//! with TLSA records answered with the AD bit (the test DNS playing a
//! validating resolver), and receivers with a good certificate, a wrong
//! one (another name, another key) or none (no STARTTLS). Each delivery's
//! log line says `tls=none|opportunistic|mta-sts|dane`; a policy that is
//! not met defers the mail, and the receiver never sees a MAIL FROM in
//! clear. The receivers and the policy server are small threads here, so
//! the tests see exactly what arrived over what.

mod common;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::dns::{Records, TestDns};
use common::{unique_loopback, TestServer, Tweaks};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use serde_json::Value;

/// The port every MX host of these tests listens on (each on its own
/// address; MX records carry no port).
const MX_PORT: u16 = 2531;
const WAIT: Duration = Duration::from_secs(30);

// ---- certificates -------------------------------------------------------

/// A test CA, its PEM file, and leaves it signs.
struct Ca {
    cert: rcgen::Certificate,
    key: rcgen::KeyPair,
    pem: PathBuf,
    _dir: tempfile::TempDir,
}

/// A certificate chain and key for a server, and the key's SPKI (DER).
struct Leaf {
    chain: Vec<CertificateDer<'static>>,
    key: Vec<u8>,
    spki: Vec<u8>,
}

impl Leaf {
    fn server_config(&self) -> Arc<rustls::ServerConfig> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key.clone()));
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_no_client_auth()
            .with_single_cert(self.chain.clone(), key)
            .expect("server certificate");
        Arc::new(config)
    }

    fn spki_sha256(&self) -> Vec<u8> {
        ring::digest::digest(&ring::digest::SHA256, &self.spki)
            .as_ref()
            .to_vec()
    }
}

impl Ca {
    fn new() -> Ca {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
        let key = KeyPair::generate().expect("ca key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "spate outbound TLS test CA");
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = params.self_signed(&key).expect("ca cert");
        let dir = tempfile::tempdir().expect("tempdir");
        let pem = dir.path().join("ca.pem");
        std::fs::write(&pem, cert.pem()).expect("write ca");
        Ca {
            cert,
            key,
            pem,
            _dir: dir,
        }
    }

    /// A leaf for `names`, signed by this CA.
    fn leaf(&self, names: &[&str]) -> Leaf {
        use rcgen::{CertificateParams, KeyPair};
        let key = KeyPair::generate().expect("leaf key");
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names).expect("leaf params");
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        let cert = params
            .signed_by(&key, &self.cert, &self.key)
            .expect("leaf cert");
        Leaf {
            chain: vec![cert.der().clone()],
            key: key.serialize_der(),
            spki: key.public_key_der(),
        }
    }
}

/// A self-signed certificate for `name` (DANE-EE needs no CA).
fn self_signed(name: &str) -> Leaf {
    let key = rcgen::KeyPair::generate().expect("key");
    let params = rcgen::CertificateParams::new(vec![name.to_owned()]).expect("params");
    let cert = params.self_signed(&key).expect("cert");
    Leaf {
        chain: vec![cert.der().clone()],
        key: key.serialize_der(),
        spki: key.public_key_der(),
    }
}

// ---- an SMTP receiver ----------------------------------------------------

enum Link {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ServerConnection, TcpStream>>),
    Gone,
}

impl Read for Link {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Link::Plain(s) => s.read(buf),
            Link::Tls(s) => s.read(buf),
            Link::Gone => Ok(0),
        }
    }
}

impl Write for Link {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Link::Plain(s) => s.write(buf),
            Link::Tls(s) => s.write(buf),
            Link::Gone => Err(std::io::ErrorKind::BrokenPipe.into()),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Link::Plain(s) => s.flush(),
            Link::Tls(s) => s.flush(),
            Link::Gone => Ok(()),
        }
    }
}

/// A receiving MX host on `(ip, MX_PORT)`: offers STARTTLS with its
/// certificate when it has one, accepts every message, and writes down
/// each command as `plain VERB` or `tls VERB`, and each message as
/// `plain message` or `tls message`.
struct Receiver {
    ip: Ipv4Addr,
    seen: Arc<Mutex<Vec<String>>>,
}

impl Receiver {
    fn start(tls: Option<Arc<rustls::ServerConfig>>) -> Receiver {
        let ip = unique_loopback();
        let listener = TcpListener::bind((ip, MX_PORT)).expect("bind the receiver");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&seen);
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let tls = tls.clone();
                let log = Arc::clone(&log);
                std::thread::spawn(move || {
                    let _ = serve_smtp(stream, tls, &log);
                });
            }
        });
        Receiver { ip, seen }
    }

    fn seen(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }

    fn saw(&self, what: &str) -> bool {
        self.seen().iter().any(|s| s == what)
    }
}

fn read_line(link: &mut Link, pending: &mut Vec<u8>) -> std::io::Result<String> {
    loop {
        if let Some(at) = pending.windows(2).position(|w| w == b"\r\n") {
            let line: Vec<u8> = pending.drain(..at + 2).collect();
            return Ok(String::from_utf8_lossy(&line[..at]).into_owned());
        }
        let mut buf = [0u8; 4096];
        let n = link.read(&mut buf)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        pending.extend_from_slice(&buf[..n]);
    }
}

fn serve_smtp(
    tcp: TcpStream,
    tls: Option<Arc<rustls::ServerConfig>>,
    seen: &Mutex<Vec<String>>,
) -> std::io::Result<()> {
    tcp.set_read_timeout(Some(WAIT))?;
    let mut link = Link::Plain(tcp);
    let mut pending = Vec::new();
    link.write_all(b"220 rx.test ESMTP\r\n")?;
    loop {
        let line = read_line(&mut link, &mut pending)?;
        let mode = if matches!(link, Link::Tls(_)) {
            "tls"
        } else {
            "plain"
        };
        let verb = line
            .split([' ', ':'])
            .next()
            .unwrap_or("")
            .to_ascii_uppercase();
        seen.lock().unwrap().push(format!("{mode} {verb}"));
        match verb.as_str() {
            "EHLO" => {
                let offer = tls.is_some() && mode == "plain";
                let starttls = if offer { "250-STARTTLS\r\n" } else { "" };
                link.write_all(format!("250-rx.test\r\n{starttls}250 8BITMIME\r\n").as_bytes())?;
            }
            "STARTTLS" => {
                let Some(config) = &tls else {
                    link.write_all(b"502 5.5.1 no TLS here\r\n")?;
                    continue;
                };
                link.write_all(b"220 2.0.0 go ahead\r\n")?;
                let Link::Plain(tcp) = std::mem::replace(&mut link, Link::Gone) else {
                    return Ok(());
                };
                let conn = rustls::ServerConnection::new(Arc::clone(config))
                    .map_err(std::io::Error::other)?;
                link = Link::Tls(Box::new(rustls::StreamOwned::new(conn, tcp)));
                pending.clear();
            }
            "DATA" => {
                link.write_all(b"354 go ahead\r\n")?;
                while read_line(&mut link, &mut pending)? != "." {}
                seen.lock().unwrap().push(format!("{mode} message"));
                link.write_all(b"250 2.0.0 accepted\r\n")?;
            }
            "QUIT" => {
                link.write_all(b"221 2.0.0 bye\r\n")?;
                return Ok(());
            }
            _ => link.write_all(b"250 2.0.0 ok\r\n")?,
        }
    }
}

// ---- an MTA-STS policy server -------------------------------------------

/// Serves `https://mta-sts.<domain>/.well-known/mta-sts.txt` for every
/// domain given, on one address, with one certificate naming them all.
struct PolicyServer {
    ip: Ipv4Addr,
    port: u16,
    fetches: Arc<Mutex<Vec<String>>>,
}

impl PolicyServer {
    fn start(ca: &Ca, policies: &[(&str, &str)]) -> PolicyServer {
        let names: Vec<String> = policies
            .iter()
            .map(|(domain, _)| format!("mta-sts.{domain}"))
            .collect();
        let name_refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let config = ca.leaf(&name_refs).server_config();
        let bodies: Vec<(String, String)> = policies
            .iter()
            .map(|(d, b)| (format!("mta-sts.{d}"), b.to_string()))
            .collect();
        let ip = unique_loopback();
        let listener = TcpListener::bind((ip, 0)).expect("bind the policy server");
        let port = listener.local_addr().expect("addr").port();
        let fetches = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&fetches);
        std::thread::spawn(move || {
            for tcp in listener.incoming().flatten() {
                let _ = serve_policy(tcp, &config, &bodies, &log);
            }
        });
        PolicyServer { ip, port, fetches }
    }

    fn fetches(&self) -> Vec<String> {
        self.fetches.lock().unwrap().clone()
    }
}

fn serve_policy(
    tcp: TcpStream,
    config: &Arc<rustls::ServerConfig>,
    bodies: &[(String, String)],
    log: &Mutex<Vec<String>>,
) -> std::io::Result<()> {
    tcp.set_read_timeout(Some(Duration::from_secs(10)))?;
    let conn = rustls::ServerConnection::new(Arc::clone(config)).map_err(std::io::Error::other)?;
    let mut stream = rustls::StreamOwned::new(conn, tcp);
    let mut request = Vec::new();
    let mut buf = [0u8; 2048];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        request.extend_from_slice(&buf[..n]);
    }
    let request = String::from_utf8_lossy(&request).into_owned();
    let host = request
        .lines()
        .find_map(|l| l.strip_prefix("Host: "))
        .unwrap_or("")
        .trim()
        .to_owned();
    log.lock().unwrap().push(host.clone());
    let right_path = request.starts_with("GET /.well-known/mta-sts.txt HTTP/1.1\r\n");
    let body = bodies.iter().find(|(h, _)| *h == host).map(|(_, b)| b);
    let response = match (right_path, body) {
        (true, Some(body)) => format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ),
        _ => "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_owned(),
    };
    stream.write_all(response.as_bytes())?;
    stream.conn.send_close_notify();
    stream.flush()
}

fn enforce(mx: &str) -> String {
    format!("version: STSv1\r\nmode: enforce\r\nmx: {mx}\r\nmax_age: 86400\r\n")
}

fn testing(mx: &str) -> String {
    format!("version: STSv1\r\nmode: testing\r\nmx: {mx}\r\nmax_age: 86400\r\n")
}

// ---- the relay under test -----------------------------------------------

/// A relay that resolves through `dns`, reaches MX hosts on MX_PORT,
/// looks up MTA-STS (trusting `ca`, fetching from `policy`) and DANE,
/// and logs in JSON.
fn relay(dns: &TestDns, ca: Option<&Ca>, policy: Option<&PolicyServer>) -> TestServer {
    let mut delivery = format!("[delivery]\nmx_port = {MX_PORT}\nmta_sts = true\ndane = true\n");
    delivery.push_str("tls_policy_timeout = \"5s\"\n");
    if let Some(ca) = ca {
        delivery.push_str(&format!("mta_sts_ca_file = {:?}\n", ca.pem));
    }
    if let Some(policy) = policy {
        delivery.push_str(&format!("mta_sts_port = {}\n", policy.port));
    }
    TestServer::start(
        Tweaks::default()
            .hostname("relay.test")
            .local_domains(&["relay.test"])
            .dns(dns.addr())
            .extra(&format!(
                "{delivery}\n[log]\nformat = \"json\"\n\n[metrics]\naddress = \"127.0.0.1:0\"\n"
            )),
    )
}

fn send(server: &TestServer, to: &str) -> String {
    let mut client = server.session();
    let id = client
        .send_message("s@relay.test", &[to], &common::message(to, 200))
        .expect("message accepted");
    client.quit();
    id
}

/// The first `delivered`, `deferred` or `bounced` line about `id`.
fn outcome(server: &TestServer, id: &str) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let line = server
            .stderr_text()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|l| {
                l["id"] == id
                    && matches!(
                        l["message"].as_str(),
                        Some("delivered" | "deferred" | "bounced")
                    )
            });
        if let Some(line) = line {
            return line;
        }
        assert!(
            Instant::now() < deadline,
            "no outcome for {id}:\n{}",
            server.stderr_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn text(v: &Value, key: &str) -> String {
    v[key].as_str().unwrap_or("").to_owned()
}

fn metric(server: &TestServer, name: &str) -> f64 {
    let metrics = common::scrape_metrics(server.listener("metrics"));
    metrics.get(name).copied().unwrap_or(0.0)
}

// ---- MTA-STS --------------------------------------------------------------

#[test]
fn mta_sts_enforce_with_a_good_certificate_delivers_verified() {
    let ca = Ca::new();
    let rx = Receiver::start(Some(ca.leaf(&["mx.good.test"]).server_config()));
    let policy = PolicyServer::start(&ca, &[("good.test", &enforce("*.good.test"))]);
    let dns = TestDns::start(
        Records::new()
            .mx("good.test", 10, "mx.good.test")
            .a("mx.good.test", &rx.ip.to_string())
            .txt("_mta-sts.good.test", "v=STSv1; id=20261206;")
            .a("mta-sts.good.test", &policy.ip.to_string()),
    );
    let server = relay(&dns, Some(&ca), Some(&policy));
    let id = send(&server, "u@good.test");
    let line = outcome(&server, &id);
    assert_eq!(text(&line, "message"), "delivered", "{line}");
    assert_eq!(text(&line, "tls"), "mta-sts", "{line}");
    assert_eq!(policy.fetches(), vec!["mta-sts.good.test"]);
    assert!(
        rx.saw("tls MAIL") && rx.saw("tls message"),
        "{:?}",
        rx.seen()
    );
    assert!(!rx.saw("plain MAIL"), "{:?}", rx.seen());
    assert_eq!(
        metric(&server, "spate_delivery_tls_total{outcome=\"mta-sts\"}"),
        1.0
    );

    // A second message: the cached policy, no second fetch.
    let id = send(&server, "v@good.test");
    assert_eq!(text(&outcome(&server, &id), "tls"), "mta-sts");
    assert_eq!(policy.fetches().len(), 1, "the policy is cached");

    // After a restart too: the policy was kept in the spool directory.
    let mut server = server;
    server.terminate();
    server.restart();
    assert!(server.spool_dir.join("mta-sts/good.test").is_file());
    let id = send(&server, "w@good.test");
    assert_eq!(text(&outcome(&server, &id), "tls"), "mta-sts");
    assert_eq!(policy.fetches().len(), 1, "the policy is kept on disk");
}

#[test]
fn mta_sts_enforce_defers_a_wrong_certificate_no_starttls_and_an_unlisted_mx() {
    let ca = Ca::new();
    // Another name; another CA (untrusted); no certificate at all.
    let wrong_name = Receiver::start(Some(ca.leaf(&["mx.other.test"]).server_config()));
    let stranger = Ca::new();
    let wrong_ca = Receiver::start(Some(stranger.leaf(&["mx.wrongca.test"]).server_config()));
    let plain = Receiver::start(None);
    let unlisted = Receiver::start(Some(ca.leaf(&["mx.unlisted.test"]).server_config()));
    let policy = PolicyServer::start(
        &ca,
        &[
            ("wrongname.test", &enforce("mx.wrongname.test")),
            ("wrongca.test", &enforce("mx.wrongca.test")),
            ("plain.test", &enforce("mx.plain.test")),
            ("unlisted.test", &enforce("mx.elsewhere.test")),
        ],
    );
    let mut records = Records::new();
    for (domain, rx) in [
        ("wrongname.test", &wrong_name),
        ("wrongca.test", &wrong_ca),
        ("plain.test", &plain),
        ("unlisted.test", &unlisted),
    ] {
        records = records
            .mx(domain, 10, &format!("mx.{domain}"))
            .a(&format!("mx.{domain}"), &rx.ip.to_string())
            .txt(&format!("_mta-sts.{domain}"), "v=STSv1; id=1;")
            .a(&format!("mta-sts.{domain}"), &policy.ip.to_string());
    }
    let dns = TestDns::start(records);
    let server = relay(&dns, Some(&ca), Some(&policy));

    for (domain, rx, why) in [
        ("wrongname.test", &wrong_name, "certificate"),
        ("wrongca.test", &wrong_ca, "certificate"),
        ("plain.test", &plain, "MTA-STS"),
        ("unlisted.test", &unlisted, "not listed"),
    ] {
        let id = send(&server, &format!("u@{domain}"));
        let line = outcome(&server, &id);
        assert_eq!(text(&line, "message"), "deferred", "{domain}: {line}");
        let reply = text(&line, "reply");
        assert!(reply.starts_with("451 4.7.5"), "{domain}: {reply}");
        assert!(reply.contains(why), "{domain}: {reply}");
        // Never plaintext: no MAIL FROM reached the receiver at all.
        assert!(
            !rx.seen()
                .iter()
                .any(|s| s.ends_with("MAIL") || s.ends_with("message")),
            "{domain}: {:?}",
            rx.seen()
        );
    }
    assert!(
        unlisted.seen().is_empty(),
        "an unlisted MX is not even contacted"
    );
    assert!(
        metric(
            &server,
            "spate_delivery_tls_policy_failures_total{policy=\"mta-sts\"}"
        ) >= 4.0
    );
    assert_eq!(server.queue_list().len(), 4, "all four wait for a retry");
}

#[test]
fn mta_sts_testing_delivers_and_reports_what_enforce_would_refuse() {
    let ca = Ca::new();
    let rx = Receiver::start(Some(ca.leaf(&["mx.someone-else.test"]).server_config()));
    let policy = PolicyServer::start(&ca, &[("trial.test", &testing("mx.trial.test"))]);
    let dns = TestDns::start(
        Records::new()
            .mx("trial.test", 10, "mx.trial.test")
            .a("mx.trial.test", &rx.ip.to_string())
            .txt("_mta-sts.trial.test", "v=STSv1; id=abc;")
            .a("mta-sts.trial.test", &policy.ip.to_string()),
    );
    let server = relay(&dns, Some(&ca), Some(&policy));
    let id = send(&server, "u@trial.test");
    let line = outcome(&server, &id);
    assert_eq!(text(&line, "message"), "delivered", "{line}");
    assert_eq!(text(&line, "tls"), "opportunistic", "{line}");
    let failure = text(&line, "tls_testing_failure");
    assert!(failure.contains("certificate not valid"), "{line}");
    assert!(rx.saw("tls message"), "{:?}", rx.seen());
    assert_eq!(
        metric(&server, "spate_delivery_mta_sts_testing_failures_total"),
        1.0
    );
}

// ---- DANE -----------------------------------------------------------------

#[test]
fn dane_ee_match_delivers_and_a_mismatch_defers() {
    let good = self_signed("whatever.invalid");
    let rx_good = Receiver::start(Some(good.server_config()));
    let rx_bad = Receiver::start(Some(self_signed("mx.dane-bad.test").server_config()));
    let other_key = self_signed("unrelated.invalid");
    let dns = TestDns::start(
        Records::new()
            .mx("dane-ok.test", 10, "mx.dane-ok.test")
            .a("mx.dane-ok.test", &rx_good.ip.to_string())
            .tlsa(
                &format!("_{MX_PORT}._tcp.mx.dane-ok.test"),
                3,
                1,
                1,
                &good.spki_sha256(),
            )
            .mx("dane-bad.test", 10, "mx.dane-bad.test")
            .a("mx.dane-bad.test", &rx_bad.ip.to_string())
            .tlsa(
                &format!("_{MX_PORT}._tcp.mx.dane-bad.test"),
                3,
                1,
                1,
                &other_key.spki_sha256(),
            )
            .secure("dane-ok.test")
            .secure(&format!("_{MX_PORT}._tcp.mx.dane-ok.test"))
            .secure("dane-bad.test")
            .secure(&format!("_{MX_PORT}._tcp.mx.dane-bad.test")),
    );
    let server = relay(&dns, None, None);

    // 3 1 1 matches: delivered, neither the name nor the CA mattered.
    let id = send(&server, "u@dane-ok.test");
    let line = outcome(&server, &id);
    assert_eq!(text(&line, "message"), "delivered", "{line}");
    assert_eq!(text(&line, "tls"), "dane", "{line}");
    assert!(rx_good.saw("tls message") && !rx_good.saw("plain MAIL"));

    // No record matches: deferred, never sent in clear.
    let id = send(&server, "u@dane-bad.test");
    let line = outcome(&server, &id);
    assert_eq!(text(&line, "message"), "deferred", "{line}");
    let reply = text(&line, "reply");
    assert!(
        reply.starts_with("451 4.7.5") && reply.contains("DANE"),
        "{reply}"
    );
    assert!(
        !rx_bad.seen().iter().any(|s| s.ends_with("MAIL")),
        "{:?}",
        rx_bad.seen()
    );
    assert_eq!(
        metric(&server, "spate_delivery_tls_total{outcome=\"dane\"}"),
        1.0
    );
    assert!(
        metric(
            &server,
            "spate_delivery_tls_policy_failures_total{policy=\"dane\"}"
        ) >= 1.0
    );
}

#[test]
fn dane_ta_pins_the_ca_and_checks_the_mx_name() {
    let ca = Ca::new();
    let ca_sha256 = ring::digest::digest(&ring::digest::SHA256, ca.cert.der())
        .as_ref()
        .to_vec();
    // DANE-TA servers send their TA certificate in the chain (RFC 7672
    // 3.1.2); the CA is not in any trusted root store.
    let with_ca = |mut leaf: Leaf| {
        leaf.chain.push(ca.cert.der().clone());
        leaf.server_config()
    };
    let rx_good = Receiver::start(Some(with_ca(ca.leaf(&["mx.ta-ok.test"]))));
    let rx_bad = Receiver::start(Some(with_ca(ca.leaf(&["mx.somewhere.test"]))));
    let mut records = Records::new();
    for (domain, rx) in [("ta-ok.test", &rx_good), ("ta-bad.test", &rx_bad)] {
        let tlsa = format!("_{MX_PORT}._tcp.mx.{domain}");
        records = records
            .mx(domain, 10, &format!("mx.{domain}"))
            .a(&format!("mx.{domain}"), &rx.ip.to_string())
            .tlsa(&tlsa, 2, 0, 1, &ca_sha256)
            .secure(domain)
            .secure(&tlsa);
    }
    let dns = TestDns::start(records);
    let server = relay(&dns, None, None);
    let id = send(&server, "u@ta-ok.test");
    let line = outcome(&server, &id);
    assert_eq!(text(&line, "message"), "delivered", "{line}");
    assert_eq!(text(&line, "tls"), "dane", "{line}");
    // The pinned CA signed it, but for another name: refused.
    let id = send(&server, "u@ta-bad.test");
    let line = outcome(&server, &id);
    assert_eq!(text(&line, "message"), "deferred", "{line}");
    assert!(text(&line, "reply").contains("DANE"), "{line}");
    assert!(
        !rx_bad.seen().iter().any(|s| s.ends_with("MAIL")),
        "{:?}",
        rx_bad.seen()
    );
}

#[test]
fn dane_defers_when_the_tlsa_lookup_fails_for_a_signed_domain() {
    let rx = Receiver::start(Some(self_signed("mx.broken.test").server_config()));
    let dns = TestDns::start(
        Records::new()
            .mx("broken.test", 10, "mx.broken.test")
            .a("mx.broken.test", &rx.ip.to_string())
            .servfail(&format!("_{MX_PORT}._tcp.mx.broken.test"))
            .secure("broken.test"),
    );
    let server = relay(&dns, None, None);
    let id = send(&server, "u@broken.test");
    let line = outcome(&server, &id);
    assert_eq!(text(&line, "message"), "deferred", "{line}");
    assert!(text(&line, "reply").contains("TLSA lookup"), "{line}");
    assert!(rx.seen().is_empty(), "{:?}", rx.seen());
}

#[test]
fn tlsa_records_without_the_ad_bit_are_ignored() {
    let rx = Receiver::start(Some(self_signed("mx.insecure.test").server_config()));
    let unrelated = self_signed("unrelated.invalid");
    let dns = TestDns::start(
        Records::new()
            .mx("insecure.test", 10, "mx.insecure.test")
            .a("mx.insecure.test", &rx.ip.to_string())
            .tlsa(
                &format!("_{MX_PORT}._tcp.mx.insecure.test"),
                3,
                1,
                1,
                &unrelated.spki_sha256(),
            )
            // The TLSA answer is secure, the MX answer is not: RFC 7672
            // 2.2.1 needs both.
            .secure(&format!("_{MX_PORT}._tcp.mx.insecure.test")),
    );
    let server = relay(&dns, None, None);
    let id = send(&server, "u@insecure.test");
    let line = outcome(&server, &id);
    assert_eq!(text(&line, "message"), "delivered", "{line}");
    assert_eq!(text(&line, "tls"), "opportunistic", "{line}");
}

// ---- domains sharing an MX host ------------------------------------------

#[test]
fn domains_sharing_an_mx_get_the_strictest_policy_or_wait_for_their_own() {
    let ca = Ca::new();
    let rx = Receiver::start(Some(ca.leaf(&["mx.shared.test"]).server_config()));
    let policy = PolicyServer::start(
        &ca,
        &[
            ("strict.test", &enforce("mx.shared.test")),
            ("picky.test", &enforce("mx.other-provider.test")),
        ],
    );
    let mut records = Records::new().a("mx.shared.test", &rx.ip.to_string());
    for domain in ["strict.test", "lax.test", "picky.test"] {
        records = records.mx(domain, 10, "mx.shared.test");
    }
    for domain in ["strict.test", "picky.test"] {
        records = records
            .txt(&format!("_mta-sts.{domain}"), "v=STSv1; id=7;")
            .a(&format!("mta-sts.{domain}"), &policy.ip.to_string());
    }
    let dns = TestDns::start(records);
    let server = relay(&dns, Some(&ca), Some(&policy));
    // One message, three domains, one MX set: one connection, opened
    // under strict.test's enforce policy, carries lax.test too; picky.test
    // does not list this MX host, so its recipient waits.
    let mut client = server.session();
    let id = client
        .send_message(
            "s@relay.test",
            &["a@lax.test", "b@strict.test", "c@picky.test"],
            &common::message("shared", 200),
        )
        .expect("message accepted");
    client.quit();
    let deadline = Instant::now() + WAIT;
    let lines = loop {
        let lines: Vec<Value> = server
            .stderr_text()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|l| l["id"] == id.as_str())
            .filter(|l| matches!(l["message"].as_str(), Some("delivered" | "deferred")))
            .collect();
        if lines.len() == 3 {
            break lines;
        }
        assert!(Instant::now() < deadline, "{}", server.stderr_text());
        std::thread::sleep(Duration::from_millis(50));
    };
    let of = |to: &str| {
        lines
            .iter()
            .find(|l| l["to"] == to)
            .unwrap_or_else(|| panic!("no line for {to}: {lines:?}"))
            .clone()
    };
    for to in ["a@lax.test", "b@strict.test"] {
        let line = of(to);
        assert_eq!(text(&line, "message"), "delivered", "{line}");
        assert_eq!(text(&line, "tls"), "mta-sts", "{line}");
    }
    let line = of("c@picky.test");
    assert_eq!(text(&line, "message"), "deferred", "{line}");
    assert!(text(&line, "reply").contains("not listed"), "{line}");
    assert!(!rx.saw("plain MAIL"), "{:?}", rx.seen());
    // The message stays queued for its one waiting recipient.
    let queued = server.queue_list();
    assert_eq!(queued.len(), 1, "{queued:?}");
    assert_eq!(queued[0].id, id);
}

// ---- no policy ------------------------------------------------------------

#[test]
fn without_a_policy_tls_is_opportunistic_or_none() {
    let with_tls = Receiver::start(Some(self_signed("mx.plainly.test").server_config()));
    let without = Receiver::start(None);
    let dns = TestDns::start(
        Records::new()
            .mx("tls.test", 10, "mx.tls.test")
            .a("mx.tls.test", &with_tls.ip.to_string())
            .mx("clear.test", 10, "mx.clear.test")
            .a("mx.clear.test", &without.ip.to_string()),
    );
    let server = relay(&dns, None, None);
    let id = send(&server, "u@tls.test");
    let line = outcome(&server, &id);
    assert_eq!(text(&line, "message"), "delivered", "{line}");
    assert_eq!(text(&line, "tls"), "opportunistic", "{line}");
    let id = send(&server, "u@clear.test");
    let line = outcome(&server, &id);
    assert_eq!(text(&line, "message"), "delivered", "{line}");
    assert_eq!(text(&line, "tls"), "none", "{line}");
    assert!(without.saw("plain message"));
    assert_eq!(
        metric(&server, "spate_delivery_tls_total{outcome=\"none\"}"),
        1.0
    );
    assert_eq!(
        metric(
            &server,
            "spate_delivery_tls_total{outcome=\"opportunistic\"}"
        ),
        1.0
    );
}
