//! The systemd notification protocol against the real binary: a unix
//! datagram socket of the test's own stands in for systemd's
//! NOTIFY_SOCKET. READY=1 comes only once every listener accepts;
//! SIGHUP brings RELOADING=1 with MONOTONIC_USEC then READY=1; SIGTERM
//! brings STOPPING=1. Both a path and an abstract (`@name`) socket.

mod common;

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

use common::{TestServer, Tweaks};

const WAIT: Duration = Duration::from_secs(30);

/// The next datagram's `KEY=value` lines.
fn next_message(socket: &UnixDatagram) -> Vec<String> {
    let mut buf = [0u8; 4096];
    let n = socket
        .recv(&mut buf)
        .expect("a notification within the timeout");
    String::from_utf8_lossy(&buf[..n])
        .lines()
        .map(str::to_owned)
        .collect()
}

fn check_lifecycle(socket: &UnixDatagram, notify_socket: &str) {
    socket.set_read_timeout(Some(WAIT)).unwrap();
    let mut server = TestServer::start(
        Tweaks::default()
            .listener("smtp")
            .env("NOTIFY_SOCKET", notify_socket),
    );
    let ready = next_message(socket);
    assert_eq!(ready[0], "READY=1", "{ready:?}");
    assert!(
        ready.iter().any(|l| l.starts_with("STATUS=serving on 2")),
        "{ready:?}"
    );
    // Ready means every listener accepts now.
    for (_, addr) in &server.listeners {
        let mut client = common::Client::connect(*addr);
        assert_eq!(client.read_reply().code, 220);
    }

    server.signal(libc::SIGHUP);
    let reloading = next_message(socket);
    assert_eq!(reloading[0], "RELOADING=1", "{reloading:?}");
    let usec: u64 = reloading[1]
        .strip_prefix("MONOTONIC_USEC=")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no MONOTONIC_USEC in {reloading:?}"));
    assert!(usec > 0);
    let ready_again = next_message(socket);
    assert_eq!(ready_again[0], "READY=1", "{ready_again:?}");

    let stop = server.terminate();
    assert!(stop.status.success(), "{:?}", stop.status);
    let stopping = next_message(socket);
    assert_eq!(stopping[0], "STOPPING=1", "{stopping:?}");
}

#[test]
fn notifications_reach_a_path_socket() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify");
    let socket = UnixDatagram::bind(&path).unwrap();
    check_lifecycle(&socket, path.to_str().unwrap());
}

#[test]
fn notifications_reach_an_abstract_socket() {
    use std::os::linux::net::SocketAddrExt;
    let name = format!("spate-notify-test-{}", std::process::id());
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    let socket = UnixDatagram::bind_addr(&addr).unwrap();
    check_lifecycle(&socket, &format!("@{name}"));
}

#[test]
fn a_bad_notify_socket_is_a_clear_startup_error() {
    let dir = tempfile::tempdir().unwrap();
    let ip = common::unique_loopback();
    let config = dir.path().join("spate.toml");
    std::fs::write(
        &config,
        format!(
            "spool_dir = {:?}\n[[listener]]\naddress = \"{ip}:0\"\nprotocol = \"smtp\"\n\
             [dns]\nnameservers = [\"{ip}:53\"]\n",
            dir.path().join("spool").display().to_string()
        ),
    )
    .unwrap();
    let mut cmd = std::process::Command::new(common::SPATE);
    cmd.env("NOTIFY_SOCKET", "relative/path")
        .arg("serve")
        .arg("--config")
        .arg(&config);
    let out = common::run_with_timeout(cmd, common::COMMAND_TIMEOUT);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "started with a bad NOTIFY_SOCKET");
    assert!(
        stderr.contains("NOTIFY_SOCKET \"relative/path\" is neither"),
        "{stderr}"
    );
}
