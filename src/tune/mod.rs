//! `spate tune check`: reads the running system (kernel settings, limits,
//! CPU frequency governor, the spool's filesystem and disk) and compares
//! it with the recommendations of the tuning kit (tuning/). It only reads
//! and reports; it refuses to change anything (that is the operator's
//! call, with the files in tuning/).
//!
//! Everything is read below a root directory (`/` on a real host), so the
//! tests run on a fake `/proc` and `/sys` tree.

pub mod sysctl;
pub mod system;

use std::fmt;
use std::path::{Path, PathBuf};

/// How a setting compares with its recommendation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Ok,
    /// Differs from the recommendation.
    Differs,
    /// Could not be read here (no such file: a container, a VM without a
    /// cpufreq driver, ...); nothing to compare.
    Unknown,
    /// Worth knowing, no recommendation either way.
    Info,
}

impl Status {
    fn label(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Differs => "differs",
            Status::Unknown => "unknown",
            Status::Info => "info",
        }
    }
}

/// One line of the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// What was looked at (`net.core.somaxconn`, `RLIMIT_NOFILE`, ...).
    pub setting: String,
    pub status: Status,
    /// The running value as read (or why it could not be).
    pub current: String,
    /// What the kit recommends, in words (`at least 4096`).
    pub recommended: String,
    /// Why, in one sentence.
    pub why: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let label = self.status.label();
        match self.status {
            Status::Ok => write!(
                f,
                "{label:<8} {}: {} (recommended: {})",
                self.setting, self.current, self.recommended
            ),
            Status::Differs => write!(
                f,
                "{label:<8} {}: {} -> {}\n         why: {}",
                self.setting, self.current, self.recommended, self.why
            ),
            Status::Unknown | Status::Info => write!(
                f,
                "{label:<8} {}: {}\n         note: {}",
                self.setting, self.current, self.why
            ),
        }
    }
}

/// What the check looks at besides the kernel settings.
#[derive(Debug, Clone)]
pub struct Target {
    /// Everything is read below this directory (`/` on a real host).
    pub root: PathBuf,
    /// The spool directory as configured (an absolute path on the host).
    pub spool_dir: PathBuf,
    /// The resource limits to judge (this process's, on a real host).
    pub limits: system::Limits,
}

/// Every finding, kernel settings first.
pub fn check(target: &Target) -> Vec<Finding> {
    let mut findings = sysctl::check(&target.root);
    findings.extend(system::check(target));
    findings
}

/// The report as `spate tune check` prints it: one line per setting,
/// then a summary line.
pub fn report(root: &Path, findings: &[Finding]) -> String {
    let mut text = format!("spate tune check: the system below {}\n", root.display());
    for finding in findings {
        text.push_str(&finding.to_string());
        text.push('\n');
    }
    let count = |status| findings.iter().filter(|f| f.status == status).count();
    text.push_str(&format!(
        "summary: {} ok, {} differ, {} unknown, {} info (see tuning/README.md)\n",
        count(Status::Ok),
        count(Status::Differs),
        count(Status::Unknown),
        count(Status::Info)
    ));
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_difference_shows_current_recommended_and_why() {
        let finding = Finding {
            setting: "net.ipv4.tcp_tw_reuse".into(),
            status: Status::Differs,
            current: "2".into(),
            recommended: "1".into(),
            why: "reuse TIME_WAIT sockets".into(),
        };
        assert_eq!(
            finding.to_string(),
            "differs  net.ipv4.tcp_tw_reuse: 2 -> 1\n         why: reuse TIME_WAIT sockets"
        );
        let text = report(Path::new("/"), &[finding]);
        assert!(
            text.ends_with("summary: 0 ok, 1 differ, 0 unknown, 0 info (see tuning/README.md)\n")
        );
    }
}
