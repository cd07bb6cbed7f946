//! The simple model the simulation checks the real spool and queue
//! against: which messages were acknowledged, which recipients were
//! recorded finished, which messages were finished, and which writes are
//! still in doubt. It holds no spool code and decides no schedule; it only
//! says what must be true. Tests only.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::rc::Rc;

use crate::envelope::Envelope;
use crate::spool::id::SpoolId;

/// A message the simulation asked the spool to store. The serial is in
/// the envelope's HELO name, so a recovered record names its message.
#[derive(Debug)]
pub(crate) struct Message {
    pub serial: u64,
    pub envelope: Envelope,
    pub body: Vec<u8>,
    /// The record's header and envelope bytes as the spool writes them.
    pub head: Vec<u8>,
}

impl Message {
    pub(crate) fn serial_of(envelope: &Envelope) -> Option<u64> {
        envelope.helo.strip_prefix("sim-")?.parse().ok()
    }
}

/// An acknowledged message not finished yet: the spool must hold it.
#[derive(Debug, Clone)]
pub(crate) struct Live {
    pub message: Rc<Message>,
    /// Index of the shard whose spool and queue hold it now.
    pub shard: usize,
    pub id: SpoolId,
    /// Recipients whose outcome the spool confirmed durable.
    pub done: BTreeSet<u32>,
    /// Acknowledged by the spool. A doubtful store that recovery found
    /// (its record reached the page cache, and a restart without a power
    /// cut read it back) is delivered too, but nothing promised it is
    /// durable: a later power cut may lose it.
    pub acknowledged: bool,
}

/// One message as recovery returned it.
pub(crate) struct Recovered {
    pub shard: usize,
    pub id: SpoolId,
    /// As read back from the spool after recovery, or why it could not be.
    pub envelope: Result<Envelope, String>,
    /// Recipients with a recorded outcome.
    pub outcomes: BTreeSet<u32>,
}

/// What every step is checked against.
#[derive(Debug, Default)]
pub(crate) struct Model {
    /// Every message ever stored, by serial.
    pub messages: BTreeMap<u64, Rc<Message>>,
    /// Acknowledged and not finished, by serial.
    pub live: BTreeMap<u64, Live>,
    /// Stores not acknowledged (in flight, failed or cancelled): after a
    /// crash each may or may not be in the spool.
    pub doubtful: BTreeMap<u64, Rc<Message>>,
    /// Live messages whose finish is in flight: after a crash each may be
    /// finished or still live.
    pub finishing: BTreeSet<u64>,
    /// Finished durably: must never come back.
    pub finished: BTreeSet<u64>,
    /// Not found by a recovery, yet not gone for sure: doubtful stores,
    /// and messages that only a marker no sync confirmed finished (it
    /// reached the page cache, then its sync failed or the process died).
    /// A later power cut may bring them back, to be delivered again.
    pub maybe: BTreeSet<u64>,
    pub next_serial: u64,
    /// The first broken invariant, with what was seen.
    pub violation: Option<String>,
    pub stats: Stats,
    /// The last steps, for a failure report (and all of them printed as
    /// they happen when `print` is set).
    pub trace: VecDeque<String>,
    pub print: bool,
    /// The simulation step, for trace lines.
    pub step: u64,
}

const TRACE_KEPT: usize = 120;

/// What a run did, for the report.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Stats {
    pub acked: u64,
    pub store_failed: u64,
    pub delivered: u64,
    pub bounced: u64,
    pub expired: u64,
    pub deferred: u64,
    pub finish_failed: u64,
    pub crashes: u64,
    pub restarts: u64,
    pub recovered_doubtful: u64,
    pub io_faults: u64,
    pub cancels: u64,
}

impl Model {
    pub(crate) fn new(print: bool) -> Model {
        Model {
            print,
            ..Model::default()
        }
    }

    pub(crate) fn note(&mut self, line: String) {
        let line = format!("[{}] {line}", self.step);
        if self.print {
            eprintln!("{line}");
        }
        if self.trace.len() == TRACE_KEPT {
            self.trace.pop_front();
        }
        self.trace.push_back(line);
    }

    pub(crate) fn violate(&mut self, what: String) {
        if self.violation.is_none() {
            self.violation = Some(what);
        }
    }

    pub(crate) fn serial(&mut self) -> u64 {
        self.next_serial += 1;
        self.next_serial
    }

    /// A store returned Ok: the message is acknowledged.
    pub(crate) fn acked(&mut self, message: &Rc<Message>, shard: usize, id: SpoolId) {
        self.doubtful.remove(&message.serial);
        self.stats.acked += 1;
        if let Some(other) = self.live.values().find(|l| l.shard == shard && l.id == id) {
            let s = other.message.serial;
            self.violate(format!(
                "store of serial {} returned id {id} of live serial {s}",
                message.serial
            ));
        }
        self.live.insert(
            message.serial,
            Live {
                message: Rc::clone(message),
                shard,
                id,
                done: BTreeSet::new(),
                acknowledged: true,
            },
        );
    }

    /// The live serial with spool id `id` on `shard`.
    pub(crate) fn serial_at(&self, shard: usize, id: SpoolId) -> Option<u64> {
        self.live
            .values()
            .find(|l| l.shard == shard && l.id == id)
            .map(|l| l.message.serial)
    }

    /// A finish returned Ok.
    pub(crate) fn finished(&mut self, serial: u64) {
        self.finishing.remove(&serial);
        self.live.remove(&serial);
        self.maybe.remove(&serial);
        self.finished.insert(serial);
    }

    /// Checks what recovery found against the model and makes it the new
    /// truth: every acknowledged message recovered with the recipients
    /// confirmed finished, nothing finished back, nothing never stored.
    /// Whatever may come back (doubtful stores, and messages only a
    /// doubtful marker finished) is live from now on, unacknowledged; what
    /// did not come back stays in doubt for the recoveries to come.
    pub(crate) fn recovered(&mut self, found: Vec<Recovered>) {
        let mut problems = Vec::new();
        let mut live = BTreeMap::new();
        for r in found {
            let envelope = match &r.envelope {
                Ok(envelope) => envelope,
                Err(e) => {
                    problems.push(format!("recovered {} cannot be read: {e}", r.id));
                    continue;
                }
            };
            let Some(serial) = Message::serial_of(envelope) else {
                problems.push(format!(
                    "recovered {} is no message of the simulation",
                    r.id
                ));
                continue;
            };
            if live.contains_key(&serial) {
                problems.push(format!(
                    "serial {serial} recovered twice (again as {})",
                    r.id
                ));
                continue;
            }
            if self.finished.contains(&serial) {
                problems.push(format!("finished serial {serial} came back as {}", r.id));
                continue;
            }
            let Some(message) = self.messages.get(&serial) else {
                problems.push(format!(
                    "recovered serial {serial} ({}) was never stored",
                    r.id
                ));
                continue;
            };
            if message.envelope != *envelope {
                problems.push(format!("serial {serial} recovered with another envelope"));
            }
            let entry = match self.live.get(&serial) {
                Some(l) => {
                    if let Some(missing) = l.done.iter().find(|i| !r.outcomes.contains(i)) {
                        problems.push(format!(
                            "serial {serial}: recipient {missing} was recorded finished, \
                             recovery lost it"
                        ));
                    }
                    // Only outcomes the spool confirmed count as durable:
                    // one read back from the page cache after a failed
                    // sync may still vanish in a later power cut.
                    Live {
                        shard: r.shard,
                        id: r.id,
                        ..l.clone()
                    }
                }
                None if self.doubtful.contains_key(&serial) || self.maybe.contains(&serial) => {
                    self.stats.recovered_doubtful += 1;
                    Live {
                        message: Rc::clone(message),
                        shard: r.shard,
                        id: r.id,
                        done: BTreeSet::new(),
                        acknowledged: false,
                    }
                }
                None => {
                    problems.push(format!(
                        "recovered serial {serial} ({}) was not in the spool",
                        r.id
                    ));
                    continue;
                }
            };
            live.insert(serial, entry);
        }
        for (serial, l) in &self.live {
            if live.contains_key(serial) {
                continue;
            }
            if l.acknowledged && !self.finishing.contains(serial) {
                problems.push(format!(
                    "acknowledged serial {serial} ({} on shard {}) was lost",
                    l.id, l.shard
                ));
            } else {
                self.maybe.insert(*serial);
            }
        }
        for serial in self.doubtful.keys() {
            if !live.contains_key(serial) {
                self.maybe.insert(*serial);
            }
        }
        for serial in live.keys() {
            self.maybe.remove(serial);
        }
        for p in problems {
            self.violate(p);
        }
        self.live = live;
        self.doubtful.clear();
        self.finishing.clear();
    }
}
