//! Tests of the mailbox store through its public API, on temporary
//! directories; the format modules test themselves.

use std::collections::HashSet;
use std::fs;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::*;

fn store() -> (tempfile::TempDir, MailStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = MailStore::new(dir.path().join("mail"), "mx.example.test");
    (dir, store)
}

fn user(store: &MailStore) -> UserMailbox {
    store.ensure_user(&UserName::new("alice").unwrap()).unwrap()
}

fn folder(name: &str) -> FolderName {
    FolderName::new(name).unwrap()
}

fn uids(snapshot: &Snapshot) -> Vec<u32> {
    snapshot.messages.iter().map(|m| m.uid.get()).collect()
}

/// Message files in `new/` and `cur/` of a folder directory.
fn files(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for sub in ["new", "cur"] {
        for entry in fs::read_dir(dir.join(sub)).unwrap() {
            out.push(entry.unwrap().file_name().into_string().unwrap());
        }
    }
    out
}

fn index_text(dir: &Path) -> String {
    fs::read_to_string(dir.join("spate-uidlist")).unwrap()
}

#[test]
fn delivery_then_snapshot() {
    let (_tmp, store) = store();
    let inbox = user(&store).inbox();
    let d = inbox
        .deliver(&[b"Subject: hi\r\n\r\n", b"body\r\n"])
        .unwrap();
    assert_eq!(d.uid, None, "the next sync assigns the UID");
    assert_eq!(d.size, 21);
    assert!(
        !inbox.path().join("spate-uidlist").exists(),
        "delivery does not touch the index"
    );
    let snap = inbox.snapshot().unwrap();
    assert_eq!(uids(&snap), vec![1]);
    let m = &snap.messages[0];
    assert_eq!(m.size, 21);
    assert!(m.recent && m.flags.is_empty());
    assert!(m.path.starts_with(inbox.path().join("new")));
    let name = m.path.file_name().unwrap().to_str().unwrap();
    assert!(name.ends_with(".mx.example.test,S=21"), "{name}");
    assert_eq!(snap.uid_next, Uid::new(2).unwrap());
    assert_eq!(
        inbox.read(Uid::new(1).unwrap()).unwrap(),
        b"Subject: hi\r\n\r\nbody\r\n"
    );
    assert!(fs::read_dir(inbox.path().join("tmp"))
        .unwrap()
        .next()
        .is_none());
    let age = SystemTime::now().duration_since(m.internal_date).unwrap();
    assert!(age < Duration::from_secs(60));
}

#[test]
fn uids_stable_across_reopen() {
    let (_tmp, store) = store();
    let inbox = user(&store).inbox();
    for i in 0..3 {
        inbox.deliver(&[format!("m{i}").as_bytes()]).unwrap();
    }
    let before = inbox.snapshot().unwrap();
    let store2 = MailStore::new(store.root(), "other.host");
    let again = store2
        .user(&UserName::new("alice").unwrap())
        .unwrap()
        .inbox()
        .snapshot()
        .unwrap();
    assert_eq!(before, again);
    assert_eq!(uids(&again), vec![1, 2, 3]);
}

/// Delivers message `i` of a writer: even ones by `deliver` (no UID),
/// odd ones by `append` (UID at once), with a snapshot every tenth, so
/// index writers (APPEND, syncs) race with each other and with deliveries.
/// The UID of an appended message, if it was one.
fn store_mixed(inbox: &Folder, i: usize, body: &str) -> Option<Uid> {
    let uid = if i.is_multiple_of(2) {
        assert_eq!(inbox.deliver(&[body.as_bytes()]).unwrap().uid, None);
        None
    } else {
        let d = inbox.append(&[body.as_bytes()], Flags::empty(), None);
        Some(d.unwrap().uid.expect("APPEND assigns the UID"))
    };
    if i % 10 == 9 {
        inbox.snapshot().unwrap();
    }
    uid
}

#[test]
fn concurrent_deliveries_get_distinct_uids() {
    let (_tmp, store) = store();
    let mailbox = user(&store);
    let threads: Vec<_> = (0..8)
        .map(|t| {
            // Each thread with its own store handle, like separate
            // processes (their own counters; flock still excludes).
            let store = MailStore::new(store.root(), "mx.example.test");
            std::thread::spawn(move || {
                let inbox = store
                    .user(&UserName::new("alice").unwrap())
                    .unwrap()
                    .inbox();
                (0..50)
                    .filter_map(|i| store_mixed(&inbox, i, &format!("thread {t} message {i}\r\n")))
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut all = HashSet::new();
    for thread in threads {
        let got = thread.join().unwrap();
        assert_eq!(got.len(), 25);
        assert!(
            got.windows(2).all(|w| w[0] < w[1]),
            "UIDs of one thread increase"
        );
        all.extend(got);
    }
    assert_eq!(all.len(), 200);
    let inbox = mailbox.inbox();
    let snap = inbox.snapshot().unwrap();
    assert_eq!(snap.messages.len(), 400);
    assert_eq!(uids(&snap), (1..=400).collect::<Vec<_>>());
    assert_eq!(snap.uid_next, Uid::new(401).unwrap());
    assert!(all.iter().all(|u| (1..=400).contains(&u.get())));
    assert_eq!(files(inbox.path()).len(), 400);
    assert!(index_text(inbox.path()).starts_with("spate-uidlist 2 V"));
    // Each appended message kept the UID APPEND reported.
    for m in &snap.messages {
        let body = String::from_utf8(inbox.read(m.uid).unwrap()).unwrap();
        let i: usize = body.trim_end().rsplit(' ').next().unwrap().parse().unwrap();
        assert_eq!(i % 2 == 1, all.contains(&m.uid), "{body}");
    }
}

/// Environment variable that turns `child_process_delivers` on.
const CHILD_ENV: &str = "SPATE_MAILBOX_TEST_CHILD_ROOT";

/// Not a test on its own: the body of each child process of
/// `deliveries_from_several_processes`, which runs this test binary again.
#[test]
#[ignore = "run as a child process by deliveries_from_several_processes"]
fn child_process_delivers() {
    let Ok(root) = std::env::var(CHILD_ENV) else {
        return;
    };
    let store = MailStore::new(root, "child.example.test");
    let inbox = store
        .user(&UserName::new("alice").unwrap())
        .unwrap()
        .inbox();
    for i in 0..50 {
        if let Some(uid) = store_mixed(&inbox, i, &format!("child {i}")) {
            println!("UID {uid}");
        }
    }
}

#[test]
fn deliveries_from_several_processes() {
    let (_tmp, store) = store();
    let inbox = user(&store).inbox();
    let children: Vec<_> = (0..3)
        .map(|_| {
            std::process::Command::new(std::env::current_exe().unwrap())
                .args([
                    "mailbox::tests::child_process_delivers",
                    "--exact",
                    "--ignored",
                    "--nocapture",
                ])
                .env(CHILD_ENV, store.root())
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut all = HashSet::new();
    for i in 0..50 {
        if let Some(uid) = store_mixed(&inbox, i, &format!("parent {i}")) {
            all.insert(uid.get());
        }
    }
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success());
        let text = String::from_utf8(out.stdout).unwrap();
        let got: Vec<u32> = text
            .lines()
            .filter_map(|l| l.strip_prefix("UID "))
            .map(|u| u.parse().unwrap())
            .collect();
        assert_eq!(got.len(), 25, "{text}");
        all.extend(got);
    }
    assert_eq!(all.len(), 100);
    assert_eq!(
        uids(&inbox.snapshot().unwrap()),
        (1..=200).collect::<Vec<_>>()
    );
}

#[test]
fn concurrent_deliveries_and_snapshots_agree() {
    let (_tmp, store) = store();
    let inbox = Arc::new(user(&store).inbox());
    let writer = {
        let inbox = inbox.clone();
        std::thread::spawn(move || {
            for i in 0..60 {
                inbox.deliver(&[format!("{i}").as_bytes()]).unwrap();
            }
        })
    };
    // UIDs, once seen, keep naming the same message.
    let mut seen: Vec<(Uid, std::path::PathBuf)> = Vec::new();
    for _ in 0..20 {
        let snap = inbox.snapshot().unwrap();
        let now: Vec<(Uid, std::path::PathBuf)> = snap
            .messages
            .iter()
            .map(|m| (m.uid, m.path.clone()))
            .collect();
        assert!(now.starts_with(&seen));
        seen = now;
    }
    writer.join().unwrap();
    let snap = inbox.snapshot().unwrap();
    assert_eq!(uids(&snap), (1..=60).collect::<Vec<_>>());
    // UIDs follow the order of delivery, whichever sync assigned them.
    for (i, m) in snap.messages.iter().enumerate() {
        assert_eq!(inbox.read(m.uid).unwrap(), format!("{i}").as_bytes());
    }
}

#[test]
fn delivery_leaves_the_index_alone_and_syncs_append() {
    let (_tmp, store) = store();
    let inbox = user(&store).inbox();
    inbox.deliver(&[b"a"]).unwrap();
    inbox.snapshot().unwrap();
    let before = index_text(inbox.path());
    for body in [b"b", b"c", b"d"] {
        inbox.deliver(&[body]).unwrap();
    }
    assert_eq!(index_text(inbox.path()), before);
    assert_eq!(uids(&inbox.snapshot().unwrap()), vec![1, 2, 3, 4]);
    let after = index_text(inbox.path());
    assert!(after.starts_with(&before), "appended, not rewritten");
    assert_eq!(after.lines().count(), before.lines().count() + 3);
    // Flag changes and expunges are appended too.
    let u = |n| Uid::new(n).unwrap();
    inbox
        .set_flags(u(2), Flags::empty().with(Flag::Seen))
        .unwrap();
    inbox.expunge(&[u(3)]).unwrap();
    let text = index_text(inbox.path());
    assert!(text.starts_with(&after));
    assert!(text.ends_with("=2 M6\n-3 M7\n"), "{text}");
    let fresh = MailStore::new(store.root(), "x").user(&UserName::new("alice").unwrap());
    let snap = fresh.unwrap().inbox().snapshot().unwrap();
    assert_eq!(uids(&snap), vec![1, 2, 4]);
    assert_eq!(snap.highest_modseq, ModSeq::new(7));
    // The expunge is remembered with its modseq (RFC 7162 QRESYNC).
    assert_eq!(snap.expunged.since(ModSeq::new(6)), Some(vec![u(3)]));
    assert_eq!(snap.expunged.since(ModSeq::new(7)), Some(vec![]));
    assert!(snap.messages[1].flags.contains(Flag::Seen));
}

#[test]
fn torn_index_append_is_ignored() {
    let (_tmp, store) = store();
    let inbox = user(&store).inbox();
    inbox.deliver(&[b"a"]).unwrap();
    inbox.deliver(&[b"b"]).unwrap();
    let before = inbox.snapshot().unwrap();
    // A crash in the middle of appending a record.
    let path = inbox.path().join("spate-uidlist");
    let mut torn = fs::read(&path).unwrap();
    torn.extend_from_slice(b"3 M3 S1 :1234.M5P6");
    fs::write(&path, &torn).unwrap();
    assert_eq!(inbox.snapshot().unwrap(), before);
    inbox.deliver(&[b"c"]).unwrap();
    let snap = inbox.snapshot().unwrap();
    assert_eq!(snap.uid_validity, before.uid_validity);
    assert_eq!(uids(&snap), vec![1, 2, 3]);
    assert_eq!(inbox.read(Uid::new(3).unwrap()).unwrap(), b"c");
    let text = index_text(inbox.path());
    assert!(!text.contains(":1234.M5P6"), "{text}");
}

#[test]
fn version_1_index_is_read_and_upgraded() {
    let (_tmp, store) = store();
    let inbox = user(&store).inbox();
    inbox.deliver(&[b"a"]).unwrap();
    inbox.deliver(&[b"b"]).unwrap();
    let bases: Vec<String> = inbox
        .snapshot()
        .unwrap()
        .messages
        .iter()
        .map(|m| m.path.file_name().unwrap().to_str().unwrap().to_owned())
        .collect();
    let v1 = format!(
        "spate-uidlist 1 V77 N10 M12 C2 B2\n5 M3 S1 :{}\n9 M12 S1 :{}\n",
        bases[0], bases[1]
    );
    fs::write(inbox.path().join("spate-uidlist"), &v1).unwrap();
    let snap = inbox.snapshot().unwrap();
    assert_eq!(snap.uid_validity, UidValidity::new(77).unwrap());
    assert_eq!(uids(&snap), vec![5, 9]);
    assert_eq!(snap.highest_modseq, ModSeq::new(12));
    assert_eq!(index_text(inbox.path()), v1, "read only: left as it was");
    inbox.deliver(&[b"c"]).unwrap();
    assert_eq!(uids(&inbox.snapshot().unwrap()), vec![5, 9, 10]);
    assert!(index_text(inbox.path()).starts_with("spate-uidlist 2 V77 N11 M13 E12\n"));
}

#[test]
fn dropped_in_message_gets_a_uid() {
    let (_tmp, store) = store();
    let inbox = user(&store).inbox();
    inbox.deliver(&[b"first"]).unwrap();
    inbox.snapshot().unwrap();
    fs::write(
        inbox.path().join("new/1234567890.handmade.host"),
        b"by hand\n",
    )
    .unwrap();
    fs::write(inbox.path().join("cur/1234567891.other.host:2,FS"), b"seen").unwrap();
    let snap = inbox.snapshot().unwrap();
    assert_eq!(uids(&snap), vec![1, 2, 3]);
    let hand = &snap.messages[1];
    assert_eq!(hand.size, 8, "size from stat when the name has no S=");
    assert!(hand.recent);
    let seen = &snap.messages[2];
    assert!(seen.flags.contains(Flag::Seen) && seen.flags.contains(Flag::Flagged));
    assert!(!seen.recent);
    assert_eq!(inbox.read(Uid::new(2).unwrap()).unwrap(), b"by hand\n");
    // Removed by hand: dropped from the index, UID not reused.
    fs::remove_file(inbox.path().join("new/1234567890.handmade.host")).unwrap();
    assert_eq!(uids(&inbox.snapshot().unwrap()), vec![1, 3]);
    inbox.deliver(&[b"x"]).unwrap();
    assert_eq!(uids(&inbox.snapshot().unwrap()), vec![1, 3, 4]);
}

#[test]
fn deleted_index_is_rebuilt_with_new_validity() {
    let (_tmp, store) = store();
    let inbox = user(&store).inbox();
    for i in 0..3 {
        inbox.deliver(&[format!("{i}").as_bytes()]).unwrap();
    }
    let before = inbox.snapshot().unwrap();
    fs::remove_file(inbox.path().join("spate-uidlist")).unwrap();
    let after = inbox.snapshot().unwrap();
    assert_eq!(after.messages.len(), 3);
    assert!(after.uid_validity > before.uid_validity, "UIDs were lost");
    // Rebuilt in delivery order.
    let bodies: Vec<Vec<u8>> = after
        .messages
        .iter()
        .map(|m| inbox.read(m.uid).unwrap())
        .collect();
    assert_eq!(bodies, vec![b"0".to_vec(), b"1".to_vec(), b"2".to_vec()]);
    // Stable again afterwards.
    assert_eq!(inbox.snapshot().unwrap().uid_validity, after.uid_validity);
}

#[test]
fn damaged_lines_keep_validity() {
    let (_tmp, store) = store();
    let inbox = user(&store).inbox();
    for i in 0..3 {
        inbox.deliver(&[format!("{i}").as_bytes()]).unwrap();
    }
    let before = inbox.snapshot().unwrap();
    let text = index_text(inbox.path());
    let mut lines: Vec<&str> = text.lines().collect();
    lines[2] = "2 this line is \u{1} garbage";
    fs::write(inbox.path().join("spate-uidlist"), lines.join("\n") + "\n").unwrap();
    let after = inbox.snapshot().unwrap();
    assert_eq!(after.uid_validity, before.uid_validity);
    // UID 2's message lost its UID and got a new one, never an old one.
    assert_eq!(uids(&after), vec![1, 3, 4]);
    assert_eq!(inbox.read(Uid::new(4).unwrap()).unwrap(), b"1");
}

#[test]
fn garbage_index_rebuilds_without_panic() {
    let (_tmp, store) = store();
    let inbox = user(&store).inbox();
    inbox.deliver(&[b"a"]).unwrap();
    inbox.deliver(&[b"b"]).unwrap();
    let before = inbox.snapshot().unwrap();
    let garbage: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    fs::write(inbox.path().join("spate-uidlist"), &garbage).unwrap();
    let after = inbox.snapshot().unwrap();
    assert_eq!(after.messages.len(), 2);
    assert_ne!(after.uid_validity, before.uid_validity);
    assert!(index_text(inbox.path()).starts_with("spate-uidlist 2 "));
    // Delivery works on a damaged index too.
    fs::write(inbox.path().join("spate-uidlist"), b"\0\0\0").unwrap();
    inbox.deliver(&[b"c"]).unwrap();
    assert_eq!(inbox.snapshot().unwrap().messages.len(), 3);
}

#[test]
fn flags_rename_files_and_survive_reopen() {
    let (_tmp, store) = store();
    let mailbox = user(&store);
    let inbox = mailbox.inbox();
    inbox.deliver(&[b"hello"]).unwrap();
    let first = inbox.snapshot().unwrap();
    let (uid, modseq0) = (first.messages[0].uid, first.messages[0].modseq);
    let flags = Flags::empty().with(Flag::Seen).with(Flag::Replied);
    let modseq = inbox.set_flags(uid, flags).unwrap();
    assert!(modseq > modseq0);
    let names = files(inbox.path());
    assert_eq!(names.len(), 1);
    assert!(names[0].ends_with(",S=5:2,RS"), "{}", names[0]);
    assert!(fs::read_dir(inbox.path().join("new"))
        .unwrap()
        .next()
        .is_none());
    // Same flags again: no rename, no new modseq.
    assert_eq!(inbox.set_flags(uid, flags).unwrap(), modseq);
    // A fresh handle (no cache) sees the same.
    let fresh = store.user(mailbox.name()).unwrap().inbox();
    let snap = fresh.snapshot().unwrap();
    assert_eq!(snap.messages[0].flags, flags);
    assert_eq!(snap.messages[0].modseq, modseq);
    assert_eq!(snap.highest_modseq, modseq);
    assert!(!snap.messages[0].recent);
    assert_eq!(fresh.read(uid).unwrap(), b"hello");
    // The old handle's cached path is stale; reading still works.
    fresh
        .set_flags(uid, Flags::empty().with(Flag::Flagged))
        .unwrap();
    assert_eq!(inbox.read(uid).unwrap(), b"hello");
    let missing = Uid::new(99).unwrap();
    assert!(matches!(
        inbox.set_flags(missing, flags),
        Err(MailboxError::NoSuchMessage { .. })
    ));
    let changed = inbox
        .set_flags_many(&[(missing, flags), (uid, Flags::empty())])
        .unwrap();
    assert_eq!(changed.len(), 1);
}

#[test]
fn take_recent_moves_new_to_cur() {
    let (_tmp, store) = store();
    let inbox = user(&store).inbox();
    inbox.deliver(&[b"a"]).unwrap();
    inbox.deliver(&[b"b"]).unwrap();
    assert_eq!(
        inbox.take_recent().unwrap(),
        vec![Uid::new(1).unwrap(), Uid::new(2).unwrap()]
    );
    assert!(inbox.take_recent().unwrap().is_empty());
    let snap = inbox.snapshot().unwrap();
    assert!(snap
        .messages
        .iter()
        .all(|m| !m.recent && m.flags.is_empty()));
    assert!(files(inbox.path()).iter().all(|n| n.ends_with(":2,")));
}

#[test]
fn expunge_removes_files_and_entries() {
    let (_tmp, store) = store();
    let inbox = user(&store).inbox();
    for i in 0..4 {
        inbox.deliver(&[format!("{i}").as_bytes()]).unwrap();
    }
    let u = |n| Uid::new(n).unwrap();
    inbox
        .set_flags(u(3), Flags::empty().with(Flag::Trashed))
        .unwrap();
    let removed = inbox.expunge(&[u(3), u(1), u(42)]).unwrap();
    assert_eq!(removed, vec![u(1), u(3)]);
    assert_eq!(uids(&inbox.snapshot().unwrap()), vec![2, 4]);
    assert_eq!(files(inbox.path()).len(), 2);
    assert!(matches!(
        inbox.read(u(1)),
        Err(MailboxError::NoSuchMessage { .. })
    ));
    inbox.deliver(&[b"x"]).unwrap();
    assert_eq!(uids(&inbox.snapshot().unwrap()), vec![2, 4, 5]);
}

#[test]
fn copy_and_move_return_new_uids() {
    let (_tmp, store) = store();
    let mailbox = user(&store);
    let inbox = mailbox.inbox();
    let archive = mailbox.create_folder(&folder("Archive")).unwrap();
    archive.deliver(&[b"already here"]).unwrap();
    let u = |n| Uid::new(n).unwrap();
    let date = SystemTime::UNIX_EPOCH + Duration::from_secs(1_600_000_000);
    inbox
        .append(&[b"one"], Flags::empty().with(Flag::Seen), Some(date))
        .unwrap();
    inbox.deliver(&[b"two"]).unwrap();
    inbox.deliver(&[b"three"]).unwrap();
    // Clients name only UIDs they saw in a snapshot.
    assert_eq!(uids(&inbox.snapshot().unwrap()), vec![1, 2, 3]);

    let copied = inbox.copy_to(&[u(3), u(1), u(9)], &archive).unwrap();
    assert_eq!(copied, vec![(u(3), u(2)), (u(1), u(3))]);
    let snap = archive.snapshot().unwrap();
    assert_eq!(uids(&snap), vec![1, 2, 3]);
    assert_eq!(archive.read(u(2)).unwrap(), b"three");
    assert_eq!(archive.read(u(3)).unwrap(), b"one");
    assert!(snap.messages[2].flags.contains(Flag::Seen));
    assert_eq!(snap.messages[2].internal_date, date);
    assert!(snap.messages[1].recent);
    assert_eq!(inbox.snapshot().unwrap().messages.len(), 3);

    let moved = inbox.move_to(&[u(2)], &archive).unwrap();
    assert_eq!(moved, vec![(u(2), u(4))]);
    assert_eq!(uids(&inbox.snapshot().unwrap()), vec![1, 3]);
    assert_eq!(archive.read(u(4)).unwrap(), b"two");
    // Copy into the same folder works too.
    assert_eq!(inbox.copy_to(&[u(1)], &inbox).unwrap(), vec![(u(1), u(4))]);
}

#[test]
fn append_sets_flags_and_date() {
    let (_tmp, store) = store();
    let inbox = user(&store).inbox();
    let date = SystemTime::UNIX_EPOCH + Duration::from_secs(1_234_567_890);
    let flags = Flags::empty().with(Flag::Draft).with(Flag::Seen);
    let d = inbox.append(&[b"draft"], flags, Some(date)).unwrap();
    let m = &inbox.snapshot().unwrap().messages[0];
    assert_eq!(Some(m.uid), d.uid);
    assert_eq!(m.flags, flags);
    assert_eq!(m.internal_date, date);
    assert!(m.recent, "in new/ with its flags until a reader takes it");
    assert_eq!(inbox.take_recent().unwrap(), vec![m.uid]);
    let taken = &inbox.snapshot().unwrap().messages[0];
    assert_eq!((taken.flags, taken.recent), (flags, false));
}

#[test]
fn folders_create_rename_delete_list() {
    let (_tmp, store) = store();
    let mailbox = user(&store);
    for name in [
        "Archive",
        "Archive/2024",
        "Archive/2024/Q1",
        "Entwürfe",
        "Work",
    ] {
        mailbox.create_folder(&folder(name)).unwrap();
    }
    assert!(mailbox.root().join(".Archive.2024/maildirfolder").is_file());
    assert!(mailbox.root().join(".Entw&APw-rfe/cur").is_dir());
    assert!(matches!(
        mailbox.create_folder(&folder("Work")),
        Err(MailboxError::FolderExists(_))
    ));
    assert!(matches!(
        mailbox.create_folder(&folder("inbox")),
        Err(MailboxError::FolderExists(_))
    ));
    let names = |m: &UserMailbox| -> Vec<String> {
        m.list_folders()
            .unwrap()
            .iter()
            .map(|f| f.to_string())
            .collect()
    };
    assert_eq!(
        names(&mailbox),
        vec![
            "INBOX",
            "Archive",
            "Archive/2024",
            "Archive/2024/Q1",
            "Entwürfe",
            "Work"
        ]
    );

    let old = mailbox.folder(&folder("Archive/2024")).unwrap();
    old.deliver(&[b"kept"]).unwrap();
    let validity = old.snapshot().unwrap().uid_validity;
    mailbox
        .rename_folder(&folder("Archive"), &folder("Old"))
        .unwrap();
    assert_eq!(
        names(&mailbox),
        vec![
            "INBOX",
            "Entwürfe",
            "Old",
            "Old/2024",
            "Old/2024/Q1",
            "Work"
        ]
    );
    let renamed = mailbox
        .folder(&folder("Old/2024"))
        .unwrap()
        .snapshot()
        .unwrap();
    assert_eq!(renamed.uid_validity, validity);
    assert_eq!(uids(&renamed), vec![1]);
    assert!(matches!(
        mailbox.rename_folder(&folder("Old"), &folder("Work")),
        Err(MailboxError::FolderExists(_))
    ));
    assert!(matches!(
        mailbox.rename_folder(&folder("Old"), &folder("Old/x")),
        Err(MailboxError::NotPermitted(_))
    ));
    assert!(matches!(
        mailbox.rename_folder(&folder("Nope"), &folder("Other")),
        Err(MailboxError::FolderNotFound(_))
    ));

    mailbox.delete_folder(&folder("Old")).unwrap();
    assert_eq!(
        names(&mailbox),
        vec!["INBOX", "Entwürfe", "Old/2024", "Old/2024/Q1", "Work"]
    );
    assert!(matches!(
        mailbox.delete_folder(&folder("Old")),
        Err(MailboxError::FolderNotFound(_))
    ));
    assert!(matches!(
        mailbox.delete_folder(&FolderName::inbox()),
        Err(MailboxError::NotPermitted(_))
    ));
    assert!(matches!(
        mailbox.folder(&folder("Old")),
        Err(MailboxError::FolderNotFound(_))
    ));
    // Only folder directories at the top level: no scratch leftovers.
    let stray: Vec<_> = fs::read_dir(mailbox.root())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with("spate-scratch"))
        .collect();
    assert!(stray.is_empty(), "{stray:?}");

    // A folder deleted and created again never shows the old UIDVALIDITY.
    let work = mailbox.folder(&folder("Work")).unwrap();
    let v1 = work.snapshot().unwrap().uid_validity;
    mailbox.delete_folder(&folder("Work")).unwrap();
    let work = mailbox.create_folder(&folder("Work")).unwrap();
    assert!(work.snapshot().unwrap().uid_validity > v1);
}

#[test]
fn rename_inbox_moves_messages() {
    let (_tmp, store) = store();
    let mailbox = user(&store);
    let inbox = mailbox.inbox();
    inbox.deliver(&[b"a"]).unwrap();
    inbox.deliver(&[b"b"]).unwrap();
    mailbox
        .rename_folder(&FolderName::inbox(), &folder("Old Mail"))
        .unwrap();
    assert!(inbox.snapshot().unwrap().messages.is_empty());
    let old = mailbox.folder(&folder("Old Mail")).unwrap();
    assert_eq!(old.snapshot().unwrap().messages.len(), 2);
}

#[test]
fn subscriptions_and_special_use() {
    let (_tmp, store) = store();
    let mailbox = user(&store);
    assert!(mailbox.subscriptions().unwrap().is_empty());
    let created = mailbox.create_special_use().unwrap();
    assert_eq!(created.len(), 5);
    assert_eq!(created[0], (SpecialUse::Sent, folder("Sent")));
    assert_eq!(SpecialUse::Junk.attribute(), "\\Junk");
    // Idempotent.
    mailbox.create_special_use().unwrap();
    let subs: Vec<String> = mailbox
        .subscriptions()
        .unwrap()
        .iter()
        .map(|f| f.to_string())
        .collect();
    assert_eq!(subs, vec!["Sent", "Drafts", "Trash", "Junk", "Archive"]);
    mailbox
        .set_subscribed(&folder("Archive/2024"), true)
        .unwrap();
    mailbox.set_subscribed(&folder("Trash"), false).unwrap();
    let text = fs::read_to_string(mailbox.root().join("subscriptions")).unwrap();
    assert_eq!(text, "V\t2\n\nSent\nDrafts\nJunk\nArchive\nArchive\t2024\n");
    assert_eq!(mailbox.list_folders().unwrap().len(), 6);
}

#[test]
fn names_cannot_escape() {
    let (tmp, store) = store();
    for bad in [
        "..",
        "../x",
        "/etc",
        "a/../../b",
        "a\0b",
        "",
        ".",
        "a/b",
        "\\x",
    ] {
        assert!(
            matches!(
                UserName::new(bad),
                Err(MailboxError::InvalidName {
                    kind: NameKind::User,
                    ..
                })
            ),
            "user {bad:?}"
        );
    }
    for bad in [
        "..",
        "../x",
        "/etc",
        "a/../../b",
        "a\0b",
        "a/./b",
        "x/",
        "a.b",
    ] {
        let err = FolderName::new(bad).unwrap_err();
        assert!(
            matches!(
                err,
                MailboxError::InvalidName {
                    kind: NameKind::Folder,
                    ..
                }
            ),
            "folder {bad:?}"
        );
        assert!(err.is_permanent());
    }
    user(&store);
    // Nothing was created outside the store root.
    let top: Vec<_> = fs::read_dir(tmp.path()).unwrap().collect();
    assert_eq!(top.len(), 1);
}

#[test]
fn lock_exclusive_is_exclusive_and_released_on_drop() {
    let (_tmp, store) = store();
    let mailbox = user(&store);
    let guard = mailbox.lock_exclusive().unwrap();
    let err = mailbox.lock_exclusive().unwrap_err();
    assert!(matches!(err, MailboxError::InUse));
    assert!(err.is_transient());
    // From another thread with another handle too.
    let other = store.user(mailbox.name()).unwrap();
    let in_thread = std::thread::spawn(move || other.lock_exclusive().map(drop))
        .join()
        .unwrap();
    assert!(matches!(in_thread, Err(MailboxError::InUse)));
    // Deliveries are not blocked by it.
    assert!(mailbox.inbox().deliver(&[b"while locked"]).is_ok());
    drop(guard);
    let again = mailbox.lock_exclusive().unwrap();
    drop(again);
}

#[test]
fn usage_sums_all_folders() {
    let (_tmp, store) = store();
    let mailbox = user(&store);
    assert_eq!(mailbox.usage().unwrap(), Usage::default());
    let inbox = mailbox.inbox();
    inbox.deliver(&[b"12345"]).unwrap();
    inbox.deliver(&[b"123", b"4567"]).unwrap();
    let sent = mailbox.create_folder(&folder("Sent")).unwrap();
    sent.deliver(&[&[b'x'; 100][..]]).unwrap();
    assert_eq!(
        mailbox.usage().unwrap(),
        Usage {
            bytes: 112,
            messages: 3
        }
    );
    inbox.expunge(&[Uid::new(1).unwrap()]).unwrap();
    assert_eq!(mailbox.usage().unwrap().bytes, 107);
    // Dropped-in messages count before and after a sync, once.
    let want = Usage {
        bytes: 110,
        messages: 3,
    };
    fs::write(sent.path().join("new/1.handmade.host"), b"abc").unwrap();
    assert_eq!(mailbox.usage().unwrap(), want);
    sent.snapshot().unwrap();
    assert_eq!(mailbox.usage().unwrap(), want);
    // A delivery into an indexed folder counts while it waits in new/,
    // and once it is indexed, and once taken out of new/.
    inbox.deliver(&[b"12"]).unwrap();
    let want = Usage {
        bytes: 112,
        messages: 4,
    };
    assert_eq!(mailbox.usage().unwrap(), want);
    inbox.snapshot().unwrap();
    assert_eq!(mailbox.usage().unwrap(), want);
    inbox.take_recent().unwrap();
    assert_eq!(mailbox.usage().unwrap(), want);
}

#[test]
fn stored_bytes_follow_every_change_without_a_walk() {
    let (_tmp, store) = store();
    let mailbox = user(&store);
    let name = mailbox.name().clone();
    assert_eq!(store.known_usage(&name), None, "nothing measured yet");
    let inbox = mailbox.inbox();
    inbox.deliver(&[b"12345"]).unwrap();
    // The first question measures (a walk of the folders).
    assert_eq!(mailbox.stored_bytes().unwrap(), 5);
    let known = |store: &MailStore| store.known_usage(&name).unwrap().bytes;
    assert_eq!(known(&store), 5);
    // From then on every change moves the figure, each equal to a walk.
    let check = |store: &MailStore| {
        assert_eq!(known(store), mailbox.usage().unwrap().bytes);
        known(store)
    };
    inbox.deliver(&[b"123", b"4567"]).unwrap();
    assert_eq!(check(&store), 12);
    let sent = mailbox.create_folder(&folder("Sent")).unwrap();
    sent.append(&[&[b'x'; 100][..]], Flags::empty(), None)
        .unwrap();
    assert_eq!(check(&store), 112);
    inbox.snapshot().unwrap();
    let one = Uid::new(1).unwrap();
    let two = Uid::new(2).unwrap();
    inbox.copy_to(&[one, two], &sent).unwrap();
    assert_eq!(check(&store), 124);
    inbox.move_to(&[one], &sent).unwrap();
    assert_eq!(check(&store), 124, "a move within the user changes nothing");
    inbox.expunge(&[two]).unwrap();
    assert_eq!(check(&store), 117);
    // Deleting a folder forgets the figure: the next question measures.
    mailbox.delete_folder(&folder("Sent")).unwrap();
    assert_eq!(store.known_usage(&name), None);
    assert_eq!(mailbox.stored_bytes().unwrap(), 0);
    assert_eq!(mailbox.usage().unwrap().bytes, 0);
}

#[test]
fn users_and_errors() {
    let (_tmp, store) = store();
    let bob = UserName::new("bob@example.test").unwrap();
    assert!(matches!(
        store.user(&bob),
        Err(MailboxError::UserNotFound(_))
    ));
    let mailbox = store.ensure_user(&bob).unwrap();
    for sub in ["cur", "new", "tmp"] {
        assert!(mailbox.root().join(sub).is_dir());
    }
    store.user(&bob).unwrap();
    store.ensure_user(&bob).unwrap();
    let gone = mailbox.create_folder(&folder("Gone")).unwrap();
    mailbox.delete_folder(&folder("Gone")).unwrap();
    let err = gone.deliver(&[b"x"]).unwrap_err();
    assert!(matches!(err, MailboxError::FolderNotFound(_)), "{err:?}");
    assert!(err.is_permanent());
    assert!(matches!(
        gone.snapshot(),
        Err(MailboxError::FolderNotFound(_))
    ));
    let io = MailboxError::Io {
        op: "writing",
        path: "/x".into(),
        source: std::io::Error::from_raw_os_error(libc::ENOSPC),
    };
    assert!(io.is_transient() && io.is_disk_full());
}

/// Runs mutt on `maildir` under `script` (mutt needs a terminal) with
/// `keys` pushed; returns the screen text. `None` when mutt or script is
/// not installed.
fn run_mutt(maildir: &Path, keys: &str, read_only: bool) -> Option<String> {
    use std::process::{Command, Stdio};
    let have = |tool: &str| {
        Command::new("sh")
            .arg("-c")
            .arg(format!("command -v {tool}"))
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if !have("mutt") || !have("script") {
        return None;
    }
    let home = maildir.parent().unwrap();
    let muttrc = home.join("muttrc");
    fs::write(
        &muttrc,
        format!(
            "set mbox_type=Maildir\nset folder={0}\nset spoolfile={0}\n",
            maildir.display()
        ),
    )
    .unwrap();
    let command = format!(
        "stty cols 160 rows 30; mutt -n -F '{}' {} -f '{}' -e 'push {keys}'",
        muttrc.display(),
        if read_only { "-R" } else { "" },
        maildir.display()
    );
    let out = Command::new("timeout")
        .args(["20", "script", "-qec", &command, "/dev/null"])
        .env("TERM", "vt100")
        .env("HOME", home)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    Some(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// mutt reads the Maildir spate writes, and spate reads mutt's flag
/// changes back without losing UIDs (skipped when mutt is absent).
#[test]
fn mutt_interoperates() {
    let (_tmp, store) = store();
    let mailbox = user(&store);
    let inbox = mailbox.inbox();
    inbox
        .deliver(&[b"From: a@example.test\nSubject: first mutt test\n\nhello\n"])
        .unwrap();
    inbox
        .deliver(&[b"From: b@example.test\nSubject: second one\n\nbye\n"])
        .unwrap();
    let second = inbox.snapshot().unwrap().messages[1].uid;
    inbox
        .set_flags(second, Flags::empty().with(Flag::Seen))
        .unwrap();
    let Some(screen) = run_mutt(mailbox.root(), "<exit>", true) else {
        eprintln!("mutt or script not installed; skipping");
        return;
    };
    assert!(
        screen.contains("first mutt test") && screen.contains("second one"),
        "{screen}"
    );
    run_mutt(mailbox.root(), "<flag-message><sync-mailbox><exit>", false);
    let snap = inbox.snapshot().unwrap();
    assert_eq!(uids(&snap), vec![1, 2]);
    let flagged = snap
        .messages
        .iter()
        .filter(|m| m.flags.contains(Flag::Flagged))
        .count();
    assert_eq!(flagged, 1, "{snap:?}");
    assert!(snap.messages[1].flags.contains(Flag::Seen));
}

/// Sets the times of a folder's `new/`, `cur/` and index into the past,
/// as if the folder had been left alone for a minute.
fn age_folder(dir: &Path) {
    let past = SystemTime::now() - Duration::from_secs(60);
    for part in ["new", "cur", "spate-uidlist"] {
        let file = fs::File::open(dir.join(part)).unwrap();
        file.set_modified(past).unwrap();
    }
}

#[test]
fn unchanged_folder_snapshot_is_shared_until_it_changes() {
    let (_tmp, store) = store();
    let mailbox = user(&store);
    let inbox = mailbox.inbox();
    for i in 0..3 {
        inbox
            .deliver(&[format!("Subject: {i}\r\n\r\nx\r\n").as_bytes()])
            .unwrap();
    }
    let first = inbox.snapshot().unwrap();
    assert_eq!(uids(&first), vec![1, 2, 3]);
    age_folder(inbox.path());
    // Taken at a settled stamp: the next handle gets the same snapshot.
    let settled = inbox.snapshot().unwrap();
    let other = user(&store).inbox();
    let shared = other.snapshot().unwrap();
    assert!(Arc::ptr_eq(&settled, &shared), "served from the cache");
    assert_eq!(*shared, *first);
    // Reads through the shared snapshot find the files.
    assert!(other
        .read(Uid::new(2).unwrap())
        .unwrap()
        .starts_with(b"Subject: 1"));

    // A delivery changes new/: the next snapshot sees it, keeps the dates.
    inbox.deliver(&[b"Subject: 3\r\n\r\nx\r\n"]).unwrap();
    let after = other.snapshot().unwrap();
    assert_eq!(uids(&after), vec![1, 2, 3, 4]);
    assert_eq!(
        after.messages[..3]
            .iter()
            .map(|m| m.internal_date)
            .collect::<Vec<_>>(),
        first
            .messages
            .iter()
            .map(|m| m.internal_date)
            .collect::<Vec<_>>()
    );

    // A flag change by a tool that takes no lock (a rename in cur/).
    inbox.snapshot().unwrap();
    age_folder(inbox.path());
    let cached = inbox.snapshot().unwrap();
    assert!(Arc::ptr_eq(&cached, &other.snapshot().unwrap()));
    let m = &cached.messages[0];
    let name = m.path.file_name().unwrap().to_str().unwrap().to_owned();
    let base = name.split(":2,").next().unwrap();
    let seen = inbox.path().join("cur").join(format!("{base}:2,S"));
    fs::rename(&m.path, &seen).unwrap();
    let renamed = other.snapshot().unwrap();
    assert!(
        renamed.messages[0].flags.contains(Flag::Seen),
        "the rename was seen"
    );
    // RFC 7162 3.1: the flag change gets a new modseq, as ours do.
    assert!(renamed.messages[0].modseq > m.modseq);
    assert!(renamed.highest_modseq > cached.highest_modseq);
    assert_eq!(renamed.highest_modseq, renamed.messages[0].modseq);
    let fresh = MailStore::new(store.root(), "x").user(&UserName::new("alice").unwrap());
    let again = fresh.unwrap().inbox().snapshot().unwrap();
    assert_eq!(again.messages[0].modseq, renamed.messages[0].modseq, "kept");
    assert_eq!(other.read(m.uid).unwrap(), fs::read(&seen).unwrap());
}

#[test]
fn recent_is_taken_once_with_the_cache() {
    let (_tmp, store) = store();
    let inbox = user(&store).inbox();
    inbox.deliver(&[b"Subject: a\r\n\r\nx\r\n"]).unwrap();
    inbox.snapshot().unwrap();
    age_folder(inbox.path());
    assert!(inbox.snapshot().unwrap().messages[0].recent);
    let other = user(&store).inbox();
    assert_eq!(other.take_recent().unwrap().len(), 1);
    assert!(inbox.take_recent().unwrap().is_empty(), "taken once");
    assert!(!inbox.snapshot().unwrap().messages[0].recent);
}

#[test]
fn unchanged_since_refuses_messages_changed_after_it() {
    let (_tmp, store) = store();
    let inbox = user(&store).inbox();
    inbox.deliver(&[b"a"]).unwrap();
    inbox.deliver(&[b"b"]).unwrap();
    let snap = inbox.snapshot().unwrap();
    let (one, two) = (snap.messages[0].uid, snap.messages[1].uid);
    let seen = Flags::empty().with(Flag::Seen);
    // Another session flags message one after the client's snapshot.
    let changed = inbox.set_flags(one, seen).unwrap();
    assert!(changed > snap.highest_modseq);
    let flagged = |_, f: Flags| f.with(Flag::Flagged);
    let (done, modified) = inbox
        .update_flags_unchanged_since(&[one, two], Some(snap.highest_modseq), flagged)
        .unwrap();
    assert_eq!(modified, vec![one]);
    assert_eq!(done.len(), 1);
    assert_eq!(done[0].uid, two);
    assert!(done[0].modseq > changed, "modseqs strictly increase");
    let now = inbox.snapshot().unwrap();
    assert_eq!(now.messages[0].flags, seen, "refused: left as it was");
    assert!(now.messages[1].flags.contains(Flag::Flagged));
    // 0 always fails (RFC 7162 3.1.3).
    let (done, modified) = inbox
        .update_flags_unchanged_since(&[two], Some(ModSeq::new(0)), flagged)
        .unwrap();
    assert!(done.is_empty());
    assert_eq!(modified, vec![two]);
}
