//! cargo-fuzz target `smtp_session`, a thin wrapper: the body, with what it
//! checks, is `spate::fuzz::smtp::smtp_session`. It refuses to hold any logic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| spate::fuzz::smtp::smtp_session(data));
