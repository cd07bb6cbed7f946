//! A panic on a shard ends the process with status 70 within seconds,
//! instead of leaving a server that is up but serves nothing; the shipped
//! systemd unit restarts a process that exits so, and the restarted server
//! recovers every acknowledged message from the spool. The panic is raised
//! by the crash drill `spate debug panic SHARD`, a fault-injection request
//! over the control socket (no test-only branch in the protocol code).

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{TestServer, Tweaks};

/// The exit status of a process whose shard panicked (`crash`).
const PANIC_EXIT_STATUS: i32 = 70;
/// How soon after the panic the process must be gone.
const EXIT_WITHIN: Duration = Duration::from_secs(5);

#[test]
fn a_shard_panic_ends_the_process_and_a_restart_recovers_the_mail() {
    let mut server = TestServer::start(Tweaks::default().cores(2));
    // Acknowledged and kept in the queue (the local domain has no mailbox
    // tier), so the restart has something to recover.
    let id = server.accept_one("before-panic");

    let asked = Instant::now();
    let drill = server.spate_command(&["debug", "panic", "1"]);
    assert!(
        String::from_utf8_lossy(&drill.stdout).contains("shard 1 panicked"),
        "{drill:?}"
    );
    let down = server.wait_exit(EXIT_WITHIN);
    assert_eq!(
        down.status.code(),
        Some(PANIC_EXIT_STATUS),
        "{:?}\nstderr:\n{}",
        down.status,
        server.stderr_text()
    );
    assert!(asked.elapsed() < EXIT_WITHIN);
    let log = server.stderr_text();
    assert!(log.contains("a shard panicked"), "{log}");
    assert!(log.contains("spate debug panic"), "{log}");

    server.restart();
    let listed: Vec<String> = server.queue_list().into_iter().map(|m| m.id).collect();
    assert_eq!(listed, vec![id], "acknowledged mail after the crash");
    server.accept_one("after-restart");
}

#[test]
fn a_panic_of_a_shard_that_does_not_exist_is_refused() {
    let mut server = TestServer::start(Tweaks::default().cores(2));
    let out = run_spate(&server, &["debug", "panic", "2"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no shard 2"), "{stderr}");
    assert!(server.is_running());
    server.accept_one("still-serving");
}

fn run_spate(server: &TestServer, args: &[&str]) -> std::process::Output {
    let mut cmd = std::process::Command::new(common::SPATE);
    cmd.args(args).arg("--config").arg(&server.config_path);
    common::run_with_timeout(cmd, common::COMMAND_TIMEOUT)
}

#[test]
fn the_unit_restarts_a_process_that_exits_after_a_panic() {
    let unit = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd/spate.service"),
    )
    .unwrap();
    let values = |key: &str| -> Vec<String> {
        unit.lines()
            .filter_map(|l| l.trim().strip_prefix(key)?.strip_prefix('='))
            .map(str::to_owned)
            .collect()
    };
    // on-failure and always restart on a non-zero exit status;
    // on-abnormal and on-abort do not.
    let restart = values("Restart");
    assert!(
        matches!(restart.as_slice(), [r] if r == "on-failure" || r == "always"),
        "Restart={restart:?}"
    );
    for key in ["SuccessExitStatus", "RestartPreventExitStatus"] {
        for value in values(key) {
            assert!(
                !value.split_whitespace().any(|s| s == "70"),
                "{key}={value} would keep a panicked spate down"
            );
        }
    }
}
