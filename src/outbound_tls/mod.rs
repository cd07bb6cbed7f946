//! Outbound TLS policy: which TLS a next hop must show before mail goes
//! to it. MTA-STS (RFC 8461: a policy published over DNS and HTTPS) and
//! DANE (RFC 7672: TLSA records under DNSSEC) are looked up per
//! destination domain (`policy`), and enforced by the certificate
//! verifier of the connection (`dane`, `pkix`) with STARTTLS required.
//! The protocol pieces are sans-IO (`mta_sts`, TLSA matching in
//! `dane`); the I/O (`dns`, `https`, `store`: fetched policies kept on
//! disk) is blocking and runs off the cores.

pub mod dane;
pub mod dns;
pub mod https;
pub mod mta_sts;
pub mod pkix;
pub mod policy;
pub mod store;

pub use policy::{DomainTls, HostTls, TlsPolicies, TlsPolicySettings};

/// What protected one delivery, as its log line and metrics name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TlsOutcome {
    /// Plaintext: the next hop offered no STARTTLS (or it is not used).
    #[default]
    None = 0,
    /// TLS without checking the certificate.
    Opportunistic = 1,
    /// TLS with a certificate verified for an MTA-STS `enforce` policy.
    MtaSts = 2,
    /// TLS with a certificate matched to DNSSEC-signed TLSA records.
    Dane = 3,
}

impl TlsOutcome {
    pub const ALL: [TlsOutcome; 4] = [
        TlsOutcome::None,
        TlsOutcome::Opportunistic,
        TlsOutcome::MtaSts,
        TlsOutcome::Dane,
    ];

    pub fn label(self) -> &'static str {
        match self {
            TlsOutcome::None => "none",
            TlsOutcome::Opportunistic => "opportunistic",
            TlsOutcome::MtaSts => "mta-sts",
            TlsOutcome::Dane => "dane",
        }
    }
}
