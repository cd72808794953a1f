//! The DNS listeners (UDP and TCP on one address) and the request handler that ties the
//! cluster zone to the forwarder.
//!
//! One question per message, class IN answered from the zone (authoritatively, with RA set
//! because everything else is forwarded), CNAMEs of ExternalName Services chased through the
//! same path, EDNS answered with our payload size, and UDP answers that exceed the client's
//! limit (512 without EDNS) sent truncated so the client retries over TCP. Until the first
//! zone is built from the API, names in the cluster domain get SERVFAIL rather than a wrong
//! NXDOMAIN.

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{DNSClass, Record, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::forward::{ForwardError, Forwarder, Source, EDNS_PAYLOAD};
use crate::metrics::Metrics;
use crate::zone::{Lookup, Settings, Zone};

/// How long an idle TCP connection is kept.
const TCP_IDLE: Duration = Duration::from_secs(10);
/// Concurrent TCP connections at most.
const TCP_CONNECTIONS: usize = 256;
/// CNAME chains followed at most.
const MAX_CHASE: u8 = 8;

/// The result of resolving one question.
#[derive(Debug)]
struct Resolved {
    rcode: ResponseCode,
    answers: Vec<Record>,
    authorities: Vec<Record>,
    additionals: Vec<Record>,
    authoritative: bool,
    authentic: bool,
    plugin: &'static str,
}

impl Resolved {
    fn error(rcode: ResponseCode, plugin: &'static str) -> Self {
        Resolved {
            rcode,
            answers: Vec::new(),
            authorities: Vec::new(),
            additionals: Vec::new(),
            authoritative: false,
            authentic: false,
            plugin,
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Flags {
    recursion_desired: bool,
    dnssec_ok: bool,
    checking_disabled: bool,
}

/// Answers DNS messages.
pub struct Handler {
    settings: Settings,
    zone: RwLock<Option<Arc<Zone>>>,
    forwarder: Forwarder,
    metrics: Arc<Metrics>,
}

impl Handler {
    pub fn new(settings: Settings, forwarder: Forwarder, metrics: Arc<Metrics>) -> Self {
        Handler {
            settings,
            zone: RwLock::new(None),
            forwarder,
            metrics,
        }
    }

    /// Serve `zone` from now on.
    pub fn set_zone(&self, zone: Arc<Zone>) {
        let looping = self.forwarder.set_self_ips(zone.dns_ips());
        if !looping.is_empty() {
            tracing::warn!(upstreams = ?looping, "upstreams are this server's own Service; skipping them");
        }
        *self.zone.write().unwrap_or_else(|e| e.into_inner()) = Some(zone);
    }

    fn zone(&self) -> Option<Arc<Zone>> {
        self.zone.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn forwarder(&self) -> &Forwarder {
        &self.forwarder
    }

    /// Answer one DNS message; None when nothing should be sent back (not a query, or too
    /// short to answer).
    pub async fn handle(&self, packet: &[u8], tcp: bool, ipv6: bool) -> Option<Vec<u8>> {
        let started = Instant::now();
        let request = match Message::from_vec(packet) {
            Ok(m) => m,
            Err(_) => return format_error(packet),
        };
        if request.metadata.message_type != MessageType::Query {
            return None;
        }
        let qtype = request
            .queries
            .first()
            .map(Query::query_type)
            .unwrap_or(RecordType::NULL);
        let (response, plugin) = self.respond(&request).await;
        let limit = if tcp {
            usize::from(u16::MAX)
        } else {
            request
                .edns
                .as_ref()
                .map(|e| usize::from(e.max_payload().clamp(512, EDNS_PAYLOAD)))
                .unwrap_or(512)
        };
        let bytes = encode(&response, limit)?;
        self.metrics.request(
            tcp,
            ipv6,
            qtype,
            response.metadata.response_code,
            plugin,
            started.elapsed(),
        );
        Some(bytes)
    }

    async fn respond(&self, request: &Message) -> (Message, &'static str) {
        let mut response = Message::response(request.metadata.id, request.metadata.op_code);
        response.metadata.recursion_desired = request.metadata.recursion_desired;
        response.metadata.recursion_available = true;
        response.metadata.checking_disabled = request.metadata.checking_disabled;
        if let Some(client) = &request.edns {
            let mut edns = Edns::new();
            edns.set_max_payload(EDNS_PAYLOAD);
            edns.set_dnssec_ok(client.flags().dnssec_ok);
            response.set_edns(edns);
        }
        if request.metadata.op_code != OpCode::Query {
            response.metadata.response_code = ResponseCode::NotImp;
            return (response, "");
        }
        let [query] = request.queries.as_slice() else {
            response.metadata.response_code = ResponseCode::FormErr;
            return (response, "");
        };
        response.add_query(query.clone());
        if matches!(query.query_type(), RecordType::AXFR | RecordType::IXFR)
            && self.settings.in_zone(query.name())
        {
            // No zone transfers (CoreDNS's `transfer` plugin is not configured either).
            response.metadata.response_code = ResponseCode::Refused;
            return (response, "kubernetes");
        }
        let flags = Flags {
            recursion_desired: request.metadata.recursion_desired,
            dnssec_ok: request.edns.as_ref().is_some_and(|e| e.flags().dnssec_ok),
            checking_disabled: request.metadata.checking_disabled,
        };
        let r = self.resolve(query, flags, 0).await;
        response.metadata.response_code = r.rcode;
        response.metadata.authoritative = r.authoritative;
        response.metadata.authentic_data = r.authentic;
        response.answers = r.answers;
        response.authorities = r.authorities;
        response.additionals = r.additionals;
        (response, r.plugin)
    }

    fn resolve<'a>(
        &'a self,
        query: &'a Query,
        flags: Flags,
        depth: u8,
    ) -> futures::future::BoxFuture<'a, Resolved> {
        Box::pin(async move {
            let in_zone = query.query_class() == DNSClass::IN
                && (self.settings.in_zone(query.name()) || crate::zone::is_reverse(query.name()));
            let lookup = if in_zone {
                match self.zone() {
                    Some(zone) => zone.lookup(query.name(), query.query_type()),
                    None if self.settings.in_zone(query.name()) => {
                        return Resolved::error(ResponseCode::ServFail, "kubernetes");
                    }
                    None => Lookup::Forward,
                }
            } else {
                Lookup::Forward
            };
            match lookup {
                Lookup::Answer(a) => {
                    let mut r = Resolved {
                        rcode: a.rcode,
                        answers: a.answers,
                        authorities: a.authority,
                        additionals: a.additionals,
                        authoritative: true,
                        authentic: false,
                        plugin: "kubernetes",
                    };
                    if let Some(target) = a.chase {
                        if depth < MAX_CHASE {
                            let mut next = Query::query(target, query.query_type());
                            next.set_query_class(query.query_class());
                            let more = self.resolve(&next, flags, depth + 1).await;
                            r.rcode = more.rcode;
                            r.answers.extend(more.answers);
                            r.authorities = more.authorities;
                            r.additionals.extend(more.additionals);
                        }
                    }
                    r
                }
                Lookup::Forward => match self
                    .forwarder
                    .resolve(
                        query,
                        flags.recursion_desired,
                        flags.dnssec_ok,
                        flags.checking_disabled,
                    )
                    .await
                {
                    Ok((m, source)) => Resolved {
                        rcode: m.metadata.response_code,
                        authoritative: m.metadata.authoritative,
                        authentic: m.metadata.authentic_data,
                        answers: m.answers,
                        authorities: m.authorities,
                        additionals: m.additionals,
                        plugin: match source {
                            Source::Cache => "cache",
                            Source::Upstream => "forward",
                        },
                    },
                    Err(ForwardError::Overloaded) => {
                        Resolved::error(ResponseCode::Refused, "forward")
                    }
                    Err(e) => {
                        tracing::debug!(name = %query.name(), error = %e, "forwarding failed");
                        Resolved::error(ResponseCode::ServFail, "forward")
                    }
                },
            }
        })
    }
}

/// A FORMERR answer to a message we could not parse, when its header is readable.
fn format_error(packet: &[u8]) -> Option<Vec<u8>> {
    if packet.len() < 12 || packet[2] & 0x80 != 0 {
        return None;
    }
    let id = u16::from_be_bytes([packet[0], packet[1]]);
    Message::error_msg(id, OpCode::Query, ResponseCode::FormErr)
        .to_vec()
        .ok()
}

/// Encode `m`; over `limit` bytes, the truncated form (header, question, OPT) instead.
fn encode(m: &Message, limit: usize) -> Option<Vec<u8>> {
    let bytes = match m.to_vec() {
        Ok(b) => b,
        Err(e) => {
            tracing::warn!(error = %e, "cannot encode an answer");
            let mut fail = Message::error_msg(m.metadata.id, OpCode::Query, ResponseCode::ServFail);
            fail.add_queries(m.queries.clone());
            return fail.to_vec().ok();
        }
    };
    if bytes.len() <= limit {
        return Some(bytes);
    }
    m.truncate().to_vec().ok()
}

/// Receive UDP queries until `token` is cancelled; each is answered in its own task.
pub async fn serve_udp(socket: Arc<UdpSocket>, handler: Arc<Handler>, token: CancellationToken) {
    let mut buf = vec![0u8; 65535];
    loop {
        let (n, peer) = tokio::select! {
            _ = token.cancelled() => return,
            r = socket.recv_from(&mut buf) => match r {
                Ok(v) => v,
                Err(e) => {
                    // ICMP errors of earlier sends surface here on some systems: not fatal.
                    tracing::debug!(error = %e, "udp receive failed");
                    continue;
                }
            },
        };
        let packet = buf[..n].to_vec();
        let (handler, socket) = (handler.clone(), socket.clone());
        tokio::spawn(async move {
            if let Some(out) = handler.handle(&packet, false, peer.is_ipv6()).await {
                if let Err(e) = socket.send_to(&out, peer).await {
                    tracing::debug!(peer = %peer, error = %e, "udp send failed");
                }
            }
        });
    }
}

/// Accept TCP connections until `token` is cancelled.
pub async fn serve_tcp(listener: TcpListener, handler: Arc<Handler>, token: CancellationToken) {
    let slots = Arc::new(Semaphore::new(TCP_CONNECTIONS));
    loop {
        let (stream, peer) = tokio::select! {
            _ = token.cancelled() => return,
            r = listener.accept() => match r {
                Ok(v) => v,
                Err(e) => {
                    tracing::warn!(error = %e, "tcp accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            // Full: drop the connection, the client retries.
            continue;
        };
        let (handler, token) = (handler.clone(), token.clone());
        tokio::spawn(async move {
            let _permit = permit;
            if let Err(e) = tcp_connection(stream, peer, handler, token).await {
                tracing::debug!(peer = %peer, error = %e, "tcp connection ended");
            }
        });
    }
}

async fn tcp_connection(
    mut stream: TcpStream,
    peer: SocketAddr,
    handler: Arc<Handler>,
    token: CancellationToken,
) -> std::io::Result<()> {
    loop {
        let len = tokio::select! {
            _ = token.cancelled() => return Ok(()),
            r = tokio::time::timeout(TCP_IDLE, stream.read_u16()) => match r {
                Err(_) => return Ok(()),
                Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
                Ok(r) => r?,
            },
        };
        let mut buf = vec![0u8; usize::from(len)];
        tokio::time::timeout(TCP_IDLE, stream.read_exact(&mut buf))
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "slow client"))??;
        let Some(out) = handler.handle(&buf, true, peer.is_ipv6()).await else {
            continue;
        };
        let mut framed = Vec::with_capacity(out.len() + 2);
        framed.extend_from_slice(&(out.len() as u16).to_be_bytes());
        framed.extend_from_slice(&out);
        stream.write_all(&framed).await?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::forward::CacheConfig;
    use crate::zone::PodMode;
    use hickory_proto::rr::Name;
    use k8s_openapi::api::core::v1::Service;

    fn handler(upstreams: Vec<SocketAddr>) -> Handler {
        let settings = Settings::new("cluster.local", 30, PodMode::Insecure).unwrap();
        let metrics = Arc::new(Metrics::new("dns://test"));
        let forwarder = Forwarder::new(
            upstreams,
            Duration::from_millis(300),
            CacheConfig {
                capacity: 10,
                max_ttl: 30,
                min_ttl: 5,
            },
            10,
            metrics.clone(),
        );
        Handler::new(settings, forwarder, metrics)
    }

    fn zone_with(services: Vec<serde_json::Value>) -> Arc<Zone> {
        let services: Vec<Arc<Service>> = services
            .into_iter()
            .map(|v| Arc::new(serde_json::from_value(v).unwrap()))
            .collect();
        Arc::new(Zone::build(
            Settings::new("cluster.local", 30, PodMode::Insecure).unwrap(),
            1,
            &services,
            &[],
            &[],
            &[],
        ))
    }

    fn query(name: &str, qtype: RecordType, edns: bool) -> Vec<u8> {
        let mut m = Message::new(0x4242, MessageType::Query, OpCode::Query);
        m.metadata.recursion_desired = true;
        m.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
        if edns {
            let mut e = Edns::new();
            e.set_max_payload(4096);
            m.set_edns(e);
        }
        m.to_vec().unwrap()
    }

    async fn ask(h: &Handler, packet: &[u8], tcp: bool) -> Message {
        Message::from_vec(&h.handle(packet, tcp, false).await.unwrap()).unwrap()
    }

    #[tokio::test]
    async fn cluster_names_get_servfail_until_the_zone_is_built() {
        let h = handler(vec![]);
        let q = query("web.default.svc.cluster.local.", RecordType::A, false);
        let m = ask(&h, &q, false).await;
        assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
        h.set_zone(zone_with(vec![serde_json::json!({
            "metadata": {"namespace": "default", "name": "web"},
            "spec": {"clusterIP": "10.96.0.20"}
        })]));
        let m = ask(&h, &q, false).await;
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
        assert_eq!(m.metadata.id, 0x4242);
        assert!(m.metadata.authoritative && m.metadata.recursion_available);
        assert!(m.metadata.recursion_desired);
        assert_eq!(m.answers.len(), 1);
        // No upstream: everything else is SERVFAIL.
        let m = ask(&h, &query("example.com.", RecordType::A, false), false).await;
        assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
    }

    #[tokio::test]
    async fn big_udp_answers_are_truncated_unless_edns_or_tcp() {
        let h = handler(vec![]);
        // A headless-free way to a big answer: many ports on one service make many SRVs.
        let ports: Vec<_> = (0..20)
            .map(|i| serde_json::json!({"name": format!("port-{i}"), "port": 1000 + i}))
            .collect();
        h.set_zone(zone_with(vec![serde_json::json!({
            "metadata": {"namespace": "default", "name": "big"},
            "spec": {"clusterIP": "10.96.0.20", "ports": ports}
        })]));
        let name = "big.default.svc.cluster.local.";
        let m = ask(&h, &query(name, RecordType::SRV, false), false).await;
        assert!(m.metadata.truncation);
        assert!(m.answers.is_empty());
        let m = ask(&h, &query(name, RecordType::SRV, true), false).await;
        assert!(!m.metadata.truncation);
        assert_eq!(m.answers.len(), 20);
        assert_eq!(m.edns.as_ref().unwrap().max_payload(), EDNS_PAYLOAD);
        let m = ask(&h, &query(name, RecordType::SRV, false), true).await;
        assert!(!m.metadata.truncation);
        assert_eq!(m.answers.len(), 20);
    }

    #[tokio::test]
    async fn malformed_and_unsupported_messages() {
        let h = handler(vec![]);
        h.set_zone(zone_with(vec![]));
        // Garbage with a readable header: FORMERR with the same ID.
        let mut junk = query("a.cluster.local.", RecordType::A, false);
        junk.truncate(20);
        let m = ask(&h, &junk, false).await;
        assert_eq!(m.metadata.response_code, ResponseCode::FormErr);
        assert_eq!(m.metadata.id, 0x4242);
        // Too short to answer, or a response: dropped.
        assert!(h.handle(&[1, 2, 3], false, false).await.is_none());
        let mut resp = Message::response(7, OpCode::Query);
        resp.add_query(Query::query(Name::root(), RecordType::NS));
        assert!(h
            .handle(&resp.to_vec().unwrap(), false, false)
            .await
            .is_none());
        // Two questions: FORMERR.
        let mut two = Message::new(9, MessageType::Query, OpCode::Query);
        two.add_query(Query::query(Name::from_ascii("a.").unwrap(), RecordType::A));
        two.add_query(Query::query(Name::from_ascii("b.").unwrap(), RecordType::A));
        let m = ask(&h, &two.to_vec().unwrap(), false).await;
        assert_eq!(m.metadata.response_code, ResponseCode::FormErr);
        // Not a query: NOTIMP.
        let mut notify = Message::new(10, MessageType::Query, OpCode::Notify);
        notify.add_query(Query::query(
            Name::from_ascii("cluster.local.").unwrap(),
            RecordType::SOA,
        ));
        let m = ask(&h, &notify.to_vec().unwrap(), false).await;
        assert_eq!(m.metadata.response_code, ResponseCode::NotImp);
        // No zone transfers.
        let m = ask(&h, &query("cluster.local.", RecordType::AXFR, false), true).await;
        assert_eq!(m.metadata.response_code, ResponseCode::Refused);
    }
}
