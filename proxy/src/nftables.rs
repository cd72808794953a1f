//! The nftables ruleset (`--proxy-mode=nftables`, upstream KEP-3866): a pure function from
//! Services, EndpointSlices and this node to one `table ip kube-proxy`, and the `nft -f`
//! script that moves the kernel from what was applied last to that, in one atomic
//! transaction.
//!
//! Unlike the iptables mode, the per-packet lookup does not grow with the number of services:
//! `services` (from the nat hooks) does one verdict-map lookup in `service-ips`
//! (`ip . proto . port → goto <chain>`) and, for local destinations, one in
//! `service-nodeports`. Each service port has `service-<base>` (Cluster policy endpoints,
//! random balancing with `numgen random mod N`, ClientIP affinity via per-endpoint
//! `affinity-` sets with timeouts), `local-<base>` (Local policy endpoints) and
//! `external-<base>` (external destinations: masquerade, or the Local-policy
//! short-circuits). Unlike upstream there is no chain per endpoint: the balancing rules DNAT
//! themselves, because `nft -f` lists every chain of the table before it applies anything
//! (see [`service_to_endpoints`]). Packets to a cluster IP from outside the pod network
//! (`cluster-ips` set) and hairpin packets (`hairpin-endpoints` set) are marked (0x4000) by
//! one rule each rather than one per service and per endpoint (rules are what a load costs),
//! and marked packets are masqueraded in `masquerading`. Service ports without endpoints are
//! rejected through the `no-endpoint-services` / `no-endpoint-external` /
//! `no-endpoint-nodeports` verdict maps,
//! checked from filter hooks that run before DNAT (priority -110), mirroring the iptables
//! mode's filter `KUBE-SERVICES` (forward, output) and `KUBE-EXTERNAL-SERVICES` (input,
//! forward).
//!
//! Node ports answer on every local address (`fib daddr type local`, as the iptables mode's
//! `addrtype LOCAL`), not only on a `nodeport-ips` set as recent upstream defaults.
//!
//! Incremental updates ([`script`] with the last applied [`Ruleset`]) add, flush and rewrite
//! only the chains that changed, add/delete only the map elements that changed, and flush then
//! delete chains and sets no longer wanted; an unchanged ruleset gives an empty script.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

use crate::model::{Endpoint, PortKey, ServicePort, Warning};
use crate::plan::{self, PortPlan};
use crate::rules::{port_proto_hash, RenderConfig, UdpDestination};

/// The table (family `ip`).
pub const TABLE: &str = "kube-proxy";

pub const SERVICES: &str = "services";
pub const MARK_MASQ: &str = "mark-for-masquerade";
pub const MASQUERADING: &str = "masquerading";
pub const REJECT_CHAIN: &str = "reject-chain";
pub const SERVICE_ENDPOINTS_CHECK: &str = "service-endpoints-check";
pub const EXTERNAL_ENDPOINTS_CHECK: &str = "external-endpoints-check";
pub const NODEPORT_ENDPOINTS_CHECK: &str = "nodeport-endpoints-check";

pub const SERVICE_IPS: &str = "service-ips";
pub const SERVICE_NODEPORTS: &str = "service-nodeports";
pub const NO_ENDPOINT_SERVICES: &str = "no-endpoint-services";
pub const NO_ENDPOINT_EXTERNAL: &str = "no-endpoint-external";
pub const NO_ENDPOINT_NODEPORTS: &str = "no-endpoint-nodeports";
pub const CLUSTER_IPS: &str = "cluster-ips";
pub const HAIRPIN_ENDPOINTS: &str = "hairpin-endpoints";

/// Base chains: name and hook declaration.
const BASE_CHAINS: &[(&str, &str)] = &[
    (
        "filter-input",
        "type filter hook input priority -110 ; policy accept ;",
    ),
    (
        "filter-forward",
        "type filter hook forward priority -110 ; policy accept ;",
    ),
    (
        "filter-output",
        "type filter hook output priority -110 ; policy accept ;",
    ),
    (
        "nat-prerouting",
        "type nat hook prerouting priority -100 ; policy accept ;",
    ),
    (
        "nat-output",
        "type nat hook output priority -100 ; policy accept ;",
    ),
    (
        "nat-postrouting",
        "type nat hook postrouting priority 100 ; policy accept ;",
    ),
];

/// Regular chains that always exist.
const FIXED_CHAINS: &[&str] = &[
    SERVICES,
    MARK_MASQ,
    MASQUERADING,
    REJECT_CHAIN,
    SERVICE_ENDPOINTS_CHECK,
    EXTERNAL_ENDPOINTS_CHECK,
    NODEPORT_ENDPOINTS_CHECK,
];

/// The verdict maps and element sets: name, kind (`map`/`set`) and type. Set elements are
/// kept as map elements with an empty value.
const MAPS: &[(&str, &str, &str)] = &[
    (
        SERVICE_IPS,
        "map",
        "type ipv4_addr . inet_proto . inet_service : verdict ;",
    ),
    (
        SERVICE_NODEPORTS,
        "map",
        "type inet_proto . inet_service : verdict ;",
    ),
    (
        NO_ENDPOINT_SERVICES,
        "map",
        "type ipv4_addr . inet_proto . inet_service : verdict ;",
    ),
    (
        NO_ENDPOINT_EXTERNAL,
        "map",
        "type ipv4_addr . inet_proto . inet_service : verdict ;",
    ),
    (
        NO_ENDPOINT_NODEPORTS,
        "map",
        "type inet_proto . inet_service : verdict ;",
    ),
    // Every cluster IP: traffic to them from outside the pod network is masqueraded.
    (CLUSTER_IPS, "set", "type ipv4_addr ;"),
    // `ip . ip` for every endpoint: a pod reaching itself through a service (hairpin) is
    // masqueraded.
    (HAIRPIN_ENDPOINTS, "set", "type ipv4_addr . ipv4_addr ;"),
];

/// The affinity sets' declaration (each element carries its own timeout).
const AFFINITY_SET: &str = "type ipv4_addr ; flags dynamic,timeout ;";

/// Everything in the table: chains with their rules, map elements (key → verdict) and the
/// affinity sets.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ruleset {
    pub chains: BTreeMap<String, Vec<String>>,
    pub maps: BTreeMap<&'static str, BTreeMap<String, String>>,
    pub sets: BTreeSet<String>,
}

impl Ruleset {
    fn chain(&mut self, name: &str) -> &mut Vec<String> {
        if !self.chains.contains_key(name) {
            self.chains.insert(name.to_string(), Vec::new());
        }
        self.chains.get_mut(name).expect("just inserted")
    }

    fn element(&mut self, map: &'static str, key: String, verdict: String) {
        self.maps.entry(map).or_default().insert(key, verdict);
    }

    /// Add `other`'s chains (rules appended), elements and sets.
    pub fn merge(&mut self, other: &Ruleset) {
        for (c, rules) in &other.chains {
            self.chain(c).extend(rules.iter().cloned());
        }
        for (m, elems) in &other.maps {
            let to = self.maps.entry(m).or_default();
            for (k, v) in elems {
                to.insert(k.clone(), v.clone());
            }
        }
        self.sets.extend(other.sets.iter().cloned());
    }

    /// Number of rules in all chains.
    pub fn rule_count(&self) -> usize {
        self.chains.values().map(Vec::len).sum()
    }

    /// Number of map elements.
    pub fn element_count(&self) -> usize {
        self.maps.values().map(BTreeMap::len).sum()
    }
}

/// The output of one render.
#[derive(Clone, Debug, Default)]
pub struct Rendered {
    pub rules: Ruleset,
    pub warnings: Vec<Warning>,
    pub udp: BTreeMap<PortKey, (Vec<UdpDestination>, BTreeSet<std::net::Ipv4Addr>)>,
    pub service_ports: usize,
}

/// `<hash8>-<ns>/<name>/<proto>/<port name>`: unique and readable, as upstream's names.
pub fn chain_base(key: &PortKey) -> String {
    let h = port_proto_hash(&key.display(), key.protocol.lower());
    format!(
        "{}-{}/{}/{}/{}",
        &h[..8],
        key.namespace,
        key.name,
        key.protocol.lower(),
        key.port_name
    )
}

pub fn service_chain(key: &PortKey) -> String {
    format!("service-{}", chain_base(key))
}

pub fn local_chain(key: &PortKey) -> String {
    format!("local-{}", chain_base(key))
}

pub fn external_chain(key: &PortKey) -> String {
    format!("external-{}", chain_base(key))
}

fn endpoint_base(key: &PortKey, ep: &Endpoint) -> String {
    let h = port_proto_hash(
        &format!("{}{}", key.display(), ep.addr()),
        key.protocol.lower(),
    );
    format!(
        "{}-{}/{}/{}/{}__{}/{}",
        &h[..8],
        key.namespace,
        key.name,
        key.protocol.lower(),
        key.port_name,
        ep.ip,
        ep.port
    )
}

/// The ClientIP affinity set of one endpoint of one service port:
/// `affinity-<hash8>-<ns>/<name>/<proto>/<port name>__<ip>/<port>`.
pub fn affinity_set(key: &PortKey, ep: &Endpoint) -> String {
    format!("affinity-{}", endpoint_base(key, ep))
}

/// Render everything from the API objects (the pure entry point): the fixed chains, then every
/// service port's [`render_port`] fragment.
pub fn render(
    services: &[Arc<Service>],
    slices: &[Arc<EndpointSlice>],
    config: &RenderConfig,
) -> Rendered {
    let plan = plan::plan(services, slices, config);
    let mut rules = fixed(config);
    for p in &plan.ports {
        rules.merge(&render_port(p, config));
    }
    Rendered {
        rules,
        udp: plan::udp_state(&plan.ports),
        service_ports: plan.ports.len(),
        warnings: plan.warnings,
    }
}

/// What the table holds whatever the services: hooks, fixed chains, empty maps.
pub fn fixed(config: &RenderConfig) -> Ruleset {
    let mark = 1u32 << config.masquerade_bit;
    let mut rs = Ruleset::default();
    for (c, _) in BASE_CHAINS {
        rs.chain(c);
    }
    for c in FIXED_CHAINS {
        rs.chain(c);
    }
    for (m, _, _) in MAPS {
        rs.maps.insert(m, BTreeMap::new());
    }
    let new = "ct state new";
    rs.chain("filter-input").extend([
        format!("{new} jump {NODEPORT_ENDPOINTS_CHECK}"),
        format!("{new} jump {EXTERNAL_ENDPOINTS_CHECK}"),
    ]);
    rs.chain("filter-forward").extend([
        format!("{new} jump {SERVICE_ENDPOINTS_CHECK}"),
        format!("{new} jump {EXTERNAL_ENDPOINTS_CHECK}"),
    ]);
    rs.chain("filter-output")
        .push(format!("{new} jump {SERVICE_ENDPOINTS_CHECK}"));
    rs.chain("nat-prerouting").push(format!("jump {SERVICES}"));
    rs.chain("nat-output").push(format!("jump {SERVICES}"));
    // Rules cost most of a load (about 30 µs each in the kernel and nft), so the per-service
    // and per-endpoint masquerade rules of the iptables layout are two set lookups here.
    rs.chain("nat-postrouting").extend([
        format!("ct status dnat ip saddr . ip daddr @{HAIRPIN_ENDPOINTS} jump {MARK_MASQ}"),
        format!("jump {MASQUERADING}"),
    ]);
    rs.chain(MARK_MASQ)
        .push(format!("mark set mark or {mark:#x}"));
    rs.chain(MASQUERADING).extend([
        format!("mark and {mark:#x} == 0 return"),
        format!("mark set mark xor {mark:#x}"),
        "masquerade fully-random".to_string(),
    ]);
    rs.chain(REJECT_CHAIN).push("reject".into());
    rs.chain(SERVICE_ENDPOINTS_CHECK).push(format!(
        "ip daddr . meta l4proto . th dport vmap @{NO_ENDPOINT_SERVICES}"
    ));
    rs.chain(EXTERNAL_ENDPOINTS_CHECK).push(format!(
        "ip daddr . meta l4proto . th dport vmap @{NO_ENDPOINT_EXTERNAL}"
    ));
    rs.chain(NODEPORT_ENDPOINTS_CHECK).push(format!(
        "fib daddr type local meta l4proto . th dport vmap @{NO_ENDPOINT_NODEPORTS}"
    ));
    if config.masquerade_all {
        rs.chain(SERVICES)
            .push(format!("ip daddr @{CLUSTER_IPS} jump {MARK_MASQ}"));
    } else if let Some(cidr) = config.cluster_cidr {
        rs.chain(SERVICES).push(format!(
            "ip saddr != {cidr} ip daddr @{CLUSTER_IPS} jump {MARK_MASQ}"
        ));
    }
    rs.chain(SERVICES).extend([
        format!("ip daddr . meta l4proto . th dport vmap @{SERVICE_IPS}"),
        // Never loopback: that needs route_localnet, which this proxy does not turn on.
        format!(
            "fib daddr type local ip daddr != 127.0.0.0/8 meta l4proto . th dport vmap @{SERVICE_NODEPORTS}"
        ),
    ]);
    rs
}

/// One service port's part of the table: its own chains (no other port writes to them), its
/// affinity sets, and its map and set elements (`cluster-ips` and `hairpin-endpoints` elements
/// may be shared with other ports).
pub fn render_port(p: &PortPlan, config: &RenderConfig) -> Ruleset {
    let mut rs = Ruleset::default();
    write_port(&mut rs, p, config);
    rs
}

fn write_port(rs: &mut Ruleset, p: &PortPlan, config: &RenderConfig) {
    let sp = &p.sp;
    let proto = sp.key.protocol.lower();
    let d = p.decisions();
    let cluster_chain = service_chain(&sp.key);
    let local = local_chain(&sp.key);
    let external = external_chain(&sp.key);
    let internal_chain = if d.internal_local {
        &local
    } else {
        &cluster_chain
    };
    let external_policy_chain = if d.external_local {
        &local
    } else {
        &cluster_chain
    };
    let (has_endpoints, has_internal, has_external) =
        (d.has_endpoints, d.has_internal, d.has_external);
    let filter_verdict = if has_endpoints {
        "drop".to_string()
    } else {
        format!("goto {REJECT_CHAIN}")
    };
    let ip_key = |ip: &std::net::Ipv4Addr| format!("{ip} . {proto} . {}", sp.port);

    // Cluster IP.
    if has_internal {
        rs.element(
            SERVICE_IPS,
            ip_key(&sp.cluster_ip),
            format!("goto {internal_chain}"),
        );
    } else {
        rs.element(
            NO_ENDPOINT_SERVICES,
            ip_key(&sp.cluster_ip),
            filter_verdict.clone(),
        );
    }
    // External and load-balancer IPs.
    for ip in sp.external_ips.iter().chain(sp.load_balancer_ips.iter()) {
        if has_endpoints {
            rs.element(SERVICE_IPS, ip_key(ip), format!("goto {external}"));
        }
        if !has_external {
            rs.element(NO_ENDPOINT_EXTERNAL, ip_key(ip), filter_verdict.clone());
        }
    }
    // Node port.
    if sp.node_port != 0 {
        let key = format!("{proto} . {}", sp.node_port);
        if has_endpoints {
            rs.element(SERVICE_NODEPORTS, key.clone(), format!("goto {external}"));
        }
        if !has_external {
            rs.element(NO_ENDPOINT_NODEPORTS, key, filter_verdict.clone());
        }
    }

    // Internal traffic from outside the pod network is masqueraded (the rule in `services`).
    if has_internal {
        rs.element(CLUSTER_IPS, sp.cluster_ip.to_string(), String::new());
    }

    // External traffic.
    if d.uses_external_chain {
        let ext = rs.chain(&external);
        if !sp.external_policy_local() {
            ext.push(format!("jump {MARK_MASQ}"));
        } else {
            if let Some(cidr) = config.cluster_cidr {
                // Pods reaching an external address go to any endpoint, as they would
                // through the cluster IP.
                ext.push(format!("ip saddr {cidr} goto {cluster_chain}"));
            }
            ext.push(format!("fib saddr type local jump {MARK_MASQ}"));
            ext.push(format!("fib saddr type local goto {cluster_chain}"));
        }
        if has_external {
            ext.push(format!("goto {external_policy_chain}"));
        }
    }

    if d.uses_cluster_chain {
        service_to_endpoints(rs, sp, &cluster_chain, &d.cluster_eps);
    }
    if d.uses_local_chain {
        service_to_endpoints(rs, sp, &local, &d.local_eps);
    }

    // Hairpin masquerade: the rule in `nat-postrouting`; the affinity sets.
    for ep in d.all_eps {
        rs.element(
            HAIRPIN_ENDPOINTS,
            format!("{0} . {0}", ep.ip),
            String::new(),
        );
        if sp.affinity_timeout.is_some() {
            rs.sets.insert(affinity_set(&sp.key, ep));
        }
    }
}

/// What sending to one endpoint takes: remember the client (ClientIP affinity), DNAT.
fn to_endpoint(sp: &ServicePort, ep: &Endpoint) -> String {
    let affinity = match sp.affinity_timeout {
        Some(timeout) => format!(
            "update @{} {{ ip saddr timeout {timeout}s }} ",
            affinity_set(&sp.key, ep)
        ),
        None => String::new(),
    };
    format!(
        "{affinity}meta l4proto {} dnat to {}",
        sp.key.protocol.lower(),
        ep.addr()
    )
}

/// Affinity lookups first, then a random pick over the endpoints, each rule ending in the
/// endpoint's DNAT itself. (Upstream jumps to a chain per endpoint; but `nft -f` lists every
/// chain of the table before applying even one element, and the kernel lists them in time
/// quadratic in their number, so at 10,000 services those 20,000 chains made up most of what
/// applying one endpoint change cost.)
fn service_to_endpoints(rs: &mut Ruleset, sp: &ServicePort, chain: &str, eps: &[&Endpoint]) {
    let mut rules = Vec::new();
    if sp.affinity_timeout.is_some() {
        for ep in eps {
            rules.push(format!(
                "ip saddr @{} {}",
                affinity_set(&sp.key, ep),
                to_endpoint(sp, ep)
            ));
        }
    }
    // A cascade like the iptables mode's statistic rules: the i-th of n endpoints is taken
    // with probability 1/(n-i), the last one unconditionally, which is uniform overall.
    // (Not `numgen random mod n vmap { … }`: every such anonymous map is a set in the table,
    // and the kernel's naming of anonymous sets scans all of them, so a full load of 10,000
    // services took minutes.)
    let n = eps.len();
    for (i, ep) in eps.iter().enumerate() {
        if i + 1 < n {
            rules.push(format!(
                "numgen random mod {} 0 {}",
                n - i,
                to_endpoint(sp, ep)
            ));
        } else {
            rules.push(to_endpoint(sp, ep));
        }
    }
    rs.chain(chain).extend(rules);
}

/// The `nft -f` script that makes the kernel's table `desired`, as one transaction.
///
/// - `applied: None` (the kernel's state is unknown: start, after a failure): the table is
///   created, deleted and created again within the transaction, so leftovers of any earlier
///   run go and working services see no gap.
/// - `applied: Some(_)`, `full`: every chain is flushed and rewritten and every map refilled;
///   chains and sets of `applied` no longer wanted are deleted.
/// - `applied: Some(_)`, not `full`: only new or changed chains are (created,) flushed and
///   rewritten, only changed map elements deleted and added, stale chains and sets flushed
///   and deleted. Empty when nothing changed.
pub fn script(desired: &Ruleset, applied: Option<&Ruleset>, full: bool) -> String {
    let t = format!("ip {TABLE}");
    let mut out = String::new();
    let rewrite_all = full || applied.is_none();
    if rewrite_all {
        let _ = writeln!(
            out,
            "add table {t} {{ comment \"rules for kube-proxy\" ; }}"
        );
        if applied.is_none() {
            let _ = writeln!(out, "delete table {t}");
            let _ = writeln!(
                out,
                "add table {t} {{ comment \"rules for kube-proxy\" ; }}"
            );
        }
        for (m, kind, decl) in MAPS {
            let _ = writeln!(out, "add {kind} {t} {m} {{ {decl} }}");
        }
        for (c, decl) in BASE_CHAINS {
            let _ = writeln!(out, "add chain {t} {c} {{ {decl} }}");
        }
    }
    let empty = Ruleset::default();
    let before = applied.unwrap_or(&empty);

    // Sets first (rules refer to them).
    for s in desired.sets.iter() {
        if rewrite_all || !before.sets.contains(s) {
            let _ = writeln!(out, "add set {t} {s} {{ {AFFINITY_SET} }}");
        }
    }
    // Chains: declare every new one before any rule refers to it, then rewrite.
    let changed: Vec<(&String, &Vec<String>)> = desired
        .chains
        .iter()
        .filter(|(c, rules)| rewrite_all || before.chains.get(*c) != Some(*rules))
        .collect();
    let is_base = |c: &str| BASE_CHAINS.iter().any(|(b, _)| *b == c);
    for (c, _) in &changed {
        if !is_base(c) && (rewrite_all || !before.chains.contains_key(*c)) {
            let _ = writeln!(out, "add chain {t} {c}");
        }
    }
    for (c, rules) in &changed {
        if before.chains.contains_key(*c) {
            let _ = writeln!(out, "flush chain {t} {c}");
        }
        for r in *rules {
            let _ = writeln!(out, "add rule {t} {c} {r}");
        }
    }
    // Map elements.
    let elem = |k: &str, v: &str| {
        if v.is_empty() {
            k.to_string()
        } else {
            format!("{k} : {v}")
        }
    };
    for (m, kind, _) in MAPS {
        let want = desired.maps.get(m);
        let had = before.maps.get(m);
        if rewrite_all {
            if applied.is_some() {
                let _ = writeln!(out, "flush {kind} {t} {m}");
            }
            for (k, v) in want.into_iter().flatten() {
                let _ = writeln!(out, "add element {t} {m} {{ {} }}", elem(k, v));
            }
            continue;
        }
        for (k, v) in had.into_iter().flatten() {
            if want.and_then(|w| w.get(k)) != Some(v) {
                let _ = writeln!(out, "delete element {t} {m} {{ {k} }}");
            }
        }
        for (k, v) in want.into_iter().flatten() {
            if had.and_then(|h| h.get(k)) != Some(v) {
                let _ = writeln!(out, "add element {t} {m} {{ {} }}", elem(k, v));
            }
        }
    }
    // Stale chains: flush all first (they may refer to each other), then delete; sets last.
    let stale: Vec<&String> = before
        .chains
        .keys()
        .filter(|c| !desired.chains.contains_key(*c))
        .collect();
    for c in &stale {
        let _ = writeln!(out, "flush chain {t} {c}");
    }
    for c in &stale {
        let _ = writeln!(out, "delete chain {t} {c}");
    }
    for s in before.sets.difference(&desired.sets) {
        let _ = writeln!(out, "delete set {t} {s}");
    }
    out
}

/// The script of `--cleanup`: delete the table if it exists.
pub fn cleanup_script() -> String {
    format!("add table ip {TABLE}\ndelete table ip {TABLE}\n")
}

#[cfg(test)]
mod tests;
