//! `spate user add/list/passwd/del` on a users file named by a temporary
//! config: the password comes from standard input (no terminal), the file
//! keeps its comments and other users, and the stored hash verifies.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

const SPATE: &str = env!("CARGO_BIN_EXE_spate");

fn write_config(dir: &Path) -> PathBuf {
    let path = dir.join("spate.toml");
    let text = format!(
        "spool_dir = {spool:?}\n\
         [[listener]]\naddress = \"127.0.0.1:0\"\nprotocol = \"smtp\"\n\
         [dns]\nnameservers = [\"127.0.0.1:53\"]\n\
         [local]\ndomains = [\"example.test\"]\nusers_file = {users:?}\n",
        spool = dir.join("spool"),
        users = dir.join("users"),
    );
    std::fs::write(&path, text).unwrap();
    path
}

fn spate(config: &Path, args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(SPATE)
        .args(["user"])
        .args(args)
        .arg("--config")
        .arg(config)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn stdout(output: &Output) -> String {
    assert!(
        output.status.success(),
        "spate failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout.clone()).unwrap()
}

fn verify(users: &Path, name: &str, password: &str) -> bool {
    let db = spate::account::UserDb::load(users).unwrap();
    db.verify(name, password.as_bytes()).unwrap().is_some()
}

#[test]
fn add_list_passwd_del() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path());
    let users = dir.path().join("users");
    std::fs::write(
        &users,
        "# managed by spate user\nroot:{PLAIN}x::::::userdb_quota_rule=*:storage=1G\n",
    )
    .unwrap();

    assert_eq!(
        stdout(&spate(&config, &["add", "Alice"], "first pw\n")),
        "added alice\n"
    );
    assert!(verify(&users, "alice", "first pw"));
    let text = std::fs::read_to_string(&users).unwrap();
    assert!(text.contains("\nalice:{ARGON2ID}$argon2id$v=19$"), "{text}");

    let again = spate(&config, &["add", "alice"], "other\n");
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));
    let empty = spate(&config, &["add", "bob"], "");
    assert!(!empty.status.success());
    let bad = spate(&config, &["add", "../x"], "pw\n");
    assert!(!bad.status.success());

    assert_eq!(stdout(&spate(&config, &["list"], "")), "root\nalice\n");

    stdout(&spate(
        &config,
        &["passwd", "alice"],
        "second pw\r\nignored\n",
    ));
    assert!(verify(&users, "alice", "second pw"));
    assert!(!verify(&users, "alice", "first pw"));
    assert!(!spate(&config, &["passwd", "nobody"], "pw\n")
        .status
        .success());

    assert_eq!(
        stdout(&spate(&config, &["del", "alice"], "")),
        "deleted alice\n"
    );
    assert!(!spate(&config, &["del", "alice"], "").status.success());
    assert_eq!(stdout(&spate(&config, &["list"], "")), "root\n");
    assert_eq!(
        std::fs::read_to_string(&users).unwrap(),
        "# managed by spate user\nroot:{PLAIN}x::::::userdb_quota_rule=*:storage=1G\n"
    );
}

#[test]
fn a_missing_users_file_is_created_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path());
    assert_eq!(stdout(&spate(&config, &["list"], "")), "");
    stdout(&spate(&config, &["add", "carol"], "pw\n"));
    let mode = std::fs::metadata(dir.path().join("users"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}
