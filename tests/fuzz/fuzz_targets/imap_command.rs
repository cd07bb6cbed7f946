//! cargo-fuzz target `imap_command`, a thin wrapper: the body, with what it
//! checks, is `spate::fuzz::imap::imap_command`. It refuses to hold any logic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| spate::fuzz::imap::imap_command(data));
