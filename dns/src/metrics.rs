//! Prometheus metrics with CoreDNS's names (`coredns_dns_requests_total`,
//! `coredns_dns_responses_total`, `coredns_dns_request_duration_seconds`, `coredns_cache_*`,
//! `coredns_forward_*`, `coredns_build_info`), so CoreDNS dashboards and alerts keep working.
//! The `zone` label is always `.`: one server block serves everything, as kubeadm's Corefile.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    server: Arc<String>,
    zone: &'static str,
    proto: &'static str,
    family: &'static str,
    #[prometheus(flatten)]
    qtype: TypeLabel,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TypeLabel {
    r#type: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResponseLabels {
    server: Arc<String>,
    zone: &'static str,
    rcode: &'static str,
    plugin: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DurationLabels {
    server: Arc<String>,
    zone: &'static str,
    #[prometheus(flatten)]
    qtype: TypeLabel,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CacheLabels {
    server: Arc<String>,
    r#type: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServerLabels {
    server: Arc<String>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ToLabels {
    to: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ForwardLabels {
    to: String,
    rcode: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
    revision: &'static str,
    goversion: &'static str,
}

type Hist<L> = Family<L, Histogram, fn() -> Histogram>;

fn latency() -> Histogram {
    // 25µs … ~0.8s.
    Histogram::new(exponential_buckets(0.000_025, 2.0, 16))
}

/// The server's metrics and their registry.
pub struct Metrics {
    registry: Registry,
    server: Arc<String>,
    requests: Family<RequestLabels, Counter>,
    responses: Family<ResponseLabels, Counter>,
    duration: Hist<DurationLabels>,
    cache_entries: Family<CacheLabels, Gauge>,
    cache_hits: Family<CacheLabels, Counter>,
    cache_misses: Family<ServerLabels, Counter>,
    forward_requests: Family<ToLabels, Counter>,
    forward_responses: Family<ForwardLabels, Counter>,
    forward_duration: Hist<ForwardLabels>,
    forward_failures: Family<ToLabels, Counter>,
    /// Services in the cluster zone after the last rebuild.
    pub services: Gauge,
    /// Zone rebuilds after a change.
    pub rebuilds: Counter,
}

/// CoreDNS's rcode label values.
pub fn rcode_label(rcode: ResponseCode) -> &'static str {
    match rcode {
        ResponseCode::NoError => "NOERROR",
        ResponseCode::FormErr => "FORMERR",
        ResponseCode::ServFail => "SERVFAIL",
        ResponseCode::NXDomain => "NXDOMAIN",
        ResponseCode::NotImp => "NOTIMP",
        ResponseCode::Refused => "REFUSED",
        _ => "OTHER",
    }
}

fn type_label(t: RecordType) -> &'static str {
    // CoreDNS keeps the label set small: common types by name, the rest as "other".
    match t {
        RecordType::A
        | RecordType::AAAA
        | RecordType::CNAME
        | RecordType::MX
        | RecordType::NS
        | RecordType::PTR
        | RecordType::SOA
        | RecordType::SRV
        | RecordType::TXT
        | RecordType::ANY
        | RecordType::HTTPS
        | RecordType::SVCB => t.into(),
        _ => "other",
    }
}

impl Metrics {
    /// Metrics labelled with `server` (CoreDNS's `dns://:53` form).
    pub fn new(server: &str) -> Self {
        let mut registry = Registry::with_prefix("coredns");
        let requests = Family::<RequestLabels, Counter>::default();
        let responses = Family::<ResponseLabels, Counter>::default();
        let duration: Hist<DurationLabels> = Family::new_with_constructor(latency);
        let cache_entries = Family::<CacheLabels, Gauge>::default();
        let cache_hits = Family::<CacheLabels, Counter>::default();
        let cache_misses = Family::<ServerLabels, Counter>::default();
        let forward_requests = Family::<ToLabels, Counter>::default();
        let forward_responses = Family::<ForwardLabels, Counter>::default();
        let forward_duration: Hist<ForwardLabels> = Family::new_with_constructor(latency);
        let forward_failures = Family::<ToLabels, Counter>::default();
        let build_info = Family::<BuildLabels, Gauge>::default();
        let services = Gauge::default();
        let rebuilds = Counter::default();
        registry.register(
            "dns_requests",
            "Counter of DNS requests made per zone, protocol and family",
            requests.clone(),
        );
        registry.register(
            "dns_responses",
            "Counter of response status codes",
            responses.clone(),
        );
        registry.register(
            "dns_request_duration_seconds",
            "Histogram of the time (in seconds) each request took",
            duration.clone(),
        );
        registry.register(
            "cache_entries",
            "The number of elements in the cache",
            cache_entries.clone(),
        );
        registry.register("cache_hits", "The count of cache hits", cache_hits.clone());
        registry.register(
            "cache_misses",
            "The count of cache misses",
            cache_misses.clone(),
        );
        registry.register(
            "forward_requests",
            "Counter of requests made per upstream",
            forward_requests.clone(),
        );
        registry.register(
            "forward_responses",
            "Counter of responses received per upstream",
            forward_responses.clone(),
        );
        registry.register(
            "forward_request_duration_seconds",
            "Histogram of the time each request took",
            forward_duration.clone(),
        );
        registry.register(
            "forward_healthcheck_failures",
            "Counter of the number of failed exchanges with an upstream",
            forward_failures.clone(),
        );
        registry.register(
            "build_info",
            "A metric with a constant '1' value labeled by version",
            build_info.clone(),
        );
        registry.register(
            "kubernetes_services",
            "Services in the cluster zone",
            services.clone(),
        );
        registry.register(
            "kubernetes_zone_rebuilds",
            "Rebuilds of the cluster zone after API changes",
            rebuilds.clone(),
        );
        build_info
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION"),
                revision: "kubrs",
                goversion: "none",
            })
            .set(1);
        Metrics {
            registry,
            server: Arc::new(server.to_string()),
            requests,
            responses,
            duration,
            cache_entries,
            cache_hits,
            cache_misses,
            forward_requests,
            forward_responses,
            forward_duration,
            forward_failures,
            services,
            rebuilds,
        }
    }

    /// One request answered.
    pub fn request(
        &self,
        tcp: bool,
        ipv6: bool,
        qtype: RecordType,
        rcode: ResponseCode,
        plugin: &'static str,
        took: Duration,
    ) {
        let qtype = TypeLabel {
            r#type: type_label(qtype),
        };
        self.requests
            .get_or_create(&RequestLabels {
                server: self.server.clone(),
                zone: ".",
                proto: if tcp { "tcp" } else { "udp" },
                family: if ipv6 { "2" } else { "1" },
                qtype: qtype.clone(),
            })
            .inc();
        self.responses
            .get_or_create(&ResponseLabels {
                server: self.server.clone(),
                zone: ".",
                rcode: rcode_label(rcode),
                plugin,
            })
            .inc();
        self.duration
            .get_or_create(&DurationLabels {
                server: self.server.clone(),
                zone: ".",
                qtype,
            })
            .observe(took.as_secs_f64());
    }

    pub fn cache_size(&self, n: usize) {
        self.cache_entries
            .get_or_create(&CacheLabels {
                server: self.server.clone(),
                r#type: "all",
            })
            .set(n as i64);
    }

    pub fn cache_hit(&self, rcode: ResponseCode) {
        let kind = if rcode == ResponseCode::NoError {
            "success"
        } else {
            "denial"
        };
        self.cache_hits
            .get_or_create(&CacheLabels {
                server: self.server.clone(),
                r#type: kind,
            })
            .inc();
    }

    pub fn cache_miss(&self) {
        self.cache_misses
            .get_or_create(&ServerLabels {
                server: self.server.clone(),
            })
            .inc();
    }

    /// An upstream answered.
    pub fn forwarded(&self, to: &SocketAddr, rcode: ResponseCode, took: Duration) {
        let to = to.to_string();
        self.forward_requests
            .get_or_create(&ToLabels { to: to.clone() })
            .inc();
        let labels = ForwardLabels {
            to,
            rcode: rcode_label(rcode),
        };
        self.forward_responses.get_or_create(&labels).inc();
        self.forward_duration
            .get_or_create(&labels)
            .observe(took.as_secs_f64());
    }

    /// An upstream did not answer (timeout, refused connection).
    pub fn forward_failed(&self, to: &SocketAddr) {
        let to = to.to_string();
        self.forward_requests
            .get_or_create(&ToLabels { to: to.clone() })
            .inc();
        self.forward_failures.get_or_create(&ToLabels { to }).inc();
    }

    /// The text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_match_coredns() {
        let m = Metrics::new("dns://:53");
        m.request(
            false,
            false,
            RecordType::A,
            ResponseCode::NXDomain,
            "kubernetes",
            Duration::from_micros(50),
        );
        m.cache_hit(ResponseCode::NoError);
        m.cache_miss();
        m.forwarded(
            &"10.0.0.1:53".parse().unwrap(),
            ResponseCode::NoError,
            Duration::from_millis(2),
        );
        let text = m.encode();
        for want in [
            "coredns_dns_requests_total{server=\"dns://:53\",zone=\".\",proto=\"udp\",family=\"1\",type=\"A\"} 1",
            "coredns_dns_responses_total{server=\"dns://:53\",zone=\".\",rcode=\"NXDOMAIN\",plugin=\"kubernetes\"} 1",
            "coredns_dns_request_duration_seconds_count{server=\"dns://:53\",zone=\".\",type=\"A\"} 1",
            "coredns_cache_hits_total{server=\"dns://:53\",type=\"success\"} 1",
            "coredns_cache_misses_total{server=\"dns://:53\"} 1",
            "coredns_forward_requests_total{to=\"10.0.0.1:53\"} 1",
            "coredns_forward_responses_total{to=\"10.0.0.1:53\",rcode=\"NOERROR\"} 1",
            "coredns_build_info{",
        ] {
            assert!(text.contains(want), "{want} missing in\n{text}");
        }
    }
}
