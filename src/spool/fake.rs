//! Test doubles for the I/O seam: the real glommio store wrapped so a test
//! can count, hold back or fail syncs and fail preallocation with ENOSPC,
//! and see the order in which writes and syncs happened. Tests only.

use std::cell::{Cell, RefCell};
use std::io;
use std::path::Path;
use std::rc::Rc;

use super::commit::Signal;
use super::id::SpoolId;
use super::io::{GlommioSegmentFile, GlommioStore, SegmentFile, SegmentStore};

/// What happened, in order, as seen through the seam (plus `Returned`,
/// logged by tests when a store() returns Ok).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Event {
    WriteDone { seq: u32, pos: u64, len: u64 },
    SyncStart { seq: u32, n: u64 },
    SyncDone { seq: u32, n: u64, ok: bool },
    Returned { id: SpoolId, len: u64 },
}

/// Knobs shared by the fake store and its files.
#[derive(Default)]
pub(crate) struct Control {
    pub syncs: Cell<u64>,
    pub hold: Cell<bool>,
    released: Signal,
    /// Fail this many of the next syncs with EIO.
    pub fail_syncs: Cell<u32>,
    pub enospc: Cell<bool>,
    pub events: RefCell<Vec<Event>>,
}

impl Control {
    pub(crate) fn release(&self) {
        self.hold.set(false);
        self.released.notify_all();
    }
    pub(crate) fn log(&self, e: Event) {
        self.events.borrow_mut().push(e);
    }
}

#[derive(Clone, Default)]
pub(crate) struct FakeStore {
    inner: GlommioStore,
    pub ctl: Rc<Control>,
}

pub(crate) struct FakeFile {
    inner: GlommioSegmentFile,
    seq: u32,
    ctl: Rc<Control>,
}

impl SegmentFile for FakeFile {
    async fn write_at(&self, buf: Vec<u8>, pos: u64) -> io::Result<usize> {
        let n = self.inner.write_at(buf, pos).await?;
        self.ctl.log(Event::WriteDone {
            seq: self.seq,
            pos,
            len: n as u64,
        });
        Ok(n)
    }

    async fn sync_data(&self) -> io::Result<()> {
        let n = self.ctl.syncs.get() + 1;
        self.ctl.syncs.set(n);
        self.ctl.log(Event::SyncStart { seq: self.seq, n });
        loop {
            let t = self.ctl.released.ticket();
            if !self.ctl.hold.get() {
                break;
            }
            self.ctl.released.changed(t).await;
        }
        let result = if self.ctl.fail_syncs.get() > 0 {
            self.ctl.fail_syncs.set(self.ctl.fail_syncs.get() - 1);
            Err(io::Error::from_raw_os_error(libc::EIO))
        } else {
            self.inner.sync_data().await
        };
        self.ctl.log(Event::SyncDone {
            seq: self.seq,
            n,
            ok: result.is_ok(),
        });
        result
    }

    async fn allocate(&self, len: u64) -> io::Result<()> {
        if self.ctl.enospc.get() {
            return Err(io::Error::from_raw_os_error(libc::ENOSPC));
        }
        self.inner.allocate(len).await
    }
}

impl SegmentStore for FakeStore {
    type File = FakeFile;

    async fn create(&self, path: &Path) -> io::Result<FakeFile> {
        let seq = path
            .file_stem()
            .and_then(|s| s.to_str())
            .and_then(|s| s.parse().ok())
            .unwrap_or(u32::MAX);
        Ok(FakeFile {
            inner: self.inner.create(path).await?,
            seq,
            ctl: Rc::clone(&self.ctl),
        })
    }

    async fn remove(&self, path: &Path) -> io::Result<()> {
        self.inner.remove(path).await
    }

    async fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.inner.sync_dir(dir).await
    }
}
