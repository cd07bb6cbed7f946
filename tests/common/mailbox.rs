//! Helpers shared by the mailbox tier's client tests (POP3 and IMAP): a
//! user's INBOX files, a delivery through SMTP waited for, whether a client
//! tool is installed, the paths under a directory, a command's output for
//! assertion messages, the test CA's path.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::{TestServer, LOCAL_DOMAIN};

/// How long a delivery may take to show.
pub const SETTLE: Duration = Duration::from_secs(30);
/// The envelope sender of test deliveries.
pub const SENDER: &str = "sender@client.test";

/// The files of `user`'s INBOX (new/ and cur/), sorted by name.
pub fn maildir_files(server: &TestServer, user: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for sub in ["new", "cur"] {
        let Ok(rd) = std::fs::read_dir(server.mail_dir().join(user).join(sub)) else {
            continue;
        };
        for e in rd.flatten() {
            if e.path().is_file() {
                out.push(e.path());
            }
        }
    }
    out.sort();
    out
}

/// The stored messages' bytes, in file name order (not arrival order).
pub fn stored_in_name_order(server: &TestServer, user: &str) -> Vec<Vec<u8>> {
    maildir_files(server, user)
        .iter()
        .map(|p| std::fs::read(p).expect("read stored message"))
        .collect()
}

/// Sends `msg` to `user` through SMTP and waits until the Maildir holds
/// one more message (so messages are numbered in sending order).
pub fn deliver(server: &TestServer, user: &str, msg: &[u8]) {
    let before = maildir_files(server, user).len();
    let mut c = server.session();
    let to = format!("{user}@{LOCAL_DOMAIN}");
    if let Err(r) = c.send_message(SENDER, &[&to], msg) {
        panic!("SMTP refused: {r:?}\ntranscript:\n{}", c.transcript);
    }
    c.quit();
    wait_for(&format!("delivery #{} to {user}", before + 1), || {
        maildir_files(server, user).len() > before
    });
}

/// Polls `done` for [`SETTLE`] at most.
pub fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + SETTLE;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Is `tool` an executable on PATH? Prints the skip note when not.
pub fn have(tool: &str, package: &str) -> bool {
    let found = std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path).any(|d| {
            let p = d.join(tool);
            std::fs::metadata(&p).is_ok_and(|m| m.is_file())
        })
    });
    if !found {
        eprintln!("SKIP: `{tool}` is not installed (Debian package `{package}`); test not run");
    }
    found
}

/// Every path under `dir` (for "nothing was created" checks).
pub fn tree(dir: &Path) -> BTreeSet<PathBuf> {
    let mut out = BTreeSet::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p.clone());
            }
            out.insert(p);
        }
    }
    out
}

/// A command's status and output, for an assertion's message.
pub fn output_text(out: &std::process::Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The test CA's certificate file (a server started with `tls()`).
pub fn ca(server: &TestServer) -> String {
    server.tls.as_ref().expect("tls").ca.display().to_string()
}
