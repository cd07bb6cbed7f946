//! The outbound TLS policy of each destination domain, host-wide: for
//! every MX host of a domain, what TLS a connection to it must show
//! (DANE, then MTA-STS, then opportunistic), found with blocking DNS and
//! HTTPS lookups on a short-lived thread of its own (never on a core) and
//! cached: MTA-STS policies for their `max_age`, the per-domain answer
//! for the DNS TTLs. It decides requirements; connections and what to do
//! when one is not met are the engine's.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hickory_proto::rr::{RData, RecordType};

use crate::outbound_tls::dane::{DaneVerifier, Tlsa};
use crate::outbound_tls::dns::DnsClient;
use crate::outbound_tls::https;
use crate::outbound_tls::mta_sts::{self, Mode, Policy};
use crate::outbound_tls::pkix::{self, PkixError, TestingReport};
use crate::outbound_tls::store::{PolicyStore, StoredPolicy};

/// The shortest and longest a domain's requirements are cached (the DNS
/// TTLs in between decide).
const MIN_PLAN_TTL: Duration = Duration::from_secs(10);
const MAX_PLAN_TTL: Duration = Duration::from_secs(3600);
/// Domains whose answers are kept; past it the expired ones go, then all.
const MAX_CACHED: usize = 100_000;

/// What `[delivery]` says about outbound TLS policy.
#[derive(Debug, Clone)]
pub struct TlsPolicySettings {
    pub mta_sts: bool,
    pub dane: bool,
    /// Nameservers for the policy's own queries (empty: resolv.conf).
    /// DANE trusts their AD bit.
    pub nameservers: Vec<SocketAddr>,
    /// Extra CA certificates (PEM) trusted for MTA-STS: the policy host's
    /// and the MX hosts' certificates.
    pub ca_file: Option<PathBuf>,
    /// Port of the policy host (443; another only in test labs).
    pub https_port: u16,
    /// The SMTP port of MX hosts, which names their TLSA records
    /// (`_25._tcp.<host>`).
    pub smtp_port: u16,
    /// Time allowed for each DNS question and for the policy fetch.
    pub timeout: Duration,
    /// Where fetched MTA-STS policies are kept across restarts
    /// (`<spool_dir>/mta-sts`); none: memory only.
    pub cache_dir: Option<PathBuf>,
}

/// What a connection to one MX host must show.
#[derive(Debug, Clone)]
pub enum HostTls {
    /// No policy: STARTTLS when offered, any certificate.
    Opportunistic,
    /// DANE (RFC 7672): TLS required, certificate checked only against
    /// the host's TLSA records.
    Dane(Arc<rustls::ClientConfig>),
    /// Secure TLSA records exist but none is usable (RFC 7672 3.1.3):
    /// TLS is still required, without authentication.
    EncryptOnly,
    /// MTA-STS `enforce`: TLS required, a certificate valid for the host
    /// name under the trusted roots.
    MtaSts(Arc<rustls::ClientConfig>),
    /// MTA-STS `testing`: deliver as usual, report what enforce would
    /// refuse (`mx_listed` false: the host is not in the policy).
    MtaStsTesting { mx_listed: bool },
    /// Not to be used: the reason (an MX host outside an enforced
    /// policy, a failed TLSA lookup for a DNSSEC-signed host).
    Refused(String),
}

impl HostTls {
    /// The policy's name in logs.
    pub fn policy_name(&self) -> &'static str {
        match self {
            HostTls::Opportunistic | HostTls::MtaStsTesting { .. } => "opportunistic",
            HostTls::Dane(_) | HostTls::EncryptOnly => "dane",
            HostTls::MtaSts(_) => "mta-sts",
            HostTls::Refused(_) => "refused",
        }
    }

    /// Whether a connection that achieved `achieved` meets this
    /// requirement (a connection opened for another domain of the same
    /// MX set carries this domain's mail only then).
    pub fn met_by(&self, achieved: crate::outbound_tls::TlsOutcome) -> bool {
        use crate::outbound_tls::TlsOutcome;
        match self {
            HostTls::Opportunistic | HostTls::MtaStsTesting { .. } => true,
            HostTls::Dane(_) => achieved == TlsOutcome::Dane,
            HostTls::EncryptOnly => achieved != TlsOutcome::None,
            // A DANE-authenticated connection to a host the policy lists
            // (else the requirement would be `Refused`) is taken as
            // meeting it: the host is authenticated more strongly than
            // the Web PKI would, and a domain sharing the host with a
            // DANE domain is not kept waiting for ever.
            HostTls::MtaSts(_) => matches!(achieved, TlsOutcome::MtaSts | TlsOutcome::Dane),
            HostTls::Refused(_) => false,
        }
    }
}

/// The requirements for one domain's MX hosts.
#[derive(Debug, Clone, Default)]
pub struct DomainTls {
    hosts: HashMap<String, HostTls>,
    /// For hosts not looked up: none (opportunistic), or a refusal when
    /// the lookup itself could not run.
    otherwise: Option<HostTls>,
}

impl DomainTls {
    /// What a connection to `host` (an MX host name) must show.
    pub fn host(&self, host: &str) -> HostTls {
        self.hosts
            .get(&normalise(host))
            .or(self.otherwise.as_ref())
            .cloned()
            .unwrap_or(HostTls::Opportunistic)
    }

    /// The lookup did not run: not knowing whether a policy asks for
    /// more, nothing goes (a transient deferral, as for a failed lookup).
    fn unknown(why: String) -> Self {
        DomainTls {
            hosts: HashMap::new(),
            otherwise: Some(HostTls::Refused(why)),
        }
    }
}

fn normalise(host: &str) -> String {
    host.trim_end_matches('.').to_ascii_lowercase()
}

/// An MTA-STS policy in the cache.
#[derive(Debug, Clone)]
struct CachedPolicy {
    id: String,
    policy: Policy,
    expires: Instant,
}

struct Enabled {
    settings: TlsPolicySettings,
    dns: DnsClient,
    roots: Arc<rustls::RootCertStore>,
    verifying: Arc<rustls::ClientConfig>,
    policies: Mutex<HashMap<String, CachedPolicy>>,
    plans: Mutex<HashMap<String, (Arc<DomainTls>, Instant)>>,
    /// Lookups under way, and who else waits for each: a burst of
    /// connections to a new domain from every core costs one lookup.
    inflight: Mutex<HashMap<String, Vec<Waiter>>>,
    store: Option<PolicyStore>,
}

type Waiter = futures_channel::oneshot::Sender<Arc<DomainTls>>;

/// See the module header. The default applies no policy at all.
#[derive(Default)]
pub struct TlsPolicies {
    enabled: Option<Enabled>,
}

impl std::fmt::Debug for TlsPolicies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsPolicies")
            .field("settings", &self.enabled.as_ref().map(|e| &e.settings))
            .finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl TlsPolicies {
    /// Policies as `settings` ask; none at all when both are off.
    pub fn new(settings: TlsPolicySettings) -> Result<TlsPolicies, PkixError> {
        if !settings.mta_sts && !settings.dane {
            return Ok(TlsPolicies::default());
        }
        let servers = if settings.nameservers.is_empty() {
            DnsClient::system_servers()
        } else {
            settings.nameservers.clone()
        };
        let roots = if settings.mta_sts {
            pkix::roots(settings.ca_file.as_deref())?
        } else {
            Arc::new(rustls::RootCertStore::empty())
        };
        let verifying = pkix::verifying_config(&roots)?;
        let store = settings.cache_dir.clone().map(PolicyStore::new);
        Ok(TlsPolicies {
            enabled: Some(Enabled {
                dns: DnsClient::new(servers, settings.timeout),
                settings,
                roots,
                verifying,
                policies: Mutex::default(),
                plans: Mutex::default(),
                inflight: Mutex::default(),
                store,
            }),
        })
    }

    /// Whether any policy is looked up.
    pub fn is_enabled(&self) -> bool {
        self.enabled.is_some()
    }

    /// The requirements of `domain` with MX hosts `hosts`: from the cache,
    /// or looked up on a thread of their own (the caller's core keeps
    /// running meanwhile).
    pub async fn domain(self: &Arc<Self>, domain: &str, hosts: Vec<String>) -> Arc<DomainTls> {
        let Some(enabled) = &self.enabled else {
            return Arc::new(DomainTls::default());
        };
        let key = normalise(domain);
        if let Some((plan, expires)) = lock(&enabled.plans).get(&key) {
            if *expires > Instant::now() {
                return Arc::clone(plan);
            }
        }
        let (tx, rx) = futures_channel::oneshot::channel();
        let first = {
            let mut inflight = lock(&enabled.inflight);
            match inflight.get_mut(&key) {
                Some(waiters) => {
                    waiters.push(tx);
                    false
                }
                None => {
                    inflight.insert(key.clone(), vec![tx]);
                    true
                }
            }
        };
        if first {
            let this = Arc::clone(self);
            let lookup_domain = key.clone();
            let spawned = std::thread::Builder::new()
                .name("spate-tls-policy".into())
                .spawn(move || {
                    // Every waiter gets an answer, even if the lookup panics.
                    let looked_up = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        this.look_up(&lookup_domain, &hosts)
                    }));
                    let plan = looked_up.unwrap_or_else(|_| {
                        Arc::new(DomainTls::unknown(format!(
                            "TLS policy lookup for {lookup_domain} failed"
                        )))
                    });
                    this.answer_waiters(&lookup_domain, &plan);
                });
            if let Err(e) = spawned {
                tracing::warn!(domain, error = %e, "cannot start a TLS policy lookup");
                let plan = Arc::new(DomainTls::unknown(format!(
                    "TLS policy lookup for {domain} could not start: {e}"
                )));
                self.answer_waiters(&key, &plan);
            }
        }
        match rx.await {
            Ok(plan) => plan,
            Err(_) => Arc::new(DomainTls::unknown(format!(
                "TLS policy lookup for {domain} failed"
            ))),
        }
    }

    fn answer_waiters(&self, domain: &str, plan: &Arc<DomainTls>) {
        let Some(enabled) = &self.enabled else { return };
        let waiters = lock(&enabled.inflight).remove(domain).unwrap_or_default();
        for waiter in waiters {
            let _ = waiter.send(Arc::clone(plan));
        }
    }

    /// A client configuration for one MTA-STS `testing` connection: any
    /// certificate passes, the reason it would not is written to `report`.
    pub fn testing_config(&self, report: TestingReport) -> Option<Arc<rustls::ClientConfig>> {
        let enabled = self.enabled.as_ref()?;
        match pkix::reporting_config(&enabled.roots, report) {
            Ok(config) => Some(config),
            Err(e) => {
                tracing::warn!(error = %e, "cannot build the MTA-STS testing verifier");
                None
            }
        }
    }

    /// The blocking lookup (see the module header), cached.
    fn look_up(&self, domain: &str, hosts: &[String]) -> Arc<DomainTls> {
        let Some(enabled) = &self.enabled else {
            return Arc::new(DomainTls::default());
        };
        let mut ttl = MAX_PLAN_TTL;
        let sts = if enabled.settings.mta_sts {
            enabled.sts_policy(domain, &mut ttl)
        } else {
            None
        };
        let mx_secure = enabled.settings.dane && enabled.mx_secure(domain, &mut ttl);
        let mut plan = DomainTls::default();
        for host in hosts {
            let host = normalise(host);
            let mut tls = if mx_secure {
                enabled.dane_for(&host, &mut ttl)
            } else {
                None
            };
            // RFC 8461 2: where DANE applies it takes precedence.
            if tls.is_none() {
                tls = sts
                    .as_ref()
                    .map(|policy| enabled.sts_for(domain, &host, policy));
            }
            plan.hosts
                .insert(host, tls.unwrap_or(HostTls::Opportunistic));
        }
        tracing::debug!(domain, ?plan, "outbound TLS policy");
        let plan = Arc::new(plan);
        let expires = Instant::now() + ttl.clamp(MIN_PLAN_TTL, MAX_PLAN_TTL);
        let mut plans = lock(&enabled.plans);
        if plans.len() >= MAX_CACHED {
            let now = Instant::now();
            plans.retain(|_, (_, expires)| *expires > now);
            if plans.len() >= MAX_CACHED {
                plans.clear();
            }
        }
        plans.insert(domain.to_owned(), (Arc::clone(&plan), expires));
        plan
    }
}

impl Enabled {
    /// Whether the domain's MX answer is DNSSEC-secure (RFC 7672 2.2.1:
    /// DANE applies only to MX hosts found securely). A failed lookup
    /// counts as insecure here; the MX resolution proper decides whether
    /// mail goes at all.
    fn mx_secure(&self, domain: &str, ttl: &mut Duration) -> bool {
        match self.dns.query(domain, RecordType::MX) {
            Ok(answer) => {
                lower_ttl(ttl, answer.ttl);
                answer.authenticated
            }
            Err(e) => {
                tracing::debug!(domain, error = %e, "MX security lookup failed");
                false
            }
        }
    }

    /// The DANE requirement of one MX host, if its TLSA records are
    /// secure. RFC 7672 2.2: a TLSA lookup that fails (SERVFAIL, which
    /// is also how a validating resolver reports bogus data) makes the
    /// host unusable, never plaintext; insecure or no records: no DANE.
    fn dane_for(&self, host: &str, ttl: &mut Duration) -> Option<HostTls> {
        let name = format!("_{}._tcp.{host}", self.settings.smtp_port);
        let answer = match self.dns.query(&name, RecordType::TLSA) {
            Ok(answer) => answer,
            Err(e) => {
                return Some(HostTls::Refused(format!(
                    "DANE: TLSA lookup for {host} failed ({e}); not delivering without it"
                )))
            }
        };
        lower_ttl(ttl, answer.ttl);
        if !answer.authenticated || answer.records.is_empty() {
            return None;
        }
        let usable: Vec<Tlsa> = answer
            .data()
            .filter_map(|data| match data {
                RData::TLSA(t) => Some(Tlsa {
                    usage: t.cert_usage.into(),
                    selector: t.selector.into(),
                    matching: t.matching.into(),
                    data: t.cert_data.clone(),
                }),
                _ => None,
            })
            .filter(Tlsa::is_usable)
            .collect();
        if usable.is_empty() {
            return Some(HostTls::EncryptOnly);
        }
        match DaneVerifier::client_config(usable) {
            Ok(config) => Some(HostTls::Dane(config)),
            Err(e) => Some(HostTls::Refused(format!("DANE: {e}"))),
        }
    }

    /// The MTA-STS requirement of one MX host under `policy`.
    fn sts_for(&self, domain: &str, host: &str, policy: &Policy) -> HostTls {
        let listed = policy.allows_mx(host);
        match policy.mode {
            Mode::None => HostTls::Opportunistic,
            Mode::Testing => HostTls::MtaStsTesting { mx_listed: listed },
            Mode::Enforce if listed => HostTls::MtaSts(Arc::clone(&self.verifying)),
            Mode::Enforce => HostTls::Refused(format!(
                "MTA-STS: MX host {host} is not listed in the policy of {domain}"
            )),
        }
    }

    /// The MTA-STS policy in force for `domain` (RFC 8461 3 and 5.1): the
    /// TXT record's id says whether the cached policy is current; a new
    /// id fetches the policy again; a fetch that fails, or a TXT record
    /// that went away, leaves an unexpired cached policy in force.
    fn sts_policy(&self, domain: &str, ttl: &mut Duration) -> Option<Policy> {
        let record = match self
            .dns
            .query(&format!("_mta-sts.{domain}"), RecordType::TXT)
        {
            Ok(answer) => {
                lower_ttl(ttl, answer.ttl);
                let texts: Vec<String> = answer
                    .data()
                    .filter_map(|data| match data {
                        RData::TXT(txt) => Some(
                            txt.txt_data
                                .iter()
                                .map(|part| String::from_utf8_lossy(part))
                                .collect::<String>(),
                        ),
                        _ => None,
                    })
                    .collect();
                match mta_sts::pick_record(texts.iter().map(String::as_str)) {
                    Some(Ok(record)) => Some(record),
                    Some(Err(e)) => {
                        tracing::info!(domain, error = %e, "ignoring an invalid MTA-STS record");
                        None
                    }
                    None => None,
                }
            }
            Err(e) => {
                tracing::debug!(domain, error = %e, "MTA-STS TXT lookup failed");
                None
            }
        };
        let now = Instant::now();
        let in_memory = lock(&self.policies).get(domain).cloned();
        let cached = in_memory
            .or_else(|| self.load_stored(domain))
            .filter(|c| c.expires > now);
        let Some(record) = record else {
            return cached.map(|c| c.policy);
        };
        if let Some(c) = &cached {
            if c.id == record.id {
                return Some(c.policy.clone());
            }
        }
        match self.fetch(domain) {
            Ok((policy, body)) => {
                if let Some(store) = &self.store {
                    let stored = StoredPolicy {
                        id: record.id.clone(),
                        expires: std::time::SystemTime::now() + policy.max_age,
                        body,
                    };
                    if let Err(e) = store.save(domain, &stored) {
                        tracing::warn!(domain, error = %e, "cannot keep the MTA-STS policy on disk");
                    }
                }
                let entry = CachedPolicy {
                    id: record.id,
                    expires: now + policy.max_age,
                    policy: policy.clone(),
                };
                let mut policies = lock(&self.policies);
                if policies.len() >= MAX_CACHED {
                    policies.retain(|_, c| c.expires > now);
                }
                policies.insert(domain.to_owned(), entry);
                tracing::info!(domain, mode = ?policy.mode, "MTA-STS policy fetched");
                Some(policy)
            }
            Err(e) => {
                tracing::warn!(domain, error = %e, "cannot fetch the MTA-STS policy");
                cached.map(|c| c.policy)
            }
        }
    }

    /// A policy kept on disk by an earlier run, if still valid, now also
    /// in memory.
    fn load_stored(&self, domain: &str) -> Option<CachedPolicy> {
        let stored = self.store.as_ref()?.load(domain)?;
        let left = stored
            .expires
            .duration_since(std::time::SystemTime::now())
            .ok()?;
        let policy = mta_sts::parse_policy(&stored.body).ok()?;
        let cached = CachedPolicy {
            id: stored.id,
            policy,
            expires: Instant::now() + left,
        };
        lock(&self.policies).insert(domain.to_owned(), cached.clone());
        Some(cached)
    }

    /// Fetches and parses the policy: the policy and its text.
    fn fetch(&self, domain: &str) -> Result<(Policy, String), String> {
        let host = format!("mta-sts.{domain}");
        let mut addresses: Vec<IpAddr> = Vec::new();
        for rtype in [RecordType::A, RecordType::AAAA] {
            if let Ok(answer) = self.dns.query(&host, rtype) {
                addresses.extend(answer.data().filter_map(|data| match data {
                    RData::A(a) => Some(IpAddr::V4(a.0)),
                    RData::AAAA(a) => Some(IpAddr::V6(a.0)),
                    _ => None,
                }));
            }
        }
        let body = https::fetch_policy(
            domain,
            &addresses,
            self.settings.https_port,
            &self.verifying,
            self.settings.timeout,
        )
        .map_err(|e| e.to_string())?;
        let policy = mta_sts::parse_policy(&body).map_err(|e| e.to_string())?;
        Ok((policy, body))
    }
}

fn lower_ttl(ttl: &mut Duration, seen: Option<u32>) {
    if let Some(seconds) = seen {
        *ttl = (*ttl).min(Duration::from_secs(u64::from(seconds)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbound_tls::TlsOutcome;

    #[test]
    fn which_connections_meet_which_requirements() {
        let config = pkix::verifying_config(&Arc::new(rustls::RootCertStore::empty())).unwrap();
        let all = TlsOutcome::ALL;
        let met = |tls: HostTls| -> Vec<&str> {
            all.iter()
                .filter(|o| tls.met_by(**o))
                .map(|o| o.label())
                .collect()
        };
        assert_eq!(
            met(HostTls::Opportunistic),
            vec!["none", "opportunistic", "mta-sts", "dane"]
        );
        assert_eq!(met(HostTls::MtaStsTesting { mx_listed: false }).len(), 4);
        assert_eq!(
            met(HostTls::EncryptOnly),
            vec!["opportunistic", "mta-sts", "dane"]
        );
        assert_eq!(
            met(HostTls::MtaSts(Arc::clone(&config))),
            vec!["mta-sts", "dane"]
        );
        assert_eq!(met(HostTls::Dane(config)), vec!["dane"]);
        assert!(met(HostTls::Refused("no".into())).is_empty());
    }

    #[test]
    fn hosts_not_looked_up() {
        let plan = DomainTls::default();
        assert!(matches!(plan.host("mx.example"), HostTls::Opportunistic));
        let plan = DomainTls::unknown("lookup failed".into());
        assert!(matches!(plan.host("mx.example"), HostTls::Refused(_)));
    }
}
