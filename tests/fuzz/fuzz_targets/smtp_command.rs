//! Fuzz target: `parse_command` on arbitrary bytes; it refuses nothing but a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = spate::smtp::parse_command(data);
});
