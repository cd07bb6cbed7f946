//! The `[egress]` configuration compiled for use: sources by index, pools
//! with their weighted members, and the maps that give a message its pool
//! (its route's, its authenticated user's, its tenant's, or the default).
//! It refuses a configuration that names unknown sources or pools, gives a
//! zero weight or has a warm-up without a start; it keeps no run-time
//! state (the chooser does).

use std::collections::HashMap;
use std::net::IpAddr;

use super::warmup::Warmup;
use crate::config::Config;
use crate::shaping::Rate;

/// Why an `[egress]` configuration cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EgressError {
    #[error("egress: {what} name {name:?} must be 1 to 64 letters, digits, '.', '_' or '-'")]
    BadName { what: &'static str, name: String },
    #[error("egress: source {0:?} is defined twice")]
    DuplicateSource(String),
    #[error("egress: source {source_name:?}: ehlo {ehlo:?} is not a host name")]
    BadEhlo { source_name: String, ehlo: String },
    #[error("egress: source {0:?} has a warmup schedule but no warmup_start date")]
    WarmupWithoutStart(String),
    #[error("egress: source {0:?} has a warmup_start but no warmup schedule")]
    StartWithoutWarmup(String),
    #[error("egress: pool {0:?} has no sources")]
    EmptyPool(String),
    #[error(
        "egress: pool {pool:?} names source {source_name:?}, which no [[egress.source]] defines"
    )]
    UnknownSource { pool: String, source_name: String },
    #[error("egress: pool {pool:?} gives source {source_name:?} weight 0 (want at least 1; leave it out instead)")]
    ZeroWeight { pool: String, source_name: String },
    #[error("egress: {used_by} names pool {pool:?}, which no [egress.pool.{pool}] defines")]
    UnknownPool { used_by: String, pool: String },
    #[error("egress: tenant_header {0:?} is not a header field name")]
    BadTenantHeader(String),
}

/// One source as delivery uses it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    pub name: String,
    /// The local address to bind (`None`: the kernel chooses).
    pub bind: Option<IpAddr>,
    /// The EHLO name (the source's, else the server's hostname).
    pub ehlo: String,
    /// Messages per period through this source, host-wide.
    pub message_rate: Option<Rate>,
    pub warmup: Option<Warmup>,
}

/// A pool's member: a source (index into the plan's sources) and weight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Member {
    pub source: usize,
    pub weight: u32,
}

/// One pool: its name and weighted members (in name order).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pool {
    pub name: String,
    pub members: Vec<Member>,
}

/// A pool of one plan, by index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PoolId(usize);

/// What a message's pool is chosen by.
#[derive(Debug, Clone, Copy, Default)]
pub struct PoolInputs<'a> {
    /// The pool of the `[[route]]` the recipient takes.
    pub route_pool: Option<&'a str>,
    /// The user the client authenticated as.
    pub user: Option<&'a str>,
    /// The tenant its header named.
    pub tenant: Option<&'a str>,
}

/// See the module header.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EgressPlan {
    sources: Vec<Source>,
    source_by_name: HashMap<String, usize>,
    pools: Vec<Pool>,
    pool_by_name: HashMap<String, PoolId>,
    default_pool: Option<PoolId>,
    /// Lowercase tenant and user names.
    tenants: HashMap<String, PoolId>,
    users: HashMap<String, PoolId>,
    tenant_header: Option<String>,
}

fn check_name(what: &'static str, name: &str) -> Result<(), EgressError> {
    let good = (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if good {
        Ok(())
    } else {
        Err(EgressError::BadName {
            what,
            name: name.to_owned(),
        })
    }
}

/// A header field name (RFC 5322 3.6.8: printable ASCII but ':').
fn is_field_name(name: &str) -> bool {
    (1..=76).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_graphic() && b != b':')
}

impl EgressPlan {
    /// Compiles and checks `[egress]` and the pools `[[route]]`s name.
    pub fn build(config: &Config) -> Result<EgressPlan, EgressError> {
        let egress = &config.egress;
        let mut plan = EgressPlan::default();
        for s in &egress.sources {
            check_name("source", &s.name)?;
            let ehlo = s.ehlo.clone().unwrap_or_else(|| config.hostname.clone());
            if ehlo.is_empty() || ehlo.bytes().any(|b| !b.is_ascii_graphic()) {
                return Err(EgressError::BadEhlo {
                    source_name: s.name.clone(),
                    ehlo,
                });
            }
            let warmup = match (s.warmup_start, s.warmup.is_empty()) {
                (Some(start), false) => Some(Warmup::new(start, &s.warmup)),
                (None, true) => None,
                (None, false) => return Err(EgressError::WarmupWithoutStart(s.name.clone())),
                (Some(_), true) => return Err(EgressError::StartWithoutWarmup(s.name.clone())),
            };
            let index = plan.sources.len();
            if plan.source_by_name.insert(s.name.clone(), index).is_some() {
                return Err(EgressError::DuplicateSource(s.name.clone()));
            }
            plan.sources.push(Source {
                name: s.name.clone(),
                bind: s.bind,
                ehlo,
                message_rate: s.message_rate,
                warmup,
            });
        }
        for (name, pool) in &egress.pools {
            check_name("pool", name)?;
            if pool.sources.is_empty() {
                return Err(EgressError::EmptyPool(name.clone()));
            }
            let mut members = Vec::with_capacity(pool.sources.len());
            for (source, &weight) in &pool.sources {
                let Some(&index) = plan.source_by_name.get(source) else {
                    return Err(EgressError::UnknownSource {
                        pool: name.clone(),
                        source_name: source.clone(),
                    });
                };
                if weight == 0 {
                    return Err(EgressError::ZeroWeight {
                        pool: name.clone(),
                        source_name: source.clone(),
                    });
                }
                members.push(Member {
                    source: index,
                    weight,
                });
            }
            let id = PoolId(plan.pools.len());
            plan.pool_by_name.insert(name.clone(), id);
            plan.pools.push(Pool {
                name: name.clone(),
                members,
            });
        }
        let pool = |used_by: String, name: &str| {
            plan.pool_by_name
                .get(name)
                .copied()
                .ok_or_else(|| EgressError::UnknownPool {
                    used_by,
                    pool: name.to_owned(),
                })
        };
        let default_pool = match &egress.default_pool {
            Some(name) => Some(pool("default_pool".into(), name)?),
            None => None,
        };
        let mut tenants = HashMap::new();
        for (name, choice) in &egress.tenants {
            let id = pool(format!("[egress.tenant.{name}]"), &choice.pool)?;
            tenants.insert(name.trim().to_ascii_lowercase(), id);
        }
        let mut users = HashMap::new();
        for (name, choice) in &egress.users {
            let id = pool(format!("[egress.user.{name}]"), &choice.pool)?;
            users.insert(name.to_ascii_lowercase(), id);
        }
        for route in &config.routes {
            if let Some(name) = &route.pool {
                pool(format!("the [[route]] for {}", route.domain), name)?;
            }
        }
        if let Some(header) = &egress.tenant_header {
            if !is_field_name(header) {
                return Err(EgressError::BadTenantHeader(header.clone()));
            }
        }
        plan.default_pool = default_pool;
        plan.tenants = tenants;
        plan.users = users;
        plan.tenant_header = egress.tenant_header.clone();
        Ok(plan)
    }

    /// No source is configured: mail leaves as it always did.
    pub fn is_empty(&self) -> bool {
        self.sources.is_empty()
    }

    pub fn sources(&self) -> &[Source] {
        &self.sources
    }

    /// A source by name (`None` once a reload removed it).
    pub fn source(&self, name: &str) -> Option<&Source> {
        self.source_by_name.get(name).map(|&i| &self.sources[i])
    }

    pub fn pools(&self) -> &[Pool] {
        &self.pools
    }

    /// A pool by name.
    pub fn pool_named(&self, name: &str) -> Option<PoolId> {
        self.pool_by_name.get(name).copied()
    }

    pub fn pool(&self, id: PoolId) -> Option<&Pool> {
        self.pools.get(id.0)
    }

    /// The header naming a message's tenant, if one is configured.
    pub fn tenant_header(&self) -> Option<&str> {
        self.tenant_header.as_deref()
    }

    /// A message's pool: its route's, else its authenticated user's (so a
    /// user's mail cannot be moved elsewhere by a header), else its
    /// tenant's, else the default; `None` when none applies (mail leaves
    /// without a source). Unknown users and tenants fall through.
    pub fn pool_for(&self, inputs: PoolInputs<'_>) -> Option<PoolId> {
        if let Some(id) = inputs
            .route_pool
            .and_then(|name| self.pool_by_name.get(name))
        {
            return Some(*id);
        }
        let user = inputs
            .user
            .and_then(|u| self.users.get(&u.to_ascii_lowercase()));
        let tenant = inputs
            .tenant
            .and_then(|t| self.tenants.get(&t.trim().to_ascii_lowercase()));
        user.or(tenant).copied().or(self.default_pool)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "hostname = \"relay.test\"\nspool_dir = \"/tmp/s\"\n[[listener]]\naddress = \"127.0.0.1:25\"\nprotocol = \"smtp\"\n";

    fn config(extra: &str) -> Config {
        toml::from_str(&format!("{BASE}{extra}")).expect("test configuration parses")
    }

    const EGRESS: &str = r#"
[[route]]
domain = "partner.example"
to = "10.0.0.9"
pool = "partners"
[egress]
default_pool = "main"
tenant_header = "X-Tenant"
[[egress.source]]
name = "ip1"
bind = "127.0.0.31"
ehlo = "mta1.example.test"
[[egress.source]]
name = "ip2"
bind = "127.0.0.32"
message_rate = "10/s"
warmup_start = 2025-12-06
warmup = ["1000/day", "5000/day"]
[egress.pool.main]
sources = { ip1 = 3, ip2 = 1 }
[egress.pool.partners]
sources = { ip2 = 1 }
[egress.tenant.Acme]
pool = "partners"
[egress.user.Alice]
pool = "main"
"#;

    #[test]
    fn a_plan_compiles_and_picks_pools_in_order() {
        let plan = EgressPlan::build(&config(EGRESS)).unwrap();
        assert_eq!(plan.sources().len(), 2);
        let ip1 = plan.source("ip1").unwrap();
        assert_eq!(ip1.ehlo, "mta1.example.test");
        assert_eq!(ip1.bind, Some("127.0.0.31".parse().unwrap()));
        let ip2 = plan.source("ip2").unwrap();
        assert_eq!(ip2.ehlo, "relay.test", "the hostname by default");
        assert_eq!(ip2.warmup.as_ref().unwrap().steps, vec![1000, 5000]);
        let main = plan.pool_for(PoolInputs::default()).unwrap();
        assert_eq!(plan.pool(main).unwrap().name, "main");
        assert_eq!(
            plan.pool(main).unwrap().members,
            vec![
                Member {
                    source: 0,
                    weight: 3
                },
                Member {
                    source: 1,
                    weight: 1
                }
            ]
        );
        let name = |inputs| {
            plan.pool(plan.pool_for(inputs).unwrap())
                .unwrap()
                .name
                .as_str()
        };
        assert_eq!(
            name(PoolInputs {
                tenant: Some(" ACME "),
                ..PoolInputs::default()
            }),
            "partners"
        );
        assert_eq!(
            name(PoolInputs {
                tenant: Some("acme"),
                user: Some("alice"),
                ..PoolInputs::default()
            }),
            "main",
            "a user's pool beats the tenant header"
        );
        assert_eq!(
            name(PoolInputs {
                route_pool: Some("partners"),
                user: Some("alice"),
                ..PoolInputs::default()
            }),
            "partners",
            "the route's pool beats everything"
        );
        assert_eq!(
            name(PoolInputs {
                tenant: Some("unknown"),
                user: Some("bob"),
                ..PoolInputs::default()
            }),
            "main",
            "unknown names fall through to the default"
        );
        assert_eq!(plan.tenant_header(), Some("X-Tenant"));
    }

    #[test]
    fn no_egress_means_no_pool() {
        let plan = EgressPlan::build(&config("")).unwrap();
        assert!(plan.is_empty());
        assert_eq!(plan.pool_for(PoolInputs::default()), None);
    }

    #[test]
    fn bad_plans_are_refused_with_their_reason() {
        let source = "[[egress.source]]\nname = \"ip1\"\n";
        let cases = [
            (format!("{source}{source}"), "defined twice"),
            (
                "[[egress.source]]\nname = \"a b\"\n".to_owned(),
                "letters, digits",
            ),
            (
                format!("{source}[egress.pool.p]\nsources = {{ ip9 = 1 }}\n"),
                "names source \"ip9\"",
            ),
            (
                format!("{source}[egress.pool.p]\nsources = {{ ip1 = 0 }}\n"),
                "weight 0",
            ),
            (
                format!("{source}[egress.pool.p]\nsources = {{}}\n"),
                "no sources",
            ),
            (
                format!("{source}[egress]\ndefault_pool = \"nope\"\n"),
                "default_pool names pool \"nope\"",
            ),
            (
                format!("{source}[egress.tenant.t]\npool = \"nope\"\n"),
                "[egress.tenant.t] names pool",
            ),
            (
                "[[route]]\ndomain = \"a.test\"\nto = \"10.0.0.1\"\npool = \"nope\"\n".to_owned(),
                "the [[route]] for a.test names pool",
            ),
            (
                "[[egress.source]]\nname = \"n\"\nwarmup = [\"10/day\"]\n".to_owned(),
                "no warmup_start",
            ),
            (
                "[[egress.source]]\nname = \"n\"\nwarmup_start = \"2025-01-01\"\n".to_owned(),
                "no warmup schedule",
            ),
            (
                "[[egress.source]]\nname = \"n\"\nehlo = \"a b\"\n".to_owned(),
                "not a host name",
            ),
            (
                "[egress]\ntenant_header = \"X-Tenant:\"\n".to_owned(),
                "not a header field name",
            ),
        ];
        for (text, reason) in cases {
            let error = EgressPlan::build(&config(&text)).unwrap_err().to_string();
            assert!(error.contains(reason), "{text}: {error}");
        }
        // The main configuration refuses them too, with the same words.
        let error = Config::parse(&format!(
            "{BASE}{source}[egress.pool.p]\nsources = {{ ip1 = 0 }}\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(error.contains("weight 0"), "{error}");
        for bad in [
            "[[egress.source]]\nname = \"n\"\nbind = \"nowhere\"\n",
            "[[egress.source]]\nname = \"n\"\nwarmup_start = \"2025-02-30\"\nwarmup = [\"1/day\"]\n",
            "[[egress.source]]\nname = \"n\"\nmessage_rate = \"fast\"\n",
            "[egress]\nbogus = 1\n",
            "[[egress.source]]\nname = \"n\"\n[egress.pool.p]\nsources = { n = -1 }\n",
        ] {
            assert!(Config::parse(&format!("{BASE}{bad}")).is_err(), "{bad}");
        }
    }
}
