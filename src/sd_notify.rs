//! The systemd notification protocol (sd_notify): readiness, reload and
//! stop messages as one unix datagram each to `$NOTIFY_SOCKET`. It only
//! formats and sends; it refuses to decide when the server is ready and
//! does nothing at all when spate does not run under a notifying manager.

use std::io;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::path::Path;

/// The environment variable systemd sets for `Type=notify` services.
pub const NOTIFY_SOCKET_ENV: &str = "NOTIFY_SOCKET";
/// Longest STATUS text sent: systemd shows one line, keep it short.
const MAX_STATUS: usize = 200;

/// Why a notification could not be sent.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error("NOTIFY_SOCKET {0:?} is neither an absolute path nor an abstract name (@...)")]
    BadAddress(String),
    #[error("sending to NOTIFY_SOCKET {address}: {source}")]
    Send { address: String, source: io::Error },
}

/// One message to the service manager.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// Every listener is bound and every shard serves.
    Ready { status: String },
    /// A reload started; `monotonic_usec` is CLOCK_MONOTONIC in
    /// microseconds, which `Type=notify-reload` managers require.
    Reloading { monotonic_usec: u64, status: String },
    /// Shutting down.
    Stopping { status: String },
}

impl State {
    /// The datagram's text: newline-separated `KEY=value` assignments.
    pub fn encode(&self) -> String {
        let (head, status) = match self {
            State::Ready { status } => ("READY=1".to_owned(), status),
            State::Reloading {
                monotonic_usec,
                status,
            } => (
                format!("RELOADING=1\nMONOTONIC_USEC={monotonic_usec}"),
                status,
            ),
            State::Stopping { status } => ("STOPPING=1".to_owned(), status),
        };
        // A newline would start another assignment: flatten it.
        let status: String = status
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .take(MAX_STATUS)
            .collect();
        format!("{head}\nSTATUS={status}\n")
    }
}

/// A connection to the service manager, or nothing when not run by one.
#[derive(Debug)]
pub struct Notifier {
    target: Option<(UnixDatagram, SocketAddr, String)>,
}

impl Notifier {
    /// Reads `$NOTIFY_SOCKET`. Unset or empty: a notifier that sends
    /// nothing. The variable is left in place (spate starts no children
    /// that could mistake it for theirs).
    pub fn from_env() -> Result<Notifier, NotifyError> {
        match std::env::var(NOTIFY_SOCKET_ENV) {
            Ok(address) if !address.is_empty() => Notifier::to_address(&address),
            _ => Ok(Notifier { target: None }),
        }
    }

    /// A notifier for `address`: an absolute path, or `@name` for a
    /// Linux abstract socket.
    pub fn to_address(address: &str) -> Result<Notifier, NotifyError> {
        let bad = || NotifyError::BadAddress(address.to_owned());
        let addr = if let Some(name) = address.strip_prefix('@') {
            use std::os::linux::net::SocketAddrExt;
            SocketAddr::from_abstract_name(name.as_bytes()).map_err(|_| bad())?
        } else if address.starts_with('/') {
            SocketAddr::from_pathname(Path::new(address)).map_err(|_| bad())?
        } else {
            return Err(bad());
        };
        let socket = UnixDatagram::unbound().map_err(|source| NotifyError::Send {
            address: address.to_owned(),
            source,
        })?;
        Ok(Notifier {
            target: Some((socket, addr, address.to_owned())),
        })
    }

    /// Whether a service manager listens.
    pub fn is_active(&self) -> bool {
        self.target.is_some()
    }

    /// Sends one state; a no-op without a manager.
    pub fn send(&self, state: &State) -> Result<(), NotifyError> {
        let Some((socket, addr, address)) = &self.target else {
            return Ok(());
        };
        socket
            .send_to_addr(state.encode().as_bytes(), addr)
            .map(drop)
            .map_err(|source| NotifyError::Send {
                address: address.clone(),
                source,
            })
    }
}

/// CLOCK_MONOTONIC now, in microseconds (what `MONOTONIC_USEC` means).
pub fn monotonic_usec() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // clock_gettime with a valid clock id and a valid pointer cannot fail.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    (now.tv_sec as u64) * 1_000_000 + (now.tv_nsec as u64) / 1_000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_encode_as_systemd_expects() {
        let ready = State::Ready {
            status: "serving on 2 cores".into(),
        };
        assert_eq!(ready.encode(), "READY=1\nSTATUS=serving on 2 cores\n");
        let reloading = State::Reloading {
            monotonic_usec: 42,
            status: "reloading\nREADY=1".into(),
        };
        assert_eq!(
            reloading.encode(),
            "RELOADING=1\nMONOTONIC_USEC=42\nSTATUS=reloading READY=1\n"
        );
        let stopping = State::Stopping {
            status: String::new(),
        };
        assert_eq!(stopping.encode(), "STOPPING=1\nSTATUS=\n");
    }

    #[test]
    fn a_relative_address_is_refused() {
        assert!(matches!(
            Notifier::to_address("run/notify"),
            Err(NotifyError::BadAddress(_))
        ));
        assert!(!Notifier { target: None }.is_active());
    }

    #[test]
    fn datagrams_reach_path_and_abstract_sockets() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let server = UnixDatagram::bind(&path).unwrap();
        let notifier = Notifier::to_address(path.to_str().unwrap()).unwrap();
        notifier
            .send(&State::Ready {
                status: "ok".into(),
            })
            .unwrap();
        let mut buf = [0u8; 256];
        let n = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1\nSTATUS=ok\n");

        use std::os::linux::net::SocketAddrExt;
        let name = format!("spate-test-{}", std::process::id());
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let server = UnixDatagram::bind_addr(&addr).unwrap();
        let notifier = Notifier::to_address(&format!("@{name}")).unwrap();
        notifier
            .send(&State::Stopping {
                status: "bye".into(),
            })
            .unwrap();
        let n = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"STOPPING=1\nSTATUS=bye\n");
    }

    #[test]
    fn the_monotonic_clock_moves_forward() {
        let a = monotonic_usec();
        let b = monotonic_usec();
        assert!(a > 0 && b >= a);
    }
}
