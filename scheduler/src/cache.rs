//! The scheduler's view of the cluster: compact [`PodInfo`]/[`NodeInfo`] records built from
//! the informers, plus pods the scheduler has *assumed* onto nodes before their binding is
//! observed.
//!
//! Guarantees: a pod is counted on at most one node; an assumed pod is counted from the moment
//! it is decided until the watch confirms the binding (it is then replaced by the observed
//! pod), the binding fails ([`Cache::forget_pod`]), or it expires [`ASSUMED_POD_TTL`] after its
//! binding finished without being observed. Nodes that hold pods but whose Node object is not
//! (yet, or any more) known are kept but never offered to the scheduler.

use crate::resources::{pod_requests, Resources};
use apimachinery::selectors::LabelSelector;
use k8s_openapi::api::core::v1::{
    Node, NodeSelectorTerm, PersistentVolume, PersistentVolumeClaim, Pod, Taint, Toleration,
    TopologySpreadConstraint,
};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The node label naming the node itself (system default spreading's per-node domain).
pub const LABEL_HOSTNAME: &str = "kubernetes.io/hostname";
/// The node label naming the node's zone (system default spreading's wider domain).
pub const LABEL_ZONE: &str = "topology.kubernetes.io/zone";

/// How long a pod whose binding succeeded stays counted without the watch showing it bound.
pub const ASSUMED_POD_TTL: Duration = Duration::from_secs(30);

/// `namespace/name`.
pub fn pod_key(pod: &Pod) -> String {
    format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or("default"),
        pod.metadata.name.as_deref().unwrap_or("")
    )
}

/// One hostPort a pod uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostPort {
    pub ip: String,
    pub protocol: String,
    pub port: i32,
}

impl HostPort {
    /// Upstream `HostPortInfo` conflict rule: same protocol and port, and the same IP or either
    /// is a wildcard.
    pub fn conflicts(&self, o: &HostPort) -> bool {
        self.port == o.port
            && self.protocol == o.protocol
            && (self.ip == o.ip || self.ip == "0.0.0.0" || o.ip == "0.0.0.0")
    }
}

/// A compiled pod (anti-)affinity term.
#[derive(Clone, Debug)]
pub struct AffinityTerm {
    pub selector: LabelSelector,
    /// Namespaces the term applies to; empty with `all_namespaces` false means the pod's own.
    pub namespaces: Vec<String>,
    pub all_namespaces: bool,
    pub topology_key: String,
    /// Preferred terms' weight; 1 for required terms.
    pub weight: i32,
}

impl AffinityTerm {
    /// Whether `pod` is selected by this term of a pod in `owner_ns`.
    pub fn matches(&self, owner_ns: &str, pod: &PodInfo) -> bool {
        let ns_ok = self.all_namespaces
            || if self.namespaces.is_empty() {
                pod.namespace == owner_ns
            } else {
                self.namespaces.contains(&pod.namespace)
            };
        ns_ok && selector_matches(&self.selector, &pod.labels)
    }
}

/// Evaluate an apimachinery label selector against a label map (upstream
/// `Requirement.Matches`), borrowing label values: this runs for every placed pod a spread
/// constraint or affinity term looks at, so it must not allocate.
pub fn selector_matches(sel: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    use apimachinery::selectors::Operator;
    if sel.is_nothing() {
        return false;
    }
    sel.requirements().iter().all(|r| {
        let actual = labels.get(r.key()).map(String::as_str);
        let has = |v: &str| r.values().iter().any(|x| x == v);
        match r.operator() {
            Operator::In | Operator::Equals | Operator::DoubleEquals => actual.is_some_and(has),
            Operator::NotIn | Operator::NotEquals => actual.is_none_or(|v| !has(v)),
            Operator::Exists => actual.is_some(),
            Operator::DoesNotExist => actual.is_none(),
            op @ (Operator::GreaterThan | Operator::LessThan) => {
                let (Some(Ok(have)), [want]) = (actual.map(str::parse::<i64>), r.values()) else {
                    return false;
                };
                let Ok(want) = want.parse::<i64>() else {
                    return false;
                };
                if op == Operator::GreaterThan {
                    have > want
                } else {
                    have < want
                }
            }
        }
    })
}

/// A fast, non-keyed hasher (rustc's Fx) for the small string-keyed maps the scheduler looks up
/// per node per cycle; their keys come from the cluster, not from untrusted network peers.
#[derive(Clone, Copy, Default, Debug)]
pub struct FxBuild;

/// The [`FxBuild`] state.
#[derive(Default)]
pub struct FxHasher(u64);

impl std::hash::Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        const K: u64 = 0x51_7c_c1_b7_27_22_0a_95;
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let w = u64::from_le_bytes(c.try_into().expect("8 bytes"));
            self.0 = (self.0.rotate_left(5) ^ w).wrapping_mul(K);
        }
        for b in chunks.remainder() {
            self.0 = (self.0.rotate_left(5) ^ u64::from(*b)).wrapping_mul(K);
        }
    }
    fn write_u8(&mut self, i: u8) {
        self.write(&[i]);
    }
    fn write_usize(&mut self, i: usize) {
        self.write(&(i as u64).to_le_bytes());
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

impl std::hash::BuildHasher for FxBuild {
    type Hasher = FxHasher;
    fn build_hasher(&self) -> FxHasher {
        FxHasher::default()
    }
}

/// A `HashMap` with [`FxBuild`].
pub type FxHashMap<K, V> = HashMap<K, V, FxBuild>;

/// Compile a `metav1.LabelSelector` (absent = matches nothing, as upstream treats a nil
/// selector in affinity terms and spread constraints).
pub fn compile_selector<T: serde::Serialize>(sel: Option<&T>) -> LabelSelector {
    match sel.and_then(|s| serde_json::to_value(s).ok()) {
        Some(v) => LabelSelector::from_json(&v).unwrap_or_else(|_| LabelSelector::nothing()),
        None => LabelSelector::nothing(),
    }
}

/// The scheduling-relevant part of a pod, kept for queued and for assigned pods.
#[derive(Clone, Debug, Default)]
pub struct PodInfo {
    pub key: String,
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub labels: BTreeMap<String, String>,
    pub node_name: Option<String>,
    pub nominated_node_name: Option<String>,
    pub scheduler_name: String,
    pub priority: i32,
    pub preempt_never: bool,
    pub terminating: bool,
    pub creation: Option<k8s_openapi::jiff::Timestamp>,
    /// Requests for fit (upstream `PodRequests`).
    pub requests: Resources,
    /// CPU and memory with the scoring defaults for unset requests.
    pub non_zero: Resources,
    pub host_ports: Vec<HostPort>,
    pub node_selector: BTreeMap<String, String>,
    pub required_node_affinity: Option<Vec<NodeSelectorTerm>>,
    pub preferred_node_affinity: Vec<(i32, NodeSelectorTerm)>,
    pub tolerations: Vec<Toleration>,
    pub spread_constraints: Vec<TopologySpreadConstraint>,
    pub required_affinity: Vec<AffinityTerm>,
    pub required_anti_affinity: Vec<AffinityTerm>,
    pub preferred_affinity: Vec<AffinityTerm>,
    pub preferred_anti_affinity: Vec<AffinityTerm>,
    pub pvcs: Vec<String>,
    /// The controlling owner's uid (ReplicaSet, StatefulSet, …) for default spreading.
    pub owner_uid: Option<String>,
    /// The [`Cache`]'s number for `owner_uid`, set while the pod is placed in the cache.
    pub owner_id: Option<u32>,
    pub scheduling_gated: bool,
    /// Hash of labels, annotations and spec: a change can alter the scheduling outcome,
    /// a status-only update cannot.
    pub fingerprint: u64,
}

fn compile_terms(
    ns: &str,
    terms: impl IntoIterator<Item = (i32, k8s_openapi::api::core::v1::PodAffinityTerm)>,
) -> Vec<AffinityTerm> {
    terms
        .into_iter()
        .map(|(weight, t)| {
            let all_namespaces = t.namespace_selector.as_ref().is_some_and(|s| {
                s.match_labels.as_ref().is_none_or(|m| m.is_empty())
                    && s.match_expressions.as_ref().is_none_or(|m| m.is_empty())
            });
            let mut namespaces = t.namespaces.clone().unwrap_or_default();
            if namespaces.is_empty() && !all_namespaces {
                namespaces.push(ns.to_string());
            }
            AffinityTerm {
                selector: compile_selector(t.label_selector.as_ref()),
                namespaces,
                all_namespaces,
                topology_key: t.topology_key,
                weight,
            }
        })
        .collect()
}

fn fingerprint(pod: &Pod) -> u64 {
    use std::hash::{Hash, Hasher};
    /// Feeds the spec's JSON to the hasher as it is written, instead of building a string.
    struct HashWriter<'a>(&'a mut std::collections::hash_map::DefaultHasher);
    impl std::io::Write for HashWriter<'_> {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.write(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut h = std::collections::hash_map::DefaultHasher::new();
    pod.metadata.labels.hash(&mut h);
    pod.metadata.annotations.hash(&mut h);
    let _ = serde_json::to_writer(HashWriter(&mut h), &pod.spec);
    h.finish()
}

impl PodInfo {
    pub fn from_pod(pod: &Pod) -> Self {
        let meta = &pod.metadata;
        let namespace = meta.namespace.clone().unwrap_or_else(|| "default".into());
        let name = meta.name.clone().unwrap_or_default();
        let no_spec;
        let spec = match &pod.spec {
            Some(s) => s,
            None => {
                no_spec = k8s_openapi::api::core::v1::PodSpec::default();
                &no_spec
            }
        };
        let mut host_ports = Vec::new();
        for c in spec
            .containers
            .iter()
            .chain(spec.init_containers.iter().flatten())
        {
            for p in c.ports.iter().flatten() {
                if let Some(hp) = p.host_port.filter(|p| *p > 0) {
                    let ip = p
                        .host_ip
                        .clone()
                        .filter(|s| !s.is_empty())
                        .unwrap_or_else(|| "0.0.0.0".into());
                    host_ports.push(HostPort {
                        ip,
                        protocol: p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                        port: hp,
                    });
                }
            }
        }
        let aff = spec.affinity.clone().unwrap_or_default();
        let na = aff.node_affinity.unwrap_or_default();
        let pa = aff.pod_affinity.unwrap_or_default();
        let paa = aff.pod_anti_affinity.unwrap_or_default();
        let req = |v: Option<Vec<k8s_openapi::api::core::v1::PodAffinityTerm>>| {
            v.unwrap_or_default().into_iter().map(|t| (1, t))
        };
        let pref = |v: Option<Vec<k8s_openapi::api::core::v1::WeightedPodAffinityTerm>>| {
            v.unwrap_or_default()
                .into_iter()
                .map(|w| (w.weight, w.pod_affinity_term))
        };
        let owner_uid = meta
            .owner_references
            .iter()
            .flatten()
            .find(|o| o.controller == Some(true))
            .map(|o| o.uid.clone());
        PodInfo {
            key: format!("{namespace}/{name}"),
            uid: meta.uid.clone().unwrap_or_default(),
            labels: meta.labels.clone().unwrap_or_default(),
            node_name: spec.node_name.clone().filter(|n| !n.is_empty()),
            nominated_node_name: pod
                .status
                .as_ref()
                .and_then(|s| s.nominated_node_name.clone())
                .filter(|n| !n.is_empty()),
            scheduler_name: spec
                .scheduler_name
                .clone()
                .unwrap_or_else(|| crate::DEFAULT_SCHEDULER_NAME.into()),
            priority: spec.priority.unwrap_or(0),
            preempt_never: spec.preemption_policy.as_deref() == Some("Never"),
            terminating: meta.deletion_timestamp.is_some(),
            creation: meta.creation_timestamp.as_ref().map(|t| t.0),
            requests: pod_requests(spec, false),
            non_zero: pod_requests(spec, true),
            host_ports,
            node_selector: spec.node_selector.clone().unwrap_or_default(),
            required_node_affinity: na
                .required_during_scheduling_ignored_during_execution
                .map(|s| s.node_selector_terms),
            preferred_node_affinity: na
                .preferred_during_scheduling_ignored_during_execution
                .unwrap_or_default()
                .into_iter()
                .map(|p| (p.weight, p.preference))
                .collect(),
            tolerations: spec.tolerations.clone().unwrap_or_default(),
            spread_constraints: spec.topology_spread_constraints.clone().unwrap_or_default(),
            required_affinity: compile_terms(
                &namespace,
                req(pa.required_during_scheduling_ignored_during_execution),
            ),
            required_anti_affinity: compile_terms(
                &namespace,
                req(paa.required_during_scheduling_ignored_during_execution),
            ),
            preferred_affinity: compile_terms(
                &namespace,
                pref(pa.preferred_during_scheduling_ignored_during_execution),
            ),
            preferred_anti_affinity: compile_terms(
                &namespace,
                pref(paa.preferred_during_scheduling_ignored_during_execution),
            ),
            pvcs: spec
                .volumes
                .iter()
                .flatten()
                .filter_map(|v| {
                    v.persistent_volume_claim
                        .as_ref()
                        .map(|c| c.claim_name.clone())
                })
                .collect(),
            owner_uid,
            owner_id: None,
            scheduling_gated: spec
                .scheduling_gates
                .as_ref()
                .is_some_and(|g| !g.is_empty()),
            fingerprint: fingerprint(pod),
            namespace,
            name,
        }
    }

    pub fn has_affinity(&self) -> bool {
        !(self.required_affinity.is_empty()
            && self.required_anti_affinity.is_empty()
            && self.preferred_affinity.is_empty()
            && self.preferred_anti_affinity.is_empty())
    }
}

/// The scheduling-relevant part of a node plus what is placed on it.
#[derive(Clone, Debug, Default)]
pub struct NodeInfo {
    pub name: String,
    /// False while only pods, not the Node object, are known.
    pub present: bool,
    pub labels: BTreeMap<String, String>,
    pub taints: Vec<Taint>,
    pub unschedulable: bool,
    pub allocatable: Resources,
    pub requested: Resources,
    pub non_zero_requested: Resources,
    pub pods: Vec<Arc<PodInfo>>,
    pub used_ports: Vec<HostPort>,
    /// Pods with any (anti-)affinity terms, for InterPodAffinity.
    pub affinity_pods: Vec<Arc<PodInfo>>,
    /// Pod counts by controlling owner (the cache's owner numbers), for default spreading.
    pub owner_counts: OwnerCounts,
    /// Whether the node has the hostname label, and its zone label as the cache's zone
    /// number: what default spreading reads per candidate node, without label map lookups.
    pub has_hostname: bool,
    pub zone: Option<u32>,
}

impl NodeInfo {
    pub fn new(name: &str) -> Self {
        NodeInfo {
            name: name.to_string(),
            ..Default::default()
        }
    }

    /// Build a node from its object (no pods).
    pub fn from_node(node: &Node) -> Self {
        let mut n = NodeInfo::new(node.metadata.name.as_deref().unwrap_or(""));
        n.set_node(node);
        n
    }

    pub fn set_node(&mut self, node: &Node) {
        self.present = true;
        self.labels = node.metadata.labels.clone().unwrap_or_default();
        self.has_hostname = self.labels.contains_key(LABEL_HOSTNAME);
        let spec = node.spec.clone().unwrap_or_default();
        self.taints = spec.taints.unwrap_or_default();
        self.unschedulable = spec.unschedulable.unwrap_or(false);
        let status = node.status.as_ref();
        self.allocatable = status
            .and_then(|s| s.allocatable.as_ref().or(s.capacity.as_ref()))
            .map(Resources::from_list)
            .unwrap_or_default();
    }

    pub fn add_pod(&mut self, pod: Arc<PodInfo>) {
        self.requested.add(&pod.requests);
        self.requested.allowed_pods += 1;
        self.non_zero_requested.milli_cpu += pod.non_zero.milli_cpu;
        self.non_zero_requested.memory += pod.non_zero.memory;
        self.used_ports.extend(pod.host_ports.iter().cloned());
        if pod.has_affinity() {
            self.affinity_pods.push(pod.clone());
        }
        if let Some(id) = pod.owner_id {
            self.owner_counts.add(id);
        }
        self.pods.push(pod);
    }

    /// Remove a pod by key; returns it if it was here.
    pub fn remove_pod(&mut self, key: &str) -> Option<Arc<PodInfo>> {
        let i = self.pods.iter().position(|p| p.key == key)?;
        let pod = self.pods.swap_remove(i);
        self.requested.sub(&pod.requests);
        self.requested.allowed_pods -= 1;
        self.non_zero_requested.milli_cpu -= pod.non_zero.milli_cpu;
        self.non_zero_requested.memory -= pod.non_zero.memory;
        for hp in &pod.host_ports {
            if let Some(j) = self.used_ports.iter().position(|u| u == hp) {
                self.used_ports.swap_remove(j);
            }
        }
        if let Some(j) = self.affinity_pods.iter().position(|p| p.key == key) {
            self.affinity_pods.swap_remove(j);
        }
        if let Some(id) = pod.owner_id {
            self.owner_counts.remove(id);
        }
        Some(pod)
    }

    /// Pods on this node whose controlling owner has the cache's number `owner`.
    pub fn owner_count(&self, owner: u32) -> u32 {
        self.owner_counts.get(owner)
    }
}

/// Pod counts per owner number. Default spreading reads this for every candidate node, so the
/// first owner is kept inline in the [`NodeInfo`] (whose cache lines the filters have just
/// read): on a node whose pods share one owner, the read follows no pointer.
#[derive(Clone, Debug, Default)]
pub struct OwnerCounts {
    first: Option<(u32, u32)>,
    rest: Vec<(u32, u32)>,
}

impl OwnerCounts {
    pub fn get(&self, owner: u32) -> u32 {
        match self.first {
            Some((o, c)) if o == owner => c,
            _ => self
                .rest
                .iter()
                .find(|(o, _)| *o == owner)
                .map_or(0, |(_, c)| *c),
        }
    }

    fn add(&mut self, owner: u32) {
        match &mut self.first {
            None => self.first = Some((owner, 1)),
            Some((o, c)) if *o == owner => *c += 1,
            Some(_) => match self.rest.iter_mut().find(|(o, _)| *o == owner) {
                Some((_, c)) => *c += 1,
                None => self.rest.push((owner, 1)),
            },
        }
    }

    fn remove(&mut self, owner: u32) {
        match &mut self.first {
            Some((o, c)) if *o == owner => {
                *c -= 1;
                if *c == 0 {
                    self.first = self.rest.pop();
                }
            }
            _ => {
                if let Some(i) = self.rest.iter().position(|(o, _)| *o == owner) {
                    self.rest[i].1 -= 1;
                    if self.rest[i].1 == 0 {
                        self.rest.swap_remove(i);
                    }
                }
            }
        }
    }
}

#[derive(Debug)]
struct PodState {
    node: String,
    assumed: bool,
    binding_finished: Option<Instant>,
}

/// Claims and volumes the VolumeBinding plugin reads.
#[derive(Default, Debug)]
pub struct Volumes {
    pub pvcs: HashMap<String, Arc<PersistentVolumeClaim>>,
    pub pvs: HashMap<String, Arc<PersistentVolume>>,
}

/// Nodes, placed pods (observed and assumed) and volumes.
#[derive(Default, Debug)]
pub struct Cache {
    nodes: Vec<NodeInfo>,
    index: HashMap<String, usize>,
    pods: HashMap<String, PodState>,
    present_nodes: usize,
    affinity_pods: usize,
    pub volumes: Volumes,
    /// PodDisruptionBudgets by `namespace/name`, for preemption.
    pub pdbs: HashMap<String, crate::preemption::Pdb>,
    /// Numbers for the controlling owners of placed pods, with how many placed pods have each;
    /// a number is reused once no placed pod has its owner.
    owners: HashMap<String, (u32, usize)>,
    free_owner_ids: Vec<u32>,
    /// Numbers for zone label values (few, and kept).
    zones: Vec<String>,
    zone_ids: HashMap<String, u32>,
}

/// What changed when a node was added or updated, for queue move decisions.
#[derive(Debug, PartialEq, Eq)]
pub enum NodeChange {
    Added,
    /// Labels, taints, allocatable or unschedulable changed.
    Relevant,
    Irrelevant,
}

impl Cache {
    pub fn new() -> Self {
        Self::default()
    }

    /// All nodes, including ones without a Node object (check `present`).
    pub fn nodes(&self) -> &[NodeInfo] {
        &self.nodes
    }

    pub fn node(&self, name: &str) -> Option<&NodeInfo> {
        self.index
            .get(name)
            .map(|i| &self.nodes[*i])
            .filter(|n| n.present)
    }

    /// Number of nodes with a Node object.
    pub fn num_nodes(&self) -> usize {
        self.present_nodes
    }

    pub fn num_pods(&self) -> usize {
        self.pods.len()
    }

    fn node_mut(&mut self, name: &str) -> &mut NodeInfo {
        let i = match self.index.get(name) {
            Some(i) => *i,
            None => {
                self.nodes.push(NodeInfo::new(name));
                self.index.insert(name.to_string(), self.nodes.len() - 1);
                self.nodes.len() - 1
            }
        };
        &mut self.nodes[i]
    }

    fn drop_node_if_empty(&mut self, name: &str) {
        let Some(&i) = self.index.get(name) else {
            return;
        };
        if self.nodes[i].present || !self.nodes[i].pods.is_empty() {
            return;
        }
        self.index.remove(name);
        self.nodes.swap_remove(i);
        if i < self.nodes.len() {
            let moved = self.nodes[i].name.clone();
            self.index.insert(moved, i);
        }
    }

    /// The number of a controlling owner with placed pods (for [`NodeInfo::owner_count`]).
    pub fn owner_id(&self, uid: &str) -> Option<u32> {
        self.owners.get(uid).map(|(id, _)| *id)
    }

    /// The zone label value numbered `id` (see [`NodeInfo::zone`]).
    pub fn zone_name(&self, id: u32) -> &str {
        &self.zones[id as usize]
    }

    fn zone_id(&mut self, zone: &str) -> u32 {
        if let Some(id) = self.zone_ids.get(zone) {
            return *id;
        }
        let id = self.zones.len() as u32;
        self.zones.push(zone.to_string());
        self.zone_ids.insert(zone.to_string(), id);
        id
    }

    pub fn add_or_update_node(&mut self, node: &Node) -> NodeChange {
        let name = node.metadata.name.clone().unwrap_or_default();
        let zone = node
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(LABEL_ZONE))
            .map(|z| self.zone_id(z));
        let n = self.node_mut(&name);
        let was_present = n.present;
        let before = (
            n.labels.clone(),
            n.taints.clone(),
            n.allocatable.clone(),
            n.unschedulable,
        );
        n.set_node(node);
        n.zone = zone;
        let after = (&n.labels, &n.taints, &n.allocatable, n.unschedulable);
        if !was_present {
            self.present_nodes += 1;
            NodeChange::Added
        } else if (&before.0, &before.1, &before.2, before.3) != after {
            NodeChange::Relevant
        } else {
            NodeChange::Irrelevant
        }
    }

    pub fn remove_node(&mut self, name: &str) {
        if let Some(&i) = self.index.get(name) {
            if self.nodes[i].present {
                self.present_nodes -= 1;
            }
            self.nodes[i].present = false;
        }
        self.drop_node_if_empty(name);
    }

    fn place(&mut self, mut pod: PodInfo, node: &str) {
        self.affinity_pods += pod.has_affinity() as usize;
        pod.owner_id = pod.owner_uid.as_deref().map(|uid| {
            if let Some((id, n)) = self.owners.get_mut(uid) {
                *n += 1;
                return *id;
            }
            let id = self
                .free_owner_ids
                .pop()
                .unwrap_or(self.owners.len() as u32);
            self.owners.insert(uid.to_string(), (id, 1));
            id
        });
        self.node_mut(node).add_pod(Arc::new(pod));
    }

    fn release_owner(&mut self, pod: &PodInfo) {
        let Some(uid) = pod.owner_uid.as_deref() else {
            return;
        };
        if let Some((id, n)) = self.owners.get_mut(uid) {
            *n -= 1;
            if *n == 0 {
                self.free_owner_ids.push(*id);
                self.owners.remove(uid);
            }
        }
    }

    /// Placed pods with (anti-)affinity terms anywhere in the cluster.
    pub fn num_affinity_pods(&self) -> usize {
        self.affinity_pods
    }

    fn unplace(&mut self, key: &str) -> Option<PodState> {
        let st = self.pods.remove(key)?;
        if let Some(&i) = self.index.get(&st.node) {
            if let Some(p) = self.nodes[i].remove_pod(key) {
                self.affinity_pods -= p.has_affinity() as usize;
                self.release_owner(&p);
            }
        }
        self.drop_node_if_empty(&st.node.clone());
        Some(st)
    }

    /// Count `pod` on `node` before its binding is observed.
    pub fn assume_pod(&mut self, pod: &PodInfo, node: &str) {
        self.unplace(&pod.key);
        let mut p = pod.clone();
        p.node_name = Some(node.to_string());
        self.place(p, node);
        self.pods.insert(
            pod.key.clone(),
            PodState {
                node: node.to_string(),
                assumed: true,
                binding_finished: None,
            },
        );
    }

    /// The binding call returned; the TTL starts now.
    pub fn finish_binding(&mut self, key: &str, now: Instant) {
        if let Some(st) = self.pods.get_mut(key).filter(|s| s.assumed) {
            st.binding_finished = Some(now);
        }
    }

    /// Undo an assumption whose binding failed.
    pub fn forget_pod(&mut self, key: &str) {
        if self.pods.get(key).is_some_and(|s| s.assumed) {
            self.unplace(key);
        }
    }

    pub fn is_assumed(&self, key: &str) -> bool {
        self.pods.get(key).is_some_and(|s| s.assumed)
    }

    /// An assigned pod was observed (added or updated): confirms an assumption, or moves it.
    /// Returns true if its labels changed (which can affect affinity and spreading).
    pub fn add_or_update_pod(&mut self, pod: PodInfo) -> bool {
        let Some(node) = pod.node_name.clone() else {
            return false;
        };
        let old_labels = self
            .pods
            .get(&pod.key)
            .and_then(|s| self.index.get(&s.node))
            .and_then(|i| self.nodes[*i].pods.iter().find(|p| p.key == pod.key))
            .map(|p| p.labels.clone());
        let changed = old_labels.as_ref().is_some_and(|l| *l != pod.labels);
        self.unplace(&pod.key);
        let key = pod.key.clone();
        self.place(pod, &node);
        self.pods.insert(
            key,
            PodState {
                node,
                assumed: false,
                binding_finished: None,
            },
        );
        changed
    }

    /// An assigned pod was deleted (or finished). Returns true if it was counted.
    pub fn remove_pod(&mut self, key: &str) -> bool {
        self.unplace(key).is_some()
    }

    /// Drop assumptions whose binding finished more than the TTL ago without confirmation.
    pub fn cleanup_assumed(&mut self, now: Instant) -> Vec<String> {
        let expired: Vec<String> = self
            .pods
            .iter()
            .filter(|(_, s)| {
                s.assumed
                    && s.binding_finished
                        .is_some_and(|t| now.duration_since(t) > ASSUMED_POD_TTL)
            })
            .map(|(k, _)| k.clone())
            .collect();
        for k in &expired {
            self.unplace(k);
        }
        expired
    }

    /// Keys of all placed pods (for reconciling after a relist).
    pub fn observed_pod_keys(&self) -> Vec<String> {
        self.pods
            .iter()
            .filter(|(_, s)| !s.assumed)
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// Node names with a Node object (for reconciling after a relist).
    pub fn node_names(&self) -> Vec<String> {
        self.nodes
            .iter()
            .filter(|n| n.present)
            .map(|n| n.name.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    pub(crate) fn node(v: serde_json::Value) -> Node {
        serde_json::from_value(v).unwrap()
    }

    fn pod(name: &str, cpu: &str) -> PodInfo {
        let p: Pod = serde_json::from_value(json!({"metadata": {"name": name, "namespace": "d"}, "spec": {"containers": [{"name": "c", "resources": {"requests": {"cpu": cpu}}}]}})).unwrap();
        PodInfo::from_pod(&p)
    }

    #[test]
    fn owner_counts_add_and_remove_across_inline_and_list() {
        let mut c = OwnerCounts::default();
        for o in [1, 2, 1, 3, 2, 1] {
            c.add(o);
        }
        assert_eq!((c.get(1), c.get(2), c.get(3), c.get(4)), (3, 2, 1, 0));
        for _ in 0..3 {
            c.remove(1);
        }
        assert_eq!((c.get(1), c.get(2), c.get(3)), (0, 2, 1));
        c.remove(4);
        c.remove(3);
        c.remove(2);
        assert_eq!((c.get(2), c.get(3)), (1, 0));
        c.remove(2);
        assert!(c.first.is_none() && c.rest.is_empty());
    }

    #[test]
    fn owners_are_numbered_while_they_have_placed_pods() {
        let owned = |name: &str, uid: &str, node: &str| {
            let p: Pod = serde_json::from_value(json!({"metadata": {"name": name, "namespace": "d", "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs", "uid": uid, "controller": true}]}, "spec": {"nodeName": node}})).unwrap();
            PodInfo::from_pod(&p)
        };
        let mut c = Cache::new();
        c.add_or_update_node(&node(json!({"metadata": {"name": "n1", "labels": {"kubernetes.io/hostname": "n1", "topology.kubernetes.io/zone": "z"}}})));
        c.add_or_update_node(&node(json!({"metadata": {"name": "n2"}})));
        let n1 = c.node("n1").unwrap();
        assert!(n1.has_hostname);
        assert_eq!(n1.zone.map(|z| c.zone_name(z)), Some("z"));
        assert!(!c.node("n2").unwrap().has_hostname);
        assert_eq!(c.node("n2").unwrap().zone, None);

        c.add_or_update_pod(owned("a1", "A", "n1"));
        c.add_or_update_pod(owned("a2", "A", "n1"));
        c.assume_pod(&owned("b1", "B", ""), "n2");
        let (a, b) = (c.owner_id("A").unwrap(), c.owner_id("B").unwrap());
        assert_ne!(a, b);
        assert_eq!(c.node("n1").unwrap().owner_count(a), 2);
        assert_eq!(c.node("n1").unwrap().owner_count(b), 0);
        assert_eq!(c.node("n2").unwrap().owner_count(b), 1);
        // Observing an assumed pod keeps its owner's number and count.
        c.add_or_update_pod(owned("b1", "B", "n2"));
        assert_eq!(c.owner_id("B"), Some(b));
        assert_eq!(c.node("n2").unwrap().owner_count(b), 1);
        // An owner without placed pods loses its number; a new owner reuses it, and the old
        // number's counts are gone with the pods.
        c.remove_pod("d/a1");
        assert_eq!(c.owner_id("A"), Some(a));
        c.remove_pod("d/a2");
        assert_eq!(c.owner_id("A"), None);
        c.add_or_update_pod(owned("c1", "C", "n2"));
        assert_eq!(c.owner_id("C"), Some(a));
        assert_eq!(c.node("n1").unwrap().owner_count(a), 0);
        assert_eq!(c.node("n2").unwrap().owner_count(a), 1);
        assert_eq!(c.node("n2").unwrap().owner_count(b), 1);
        c.forget_pod("d/c1");
        assert_eq!(c.owner_id("C"), Some(a), "observed pods are not forgotten");
    }

    #[test]
    fn assumed_pods_count_until_confirmed_forgotten_or_expired() {
        let mut c = Cache::new();
        c.add_or_update_node(&node(json!({"metadata": {"name": "n1"}, "status": {"allocatable": {"cpu": "4", "pods": "10"}}})));
        let p = pod("a", "1");
        c.assume_pod(&p, "n1");
        assert_eq!(c.node("n1").unwrap().requested.milli_cpu, 1000);
        assert!(c.is_assumed("d/a"));
        // Observed bound: replaces the assumption, counted once.
        let mut bound = p.clone();
        bound.node_name = Some("n1".into());
        c.add_or_update_pod(bound);
        assert!(!c.is_assumed("d/a"));
        assert_eq!(c.node("n1").unwrap().requested.milli_cpu, 1000);
        assert_eq!(c.node("n1").unwrap().pods.len(), 1);
        // A failed binding is forgotten.
        let q = pod("b", "500m");
        c.assume_pod(&q, "n1");
        c.forget_pod("d/b");
        assert_eq!(c.node("n1").unwrap().requested.milli_cpu, 1000);
        // An unconfirmed binding expires after the TTL.
        let r = pod("c", "1");
        c.assume_pod(&r, "n1");
        let t0 = Instant::now();
        c.finish_binding("d/c", t0);
        assert!(c.cleanup_assumed(t0 + Duration::from_secs(1)).is_empty());
        assert_eq!(
            c.cleanup_assumed(t0 + ASSUMED_POD_TTL + Duration::from_secs(1)),
            vec!["d/c".to_string()]
        );
        assert_eq!(c.node("n1").unwrap().requested.milli_cpu, 1000);
        assert!(c.remove_pod("d/a"));
        assert_eq!(c.node("n1").unwrap().requested.milli_cpu, 0);
    }

    #[test]
    fn pods_on_unknown_nodes_are_kept_but_not_offered() {
        let mut c = Cache::new();
        let mut p = pod("a", "1");
        p.node_name = Some("ghost".into());
        c.add_or_update_pod(p);
        assert!(c.node("ghost").is_none());
        assert_eq!(c.num_nodes(), 0);
        assert_eq!(
            c.add_or_update_node(&node(json!({"metadata": {"name": "ghost"}}))),
            NodeChange::Added
        );
        assert_eq!(c.node("ghost").unwrap().requested.milli_cpu, 1000);
        assert_eq!(
            c.add_or_update_node(&node(json!({"metadata": {"name": "ghost"}}))),
            NodeChange::Irrelevant
        );
        assert_eq!(
            c.add_or_update_node(&node(
                json!({"metadata": {"name": "ghost", "labels": {"a": "b"}}})
            )),
            NodeChange::Relevant
        );
        c.remove_node("ghost");
        assert_eq!(c.num_nodes(), 0);
        c.remove_pod("d/a");
        assert!(c.nodes().is_empty());
    }
}
