//! A small blocking DNS client for the outbound TLS policy: one question
//! to the configured nameservers over UDP (TCP when the answer is
//! truncated), with EDNS0 and the DO bit, returning the answer's records
//! and whether the server set the AD bit. The resolver thread's hickory
//! resolver hides the AD bit, and DANE needs it. It trusts the AD bit as
//! sent (as Postfix's `smtp_dns_support_level = dnssec`): that is only
//! sound when the nameserver is a validating resolver on this host (or
//! reached over a trusted link). It never validates signatures itself and
//! never caches (the policy layer does).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use hickory_proto::op::{Edns, Message, MessageType, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, Record, RecordType};

/// Largest UDP answer asked for (the DNS flag day 2020 figure).
const UDP_PAYLOAD: u16 = 1232;

/// Why a question got no usable answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DnsError {
    #[error("bad DNS name {0:?}")]
    BadName(String),
    #[error("no nameserver answered about {0}")]
    NoAnswer(String),
    /// SERVFAIL and the like: with a validating resolver, also what a
    /// bogus (failed DNSSEC) answer looks like (RFC 7672 2.1.1).
    #[error("DNS lookup of {name} failed: {rcode}")]
    Failed { name: String, rcode: String },
    #[error("DNS I/O: {0}")]
    Io(String),
}

/// The records of one answer (of the type asked; a CNAME chain is
/// followed by the server), and whether the server vouched for them.
#[derive(Debug, Clone, Default)]
pub struct Answer {
    pub records: Vec<Record>,
    /// The AD bit: the validating resolver found the answer secure.
    pub authenticated: bool,
    /// The smallest TTL of the records (or of the negative answer's SOA).
    pub ttl: Option<u32>,
}

impl Answer {
    pub fn data(&self) -> impl Iterator<Item = &RData> {
        self.records.iter().map(|r| &r.data)
    }
}

/// See the module header.
#[derive(Debug, Clone)]
pub struct DnsClient {
    servers: Vec<SocketAddr>,
    timeout: Duration,
}

impl DnsClient {
    /// Asks `servers` in order, each for at most `timeout`.
    pub fn new(servers: Vec<SocketAddr>, timeout: Duration) -> Self {
        DnsClient { servers, timeout }
    }

    /// The nameservers of `/etc/resolv.conf` (port 53), for when none
    /// are configured.
    pub fn system_servers() -> Vec<SocketAddr> {
        let text = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
        text.lines()
            .filter_map(|line| line.trim().strip_prefix("nameserver"))
            .filter_map(|rest| rest.trim().parse::<std::net::IpAddr>().ok())
            .map(|ip| SocketAddr::new(ip, 53))
            .collect()
    }

    /// One question. NXDOMAIN and NoData are an empty answer, not an
    /// error; SERVFAIL, REFUSED and silence are errors.
    pub fn query(&self, name: &str, rtype: RecordType) -> Result<Answer, DnsError> {
        let mut qname = Name::from_ascii(name).map_err(|_| DnsError::BadName(name.into()))?;
        qname.set_fqdn(true);
        let mut last = DnsError::NoAnswer(name.to_owned());
        for server in &self.servers {
            match self.ask(*server, &qname, rtype) {
                Ok(response) => return answer_of(response, name, rtype),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    fn ask(&self, server: SocketAddr, name: &Name, rtype: RecordType) -> Result<Message, DnsError> {
        let id = random_id();
        let mut message = Message::query();
        message.metadata.id = id;
        message.metadata.recursion_desired = true;
        // RFC 6840 5.7: AD in a query asks for AD in the answer; DO asks
        // a validating resolver to validate (RFC 3225).
        message.metadata.authentic_data = true;
        message.add_query(Query::query(name.clone(), rtype));
        let mut edns = Edns::new();
        edns.set_max_payload(UDP_PAYLOAD);
        edns.set_dnssec_ok(true);
        message.set_edns(edns);
        let wire = message.to_vec().map_err(|e| DnsError::Io(e.to_string()))?;
        let response = self.over_udp(server, &wire, id)?;
        if response.metadata.truncation {
            return self.over_tcp(server, &wire, id);
        }
        Ok(response)
    }

    fn over_udp(&self, server: SocketAddr, wire: &[u8], id: u16) -> Result<Message, DnsError> {
        let io = |e: std::io::Error| DnsError::Io(format!("{server}: {e}"));
        let local: SocketAddr = if server.is_ipv4() {
            ([0, 0, 0, 0], 0).into()
        } else {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let socket = UdpSocket::bind(local).map_err(io)?;
        socket.connect(server).map_err(io)?;
        socket.send(wire).map_err(io)?;
        let deadline = Instant::now() + self.timeout;
        let mut buf = vec![0u8; usize::from(UDP_PAYLOAD).max(4096)];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(DnsError::Io(format!("{server}: timed out")));
            }
            socket.set_read_timeout(Some(left)).map_err(io)?;
            let n = socket.recv(&mut buf).map_err(io)?;
            // A stray or spoofed datagram: keep waiting for ours.
            if let Ok(response) = Message::from_vec(&buf[..n]) {
                if response.metadata.id == id
                    && response.metadata.message_type == MessageType::Response
                {
                    return Ok(response);
                }
            }
        }
    }

    fn over_tcp(&self, server: SocketAddr, wire: &[u8], id: u16) -> Result<Message, DnsError> {
        let io = |e: std::io::Error| DnsError::Io(format!("{server} (TCP): {e}"));
        let mut stream = TcpStream::connect_timeout(&server, self.timeout).map_err(io)?;
        stream.set_read_timeout(Some(self.timeout)).map_err(io)?;
        stream.set_write_timeout(Some(self.timeout)).map_err(io)?;
        let len = u16::try_from(wire.len()).map_err(|_| DnsError::Io("query too long".into()))?;
        let mut framed = len.to_be_bytes().to_vec();
        framed.extend_from_slice(wire);
        stream.write_all(&framed).map_err(io)?;
        let mut len = [0u8; 2];
        stream.read_exact(&mut len).map_err(io)?;
        let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
        stream.read_exact(&mut buf).map_err(io)?;
        let response = Message::from_vec(&buf).map_err(|e| DnsError::Io(e.to_string()))?;
        if response.metadata.id != id {
            return Err(DnsError::Io(format!("{server}: answer to another query")));
        }
        Ok(response)
    }
}

fn answer_of(response: Message, name: &str, rtype: RecordType) -> Result<Answer, DnsError> {
    let rcode = response.metadata.response_code;
    if rcode != ResponseCode::NoError && rcode != ResponseCode::NXDomain {
        return Err(DnsError::Failed {
            name: name.to_owned(),
            rcode: rcode.to_string(),
        });
    }
    let authenticated = response.metadata.authentic_data;
    let records: Vec<Record> = response
        .answers
        .into_iter()
        .filter(|r| r.record_type() == rtype)
        .collect();
    let ttl = if records.is_empty() {
        response.authorities.iter().map(|r| r.ttl).min()
    } else {
        records.iter().map(|r| r.ttl).min()
    };
    Ok(Answer {
        records,
        authenticated,
        ttl,
    })
}

/// A query ID nobody off-path can guess (RFC 5452).
fn random_id() -> u16 {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 2];
    // SystemRandom fails only without a kernel RNG; a fixed ID then
    // still works, just guessably.
    let _ = ring::rand::SystemRandom::new().fill(&mut bytes);
    u16::from_be_bytes(bytes)
}
