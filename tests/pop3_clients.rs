//! The local mailbox tier seen by real mail clients: mail sent through
//! spate's SMTP listener to a local user comes back byte for byte over POP3
//! (plain, STLS and implicit pop3s) through Python's poplib, curl,
//! fetchmail and mpop; another mail reader (mutt) reads the Maildir spate
//! wrote; POP3 sessions keep snapshot semantics, the one-session lock,
//! stable UIDLs and the DELE/RSET/QUIT rules while mail keeps arriving; and
//! bad input (wrong passwords, junk commands, overlong lines, path
//! traversal in user names, plaintext before TLS) gets a clear `-ERR` and
//! changes nothing.
//!
//! fetchmail, mpop, curl and mutt are optional here: a test whose client is
//! not installed prints `SKIP` and passes (CI installs the Debian packages
//! `fetchmail mpop curl mutt`). fetchmail, mpop and mutt hand messages on
//! with the local (LF) line ends, so for them "byte for byte" is checked
//! after turning CRLF into LF; poplib and curl are compared exactly.

mod common;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use base64::Engine as _;
use common::mailbox::{
    ca, deliver, have, maildir_files, output_text, stored_in_name_order as stored, tree, wait_for,
    SENDER,
};
use common::{python, run_with_timeout, TestServer, Tweaks, COMMAND_TIMEOUT, LOCAL_DOMAIN};
use serde_json::Value;

const USER: &str = "alice";
const PASSWORD: &str = "pw-alice";
/// How long a delivery or a lock release may take to show.
const REPLY_TIMEOUT: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------- helpers

/// A raw POP3 client with a timeout on every read and a transcript for
/// failure messages. It checks nothing itself.
struct Pop {
    reader: BufReader<TcpStream>,
    transcript: String,
}

impl Pop {
    /// Connects and reads the greeting (which must be `+OK`).
    fn connect(addr: SocketAddr) -> Pop {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
        stream.set_nodelay(true).expect("nodelay");
        stream
            .set_read_timeout(Some(REPLY_TIMEOUT))
            .expect("read timeout");
        stream
            .set_write_timeout(Some(REPLY_TIMEOUT))
            .expect("write timeout");
        let mut pop = Pop {
            reader: BufReader::new(stream),
            transcript: String::new(),
        };
        let greeting = pop.line();
        assert!(greeting.starts_with("+OK"), "greeting {greeting:?}");
        pop
    }

    fn send(&mut self, bytes: &[u8]) {
        let shown = String::from_utf8_lossy(&bytes[..bytes.len().min(200)]);
        self.transcript.push_str(&format!("C: {shown:?}\n"));
        if let Err(e) = self.reader.get_mut().write_all(bytes) {
            panic!("write: {e}\ntranscript:\n{}", self.transcript);
        }
    }

    /// One line without its CRLF, or `None` at end of stream.
    fn try_line(&mut self) -> Option<Vec<u8>> {
        let mut buf = Vec::new();
        match self.reader.read_until(b'\n', &mut buf) {
            Ok(0) => None,
            Ok(_) => {
                if buf.ends_with(b"\n") {
                    buf.pop();
                }
                if buf.ends_with(b"\r") {
                    buf.pop();
                }
                Some(buf)
            }
            Err(e) => panic!("no reply: {e}\ntranscript:\n{}", self.transcript),
        }
    }

    fn line(&mut self) -> String {
        let Some(l) = self.try_line() else {
            panic!("connection closed\ntranscript:\n{}", self.transcript);
        };
        let l = String::from_utf8_lossy(&l).into_owned();
        self.transcript.push_str(&format!("S: {l}\n"));
        l
    }

    /// Sends one command line and reads the status line.
    fn cmd(&mut self, line: &str) -> String {
        self.send(format!("{line}\r\n").as_bytes());
        self.line()
    }

    /// The body of a multi-line answer, dot-unstuffed, CRLF line ends.
    fn multi(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        loop {
            let Some(l) = self.try_line() else {
                panic!("closed in a listing\ntranscript:\n{}", self.transcript);
            };
            if l == b"." {
                return out;
            }
            let l = l.strip_prefix(b".").unwrap_or(&l);
            out.extend_from_slice(l);
            out.extend_from_slice(b"\r\n");
        }
    }

    /// USER and PASS; returns the PASS reply (or the USER reply if that
    /// one was refused).
    fn login(&mut self, user: &str, password: &str) -> String {
        let u = self.cmd(&format!("USER {user}"));
        if !u.starts_with("+OK") {
            return u;
        }
        self.cmd(&format!("PASS {password}"))
    }

    fn must_login(addr: SocketAddr) -> Pop {
        let mut p = Pop::connect(addr);
        let r = p.login(USER, PASSWORD);
        assert!(r.starts_with("+OK"), "{r}\ntranscript:\n{}", p.transcript);
        p
    }

    fn stat(&mut self) -> (usize, u64) {
        let r = self.cmd("STAT");
        let mut w = r.split_whitespace();
        assert_eq!(w.next(), Some("+OK"), "STAT: {r}");
        let count = w.next().and_then(|c| c.parse().ok()).expect("count");
        let octets = w.next().and_then(|c| c.parse().ok()).expect("octets");
        (count, octets)
    }

    fn uidl(&mut self) -> Vec<String> {
        let r = self.cmd("UIDL");
        assert!(r.starts_with("+OK"), "UIDL: {r}");
        let body = String::from_utf8(self.multi()).expect("ascii UIDL");
        body.lines()
            .enumerate()
            .map(|(i, l)| {
                let (n, id) = l.split_once(' ').expect("number and id");
                assert_eq!(n, (i + 1).to_string(), "UIDL numbering: {body}");
                id.to_owned()
            })
            .collect()
    }

    fn retr(&mut self, n: usize) -> Vec<u8> {
        let r = self.cmd(&format!("RETR {n}"));
        assert!(r.starts_with("+OK"), "RETR {n}: {r}");
        self.multi()
    }

    fn quit(&mut self) {
        let r = self.cmd("QUIT");
        assert!(r.starts_with("+OK"), "QUIT: {r}");
        assert!(self.try_line().is_none(), "still open after QUIT");
    }
}

fn mailbox_tweaks() -> Tweaks {
    Tweaks::default()
        .user(USER, PASSWORD)
        .user("bob", "pw-bob")
        .listener("pop3")
}

fn tls_tweaks() -> Tweaks {
    mailbox_tweaks().listener("pop3s").tls()
}

fn pop3(server: &TestServer) -> SocketAddr {
    server.listener("pop3")
}

/// A message whose body has lines starting with "." (stuffed on both
/// wires), a line that is a lone ".", and a last line without text.
fn dotted_message(marker: &str) -> Vec<u8> {
    format!(
        "From: <{SENDER}>\r\nTo: <{USER}@{LOCAL_DOMAIN}>\r\nSubject: {marker}\r\n\
         Message-ID: <{marker}@client.test>\r\n\r\n\
         first line\r\n.\r\n..\r\n.leading dot\r\n. space after dot\r\n\
         ...three dots\r\nnot a dot.\r\n\r\n.\r\nlast line\r\n"
    )
    .into_bytes()
}

/// Three messages: small, dotted, 200 KiB.
fn test_messages() -> Vec<Vec<u8>> {
    vec![
        common::message("small-message", 300),
        dotted_message("dotted-message"),
        common::message("large-message", 200 * 1024),
    ]
}

fn subject_of(msg: &[u8]) -> String {
    let text = String::from_utf8_lossy(msg);
    text.lines()
        .find_map(|l| l.strip_prefix("Subject: "))
        .expect("a Subject header")
        .trim_end()
        .to_owned()
}

/// Checks that `got` is what spate stores for `original`: our trace
/// headers (Return-Path, Delivered-To, Received), then the original bytes
/// intact; and that it equals one stored Maildir file exactly.
fn check_retrieved(got: &[u8], original: &[u8], stored: &[Vec<u8>], who: &str) {
    assert!(
        got.ends_with(original),
        "{who}: the original message is not intact at the end of what was retrieved \
         ({} bytes retrieved, {} sent; subject {})",
        got.len(),
        original.len(),
        subject_of(original)
    );
    let trace = String::from_utf8_lossy(&got[..got.len() - original.len()]);
    let expected_start =
        format!("Return-Path: <{SENDER}>\r\nDelivered-To: {USER}@{LOCAL_DOMAIN}\r\nReceived: ");
    assert!(
        trace.starts_with(&expected_start),
        "{who}: trace headers {trace:?}"
    );
    assert!(trace.ends_with("\r\n"), "{who}: trace headers {trace:?}");
    assert!(
        trace.len() < common::MAX_TRACE_HEADER as usize,
        "{who}: trace headers {trace:?}"
    );
    assert!(
        stored.iter().any(|s| s == got),
        "{who}: retrieved bytes differ from every stored Maildir file"
    );
}

/// `bytes` with every CRLF turned into LF (what an MDA gets).
fn lf(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    for (i, &b) in bytes.iter().enumerate() {
        if b == b'\r' && bytes.get(i + 1) == Some(&b'\n') {
            continue;
        }
        out.push(b);
    }
    out
}

/// Checks messages a client handed to its MDA (LF line ends): one per
/// stored message, each equal to the stored bytes modulo CRLF, and each
/// original intact at its end.
fn check_lf_deliveries(got: &[Vec<u8>], originals: &[Vec<u8>], stored: &[Vec<u8>], who: &str) {
    assert_eq!(got.len(), stored.len(), "{who}: message count");
    let stored_lf: Vec<Vec<u8>> = stored.iter().map(|s| lf(s)).collect();
    for g in got {
        assert!(
            stored_lf.iter().any(|s| s == g),
            "{who}: a retrieved message differs from every stored one (modulo CRLF): {:?}",
            String::from_utf8_lossy(&g[..g.len().min(600)])
        );
    }
    for o in originals {
        let o = lf(o);
        assert!(
            got.iter().filter(|g| g.ends_with(&o)).count() == 1,
            "{who}: original message {} not found intact",
            subject_of(&o)
        );
    }
}

/// The files written into `dir` by an MDA, sorted by name.
fn files_in(dir: &Path) -> Vec<Vec<u8>> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("read dir")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    paths.sort();
    paths
        .iter()
        .map(|p| std::fs::read(p).expect("read"))
        .collect()
}

// ------------------------------------------------------ 1. end to end

fn poplib_fetch(server: &TestServer, mode: &str) -> Value {
    let addr = if mode == "pop3s" {
        server.listener("pop3s")
    } else {
        pop3(server)
    };
    let v = python(
        "pop3_client.py",
        &[
            "fetch".into(),
            addr.ip().to_string(),
            addr.port().to_string(),
            "--user".into(),
            USER.into(),
            "--password".into(),
            PASSWORD.into(),
            "--mode".into(),
            mode.into(),
            "--cafile".into(),
            ca(server),
        ],
    );
    assert!(v.get("exception").is_none(), "poplib {mode}: {v}");
    v
}

#[test]
fn poplib_retrieves_byte_for_byte_over_plain_stls_and_pop3s() {
    let server = TestServer::start(tls_tweaks());
    let originals = test_messages();
    for m in &originals {
        deliver(&server, USER, m);
    }
    let stored = stored(&server, USER);
    let total: u64 = stored.iter().map(|s| s.len() as u64).sum();
    let mut uidls = Vec::new();
    for mode in ["plain", "stls", "pop3s"] {
        let v = poplib_fetch(&server, mode);
        let who = format!("poplib {mode}");
        assert_eq!(v["stat"], serde_json::json!([3, total]), "{who}: {v}");
        match mode {
            "plain" => {
                assert!(v["tls_version"].is_null(), "{who}: {v}");
                assert!(
                    v["capa_before"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|c| c == "STLS"),
                    "{who}: STLS not offered: {v}"
                );
            }
            "stls" => {
                assert!(v["stls"].as_str().unwrap().starts_with("+OK"), "{v}");
                let after = v["capa_after"].as_array().unwrap();
                assert!(!after.iter().any(|c| c == "STLS"), "{who}: {v}");
                assert!(after.iter().any(|c| c == "USER"), "{who}: {v}");
            }
            _ => {}
        }
        if mode != "plain" {
            let t = v["tls_version"].as_str().unwrap_or("");
            assert!(t == "TLSv1.3" || t == "TLSv1.2", "{who}: {v}");
        }
        let msgs: Vec<Vec<u8>> = v["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                base64::engine::general_purpose::STANDARD
                    .decode(m.as_str().unwrap())
                    .expect("base64")
            })
            .collect();
        assert_eq!(msgs.len(), 3, "{who}");
        // Delivered one at a time: numbered in sending order.
        for (got, original) in msgs.iter().zip(&originals) {
            check_retrieved(got, original, &stored, &who);
        }
        let list: Vec<String> = msgs
            .iter()
            .enumerate()
            .map(|(i, m)| format!("{} {}", i + 1, m.len()))
            .collect();
        assert_eq!(v["list"], serde_json::json!(list), "{who}: LIST sizes");
        uidls.push(v["uidl"].clone());
    }
    assert!(
        uidls.iter().all(|u| *u == uidls[0]),
        "UIDLs differ: {uidls:?}"
    );
    assert_eq!(stored.len(), 3, "nothing deleted");
    assert_eq!(self::stored(&server, USER), stored, "Maildir unchanged");
}

fn curl(url: &str, extra: &[&str]) -> std::process::Output {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--max-time", "40", "--user"])
        .arg(format!("{USER}:{PASSWORD}"))
        .args(extra)
        .arg(url);
    run_with_timeout(cmd, COMMAND_TIMEOUT)
}

#[test]
fn curl_retrieves_byte_for_byte_over_plain_stls_and_pop3s() {
    if !have("curl", "curl") {
        return;
    }
    let server = TestServer::start(tls_tweaks());
    let originals = test_messages();
    for m in &originals {
        deliver(&server, USER, m);
    }
    let stored = stored(&server, USER);
    let plain = pop3(&server);
    let implicit = server.listener("pop3s");
    let ca = ca(&server);
    let modes: [(&str, String, Vec<&str>); 3] = [
        ("pop3://", format!("pop3://{plain}"), vec![]),
        (
            "pop3:// --ssl-reqd (STLS)",
            format!("pop3://{plain}"),
            vec!["--ssl-reqd", "--cacert", &ca],
        ),
        (
            "pop3s://",
            format!("pop3s://{implicit}"),
            vec!["--cacert", &ca],
        ),
    ];
    for (who, base, extra) in &modes {
        // The listing: "N size" per message.
        let out = curl(&format!("{base}/"), extra);
        assert!(
            out.status.success(),
            "curl {who} LIST: {}",
            output_text(&out)
        );
        let listing = String::from_utf8_lossy(&out.stdout).into_owned();
        // Numbered in arrival (= sending) order.
        let expected: String = originals
            .iter()
            .enumerate()
            .map(|(i, o)| {
                let s = stored.iter().find(|s| s.ends_with(o)).expect("stored");
                format!("{} {}\r\n", i + 1, s.len())
            })
            .collect();
        assert_eq!(listing, expected, "curl {who} LIST");
        for (i, original) in originals.iter().enumerate() {
            let out = curl(&format!("{base}/{}", i + 1), extra);
            assert!(
                out.status.success(),
                "curl {who} RETR: {}",
                output_text(&out)
            );
            check_retrieved(&out.stdout, original, &stored, &format!("curl {who}"));
        }
    }
    // Without the CA, the TLS modes must fail (the certificate is checked).
    let out = curl(&format!("pop3s://{implicit}/1"), &[]);
    assert!(
        !out.status.success(),
        "pop3s without the CA: {}",
        output_text(&out)
    );
    assert_eq!(self::stored(&server, USER), stored, "Maildir unchanged");
}

#[test]
fn fetchmail_retrieves_over_plain_stls_and_pop3s() {
    if !have("fetchmail", "fetchmail") {
        return;
    }
    let server = TestServer::start(tls_tweaks());
    let originals = test_messages();
    for m in &originals {
        deliver(&server, USER, m);
    }
    let stored = stored(&server, USER);
    let ca = ca(&server);
    let plain = pop3(&server);
    let implicit = server.listener("pop3s");
    let modes = [
        ("plain", plain, "sslproto ''"),
        (
            "stls",
            plain,
            "sslproto 'tls1.2+' sslcertck sslcertfile CA sslcommonname localhost",
        ),
        (
            "pop3s",
            implicit,
            "ssl sslcertck sslcertfile CA sslcommonname localhost",
        ),
    ];
    for (mode, addr, tls) in modes {
        let who = format!("fetchmail {mode}");
        let home = server.dir.path().join(format!("fetchmail-{mode}"));
        let out_dir = home.join("out");
        std::fs::create_dir_all(&out_dir).expect("mkdir");
        let rc = home.join("fetchmailrc");
        let tls = tls.replace("CA", &format!("{ca:?}"));
        // keep: leave the messages; fetchall: ignore what was seen; no
        // rewrite: leave addresses alone; --invisible (below): no
        // Received header of fetchmail's own.
        let text = format!(
            "set no syslog\n\
             poll {ip} service {port} protocol pop3 auth password timeout 30\n  \
             user \"{USER}\" there password \"{PASSWORD}\" is \"root\" here\n  \
             keep fetchall no rewrite {tls}\n  \
             mda \"/bin/sh -c 'cat > {dir}/msg.$$'\"\n",
            ip = addr.ip(),
            port = addr.port(),
            dir = out_dir.display(),
        );
        std::fs::write(&rc, text).expect("write rc");
        std::fs::set_permissions(&rc, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .expect("chmod rc");
        let mut cmd = Command::new("fetchmail");
        cmd.env("HOME", &home)
            .env("FETCHMAILHOME", &home)
            .arg("-f")
            .arg(&rc)
            .arg("-i")
            .arg(home.join("ids"))
            .args(["--invisible", "--nodetach", "-v"]);
        let out = run_with_timeout(cmd, COMMAND_TIMEOUT);
        let log = output_text(&out);
        assert_eq!(out.status.code(), Some(0), "{who}: {log}");
        let stls_sent = log.contains("POP3> STLS");
        assert_eq!(stls_sent, mode == "stls", "{who}: STLS use: {log}");
        check_lf_deliveries(&files_in(&out_dir), &originals, &stored, &who);
    }
    assert_eq!(self::stored(&server, USER), stored, "Maildir unchanged");
}

#[test]
fn mpop_retrieves_over_plain_stls_and_pop3s() {
    if !have("mpop", "mpop") {
        return;
    }
    let server = TestServer::start(tls_tweaks());
    let originals = test_messages();
    for m in &originals {
        deliver(&server, USER, m);
    }
    let stored = stored(&server, USER);
    let ca = ca(&server);
    let trust = format!("--tls-trust-file={ca}");
    let plain = pop3(&server);
    let implicit = server.listener("pop3s");
    let modes = [
        ("plain", plain, vec!["--tls=off", "--auth=user"]),
        (
            "stls",
            plain,
            vec!["--tls=on", "--tls-starttls=on", trust.as_str()],
        ),
        (
            "pop3s",
            implicit,
            vec!["--tls=on", "--tls-starttls=off", trust.as_str()],
        ),
    ];
    for (mode, addr, tls) in modes {
        let who = format!("mpop {mode}");
        let home = server.dir.path().join(format!("mpop-{mode}"));
        let out_dir = home.join("out");
        std::fs::create_dir_all(&out_dir).expect("mkdir");
        let mut cmd = Command::new("mpop");
        cmd.env("HOME", &home)
            .arg(format!("--host={}", addr.ip()))
            .arg(format!("--port={}", addr.port()))
            .arg(format!("--user={USER}"))
            .arg(format!("--passwordeval=echo {PASSWORD}"))
            .args(&tls)
            .args([
                "--timeout=30",
                "--keep=on",
                "--only-new=off",
                "--received-header=off",
                "--debug",
            ])
            .arg(format!("--uidls-file={}", home.join("uidls").display()))
            .arg(format!("--delivery=mda,cat > {}/msg.$$", out_dir.display()));
        let out = run_with_timeout(cmd, COMMAND_TIMEOUT);
        let log = output_text(&out);
        assert_eq!(out.status.code(), Some(0), "{who}: {log}");
        assert_eq!(log.contains("--> STLS"), mode == "stls", "{who}: {log}");
        check_lf_deliveries(&files_in(&out_dir), &originals, &stored, &who);
    }
    assert_eq!(self::stored(&server, USER), stored, "Maildir unchanged");
}

// ------------------------------------------------------ 2. concurrency

#[test]
fn open_session_keeps_its_snapshot_and_a_new_session_sees_new_mail() {
    let server = TestServer::start(mailbox_tweaks());
    let first = common::message("before-session", 500);
    deliver(&server, USER, &first);
    let mut a = Pop::must_login(pop3(&server));
    let (count, octets) = a.stat();
    assert_eq!(count, 1);
    let uidl_before = a.uidl();

    // Two deliveries while the session is open: both are stored...
    let second = common::message("during-session-1", 800);
    let third = dotted_message("during-session-2");
    deliver(&server, USER, &second);
    deliver(&server, USER, &third);
    assert_eq!(maildir_files(&server, USER).len(), 3);

    // ...but the open session keeps the maildrop it locked.
    assert_eq!(a.stat(), (1, octets), "snapshot changed");
    assert_eq!(a.uidl(), uidl_before);
    let r = a.cmd("LIST");
    assert!(r.starts_with("+OK"), "{r}");
    assert_eq!(
        a.multi()
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .count(),
        1
    );
    let r = a.cmd("RETR 2");
    assert!(
        r.starts_with("-ERR"),
        "RETR of mail newer than the session: {r}"
    );
    let r = a.cmd("LIST 3");
    assert!(r.starts_with("-ERR"), "{r}");
    let got = a.retr(1);
    assert!(got.ends_with(&first));
    a.quit();

    // A new session sees all three, in arrival order, the first unchanged.
    let mut b = Pop::must_login(pop3(&server));
    assert_eq!(b.stat().0, 3);
    let uidl = b.uidl();
    assert_eq!(uidl[0], uidl_before[0], "UIDL of the old message changed");
    let all = stored(&server, USER);
    for (i, original) in [&first, &second, &third].into_iter().enumerate() {
        check_retrieved(&b.retr(i + 1), original, &all, "new session");
    }
    b.quit();
}

/// Issue 15 item 3: with Dovecot's default (`[pop3] lock_session`
/// off) two sessions open one maildrop at once (a phone and a laptop);
/// a message one of them removed is `-ERR` for the other, whose own
/// DELE of it and QUIT still succeed, and nothing else is lost.
#[test]
fn two_sessions_share_a_maildrop_and_deletions_stay_safe() {
    let server = TestServer::start(mailbox_tweaks());
    let messages: Vec<Vec<u8>> = (0..3)
        .map(|i| common::message(&format!("shared-{i}"), 300 + i * 100))
        .collect();
    for m in &messages {
        deliver(&server, USER, m);
    }
    let mut phone = Pop::must_login(pop3(&server));
    let mut laptop = Pop::must_login(pop3(&server));
    assert_eq!(phone.stat().0, 3);
    assert_eq!(laptop.stat().0, 3);
    assert_eq!(phone.uidl(), laptop.uidl());

    // The phone deletes message 1 and quits: it is removed at once.
    let r = phone.cmd("DELE 1");
    assert!(r.starts_with("+OK"), "{r}");
    phone.quit();
    assert_eq!(maildir_files(&server, USER).len(), 2);

    // The laptop still lists it, but cannot fetch it: -ERR, and the
    // session goes on (the other messages come whole).
    let r = laptop.cmd("RETR 1");
    assert_eq!(r.trim_end(), "-ERR Message was deleted by another session");
    let r = laptop.cmd("TOP 1 0");
    assert!(r.starts_with("-ERR Message was deleted"), "{r}");
    let all = stored(&server, USER);
    check_retrieved(&laptop.retr(2), &messages[1], &all, "laptop RETR 2");
    check_retrieved(&laptop.retr(3), &messages[2], &all, "laptop RETR 3");
    // Deleting the gone message and another one: QUIT succeeds.
    for n in [1, 3] {
        let r = laptop.cmd(&format!("DELE {n}"));
        assert!(r.starts_with("+OK"), "DELE {n}: {r}");
    }
    let r = laptop.cmd("QUIT");
    assert!(
        r.starts_with("+OK"),
        "QUIT after deleting a gone message: {r}"
    );
    let left = stored(&server, USER);
    assert_eq!(left.len(), 1, "only message 2 is left");
    assert!(left[0].ends_with(&messages[1]) || left[0] == messages[1]);
}

/// Messages are read ahead in order (issue 15 item 1); fetching out of
/// order, again, or past the read-ahead's reach still gives each message
/// whole, and a message another session removed after it was read ahead
/// is still the one asked for, not its neighbour.
#[test]
fn retr_in_any_order_gives_each_message_whole_with_read_ahead() {
    let server = TestServer::start(mailbox_tweaks());
    // 40 messages: more than one read-ahead batch (32).
    let messages: Vec<Vec<u8>> = (0..40)
        .map(|i| {
            if i % 7 == 0 {
                dotted_message(&format!("ahead-{i}"))
            } else {
                common::message(&format!("ahead-{i}"), 200 + i * 37)
            }
        })
        .collect();
    for m in &messages {
        deliver(&server, USER, m);
    }
    let all = stored(&server, USER);
    let mut p = Pop::must_login(pop3(&server));
    for n in [3, 1, 2, 2, 40, 33, 34, 39, 5] {
        check_retrieved(&p.retr(n), &messages[n - 1], &all, &format!("RETR {n}"));
    }
    // Another session removes message 7 after this one read it ahead (it
    // was read in the batch that began at 5); RETR 6 then 7 still give 6
    // and 7, and 8 follows.
    let mut other = Pop::must_login(pop3(&server));
    assert!(other.cmd("DELE 7").starts_with("+OK"));
    other.quit();
    for n in [6, 7, 8] {
        check_retrieved(
            &p.retr(n),
            &messages[n - 1],
            &all,
            &format!("RETR {n} after DELE"),
        );
    }
    p.quit();
}

/// `[pop3] lock_session = true`: one session per maildrop, as before
/// issue 15 (and Dovecot with `pop3_lock_session = yes`).
#[test]
fn a_second_session_on_the_same_mailbox_gets_in_use() {
    let server = TestServer::start(mailbox_tweaks().extra("[pop3]\nlock_session = true\n"));
    deliver(&server, USER, &common::message("locked", 300));
    let mut a = Pop::must_login(pop3(&server));
    assert_eq!(a.stat().0, 1);

    let mut b = Pop::connect(pop3(&server));
    let r = b.login(USER, PASSWORD);
    assert!(r.starts_with("-ERR [IN-USE]"), "second session: {r}");
    // AUTH PLAIN is refused the same way.
    let mut c = Pop::connect(pop3(&server));
    let token = base64::engine::general_purpose::STANDARD.encode(format!("\0{USER}\0{PASSWORD}"));
    let r = c.cmd(&format!("AUTH PLAIN {token}"));
    assert!(
        r.starts_with("-ERR [IN-USE]"),
        "AUTH PLAIN while locked: {r}"
    );
    // Another user's mailbox is not affected by the lock.
    let mut other = Pop::connect(pop3(&server));
    let r = other.login("bob", "pw-bob");
    assert!(r.starts_with("+OK"), "bob: {r}");
    other.quit();

    // The first session is undisturbed and can still work.
    assert_eq!(a.stat().0, 1);
    let r = a.cmd("NOOP");
    assert!(r.starts_with("+OK"), "{r}");
    a.quit();

    // After QUIT the lock is gone.
    let mut d = Pop::connect(pop3(&server));
    let r = d.login(USER, PASSWORD);
    assert!(r.starts_with("+OK"), "after the first session quit: {r}");
    // Dropping the connection without QUIT releases it too.
    drop(d);
    wait_for("the lock of a dropped session to go", || {
        let mut e = Pop::connect(pop3(&server));
        let r = e.login(USER, PASSWORD);
        if r.starts_with("+OK") {
            e.quit();
            true
        } else {
            assert!(r.starts_with("-ERR [IN-USE]"), "{r}");
            false
        }
    });
    assert_eq!(maildir_files(&server, USER).len(), 1);
}

/// One session's UIDL listing.
fn uidl_of(server: &TestServer) -> Vec<String> {
    let mut p = Pop::must_login(pop3(server));
    let u = p.uidl();
    p.quit();
    u
}

#[test]
fn uidl_is_stable_across_sessions_restarts_and_deletions() {
    let mut server = TestServer::start(mailbox_tweaks());
    for i in 0..3 {
        deliver(&server, USER, &common::message(&format!("uidl-{i}"), 400));
    }
    let first = uidl_of(&server);
    assert_eq!(first.len(), 3);
    for id in &first {
        assert!(
            id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit()),
            "UIDL {id:?} is not %08X%08X"
        );
    }
    let distinct: BTreeSet<&String> = first.iter().collect();
    assert_eq!(distinct.len(), 3, "UIDLs must be unique: {first:?}");
    // UIDs ascend in arrival order, one UIDVALIDITY.
    assert!(first.windows(2).all(|w| w[0][..8] < w[1][..8]), "{first:?}");
    assert!(first.iter().all(|u| u[8..] == first[0][8..]), "{first:?}");
    assert_eq!(uidl_of(&server), first, "second session");

    server.terminate();
    server.restart();
    assert_eq!(uidl_of(&server), first, "after a clean restart");

    server.kill9();
    server.restart();
    assert_eq!(uidl_of(&server), first, "after kill -9 and restart");

    // Deleting the first keeps the others' ids; new mail gets a new one.
    let mut p = Pop::must_login(pop3(&server));
    let r = p.cmd("DELE 1");
    assert!(r.starts_with("+OK"), "{r}");
    p.quit();
    deliver(&server, USER, &common::message("uidl-new", 400));
    let after = uidl_of(&server);
    assert_eq!(after.len(), 3);
    assert_eq!(after[..2], first[1..], "ids of the kept messages");
    assert!(
        !first.contains(&after[2]),
        "a new message reused an id: {after:?}"
    );
    assert!(
        after[2][..8] > first[2][..8],
        "new UID not above the old: {after:?}"
    );
    server.terminate();
    server.restart();
    assert_eq!(uidl_of(&server), after, "after a restart following DELE");
}

#[test]
fn dele_and_quit_removes_but_rset_or_a_dropped_connection_keeps() {
    let server = TestServer::start(mailbox_tweaks());
    let originals: Vec<Vec<u8>> = (0..3)
        .map(|i| common::message(&format!("dele-{i}"), 300))
        .collect();
    for m in &originals {
        deliver(&server, USER, m);
    }
    let files = maildir_files(&server, USER);
    let all = uidl_of(&server);

    // DELE, then RSET, then QUIT: nothing removed.
    let mut p = Pop::must_login(pop3(&server));
    assert!(p.cmd("DELE 1").starts_with("+OK"));
    assert!(p.cmd("DELE 2").starts_with("+OK"));
    let r = p.cmd("RETR 1");
    assert!(r.starts_with("-ERR"), "RETR of a deleted message: {r}");
    assert!(p.cmd("DELE 1").starts_with("-ERR"), "deleted twice");
    assert_eq!(p.stat().0, 1, "STAT leaves out deleted messages");
    let r = p.cmd("RSET");
    assert!(r.starts_with("+OK"), "{r}");
    assert_eq!(p.stat().0, 3);
    p.quit();
    assert_eq!(
        maildir_files(&server, USER),
        files,
        "RSET + QUIT removed mail"
    );
    assert_eq!(uidl_of(&server), all);

    // DELE, then the connection drops without QUIT: nothing removed.
    let mut p = Pop::must_login(pop3(&server));
    assert!(p.cmd("DELE 1").starts_with("+OK"));
    assert!(p.cmd("DELE 3").starts_with("+OK"));
    drop(p);
    let mut kept = None;
    wait_for("the dropped session's lock to go", || {
        let mut q = Pop::connect(pop3(&server));
        let r = q.login(USER, PASSWORD);
        if r.starts_with("+OK") {
            kept = Some(q.stat().0);
            q.quit();
            true
        } else {
            false
        }
    });
    assert_eq!(kept, Some(3), "a dropped connection's DELE took effect");
    assert_eq!(maildir_files(&server, USER), files);

    // DELE + QUIT removes exactly that message.
    let mut p = Pop::must_login(pop3(&server));
    assert!(p.cmd("DELE 2").starts_with("+OK"));
    let r = p.cmd("QUIT");
    assert!(r.starts_with("+OK"), "{r}");
    let left = maildir_files(&server, USER);
    assert_eq!(left.len(), 2, "{left:?}");
    let remaining = stored(&server, USER);
    assert!(remaining.iter().any(|m| m.ends_with(&originals[0])));
    assert!(remaining.iter().any(|m| m.ends_with(&originals[2])));
    assert!(!remaining.iter().any(|m| m.ends_with(&originals[1])));
    assert_eq!(uidl_of(&server), vec![all[0].clone(), all[2].clone()]);
}

// ------------------------------------------------------ 3. bad input

#[test]
fn wrong_passwords_get_auth_errors_and_change_nothing() {
    let server = TestServer::start(mailbox_tweaks());
    deliver(&server, USER, &common::message("auth", 300));
    let before = tree(server.dir.path());
    let contents = stored(&server, USER);

    let mut p = Pop::connect(pop3(&server));
    let r = p.login(USER, "wrong");
    assert!(r.starts_with("-ERR [AUTH]"), "wrong password: {r}");
    let r = p.cmd("STAT");
    assert!(r.starts_with("-ERR"), "STAT after a failed login: {r}");
    let r = p.login("nobody", PASSWORD);
    assert!(r.starts_with("-ERR [AUTH]"), "unknown user: {r}");
    let bad = base64::engine::general_purpose::STANDARD.encode(format!("\0{USER}\0nope"));
    let r = p.cmd(&format!("AUTH PLAIN {bad}"));
    assert!(
        r.starts_with("-ERR [AUTH]"),
        "AUTH PLAIN, wrong password: {r}"
    );
    let after = tree(server.dir.path());
    let new: Vec<_> = after.difference(&before).collect();
    assert!(new.is_empty(), "files created by failed logins: {new:?}");
    assert_eq!(after, before, "files removed by failed logins");
    // The same session may still log in with the right password.
    let r = p.login(USER, PASSWORD);
    assert!(r.starts_with("+OK"), "right password after failures: {r}");
    assert_eq!(p.stat().0, 1);
    p.quit();

    assert_eq!(stored(&server, USER), contents);
}

#[test]
fn junk_commands_get_clear_errors_and_the_session_goes_on() {
    let server = TestServer::start(mailbox_tweaks());
    deliver(&server, USER, &common::message("junk", 300));
    let contents = stored(&server, USER);

    let mut p = Pop::connect(pop3(&server));
    let r = p.cmd("PASS pw-alice");
    assert!(r.starts_with("-ERR"), "PASS without USER: {r}");
    let r = p.cmd("XYZZY");
    assert!(r.starts_with("-ERR"), "unknown command: {r}");
    let r = p.cmd("STAT");
    assert!(r.starts_with("-ERR"), "STAT before login: {r}");
    let r = p.cmd("RETR 1");
    assert!(r.starts_with("-ERR"), "RETR before login: {r}");
    let r = p.cmd(&format!("USER {}", "a".repeat(4000)));
    assert!(r.starts_with("-ERR"), "overlong line: {r}");
    assert!(
        r.to_ascii_lowercase().contains("long"),
        "overlong line: {r}"
    );
    // Exactly one reply for the overlong line: the next command is answered
    // in step.
    let r = p.cmd("NOOP");
    assert!(r.starts_with("-ERR"), "NOOP before login: {r}");
    let r = p.cmd("CAPA");
    assert!(r.starts_with("+OK"), "CAPA: {r}");
    let capa = String::from_utf8(p.multi()).unwrap();
    assert!(capa.contains("UIDL"), "{capa}");
    p.send(b"USER \x01\x02\r\n");
    let r = p.line();
    assert!(r.starts_with("-ERR"), "control characters: {r}");

    // Seven errors so far, below `[pop3] max_errors` (10): still served.
    let r = p.login(USER, PASSWORD);
    assert!(r.starts_with("+OK"), "{r}");
    p.quit();

    // In TRANSACTION, on a new connection (errors count per session).
    let mut p = Pop::must_login(pop3(&server));
    for bad in [
        "RETR 0", "RETR 2", "RETR -1", "RETR x", "TOP 1", "DELE 99", "LIST 1 2",
    ] {
        let r = p.cmd(bad);
        assert!(r.starts_with("-ERR"), "{bad}: {r}");
    }
    let r = p.cmd("USER alice");
    assert!(r.starts_with("-ERR"), "USER in TRANSACTION: {r}");
    let r = p.cmd(&"X".repeat(3000));
    assert!(r.starts_with("-ERR"), "overlong line after login: {r}");
    assert_eq!(p.stat().0, 1);
    p.quit();

    // The tenth bad command of a session gets its answer, then a clear
    // "too many" error, then the connection closes.
    let mut p = Pop::connect(pop3(&server));
    for i in 1..=10 {
        let r = p.cmd("XYZZY");
        assert!(r.starts_with("-ERR"), "bad command #{i}: {r}");
    }
    let r = p.line();
    assert!(r.starts_with("-ERR") && r.contains("Too many"), "{r}");
    assert!(p.try_line().is_none(), "still open after too many errors");
    assert_eq!(stored(&server, USER), contents);
}

#[test]
fn path_traversal_user_names_are_refused_and_create_nothing() {
    let server = TestServer::start(mailbox_tweaks());
    deliver(&server, USER, &common::message("traversal", 300));
    let contents = stored(&server, USER);
    let before = tree(server.dir.path());
    let parent = server.dir.path().parent().unwrap().to_path_buf();
    let siblings_before: BTreeSet<_> = std::fs::read_dir(&parent)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .filter(|n| {
            let n = n.to_string_lossy();
            n == "x" || n == "b"
        })
        .collect();

    let mut p = Pop::connect(pop3(&server));
    for name in ["../x", "a/../../b", "../alice"] {
        let r = p.login(name, PASSWORD);
        assert!(r.starts_with("-ERR"), "user {name:?}: {r}");
    }
    // The same through AUTH PLAIN (as authorization and authentication id).
    let token = base64::engine::general_purpose::STANDARD.encode(format!("../x\0../x\0{PASSWORD}"));
    let r = p.cmd(&format!("AUTH PLAIN {token}"));
    assert!(r.starts_with("-ERR"), "AUTH PLAIN ../x: {r}");
    p.quit();

    assert_eq!(stored(&server, USER), contents);
    let after = tree(server.dir.path());
    let new: Vec<_> = after.difference(&before).collect();
    assert!(new.is_empty(), "files created: {new:?}");
    let siblings_after: BTreeSet<_> = std::fs::read_dir(&parent)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .filter(|n| {
            let n = n.to_string_lossy();
            n == "x" || n == "b"
        })
        .collect();
    assert_eq!(
        siblings_before, siblings_after,
        "created outside the test dir"
    );
    assert!(!server.mail_dir().join("x").exists());
    assert!(!server.mail_dir().join("b").exists());
}

#[test]
fn plaintext_login_is_refused_before_tls_when_loopback_is_not_trusted() {
    let server = TestServer::start(tls_tweaks().extra("[auth]\ntrust_loopback = false\n"));
    deliver(&server, USER, &common::message("before-tls", 300));
    let contents = stored(&server, USER);
    let before = tree(&server.mail_dir());

    // Raw: every way to send a password in the clear is refused, and the
    // session never reaches TRANSACTION.
    let mut p = Pop::connect(pop3(&server));
    let r = p.cmd("CAPA");
    assert!(r.starts_with("+OK"), "{r}");
    let capa = String::from_utf8(p.multi()).unwrap();
    assert!(capa.contains("STLS"), "{capa}");
    assert!(!capa.contains("USER"), "USER offered before TLS: {capa}");
    assert!(!capa.contains("SASL"), "SASL offered before TLS: {capa}");
    let r = p.cmd(&format!("USER {USER}"));
    assert!(r.starts_with("-ERR"), "USER before TLS: {r}");
    let r = p.cmd(&format!("PASS {PASSWORD}"));
    assert!(r.starts_with("-ERR"), "PASS before TLS: {r}");
    let token = base64::engine::general_purpose::STANDARD.encode(format!("\0{USER}\0{PASSWORD}"));
    let r = p.cmd(&format!("AUTH PLAIN {token}"));
    assert!(r.starts_with("-ERR"), "AUTH PLAIN before TLS: {r}");
    let r = p.cmd("AUTH PLAIN");
    assert!(
        r.starts_with("-ERR"),
        "AUTH PLAIN (no initial response) before TLS: {r}"
    );
    let r = p.cmd("STAT");
    assert!(r.starts_with("-ERR"), "STAT: {r}");
    p.quit();
    assert_eq!(tree(&server.mail_dir()), before, "Maildir changed");

    // poplib: the same refusals, then STLS and a login that works.
    let addr = pop3(&server);
    let v = python(
        "pop3_client.py",
        &[
            "before_tls".into(),
            addr.ip().to_string(),
            addr.port().to_string(),
            "--user".into(),
            USER.into(),
            "--password".into(),
            PASSWORD.into(),
            "--cafile".into(),
            ca(&server),
        ],
    );
    assert!(v.get("exception").is_none(), "{v}");
    let capa = v["capa_before"].as_array().unwrap();
    assert!(capa.iter().any(|c| c == "STLS"), "{v}");
    assert!(!capa.iter().any(|c| c == "USER" || c == "SASL"), "{v}");
    for step in ["user", "pass", "auth_plain", "stat_unauthenticated"] {
        assert!(
            v[step].get("err").is_some(),
            "{step} accepted before TLS: {v}"
        );
    }
    assert!(
        v["user"]["err"].as_str().unwrap().starts_with("-ERR"),
        "{v}"
    );
    let capa = v["capa_after"].as_array().unwrap();
    assert!(capa.iter().any(|c| c == "USER"), "{v}");
    assert!(!capa.iter().any(|c| c == "STLS"), "{v}");
    assert!(v["pass_after"].get("ok").is_some(), "login over TLS: {v}");
    assert_eq!(v["stat_after"][0], 1, "{v}");

    // Implicit TLS needs no STLS.
    let v = poplib_fetch(&server, "pop3s");
    assert_eq!(v["stat"][0], 1, "{v}");
    assert_eq!(stored(&server, USER), contents);
}

// ------------------------------------------------------ 4. other readers

/// Runs mutt on `maildir` under `script` (mutt wants a terminal), with
/// `keys` pushed, and the muttrc `rc`. Returns mutt's output for failure
/// messages.
fn run_mutt(home: &Path, maildir: &Path, rc: &str, keys: &str, read_only: bool) -> String {
    std::fs::create_dir_all(home).expect("mkdir");
    let muttrc = home.join("muttrc");
    // An existing $folder: otherwise a first run asks to create ~/Mail,
    // and that prompt eats the pushed keys.
    let rc = format!("set folder=\"{}\"\n{rc}", home.display());
    std::fs::write(&muttrc, rc).expect("write muttrc");
    let mutt = format!(
        "mutt -n -F {rc} {ro} -f {dir} -e 'push \"{keys}\"'",
        rc = muttrc.display(),
        ro = if read_only { "-R" } else { "" },
        dir = maildir.display(),
    );
    let mut cmd = Command::new("script");
    cmd.env("HOME", home)
        .env("TERM", "xterm")
        .env("LC_ALL", "C")
        .args(["-qec", &mutt, "/dev/null"]);
    let out = run_with_timeout(cmd, COMMAND_TIMEOUT);
    let text = output_text(&out);
    assert!(out.status.success(), "mutt: {text}");
    text
}

const MUTTRC: &str = "set mbox_type=Maildir\n\
                      set pipe_split=yes\n\
                      set pipe_decode=no\n\
                      set pipe_sep=\"\\n--MUTT-SEP--\\n\"\n\
                      set wait_key=no\n\
                      set move=no\n\
                      set quit=yes\n\
                      set sort=date-sent\n";

#[test]
fn mutt_reads_the_maildir_spate_delivered() {
    if !have("mutt", "mutt") || !have("script", "bsdutils") {
        return;
    }
    let server = TestServer::start(mailbox_tweaks());
    let originals = test_messages();
    for m in &originals {
        deliver(&server, USER, m);
    }
    let stored_before = stored(&server, USER);
    let uidl_before = uidl_of(&server);
    let maildir = server.mail_dir().join(USER);
    let home = server.dir.path().join("mutt");
    let out = home.join("out");
    std::fs::create_dir_all(&out).expect("mkdir");

    // Read-only: pipe every message into one file, each followed by the
    // separator.
    let all = out.join("all");
    let keys = format!(
        "<tag-pattern>~A<enter><tag-prefix><pipe-message>cat >> {}<enter><quit>",
        all.display()
    );
    let log = run_mutt(&home, &maildir, MUTTRC, &keys, true);
    let piped = std::fs::read(&all).unwrap_or_default();
    let sep = b"\n--MUTT-SEP--\n";
    let mut got = Vec::new();
    let mut rest = &piped[..];
    while let Some(at) = rest.windows(sep.len()).position(|w| w == sep) {
        got.push(rest[..at].to_vec());
        rest = &rest[at + sep.len()..];
    }
    assert!(
        rest.is_empty(),
        "mutt output after the last separator ({} messages before it): {:?}\n{log}",
        got.len(),
        String::from_utf8_lossy(&rest[..rest.len().min(300)])
    );
    assert_eq!(got.len(), 3, "mutt saw {} messages: {log}", got.len());
    let subjects: BTreeSet<String> = got.iter().map(|m| subject_of(m)).collect();
    let expected: BTreeSet<String> = originals.iter().map(|m| subject_of(m)).collect();
    assert_eq!(subjects, expected);
    check_lf_deliveries(
        &got.iter().map(|m| lf(m)).collect::<Vec<_>>(),
        &originals,
        &stored_before,
        "mutt",
    );
    assert_eq!(
        stored(&server, USER),
        stored_before,
        "read-only mutt changed mail"
    );

    // Read-write: mutt marks every message read (moves it to cur/ with
    // the S flag). spate's index follows the renames: same UIDLs, same
    // bytes, and a later delivery still works.
    let keys = "<tag-pattern>~A<enter><tag-prefix><clear-flag>N<sync-mailbox><quit>";
    let log = run_mutt(&home, &maildir, MUTTRC, keys, false);
    let files = maildir_files(&server, USER);
    assert_eq!(files.len(), 3, "{files:?}");
    assert!(
        files
            .iter()
            .all(|f| f.parent().unwrap().ends_with("cur") && f.to_string_lossy().ends_with(":2,S")),
        "mutt did not mark the messages read: {files:?}\n{log}"
    );
    assert_eq!(
        uidl_of(&server),
        uidl_before,
        "UIDLs changed after flag renames"
    );
    let mut p = Pop::must_login(pop3(&server));
    let now = stored(&server, USER);
    for (i, original) in originals.iter().enumerate() {
        let got = p.retr(i + 1);
        check_retrieved(&got, original, &now, "POP3 after mutt");
    }
    let r = p.cmd("DELE 1");
    assert!(r.starts_with("+OK"), "{r}");
    p.quit();
    assert_eq!(
        maildir_files(&server, USER).len(),
        2,
        "DELE of a renamed file"
    );
    deliver(&server, USER, &common::message("after-mutt", 300));
    let after = uidl_of(&server);
    assert_eq!(after.len(), 3);
    assert_eq!(after[..2], uidl_before[1..]);
}
