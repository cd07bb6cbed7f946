//! Fuzz target: the IMAP `CommandReader` fed arbitrary bytes split at arbitrary points, each
//! framed command parsed and answered as a session would; it fails on a panic or on any buffer
//! past its bound.
#![no_main]

use libfuzzer_sys::fuzz_target;
use spate::imap::parser::parse_command;
use spate::imap::reader::{CommandReader, LineStep, ReaderConfig, Step};
use spate::imap::response::{write_command_error, write_rejection};
use spate::imap::CommandBody;

fuzz_target!(|data: &[u8]| {
    // Whole input as one command, as the parser alone sees it.
    let _ = parse_command(data);
    // The first bytes choose the limits and the split size; the rest is
    // what the client sends.
    let Some((ctl, input)) = data.split_first_chunk::<4>() else {
        return;
    };
    let config = ReaderConfig {
        max_line: 16 + usize::from(ctl[0]) * 4,
        max_literal: u64::from(ctl[1]) * 8,
        max_nonsync_literal: u64::from(ctl[2]) * 4,
        max_command: 64 + u64::from(ctl[1]) * 16,
    };
    let chunk = usize::from(ctl[3]).max(1);
    let mut reader = CommandReader::new(config);
    let mut out = Vec::new();
    let mut raw_lines = 0u8;
    for piece in input.chunks(chunk) {
        let mut rest = piece;
        loop {
            let taken = reader.push(rest);
            rest = &rest[taken..];
            assert!(reader.buffered() <= config.capacity());
            loop {
                if raw_lines > 0 {
                    match reader.next_line() {
                        LineStep::Incomplete => break,
                        _ => raw_lines -= 1,
                    }
                    continue;
                }
                match reader.next_command() {
                    Step::Command(bytes) => match parse_command(bytes) {
                        Ok(command) => {
                            if matches!(
                                command.body,
                                CommandBody::Idle | CommandBody::Authenticate { .. }
                            ) {
                                raw_lines = 1;
                            }
                        }
                        Err(e) => write_command_error(&mut out, &e),
                    },
                    Step::Rejected(r) => write_rejection(&mut out, &r),
                    Step::NeedContinuation => {}
                    Step::Incomplete => break,
                }
                out.clear();
            }
            if rest.is_empty() {
                break;
            }
            // A full buffer with nothing to frame would be a stall.
            assert!(taken > 0 || reader.buffered() < config.capacity());
        }
    }
});
