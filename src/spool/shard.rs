//! One core's spool: stores messages durably with group commit, records
//! per-recipient outcomes, deferrals and finished messages, reclaims
//! segments and reads messages back. Single
//! threaded by design (Rc/RefCell/Cell, no locks, not Send); it refuses to
//! schedule deliveries or to choose SMTP replies.
//!
//! Failure policy, in one place:
//! - disk full: preallocation fails before any byte is written; the
//!   caller gets `DiskFull` and nothing is on disk.
//! - failed sync (or write): every message of the batch gets `SyncFailed`,
//!   the segment is retired, and each failed message gets a
//!   Finished(Discarded) marker in a fresh segment, so recovery never
//!   delivers a message whose client was told 451. If even that marker
//!   cannot be made durable it is logged: after a restart the message may
//!   then be delivered although the client was told to retry, a duplicate,
//!   the lesser evil next to losing an acknowledged message.
//! - a store cancelled midway (the session went away) is discarded the
//!   same way by the next store, finish or close.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use memmap2::Mmap;

use crate::envelope::Envelope;
use crate::metrics::Latency;

use super::commit::{Gate, Signal};
use super::error::SpoolError;
use super::id::{SegmentId, SpoolId, TRACE_ID_LEN};
use super::io::{GlommioStore, SegmentStore};
use super::layout;
use super::ledger::Ledger;
use super::reader::{self, StoredMessage};
use super::record::{self, FinishReason, StateChange, StateRecord};
use super::recovery;
use super::segment::{classify, Segment};
use super::state::{self, Deferred, DeliveryState, RecipientOutcome};

/// Sizes that shape the segment files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpoolConfig {
    /// A segment rolls over when the next record would pass this size (a
    /// larger single message gets a segment of its own). At most 4 GiB,
    /// since record offsets are 32 bits.
    pub segment_size: u64,
    /// Preallocation step: each fallocate reserves this much ahead, so disk
    /// full is detected before writing and costs one call per chunk.
    pub preallocate_chunk: u64,
}

impl Default for SpoolConfig {
    fn default() -> Self {
        SpoolConfig {
            segment_size: 64 << 20,
            preallocate_chunk: 4 << 20,
        }
    }
}

/// A message found by recovery at open, still to be delivered: what the
/// queue needs of it. Not its envelope: a million of them would cost
/// hundreds of MiB at once (issue 13); `Spool::read_message` reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveredMessage {
    pub id: SpoolId,
    /// Recipients in the envelope.
    pub recipients: usize,
    /// Each recipient's domain (lower case), in envelope order, and the
    /// tenant: for the queue's census.
    pub domains: Box<[Box<str>]>,
    pub tenant: Option<Box<str>>,
    /// The envelope's `received_at` (seconds since the Unix epoch).
    pub received_at: u64,
    pub body_len: u64,
    /// Finished recipients, attempts, next attempt and last error, so the
    /// queue resumes where it stopped instead of starting over.
    pub delivery: DeliveryState,
}

/// The durable message store of one shard (one core). See the module
/// documentation for its failure policy.
pub struct Spool<S: SegmentStore> {
    store: S,
    spool_dir: PathBuf,
    shard: u8,
    config: SpoolConfig,
    /// Serialises reservation, roll-over and preallocation.
    gate: Gate,
    active: RefCell<Option<Rc<Segment<S::File>>>>,
    next_seq: Cell<u32>,
    ledger: RefCell<Ledger>,
    maps: RefCell<HashMap<SegmentId, Rc<Mmap>>>,
    busy: Cell<usize>,
    idle: Signal,
    closed: Cell<bool>,
    reclaiming: Cell<bool>,
    /// Messages whose store was cancelled after space was reserved: their
    /// record may reach the disk, so they get a Discarded marker later.
    abandoned: RefCell<Vec<(SpoolId, u32)>>,
    /// How long each group-commit fdatasync took, for the metrics.
    sync_latency: RefCell<Latency>,
}

/// Counts an operation in progress, for `close`.
struct Busy<'a>(&'a Cell<usize>, &'a Signal);

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.0.set(self.0.get() - 1);
        self.1.notify_all();
    }
}

/// Ends a reserved write in the ledger however the operation ends; if a
/// message store is dropped before it completed, queues the message for a
/// Discarded marker.
struct InFlight<'a> {
    ledger: &'a RefCell<Ledger>,
    abandoned: &'a RefCell<Vec<(SpoolId, u32)>>,
    seg: SegmentId,
    message: Option<(SpoolId, u32)>,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.ledger.borrow_mut().end_write(self.seg);
        if let Some(m) = self.message.take() {
            self.abandoned.borrow_mut().push(m);
        }
    }
}

/// Keeps a segment being opened from reclaim until `roll` made it active
/// (or gave up on it), however `roll` ends.
struct Opening<'a> {
    ledger: &'a RefCell<Ledger>,
    seg: SegmentId,
}

impl<'a> Opening<'a> {
    fn new(ledger: &'a RefCell<Ledger>, seg: SegmentId) -> Self {
        ledger.borrow_mut().begin_write(seg);
        Opening { ledger, seg }
    }
}

impl Drop for Opening<'_> {
    fn drop(&mut self) {
        self.ledger.borrow_mut().end_write(self.seg);
    }
}

/// Clears the reclaim flag even if a reclaim is cancelled.
struct Reclaiming<'a>(&'a Cell<bool>);

impl Drop for Reclaiming<'_> {
    fn drop(&mut self) {
        self.0.set(false);
    }
}

impl Spool<GlommioStore> {
    /// Opens the shard's spool with the production (io_uring) store,
    /// recovering `shard` and the adopted shard directories.
    pub async fn open(
        spool_dir: &Path,
        shard: u8,
        adopt: &[u8],
        config: SpoolConfig,
    ) -> Result<(Spool<GlommioStore>, Vec<RecoveredMessage>), SpoolError> {
        Spool::open_with(GlommioStore, spool_dir, shard, adopt, config).await
    }
}

impl<S: SegmentStore> Spool<S> {
    /// Opens with any store (tests inject faults this way). Recovery reads
    /// every segment of `shard` and of the `adopt`ed shard directories
    /// (after the core count shrank, directory `d` is adopted by shard
    /// `d % count`), plus the Finished markers of all other directories;
    /// it quarantines damaged records and returns the live messages in
    /// spool order. New records go to a new segment, never after a possibly
    /// torn tail. Recovery reads with blocking calls (mmap, std::fs): it
    /// runs once at startup, before the shard serves traffic.
    pub async fn open_with(
        store: S,
        spool_dir: &Path,
        shard: u8,
        adopt: &[u8],
        config: SpoolConfig,
    ) -> Result<(Self, Vec<RecoveredMessage>), SpoolError> {
        if config.segment_size == 0 || config.segment_size > 1 << 32 {
            return Err(SpoolError::Config("segment_size must be 1 byte to 4 GiB"));
        }
        if config.preallocate_chunk == 0 {
            return Err(SpoolError::Config("preallocate_chunk must not be zero"));
        }
        let own_dir = layout::shard_dir(spool_dir, shard);
        if !own_dir.is_dir() {
            std::fs::create_dir_all(&own_dir)
                .map_err(|e| SpoolError::io("creating", &own_dir, e))?;
            store
                .sync_dir(spool_dir)
                .await
                .map_err(|e| SpoolError::io("syncing directory", spool_dir, e))?;
        }
        let mut owned: BTreeSet<u8> = adopt.iter().copied().collect();
        owned.insert(shard);

        let survey = recovery::survey(spool_dir, &owned)?;
        recovery::quarantine(spool_dir, &survey.damage);

        let mut ledger = Ledger::default();
        for seg in survey.segments.iter().filter(|s| owned.contains(&s.shard)) {
            ledger.add_segment(*seg);
        }
        let mut recovered = Vec::new();
        for (id, found, delivery) in survey.live_with_state() {
            ledger.add_live(id, found.crc);
            recovered.push(RecoveredMessage {
                id,
                recipients: found.recipients,
                domains: found.domains.clone(),
                tenant: found.tenant.clone(),
                received_at: found.received_at,
                body_len: found.body_len,
                delivery,
            });
        }
        // State records keep their segment only while their message lives.
        for (rec, holder) in &survey.states {
            if !owned.contains(&holder.shard) {
                continue;
            }
            let target = rec.target.segment();
            if owned.contains(&target.shard) {
                if ledger.live_crc(rec.target) == Some(rec.target_crc) {
                    ledger.pin(*holder, rec.target);
                }
            } else if !survey.is_finished(rec.target, rec.target_crc)
                && survey.segments.contains(&target)
            {
                // Another shard owns the message now and may finish it at
                // any time without telling us: keep the state while its
                // segment exists (checked on disk, as for markers).
                ledger.add_dependency(*holder, target, false);
            }
        }
        let mut max_seq = None;
        for m in &survey.markers {
            let target = m.target.segment();
            if target.shard == shard {
                max_seq = max_seq.max(Some(target.seq));
            }
            if !owned.contains(&m.holder.shard) {
                continue;
            }
            let found = survey.messages.get(&m.target);
            if found.is_some_and(|f| f.crc == m.target_crc) {
                ledger.add_dependency(m.holder, target, true);
            } else if !owned.contains(&target.shard) && survey.segments.contains(&target) {
                ledger.add_dependency(m.holder, target, false);
            }
        }
        for seg in survey.segments.iter().filter(|s| s.shard == shard) {
            max_seq = max_seq.max(Some(seg.seq));
        }
        let next_seq = max_seq.map_or(0, |s| s + 1);
        tracing::info!(shard, adopted = ?adopt, live = recovered.len(),
            quarantined = survey.damage.len(), "spool recovered");
        // Before the queue is built from `recovered`: it can take this room.
        drop(survey);

        let spool = Spool {
            store,
            spool_dir: spool_dir.to_owned(),
            shard,
            config,
            gate: Gate::default(),
            active: RefCell::new(None),
            next_seq: Cell::new(next_seq),
            ledger: RefCell::new(ledger),
            maps: RefCell::new(HashMap::new()),
            busy: Cell::new(0),
            idle: Signal::default(),
            closed: Cell::new(false),
            reclaiming: Cell::new(false),
            abandoned: RefCell::new(Vec::new()),
            sync_latency: RefCell::new(Latency::default()),
        };
        spool.reclaim().await;
        Ok((spool, recovered))
    }

    /// The shard this spool writes for.
    pub fn shard(&self) -> u8 {
        self.shard
    }

    /// The segment new records go to, if one was opened yet.
    pub fn active_segment(&self) -> Option<SegmentId> {
        self.active.borrow().as_ref().map(|s| s.id)
    }

    fn enter(&self) -> Result<Busy<'_>, SpoolError> {
        if self.closed.get() {
            return Err(SpoolError::Closed);
        }
        self.busy.set(self.busy.get() + 1);
        Ok(Busy(&self.busy, &self.idle))
    }

    /// Stores a message; when this returns Ok the message is durable (an
    /// fdatasync that began after its bytes were written has succeeded), so
    /// the session may answer 250. The body is written without a copy.
    /// Many tasks may call this at once: they share syncs.
    pub async fn store(&self, envelope: &Envelope, body: Vec<u8>) -> Result<SpoolId, SpoolError> {
        self.store_traced(envelope, body, None).await
    }

    /// [`Spool::store`], writing the id the message gets (16 hex digits,
    /// as it is shown) into `body` at `trace_id_at` first: the `id` clause
    /// of the session's Received header, so a reader of the message can
    /// find it in the logs. The id is where the record goes, known only
    /// once its space is reserved; the 16 bytes there are replaced.
    pub async fn store_traced(
        &self,
        envelope: &Envelope,
        body: Vec<u8>,
        trace_id_at: Option<usize>,
    ) -> Result<SpoolId, SpoolError> {
        let _busy = self.enter()?;
        self.discard_abandoned().await;
        let mut body = body;
        let draft = record::MessageDraft::new(envelope, body.len());
        let (seg, offset, rolled) = self.reserve(draft.len()).await?;
        // roll() refuses sequence numbers past 24 bits, so this holds.
        let id = SpoolId::new(seg.id, offset).ok_or(SpoolError::SequenceExhausted(self.shard))?;
        if let Some(slot) = trace_id_at.and_then(|at| body.get_mut(at..at + TRACE_ID_LEN)) {
            slot.copy_from_slice(&id.hex());
        }
        let rec = draft.seal(body);
        let crc = rec.crc;
        let mut in_flight = InFlight {
            ledger: &self.ledger,
            abandoned: &self.abandoned,
            seg: seg.id,
            message: None,
        };
        self.ledger.borrow_mut().add_live(id, crc);
        in_flight.message = Some((id, crc));
        let head_len = rec.head.len() as u64;
        let mut result = seg.write(rec.head, u64::from(offset)).await;
        if result.is_ok() && !rec.body.is_empty() {
            result = seg.write(rec.body, u64::from(offset) + head_len).await;
        }
        if result.is_ok() {
            result = seg.commit(&self.sync_latency).await;
        }
        in_flight.message = None;
        drop(in_flight);
        match result {
            Ok(()) => {
                if rolled {
                    self.reclaim().await;
                }
                Ok(id)
            }
            Err(e) => {
                tracing::warn!(%id, error = %e, "message not kept; discarding it");
                self.discard(id, crc).await;
                Err(e)
            }
        }
    }

    /// Marks a message finished (delivered, bounced, deleted...), durably,
    /// through the same group commit, then deletes segments that no longer
    /// hold anything needed.
    pub async fn finish(&self, id: SpoolId, reason: FinishReason) -> Result<(), SpoolError> {
        let _busy = self.enter()?;
        self.discard_abandoned().await;
        let crc = self
            .ledger
            .borrow()
            .live_crc(id)
            .ok_or(SpoolError::UnknownMessage(id))?;
        let holder = self.append_marker(id, crc, reason).await?;
        self.ledger.borrow_mut().finish(id, holder);
        self.reclaim().await;
        Ok(())
    }

    /// Records how recipient `index` (its position in the envelope) of a
    /// live message ended, durably (same group commit as messages): once
    /// this returns, a restart will not try that recipient again, and a
    /// DSN built after a restart can still quote `outcome.reply`. Texts
    /// are cut to [`state::MAX_STATE_TEXT`] bytes. The record keeps its
    /// segment only until the message is finished.
    pub async fn record_recipient_outcome(
        &self,
        id: SpoolId,
        index: u32,
        outcome: &RecipientOutcome,
    ) -> Result<(), SpoolError> {
        let outcome = RecipientOutcome {
            kind: outcome.kind,
            reply: state::bounded(&outcome.reply).to_owned(),
            remote_mta: outcome
                .remote_mta
                .as_deref()
                .map(|m| state::bounded(m).to_owned()),
        };
        self.append_state(id, StateChange::Outcome { index, outcome }, true)
            .await
    }

    /// Records a temporary failure of a live message and when to try it
    /// next. Returns once the record is written but, unlike everything
    /// else here, without waiting for a sync: losing a deferral in a crash
    /// only means an earlier retry with a lower attempt count (the next
    /// group commit on the segment, or `close`, makes it durable anyway).
    /// Never a wrong delivery: deferrals do not finish anything. A torn
    /// deferral at the tail of a segment is silent like any torn tail.
    pub async fn record_deferral(
        &self,
        id: SpoolId,
        deferred: &Deferred,
    ) -> Result<(), SpoolError> {
        let deferred = Deferred {
            attempts: deferred.attempts,
            next_attempt_unix: deferred.next_attempt_unix,
            last_error: state::bounded(&deferred.last_error).to_owned(),
        };
        self.append_state(id, StateChange::Deferred(deferred), false)
            .await
    }

    /// Records that the sender was sent its "delayed" DSN, durably (so a
    /// restart does not send another).
    pub async fn record_delay_notice(&self, id: SpoolId) -> Result<(), SpoolError> {
        self.append_state(id, StateChange::DelayNotice, true).await
    }

    async fn append_state(
        &self,
        id: SpoolId,
        change: StateChange,
        durable: bool,
    ) -> Result<(), SpoolError> {
        let _busy = self.enter()?;
        self.discard_abandoned().await;
        let target_crc = self
            .ledger
            .borrow()
            .live_crc(id)
            .ok_or(SpoolError::UnknownMessage(id))?;
        let rec = record::encode_state(&StateRecord {
            target: id,
            target_crc,
            change,
        });
        let (seg, offset, rolled) = self.reserve(rec.len() as u64).await?;
        let in_flight = InFlight {
            ledger: &self.ledger,
            abandoned: &self.abandoned,
            seg: seg.id,
            message: None,
        };
        // Pinned before the bytes exist, while the write keeps the segment
        // in flight, so no reclaim can slip in between.
        self.ledger.borrow_mut().pin(seg.id, id);
        seg.write(rec, u64::from(offset)).await?;
        if durable {
            seg.commit(&self.sync_latency).await?;
        }
        drop(in_flight);
        if rolled {
            self.reclaim().await;
        }
        Ok(())
    }

    /// The fdatasync times of this spool's group commits so far.
    pub fn sync_latency(&self) -> std::cell::Ref<'_, Latency> {
        self.sync_latency.borrow()
    }

    /// Reads a live message back through a memory map of its segment.
    pub fn read_message(&self, id: SpoolId) -> Result<StoredMessage, SpoolError> {
        if self.ledger.borrow().live_crc(id).is_none() {
            return Err(SpoolError::UnknownMessage(id));
        }
        let seg = id.segment();
        let cached = self.maps.borrow().get(&seg).cloned();
        if let Some(map) = cached {
            if let Some(m) = reader::read_at(&map, id)? {
                return Ok(m);
            }
        }
        // Not mapped yet, or the segment grew since: map it again.
        let path = layout::segment_path(&self.spool_dir, seg);
        let map = recovery::map_segment(&path)?.ok_or(SpoolError::Corrupt {
            id,
            detail: "segment missing or empty",
        })?;
        let map = Rc::new(map);
        self.maps.borrow_mut().insert(seg, Rc::clone(&map));
        reader::read_at(&map, id)?.ok_or(SpoolError::Corrupt {
            id,
            detail: "record extends past the end of its segment",
        })
    }

    /// Graceful shutdown: refuses new work, waits for every store and
    /// finish in progress, discards abandoned stores and syncs once more.
    pub async fn close(&self) -> Result<(), SpoolError> {
        self.closed.set(true);
        loop {
            let t = self.idle.ticket();
            if self.busy.get() == 0 {
                break;
            }
            self.idle.changed(t).await;
        }
        self.discard_abandoned().await;
        let active = self.active.borrow().clone();
        if let Some(seg) = active {
            if !seg.is_retired() {
                seg.commit(&self.sync_latency).await?;
            }
        }
        Ok(())
    }

    /// Reserves `len` bytes in the active segment, rolling over and
    /// preallocating as needed; registers the write in the ledger.
    async fn reserve(&self, len: u64) -> Result<(Rc<Segment<S::File>>, u32, bool), SpoolError> {
        let _gate = self.gate.enter().await;
        let current = self.active.borrow().clone();
        let (seg, rolled) = match current {
            Some(s) if s.fits(len, self.config.segment_size) => (s, false),
            _ => (self.roll().await?, true),
        };
        let offset = seg
            .reserve(len, self.config.preallocate_chunk, self.config.segment_size)
            .await?;
        self.ledger.borrow_mut().begin_write(seg.id);
        // fits() admits a record at offset > 0 only below segment_size <= 4 GiB.
        let offset = u32::try_from(offset).map_err(|_| SpoolError::Config("offset past 4 GiB"))?;
        Ok((seg, offset, rolled))
    }

    /// Opens the next segment: create, fsync the directory (the new entry
    /// must survive a crash), make it active.
    async fn roll(&self) -> Result<Rc<Segment<S::File>>, SpoolError> {
        let seq = self.next_seq.get();
        if seq > SegmentId::MAX_SEQ {
            return Err(SpoolError::SequenceExhausted(self.shard));
        }
        self.next_seq.set(seq + 1);
        let id = SegmentId {
            shard: self.shard,
            seq,
        };
        let path = layout::segment_path(&self.spool_dir, id);
        let file = self
            .store
            .create(&path)
            .await
            .map_err(|e| classify("creating", &path, e))?;
        // From here the file exists: the ledger must know it so it is
        // reclaimed if it never becomes active. Until it is active it
        // counts as being written, or a reclaim running during the
        // directory sync below would delete it (holding nothing yet) and
        // every record then written to it would go to an unlinked file.
        self.ledger.borrow_mut().add_segment(id);
        let _opening = Opening::new(&self.ledger, id);
        let dir = layout::shard_dir(&self.spool_dir, self.shard);
        self.store
            .sync_dir(&dir)
            .await
            .map_err(|e| classify("syncing directory", &dir, e))?;
        let seg = Rc::new(Segment::new(id, path, file));
        let old = self.active.replace(Some(Rc::clone(&seg)));
        let mut ledger = self.ledger.borrow_mut();
        if let Some(old) = old {
            ledger.set_active(old.id, false);
        }
        ledger.set_active(id, true);
        tracing::debug!(segment = %id, "spool segment opened");
        Ok(seg)
    }

    /// Appends a durable Finished marker; returns the segment holding it.
    async fn append_marker(
        &self,
        target: SpoolId,
        target_crc: u32,
        reason: FinishReason,
    ) -> Result<SegmentId, SpoolError> {
        let rec = record::encode_finished(target, target_crc, reason);
        let (seg, offset, _) = self.reserve(rec.len() as u64).await?;
        let _in_flight = InFlight {
            ledger: &self.ledger,
            abandoned: &self.abandoned,
            seg: seg.id,
            message: None,
        };
        seg.write(rec, u64::from(offset)).await?;
        seg.commit(&self.sync_latency).await?;
        Ok(seg.id)
    }

    /// Keeps nothing of a message that was not acknowledged.
    async fn discard(&self, id: SpoolId, crc: u32) {
        match self.append_marker(id, crc, FinishReason::Discarded).await {
            Ok(holder) => {
                self.ledger.borrow_mut().finish(id, holder);
            }
            Err(e) => tracing::error!(%id, error = %e,
                "could not record that a failed message was discarded; \
                 it may be delivered after a restart although the client was told to retry"),
        }
    }

    async fn discard_abandoned(&self) {
        let abandoned = self.abandoned.take();
        for (id, crc) in abandoned {
            tracing::info!(%id, "discarding a message whose store was cancelled");
            self.discard(id, crc).await;
        }
    }

    /// Deletes every segment the ledger says is no longer needed, fsyncing
    /// the directory before dependants may go in turn. Failures are logged
    /// and retried on a later call.
    async fn reclaim(&self) {
        if self.reclaiming.replace(true) {
            return; // the running reclaim loops until nothing is left
        }
        let _flag = Reclaiming(&self.reclaiming);
        loop {
            let spool_dir = &self.spool_dir;
            let candidates = self
                .ledger
                .borrow()
                .reclaimable(|seg| layout::segment_path(spool_dir, seg).exists());
            if candidates.is_empty() {
                return;
            }
            let mut removed = Vec::new();
            let mut failed = false;
            // Make the other shards' removals durable first (see
            // `Ledger::foreign_dirs`); a candidate whose sync failed waits.
            let foreign: BTreeSet<u8> = candidates
                .iter()
                .flat_map(|seg| self.ledger.borrow().foreign_dirs(*seg))
                .collect();
            let mut unsynced = BTreeSet::new();
            for shard in foreign {
                let dir = layout::shard_dir(&self.spool_dir, shard);
                if let Err(e) = self.store.sync_dir(&dir).await {
                    tracing::warn!(dir = %dir.display(), error = %e,
                        "cannot sync another shard's spool directory");
                    unsynced.insert(shard);
                    failed = true;
                }
            }
            let candidates: Vec<SegmentId> = candidates
                .into_iter()
                .filter(|seg| {
                    self.ledger
                        .borrow()
                        .foreign_dirs(*seg)
                        .is_disjoint(&unsynced)
                })
                .collect();
            for seg in candidates {
                self.maps.borrow_mut().remove(&seg);
                let path = layout::segment_path(&self.spool_dir, seg);
                match self.store.remove(&path).await {
                    Ok(()) => removed.push(seg),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => removed.push(seg),
                    Err(e) => {
                        failed = true;
                        tracing::warn!(segment = %seg, error = %e, "cannot delete spool segment");
                    }
                }
            }
            let dirs: BTreeSet<u8> = removed.iter().map(|s| s.shard).collect();
            for shard in dirs {
                let dir = layout::shard_dir(&self.spool_dir, shard);
                match self.store.sync_dir(&dir).await {
                    Ok(()) => {
                        let mut ledger = self.ledger.borrow_mut();
                        for seg in removed.iter().filter(|s| s.shard == shard) {
                            ledger.remove(*seg);
                            tracing::debug!(segment = %seg, "spool segment reclaimed");
                        }
                    }
                    Err(e) => {
                        failed = true;
                        tracing::warn!(dir = %dir.display(), error = %e,
                            "cannot sync spool directory after deleting segments");
                    }
                }
            }
            if failed {
                return;
            }
        }
    }
}
