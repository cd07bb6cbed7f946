//! MTA-STS (RFC 8461) without I/O: the `_mta-sts` TXT record, the policy
//! file's grammar, and which MX host names a policy allows. Fetching
//! and caching are `https` and `policy`; applying a policy to a
//! connection is the engine's.

use std::time::Duration;

/// RFC 8461 3.2: the largest `max_age` (about a year).
pub const MAX_AGE_LIMIT: Duration = Duration::from_secs(31_557_600);

/// Why a TXT record or policy file is not a valid one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StsError {
    #[error("not an MTA-STS record (no v=STSv1 first)")]
    NotSts,
    #[error("MTA-STS record without a valid id")]
    BadId,
    #[error("policy line {0:?} is not `key: value`")]
    BadLine(String),
    #[error("policy version is not STSv1")]
    BadVersion,
    #[error("policy mode {0:?} is not enforce, testing or none")]
    BadMode(String),
    #[error("policy max_age {0:?} is not a number of seconds")]
    BadMaxAge(String),
    #[error("policy lacks {0}")]
    Missing(&'static str),
    #[error("policy mx pattern {0:?} is not a host name or *.suffix")]
    BadMx(String),
}

/// RFC 8461 3.1: `v=STSv1; id=...;` at `_mta-sts.<domain>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StsRecord {
    /// Changes whenever the policy does; 1 to 32 letters and digits.
    pub id: String,
}

/// Parses one TXT record's text (its strings joined). Other fields are
/// ignored (3.1: "unknown fields ... MUST be ignored").
pub fn parse_record(text: &str) -> Result<StsRecord, StsError> {
    let mut fields = text
        .split(';')
        .map(str::trim)
        .filter(|f| !f.is_empty())
        .map(|f| f.split_once('=').map(|(k, v)| (k.trim(), v.trim())));
    // 3.1: "v" MUST be the first field.
    if fields.next() != Some(Some(("v", "STSv1"))) {
        return Err(StsError::NotSts);
    }
    for field in fields {
        if let Some(("id", id)) = field {
            let valid =
                (1..=32).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric());
            return if valid {
                Ok(StsRecord { id: id.to_owned() })
            } else {
                Err(StsError::BadId)
            };
        }
    }
    Err(StsError::BadId)
}

/// Picks the one STSv1 record among a name's TXT records. RFC 8461 3.1:
/// several STSv1 records (or none) mean no policy is announced.
pub fn pick_record<'a>(
    texts: impl IntoIterator<Item = &'a str>,
) -> Option<Result<StsRecord, StsError>> {
    let mut sts = texts
        .into_iter()
        .filter(|t| t.trim_start().starts_with("v=STSv1"));
    let first = sts.next()?;
    if sts.next().is_some() {
        return None;
    }
    Some(parse_record(first))
}

/// A policy's `mode` (RFC 8461 5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Only the listed MX hosts, with TLS and a valid certificate.
    Enforce,
    /// Deliver as usual; report what enforce would have refused.
    Testing,
    /// No policy (a domain withdrawing one).
    None,
}

/// A parsed policy file (RFC 8461 3.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub mode: Mode,
    /// Host names and `*.suffix` patterns, lower case, no trailing dot.
    pub mx: Vec<String>,
    /// How long the policy may be cached (capped at [`MAX_AGE_LIMIT`]).
    pub max_age: Duration,
}

/// Parses a policy file. Lines end in CRLF or LF; keys are case
/// sensitive; unknown keys are ignored; the first `version`, `mode` and
/// `max_age` count; `mx` may repeat (and must appear unless the mode is
/// `none`).
pub fn parse_policy(body: &str) -> Result<Policy, StsError> {
    let mut version = None;
    let mut mode = None;
    let mut max_age = None;
    let mut mx = Vec::new();
    for line in body.split('\n') {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.trim().is_empty() {
            continue;
        }
        let Some((key, value)) = line.split_once(':') else {
            return Err(StsError::BadLine(line.chars().take(80).collect()));
        };
        // sts-policy-field-delim = ":" *WSP; trailing WSP tolerated.
        let value = value.trim_matches([' ', '\t']);
        match key {
            "version" => {
                version.get_or_insert(value);
            }
            "mode" => {
                mode.get_or_insert(value);
            }
            "max_age" => {
                max_age.get_or_insert(value);
            }
            "mx" => mx.push(parse_mx_pattern(value)?),
            _ => {}
        }
    }
    if version.ok_or(StsError::Missing("version"))? != "STSv1" {
        return Err(StsError::BadVersion);
    }
    let mode = match mode.ok_or(StsError::Missing("mode"))? {
        "enforce" => Mode::Enforce,
        "testing" => Mode::Testing,
        "none" => Mode::None,
        other => return Err(StsError::BadMode(other.to_owned())),
    };
    let max_age = max_age.ok_or(StsError::Missing("max_age"))?;
    // sts-policy-max-age-value = 1*10(DIGIT)
    if max_age.is_empty() || max_age.len() > 10 || !max_age.bytes().all(|b| b.is_ascii_digit()) {
        return Err(StsError::BadMaxAge(max_age.to_owned()));
    }
    let seconds: u64 = max_age
        .parse()
        .map_err(|_| StsError::BadMaxAge(max_age.to_owned()))?;
    if mx.is_empty() && mode != Mode::None {
        return Err(StsError::Missing("mx"));
    }
    Ok(Policy {
        mode,
        mx,
        max_age: Duration::from_secs(seconds).min(MAX_AGE_LIMIT),
    })
}

/// sts-policy-mx-value = ["*."] Domain
fn parse_mx_pattern(value: &str) -> Result<String, StsError> {
    let bad = || StsError::BadMx(value.chars().take(80).collect());
    let lower = value.trim_end_matches('.').to_ascii_lowercase();
    let host = lower.strip_prefix("*.").unwrap_or(&lower);
    let labels_ok = !host.is_empty()
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    if labels_ok {
        Ok(lower)
    } else {
        Err(bad())
    }
}

impl Policy {
    /// Whether `host` (an MX host name) is one the policy lists.
    pub fn allows_mx(&self, host: &str) -> bool {
        self.mx.iter().any(|pattern| mx_matches(pattern, host))
    }
}

/// RFC 8461 4.1: a pattern is a host name, matched whole, or `*.` and a
/// suffix, where the wildcard stands for exactly one (the leftmost)
/// label: `*.example.com` matches `mx1.example.com`, not
/// `a.mx1.example.com` nor `example.com`. Case and a trailing dot do not
/// count.
pub fn mx_matches(pattern: &str, host: &str) -> bool {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    let pattern = pattern.trim_end_matches('.').to_ascii_lowercase();
    match pattern.strip_prefix("*.") {
        Some(suffix) => match host.split_once('.') {
            Some((first, rest)) => !first.is_empty() && rest == suffix,
            None => false,
        },
        None => host == pattern,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn txt_records() {
        assert_eq!(
            parse_record("v=STSv1; id=20160831085700Z;"),
            Ok(StsRecord {
                id: "20160831085700Z".into()
            })
        );
        assert_eq!(
            parse_record("v=STSv1;id=abc").map(|r| r.id),
            Ok("abc".into())
        );
        assert_eq!(
            parse_record("v=STSv1; ext=1; id=x1").map(|r| r.id),
            Ok("x1".into())
        );
        assert_eq!(parse_record("id=abc; v=STSv1"), Err(StsError::NotSts));
        assert_eq!(parse_record("v=STSv2; id=abc"), Err(StsError::NotSts));
        assert_eq!(parse_record("v=STSv1;"), Err(StsError::BadId));
        assert_eq!(parse_record("v=STSv1; id=has-dash"), Err(StsError::BadId));
        assert_eq!(
            parse_record(&format!("v=STSv1; id={}", "a".repeat(33))),
            Err(StsError::BadId)
        );
        // Other TXT records at the name are skipped; two STSv1 are none.
        assert_eq!(
            pick_record(["spf", "v=STSv1; id=1"]).map(|r| r.map(|r| r.id)),
            Some(Ok("1".into()))
        );
        assert!(pick_record(["v=STSv1; id=1", "v=STSv1; id=2"]).is_none());
        assert!(pick_record(["v=spf1 -all"]).is_none());
    }

    #[test]
    fn policy_files() {
        let p = parse_policy(
            "version: STSv1\r\nmode: enforce\r\nmx: mail.example.com\r\nmx: *.example.net\r\nmax_age: 604800\r\n",
        )
        .unwrap();
        assert_eq!(p.mode, Mode::Enforce);
        assert_eq!(p.mx, vec!["mail.example.com", "*.example.net"]);
        assert_eq!(p.max_age, Duration::from_secs(604_800));
        // LF endings, extra keys, trailing blank line, tabs after ':'.
        let p = parse_policy(
            "version: STSv1\nmode:\ttesting\nmx: MX.Example.COM.\nmax_age: 86400\nfoo: bar\n\n",
        )
        .unwrap();
        assert_eq!(p.mode, Mode::Testing);
        assert_eq!(p.mx, vec!["mx.example.com"]);
        // none needs no mx.
        assert_eq!(
            parse_policy("version: STSv1\nmode: none\nmax_age: 1\n")
                .unwrap()
                .mode,
            Mode::None
        );
        // max_age is capped.
        assert_eq!(
            parse_policy("version: STSv1\nmode: none\nmax_age: 9999999999\n")
                .unwrap()
                .max_age,
            MAX_AGE_LIMIT
        );
    }

    #[test]
    fn bad_policy_files() {
        let e = |s: &str| parse_policy(s).unwrap_err();
        assert_eq!(
            e("mode: enforce\nmx: a.b\nmax_age: 1\n"),
            StsError::Missing("version")
        );
        assert_eq!(
            e("version: STSv2\nmode: enforce\nmx: a.b\nmax_age: 1\n"),
            StsError::BadVersion
        );
        assert!(matches!(
            e("version: STSv1\nmode: strict\nmx: a.b\nmax_age: 1\n"),
            StsError::BadMode(_)
        ));
        assert!(matches!(
            e("version: STSv1\nmode: enforce\nmx: a.b\nmax_age: -1\n"),
            StsError::BadMaxAge(_)
        ));
        assert!(matches!(
            e("version: STSv1\nmode: enforce\nmx: a.b\nmax_age: 12345678901\n"),
            StsError::BadMaxAge(_)
        ));
        assert_eq!(
            e("version: STSv1\nmode: enforce\nmax_age: 1\n"),
            StsError::Missing("mx")
        );
        assert!(matches!(
            e("version: STSv1\nmode: enforce\nmx: a..b\nmax_age: 1\n"),
            StsError::BadMx(_)
        ));
        assert!(matches!(
            e("version: STSv1\nmode: enforce\nmx: a.*.b\nmax_age: 1\n"),
            StsError::BadMx(_)
        ));
        assert!(matches!(e("<html>oops</html>\n"), StsError::BadLine(_)));
        // Keys are case sensitive: "Mode" is an unknown key.
        assert_eq!(
            e("version: STSv1\nMode: enforce\nmx: a.b\nmax_age: 1\n"),
            StsError::Missing("mode")
        );
    }

    #[test]
    fn mx_patterns() {
        assert!(mx_matches("mail.example.com", "mail.example.com"));
        assert!(mx_matches("mail.example.com", "MAIL.example.com."));
        assert!(!mx_matches("mail.example.com", "mail2.example.com"));
        assert!(mx_matches("*.example.com", "mx1.example.com"));
        // One label only, and not the bare suffix.
        assert!(!mx_matches("*.example.com", "a.mx1.example.com"));
        assert!(!mx_matches("*.example.com", "example.com"));
        assert!(!mx_matches("*.example.com", "mx1.example.org"));
        let p =
            parse_policy("version: STSv1\nmode: enforce\nmx: a.test\nmx: *.b.test\nmax_age: 9\n")
                .unwrap();
        assert!(p.allows_mx("a.test") && p.allows_mx("x.b.test"));
        assert!(!p.allows_mx("evil.test"));
    }
}
