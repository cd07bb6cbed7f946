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
    /// A recipient bounced or expired: a DSN is owed before finishing.
    pub owes_dsn: bool,
}

/// One message as recovery returned it.
pub(crate) struct Recovered {
    pub shard: usize,
    pub id: SpoolId,
    pub envelope: Envelope,
    /// Recipients with a recorded outcome.
    pub outcomes: BTreeSet<u32>,
    /// Some recorded outcome is a bounce or an expiry.
    pub owes_dsn: bool,
}

/// What every step is checked against.
#[derive(Debug, Default)]
pub(crate) struct Model {
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
                owes_dsn: false,
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
        self.finished.insert(serial);
    }

    /// Checks what recovery found against the model and makes it the new
    /// truth: every live message recovered with its finished recipients,
    /// nothing finished back, nothing unknown; doubtful stores that came
    /// back are live from now on.
    pub(crate) fn recovered(&mut self, found: Vec<Recovered>) {
        let mut problems = Vec::new();
        let mut seen = BTreeSet::new();
        let mut live = BTreeMap::new();
        for Recovered {
            shard,
            id,
            envelope,
            outcomes,
            owes_dsn,
        } in found
        {
            let Some(serial) = Message::serial_of(&envelope) else {
                problems.push(format!("recovered {id} is no message of the simulation"));
                continue;
            };
            if !seen.insert(serial) {
                problems.push(format!("serial {serial} recovered twice (again as {id})"));
                continue;
            }
            if self.finished.contains(&serial) {
                problems.push(format!("finished serial {serial} came back as {id}"));
                continue;
            }
            if let Some(l) = self.live.get(&serial) {
                if l.message.envelope != envelope {
                    problems.push(format!("serial {serial} recovered with another envelope"));
                }
                if let Some(missing) = l.done.iter().find(|i| !outcomes.contains(i)) {
                    problems.push(format!(
                        "serial {serial}: recipient {missing} was recorded finished, \
                         recovery lost it"
                    ));
                }
                let message = Rc::clone(&l.message);
                live.insert(
                    serial,
                    Live {
                        message,
                        shard,
                        id,
                        done: outcomes,
                        owes_dsn,
                    },
                );
            } else if let Some(m) = self.doubtful.get(&serial) {
                if m.envelope != envelope {
                    problems.push(format!("doubtful {serial} recovered with another envelope"));
                }
                self.stats.recovered_doubtful += 1;
                live.insert(
                    serial,
                    Live {
                        message: Rc::clone(m),
                        shard,
                        id,
                        done: outcomes,
                        owes_dsn,
                    },
                );
            } else {
                problems.push(format!("recovered serial {serial} ({id}) was never stored"));
            }
        }
        let gone: Vec<(u64, SpoolId, usize)> = self
            .live
            .iter()
            .filter(|(serial, _)| !seen.contains(serial))
            .map(|(serial, l)| (*serial, l.id, l.shard))
            .collect();
        for (serial, id, shard) in gone {
            if self.finishing.contains(&serial) {
                self.finished.insert(serial);
            } else {
                self.violate(format!(
                    "acknowledged serial {serial} ({id} on shard {shard}) was lost"
                ));
            }
        }
        for p in problems {
            self.violate(p);
        }
        self.live = live;
        self.doubtful.clear();
        self.finishing.clear();
    }
}
