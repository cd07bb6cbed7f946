//! cargo-fuzz target `pop3_session`, a thin wrapper: the body, with what it
//! checks, is `spate::fuzz::pop3::pop3_session`. It refuses to hold any logic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| spate::fuzz::pop3::pop3_session(data));
