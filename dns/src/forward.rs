//! Forwarding of names that are not the cluster's to the node's resolvers, with a small answer
//! cache (CoreDNS's `forward . /etc/resolv.conf` and `cache 30`).
//!
//! Each upstream exchange uses a fresh socket (a random source port) and a random message ID,
//! and an answer is accepted only from the upstream asked, with the same ID and question. A
//! truncated UDP answer is asked again over TCP. Upstreams are tried in order until one
//! answers. Successful and NXDOMAIN answers are cached for their TTL (the SOA minimum for
//! negative ones), clamped to [`CacheConfig::min_ttl`]..=[`CacheConfig::max_ttl`]; served copies
//! have their TTLs counted down.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::Semaphore;

use crate::metrics::Metrics;

/// The EDNS payload size we advertise and accept (DNS flag day 2020).
pub const EDNS_PAYLOAD: u16 = 1232;

/// Why a name could not be resolved upstream.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error("no upstream resolvers are configured")]
    NoUpstreams,
    #[error("too many concurrent upstream queries")]
    Overloaded,
    #[error("no upstream answered: {0}")]
    Failed(String),
}

/// Cache limits.
#[derive(Clone, Copy, Debug)]
pub struct CacheConfig {
    /// Entries kept at most (0 disables the cache).
    pub capacity: usize,
    pub max_ttl: u32,
    pub min_ttl: u32,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq)]
struct Key {
    name: Name,
    qtype: RecordType,
    qclass: DNSClass,
    dnssec_ok: bool,
    checking_disabled: bool,
}

struct Entry {
    message: Message,
    stored: Instant,
    ttl: u32,
}

/// Where an answer came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    Cache,
    Upstream,
}

/// The upstream resolvers and the answer cache.
pub struct Forwarder {
    upstreams: Vec<SocketAddr>,
    /// Addresses that are this server (the kube-dns Service): never asked, which would loop.
    self_ips: RwLock<Vec<IpAddr>>,
    timeout: Duration,
    cache_config: CacheConfig,
    cache: Mutex<HashMap<Key, Entry>>,
    inflight: Semaphore,
    metrics: Arc<Metrics>,
}

/// The TTL an answer may be cached for, before clamping: the smallest TTL of the answer
/// records, or for a negative answer the SOA's (capped by its minimum field).
pub fn answer_ttl(m: &Message) -> Option<u32> {
    match m.metadata.response_code {
        ResponseCode::NoError if !m.answers.is_empty() => m.answers.iter().map(|r| r.ttl).min(),
        ResponseCode::NoError | ResponseCode::NXDomain => {
            m.authorities.iter().find_map(|r| match &r.data {
                RData::SOA(soa) => Some(r.ttl.min(soa.minimum)),
                _ => None,
            })
        }
        _ => None,
    }
}

fn records_mut(m: &mut Message) -> impl Iterator<Item = &mut Record> {
    m.answers
        .iter_mut()
        .chain(m.authorities.iter_mut())
        .chain(m.additionals.iter_mut())
}

impl Forwarder {
    pub fn new(
        upstreams: Vec<SocketAddr>,
        timeout: Duration,
        cache_config: CacheConfig,
        max_concurrent: usize,
        metrics: Arc<Metrics>,
    ) -> Self {
        Forwarder {
            upstreams,
            self_ips: RwLock::new(Vec::new()),
            timeout,
            cache_config,
            cache: Mutex::new(HashMap::new()),
            inflight: Semaphore::new(max_concurrent),
            metrics,
        }
    }

    pub fn upstreams(&self) -> &[SocketAddr] {
        &self.upstreams
    }

    /// Declare the addresses of this server's own Service; upstreams among them are skipped
    /// (a node whose resolv.conf names the cluster DNS would otherwise forward in a loop).
    /// Returns the upstreams skipped from now on when the addresses changed (else nothing).
    pub fn set_self_ips(&self, ips: &[IpAddr]) -> Vec<SocketAddr> {
        let mut own = self.self_ips.write().unwrap_or_else(|e| e.into_inner());
        if own.as_slice() == ips {
            return Vec::new();
        }
        *own = ips.to_vec();
        self.upstreams
            .iter()
            .filter(|u| u.port() == 53 && ips.contains(&u.ip()))
            .copied()
            .collect()
    }

    fn live_upstreams(&self) -> Vec<SocketAddr> {
        let own = self.self_ips.read().unwrap_or_else(|e| e.into_inner());
        self.upstreams
            .iter()
            .filter(|u| !(u.port() == 53 && own.contains(&u.ip())))
            .copied()
            .collect()
    }

    fn key(query: &Query, dnssec_ok: bool, checking_disabled: bool) -> Key {
        Key {
            name: query.name().to_lowercase(),
            qtype: query.query_type(),
            qclass: query.query_class(),
            dnssec_ok,
            checking_disabled,
        }
    }

    fn cache_get(&self, key: &Key) -> Option<Message> {
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        let entry = cache.get(key)?;
        let age = entry.stored.elapsed().as_secs();
        if age >= u64::from(entry.ttl) {
            cache.remove(key);
            self.metrics.cache_size(cache.len());
            return None;
        }
        let left = entry.ttl - age as u32;
        let mut m = entry.message.clone();
        for r in records_mut(&mut m) {
            r.ttl = r.ttl.min(left);
        }
        Some(m)
    }

    fn cache_put(&self, key: Key, message: &Message) {
        let c = self.cache_config;
        if c.capacity == 0 || c.max_ttl == 0 || message.metadata.truncation {
            return;
        }
        let Some(ttl) = answer_ttl(message) else {
            return;
        };
        let ttl = ttl.clamp(c.min_ttl.min(c.max_ttl), c.max_ttl);
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= c.capacity {
            let now = Instant::now();
            cache.retain(|_, e| now.duration_since(e.stored).as_secs() < u64::from(e.ttl));
            if cache.len() >= c.capacity {
                // Still full of live entries: make room for a tenth of the capacity.
                let drop: Vec<Key> = cache.keys().take(c.capacity / 10 + 1).cloned().collect();
                for k in drop {
                    cache.remove(&k);
                }
            }
        }
        cache.insert(
            key,
            Entry {
                message: message.clone(),
                stored: Instant::now(),
                ttl,
            },
        );
        self.metrics.cache_size(cache.len());
    }

    /// Resolve one question: from the cache, else from the first upstream that answers. The
    /// returned message is the upstream's (ID and question not yet rewritten for the client).
    pub async fn resolve(
        &self,
        query: &Query,
        recursion_desired: bool,
        dnssec_ok: bool,
        checking_disabled: bool,
    ) -> Result<(Message, Source), ForwardError> {
        let key = Self::key(query, dnssec_ok, checking_disabled);
        if let Some(m) = self.cache_get(&key) {
            self.metrics.cache_hit(m.metadata.response_code);
            return Ok((m, Source::Cache));
        }
        self.metrics.cache_miss();
        let upstreams = self.live_upstreams();
        if upstreams.is_empty() {
            return Err(ForwardError::NoUpstreams);
        }
        let _permit = self
            .inflight
            .try_acquire()
            .map_err(|_| ForwardError::Overloaded)?;
        let mut errors = Vec::new();
        for upstream in &upstreams {
            let mut request = Message::new(rand::random(), MessageType::Query, OpCode::Query);
            request.metadata.recursion_desired = recursion_desired;
            request.metadata.checking_disabled = checking_disabled;
            request.add_query(query.clone());
            let mut edns = Edns::new();
            edns.set_max_payload(EDNS_PAYLOAD);
            edns.set_dnssec_ok(dnssec_ok);
            request.set_edns(edns);
            let started = Instant::now();
            match self.exchange(*upstream, &request).await {
                Ok(m) => {
                    self.metrics
                        .forwarded(upstream, m.metadata.response_code, started.elapsed());
                    if matches!(
                        m.metadata.response_code,
                        ResponseCode::NoError | ResponseCode::NXDomain
                    ) {
                        self.cache_put(key, &m);
                        return Ok((m, Source::Upstream));
                    }
                    // SERVFAIL, REFUSED…: try the next one, but keep this answer as the last
                    // resort.
                    errors.push(format!("{upstream}: {}", m.metadata.response_code));
                    if upstream == upstreams.last().expect("not empty") {
                        return Ok((m, Source::Upstream));
                    }
                }
                Err(e) => {
                    self.metrics.forward_failed(upstream);
                    errors.push(format!("{upstream}: {e}"));
                }
            }
        }
        Err(ForwardError::Failed(errors.join("; ")))
    }

    async fn exchange(&self, upstream: SocketAddr, request: &Message) -> std::io::Result<Message> {
        let bytes = request
            .to_vec()
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        let answer = tokio::time::timeout(self.timeout, async {
            let m = udp_exchange(upstream, &bytes, request).await?;
            if m.metadata.truncation {
                return tcp_exchange(upstream, &bytes, request).await;
            }
            Ok(m)
        })
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "timed out"))??;
        Ok(answer)
    }
}

/// Whether `answer` answers `request` (same ID and question, a response).
fn matches(request: &Message, answer: &Message) -> bool {
    answer.metadata.id == request.metadata.id
        && answer.metadata.message_type == MessageType::Response
        && answer.queries.len() == request.queries.len()
        && answer
            .queries
            .iter()
            .zip(&request.queries)
            .all(|(a, b)| a == b)
}

async fn udp_exchange(
    upstream: SocketAddr,
    bytes: &[u8],
    request: &Message,
) -> std::io::Result<Message> {
    let local: SocketAddr = if upstream.is_ipv4() {
        "0.0.0.0:0".parse().expect("literal")
    } else {
        "[::]:0".parse().expect("literal")
    };
    let socket = UdpSocket::bind(local).await?;
    socket.connect(upstream).await?;
    socket.send(bytes).await?;
    let mut buf = vec![0u8; 65535];
    loop {
        let n = socket.recv(&mut buf).await?;
        // Anything else on this port (a late or forged answer) is ignored.
        if let Ok(m) = Message::from_vec(&buf[..n]) {
            if matches(request, &m) {
                return Ok(m);
            }
        }
    }
}

async fn tcp_exchange(
    upstream: SocketAddr,
    bytes: &[u8],
    request: &Message,
) -> std::io::Result<Message> {
    let mut stream = TcpStream::connect(upstream).await?;
    let len = u16::try_from(bytes.len()).map_err(std::io::Error::other)?;
    let mut out = Vec::with_capacity(bytes.len() + 2);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(bytes);
    stream.write_all(&out).await?;
    let n = stream.read_u16().await? as usize;
    let mut buf = vec![0u8; n];
    stream.read_exact(&mut buf).await?;
    let m = Message::from_vec(&buf).map_err(|e| std::io::Error::other(e.to_string()))?;
    if !matches(request, &m) {
        return Err(std::io::Error::other("answer does not match the question"));
    }
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::rr::rdata::{A, SOA};
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn name(s: &str) -> Name {
        Name::from_ascii(s).unwrap()
    }

    /// A fake upstream: answers `a.test` with an A record (TTL `ttl`), everything else
    /// NXDOMAIN with an SOA whose minimum is 3; counts the questions it got. With
    /// `truncate_udp`, UDP answers are empty and truncated, TCP ones complete.
    async fn upstream(ttl: u32, truncate_udp: bool) -> (SocketAddr, Arc<AtomicUsize>) {
        let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = udp.local_addr().unwrap();
        let tcp = tokio::net::TcpListener::bind(addr).await.unwrap();
        let count = Arc::new(AtomicUsize::new(0));
        let answer = move |req: &Message, truncated: bool| {
            let mut m = Message::response(req.metadata.id, OpCode::Query);
            m.add_queries(req.queries.clone());
            let q = &req.queries[0];
            if truncated {
                m.metadata.truncation = true;
            } else if q.name() == &name("a.test.") {
                m.add_answer(Record::from_rdata(
                    q.name().clone(),
                    ttl,
                    RData::A(A::new(192, 0, 2, 1)),
                ));
            } else {
                m.metadata.response_code = ResponseCode::NXDomain;
                m.add_authority(Record::from_rdata(
                    name("test."),
                    60,
                    RData::SOA(SOA::new(name("ns.test."), name("h.test."), 1, 1, 1, 1, 3)),
                ));
            }
            m.to_vec().unwrap()
        };
        let c = count.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            loop {
                let (n, peer) = udp.recv_from(&mut buf).await.unwrap();
                c.fetch_add(1, Ordering::SeqCst);
                let req = Message::from_vec(&buf[..n]).unwrap();
                udp.send_to(&answer(&req, truncate_udp), peer)
                    .await
                    .unwrap();
            }
        });
        tokio::spawn(async move {
            loop {
                let (mut s, _) = tcp.accept().await.unwrap();
                let n = s.read_u16().await.unwrap() as usize;
                let mut buf = vec![0u8; n];
                s.read_exact(&mut buf).await.unwrap();
                let req = Message::from_vec(&buf).unwrap();
                let out = answer(&req, false);
                s.write_all(&(out.len() as u16).to_be_bytes())
                    .await
                    .unwrap();
                s.write_all(&out).await.unwrap();
            }
        });
        (addr, count)
    }

    fn forwarder(upstreams: Vec<SocketAddr>) -> Forwarder {
        Forwarder::new(
            upstreams,
            Duration::from_millis(500),
            CacheConfig {
                capacity: 100,
                max_ttl: 30,
                min_ttl: 5,
            },
            10,
            Arc::new(Metrics::new("dns://test")),
        )
    }

    fn q(s: &str) -> Query {
        Query::query(name(s), RecordType::A)
    }

    #[tokio::test]
    async fn answers_are_cached_for_their_clamped_ttl() {
        let (addr, count) = upstream(300, false).await;
        let f = forwarder(vec![addr]);
        let (m, src) = f.resolve(&q("a.test."), true, false, false).await.unwrap();
        assert_eq!(src, Source::Upstream);
        assert_eq!(m.answers[0].ttl, 300);
        let (m, src) = f.resolve(&q("A.Test."), true, false, false).await.unwrap();
        assert_eq!(src, Source::Cache);
        // Served from the cache: capped at the cache's maximum.
        assert!(m.answers[0].ttl <= 30, "{}", m.answers[0].ttl);
        assert_eq!(count.load(Ordering::SeqCst), 1);
        // NXDOMAIN is cached too (for the SOA minimum, raised to min_ttl).
        let (m, _) = f.resolve(&q("b.test."), true, false, false).await.unwrap();
        assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
        let (_, src) = f.resolve(&q("b.test."), true, false, false).await.unwrap();
        assert_eq!(src, Source::Cache);
        assert_eq!(count.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn expired_entries_are_asked_again() {
        let (addr, count) = upstream(1, false).await;
        let f = Forwarder::new(
            vec![addr],
            Duration::from_millis(500),
            CacheConfig {
                capacity: 100,
                max_ttl: 1,
                min_ttl: 1,
            },
            10,
            Arc::new(Metrics::new("dns://test")),
        );
        f.resolve(&q("a.test."), true, false, false).await.unwrap();
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let (_, src) = f.resolve(&q("a.test."), true, false, false).await.unwrap();
        assert_eq!(src, Source::Upstream);
        assert_eq!(count.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn truncated_udp_answers_are_retried_over_tcp() {
        let (addr, _) = upstream(60, true).await;
        let f = forwarder(vec![addr]);
        let (m, _) = f.resolve(&q("a.test."), true, false, false).await.unwrap();
        assert!(!m.metadata.truncation);
        assert_eq!(m.answers.len(), 1);
    }

    #[tokio::test]
    async fn a_dead_upstream_is_skipped() {
        // A bound socket that never answers.
        let dead = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let (addr, _) = upstream(60, false).await;
        let f = forwarder(vec![dead.local_addr().unwrap(), addr]);
        let (m, _) = f.resolve(&q("a.test."), true, false, false).await.unwrap();
        assert_eq!(m.answers.len(), 1);
        let f = forwarder(vec![dead.local_addr().unwrap()]);
        assert!(matches!(
            f.resolve(&q("a.test."), true, false, false).await,
            Err(ForwardError::Failed(_))
        ));
        assert!(matches!(
            forwarder(vec![])
                .resolve(&q("a.test."), true, false, false)
                .await,
            Err(ForwardError::NoUpstreams)
        ));
    }

    #[tokio::test]
    async fn the_own_service_address_is_never_asked() {
        let (addr, count) = upstream(60, false).await;
        let own: SocketAddr = "10.96.0.10:53".parse().unwrap();
        let f = forwarder(vec![own, addr]);
        assert_eq!(f.set_self_ips(&[own.ip()]), vec![own]);
        let (m, _) = f.resolve(&q("a.test."), true, false, false).await.unwrap();
        assert_eq!(m.answers.len(), 1);
        assert_eq!(count.load(Ordering::SeqCst), 1);
        let f = forwarder(vec![own]);
        f.set_self_ips(&[own.ip()]);
        assert!(matches!(
            f.resolve(&q("a.test."), true, false, false).await,
            Err(ForwardError::NoUpstreams)
        ));
    }

    #[test]
    fn negative_ttl_is_the_soa_minimum() {
        let mut m = Message::response(1, OpCode::Query);
        m.metadata.response_code = ResponseCode::NXDomain;
        m.add_authority(Record::from_rdata(
            name("test."),
            60,
            RData::SOA(SOA::new(name("ns.test."), name("h.test."), 1, 1, 1, 1, 7)),
        ));
        assert_eq!(answer_ttl(&m), Some(7));
        m.metadata.response_code = ResponseCode::ServFail;
        assert_eq!(answer_ttl(&m), None);
    }
}
