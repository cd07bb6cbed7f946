//! `spate tune check` on this machine and on fake /proc and /sys trees,
//! and tuning/spread-irqs.sh: shellcheck-clean, and on a fake tree it
//! spreads only an interface's queue IRQs over the CPUs given.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{run_with_timeout, COMMAND_TIMEOUT, SPATE};

const LABELS: [&str; 4] = ["ok", "differs", "unknown", "info"];

fn kit(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tuning")
        .join(path)
}

/// A config whose spool directory is inside `dir`.
fn config_in(dir: &Path) -> PathBuf {
    let path = dir.join("spate.toml");
    std::fs::write(
        &path,
        format!(
            "spool_dir = {:?}\n[[listener]]\naddress = \"127.0.0.1:0\"\nprotocol = \"smtp\"\n\
             [dns]\nnameservers = [\"127.0.0.1:1\"]\n",
            dir.join("spool").display().to_string()
        ),
    )
    .unwrap();
    path
}

fn tune_check(args: &[&str]) -> Output {
    let mut cmd = Command::new(SPATE);
    cmd.args(["tune", "check"]).args(args);
    run_with_timeout(cmd, COMMAND_TIMEOUT)
}

fn text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The report's setting lines: (label, rest of the line).
fn lines(report: &str) -> Vec<(&str, &str)> {
    report
        .lines()
        .filter_map(|l| {
            let (label, rest) = l.split_once(' ')?;
            LABELS.contains(&label).then(|| (label, rest.trim_start()))
        })
        .collect()
}

fn sysctl_keys() -> Vec<String> {
    std::fs::read_to_string(kit("sysctl.d/99-spate.conf"))
        .unwrap()
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| Some(l.split_once('=')?.0.trim().to_owned()))
        .collect()
}

#[test]
fn tune_check_on_this_machine_prints_a_readable_report() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_in(dir.path());
    let out = tune_check(&["--config", config.to_str().unwrap()]);
    let report = text(&out);
    assert!(
        out.status.success(),
        "exit {:?} without --strict:\n{report}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{report}");
    assert!(report.starts_with("spate tune check: the system below /\n"));
    let settings = lines(&report);
    // Every line is a labelled setting, a `why:`/`note:` continuation or
    // the header and summary.
    for line in report.lines().skip(1) {
        let known = LABELS.iter().any(|l| line.starts_with(&format!("{l} ")))
            || line.starts_with("         why: ")
            || line.starts_with("         note: ")
            || line.starts_with("summary: ");
        assert!(known, "unexpected line {line:?}");
    }
    let summary = report.lines().last().unwrap();
    let count = |label| settings.iter().filter(|(l, _)| *l == label).count();
    assert_eq!(
        summary,
        format!(
            "summary: {} ok, {} differ, {} unknown, {} info (see tuning/README.md)",
            count("ok"),
            count("differs"),
            count("unknown"),
            count("info")
        )
    );
    for key in sysctl_keys() {
        let found = settings
            .iter()
            .filter(|(_, rest)| rest.starts_with(&format!("{key}: ")))
            .count();
        assert_eq!(found, 1, "{key} reported once");
    }
    // It reads the real system: somaxconn as /proc says.
    if let Ok(value) = std::fs::read_to_string("/proc/sys/net/core/somaxconn") {
        let expected = format!("net.core.somaxconn: {}", value.trim());
        assert!(
            settings.iter().any(|(_, rest)| rest.starts_with(&expected)),
            "{expected} in\n{report}"
        );
    }
    // And the limits it inherited from this test.
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit with a valid resource and pointer.
    assert_eq!(
        unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) },
        0
    );
    let shown = if limit.rlim_cur == libc::RLIM_INFINITY {
        "unlimited".to_owned()
    } else {
        limit.rlim_cur.to_string()
    };
    assert!(
        settings
            .iter()
            .any(|(_, rest)| rest.starts_with(&format!("RLIMIT_NOFILE: {shown}"))),
        "RLIMIT_NOFILE {shown} in\n{report}"
    );
    assert!(
        settings
            .iter()
            .any(|(_, rest)| rest.starts_with("spool filesystem (")),
        "{report}"
    );
}

#[test]
fn strict_fails_only_when_something_differs_on_a_fake_host() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_in(dir.path());
    let root = dir.path().join("root");
    let write = |path: &str, value: &str| {
        let full = root.join(path);
        std::fs::create_dir_all(full.parent().unwrap()).unwrap();
        std::fs::write(full, value).unwrap();
    };
    write("proc/sys/net/ipv4/tcp_tw_reuse", "2\n");
    write("proc/sys/net/core/somaxconn", "65535\n");
    let args = |strict: bool| {
        let mut a = vec![
            "--config".to_owned(),
            config.display().to_string(),
            "--root".to_owned(),
            root.display().to_string(),
        ];
        if strict {
            a.push("--strict".into());
        }
        a
    };
    let run = |strict| {
        let a = args(strict);
        tune_check(&a.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let relaxed = run(false);
    let report = text(&relaxed);
    assert!(relaxed.status.success(), "{report}");
    assert!(
        report.contains("\ndiffers  net.ipv4.tcp_tw_reuse: 2 -> 1\n         why: Reuse TIME_WAIT")
    );
    assert!(report.contains("\nok       net.core.somaxconn: 65535 (recommended: at least 4096)\n"));
    assert!(report.contains("\nunknown  fs.nr_open: not readable"));
    let strict = run(true);
    assert_eq!(strict.status.code(), Some(1), "{}", text(&strict));
    assert!(String::from_utf8_lossy(&strict.stderr).contains("differ from the recommendations"));

    // Fixed: what still differs comes from outside the fake tree (this
    // process's resource limits, which --root does not replace), and
    // --strict fails exactly when something does.
    write("proc/sys/net/ipv4/tcp_tw_reuse", "1\n");
    let strict = run(true);
    let report = text(&strict);
    let differing: Vec<&str> = lines(&report)
        .into_iter()
        .filter(|(label, _)| *label == "differs")
        .map(|(_, rest)| rest)
        .collect();
    assert!(
        differing.iter().all(|l| l.starts_with("RLIMIT_")),
        "only limits differ: {differing:?}"
    );
    assert_eq!(strict.status.success(), differing.is_empty(), "{report}");
}

#[test]
fn spread_irqs_is_shellcheck_clean() {
    let mut cmd = Command::new("shellcheck");
    cmd.arg(kit("spread-irqs.sh"));
    let out = run_with_timeout(cmd, COMMAND_TIMEOUT);
    assert!(
        out.status.success(),
        "shellcheck:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// A fake host with 4 CPUs and a NIC `eth9` whose MSI-X vectors are a
/// misc vector (70) and four queues (71-74); 80 belongs to another device.
fn fake_nic_host() -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    let p = root.path();
    for cpu in 0..4 {
        std::fs::create_dir_all(p.join(format!("sys/devices/system/cpu/cpu{cpu}"))).unwrap();
    }
    let msi = p.join("sys/class/net/eth9/device/msi_irqs");
    std::fs::create_dir_all(&msi).unwrap();
    for irq in 70..75 {
        std::fs::write(msi.join(irq.to_string()), "msix\n").unwrap();
    }
    std::fs::create_dir_all(p.join("proc")).unwrap();
    std::fs::write(
        p.join("proc/interrupts"),
        "           CPU0       CPU1       CPU2       CPU3\n\
         \x2070:  1 0 0 0  PCI-MSIX-0000:01:00.0  0-edge  i40e-0000:01:00.0:misc\n\
         \x2071:  1 0 0 0  PCI-MSIX-0000:01:00.0  1-edge  i40e-eth9-TxRx-0\n\
         \x2072:  1 0 0 0  PCI-MSIX-0000:01:00.0  2-edge  i40e-eth9-TxRx-1\n\
         \x2073:  1 0 0 0  PCI-MSIX-0000:01:00.0  3-edge  i40e-eth9-TxRx-2\n\
         \x2074:  1 0 0 0  PCI-MSIX-0000:01:00.0  4-edge  i40e-eth9-TxRx-3\n\
         \x2080:  1 0 0 0  PCI-MSIX-0000:02:00.0  0-edge  nvme0q1\n",
    )
    .unwrap();
    for irq in [70, 71, 72, 73, 74, 80] {
        let dir = p.join(format!("proc/irq/{irq}"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("smp_affinity_list"), "0-3\n").unwrap();
    }
    root
}

fn spread(root: &Path, args: &[&str]) -> Output {
    let mut cmd = Command::new("bash");
    cmd.arg(kit("spread-irqs.sh"))
        .args(args)
        .env("SPREAD_IRQS_ROOT", root);
    run_with_timeout(cmd, COMMAND_TIMEOUT)
}

fn affinity(root: &Path, irq: u32) -> String {
    std::fs::read_to_string(root.join(format!("proc/irq/{irq}/smp_affinity_list")))
        .unwrap()
        .trim()
        .to_owned()
}

#[test]
fn spread_irqs_places_queue_irqs_round_robin_on_a_fake_tree() {
    let host = fake_nic_host();
    let root = host.path();

    let dry = spread(root, &["--dry-run", "eth9", "2-3"]);
    let said = String::from_utf8_lossy(&dry.stdout);
    assert!(
        dry.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&dry.stderr)
    );
    assert!(
        said.contains("irq 71 (i40e-eth9-TxRx-0) -> cpu 2\n"),
        "{said}"
    );
    assert!(
        said.contains("irq 74 (i40e-eth9-TxRx-3) -> cpu 3\n"),
        "{said}"
    );
    assert!(!said.contains("irq 70"), "the misc vector stays: {said}");
    assert!(said.contains("dry run: nothing written"));
    assert_eq!(affinity(root, 71), "0-3", "dry run writes nothing");

    let real = spread(root, &["eth9", "1,3"]);
    assert!(
        real.status.success(),
        "{}",
        String::from_utf8_lossy(&real.stderr)
    );
    let placed: Vec<String> = (71..75).map(|irq| affinity(root, irq)).collect();
    assert_eq!(placed, ["1", "3", "1", "3"]);
    assert_eq!(affinity(root, 70), "0-3");
    assert_eq!(affinity(root, 80), "0-3");

    for bad in [
        vec!["eth9", "0-9"],
        vec!["eth9", "3-1"],
        vec!["eth9", "a"],
        vec!["nope0", "0"],
        vec!["eth9"],
    ] {
        let out = spread(root, &bad);
        assert!(!out.status.success(), "{bad:?} accepted");
        assert!(!out.stderr.is_empty(), "{bad:?} says why");
    }
}
