//! One sync: plan the service ports from a snapshot of the caches, render the ports that
//! changed, apply what changed with one `iptables-restore` (or `nft -f`), make sure the
//! built-in chains jump to ours, drop UDP conntrack entries of endpoints that went away, and
//! keep the host-gw routes to other nodes' pod CIDRs.
//!
//! [`Proxier`] owns what was applied last: per service port its [`PortPlan`] and the rules
//! rendered from it. A sync renders again only the ports whose plan differs (rendering is a
//! pure function of the plan, so a kept fragment is what re-rendering would give) and applies
//! only their chains and elements (in the iptables mode plus the fixed chains such as
//! `KUBE-SERVICES` when a changed port's rules in them changed), so an unchanged snapshot
//! applies nothing and one endpoint change costs one port's rules. A full sync (start, every
//! `--full-sync-period`, after a failure) rewrites every chain and, when the kernel state is not
//! known (start, failure), first lists the chains (`nft list chains`, or `iptables-save`) to
//! delete chains of ours left from an earlier run, or recreates the nftables table. A failed partial apply is followed at once by
//! such a full sync. Decisions are pure functions ([`stale_flows`], [`desired_routes`],
//! [`route_changes`]); side effects go through the [`Dataplane`].

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;

use crate::dataplane::{Dataplane, DataplaneError, Flow, Routes};
use crate::model::{self, PortKey, Warning};
use crate::nftables;
use crate::plan::{self, PortPlan};
use crate::rules::{self, RenderConfig, Ruleset, UdpDestination};

/// What a sync reads.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub services: Vec<Arc<Service>>,
    pub slices: Vec<Arc<EndpointSlice>>,
    pub nodes: Vec<Arc<Node>>,
}

/// A failed sync (the next one is a full sync).
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("iptables-restore failed: {0}")]
    Restore(#[source] DataplaneError),
    #[error("reading iptables state failed: {0}")]
    Save(#[source] DataplaneError),
    #[error("ensuring jumps from built-in chains failed: {0}")]
    Jump(#[source] DataplaneError),
    #[error("nft -f failed: {0}")]
    Nft(#[source] DataplaneError),
}

/// What one successful sync did.
#[derive(Clone, Debug, Default)]
pub struct SyncReport {
    /// Whether iptables-restore ran (something changed, or a full sync).
    pub restored: bool,
    pub full: bool,
    /// Bytes given to iptables-restore.
    pub restore_bytes: usize,
    pub filter_rules: usize,
    pub nat_rules: usize,
    pub service_ports: usize,
    /// Warnings not reported before (to become events).
    pub new_warnings: Vec<Warning>,
    /// Conntrack deletions run.
    pub conntrack_deleted: usize,
    /// Route commands that failed (logged; retried at the next sync).
    pub route_errors: Vec<String>,
    /// Time spent building the service plan from the snapshot, rendering the ports that
    /// changed (and, in the iptables mode, the fixed chains), and applying (script, restore,
    /// conntrack, routes).
    pub plan_time: Duration,
    pub render_time: Duration,
    pub apply_time: Duration,
    /// Of which building the restore text / nft script, and in iptables-restore or nft itself.
    pub script_time: Duration,
    pub restore_time: Duration,
    /// Service ports rendered again (new or changed since the last successful sync).
    pub rerendered: usize,
    /// A partial sync failed and this full sync replaced it.
    pub fell_back: bool,
    /// The restore text had SCTP rules.
    pub sctp_in_restore: bool,
}

/// The UDP view of the last applied ruleset, for conntrack cleanup.
pub type UdpState = BTreeMap<PortKey, (Vec<UdpDestination>, BTreeSet<Ipv4Addr>)>;

/// Conntrack deletions needed going from `prev` to `next` (upstream's stale-service and
/// stale-endpoint handling): every destination of a port whose endpoint went away loses the
/// entries DNATed to that endpoint, and a port that just got its first endpoint (after having
/// none, when REJECT may have left entries) loses every entry to its destinations.
pub fn stale_flows(prev: Option<&UdpState>, next: &UdpState) -> BTreeSet<Flow> {
    let mut out = BTreeSet::new();
    let Some(prev) = prev else {
        return out;
    };
    let empty = BTreeSet::new();
    for (key, (dests, ips)) in prev {
        let now = next.get(key).map_or(&empty, |(_, ips)| ips);
        for ip in ips.difference(now) {
            for d in dests {
                out.insert(match d {
                    UdpDestination::Ip(dst, _) => Flow::IpToEndpoint {
                        orig_dst: *dst,
                        endpoint: *ip,
                    },
                    UdpDestination::NodePort(p) => Flow::NodePortToEndpoint {
                        port: *p,
                        endpoint: *ip,
                    },
                });
            }
        }
    }
    for (key, (dests, ips)) in next {
        let before = prev.get(key).map_or(&empty, |(_, ips)| ips);
        if !ips.is_empty() && before.is_empty() {
            for d in dests {
                out.insert(match d {
                    UdpDestination::Ip(dst, _) => Flow::AllToIp { orig_dst: *dst },
                    UdpDestination::NodePort(p) => Flow::AllToNodePort { port: *p },
                });
            }
        }
    }
    out
}

/// The InternalIPv4 addresses of a node.
pub fn node_internal_ips(node: &Node) -> Vec<Ipv4Addr> {
    node.status
        .as_ref()
        .and_then(|s| s.addresses.as_ref())
        .into_iter()
        .flatten()
        .filter(|a| a.type_ == "InternalIP")
        .filter_map(|a| a.address.parse().ok())
        .collect()
}

/// Host-gw routes: every other node's IPv4 pod CIDR via its first InternalIP.
pub fn desired_routes(nodes: &[Arc<Node>], node_name: &str) -> Routes {
    let mut out = Routes::new();
    let own: HashSet<Ipv4Addr> = nodes
        .iter()
        .filter(|n| n.metadata.name.as_deref() == Some(node_name))
        .flat_map(|n| node_internal_ips(n))
        .collect();
    for n in nodes {
        if n.metadata.name.as_deref() == Some(node_name) || n.metadata.deletion_timestamp.is_some()
        {
            continue;
        }
        let Some(spec) = n.spec.as_ref() else {
            continue;
        };
        let cidr = spec
            .pod_cidrs
            .iter()
            .flatten()
            .chain(spec.pod_cidr.iter())
            .find_map(|c| rules::Cidr::parse(c));
        let Some(cidr) = cidr else { continue };
        let Some(ip) = node_internal_ips(n)
            .into_iter()
            .find(|ip| !own.contains(ip))
        else {
            continue;
        };
        out.insert(cidr.to_string(), ip);
    }
    out
}

/// Routes to replace (new or changed gateway) and to delete (ours, no longer wanted).
pub fn route_changes(current: &Routes, desired: &Routes) -> (Vec<(String, Ipv4Addr)>, Vec<String>) {
    let replace = desired
        .iter()
        .filter(|(dst, via)| current.get(*dst) != Some(via))
        .map(|(d, v)| (d.clone(), *v))
        .collect();
    let delete = current
        .keys()
        .filter(|d| !desired.contains_key(*d))
        .cloned()
        .collect();
    (replace, delete)
}

/// Which kernel API programs the services (`--proxy-mode`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// Tables nat and filter through iptables-restore (kube-proxy's iptables mode).
    #[default]
    Iptables,
    /// One `table ip kube-proxy` through `nft -f` transactions (kube-proxy's nftables mode).
    Nftables,
}

/// Settings of the sync beyond rendering.
#[derive(Clone, Debug)]
pub struct SyncConfig {
    pub render: RenderConfig,
    /// Keep host-gw routes (`--pod-routes`).
    pub pod_routes: bool,
    pub mode: Mode,
}

/// A mode's view of what the kernel holds: every service port's plan and the fragment
/// rendered from it, as last applied.
type Ports<R> = BTreeMap<PortKey, (PortPlan, R)>;

/// What [`rerender`] found.
struct Rerendered<R> {
    ports: Ports<R>,
    /// Fragments of ports that changed or went away, as they were applied.
    old: BTreeMap<PortKey, R>,
    /// Ports that are new or changed (their fragments were rendered again).
    changed: Vec<PortKey>,
}

/// What [`render_iptables`] gives.
struct IptablesRender {
    re: Rerendered<Ruleset>,
    /// The fixed chains (`KUBE-SERVICES`, …) as they should be.
    fixed: Ruleset,
    /// Whether `fixed` differs from `prev_fixed` (always, when there is none).
    fixed_changed: bool,
    /// The fixed chains as applied, if known.
    prev_fixed: Option<Ruleset>,
    /// The chains applied before crossing the large-cluster threshold (then the sync is full).
    applied_before: Vec<(String, String)>,
}

/// The iptables mode's rendering: every port whose plan changed since `applied` rendered again,
/// and the fixed chains rebuilt when a port's rules in them changed.
fn render_iptables(
    config: &mut SyncConfig,
    applied: Option<IptState>,
    plan: Vec<PortPlan>,
    report: &mut SyncReport,
) -> IptablesRender {
    let (mut prev, prev_fixed) = match applied {
        Some(s) => (s.ports, Some(s.fixed)),
        None => (Ports::new(), None),
    };
    // Crossing upstream's large-cluster threshold changes every port's rules (comments):
    // a full sync, with the applied chains as the ones to compare against.
    let mut applied_before: Vec<(String, String)> = Vec::new();
    let large = rules::is_large_cluster(&plan);
    if large != config.render.large_cluster {
        config.render.large_cluster = large;
        report.full = true;
        for (_, (_, frag)) in std::mem::take(&mut prev) {
            applied_before.extend(frag.nat.chain_names().map(|c| ("nat".into(), c.into())));
        }
    }
    let render = config.render.clone();
    let re = rerender(prev, plan, |p| rules::render_port(p, &render));
    report.rerendered = re.changed.len();
    // The fixed chains change only if a changed port's rules in them did.
    let fixed_changed = prev_fixed.is_none()
        || re.changed.iter().any(|k| !re.old.contains_key(k))
        || re.old.iter().any(|(k, old)| {
            re.ports
                .get(k)
                .is_none_or(|(_, new)| old.select(true) != new.select(true))
        });
    let fixed = match prev_fixed.as_ref() {
        Some(f) if !fixed_changed => f.clone(),
        _ => {
            let mut f = rules::fixed(&render);
            for (_, frag) in re.ports.values() {
                f.merge(&frag.select(true));
            }
            rules::order_by_target(&mut f);
            f.merge(&rules::tail());
            f
        }
    };
    IptablesRender {
        re,
        fixed,
        fixed_changed,
        prev_fixed,
        applied_before,
    }
}

/// The restore texts of a split full sync's parts, in order (the first also writes
/// KUBE-MARK-MASQ, from `fixed`), written by up to `threads` threads: at 10,000 services the
/// texts are ~10 MB, and the restores wait for them.
fn part_texts(chunks: &[&[&Ruleset]], fixed: &Ruleset, threads: usize) -> Vec<String> {
    let threads = threads.clamp(1, chunks.len().max(1));
    let text = |i: usize| rules::part_text(chunks[i], (i == 0).then_some(fixed));
    if threads == 1 {
        return (0..chunks.len()).map(text).collect();
    }
    let mut texts = vec![String::new(); chunks.len()];
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                scope.spawn(move || {
                    (t..chunks.len())
                        .step_by(threads)
                        .map(|i| (i, text(i)))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        for h in handles {
            for (i, s) in h.join().expect("restore text thread panicked") {
                texts[i] = s;
            }
        }
    });
    texts
}

/// Reuse the fragment of every port whose plan is unchanged since `prev`, render the others.
/// Rendering stays a pure function of the plan: a reused fragment is what rendering its
/// (equal) plan again would give.
fn rerender<R>(
    prev: Ports<R>,
    plan: Vec<PortPlan>,
    render: impl Fn(&PortPlan) -> R,
) -> Rerendered<R> {
    let mut old = BTreeMap::new();
    let mut changed = Vec::new();
    let mut ports = Vec::with_capacity(plan.len());
    // Both are sorted by key: walk them side by side, keeping the applied entry (and its key)
    // of every unchanged port, so an unchanged port costs one comparison of its plan.
    let mut prev = prev.into_iter().peekable();
    for p in plan {
        while let Some((k, (_, r))) = prev.next_if(|(k, _)| *k < p.sp.key) {
            old.insert(k, r);
        }
        let (key, r) = match prev.next_if(|(k, _)| *k == p.sp.key) {
            Some((k, (before, r))) if before == p => (k, r),
            Some((k, (_, r))) => {
                old.insert(k.clone(), r);
                changed.push(k.clone());
                (k, render(&p))
            }
            None => {
                changed.push(p.sp.key.clone());
                (p.sp.key.clone(), render(&p))
            }
        };
        ports.push((key, (p, r)));
    }
    old.extend(prev.map(|(k, (_, r))| (k, r)));
    Rerendered {
        // Sorted already (the plan is), so this builds the tree without searching.
        ports: ports.into_iter().collect(),
        old,
        changed,
    }
}

/// The iptables mode's applied state.
struct IptState {
    ports: Ports<Ruleset>,
    /// The fixed chains (`KUBE-SERVICES`, `KUBE-NODEPORTS`, …) as applied: every port's rules
    /// in them, in port order.
    fixed: Ruleset,
}

/// The nftables mode's applied state.
struct NftState {
    ports: Ports<nftables::Ruleset>,
    /// Every map and set element with its value and the number of ports that want it
    /// (`cluster-ips` and `hairpin-endpoints` elements can be shared).
    elements: HashMap<(&'static str, String), (String, usize)>,
}

impl NftState {
    fn count(&mut self, frag: &nftables::Ruleset, add: bool) {
        for (m, elems) in &frag.maps {
            for (k, v) in elems {
                let key = (*m, k.clone());
                if add {
                    let e = self.elements.entry(key).or_insert((v.clone(), 0));
                    e.0.clone_from(v);
                    e.1 += 1;
                } else if let Some(e) = self.elements.get_mut(&key) {
                    e.1 -= 1;
                    if e.1 == 0 {
                        self.elements.remove(&key);
                    }
                }
            }
        }
    }
}

/// The Services and EndpointSlices a successful sync was computed from, by identity: the
/// caches hand out the same `Arc` for an object until it changes, and holding them here
/// keeps their addresses from being reused.
struct Inputs {
    services: Vec<Arc<Service>>,
    slices: Vec<Arc<EndpointSlice>>,
}

impl Inputs {
    fn of(snap: &Snapshot) -> Inputs {
        let mut services = snap.services.clone();
        let mut slices = snap.slices.clone();
        services.sort_by_key(|s| Arc::as_ptr(s) as usize);
        slices.sort_by_key(|s| Arc::as_ptr(s) as usize);
        Inputs { services, slices }
    }

    fn same(&self, other: &Inputs) -> bool {
        same_objects(&self.services, &other.services) && same_objects(&self.slices, &other.slices)
    }
}

/// The same objects (both sorted by address).
fn same_objects<T>(a: &[Arc<T>], b: &[Arc<T>]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| Arc::ptr_eq(x, y))
}

/// Services (sorted by address), and the service ports and warnings they gave.
type KeptPorts = (Vec<Arc<Service>>, Vec<model::ServicePort>, Vec<Warning>);

/// The stateful half of the proxy: what was applied, what was reported.
pub struct Proxier<D: Dataplane> {
    pub dataplane: D,
    config: SyncConfig,
    /// The iptables mode's rules as last applied; `None` when the kernel state is unknown.
    ipt: Option<IptState>,
    /// The nftables mode's table as last applied; `None` when the kernel state is unknown.
    nft: Option<NftState>,
    udp: Option<UdpState>,
    routes: Option<Routes>,
    reported: BTreeSet<Warning>,
    /// What the last successful sync was computed from, and its report (for a sync that
    /// finds the same objects: nothing to plan, render or apply).
    last: Option<(Inputs, SyncReport)>,
    /// The service ports (and warnings) of the Services of the last sync, reused while the
    /// same Service objects come back (endpoints change far more often than Services).
    service_ports: Option<KeptPorts>,
    /// Service ports per `iptables-restore` of a full sync in the iptables mode (above it, the
    /// full sync is split: [`FULL_SYNC_PART_PORTS`]), and when it rewrites rules already in
    /// place ([`REWRITE_PART_PORTS`]).
    part_ports: usize,
    rewrite_part_ports: usize,
    /// `iptables-restore` processes at once for the parts of a split full sync.
    restore_workers: usize,
}

/// A full sync of more service ports than this writes their chains in parts of this many
/// ports, one `iptables-restore` each, before the fixed chains. With the nf_tables backend,
/// iptables 1.8.9 keeps every chain and jump-target name of a restore in a sorted linked list
/// walked from the start for each command, so one restore of everything grows with the square
/// of the chains (10,000 services: 34,000 chains, ~3 billion list steps, 18-24 s); parts of 500
/// ports keep each list short (bench-proxy, 10,000 services: first full sync 4.5 s in all).
/// Each part is complete in itself (a port's chains jump only to each other and to
/// KUBE-MARK-MASQ) and unreachable until the last restore rewrites KUBE-SERVICES, so traffic
/// only ever sees whole services; up to this many ports the full sync stays one restore.
pub const FULL_SYNC_PART_PORTS: usize = 500;

/// Service ports per restore when a full sync rewrites rules already in place (a forced
/// resync, or the first sync after a proxy restart). Once the rules are reachable from the
/// built-in chains, the kernel validates the whole table (every jump path from PREROUTING and
/// OUTPUT) at each commit, ~0.1 s at 10,000 services, and commits are serialized, so fewer,
/// larger restores win here (bench-proxy, 10,000 services, forced resync: parts of 500 ports
/// 5.9-6.3 s, 750: 5.4-5.5 s, 1,000: 5.2-5.5 s, 1,500: 6.1-6.6 s).
pub const REWRITE_PART_PORTS: usize = 1000;

/// At most this many `iptables-restore` processes at once for the parts of a split full sync:
/// one more than the CPUs, up to this. A restore spends part of its time waiting for the
/// kernel's nf_tables mutex (another restore's commit), time the extra one uses (bench-proxy,
/// 10,000 services on 2 CPUs, forced resync: 2 at once 5.9-6.1 s, 3 at once 5.2-5.5 s).
pub const MAX_RESTORE_WORKERS: usize = 4;

/// `iptables-restore` processes at once by default: one more than the CPUs, up to
/// [`MAX_RESTORE_WORKERS`].
pub fn default_restore_workers() -> usize {
    std::thread::available_parallelism()
        .map_or(2, |n| n.get() + 1)
        .min(MAX_RESTORE_WORKERS)
}

impl<D: Dataplane> Proxier<D> {
    pub fn new(dataplane: D, config: SyncConfig) -> Self {
        Self {
            dataplane,
            config,
            ipt: None,
            nft: None,
            udp: None,
            routes: None,
            reported: BTreeSet::new(),
            last: None,
            service_ports: None,
            part_ports: FULL_SYNC_PART_PORTS,
            rewrite_part_ports: REWRITE_PART_PORTS,
            restore_workers: default_restore_workers(),
        }
    }

    /// `iptables-restore` processes at once for the parts of a split full sync (at least 1).
    pub fn with_restore_workers(mut self, workers: usize) -> Self {
        self.restore_workers = workers.max(1);
        self
    }

    /// Service ports per restore of a split full sync, whether it writes new rules or rewrites
    /// rules in place (tests; at least 1).
    pub fn with_part_ports(mut self, ports: usize) -> Self {
        self.part_ports = ports.max(1);
        self.rewrite_part_ports = self.part_ports;
        self
    }

    /// Service ports per restore of a split full sync that rewrites rules already in place (at
    /// least 1).
    pub fn with_rewrite_part_ports(mut self, ports: usize) -> Self {
        self.rewrite_part_ports = ports.max(1);
        self
    }

    /// Whether the next sync must be full (nothing applied yet, or the last one failed).
    pub fn needs_full_sync(&self) -> bool {
        match self.config.mode {
            Mode::Iptables => self.ipt.is_none(),
            Mode::Nftables => self.nft.is_none(),
        }
    }

    /// Sync once; `full` rewrites every chain even if nothing changed.
    ///
    /// Otherwise only the service ports whose plan changed since the last successful sync are
    /// rendered again, and only their chains and elements (plus, in the iptables mode, the
    /// fixed chains they have rules in) are applied. If such a partial apply fails, a full
    /// sync with the kernel state unknown follows at once.
    pub fn sync(&mut self, snap: &Snapshot, full: bool) -> Result<SyncReport, SyncError> {
        let started = Instant::now();
        let inputs = Inputs::of(snap);
        let last = self.last.take();
        if let Some((before, r)) =
            last.filter(|(before, _)| !full && !self.needs_full_sync() && before.same(&inputs))
        {
            // Only Nodes (routes) can have changed: the proxy costs next to nothing while
            // services and endpoints stay as they are.
            let mut report = SyncReport {
                service_ports: r.service_ports,
                filter_rules: r.filter_rules,
                nat_rules: r.nat_rules,
                plan_time: started.elapsed(),
                ..Default::default()
            };
            let udp = self.udp.clone().unwrap_or_default();
            self.finish(snap, udp, &mut report);
            self.last = Some((before, r));
            return Ok(report);
        }
        let (ports, warnings) = match self.service_ports.take() {
            Some((svcs, ports, warnings)) if same_objects(&svcs, &inputs.services) => {
                let kept = (ports.clone(), warnings.clone());
                self.service_ports = Some((svcs, ports, warnings));
                kept
            }
            _ => {
                let mut warnings = Vec::new();
                let ports = model::all_service_ports(&inputs.services, &mut warnings);
                self.service_ports =
                    Some((inputs.services.clone(), ports.clone(), warnings.clone()));
                (ports, warnings)
            }
        };
        let plan = plan::plan_with_ports(ports, warnings, &snap.slices, &self.config.render);
        let plan_time = started.elapsed();
        let udp = plan::udp_state(&plan.ports);
        let mut report = SyncReport {
            service_ports: plan.ports.len(),
            plan_time,
            ..Default::default()
        };
        let current: BTreeSet<Warning> = plan.warnings.iter().cloned().collect();
        report.new_warnings = current.difference(&self.reported).cloned().collect();
        let reported_before = std::mem::replace(&mut self.reported, current);
        let result = match self.config.mode {
            Mode::Iptables => self.sync_iptables(plan.ports, full, &mut report),
            Mode::Nftables => self.sync_nft(plan.ports, full, &mut report),
        };
        match result {
            Ok(()) => {}
            Err(e) if !report.full => {
                // The kernel is not what we think: start from scratch, now.
                tracing::warn!(error = %e, "partial sync failed; doing a full sync");
                self.reported = reported_before;
                let mut r = self.sync(snap, true)?;
                r.fell_back = true;
                return Ok(r);
            }
            Err(SyncError::Restore(e)) if self.config.render.sctp && report.sctp_in_restore => {
                // A kernel without SCTP refuses the whole restore: drop SCTP ports (each
                // reported on its Service) so every other service keeps working.
                tracing::warn!(error = %e, "iptables-restore failed with SCTP rules; retrying without SCTP service ports");
                self.config.render.sctp = false;
                self.reported = reported_before;
                let retried = self.sync(snap, true);
                if retried.is_err() {
                    // Not SCTP's fault after all.
                    self.config.render.sctp = true;
                }
                return retried;
            }
            Err(e) => return Err(e),
        }
        let apply_start = Instant::now();
        self.finish(snap, udp, &mut report);
        report.apply_time += apply_start.elapsed();
        self.last = Some((inputs, report.clone()));
        Ok(report)
    }

    fn sync_iptables(
        &mut self,
        plan: Vec<PortPlan>,
        full: bool,
        report: &mut SyncReport,
    ) -> Result<(), SyncError> {
        let kernel_unknown = self.ipt.is_none();
        report.full = full || kernel_unknown;
        let t = Instant::now();
        // With the kernel state unknown (start, failure) the chains are listed to find stale
        // ones; the listing (~0.3 s at 10,000 services) runs while the rules are rendered.
        let dataplane = &mut self.dataplane;
        let (
            listing,
            IptablesRender {
                re,
                fixed,
                fixed_changed,
                prev_fixed,
                applied_before,
            },
        ) = std::thread::scope(|scope| {
            let listing = kernel_unknown.then(|| scope.spawn(move || dataplane.chains()));
            let rendered = render_iptables(&mut self.config, self.ipt.take(), plan, report);
            let listing = listing.map(|h| h.join().expect("chain listing thread panicked"));
            (listing, rendered)
        });
        report.render_time = t.elapsed();
        report.filter_rules = fixed.filter.rule_count();
        report.nat_rules = fixed.nat.rule_count()
            + re.ports
                .values()
                .map(|(_, f)| f.own_rule_count())
                .sum::<usize>();

        let apply_start = Instant::now();
        let t = Instant::now();
        // Whether KUBE-MARK-MASQ, which every part of a split full sync jumps to, already exists
        // (then no part has to wait for the one that writes it).
        let mut marks_exist = !kernel_unknown;
        // Whether the last restore of a split full sync may run alongside the parts: it deletes
        // no chain and every chain it jumps to is there already (typically a resync with
        // nothing changed). Rules rewritten in place change per chain either way: with ports
        // whose chains keep their names but change, KUBE-SERVICES may commit before or after
        // their chains, as with any order of separate restores.
        let mut last_concurrent = false;
        // Whether the chain listing showed no nftables-mode table (then none to remove).
        let mut nft_table_absent = false;
        let texts: Vec<String> = if report.full {
            let mut existing: Vec<(String, String)> = Vec::new();
            if let Some(chains) = listing {
                let chains = chains.map_err(SyncError::Save)?;
                nft_table_absent =
                    crate::dataplane::nft_listing_lacks_table(&chains, nftables::TABLE);
                existing = rules::owned_chains_in_save(&chains);
                marks_exist = rules::save_has_chain(&chains, "nat", rules::KUBE_MARK_MASQ);
            } else {
                // What was applied: unchanged ports' chains and the old ones of the others
                // (new ports have none).
                let applied = re
                    .ports
                    .iter()
                    .filter(|(k, _)| !re.old.contains_key(*k) && !re.changed.contains(*k))
                    .map(|(_, (_, f))| f)
                    .chain(re.old.values());
                for frag in applied {
                    existing.extend(frag.nat.chain_names().map(|c| ("nat".into(), c.into())));
                }
                existing.extend(applied_before);
            }
            // Rules in place (a forced resync, a restart): each commit costs a validation of
            // the whole reachable table, so fewer, larger parts.
            let part_ports = if marks_exist && (!kernel_unknown || !existing.is_empty()) {
                self.rewrite_part_ports
            } else {
                self.part_ports
            };
            if re.ports.len() <= part_ports {
                let mut desired = fixed.clone();
                for (_, frag) in re.ports.values() {
                    desired.merge(&frag.select(false));
                }
                vec![rules::restore_text(&desired, None, &existing)]
            } else {
                // Large: the ports' own chains in parts of `part_ports` ports (each part jumps
                // only inside itself and to KUBE-MARK-MASQ, written by the first part), then the
                // fixed chains and the stale chains' deletion in one last restore, which is the
                // one that makes the new chains reachable (`rules::part_text`).
                let frags: Vec<&Ruleset> = re.ports.values().map(|(_, f)| f).collect();
                // Parts of equal size (at most `part_ports` ports): a small remainder part
                // would cost a whole commit, which validates the whole reachable table.
                let per_part = frags.len().div_ceil(frags.len().div_ceil(part_ports));
                let chunks: Vec<&[&Ruleset]> = frags.chunks(per_part).collect();
                let mut texts = part_texts(&chunks, &fixed, self.restore_workers);
                let wanted: BTreeSet<&str> =
                    frags.iter().flat_map(|f| f.nat.chain_names()).collect();
                let all_there = {
                    let there: BTreeSet<&str> = existing
                        .iter()
                        .filter(|(t, _)| t == "nat")
                        .map(|(_, c)| c.as_str())
                        .collect();
                    wanted
                        .iter()
                        .all(|c| !rules::is_dynamic(c) || there.contains(c))
                };
                existing.retain(|(t, c)| t != "nat" || !wanted.contains(c.as_str()));
                last_concurrent = marks_exist && all_there && existing.is_empty();
                texts.push(rules::restore_text(&fixed, None, &existing));
                texts
            }
        } else if re.changed.is_empty() && re.old.is_empty() {
            Vec::new()
        } else {
            // Only the changed ports' own chains, and the fixed chains if they changed.
            let (mut desired, mut applied) = match (&prev_fixed, fixed_changed) {
                (Some(before), true) => (fixed.clone(), before.clone()),
                _ => (Ruleset::default(), Ruleset::default()),
            };
            for frag in re.old.values() {
                applied.merge(&frag.select(false));
            }
            for key in &re.changed {
                desired.merge(&re.ports[key].1.select(false));
            }
            vec![rules::restore_text(&desired, Some(&applied), &[])]
        };
        report.script_time = t.elapsed();
        let texts: Vec<String> = texts.into_iter().filter(|t| !t.is_empty()).collect();
        for text in &texts {
            report.restore_bytes += text.len();
            report.sctp_in_restore |= text.contains("-p sctp");
        }
        let t = Instant::now();
        let result = match texts.as_slice() {
            // A split full sync: the parts at once (they are independent and unreachable until
            // the last), after the first (which writes KUBE-MARK-MASQ) unless that chain is
            // already there, then the last, or the last among them when it depends on none.
            [_, parts @ .., _] if last_concurrent && !parts.is_empty() => {
                self.dataplane.restore_all(&texts, self.restore_workers)
            }
            [parts @ .., last] if marks_exist && parts.len() > 1 => self
                .dataplane
                .restore_all(parts, self.restore_workers)
                .and_then(|()| self.dataplane.restore(last)),
            [first, parts @ .., last] if parts.len() > 1 => self
                .dataplane
                .restore(first)
                .and_then(|()| self.dataplane.restore_all(parts, self.restore_workers))
                .and_then(|()| self.dataplane.restore(last)),
            _ => texts.iter().try_for_each(|t| self.dataplane.restore(t)),
        };
        report.restore_time += t.elapsed();
        result.map_err(SyncError::Restore)?;
        report.restored |= !texts.is_empty();
        if kernel_unknown && !nft_table_absent {
            // Switching from the nftables mode: its table would catch the packets too.
            match self.dataplane.nft(&nftables::cleanup_script()) {
                Ok(()) => {}
                Err(DataplaneError::Spawn { source, .. })
                    if source.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => tracing::warn!(error = %e, "removing the nftables mode's table failed"),
            }
        }
        if report.full {
            for j in rules::jump_rules() {
                self.dataplane.ensure_jump(&j).map_err(SyncError::Jump)?;
            }
        }
        self.ipt = Some(IptState {
            ports: re.ports,
            fixed,
        });
        report.apply_time = apply_start.elapsed();
        Ok(())
    }

    /// The nftables mode's sync: one `nft -f` transaction with what changed (everything on a
    /// full sync; the table recreated atomically when the kernel state is unknown).
    fn sync_nft(
        &mut self,
        plan: Vec<PortPlan>,
        full: bool,
        report: &mut SyncReport,
    ) -> Result<(), SyncError> {
        let kernel_unknown = self.nft.is_none();
        report.full = full || kernel_unknown;
        let t = Instant::now();
        let (prev, elements) = match self.nft.take() {
            Some(s) => (s.ports, s.elements),
            None => (Ports::new(), HashMap::new()),
        };
        let config = self.config.render.clone();
        let re = rerender(prev, plan, |p| nftables::render_port(p, &config));
        report.rerendered = re.changed.len();
        report.render_time = t.elapsed();

        let apply_start = Instant::now();
        if kernel_unknown {
            // Switching from the iptables mode: its rules would catch the packets first.
            match self.dataplane.save() {
                Ok(save) => {
                    let text = rules::cleanup_text(&save);
                    if !text.is_empty() {
                        if let Err(e) = self.dataplane.restore(&text) {
                            tracing::warn!(error = %e, "removing the iptables mode's rules failed");
                        }
                    }
                }
                Err(e) => {
                    tracing::debug!(error = %e, "iptables-save failed; no iptables rules to remove")
                }
            }
        }
        let t = Instant::now();
        let fixed = nftables::fixed(&config);
        let mut state = NftState {
            ports: Ports::new(),
            elements,
        };
        let text = if report.full {
            state.elements.clear();
            for (_, frag) in re.ports.values() {
                state.count(frag, true);
            }
            let mut desired = fixed.clone();
            for (_, frag) in re.ports.values() {
                desired.merge(frag);
            }
            // What a full rewrite needs of the applied table: which chains and sets to delete.
            let applied = (!kernel_unknown).then(|| {
                let mut a = nftables::Ruleset::default();
                let applied = re
                    .ports
                    .iter()
                    .filter(|(k, _)| !re.old.contains_key(*k))
                    .map(|(_, (_, f))| f)
                    .chain(re.old.values());
                for frag in applied {
                    a.chains
                        .extend(frag.chains.keys().map(|c| (c.clone(), Vec::new())));
                    a.sets.extend(frag.sets.iter().cloned());
                }
                a.chains
                    .extend(fixed.chains.keys().map(|c| (c.clone(), Vec::new())));
                a
            });
            nftables::script(&desired, applied.as_ref(), full)
        } else if re.changed.is_empty() && re.old.is_empty() {
            String::new()
        } else {
            // The changed ports' chains and sets, and every element they touch as it is in
            // the whole table before and after.
            let mut applied = nftables::Ruleset::default();
            let mut desired = nftables::Ruleset::default();
            for frag in re.old.values() {
                applied.merge(frag);
            }
            for key in &re.changed {
                desired.merge(&re.ports[key].1);
            }
            let touched: BTreeSet<(&'static str, String)> = applied
                .maps
                .iter()
                .chain(desired.maps.iter())
                .flat_map(|(m, e)| e.keys().map(|k| (*m, k.clone())))
                .collect();
            let whole = |st: &NftState| -> BTreeMap<&'static str, BTreeMap<String, String>> {
                let mut out: BTreeMap<&'static str, BTreeMap<String, String>> = BTreeMap::new();
                for (m, k) in &touched {
                    if let Some((v, _)) = st.elements.get(&(*m, k.clone())) {
                        out.entry(*m).or_default().insert(k.clone(), v.clone());
                    }
                }
                out
            };
            applied.maps = whole(&state);
            for frag in re.old.values() {
                state.count(frag, false);
            }
            for key in &re.changed {
                state.count(&re.ports[key].1, true);
            }
            desired.maps = whole(&state);
            nftables::script(&desired, Some(&applied), false)
        };
        report.script_time = t.elapsed();
        report.nat_rules = fixed.rule_count()
            + re.ports
                .values()
                .map(|(_, f)| f.rule_count())
                .sum::<usize>();
        report.filter_rules = state.elements.len();
        if !text.is_empty() {
            report.restore_bytes = text.len();
            let t = Instant::now();
            let result = self.dataplane.nft(&text);
            report.restore_time = t.elapsed();
            result.map_err(SyncError::Nft)?;
            report.restored = true;
        }
        state.ports = re.ports;
        self.nft = Some(state);
        report.apply_time = apply_start.elapsed();
        Ok(())
    }

    /// After the rules are live: stale UDP conntrack entries, then routes.
    fn finish(&mut self, snap: &Snapshot, udp: UdpState, report: &mut SyncReport) {
        // Conntrack only after the new rules are live, so no new entry to a gone endpoint
        // can appear after the deletion.
        for flow in stale_flows(self.udp.as_ref(), &udp) {
            match self.dataplane.conntrack_delete(&flow) {
                Ok(true) => report.conntrack_deleted += 1,
                Ok(false) => {
                    tracing::debug!(
                        "conntrack is not installed; stale UDP entries are left to expire"
                    );
                    break;
                }
                Err(e) => tracing::warn!(error = %e, "deleting stale conntrack entries failed"),
            }
        }
        self.udp = Some(udp);
        if self.config.pod_routes {
            self.sync_routes(snap, report.full, &mut report.route_errors);
        }
    }

    fn sync_routes(&mut self, snap: &Snapshot, full: bool, errors: &mut Vec<String>) {
        let desired = desired_routes(&snap.nodes, &self.config.render.node_name);
        let current = match (&self.routes, full) {
            (Some(r), false) => r.clone(),
            _ => match self.dataplane.routes() {
                Ok(r) => r,
                Err(e) => {
                    errors.push(e.to_string());
                    return;
                }
            },
        };
        let (replace, delete) = route_changes(&current, &desired);
        let mut now = current;
        for (dst, via) in replace {
            match self.dataplane.route_replace(&dst, via) {
                Ok(()) => {
                    tracing::info!(dst = %dst, via = %via, "route to node pod CIDR set");
                    now.insert(dst, via);
                }
                Err(e) => {
                    now.remove(&dst);
                    errors.push(e.to_string());
                }
            }
        }
        for dst in delete {
            match self.dataplane.route_delete(&dst) {
                Ok(()) => {
                    tracing::info!(dst = %dst, "route to removed node pod CIDR deleted");
                    now.remove(&dst);
                }
                Err(e) => errors.push(e.to_string()),
            }
        }
        self.routes = Some(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataplane::{Call, Recording};
    use k8s_openapi::api::core::v1::{NodeAddress, NodeSpec, NodeStatus, ServicePort, ServiceSpec};
    use k8s_openapi::api::discovery::v1::{Endpoint, EndpointPort};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn node(name: &str, cidr: Option<&str>, ip: Option<&str>) -> Arc<Node> {
        Arc::new(Node {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            spec: Some(NodeSpec {
                pod_cidr: cidr.map(String::from),
                pod_cidrs: cidr.map(|c| vec![c.to_string()]),
                ..Default::default()
            }),
            status: Some(NodeStatus {
                addresses: ip.map(|ip| {
                    vec![
                        NodeAddress {
                            type_: "Hostname".into(),
                            address: name.into(),
                        },
                        NodeAddress {
                            type_: "InternalIP".into(),
                            address: ip.into(),
                        },
                    ]
                }),
                ..Default::default()
            }),
        })
    }

    fn service(name: &str, ip: &str, proto: &str) -> Arc<Service> {
        Arc::new(Service {
            metadata: ObjectMeta {
                namespace: Some("default".into()),
                name: Some(name.into()),
                ..Default::default()
            },
            spec: Some(ServiceSpec {
                cluster_ip: Some(ip.into()),
                ports: Some(vec![ServicePort {
                    name: Some("p".into()),
                    port: 53,
                    protocol: Some(proto.into()),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            status: None,
        })
    }

    fn slice(svc: &str, proto: &str, ips: &[&str]) -> Arc<EndpointSlice> {
        Arc::new(EndpointSlice {
            metadata: ObjectMeta {
                namespace: Some("default".into()),
                name: Some(format!("{svc}-x")),
                labels: Some(
                    [(
                        crate::model::SERVICE_NAME_LABEL.to_string(),
                        svc.to_string(),
                    )]
                    .into(),
                ),
                ..Default::default()
            },
            address_type: "IPv4".into(),
            ports: Some(vec![EndpointPort {
                name: Some("p".into()),
                port: Some(5353),
                protocol: Some(proto.into()),
                app_protocol: None,
            }]),
            endpoints: Some(
                ips.iter()
                    .map(|ip| Endpoint {
                        addresses: vec![ip.to_string()],
                        ..Default::default()
                    })
                    .collect(),
            ),
        })
    }

    fn proxier(dp: &Recording) -> Proxier<Recording> {
        Proxier::new(
            dp.clone(),
            SyncConfig {
                render: RenderConfig {
                    node_name: "node-a".into(),
                    cluster_cidr: rules::Cidr::parse("10.244.0.0/16"),
                    ..Default::default()
                },
                pod_routes: true,
                mode: Mode::Iptables,
            },
        )
    }

    fn restores(calls: &[Call]) -> Vec<&str> {
        calls
            .iter()
            .filter_map(|c| match c {
                Call::Restore(t) => Some(t.as_str()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn iptables_first_sync_removes_the_nftables_table_only_when_nft_may_have_it() {
        let snap = Snapshot {
            services: vec![service("dns", "10.96.0.10", "UDP")],
            slices: vec![slice("dns", "UDP", &["10.244.1.5"])],
            nodes: vec![],
        };
        let cleanup = Call::Nft(nftables::cleanup_script());
        for (listing, removed) in [
            // nft's listing of the ip tables: without the nftables mode's table, no nft run.
            (
                "table ip nat {\n\tchain KUBE-SVC-OLDOLDOLDOLDOLDO {\n\t}\n}\n",
                false,
            ),
            (
                "table ip nat {\n}\ntable ip kube-proxy {\n\tchain services {\n\t}\n}\n",
                true,
            ),
        ] {
            let dp = Recording::new();
            dp.set_save_output(&crate::dataplane::nft_chains_as_save(listing));
            let mut p = proxier(&dp);
            assert!(p.sync(&snap, false).unwrap().full);
            assert_eq!(dp.take_calls().contains(&cleanup), removed, "{listing}");
        }
        // iptables-save's text says nothing about nft tables: the table is removed anyway
        // (`first_sync_is_full_and_removes_leftovers_later_syncs_only_what_changed`).
    }

    #[test]
    fn first_sync_is_full_and_removes_leftovers_later_syncs_only_what_changed() {
        let dp = Recording::new();
        dp.set_save_output("*nat\n:KUBE-SVC-OLDOLDOLDOLDOLDO - [0:0]\nCOMMIT\n");
        let mut p = proxier(&dp);
        let mut snap = Snapshot {
            services: vec![service("dns", "10.96.0.10", "UDP")],
            slices: vec![slice("dns", "UDP", &["10.244.1.5", "10.244.1.6"])],
            nodes: vec![],
        };
        let r = p.sync(&snap, false).unwrap();
        assert!(r.full && r.restored);
        let calls = dp.take_calls();
        assert_eq!(calls[0], Call::Save);
        let text = restores(&calls)[0];
        assert!(text.contains("-X KUBE-SVC-OLDOLDOLDOLDOLDO"), "{text}");
        assert!(text.contains("*filter") && text.contains("*nat"));
        assert!(calls.contains(&Call::Nft(nftables::cleanup_script())));
        assert_eq!(
            calls
                .iter()
                .filter(|c| matches!(c, Call::EnsureJump(_)))
                .count(),
            rules::jump_rules().len()
        );
        // Nothing changed: no restore, no jump checks.
        let r = p.sync(&snap, false).unwrap();
        assert!(!r.restored && !r.full);
        assert!(dp
            .take_calls()
            .iter()
            .all(|c| !matches!(c, Call::Restore(_) | Call::EnsureJump(_) | Call::Save)));
        // An endpoint goes: only the changed chains, the stale endpoint chain deleted, and
        // the UDP conntrack entries DNATed to it removed.
        snap.slices = vec![slice("dns", "UDP", &["10.244.1.5"])];
        let r = p.sync(&snap, false).unwrap();
        assert!(r.restored && !r.full);
        let calls = dp.take_calls();
        let text = restores(&calls)[0];
        assert!(!text.contains("*filter"), "{text}");
        assert!(text.contains("-X KUBE-SEP-"), "{text}");
        assert!(calls.contains(&Call::Conntrack(Flow::IpToEndpoint {
            orig_dst: "10.96.0.10".parse().unwrap(),
            endpoint: "10.244.1.6".parse().unwrap(),
        })));
        // A forced full sync rewrites everything though nothing changed.
        let r = p.sync(&snap, true).unwrap();
        assert!(r.restored && r.full);
        let calls = dp.take_calls();
        assert!(restores(&calls)[0].contains("*filter"));
        assert!(!calls.contains(&Call::Save));
    }

    fn nfts(calls: &[Call]) -> Vec<&str> {
        calls
            .iter()
            .filter_map(|c| match c {
                Call::Nft(t) => Some(t.as_str()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn nftables_mode_recreates_the_table_first_then_applies_only_deltas() {
        let dp = Recording::new();
        // Rules of the iptables mode from an earlier run are removed on the first sync.
        dp.set_save_output(
            "*nat\n:KUBE-SERVICES - [0:0]\n-A PREROUTING -j KUBE-SERVICES\nCOMMIT\n",
        );
        let mut p = proxier(&dp);
        p.config.mode = Mode::Nftables;
        let mut snap = Snapshot {
            services: vec![service("dns", "10.96.0.10", "UDP")],
            slices: vec![slice("dns", "UDP", &["10.244.1.5", "10.244.1.6"])],
            nodes: vec![],
        };
        let r = p.sync(&snap, false).unwrap();
        assert!(r.full && r.restored);
        let calls = dp.take_calls();
        assert!(calls
            .iter()
            .any(|c| matches!(c, Call::Restore(t) if t.contains("-X KUBE-SERVICES"))));
        assert!(!calls.iter().any(|c| matches!(c, Call::EnsureJump(_))));
        let text = nfts(&calls)[0];
        assert!(text.contains("delete table ip kube-proxy"), "{text}");
        assert!(
            text.contains("10.96.0.10 . udp . 53 : goto service-"),
            "{text}"
        );
        // Unchanged: nothing at all.
        let r = p.sync(&snap, false).unwrap();
        assert!(!r.restored);
        assert!(nfts(&dp.take_calls()).is_empty());
        // One endpoint goes: a small delta, and its UDP conntrack entries go.
        snap.slices = vec![slice("dns", "UDP", &["10.244.1.5"])];
        let r = p.sync(&snap, false).unwrap();
        assert!(r.restored && !r.full);
        let calls = dp.take_calls();
        let text = nfts(&calls)[0];
        assert!(
            !text.contains("add table")
                && text.contains(
                    "delete element ip kube-proxy hairpin-endpoints { 10.244.1.6 . 10.244.1.6 }"
                ),
            "{text}"
        );
        assert!(calls.contains(&Call::Conntrack(Flow::IpToEndpoint {
            orig_dst: "10.96.0.10".parse().unwrap(),
            endpoint: "10.244.1.6".parse().unwrap(),
        })));
        // A failed partial apply is followed at once by a full sync recreating the table.
        dp.fail_next_restores(1);
        snap.slices = vec![slice("dns", "UDP", &["10.244.1.7"])];
        let r = p.sync(&snap, false).unwrap();
        assert!(r.full && r.fell_back && r.restored);
        let calls = dp.take_calls();
        let texts = nfts(&calls);
        assert_eq!(texts.len(), 2, "{texts:?}");
        assert!(!texts[0].contains("delete table"), "{}", texts[0]);
        assert!(
            texts[1].contains("delete table ip kube-proxy"),
            "{}",
            texts[1]
        );
        assert!(texts[1].contains("dnat to 10.244.1.7:5353"), "{}", texts[1]);
        // If that fails too, the error is returned and the next sync is full. (No iptables
        // rules are left to remove, so the two failures are the two nft runs.)
        dp.set_save_output("");
        dp.fail_next_restores(2);
        snap.slices = vec![slice("dns", "UDP", &["10.244.1.8"])];
        assert!(matches!(p.sync(&snap, false), Err(SyncError::Nft(_))));
        assert!(p.needs_full_sync());
        dp.take_calls();
        let r = p.sync(&snap, false).unwrap();
        assert!(r.full && !r.fell_back);
        assert!(nfts(&dp.take_calls())[0].contains("delete table ip kube-proxy"));
    }

    /// What a sequence of `iptables-restore --noflush` texts leaves in a kernel that held
    /// `state`: `(table, chain)` to rules (a declaration flushes, `-X` deletes).
    fn apply_restores(state: &mut BTreeMap<(String, String), Vec<String>>, texts: &[&str]) {
        for text in texts {
            let mut table = String::new();
            for line in text.lines() {
                if let Some(t) = line.strip_prefix('*') {
                    table = t.to_string();
                } else if let Some(d) = line.strip_prefix(':') {
                    let c = d.split_whitespace().next().unwrap().to_string();
                    state.insert((table.clone(), c), Vec::new());
                } else if let Some(r) = line.strip_prefix("-A ") {
                    let (c, rule) = r.split_once(' ').unwrap();
                    let chain = state.get_mut(&(table.clone(), c.to_string()));
                    chain
                        .expect("rule in an undeclared chain")
                        .push(rule.to_string());
                    // Every jump target exists already.
                    if let Some((_, t)) = rule.rsplit_once(" -j ") {
                        if t.starts_with("KUBE-") {
                            assert!(
                                state.contains_key(&(table.clone(), t.to_string())),
                                "{t} in {line}"
                            );
                        }
                    }
                } else if let Some(c) = line.strip_prefix("-X ") {
                    assert!(state.remove(&(table.clone(), c.to_string())).is_some());
                    // The kernel refuses to delete a chain a rule still jumps to.
                    let jump = format!(" -j {c}");
                    assert!(
                        !state.values().flatten().any(|r| r.ends_with(&jump)),
                        "{c} deleted while in use"
                    );
                }
            }
        }
    }

    #[test]
    fn a_large_full_sync_goes_in_parts_that_leave_the_same_rules() {
        let snap = three_services();
        let leftover = "*nat\n:KUBE-SVC-OLDOLDOLDOLDOLDO - [0:0]\nCOMMIT\n";
        let mut want = BTreeMap::new();
        let mut got = BTreeMap::new();
        for (state, part_ports) in [(&mut want, FULL_SYNC_PART_PORTS), (&mut got, 1)] {
            let dp = Recording::new();
            dp.set_save_output(leftover);
            state.insert(("nat".into(), "KUBE-SVC-OLDOLDOLDOLDOLDO".into()), vec![]);
            let mut p = proxier(&dp).with_part_ports(part_ports);
            let r = p.sync(&snap, false).unwrap();
            assert!(r.full && r.restored);
            let calls = dp.take_calls();
            let texts = restores(&calls);
            if part_ports == 1 {
                // One restore per port, then the fixed chains and the leftover's deletion.
                assert_eq!(texts.len(), 4);
                assert!(
                    texts[0].starts_with("*nat\n:KUBE-MARK-MASQ - [0:0]\n"),
                    "{}",
                    texts[0]
                );
                for part in &texts[..3] {
                    assert!(!part.contains("*filter") && !part.contains("KUBE-SERVICES"));
                    assert!(!part.contains("-X "));
                }
                assert!(texts[3].contains("*filter") && texts[3].contains(":KUBE-SERVICES"));
                assert!(texts[3].contains("-X KUBE-SVC-OLDOLDOLDOLDOLDO"));
                assert_eq!(
                    r.restore_bytes,
                    texts.iter().map(|t| t.len()).sum::<usize>()
                );
            } else {
                assert_eq!(texts.len(), 1);
            }
            // (The fake runs parallel restores in reverse order: a part jumping to
            // KUBE-MARK-MASQ before the first part wrote it would fail the replay.)
            apply_restores(state, &texts);
            // A forced full resync (kernel state known) leaves the same again.
            p.sync(&snap, true).unwrap();
            apply_restores(state, &restores(&dp.take_calls()));
            // And ones carrying changes: a new service (new chains), then an endpoint replaced
            // (a new endpoint chain, a stale one).
            let mut added = snap.clone();
            added.services.push(service("new", "10.96.0.40", "TCP"));
            added.slices.push(slice("new", "TCP", &["10.244.1.9"]));
            let mut changed = added.clone();
            changed.slices[1] = slice("web", "TCP", &["10.244.1.6", "10.244.1.8"]);
            for snap in [&added, &changed] {
                p.sync(snap, true).unwrap();
                apply_restores(state, &restores(&dp.take_calls()));
            }
            // So do first syncs after a restart, with the chains listed from the kernel: with
            // nothing changed meanwhile, with chains gone only (a service and an endpoint
            // removed), then with new ones.
            let mut shrunk = snap.clone();
            shrunk.slices[1] = slice("web", "TCP", &["10.244.1.6"]);
            for snap in [&changed, &shrunk, &snap] {
                let mut listing = String::new();
                for table in ["filter", "nat"] {
                    listing.push_str(&format!("*{table}\n"));
                    for (_, c) in state.keys().filter(|(t, _)| t == table) {
                        listing.push_str(&format!(":{c} - [0:0]\n"));
                    }
                }
                dp.set_save_output(&listing);
                let mut restarted = proxier(&dp).with_part_ports(part_ports);
                assert!(restarted.sync(snap, true).unwrap().full);
                apply_restores(state, &restores(&dp.take_calls()));
            }
        }
        assert!(!want.contains_key(&("nat".to_string(), "KUBE-SVC-OLDOLDOLDOLDOLDO".to_string())));
        assert_eq!(got, want);
    }

    #[test]
    fn crossing_the_large_cluster_threshold_rewrites_everything_once() {
        let dp = Recording::new();
        let mut p = proxier(&dp);
        let mut snap = three_services();
        p.sync(&snap, false).unwrap();
        dp.take_calls();
        let ips: Vec<String> = (0..1001)
            .map(|i| format!("10.245.{}.{}", i / 250, i % 250 + 1))
            .collect();
        let ips: Vec<&str> = ips.iter().map(String::as_str).collect();
        snap.slices[1] = slice("web", "TCP", &ips);
        let r = p.sync(&snap, false).unwrap();
        assert!(r.full && r.restored && r.rerendered == 3);
        let calls = dp.take_calls();
        let texts = restores(&calls);
        let text = texts.concat();
        // Every port's endpoint rules lost their comments, dns's too (unchanged otherwise).
        let dns_sep = text
            .lines()
            .find(|l| l.contains("DNAT --to-destination 10.244.1.5:5353"))
            .unwrap();
        assert!(dns_sep.starts_with("-A KUBE-SEP-") && !dns_sep.contains("comment"));
        assert!(text.contains("-m comment --comment \"default/dns:p cluster IP\""));
        // Back under the threshold: comments again, everywhere.
        snap.slices[1] = slice("web", "TCP", &["10.244.1.6"]);
        let r = p.sync(&snap, false).unwrap();
        assert!(r.full && r.rerendered == 3);
        let text = restores(&dp.take_calls()).concat();
        assert!(text
            .lines()
            .filter(|l| l.starts_with("-A KUBE-SEP-"))
            .all(|l| l.contains("-m comment")));
    }

    /// Three services; `web` and `api` share an endpoint IP (one `hairpin-endpoints` element).
    fn three_services() -> Snapshot {
        Snapshot {
            services: vec![
                service("dns", "10.96.0.10", "UDP"),
                service("web", "10.96.0.20", "TCP"),
                service("api", "10.96.0.30", "TCP"),
            ],
            slices: vec![
                slice("dns", "UDP", &["10.244.1.5"]),
                slice("web", "TCP", &["10.244.1.6", "10.244.1.7"]),
                slice("api", "TCP", &["10.244.1.7"]),
            ],
            nodes: vec![],
        }
    }

    #[test]
    fn a_sync_with_the_same_objects_plans_nothing_but_still_follows_nodes() {
        let dp = Recording::new();
        let mut p = proxier(&dp);
        let mut snap = three_services();
        let first = p.sync(&snap, false).unwrap();
        dp.take_calls();
        // Only a Node changed: routes follow, no rules are touched, the counts stay.
        snap.nodes = vec![node("node-b", Some("10.244.2.0/24"), Some("192.168.77.12"))];
        let r = p.sync(&snap, false).unwrap();
        assert!(!r.restored && r.rerendered == 0);
        assert_eq!(
            (r.nat_rules, r.filter_rules, r.service_ports),
            (first.nat_rules, first.filter_rules, first.service_ports)
        );
        assert_eq!(
            dp.take_calls(),
            vec![Call::RouteReplace(
                "10.244.2.0/24".into(),
                "192.168.77.12".parse().unwrap()
            )]
        );
        // An equal object in a new Arc (a resync of the watch): planned, nothing re-rendered.
        snap.services[1] = Arc::new((*snap.services[1]).clone());
        let r = p.sync(&snap, false).unwrap();
        assert!(!r.restored && r.rerendered == 0);
        // A changed Service is planned again (its ports are not the kept ones).
        snap.services[1] = service("web", "10.96.0.21", "TCP");
        let r = p.sync(&snap, false).unwrap();
        assert!(r.restored && r.rerendered == 1);
        let calls = dp.take_calls();
        assert!(restores(&calls)[0].contains("-d 10.96.0.21"));
        // A forced full sync never takes the shortcut.
        assert!(p.sync(&snap, true).unwrap().restored);
    }

    #[test]
    fn rerender_keeps_unchanged_ports_and_reports_changed_and_gone_ones() {
        let cfg = RenderConfig::default();
        let plan_of = |snap: &Snapshot| plan::plan(&snap.services, &snap.slices, &cfg).ports;
        let name = |p: &PortPlan| p.sp.key.name.clone();
        let mut snap = three_services();
        let first = rerender(Ports::new(), plan_of(&snap), name);
        assert_eq!(first.changed.len(), 3);
        assert!(first.old.is_empty());
        // api changes, dns goes, new arrives; web is kept as it was.
        snap.slices[2] = slice("api", "TCP", &["10.244.1.9"]);
        snap.services[0] = service("new", "10.96.0.40", "TCP");
        let second = rerender(first.ports, plan_of(&snap), |p| format!("{}2", name(p)));
        let names =
            |keys: Vec<&PortKey>| keys.into_iter().map(|k| k.name.clone()).collect::<Vec<_>>();
        assert_eq!(names(second.changed.iter().collect()), ["api", "new"]);
        assert_eq!(names(second.old.keys().collect()), ["api", "dns"]);
        assert_eq!(
            second
                .ports
                .values()
                .map(|(_, r)| r.as_str())
                .collect::<Vec<_>>(),
            ["api2", "new2", "web"]
        );
    }

    #[test]
    fn nftables_partial_sync_renders_and_applies_only_the_changed_service() {
        let dp = Recording::new();
        let mut p = proxier(&dp);
        p.config.mode = Mode::Nftables;
        let mut snap = three_services();
        let r = p.sync(&snap, false).unwrap();
        assert!(r.full && r.rerendered == 3);
        dp.take_calls();
        // One endpoint of web changes: only web is rendered again, and only its chains and
        // elements are in the script.
        snap.slices[1] = slice("web", "TCP", &["10.244.1.6", "10.244.1.8"]);
        let r = p.sync(&snap, false).unwrap();
        assert!(!r.full && r.restored);
        assert_eq!(r.rerendered, 1);
        let calls = dp.take_calls();
        let text = nfts(&calls)[0];
        assert!(text.contains("-default/web/tcp/p"), "{text}");
        assert!(
            !text.contains("-default/api/") && !text.contains("-default/dns/"),
            "{text}"
        );
        assert!(
            text.contains(
                "add element ip kube-proxy hairpin-endpoints { 10.244.1.8 . 10.244.1.8 }"
            ),
            "{text}"
        );
        // 10.244.1.7 is still an endpoint of api: its hairpin element stays.
        assert!(!text.contains("10.244.1.7 . 10.244.1.7"), "{text}");
        // The same as the full render would give: a forced full sync after it changes nothing
        // in the rules it writes.
        let full = nftables::render(&snap.services, &snap.slices, &p.config.render);
        assert_eq!(r.nat_rules, full.rules.rule_count());
        assert_eq!(r.filter_rules, full.rules.element_count());
    }

    #[test]
    fn nftables_partial_sync_removes_a_deleted_services_chains_and_only_its_elements() {
        let dp = Recording::new();
        let mut p = proxier(&dp);
        p.config.mode = Mode::Nftables;
        let mut snap = three_services();
        p.sync(&snap, false).unwrap();
        dp.take_calls();
        snap.services.remove(2);
        snap.slices.remove(2);
        let r = p.sync(&snap, false).unwrap();
        assert!(!r.full && r.restored && r.rerendered == 0);
        let calls = dp.take_calls();
        let text = nfts(&calls)[0];
        let api = nftables::chain_base(&PortKey {
            namespace: "default".into(),
            name: "api".into(),
            port_name: "p".into(),
            protocol: crate::model::Protocol::Tcp,
        });
        assert!(
            text.contains(&format!("delete chain ip kube-proxy service-{api}")),
            "{text}"
        );
        assert!(
            text.contains("delete element ip kube-proxy service-ips { 10.96.0.30 . tcp . 53 }"),
            "{text}"
        );
        assert!(
            text.contains("delete element ip kube-proxy cluster-ips { 10.96.0.30 }"),
            "{text}"
        );
        // web still has 10.244.1.7.
        assert!(!text.contains("hairpin-endpoints"), "{text}");
        assert!(!text.contains("-default/web/"), "{text}");
        // Now web goes too: the shared hairpin element goes with its last user.
        snap.services.remove(1);
        snap.slices.remove(1);
        p.sync(&snap, false).unwrap();
        let calls = dp.take_calls();
        let text = nfts(&calls)[0];
        assert!(
            text.contains(
                "delete element ip kube-proxy hairpin-endpoints { 10.244.1.7 . 10.244.1.7 }"
            ),
            "{text}"
        );
    }

    #[test]
    fn iptables_partial_sync_rewrites_only_the_changed_service_and_kube_services_when_needed() {
        let dp = Recording::new();
        let mut p = proxier(&dp);
        let mut snap = three_services();
        p.sync(&snap, false).unwrap();
        dp.take_calls();
        // An endpoint change: the service's chains only.
        snap.slices[1] = slice("web", "TCP", &["10.244.1.6", "10.244.1.8"]);
        let r = p.sync(&snap, false).unwrap();
        assert!(!r.full && r.restored && r.rerendered == 1);
        let calls = dp.take_calls();
        let text = restores(&calls)[0];
        let web = PortKey {
            namespace: "default".into(),
            name: "web".into(),
            port_name: "p".into(),
            protocol: crate::model::Protocol::Tcp,
        };
        assert!(
            text.contains(&format!(":{} - [0:0]", rules::svc_chain(&web))),
            "{text}"
        );
        assert!(!text.contains(":KUBE-SERVICES"), "{text}");
        assert!(
            !text.contains("default/api") && !text.contains("default/dns"),
            "{text}"
        );
        // api loses its last endpoint: nat KUBE-SERVICES no longer sends to it, filter
        // KUBE-SERVICES rejects it, its chains go.
        snap.slices[2] = slice("api", "TCP", &[]);
        let r = p.sync(&snap, false).unwrap();
        assert!(!r.full && r.rerendered == 1);
        let calls = dp.take_calls();
        let text = restores(&calls)[0];
        assert!(text.contains("*filter\n:KUBE-SERVICES - [0:0]"), "{text}");
        assert!(
            text.contains(
                "default/api:p has no endpoints\" -m tcp -p tcp -d 10.96.0.30 --dport 53 -j REJECT"
            ),
            "{text}"
        );
        assert!(text.contains("*nat\n:KUBE-SERVICES - [0:0]"), "{text}");
        assert!(text.contains("-X KUBE-SEP-"), "{text}");
        // What the kernel has is what a full render gives.
        let full = rules::render(&snap.services, &snap.slices, &p.config.render);
        assert_eq!(p.ipt.as_ref().unwrap().fixed, full.rules.select(true));
        assert_eq!(r.nat_rules, full.rules.nat.rule_count());
        assert_eq!(r.filter_rules, full.rules.filter.rule_count());
        // A deleted service's chains are deleted.
        let api = PortKey {
            name: "api".into(),
            ..web.clone()
        };
        snap.slices[2] = slice("api", "TCP", &["10.244.1.9"]);
        p.sync(&snap, false).unwrap();
        dp.take_calls();
        snap.services.remove(2);
        snap.slices.remove(2);
        p.sync(&snap, false).unwrap();
        let calls = dp.take_calls();
        let text = restores(&calls)[0];
        assert!(
            text.contains(&format!("-X {}", rules::svc_chain(&api))),
            "{text}"
        );
        // web is untouched (only jumped to from the rewritten KUBE-SERVICES).
        assert!(
            !text.contains(&format!(":{}", rules::svc_chain(&web))),
            "{text}"
        );
    }

    #[test]
    fn iptables_failed_partial_restore_falls_back_to_a_full_sync_at_once() {
        let dp = Recording::new();
        let mut p = proxier(&dp);
        let mut snap = three_services();
        p.sync(&snap, false).unwrap();
        dp.take_calls();
        dp.fail_next_restores(1);
        snap.slices[1] = slice("web", "TCP", &["10.244.1.6"]);
        let r = p.sync(&snap, false).unwrap();
        assert!(r.full && r.fell_back && r.restored && r.rerendered == 3);
        let calls = dp.take_calls();
        // The failed partial restore, then iptables-save (the kernel state is unknown) and
        // a full restore.
        let texts = restores(&calls);
        assert_eq!(texts.len(), 2);
        assert!(!texts[0].contains("*filter"));
        assert!(texts[1].contains("*filter") && texts[1].contains("default/dns"));
        assert!(calls.contains(&Call::Save));
        assert!(!p.needs_full_sync());
    }

    #[test]
    fn failed_restore_forces_a_full_sync_with_fresh_kernel_state() {
        let dp = Recording::new();
        let mut p = proxier(&dp);
        let snap = Snapshot {
            services: vec![service("web", "10.96.0.20", "TCP")],
            slices: vec![slice("web", "TCP", &["10.244.1.5"])],
            nodes: vec![],
        };
        dp.fail_next_restores(1);
        assert!(matches!(p.sync(&snap, false), Err(SyncError::Restore(_))));
        assert!(p.needs_full_sync());
        dp.take_calls();
        let r = p.sync(&snap, false).unwrap();
        assert!(r.full && r.restored);
        let calls = dp.take_calls();
        assert_eq!(calls[0], Call::Save);
        assert!(!p.needs_full_sync());
    }

    #[test]
    fn a_kernel_refusing_sctp_loses_only_the_sctp_ports() {
        let dp = Recording::new();
        let mut p = proxier(&dp);
        let snap = Snapshot {
            services: vec![
                service("web", "10.96.0.20", "TCP"),
                service("sig", "10.96.0.21", "SCTP"),
            ],
            slices: vec![
                slice("web", "TCP", &["10.244.1.5"]),
                slice("sig", "SCTP", &["10.244.1.6"]),
            ],
            nodes: vec![],
        };
        dp.fail_next_restores(1);
        let r = p.sync(&snap, false).unwrap();
        assert!(r.restored);
        let calls = dp.take_calls();
        let texts = restores(&calls);
        assert_eq!(texts.len(), 2);
        assert!(texts[0].contains("-p sctp") && !texts[1].contains("-p sctp"));
        assert!(texts[1].contains("default/web:p cluster IP"));
        assert_eq!(r.new_warnings.len(), 1);
        assert_eq!(r.new_warnings[0].name, "sig");
        assert_eq!(r.new_warnings[0].reason, "UnsupportedProtocol");
    }

    #[test]
    fn conntrack_missing_is_skipped_quietly() {
        let dp = Recording::new();
        dp.set_conntrack_installed(false);
        let mut p = proxier(&dp);
        let mut snap = Snapshot {
            services: vec![service("dns", "10.96.0.10", "UDP")],
            slices: vec![slice("dns", "UDP", &["10.244.1.5", "10.244.1.6"])],
            nodes: vec![],
        };
        p.sync(&snap, false).unwrap();
        snap.slices = vec![slice("dns", "UDP", &["10.244.1.5"])];
        let r = p.sync(&snap, false).unwrap();
        assert_eq!(r.conntrack_deleted, 0);
    }

    #[test]
    fn stale_flows_cover_every_destination_and_first_endpoints() {
        let ip = |s: &str| s.parse::<Ipv4Addr>().unwrap();
        let key = PortKey {
            namespace: "ns".into(),
            name: "dns".into(),
            port_name: "".into(),
            protocol: crate::model::Protocol::Udp,
        };
        let dests = vec![
            UdpDestination::Ip(ip("10.96.0.10"), 53),
            UdpDestination::NodePort(30053),
        ];
        let state = |ips: &[&str]| -> UdpState {
            [(
                key.clone(),
                (dests.clone(), ips.iter().map(|s| ip(s)).collect()),
            )]
            .into()
        };
        assert!(stale_flows(None, &state(&["10.244.1.5"])).is_empty());
        let got: Vec<Flow> = stale_flows(
            Some(&state(&["10.244.1.5", "10.244.1.6"])),
            &state(&["10.244.1.5"]),
        )
        .into_iter()
        .collect();
        assert_eq!(
            got,
            vec![
                Flow::IpToEndpoint {
                    orig_dst: ip("10.96.0.10"),
                    endpoint: ip("10.244.1.6")
                },
                Flow::NodePortToEndpoint {
                    port: 30053,
                    endpoint: ip("10.244.1.6")
                },
            ]
        );
        // Service deleted: its endpoints' entries go too.
        assert_eq!(
            stale_flows(Some(&state(&["10.244.1.5"])), &UdpState::new()).len(),
            2
        );
        // First endpoint after none.
        let got: Vec<Flow> = stale_flows(Some(&state(&[])), &state(&["10.244.1.5"]))
            .into_iter()
            .collect();
        assert_eq!(
            got,
            vec![
                Flow::AllToIp {
                    orig_dst: ip("10.96.0.10")
                },
                Flow::AllToNodePort { port: 30053 }
            ]
        );
    }

    #[test]
    fn routes_follow_other_nodes_and_only_ours_are_removed() {
        let nodes = vec![
            node("node-a", Some("10.244.1.0/24"), Some("192.168.77.11")),
            node("node-b", Some("10.244.2.0/24"), Some("192.168.77.12")),
            node("node-c", None, Some("192.168.77.13")),
            node("node-d", Some("10.244.4.0/24"), None),
        ];
        let want: Routes = [(
            "10.244.2.0/24".to_string(),
            "192.168.77.12".parse().unwrap(),
        )]
        .into();
        assert_eq!(desired_routes(&nodes, "node-a"), want);

        let dp = Recording::new();
        // A stale route of ours (node-z is gone) and one with an old gateway.
        dp.set_routes(
            [
                (
                    "10.244.9.0/24".to_string(),
                    "192.168.77.19".parse().unwrap(),
                ),
                (
                    "10.244.2.0/24".to_string(),
                    "192.168.77.99".parse().unwrap(),
                ),
            ]
            .into(),
        );
        let mut p = proxier(&dp);
        let mut snap = Snapshot {
            nodes,
            ..Default::default()
        };
        let r = p.sync(&snap, false).unwrap();
        assert!(r.route_errors.is_empty());
        assert_eq!(dp.current_routes(), want);
        // node-b leaves: its route goes.
        snap.nodes
            .retain(|n| n.metadata.name.as_deref() != Some("node-b"));
        dp.take_calls();
        p.sync(&snap, false).unwrap();
        assert_eq!(
            dp.take_calls()
                .into_iter()
                .filter(|c| matches!(c, Call::RouteDelete(_) | Call::RouteReplace(..)))
                .collect::<Vec<_>>(),
            vec![Call::RouteDelete("10.244.2.0/24".into())]
        );
        assert!(dp.current_routes().is_empty());
    }

    #[test]
    fn warnings_are_reported_once() {
        let dp = Recording::new();
        let mut p = proxier(&dp);
        let snap = Snapshot {
            services: vec![service("bad", "10.96.0.30", "ICMP")],
            ..Default::default()
        };
        assert_eq!(p.sync(&snap, false).unwrap().new_warnings.len(), 1);
        assert!(p.sync(&snap, false).unwrap().new_warnings.is_empty());
        assert!(p
            .sync(&Snapshot::default(), false)
            .unwrap()
            .new_warnings
            .is_empty());
        assert_eq!(p.sync(&snap, false).unwrap().new_warnings.len(), 1);
    }
}
