//! The ruleset: a pure function from Services, EndpointSlices and this node to the iptables
//! chains of tables `nat` and `filter`, in upstream kube-proxy's iptables-mode layout and
//! naming, and the `iptables-restore` text that moves the kernel from what was applied last to
//! that.
//!
//! Layout (nat): `KUBE-SERVICES` (from PREROUTING and OUTPUT) matches every cluster IP,
//! external IP and load-balancer IP and ends in `KUBE-NODEPORTS` for local destinations; each
//! service port has `KUBE-SVC-<hash>` (Cluster policy endpoints, random balancing with the
//! statistic module, ClientIP affinity with `recent`), `KUBE-SVL-<hash>` (Local policy
//! endpoints) and `KUBE-EXT-<hash>` (external destinations: masquerade, or the Local-policy
//! short-circuits), and each endpoint `KUBE-SEP-<hash>` (hairpin masquerade + DNAT). Marked
//! packets (0x4000) are masqueraded in `KUBE-POSTROUTING`. Filter: `KUBE-SERVICES` and
//! `KUBE-EXTERNAL-SERVICES` REJECT service ports without endpoints (DROP when only local
//! endpoints are missing), `KUBE-FORWARD` accepts marked and established forwarded traffic.
//!
//! Chain names hash like upstream: base32(sha256(service port name + protocol [+ endpoint]))
//! cut to 16 characters, so they are stable across restarts and match upstream's for the same
//! service.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

use crate::model::{Endpoint, PortKey, Protocol, ServicePort, Warning};
use crate::plan::{self, PortPlan};

pub const KUBE_SERVICES: &str = "KUBE-SERVICES";
pub const KUBE_EXTERNAL_SERVICES: &str = "KUBE-EXTERNAL-SERVICES";
pub const KUBE_NODEPORTS: &str = "KUBE-NODEPORTS";
pub const KUBE_POSTROUTING: &str = "KUBE-POSTROUTING";
pub const KUBE_MARK_MASQ: &str = "KUBE-MARK-MASQ";
pub const KUBE_FORWARD: &str = "KUBE-FORWARD";

/// Prefixes of the per-service and per-endpoint chains this proxy owns (stale ones are
/// deleted). `KUBE-XLB-` and `KUBE-FW-` are older upstream names, removed if found.
pub const DYNAMIC_PREFIXES: &[&str] = &[
    "KUBE-SVC-",
    "KUBE-SVL-",
    "KUBE-EXT-",
    "KUBE-SEP-",
    "KUBE-FW-",
    "KUBE-XLB-",
];

/// An IPv4 CIDR.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    pub addr: Ipv4Addr,
    pub len: u8,
}

impl Cidr {
    pub fn parse(s: &str) -> Option<Cidr> {
        let (ip, len) = s.trim().split_once('/')?;
        let ip: Ipv4Addr = ip.parse().ok()?;
        let len: u8 = len.parse().ok().filter(|l| *l <= 32)?;
        let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
        Some(Cidr {
            addr: Ipv4Addr::from(u32::from(ip) & mask),
            len,
        })
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        let mask = if self.len == 0 {
            0
        } else {
            u32::MAX << (32 - self.len)
        };
        u32::from(ip) & mask == u32::from(self.addr)
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

/// What the rules depend on besides the API objects.
#[derive(Clone, Debug)]
pub struct RenderConfig {
    /// This node's name (endpoints with this `nodeName` are local).
    pub node_name: String,
    /// The pod network: traffic to a cluster IP from outside it is masqueraded, and pod
    /// traffic to external destinations of Local-policy services is short-circuited.
    pub cluster_cidr: Option<Cidr>,
    /// Masquerade all traffic to cluster IPs.
    pub masquerade_all: bool,
    /// The bit of the packet mark meaning "masquerade this" (14: 0x4000).
    pub masquerade_bit: u8,
    /// Whether SCTP service ports are programmed (off after the kernel refused them).
    pub sctp: bool,
    /// Upstream's large-cluster mode (more than [`LARGE_CLUSTER_ENDPOINTS`] endpoints in all,
    /// decided from the plan by [`render`] and the sync): the rules of endpoint chains and the
    /// service-to-endpoint rules go without their `-m comment` (upstream: "only used for
    /// debugging"); the rules in the fixed chains and the cluster-IP masquerade keep theirs.
    pub large_cluster: bool,
}

/// Upstream's `largeClusterEndpointsThreshold`: above this many endpoints (summed over every
/// service port), [`RenderConfig::large_cluster`].
pub const LARGE_CLUSTER_ENDPOINTS: usize = 1000;

/// Whether `ports` make a large cluster ([`LARGE_CLUSTER_ENDPOINTS`]).
pub fn is_large_cluster(ports: &[PortPlan]) -> bool {
    ports.iter().map(|p| p.endpoints.len()).sum::<usize>() > LARGE_CLUSTER_ENDPOINTS
}

impl Default for RenderConfig {
    fn default() -> Self {
        Self {
            node_name: String::new(),
            cluster_cidr: None,
            masquerade_all: false,
            masquerade_bit: 14,
            sctp: true,
            large_cluster: false,
        }
    }
}

/// The chains of one table, each with its rules (the text after `-A CHAIN `), listed in a
/// stable order: the table's fixed chains first, then the others by name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Table {
    fixed: &'static [&'static str],
    chains: BTreeMap<String, Vec<String>>,
}

impl Table {
    fn new(fixed: &'static [&'static str]) -> Self {
        Self {
            fixed,
            chains: BTreeMap::new(),
        }
    }

    fn chain(&mut self, name: &str) -> &mut Vec<String> {
        if !self.chains.contains_key(name) {
            self.chains.insert(name.to_string(), Vec::new());
        }
        self.chains.get_mut(name).expect("just inserted")
    }

    /// The rules of `name`, if the chain exists.
    pub fn rules(&self, name: &str) -> Option<&[String]> {
        self.chains.get(name).map(Vec::as_slice)
    }

    /// Chain names in order.
    pub fn chain_names(&self) -> impl Iterator<Item = &str> {
        let fixed = self
            .fixed
            .iter()
            .copied()
            .filter(|f| self.chains.contains_key(*f));
        let rest = self
            .chains
            .keys()
            .map(String::as_str)
            .filter(|c| !self.fixed.contains(c));
        fixed.chain(rest)
    }

    /// Number of rules.
    pub fn rule_count(&self) -> usize {
        self.chains.values().map(Vec::len).sum()
    }
}

const NAT_FIXED: &[&str] = &[
    KUBE_SERVICES,
    KUBE_NODEPORTS,
    KUBE_POSTROUTING,
    KUBE_MARK_MASQ,
];
const FILTER_FIXED: &[&str] = &[KUBE_SERVICES, KUBE_EXTERNAL_SERVICES, KUBE_FORWARD];

/// Both tables.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ruleset {
    pub filter: Table,
    pub nat: Table,
}

impl Default for Ruleset {
    fn default() -> Self {
        Self {
            filter: Table::new(FILTER_FIXED),
            nat: Table::new(NAT_FIXED),
        }
    }
}

impl Ruleset {
    /// The fixed chains of `self` (`fixed`), or the others.
    pub fn select(&self, fixed: bool) -> Ruleset {
        let pick = |t: &Table| Table {
            fixed: t.fixed,
            chains: t
                .chains
                .iter()
                .filter(|(c, _)| t.fixed.contains(&c.as_str()) == fixed)
                .map(|(c, r)| (c.clone(), r.clone()))
                .collect(),
        };
        Ruleset {
            filter: pick(&self.filter),
            nat: pick(&self.nat),
        }
    }

    /// Number of rules in chains other than the fixed ones.
    pub fn own_rule_count(&self) -> usize {
        [&self.filter, &self.nat]
            .iter()
            .flat_map(|t| {
                t.chains
                    .iter()
                    .filter(|(c, _)| !t.fixed.contains(&c.as_str()))
            })
            .map(|(_, r)| r.len())
            .sum()
    }

    /// Append `other`'s rules chain by chain (creating chains it has and this one lacks).
    pub fn merge(&mut self, other: &Ruleset) {
        for (mine, theirs) in [
            (&mut self.filter, &other.filter),
            (&mut self.nat, &other.nat),
        ] {
            for (c, rules) in &theirs.chains {
                mine.chain(c).extend(rules.iter().cloned());
            }
        }
    }

    fn nat(&mut self, chain: &str) -> &mut Vec<String> {
        self.nat.chain(chain)
    }
    fn filter(&mut self, chain: &str) -> &mut Vec<String> {
        self.filter.chain(chain)
    }
}

/// A UDP destination whose conntrack entries must follow its endpoints.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum UdpDestination {
    /// Cluster IP, external IP or load-balancer IP and port.
    Ip(Ipv4Addr, u16),
    /// A node port.
    NodePort(u16),
}

/// The output of one render.
#[derive(Clone, Debug, Default)]
pub struct Rendered {
    pub rules: Ruleset,
    /// Problems with individual Services (their other ports and other Services are intact).
    pub warnings: Vec<Warning>,
    /// For every UDP service port: its destinations and the endpoint IPs they reach.
    pub udp: BTreeMap<PortKey, (Vec<UdpDestination>, BTreeSet<Ipv4Addr>)>,
    /// Service ports programmed.
    pub service_ports: usize,
}

fn base32_16(digest: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut out = String::with_capacity(16);
    let (mut buf, mut bits) = (0u32, 0u32);
    for &b in digest {
        buf = (buf << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(ALPHABET[((buf >> bits) & 31) as usize] as char);
            if out.len() == 16 {
                return out;
            }
        }
    }
    out
}

/// Upstream `portProtoHash`: base32(sha256(name + protocol)) cut to 16 characters.
pub fn port_proto_hash(name: &str, protocol: &str) -> String {
    let d = ring::digest::digest(
        &ring::digest::SHA256,
        format!("{name}{protocol}").as_bytes(),
    );
    base32_16(d.as_ref())
}

/// `KUBE-SVC-<hash>`: the Cluster-policy chain of a service port.
pub fn svc_chain(key: &PortKey) -> String {
    format!(
        "KUBE-SVC-{}",
        port_proto_hash(&key.display(), key.protocol.lower())
    )
}

/// `KUBE-SVL-<hash>`: the Local-policy chain.
pub fn svl_chain(key: &PortKey) -> String {
    format!(
        "KUBE-SVL-{}",
        port_proto_hash(&key.display(), key.protocol.lower())
    )
}

/// `KUBE-EXT-<hash>`: the external-destinations chain.
pub fn ext_chain(key: &PortKey) -> String {
    format!(
        "KUBE-EXT-{}",
        port_proto_hash(&key.display(), key.protocol.lower())
    )
}

/// `KUBE-SEP-<hash>`: the chain of one endpoint of a service port.
pub fn sep_chain(key: &PortKey, ep: &Endpoint) -> String {
    let d = ring::digest::digest(
        &ring::digest::SHA256,
        format!("{}{}{}", key.display(), key.protocol.lower(), ep.addr()).as_bytes(),
    );
    format!("KUBE-SEP-{}", base32_16(d.as_ref()))
}

/// A comment argument, quoted when it has spaces (as upstream writes them).
fn comment(text: &str) -> String {
    if text.contains(' ') {
        format!("-m comment --comment \"{text}\"")
    } else {
        format!("-m comment --comment {text}")
    }
}

/// Upstream's probability string (`%0.10f` of 1/n).
fn probability(n: usize) -> String {
    format!("{:.10}", 1.0 / n as f64)
}

fn proto_match(p: Protocol) -> String {
    format!("-m {0} -p {0}", p.lower())
}

/// Render everything from the API objects (the pure entry point): the fixed chains, every
/// service port's [`render_port`] fragment in key order, then the last rule of
/// `KUBE-SERVICES` ([`tail`]).
pub fn render(
    services: &[Arc<Service>],
    slices: &[Arc<EndpointSlice>],
    config: &RenderConfig,
) -> Rendered {
    let plan = plan::plan(services, slices, config);
    let config = &RenderConfig {
        large_cluster: is_large_cluster(&plan.ports),
        ..config.clone()
    };
    let mut rules = fixed(config);
    for p in &plan.ports {
        rules.merge(&render_port(p, config));
    }
    order_by_target(&mut rules);
    rules.merge(&tail());
    Rendered {
        rules,
        udp: plan::udp_state(&plan.ports),
        service_ports: plan.ports.len(),
        warnings: plan.warnings,
    }
}

/// The fixed chains, always present (so jumps from the built-in chains always have a
/// target), with the rules that do not depend on services.
pub fn fixed(config: &RenderConfig) -> Ruleset {
    let mark = 1u32 << config.masquerade_bit;
    let mut rs = Ruleset::default();
    for c in FILTER_FIXED {
        rs.filter(c);
    }
    for c in NAT_FIXED {
        rs.nat(c);
    }
    rs.filter(KUBE_FORWARD).extend([
        format!(
            "{} -m mark --mark {mark:#x}/{mark:#x} -j ACCEPT",
            comment("kubernetes forwarding rules")
        ),
        format!(
            "{} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
            comment("kubernetes forwarding conntrack rule")
        ),
    ]);
    rs.nat(KUBE_POSTROUTING).extend([
        format!("-m mark ! --mark {mark:#x}/{mark:#x} -j RETURN"),
        format!("-j MARK --xor-mark {mark:#x}"),
        format!(
            "{} -j MASQUERADE --random-fully",
            comment("kubernetes service traffic requiring SNAT")
        ),
    ]);
    rs.nat(KUBE_MARK_MASQ)
        .push(format!("-j MARK --or-mark {mark:#x}"));
    rs
}

/// Order the rules of nat `KUBE-SERVICES` and `KUBE-NODEPORTS` (before [`tail`] is added) by
/// the chain they jump to, descending (stable, so a port's rules keep their order).
///
/// Each rule there matches one service port's own destination, so their order among ports
/// carries no meaning (upstream writes them in Go map order), but it decides what
/// `iptables-restore` costs with the nf_tables backend: iptables 1.8.9 keeps every chain and
/// jump-target name of a restore in a sorted linked list and walks it from the start for each
/// command, so rewriting `KUBE-SERVICES` with 12,000 jumps in service-name order (targets in
/// hash order) walks ~57 million nodes (3.0 s at 10,000 services), and in descending target
/// order each new name goes near the front (4 million nodes, 0.9 s).
pub fn order_by_target(rs: &mut Ruleset) {
    fn target(rule: &str) -> &str {
        rule.rsplit_once(" -j ")
            .map(|(_, t)| t.split_whitespace().next().unwrap_or_default())
            .unwrap_or_default()
    }
    for chain in [KUBE_SERVICES, KUBE_NODEPORTS] {
        if let Some(rules) = rs.nat.chains.get_mut(chain) {
            rules.sort_by(|a, b| target(b).cmp(target(a)));
        }
    }
}

/// What follows every service port's rules: local destinations go on to the node ports
/// (never loopback: that needs route_localnet, which this proxy does not turn on).
pub fn tail() -> Ruleset {
    let mut rs = Ruleset::default();
    rs.nat(KUBE_SERVICES).push(format!(
        "{} -m addrtype --dst-type LOCAL ! -d 127.0.0.0/8 -j {KUBE_NODEPORTS}",
        comment("kubernetes service nodeports; NOTE: this must be the last rule in this chain")
    ));
    rs
}

/// One service port's part of the ruleset: its own chains (`KUBE-SVC/SVL/EXT/SEP-*`, written
/// by no other port) and its rules in the fixed chains (`KUBE-SERVICES`, `KUBE-NODEPORTS`,
/// `KUBE-EXTERNAL-SERVICES`), which [`Ruleset::merge`] appends in port order.
pub fn render_port(p: &PortPlan, config: &RenderConfig) -> Ruleset {
    let mut rs = Ruleset::default();
    write_port(&mut rs, p, config);
    rs
}

fn write_port(rs: &mut Ruleset, p: &PortPlan, config: &RenderConfig) {
    let sp = &p.sp;
    let name = sp.key.display();
    let proto = sp.key.protocol;
    let pm = proto_match(proto);
    let d = p.decisions();
    let cluster_chain = svc_chain(&sp.key);
    let local_chain = svl_chain(&sp.key);
    let external_chain = ext_chain(&sp.key);
    let internal_chain = if d.internal_local {
        &local_chain
    } else {
        &cluster_chain
    };
    let external_policy_chain = if d.external_local {
        &local_chain
    } else {
        &cluster_chain
    };
    let (has_endpoints, has_internal, has_external) =
        (d.has_endpoints, d.has_internal, d.has_external);
    let (filter_target, filter_comment) = if has_endpoints {
        ("DROP", format!("{name} has no local endpoints"))
    } else {
        ("REJECT", format!("{name} has no endpoints"))
    };

    // Cluster IP.
    let dst = format!("{pm} -d {} --dport {}", sp.cluster_ip, sp.port);
    if has_internal {
        rs.nat(KUBE_SERVICES).push(format!(
            "{} {dst} -j {internal_chain}",
            comment(&format!("{name} cluster IP"))
        ));
    } else {
        rs.filter(KUBE_SERVICES).push(format!(
            "{} {dst} -j {filter_target}",
            comment(&filter_comment)
        ));
    }
    // External IPs.
    for ip in &sp.external_ips {
        let dst = format!("{pm} -d {ip} --dport {}", sp.port);
        if has_endpoints {
            rs.nat(KUBE_SERVICES).push(format!(
                "{} {dst} -j {external_chain}",
                comment(&format!("{name} external IP"))
            ));
        }
        if !has_external {
            rs.filter(KUBE_EXTERNAL_SERVICES).push(format!(
                "{} {dst} -j {filter_target}",
                comment(&filter_comment)
            ));
        }
    }
    // Load-balancer IPs.
    for ip in &sp.load_balancer_ips {
        let dst = format!("{pm} -d {ip} --dport {}", sp.port);
        if has_endpoints {
            rs.nat(KUBE_SERVICES).push(format!(
                "{} {dst} -j {external_chain}",
                comment(&format!("{name} loadbalancer IP"))
            ));
        }
        if !has_external {
            rs.filter(KUBE_EXTERNAL_SERVICES).push(format!(
                "{} {dst} -j {filter_target}",
                comment(&filter_comment)
            ));
        }
    }
    // Node port.
    if sp.node_port != 0 {
        if has_endpoints {
            rs.nat(KUBE_NODEPORTS).push(format!(
                "{} {pm} --dport {} -j {external_chain}",
                comment(&name),
                sp.node_port
            ));
        }
        if !has_external {
            rs.filter(KUBE_EXTERNAL_SERVICES).push(format!(
                "{} -m addrtype --dst-type LOCAL {pm} --dport {} -j {filter_target}",
                comment(&filter_comment),
                sp.node_port
            ));
        }
    }

    // Internal traffic: masquerade what comes from outside the pod network.
    if has_internal {
        let m = comment(&format!("{name} cluster IP"));
        if config.masquerade_all {
            rs.nat(internal_chain)
                .push(format!("{m} {dst} -j {KUBE_MARK_MASQ}"));
        } else if let Some(cidr) = config.cluster_cidr {
            rs.nat(internal_chain)
                .push(format!("{m} {dst} ! -s {cidr} -j {KUBE_MARK_MASQ}"));
        }
    }

    // External traffic.
    if d.uses_external_chain {
        let ext = rs.nat(&external_chain);
        if !sp.external_policy_local() {
            ext.push(format!(
                "{} -j {KUBE_MARK_MASQ}",
                comment(&format!(
                    "masquerade traffic for {name} external destinations"
                ))
            ));
        } else {
            if let Some(cidr) = config.cluster_cidr {
                ext.push(format!(
                    "{} -s {cidr} -j {cluster_chain}",
                    comment(&format!("pod traffic for {name} external destinations"))
                ));
            }
            ext.push(format!(
                "{} -m addrtype --src-type LOCAL -j {KUBE_MARK_MASQ}",
                comment(&format!(
                    "masquerade LOCAL traffic for {name} external destinations"
                ))
            ));
            ext.push(format!(
                "{} -m addrtype --src-type LOCAL -j {cluster_chain}",
                comment(&format!(
                    "route LOCAL traffic for {name} external destinations"
                ))
            ));
        }
        if has_external {
            ext.push(format!("-j {external_policy_chain}"));
        }
    }

    if d.uses_cluster_chain {
        service_to_endpoints(rs, sp, &name, &cluster_chain, &d.cluster_eps, config);
    }
    if d.uses_local_chain {
        service_to_endpoints(rs, sp, &name, &local_chain, &d.local_eps, config);
    }

    // Endpoint chains.
    for ep in d.all_eps {
        let chain = sep_chain(&sp.key, ep);
        let c = debug_comment(config, &name);
        let sep = rs.nat(&chain);
        sep.push(format!("{c}-s {} -j {KUBE_MARK_MASQ}", ep.ip));
        let affinity = if sp.affinity_timeout.is_some() {
            format!("-m recent --name {chain} --set ")
        } else {
            String::new()
        };
        sep.push(format!(
            "{c}{affinity}{pm} -j DNAT --to-destination {}",
            ep.addr()
        ));
    }
}

/// A comment and a space, or nothing in [`RenderConfig::large_cluster`] mode.
fn debug_comment(config: &RenderConfig, text: &str) -> String {
    if config.large_cluster {
        String::new()
    } else {
        format!("{} ", comment(text))
    }
}

/// Upstream `writeServiceToEndpointRules`: affinity checks first, then the random cascade
/// (1/n, 1/(n-1), …, the last unconditional).
fn service_to_endpoints(
    rs: &mut Ruleset,
    sp: &ServicePort,
    name: &str,
    chain: &str,
    eps: &[&Endpoint],
    config: &RenderConfig,
) {
    let rules = rs.nat(chain);
    if let Some(timeout) = sp.affinity_timeout {
        for ep in eps {
            let sep = sep_chain(&sp.key, ep);
            rules.push(format!(
                "{}-m recent --name {sep} --rcheck --seconds {timeout} --reap -j {sep}",
                debug_comment(config, &format!("{name} -> {}", ep.addr()))
            ));
        }
    }
    let n = eps.len();
    for (i, ep) in eps.iter().enumerate() {
        let sep = sep_chain(&sp.key, ep);
        let c = debug_comment(config, &format!("{name} -> {}", ep.addr()));
        if i + 1 < n {
            rules.push(format!(
                "{c}-m statistic --mode random --probability {} -j {sep}",
                probability(n - i)
            ));
        } else {
            rules.push(format!("{c}-j {sep}"));
        }
    }
}

/// Whether `chain` is one of the per-service-port chains (named after a hash), not a fixed one.
pub(crate) fn is_dynamic(chain: &str) -> bool {
    DYNAMIC_PREFIXES.iter().any(|p| chain.starts_with(p))
}

/// Every `(table, chain)` that `save` (`iptables-save` output, or `nft list chains` as save
/// text) declares.
fn declared_chains(save: &str) -> impl Iterator<Item = (&str, &str)> {
    let mut table = "";
    save.lines().filter_map(move |line| {
        if let Some(t) = line.strip_prefix('*') {
            table = t.trim();
            None
        } else {
            let chain = line.strip_prefix(':')?.split_whitespace().next()?;
            Some((table, chain))
        }
    })
}

/// Chains found in the kernel (from `iptables-save`) that the proxy owns: `(table, chain)`.
pub fn owned_chains_in_save(save: &str) -> Vec<(String, String)> {
    declared_chains(save)
        .filter(|(_, chain)| is_dynamic(chain))
        .map(|(table, chain)| (table.to_string(), chain.to_string()))
        .collect()
}

/// Whether `save` (`iptables-save` output, or `nft list chains` as save text) declares `chain`
/// in `table`.
pub fn save_has_chain(save: &str, table: &str, chain: &str) -> bool {
    declared_chains(save).any(|declared| declared == (table, chain))
}

fn write_table(
    out: &mut String,
    name: &str,
    desired: &Table,
    applied: Option<&Table>,
    extra_existing: &[&str],
) {
    let mut body_decl = String::new();
    let mut body_rules = String::new();
    let mut changed = false;
    for name in desired.chain_names() {
        let rules = &desired.chains[name];
        if applied.and_then(|a| a.chains.get(name)) == Some(rules) {
            continue;
        }
        changed = true;
        let _ = writeln!(body_decl, ":{name} - [0:0]");
        for r in rules {
            let _ = writeln!(body_rules, "-A {name} {r}");
        }
    }
    // Chains to delete: applied before (or found in the kernel) and not wanted now.
    let mut stale: BTreeSet<&str> = BTreeSet::new();
    if let Some(a) = applied {
        stale.extend(
            a.chain_names()
                .filter(|c| desired.rules(c).is_none() && is_dynamic(c)),
        );
    }
    stale.extend(
        extra_existing
            .iter()
            .copied()
            .filter(|c| desired.rules(c).is_none() && is_dynamic(c)),
    );
    let mut body_delete = String::new();
    for c in &stale {
        changed = true;
        let _ = writeln!(body_decl, ":{c} - [0:0]");
        let _ = writeln!(body_delete, "-X {c}");
    }
    if changed {
        let _ = writeln!(out, "*{name}");
        out.push_str(&body_decl);
        out.push_str(&body_rules);
        out.push_str(&body_delete);
        out.push_str("COMMIT\n");
    }
}

/// The `iptables-restore --noflush` input that turns `applied` (what the last successful
/// restore wrote; `None` for a full rewrite) into `desired`: every chain that is new or
/// changed is declared (which flushes it) and rewritten, unchanged chains are left alone, and
/// chains of ours that are no longer wanted (also those in `existing`, found in the kernel)
/// are flushed and deleted. Empty when nothing changed.
pub fn restore_text(
    desired: &Ruleset,
    applied: Option<&Ruleset>,
    existing: &[(String, String)],
) -> String {
    let mut out = String::new();
    let ex = |t: &str| -> Vec<&str> {
        existing
            .iter()
            .filter(|(tab, _)| tab == t)
            .map(|(_, c)| c.as_str())
            .collect()
    };
    write_table(
        &mut out,
        "filter",
        &desired.filter,
        applied.map(|a| &a.filter),
        &ex("filter"),
    );
    write_table(
        &mut out,
        "nat",
        &desired.nat,
        applied.map(|a| &a.nat),
        &ex("nat"),
    );
    out
}

/// One part of a full sync split over several restores (`sync::FULL_SYNC_PART_PORTS`): the
/// own chains of some service ports, each declared right before its rules, endpoint chains
/// first, then `KUBE-SVL-`, `KUBE-SVC-` and `KUBE-EXT-` chains (so every jump target is
/// declared before the jump), each kind by name descending; with `lead`, its
/// `KUBE-MARK-MASQ` first (the fixed chain the parts jump to). iptables 1.8.9 (nf_tables)
/// inserts each chain and jump-target name of a restore into a sorted linked list walked from
/// the start, so names arriving in descending order go in near the front.
pub fn part_text(frags: &[&Ruleset], lead: Option<&Ruleset>) -> String {
    const KINDS: [&str; 4] = ["KUBE-SEP-", "KUBE-SVL-", "KUBE-SVC-", "KUBE-EXT-"];
    let kind = |c: &str| {
        KINDS
            .iter()
            .position(|k| c.starts_with(k))
            .unwrap_or(KINDS.len())
    };
    let mut chains: Vec<(&str, &[String])> = frags
        .iter()
        .flat_map(|f| {
            f.nat
                .chains
                .iter()
                .filter(|(c, _)| !f.nat.fixed.contains(&c.as_str()))
                .map(|(c, r)| (c.as_str(), r.as_slice()))
        })
        .collect();
    chains.sort_by(|a, b| kind(a.0).cmp(&kind(b.0)).then(b.0.cmp(a.0)));
    let lead = lead
        .and_then(|l| l.nat.rules(KUBE_MARK_MASQ))
        .map(|r| (KUBE_MARK_MASQ, r));
    let mut out = String::from("*nat\n");
    for (c, rules) in lead.into_iter().chain(chains) {
        let _ = writeln!(out, ":{c} - [0:0]");
        for r in rules {
            let _ = writeln!(out, "-A {c} {r}");
        }
    }
    out.push_str("COMMIT\n");
    out
}

/// A rule in a built-in chain that sends traffic to one of ours (ensured with `iptables -C`
/// / `-I`, never through restore, so other programs' rules there are untouched).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JumpRule {
    pub table: &'static str,
    pub chain: &'static str,
    /// The rule's arguments after `-A/-C/-I/-D <chain>`.
    pub args: Vec<String>,
}

impl JumpRule {
    /// The rule as `iptables -S` prints it (arguments with spaces quoted).
    pub fn save_line(&self) -> String {
        let mut line = format!("-A {}", self.chain);
        for a in &self.args {
            if a.contains(' ') {
                let _ = write!(line, " \"{a}\"");
            } else {
                let _ = write!(line, " {a}");
            }
        }
        line
    }
}

fn jump(
    table: &'static str,
    chain: &'static str,
    extra: &[&str],
    text: &str,
    target: &str,
) -> JumpRule {
    let mut args: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
    args.extend(["-m", "comment", "--comment", text, "-j", target].map(String::from));
    JumpRule { table, chain, args }
}

/// Upstream's jumps from the built-in chains.
pub fn jump_rules() -> Vec<JumpRule> {
    let new = &["-m", "conntrack", "--ctstate", "NEW"][..];
    vec![
        jump(
            "filter",
            "INPUT",
            new,
            "kubernetes externally-visible service portals",
            KUBE_EXTERNAL_SERVICES,
        ),
        jump(
            "filter",
            "FORWARD",
            new,
            "kubernetes externally-visible service portals",
            KUBE_EXTERNAL_SERVICES,
        ),
        jump(
            "filter",
            "FORWARD",
            new,
            "kubernetes service portals",
            KUBE_SERVICES,
        ),
        jump(
            "filter",
            "OUTPUT",
            new,
            "kubernetes service portals",
            KUBE_SERVICES,
        ),
        jump(
            "filter",
            "FORWARD",
            &[],
            "kubernetes forwarding rules",
            KUBE_FORWARD,
        ),
        jump(
            "nat",
            "OUTPUT",
            &[],
            "kubernetes service portals",
            KUBE_SERVICES,
        ),
        jump(
            "nat",
            "PREROUTING",
            &[],
            "kubernetes service portals",
            KUBE_SERVICES,
        ),
        jump(
            "nat",
            "POSTROUTING",
            &[],
            "kubernetes postrouting rules",
            KUBE_POSTROUTING,
        ),
    ]
}

/// The restore text of `--cleanup`: from an `iptables-save` dump, delete every rule of a
/// non-KUBE chain that jumps to a `KUBE-*` chain, then flush and delete every `KUBE-*` chain.
/// Empty when there is nothing of ours.
pub fn cleanup_text(save: &str) -> String {
    let mut out = String::new();
    let mut table: Option<String> = None;
    let mut decl = String::new();
    let mut dels = String::new();
    let mut xs = String::new();
    let flush = |out: &mut String,
                 t: &Option<String>,
                 decl: &mut String,
                 dels: &mut String,
                 xs: &mut String| {
        if let Some(t) = t {
            if !decl.is_empty() || !dels.is_empty() {
                let _ = writeln!(out, "*{t}");
                out.push_str(decl);
                out.push_str(dels);
                out.push_str(xs);
                out.push_str("COMMIT\n");
            }
        }
        decl.clear();
        dels.clear();
        xs.clear();
    };
    for line in save.lines() {
        if let Some(t) = line.strip_prefix('*') {
            flush(&mut out, &table, &mut decl, &mut dels, &mut xs);
            table = Some(t.trim().to_string());
        } else if let Some(rest) = line.strip_prefix(':') {
            let chain = rest.split_whitespace().next().unwrap_or_default();
            if chain.starts_with("KUBE-") {
                let _ = writeln!(decl, ":{chain} - [0:0]");
                let _ = writeln!(xs, "-X {chain}");
            }
        } else if let Some(rest) = line.strip_prefix("-A ") {
            let mut parts = rest.splitn(2, ' ');
            let chain = parts.next().unwrap_or_default();
            let spec = parts.next().unwrap_or_default();
            let jumps_to_ours = spec
                .split_whitespace()
                .collect::<Vec<_>>()
                .windows(2)
                .any(|w| (w[0] == "-j" || w[0] == "-g") && w[1].starts_with("KUBE-"));
            if !chain.starts_with("KUBE-") && jumps_to_ours {
                let _ = writeln!(dels, "-D {chain} {spec}");
            }
        }
    }
    flush(&mut out, &table, &mut decl, &mut dels, &mut xs);
    out
}

#[cfg(test)]
pub(crate) mod tests;
