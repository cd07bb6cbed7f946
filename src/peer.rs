//! Who is at the other end of a Unix socket: the process, user and group
//! the kernel recorded when the peer connected or listened (SO_PEERCRED),
//! and who this process is. It decides nothing about them.

use std::os::fd::AsRawFd;

/// A peer's credentials, as the kernel recorded them at `connect` (for
/// the accepting side) or at `listen` (for the connecting side); the peer
/// cannot forge them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerCredentials {
    pub pid: u32,
    /// Effective user id.
    pub uid: u32,
    /// Effective group id.
    pub gid: u32,
}

/// The credentials of the peer of a connected Unix stream socket.
pub fn peer_credentials(socket: &impl AsRawFd) -> std::io::Result<PeerCredentials> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `cred` is a live ucred and `len` its size; the kernel
    // writes at most `len` bytes into it.
    let rc = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(PeerCredentials {
        pid: u32::try_from(cred.pid).unwrap_or(0),
        uid: cred.uid,
        gid: cred.gid,
    })
}

/// This process's effective user id.
pub fn effective_uid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// Whether `uid` is trusted like this process: root, or the user this
/// process runs as.
pub fn is_root_or_self(uid: u32) -> bool {
    uid == 0 || uid == effective_uid()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_socket_pair_sees_this_process() {
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        let cred = peer_credentials(&a).unwrap();
        assert_eq!(cred.pid, std::process::id());
        assert_eq!(cred.uid, effective_uid());
        assert!(is_root_or_self(cred.uid));
    }
}
