//! `WatchThread`: a thread that sleeps in `poll` on an inotify descriptor
//! and hands each event to a handler, until it is dropped. It decides
//! nothing: the folder watch (IMAP IDLE) and the users file watch give
//! the events their meaning.

use std::ffi::OsStr;
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::thread::JoinHandle;

use inotify::{Event, Inotify};

/// Bytes read from the inotify descriptor at once (many events each).
const EVENT_BUFFER: usize = 16 * 1024;

/// The running thread; dropping it stops the thread.
pub struct WatchThread {
    /// Written to (or dropped) to stop the thread.
    stop: UnixStream,
    thread: Option<JoinHandle<()>>,
}

impl WatchThread {
    /// Starts a thread named `name` that calls `handler` for every event
    /// of `inotify` (after a queue overflow, one event with
    /// `EventMask::Q_OVERFLOW` stands for everything lost).
    pub fn spawn<H>(name: &str, inotify: Inotify, mut handler: H) -> io::Result<WatchThread>
    where
        H: FnMut(&Event<&OsStr>) + Send + 'static,
    {
        let (stop, stop_seen) = UnixStream::pair()?;
        let thread = std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || run(inotify, stop_seen, &mut handler))?;
        Ok(WatchThread {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for WatchThread {
    fn drop(&mut self) {
        let _ = self.stop.write_all(b"x");
        if let Some(thread) = self.thread.take() {
            // The handler may hold the last reference to our owner: never
            // join from the thread itself.
            if thread.thread().id() != std::thread::current().id() {
                let _ = thread.join();
            }
        }
    }
}

fn run(mut inotify: Inotify, mut stop: UnixStream, handler: &mut dyn FnMut(&Event<&OsStr>)) {
    let mut buffer = vec![0u8; EVENT_BUFFER];
    loop {
        let mut fds = [
            libc::pollfd {
                fd: inotify.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: stop.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: `fds` is a valid array of two pollfd for the call.
        let ready = unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) };
        if ready < 0 {
            let error = io::Error::last_os_error();
            if error.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            tracing::warn!(%error, "file watch stopped");
            return;
        }
        if fds[1].revents != 0 {
            let mut byte = [0u8; 1];
            let _ = stop.read(&mut byte);
            return;
        }
        loop {
            match inotify.read_events(&mut buffer) {
                Ok(events) => {
                    let mut any = false;
                    for event in events {
                        any = true;
                        handler(&event);
                    }
                    if !any {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "file watch stopped");
                    return;
                }
            }
        }
    }
}
