//! The spool is private to the user spate runs as, whatever umask it is
//! started with: the spool directory, the shard directories and the
//! quarantine are 0700; segments, quarantine files and the lock file 0600;
//! the control socket 0600. A spool left open (by an older version, or an
//! operator) is closed again at start. The control socket answers only
//! root and the server's own user, checked by peer credentials even when
//! its modes have been opened up.

mod common;

use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use common::{TestServer, Tweaks};

/// The nobody user and group of Debian and most systems.
const NOBODY: u32 = 65534;

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o7777
}

fn set_mode(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Every directory and file under `dir`, itself included.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut all = vec![dir.to_owned()];
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap().flatten() {
            let path = entry.path();
            if entry.file_type().unwrap().is_dir() {
                stack.push(path.clone());
            }
            all.push(path);
        }
    }
    all
}

/// Every entry of the spool: directories 0700, everything else 0600.
fn assert_private(spool: &Path) {
    for path in walk(spool) {
        let want = if path.is_dir() { 0o700 } else { 0o600 };
        assert_eq!(mode(&path), want, "{} is {:o}", path.display(), mode(&path));
    }
}

fn segments(spool: &Path) -> Vec<PathBuf> {
    walk(spool)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect()
}

#[test]
fn a_spool_started_under_umask_000_is_private() {
    let mut server = TestServer::start(Tweaks::default().cores(2).umask(0o000));
    let spool = server.spool_dir.clone();
    // Three messages on one connection, so on one shard and in one
    // segment; the middle one is damaged below.
    let mut c = server.session();
    for name in ["alpha", "bravo", "charlie"] {
        c.send_message(
            &format!("{name}@example.test"),
            &["rcpt@example.test"],
            &common::message(&format!("privacy-{name}"), 20_000),
        )
        .expect("accepted");
    }
    c.quit();
    assert!(!segments(&spool).is_empty(), "no segment written");
    for name in ["shard-0", "shard-1"] {
        assert_eq!(mode(&spool.join(name)), 0o700, "{name}");
    }
    assert_eq!(mode(&spool.join("control.sock")), 0o600);
    assert_eq!(mode(&spool.join("spool.lock")), 0o600);
    assert_private(&spool);
    assert!(server.terminate().status.success());

    // A spool as a looser version would have left it, with a damaged
    // record to quarantine at the next start.
    let (segment, at) = locate(&spool, b"privacy-bravo line 000100");
    let mut bytes = std::fs::read(&segment).unwrap();
    bytes[at + 3] ^= 0x20;
    std::fs::write(&segment, &bytes).unwrap();
    for path in walk(&spool) {
        set_mode(&path, if path.is_dir() { 0o777 } else { 0o666 });
    }

    server.restart();
    let quarantine = spool.join("quarantine");
    let quarantined = walk(&quarantine);
    assert!(
        quarantined.len() >= 2,
        "nothing quarantined: {quarantined:?}"
    );
    assert_eq!(mode(&quarantine), 0o700);
    assert_private(&spool);
}

/// The spool file holding `needle`, and its offset there.
fn locate(spool: &Path, needle: &[u8]) -> (PathBuf, usize) {
    for path in segments(spool) {
        let bytes = std::fs::read(&path).unwrap();
        if let Some(at) = bytes.windows(needle.len()).position(|w| w == needle) {
            return (path, at);
        }
    }
    panic!("{:?} not in any segment", String::from_utf8_lossy(needle));
}

/// What a client running as `uid` got from the control socket at `path`
/// for `request`: the reply line, or the errno of a failed connect.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Reply(String),
    ConnectFailed(i32),
}

/// Connects to the control socket from a forked child that has become
/// `uid` (group `uid` too), as another local user's client would.
/// Everything the child uses is prepared before the fork: in a threaded
/// process the child may only make async-signal-safe calls (no allocation).
fn ask_as(uid: u32, path: &Path, request: &[u8]) -> Outcome {
    // SAFETY (all unsafe blocks below): plain libc calls on descriptors and
    // buffers this function owns, sized as passed; the child only makes
    // system calls and ends with _exit.
    let mut address: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    address.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let bytes = path.as_os_str().as_bytes();
    assert!(bytes.len() < address.sun_path.len(), "socket path too long");
    for (slot, byte) in address.sun_path.iter_mut().zip(bytes) {
        *slot = *byte as libc::c_char;
    }
    let address_len = std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t;
    let timeout = libc::timeval {
        tv_sec: 10,
        tv_usec: 0,
    };
    let mut pipe = [0; 2];
    assert_eq!(unsafe { libc::pipe(pipe.as_mut_ptr()) }, 0);
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork");
    if pid == 0 {
        unsafe {
            // First byte: 'R' then the reply, or 'C' / 'S' then the errno
            // of connect / of dropping privileges.
            let report = |tag: u8| {
                let errno = *libc::__errno_location();
                let mut out = [0u8; 5];
                out[0] = tag;
                out[1..].copy_from_slice(&errno.to_ne_bytes());
                libc::write(pipe[1], out.as_ptr().cast(), out.len());
                libc::_exit(0);
            };
            libc::close(pipe[0]);
            if libc::setgroups(0, std::ptr::null()) != 0
                || libc::setgid(uid) != 0
                || libc::setuid(uid) != 0
            {
                report(b'S');
            }
            let fd = libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0);
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&timeout as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            );
            if libc::connect(
                fd,
                (&address as *const libc::sockaddr_un).cast(),
                address_len,
            ) != 0
            {
                report(b'C');
            }
            libc::write(fd, request.as_ptr().cast(), request.len());
            let mut reply = [0u8; 512];
            reply[0] = b'R';
            let n = libc::read(fd, reply[1..].as_mut_ptr().cast(), reply.len() - 1);
            libc::write(pipe[1], reply.as_ptr().cast(), 1 + n.max(0) as usize);
            libc::_exit(0);
        }
    }
    unsafe { libc::close(pipe[1]) };
    let mut out = Vec::new();
    {
        use std::io::Read;
        use std::os::fd::FromRawFd;
        let mut reader = unsafe { std::fs::File::from_raw_fd(pipe[0]) };
        reader.read_to_end(&mut out).unwrap();
    }
    let mut status = 0;
    unsafe { libc::waitpid(pid, &mut status, 0) };
    let errno = || i32::from_ne_bytes(out[1..5].try_into().unwrap());
    match out.first() {
        Some(b'R') => Outcome::Reply(String::from_utf8_lossy(&out[1..]).trim_end().to_owned()),
        Some(b'C') => Outcome::ConnectFailed(errno()),
        Some(b'S') => panic!("cannot become uid {uid}: errno {}", errno()),
        _ => panic!("the child reported nothing: {out:?}"),
    }
}

#[test]
fn the_control_socket_answers_only_root_and_the_server_user() {
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIPPED: needs root to connect as another user");
        return;
    }
    let server = TestServer::start(Tweaks::default());
    let socket = server.spool_dir.join("control.sock");
    let root = ask_as(0, &socket, b"flush\n");
    assert!(
        matches!(&root, Outcome::Reply(r) if r.starts_with("ok ")),
        "{root:?}"
    );
    // The modes alone keep another user out: the spool is 0700.
    assert_eq!(
        ask_as(NOBODY, &socket, b"flush\n"),
        Outcome::ConnectFailed(libc::EACCES)
    );
    // Opened up by mistake, the socket still refuses by peer credentials.
    for path in [server.dir.path(), &server.spool_dir] {
        set_mode(path, 0o755);
    }
    set_mode(&socket, 0o666);
    match ask_as(NOBODY, &socket, b"flush\n") {
        Outcome::Reply(reply) => assert!(
            reply.starts_with("error permission denied: uid 65534"),
            "{reply}"
        ),
        other => panic!("nobody was not answered: {other:?}"),
    }
    // The warning is logged as the reply goes out: wait for it to reach
    // the captured stderr.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !server
        .stderr_text()
        .contains("control socket: permission denied: uid 65534")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "no permission-denied warning logged"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // And the server's own user still is.
    let flush = server.spate_command(&["queue", "flush"]);
    assert!(String::from_utf8_lossy(&flush.stdout).contains("due now"));
    let root = ask_as(0, &socket, b"flush\n");
    assert!(
        matches!(&root, Outcome::Reply(r) if r.starts_with("ok ")),
        "{root:?}"
    );
}
