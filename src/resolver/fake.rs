//! An in-memory [`MxResolver`] for tests of the layers above (queue,
//! delivery): a fixed map from domain to [`Resolution`], counting what was
//! asked. It refuses to touch DNS, threads or clocks, and applies no RFC
//! rule: it answers exactly what it was given.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};

use super::rules::normalize;
use super::{MxResolver, Resolution};

#[derive(Default)]
struct State {
    answers: HashMap<String, Resolution>,
    batches: u64,
    lookups: HashMap<String, u64>,
}

/// The fake. Clones share the map and the counters, so a test can keep one
/// clone to inspect while the code under test owns another. Unknown domains
/// resolve to [`Resolution::NoSuchDomain`].
#[derive(Clone, Default)]
pub struct FakeResolver {
    state: Arc<Mutex<State>>,
}

impl FakeResolver {
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets (or replaces) the answer for `domain` (matched after
    /// [`normalize`], like the real resolver).
    pub fn set(&self, domain: &str, resolution: Resolution) -> &Self {
        self.lock().answers.insert(normalize(domain), resolution);
        self
    }

    /// Builder form of [`FakeResolver::set`].
    pub fn with(self, domain: &str, resolution: Resolution) -> Self {
        self.set(domain, resolution);
        self
    }

    /// Calls to `resolve_batch` (and `resolve`) so far.
    pub fn batches(&self) -> u64 {
        self.lock().batches
    }

    /// How often `domain` was asked for.
    pub fn lookups(&self, domain: &str) -> u64 {
        self.lock()
            .lookups
            .get(&normalize(domain))
            .copied()
            .unwrap_or(0)
    }

    /// Domains asked for, duplicates included.
    pub fn total_lookups(&self) -> u64 {
        self.lock().lookups.values().sum()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding this lock can only come from a test that
        // already failed; its data is still consistent.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl MxResolver for FakeResolver {
    fn resolve_batch(
        &self,
        domains: Vec<String>,
    ) -> impl Future<Output = Vec<(String, Resolution)>> {
        let answers = {
            let mut state = self.lock();
            state.batches += 1;
            domains
                .into_iter()
                .map(|d| {
                    let key = normalize(&d);
                    *state.lookups.entry(key.clone()).or_default() += 1;
                    let r = state
                        .answers
                        .get(&key)
                        .cloned()
                        .unwrap_or(Resolution::NoSuchDomain);
                    (d, r)
                })
                .collect::<Vec<_>>()
        };
        std::future::ready(answers)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resolver::MxHost;
    use std::net::{IpAddr, Ipv4Addr};

    fn block_on<F: Future>(f: F) -> F::Output {
        futures_lite::future::block_on(f)
    }

    #[test]
    fn answers_from_the_map_and_counts() {
        let hosts = Resolution::Hosts(vec![MxHost {
            name: "mx.a.test".into(),
            preference: 10,
            addresses: vec![IpAddr::V4(Ipv4Addr::LOCALHOST)],
        }]);
        let fake = FakeResolver::new()
            .with("a.test", hosts.clone())
            .with("null.test", Resolution::NullMx);
        let view = fake.clone();
        let r = block_on(fake.resolve_batch(vec![
            "A.test.".into(),
            "null.test".into(),
            "other.test".into(),
        ]));
        assert_eq!(
            r,
            vec![
                ("A.test.".to_string(), hosts),
                ("null.test".to_string(), Resolution::NullMx),
                ("other.test".to_string(), Resolution::NoSuchDomain),
            ]
        );
        assert_eq!(
            block_on(fake.resolve("null.test".into())),
            Resolution::NullMx
        );
        assert_eq!(view.batches(), 2);
        assert_eq!(view.lookups("a.test"), 1);
        assert_eq!(view.lookups("null.test"), 2);
        assert_eq!(view.total_lookups(), 4);
    }
}
