//! Criterion benchmarks of the sans-IO SMTP core: command parsing
//! (commands/s), DATA receiving (bytes/s, beside a plain copy of the same
//! bytes as the floor) and whole pipelined transactions (messages/s). It
//! measures; it asserts nothing.

use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Instant, SystemTime};

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use spate::smtp::data::{BodyLimits, BodyReceiver, Framing};
use spate::smtp::{parse_command, DotStuffer, Event, PeerInfo, ServerConfig, ServerSession};

const COMMANDS: &[&[u8]] = &[
    b"EHLO client.example.org\r\n",
    b"MAIL FROM:<sender@example.org> SIZE=4096 BODY=8BITMIME\r\n",
    b"RCPT TO:<alice@example.test> NOTIFY=FAILURE,DELAY ORCPT=rfc822;alice@example.test\r\n",
    b"RCPT TO:<\"bob smith\"@example.test>\r\n",
    b"DATA\r\n",
    b"RSET\r\n",
    b"NOOP\r\n",
    b"QUIT\r\n",
];

fn command_parsing(c: &mut Criterion) {
    let mut g = c.benchmark_group("smtp_command_parse");
    g.throughput(Throughput::Elements(COMMANDS.len() as u64));
    g.bench_function("typical_transaction_commands", |b| {
        b.iter(|| {
            for line in COMMANDS {
                let _ = black_box(parse_command(black_box(line)));
            }
        })
    });
    g.finish();
}

/// A 1 MiB message of 76-character lines, one in 20 starting with a dot
/// (so dot-unstuffing is exercised), dot-stuffed as a client sends it.
fn wire_body() -> Vec<u8> {
    let mut wire = Vec::with_capacity(1 << 20);
    wire.extend_from_slice(b"From: a@example.org\r\nTo: b@example.test\r\nSubject: bench\r\n\r\n");
    let mut n = 0;
    while wire.len() < (1 << 20) {
        if n % 20 == 0 {
            wire.extend_from_slice(b"..");
        }
        wire.extend_from_slice(&[b'x'; 74]);
        wire.extend_from_slice(b"\r\n");
        n += 1;
    }
    wire.extend_from_slice(b".\r\n");
    wire
}

fn data_receiving(c: &mut Criterion) {
    let wire = wire_body();
    let limits = BodyLimits {
        max_size: 64 << 20,
        max_hops: 50,
        normalize: false,
        // As served: folding on at 998 (the body's lines are shorter).
        fold_at: Some(998),
    };
    let mut g = c.benchmark_group("smtp_data_receive_1mib");
    g.throughput(Throughput::Bytes(wire.len() as u64));
    g.bench_function("body_receiver_16k_reads", |b| {
        b.iter(|| {
            let mut rx = BodyReceiver::new(Framing::Dot, limits, Vec::with_capacity(wire.len()));
            for chunk in wire.chunks(16 * 1024) {
                let progress = rx.feed(chunk);
                if progress.complete {
                    break;
                }
            }
            black_box(rx.finish().expect("valid body"))
        })
    });
    g.bench_function("baseline_plain_copy_16k_reads", |b| {
        b.iter(|| {
            let mut out = Vec::with_capacity(wire.len());
            for chunk in wire.chunks(16 * 1024) {
                out.extend_from_slice(chunk);
            }
            black_box(out)
        })
    });
    g.finish();
}

fn pipelined_transactions(c: &mut Criterion) {
    let mut transcript = Vec::new();
    transcript.extend_from_slice(b"EHLO client.example.org\r\n");
    let mut body = Vec::new();
    body.extend_from_slice(b"Subject: bench\r\n\r\n");
    while body.len() < 4096 {
        body.extend_from_slice(&[b'y'; 70]);
        body.extend_from_slice(b"\r\n");
    }
    const PER_SESSION: usize = 100;
    for _ in 0..PER_SESSION {
        transcript.extend_from_slice(
            b"MAIL FROM:<s@example.org>\r\nRCPT TO:<r@example.test>\r\nDATA\r\n",
        );
        transcript.extend_from_slice(&body);
        transcript.extend_from_slice(b".\r\n");
    }
    transcript.extend_from_slice(b"QUIT\r\n");
    let config = Rc::new(ServerConfig {
        local_domains: vec!["example.test".into()],
        ..ServerConfig::default()
    });
    let peer = PeerInfo {
        addr: SocketAddr::from(([127, 0, 0, 1], 40000)),
        may_relay: false,
        tls: false,
    };
    let mut g = c.benchmark_group("smtp_session_4k_messages");
    g.throughput(Throughput::Elements(PER_SESSION as u64));
    g.bench_function("pipelined_100_per_session", |b| {
        b.iter(|| {
            let now = Instant::now();
            let wall = SystemTime::now();
            let mut session = ServerSession::new(Rc::clone(&config), peer, now);
            let mut input = &transcript[..];
            let mut stored = 0;
            while !session.is_closed() {
                let n = session.handle_input(input, now, wall);
                input = &input[n..];
                while let Some(event) = session.poll_event() {
                    if let Event::Message(m) = event {
                        black_box(m.body);
                        stored += 1;
                        session.handle_stored(Ok("0000000000000001"), now);
                    }
                }
                let out = session.output().len();
                session.consume_output(out);
                if n == 0 && input.is_empty() {
                    break;
                }
            }
            assert_eq!(stored, PER_SESSION);
        })
    });
    g.finish();
}

/// A 1 MiB stored body (one line in 20 starting with a dot) dot-stuffed
/// on the fly, beside a plain copy of the same bytes: the pieces are
/// appended to a buffer as a socket write would take them.
fn dot_stuffing(c: &mut Criterion) {
    let mut body = Vec::with_capacity(1 << 20);
    body.extend_from_slice(b"From: a@example.org\r\nSubject: bench\r\n\r\n");
    let mut n = 0;
    while body.len() < (1 << 20) {
        if n % 20 == 0 {
            body.push(b'.');
        }
        body.extend_from_slice(&[b'x'; 74]);
        body.extend_from_slice(b"\r\n");
        n += 1;
    }
    let mut g = c.benchmark_group("smtp_dot_stuff_1mib");
    g.throughput(Throughput::Bytes(body.len() as u64));
    g.bench_function("dot_stuffer_pieces", |b| {
        let mut out = Vec::with_capacity(body.len() + body.len() / 512 + 8);
        b.iter(|| {
            out.clear();
            for piece in DotStuffer::new(black_box(&body)) {
                out.extend_from_slice(piece);
            }
            black_box(out.len())
        })
    });
    g.bench_function("baseline_plain_copy", |b| {
        let mut out = Vec::with_capacity(body.len() + 8);
        b.iter(|| {
            out.clear();
            out.extend_from_slice(black_box(&body));
            out.extend_from_slice(b".\r\n");
            black_box(out.len())
        })
    });
    g.finish();
}

criterion_group!(
    benches,
    command_parsing,
    data_receiving,
    pipelined_transactions,
    dot_stuffing
);
criterion_main!(benches);
