//! Decides where each recipient goes: the local mailbox tier, a fixed next
//! hop (a `[[route]]` or the smarthost), or the domain's MX hosts. Pure
//! data in, decision out: it resolves nothing and connects nowhere.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// Where the next SMTP hop for a fixed route is: a host name or an IP
/// address, and a port (25 when not given).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HostPort {
    pub host: String,
    pub port: u16,
}

/// Why a `host:port` text is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not host or host:port")]
pub struct BadHostPort(pub String);

impl FromStr for HostPort {
    type Err = BadHostPort;

    /// Accepts `host`, `host:port`, `1.2.3.4:25` and `[::1]:25`.
    fn from_str(text: &str) -> Result<Self, BadHostPort> {
        let bad = || BadHostPort(text.to_owned());
        let (host, port) = if let Some(rest) = text.strip_prefix('[') {
            let (host, after) = rest.split_once(']').ok_or_else(bad)?;
            host.parse::<IpAddr>().map_err(|_| bad())?;
            match after.strip_prefix(':') {
                Some(port) => (host, port.parse().map_err(|_| bad())?),
                None if after.is_empty() => (host, 25),
                None => return Err(bad()),
            }
        } else {
            match text.rsplit_once(':') {
                Some((host, port)) if !host.contains(':') => {
                    (host, port.parse().map_err(|_| bad())?)
                }
                Some(_) => return Err(bad()),
                None => (text, 25),
            }
        };
        let host = host.trim_end_matches('.');
        let valid = !host.is_empty()
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'_'));
        if !valid || port == 0 {
            return Err(bad());
        }
        Ok(HostPort {
            host: host.to_ascii_lowercase(),
            port,
        })
    }
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// The next hop of one recipient.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum NextHop {
    /// A fixed host (route, smarthost or address literal).
    Fixed(HostPort),
    /// The MX hosts of this domain (ASCII lowercase, no trailing dot).
    Mx(String),
}

/// What the router says about one recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// One of `local.domains`: the mailbox tier.
    Local,
    Relay(NextHop),
}

/// The routing table, built from the configuration at start and again on
/// each reload.
#[derive(Debug, Clone, Default)]
pub struct Router {
    local_domains: Vec<String>,
    routes: HashMap<String, HostPort>,
    smarthost: Option<HostPort>,
    /// The egress pool of a `[[route]]`, by its domain.
    pools: HashMap<String, String>,
}

impl Router {
    /// `local_domains` and route domains must be ASCII lowercase without a
    /// trailing dot (the configuration normalises them).
    pub fn new(
        local_domains: Vec<String>,
        routes: HashMap<String, HostPort>,
        smarthost: Option<HostPort>,
    ) -> Self {
        Router {
            local_domains,
            routes,
            smarthost,
            pools: HashMap::new(),
        }
    }

    /// The same table with an egress pool for some `[[route]]`s, by route
    /// domain (as in `routes`).
    pub fn with_pools(mut self, pools: HashMap<String, String>) -> Self {
        self.pools = pools;
        self
    }

    /// The egress pool of the `[[route]]` that routes `address`, if that
    /// route names one (none for local, smarthost and MX delivery).
    pub fn route_pool(&self, address: &str) -> Option<&str> {
        if self.pools.is_empty() {
            return None;
        }
        let domain = address.rsplit_once('@').map_or("", |(_, d)| d);
        if domain.starts_with('[') {
            return self
                .pools
                .get(&domain.to_ascii_lowercase())
                .map(String::as_str);
        }
        let domain = domain.trim_end_matches('.').to_ascii_lowercase();
        if self.local_domains.contains(&domain) {
            return None;
        }
        let (route, _) = self.route_for(&domain)?;
        self.pools.get(route).map(String::as_str)
    }

    /// The `[[route]]` for a (lowercase) domain: its own, else the
    /// nearest parent domain's.
    fn route_for<'a>(&'a self, domain: &'a str) -> Option<(&'a str, &'a HostPort)> {
        let mut candidate = domain;
        loop {
            if let Some(hop) = self.routes.get(candidate) {
                return Some((candidate, hop));
            }
            match candidate.split_once('.') {
                Some((_, parent)) if !parent.is_empty() => candidate = parent,
                _ => return None,
            }
        }
    }

    /// The smarthost every non-local, unrouted domain goes to, if any.
    pub fn smarthost(&self) -> Option<&HostPort> {
        self.smarthost.as_ref()
    }

    /// Routes a recipient address (`local@domain` as received). Order:
    /// local domains, then `[[route]]` (exact domain, then the nearest
    /// parent domain), then the smarthost, then MX. An address literal
    /// follows the same rules (a `[[route]]` for its exact text, then the
    /// smarthost) and only without either goes to the host it names
    /// (RFC 5321 4.1.3): a literal never bypasses the smarthost or its
    /// `smarthost_tls`.
    pub fn route(&self, address: &str) -> Route {
        let domain = address.rsplit_once('@').map_or("", |(_, d)| d);
        if let Some(literal) = domain.strip_prefix('[').and_then(|d| d.strip_suffix(']')) {
            let key = domain.to_ascii_lowercase();
            let hop = match (self.routes.get(&key), &self.smarthost) {
                (Some(hop), _) | (None, Some(hop)) => hop.clone(),
                (None, None) => {
                    let ip = literal.strip_prefix("IPv6:").unwrap_or(literal);
                    HostPort {
                        host: ip.to_ascii_lowercase(),
                        port: 25,
                    }
                }
            };
            return Route::Relay(NextHop::Fixed(hop));
        }
        let domain = domain.trim_end_matches('.').to_ascii_lowercase();
        if domain.is_empty() || self.local_domains.contains(&domain) {
            // `<Postmaster>` without a domain is ours too (RFC 5321 4.5.1).
            return Route::Local;
        }
        if let Some((_, hop)) = self.route_for(&domain) {
            return Route::Relay(NextHop::Fixed(hop.clone()));
        }
        match &self.smarthost {
            Some(hop) => Route::Relay(NextHop::Fixed(hop.clone())),
            None => Route::Relay(NextHop::Mx(domain)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hp(s: &str) -> HostPort {
        s.parse().unwrap()
    }

    #[test]
    fn host_port_forms() {
        assert_eq!(
            hp("relay.example"),
            HostPort {
                host: "relay.example".into(),
                port: 25
            }
        );
        assert_eq!(
            hp("Relay.Example.:2525"),
            HostPort {
                host: "relay.example".into(),
                port: 2525
            }
        );
        assert_eq!(hp("10.0.0.5:25").to_string(), "10.0.0.5:25");
        assert_eq!(hp("[::1]:2525").to_string(), "[::1]:2525");
        for bad in [
            "", ":25", "a:0", "a:b", "::1:25", "[::1", "[x]:25", "a b:25",
        ] {
            assert!(bad.parse::<HostPort>().is_err(), "{bad}");
        }
    }

    #[test]
    fn routing_order() {
        let mut routes = HashMap::new();
        routes.insert("partner.example".to_string(), hp("10.1.1.1:2525"));
        let router = Router::new(vec!["example.test".into()], routes.clone(), None);
        assert_eq!(router.route("a@Example.TEST."), Route::Local);
        assert_eq!(router.route("Postmaster"), Route::Local);
        assert_eq!(
            router.route("b@partner.example"),
            Route::Relay(NextHop::Fixed(hp("10.1.1.1:2525")))
        );
        assert_eq!(
            router.route("b@mail.partner.example"),
            Route::Relay(NextHop::Fixed(hp("10.1.1.1:2525"))),
            "a parent domain's route applies"
        );
        assert_eq!(
            router.route("c@Other.Example"),
            Route::Relay(NextHop::Mx("other.example".into()))
        );
        assert_eq!(
            router.route("d@[127.0.0.9]"),
            Route::Relay(NextHop::Fixed(hp("127.0.0.9:25")))
        );
        assert_eq!(
            router.route("d@[IPv6:::1]"),
            Route::Relay(NextHop::Fixed(HostPort {
                host: "::1".into(),
                port: 25
            }))
        );
        let with_smarthost = Router::new(
            vec!["example.test".into()],
            routes,
            Some(hp("smart.example:587")),
        );
        assert_eq!(
            with_smarthost.route("c@other.example"),
            Route::Relay(NextHop::Fixed(hp("smart.example:587")))
        );
        assert_eq!(
            with_smarthost.route("b@partner.example"),
            Route::Relay(NextHop::Fixed(hp("10.1.1.1:2525"))),
            "a route beats the smarthost"
        );
        assert_eq!(
            with_smarthost.route("d@[127.0.0.9]"),
            Route::Relay(NextHop::Fixed(hp("smart.example:587"))),
            "a literal goes through the smarthost too"
        );
        let mut literal_route = HashMap::new();
        literal_route.insert("[192.0.2.5]".to_string(), hp("10.2.2.2:25"));
        let routed = Router::new(vec![], literal_route, Some(hp("smart.example:587")));
        assert_eq!(
            routed.route("d@[192.0.2.5]"),
            Route::Relay(NextHop::Fixed(hp("10.2.2.2:25")))
        );
    }

    #[test]
    fn a_route_names_its_pool() {
        let mut routes = HashMap::new();
        routes.insert("partner.example".to_string(), hp("10.1.1.1:2525"));
        routes.insert("other.example".to_string(), hp("10.1.1.2"));
        routes.insert("[192.0.2.5]".to_string(), hp("10.2.2.2:25"));
        let pools = HashMap::from([
            ("partner.example".to_string(), "partners".to_string()),
            ("[192.0.2.5]".to_string(), "literal".to_string()),
        ]);
        let router = Router::new(vec!["example.test".into()], routes, None).with_pools(pools);
        assert_eq!(
            router.route_pool("a@Mail.Partner.Example."),
            Some("partners")
        );
        assert_eq!(
            router.route_pool("a@other.example"),
            None,
            "a route without a pool"
        );
        assert_eq!(router.route_pool("a@elsewhere.example"), None, "MX");
        assert_eq!(router.route_pool("a@example.test"), None, "local");
        assert_eq!(router.route_pool("d@[192.0.2.5]"), Some("literal"));
    }
}
