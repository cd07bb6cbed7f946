//! The simulated disk behind the spool's I/O seam: every write, sync,
//! allocation, create and remove becomes a pending operation that the
//! simulation completes when its schedule says (in any order, or with a
//! fault), and the disk remembers which bytes and directory entries an
//! fsync made durable, so a power cut can throw away everything else.
//! Files live in a real directory (recovery and reads use mmap), but what
//! survives a crash is decided here. Tests only; it decides no schedule.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use rand::rngs::StdRng;
use rand::Rng;

use crate::spool::io::{SegmentFile, SegmentStore};

/// One operation issued through the seam, waiting to be completed.
#[derive(Debug, Clone)]
pub(crate) enum OpKind {
    Create,
    Remove,
    SyncDir,
    Write { pos: u64, data: Vec<u8> },
    SyncData,
    Allocate { len: u64 },
}

/// Faults the schedule can inject when it completes an operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fault {
    None,
    /// EIO (any op); for a write, a short write of part of the buffer.
    Eio,
}

#[derive(Debug)]
struct Op {
    path: PathBuf,
    kind: OpKind,
    /// Disk-wide sequence number when the op was issued (a sync covers
    /// what completed before it was issued).
    issued_at: u64,
    waker: Option<Waker>,
    /// Dropped by its caller (cancelled): completed later or never, like
    /// an io_uring request whose future went away.
    orphan: bool,
}

/// One write that reached the page cache but is not known durable.
#[derive(Debug, Clone)]
struct Unsynced {
    seq: u64,
    pos: u64,
    data: Vec<u8>,
    /// A sync that covered it failed: the kernel may have dropped it, and
    /// no later sync can make it durable.
    poisoned: bool,
}

/// What the disk knows of one file.
#[derive(Debug, Default, Clone)]
struct FileState {
    /// Contents a power cut keeps for sure.
    durable: Vec<u8>,
    unsynced: Vec<Unsynced>,
    /// Allocation (fallocate) length, and the part of it a sync covered.
    allocated: u64,
    allocated_unsynced: Vec<(u64, u64)>,
    /// Directory entry: when created (seq) and whether a directory sync
    /// covered it; when removed, likewise.
    created: Option<(u64, bool)>,
    removed: Option<(u64, bool)>,
}

/// The whole simulated device, shared by the store and its files.
pub(crate) struct SimDisk {
    seq: Cell<u64>,
    next_op: Cell<u64>,
    ops: RefCell<BTreeMap<u64, Op>>,
    results: RefCell<BTreeMap<u64, io::Result<usize>>>,
    files: RefCell<HashMap<PathBuf, FileState>>,
    /// Allocations and creates fail with ENOSPC while set.
    pub full: Cell<bool>,
}

impl SimDisk {
    pub(crate) fn new() -> Rc<SimDisk> {
        Rc::new(SimDisk {
            seq: Cell::new(0),
            next_op: Cell::new(0),
            ops: RefCell::new(BTreeMap::new()),
            results: RefCell::new(BTreeMap::new()),
            files: RefCell::new(HashMap::new()),
            full: Cell::new(false),
        })
    }

    fn tick(&self) -> u64 {
        let s = self.seq.get() + 1;
        self.seq.set(s);
        s
    }

    fn issue(&self, path: &Path, kind: OpKind) -> u64 {
        let id = self.next_op.get();
        self.next_op.set(id + 1);
        let issued_at = self.tick();
        self.ops.borrow_mut().insert(
            id,
            Op {
                path: path.to_owned(),
                kind,
                issued_at,
                waker: None,
                orphan: false,
            },
        );
        id
    }

    /// Operations waiting to be completed, in issue order.
    pub(crate) fn pending(&self) -> Vec<u64> {
        self.ops.borrow().keys().copied().collect()
    }

    /// A short description of a pending operation, for traces.
    pub(crate) fn describe(&self, id: u64) -> String {
        match self.ops.borrow().get(&id) {
            Some(op) => {
                // The directory and file names, never the temporary root,
                // so traces of one seed compare equal.
                let depth = if matches!(op.kind, OpKind::SyncDir) {
                    1
                } else {
                    2
                };
                let mut parts = op.path.iter().rev().take(depth).collect::<Vec<_>>();
                parts.reverse();
                let name: PathBuf = parts.into_iter().collect();
                let kind = match &op.kind {
                    OpKind::Write { pos, data } => format!("write {pos}+{}", data.len()),
                    k => format!("{k:?}"),
                };
                format!("{kind} {}", name.display())
            }
            None => "gone".into(),
        }
    }

    /// Completes operation `id` with `fault`: applies its effect to the
    /// real file and to the durability model, and wakes its caller.
    pub(crate) fn complete(&self, id: u64, fault: Fault, rng: &mut StdRng) {
        let Some(op) = self.ops.borrow_mut().remove(&id) else {
            return;
        };
        let result = self.apply(&op, fault, rng);
        if !op.orphan {
            self.results.borrow_mut().insert(id, result);
            if let Some(w) = op.waker {
                w.wake();
            }
        }
    }

    /// Forgets an orphaned operation without applying it.
    pub(crate) fn forget(&self, id: u64) {
        let orphan = self.ops.borrow().get(&id).is_some_and(|op| op.orphan);
        if orphan {
            self.ops.borrow_mut().remove(&id);
        }
    }

    pub(crate) fn is_orphan(&self, id: u64) -> bool {
        self.ops.borrow().get(&id).is_some_and(|op| op.orphan)
    }

    fn apply(&self, op: &Op, fault: Fault, rng: &mut StdRng) -> io::Result<usize> {
        let eio = || io::Error::from_raw_os_error(libc::EIO);
        let enospc = || io::Error::from_raw_os_error(libc::ENOSPC);
        let mut files = self.files.borrow_mut();
        match &op.kind {
            OpKind::Create => {
                if fault == Fault::Eio {
                    return Err(eio());
                }
                if self.full.get() {
                    return Err(enospc());
                }
                std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create_new(true)
                    .open(&op.path)?;
                let seq = self.tick();
                files.insert(
                    op.path.clone(),
                    FileState {
                        created: Some((seq, false)),
                        ..FileState::default()
                    },
                );
                Ok(0)
            }
            OpKind::Remove => {
                if fault == Fault::Eio {
                    return Err(eio());
                }
                std::fs::remove_file(&op.path)?;
                let seq = self.tick();
                if let Some(f) = files.get_mut(&op.path) {
                    f.removed = Some((seq, false));
                }
                Ok(0)
            }
            OpKind::SyncDir => {
                if fault == Fault::Eio {
                    return Err(eio());
                }
                for (path, f) in files.iter_mut() {
                    if path.parent() != Some(op.path.as_path()) {
                        continue;
                    }
                    if let Some((s, durable)) = &mut f.created {
                        *durable |= *s < op.issued_at;
                    }
                    if let Some((s, durable)) = &mut f.removed {
                        *durable |= *s < op.issued_at;
                    }
                }
                // A durable removal is final: forget the file.
                files.retain(|_, f| !matches!(f.removed, Some((_, true))));
                Ok(0)
            }
            OpKind::Write { pos, data } => {
                let f = files.get_mut(&op.path).ok_or_else(eio)?;
                if f.removed.is_some() {
                    // Writes to an unlinked file succeed and vanish; the
                    // model keeps them for a resurrection after a crash.
                }
                let len = match fault {
                    Fault::Eio if data.len() > 1 && rng.gen_bool(0.5) => {
                        rng.gen_range(1..data.len())
                    }
                    Fault::Eio => return Err(eio()),
                    Fault::None => data.len(),
                };
                if f.removed.is_none() {
                    let file = std::fs::OpenOptions::new().write(true).open(&op.path)?;
                    file.write_all_at(&data[..len], *pos)?;
                }
                let seq = self.tick();
                f.unsynced.push(Unsynced {
                    seq,
                    pos: *pos,
                    data: data[..len].to_vec(),
                    poisoned: false,
                });
                Ok(len)
            }
            OpKind::SyncData => {
                let f = files.get_mut(&op.path).ok_or_else(eio)?;
                let covered = |s: u64| s < op.issued_at;
                if fault == Fault::Eio {
                    for w in f.unsynced.iter_mut().filter(|w| covered(w.seq)) {
                        w.poisoned = true;
                    }
                    return Err(eio());
                }
                let (done, rest): (Vec<_>, Vec<_>) = f
                    .unsynced
                    .drain(..)
                    .partition(|w| covered(w.seq) && !w.poisoned);
                f.unsynced = rest;
                for w in done {
                    write_into(&mut f.durable, w.pos, &w.data);
                }
                let (done, rest): (Vec<_>, Vec<_>) = f
                    .allocated_unsynced
                    .drain(..)
                    .partition(|(s, _)| covered(*s));
                f.allocated_unsynced = rest;
                for (_, len) in done {
                    if f.durable.len() < len as usize {
                        f.durable.resize(len as usize, 0);
                    }
                }
                Ok(0)
            }
            OpKind::Allocate { len } => {
                if fault == Fault::Eio {
                    return Err(eio());
                }
                if self.full.get() {
                    return Err(enospc());
                }
                let f = files.get_mut(&op.path).ok_or_else(eio)?;
                if *len > f.allocated {
                    if f.removed.is_none() {
                        let file = std::fs::OpenOptions::new().write(true).open(&op.path)?;
                        if file.metadata()?.len() < *len {
                            file.set_len(*len)?;
                        }
                    }
                    f.allocated = *len;
                    let seq = self.tick();
                    f.allocated_unsynced.push((seq, *len));
                }
                Ok(0)
            }
        }
    }

    /// A power cut: every pending operation is lost, and each file keeps
    /// its durable bytes plus, at random, none, all or a torn prefix of
    /// each write no sync covered; entries whose creation or removal no
    /// directory sync covered may or may not be there. The real directory
    /// is rewritten to that image, which is then all durable.
    pub(crate) fn power_cut(&self, rng: &mut StdRng) -> io::Result<()> {
        for op in std::mem::take(&mut *self.ops.borrow_mut()).into_values() {
            drop(op.waker);
        }
        self.results.borrow_mut().clear();
        let files = std::mem::take(&mut *self.files.borrow_mut());
        let mut kept = HashMap::new();
        // In path order, so the random choices replay for a seed.
        let mut files: Vec<(PathBuf, FileState)> = files.into_iter().collect();
        files.sort_by(|a, b| a.0.cmp(&b.0));
        for (path, f) in files {
            let exists = match (f.created, f.removed) {
                (_, Some((_, true))) => false,
                (_, Some((_, false))) => rng.gen_bool(0.5),
                (Some((_, false)), None) => rng.gen_bool(0.5),
                _ => true,
            };
            if !exists {
                match std::fs::remove_file(&path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e),
                }
                continue;
            }
            let mut image = f.durable.clone();
            for w in &f.unsynced {
                match rng.gen_range(0..3) {
                    0 => {}
                    1 => write_into(&mut image, w.pos, &w.data),
                    _ => {
                        let cut = rng.gen_range(0..=w.data.len());
                        write_into(&mut image, w.pos, &w.data[..cut]);
                    }
                }
            }
            std::fs::write(&path, &image)?;
            kept.insert(
                path,
                FileState {
                    durable: image,
                    allocated: 0,
                    created: Some((0, true)),
                    ..FileState::default()
                },
            );
        }
        *self.files.borrow_mut() = kept;
        Ok(())
    }

    /// Whether the segment file at `path` exists with a durable directory
    /// entry and holds `bytes` at `pos` durably.
    pub(crate) fn holds_durably(&self, path: &Path, pos: u64, bytes: &[u8]) -> Result<(), String> {
        let files = self.files.borrow();
        let f = files.get(path).ok_or("file unknown to the disk")?;
        if f.removed.is_some() {
            return Err("file was deleted".into());
        }
        if !f.created.is_some_and(|(_, durable)| durable) {
            return Err("file's directory entry is not durable".into());
        }
        let end = pos as usize + bytes.len();
        if f.durable.len() < end || &f.durable[pos as usize..end] != bytes {
            return Err("record bytes are not durable".into());
        }
        Ok(())
    }
}

fn write_into(image: &mut Vec<u8>, pos: u64, data: &[u8]) {
    let end = pos as usize + data.len();
    if image.len() < end {
        image.resize(end, 0);
    }
    image[pos as usize..end].copy_from_slice(data);
}

/// Waits for the simulation to complete operation `id`.
struct Pending {
    disk: Rc<SimDisk>,
    id: u64,
    done: bool,
}

impl Future for Pending {
    type Output = io::Result<usize>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let result = self.disk.results.borrow_mut().remove(&self.id);
        if let Some(r) = result {
            self.done = true;
            return Poll::Ready(r);
        }
        // An operation lost in a power cut never completes: its caller
        // never hears back.
        if let Some(op) = self.disk.ops.borrow_mut().get_mut(&self.id) {
            op.waker = Some(cx.waker().clone());
        }
        Poll::Pending
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if !self.done {
            if let Some(op) = self.disk.ops.borrow_mut().get_mut(&self.id) {
                op.orphan = true;
                op.waker = None;
            }
            self.disk.results.borrow_mut().remove(&self.id);
        }
    }
}

fn wait(disk: &Rc<SimDisk>, path: &Path, kind: OpKind) -> Pending {
    let id = disk.issue(path, kind);
    Pending {
        disk: Rc::clone(disk),
        id,
        done: false,
    }
}

/// The spool's store on the simulated disk.
#[derive(Clone)]
pub(crate) struct SimStore {
    pub disk: Rc<SimDisk>,
}

/// A segment file on the simulated disk.
pub(crate) struct SimFile {
    disk: Rc<SimDisk>,
    path: PathBuf,
}

impl SegmentFile for SimFile {
    async fn write_at(&self, buf: Vec<u8>, pos: u64) -> io::Result<usize> {
        wait(&self.disk, &self.path, OpKind::Write { pos, data: buf }).await
    }

    async fn sync_data(&self) -> io::Result<()> {
        wait(&self.disk, &self.path, OpKind::SyncData)
            .await
            .map(drop)
    }

    async fn allocate(&self, len: u64) -> io::Result<()> {
        wait(&self.disk, &self.path, OpKind::Allocate { len })
            .await
            .map(drop)
    }
}

impl SegmentStore for SimStore {
    type File = SimFile;

    async fn create(&self, path: &Path) -> io::Result<SimFile> {
        wait(&self.disk, path, OpKind::Create).await?;
        Ok(SimFile {
            disk: Rc::clone(&self.disk),
            path: path.to_owned(),
        })
    }

    async fn remove(&self, path: &Path) -> io::Result<()> {
        wait(&self.disk, path, OpKind::Remove).await.map(drop)
    }

    async fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        wait(&self.disk, dir, OpKind::SyncDir).await.map(drop)
    }
}
