//! Criterion benchmark of local delivery (issue 4): `Folder::deliver` of a
//! 4 KiB message into a Maildir (tmp/ write + fsync, link into new/,
//! fsync of new/; the UID index is left to the next reader) beside the
//! naive baselines in the same run on the same filesystem: create, write
//! and fsync of the same bytes, and that plus an fsync of the directory.
//! The folder starts empty, or already holds 1,000 or 10,000 messages
//! (delivery should not care); then "deliver then snapshot": every
//! `SYNC_EVERY` deliveries a reader takes a snapshot, timed too, which
//! gives the batch its UIDs (one index append); then 8 threads delivering
//! to 8 users at once beside 8 threads of the baseline. Each delivered
//! batch is expunged (untimed) so a folder stays within `CHUNK` messages
//! of its starting size. It measures; it asserts nothing.
//! At the end it prints a markdown table of the medians (messages/s) and
//! the ratios to the baselines, read back from criterion's estimates.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Barrier;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, SamplingMode, Throughput};
use spate::mailbox::{Folder, MailStore, Uid, UserName};

/// Message size: header and body together.
const MSG: usize = 4096;
/// Deliveries between two (untimed) expunges.
const CHUNK: u64 = 100;
/// Concurrent writers in the threaded case.
const THREADS: usize = 8;
/// Messages already in the folder before timing starts.
const PREFILLS: [usize; 3] = [0, 1_000, 10_000];
/// Folder sizes of the "deliver then snapshot" case.
const SYNC_PREFILLS: [usize; 2] = [0, 10_000];
/// Deliveries between two snapshots in that case.
const SYNC_EVERY: u64 = 10;
const GROUP: &str = "local_delivery_4k";

fn message() -> (Vec<u8>, Vec<u8>) {
    let header = b"Return-Path: <bench@example.test>\r\nDelivered-To: u@bench.test\r\n\
From: bench@example.test\r\nTo: u@bench.test\r\nSubject: bench\r\n\r\n"
        .to_vec();
    let mut body = Vec::with_capacity(MSG - header.len());
    while body.len() < MSG - header.len() {
        body.extend_from_slice(
            b"0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstu\r\n",
        );
    }
    body.truncate(MSG - header.len());
    (header, body)
}

/// A real-disk directory (criterion's target tmp dir, never tmpfs).
fn bench_root() -> tempfile::TempDir {
    tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("tempdir")
}

/// A user's INBOX holding `prefill` messages, written straight into cur/
/// (without fsync: setup, not measured) and indexed by one snapshot.
fn inbox(store: &MailStore, user: &str, prefill: usize) -> Folder {
    let name = UserName::new(user).expect("user name");
    let folder = store.ensure_user(&name).expect("ensure_user").inbox();
    let (header, body) = message();
    let cur = folder.path().join("cur");
    for i in 0..prefill {
        let base = format!("1700000000.M{i}P1Q{i}.prefill,S={MSG}");
        let mut f = File::create(cur.join(format!("{base}:2,S"))).expect("prefill");
        f.write_all(&header)
            .and_then(|()| f.write_all(&body))
            .expect("prefill");
    }
    let snap = folder.snapshot().expect("snapshot");
    assert_eq!(snap.messages.len(), prefill);
    folder
}

/// Delivers `n` messages, with a snapshot after every `sync_every` of
/// them (timed) when given, and expunges them every `CHUNK` (untimed: a
/// snapshot to learn their UIDs, they are the ones in new/, the prefill
/// is in cur/); the time spent delivering and taking snapshots.
fn deliver_n(
    folder: &Folder,
    n: u64,
    header: &[u8],
    body: &[u8],
    sync_every: Option<u64>,
) -> Duration {
    let mut elapsed = Duration::ZERO;
    let mut left = n;
    while left > 0 {
        let batch = left.min(CHUNK);
        let start = Instant::now();
        for i in 1..=batch {
            let d = folder.deliver(&[header, body]).expect("deliver");
            debug_assert!(d.uid.is_none());
            if sync_every.is_some_and(|every| i.is_multiple_of(every) || i == batch) {
                folder.snapshot().expect("snapshot");
            }
        }
        elapsed += start.elapsed();
        let uids: Vec<Uid> = folder
            .snapshot()
            .expect("snapshot")
            .messages
            .iter()
            .filter(|m| m.recent)
            .map(|m| m.uid)
            .collect();
        assert_eq!(uids.len() as u64, batch);
        folder.expunge(&uids).expect("expunge");
        left -= batch;
    }
    elapsed
}

/// The baseline: `n` files created, written and fsynced in `dir` (and the
/// directory fsynced after each when `dir_sync`); removed every `CHUNK`
/// (untimed).
fn raw_n(dir: &Path, n: u64, bytes: &[u8], dir_sync: bool) -> Duration {
    let mut elapsed = Duration::ZERO;
    let mut left = n;
    let mut seq = 0u64;
    while left > 0 {
        let batch = left.min(CHUNK);
        let mut paths: Vec<PathBuf> = Vec::with_capacity(batch as usize);
        let start = Instant::now();
        for _ in 0..batch {
            seq += 1;
            let path = dir.join(format!("m{seq}"));
            let mut f = File::create(&path).expect("create");
            f.write_all(bytes).expect("write");
            f.sync_all().expect("fsync");
            if dir_sync {
                File::open(dir)
                    .and_then(|d| d.sync_all())
                    .expect("fsync dir");
            }
            paths.push(path);
        }
        elapsed += start.elapsed();
        for p in paths {
            fs::remove_file(p).expect("remove");
        }
        left -= batch;
    }
    elapsed
}

/// Runs `work(i)` on `THREADS` threads released together; the wall time
/// from the release until the last one finishes.
fn threaded(work: impl Fn(usize) + Sync) -> Duration {
    let barrier = Barrier::new(THREADS + 1);
    std::thread::scope(|s| {
        for i in 0..THREADS {
            let (barrier, work) = (&barrier, &work);
            s.spawn(move || {
                barrier.wait();
                work(i);
            });
        }
        barrier.wait();
        Instant::now()
    })
    // Leaving the scope joined every thread.
    .elapsed()
}

fn local_delivery(c: &mut Criterion) {
    let (header, body) = message();
    let whole = [header.as_slice(), body.as_slice()].concat();
    let mut g = c.benchmark_group(GROUP);
    // fsync times on these virtual disks swing widely: many equal samples
    // (flat sampling) give a steadier median than criterion's default.
    g.sampling_mode(SamplingMode::Flat);
    g.sample_size(30);
    g.warm_up_time(Duration::from_secs(1));
    g.measurement_time(Duration::from_secs(10));
    g.throughput(Throughput::Elements(1));

    let root = bench_root();
    let raw_dir = root.path().join("raw");
    fs::create_dir(&raw_dir).expect("raw dir");
    g.bench_function("raw_write_fsync", |b| {
        b.iter_custom(|n| raw_n(&raw_dir, n, &whole, false))
    });
    g.bench_function("raw_write_fsync_dirfsync", |b| {
        b.iter_custom(|n| raw_n(&raw_dir, n, &whole, true))
    });
    for prefill in PREFILLS {
        let store = MailStore::new(root.path().join(format!("mail{prefill}")), "bench.test");
        let folder = inbox(&store, "u", prefill);
        g.bench_with_input(
            BenchmarkId::new("maildir_deliver", prefill),
            &prefill,
            |b, _| b.iter_custom(|n| deliver_n(&folder, n, &header, &body, None)),
        );
    }
    for prefill in SYNC_PREFILLS {
        let store = MailStore::new(
            root.path().join(format!("mail-sync{prefill}")),
            "bench.test",
        );
        let folder = inbox(&store, "u", prefill);
        g.bench_with_input(
            BenchmarkId::new("maildir_deliver_then_snapshot", prefill),
            &prefill,
            |b, _| b.iter_custom(|n| deliver_n(&folder, n, &header, &body, Some(SYNC_EVERY))),
        );
    }

    // THREADS writers at once: one iteration is one message from each.
    g.throughput(Throughput::Elements(THREADS as u64));
    let dirs: Vec<PathBuf> = (0..THREADS)
        .map(|i| {
            let d = root.path().join(format!("raw{i}"));
            fs::create_dir(&d).expect("raw dir");
            d
        })
        .collect();
    g.bench_function(format!("raw_write_fsync_{THREADS}threads"), |b| {
        b.iter_custom(|n| {
            threaded(|i| {
                raw_n(&dirs[i], n, &whole, false);
            })
        })
    });
    let store = MailStore::new(root.path().join("mail-threads"), "bench.test");
    let folders: Vec<Folder> = (0..THREADS)
        .map(|i| inbox(&store, &format!("u{i}"), 0))
        .collect();
    g.bench_function(
        format!("maildir_deliver_{THREADS}threads_{THREADS}users"),
        |b| {
            b.iter_custom(|n| {
                threaded(|i| {
                    deliver_n(&folders[i], n, &header, &body, None);
                })
            })
        },
    );
    g.finish();
}

/// Where criterion keeps its results (its own rule: CRITERION_HOME, else
/// CARGO_TARGET_DIR/criterion, else target/criterion).
fn criterion_home() -> PathBuf {
    if let Some(home) = std::env::var_os("CRITERION_HOME") {
        return home.into();
    }
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => PathBuf::from(dir).join("criterion"),
        None => PathBuf::from("target/criterion"),
    }
}

/// Messages/s from the median time per iteration of one benchmark, as
/// criterion saved it; `None` when it did not run (filtered out).
fn rate(id: &str, per_iter: f64) -> Option<f64> {
    let path = criterion_home()
        .join(GROUP)
        .join(id)
        .join("new/estimates.json");
    let text = fs::read_to_string(path).ok()?;
    let json: serde_json::Value = serde_json::from_str(&text).ok()?;
    let ns = json["median"]["point_estimate"].as_f64()?;
    Some(per_iter * 1e9 / ns)
}

fn summary() {
    let t = THREADS as f64;
    let raw = rate("raw_write_fsync", 1.0);
    let raw_dir = rate("raw_write_fsync_dirfsync", 1.0);
    let raw_t = rate(&format!("raw_write_fsync_{THREADS}threads"), t);
    let fmt = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.0}"));
    let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) => format!("{:.3}", a / b),
        _ => "-".to_owned(),
    };
    println!("\nLocal delivery, {MSG}-byte messages, medians (msg/s), same run, same filesystem\n");
    println!("| case | msg/s | raw write+fsync | ratio | raw write+fsync+dir fsync | ratio |");
    println!("| --- | --- | --- | --- | --- | --- |");
    for prefill in PREFILLS {
        let m = rate(&format!("maildir_deliver/{prefill}"), 1.0);
        println!(
            "| Maildir deliver, 1 thread, {prefill} already in folder | {} | {} | {} | {} | {} |",
            fmt(m),
            fmt(raw),
            ratio(m, raw),
            fmt(raw_dir),
            ratio(m, raw_dir)
        );
    }
    for prefill in SYNC_PREFILLS {
        let m = rate(&format!("maildir_deliver_then_snapshot/{prefill}"), 1.0);
        println!(
            "| Maildir deliver, snapshot every {SYNC_EVERY}, {prefill} already in folder | {} | {} | {} | {} | {} |",
            fmt(m),
            fmt(raw),
            ratio(m, raw),
            fmt(raw_dir),
            ratio(m, raw_dir)
        );
    }
    let m = rate(
        &format!("maildir_deliver_{THREADS}threads_{THREADS}users"),
        t,
    );
    println!(
        "| Maildir deliver, {THREADS} threads to {THREADS} users | {} | {} ({THREADS} threads) | {} | | |",
        fmt(m),
        fmt(raw_t),
        ratio(m, raw_t)
    );
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    local_delivery(&mut c);
    c.final_summary();
    summary();
}
