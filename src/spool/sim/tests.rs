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
