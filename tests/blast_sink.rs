//! `spate blast` against `spate sink` over loopback (counts agree exactly,
//! injected faults show up in blast's report, JSON parses, the sink's
//! limits and signals), and each against its Postfix counterpart
//! (smtp-sink, smtp-source from /usr/sbin). Every test has its own
//! 127.x address and a port picked by the kernel.

mod common;
#[path = "common/spate_sink.rs"]
mod spate_sink;

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{run_with_timeout, unique_loopback, COMMAND_TIMEOUT, SPATE};
use spate_sink::SpateSink as Sink;

const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs `spate blast --to addr --json ARGS`; its JSON report.
fn blast_json(addr: SocketAddr, args: &[&str]) -> serde_json::Value {
    let mut cmd = Command::new(SPATE);
    cmd.arg("blast")
        .arg("--to")
        .arg(addr.to_string())
        .arg("--json")
        .args(args);
    let out = run_with_timeout(cmd, COMMAND_TIMEOUT);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "blast failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("blast JSON {stdout:?}: {e}"))
}

fn n(v: &serde_json::Value, path: &[&str]) -> u64 {
    let mut v = v;
    for key in path {
        v = &v[*key];
    }
    v.as_u64().unwrap_or(0)
}

#[test]
fn blast_and_sink_counts_agree_exactly() {
    let ip = unique_loopback();
    let sink = Sink::start(ip, &["--cores", "2", "--count-domains"]);
    let report = blast_json(
        sink.addr,
        &[
            "-n",
            "3000",
            "-c",
            "8",
            "--cores",
            "2",
            "-r",
            "2",
            "--domains",
            "a.test,b.test,c.test",
            "--size-dist",
            "1k:50,8k:50",
            "--per-connection",
            "100",
        ],
    );
    let counters = sink.stop();
    assert_eq!(n(&report, &["delivered"]), 3000, "{report}");
    assert_eq!(n(&report, &["failed"]), 0, "{report}");
    assert_eq!(n(&counters, &["messages"]), 3000, "{counters}");
    assert_eq!(n(&counters, &["recipients"]), 6000);
    assert_eq!(n(&report, &["recipients_accepted"]), 6000);
    assert_eq!(n(&counters, &["bytes"]), n(&report, &["bytes"]));
    // 6000 recipients round-robin over three domains.
    for d in ["a.test", "b.test", "c.test"] {
        assert_eq!(n(&counters, &["domains", d]), 2000, "{counters}");
    }
    // 3000 messages, at most 100 per connection, over 8 connection slots
    // that each end with one partly used connection.
    let connections = n(&report, &["connections"]);
    assert!((30..=38).contains(&connections), "{report}");
    assert_eq!(n(&counters, &["connections"]), connections);
    assert_eq!(n(&report, &["latency_us", "transaction", "count"]), 3000);
    assert!(n(&report, &["latency_us", "data_end", "p99"]) > 0);
}

/// Faults at every stage, each with its own code; blast must count
/// exactly what the sink injected.
fn faults_are_reported(mode: &[&str]) {
    let ip = unique_loopback();
    let sink = Sink::start(
        ip,
        &[
            "--cores",
            "2",
            "--fail",
            "connect:421:0.02",
            "--fail",
            "helo:554:0.02",
            "--fail",
            "mail:451:0.03",
            "--fail",
            "rcpt:450:10%",
            "--fail",
            "rcpt:550:0.05",
            "--fail",
            "data:452:0.04",
            "--fail",
            "dot:554:0.05",
        ],
    );
    let mut args = vec![
        "-n",
        "2000",
        "-c",
        "6",
        "--cores",
        "2",
        "-r",
        "2",
        "--per-connection",
        "20",
    ];
    args.extend_from_slice(mode);
    let report = blast_json(sink.addr, &args);
    let counters = sink.stop();
    let fault = |key: &str| n(&counters, &["faults", key]);
    assert!(fault("rcpt:450") > 100, "{counters}");
    assert_eq!(
        n(&report, &["errors", "450"]),
        fault("rcpt:450"),
        "{report}\n{counters}"
    );
    assert_eq!(n(&report, &["errors", "550"]), fault("rcpt:550"));
    assert_eq!(n(&report, &["errors", "451"]), fault("mail:451"));
    assert_eq!(n(&report, &["errors", "452"]), fault("data:452"));
    assert_eq!(
        n(&report, &["errors", "554"]),
        fault("dot:554") + fault("helo:554")
    );
    assert_eq!(n(&report, &["errors", "421"]), fault("connect:421"));
    assert_eq!(
        n(&report, &["errors_by_stage", "greeting", "421"]),
        fault("connect:421")
    );
    assert_eq!(
        n(&report, &["errors_by_stage", "ehlo", "554"]),
        fault("helo:554")
    );
    assert_eq!(
        n(&report, &["errors_by_stage", "data-end", "554"]),
        fault("dot:554")
    );
    assert!(
        fault("connect:421") > 0 && fault("helo:554") > 0,
        "{counters}"
    );
    assert_eq!(n(&report, &["delivered"]), n(&counters, &["messages"]));
    assert_eq!(n(&report, &["delivered"]) + n(&report, &["failed"]), 2000);
    assert_eq!(
        n(&report, &["recipients_accepted"]),
        n(&counters, &["recipients"])
    );
    assert_eq!(n(&counters, &["protocol_errors"]), 0, "{counters}");
}

/// A receiver's own reply texts (`--reply`) at a fraction of a stage, and
/// the client's address counted with its EHLO name.
#[test]
fn reply_texts_reach_the_client_and_each_source_is_counted() {
    let ip = unique_loopback();
    let sink = Sink::start(
        ip,
        &[
            "--cores",
            "1",
            "--reply",
            "rcpt:0.25:450 4.7.28 Our system has detected an unusual rate of mail",
            "--reply",
            "end-of-data:0.5:451 4.7.0 [TSS04] Messages from you temporarily deferred",
        ],
    );
    let report = blast_json(
        sink.addr,
        &[
            "-n",
            "40",
            "-c",
            "1",
            "--cores",
            "1",
            "--helo",
            "mta7.blast.test",
        ],
    );
    let counters = sink.stop();
    // Every 4th RCPT fails (10 of 40); every 2nd end of data of the 30 left.
    assert_eq!(n(&counters, &["faults", "rcpt:450"]), 10, "{counters}");
    assert_eq!(n(&counters, &["faults", "dot:451"]), 15, "{counters}");
    assert_eq!(n(&report, &["errors", "450"]), 10, "{report}");
    assert_eq!(n(&report, &["errors", "451"]), 15, "{report}");
    assert_eq!(n(&report, &["delivered"]), 15);
    let client = n(&report, &["connections"]);
    // blast connects from the kernel's choice of address: 127.0.0.1.
    let sources = counters["sources"].as_object().expect("sources");
    assert_eq!(sources.len(), 1, "{counters}");
    let only = &sources["127.0.0.1"];
    assert_eq!(only["messages"], 15);
    assert_eq!(only["connections"].as_u64(), Some(client));
    assert!(
        only["helo"]["mta7.blast.test"].as_u64() >= Some(1),
        "{counters}"
    );
}

#[test]
fn injected_faults_appear_in_blast_report_with_bdat() {
    faults_are_reported(&[]);
}

#[test]
fn injected_faults_appear_in_blast_report_with_data() {
    faults_are_reported(&["--no-bdat"]);
}

#[test]
fn injected_faults_appear_in_blast_report_without_pipelining() {
    faults_are_reported(&["--no-pipelining", "--no-bdat"]);
}

#[test]
fn text_report_and_histogram_file() {
    let ip = unique_loopback();
    let sink = Sink::start(ip, &["--cores", "1", "--fail", "rcpt:450:0.5"]);
    let dir = tempfile::tempdir().unwrap();
    let histogram = dir.path().join("latency.hgrm");
    let mut cmd = Command::new(SPATE);
    cmd.args([
        "blast",
        "--to",
        &sink.addr.to_string(),
        "-n",
        "200",
        "-c",
        "2",
        "--cores",
        "1",
    ])
    .arg("--histogram")
    .arg(&histogram);
    let out = run_with_timeout(cmd, COMMAND_TIMEOUT);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("100 delivered, 100 failed"), "{text}");
    assert!(text.contains("errors       rcpt 450: 100"), "{text}");
    assert!(text.contains("transaction"), "{text}");
    let dist = std::fs::read_to_string(&histogram).unwrap();
    assert!(dist.contains("Percentile"), "{dist}");
    assert!(dist.contains("Total count    =          100"), "{dist}");
    drop(sink);
}

#[test]
fn sink_stops_after_n_messages_and_reports_on_sigusr1() {
    let ip = unique_loopback();
    let sink = Sink::start(ip, &["--cores", "2"]);
    let report = blast_json(sink.addr, &["-n", "50", "-c", "2"]);
    assert_eq!(n(&report, &["delivered"]), 50);
    sink.signal(libc::SIGUSR1);
    assert_eq!(n(&sink.next_counters(), &["messages"]), 50);
    assert_eq!(n(&sink.stop(), &["messages"]), 50);

    let ip = unique_loopback();
    let mut sink = Sink::start(ip, &["--cores", "2", "--stop-after", "100"]);
    let report = blast_json(sink.addr, &["-n", "300", "-c", "4", "--timeout", "5s"]);
    let counters = sink.next_counters();
    sink.wait_exit();
    assert_eq!(n(&counters, &["messages"]), 100, "{counters}");
    assert_eq!(n(&report, &["delivered"]), 100, "{report}");
    assert_eq!(n(&report, &["failed"]), 200, "{report}");
}

#[test]
fn sink_refuses_beyond_max_per_ip() {
    let ip = unique_loopback();
    // Slow greetings keep connections open long enough to overlap.
    let sink = Sink::start(
        ip,
        &[
            "--cores",
            "1",
            "--max-per-ip",
            "2",
            "--banner-delay",
            "200ms",
        ],
    );
    let report = blast_json(sink.addr, &["-n", "12", "-c", "4", "--per-connection", "1"]);
    let counters = sink.stop();
    let refused = n(&counters, &["refused_connections"]);
    assert!(refused > 0, "{counters}");
    assert_eq!(
        n(&report, &["errors_by_stage", "greeting", "421"]),
        refused,
        "{report}"
    );
    assert_eq!(n(&report, &["delivered"]), n(&counters, &["messages"]));
    assert_eq!(n(&report, &["delivered"]) + refused, 12);
}

#[test]
fn sink_delays_show_in_blast_latency() {
    let ip = unique_loopback();
    let sink = Sink::start(ip, &["--cores", "1", "--delay", "dot:100ms"]);
    let report = blast_json(sink.addr, &["-n", "10", "-c", "2"]);
    drop(sink);
    assert_eq!(n(&report, &["delivered"]), 10);
    assert!(
        n(&report, &["latency_us", "data_end", "p50"]) >= 100_000,
        "{report}"
    );
}

#[test]
fn blast_with_starttls_and_auth_and_sink_keeps_messages() {
    let ip = unique_loopback();
    let dir = tempfile::tempdir().unwrap();
    let tls = common::make_tls_files(dir.path(), ip);
    let kept = dir.path().join("kept");
    let sink = Sink::start(
        ip,
        &[
            "--cores",
            "1",
            "--tls-cert",
            tls.certificate.to_str().unwrap(),
            "--tls-key",
            tls.private_key.to_str().unwrap(),
            "--dir",
            kept.to_str().unwrap(),
        ],
    );
    let report = blast_json(
        sink.addr,
        &[
            "-n",
            "20",
            "-c",
            "2",
            "--starttls",
            "--auth",
            "user:secret",
            "--per-connection",
            "5",
        ],
    );
    let counters = sink.stop();
    assert_eq!(n(&report, &["delivered"]), 20, "{report}");
    assert!(n(&report, &["connections"]) >= 4, "{report}");
    assert_eq!(
        n(&counters, &["tls"]),
        n(&report, &["connections"]),
        "{counters}"
    );
    let files: Vec<_> = std::fs::read_dir(&kept).unwrap().collect();
    assert_eq!(files.len(), 20);
    let one = std::fs::read_to_string(files[0].as_ref().unwrap().path()).unwrap();
    assert!(
        one.starts_with(
            "X-Sink-Peer: 127.0.0.1\r\nX-Sink-Helo: blast.example.test\r\n\
             X-Sink-From: <blast@example.test>\r\nX-Sink-To: <user"
        ),
        "{one}"
    );
    assert!(one.contains("Subject: spate blast"), "{one}");

    // STARTTLS asked but not offered: every message slot fails at setup.
    let ip = unique_loopback();
    let sink = Sink::start(ip, &["--cores", "1"]);
    let report = blast_json(sink.addr, &["-n", "3", "-c", "1", "--starttls"]);
    assert_eq!(
        n(&report, &["errors_by_stage", "starttls", "not-offered"]),
        3,
        "{report}"
    );
}

#[test]
fn blast_reports_a_refused_connection() {
    // Nothing listens there: connect errors, not a hang or a panic.
    let ip = unique_loopback();
    let port = {
        let l = std::net::TcpListener::bind((ip, 0)).unwrap();
        l.local_addr().unwrap().port()
    };
    let report = blast_json(SocketAddr::from((ip, port)), &["-n", "5", "-c", "1"]);
    assert_eq!(
        n(&report, &["errors_by_stage", "connect", "io-error"]),
        5,
        "{report}"
    );
}

#[test]
fn bad_options_get_clear_errors() {
    for args in [
        vec!["blast", "--to", "127.0.0.1:1", "--size", "4q"],
        vec!["blast", "--to", "127.0.0.1:1", "--size-dist", "1k:0"],
        vec![
            "blast",
            "--to",
            "127.0.0.1:1",
            "--domain-pattern",
            "nopattern.test",
        ],
        vec!["blast", "--to", "127.0.0.1:1", "-c", "0"],
        vec!["sink", "--fail", "rcpt:250:0.1"],
        vec!["sink", "--delay", "body:1s"],
    ] {
        let out = run_with_timeout(
            {
                let mut c = Command::new(SPATE);
                c.args(&args);
                c
            },
            COMMAND_TIMEOUT,
        );
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert!(err.len() > 10, "{args:?}: {err}");
    }
}

const SMTP_SINK: &str = "/usr/sbin/smtp-sink";
const SMTP_SOURCE: &str = "/usr/sbin/smtp-source";

#[test]
fn blast_works_against_postfix_smtp_sink() {
    let ip = unique_loopback();
    let port = {
        let l = std::net::TcpListener::bind((ip, 0)).unwrap();
        l.local_addr().unwrap().port()
    };
    // smtp-sink refuses to run as root without -u.
    let mut child = Command::new(SMTP_SINK)
        .args(["-u", "nobody", &format!("{ip}:{port}"), "64"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("run /usr/sbin/smtp-sink (Postfix tools)");
    let deadline = Instant::now() + START_TIMEOUT;
    while std::net::TcpStream::connect((ip, port)).is_err() {
        assert!(Instant::now() < deadline, "smtp-sink not listening");
        std::thread::sleep(Duration::from_millis(20));
    }
    let addr = SocketAddr::from((ip, port));
    let bdat = blast_json(addr, &["-n", "500", "-c", "5", "-r", "3"]);
    let data = blast_json(
        addr,
        &["-n", "500", "-c", "5", "--no-bdat", "--size", "20k"],
    );
    let plain = blast_json(
        addr,
        &["-n", "100", "-c", "2", "--no-pipelining", "--no-bdat"],
    );
    let _ = child.kill();
    let _ = child.wait();
    for report in [&bdat, &data, &plain] {
        assert_eq!(n(report, &["failed"]), 0, "{report}");
    }
    assert_eq!(n(&bdat, &["delivered"]), 500);
    assert_eq!(n(&bdat, &["recipients_accepted"]), 1500);
    assert_eq!(n(&data, &["delivered"]), 500);
    assert_eq!(n(&plain, &["delivered"]), 100);
}

#[test]
fn postfix_smtp_source_works_against_spate_sink() {
    let ip = unique_loopback();
    let sink = Sink::start(ip, &["--cores", "2"]);
    let target = sink.addr.to_string();
    for args in [
        // One connection per message; then reused connections (-d), 3 recipients.
        vec!["-s", "5", "-m", "300", "-l", "4096"],
        vec!["-d", "-s", "5", "-m", "300", "-l", "10000", "-r", "3"],
    ] {
        let mut cmd = Command::new(SMTP_SOURCE);
        cmd.args(&args)
            .args(["-f", "src@example.test", "-t", "rcpt@example.test", &target]);
        let out = run_with_timeout(cmd, COMMAND_TIMEOUT);
        assert!(
            out.status.success(),
            "smtp-source {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let counters = sink.stop();
    assert_eq!(n(&counters, &["messages"]), 600, "{counters}");
    assert_eq!(n(&counters, &["recipients"]), 300 + 900, "{counters}");
    assert_eq!(n(&counters, &["protocol_errors"]), 0, "{counters}");
}

#[test]
fn rate_limit_and_duration() {
    let ip = unique_loopback();
    let sink = Sink::start(ip, &["--cores", "1"]);
    let paced = blast_json(sink.addr, &["-n", "30", "-c", "3", "--rate", "60/s"]);
    assert_eq!(n(&paced, &["delivered"]), 30);
    let seconds = paced["seconds"].as_f64().unwrap();
    // 30 messages at 60/s: about half a second, never a burst.
    assert!((0.4..10.0).contains(&seconds), "{paced}");
    let timed = blast_json(
        sink.addr,
        &["--duration", "1s", "-c", "2", "--rate", "100/s"],
    );
    let seconds = timed["seconds"].as_f64().unwrap();
    assert!((0.9..10.0).contains(&seconds), "{timed}");
    let delivered = n(&timed, &["delivered"]);
    assert!((50..=110).contains(&delivered), "{timed}");
    assert_eq!(n(&timed, &["failed"]), 0, "{timed}");
    let counters = sink.stop();
    assert_eq!(n(&counters, &["messages"]), 30 + delivered);
}

#[test]
fn message_file_arrives_byte_for_byte_with_data_and_bdat() {
    let ip = unique_loopback();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("message.eml");
    // LF line endings and lines starting with dots: blast sends CRLF and
    // dot-stuffs for DATA; the sink undoes it.
    std::fs::write(&file, "Subject: dots\n\n.leading dot\n..two\n.\nend").unwrap();
    let kept = dir.path().join("kept");
    let sink = Sink::start(ip, &["--cores", "1", "--dir", kept.to_str().unwrap()]);
    for mode in [&[][..], &["--no-bdat"][..]] {
        let mut args = vec![
            "-n",
            "2",
            "-c",
            "1",
            "--message-file",
            file.to_str().unwrap(),
        ];
        args.extend_from_slice(mode);
        assert_eq!(n(&blast_json(sink.addr, &args), &["delivered"]), 2);
    }
    drop(sink);
    let files: Vec<_> = std::fs::read_dir(&kept).unwrap().collect();
    assert_eq!(files.len(), 4);
    for f in files {
        let text = std::fs::read_to_string(f.unwrap().path()).unwrap();
        let content = text.split_once("X-Sink-To: <user").unwrap().1;
        let content = content.split_once("\r\n").unwrap().1;
        assert_eq!(
            content,
            "Subject: dots\r\n\r\n.leading dot\r\n..two\r\n.\r\nend\r\n"
        );
    }
}
