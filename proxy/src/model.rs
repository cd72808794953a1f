//! The proxy's view of the API: Services cut into [`ServicePort`]s and EndpointSlices cut into
//! [`Endpoint`]s per service port, as upstream's `ServicePort`/`Endpoint` caches.
//!
//! Extraction is pure and never fails as a whole: a port with an unknown protocol, an invalid
//! IP or a port that collides with an earlier claim (another service's NodePort, the same
//! external IP:port) is dropped with a [`Warning`] naming the Service, and every other port
//! keeps its rules. Only IPv4 is programmed (the iptables binary, not ip6tables); IPv6 cluster
//! IPs and slices are skipped quietly.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

/// The label tying an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// Services with this label are handled by another proxy (upstream `service.kubernetes.io/service-proxy-name`).
pub const SERVICE_PROXY_NAME_LABEL: &str = "service.kubernetes.io/service-proxy-name";
/// The default `sessionAffinityConfig.clientIP.timeoutSeconds`.
pub const DEFAULT_AFFINITY_TIMEOUT: i32 = 10800;

/// The L4 protocols the proxy programs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

impl Protocol {
    /// `TCP`/`UDP`/`SCTP` (absent means TCP, as the API defaults it).
    pub fn parse(s: Option<&str>) -> Option<Protocol> {
        match s.unwrap_or("TCP") {
            "TCP" => Some(Protocol::Tcp),
            "UDP" => Some(Protocol::Udp),
            "SCTP" => Some(Protocol::Sctp),
            _ => None,
        }
    }

    /// The iptables spelling (`tcp`, `udp`, `sctp`), also used in chain hashes.
    pub fn lower(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        }
    }
}

/// Identifies one service port: namespace, service name, port name, protocol.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PortKey {
    pub namespace: String,
    pub name: String,
    pub port_name: String,
    pub protocol: Protocol,
}

impl PortKey {
    /// Upstream's `ServicePortName.String()`: `ns/name:port`, or `ns/name` for an unnamed port.
    pub fn display(&self) -> String {
        if self.port_name.is_empty() {
            format!("{}/{}", self.namespace, self.name)
        } else {
            format!("{}/{}:{}", self.namespace, self.name, self.port_name)
        }
    }
}

/// One port of one Service, with everything the rules need.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServicePort {
    pub key: PortKey,
    pub cluster_ip: Ipv4Addr,
    pub port: u16,
    /// 0 when the Service has no node port.
    pub node_port: u16,
    pub external_ips: Vec<Ipv4Addr>,
    pub load_balancer_ips: Vec<Ipv4Addr>,
    /// `Some(timeout seconds)` for `sessionAffinity: ClientIP`.
    pub affinity_timeout: Option<i32>,
    /// `externalTrafficPolicy: Local`.
    pub external_local: bool,
    /// `internalTrafficPolicy: Local`.
    pub internal_local: bool,
}

impl ServicePort {
    /// Reachable by node ports, external IPs or load-balancer IPs.
    pub fn externally_accessible(&self) -> bool {
        self.node_port != 0 || !self.external_ips.is_empty() || !self.load_balancer_ips.is_empty()
    }

    /// External traffic keeps to local endpoints (only meaningful when externally accessible).
    pub fn external_policy_local(&self) -> bool {
        self.externally_accessible() && self.external_local
    }

    /// Upstream `UsesClusterEndpoints`: internal policy Cluster, or any external access (the
    /// short-circuit for pod traffic to external destinations needs the cluster endpoints).
    pub fn uses_cluster_endpoints(&self) -> bool {
        !self.internal_local || self.externally_accessible()
    }

    /// Upstream `UsesLocalEndpoints`.
    pub fn uses_local_endpoints(&self) -> bool {
        self.internal_local || self.external_policy_local()
    }
}

/// One endpoint of one service port.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Endpoint {
    pub ip: Ipv4Addr,
    pub port: u16,
    pub ready: bool,
    pub serving: bool,
    pub terminating: bool,
    /// On this node (`nodeName` is ours).
    pub local: bool,
}

impl Endpoint {
    /// `ip:port`, as in upstream's comments and SEP hashes.
    pub fn addr(&self) -> String {
        format!("{}:{}", self.ip, self.port)
    }
}

/// Something wrong with one Service, reported as a Warning event on it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Warning {
    pub namespace: String,
    pub name: String,
    pub reason: &'static str,
    pub message: String,
}

fn warn(svc: &Service, reason: &'static str, message: String) -> Warning {
    Warning {
        namespace: svc.metadata.namespace.clone().unwrap_or_default(),
        name: svc.metadata.name.clone().unwrap_or_default(),
        reason,
        message,
    }
}

fn parse_v4(s: &str) -> Option<Ipv4Addr> {
    s.parse().ok()
}

fn port_u16(n: i32) -> Option<u16> {
    u16::try_from(n).ok().filter(|p| *p != 0)
}

/// The service ports of one Service (none for headless, ExternalName, IPv6-only or
/// other-proxy Services), with a warning for every port that cannot be programmed.
pub fn service_ports(svc: &Service, warnings: &mut Vec<Warning>) -> Vec<ServicePort> {
    let Some(spec) = svc.spec.as_ref() else {
        return Vec::new();
    };
    if spec.type_.as_deref() == Some("ExternalName")
        || svc
            .metadata
            .labels
            .as_ref()
            .is_some_and(|l| l.contains_key(SERVICE_PROXY_NAME_LABEL))
    {
        return Vec::new();
    }
    let ns = svc.metadata.namespace.clone().unwrap_or_default();
    let name = svc.metadata.name.clone().unwrap_or_default();
    let cluster_ip = spec
        .cluster_ips
        .iter()
        .flatten()
        .chain(spec.cluster_ip.iter())
        .find_map(|ip| parse_v4(ip));
    let Some(cluster_ip) = cluster_ip else {
        // Headless ("None"), not yet allocated, or IPv6 only.
        return Vec::new();
    };
    let mut external_ips = Vec::new();
    for ip in spec.external_ips.iter().flatten() {
        match parse_v4(ip) {
            Some(v4) => external_ips.push(v4),
            None if ip.contains(':') => {}
            None => warnings.push(warn(
                svc,
                "InvalidExternalIP",
                format!("externalIPs entry {ip:?} is not an IP address; ignored"),
            )),
        }
    }
    let lb = spec.type_.as_deref() == Some("LoadBalancer");
    let load_balancer_ips: Vec<Ipv4Addr> = if lb {
        svc.status
            .as_ref()
            .and_then(|s| s.load_balancer.as_ref())
            .and_then(|l| l.ingress.as_ref())
            .into_iter()
            .flatten()
            // `ipMode: Proxy` load balancers deliver to the node, not to the VIP.
            .filter(|i| i.ip_mode.as_deref() != Some("Proxy"))
            .filter_map(|i| i.ip.as_deref().and_then(parse_v4))
            .collect()
    } else {
        Vec::new()
    };
    let affinity_timeout = (spec.session_affinity.as_deref() == Some("ClientIP")).then(|| {
        spec.session_affinity_config
            .as_ref()
            .and_then(|c| c.client_ip.as_ref())
            .and_then(|c| c.timeout_seconds)
            .unwrap_or(DEFAULT_AFFINITY_TIMEOUT)
    });
    let node_ports_allowed = matches!(spec.type_.as_deref(), Some("NodePort" | "LoadBalancer"));
    let mut out: Vec<ServicePort> = Vec::new();
    for p in spec.ports.iter().flatten() {
        let port_name = p.name.clone().unwrap_or_default();
        let Some(protocol) = Protocol::parse(p.protocol.as_deref()) else {
            warnings.push(warn(
                svc,
                "UnsupportedProtocol",
                format!(
                    "port {:?} ({}) has protocol {:?}, which the proxy does not support; ignored",
                    port_name,
                    p.port,
                    p.protocol.as_deref().unwrap_or_default()
                ),
            ));
            continue;
        };
        let Some(port) = port_u16(p.port) else {
            warnings.push(warn(
                svc,
                "InvalidPort",
                format!(
                    "port {:?} has invalid number {}; ignored",
                    port_name, p.port
                ),
            ));
            continue;
        };
        if let Some(dup) = out.iter().find(|o| {
            o.key.port_name == port_name || (o.port == port && o.key.protocol == protocol)
        }) {
            warnings.push(warn(
                svc,
                "PortConflict",
                format!(
                    "port {:?} ({}/{}) duplicates port {:?} ({}/{}); ignored",
                    port_name,
                    port,
                    protocol.lower(),
                    dup.key.port_name,
                    dup.port,
                    dup.key.protocol.lower()
                ),
            ));
            continue;
        }
        let node_port = if node_ports_allowed {
            p.node_port.and_then(port_u16).unwrap_or(0)
        } else {
            0
        };
        out.push(ServicePort {
            key: PortKey {
                namespace: ns.clone(),
                name: name.clone(),
                port_name,
                protocol,
            },
            cluster_ip,
            port,
            node_port,
            external_ips: external_ips.clone(),
            load_balancer_ips: load_balancer_ips.clone(),
            affinity_timeout,
            external_local: spec.external_traffic_policy.as_deref() == Some("Local"),
            internal_local: spec.internal_traffic_policy.as_deref() == Some("Local"),
        });
    }
    out
}

/// Every programmable service port of `services`, sorted by key, with cross-service
/// conflicts resolved: the older Service (creation time, then namespace/name) keeps a node
/// port or an external/LB `ip:port` that a younger one also claims; the younger one loses
/// just that address, with a warning.
pub fn all_service_ports(
    services: &[Arc<Service>],
    warnings: &mut Vec<Warning>,
) -> Vec<ServicePort> {
    let mut svcs: Vec<&Arc<Service>> = services.iter().collect();
    // Borrowed keys: cloning names in the comparator cost more than the rest of the plan.
    fn age_order(s: &Service) -> (Option<&Time>, Option<&str>, Option<&str>) {
        (
            s.metadata.creation_timestamp.as_ref(),
            s.metadata.namespace.as_deref(),
            s.metadata.name.as_deref(),
        )
    }
    svcs.sort_by(|a, b| age_order(a).cmp(&age_order(b)));
    type Claim = (Protocol, Option<Ipv4Addr>, u16);
    let mut claimed: HashMap<Claim, String> = HashMap::new();
    let mut out = Vec::new();
    for svc in svcs {
        for mut sp in service_ports(svc, warnings) {
            let owner = sp.key.display();
            let mut conflict =
                |claim: Claim, what: String, warnings: &mut Vec<Warning>| match claimed.get(&claim)
                {
                    Some(other) if *other != owner => {
                        warnings.push(warn(
                            svc,
                            "PortConflict",
                            format!(
                                "{what} is already used by {other}; not programmed for {owner}"
                            ),
                        ));
                        false
                    }
                    _ => {
                        claimed.insert(claim, owner.clone());
                        true
                    }
                };
            let proto = sp.key.protocol;
            if !conflict(
                (proto, Some(sp.cluster_ip), sp.port),
                format!("{}:{}/{}", sp.cluster_ip, sp.port, proto.lower()),
                warnings,
            ) {
                continue;
            }
            if sp.node_port != 0
                && !conflict(
                    (proto, None, sp.node_port),
                    format!("node port {}/{}", sp.node_port, proto.lower()),
                    warnings,
                )
            {
                sp.node_port = 0;
            }
            let port = sp.port;
            sp.external_ips.retain(|ip| {
                conflict(
                    (proto, Some(*ip), port),
                    format!("external IP {ip}:{port}/{}", proto.lower()),
                    warnings,
                )
            });
            sp.load_balancer_ips.retain(|ip| {
                conflict(
                    (proto, Some(*ip), port),
                    format!("load-balancer IP {ip}:{port}/{}", proto.lower()),
                    warnings,
                )
            });
            out.push(sp);
        }
    }
    out.sort_by(|a, b| a.key.cmp(&b.key));
    out
}

/// The endpoints of every service port (by [`PortKey`]), from the EndpointSlices: a slice
/// port serves the service port of the same name and protocol (that is how named target
/// ports resolve); `local` is `nodeName == node_name`. Sorted and de-duplicated by address.
pub fn endpoints_by_port(
    slices: &[Arc<EndpointSlice>],
    node_name: &str,
) -> HashMap<PortKey, Vec<Endpoint>> {
    let mut by_port: HashMap<PortKey, Vec<Endpoint>> = HashMap::new();
    for slice in slices {
        if slice.address_type != "IPv4" {
            continue;
        }
        let Some(svc) = slice
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(SERVICE_NAME_LABEL))
        else {
            continue;
        };
        let ns = slice.metadata.namespace.clone().unwrap_or_default();
        for sp in slice.ports.iter().flatten() {
            let Some(protocol) = Protocol::parse(sp.protocol.as_deref()) else {
                continue;
            };
            let Some(port) = sp.port.and_then(port_u16) else {
                continue;
            };
            let key = PortKey {
                namespace: ns.clone(),
                name: svc.clone(),
                port_name: sp.name.clone().unwrap_or_default(),
                protocol,
            };
            let eps = by_port.entry(key).or_default();
            for ep in slice.endpoints.iter().flatten() {
                let c = ep.conditions.as_ref();
                let ready = c.and_then(|c| c.ready).unwrap_or(true);
                let serving = c.and_then(|c| c.serving).unwrap_or(ready);
                let terminating = c.and_then(|c| c.terminating).unwrap_or(false);
                let local = ep.node_name.as_deref() == Some(node_name);
                // Upstream uses the first address of an endpoint.
                let Some(ip) = ep.addresses.first().and_then(|a| parse_v4(a)) else {
                    continue;
                };
                eps.push(Endpoint {
                    ip,
                    port,
                    ready,
                    serving,
                    terminating,
                    local,
                });
            }
        }
    }
    for eps in by_port.values_mut() {
        // Stable: of two entries for one address, the first seen is kept.
        eps.sort_by_key(|e| (e.ip, e.port));
        eps.dedup_by_key(|e| (e.ip, e.port));
    }
    by_port
}

/// Upstream `CategorizeEndpoints` without topology hints: the endpoints for Cluster policy
/// (ready ones; serving+terminating only when none is ready), for Local policy (local ready
/// ones; local serving+terminating only when none is ready), everything reachable, and whether
/// the service has any usable endpoint anywhere.
pub fn categorize<'a>(
    sp: &ServicePort,
    endpoints: &'a [Endpoint],
) -> (
    Vec<&'a Endpoint>,
    Vec<&'a Endpoint>,
    Vec<&'a Endpoint>,
    bool,
) {
    let mut cluster: Vec<&Endpoint> = Vec::new();
    let mut has_any = false;
    if sp.uses_cluster_endpoints() {
        cluster = endpoints.iter().filter(|e| e.ready).collect();
        if cluster.is_empty() {
            cluster = endpoints
                .iter()
                .filter(|e| e.serving && e.terminating)
                .collect();
        }
        has_any = !cluster.is_empty();
    }
    if !sp.uses_local_endpoints() {
        let all = cluster.clone();
        return (cluster, Vec::new(), all, has_any);
    }
    let mut local_ready = false;
    let mut local_terminating = false;
    for e in endpoints {
        if e.ready {
            has_any = true;
            local_ready |= e.local;
        } else if e.serving && e.terminating {
            has_any = true;
            local_terminating |= e.local;
        }
    }
    let local: Vec<&Endpoint> = if local_ready {
        endpoints.iter().filter(|e| e.local && e.ready).collect()
    } else if local_terminating {
        endpoints
            .iter()
            .filter(|e| e.local && e.serving && e.terminating)
            .collect()
    } else {
        Vec::new()
    };
    if !sp.uses_cluster_endpoints() {
        let all = local.clone();
        return (Vec::new(), local, all, has_any);
    }
    let mut all: Vec<&Endpoint> = cluster.iter().chain(local.iter()).copied().collect();
    all.sort();
    all.dedup_by(|a, b| a.ip == b.ip && a.port == b.port);
    (cluster, local, all, has_any)
}
