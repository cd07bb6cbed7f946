//! Behaviour tests of the whole spool on real glommio executors and
//! temporary directories: group commit, failure handling, recovery,
//! reclaim and the offline reader. Tests only.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Duration;

use glommio::{LocalExecutorBuilder, Placement};

use crate::envelope::Envelope;

use super::fake::{Event, FakeStore};
use super::id::{SegmentId, SpoolId};
use super::layout;
use super::record::{self, tests::sample_envelopes, HEADER_LEN, MAGIC, VERSION};
use super::{
    scan_dir, Deferred, DeliveryState, FinishReason, GlommioStore, OutcomeKind, RecipientOutcome,
    Spool, SpoolConfig, SpoolError,
};

fn run<T>(f: impl Future<Output = T>) -> T {
    LocalExecutorBuilder::new(Placement::Unbound)
        .make()
        .expect("glommio executor (needs io_uring and locked memory)")
        .run(f)
}

fn env(i: usize) -> Envelope {
    let all = sample_envelopes();
    let mut e = all[i % all.len()].clone();
    e.received_at = 1_000 + i as u64;
    e
}

fn body(i: usize, len: usize) -> Vec<u8> {
    let mut b = format!("Subject: {i}\r\n\r\n").into_bytes();
    b.resize(len.saturating_sub(2), b'x');
    b.extend_from_slice(b"\r\n");
    b
}

fn small(segment_size: u64) -> SpoolConfig {
    SpoolConfig {
        segment_size,
        preallocate_chunk: 4096,
    }
}

async fn open(
    dir: &Path,
    shard: u8,
    adopt: &[u8],
    cfg: SpoolConfig,
) -> (Spool<GlommioStore>, Vec<SpoolId>) {
    let (s, rec) = Spool::open(dir, shard, adopt, cfg).await.expect("open");
    let ids = rec.iter().map(|r| r.id).collect();
    (s, ids)
}

async fn open_fake(dir: &Path, cfg: SpoolConfig) -> (Rc<Spool<FakeStore>>, FakeStore) {
    let store = FakeStore::default();
    let (s, _) = Spool::open_with(store.clone(), dir, 0, &[], cfg)
        .await
        .expect("open");
    (Rc::new(s), store)
}

fn seg_path(dir: &Path, id: SpoolId) -> PathBuf {
    layout::segment_path(dir, id.segment())
}

fn record_len(e: &Envelope, b: &[u8]) -> u64 {
    record::encode_message(e, b.to_vec()).len
}

#[test]
fn group_commit_shares_syncs() {
    let dir = tempfile::tempdir().expect("tempdir");
    run(async {
        let (spool, store) = open_fake(dir.path(), SpoolConfig::default()).await;
        let n = 64;
        let tasks: Vec<_> = (0..n)
            .map(|i| {
                let s = Rc::clone(&spool);
                glommio::spawn_local(async move { s.store(&env(i), body(i, 4096)).await })
            })
            .collect();
        let mut ids = Vec::new();
        for t in tasks {
            ids.push(t.await.expect("store"));
        }
        let syncs = store.ctl.syncs.get();
        assert!(syncs <= n as u64 / 8, "{syncs} syncs for {n} stores");
        spool.close().await.expect("close");
        let (_s, recovered) = open(dir.path(), 0, &[], SpoolConfig::default()).await;
        ids.sort();
        assert_eq!(recovered, ids);
    });
}

#[test]
fn no_ack_before_the_covering_sync() {
    let dir = tempfile::tempdir().expect("tempdir");
    run(async {
        let (spool, store) = open_fake(dir.path(), SpoolConfig::default()).await;
        let ctl = Rc::clone(&store.ctl);
        ctl.hold.set(true);
        let spawn = |i: usize| {
            let s = Rc::clone(&spool);
            let c = Rc::clone(&ctl);
            glommio::spawn_local(async move {
                let id = s.store(&env(i), body(i, 1000 + i)).await?;
                let len = record_len(&env(i), &body(i, 1000 + i));
                c.log(Event::Returned { id, len });
                Ok::<_, SpoolError>(id)
            })
        };
        // First a lone writer whose sync is held, then a wave that finishes
        // writing while that sync is in flight.
        let mut tasks = vec![spawn(0)];
        // Wait (boundedly) for that sync to start: a loaded machine may
        // take longer than any fixed sleep.
        for _ in 0..500 {
            if ctl.syncs.get() >= 1 {
                break;
            }
            glommio::timer::sleep(Duration::from_millis(10)).await;
        }
        tasks.extend((1..12).map(spawn));
        glommio::timer::sleep(Duration::from_millis(50)).await;
        assert_eq!(ctl.syncs.get(), 1, "only the first sync started");
        assert!(
            !ctl.events
                .borrow()
                .iter()
                .any(|e| matches!(e, Event::Returned { .. })),
            "a store returned while its sync was held"
        );
        ctl.release();
        for t in tasks {
            t.await.expect("store");
        }
        assert_eq!(ctl.syncs.get(), 2, "the wave shares one sync");
        // Every return is preceded by a successful sync of its segment that
        // started after the message's last write completed.
        let events = ctl.events.borrow().clone();
        for (ri, e) in events.iter().enumerate() {
            let Event::Returned { id, len } = *e else {
                continue;
            };
            let seq = id.segment().seq;
            let off = u64::from(id.offset());
            let last_write = events[..ri]
                .iter()
                .rposition(|e| matches!(*e, Event::WriteDone { seq: s, pos, .. } if s == seq && pos >= off && pos < off + len))
                .expect("its writes happened before it returned");
            let covered = events[last_write..ri].iter().any(|e| match *e {
                Event::SyncStart { seq: s, n } if s == seq => {
                    events[last_write..ri].contains(&Event::SyncDone { seq, n, ok: true })
                }
                _ => false,
            });
            assert!(covered, "{id} returned without a covering sync: {events:?}");
        }
    });
}

#[test]
fn failed_sync_fails_the_batch_and_retires_the_segment() {
    let dir = tempfile::tempdir().expect("tempdir");
    run(async {
        let (spool, store) = open_fake(dir.path(), SpoolConfig::default()).await;
        let ctl = Rc::clone(&store.ctl);
        let mut acked = Vec::new();
        for i in 0..5 {
            acked.push(spool.store(&env(i), body(i, 500)).await.expect("store"));
        }
        let first_segment = spool.active_segment().expect("active");
        ctl.hold.set(true);
        ctl.fail_syncs.set(1);
        let tasks: Vec<_> = (10..18)
            .map(|i| {
                let s = Rc::clone(&spool);
                glommio::spawn_local(async move { s.store(&env(i), body(i, 700)).await })
            })
            .collect();
        glommio::timer::sleep(Duration::from_millis(30)).await;
        ctl.release();
        for t in tasks {
            match t.await {
                Err(SpoolError::SyncFailed { .. }) => {}
                other => panic!("expected SyncFailed, got {other:?}"),
            }
        }
        // Later stores land in a new segment and succeed.
        let later = spool.store(&env(20), body(20, 300)).await.expect("store");
        assert_ne!(later.segment(), first_segment);
        acked.push(later);
        spool.close().await.expect("close");
        drop(spool);
        let (_s, recovered) = open(dir.path(), 0, &[], SpoolConfig::default()).await;
        assert_eq!(recovered, acked, "acked kept, failed batch discarded");
    });
}

#[test]
fn disk_full_writes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    run(async {
        let (spool, store) = open_fake(dir.path(), small(1 << 20)).await;
        let ctl = Rc::clone(&store.ctl);
        // Fails on the very first record...
        ctl.enospc.set(true);
        let e = spool
            .store(&env(0), body(0, 100))
            .await
            .expect_err("ENOSPC");
        assert!(e.is_disk_full() && e.is_transient(), "{e:?}");
        ctl.enospc.set(false);
        let ok = spool.store(&env(1), body(1, 100)).await.expect("store");
        // ... and on one that needs more preallocation than is left.
        ctl.enospc.set(true);
        let writes = ctl.events.borrow().len();
        let e = spool
            .store(&env(2), body(2, 10_000))
            .await
            .expect_err("ENOSPC");
        assert!(e.is_disk_full());
        assert_eq!(ctl.events.borrow().len(), writes, "no byte written");
        spool.close().await.expect("close");
        let (_s, recovered) = open(dir.path(), 0, &[], small(1 << 20)).await;
        assert_eq!(recovered, vec![ok]);
    });
}

#[test]
fn torn_tail_is_silent_and_appends_go_to_a_new_segment() {
    let dir = tempfile::tempdir().expect("tempdir");
    run(async {
        let (s, _) = open(dir.path(), 0, &[], SpoolConfig::default()).await;
        let mut ids = Vec::new();
        for i in 0..3 {
            ids.push(s.store(&env(i), body(i, 3000)).await.expect("store"));
        }
        s.close().await.expect("close");
        drop(s);
        // Cut the third record mid-body, then zeros as preallocation leaves.
        let path = seg_path(dir.path(), ids[2]);
        let mut bytes = std::fs::read(&path).expect("read");
        bytes.truncate(ids[2].offset() as usize + 200);
        bytes.resize(bytes.len() + 8192, 0);
        std::fs::write(&path, &bytes).expect("write");
        let (s, recovered) = open(dir.path(), 0, &[], SpoolConfig::default()).await;
        assert_eq!(recovered, ids[..2]);
        assert!(
            !layout::quarantine_dir(dir.path()).exists(),
            "torn tail not quarantined"
        );
        let next = s.store(&env(9), body(9, 100)).await.expect("store");
        assert!(
            next.segment().seq > ids[0].segment().seq,
            "never append after a torn tail"
        );
        s.close().await.expect("close");
        drop(s);
        let (_s, recovered) = open(dir.path(), 0, &[], SpoolConfig::default()).await;
        assert_eq!(recovered, vec![ids[0], ids[1], next]);
    });
}

#[test]
fn corrupt_record_is_quarantined_and_later_records_recovered() {
    let dir = tempfile::tempdir().expect("tempdir");
    run(async {
        let (s, _) = open(dir.path(), 0, &[], SpoolConfig::default()).await;
        let mut ids = Vec::new();
        for i in 0..3 {
            ids.push(s.store(&env(i), body(i, 3000)).await.expect("store"));
        }
        s.close().await.expect("close");
        drop(s);
        let path = seg_path(dir.path(), ids[1]);
        let mut bytes = std::fs::read(&path).expect("read");
        let at = ids[1].offset() as usize + 1500;
        bytes[at] ^= 0x20;
        std::fs::write(&path, &bytes).expect("write");
        let (s, recovered) = open(dir.path(), 0, &[], SpoolConfig::default()).await;
        assert_eq!(recovered, vec![ids[0], ids[2]]);
        let q = layout::quarantine_path(dir.path(), ids[1].segment(), u64::from(ids[1].offset()));
        let saved = std::fs::read(&q).expect("quarantined file");
        let len = record_len(&env(1), &body(1, 3000)) as usize;
        let off = ids[1].offset() as usize;
        assert_eq!(saved, bytes[off..off + len]);
        // and the reader refuses the damaged one, serves the others
        let m = s.read_message(ids[2]).expect("read");
        assert_eq!(m.envelope(), &env(2));
        assert_eq!(m.body(), &body(2, 3000)[..]);
        assert!(matches!(
            s.read_message(ids[1]),
            Err(SpoolError::UnknownMessage(_))
        ));
    });
}

/// A record of a kind this version does not know, with valid checksums.
fn raw_record(kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut h = [0u8; HEADER_LEN];
    h[0..4].copy_from_slice(&MAGIC);
    h[4] = VERSION;
    h[5] = kind;
    h[8..16].copy_from_slice(&(payload.len() as u64).to_le_bytes());
    let crc = crc32c::crc32c_append(crc32c::crc32c(&h[0..16]), payload);
    h[16..20].copy_from_slice(&crc.to_le_bytes());
    let hcrc = crc32c::crc32c(&h[0..20]);
    h[20..24].copy_from_slice(&hcrc.to_le_bytes());
    let mut out = h.to_vec();
    out.extend_from_slice(payload);
    out.resize(out.len().next_multiple_of(8), 0);
    out
}

#[test]
fn unknown_kind_is_skipped() {
    let dir = tempfile::tempdir().expect("tempdir");
    let shard_dir = layout::shard_dir(dir.path(), 0);
    std::fs::create_dir_all(&shard_dir).expect("mkdir");
    let mut bytes = raw_record(77, b"per-recipient outcome, some day");
    let off = bytes.len() as u32;
    let m = record::encode_message(&env(3), body(3, 50));
    bytes.extend_from_slice(&m.head);
    bytes.extend_from_slice(&m.body);
    bytes.resize(bytes.len() + 4096, 0);
    std::fs::write(shard_dir.join("00000007.seg"), &bytes).expect("write");
    run(async {
        let (s, recovered) = Spool::open(dir.path(), 0, &[], SpoolConfig::default())
            .await
            .expect("open");
        let id = SpoolId::new(SegmentId { shard: 0, seq: 7 }, off).expect("fits");
        assert_eq!(recovered.len(), 1);
        assert_eq!(recovered[0].id, id);
        assert_eq!(s.read_message(id).expect("read").envelope(), &env(3));
        assert_eq!(
            (recovered[0].recipients, recovered[0].received_at),
            (env(3).recipients.len(), env(3).received_at)
        );
        assert_eq!(recovered[0].body_len, 50);
        assert!(!layout::quarantine_dir(dir.path()).exists());
        let next = s.store(&env(4), body(4, 10)).await.expect("store");
        assert_eq!(next.segment().seq, 8);
    });
}

#[test]
fn finished_messages_stay_finished_across_reopen_cycles() {
    let dir = tempfile::tempdir().expect("tempdir");
    run(async {
        let cfg = SpoolConfig::default();
        let (s, rec) = open(dir.path(), 0, &[], cfg).await;
        assert!(rec.is_empty());
        let a: Vec<_> = {
            let mut v = Vec::new();
            for i in 0..3 {
                v.push(s.store(&env(i), body(i, 200)).await.expect("store"));
            }
            v
        };
        s.finish(a[1], FinishReason::Delivered)
            .await
            .expect("finish");
        assert!(matches!(
            s.finish(a[1], FinishReason::Delivered).await,
            Err(SpoolError::UnknownMessage(_))
        ));
        s.close().await.expect("close");
        drop(s);
        let (s, rec) = open(dir.path(), 0, &[], cfg).await;
        assert_eq!(rec, vec![a[0], a[2]]);
        let b = s.store(&env(5), body(5, 200)).await.expect("store");
        assert!(b.segment().seq > a[0].segment().seq);
        s.finish(a[0], FinishReason::Bounced).await.expect("finish");
        s.close().await.expect("close");
        drop(s);
        let (s, rec) = open(dir.path(), 0, &[], cfg).await;
        assert_eq!(rec, vec![a[2], b]);
        s.finish(a[2], FinishReason::Deleted).await.expect("finish");
        s.finish(b, FinishReason::Expired).await.expect("finish");
        drop(s); // no close: every finish was durable on return
        let (_s, rec) = open(dir.path(), 0, &[], cfg).await;
        assert!(rec.is_empty());
    });
}

#[test]
fn adopted_shard_directory_is_recovered_and_finished() {
    let dir = tempfile::tempdir().expect("tempdir");
    run(async {
        let cfg = SpoolConfig::default();
        let (s1, _) = open(dir.path(), 1, &[], cfg).await;
        let m0 = s1.store(&env(0), body(0, 100)).await.expect("store");
        let m1 = s1.store(&env(1), body(1, 100)).await.expect("store");
        assert_eq!(m0.shard(), 1);
        s1.close().await.expect("close");
        drop(s1);
        // Core count shrank to 1: shard 0 adopts directory 1.
        let (s0, rec) = open(dir.path(), 0, &[1], cfg).await;
        assert_eq!(rec, vec![m0, m1]);
        assert_eq!(s0.read_message(m1).expect("read").body(), &body(1, 100)[..]);
        s0.finish(m0, FinishReason::Delivered)
            .await
            .expect("finish");
        s0.close().await.expect("close");
        drop(s0);
        let (s0, rec) = open(dir.path(), 0, &[1], cfg).await;
        assert_eq!(rec, vec![m1]);
        drop(s0);
        // Core count grew back: shard 1 owns its directory again and honours
        // the marker shard 0 wrote for it.
        let (_s1, rec) = open(dir.path(), 1, &[], cfg).await;
        assert_eq!(rec, vec![m1]);
    });
}

#[test]
fn reclaim_deletes_finished_segments_but_keeps_needed_markers() {
    let dir = tempfile::tempdir().expect("tempdir");
    run(async {
        let cfg = small(8192);
        let (s, _) = open(dir.path(), 0, &[], cfg).await;
        // Segment T: m1, m2. Segment X: m3 (big) and the marker for m1.
        let m1 = s.store(&env(1), body(1, 3000)).await.expect("store");
        let m2 = s.store(&env(2), body(2, 3000)).await.expect("store");
        let m3 = s.store(&env(3), body(3, 7000)).await.expect("store");
        let (t, x) = (m1.segment(), m3.segment());
        assert_eq!(m2.segment(), t);
        assert_ne!(x, t);
        s.finish(m1, FinishReason::Delivered).await.expect("finish");
        // Y: m4 and the marker for m3.
        let m4 = s.store(&env(4), body(4, 3000)).await.expect("store");
        assert_ne!(m4.segment(), x);
        s.finish(m3, FinishReason::Delivered).await.expect("finish");
        let path = |seg| layout::segment_path(dir.path(), seg);
        // X has nothing live, but holds m1's marker while T still exists.
        assert!(path(x).exists(), "marker holder deleted before its target");
        assert!(path(t).exists());
        s.close().await.expect("close");
        drop(s);
        // Recovery rebuilds the same rule.
        let (s, rec) = open(dir.path(), 0, &[], cfg).await;
        assert_eq!(rec, vec![m2, m4]);
        assert!(path(x).exists() && path(t).exists());
        s.finish(m2, FinishReason::Delivered).await.expect("finish");
        assert!(!path(t).exists(), "T fully finished");
        assert!(!path(x).exists(), "X no longer needed once T is gone");
        assert!(path(m4.segment()).exists());
        drop(s);
        let (_s, rec) = open(dir.path(), 0, &[], cfg).await;
        assert_eq!(rec, vec![m4]);
    });
}

#[test]
fn big_message_gets_its_own_segment() {
    let dir = tempfile::tempdir().expect("tempdir");
    run(async {
        let cfg = small(8192);
        let (s, _) = open(dir.path(), 0, &[], cfg).await;
        let a = s.store(&env(0), body(0, 100)).await.expect("store");
        let big = s.store(&env(1), body(1, 50_000)).await.expect("store");
        let c = s.store(&env(2), body(2, 100)).await.expect("store");
        assert_eq!(big.offset(), 0);
        assert_ne!(a.segment(), big.segment());
        assert_ne!(c.segment(), big.segment());
        assert_eq!(
            s.read_message(big).expect("read").body(),
            &body(1, 50_000)[..]
        );
        drop(s);
        let (_s, rec) = open(dir.path(), 0, &[], cfg).await;
        assert_eq!(rec, vec![a, big, c]);
    });
}

/// Every file under `dir` with its bytes and modification time.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, (Vec<u8>, std::time::SystemTime)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("read_dir") {
            let p = e.expect("entry").path();
            let md = std::fs::metadata(&p).expect("metadata");
            if md.is_dir() {
                out.insert(p.clone(), (Vec::new(), md.modified().expect("mtime")));
                stack.push(p);
            } else {
                let bytes = std::fs::read(&p).expect("read");
                out.insert(p, (bytes, md.modified().expect("mtime")));
            }
        }
    }
    out
}

#[test]
fn scan_dir_matches_recovery_and_changes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let corrupt_id = run(async {
        let cfg = SpoolConfig::default();
        let (s2, _) = open(dir.path(), 2, &[], cfg).await;
        let mut ids = Vec::new();
        for i in 0..4 {
            ids.push(s2.store(&env(i), body(i, 400)).await.expect("store"));
        }
        s2.finish(ids[0], FinishReason::Delivered)
            .await
            .expect("finish");
        drop(s2);
        let (s0, _) = open(dir.path(), 0, &[2], cfg).await;
        s0.finish(ids[1], FinishReason::Delivered)
            .await
            .expect("finish");
        for i in 10..13 {
            s0.store(&env(i), body(i, 300)).await.expect("store");
        }
        drop(s0);
        ids[2]
    });
    let path = seg_path(dir.path(), corrupt_id);
    let mut bytes = std::fs::read(&path).expect("read");
    bytes[corrupt_id.offset() as usize + 100] ^= 1;
    std::fs::write(&path, &bytes).expect("write");

    let before = snapshot(dir.path());
    let listed = scan_dir(dir.path()).expect("scan_dir");
    assert_eq!(before, snapshot(dir.path()), "scan_dir modified the spool");
    assert!(!layout::quarantine_dir(dir.path()).exists());
    assert_eq!(listed.len(), 4, "{listed:?}");

    let as_listed: Vec<_> = run(async {
        let (s, rec) = Spool::open(dir.path(), 0, &[2], SpoolConfig::default())
            .await
            .expect("open");
        rec.into_iter()
            .map(|r| {
                let envelope = s.read_message(r.id).expect("read").envelope().clone();
                assert_eq!(
                    (r.recipients, r.received_at),
                    (envelope.recipients.len(), envelope.received_at)
                );
                (r.id, envelope, r.body_len, r.delivery)
            })
            .collect()
    });
    let listed: Vec<_> = listed
        .into_iter()
        .map(|q| (q.id, q.envelope, q.size, q.delivery))
        .collect();
    assert_eq!(listed, as_listed);
}

#[test]
fn cancelled_store_is_discarded() {
    let dir = tempfile::tempdir().expect("tempdir");
    run(async {
        let (spool, store) = open_fake(dir.path(), SpoolConfig::default()).await;
        let kept = spool.store(&env(0), body(0, 100)).await.expect("store");
        store.ctl.hold.set(true);
        let s = Rc::clone(&spool);
        let task = glommio::spawn_local(async move { s.store(&env(1), body(1, 100)).await });
        glommio::timer::sleep(Duration::from_millis(20)).await;
        drop(task.cancel()); // the session went away while its sync was held
        glommio::timer::sleep(Duration::from_millis(5)).await;
        store.ctl.release();
        spool.close().await.expect("close");
        drop(spool);
        let (_s, rec) = open(dir.path(), 0, &[], SpoolConfig::default()).await;
        assert_eq!(rec, vec![kept]);
    });
}

#[test]
fn close_waits_for_commits_and_refuses_new_work() {
    let dir = tempfile::tempdir().expect("tempdir");
    run(async {
        let (spool, store) = open_fake(dir.path(), SpoolConfig::default()).await;
        store.ctl.hold.set(true);
        let s = Rc::clone(&spool);
        let pending = glommio::spawn_local(async move { s.store(&env(1), body(1, 100)).await });
        glommio::timer::sleep(Duration::from_millis(10)).await;
        let s = Rc::clone(&spool);
        let closing = glommio::spawn_local(async move { s.close().await });
        glommio::timer::sleep(Duration::from_millis(10)).await;
        assert!(matches!(
            spool.store(&env(2), body(2, 10)).await,
            Err(SpoolError::Closed)
        ));
        store.ctl.release();
        let id = pending.await.expect("in-flight store completes");
        closing.await.expect("close");
        drop(spool);
        let (_s, rec) = open(dir.path(), 0, &[], SpoolConfig::default()).await;
        assert_eq!(rec, vec![id]);
    });
}

fn outcome(kind: OutcomeKind, reply: &str, mta: Option<&str>) -> RecipientOutcome {
    RecipientOutcome {
        kind,
        reply: reply.into(),
        remote_mta: mta.map(str::to_owned),
    }
}

fn deferred(attempts: u32, next: u64, err: &str) -> Deferred {
    Deferred {
        attempts,
        next_attempt_unix: next,
        last_error: err.into(),
    }
}

/// An envelope with `n` recipients.
fn env_n(i: usize, n: usize) -> Envelope {
    let mut e = env(0);
    e.received_at = 5_000 + i as u64;
    e.recipients = (0..n)
        .map(|k| crate::envelope::Recipient {
            address: format!("r{k}@example.test"),
            notify: None,
            orcpt: None,
        })
        .collect();
    e
}

#[test]
fn delivery_state_round_trips_through_reopen_and_scan_dir() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (a, b) = run(async {
        let (s, _) = open(dir.path(), 0, &[], SpoolConfig::default()).await;
        let a = s.store(&env_n(0, 3), body(0, 300)).await.expect("store");
        let b = s.store(&env_n(1, 2), body(1, 300)).await.expect("store");
        let c = s.store(&env_n(2, 1), body(2, 300)).await.expect("store");
        s.record_recipient_outcome(
            a,
            0,
            &outcome(
                OutcomeKind::Delivered,
                "250 2.0.0 ok",
                Some("mx1.example.test"),
            ),
        )
        .await
        .expect("outcome");
        s.record_recipient_outcome(
            a,
            2,
            &outcome(OutcomeKind::Bounced, "550 5.1.1 no such user", None),
        )
        .await
        .expect("outcome");
        s.record_deferral(a, &deferred(1, 10_300, "421 4.7.0 try later"))
            .await
            .expect("deferral");
        s.record_deferral(a, &deferred(2, 10_900, "451 4.3.0 again"))
            .await
            .expect("deferral");
        s.record_deferral(b, &deferred(1, 20_000, &"x".repeat(5000)))
            .await
            .expect("deferral");
        s.record_recipient_outcome(b, 1, &outcome(OutcomeKind::Expired, "4.4.7 gave up", None))
            .await
            .expect("outcome");
        // a finished message takes its state with it
        s.record_deferral(c, &deferred(1, 1, "e"))
            .await
            .expect("deferral");
        s.finish(c, FinishReason::Delivered).await.expect("finish");
        assert!(matches!(
            s.record_deferral(c, &deferred(2, 2, "e")).await,
            Err(SpoolError::UnknownMessage(_))
        ));
        assert!(matches!(
            s.record_recipient_outcome(c, 0, &outcome(OutcomeKind::Delivered, "250", None))
                .await,
            Err(SpoolError::UnknownMessage(_))
        ));
        drop(s); // no close: outcomes were durable, deferrals are in the page cache
        (a, b)
    });
    let (recovered, again) = run(async {
        let (s, rec) = Spool::open(dir.path(), 0, &[], SpoolConfig::default())
            .await
            .expect("open");
        // More state after a reopen lands in a new segment and still folds in.
        s.record_deferral(b, &deferred(2, 30_000, "second"))
            .await
            .expect("deferral");
        s.close().await.expect("close");
        drop(s);
        let (_s, again) = Spool::open(dir.path(), 0, &[], SpoolConfig::default())
            .await
            .expect("open");
        (rec, again)
    });
    assert_eq!(
        recovered.iter().map(|r| r.id).collect::<Vec<_>>(),
        vec![a, b]
    );
    let da = &recovered[0].delivery;
    assert_eq!(da.attempts(), 2);
    assert_eq!(da.next_attempt_unix(), Some(10_900));
    assert_eq!(da.last_error(), Some("451 4.3.0 again"));
    assert_eq!(da.pending(3).collect::<Vec<_>>(), vec![1]);
    assert_eq!(
        da.outcomes[&0],
        outcome(
            OutcomeKind::Delivered,
            "250 2.0.0 ok",
            Some("mx1.example.test")
        )
    );
    assert_eq!(
        da.outcomes[&2],
        outcome(OutcomeKind::Bounced, "550 5.1.1 no such user", None)
    );
    let db = &recovered[1].delivery;
    assert_eq!(db.attempts(), 1);
    assert_eq!(
        db.last_error().map(str::len),
        Some(crate::spool::MAX_STATE_TEXT)
    );
    assert_eq!(db.pending(2).collect::<Vec<_>>(), vec![0]);
    assert_eq!(again[0].delivery, *da);
    assert_eq!(again[1].delivery.attempts(), 2);
    assert_eq!(again[1].delivery.last_error(), Some("second"));
    assert_eq!(again[1].delivery.outcomes, db.outcomes);

    let listed = scan_dir(dir.path()).expect("scan_dir");
    let listed: Vec<_> = listed.into_iter().map(|q| (q.id, q.delivery)).collect();
    let again: Vec<_> = again.into_iter().map(|r| (r.id, r.delivery)).collect();
    assert_eq!(listed, again);
}

#[test]
fn state_records_pin_segments_only_while_their_message_lives() {
    let dir = tempfile::tempdir().expect("tempdir");
    run(async {
        let cfg = small(8192);
        let path = |seg| layout::segment_path(dir.path(), seg);
        let (s, _) = open(dir.path(), 0, &[], cfg).await;
        // A: m1. B: m2, then m1's deferral and outcome. C: m3.
        let m1 = s.store(&env_n(1, 2), body(1, 7000)).await.expect("store");
        let m2 = s.store(&env_n(2, 1), body(2, 7000)).await.expect("store");
        let (a, b) = (m1.segment(), m2.segment());
        assert_ne!(a, b);
        s.record_deferral(m1, &deferred(1, 99, "421 busy"))
            .await
            .expect("deferral");
        s.record_recipient_outcome(m1, 0, &outcome(OutcomeKind::Delivered, "250 ok", None))
            .await
            .expect("outcome");
        assert_eq!(s.active_segment(), Some(b), "state went to B");
        let m3 = s.store(&env_n(3, 1), body(3, 7000)).await.expect("store");
        let c = m3.segment();
        assert_ne!(c, b);
        s.finish(m2, FinishReason::Delivered).await.expect("finish");
        assert!(path(b).exists(), "B holds the state of live m1");
        s.close().await.expect("close");
        drop(s);
        // Recovery rebuilds the pin.
        let (s, rec) = Spool::open(dir.path(), 0, &[], cfg).await.expect("open");
        assert!(path(a).exists() && path(b).exists());
        assert_eq!(rec.iter().map(|r| r.id).collect::<Vec<_>>(), vec![m1, m3]);
        assert_eq!(rec[0].delivery.attempts(), 1);
        assert!(rec[0].delivery.is_finished(0));
        // m1 finishes: its state pins nothing any more.
        s.finish(m1, FinishReason::Delivered).await.expect("finish");
        assert!(!path(a).exists(), "A reclaimed");
        assert!(!path(b).exists(), "B reclaimed: its state is moot");
        assert!(path(c).exists());
        drop(s);
        let (_s, rec) = Spool::open(dir.path(), 0, &[], cfg).await.expect("open");
        assert_eq!(rec.iter().map(|r| r.id).collect::<Vec<_>>(), vec![m3]);
        assert_eq!(rec[0].delivery, DeliveryState::default());
    });
}

#[test]
fn state_written_by_an_adopting_shard_is_seen_by_the_owner() {
    let dir = tempfile::tempdir().expect("tempdir");
    run(async {
        let cfg = SpoolConfig::default();
        let (s1, _) = open(dir.path(), 1, &[], cfg).await;
        let m = s1.store(&env_n(0, 2), body(0, 100)).await.expect("store");
        s1.close().await.expect("close");
        drop(s1);
        // Shard 0 adopts directory 1 and records state in its own directory.
        let (s0, _) = open(dir.path(), 0, &[1], cfg).await;
        s0.record_recipient_outcome(m, 1, &outcome(OutcomeKind::Bounced, "550 no", None))
            .await
            .expect("outcome");
        s0.record_deferral(m, &deferred(3, 777, "421"))
            .await
            .expect("deferral");
        s0.close().await.expect("close");
        drop(s0);
        // Directory 1 is its own again: the state follows.
        let (_s1, rec) = Spool::open(dir.path(), 1, &[], cfg).await.expect("open");
        assert_eq!(rec.len(), 1);
        assert_eq!(rec[0].delivery.attempts(), 3);
        assert!(rec[0].delivery.is_finished(1));
        // and shard 0, no longer owning it, keeps its state segment while
        // the message's segment exists
        let (_s0, rec0) = Spool::open(dir.path(), 0, &[], cfg).await.expect("open");
        assert!(rec0.is_empty());
        let own = layout::list_segments(dir.path(), 0).expect("list");
        assert!(!own.is_empty(), "state of a foreign live message kept");
    });
}

#[test]
fn outcome_for_a_recipient_out_of_range_is_ignored() {
    let dir = tempfile::tempdir().expect("tempdir");
    run(async {
        let (s, _) = open(dir.path(), 0, &[], SpoolConfig::default()).await;
        let m = s.store(&env_n(0, 1), body(0, 100)).await.expect("store");
        s.record_recipient_outcome(m, 5, &outcome(OutcomeKind::Delivered, "250", None))
            .await
            .expect("outcome");
        drop(s);
        let (_s, rec) = Spool::open(dir.path(), 0, &[], SpoolConfig::default())
            .await
            .expect("open");
        assert!(rec[0].delivery.outcomes.is_empty());
    });
}
