//! Criterion benchmark of DKIM signing alone: one 4 KiB message signed
//! with an Ed25519 key and with an RSA-2048 key (made by openssl at bench
//! time), the whole of what the SMTP glue does per message: finding the
//! From domain's key, canonicalizing, hashing, signing. It measures; it
//! asserts nothing.

use std::process::Command;

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use spate::config::{DkimConfig, DkimDomain};
use spate::dkim::Signer;

/// A 4 KiB message as smtp-source sends them, with our Received on top.
fn message() -> Vec<u8> {
    let mut m = b"Received: from client.example ([192.0.2.7])\r\n\tby relay.test (spate) with ESMTP;\r\n\tSat, 6 Dec 2026 19:00:00 +0000\r\nFrom: <bench@example.test>\r\nTo: <sink@example.test>\r\nDate: Sat, 6 Dec 2026 19:00:00 +0000\r\nMessage-Id: <1.2.3@example.test>\r\nSubject: bench\r\n\r\n".to_vec();
    while m.len() < 4096 {
        m.extend_from_slice(b"La de da de da 1.\r\n");
    }
    m
}

fn signer(dir: &std::path::Path, algorithm: &[&str]) -> Signer {
    let path = dir.join(format!("{}.pem", algorithm.join("-")));
    let status = Command::new("openssl")
        .arg("genpkey")
        .args(algorithm)
        .arg("-out")
        .arg(&path)
        .status()
        .expect("openssl makes the keys");
    assert!(status.success());
    let mut config = DkimConfig::default();
    config.domain.insert(
        "example.test".to_owned(),
        DkimDomain {
            selector: "bench".to_owned(),
            private_key: path,
        },
    );
    Signer::load(&config).expect("the key loads")
}

fn signing(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let message = message();
    let mut g = c.benchmark_group("dkim_sign_4k");
    g.throughput(Throughput::Elements(1));
    for (name, algorithm) in [
        ("ed25519", &["-algorithm", "ed25519"][..]),
        (
            "rsa2048",
            &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"][..],
        ),
    ] {
        let signer = signer(dir.path(), algorithm);
        g.bench_function(name, |b| {
            b.iter(|| {
                let key = signer.key_for(black_box(&message)).expect("a key");
                black_box(key.sign(&message).expect("signed"))
            })
        });
    }
    g.finish();
}

criterion_group!(benches, signing);
criterion_main!(benches);
