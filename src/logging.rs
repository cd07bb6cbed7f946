//! Installs the process's log subscriber from `[log]`: human-readable
//! lines or JSON lines on standard error, at the configured level, which
//! `RUST_LOG` overrides when set. It decides nothing about what is logged.

use tracing_subscriber::EnvFilter;

use crate::config::{Log, LogFormat};

/// Why logging could not start.
#[derive(Debug, thiserror::Error)]
#[error("cannot install the log subscriber: {0}")]
pub struct LogInitError(String);

/// Installs the global subscriber; call once, before any other thread logs.
pub fn init(log: &Log) -> Result<(), LogInitError> {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(log.level.name()));
    // Colours only for a person at a terminal, never in a log file.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    let result = match log.format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .try_init(),
    };
    result.map_err(|e| LogInitError(e.to_string()))
}
