//! The I/O seam: the only way the spool writes, allocates, syncs, creates
//! and deletes files, with the glommio (io_uring) implementation used in
//! production. It holds no spool logic; tests wrap it to delay or fail
//! syncs and allocations.

// The spool lives on one LocalExecutor thread: its futures are never sent,
// so the missing `Send` bound that this lint warns about is intended.
#![allow(async_fn_in_trait)]

use std::io;
use std::path::Path;

use glommio::io::{BufferedFile, Directory, OpenOptions};
use glommio::GlommioError;

/// One open segment file, written at explicit offsets.
pub trait SegmentFile {
    /// Writes `buf` at `pos`; the buffer is moved so io_uring can own it
    /// without a copy. May return fewer bytes than given (ENOSPC, EIO).
    async fn write_at(&self, buf: Vec<u8>, pos: u64) -> io::Result<usize>;
    /// fdatasync: after Ok, everything written before the call began is
    /// durable.
    async fn sync_data(&self) -> io::Result<()>;
    /// Makes the file at least `len` bytes long with disk blocks reserved,
    /// so writes below `len` cannot fail with ENOSPC; the new bytes read as
    /// zeros.
    async fn allocate(&self, len: u64) -> io::Result<()>;
}

/// Creates, deletes and makes durable the directory entries of segments.
pub trait SegmentStore {
    type File: SegmentFile + 'static;
    /// Creates a new, empty segment opened read+write; fails if it exists
    /// (a segment is never overwritten).
    async fn create(&self, path: &Path) -> io::Result<Self::File>;
    /// Deletes a segment file.
    async fn remove(&self, path: &Path) -> io::Result<()>;
    /// fsyncs a directory so that created or removed entries survive a
    /// crash.
    async fn sync_dir(&self, dir: &Path) -> io::Result<()>;
}

/// Production store: glommio buffered files through io_uring.
#[derive(Debug, Clone, Copy, Default)]
pub struct GlommioStore;

/// A segment opened by [`GlommioStore`].
#[derive(Debug)]
pub struct GlommioSegmentFile {
    file: BufferedFile,
}

/// glommio's own conversion drops the OS error number of "enhanced"
/// errors; keep it, since ENOSPC must stay recognisable.
fn to_io(e: GlommioError<()>) -> io::Error {
    match e {
        GlommioError::IoError(e) => e,
        GlommioError::EnhancedIoError { source, .. } => source,
        other => io::Error::from(other),
    }
}

impl SegmentFile for GlommioSegmentFile {
    /// A plain `pwrite`: into the page cache it takes microseconds, and
    /// measured under load it costs far less CPU than an io_uring write,
    /// which the kernel hands to an io-wq worker thread for buffered
    /// files (a wake-up and two context switches per write). The sync,
    /// which does block, stays on the ring.
    async fn write_at(&self, buf: Vec<u8>, pos: u64) -> io::Result<usize> {
        use std::os::fd::AsRawFd;
        let fd = self.file.as_raw_fd();
        let mut written = 0;
        while written < buf.len() {
            let rest = &buf[written..];
            // The descriptor belongs to `self.file`, open for writing, and
            // `rest` is a live buffer of `rest.len()` bytes.
            let n = unsafe {
                libc::pwrite(
                    fd,
                    rest.as_ptr().cast(),
                    rest.len(),
                    (pos + written as u64) as libc::off_t,
                )
            };
            match n {
                n if n > 0 => written += n as usize,
                0 => return Err(io::ErrorKind::WriteZero.into()),
                _ => {
                    let e = io::Error::last_os_error();
                    if e.kind() != io::ErrorKind::Interrupted {
                        return Err(e);
                    }
                }
            }
        }
        Ok(written)
    }

    async fn sync_data(&self) -> io::Result<()> {
        self.file.fdatasync().await.map_err(to_io)
    }

    async fn allocate(&self, len: u64) -> io::Result<()> {
        self.file.pre_allocate(len, false).await.map_err(to_io)
    }
}

impl SegmentStore for GlommioStore {
    type File = GlommioSegmentFile;

    async fn create(&self, path: &Path) -> io::Result<GlommioSegmentFile> {
        // Read+write through OpenOptions, never `create`: see DESIGN's
        // glommio pitfalls (write-only handles). Private to the spate
        // user, like the rest of the spool (`private`).
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(super::private::FILE_MODE as libc::mode_t)
            .buffered_open(path)
            .await
            .map_err(to_io)?;
        Ok(GlommioSegmentFile { file })
    }

    async fn remove(&self, path: &Path) -> io::Result<()> {
        glommio::io::remove(path).await.map_err(to_io)
    }

    async fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let d = Directory::open(dir).await.map_err(to_io)?;
        let r = d.sync().await.map_err(to_io);
        let c = d.close().await.map_err(to_io);
        r.and(c)
    }
}
