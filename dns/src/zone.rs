//! The cluster zone: the Kubernetes DNS schema (github.com/kubernetes/dns, docs/specification.md,
//! version 1.1.0) as CoreDNS's `kubernetes` plugin serves it, computed from Services,
//! EndpointSlices, Pods and Namespaces.
//!
//! Both halves are pure: [`Zone::build`] indexes the objects once per change, and
//! [`Zone::lookup`] answers one question from the index. Names that do not belong to the
//! cluster zone (and reverse names of addresses the cluster does not know) come back as
//! [`Lookup::Forward`]; everything under the zone gets an authoritative answer, with the SOA in
//! the authority section of every NXDOMAIN and NODATA answer. The distinction between the two
//! matters to stub resolvers walking a search list with `ndots:5`: a name that does not exist
//! (`web.default.svc.cluster.local.default.svc.cluster.local`) is NXDOMAIN, so the resolver moves
//! on to the next suffix; a name that exists without records of the asked type (the AAAA of an
//! IPv4-only Service) is NODATA.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::rdata::{A, AAAA, CNAME, NS, PTR, SOA, SRV, TXT};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;

/// The schema version served at `dns-version.<zone>`.
pub const SCHEMA_VERSION: &str = "1.1.0";
/// The label that ties an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// The legacy annotation that makes a Service publish unready endpoints.
pub const TOLERATE_UNREADY: &str = "service.alpha.kubernetes.io/tolerate-unready-endpoints";

/// How `<a-b-c-d>.<ns>.pod.<zone>` names are answered (CoreDNS's `pods` option).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PodMode {
    /// The address is taken from the name, in any existing namespace (kube-dns compatible).
    Insecure,
    /// Only addresses of pods that exist in that namespace.
    Verified,
    /// No pod records.
    Disabled,
}

impl std::str::FromStr for PodMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "insecure" => Ok(PodMode::Insecure),
            "verified" => Ok(PodMode::Verified),
            "disabled" => Ok(PodMode::Disabled),
            other => Err(format!(
                "unknown pod mode {other:?} (insecure, verified, disabled)"
            )),
        }
    }
}

/// What the zone is and how it answers.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The cluster domain, lowercase and fully qualified (`cluster.local.`).
    pub domain: Name,
    /// TTL of every record (and the SOA minimum, so negative answers are cached as long).
    pub ttl: u32,
    pub pods: PodMode,
}

impl Settings {
    pub fn new(domain: &str, ttl: u32, pods: PodMode) -> Result<Self, String> {
        let mut name = Name::from_ascii(domain.trim_end_matches('.'))
            .map_err(|e| format!("invalid cluster domain {domain:?}: {e}"))?
            .to_lowercase();
        name.set_fqdn(true);
        if name.is_root() {
            return Err("the cluster domain must not be the root".into());
        }
        Ok(Settings {
            domain: name,
            ttl,
            pods,
        })
    }

    /// Whether `name` is the cluster domain or below it.
    pub fn in_zone(&self, name: &Name) -> bool {
        self.domain.zone_of(name)
    }
}

/// A port as DNS sees it: SRV records exist for named ports.
#[derive(Clone, Debug, PartialEq, Eq)]
struct PortInfo {
    name: String,
    /// Lowercase (`tcp`, `udp`, `sctp`), as in `_<port>._<proto>`.
    protocol: String,
    port: u16,
}

/// One ready address of a Service's endpoints.
#[derive(Clone, Debug)]
struct Endpoint {
    /// The endpoint's hostname, or its address with dashes (CoreDNS's system-assigned name).
    hostname: String,
    ip: IpAddr,
    ports: Arc<[PortInfo]>,
}

#[derive(Clone, Debug)]
enum Kind {
    ClusterIp(Vec<IpAddr>),
    Headless,
    External(Name),
}

#[derive(Clone, Debug)]
struct Svc {
    kind: Kind,
    ports: Vec<PortInfo>,
    /// Ready endpoints (and unready ones when the Service publishes them), sorted by address.
    endpoints: Vec<Endpoint>,
}

/// The indexed cluster zone.
#[derive(Clone, Debug)]
pub struct Zone {
    settings: Settings,
    /// `domain` without the trailing dot, for building target names.
    domain_text: String,
    serial: u32,
    namespaces: HashSet<String>,
    /// By (namespace, name).
    services: BTreeMap<(String, String), Svc>,
    /// PTR targets by address: service cluster IPs, then endpoint addresses.
    reverse: HashMap<IpAddr, Vec<String>>,
    /// (namespace, address) of every pod, for `pods verified`.
    pod_ips: HashSet<(String, IpAddr)>,
    /// The cluster IPs of kube-system/kube-dns, served as `ns.dns.<zone>`.
    dns_ips: Vec<IpAddr>,
}

/// The answer to one question.
#[derive(Clone, Debug, PartialEq)]
pub enum Lookup {
    /// Not the cluster's: ask the upstream resolvers.
    Forward,
    /// The cluster's authoritative answer.
    Answer(Answer),
}

/// An authoritative answer from the cluster zone.
#[derive(Clone, Debug, PartialEq)]
pub struct Answer {
    pub rcode: ResponseCode,
    pub answers: Vec<Record>,
    pub authority: Vec<Record>,
    pub additionals: Vec<Record>,
    /// The answer ends in a CNAME (an ExternalName Service) whose target must be resolved
    /// too, for the same type.
    pub chase: Option<Name>,
}

impl Answer {
    fn new(rcode: ResponseCode) -> Self {
        Answer {
            rcode,
            answers: Vec::new(),
            authority: Vec::new(),
            additionals: Vec::new(),
            chase: None,
        }
    }
}

fn lower(s: &str) -> String {
    s.to_ascii_lowercase()
}

fn dashed(ip: &IpAddr) -> String {
    ip.to_string().replace(['.', ':'], "-")
}

/// The address a pod name stands for: `10-244-1-5` or `fd00--1`.
fn pod_name_ip(label: &str) -> Option<IpAddr> {
    if label.matches('-').count() == 3 && !label.contains("--") {
        if let Ok(v4) = label.replace('-', ".").parse::<Ipv4Addr>() {
            return Some(IpAddr::V4(v4));
        }
    }
    label
        .replace('-', ":")
        .parse::<Ipv6Addr>()
        .ok()
        .map(IpAddr::V6)
}

fn service_ports(svc: &Service) -> Vec<PortInfo> {
    svc.spec
        .iter()
        .flat_map(|s| s.ports.iter().flatten())
        .filter_map(|p| {
            Some(PortInfo {
                name: lower(p.name.as_deref().unwrap_or("")),
                protocol: lower(p.protocol.as_deref().unwrap_or("TCP")),
                port: u16::try_from(p.port).ok()?,
            })
        })
        .collect()
}

fn kind_of(svc: &Service) -> Option<Kind> {
    let spec = svc.spec.as_ref()?;
    if spec.type_.as_deref() == Some("ExternalName") {
        let target = spec.external_name.as_deref()?.trim_end_matches('.');
        let mut name = Name::from_ascii(target).ok()?;
        name.set_fqdn(true);
        if name.is_root() {
            return None;
        }
        return Some(Kind::External(name));
    }
    if spec.cluster_ip.as_deref() == Some("None") {
        return Some(Kind::Headless);
    }
    let mut ips: Vec<IpAddr> = spec
        .cluster_ips
        .iter()
        .flatten()
        .chain(spec.cluster_ip.iter())
        .filter_map(|s| s.parse().ok())
        .collect();
    let mut seen = HashSet::new();
    ips.retain(|ip| seen.insert(*ip));
    Some(Kind::ClusterIp(ips))
}

fn publishes_unready(svc: &Service) -> bool {
    svc.spec
        .as_ref()
        .and_then(|s| s.publish_not_ready_addresses)
        .unwrap_or(false)
        || svc
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(TOLERATE_UNREADY))
            .is_some_and(|v| v.eq_ignore_ascii_case("true"))
}

impl Zone {
    /// Index the cluster's objects. `serial` is the SOA serial (the time of the last change).
    pub fn build(
        settings: Settings,
        serial: u32,
        services: &[Arc<Service>],
        slices: &[Arc<EndpointSlice>],
        pods: &[Arc<Pod>],
        namespaces: &[Arc<Namespace>],
    ) -> Zone {
        let domain_text = settings.domain.to_ascii().trim_end_matches('.').to_string();
        let mut zone = Zone {
            settings,
            domain_text,
            serial,
            namespaces: namespaces
                .iter()
                .filter_map(|n| n.metadata.name.as_deref().map(lower))
                .collect(),
            services: BTreeMap::new(),
            reverse: HashMap::new(),
            pod_ips: HashSet::new(),
            dns_ips: Vec::new(),
        };
        let mut unready_ok: HashSet<(String, String)> = HashSet::new();
        for svc in services {
            let (Some(ns), Some(name)) = (&svc.metadata.namespace, &svc.metadata.name) else {
                continue;
            };
            let Some(kind) = kind_of(svc) else { continue };
            let key = (lower(ns), lower(name));
            if publishes_unready(svc) {
                unready_ok.insert(key.clone());
            }
            zone.namespaces.insert(key.0.clone());
            zone.services.insert(
                key,
                Svc {
                    kind,
                    ports: service_ports(svc),
                    endpoints: Vec::new(),
                },
            );
        }
        for slice in slices {
            let (Some(ns), Some(svc_name)) = (
                slice.metadata.namespace.as_deref(),
                slice
                    .metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(SERVICE_NAME_LABEL)),
            ) else {
                continue;
            };
            if slice.address_type != "IPv4" && slice.address_type != "IPv6" {
                continue;
            }
            let key = (lower(ns), lower(svc_name));
            let with_unready = unready_ok.contains(&key);
            let Some(svc) = zone.services.get_mut(&key) else {
                continue;
            };
            let ports: Arc<[PortInfo]> = slice
                .ports
                .iter()
                .flatten()
                .filter_map(|p| {
                    Some(PortInfo {
                        name: lower(p.name.as_deref().unwrap_or("")),
                        protocol: lower(p.protocol.as_deref().unwrap_or("TCP")),
                        port: u16::try_from(p.port?).ok()?,
                    })
                })
                .collect();
            for ep in slice.endpoints.iter().flatten() {
                let ready = ep.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true);
                if !ready && !with_unready {
                    continue;
                }
                for addr in &ep.addresses {
                    let Ok(ip) = addr.parse::<IpAddr>() else {
                        continue;
                    };
                    let hostname = ep
                        .hostname
                        .as_deref()
                        .filter(|h| !h.is_empty())
                        .map(lower)
                        .unwrap_or_else(|| dashed(&ip));
                    svc.endpoints.push(Endpoint {
                        hostname,
                        ip,
                        ports: ports.clone(),
                    });
                }
            }
        }
        let mut reverse: BTreeMap<IpAddr, BTreeSet<String>> = BTreeMap::new();
        for ((ns, name), svc) in &mut zone.services {
            // Slices overlap while they are being rebalanced: one record per hostname and IP.
            svc.endpoints
                .sort_by(|a, b| (a.ip, &a.hostname).cmp(&(b.ip, &b.hostname)));
            svc.endpoints
                .dedup_by(|a, b| a.ip == b.ip && a.hostname == b.hostname);
            let fqdn = format!("{name}.{ns}.svc.{}.", zone.domain_text);
            if let Kind::ClusterIp(ips) = &svc.kind {
                for ip in ips {
                    reverse.entry(*ip).or_default().insert(fqdn.clone());
                }
                if ns == "kube-system" && name == "kube-dns" {
                    zone.dns_ips = ips.clone();
                }
            }
            for ep in &svc.endpoints {
                reverse
                    .entry(ep.ip)
                    .or_default()
                    .insert(format!("{}.{fqdn}", ep.hostname));
            }
        }
        zone.reverse = reverse
            .into_iter()
            .map(|(ip, names)| (ip, names.into_iter().collect()))
            .collect();
        if zone.settings.pods == PodMode::Verified {
            for pod in pods {
                let Some(ns) = pod.metadata.namespace.as_deref() else {
                    continue;
                };
                zone.namespaces.insert(lower(ns));
                let status = pod.status.as_ref();
                let ips = status
                    .into_iter()
                    .flat_map(|s| s.pod_ips.iter().flatten().map(|p| p.ip.as_str()))
                    .chain(status.and_then(|s| s.pod_ip.as_deref()));
                for ip in ips {
                    if let Ok(ip) = ip.parse() {
                        zone.pod_ips.insert((lower(ns), ip));
                    }
                }
            }
        }
        zone
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The cluster IPs of kube-system/kube-dns (this server, seen through its Service).
    pub fn dns_ips(&self) -> &[IpAddr] {
        &self.dns_ips
    }

    /// Number of indexed Services.
    pub fn service_count(&self) -> usize {
        self.services.len()
    }

    fn name(&self, text: &str) -> Name {
        // Built from validated object names; a name hickory rejects (a label over 63 bytes)
        // is answered as the zone apex rather than failing the whole answer.
        Name::from_ascii(text).unwrap_or_else(|_| self.settings.domain.clone())
    }

    fn soa(&self) -> Record {
        let d = &self.domain_text;
        Record::from_rdata(
            self.settings.domain.clone(),
            self.settings.ttl,
            RData::SOA(SOA::new(
                self.name(&format!("ns.dns.{d}.")),
                self.name(&format!("hostmaster.{d}.")),
                self.serial,
                7200,
                1800,
                86400,
                self.settings.ttl,
            )),
        )
    }

    fn negative(&self, rcode: ResponseCode) -> Answer {
        let mut a = Answer::new(rcode);
        a.authority.push(self.soa());
        a
    }

    fn nxdomain(&self) -> Answer {
        self.negative(ResponseCode::NXDomain)
    }

    fn nodata(&self) -> Answer {
        self.negative(ResponseCode::NoError)
    }

    /// Answer records at `owner`; NODATA when there are none.
    fn records(&self, owner: &Name, data: Vec<RData>) -> Answer {
        if data.is_empty() {
            return self.nodata();
        }
        let mut a = Answer::new(ResponseCode::NoError);
        a.answers = data
            .into_iter()
            .map(|d| Record::from_rdata(owner.clone(), self.settings.ttl, d))
            .collect();
        a
    }

    fn address_records(&self, owner: &Name, qtype: RecordType, ips: &[IpAddr]) -> Answer {
        self.records(owner, address_data(qtype, ips))
    }

    fn address_additionals(&self, target: &Name, ips: &[IpAddr]) -> Vec<Record> {
        ips.iter()
            .map(|ip| Record::from_rdata(target.clone(), self.settings.ttl, ip_data(*ip)))
            .collect()
    }

    fn namespace_exists(&self, ns: &str) -> bool {
        self.namespaces.contains(ns)
    }

    /// Answer `qname`/`qtype` (class IN).
    pub fn lookup(&self, qname: &Name, qtype: RecordType) -> Lookup {
        if is_reverse(qname) {
            return self.reverse_lookup(qname, qtype);
        }
        if !self.settings.in_zone(qname) {
            return Lookup::Forward;
        }
        let depth = (qname.num_labels() - self.settings.domain.num_labels()) as usize;
        let labels: Vec<String> = qname
            .iter()
            .take(depth)
            .map(|l| String::from_utf8_lossy(l).to_ascii_lowercase())
            .collect();
        let rel: Vec<&str> = labels.iter().map(String::as_str).collect();
        Lookup::Answer(self.zone_lookup(qname, qtype, &rel))
    }

    fn zone_lookup(&self, qname: &Name, qtype: RecordType, rel: &[&str]) -> Answer {
        match rel {
            [] => {
                let mut data = Vec::new();
                if wants(qtype, RecordType::SOA) {
                    return self.records_from(vec![self.soa_for(qname)]);
                }
                if wants(qtype, RecordType::NS) {
                    let ns = self.name(&format!("ns.dns.{}.", self.domain_text));
                    data.push(RData::NS(NS(ns.clone())));
                    let mut a = self.records(qname, data);
                    a.additionals = self.address_additionals(&ns, &self.dns_ips);
                    return a;
                }
                self.nodata()
            }
            ["dns-version"] => {
                let data = if wants(qtype, RecordType::TXT) {
                    vec![RData::TXT(TXT::new(vec![SCHEMA_VERSION.to_string()]))]
                } else {
                    Vec::new()
                };
                self.records(qname, data)
            }
            ["dns"] | ["svc"] | ["pod"] => self.nodata(),
            ["ns", "dns"] => self.address_records(qname, qtype, &self.dns_ips),
            [ns, "svc"] | [ns, "pod"] => {
                if self.namespace_exists(ns) {
                    self.nodata()
                } else {
                    self.nxdomain()
                }
            }
            [podname, ns, "pod"] => self.pod_lookup(qname, qtype, podname, ns),
            [.., svc, ns, "svc"] => {
                let Some(service) = self.services.get(&(ns.to_string(), svc.to_string())) else {
                    return self.nxdomain();
                };
                let fqdn = format!("{svc}.{ns}.svc.{}.", self.domain_text);
                match &rel[..rel.len() - 3] {
                    [] => self.service_lookup(qname, qtype, service, &fqdn),
                    [port, proto] if port.starts_with('_') && proto.starts_with('_') => {
                        self.srv_lookup(qname, qtype, service, &fqdn, Some(&port[1..]), &proto[1..])
                    }
                    [proto] if proto.starts_with('_') => {
                        // `_tcp.<svc>…` exists when `_<port>._tcp.<svc>…` does.
                        let any = self.srv_lookup(
                            qname,
                            RecordType::SRV,
                            service,
                            &fqdn,
                            None,
                            &proto[1..],
                        );
                        if any.answers.is_empty() {
                            self.nxdomain()
                        } else {
                            self.nodata()
                        }
                    }
                    [host] => self.endpoint_lookup(qname, qtype, service, host),
                    _ => self.nxdomain(),
                }
            }
            _ => self.nxdomain(),
        }
    }

    fn records_from(&self, records: Vec<Record>) -> Answer {
        let mut a = Answer::new(ResponseCode::NoError);
        a.answers = records;
        a
    }

    fn soa_for(&self, owner: &Name) -> Record {
        let mut r = self.soa();
        r.name = owner.clone();
        r
    }

    fn pod_lookup(&self, qname: &Name, qtype: RecordType, podname: &str, ns: &str) -> Answer {
        if self.settings.pods == PodMode::Disabled || !self.namespace_exists(ns) {
            return self.nxdomain();
        }
        let Some(ip) = pod_name_ip(podname) else {
            return self.nxdomain();
        };
        if self.settings.pods == PodMode::Verified && !self.pod_ips.contains(&(ns.to_string(), ip))
        {
            return self.nxdomain();
        }
        self.address_records(qname, qtype, &[ip])
    }

    fn service_lookup(&self, qname: &Name, qtype: RecordType, svc: &Svc, fqdn: &str) -> Answer {
        match &svc.kind {
            Kind::External(target) => {
                let mut a = self.records(qname, vec![RData::CNAME(CNAME(target.clone()))]);
                if qtype != RecordType::CNAME {
                    a.chase = Some(target.clone());
                }
                a
            }
            Kind::ClusterIp(ips) => {
                if qtype == RecordType::SRV {
                    let target = self.name(fqdn);
                    let data = srv_data(svc.ports.iter().map(|p| (p.port, target.clone())));
                    let mut a = self.records(qname, data);
                    a.additionals = self.address_additionals(&target, ips);
                    return a;
                }
                self.address_records(qname, qtype, ips)
            }
            Kind::Headless => {
                if svc.endpoints.is_empty() {
                    return self.nxdomain();
                }
                if qtype == RecordType::SRV {
                    let pairs = svc
                        .endpoints
                        .iter()
                        .flat_map(|ep| ep.ports.iter().map(move |p| (ep, p.port)));
                    return self.endpoint_srv(qname, fqdn, pairs);
                }
                let mut ips: Vec<IpAddr> = svc.endpoints.iter().map(|e| e.ip).collect();
                ips.dedup();
                self.address_records(qname, qtype, &ips)
            }
        }
    }

    /// SRV records for headless endpoints, with their addresses as additionals.
    fn endpoint_srv<'a>(
        &self,
        qname: &Name,
        fqdn: &str,
        pairs: impl Iterator<Item = (&'a Endpoint, u16)>,
    ) -> Answer {
        let mut targets = Vec::new();
        let mut additionals = Vec::new();
        for (ep, port) in pairs {
            let target = self.name(&format!("{}.{fqdn}", ep.hostname));
            additionals.push(Record::from_rdata(
                target.clone(),
                self.settings.ttl,
                ip_data(ep.ip),
            ));
            targets.push((port, target));
        }
        // An endpoint with an IPv4 and an IPv6 address is one target.
        targets.sort();
        targets.dedup();
        let mut a = self.records(qname, srv_data(targets.into_iter()));
        additionals.dedup();
        a.additionals = additionals;
        a
    }

    /// `_<port>._<proto>.<svc>…`; `port` None matches every named port of `proto`.
    fn srv_lookup(
        &self,
        qname: &Name,
        qtype: RecordType,
        svc: &Svc,
        fqdn: &str,
        port: Option<&str>,
        proto: &str,
    ) -> Answer {
        let matches = |p: &PortInfo| {
            !p.name.is_empty() && p.protocol == proto && port.is_none_or(|n| p.name == n)
        };
        let answer = match &svc.kind {
            Kind::ClusterIp(ips) => {
                let target = self.name(fqdn);
                let data = srv_data(
                    svc.ports
                        .iter()
                        .filter(|p| matches(p))
                        .map(|p| (p.port, target.clone())),
                );
                let mut a = self.records(qname, data);
                a.additionals = self.address_additionals(&target, ips);
                a
            }
            Kind::External(target) => self.records(
                qname,
                srv_data(
                    svc.ports
                        .iter()
                        .filter(|p| matches(p))
                        .map(|p| (p.port, target.clone())),
                ),
            ),
            Kind::Headless => {
                let pairs = svc.endpoints.iter().flat_map(|ep| {
                    ep.ports
                        .iter()
                        .filter(|p| matches(p))
                        .map(move |p| (ep, p.port))
                });
                self.endpoint_srv(qname, fqdn, pairs)
            }
        };
        if answer.answers.is_empty() {
            // No such port (or no ready endpoint carries it): the name does not exist.
            return self.nxdomain();
        }
        if !wants(qtype, RecordType::SRV) {
            return self.nodata();
        }
        answer
    }

    /// `<hostname>.<svc>.<ns>.svc.<zone>`: the addresses of the endpoints with that hostname.
    fn endpoint_lookup(&self, qname: &Name, qtype: RecordType, svc: &Svc, host: &str) -> Answer {
        let ips: Vec<IpAddr> = svc
            .endpoints
            .iter()
            .filter(|e| e.hostname == host)
            .map(|e| e.ip)
            .collect();
        if ips.is_empty() {
            return self.nxdomain();
        }
        self.address_records(qname, qtype, &ips)
    }

    fn reverse_lookup(&self, qname: &Name, qtype: RecordType) -> Lookup {
        if !wants(qtype, RecordType::PTR) {
            return Lookup::Forward;
        }
        let Ok(net) = qname.parse_arpa_name() else {
            return Lookup::Forward;
        };
        if net.prefix_len() != net.max_prefix_len() {
            return Lookup::Forward;
        }
        match self.reverse.get(&net.addr()) {
            Some(targets) => Lookup::Answer(
                self.records(
                    qname,
                    targets
                        .iter()
                        .map(|t| RData::PTR(PTR(self.name(t))))
                        .collect(),
                ),
            ),
            None => Lookup::Forward,
        }
    }
}

/// Whether `name` is under in-addr.arpa or ip6.arpa.
pub fn is_reverse(name: &Name) -> bool {
    // Checked on every query: compare the last labels without building a string.
    let mut labels = name.iter().rev();
    labels
        .next()
        .is_some_and(|l| l.eq_ignore_ascii_case(b"arpa"))
        && labels
            .next()
            .is_some_and(|l| l.eq_ignore_ascii_case(b"in-addr") || l.eq_ignore_ascii_case(b"ip6"))
}

fn wants(qtype: RecordType, rtype: RecordType) -> bool {
    qtype == rtype || qtype == RecordType::ANY
}

fn ip_data(ip: IpAddr) -> RData {
    match ip {
        IpAddr::V4(v4) => RData::A(A(v4)),
        IpAddr::V6(v6) => RData::AAAA(AAAA(v6)),
    }
}

fn address_data(qtype: RecordType, ips: &[IpAddr]) -> Vec<RData> {
    ips.iter()
        .filter(|ip| match ip {
            IpAddr::V4(_) => wants(qtype, RecordType::A),
            IpAddr::V6(_) => wants(qtype, RecordType::AAAA),
        })
        .map(|ip| ip_data(*ip))
        .collect()
}

/// SRV records with priority 0 and the weight shared equally, as CoreDNS does.
fn srv_data(targets: impl Iterator<Item = (u16, Name)>) -> Vec<RData> {
    let targets: Vec<(u16, Name)> = targets.collect();
    let weight = (100 / targets.len().max(1)).max(1) as u16;
    targets
        .into_iter()
        .map(|(port, target)| RData::SRV(SRV::new(0, weight, port, target)))
        .collect()
}

#[cfg(test)]
mod tests;
