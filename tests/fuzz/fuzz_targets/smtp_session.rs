//! Fuzz target: one `ServerSession` (may_relay = false) fed arbitrary bytes split at arbitrary
//! points, driven like the glue drives it; it fails on a panic or on any buffer past its bound.
#![no_main]

use std::rc::Rc;
use std::time::{Duration, Instant, UNIX_EPOCH};

use libfuzzer_sys::fuzz_target;
use spate::smtp::session::OUTPUT_HARD_LIMIT;
use spate::smtp::{
    BareLineEndings, Event, PeerInfo, ServerConfig, ServerSession, StoreFailure, Timeouts,
};

fuzz_target!(|data: &[u8]| {
    // The first bytes choose the limits and the split points; the rest is
    // what the client sends.
    let Some((ctl, input)) = data.split_first_chunk::<6>() else {
        return;
    };
    let config = ServerConfig {
        hostname: "fuzz.test".to_owned(),
        max_line_length: 16 + usize::from(ctl[0]) * 8,
        max_message_size: usize::from(ctl[1]) * 64,
        max_recipients: 1 + usize::from(ctl[2] % 8),
        max_errors: usize::from(ctl[2]) * 4,
        max_hops: usize::from(ctl[3] % 5),
        bare_line_endings: if ctl[3] & 0x80 == 0 {
            BareLineEndings::Reject
        } else {
            BareLineEndings::Normalize
        },
        local_domains: vec!["local.test".to_owned()],
        starttls: ctl[3] & 0x40 != 0,
        timeouts: Timeouts::default(),
    };
    let max_line = config.max_line_length;
    let max_body = config.max_message_size + 1024;
    let peer = PeerInfo {
        addr: ([192, 0, 2, 1], 2525).into(),
        may_relay: false,
        tls: false,
    };
    let now = Instant::now();
    let wall = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let mut session = ServerSession::new(Rc::new(config), peer, now);

    // A small xorshift PRNG seeded from the control bytes picks chunk sizes.
    let mut rng = u32::from_le_bytes([ctl[4], ctl[5], ctl[0], 1]) | 1;
    let max_chunk = 1 + usize::from(ctl[5]) * 16;
    let mut pending: Vec<u8> = Vec::new();
    let mut fed = 0;
    let mut stored = 0u32;
    loop {
        loop {
            let n = session.handle_input(&pending, now, wall);
            assert!(n <= pending.len());
            pending.drain(..n);
            assert!(session.output().len() <= OUTPUT_HARD_LIMIT + 1024);
            let mut acted = false;
            while let Some(event) = session.poll_event() {
                acted = true;
                match event {
                    Event::Message(m) => {
                        assert!(m.body.len() <= max_body);
                        stored += 1;
                        let result = match stored % 5 {
                            3 => Err(StoreFailure::DiskFull),
                            4 => Err(StoreFailure::Temporary),
                            _ => Ok("FUZZ1"),
                        };
                        session.handle_stored(result, now);
                    }
                    Event::StartTls => {
                        pending.clear();
                        session.handle_tls_established(now);
                    }
                    Event::Close => return,
                }
            }
            let len = session.output().len();
            session.consume_output(len);
            if n == 0 && !acted {
                break;
            }
        }
        assert!(pending.len() < max_line);
        if fed == input.len() {
            break;
        }
        rng ^= rng << 13;
        rng ^= rng >> 17;
        rng ^= rng << 5;
        let k = (rng as usize % max_chunk + 1).min(input.len() - fed);
        pending.extend_from_slice(&input[fed..fed + k]);
        fed += k;
    }
    session.handle_timeout(now + Duration::from_secs(301));
    assert!(session.is_closed());
});
