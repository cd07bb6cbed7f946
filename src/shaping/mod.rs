//! Traffic shaping: how fast mail may leave for each destination site.
//! `rules` reads the shaping file (defaults, providers matched by MX
//! suffix, domains, back-off rules on receivers' replies) into per-site
//! limits; `rate` parses rates and holds
//! the token bucket that enforces them. The ready queues apply the
//! limits; this module holds no queue and does no I/O but reading the
//! file. This file only maps the modules.

mod rate;
mod rules;

pub use rate::{BadRate, Rate, TokenBucket};
pub use rules::{Backoff, Limits, Shaping, ShapingError, SiteLimits, ThrottleStep, SHIPPED};
