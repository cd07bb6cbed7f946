//! Criterion benchmark of durable appends: the spool's group-committed
//! store (64 concurrent 4 KiB messages per iteration) beside the naive
//! baseline, write + fdatasync per 4 KiB message on a plain std File, in
//! the same run on the same filesystem. It measures; it asserts nothing.

use std::fs::OpenOptions;
use std::net::{IpAddr, Ipv4Addr};
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::rc::Rc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use glommio::{LocalExecutorBuilder, Placement};
use spate::envelope::{BodyType, Envelope, Recipient};
use spate::spool::{FinishReason, Spool, SpoolConfig};

const BATCH: usize = 64;
const MSG: usize = 4096;

fn envelope() -> Envelope {
    Envelope {
        sender: "bench@example.test".into(),
        recipients: vec![Recipient {
            address: "sink@example.test".into(),
            notify: None,
            orcpt: None,
        }],
        body_type: BodyType::EightBitMime,
        smtputf8: false,
        dsn_return: None,
        envid: None,
        received_at: 1_700_000_000,
        client_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
        helo: "bench.example.test".into(),
        auth_user: None,
        tenant: None,
    }
}

fn durable_append(c: &mut Criterion) {
    let base = env!("CARGO_TARGET_TMPDIR");
    let mut g = c.benchmark_group("durable_append_4k");
    g.throughput(Throughput::Elements(BATCH as u64));
    g.sample_size(20);
    g.warm_up_time(Duration::from_secs(2));
    g.measurement_time(Duration::from_secs(15));

    // glommio wants locked memory; as root the default works.
    let ex = LocalExecutorBuilder::new(Placement::Unbound)
        .make()
        .expect("glommio executor");
    g.bench_function("spool_store_64_concurrent", |b| {
        b.iter_custom(|iters| {
            ex.run(async {
                let dir = tempfile::tempdir_in(base).expect("tempdir");
                let (spool, _) = Spool::open(dir.path(), 0, &[], SpoolConfig::default())
                    .await
                    .expect("open spool");
                let spool = Rc::new(spool);
                let env = Rc::new(envelope());
                let mut elapsed = Duration::ZERO;
                for _ in 0..iters {
                    let start = Instant::now();
                    let tasks: Vec<_> = (0..BATCH)
                        .map(|_| {
                            let (s, e) = (Rc::clone(&spool), Rc::clone(&env));
                            glommio::spawn_local(async move { s.store(&e, vec![b'x'; MSG]).await })
                        })
                        .collect();
                    let mut ids = Vec::with_capacity(BATCH);
                    for t in tasks {
                        ids.push(t.await.expect("store"));
                    }
                    elapsed += start.elapsed();
                    // Keep the spool small between iterations (not timed).
                    for id in ids {
                        spool
                            .finish(id, FinishReason::Delivered)
                            .await
                            .expect("finish");
                    }
                }
                spool.close().await.expect("close");
                elapsed
            })
        })
    });

    g.bench_function("raw_write_fdatasync_each", |b| {
        b.iter_custom(|iters| {
            let dir = tempfile::tempdir_in(base).expect("tempdir");
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .open(dir.path().join("raw.seg"))
                .expect("open");
            let span: u64 = 64 << 20;
            // Preallocated like the spool's segments, so both pay the same
            // metadata costs.
            // SAFETY: plain fallocate(2) on an fd we own.
            let rc = unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, span as libc::off_t) };
            assert_eq!(rc, 0, "fallocate");
            let buf = vec![b'x'; MSG];
            let mut pos = 0u64;
            let start = Instant::now();
            for _ in 0..iters {
                for _ in 0..BATCH {
                    file.write_all_at(&buf, pos).expect("write");
                    file.sync_data().expect("fdatasync");
                    pos = (pos + MSG as u64) % span;
                }
            }
            start.elapsed()
        })
    });
    g.finish();
}

criterion_group!(benches, durable_append);
criterion_main!(benches);
