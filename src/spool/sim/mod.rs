//! Deterministic simulation of the spool and the queue, the
//! FoundationDB/TigerBeetle way: the real `Spool` (ledger, group commit,
//! reclaim, recovery) and the real `Queue` run on a simulated disk behind
//! the I/O seam and on an executor that polls whichever task a seeded
//! random schedule picks. Stores, recipient outcomes, deferrals, bounces,
//! expiries, finishes, roll-overs and reclaims run concurrently; I/O
//! completes in any order or fails (EIO, short writes, ENOSPC); tasks are
//! cancelled at their await points; power cuts throw away every write no
//! fsync covered, and clean restarts close the spool; a restart may change
//! the number of shards (directories are adopted). After every step the
//! model's invariants are checked; a failure prints its seed, and the same
//! seed replays the same run. Tests only.
//!
//! Run longer: `SPATE_SIM_STEPS=5000000 SPATE_SIM_SEEDS=100 cargo nextest
//! run --release -E 'test(sim_many_seeds)'`; replay one seed with
//! `SPATE_SIM_SEED=N cargo nextest run --run-ignored only -E
//! 'test(sim_replay)' --no-capture` (add `SPATE_SIM_TRACE=1` to print
//! every step).

mod disk;
mod executor;
mod model;

use std::cell::{Cell, RefCell};
use std::net::{IpAddr, Ipv4Addr};
use std::rc::Rc;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::envelope::{BodyType, Envelope, Recipient};
use crate::queue::{Deferral, Dispatch, Queue, QueueEntry, RetryPolicy, Task, UnixTime};

use super::id::SpoolId;
use super::layout;
use super::record::{self, FinishReason};
use super::state::{OutcomeKind, RecipientOutcome};
use super::{Spool, SpoolConfig, SpoolError};

use disk::{Fault, SimDisk, SimStore};
use executor::Executor;
use model::{Live, Message, Model, Recovered, Stats};

/// The shape of one run, drawn from its seed.
#[derive(Debug, Clone, Copy)]
struct Shape {
    spool: SpoolConfig,
    /// Chance that a completed I/O operation fails.
    fault_rate: f64,
    /// At most this many messages live at once (keeps per-step checks
    /// cheap) and this many tasks.
    max_live: usize,
    max_tasks: usize,
    max_shards: usize,
    policy: RetryPolicy,
}

impl Shape {
    fn draw(rng: &mut StdRng) -> Shape {
        let segment_size = *[512u64, 1024, 2048, 4096, 16384]
            .get(rng.gen_range(0..5))
            .unwrap_or(&4096);
        let chunk = *[64u64, 256, 1024, 4096]
            .get(rng.gen_range(0..4))
            .unwrap_or(&256);
        Shape {
            spool: SpoolConfig {
                segment_size,
                preallocate_chunk: chunk,
            },
            fault_rate: *[0.0, 0.002, 0.01, 0.04]
                .get(rng.gen_range(0..4))
                .unwrap_or(&0.01),
            max_live: rng.gen_range(4..32),
            max_tasks: rng.gen_range(2..24),
            max_shards: rng.gen_range(1..=3),
            policy: RetryPolicy {
                minimal_backoff: Duration::from_secs(rng.gen_range(1..5)),
                maximal_backoff: Duration::from_secs(rng.gen_range(5..30)),
                maximal_queue_lifetime: Duration::from_secs(rng.gen_range(30..300)),
                attempt_timeout: Duration::from_secs(rng.gen_range(20..120)),
            },
        }
    }
}

/// What a delivery attempt does with one recipient.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    Deliver,
    Bounce,
    Defer,
}

/// One shard of the current boot.
struct Shard {
    spool: Rc<Spool<SimStore>>,
    queue: Rc<RefCell<Queue>>,
}

/// Everything a task needs, cheap to clone into it.
#[derive(Clone)]
struct Ctx {
    index: usize,
    spool: Rc<Spool<SimStore>>,
    queue: Rc<RefCell<Queue>>,
    model: Rc<RefCell<Model>>,
    now: Rc<Cell<u64>>,
}

impl Ctx {
    /// Adds a line to the run's trace.
    fn note(&self, line: String) {
        self.model.borrow_mut().note(line);
    }
}

/// The result of one run.
#[derive(Debug)]
pub(crate) struct Report {
    pub seed: u64,
    pub steps: u64,
    pub stats: Stats,
    pub violation: Option<String>,
    pub trace: Vec<String>,
}

struct Sim {
    rng: StdRng,
    shape: Shape,
    dir: tempfile::TempDir,
    disk: Rc<SimDisk>,
    exec: Executor,
    shards: Vec<Shard>,
    model: Rc<RefCell<Model>>,
    now: Rc<Cell<u64>>,
    step: u64,
    /// New stores and faults stop while draining.
    draining: bool,
}

const START_TIME: u64 = 1_800_000_000;

/// Runs one seeded simulation of `steps` steps, then drains the queue and
/// checks that everything was delivered exactly as the model says.
pub(crate) fn run(seed: u64, steps: u64, print_trace: bool) -> Report {
    let mut rng = StdRng::seed_from_u64(seed);
    let shape = Shape::draw(&mut rng);
    let dir = tempfile::tempdir().expect("temporary directory");
    let disk = SimDisk::new();
    let mut sim = Sim {
        rng,
        shape,
        dir,
        disk,
        exec: Executor::default(),
        shards: Vec::new(),
        model: Rc::new(RefCell::new(Model::new(print_trace))),
        now: Rc::new(Cell::new(START_TIME)),
        step: 0,
        draining: false,
    };
    sim.note(format!("seed {seed}: {shape:?}"));
    let shards = sim.rng.gen_range(1..=shape.max_shards);
    sim.boot(shards);
    while sim.step < steps && sim.ok() {
        sim.one_step();
    }
    if sim.ok() {
        sim.drain();
    }
    let model = sim.model.borrow();
    Report {
        seed,
        steps: sim.step,
        stats: model.stats,
        violation: model.violation.clone(),
        trace: model.trace.iter().cloned().collect(),
    }
}

impl Sim {
    fn ok(&self) -> bool {
        self.model.borrow().violation.is_none()
    }

    fn note(&mut self, line: String) {
        let mut model = self.model.borrow_mut();
        model.step = self.step;
        model.note(line);
    }

    fn violate(&self, what: String) {
        self.model.borrow_mut().violate(what);
    }

    /// One step of the schedule, then the invariants.
    fn one_step(&mut self) {
        self.step += 1;
        let runnable = self.exec.runnable();
        let pending = self.disk.pending();
        let roll = self.rng.gen_range(0..1000);
        match roll {
            0..=399 if !runnable.is_empty() => {
                let i = runnable[self.rng.gen_range(0..runnable.len())];
                let name = self.exec.name(i).to_owned();
                let done = self.exec.poll(i);
                self.note(format!("poll {name}{}", if done { " (done)" } else { "" }));
            }
            0..=799 if !pending.is_empty() => {
                let id = pending[self.rng.gen_range(0..pending.len())];
                self.complete_op(id);
            }
            800..=899 => self.start_store(),
            900..=969 => self.start_deliveries(),
            970..=979 => {
                let secs = self.rng.gen_range(1..15);
                self.now.set(self.now.get() + secs);
                self.note(format!("clock +{secs}s"));
            }
            980..=984 => self.cancel_one(),
            985..=989 if !self.draining => {
                let full = !self.disk.full.get();
                self.disk.full.set(full);
                self.note(format!("disk full: {full}"));
            }
            990..=992 => {
                for s in &self.shards {
                    s.queue.borrow_mut().flush(UnixTime(self.now.get()));
                }
                self.note("queue flush".into());
            }
            993..=996 if !self.draining => self.power_cut(),
            997..=998 if !self.draining => self.clean_restart(),
            _ => {}
        }
        self.check();
    }

    /// Completes one pending I/O operation, with a fault now and then; an
    /// orphaned one (its caller went away) may also just be forgotten.
    fn complete_op(&mut self, id: u64) {
        let what = self.disk.describe(id);
        if self.disk.is_orphan(id) && self.rng.gen_bool(0.3) {
            self.disk.forget(id);
            self.note(format!("forget orphan {what}"));
            return;
        }
        let fault = if !self.draining && self.rng.gen_bool(self.shape.fault_rate) {
            self.model.borrow_mut().stats.io_faults += 1;
            Fault::Eio
        } else {
            Fault::None
        };
        self.disk.complete(id, fault, &mut self.rng);
        self.note(format!("complete {what} {fault:?}"));
    }

    fn ctx(&self, index: usize) -> Ctx {
        let shard = &self.shards[index];
        Ctx {
            index,
            spool: Rc::clone(&shard.spool),
            queue: Rc::clone(&shard.queue),
            model: Rc::clone(&self.model),
            now: Rc::clone(&self.now),
        }
    }

    fn start_store(&mut self) {
        let live = self.model.borrow().live.len() + self.model.borrow().doubtful.len();
        if self.draining || live >= self.shape.max_live || self.exec.len() >= self.shape.max_tasks {
            return;
        }
        let index = self.rng.gen_range(0..self.shards.len());
        let serial = self.model.borrow_mut().serial();
        let recipients = self.rng.gen_range(1..=3);
        // Mostly small bodies; now and then one larger than a segment.
        let len = if self.rng.gen_bool(0.05) {
            self.rng
                .gen_range(self.shape.spool.segment_size..self.shape.spool.segment_size * 2)
                as usize
        } else {
            self.rng.gen_range(0..600)
        };
        let message = new_message(serial, recipients, len, self.now.get(), &mut self.rng);
        self.note(format!(
            "store serial {serial} ({len} bytes) on shard {index}"
        ));
        self.exec.spawn(
            format!("store {serial}"),
            store_task(self.ctx(index), Rc::clone(&message)),
        );
    }

    fn start_deliveries(&mut self) {
        let now = UnixTime(self.now.get());
        for index in 0..self.shards.len() {
            let due = self.shards[index].queue.borrow_mut().due(now);
            for d in due {
                if self.exec.len() >= self.shape.max_tasks + 8 {
                    // Left Active: the queue hands it out again after its
                    // deadline, as when delivery loses a message.
                    self.note(format!("dropped dispatch {} (too many tasks)", d.id));
                    continue;
                }
                let fates: Vec<Fate> = (0..3)
                    .map(|_| match self.rng.gen_range(0..10) {
                        _ if self.draining => Fate::Deliver,
                        0..=5 => Fate::Deliver,
                        6 => Fate::Bounce,
                        _ => Fate::Defer,
                    })
                    .collect();
                self.note(format!(
                    "dispatch {} {:?} on shard {index} {fates:?}",
                    d.id, d.task
                ));
                self.exec.spawn(
                    format!("deliver {} {:?}", d.id, d.task),
                    deliver_task(self.ctx(index), d, fates),
                );
            }
        }
    }

    fn cancel_one(&mut self) {
        let live: Vec<usize> = self.exec.live().collect();
        if live.is_empty() {
            return;
        }
        let i = live[self.rng.gen_range(0..live.len())];
        let name = self.exec.name(i).to_owned();
        if name.starts_with("close") || name.starts_with("open") {
            return;
        }
        self.exec.cancel(i);
        self.model.borrow_mut().stats.cancels += 1;
        self.note(format!("cancel {name}"));
    }

    /// A power cut: tasks and pending I/O vanish, unsynced writes are
    /// kept, torn or lost at random; then a boot with recovery.
    fn power_cut(&mut self) {
        self.note("POWER CUT".into());
        self.model.borrow_mut().stats.crashes += 1;
        self.exec.clear();
        self.shards.clear();
        if let Err(e) = self.disk.power_cut(&mut self.rng) {
            self.violate(format!("simulated power cut failed: {e}"));
            return;
        }
        let shards = self.rng.gen_range(1..=self.shape.max_shards);
        self.boot(shards);
    }

    /// A clean shutdown: close every spool while other tasks go on, drop
    /// what is left, complete the kernel's pending work, boot again.
    fn clean_restart(&mut self) {
        self.note("CLEAN RESTART".into());
        self.model.borrow_mut().stats.restarts += 1;
        let closed = Rc::new(Cell::new(0usize));
        for s in &self.shards {
            let spool = Rc::clone(&s.spool);
            let closed = Rc::clone(&closed);
            let model = Rc::clone(&self.model);
            self.exec.spawn("close".into(), async move {
                // A failed final sync is allowed (the disk may fail); what
                // it did not cover is in doubt like any unsynced write.
                if let Err(e) = spool.close().await {
                    let _ = &model;
                    tracing::debug!(error = %e, "close failed");
                }
                closed.set(closed.get() + 1);
            });
        }
        let want = self.shards.len();
        let mut guard = 0u64;
        while closed.get() < want && self.ok() {
            guard += 1;
            if guard > 1_000_000 {
                self.violate("close never finished".into());
                return;
            }
            self.settle_step();
        }
        self.exec.clear();
        self.shards.clear();
        for id in self.disk.pending() {
            self.disk.complete(id, Fault::None, &mut self.rng);
        }
        let shards = self.rng.gen_range(1..=self.shape.max_shards);
        self.boot(shards);
    }

    /// Polls a runnable task or completes an operation, at random; no new
    /// work. Used while closing and opening.
    fn settle_step(&mut self) {
        self.step += 1;
        let runnable = self.exec.runnable();
        let pending = self.disk.pending();
        if !runnable.is_empty() && (pending.is_empty() || self.rng.gen_bool(0.5)) {
            let i = runnable[self.rng.gen_range(0..runnable.len())];
            let name = self.exec.name(i).to_owned();
            self.exec.poll(i);
            self.note(format!("poll {name}"));
        } else if !pending.is_empty() {
            let id = pending[self.rng.gen_range(0..pending.len())];
            self.complete_op(id);
        }
    }

    /// Opens `count` shards on the spool directory (adopting directories
    /// of shards that no longer exist), concurrently, then checks what
    /// recovery returned against the model and rebuilds the queues.
    fn boot(&mut self, count: usize) {
        self.note(format!("boot with {count} shard(s)"));
        let existing = layout::list_shards(self.dir.path()).unwrap_or_default();
        type Opened = Rc<
            RefCell<Option<Result<(Spool<SimStore>, Vec<super::RecoveredMessage>), SpoolError>>>,
        >;
        let mut results: Vec<Opened> = Vec::new();
        for index in 0..count {
            let adopt = crate::shard::adoption(index, count, &existing);
            let slot: Opened = Rc::new(RefCell::new(None));
            results.push(Rc::clone(&slot));
            let store = SimStore {
                disk: Rc::clone(&self.disk),
            };
            let dir = self.dir.path().to_owned();
            let config = self.shape.spool;
            self.exec.spawn(format!("open {index}"), async move {
                let own = adopt[0];
                let rest: Vec<u8> = adopt[1..].to_vec();
                let r = Spool::open_with(store, &dir, own, &rest, config).await;
                *slot.borrow_mut() = Some(r);
            });
        }
        let mut guard = 0u64;
        while results.iter().any(|r| r.borrow().is_none()) {
            guard += 1;
            if guard > 1_000_000 {
                self.violate("recovery never finished".into());
                return;
            }
            self.settle_step();
        }
        let mut found = Vec::new();
        let mut shards = Vec::new();
        let mut failed = false;
        for (index, slot) in results.into_iter().enumerate() {
            let taken = slot.borrow_mut().take();
            match taken {
                Some(Ok((spool, recovered))) => {
                    let mut queue = Queue::with_policy(self.shape.policy, crate::queue::NoJitter)
                        .expect("valid policy");
                    for r in &recovered {
                        queue.restore(
                            r.id,
                            QueueEntry {
                                size: r.body_len,
                                recipients: r.recipients,
                                received_at: r.received_at,
                                acknowledged_at: None,
                                shape: Default::default(),
                            },
                            &r.delivery,
                        );
                        found.push(Recovered {
                            shard: index,
                            id: r.id,
                            // Read back: recovery keeps no envelopes.
                            envelope: spool
                                .read_message(r.id)
                                .map(|m| m.envelope().clone())
                                .map_err(|e| e.to_string()),
                            outcomes: r.delivery.outcomes.keys().copied().collect(),
                        });
                    }
                    shards.push(Shard {
                        spool: Rc::new(spool),
                        queue: Rc::new(RefCell::new(queue)),
                    });
                }
                Some(Err(e)) => {
                    // An injected fault during recovery (a directory sync):
                    // like a failed start, try again after another cut.
                    self.note(format!("open {index} failed: {e}"));
                    failed = true;
                }
                None => unreachable!("waited for every open"),
            }
        }
        if failed {
            self.exec.clear();
            drop(shards);
            for id in self.disk.pending() {
                self.disk.complete(id, Fault::None, &mut self.rng);
            }
            self.boot(count);
            return;
        }
        self.note(format!("recovered {} message(s)", found.len()));
        self.model.borrow_mut().recovered(found);
        self.shards = shards;
        // Every live message must be readable right after recovery.
        self.check();
    }

    /// The invariants, after every step.
    fn check(&mut self) {
        if !self.ok() || self.shards.is_empty() {
            return;
        }
        let model = self.model.borrow();
        let mut problem = None;
        for (serial, l) in &model.live {
            if model.finishing.contains(serial) {
                // Its marker may be durable already and its segment gone.
                continue;
            }
            let Some(shard) = self.shards.get(l.shard) else {
                problem = Some(format!("serial {serial} on missing shard {}", l.shard));
                break;
            };
            if let Err(e) = check_readable(shard, l) {
                problem = Some(format!("live serial {serial} ({}): {e}", l.id));
                break;
            }
            let path = layout::segment_path(self.dir.path(), l.id.segment());
            let at = u64::from(l.id.offset());
            let durable = if !l.acknowledged {
                Ok(())
            } else {
                self.disk
                    .holds_durably(&path, at, &l.message.head)
                    .and_then(|()| {
                        self.disk.holds_durably(
                            &path,
                            at + l.message.head.len() as u64,
                            &l.message.body,
                        )
                    })
            };
            if let Err(e) = durable {
                problem = Some(format!("acknowledged serial {serial} ({}): {e}", l.id));
                break;
            }
            if shard.queue.borrow().state(l.id).is_none() {
                problem = Some(format!("live serial {serial} ({}) is not queued", l.id));
                break;
            }
        }
        if problem.is_none() {
            let live: std::collections::HashSet<(usize, SpoolId)> =
                model.live.values().map(|l| (l.shard, l.id)).collect();
            for (index, shard) in self.shards.iter().enumerate() {
                for (id, _) in shard.queue.borrow().iter() {
                    if !live.contains(&(index, id)) {
                        problem = Some(format!("queue of shard {index} holds {id}, not live"));
                    }
                }
            }
        }
        drop(model);
        if let Some(p) = problem {
            self.violate(p);
        }
    }

    /// The end of a run: no new mail, no faults; everything due is
    /// delivered, the queue and the spool end empty, and nothing comes
    /// back after a restart.
    fn drain(&mut self) {
        self.note("DRAIN".into());
        self.draining = true;
        self.disk.full.set(false);
        // A clean restart first brings back what failed stores left live
        // in the spool (their discard marker could not be written).
        self.clean_restart();
        let mut rounds = 0u64;
        loop {
            if !self.ok() {
                return;
            }
            let idle = self.exec.len() == 0 && self.disk.pending().is_empty();
            let empty = self.model.borrow().live.is_empty()
                && self.shards.iter().all(|s| s.queue.borrow().is_empty());
            if idle && empty {
                break;
            }
            rounds += 1;
            if rounds > 2_000_000 {
                let left = self.model.borrow().live.len();
                self.violate(format!("the queue never drained ({left} live left)"));
                return;
            }
            if idle {
                // Jump to the next deadline.
                let next = self
                    .shards
                    .iter()
                    .filter_map(|s| s.queue.borrow().next_wakeup())
                    .min();
                if let Some(at) = next {
                    self.now.set(self.now.get().max(at.0));
                }
                self.start_deliveries();
            } else {
                self.settle_step();
                if self.rng.gen_bool(0.05) {
                    self.start_deliveries();
                }
            }
            self.check();
        }
        match super::scan_dir(self.dir.path()) {
            Ok(left) if left.is_empty() => {}
            Ok(left) => self.violate(format!(
                "drained, yet the spool lists {} message(s), first {}",
                left.len(),
                left[0].id
            )),
            Err(e) => self.violate(format!("scan_dir failed: {e}")),
        }
        // Nothing finished may come back after a power cut either.
        self.draining = false;
        self.power_cut();
        if self.ok() && !self.model.borrow().live.is_empty() {
            self.violate("messages came back after the drain".into());
        }
    }
}

fn check_readable(shard: &Shard, l: &Live) -> Result<(), String> {
    let m = shard.spool.read_message(l.id).map_err(|e| e.to_string())?;
    if m.envelope() != &l.message.envelope {
        return Err("envelope differs".into());
    }
    if m.body() != l.message.body.as_slice() {
        return Err("body differs".into());
    }
    Ok(())
}

fn new_message(
    serial: u64,
    recipients: usize,
    len: usize,
    now: u64,
    rng: &mut StdRng,
) -> Rc<Message> {
    let envelope = Envelope {
        sender: format!("s{serial}@sender.test"),
        recipients: (0..recipients)
            .map(|i| Recipient {
                address: format!("r{i}@dest{}.test", rng.gen_range(0..3)),
                notify: None,
                orcpt: None,
            })
            .collect(),
        body_type: BodyType::SevenBit,
        smtputf8: false,
        dsn_return: None,
        envid: None,
        received_at: now,
        client_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
        helo: format!("sim-{serial}"),
        auth_user: None,
        tenant: None,
    };
    let mut body = format!("Serial: {serial}\r\n\r\n").into_bytes();
    while body.len() < len {
        body.push(b'a' + (body.len() % 26) as u8);
    }
    let head = record::encode_message(&envelope, body.clone()).head;
    Rc::new(Message {
        serial,
        envelope,
        body,
        head,
    })
}

async fn store_task(ctx: Ctx, message: Rc<Message>) {
    {
        let mut model = ctx.model.borrow_mut();
        model.doubtful.insert(message.serial, Rc::clone(&message));
        model.messages.insert(message.serial, Rc::clone(&message));
    }
    match ctx
        .spool
        .store(&message.envelope, message.body.clone())
        .await
    {
        Ok(id) => {
            ctx.note(format!("stored serial {} as {id}", message.serial));
            ctx.model.borrow_mut().acked(&message, ctx.index, id);
            ctx.queue.borrow_mut().insert(
                id,
                QueueEntry {
                    size: message.body.len() as u64,
                    recipients: message.envelope.recipients.len(),
                    received_at: message.envelope.received_at,
                    acknowledged_at: None,
                    shape: Default::default(),
                },
            );
        }
        Err(e) => {
            ctx.note(format!("store of serial {} failed: {e}", message.serial));
            ctx.model.borrow_mut().stats.store_failed += 1;
        }
    }
}

/// What the engine does with one dispatched message: try the pending
/// recipients (fates drawn by the schedule), record outcomes, bounce,
/// defer or expire, and finish.
async fn deliver_task(ctx: Ctx, d: Dispatch, fates: Vec<Fate>) {
    let Some(serial) = ctx.model.borrow().serial_at(ctx.index, d.id) else {
        return; // finished meanwhile (an attempt the queue gave up on)
    };
    if d.task == Task::Expire {
        expire(&ctx, d, serial).await;
        return;
    }
    let Some(pending) = ctx.queue.borrow().pending_recipients(d.id) else {
        return;
    };
    if let Err(e) = ctx.spool.read_message(d.id) {
        if ctx.model.borrow().finishing.contains(&serial) {
            return; // another attempt is finishing it
        }
        ctx.model.borrow_mut().violate(format!(
            "dispatched serial {serial} ({}) unreadable: {e}",
            d.id
        ));
        return;
    }
    let mut transient = None;
    let mut bounced = Vec::new();
    for (n, index) in pending.into_iter().enumerate() {
        let kind = match fates[n % fates.len()] {
            Fate::Deliver => OutcomeKind::Delivered,
            Fate::Bounce => {
                bounced.push(index);
                continue;
            }
            Fate::Defer => {
                transient = Some("451 4.4.1 try later".to_owned());
                continue;
            }
        };
        if !record_outcome(&ctx, d.id, serial, index, kind).await {
            transient = Some("451 4.3.0 spool write error".to_owned());
        }
    }
    // As the engine does: the DSN first, then the bounces it reports.
    if !bounced.is_empty() {
        if send_dsn(&ctx).await {
            for index in bounced {
                if !record_outcome(&ctx, d.id, serial, index, OutcomeKind::Bounced).await {
                    transient = Some("451 4.3.0 spool write error".to_owned());
                }
            }
        } else {
            transient = Some("451 4.3.0 cannot spool a DSN".to_owned());
        }
    }
    complete(&ctx, d, serial, transient).await;
}

/// Records a recipient's outcome durably; true once the spool confirmed.
async fn record_outcome(
    ctx: &Ctx,
    id: SpoolId,
    serial: u64,
    index: u32,
    kind: OutcomeKind,
) -> bool {
    let outcome = RecipientOutcome {
        kind,
        reply: format!("{kind:?}"),
        remote_mta: None,
    };
    match ctx
        .spool
        .record_recipient_outcome(id, index, &outcome)
        .await
    {
        Ok(()) => {
            ctx.note(format!(
                "outcome of serial {serial} recipient {index}: {kind:?}"
            ));
            let _ = ctx.queue.borrow_mut().recipient_finished(id, index);
            let mut model = ctx.model.borrow_mut();
            if let Some(l) = model.live.get_mut(&serial) {
                l.done.insert(index);
            }
            match kind {
                OutcomeKind::Delivered => model.stats.delivered += 1,
                OutcomeKind::Bounced => model.stats.bounced += 1,
                OutcomeKind::Expired => model.stats.expired += 1,
            }
            true
        }
        Err(e) => {
            expect_transient(ctx, serial, &e);
            false
        }
    }
}

/// A spool error during delivery must be a transient one, or concern a
/// message finished meanwhile by another attempt.
fn expect_transient(ctx: &Ctx, serial: u64, e: &SpoolError) {
    let mut model = ctx.model.borrow_mut();
    // Another attempt (the queue gave up waiting for this one) may be
    // finishing or have finished it.
    let gone = !model.live.contains_key(&serial) || model.finishing.contains(&serial);
    if !e.is_transient() && !gone {
        model.violate(format!("serial {serial}: unexpected spool error {e}"));
    }
}

/// Stores a DSN (a new message to the sender); true once acknowledged.
async fn send_dsn(ctx: &Ctx) -> bool {
    let (dsn_serial, now) = {
        let mut model = ctx.model.borrow_mut();
        (model.serial(), ctx.now.get())
    };
    let mut rng = StdRng::seed_from_u64(dsn_serial);
    let message = new_message(dsn_serial, 1, 120, now, &mut rng);
    let before = ctx.model.borrow().stats.acked;
    store_task(ctx.clone(), message).await;
    ctx.model.borrow().stats.acked > before
}

/// The attempt is over: with no recipient pending the message is
/// finished, else the retry is scheduled (or the message expires).
async fn complete(ctx: &Ctx, d: Dispatch, serial: u64, transient: Option<String>) {
    if pending_of(ctx, d.id).is_empty() {
        finish(ctx, d, serial, FinishReason::Delivered).await;
        return;
    }
    let error = transient.unwrap_or_else(|| "451 4.4.0 not delivered".into());
    let deferral = ctx
        .queue
        .borrow_mut()
        .defer(d.id, d.attempt, UnixTime(ctx.now.get()), &error);
    match deferral {
        Ok(Deferral::Retry(deferred)) => {
            ctx.model.borrow_mut().stats.deferred += 1;
            if let Err(e) = ctx.spool.record_deferral(d.id, &deferred).await {
                expect_transient(ctx, serial, &e);
            }
            // A "delayed" DSN at the second deferral, then its record (as
            // the recorder's delay_warning_time does): one more kind of
            // state record crossing segments, reclaims and restarts.
            if deferred.attempts == 2 && send_dsn(ctx).await {
                if let Err(e) = ctx.spool.record_delay_notice(d.id).await {
                    expect_transient(ctx, serial, &e);
                }
            }
        }
        Ok(Deferral::Expired(dispatch)) => Box::pin(expire(ctx, dispatch, serial)).await,
        Err(_) => {} // stale: the queue gave this attempt up already
    }
}

/// The lifetime is over: a DSN goes to the sender, then every pending
/// recipient expires and the message is finished. If any step fails, the
/// queue hands the expiry out again after its deadline.
async fn expire(ctx: &Ctx, d: Dispatch, serial: u64) {
    let pending = pending_of(ctx, d.id);
    if !send_dsn(ctx).await {
        return;
    }
    for index in pending {
        if !record_outcome(ctx, d.id, serial, index, OutcomeKind::Expired).await {
            return;
        }
    }
    finish(ctx, d, serial, FinishReason::Expired).await;
}

/// Recipients of `id` still to be tried.
fn pending_of(ctx: &Ctx, id: SpoolId) -> Vec<u32> {
    ctx.queue
        .borrow()
        .pending_recipients(id)
        .unwrap_or_default()
}

async fn finish(ctx: &Ctx, d: Dispatch, serial: u64, reason: FinishReason) {
    if !ctx.queue.borrow().is_current(d.id, d.attempt) {
        return; // another attempt holds it now
    }
    ctx.model.borrow_mut().finishing.insert(serial);
    match ctx.spool.finish(d.id, reason).await {
        Ok(()) => {
            ctx.note(format!("finished serial {serial} ({})", d.id));
            ctx.model.borrow_mut().finished(serial);
            ctx.queue.borrow_mut().remove(d.id);
        }
        Err(e) => {
            // Still live: the queue hands it out again after the attempt's
            // deadline, and that attempt finishes it. The marker may have
            // reached the page cache all the same (a failed sync), so a
            // restart may find the message finished: it stays `finishing`.
            ctx.note(format!("finish of serial {serial} failed: {e}"));
            expect_transient(ctx, serial, &e);
            ctx.model.borrow_mut().stats.finish_failed += 1;
        }
    }
}

#[cfg(test)]
mod tests;
