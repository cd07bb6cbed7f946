//! One spool, one server; one address, one server. A second `spate serve`
//! on a spool directory in use, or on an address another process already
//! listens on (another spate, or any program, with or without
//! SO_REUSEPORT), refuses to start with an error naming the spool or the
//! address, and the first server goes on serving, its control socket
//! untouched. `spate queue list`, which only reads the spool, works while
//! the server runs.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{run_with_timeout, unique_loopback, TestServer, Tweaks, SPATE};
use socket2::{Domain, Socket, Type};

/// A refused server exits at once; a started one would run until killed
/// (the test then fails with "did not finish").
const REFUSAL_TIMEOUT: Duration = Duration::from_secs(20);

/// Runs `spate serve --config CONFIG`, which must refuse to start; its
/// stderr.
fn refused(config: &Path) -> String {
    let mut cmd = Command::new(SPATE);
    cmd.arg("serve").arg("--config").arg(config);
    let out = run_with_timeout(cmd, REFUSAL_TIMEOUT);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        out.status.code(),
        Some(1),
        "the second server did not refuse\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(
        !stdout.contains("ready"),
        "the second server got ready: {stdout}"
    );
    stderr
}

/// `server`'s configuration with each `(from, to)` replaced, written into
/// `dir`.
fn variant(server: &TestServer, dir: &Path, changes: &[(String, String)]) -> PathBuf {
    let mut text = server.config_text();
    for (from, to) in changes {
        assert!(text.contains(from.as_str()), "{from:?} not in\n{text}");
        text = text.replace(from.as_str(), to);
    }
    let path = dir.join("second.toml");
    std::fs::write(&path, text).expect("write config");
    path
}

/// The listener line of a TestServer configuration (port 0).
fn listener_line(server: &TestServer) -> String {
    format!("address = \"{}:0\"", server.ip)
}

/// The first server still accepts mail, lists it, and answers on its
/// control socket (a second server must not have replaced it).
fn first_still_serves(server: &TestServer, before: &str) {
    let after = server.accept_one("after");
    let listed: Vec<String> = server.queue_list().into_iter().map(|m| m.id).collect();
    assert!(listed.contains(&before.to_owned()), "{listed:?}");
    assert!(listed.contains(&after), "{listed:?}");
    let flush = server.spate_command(&["queue", "flush"]);
    assert!(
        String::from_utf8_lossy(&flush.stdout).contains("due now"),
        "{flush:?}"
    );
}

#[test]
fn a_second_server_on_the_same_spool_is_refused() {
    let server = TestServer::start(Tweaks::default());
    let before = server.accept_one("before");
    // `queue list` only reads: it works while the server holds the spool.
    assert_eq!(server.queue_list().len(), 1);

    let dir = tempfile::tempdir().unwrap();
    let other_address = format!("address = \"{}:0\"", unique_loopback());
    let config = variant(
        &server,
        dir.path(),
        &[(listener_line(&server), other_address)],
    );
    let stderr = refused(&config);
    let expected = format!(
        "spool directory {} is in use by another spate server (pid {})",
        server.spool_dir.display(),
        server.pid()
    );
    assert!(stderr.contains(&expected), "{stderr}");

    first_still_serves(&server, &before);
}

#[test]
fn a_second_server_on_an_address_spate_serves_is_refused() {
    let server = TestServer::start(Tweaks::default());
    let before = server.accept_one("before");

    let dir = tempfile::tempdir().unwrap();
    let spool = format!("{:?}", server.spool_dir.display().to_string());
    let own_spool = format!("{:?}", dir.path().join("spool").display().to_string());
    let config = variant(
        &server,
        dir.path(),
        &[
            (spool, own_spool),
            (
                listener_line(&server),
                format!("address = \"{}\"", server.smtp),
            ),
        ],
    );
    let stderr = refused(&config);
    let expected = format!(
        "{} is already served by another spate server (pid {})",
        server.smtp,
        server.pid()
    );
    assert!(stderr.contains(&expected), "{stderr}");
    assert!(
        !dir.path().join("spool").join("shard-0").exists(),
        "the refused server recovered a spool"
    );

    first_still_serves(&server, &before);
}

/// A socket of this test process listening on a fresh loopback address,
/// as another program would.
fn foreign_listener(reuse_port: bool) -> (Socket, SocketAddr) {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    socket.set_reuse_address(true).unwrap();
    socket.set_reuse_port(reuse_port).unwrap();
    socket
        .bind(&SocketAddr::from((unique_loopback(), 0)).into())
        .unwrap();
    socket.listen(16).unwrap();
    let address = socket.local_addr().unwrap().as_socket().unwrap();
    (socket, address)
}

#[test]
fn an_address_another_program_listens_on_is_refused() {
    // With SO_REUSEPORT (and the same user) the kernel would let spate's
    // cores join that program's socket; without it their bind fails. Both
    // must be refused before any core binds, with the address named.
    for reuse_port in [true, false] {
        let (_socket, address) = foreign_listener(reuse_port);
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("spate.toml");
        std::fs::write(
            &config,
            format!(
                "spool_dir = {:?}\ncores = 2\n[[listener]]\naddress = \"{address}\"\nprotocol = \"smtp\"\n",
                dir.path().join("spool").display().to_string()
            ),
        )
        .unwrap();
        let stderr = refused(&config);
        let expected =
            format!("{address} is already in use by another process (a socket listens on it");
        assert!(
            stderr.contains(&expected),
            "SO_REUSEPORT {reuse_port}: {stderr}"
        );
    }
}
