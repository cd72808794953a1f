//! The service plan both renderers consume: every programmable service port with its
//! endpoints ([`plan`]), and per port the decisions upstream's proxiers make before writing a
//! single rule ([`Decisions`]: which endpoints serve cluster and local traffic, which chains
//! are needed, whether traffic is rejected or dropped) and the UDP destinations whose
//! conntrack entries follow the endpoints ([`udp_state`]).
//!
//! A [`PortPlan`] is everything one service port's rules depend on besides the
//! [`RenderConfig`], so a renderer's output for it is a pure function of it: the proxier
//! re-renders only the ports whose plan changed since the last successful sync.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

use crate::model::{self, Endpoint, PortKey, Protocol, ServicePort, Warning};
use crate::rules::{RenderConfig, UdpDestination};

/// One service port and its endpoints (sorted by address).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortPlan {
    pub sp: ServicePort,
    pub endpoints: Vec<Endpoint>,
}

/// Every service port to program, sorted by key, and the problems found on the way.
#[derive(Clone, Debug, Default)]
pub struct Plan {
    pub ports: Vec<PortPlan>,
    pub warnings: Vec<Warning>,
}

/// The plan of `services` and `slices` (the pure entry point of both renderers). Without
/// `config.sctp`, SCTP ports are left out, each with a warning on its Service.
pub fn plan(
    services: &[Arc<Service>],
    slices: &[Arc<EndpointSlice>],
    config: &RenderConfig,
) -> Plan {
    let mut warnings = Vec::new();
    let ports = model::all_service_ports(services, &mut warnings);
    plan_with_ports(ports, warnings, slices, config)
}

/// [`plan`] from the service ports [`model::all_service_ports`] gave for the Services (and
/// its warnings), when the caller kept them from Services that have not changed since.
pub fn plan_with_ports(
    mut ports: Vec<ServicePort>,
    mut warnings: Vec<Warning>,
    slices: &[Arc<EndpointSlice>],
    config: &RenderConfig,
) -> Plan {
    if !config.sctp {
        ports.retain(|sp| {
            let keep = sp.key.protocol != Protocol::Sctp;
            if !keep {
                warnings.push(Warning {
                    namespace: sp.key.namespace.clone(),
                    name: sp.key.name.clone(),
                    reason: "UnsupportedProtocol",
                    message: format!(
                        "port {:?} is SCTP, which this node's kernel does not support; ignored",
                        sp.key.port_name
                    ),
                });
            }
            keep
        });
    }
    let mut endpoints = model::endpoints_by_port(slices, &config.node_name);
    warnings.sort();
    warnings.dedup();
    Plan {
        ports: ports
            .into_iter()
            .map(|sp| PortPlan {
                endpoints: endpoints.remove(&sp.key).unwrap_or_default(),
                sp,
            })
            .collect(),
        warnings,
    }
}

/// What upstream decides per service port before writing rules (`syncProxyRules`).
#[derive(Debug)]
pub struct Decisions<'a> {
    /// Endpoints for Cluster policy, for Local policy, and all of them (de-duplicated).
    pub cluster_eps: Vec<&'a Endpoint>,
    pub local_eps: Vec<&'a Endpoint>,
    pub all_eps: Vec<&'a Endpoint>,
    /// Some usable endpoint exists anywhere.
    pub has_endpoints: bool,
    /// The Cluster-policy and Local-policy chains are needed.
    pub uses_cluster_chain: bool,
    pub uses_local_chain: bool,
    /// Internal traffic goes to the Local-policy chain (else the Cluster-policy one), and
    /// has somewhere to go.
    pub internal_local: bool,
    pub has_internal: bool,
    /// External traffic goes to the Local-policy chain (else the Cluster-policy one), and
    /// has somewhere to go.
    pub external_local: bool,
    pub has_external: bool,
    /// The external-destinations chain is needed.
    pub uses_external_chain: bool,
}

impl PortPlan {
    pub fn decisions(&self) -> Decisions<'_> {
        let sp = &self.sp;
        let (cluster_eps, local_eps, all_eps, has_endpoints) =
            model::categorize(sp, &self.endpoints);
        let has_local = has_endpoints && !local_eps.is_empty();
        let external_local = sp.external_policy_local();
        Decisions {
            uses_cluster_chain: !cluster_eps.is_empty() && sp.uses_cluster_endpoints(),
            uses_local_chain: !local_eps.is_empty() && sp.uses_local_endpoints(),
            internal_local: sp.internal_local,
            has_internal: if sp.internal_local {
                has_local
            } else {
                has_endpoints
            },
            external_local,
            has_external: if external_local {
                has_local
            } else {
                has_endpoints
            },
            uses_external_chain: has_endpoints && sp.externally_accessible(),
            cluster_eps,
            local_eps,
            all_eps,
            has_endpoints,
        }
    }

    /// For a UDP port: every destination (cluster, external and load-balancer IPs, node port)
    /// and the endpoint IPs it reaches.
    pub fn udp(&self) -> Option<(Vec<UdpDestination>, BTreeSet<Ipv4Addr>)> {
        let sp = &self.sp;
        if sp.key.protocol != Protocol::Udp {
            return None;
        }
        let (_, _, all, _) = model::categorize(sp, &self.endpoints);
        let mut dests = vec![UdpDestination::Ip(sp.cluster_ip, sp.port)];
        dests.extend(
            sp.external_ips
                .iter()
                .chain(sp.load_balancer_ips.iter())
                .map(|ip| UdpDestination::Ip(*ip, sp.port)),
        );
        if sp.node_port != 0 {
            dests.push(UdpDestination::NodePort(sp.node_port));
        }
        Some((dests, all.iter().map(|e| e.ip).collect()))
    }
}

/// The UDP view of a plan, for conntrack cleanup.
pub fn udp_state(
    ports: &[PortPlan],
) -> BTreeMap<PortKey, (Vec<UdpDestination>, BTreeSet<Ipv4Addr>)> {
    ports
        .iter()
        .filter_map(|p| p.udp().map(|u| (p.sp.key.clone(), u)))
        .collect()
}
