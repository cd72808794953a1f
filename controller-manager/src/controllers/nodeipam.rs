//! Node IPAM (upstream `pkg/controller/nodeipam`, range allocator): gives every Node a
//! `spec.podCIDR` / `spec.podCIDRs` carved from `--cluster-cidr` (default `10.244.0.0/16`) in
//! blocks of `--node-cidr-mask-size` (default /24).
//!
//! The allocation lives in the Node objects themselves: before the first allocation the
//! allocator is rebuilt from every Node that already has a CIDR, and one worker allocates, so a
//! restart or a second instance never hands out a CIDR twice. Deleted nodes release theirs.
//! Blocks overlapping `--service-cluster-ip-range` are never handed out.

use std::collections::{BTreeSet, HashMap};
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::Node;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use serde_json::json;

use crate::framework::{
    Action, BoxFuture, Change, Controller, ControllerContext, Error, EventRecorder, EventType,
    Informer, ObjectKey, ReconcileContext, Reconciler, Result,
};

/// The pod network when `--cluster-cidr` is not given.
pub const DEFAULT_CLUSTER_CIDR: &str = "10.244.0.0/16";

fn parse_v4(cidr: &str) -> std::result::Result<(u32, u8), String> {
    let (ip, len) = cidr
        .trim()
        .split_once('/')
        .ok_or_else(|| format!("invalid CIDR {cidr:?}"))?;
    let ip: Ipv4Addr = ip
        .parse()
        .map_err(|_| format!("invalid IPv4 CIDR {cidr:?}"))?;
    let len: u8 = len
        .parse()
        .ok()
        .filter(|l| *l <= 32)
        .ok_or_else(|| format!("invalid prefix length in {cidr:?}"))?;
    let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
    Ok((u32::from(ip) & mask, len))
}

/// A set of equally sized subnets of one cluster CIDR (upstream `cidrset.CidrSet`).
#[derive(Debug, Clone)]
pub struct CidrSet {
    base: u32,
    prefix: u8,
    node_mask: u8,
    used: BTreeSet<u32>,
    next: u32,
}

impl CidrSet {
    /// The IPv4 entry of `cluster_cidr` (comma-separated for dual-stack) cut into `/node_mask`s.
    pub fn new(cluster_cidr: &str, node_mask: u8) -> std::result::Result<Self, String> {
        let v4 = cluster_cidr
            .split(',')
            .map(str::trim)
            .find(|c| !c.contains(':'))
            .ok_or_else(|| format!("no IPv4 range in --cluster-cidr {cluster_cidr:?}"))?;
        let (base, prefix) = parse_v4(v4)?;
        if node_mask < prefix || node_mask > 32 || node_mask - prefix > 24 {
            return Err(format!(
                "--node-cidr-mask-size {node_mask} does not fit --cluster-cidr {v4}"
            ));
        }
        Ok(Self {
            base,
            prefix,
            node_mask,
            used: BTreeSet::new(),
            next: 0,
        })
    }

    fn capacity(&self) -> u32 {
        1u32 << (self.node_mask - self.prefix)
    }

    fn render(&self, i: u32) -> String {
        let ip = self.base + (i << (32 - self.node_mask));
        format!("{}/{}", Ipv4Addr::from(ip), self.node_mask)
    }

    fn index_of(&self, cidr: &str) -> Option<u32> {
        let (ip, len) = parse_v4(cidr).ok()?;
        if len != self.node_mask || self.prefix > 0 && (ip ^ self.base) >> (32 - self.prefix) != 0 {
            return None;
        }
        Some((ip - self.base) >> (32 - self.node_mask))
    }

    /// Mark `cidr` used; false when it is not a block of this set.
    pub fn occupy(&mut self, cidr: &str) -> bool {
        match self.index_of(cidr) {
            Some(i) => {
                self.used.insert(i);
                true
            }
            None => false,
        }
    }

    /// Mark every block overlapping `range` used (e.g. the Service range).
    pub fn exclude(&mut self, range: &str) {
        let Ok((ip, len)) = parse_v4(range) else {
            return;
        };
        for i in 0..self.capacity() {
            let (b, l) = (self.base + (i << (32 - self.node_mask)), self.node_mask);
            let shorter = len.min(l);
            let m = if shorter == 0 {
                0
            } else {
                u32::MAX << (32 - shorter)
            };
            if b & m == ip & m {
                self.used.insert(i);
            }
        }
    }

    pub fn release(&mut self, cidr: &str) {
        if let Some(i) = self.index_of(cidr) {
            self.used.remove(&i);
        }
    }

    /// The next free block, round-robin from the last allocation (as upstream).
    pub fn allocate(&mut self) -> Option<String> {
        let cap = self.capacity();
        for k in 0..cap {
            let i = (self.next + k) % cap;
            if !self.used.contains(&i) {
                self.used.insert(i);
                self.next = (i + 1) % cap;
                return Some(self.render(i));
            }
        }
        None
    }
}

struct State {
    set: CidrSet,
    by_node: HashMap<String, String>,
}

struct NodeIpam {
    client: Client,
    nodes: Informer<Node>,
    state: Mutex<State>,
    rebuilt: AtomicBool,
    recorder: EventRecorder,
}

impl NodeIpam {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn node_cidr(node: &Node) -> Option<String> {
        let spec = node.spec.as_ref()?;
        spec.pod_cidr
            .clone()
            .filter(|c| !c.is_empty())
            .or_else(|| spec.pod_cidrs.as_ref()?.first().cloned())
    }

    /// Load every allocation already recorded in Nodes (once, before allocating).
    fn rebuild(&self) {
        if self.rebuilt.swap(true, Ordering::SeqCst) {
            return;
        }
        let mut st = self.lock();
        for n in self.nodes.store().state() {
            if let (Some(name), Some(cidr)) = (n.metadata.name.clone(), Self::node_cidr(&n)) {
                for c in n
                    .spec
                    .as_ref()
                    .and_then(|s| s.pod_cidrs.clone())
                    .unwrap_or_else(|| vec![cidr.clone()])
                {
                    st.set.occupy(&c);
                }
                st.by_node.insert(name, cidr);
            }
        }
        tracing::info!(
            allocated = st.by_node.len(),
            "node IPAM rebuilt from existing nodes"
        );
    }
}

impl Reconciler for NodeIpam {
    async fn reconcile(&self, key: &ObjectKey, _ctx: &ReconcileContext) -> Result<Action> {
        self.rebuild();
        let Some(node) = self.nodes.get(None, &key.name) else {
            let mut st = self.lock();
            if let Some(c) = st.by_node.remove(&key.name) {
                st.set.release(&c);
                tracing::info!(node = %key.name, cidr = %c, "released pod CIDR of deleted node");
            }
            return Ok(Action::done());
        };
        if let Some(c) = Self::node_cidr(&node) {
            let mut st = self.lock();
            st.set.occupy(&c);
            st.by_node.insert(key.name.clone(), c);
            return Ok(Action::done());
        }
        let cidr = {
            let mut st = self.lock();
            // A CIDR allocated earlier whose write the cache has not shown yet is reused.
            match st.by_node.get(&key.name).cloned() {
                Some(c) => Some(c),
                None => st.set.allocate(),
            }
        };
        let Some(cidr) = cidr else {
            self.recorder.event(
                &*node,
                EventType::Normal,
                "CIDRNotAvailable",
                format!("Node {} status is now: CIDRNotAvailable", key.name),
            );
            return Err(Error::msg("no pod CIDR left in --cluster-cidr"));
        };
        self.lock().by_node.insert(key.name.clone(), cidr.clone());
        let patch = json!({"spec": {"podCIDR": cidr, "podCIDRs": [cidr]}});
        match Api::<Node>::all(self.client.clone())
            .patch(&key.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {
                tracing::info!(node = %key.name, cidr = %cidr, "allocated pod CIDR");
                Ok(Action::done())
            }
            Err(e) => {
                if !matches!(&e, kube::Error::Api(s) if s.code == 404) {
                    self.recorder.event(
                        &*node,
                        EventType::Warning,
                        "CIDRAssignmentFailed",
                        format!("Node {} status is now: CIDRAssignmentFailed", key.name),
                    );
                }
                let mut st = self.lock();
                st.by_node.remove(&key.name);
                st.set.release(&cidr);
                Err(e.into())
            }
        }
    }
}

/// Start the `nodeipam` controller.
pub fn start(ctx: &ControllerContext) -> Result<BoxFuture<'static, ()>> {
    if !ctx.config.allocate_node_cidrs {
        tracing::info!("--allocate-node-cidrs=false: node IPAM does nothing");
        let token = ctx.token.clone();
        return Ok(Box::pin(async move { token.cancelled().await }));
    }
    let cidr = ctx
        .config
        .cluster_cidr
        .clone()
        .unwrap_or_else(|| DEFAULT_CLUSTER_CIDR.into());
    let mut set = CidrSet::new(&cidr, ctx.config.node_cidr_mask_size).map_err(Error::msg)?;
    if let Some(svc) = &ctx.config.service_cluster_ip_range {
        for r in svc.split(',') {
            set.exclude(r);
        }
    }
    let nodes = ctx.informers.informer::<Node>();
    let rec = Arc::new(NodeIpam {
        client: ctx.client.clone(),
        nodes: nodes.clone(),
        state: Mutex::new(State {
            set,
            by_node: HashMap::new(),
        }),
        rebuilt: AtomicBool::new(false),
        recorder: ctx.recorder("cidrAllocator"),
    });
    let controller = Controller::new("nodeipam", rec, ctx.metrics.clone());
    let q = controller.queue();
    nodes.subscribe(move |c: &Change<Node>| {
        let n = c.object();
        let changed = match c {
            Change::Updated { old, new } => NodeIpam::node_cidr(old) != NodeIpam::node_cidr(new),
            _ => true,
        };
        if changed {
            q.add(ObjectKey::cluster(
                n.metadata.name.as_deref().unwrap_or_default(),
            ));
        }
    });
    let synced = async move { nodes.wait_synced().await };
    // One worker: allocation is sequential.
    Ok(Box::pin(controller.run(1, synced, ctx.token.clone())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocates_distinct_blocks_and_reuses_released_ones() {
        let mut s = CidrSet::new("10.244.0.0/16", 24).unwrap();
        assert!(s.occupy("10.244.0.0/24"));
        assert!(!s.occupy("10.245.0.0/24"));
        assert!(!s.occupy("10.244.1.0/25"));
        assert_eq!(s.allocate().as_deref(), Some("10.244.1.0/24"));
        assert_eq!(s.allocate().as_deref(), Some("10.244.2.0/24"));
        s.release("10.244.1.0/24");
        // Round-robin: the released block comes back only after the range wraps.
        assert_eq!(s.allocate().as_deref(), Some("10.244.3.0/24"));
    }

    #[test]
    fn small_ranges_run_out_and_wrap() {
        let mut s = CidrSet::new("10.0.0.0/23", 24).unwrap();
        assert_eq!(s.allocate().as_deref(), Some("10.0.0.0/24"));
        assert_eq!(s.allocate().as_deref(), Some("10.0.1.0/24"));
        assert_eq!(s.allocate(), None);
        s.release("10.0.0.0/24");
        assert_eq!(s.allocate().as_deref(), Some("10.0.0.0/24"));
    }

    #[test]
    fn configuration_is_validated_and_service_range_excluded() {
        assert!(CidrSet::new("10.244.0.0/16", 8).is_err());
        assert!(CidrSet::new("fd00::/48", 64).is_err());
        let mut s = CidrSet::new("fd00::/48,10.1.0.0/16", 17).unwrap();
        assert_eq!(s.allocate().as_deref(), Some("10.1.0.0/17"));
        let mut s = CidrSet::new("10.0.0.0/16", 24).unwrap();
        s.exclude("10.0.0.0/23");
        assert_eq!(s.allocate().as_deref(), Some("10.0.2.0/24"));
    }
}
