//! Traffic shaping: how fast mail may leave for each destination site.
//! `rules` reads the shaping file (defaults, providers matched by MX
//! suffix, domains, back-off rules on receivers' replies) into per-site
//! limits; `class` names the kind of a failure (bounce classes);
//! `reply_match` is what both kinds of rules match in a reply; `rate`
//! parses rates and holds
//! the token bucket that enforces them. The ready queues apply the
//! limits; this module holds no queue and does no I/O but reading the
//! file. This file only maps the modules.

mod class;
mod rate;
mod reply_match;
mod rules;

pub use class::BounceClass;
pub use rate::{BadRate, Rate, TokenBucket};
pub use rules::{Backoff, Limits, Shaping, ShapingError, SiteLimits, ThrottleStep, SHIPPED};
