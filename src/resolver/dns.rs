//! The only file that speaks hickory-resolver: builds the client from
//! [`ResolverConfig`] and turns its lookups into the plain answers of
//! `batch.rs`. It refuses to apply any mail rule and to cache (hickory's own
//! cache is switched off so that every lookup here is a query on the wire
//! and the resolver's counters tell the truth).

use std::net::IpAddr;
use std::time::Duration;

use hickory_resolver::config::{
    ConnectionConfig, NameServerConfig, ResolveHosts, ResolverConfig as HickoryConfig,
};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError, NetError};
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::rr::{Name, RData, RecordType};
use hickory_resolver::TokioResolver;

use super::batch::{AddrAnswer, HostAnswer, MxAnswer};
use super::rules::MxRecord;
use super::{ResolverConfig, ResolverError};

/// Builds the hickory client. Must run inside the resolver thread's tokio
/// runtime. With `nameservers` set, exactly those are asked (UDP, then TCP
/// on truncation) and neither resolv.conf nor /etc/hosts is read.
pub fn build(config: &ResolverConfig) -> Result<TokioResolver, ResolverError> {
    let mut builder = if config.nameservers.is_empty() {
        TokioResolver::builder_tokio().map_err(|e| ResolverError::SystemConfig(e.to_string()))?
    } else {
        let servers = config
            .nameservers
            .iter()
            .map(|addr| {
                let mut udp = ConnectionConfig::udp();
                udp.port = addr.port();
                let mut tcp = ConnectionConfig::tcp();
                tcp.port = addr.port();
                NameServerConfig::new(addr.ip(), true, vec![udp, tcp])
            })
            .collect();
        let mut b = TokioResolver::builder_with_config(
            HickoryConfig::from_name_servers(servers),
            TokioRuntimeProvider::default(),
        );
        b.options_mut().use_hosts_file = ResolveHosts::Never;
        b
    };
    let opts = builder.options_mut();
    opts.timeout = config.timeout;
    opts.attempts = config.attempts.max(1);
    opts.cache_size = 0;
    builder
        .build()
        .map_err(|e| ResolverError::SystemConfig(e.to_string()))
}

/// A domain as an absolute DNS name ("example.com" -> "example.com."), so
/// no search domain is ever appended. IDNs are converted to A-labels.
fn fqdn(name: &str) -> Option<Name> {
    let mut n = Name::from_utf8(name).ok()?;
    n.set_fqdn(true);
    Some(n)
}

/// Classifies a failed lookup: NXDOMAIN and NoData are answers, anything
/// else is a transient failure.
enum Failure {
    NxDomain(Option<Duration>),
    NoData(Option<Duration>),
    Temp(String),
}

fn classify(e: NetError) -> Failure {
    match e {
        NetError::Dns(DnsError::NoRecordsFound(nr)) => {
            let ttl = nr.negative_ttl.map(|t| Duration::from_secs(t.into()));
            match nr.response_code {
                ResponseCode::NXDomain => Failure::NxDomain(ttl),
                ResponseCode::NoError => Failure::NoData(ttl),
                other => Failure::Temp(format!("DNS error {other}")),
            }
        }
        other => Failure::Temp(other.to_string()),
    }
}

/// One MX query for `domain` (normalized).
pub async fn lookup_mx(resolver: &TokioResolver, domain: &str) -> MxAnswer {
    let Some(name) = fqdn(domain) else {
        // Not a DNS name at all: it cannot exist.
        return MxAnswer::NxDomain { negative_ttl: None };
    };
    match resolver.lookup(name, RecordType::MX).await {
        Ok(lookup) => {
            let mut ttl = u32::MAX;
            let mut records = Vec::new();
            for r in lookup.answers() {
                if let RData::MX(mx) = &r.data {
                    ttl = ttl.min(r.ttl);
                    records.push(MxRecord::new(mx.preference, &mx.exchange.to_ascii()));
                }
            }
            if records.is_empty() {
                // Only a CNAME chain without MX at its end: no MX records.
                return MxAnswer::NoData { negative_ttl: None };
            }
            MxAnswer::Records {
                records,
                ttl: Duration::from_secs(ttl.into()),
            }
        }
        Err(e) => match classify(e) {
            Failure::NxDomain(t) => MxAnswer::NxDomain { negative_ttl: t },
            Failure::NoData(t) => MxAnswer::NoData { negative_ttl: t },
            Failure::Temp(why) => MxAnswer::TempFail(format!("MX {domain}: {why}")),
        },
    }
}

/// The A and AAAA queries for `host`, sent at the same time.
pub async fn lookup_host(resolver: &TokioResolver, host: &str) -> HostAnswer {
    let Some(name) = fqdn(host) else {
        let none = || AddrAnswer::Negative { negative_ttl: None };
        return HostAnswer::join(none(), none());
    };
    let (a, aaaa) = futures_lite::future::zip(
        lookup_addr(resolver, name.clone(), RecordType::A, host),
        lookup_addr(resolver, name, RecordType::AAAA, host),
    )
    .await;
    HostAnswer::join(a, aaaa)
}

async fn lookup_addr(
    resolver: &TokioResolver,
    name: Name,
    rtype: RecordType,
    host: &str,
) -> AddrAnswer {
    match resolver.lookup(name, rtype).await {
        Ok(lookup) => {
            let mut ttl = u32::MAX;
            let mut addresses = Vec::new();
            for r in lookup.answers() {
                let ip = match &r.data {
                    RData::A(a) => IpAddr::V4(a.0),
                    RData::AAAA(a) => IpAddr::V6(a.0),
                    _ => continue,
                };
                ttl = ttl.min(r.ttl);
                addresses.push(ip);
            }
            if addresses.is_empty() {
                return AddrAnswer::Negative { negative_ttl: None };
            }
            AddrAnswer::Found {
                addresses,
                ttl: Duration::from_secs(ttl.into()),
            }
        }
        Err(e) => match classify(e) {
            Failure::NxDomain(t) | Failure::NoData(t) => AddrAnswer::Negative { negative_ttl: t },
            Failure::Temp(why) => AddrAnswer::TempFail(format!("{rtype} {host}: {why}")),
        },
    }
}
