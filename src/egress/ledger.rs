//! Today's messages per egress source, host-wide, kept in a file
//! (`<spool_dir>/warmup.json`, replaced atomically) so that a restart does
//! not give a warming source its day's volume a second time. Each core
//! counts on its own (the chooser) and hands its counts in now and then;
//! a starting core takes its share of what the file held. It decides
//! nothing about budgets.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};

use super::warmup::{core_share, Day};

/// The name of the file in the spool directory.
pub const FILE_NAME: &str = "warmup.json";

/// Messages sent per source name on one day.
pub type DayCounts = HashMap<String, u64>;

/// What the file holds.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct Kept {
    /// Days since 1970-01-01 (UTC).
    day: i64,
    sent: DayCounts,
}

/// See the module header.
#[derive(Debug)]
pub struct WarmupLedger {
    file: Option<PathBuf>,
    state: Mutex<State>,
}

impl Default for WarmupLedger {
    /// One core, nothing kept on disk.
    fn default() -> Self {
        WarmupLedger::in_memory(1)
    }
}

#[derive(Debug)]
struct State {
    /// Each core's counts of its day, as last handed in (or as seeded).
    cores: Vec<(Day, DayCounts)>,
    /// What the file holds now.
    written: Kept,
}

impl WarmupLedger {
    /// A ledger for `cores` cores starting from the file in `spool_dir`
    /// (counts of another day than `today` are over). An unreadable file
    /// is reported and started over, never fatal.
    pub fn kept_in(spool_dir: &Path, cores: usize, today: Day) -> WarmupLedger {
        let path = spool_dir.join(FILE_NAME);
        let kept = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice::<Kept>(&bytes).unwrap_or_else(|e| {
                tracing::warn!(file = %path.display(), error = %e, "warm-up counts unreadable: today's start over");
                Kept::default()
            }),
            Err(e) => {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(file = %path.display(), error = %e, "cannot read the warm-up counts");
                }
                Kept::default()
            }
        };
        let mut ledger = WarmupLedger::in_memory(cores);
        if kept.day == today.0 && !kept.sent.is_empty() {
            tracing::info!(day = %today, sent = ?kept.sent, "today's warm-up counts kept across the restart");
            let state = ledger
                .state
                .get_mut()
                .unwrap_or_else(PoisonError::into_inner);
            for (core, (day, counts)) in state.cores.iter_mut().enumerate() {
                *day = today;
                *counts = kept
                    .sent
                    .iter()
                    .map(|(source, &n)| (source.clone(), core_share(n, core, cores)))
                    .collect();
            }
            state.written = kept;
        }
        ledger.file = Some(path);
        ledger
    }

    /// A ledger that keeps nothing on disk (tests, tools).
    pub fn in_memory(cores: usize) -> WarmupLedger {
        WarmupLedger {
            file: None,
            state: Mutex::new(State {
                cores: vec![(Day(i64::MIN), DayCounts::new()); cores.max(1)],
                written: Kept::default(),
            }),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Core `core`'s share of the day's counts at start: its chooser
    /// begins from them.
    pub fn start_of(&self, core: usize) -> (Day, DayCounts) {
        let state = self.state();
        state
            .cores
            .get(core)
            .cloned()
            .unwrap_or((Day(i64::MIN), DayCounts::new()))
    }

    /// Core `core` has sent `counts` on `day` (its whole count of the
    /// day, seed included). The host-wide sums of the latest day are
    /// written when they changed; a failure is logged (the counts in
    /// memory stay right, only a restart would forget them).
    pub fn hand_in(&self, core: usize, day: Day, counts: DayCounts) {
        let mut state = self.state();
        if let Some(slot) = state.cores.get_mut(core) {
            *slot = (day, counts);
        }
        let latest = state.cores.iter().map(|(d, _)| *d).max().unwrap_or(day);
        let mut sent = DayCounts::new();
        for (d, counts) in &state.cores {
            if *d == latest {
                for (source, n) in counts {
                    *sent.entry(source.clone()).or_default() += n;
                }
            }
        }
        sent.retain(|_, n| *n > 0);
        if state.written.day == latest.0 && state.written.sent == sent {
            return;
        }
        state.written = Kept {
            day: latest.0,
            sent,
        };
        let Some(path) = &self.file else {
            return;
        };
        let (Some(dir), Some(name)) = (path.parent(), path.file_name().and_then(|n| n.to_str()))
        else {
            return;
        };
        let written = serde_json::to_vec(&state.written)
            .map_err(|e| e.to_string())
            .and_then(|bytes| {
                crate::mailbox::durable::replace_file(dir, name, &bytes).map_err(|e| e.to_string())
            });
        if let Err(e) = written {
            tracing::warn!(file = %path.display(), error = e, "cannot keep the warm-up counts");
        }
    }

    /// The host-wide counts last written (for tests and `spate queue`).
    pub fn today(&self) -> (Day, DayCounts) {
        let state = self.state();
        (Day(state.written.day), state.written.sent.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(pairs: &[(&str, u64)]) -> DayCounts {
        pairs.iter().map(|(s, n)| (s.to_string(), *n)).collect()
    }

    #[test]
    fn counts_survive_a_restart_on_the_same_day_only() {
        let dir = tempfile::tempdir().unwrap();
        let today = Day(20_000);
        let ledger = WarmupLedger::kept_in(dir.path(), 2, today);
        assert!(ledger.start_of(0).1.is_empty());
        ledger.hand_in(0, today, counts(&[("new", 3), ("old", 1)]));
        ledger.hand_in(1, today, counts(&[("new", 4)]));
        assert_eq!(ledger.today().1, counts(&[("new", 7), ("old", 1)]));

        // Restarted with three cores: their shares add up to the day's.
        let again = WarmupLedger::kept_in(dir.path(), 3, today);
        let shares: Vec<u64> = (0..3).map(|c| again.start_of(c).1["new"]).collect();
        assert_eq!(shares.iter().sum::<u64>(), 7, "{shares:?}");
        assert_eq!(again.start_of(0).0, today);
        // A core that sends nothing more keeps its share in the sums.
        let (day, mut mine) = again.start_of(2);
        *mine.entry("new".into()).or_default() += 1;
        again.hand_in(2, day, mine);
        assert_eq!(again.today().1["new"], 8);

        // Tomorrow, nothing is carried over.
        let tomorrow = WarmupLedger::kept_in(dir.path(), 2, Day(today.0 + 1));
        assert!(tomorrow.start_of(0).1.is_empty());
        assert!(tomorrow.start_of(1).1.is_empty());
    }

    #[test]
    fn a_new_day_on_one_core_starts_the_sums_over() {
        let ledger = WarmupLedger::in_memory(2);
        let today = Day(20_000);
        ledger.hand_in(0, today, counts(&[("new", 5)]));
        ledger.hand_in(1, today, counts(&[("new", 5)]));
        ledger.hand_in(0, Day(today.0 + 1), counts(&[("new", 1)]));
        assert_eq!(ledger.today(), (Day(today.0 + 1), counts(&[("new", 1)])));
    }

    #[test]
    fn an_unreadable_file_starts_the_day_over() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILE_NAME), b"[1,2").unwrap();
        let ledger = WarmupLedger::kept_in(dir.path(), 1, Day(1));
        assert!(ledger.start_of(0).1.is_empty());
        ledger.hand_in(0, Day(1), counts(&[("a", 1)]));
        let again = WarmupLedger::kept_in(dir.path(), 1, Day(1));
        assert_eq!(again.start_of(0).1, counts(&[("a", 1)]));
    }
}
