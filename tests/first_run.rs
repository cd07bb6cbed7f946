//! The README's first run, as a new user types it on a fresh machine: in an
//! empty directory, `spate user add me`, then `spate serve` on the embedded
//! default (no configuration file), a message sent to me@localhost over
//! SMTP on 127.0.0.1:2525, and read back with curl over IMAP
//! (127.0.0.1:1143) and POP3 (127.0.0.1:1110). The only test on those fixed
//! loopback ports: they are the embedded default's, which is what it tests.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::Client;

const PASSWORD: &str = "first-run-password";

/// The server, killed when dropped.
struct Served(Child);

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn curl(url: &str) -> (bool, String) {
    let mut cmd = Command::new("curl");
    cmd.args([
        "-sS",
        "--max-time",
        "10",
        "-u",
        &format!("me:{PASSWORD}"),
        url,
    ]);
    let out = common::run_with_timeout(cmd, Duration::from_secs(30));
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn the_readme_first_run_goes_from_smtp_to_imap_and_pop3_on_the_embedded_default() {
    let dir = tempfile::tempdir().unwrap();
    let mut add = Command::new(common::SPATE)
        .args(["user", "add", "me"])
        .current_dir(dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    writeln!(add.stdin.take().unwrap(), "{PASSWORD}").unwrap();
    let out = add.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let mut child = Command::new(common::SPATE)
        .arg("serve")
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let served = Served(child);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut listening = Vec::new();
    loop {
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("spate serve prints ready");
        if line == "ready" {
            break;
        }
        listening.push(line);
    }
    for wanted in [
        "listening smtp 127.0.0.1:2525",
        "listening imap 127.0.0.1:1143",
        "listening pop3 127.0.0.1:1110",
    ] {
        assert!(listening.iter().any(|l| l == wanted), "{listening:?}");
    }

    let smtp: SocketAddr = "127.0.0.1:2525".parse().unwrap();
    let mut c = Client::connect(smtp);
    assert_eq!(c.read_reply().code, 220);
    assert_eq!(c.ehlo("client.test").code, 250);
    let message = b"From: <you@localhost>\r\nTo: <me@localhost>\r\nSubject: first run\r\n\r\nhello from the README\r\n";
    c.send_message("you@localhost", &["me@localhost"], message)
        .unwrap_or_else(|r| panic!("refused: {r:?}"));
    c.quit();

    let deadline = Instant::now() + Duration::from_secs(30);
    let (mut ok, mut text) = (false, String::new());
    while Instant::now() < deadline {
        (ok, text) = curl("imap://127.0.0.1:1143/INBOX;UID=1");
        if ok && text.contains("hello from the README") {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(ok && text.contains("Subject: first run"), "IMAP: {text}");
    let (ok, text) = curl("pop3://127.0.0.1:1110/1");
    assert!(ok && text.contains("hello from the README"), "POP3: {text}");
    let (ok, _) = {
        let mut cmd = Command::new("curl");
        cmd.args([
            "-sS",
            "--max-time",
            "10",
            "-u",
            "me:wrong",
            "imap://127.0.0.1:1143/INBOX;UID=1",
        ]);
        let out = common::run_with_timeout(cmd, Duration::from_secs(30));
        (out.status.success(), ())
    };
    assert!(!ok, "a wrong password reads nothing");
    drop(served);
}
