//! SIGHUP reload over real sockets: a changed users file, aliases file and
//! certificate take effect for new logins, recipients and handshakes while
//! sessions opened before the reload stay open; a broken configuration is
//! refused and the running one stays; settings that need a restart are
//! named in the log.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::Duration;

use common::{make_tls_files, run_with_timeout, TestServer, Tweaks, COMMAND_TIMEOUT};

const RELOAD_TIMEOUT: Duration = Duration::from_secs(30);

/// A plaintext IMAP connection (loopback counts as secure for LOGIN).
struct Imap {
    reader: BufReader<TcpStream>,
    stream: TcpStream,
    tag: u32,
}

impl Imap {
    fn connect(addr: SocketAddr) -> Imap {
        let stream = TcpStream::connect(addr).expect("connect imap");
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let mut imap = Imap {
            reader: BufReader::new(stream.try_clone().unwrap()),
            stream,
            tag: 0,
        };
        let greeting = imap.line();
        assert!(greeting.starts_with("* OK"), "greeting {greeting:?}");
        imap
    }

    fn line(&mut self) -> String {
        let mut line = String::new();
        let n = self.reader.read_line(&mut line).expect("read imap line");
        assert!(n > 0, "imap connection closed");
        line
    }

    /// Sends a command; returns the tagged status line.
    fn command(&mut self, text: &str) -> String {
        self.tag += 1;
        let tag = format!("a{}", self.tag);
        write!(self.stream, "{tag} {text}\r\n").unwrap();
        loop {
            let line = self.line();
            if let Some(rest) = line.strip_prefix(&format!("{tag} ")) {
                return rest.trim_end().to_owned();
            }
        }
    }
}

/// The DER certificate a new TLS handshake with `addr` presents, as
/// base64 (Python's ssl module, verification off: only the bytes matter).
fn presented_certificate(addr: SocketAddr) -> String {
    let script = "import base64, socket, ssl, sys\n\
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)\n\
        ctx.check_hostname = False\n\
        ctx.verify_mode = ssl.CERT_NONE\n\
        with socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=20) as raw:\n\
        \x20   with ctx.wrap_socket(raw) as tls:\n\
        \x20       print(base64.b64encode(tls.getpeercert(binary_form=True)).decode())\n";
    let mut cmd = Command::new("python3");
    cmd.arg("-c")
        .arg(script)
        .arg(addr.ip().to_string())
        .arg(addr.port().to_string());
    let out = run_with_timeout(cmd, COMMAND_TIMEOUT);
    assert!(
        out.status.success(),
        "python TLS client failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// The base64 body of a PEM certificate file, on one line.
fn pem_body(path: &std::path::Path) -> String {
    std::fs::read_to_string(path)
        .expect("read pem")
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect()
}

type TlsStream = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

/// An implicit-TLS connection verifying the server against `ca` only.
fn tls_connect(addr: SocketAddr, ca: &std::path::Path) -> std::io::Result<TlsStream> {
    let config = spate::tls::client_config(true, Some(ca)).expect("client config");
    let name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
    let connection = rustls::ClientConnection::new(config, name).expect("client connection");
    let tcp = TcpStream::connect(addr)?;
    tcp.set_read_timeout(Some(Duration::from_secs(20)))?;
    let mut stream = rustls::StreamOwned::new(connection, tcp);
    // Drive the handshake to the end (or its failure).
    while stream.conn.is_handshaking() {
        stream.conn.complete_io(&mut stream.sock)?;
    }
    Ok(stream)
}

/// One SMTP reply line (the tests' commands get one-line replies).
fn tls_line(stream: &mut TlsStream) -> String {
    use std::io::Read;
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while !line.ends_with(b"\n") {
        stream.read_exact(&mut byte).expect("read over TLS");
        line.push(byte[0]);
    }
    String::from_utf8_lossy(&line).into_owned()
}

fn tweaks() -> Tweaks {
    Tweaks::default()
        .tls()
        .listener("imap")
        .listener("submissions")
        .user("alice", "old-secret")
        .user("bob", "bob-secret")
        .aliases("sales: alice\n")
}

fn rcpt(server: &TestServer, address: &str) -> u16 {
    let mut c = server.session();
    assert_eq!(c.cmd("MAIL FROM:<x@client.test>").code, 250);
    let code = c.cmd(&format!("RCPT TO:<{address}>")).code;
    c.cmd("QUIT");
    code
}

/// Polls `done` for `RELOAD_TIMEOUT` at most.
fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + RELOAD_TIMEOUT;
    while !done() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Issue 15 item 10: `spate user add` while spate runs; the new user
/// receives mail and logs in without a SIGHUP (the users file is watched,
/// as Dovecot's passwd-file is checked), within moments.
#[test]
fn a_user_added_while_running_receives_mail_and_logs_in_without_a_sighup() {
    let server = TestServer::start(tweaks());
    let imap_addr = server.listener("imap");
    assert_eq!(rcpt(&server, "carol@example.test"), 550);

    let mut add = Command::new(env!("CARGO_BIN_EXE_spate"));
    add.args(["user", "add", "carol", "--config"])
        .arg(&server.config_path)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = add.spawn().expect("spawn spate user add");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"carol-secret\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let added = std::time::Instant::now();

    wait_until("carol to be known", || {
        rcpt(&server, "carol@example.test") == 250
    });
    eprintln!("new user in force after {:?}", added.elapsed());
    let mut c = server.session();
    c.send_message(
        "x@client.test",
        &["carol@example.test"],
        b"Subject: welcome\r\n\r\nhello carol\r\n",
    )
    .expect("delivery to the new user");
    c.quit();
    let mut imap = Imap::connect(imap_addr);
    let login = imap.command("LOGIN carol carol-secret");
    assert!(login.starts_with("OK"), "{login}");
    wait_until("the message in carol's INBOX", || {
        std::fs::read_dir(server.mail_dir().join("carol/new"))
            .into_iter()
            .flatten()
            .chain(
                std::fs::read_dir(server.mail_dir().join("carol/cur"))
                    .into_iter()
                    .flatten(),
            )
            .count()
            == 1
    });
    let select = imap.command("SELECT INBOX");
    assert!(select.starts_with("OK"), "{select}");
    let log = server.stderr_text();
    assert!(
        log.contains("users file changed: directory reloaded"),
        "{log}"
    );
}

#[test]
fn sighup_reloads_users_aliases_and_certificate_without_dropping_sessions() {
    let server = TestServer::start(tweaks());
    let imap_addr = server.listener("imap");
    let tls = server.tls.clone().expect("tls files");

    let mut open_imap = Imap::connect(imap_addr);
    assert!(open_imap
        .command("LOGIN alice old-secret")
        .starts_with("OK"));
    let mut open_smtp = server.session();
    let submissions = server.listener("submissions");
    let mut open_tls = tls_connect(submissions, &tls.ca).expect("TLS with the first CA");
    assert!(tls_line(&mut open_tls).starts_with("220 "));
    let before = presented_certificate(submissions);
    assert_eq!(before, pem_body(&tls.certificate));

    // New password, new alias, new certificate (another key and CA).
    std::fs::write(
        server.users_file(),
        "alice:{PLAIN}new-secret\nbob:{PLAIN}bob-secret\n",
    )
    .unwrap();
    std::fs::write(
        server.dir.path().join("aliases"),
        "sales: alice\nsupport: alice\n",
    )
    .unwrap();
    let fresh_dir = server.dir.path().join("fresh");
    std::fs::create_dir(&fresh_dir).unwrap();
    let fresh = make_tls_files(&fresh_dir, server.ip);
    std::fs::copy(&fresh.certificate, &tls.certificate).unwrap();
    std::fs::copy(&fresh.private_key, &tls.private_key).unwrap();

    // The users and aliases files are watched: in force without a
    // SIGHUP (issue 15 item 10). The certificate waits for the SIGHUP.
    wait_until("the new alias", || {
        rcpt(&server, "support@example.test") == 250
    });
    let mut probe = Imap::connect(imap_addr);
    assert!(probe.command("LOGIN alice new-secret").starts_with("OK"));
    drop(probe);
    assert_eq!(presented_certificate(submissions), before);

    server.signal(libc::SIGHUP);
    server.wait_stdout_line("reloaded", RELOAD_TIMEOUT);

    let mut fresh_login = Imap::connect(imap_addr);
    let reply = fresh_login.command("LOGIN alice new-secret");
    assert!(
        reply.starts_with("OK"),
        "new password after reload: {reply}"
    );
    assert_eq!(rcpt(&server, "support@example.test"), 250);
    assert_eq!(rcpt(&server, "sales@example.test"), 250);
    let after = presented_certificate(submissions);
    assert_eq!(after, pem_body(&fresh.certificate));
    assert_ne!(after, before);
    // A client trusting only the old CA is refused now; the new CA works.
    assert!(tls_connect(submissions, &tls.ca).is_err());
    let mut fresh_tls = tls_connect(submissions, &fresh.ca).expect("TLS with the new CA");
    assert!(tls_line(&mut fresh_tls).starts_with("220 "));

    // Sessions opened before the reload are still served.
    let noop = open_imap.command("NOOP");
    assert!(noop.starts_with("OK"), "open IMAP session: {noop}");
    assert!(open_imap.command("SELECT INBOX").starts_with("OK"));
    assert_eq!(open_smtp.cmd("NOOP").code, 250);
    assert_eq!(open_smtp.cmd("QUIT").code, 221);
    // The TLS session from before the reload keeps its old certificate.
    open_tls.write_all(b"EHLO client.test\r\n").unwrap();
    open_tls.flush().unwrap();
    assert!(
        tls_line(&mut open_tls).starts_with("250"),
        "open TLS session"
    );
}

#[test]
fn a_broken_configuration_is_refused_and_the_running_one_stays() {
    let mut server = TestServer::start(tweaks());
    let imap_addr = server.listener("imap");
    let good = server.config_text();

    // Refused: the users file named does not exist.
    let missing = server.dir.path().join("no-such-users");
    let broken = good.replace(
        &format!("{:?}", server.users_file().display().to_string()),
        &format!("{:?}", missing.display().to_string()),
    );
    assert_ne!(broken, good, "users_file line found");
    std::fs::write(&server.config_path, &broken).unwrap();
    server.signal(libc::SIGHUP);
    server.wait_stdout_line("reload refused", RELOAD_TIMEOUT);

    // Refused: not TOML at all.
    std::fs::write(&server.config_path, "spool_dir = \n[[[").unwrap();
    server.signal(libc::SIGHUP);
    server.wait_stdout_line("reload refused", RELOAD_TIMEOUT);
    assert!(server.is_running());
    let mut imap = Imap::connect(imap_addr);
    assert!(imap.command("LOGIN alice old-secret").starts_with("OK"));
    assert_eq!(rcpt(&server, "sales@example.test"), 250);

    // A changed listener and core count are kept until a restart, and
    // said so; the rest of the reload goes through.
    let restart_only = good.replace("cores = 2", "cores = 1").replace(
        &format!("{}:0\"\nprotocol = \"imap\"", server.ip),
        &format!("{}:1\"\nprotocol = \"imap\"", server.ip),
    );
    assert_ne!(restart_only, good);
    std::fs::write(&server.config_path, restart_only).unwrap();
    std::fs::write(server.users_file(), "alice:{PLAIN}third\n").unwrap();
    server.signal(libc::SIGHUP);
    server.wait_stdout_line("reloaded", RELOAD_TIMEOUT);
    // The log is read by another thread than stdout: wait for it.
    let needs_restart = |log: &str, section: &str| {
        log.lines()
            .any(|l| l.contains("needs a restart") && l.contains(section))
    };
    wait_until("the needs-a-restart lines in the log", || {
        let log = server.stderr_text();
        log.contains("reload refused")
            && ["cores changed", "[[listener]] changed"]
                .iter()
                .all(|section| needs_restart(&log, section))
    });
    let mut imap = Imap::connect(imap_addr);
    assert!(imap.command("LOGIN alice third").starts_with("OK"));
    let shutdown = server.terminate();
    assert!(shutdown.status.success(), "{:?}", shutdown.status);
}

#[test]
fn sighup_reloads_routes_for_the_next_message() {
    let first = TestServer::start(Tweaks::default().hostname("first.test"));
    let second = TestServer::start(Tweaks::default().hostname("second.test"));
    let relay = TestServer::start(
        Tweaks::default()
            .hostname("relay.test")
            .local_domains(&[])
            .extra(&format!(
                "[[route]]\ndomain = \"example.test\"\nto = \"{}\"\n",
                first.smtp
            )),
    );
    let send = |marker: &str| {
        let mut client = relay.session();
        client
            .send_message(
                "s@relay.test",
                &["u@example.test"],
                &common::message(marker, 100),
            )
            .expect("accepted");
        client.quit();
    };
    let wait_for = |server: &TestServer, count: usize| {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while server.queue_list().len() < count {
            assert!(
                std::time::Instant::now() < deadline,
                "{} never got message {count}",
                server.tweaks.hostname
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    send("before");
    wait_for(&first, 1);

    let text = relay.config_text();
    let rerouted = text.replace(&first.smtp.to_string(), &second.smtp.to_string());
    assert_ne!(rerouted, text);
    std::fs::write(&relay.config_path, rerouted).unwrap();
    relay.signal(libc::SIGHUP);
    relay.wait_stdout_line("reloaded", RELOAD_TIMEOUT);

    send("after");
    wait_for(&second, 1);
    assert_eq!(
        first.queue_list().len(),
        1,
        "nothing more went to the old route"
    );
    assert!(!relay.stderr_text().contains("needs a restart"));
}
