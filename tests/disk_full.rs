//! Disk full: the spool lives on a small tmpfs that is nearly filled by a
//! filler file. Messages are refused with a temporary `452 4.3.1`, nothing
//! half-written becomes visible in `queue list`, the session and server go
//! on, and once space is freed mail is accepted again.
//!
//! Needs root (mount -t tmpfs); without it the test says so and passes.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{Client, TestServer, Tweaks};

struct Mount(PathBuf);

impl Mount {
    fn tmpfs(at: &Path, size: &str) -> Option<Mount> {
        std::fs::create_dir_all(at).ok()?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .output()
            .ok()?;
        if !out.status.success() {
            eprintln!(
                "cannot mount tmpfs: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            return None;
        }
        Some(Mount(at.to_owned()))
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn available(path: &Path) -> u64 {
    let out = Command::new("df")
        .args(["--output=avail", "-B1"])
        .arg(path)
        .output()
        .expect("df");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .nth(1)
        .and_then(|l| l.trim().parse().ok())
        .expect("df avail")
}

#[test]
fn disk_full_answers_452_and_keeps_nothing_half_written() {
    let outer = tempfile::tempdir().expect("tempdir");
    let mnt = outer.path().join("spool-fs");
    let Some(_mount) = Mount::tmpfs(&mnt, "16m") else {
        eprintln!("SKIPPED: needs root to mount a tmpfs");
        return;
    };
    let spool = mnt.join("spool");
    let mut server = TestServer::start(Tweaks {
        spool_dir: Some(spool.clone()),
        ..Tweaks::default()
            .spool("segment_size", 1 << 20)
            .spool("preallocate_chunk", 64 << 10)
            .smtp("max_message_size", 1 << 20)
    });
    // Leave about 1.5 MiB free.
    let filler = mnt.join("filler");
    let fill = available(&mnt).saturating_sub(3 << 19);
    std::fs::write(&filler, vec![0x55u8; fill as usize]).expect("filler");

    let mut c: Client = server.session();
    let mut acked = Vec::new();
    let mut refused = None;
    for i in 0..60 {
        let msg = common::message(&format!("fill-{i}"), 100 << 10);
        match c.send_message(
            &format!("fill{i}@example.test"),
            &["rcpt@example.test"],
            &msg,
        ) {
            Ok(id) => acked.push(id),
            Err(r) => {
                refused = Some(r);
                break;
            }
        }
    }
    let refused = refused
        .unwrap_or_else(|| panic!("60 messages of 100 KiB fit into 1.5 MiB?\n{}", c.transcript));
    assert_eq!(refused.status(), "452 4.3.1", "{}", c.transcript);
    // Nothing beyond the acknowledged messages is listed.
    let q = server.queue_list();
    let mut listed: Vec<_> = q.iter().map(|m| m.id.clone()).collect();
    listed.sort();
    let mut want = acked.clone();
    want.sort();
    assert_eq!(listed, want, "queue after disk full");
    // The session is still usable.
    assert_eq!(c.cmd("NOOP").code, 250, "{}", c.transcript);

    // Free the space: mail flows again, on the same connection.
    std::fs::remove_file(&filler).expect("remove filler");
    let msg = common::message("after-space-freed", 100 << 10);
    let id = c
        .send_message("after@example.test", &["rcpt@example.test"], &msg)
        .unwrap_or_else(|r| {
            panic!(
                "not accepted after space was freed: {r:?}\n{}",
                c.transcript
            )
        });
    c.quit();
    acked.push(id);
    let down = server.terminate();
    assert!(down.status.success(), "{:?}", down.status);
    server.restart();
    let mut listed: Vec<_> = server.queue_list().into_iter().map(|m| m.id).collect();
    listed.sort();
    acked.sort();
    assert_eq!(listed, acked, "queue after restart");
    server.terminate();
}
