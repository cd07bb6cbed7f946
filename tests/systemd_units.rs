//! The files under systemd/ checked by systemd's own tools: the unit
//! passes `systemd-analyze verify` (with ExecStart pointed at the binary
//! under test, which verify requires to exist) and keeps a low
//! `systemd-analyze security` exposure; the sysusers.d and tmpfiles.d
//! files create the user and the directories in a scratch root; and the
//! three files agree on the user and the writable paths.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{run_with_timeout, COMMAND_TIMEOUT, SPATE};

/// Where the unit expects the binary once installed.
const INSTALLED_BINARY: &str = "/usr/local/bin/spate";
/// The highest `systemd-analyze security` exposure accepted (0 best, 10
/// worst); the unit scores 1.5 on systemd 252.
const MAX_EXPOSURE: f64 = 2.0;

fn systemd_file(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("systemd")
        .join(name)
}

fn read(name: &str) -> String {
    std::fs::read_to_string(systemd_file(name)).expect("read systemd file")
}

fn run(program: &str, args: &[&str]) -> Output {
    let mut cmd = Command::new(program);
    cmd.args(args);
    run_with_timeout(cmd, COMMAND_TIMEOUT)
}

/// The unit as shipped, with the binary path replaced by the one built
/// for this test run (nothing else changes), in its own directory.
fn unit_copy(text: &str) -> (tempfile::TempDir, PathBuf) {
    assert!(
        text.contains(INSTALLED_BINARY),
        "the unit runs {INSTALLED_BINARY}"
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("spate.service");
    std::fs::write(&path, text.replace(INSTALLED_BINARY, SPATE)).unwrap();
    (dir, path)
}

fn verify(path: &Path) -> Output {
    run("systemd-analyze", &["verify", path.to_str().unwrap()])
}

/// `key=value` settings of the unit, in order.
fn settings<'a>(unit: &'a str, key: &str) -> Vec<&'a str> {
    unit.lines()
        .filter_map(|l| l.strip_prefix(key)?.strip_prefix('='))
        .collect()
}

#[test]
fn systemd_analyze_verify_accepts_the_unit() {
    let (_dir, path) = unit_copy(&read("spate.service"));
    let out = verify(&path);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "verify failed:\n{stdout}\n{stderr}");
    assert!(
        stderr.trim().is_empty() && stdout.trim().is_empty(),
        "verify complained:\n{stdout}\n{stderr}"
    );
}

#[test]
fn systemd_analyze_verify_would_catch_a_mistake() {
    // The same check on a broken copy must complain, or the test above
    // proves nothing.
    let broken = read("spate.service").replace("NoNewPrivileges=yes", "NoNewPrivilege=yes");
    let (_dir, path) = unit_copy(&broken);
    let out = verify(&path);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("NoNewPrivilege"), "no complaint: {stderr}");
}

#[test]
fn the_unit_is_hardened() {
    let unit = read("spate.service");
    for (key, value) in [
        ("Type", "notify"),
        ("NotifyAccess", "main"),
        ("ExecReload", "/bin/kill -HUP $MAINPID"),
        ("ProtectSystem", "strict"),
        ("NoNewPrivileges", "yes"),
        ("PrivateTmp", "yes"),
        ("MemoryDenyWriteExecute", "yes"),
        ("AmbientCapabilities", "CAP_NET_BIND_SERVICE"),
        ("LimitNOFILE", "1048576"),
    ] {
        assert_eq!(settings(&unit, key), vec![value], "{key}");
    }
    let (_dir, path) = unit_copy(&unit);
    let out = run(
        "systemd-analyze",
        &[
            "security",
            "--offline=yes",
            "--no-pager",
            path.to_str().unwrap(),
        ],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let exposure: f64 = text
        .lines()
        .find_map(|l| {
            let rest = l
                .split("Overall exposure level for spate.service:")
                .nth(1)?;
            rest.split_whitespace().next()?.parse().ok()
        })
        .unwrap_or_else(|| {
            panic!(
                "no exposure level in:\n{text}\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    assert!(exposure <= MAX_EXPOSURE, "exposure {exposure}:\n{text}");
    // io_uring must stay allowed by the system call filter.
    let filter = settings(&unit, "SystemCallFilter").join(" ");
    for call in ["io_uring_setup", "io_uring_enter", "io_uring_register"] {
        assert!(filter.contains(call), "{call} in {filter}");
    }
}

#[test]
fn sysusers_and_tmpfiles_create_the_user_and_directories() {
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir(root.path().join("etc")).unwrap();
    let root_arg = format!("--root={}", root.path().display());
    let sysusers = systemd_file("spate.sysusers");
    let out = run("systemd-sysusers", &[&root_arg, sysusers.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "systemd-sysusers: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let passwd = std::fs::read_to_string(root.path().join("etc/passwd")).unwrap();
    let line = passwd
        .lines()
        .find(|l| l.starts_with("spate:"))
        .unwrap_or_else(|| panic!("no spate user in {passwd}"));
    let fields: Vec<&str> = line.split(':').collect();
    assert_eq!(fields[5], "/var/spool/spate");
    assert_eq!(fields[6], "/usr/sbin/nologin");
    let uid: u32 = fields[2].parse().unwrap();
    assert!(uid > 0 && uid < 1000, "a system user: {uid}");

    let tmpfiles = systemd_file("spate.tmpfiles");
    let out = run(
        "systemd-tmpfiles",
        &[&root_arg, "--create", tmpfiles.to_str().unwrap()],
    );
    assert!(
        out.status.success(),
        "systemd-tmpfiles: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    use std::os::unix::fs::MetadataExt;
    // The spool is spate's alone (spate keeps it 0700 itself: a
    // different mode here would flip at every boot).
    for (dir, mode) in [("var/spool/spate", 0o700), ("var/mail/spate", 0o750)] {
        let meta = std::fs::metadata(root.path().join(dir)).unwrap();
        assert!(meta.is_dir(), "{dir}");
        assert_eq!(meta.uid(), uid, "{dir} owned by spate");
        assert_eq!(meta.mode() & 0o7777, mode, "{dir} mode");
    }
    let etc = std::fs::metadata(root.path().join("etc/spate")).unwrap();
    assert_eq!(etc.uid(), 0, "/etc/spate stays root's");
}

#[test]
fn the_three_files_agree_on_user_and_paths() {
    let unit = read("spate.service");
    let tmpfiles = read("spate.tmpfiles");
    let sysusers = read("spate.sysusers");
    let user = settings(&unit, "User");
    assert_eq!(user, vec!["spate"]);
    assert!(sysusers
        .lines()
        .any(|l| l.split_whitespace().take(2).eq(["u", "spate"])));
    for path in settings(&unit, "ReadWritePaths")
        .iter()
        .flat_map(|v| v.split_whitespace())
    {
        let created = tmpfiles.lines().any(|l| {
            let words: Vec<&str> = l.split_whitespace().collect();
            words.len() >= 4 && words[0] == "d" && words[1] == path && words[3] == "spate"
        });
        assert!(created, "tmpfiles creates {path} for spate");
    }
}
