//! The checks of `spate tune check` beyond kernel settings: resource
//! limits, CPU frequency governor and idle states, CPU isolation, the
//! spool's filesystem, mount options and disk scheduler, and whether
//! irqbalance runs. Each reads files below the target's root and answers
//! `Unknown` when a file is absent; none changes anything.

use std::collections::BTreeSet;
use std::path::{Component, Path, PathBuf};

use super::{Finding, Status, Target};

/// Open files the service should be allowed (the unit's LimitNOFILE).
pub const RECOMMENDED_NOFILE: u64 = 1 << 20;
/// Locked memory for glommio's io_uring buffers (the unit's LimitMEMLOCK).
pub const RECOMMENDED_MEMLOCK: u64 = 64 << 20;

/// Resource limits to judge; `u64::MAX` means unlimited, `None` unknown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub nofile: Option<u64>,
    pub memlock: Option<u64>,
}

impl Limits {
    /// The soft limits of this process (a shell's `ulimit`; the service
    /// gets the unit's instead).
    pub fn of_this_process() -> Limits {
        let soft = |resource| {
            let mut limit = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            // getrlimit with a valid resource and a valid pointer.
            let rc = unsafe { libc::getrlimit(resource, &mut limit) };
            (rc == 0).then_some(if limit.rlim_cur == libc::RLIM_INFINITY {
                u64::MAX
            } else {
                limit.rlim_cur
            })
        };
        Limits {
            nofile: soft(libc::RLIMIT_NOFILE),
            memlock: soft(libc::RLIMIT_MEMLOCK),
        }
    }
}

/// Every check of this module, in report order.
pub fn check(target: &Target) -> Vec<Finding> {
    let mut findings = vec![
        limit(
            "RLIMIT_NOFILE",
            target.limits.nofile,
            RECOMMENDED_NOFILE,
            "one descriptor per connection plus spool segments (the unit sets LimitNOFILE=1048576; this is the limit of the shell running the check)",
        ),
        limit(
            "RLIMIT_MEMLOCK",
            target.limits.memlock,
            RECOMMENDED_MEMLOCK,
            "glommio locks memory per core for io_uring (the unit sets LimitMEMLOCK=64M; this is the limit of the shell running the check)",
        ),
        governor(&target.root),
        idle_states(&target.root),
        isolation(&target.root),
        irqbalance(&target.root),
    ];
    findings.extend(spool_disk(&target.root, &target.spool_dir));
    findings
}

fn show_limit(value: u64) -> String {
    if value == u64::MAX {
        "unlimited".into()
    } else {
        value.to_string()
    }
}

fn limit(name: &str, current: Option<u64>, recommended: u64, why: &str) -> Finding {
    let (status, current) = match current {
        None => (Status::Unknown, "not readable".to_owned()),
        Some(value) if value >= recommended => (Status::Ok, show_limit(value)),
        Some(value) => (Status::Differs, show_limit(value)),
    };
    Finding {
        setting: name.into(),
        status,
        current,
        recommended: format!("at least {recommended}"),
        why: why.into(),
    }
}

/// The numbered `cpuN` directories below `root/sys/devices/system/cpu`.
fn cpu_dirs(root: &Path) -> Vec<(usize, PathBuf)> {
    let Ok(entries) = std::fs::read_dir(root.join("sys/devices/system/cpu")) else {
        return Vec::new();
    };
    let mut cpus: Vec<(usize, PathBuf)> = entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let n = e.file_name().to_str()?.strip_prefix("cpu")?.parse().ok()?;
            Some((n, e.path()))
        })
        .collect();
    cpus.sort();
    cpus
}

fn read_trimmed(path: &Path) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_owned())
}

fn governor(root: &Path) -> Finding {
    let governors: BTreeSet<String> = cpu_dirs(root)
        .iter()
        .filter_map(|(_, dir)| read_trimmed(&dir.join("cpufreq/scaling_governor")))
        .collect();
    let why = "the performance governor keeps cores at full clock: latency of a short SMTP exchange suffers from frequency ramp-up";
    let (status, current) = if governors.is_empty() {
        (
            Status::Unknown,
            "no cpufreq governor exposed (a VM or no cpufreq driver)".to_owned(),
        )
    } else if governors.iter().all(|g| g == "performance") {
        (Status::Ok, "performance".to_owned())
    } else {
        (
            Status::Differs,
            governors.into_iter().collect::<Vec<_>>().join(", "),
        )
    };
    Finding {
        setting: "cpu frequency governor".into(),
        status,
        current,
        recommended: "performance".into(),
        why: why.into(),
    }
}

fn idle_states(root: &Path) -> Finding {
    let cpu = root.join("sys/devices/system/cpu");
    let driver = read_trimmed(&cpu.join("cpuidle/current_driver"));
    let states: Vec<String> = (0..16)
        .map_while(|n| read_trimmed(&cpu.join(format!("cpu0/cpuidle/state{n}/name"))))
        .collect();
    let (status, current) = match (driver, states.last()) {
        (None, None) => (Status::Unknown, "no cpuidle information".to_owned()),
        (driver, deepest) => (
            Status::Info,
            format!(
                "driver {}, deepest state {}",
                driver.as_deref().unwrap_or("unknown"),
                deepest.map_or("unknown", String::as_str)
            ),
        ),
    };
    Finding {
        setting: "cpu idle states".into(),
        status,
        current,
        recommended: String::new(),
        why: "deep C-states add wake-up latency; limit them for the lowest latency (tuning/README.md)".into(),
    }
}

fn isolation(root: &Path) -> Finding {
    let Some(cmdline) = read_trimmed(&root.join("proc/cmdline")) else {
        return Finding {
            setting: "cpu isolation".into(),
            status: Status::Unknown,
            current: "/proc/cmdline not readable".into(),
            recommended: String::new(),
            why: "optional: isolcpus, nohz_full and irqaffinity kernel arguments".into(),
        };
    };
    let args: Vec<&str> = cmdline
        .split_whitespace()
        .filter(|a| {
            ["isolcpus=", "nohz_full=", "irqaffinity=", "rcu_nocbs="]
                .iter()
                .any(|p| a.starts_with(p))
        })
        .collect();
    Finding {
        setting: "cpu isolation".into(),
        status: Status::Info,
        current: if args.is_empty() {
            "no isolcpus/nohz_full/irqaffinity kernel arguments".into()
        } else {
            args.join(" ")
        },
        recommended: String::new(),
        why: "optional: dedicate cores to spate and keep other work and IRQs off them (tuning/README.md)".into(),
    }
}

fn irqbalance(root: &Path) -> Finding {
    let running = std::fs::read_dir(root.join("proc"))
        .map(|entries| {
            entries.filter_map(Result::ok).any(|e| {
                e.file_name()
                    .to_str()
                    .is_some_and(|n| n.parse::<u32>().is_ok())
                    && read_trimmed(&e.path().join("comm")).as_deref() == Some("irqbalance")
            })
        })
        .unwrap_or(false);
    Finding {
        setting: "irqbalance".into(),
        status: Status::Info,
        current: if running { "running" } else { "not running" }.into(),
        recommended: String::new(),
        why: if running {
            "it moves IRQs back: stop it, or ban spate's cores (IRQBALANCE_BANNED_CPULIST), before tuning/spread-irqs.sh"
        } else {
            "tuning/spread-irqs.sh placements stay as written"
        }
        .into(),
    }
}

/// One line of `/proc/self/mounts`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub source: String,
    pub point: PathBuf,
    pub fstype: String,
    pub options: Vec<String>,
}

/// Undoes the octal escapes of the mounts file (`\040` is a space).
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4).and_then(|d| {
            let text = std::str::from_utf8(d).ok()?;
            u8::from_str_radix(text, 8).ok()
        });
        match (bytes[i], octal) {
            (b'\\', Some(byte)) => {
                out.push(byte);
                i += 4;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses the mounts file; malformed lines are skipped.
pub fn parse_mounts(text: &str) -> Vec<Mount> {
    text.lines()
        .filter_map(|line| {
            let mut f = line.split_whitespace();
            Some(Mount {
                source: unescape(f.next()?),
                point: PathBuf::from(unescape(f.next()?)),
                fstype: f.next()?.to_owned(),
                options: f.next()?.split(',').map(str::to_owned).collect(),
            })
        })
        .collect()
}

/// The mount holding `path` (absolute): the last-mounted entry with the
/// longest mount point that is a prefix of it.
pub fn mount_of<'a>(mounts: &'a [Mount], path: &Path) -> Option<&'a Mount> {
    mounts
        .iter()
        .enumerate()
        .filter(|(_, m)| path.starts_with(&m.point))
        .max_by_key(|(i, m)| (m.point.components().count(), *i))
        .map(|(_, m)| m)
}

/// `path` with symbolic links below `root` resolved, as far as it
/// exists (the spool may not be created yet), as a path from `root`.
fn resolve(root: &Path, path: &Path) -> PathBuf {
    let relative: PathBuf = path
        .components()
        .filter(|c| matches!(c, Component::Normal(_)))
        .collect();
    let mut existing = root.join(&relative);
    let mut rest = Vec::new();
    while !existing.exists() {
        match (
            existing.file_name().map(ToOwned::to_owned),
            existing.parent(),
        ) {
            (Some(name), Some(parent)) => {
                rest.push(name);
                existing = parent.to_path_buf();
            }
            _ => break,
        }
    }
    let canonical_root = root.canonicalize().unwrap_or_else(|_| root.to_path_buf());
    let resolved = existing
        .canonicalize()
        .ok()
        .and_then(|p| p.strip_prefix(&canonical_root).ok().map(Path::to_path_buf))
        .unwrap_or(relative);
    let mut full = PathBuf::from("/").join(resolved);
    full.extend(rest.iter().rev());
    full
}

fn spool_disk(root: &Path, spool_dir: &Path) -> Vec<Finding> {
    let setting = |what: &str| format!("spool {what} ({})", spool_dir.display());
    let mounts = std::fs::read_to_string(root.join("proc/self/mounts"))
        .map(|t| parse_mounts(&t))
        .unwrap_or_default();
    let Some(mount) = mount_of(&mounts, &resolve(root, spool_dir)) else {
        return vec![Finding {
            setting: setting("filesystem"),
            status: Status::Unknown,
            current: "no mount found (/proc/self/mounts not readable)".into(),
            recommended: "ext4 or xfs".into(),
            why: String::new(),
        }];
    };
    let fs_ok = matches!(mount.fstype.as_str(), "ext4" | "xfs");
    let mut findings = vec![Finding {
        setting: setting("filesystem"),
        status: if fs_ok { Status::Ok } else { Status::Differs },
        current: format!("{} on {}", mount.fstype, mount.point.display()),
        recommended: "ext4 or xfs on a local disk".into(),
        why: match mount.fstype.as_str() {
            "tmpfs" | "ramfs" => "the spool must survive a reboot: a memory filesystem loses acknowledged mail",
            "overlay" => "an overlay (container) filesystem adds a copy-up layer and may not honour fdatasync promptly",
            "nfs" | "nfs4" | "cifs" | "fuse" => "a network filesystem makes every fdatasync a round trip",
            _ => "ext4 and XFS are the filesystems whose fdatasync behaviour spate is measured on",
        }
        .into(),
    }];
    let has = |option: &str| mount.options.iter().any(|o| o == option);
    let barrier_off = has("nobarrier") || has("barrier=0");
    let atime = if has("noatime") {
        "noatime"
    } else if has("relatime") {
        "relatime"
    } else {
        "atime"
    };
    findings.push(Finding {
        setting: setting("mount options"),
        status: if has("noatime") && !barrier_off {
            Status::Ok
        } else {
            Status::Differs
        },
        current: format!(
            "{atime}{}",
            if barrier_off { ", barriers OFF" } else { "" }
        ),
        recommended: "noatime, barriers on (never nobarrier)".into(),
        why: if barrier_off {
            "without barriers fdatasync does not make data durable: spate would acknowledge mail it can lose"
        } else {
            "noatime saves a metadata write for every read of a spool segment or mailbox file"
        }
        .into(),
    });
    findings.push(scheduler(root, &mount.source, &setting("disk scheduler")));
    findings
}

/// The block device directory in sysfs for a mount source (`/dev/sda1`,
/// `/dev/mapper/x`): its queue is the disk's, a partition's is its
/// parent's.
fn queue_dir(root: &Path, source: &str) -> Option<PathBuf> {
    let device = source.strip_prefix("/dev/")?;
    // /dev/mapper/x and /dev/disk/by-... are links to the kernel name.
    let dev_path = root.join("dev").join(device);
    let name = std::fs::canonicalize(&dev_path)
        .ok()
        .and_then(|p| p.file_name()?.to_str().map(str::to_owned))
        .unwrap_or_else(|| device.rsplit('/').next().unwrap_or(device).to_owned());
    let class = root.join("sys/class/block").join(&name);
    if class.join("queue").is_dir() {
        return Some(class.join("queue"));
    }
    // A partition: its directory sits inside the whole disk's.
    let parent = std::fs::canonicalize(&class).ok()?.parent()?.join("queue");
    parent.is_dir().then_some(parent)
}

fn scheduler(root: &Path, source: &str, setting: &str) -> Finding {
    let Some(queue) = queue_dir(root, source) else {
        return Finding {
            setting: setting.into(),
            status: Status::Unknown,
            current: format!("{source} is not a block device found in /sys/class/block"),
            recommended: "none or mq-deadline (SSD/NVMe), mq-deadline (spinning)".into(),
            why: "the spool's device could not be found".into(),
        };
    };
    let text = read_trimmed(&queue.join("scheduler")).unwrap_or_default();
    let current = text
        .split_whitespace()
        .find_map(|w| w.strip_prefix('[')?.strip_suffix(']'))
        .unwrap_or(text.as_str())
        .to_owned();
    let rotational = read_trimmed(&queue.join("rotational")).as_deref() == Some("1");
    let (accepted, recommended): (&[&str], &str) = if rotational {
        (&["mq-deadline", "bfq"], "mq-deadline (spinning disk)")
    } else {
        (&["none", "mq-deadline"], "none or mq-deadline (SSD/NVMe)")
    };
    Finding {
        setting: setting.into(),
        status: if current.is_empty() {
            Status::Unknown
        } else if accepted.contains(&current.as_str()) {
            Status::Ok
        } else {
            Status::Differs
        },
        current: format!("{current} ({source})"),
        recommended: recommended.into(),
        why: "fast disks need no reordering (none); a fair-queueing scheduler delays the spool's fdatasync behind other I/O".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake host: files written below a temporary root.
    struct FakeRoot(tempfile::TempDir);

    impl FakeRoot {
        fn new() -> FakeRoot {
            FakeRoot(tempfile::tempdir().unwrap())
        }
        fn write(&self, path: &str, text: &str) -> &Self {
            let full = self.0.path().join(path);
            std::fs::create_dir_all(full.parent().unwrap()).unwrap();
            std::fs::write(full, text).unwrap();
            self
        }
        fn target(&self, limits: Limits) -> Target {
            Target {
                root: self.0.path().to_path_buf(),
                spool_dir: PathBuf::from("/var/spool/spate"),
                limits,
            }
        }
    }

    fn find<'a>(findings: &'a [Finding], prefix: &str) -> &'a Finding {
        findings
            .iter()
            .find(|f| f.setting.starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix} in {findings:#?}"))
    }

    #[test]
    fn a_tuned_fake_host_is_all_ok() {
        let root = FakeRoot::new();
        root.write("sys/devices/system/cpu/cpu0/cpufreq/scaling_governor", "performance\n")
            .write("sys/devices/system/cpu/cpu1/cpufreq/scaling_governor", "performance\n")
            .write("sys/devices/system/cpu/cpuidle/current_driver", "intel_idle\n")
            .write("sys/devices/system/cpu/cpu0/cpuidle/state0/name", "POLL\n")
            .write("sys/devices/system/cpu/cpu0/cpuidle/state1/name", "C1E\n")
            .write("proc/cmdline", "root=/dev/nvme0n1p2 isolcpus=2-7 nohz_full=2-7\n")
            .write(
                "proc/self/mounts",
                "/dev/nvme0n1p2 / ext4 rw,relatime 0 0\n/dev/nvme1n1 /var/spool xfs rw,noatime,attr2 0 0\n",
            )
            .write("sys/class/block/nvme1n1/queue/scheduler", "[none] mq-deadline kyber\n")
            .write("sys/class/block/nvme1n1/queue/rotational", "0\n");
        let findings = check(&root.target(Limits {
            nofile: Some(1 << 20),
            memlock: Some(u64::MAX),
        }));
        for f in &findings {
            assert!(
                matches!(f.status, Status::Ok | Status::Info),
                "{f}\n{findings:#?}"
            );
        }
        assert_eq!(
            find(&findings, "cpu isolation").current,
            "isolcpus=2-7 nohz_full=2-7"
        );
        assert_eq!(
            find(&findings, "spool filesystem").current,
            "xfs on /var/spool"
        );
        assert_eq!(
            find(&findings, "spool disk scheduler").current,
            "none (/dev/nvme1n1)"
        );
        assert_eq!(find(&findings, "RLIMIT_MEMLOCK").current, "unlimited");
        assert_eq!(
            find(&findings, "cpu idle states").current,
            "driver intel_idle, deepest state C1E"
        );
    }

    #[test]
    fn an_untuned_fake_host_differs_where_expected() {
        let root = FakeRoot::new();
        root.write(
            "sys/devices/system/cpu/cpu0/cpufreq/scaling_governor",
            "powersave\n",
        )
        .write(
            "proc/self/mounts",
            "/dev/sda1 / ext4 rw,relatime,nobarrier 0 0\n",
        )
        .write(
            "sys/class/block/sda/queue/scheduler",
            "mq-deadline [bfq] none\n",
        )
        .write("sys/class/block/sda/queue/rotational", "0\n")
        .write("proc/42/comm", "irqbalance\n");
        std::fs::create_dir_all(root.0.path().join("sys/class/block/sda/sda1")).unwrap();
        std::os::unix::fs::symlink(
            root.0.path().join("sys/class/block/sda/sda1"),
            root.0.path().join("sys/class/block/sda1"),
        )
        .unwrap();
        let findings = check(&root.target(Limits {
            nofile: Some(1024),
            memlock: Some(8 << 20),
        }));
        for (setting, current) in [
            ("RLIMIT_NOFILE", "1024"),
            ("RLIMIT_MEMLOCK", "8388608"),
            ("cpu frequency governor", "powersave"),
            ("spool mount options", "relatime, barriers OFF"),
            ("spool disk scheduler", "bfq (/dev/sda1)"),
        ] {
            let f = find(&findings, setting);
            assert_eq!(f.status, Status::Differs, "{f}");
            assert_eq!(f.current, current);
        }
        assert_eq!(find(&findings, "spool filesystem").status, Status::Ok);
        assert_eq!(find(&findings, "irqbalance").current, "running");
    }

    #[test]
    fn an_empty_root_is_unknown_not_wrong() {
        let root = FakeRoot::new();
        let findings = check(&root.target(Limits {
            nofile: None,
            memlock: None,
        }));
        for f in &findings {
            assert!(matches!(f.status, Status::Unknown | Status::Info), "{f}");
        }
    }

    #[test]
    fn mounts_are_parsed_and_the_deepest_wins() {
        let mounts = parse_mounts(
            "/dev/sda1 / ext4 rw 0 0\ntmpfs /var/spool\\040x tmpfs rw 0 0\n/dev/sdb /var xfs rw,noatime 0 0\n",
        );
        assert_eq!(mounts[1].point, PathBuf::from("/var/spool x"));
        let spool = mount_of(&mounts, Path::new("/var/spool/spate")).unwrap();
        assert_eq!(spool.fstype, "xfs");
        let spaced = mount_of(&mounts, Path::new("/var/spool x/a")).unwrap();
        assert_eq!(spaced.fstype, "tmpfs");
    }
}
