//! One server per listening address. spate's cores share each address with
//! SO_REUSEPORT, and the kernel lets any other socket of the same user that
//! sets SO_REUSEPORT join them (a second spate, or another program), which
//! would silently split the connections between two processes. So before
//! the cores bind, the main thread claims every address, twice:
//!
//! 1. A *probe*: a TCP socket bound to the address with SO_REUSEADDR (a
//!    restart is not refused for connections in TIME_WAIT) but without
//!    SO_REUSEPORT, closed at once. The kernel refuses it (EADDRINUSE) when
//!    any socket listens on the address, or on the wildcard address of its
//!    port, whatever its options and owner. spate's own port-0 reservation
//!    (bound, not listening, SO_REUSEADDR) does not refuse it.
//! 2. A *claim*: an abstract Unix socket named after the address, held
//!    (listening, never accepting) for the life of the process. Abstract
//!    names are per network namespace, like TCP addresses, and the kernel
//!    frees them when the process ends, even on `kill -9`. It closes the
//!    window the probe leaves: two servers started at the same instant
//!    both pass their probe before either listens, but only one gets the
//!    claim. Any local user may bind any abstract name, so a claim held by
//!    a process that is neither root nor our own user (asked with
//!    SO_PEERCRED) is not obeyed: that is logged, and the probe alone
//!    decides.
//!
//! It binds nothing that serves; `shard::bind` does.

use std::ffi::OsStr;
use std::net::SocketAddr;
use std::os::unix::ffi::OsStrExt;

use socket2::{Domain, SockAddr, Socket, Type};

use crate::peer;

/// Connections a claim keeps waiting: each refused server leaves one
/// (the claim never accepts). Past that many, a refused server can no
/// longer ask who holds the claim and says only that the address is in
/// use (the probe still refuses it).
const CLAIM_BACKLOG: i32 = 64;

/// The claim of one address; dropping it (or the process ending) releases
/// the address for another server.
#[derive(Debug)]
pub struct AddressClaim {
    /// The listening abstract socket, when the claim is ours.
    _socket: Option<Socket>,
}

/// Why an address cannot be served by this process.
#[derive(Debug, thiserror::Error)]
pub enum ClaimError {
    #[error(
        "{address} is already served by another spate server{}: stop it, or give this one another address",
        holder.map(|pid| format!(" (pid {pid})")).unwrap_or_default()
    )]
    ServedBySpate {
        address: SocketAddr,
        holder: Option<u32>,
    },
    #[error(
        "{address} is already in use by another process (a socket listens on it or on its port's wildcard address); spate shares an address only among its own cores"
    )]
    InUse { address: SocketAddr },
    #[error("cannot check whether {address} is free: {source}")]
    Io {
        address: SocketAddr,
        source: std::io::Error,
    },
}

/// Claims `address` for this process (see the module header), or says who
/// serves it already.
pub fn claim(address: SocketAddr) -> Result<AddressClaim, ClaimError> {
    let io = |source| ClaimError::Io { address, source };
    let name = claim_name(address).map_err(io)?;
    let socket = Socket::new(Domain::UNIX, Type::STREAM, None).map_err(io)?;
    let held = match socket.bind(&name) {
        Ok(()) => {
            socket.listen(CLAIM_BACKLOG).map_err(io)?;
            Some(socket)
        }
        Err(e) if e.raw_os_error() == Some(libc::EADDRINUSE) => {
            match holder(&name) {
                Holder::Trusted(pid) => {
                    return Err(ClaimError::ServedBySpate {
                        address,
                        holder: pid,
                    })
                }
                Holder::Stranger(uid) => tracing::warn!(
                    %address, uid,
                    "the claim of this address is held by a process of another user: ignored; only the bind probe checks that the address is free"
                ),
                Holder::Unknown(e) => tracing::warn!(
                    %address, error = %e,
                    "cannot ask who holds the claim of this address; only the bind probe checks that the address is free"
                ),
            }
            None
        }
        Err(e) => return Err(io(e)),
    };
    probe(address)?;
    Ok(AddressClaim { _socket: held })
}

/// `@spate/listener/<address>`: the abstract name of an address's claim.
fn claim_name(address: SocketAddr) -> std::io::Result<SockAddr> {
    let mut bytes = b"\0spate/listener/".to_vec();
    bytes.extend_from_slice(address.to_string().as_bytes());
    SockAddr::unix(OsStr::from_bytes(&bytes))
}

/// Who holds a claim.
enum Holder {
    /// Root or our own user: another spate server, pid if known.
    Trusted(Option<u32>),
    /// Another user's process, which may not speak for spate.
    Stranger(u32),
    /// The holder could not be reached (its backlog may be full).
    Unknown(std::io::Error),
}

fn holder(name: &SockAddr) -> Holder {
    let ask = || -> std::io::Result<peer::PeerCredentials> {
        let socket = Socket::new(Domain::UNIX, Type::STREAM, None)?;
        // Never wait on a holder that does not accept: a full backlog
        // answers EAGAIN at once.
        socket.set_nonblocking(true)?;
        socket.connect(name)?;
        peer::peer_credentials(&socket)
    };
    match ask() {
        Ok(cred) if peer::is_root_or_self(cred.uid) => {
            Holder::Trusted((cred.pid != 0).then_some(cred.pid))
        }
        Ok(cred) => Holder::Stranger(cred.uid),
        Err(e) => Holder::Unknown(e),
    }
}

/// Binds `address` without SO_REUSEPORT and closes the socket again.
fn probe(address: SocketAddr) -> Result<(), ClaimError> {
    let io = |source| ClaimError::Io { address, source };
    let socket = Socket::new(Domain::for_address(address), Type::STREAM, None).map_err(io)?;
    // IPV6_V6ONLY is left at the system's default, as `shard::bind` does.
    socket.set_reuse_address(true).map_err(io)?;
    match socket.bind(&address.into()) {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EADDRINUSE) => Err(ClaimError::InUse { address }),
        Err(e) => Err(io(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An address of this test process alone (pids are unique while it
    /// runs), port 0.
    fn loopback(test: u8) -> SocketAddr {
        let pid = std::process::id();
        SocketAddr::from(([127, 70 + test, (pid >> 8) as u8, pid as u8], 0))
    }

    #[test]
    fn a_second_claim_of_the_same_address_is_refused() {
        let address = loopback(1);
        let first = claim(address).expect("first claim");
        match claim(address) {
            Err(ClaimError::ServedBySpate { holder, .. }) => {
                assert_eq!(holder, Some(std::process::id()))
            }
            other => panic!("second claim: {other:?}"),
        }
        drop(first);
        claim(address).expect("free again");
    }

    #[test]
    fn a_listening_socket_with_reuseport_is_seen() {
        let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        socket.set_reuse_address(true).unwrap();
        socket.set_reuse_port(true).unwrap();
        socket.bind(&loopback(2).into()).unwrap();
        socket.listen(1).unwrap();
        let address = socket.local_addr().unwrap().as_socket().unwrap();
        assert!(matches!(claim(address), Err(ClaimError::InUse { .. })));
        drop(socket);
        claim(address).expect("free once the listener is closed");
    }
}
