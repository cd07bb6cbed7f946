//! The `spate` binary: hands the command line to `cli` (which sets up
//! logging once it knows the configuration) and reports a failure.

use clap::Parser;

fn main() -> std::process::ExitCode {
    match spate::cli::run(spate::cli::Cli::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("spate: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
