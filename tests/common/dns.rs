//! A test DNS server: hickory-server in-process, authoritative for zones
//! built from Rust data (MX, A, AAAA, TXT, TLSA, null MX, names that
//! answer SERVFAIL), on a private 127.a.b.c address with the same port
//! over UDP and TCP. Names marked `secure` are answered with the AD bit
//! set, as a validating resolver answers DNSSEC-signed data: that is how
//! tests model a validating resolver for DANE. It runs on its own thread with its own tokio runtime, counts
//! every query it receives, and stops when dropped. It never forwards or
//! recurses: a name outside its zones is REFUSED.
//!
//! ```ignore
//! let dns = TestDns::start(
//!     Records::new()
//!         .mx("example.test", 10, "mx1.example.test")
//!         .a("mx1.example.test", "127.0.0.5")
//!         .null_mx("nomail.test")
//!         .servfail("broken.test"),
//! );
//! // ResolverConfig { nameservers: vec![dns.addr()], .. }
//! assert_eq!(dns.queries_of("MX"), 0);
//! ```

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use hickory_server::net::runtime::Time;
use hickory_server::net::NetError;
use hickory_server::proto::op::ResponseCode;
use hickory_server::proto::rr::rdata::tlsa::{CertUsage, Matching, Selector};
use hickory_server::proto::rr::rdata::{A, AAAA, MX, SOA, TLSA, TXT};
use hickory_server::proto::rr::{LowerName, Name, RData, Record};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::store::in_memory::InMemoryZoneHandler;
use hickory_server::zone_handler::{
    AxfrPolicy, Catalog, MessageResponse, MessageResponseBuilder, ZoneType,
};
use hickory_server::Server;

/// Default TTL of records (seconds): long enough that no test sees one
/// expire by accident.
pub const DEFAULT_TTL: u32 = 300;

/// The data the server serves. Every name's zone is its last label
/// ("mx1.example.test" lives in zone "test."), each zone gets an SOA whose
/// minimum is the negative TTL. Any name in a zone that was not given a
/// record answers NXDOMAIN; a name with records of other types answers
/// NoData.
#[derive(Debug, Clone)]
pub struct Records {
    ttl: u32,
    negative_ttl: u32,
    records: Vec<Record>,
    servfail: Vec<String>,
    secure: Vec<String>,
}

impl Default for Records {
    fn default() -> Self {
        Records {
            ttl: DEFAULT_TTL,
            negative_ttl: 60,
            records: Vec::new(),
            servfail: Vec::new(),
            secure: Vec::new(),
        }
    }
}

fn name(s: &str) -> Name {
    let mut n = Name::from_ascii(s).unwrap_or_else(|e| panic!("bad DNS name {s:?}: {e}"));
    n.set_fqdn(true);
    n
}

fn normalize(s: &str) -> String {
    s.trim_end_matches('.').to_ascii_lowercase()
}

impl Records {
    pub fn new() -> Self {
        Self::default()
    }

    /// TTL of the records added after this call.
    pub fn ttl(mut self, secs: u32) -> Self {
        self.ttl = secs;
        self
    }

    /// SOA minimum (the negative-answer TTL) of every zone.
    pub fn negative_ttl(mut self, secs: u32) -> Self {
        self.negative_ttl = secs;
        self
    }

    pub fn mx(mut self, domain: &str, preference: u16, exchange: &str) -> Self {
        let rdata = RData::MX(MX::new(preference, name(exchange)));
        self.records
            .push(Record::from_rdata(name(domain), self.ttl, rdata));
        self
    }

    /// RFC 7505: `domain. MX 0 .`
    pub fn null_mx(self, domain: &str) -> Self {
        self.mx(domain, 0, ".")
    }

    /// An A or AAAA record, by the address's family.
    pub fn addr(mut self, host: &str, ip: IpAddr) -> Self {
        let rdata = match ip {
            IpAddr::V4(v4) => RData::A(A(v4)),
            IpAddr::V6(v6) => RData::AAAA(AAAA(v6)),
        };
        self.records
            .push(Record::from_rdata(name(host), self.ttl, rdata));
        self
    }

    pub fn a(self, host: &str, ip: &str) -> Self {
        let ip: std::net::Ipv4Addr = ip.parse().unwrap_or_else(|e| panic!("{ip:?}: {e}"));
        self.addr(host, IpAddr::V4(ip))
    }

    pub fn aaaa(self, host: &str, ip: &str) -> Self {
        let ip: std::net::Ipv6Addr = ip.parse().unwrap_or_else(|e| panic!("{ip:?}: {e}"));
        self.addr(host, IpAddr::V6(ip))
    }

    /// A TXT record; text longer than 255 octets is split into several
    /// character-strings, which readers join (RFC 6376 3.6.2.2).
    pub fn txt(mut self, name_: &str, text: &str) -> Self {
        let parts = text
            .as_bytes()
            .chunks(255)
            .map(|c| String::from_utf8_lossy(c).into_owned())
            .collect();
        let rdata = RData::TXT(TXT::new(parts));
        self.records
            .push(Record::from_rdata(name(name_), self.ttl, rdata));
        self
    }

    /// A TLSA record (RFC 6698): usage, selector, matching type, data.
    pub fn tlsa(mut self, name_: &str, usage: u8, selector: u8, matching: u8, data: &[u8]) -> Self {
        let rdata = RData::TLSA(TLSA::new(
            CertUsage::from(usage),
            Selector::from(selector),
            Matching::from(matching),
            data.to_vec(),
        ));
        self.records
            .push(Record::from_rdata(name(name_), self.ttl, rdata));
        self
    }

    /// Answers about `name` (any type) carry the AD bit: "DNSSEC-secure",
    /// as a validating resolver would say.
    pub fn secure(mut self, name: &str) -> Self {
        self.secure.push(normalize(name));
        self
    }

    /// Every query for `name` (any type) answers SERVFAIL.
    pub fn servfail(mut self, name: &str) -> Self {
        self.servfail.push(normalize(name));
        self
    }

    fn catalog(&self) -> Catalog {
        let mut zones: BTreeMap<Name, InMemoryZoneHandler> = BTreeMap::new();
        let serial = 1;
        let names = self
            .records
            .iter()
            .map(|r| r.name.clone())
            .chain(self.servfail.iter().map(|s| name(s)));
        for n in names {
            let origin = n.trim_to(1);
            zones.entry(origin.clone()).or_insert_with(|| {
                let mut zone =
                    InMemoryZoneHandler::empty(origin.clone(), ZoneType::Primary, AxfrPolicy::Deny);
                let soa = SOA::new(
                    name(&format!("ns.{origin}")),
                    name(&format!("hostmaster.{origin}")),
                    serial,
                    3600,
                    600,
                    86400,
                    self.negative_ttl,
                );
                let soa = Record::from_rdata(origin.clone(), self.negative_ttl, RData::SOA(soa));
                assert!(zone.upsert_mut(soa, serial), "SOA for {origin}");
                zone
            });
        }
        for r in &self.records {
            let origin = r.name.trim_to(1);
            let zone = zones.get_mut(&origin).expect("zone created above");
            assert!(zone.upsert_mut(r.clone(), serial), "insert {r}");
        }
        let mut catalog = Catalog::new();
        for (origin, zone) in zones {
            catalog.upsert(LowerName::new(&origin), vec![Arc::new(zone)]);
        }
        catalog
    }
}

/// What was asked for one (name, type).
#[derive(Default)]
struct Asked {
    /// Query messages received, retransmissions included.
    packets: u64,
    /// Message IDs seen: a client retransmitting a query over UDP (hickory
    /// does when an answer takes longer than about 1.2 times its smoothed
    /// round trip) or retrying it over TCP reuses the ID, so each ID is one
    /// query the client decided to make.
    ids: HashSet<u16>,
}

/// (lower-case name without trailing dot, record type) -> what was asked.
type Counts = Arc<Mutex<HashMap<(String, String), Asked>>>;

/// The request handler: counts, answers SERVFAIL where told, otherwise
/// lets the authoritative catalog answer.
struct Counting {
    catalog: Catalog,
    counts: Counts,
    servfail: Vec<String>,
    secure: Vec<String>,
}

/// Sends the catalog's answer with the AD bit set when `secure`.
#[derive(Clone)]
struct Authenticating<R> {
    inner: R,
    secure: bool,
}

#[async_trait::async_trait]
impl<R: ResponseHandler> ResponseHandler for Authenticating<R> {
    async fn send_response<'a>(
        &mut self,
        mut response: MessageResponse<
            '_,
            'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
        >,
    ) -> Result<ResponseInfo, NetError> {
        if self.secure {
            response.metadata_mut().authentic_data = true;
        }
        self.inner.send_response(response).await
    }
}

#[async_trait::async_trait]
impl RequestHandler for Counting {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        let mut fail = false;
        let mut secure = false;
        if let Ok(info) = request.request_info() {
            let qname = normalize(&info.query.name().to_string());
            let qtype = info.query.query_type().to_string();
            fail = self.servfail.contains(&qname);
            secure = self.secure.contains(&qname);
            let mut counts = self.counts.lock().unwrap();
            let asked = counts.entry((qname, qtype)).or_default();
            asked.packets += 1;
            asked.ids.insert(info.metadata.id);
        }
        if fail {
            let response = MessageResponseBuilder::from_message_request(request)
                .error_msg(&request.metadata, ResponseCode::ServFail);
            return match response_handle.send_response(response).await {
                Ok(info) => info,
                Err(e) => panic!("test DNS cannot send SERVFAIL: {e}"),
            };
        }
        let response_handle = Authenticating {
            inner: response_handle,
            secure,
        };
        self.catalog
            .handle_request::<Authenticating<R>, T>(request, response_handle)
            .await
    }
}

/// A running test DNS server; see the module header.
pub struct TestDns {
    addr: SocketAddr,
    counts: Counts,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl TestDns {
    /// Starts serving `records` on a fresh loopback address (UDP and TCP,
    /// same port). Panics if it cannot.
    pub fn start(records: Records) -> TestDns {
        let (udp, tcp) = bind_pair();
        let addr = udp.local_addr().expect("udp local addr");
        let counts = Counts::default();
        let handler = Counting {
            catalog: records.catalog(),
            counts: Arc::clone(&counts),
            servfail: records.servfail.clone(),
            secure: records.secure.clone(),
        };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name(format!("test-dns-{addr}"))
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("test DNS runtime");
                rt.block_on(async move {
                    let udp = tokio::net::UdpSocket::from_std(udp).expect("tokio udp");
                    let tcp = tokio::net::TcpListener::from_std(tcp).expect("tokio tcp");
                    let mut server = Server::new(handler);
                    server.register_socket(udp);
                    server.register_listener(tcp, Duration::from_secs(5), 64);
                    let _ = ready_tx.send(());
                    let _ = stopped.await;
                    let _ = server.shutdown_gracefully().await;
                });
            })
            .expect("spawn test DNS thread");
        ready_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("test DNS did not start");
        TestDns {
            addr,
            counts,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// Where to send queries (UDP and TCP).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Queries received so far: distinct (name, type, message ID), so a
    /// UDP retransmission of the same query is not counted twice.
    pub fn queries(&self) -> u64 {
        self.count(|_, _| true)
    }

    /// Queries of one type ("MX", "A", "AAAA").
    pub fn queries_of(&self, rtype: &str) -> u64 {
        self.count(|_, t| t == rtype)
    }

    /// Queries for one name (case and trailing dot ignored) and type.
    pub fn queries_for(&self, name: &str, rtype: &str) -> u64 {
        let name = normalize(name);
        self.count(|n, t| n == name && t == rtype)
    }

    /// Every query message received, retransmissions included.
    pub fn packets(&self) -> u64 {
        self.counts
            .lock()
            .unwrap()
            .values()
            .map(|a| a.packets)
            .sum()
    }

    fn count(&self, pick: impl Fn(&str, &str) -> bool) -> u64 {
        self.counts
            .lock()
            .unwrap()
            .iter()
            .filter(|((n, t), _)| pick(n, t))
            .map(|(_, a)| a.ids.len() as u64)
            .sum()
    }

    /// Forgets the counts (e.g. after a warm-up).
    pub fn reset_counts(&self) {
        self.counts.lock().unwrap().clear();
    }
}

impl Drop for TestDns {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A UDP socket and a TCP listener on the same loopback address and port.
fn bind_pair() -> (std::net::UdpSocket, std::net::TcpListener) {
    for _ in 0..20 {
        let ip = super::unique_loopback();
        let udp = std::net::UdpSocket::bind((ip, 0)).expect("bind udp");
        let addr = udp.local_addr().expect("udp addr");
        let Ok(tcp) = std::net::TcpListener::bind(addr) else {
            continue;
        };
        udp.set_nonblocking(true).expect("nonblocking udp");
        tcp.set_nonblocking(true).expect("nonblocking tcp");
        return (udp, tcp);
    }
    panic!("no free UDP+TCP port pair on loopback");
}
