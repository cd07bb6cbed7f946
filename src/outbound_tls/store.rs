//! MTA-STS policies kept on disk, one file per domain under
//! `<spool_dir>/mta-sts/`, so that a restart keeps enforcing what was
//! fetched (RFC 8461 5.1: a cached policy stays in force until its
//! `max_age` ends, whatever DNS says meanwhile). Each file holds the
//! record id, the expiry (Unix seconds) and the policy text as fetched;
//! it is written whole to a temporary file and renamed. It only stores
//! and loads; what is current is `policy`'s business.

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// One stored policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredPolicy {
    pub id: String,
    pub expires: SystemTime,
    /// The policy file's text, as fetched.
    pub body: String,
}

/// See the module header.
#[derive(Debug, Clone)]
pub struct PolicyStore {
    dir: PathBuf,
}

impl PolicyStore {
    pub fn new(dir: PathBuf) -> Self {
        PolicyStore { dir }
    }

    /// The stored policy of `domain`, if there is a readable one.
    pub fn load(&self, domain: &str) -> Option<StoredPolicy> {
        let text = std::fs::read_to_string(self.dir.join(file_name(domain)?)).ok()?;
        let (head, body) = text.split_once("\n\n")?;
        let mut id = None;
        let mut expires = None;
        for line in head.lines() {
            match line.split_once(' ') {
                Some(("id", value)) => id = Some(value.to_owned()),
                Some(("expires", value)) => {
                    expires = value
                        .parse::<u64>()
                        .ok()
                        .map(|s| UNIX_EPOCH + Duration::from_secs(s))
                }
                _ => {}
            }
        }
        Some(StoredPolicy {
            id: id?,
            expires: expires?,
            body: body.to_owned(),
        })
    }

    /// Writes (replaces) the policy of `domain`.
    pub fn save(&self, domain: &str, policy: &StoredPolicy) -> std::io::Result<()> {
        let name = file_name(domain)
            .ok_or_else(|| std::io::Error::other(format!("unusual domain name {domain:?}")))?;
        std::fs::create_dir_all(&self.dir)?;
        let expires = policy
            .expires
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let path = self.dir.join(&name);
        let temporary = self.dir.join(format!("{name}.tmp"));
        let mut file = std::fs::File::create(&temporary)?;
        write!(
            file,
            "id {}\nexpires {expires}\n\n{}",
            policy.id, policy.body
        )?;
        file.sync_data()?;
        std::fs::rename(&temporary, &path)
    }
}

/// A domain as a file name: letters, digits, `-` and `.` only, not
/// starting with a dot (A-labels are all of that).
fn file_name(domain: &str) -> Option<String> {
    let name = domain.trim_end_matches('.').to_ascii_lowercase();
    let fits = !name.is_empty()
        && name.len() <= 253
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    fits.then_some(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_policy_survives_a_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let store = PolicyStore::new(dir.path().join("mta-sts"));
        assert_eq!(store.load("example.test"), None);
        let policy = StoredPolicy {
            id: "abc123".into(),
            expires: UNIX_EPOCH + Duration::from_secs(2_000_000_000),
            body: "version: STSv1\r\nmode: enforce\r\n\r\nmx: a.test\r\nmax_age: 86400\r\n".into(),
        };
        store.save("Example.TEST.", &policy).unwrap();
        assert_eq!(store.load("example.test"), Some(policy));
        // Names that could leave the directory are neither saved nor read.
        assert!(store
            .save("../evil", &store.load("example.test").unwrap())
            .is_err());
        assert_eq!(store.load("../example.test"), None);
        assert_eq!(file_name("a/b"), None);
    }
}
