//! The default plugins and upstream's default profile (filter order and score weights).

pub mod inter_pod_affinity;
pub mod node_affinity;
pub mod node_name;
pub mod node_ports;
pub mod node_unschedulable;
pub mod resources_fit;
pub mod taint_toleration;
pub mod topology_spread;
pub mod volume_binding;

use crate::framework::{Framework, Plugin};
use std::sync::Arc;

/// Upstream's default profile: filters in upstream order, scores with upstream weights
/// (TaintToleration 3; NodeAffinity, PodTopologySpread, InterPodAffinity 2;
/// NodeResourcesFit and BalancedAllocation 1).
pub fn default_framework() -> Framework {
    let taint: Arc<dyn Plugin> = Arc::new(taint_toleration::TaintToleration);
    let affinity: Arc<dyn Plugin> = Arc::new(node_affinity::NodeAffinity);
    let fit: Arc<dyn Plugin> = Arc::new(resources_fit::NodeResourcesFit);
    let spread: Arc<dyn Plugin> = Arc::new(topology_spread::PodTopologySpread);
    let ipa: Arc<dyn Plugin> = Arc::new(inter_pod_affinity::InterPodAffinity);
    Framework {
        filters: vec![
            Arc::new(node_unschedulable::NodeUnschedulable),
            Arc::new(node_name::NodeName),
            taint.clone(),
            affinity.clone(),
            Arc::new(node_ports::NodePorts),
            fit.clone(),
            Arc::new(volume_binding::VolumeBinding),
            spread.clone(),
            ipa.clone(),
        ],
        scorers: vec![
            (taint, 3),
            (affinity, 2),
            (spread, 2),
            (ipa, 2),
            (fit, 1),
            (Arc::new(resources_fit::BalancedAllocation), 1),
        ],
        percentage_of_nodes_to_score: 0,
    }
}

/// Builders shared by the plugin tests.
#[cfg(test)]
pub(crate) mod testing {
    use crate::cache::{Cache, NodeInfo, PodInfo};
    use crate::framework::{Ctx, CycleState, Plugin, Status};
    use k8s_openapi::api::core::v1::{Node, Pod};
    use serde_json::{json, Value};

    /// A pod from a JSON spec fragment (name `p`, namespace `d` unless given).
    pub fn pod(v: Value) -> PodInfo {
        let mut v = v;
        let meta = v
            .as_object_mut()
            .unwrap()
            .entry("metadata")
            .or_insert(json!({}));
        meta.as_object_mut()
            .unwrap()
            .entry("name")
            .or_insert(json!("p"));
        meta.as_object_mut()
            .unwrap()
            .entry("namespace")
            .or_insert(json!("d"));
        let spec = v
            .as_object_mut()
            .unwrap()
            .entry("spec")
            .or_insert(json!({}));
        spec.as_object_mut()
            .unwrap()
            .entry("containers")
            .or_insert(json!([{"name": "c"}]));
        PodInfo::from_pod(&serde_json::from_value::<Pod>(v).unwrap())
    }

    /// A named pod with labels on `node`.
    pub fn placed(name: &str, node: &str, labels: Value) -> PodInfo {
        pod(json!({"metadata": {"name": name, "labels": labels}, "spec": {"nodeName": node}}))
    }

    /// A node with labels and 4 CPU / 8Gi / 110 pods allocatable.
    pub fn labelled(name: &str, labels: Value) -> Node {
        serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}, "status": {"allocatable": {"cpu": "4", "memory": "8Gi", "pods": "110"}}})).unwrap()
    }

    pub fn cache(nodes: &[Node], pods: Vec<PodInfo>) -> Cache {
        let mut c = Cache::new();
        for n in nodes {
            c.add_or_update_node(n);
        }
        for p in pods {
            c.add_or_update_pod(p);
        }
        c
    }

    /// Run one plugin's pre-filter and filter for `pod` on every node of `cache`, by node name.
    pub fn filter_all(p: &dyn Plugin, pod: &PodInfo, cache: &Cache) -> Vec<(String, Status)> {
        let ctx = Ctx { pod, cache };
        let mut state = CycleState::default();
        if let Err(s) = p.pre_filter(&ctx, &mut state) {
            return cache
                .nodes()
                .iter()
                .map(|n| (n.name.clone(), s.clone()))
                .collect();
        }
        let mut v: Vec<_> = cache
            .nodes()
            .iter()
            .filter(|n| n.present)
            .map(|n| (n.name.clone(), p.filter(&ctx, &state, n)))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// Run one plugin's pre-score, score and normalize for `pod` over all nodes, by node name.
    pub fn score_all(p: &dyn Plugin, pod: &PodInfo, cache: &Cache) -> Vec<(String, i64)> {
        let ctx = Ctx { pod, cache };
        let mut state = CycleState::default();
        let mut nodes: Vec<&NodeInfo> = cache.nodes().iter().filter(|n| n.present).collect();
        nodes.sort_by(|a, b| a.name.cmp(&b.name));
        p.pre_score(&ctx, &mut state, &nodes);
        let mut scores: Vec<i64> = nodes.iter().map(|n| p.score(&ctx, &state, n)).collect();
        let mut batch = vec![0; nodes.len()];
        p.score_nodes(&ctx, &state, &nodes, &mut batch);
        assert_eq!(scores, batch, "{}: score_nodes agrees with score", p.name());
        p.normalize(&ctx, &state, &mut scores);
        nodes.iter().map(|n| n.name.clone()).zip(scores).collect()
    }

    /// The names of nodes the plugin accepts.
    pub fn passing(p: &dyn Plugin, pod: &PodInfo, cache: &Cache) -> Vec<String> {
        filter_all(p, pod, cache)
            .into_iter()
            .filter(|(_, s)| s.is_success())
            .map(|(n, _)| n)
            .collect()
    }
}
