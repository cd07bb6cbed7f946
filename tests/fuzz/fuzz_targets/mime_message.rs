//! cargo-fuzz target `mime_message`, a thin wrapper: the body, with what it
//! checks, is `spate::fuzz::mime::mime_message`. It refuses to hold any logic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| spate::fuzz::mime::mime_message(data));
