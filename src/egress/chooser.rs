//! Picks the egress source for work bound to a site: smooth weighted
//! round robin (nginx's) over the pool's sources, kept per pool and site so
//! each site sees the weights, skipping sources out of budget (their own
//! message rate, the day's warm-up volume; each core its share of both)
//! and preferring sources the caller can use now (not suspended for the
//! site, room in their queue). Sans-IO and per core: time is passed in.
//! Budgets are kept by source name, so a reload keeps what was spent.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

use super::ledger::DayCounts;
use super::plan::{EgressPlan, PoolId, Source};
use super::warmup::{core_share, DailyLimit, Day};
use crate::shaping::{Rate, TokenBucket};

/// Pool-and-site rotations remembered at most; past it they start over
/// (only the smoothing is lost, never a weight).
const MAX_ROTATIONS: usize = 100_000;

/// The time of a decision, as the two clocks the budgets need.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    /// For rates (token buckets).
    pub now: Instant,
    /// Seconds since the Unix epoch, for the warm-up's calendar days.
    pub unix: u64,
}

/// The chooser's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Choice {
    /// Send through this source (an index into the plan's sources); call
    /// [`Chooser::spend`] once the work is queued for it.
    Send(usize),
    /// Every source of the pool is out of budget: the work waits (held,
    /// not an attempt) for `source`, whose budget returns first, in `wait`.
    Exhausted { source: usize, wait: Duration },
}

/// One source's budget on this core.
#[derive(Debug, Clone)]
struct Budget {
    rate: Option<(Rate, TokenBucket)>,
    /// The day `sent` counts.
    day: Day,
    sent: u64,
}

impl Budget {
    fn new(clock: Clock) -> Budget {
        Budget {
            rate: None,
            day: Day::of_unix(clock.unix),
            sent: 0,
        }
    }

    /// Follows the source's current settings and the calendar.
    fn refresh(&mut self, source: &Source, clock: Clock, cores: usize) {
        match (source.message_rate, &self.rate) {
            (None, _) => self.rate = None,
            (Some(rate), Some((had, _))) if *had == rate => {}
            (Some(rate), _) => {
                self.rate = Some((rate, TokenBucket::new(rate, cores, clock.now)));
            }
        }
        let today = Day::of_unix(clock.unix);
        if today != self.day {
            self.day = today;
            self.sent = 0;
        }
    }

    /// This core's limit for today (`None`: no daily limit).
    fn daily(&self, source: &Source, core: usize, cores: usize) -> Option<u64> {
        match source.warmup.as_ref().map(|w| w.limit(self.day)) {
            None | Some(DailyLimit::Warm) => None,
            Some(DailyLimit::NotStarted) => Some(0),
            Some(DailyLimit::Messages(n)) => Some(core_share(n, core, cores)),
        }
    }

    /// Messages that may go now.
    fn spare(&mut self, source: &Source, clock: Clock, core: usize, cores: usize) -> u64 {
        self.refresh(source, clock, cores);
        let daily = self
            .daily(source, core, cores)
            .map_or(u64::MAX, |limit| limit.saturating_sub(self.sent));
        let rate = self
            .rate
            .as_mut()
            .map_or(u64::MAX, |(_, b)| b.available(clock.now) as u64);
        daily.min(rate)
    }

    /// How long until one message may go (zero if one may now).
    fn wait(&mut self, source: &Source, clock: Clock, core: usize, cores: usize) -> Duration {
        if self.spare(source, clock, core, cores) > 0 {
            return Duration::ZERO;
        }
        let mut wait = Duration::ZERO;
        let out_today = self
            .daily(source, core, cores)
            .is_some_and(|limit| self.sent >= limit);
        if out_today {
            // Tomorrow at the earliest; before the start, the start day.
            let next = match source.warmup.as_ref() {
                Some(w) if w.start > self.day => w.start,
                _ => Day(self.day.0 + 1),
            };
            wait = Duration::from_secs(next.start_unix().saturating_sub(clock.unix));
        }
        if let Some((_, bucket)) = self.rate.as_mut() {
            wait = wait.max(
                bucket
                    .next_token(clock.now)
                    .saturating_duration_since(clock.now),
            );
        }
        wait
    }

    fn spend(&mut self, source: &Source, clock: Clock, cores: usize) {
        self.refresh(source, clock, cores);
        self.sent += 1;
        if let Some((_, bucket)) = self.rate.as_mut() {
            bucket.take(clock.now, 1);
        }
    }
}

/// See the module header. `K` names a site (the ready queues' key).
#[derive(Debug)]
pub struct Chooser<K> {
    core: usize,
    cores: usize,
    budgets: HashMap<String, Budget>,
    /// Smooth weighted round robin: each member's current weight, per
    /// pool and site.
    rotations: HashMap<PoolId, HashMap<K, Vec<i64>>>,
    rotation_count: usize,
    /// Messages spent through any source since this chooser began (tells
    /// whether the day's counts moved).
    spends: u64,
}

impl<K: Hash + Eq + Clone> Chooser<K> {
    /// The chooser of core `core` of `cores` (budgets are split so).
    pub fn new(core: usize, cores: usize) -> Self {
        Chooser {
            core,
            cores: cores.max(1),
            budgets: HashMap::new(),
            rotations: HashMap::new(),
            rotation_count: 0,
            spends: 0,
        }
    }

    /// Starts the counts of `day` from `counts` (this core's share of what
    /// the host sent before a restart); counts of another day than the
    /// clock's are over and ignored.
    pub fn seed(&mut self, day: Day, counts: &DayCounts, clock: Clock) {
        if day != Day::of_unix(clock.unix) {
            return;
        }
        for (name, &sent) in counts {
            let budget = self
                .budgets
                .entry(name.clone())
                .or_insert_with(|| Budget::new(clock));
            budget.sent = budget.sent.max(sent);
        }
    }

    /// Messages spent through any source so far (moves on every spend).
    pub fn spends(&self) -> u64 {
        self.spends
    }

    /// This core's counts of the latest day it counted, per source.
    pub fn day_counts(&self) -> Option<(Day, DayCounts)> {
        let day = self.budgets.values().map(|b| b.day).max()?;
        let counts = self
            .budgets
            .iter()
            .filter(|(_, b)| b.day == day && b.sent > 0)
            .map(|(name, b)| (name.clone(), b.sent))
            .collect();
        Some((day, counts))
    }

    fn budget(&mut self, source: &Source, clock: Clock) -> &mut Budget {
        if !self.budgets.contains_key(&source.name) {
            self.budgets.insert(source.name.clone(), Budget::new(clock));
        }
        self.budgets
            .get_mut(&source.name)
            .expect("present: inserted above")
    }

    /// Messages `source` may still send now on this core.
    pub fn spare(&mut self, source: &Source, clock: Clock) -> u64 {
        let (core, cores) = (self.core, self.cores);
        self.budget(source, clock).spare(source, clock, core, cores)
    }

    /// How long until `source` may send one more (zero: now).
    pub fn wait(&mut self, source: &Source, clock: Clock) -> Duration {
        let (core, cores) = (self.core, self.cores);
        self.budget(source, clock).wait(source, clock, core, cores)
    }

    /// One message was queued for `source`: it counts against its budget.
    pub fn spend(&mut self, source: &Source, clock: Clock) {
        let cores = self.cores;
        self.spends += 1;
        self.budget(source, clock).spend(source, clock, cores);
    }

    /// The source for work of pool `pool` bound to `site`: the next in
    /// the weighted rotation among those with budget that the caller can
    /// `use_now`; else among those with budget; else the pool is
    /// exhausted. `None` when `pool` is not one of `plan`'s.
    pub fn choose(
        &mut self,
        plan: &EgressPlan,
        pool: PoolId,
        site: &K,
        clock: Clock,
        use_now: impl Fn(&Source) -> bool,
    ) -> Option<Choice> {
        let members = &plan.pool(pool)?.members;
        let sources = plan.sources();
        let mut funded = Vec::with_capacity(members.len());
        for m in members {
            let source = sources.get(m.source)?;
            funded.push(self.spare(source, clock) > 0);
        }
        let usable: Vec<bool> = members
            .iter()
            .zip(&funded)
            .map(|(m, &f)| f && use_now(&sources[m.source]))
            .collect();
        for eligible in [&usable, &funded] {
            if let Some(i) = self.turn(pool, site, members, eligible) {
                return Some(Choice::Send(members[i].source));
            }
        }
        let mut best: Option<(Duration, usize)> = None;
        for m in members {
            let wait = self.wait(&sources[m.source], clock);
            if best.is_none_or(|(w, _)| wait < w) {
                best = Some((wait, m.source));
            }
        }
        best.map(|(wait, source)| Choice::Exhausted { source, wait })
    }

    /// The next member in the rotation of `pool` at `site` among the
    /// `eligible` ones (smooth weighted round robin), if any.
    fn turn(
        &mut self,
        pool: PoolId,
        site: &K,
        members: &[super::plan::Member],
        eligible: &[bool],
    ) -> Option<usize> {
        let total: i64 = members
            .iter()
            .zip(eligible)
            .filter(|(_, &e)| e)
            .map(|(m, _)| i64::from(m.weight))
            .sum();
        if total == 0 {
            return None;
        }
        if self.rotation_count >= MAX_ROTATIONS {
            self.rotations.clear();
            self.rotation_count = 0;
        }
        let by_site = self.rotations.entry(pool).or_default();
        if !by_site.contains_key(site) {
            by_site.insert(site.clone(), vec![0; members.len()]);
            self.rotation_count += 1;
        }
        let current = by_site.get_mut(site).expect("present: inserted above");
        if current.len() != members.len() {
            // The pool changed in a reload: start its rotation over.
            *current = vec![0; members.len()];
        }
        let mut best: Option<usize> = None;
        for (i, (m, &e)) in members.iter().zip(eligible).enumerate() {
            if !e {
                continue;
            }
            current[i] += i64::from(m.weight);
            if best.is_none_or(|b| current[i] > current[b]) {
                best = Some(i);
            }
        }
        let best = best?;
        current[best] -= total;
        Some(best)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    const BASE: &str =
        "spool_dir = \"/tmp/s\"\n[[listener]]\naddress = \"127.0.0.1:25\"\nprotocol = \"smtp\"\n";

    fn plan(extra: &str) -> EgressPlan {
        let config: Config = toml::from_str(&format!("{BASE}{extra}")).expect("parses");
        EgressPlan::build(&config).expect("valid")
    }

    fn clock(t0: Instant, seconds: f64, unix: u64) -> Clock {
        Clock {
            now: t0 + Duration::from_secs_f64(seconds),
            unix,
        }
    }

    /// 2025-12-06 at noon, UTC.
    const NOON: u64 = 1_765_022_400;

    const TWO: &str = r#"
[[egress.source]]
name = "a"
[[egress.source]]
name = "b"
[[egress.source]]
name = "c"
[egress]
default_pool = "p"
[egress.pool.p]
sources = { a = 3, b = 1, c = 1 }
"#;

    fn names(plan: &EgressPlan, picks: &[Choice]) -> String {
        picks
            .iter()
            .map(|c| match c {
                // The first letter is enough to tell the tests' sources apart.
                Choice::Send(i) => plan.sources()[*i].name[..1].to_owned(),
                Choice::Exhausted { .. } => "-".into(),
            })
            .collect()
    }

    #[test]
    fn weights_are_followed_smoothly_per_site() {
        let plan = plan(TWO);
        let pool = plan.pool_for(Default::default()).unwrap();
        let mut chooser: Chooser<&str> = Chooser::new(0, 1);
        let t0 = Instant::now();
        let c = clock(t0, 0.0, NOON);
        let picks: Vec<Choice> = (0..10)
            .map(|_| chooser.choose(&plan, pool, &"site1", c, |_| true).unwrap())
            .collect();
        // nginx's sequence for 3:1:1: interleaved, never three a's in a row.
        assert_eq!(names(&plan, &picks), "abacaabaca");
        // Another site has its own rotation: it starts the same way.
        let other: Vec<Choice> = (0..5)
            .map(|_| chooser.choose(&plan, pool, &"site2", c, |_| true).unwrap())
            .collect();
        assert_eq!(names(&plan, &other), "abaca");
        // Sources the caller cannot use now are skipped while others can.
        let skip_a: Vec<Choice> = (0..4)
            .map(|_| {
                chooser
                    .choose(&plan, pool, &"site3", c, |s| s.name != "a")
                    .unwrap()
            })
            .collect();
        assert_eq!(names(&plan, &skip_a), "bcbc");
        // None usable: the rotation goes on among all with budget.
        let none = chooser.choose(&plan, pool, &"site3", c, |_| false).unwrap();
        assert!(matches!(none, Choice::Send(_)));
    }

    #[test]
    fn a_source_out_of_rate_is_skipped_until_its_tokens_return() {
        let plan = plan(
            r#"
[[egress.source]]
name = "slow"
message_rate = "2/s"
[[egress.source]]
name = "fast"
[egress.pool.p]
sources = { slow = 1, fast = 1 }
[egress]
default_pool = "p"
"#,
        );
        let pool = plan.pool_for(Default::default()).unwrap();
        let mut chooser: Chooser<u8> = Chooser::new(0, 1);
        let t0 = Instant::now();
        let c = clock(t0, 0.0, NOON);
        let mut picks = Vec::new();
        for _ in 0..8 {
            let choice = chooser.choose(&plan, pool, &1, c, |_| true).unwrap();
            if let Choice::Send(i) = choice {
                chooser.spend(&plan.sources()[i], c);
            }
            picks.push(choice);
        }
        // Two from "slow" (its bucket), then all from "fast".
        assert_eq!(names(&plan, &picks), "fsfsffff");
        let slow = plan.source("slow").unwrap();
        assert_eq!(chooser.spare(slow, c), 0);
        assert_eq!(chooser.wait(slow, c), Duration::from_millis(500));
        assert_eq!(chooser.spare(slow, clock(t0, 0.5, NOON)), 1);
    }

    #[test]
    fn the_warmup_holds_a_new_source_to_its_daily_volume_per_core() {
        let plan = plan(
            r#"
[[egress.source]]
name = "new"
warmup_start = 2025-12-06
warmup = ["5/day", "9/day"]
[egress.pool.p]
sources = { new = 1 }
[egress]
default_pool = "p"
"#,
        );
        let pool = plan.pool_for(Default::default()).unwrap();
        let new = plan.source("new").unwrap();
        let t0 = Instant::now();
        // Two cores: 3 and 2 of the day's 5.
        for (core, share) in [(0, 3), (1, 2)] {
            let mut chooser: Chooser<u8> = Chooser::new(core, 2);
            let c = clock(t0, 0.0, NOON);
            let mut sent = 0;
            while let Some(Choice::Send(i)) = chooser.choose(&plan, pool, &1, c, |_| true) {
                chooser.spend(&plan.sources()[i], c);
                sent += 1;
                assert!(sent <= 10, "no limit");
            }
            assert_eq!(sent, share, "core {core}");
            // Out until midnight UTC: twelve hours.
            assert_eq!(
                chooser.choose(&plan, pool, &1, c, |_| true),
                Some(Choice::Exhausted {
                    source: 0,
                    wait: Duration::from_secs(12 * 3600)
                })
            );
            // The next day's step.
            let tomorrow = clock(t0, 1.0, NOON + 86_400);
            assert_eq!(chooser.spare(new, tomorrow), if core == 0 { 5 } else { 4 });
            // After the schedule, warm: no limit.
            assert_eq!(
                chooser.spare(new, clock(t0, 2.0, NOON + 2 * 86_400)),
                u64::MAX
            );
        }
        // Before its start the source sends nothing, and waits for the day.
        let mut chooser: Chooser<u8> = Chooser::new(0, 1);
        let before = clock(t0, 0.0, NOON - 86_400);
        assert_eq!(
            chooser.choose(&plan, pool, &1, before, |_| true),
            Some(Choice::Exhausted {
                source: 0,
                wait: Duration::from_secs(12 * 3600)
            })
        );
    }

    #[test]
    fn budgets_follow_a_reloaded_plan() {
        let t0 = Instant::now();
        let c = clock(t0, 0.0, NOON);
        let first = plan(
            "[[egress.source]]\nname = \"a\"\nmessage_rate = \"1/s\"\n[egress.pool.p]\nsources = { a = 1 }\n",
        );
        let mut chooser: Chooser<u8> = Chooser::new(0, 1);
        let a = first.source("a").unwrap();
        chooser.spend(a, c);
        assert_eq!(chooser.spare(a, c), 0);
        // The same source with a faster rate: a new bucket.
        let second = plan(
            "[[egress.source]]\nname = \"a\"\nmessage_rate = \"10/s\"\n[egress.pool.p]\nsources = { a = 1, b = 1 }\n[[egress.source]]\nname = \"b\"\n",
        );
        assert_eq!(chooser.spare(second.source("a").unwrap(), c), 10);
        let pool = second.pool_named("p").unwrap();
        assert!(matches!(
            chooser.choose(&second, pool, &1, c, |_| true),
            Some(Choice::Send(_))
        ));
    }
}
