//! The shaping file: limits per destination site, as defaults, per
//! provider (matched by the suffix of any of the site's MX or next-hop
//! host names: `.google.com` covers every domain Google hosts, the MX
//! rollup) and per recipient domain. spate ships rules for the big
//! receivers (`default.toml` here, compiled in) and a file of the user's
//! (`[delivery] shaping_file`) is layered over them: its default fields,
//! providers and domains replace the shipped ones of the same name.
//!
//! ```toml
//! [default]                      # every site
//! connections = 20               # at once, the whole host
//! deliveries_per_connection = 100
//! message_rate = "100/s"         # N/s, N/min, N/h or N/day, whole host
//! connection_rate = "60/min"     # new connections
//! idle = "2s"                    # an idle connection waits this long for work
//!
//! [provider.google]
//! mx_suffix = [".google.com", ".googlemail.com"]
//! connections = 5
//!
//! [domain."comcast.net"]
//! connections = 25
//!
//! [source.ip2]                   # an egress source, every site through it
//! connections = 2
//! message_rate = "10/min"
//! ```
//! A site takes the fields its domain rule sets, then its provider's,
//! then the defaults, then the `[delivery]` settings. Host-wide counts
//! are split between the cores (connections rounded down, at least one
//! per core). With egress sources a site's limits hold per source, and a
//! `[source.NAME]` rule tightens them for that source: each field it sets
//! caps the site's (both the receiver's limits and the source's
//! reputation hold).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use super::class::{BounceClass, ClassEntry, ClassRule};
use super::rate::Rate;
use super::reply_match::{ReplyMatch, ReplyMatchEntry};

/// The rules spate ships, from the big receivers' published sender
/// guidance; users extend them with `[delivery] shaping_file`.
pub const SHIPPED: &str = include_str!("default.toml");

/// Why a shaping file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ShapingError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("shaping rules: {0}")]
    Parse(#[from] toml::de::Error),
    #[error("shaping rules: {0}")]
    Invalid(String),
}

/// What one rule (or the defaults) sets; unset fields fall through.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    pub connections: Option<usize>,
    pub deliveries_per_connection: Option<usize>,
    pub message_rate: Option<Rate>,
    pub connection_rate: Option<Rate>,
    #[serde(default, with = "humantime_serde")]
    pub idle: Option<Duration>,
}

impl Limits {
    /// `self` where set, else `under`.
    fn over(&self, under: &Limits) -> Limits {
        Limits {
            connections: self.connections.or(under.connections),
            deliveries_per_connection: self
                .deliveries_per_connection
                .or(under.deliveries_per_connection),
            message_rate: self.message_rate.or(under.message_rate),
            connection_rate: self.connection_rate.or(under.connection_rate),
            idle: self.idle.or(under.idle),
        }
    }

    fn check(&self, what: &str) -> Result<(), ShapingError> {
        if self.connections == Some(0) || self.deliveries_per_connection == Some(0) {
            return Err(ShapingError::Invalid(format!(
                "{what}: connections and deliveries_per_connection must be at least 1"
            )));
        }
        Ok(())
    }
}

/// A provider: the sites whose hosts end with one of the suffixes.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProviderRule {
    mx_suffix: Vec<String>,
    connections: Option<usize>,
    deliveries_per_connection: Option<usize>,
    message_rate: Option<Rate>,
    connection_rate: Option<Rate>,
    #[serde(default, with = "humantime_serde")]
    idle: Option<Duration>,
}

impl ProviderRule {
    fn limits(&self) -> Limits {
        Limits {
            connections: self.connections,
            deliveries_per_connection: self.deliveries_per_connection,
            message_rate: self.message_rate,
            connection_rate: self.connection_rate,
            idle: self.idle,
        }
    }

    fn matches(&self, hosts: &[&str]) -> bool {
        hosts.iter().any(|host| {
            let host = host.trim_end_matches('.');
            self.mx_suffix.iter().any(|suffix| {
                let suffix = suffix.trim_end_matches('.');
                let bare = suffix.trim_start_matches('.');
                host.eq_ignore_ascii_case(bare)
                    || (host.len() > bare.len()
                        && host.is_char_boundary(host.len() - bare.len())
                        && host[host.len() - bare.len()..].eq_ignore_ascii_case(bare)
                        && host.as_bytes()[host.len() - bare.len() - 1] == b'.')
            })
        })
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    default: Limits,
    #[serde(default)]
    provider: BTreeMap<String, ProviderRule>,
    #[serde(default)]
    domain: BTreeMap<String, Limits>,
    /// Per egress source (`[[egress.source]]` name): caps on every site
    /// reached through it.
    #[serde(default)]
    source: BTreeMap<String, Limits>,
    #[serde(default)]
    backoff: Vec<BackoffEntry>,
    #[serde(default)]
    class: Vec<ClassEntry>,
}

/// A `[[backoff]]` entry as written: what it matches (every matcher
/// given must match) and what it does (at least one action).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct BackoffEntry {
    /// A regular expression searched in the receiver's whole reply
    /// (code, enhanced code and text).
    reply: Option<String>,
    /// The reply code (`421`), or its class (`4` for any 4xx).
    code: Option<u16>,
    /// The enhanced status code (RFC 3463), or its start (`"5.7."`).
    enhanced: Option<String>,
    /// Suspend the site for this long.
    #[serde(default, with = "humantime_serde")]
    suspend: Option<Duration>,
    /// Multiply the site's limits by this factor (0 < f < 1) ...
    throttle: Option<f64>,
    /// ... and undo one such step after this many deliveries to the site
    /// without a matching reply in between (default 100).
    recover_after: Option<u32>,
    /// Bounce the mail queued for the site, and what comes for it, for
    /// this long (the site is suspended meanwhile).
    #[serde(default, with = "humantime_serde")]
    bounce: Option<Duration>,
    /// The recipient fails for good, even on a 4xx reply.
    #[serde(default)]
    fail: bool,
}

/// How much a `throttle` rule lowers a site, and how it climbs back.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ThrottleStep {
    /// The factor each matching reply multiplies the limits by.
    pub factor: f64,
    /// Deliveries without a matching reply that undo one step.
    pub recover_after: u32,
}

/// The default of `recover_after`.
pub const RECOVER_AFTER: u32 = 100;

/// A back-off rule: a receiver's reply it matches and what it does.
#[derive(Debug, Clone)]
pub struct Backoff {
    matcher: ReplyMatch,
    /// Suspend the site this long.
    pub suspend: Option<Duration>,
    pub throttle: Option<ThrottleStep>,
    /// Bounce the site's mail this long.
    pub bounce: Option<Duration>,
    /// The recipient fails for good.
    pub fail: bool,
}

impl Backoff {
    fn compile(entry: &BackoffEntry) -> Result<Backoff, ShapingError> {
        let invalid = |what: &str| ShapingError::Invalid(format!("[[backoff]] {entry:?}: {what}"));
        let matcher = ReplyMatch::compile(
            ReplyMatchEntry {
                reply: entry.reply.as_deref(),
                code: entry.code,
                enhanced: entry.enhanced.as_deref(),
            },
            "[[backoff]]",
        )?;
        if [entry.suspend, entry.bounce]
            .into_iter()
            .flatten()
            .any(|d| d.is_zero())
        {
            return Err(invalid("suspend and bounce must be more than 0"));
        }
        if entry.throttle.is_some_and(|f| !(f > 0.0 && f < 1.0)) {
            return Err(invalid("throttle must be between 0 and 1"));
        }
        if entry.recover_after == Some(0)
            || (entry.recover_after.is_some() && entry.throttle.is_none())
        {
            return Err(invalid("recover_after must be at least 1, with throttle"));
        }
        let acts = entry.suspend.is_some()
            || entry.throttle.is_some()
            || entry.bounce.is_some()
            || entry.fail;
        if !acts {
            return Err(invalid(
                "needs an action: suspend, throttle, bounce or fail",
            ));
        }
        Ok(Backoff {
            matcher,
            suspend: entry.suspend,
            throttle: entry.throttle.map(|factor| ThrottleStep {
                factor,
                recover_after: entry.recover_after.unwrap_or(RECOVER_AFTER),
            }),
            bounce: entry.bounce,
            fail: entry.fail,
        })
    }

    /// What the rule matches, as written (for logs).
    pub fn pattern(&self) -> &str {
        self.matcher.description()
    }

    /// Whether a receiver's reply (`421 4.7.0 text`, or a multi-line
    /// reply's lines joined) matches every matcher of the rule.
    pub fn matches(&self, reply: &str) -> bool {
        self.matcher.matches(reply)
    }
}

/// The limits that apply to one site, on one core.
#[derive(Debug, Clone, PartialEq)]
pub struct SiteLimits {
    /// Connections at once from this core.
    pub connections: usize,
    pub deliveries_per_connection: usize,
    /// The host-wide rate; each core enforces its share.
    pub message_rate: Option<Rate>,
    pub connection_rate: Option<Rate>,
    pub idle: Duration,
    /// The rule that decided (`provider:google`, `domain:comcast.net`,
    /// `default`), for logs and `spate queue`.
    pub rule: String,
}

impl SiteLimits {
    /// These limits with each field `rule` sets as a ceiling (a source's
    /// rule over a site's limits), on one of `cores` cores.
    fn capped_by(self, rule: &Limits, source: &str, cores: usize) -> SiteLimits {
        let cap = |have: usize, rule: Option<usize>| rule.map_or(have, |r| have.min(r));
        SiteLimits {
            connections: cap(
                self.connections,
                rule.connections.map(|c| (c / cores.max(1)).max(1)),
            ),
            deliveries_per_connection: cap(
                self.deliveries_per_connection,
                rule.deliveries_per_connection,
            ),
            message_rate: slower(self.message_rate, rule.message_rate),
            connection_rate: slower(self.connection_rate, rule.connection_rate),
            idle: rule.idle.map_or(self.idle, |i| self.idle.min(i)),
            rule: format!("{}+source:{source}", self.rule),
        }
    }

    /// These limits lowered by a back-off throttle (`factor` in (0, 1]):
    /// fewer connections (at least one), rates with fewer messages per
    /// period (and, below one, a longer period: 1/min still lowers).
    pub fn scaled(&self, factor: f64) -> SiteLimits {
        if factor >= 1.0 {
            return self.clone();
        }
        let factor = factor.max(1.0 / 1024.0);
        let slow = |rate: Rate| {
            let count = f64::from(rate.count) * factor;
            if count >= 1.0 {
                Rate {
                    count: count as u32,
                    per: rate.per,
                }
            } else {
                Rate {
                    count: 1,
                    per: rate.per.div_f64(count),
                }
            }
        };
        SiteLimits {
            connections: ((self.connections as f64 * factor) as usize).max(1),
            message_rate: self.message_rate.map(slow),
            connection_rate: self.connection_rate.map(slow),
            ..self.clone()
        }
    }
}

/// The slower of two rates (`None`: no limit).
fn slower(a: Option<Rate>, b: Option<Rate>) -> Option<Rate> {
    match (a, b) {
        (Some(a), Some(b)) => {
            // a.count / a.per <= b.count / b.per, in integers.
            let a_slower =
                u128::from(a.count) * b.per.as_millis() <= u128::from(b.count) * a.per.as_millis();
            Some(if a_slower { a } else { b })
        }
        (a, b) => a.or(b),
    }
}

/// The rules in force (shipped, with the user's file over them).
#[derive(Debug, Clone, Default)]
pub struct Shaping {
    file: File,
    /// The back-off rules, compiled, the user's before the shipped ones.
    backoff: Vec<Backoff>,
    /// The bounce classes' rules, compiled, the user's first.
    classes: Vec<ClassRule>,
}

impl Shaping {
    /// The shipped rules alone.
    pub fn shipped() -> Shaping {
        Shaping::parse(SHIPPED).expect("the shipped shaping rules are valid")
    }

    /// Rules from TOML text.
    pub fn parse(text: &str) -> Result<Shaping, ShapingError> {
        let file: File = toml::from_str(text)?;
        file.default.check("[default]")?;
        for (name, rule) in &file.provider {
            if rule.mx_suffix.is_empty() {
                return Err(ShapingError::Invalid(format!(
                    "[provider.{name}] needs mx_suffix"
                )));
            }
            rule.limits().check(&format!("[provider.{name}]"))?;
        }
        for (name, rule) in &file.domain {
            rule.check(&format!("[domain.{name:?}]"))?;
        }
        for (name, rule) in &file.source {
            rule.check(&format!("[source.{name}]"))?;
        }
        let backoff = file
            .backoff
            .iter()
            .map(Backoff::compile)
            .collect::<Result<Vec<_>, _>>()?;
        let classes = file
            .class
            .iter()
            .map(ClassRule::compile)
            .collect::<Result<Vec<_>, _>>()?;
        let domain = file
            .domain
            .into_iter()
            .map(|(name, limits)| (name.trim_end_matches('.').to_ascii_lowercase(), limits))
            .collect();
        Ok(Shaping {
            file: File {
                domain,
                class: Vec::new(),
                ..file
            },
            backoff,
            classes,
        })
    }

    /// The shipped rules with the file at `path` over them (`None`: the
    /// shipped rules alone).
    pub fn load(path: Option<&Path>) -> Result<Shaping, ShapingError> {
        let shipped = Shaping::shipped();
        let Some(path) = path else {
            return Ok(shipped);
        };
        let text = std::fs::read_to_string(path).map_err(|source| ShapingError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Ok(Shaping::parse(&text)?.over(shipped))
    }

    /// `self`'s rules, then `base`'s where `self` has none of that name.
    pub fn over(self, base: Shaping) -> Shaping {
        let mut provider = base.file.provider;
        provider.extend(self.file.provider);
        let mut domain = base.file.domain;
        domain.extend(self.file.domain);
        let mut source = base.file.source;
        source.extend(self.file.source);
        let mut backoff = self.backoff;
        backoff.extend(base.backoff);
        let mut classes = self.classes;
        classes.extend(base.classes);
        Shaping {
            file: File {
                default: self.file.default.over(&base.file.default),
                provider,
                domain,
                source,
                backoff: Vec::new(),
                class: Vec::new(),
            },
            backoff,
            classes,
        }
    }

    /// The class of a failure's reply (a receiver's, or spate's own): the
    /// first `[[class]]` rule that matches (the user's, then the shipped
    /// ones), else what its enhanced status code says (RFC 3463).
    pub fn classify(&self, reply: &str) -> BounceClass {
        self.classes
            .iter()
            .find(|c| c.matches(reply))
            .map_or_else(|| BounceClass::of_status(reply), |c| c.class)
    }

    /// The first back-off rule matching a receiver's reply.
    pub fn backoff_for(&self, reply: &str) -> Option<&Backoff> {
        self.backoff.iter().find(|b| b.matches(reply))
    }

    /// The limits of a site reached through egress source `source` (see
    /// [`Shaping::site_limits`]), tightened by the source's
    /// `[source.NAME]` rule when there is one.
    pub fn site_limits_from(
        &self,
        domain: Option<&str>,
        hosts: &[&str],
        fallback: &Limits,
        cores: usize,
        source: Option<&str>,
    ) -> SiteLimits {
        let site = self.site_limits(domain, hosts, fallback, cores);
        match source.and_then(|name| self.file.source.get_key_value(name)) {
            Some((name, rule)) => site.capped_by(rule, name, cores),
            None => site,
        }
    }

    /// The limits of a site reached for `domain` (none for a route)
    /// through `hosts` (its MX hosts, or the route's host), on one of
    /// `cores` cores; `fallback` holds the `[delivery]` settings.
    pub fn site_limits(
        &self,
        domain: Option<&str>,
        hosts: &[&str],
        fallback: &Limits,
        cores: usize,
    ) -> SiteLimits {
        let mut rule = "default".to_owned();
        let mut limits = self.file.default.over(fallback);
        if let Some((name, provider)) = self.file.provider.iter().find(|(_, p)| p.matches(hosts)) {
            limits = provider.limits().over(&limits);
            rule = format!("provider:{name}");
        }
        let domain = domain.map(|d| d.trim_end_matches('.').to_ascii_lowercase());
        if let Some((name, own)) = domain
            .as_ref()
            .and_then(|d| self.file.domain.get_key_value(d))
        {
            limits = own.over(&limits);
            rule = format!("domain:{name}");
        }
        let cores = cores.max(1);
        SiteLimits {
            connections: (limits.connections.unwrap_or(20) / cores).max(1),
            deliveries_per_connection: limits.deliveries_per_connection.unwrap_or(100).max(1),
            message_rate: limits.message_rate,
            connection_rate: limits.connection_rate,
            idle: limits.idle.unwrap_or(Duration::from_secs(2)),
            rule,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fallback() -> Limits {
        Limits {
            connections: Some(40),
            deliveries_per_connection: Some(100),
            ..Limits::default()
        }
    }

    #[test]
    fn the_shipped_rules_load_and_match_providers_by_mx_suffix() {
        let s = Shaping::shipped();
        let google = s.site_limits(
            Some("example-hosted.test"),
            &["aspmx.l.google.com", "alt1.aspmx.l.google.com"],
            &fallback(),
            1,
        );
        assert_eq!(google.rule, "provider:google");
        let plain = s.site_limits(Some("small.test"), &["mx.small.test"], &fallback(), 1);
        assert_eq!(plain.rule, "default");
        // A suffix matches whole labels only.
        let lookalike = s.site_limits(None, &["mx.notgoogle.com"], &fallback(), 1);
        assert_eq!(lookalike.rule, "default");
    }

    #[test]
    fn a_domain_rule_beats_its_provider_and_fields_fall_through() {
        let text = r#"
            [default]
            deliveries_per_connection = 50
            idle = "5s"
            [provider.big]
            mx_suffix = [".big.test"]
            connections = 6
            message_rate = "100/min"
            [domain."Special.Test."]
            connections = 2
        "#;
        let s = Shaping::parse(text).unwrap();
        let special = s.site_limits(Some("special.test"), &["mx1.big.test"], &fallback(), 2);
        assert_eq!(special.rule, "domain:special.test");
        assert_eq!(special.connections, 1, "2 host-wide over 2 cores");
        assert_eq!(special.message_rate, Some("100/min".parse().unwrap()));
        assert_eq!(special.deliveries_per_connection, 50);
        assert_eq!(special.idle, Duration::from_secs(5));
        let other = s.site_limits(Some("other.test"), &["MX2.BIG.TEST."], &fallback(), 2);
        assert_eq!(other.rule, "provider:big");
        assert_eq!(other.connections, 3);
        let elsewhere = s.site_limits(None, &["relay.test"], &fallback(), 2);
        assert_eq!(elsewhere.connections, 20, "[delivery] 40 over 2 cores");
        assert_eq!(elsewhere.message_rate, None);
    }

    #[test]
    fn a_users_file_is_layered_over_the_shipped_rules() {
        let mine = Shaping::parse(
            "[default]\nconnections = 4\n[provider.google]\nmx_suffix = [\".google.com\"]\nconnections = 1\n",
        )
        .unwrap();
        let s = mine.over(Shaping::shipped());
        let g = s.site_limits(None, &["aspmx.l.google.com"], &fallback(), 1);
        assert_eq!(
            g.connections, 1,
            "the user's google replaces the shipped one"
        );
        let yahoo = s.site_limits(None, &["mta5.am0.yahoodns.net"], &fallback(), 1);
        assert_eq!(yahoo.rule, "provider:yahoo", "shipped providers stay");
        let plain = s.site_limits(None, &["mx.small.test"], &fallback(), 1);
        assert_eq!(plain.connections, 4);
    }

    #[test]
    fn a_source_rule_caps_every_site_through_that_source() {
        let s = Shaping::parse(
            "[source.ip2]\nconnections = 2\nmessage_rate = \"10/min\"\ndeliveries_per_connection = 500\n",
        )
        .unwrap()
        .over(Shaping::shipped());
        let google = s.site_limits_from(None, &["aspmx.l.google.com"], &fallback(), 1, Some("ip2"));
        assert_eq!(google.rule, "provider:google+source:ip2");
        assert_eq!(google.connections, 2);
        assert_eq!(google.deliveries_per_connection, 50, "only ever tightened");
        assert_eq!(google.message_rate, Some("10/min".parse().unwrap()));
        let other = s.site_limits_from(None, &["aspmx.l.google.com"], &fallback(), 1, Some("ip1"));
        assert_eq!(other.rule, "provider:google");
        assert_eq!(other.connections, 10);
        let rated = Shaping::parse(
            "[default]\nmessage_rate = \"1/s\"\n[source.a]\nmessage_rate = \"100/min\"\n",
        )
        .unwrap();
        let l = rated.site_limits_from(None, &["mx.test"], &fallback(), 1, Some("a"));
        assert_eq!(
            l.message_rate,
            Some("1/s".parse().unwrap()),
            "the slower holds"
        );
        assert!(Shaping::parse("[source.x]\nconnections = 0\n").is_err());
    }

    #[test]
    fn backoff_rules_match_receivers_replies() {
        let s = Shaping::shipped();
        let yahoo = "421 4.7.0 [TSS04] Messages from 192.0.2.1 temporarily deferred";
        assert_eq!(
            s.backoff_for(yahoo).unwrap().suspend,
            Some(Duration::from_secs(2 * 3600))
        );
        let gmail = "421-4.7.28 Our system has detected an unusual rate of unsolicited mail";
        assert!(s.backoff_for(gmail).is_some());
        let microsoft = "550 5.7.1 Unfortunately, messages from [192.0.2.1] weren't sent. (S3150)";
        assert!(s.backoff_for(microsoft).is_some());
        assert!(s.backoff_for("450 4.2.1 mailbox busy").is_none());
        // A user's rule goes first.
        let mine = Shaping::parse("[[backoff]]\nreply = \"TSS04\"\nsuspend = \"5m\"\n")
            .unwrap()
            .over(Shaping::shipped());
        assert_eq!(
            mine.backoff_for(yahoo).unwrap().suspend,
            Some(Duration::from_secs(300))
        );
    }

    #[test]
    fn a_throttle_scales_connections_and_rates_down_to_a_floor() {
        let limits = SiteLimits {
            connections: 10,
            deliveries_per_connection: 100,
            message_rate: Some("20/s".parse().unwrap()),
            connection_rate: Some("1/min".parse().unwrap()),
            idle: Duration::from_secs(2),
            rule: "default".into(),
        };
        let half = limits.scaled(0.5);
        assert_eq!(half.connections, 5);
        assert_eq!(half.message_rate, Some("10/s".parse().unwrap()));
        assert_eq!(half.connection_rate.unwrap().per, Duration::from_secs(120));
        assert_eq!(half.deliveries_per_connection, 100);
        let floor = limits.scaled(0.01);
        assert_eq!(floor.connections, 1);
        assert_eq!(floor.message_rate.unwrap().count, 1);
        assert_eq!(floor.message_rate.unwrap().per, Duration::from_secs(5));
        assert_eq!(limits.scaled(1.0), limits);
    }

    #[test]
    fn backoff_rules_match_code_and_enhanced_code_and_carry_their_actions() {
        let s = Shaping::parse(
            r#"
            [[backoff]]
            code = 421
            enhanced = "4.7."
            throttle = 0.5
            recover_after = 20
            [[backoff]]
            code = 4
            reply = "(?i)no such user"
            fail = true
            [[backoff]]
            enhanced = "5.7.606"
            bounce = "10m"
            suspend = "10m"
            "#,
        )
        .unwrap();
        let slow = s
            .backoff_for("421 4.7.0 Try again later, closing connection")
            .unwrap();
        assert_eq!(
            slow.throttle,
            Some(ThrottleStep {
                factor: 0.5,
                recover_after: 20
            })
        );
        assert_eq!((slow.suspend, slow.bounce, slow.fail), (None, None, false));
        assert_eq!(slow.pattern(), "code 421, enhanced 4.7.");
        // Every matcher must match.
        assert!(s.backoff_for("421 4.4.2 timeout").is_none());
        assert!(s.backoff_for("450 4.7.0 greylisted").is_none());
        let unknown = s.backoff_for("450 4.1.1 No such user here").unwrap();
        assert!(unknown.fail);
        assert!(
            s.backoff_for("550 5.1.1 no such user here").is_none(),
            "class 4 only"
        );
        let blocked = s
            .backoff_for("550 5.7.606 Access denied, banned sending IP [192.0.2.1]")
            .unwrap();
        assert_eq!(blocked.bounce, Some(Duration::from_secs(600)));
        assert!(
            s.backoff_for("550 5.7.6 other").is_none(),
            "a whole code matches exactly"
        );
    }

    #[test]
    fn bad_rules_are_refused() {
        for bad in [
            "[default]\nconnections = 0\n",
            "[provider.x]\nconnections = 2\n",
            "[provider.x]\nmx_suffix = [\".x\"]\ndeliveries_per_connection = 0\n",
            "[default]\nmessage_rate = \"fast\"\n",
            "[default]\nbogus = 1\n",
            "[domain.\"a.test\"]\nidle = \"soon\"\n",
            "[[backoff]]\nreply = \"(\"\nsuspend = \"1h\"\n",
            "[[backoff]]\nreply = \"x\"\nsuspend = \"0s\"\n",
            "[[backoff]]\nreply = \"x\"\n",
            "[[backoff]]\nsuspend = \"1h\"\n",
            "[[backoff]]\ncode = 42\nsuspend = \"1h\"\n",
            "[[backoff]]\ncode = 421\nthrottle = 1.5\n",
            "[[backoff]]\ncode = 421\nthrottle = 0\n",
            "[[backoff]]\ncode = 421\nsuspend = \"1h\"\nrecover_after = 5\n",
            "[[backoff]]\ncode = 421\nthrottle = 0.5\nrecover_after = 0\n",
            "[[backoff]]\ncode = 421\nbounce = \"0s\"\n",
        ] {
            assert!(Shaping::parse(bad).is_err(), "{bad}");
        }
    }
}
