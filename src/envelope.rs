//! The envelope of one accepted message: who sent it, to whom, and the
//! ESMTP parameters that travel with it. Plain owned data; it knows nothing
//! of sockets or files (the spool encodes it, the SMTP core produces it).

use std::net::IpAddr;

/// Body type declared with `MAIL FROM ... BODY=` (RFC 6152, RFC 3030).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BodyType {
    #[default]
    SevenBit,
    EightBitMime,
    BinaryMime,
}

/// `RET=` of RFC 3461 section 4.3: how much of the message a DSN returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DsnReturn {
    Full,
    Headers,
}

/// `NOTIFY=` of RFC 3461 section 4.1, as a small bit set.
/// `NEVER` is the empty set with `never` = true; absent NOTIFY is `None`
/// in [`Recipient::notify`] (the default behaviour is FAILURE,DELAY).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Notify {
    pub never: bool,
    pub success: bool,
    pub failure: bool,
    pub delay: bool,
}

impl Notify {
    /// Packs the set into one byte for storage: bit 0 never, 1 success,
    /// 2 failure, 3 delay.
    pub fn to_bits(self) -> u8 {
        u8::from(self.never)
            | u8::from(self.success) << 1
            | u8::from(self.failure) << 2
            | u8::from(self.delay) << 3
    }

    /// Inverse of [`Notify::to_bits`]; unknown bits are ignored.
    pub fn from_bits(bits: u8) -> Self {
        Notify {
            never: bits & 1 != 0,
            success: bits & 2 != 0,
            failure: bits & 4 != 0,
            delay: bits & 8 != 0,
        }
    }
}

/// One `RCPT TO` that was accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipient {
    /// The forward-path mailbox without angle brackets, as received
    /// (local part kept exactly, including quotes; domain as given).
    pub address: String,
    /// RFC 3461 NOTIFY, `None` when the client did not give one.
    pub notify: Option<Notify>,
    /// RFC 3461 ORCPT, kept verbatim (`addr-type;xtext`).
    pub orcpt: Option<String>,
}

/// Everything the SMTP transaction said about a message besides its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// The reverse-path mailbox without angle brackets; empty for the null
    /// sender `<>` (bounces must never be sent to it).
    pub sender: String,
    pub recipients: Vec<Recipient>,
    pub body_type: BodyType,
    /// The client used the SMTPUTF8 parameter (RFC 6531).
    pub smtputf8: bool,
    pub dsn_return: Option<DsnReturn>,
    /// RFC 3461 ENVID, kept verbatim (xtext).
    pub envid: Option<String>,
    /// When the message was accepted, seconds since the Unix epoch.
    pub received_at: u64,
    /// The client's address and the name it gave in HELO/EHLO.
    pub client_ip: IpAddr,
    pub helo: String,
    /// The user the client authenticated as (SMTP AUTH), if it did: a
    /// user's mail may leave from a pool of its own (`[egress.user]`).
    pub auth_user: Option<String>,
    /// The tenant named by `[egress] tenant_header`, read at receipt from
    /// a client that may relay (the header itself is not stored).
    pub tenant: Option<String>,
}

impl Envelope {
    /// A copy of this message's envelope for `to` (alias targets outside
    /// our domains): the original sender, so bounces reach its author;
    /// the recipients carry no DSN parameters of their own.
    pub fn forwarded_to(&self, to: Vec<String>) -> Envelope {
        Envelope {
            recipients: to
                .into_iter()
                .map(|address| Recipient {
                    address,
                    notify: None,
                    orcpt: None,
                })
                .collect(),
            ..self.clone()
        }
    }
}
