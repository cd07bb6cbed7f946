//! The simulation's entry points: a fixed set of seeds in every test run
//! (over a million steps in all), a configurable long run, and the replay
//! of one seed. Tests only.

use super::{run, Report};

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

fn explain(r: &Report) -> String {
    format!(
        "simulation seed {} failed after {} steps: {}\n\
         replay: SPATE_SIM_SEED={} SPATE_SIM_STEPS={} cargo nextest run --run-ignored only \
         -E 'test(sim_replay)' --no-capture   (SPATE_SIM_TRACE=1 prints every step)\n\
         last steps:\n{}",
        r.seed,
        r.steps,
        r.violation.as_deref().unwrap_or("?"),
        r.seed,
        r.steps,
        r.trace.join("\n")
    )
}

/// Runs `seeds` seeds from `first`, `steps` steps each; panics with the
/// first failure's seed, trace and replay command.
fn run_seeds(first: u64, seeds: u64, steps: u64) {
    let mut total = 0;
    for seed in first..first + seeds {
        let r = run(seed, steps, false);
        total += r.steps;
        assert!(r.violation.is_none(), "{}", explain(&r));
        eprintln!("seed {seed}: {} steps, {:?}", r.steps, r.stats);
    }
    eprintln!("{seeds} seeds, {total} steps, no invariant broken");
}

// Four tests of 64 seeds x 4,000 steps (plus drains): just over a million
// steps per test run, spread so nextest runs them in parallel.
const SEEDS_PER_TEST: u64 = 64;
const STEPS_PER_SEED: u64 = 4_000;

#[test]
fn sim_seeds_0() {
    run_seeds(0, SEEDS_PER_TEST, STEPS_PER_SEED);
}

#[test]
fn sim_seeds_1() {
    run_seeds(SEEDS_PER_TEST, SEEDS_PER_TEST, STEPS_PER_SEED);
}

#[test]
fn sim_seeds_2() {
    run_seeds(2 * SEEDS_PER_TEST, SEEDS_PER_TEST, STEPS_PER_SEED);
}

#[test]
fn sim_seeds_3() {
    run_seeds(3 * SEEDS_PER_TEST, SEEDS_PER_TEST, STEPS_PER_SEED);
}

/// The long run: `SPATE_SIM_SEEDS` seeds from `SPATE_SIM_FIRST_SEED` (by
/// default 1000, past the ones above), `SPATE_SIM_STEPS` steps each.
#[test]
#[ignore = "long run; see the module documentation"]
fn sim_many_seeds() {
    let first = env_u64("SPATE_SIM_FIRST_SEED").unwrap_or(1000);
    let seeds = env_u64("SPATE_SIM_SEEDS").unwrap_or(100);
    let steps = env_u64("SPATE_SIM_STEPS").unwrap_or(100_000);
    run_seeds(first, seeds, steps);
}

/// Replays one seed (`SPATE_SIM_SEED`, `SPATE_SIM_STEPS`), printing every
/// step with `SPATE_SIM_TRACE=1`.
#[test]
#[ignore = "replays the seed named by SPATE_SIM_SEED"]
fn sim_replay() {
    let seed = env_u64("SPATE_SIM_SEED").expect("set SPATE_SIM_SEED");
    let steps = env_u64("SPATE_SIM_STEPS").unwrap_or(STEPS_PER_SEED);
    let trace = std::env::var_os("SPATE_SIM_TRACE").is_some();
    let r = run(seed, steps, trace);
    assert!(r.violation.is_none(), "{}", explain(&r));
}

/// The same seed gives the same run, step for step.
#[test]
fn sim_is_deterministic() {
    let a = run(7, 2_000, false);
    let b = run(7, 2_000, false);
    assert_eq!(a.trace, b.trace);
    assert_eq!(format!("{:?}", a.stats), format!("{:?}", b.stats));
}

/// Regression (found by the simulation, seed 203): the task that started
/// a group commit's fdatasync is dropped while the sync runs, the sync
/// fails, and a later sync of the same file succeeds (the kernel reports
/// a writeback error once). A store waiting on that commit must fail, not
/// be acknowledged over the dropped pages.
#[test]
fn a_cancelled_sync_leader_does_not_hide_its_failure() {
    use std::cell::RefCell;
    use std::rc::Rc;

    use rand::SeedableRng;

    use super::disk::{Fault, SimDisk, SimStore};
    use super::executor::Executor;
    use crate::spool::{Spool, SpoolConfig};

    let dir = tempfile::tempdir().expect("temporary directory");
    let disk = SimDisk::new();
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    let mut exec = Executor::default();
    // Runs every runnable task and completes every pending operation
    // except writes' syncs, until nothing moves.
    let settle = |exec: &mut Executor, rng: &mut rand::rngs::StdRng, hold_syncs: bool| loop {
        let mut moved = false;
        for i in exec.runnable() {
            exec.poll(i);
            moved = true;
        }
        for id in disk.pending() {
            if hold_syncs && disk.describe(id).starts_with("SyncData") {
                continue;
            }
            disk.complete(id, Fault::None, rng);
            moved = true;
        }
        if !moved {
            break;
        }
    };
    let opened = Rc::new(RefCell::new(None));
    {
        let opened = Rc::clone(&opened);
        let store = SimStore {
            disk: Rc::clone(&disk),
        };
        let path = dir.path().to_owned();
        exec.spawn("open".into(), async move {
            let (spool, _) = Spool::open_with(store, &path, 0, &[], SpoolConfig::default())
                .await
                .expect("open");
            *opened.borrow_mut() = Some(Rc::new(spool));
        });
    }
    settle(&mut exec, &mut rng, false);
    let spool = opened.borrow_mut().take().expect("opened");
    let envelope = crate::spool::record::tests::sample_envelopes()[0].clone();
    let results = Rc::new(RefCell::new(Vec::new()));
    for name in ["leader", "follower"] {
        let spool = Rc::clone(&spool);
        let envelope = envelope.clone();
        let results = Rc::clone(&results);
        exec.spawn(name.into(), async move {
            let r = spool
                .store(&envelope, b"Subject: x\r\n\r\nbody\r\n".to_vec())
                .await;
            results.borrow_mut().push((name, r.is_ok()));
        });
    }
    // Both records written; the leader's sync is pending, the follower
    // waits for the next one (its write finished after the first began,
    // or for the same one: either way it needs a sync to succeed).
    settle(&mut exec, &mut rng, true);
    let syncs: Vec<u64> = disk
        .pending()
        .into_iter()
        .filter(|&id| disk.describe(id).starts_with("SyncData"))
        .collect();
    assert_eq!(syncs.len(), 1, "one sync in flight");
    exec.cancel(0); // the leader's session goes away
    disk.complete(syncs[0], Fault::Eio, &mut rng);
    settle(&mut exec, &mut rng, false);
    assert_eq!(
        *results.borrow(),
        vec![("follower", false)],
        "the follower must see the failed sync"
    );
}
