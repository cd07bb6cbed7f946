//! The kernel settings of the tuning kit: parsed from
//! tuning/sysctl.d/99-spate.conf (compiled in, so the file installed on
//! hosts and the check can never disagree) and compared with
//! `/proc/sys`. It refuses to write any setting.

use std::path::Path;

use super::{Finding, Status};

/// The sysctl file shipped in tuning/, the one source of the values.
pub const SYSCTL_FILE: &str = include_str!("../../tuning/sysctl.d/99-spate.conf");

/// How a running value is compared with the recommended one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    AtLeast,
    AtMost,
    Exact,
    /// Every number of a list (`tcp_rmem`'s min, default, max) at least.
    EachAtLeast,
    /// A `low high` range that must contain the recommended one.
    Covers,
}

impl Rule {
    fn parse(word: &str) -> Option<Rule> {
        Some(match word {
            "at-least" => Rule::AtLeast,
            "at-most" => Rule::AtMost,
            "exact" => Rule::Exact,
            "each-at-least" => Rule::EachAtLeast,
            "covers" => Rule::Covers,
            _ => return None,
        })
    }

    fn describe(self, value: &str) -> String {
        match self {
            Rule::AtLeast => format!("at least {value}"),
            Rule::AtMost => format!("at most {value}"),
            Rule::Exact => value.to_owned(),
            Rule::EachAtLeast => format!("each at least {value}"),
            Rule::Covers => format!("covering {value}"),
        }
    }

    /// Whether `current` satisfies `recommended`; `None` when either is
    /// not the numbers the rule needs.
    pub fn accepts(self, current: &str, recommended: &str) -> Option<bool> {
        let numbers = |text: &str| -> Option<Vec<u64>> {
            text.split_whitespace().map(|w| w.parse().ok()).collect()
        };
        if self == Rule::Exact {
            return Some(normalise(current) == normalise(recommended));
        }
        let (have, want) = (numbers(current)?, numbers(recommended)?);
        match self {
            Rule::AtLeast | Rule::AtMost => {
                let (&[have], &[want]) = (have.as_slice(), want.as_slice()) else {
                    return None;
                };
                Some(if self == Rule::AtLeast {
                    have >= want
                } else {
                    have <= want
                })
            }
            Rule::EachAtLeast => {
                (have.len() == want.len()).then(|| have.iter().zip(&want).all(|(h, w)| h >= w))
            }
            Rule::Covers => {
                let (&[low, high], &[want_low, want_high]) = (have.as_slice(), want.as_slice())
                else {
                    return None;
                };
                Some(low <= want_low && high >= want_high)
            }
            Rule::Exact => unreachable!("handled above"),
        }
    }
}

/// One recommended kernel setting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recommendation {
    /// Dotted name (`net.core.somaxconn`).
    pub key: String,
    /// As written in the file, whitespace collapsed.
    pub value: String,
    pub rule: Rule,
    /// The comment above the setting, on one line.
    pub why: String,
}

/// Why the sysctl file is not what the check can use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("tuning/sysctl.d/99-spate.conf line {line}: {problem}")]
pub struct BadSysctlFile {
    pub line: usize,
    pub problem: String,
}

/// Parses a sysctl file: `key = value` lines, each preceded by comment
/// lines giving the reason and a `check: RULE` line.
pub fn parse(text: &str) -> Result<Vec<Recommendation>, BadSysctlFile> {
    let mut found = Vec::new();
    let mut why = Vec::new();
    let mut rule = None;
    for (index, line) in text.lines().enumerate() {
        let bad = |problem: String| BadSysctlFile {
            line: index + 1,
            problem,
        };
        let line = line.trim();
        if line.is_empty() {
            why.clear();
            rule = None;
        } else if let Some(comment) = line.strip_prefix('#') {
            let comment = comment.trim();
            if let Some(word) = comment.strip_prefix("check:") {
                let word = word.trim();
                rule =
                    Some(Rule::parse(word).ok_or_else(|| bad(format!("unknown rule {word:?}")))?);
            } else {
                why.push(comment.to_owned());
            }
        } else {
            let (key, value) = line
                .split_once('=')
                .ok_or_else(|| bad("expected key = value".into()))?;
            let rule = rule
                .take()
                .ok_or_else(|| bad(format!("{} has no `# check:` line", key.trim())))?;
            // A block of settings shares the reason written above it.
            let why_text = why.join(" ");
            if why_text.is_empty() && found.is_empty() {
                return Err(bad("a setting needs a comment saying why".into()));
            }
            let why_text = if why_text.is_empty() {
                found
                    .last()
                    .map(|r: &Recommendation| r.why.clone())
                    .unwrap_or_default()
            } else {
                why_text
            };
            why.clear();
            found.push(Recommendation {
                key: key.trim().to_owned(),
                value: normalise(value),
                rule,
                why: why_text,
            });
        }
    }
    Ok(found)
}

fn normalise(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The recommendations of the shipped file.
pub fn recommendations() -> Result<Vec<Recommendation>, BadSysctlFile> {
    parse(SYSCTL_FILE)
}

/// Reads `/proc/sys/...` below `root` for every recommendation.
pub fn check(root: &Path) -> Vec<Finding> {
    let recommendations = match recommendations() {
        Ok(r) => r,
        Err(e) => {
            return vec![Finding {
                setting: "tuning/sysctl.d/99-spate.conf".into(),
                status: Status::Unknown,
                current: "unreadable".into(),
                recommended: String::new(),
                why: e.to_string(),
            }]
        }
    };
    recommendations
        .into_iter()
        .map(|r| {
            let path = root.join("proc/sys").join(r.key.replace('.', "/"));
            let recommended = r.rule.describe(&r.value);
            match std::fs::read_to_string(&path) {
                Err(e) => Finding {
                    setting: r.key,
                    status: Status::Unknown,
                    current: format!("not readable ({})", e.kind()),
                    recommended,
                    why: format!(
                        "{} not readable here (a container hides some)",
                        path.display()
                    ),
                },
                Ok(text) => {
                    let current = normalise(&text);
                    let status = match r.rule.accepts(&current, &r.value) {
                        Some(true) => Status::Ok,
                        Some(false) => Status::Differs,
                        None => Status::Unknown,
                    };
                    Finding {
                        setting: r.key,
                        status,
                        current,
                        recommended,
                        why: r.why,
                    }
                }
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_file_parses_and_names_what_the_kit_promises() {
        let recs = recommendations().expect("the shipped sysctl file parses");
        let keys: Vec<&str> = recs.iter().map(|r| r.key.as_str()).collect();
        for key in [
            "net.core.somaxconn",
            "net.ipv4.tcp_max_syn_backlog",
            "net.ipv4.ip_local_port_range",
            "net.ipv4.tcp_tw_reuse",
            "net.core.rmem_max",
            "net.core.wmem_max",
            "net.ipv4.tcp_rmem",
            "net.ipv4.tcp_wmem",
            "fs.file-max",
            "fs.nr_open",
            "net.core.netdev_max_backlog",
            "net.ipv4.tcp_fin_timeout",
        ] {
            assert!(keys.contains(&key), "{key} missing");
        }
        for r in &recs {
            assert!(!r.why.is_empty(), "{} has a reason", r.key);
            assert!(
                r.rule.accepts(&r.value, &r.value) == Some(true),
                "{} accepts its own value",
                r.key
            );
        }
        // The listen backlog spate asks for is what the file recommends.
        let somaxconn = recs.iter().find(|r| r.key == "net.core.somaxconn").unwrap();
        assert_eq!(somaxconn.value, "4096");
    }

    #[test]
    fn rules_compare_as_documented() {
        assert_eq!(Rule::AtLeast.accepts("8192", "4096"), Some(true));
        assert_eq!(Rule::AtLeast.accepts("128", "4096"), Some(false));
        assert_eq!(Rule::AtMost.accepts("60", "15"), Some(false));
        assert_eq!(Rule::Exact.accepts("2", "1"), Some(false));
        assert_eq!(Rule::Exact.accepts(" 1\n", "1"), Some(true));
        assert_eq!(
            Rule::Covers.accepts("32768\t60999", "1024 65535"),
            Some(false)
        );
        assert_eq!(Rule::Covers.accepts("1024 65535", "1024 65535"), Some(true));
        assert_eq!(
            Rule::EachAtLeast.accepts("4096 131072 6291456", "4096 131072 16777216"),
            Some(false)
        );
        assert_eq!(Rule::AtLeast.accepts("lots", "4096"), None);
    }

    #[test]
    fn a_setting_without_a_rule_is_refused() {
        let err = parse("# why\nnet.core.somaxconn = 4096\n").unwrap_err();
        assert_eq!(err.line, 2);
        let err = parse("# why\n# check: bigger\nx = 1\n").unwrap_err();
        assert!(err.problem.contains("bigger"));
    }

    #[test]
    fn a_fake_proc_tree_is_compared() {
        let root = tempfile::tempdir().unwrap();
        let write = |key: &str, value: &str| {
            let path = root.path().join("proc/sys").join(key.replace('.', "/"));
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, value).unwrap();
        };
        write("net.core.somaxconn", "65535\n");
        write("net.ipv4.tcp_tw_reuse", "2\n");
        write("net.ipv4.ip_local_port_range", "32768\t60999\n");
        let findings = check(root.path());
        let get = |key: &str| findings.iter().find(|f| f.setting == key).unwrap();
        assert_eq!(get("net.core.somaxconn").status, Status::Ok);
        let reuse = get("net.ipv4.tcp_tw_reuse");
        assert_eq!(reuse.status, Status::Differs);
        assert_eq!(
            (reuse.current.as_str(), reuse.recommended.as_str()),
            ("2", "1")
        );
        let range = get("net.ipv4.ip_local_port_range");
        assert_eq!(range.status, Status::Differs);
        assert_eq!(range.current, "32768 60999");
        assert_eq!(get("fs.nr_open").status, Status::Unknown);
    }
}
