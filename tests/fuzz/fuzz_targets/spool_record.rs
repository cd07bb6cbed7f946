//! cargo-fuzz target `spool_record`, a thin wrapper: the body, with what it
//! checks, is `spate::fuzz::spool::spool_record`. It refuses to hold any logic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| spate::fuzz::spool::spool_record(data));
