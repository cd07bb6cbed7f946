//! Installs the process's log subscriber from `[log]`: human-readable
//! lines or JSON lines on standard error, at the configured level, which
//! `RUST_LOG` overrides when set. It decides nothing about what is logged,
//! except that rustls's warnings (each about one peer's malformed
//! handshake, such as an IP address as SNI) are written only at `debug`:
//! any client could otherwise fill the log at the rate it connects.

use tracing_subscriber::EnvFilter;

use crate::config::{Log, LogFormat, LogLevel};

/// Why logging could not start.
#[derive(Debug, thiserror::Error)]
#[error("cannot install the log subscriber: {0}")]
pub struct LogInitError(String);

/// Installs the global subscriber; call once, before any other thread logs.
pub fn init(log: &Log) -> Result<(), LogInitError> {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(directives(log.level)));
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

/// The filter for `level`: rustls (which logs through `log`, bridged into
/// tracing) says `warn` for what a client did wrong in its handshake, so
/// below `debug` only its errors are written.
fn directives(level: LogLevel) -> String {
    match level {
        LogLevel::Warn | LogLevel::Info => format!("{},rustls=error", level.name()),
        LogLevel::Error | LogLevel::Debug | LogLevel::Trace => level.name().to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rustls_warnings_only_at_debug() {
        assert_eq!(directives(LogLevel::Info), "info,rustls=error");
        assert_eq!(directives(LogLevel::Warn), "warn,rustls=error");
        assert_eq!(directives(LogLevel::Error), "error");
        assert_eq!(directives(LogLevel::Debug), "debug");
        for level in [LogLevel::Info, LogLevel::Warn, LogLevel::Debug] {
            assert!(EnvFilter::try_new(directives(level)).is_ok());
        }
    }
}
