//! NodeResourcesFit (filter: requests against allocatable, including the pod count and
//! extended resources; score: LeastAllocated) and NodeResourcesBalancedAllocation.

use crate::cache::NodeInfo;
use crate::framework::{Ctx, CycleState, Plugin, Status, MAX_NODE_SCORE};

pub const NAME: &str = "NodeResourcesFit";
pub const BALANCED_NAME: &str = "NodeResourcesBalancedAllocation";

pub struct NodeResourcesFit;

/// The reasons `pod` does not fit on `node` (empty if it fits): upstream `fitsRequest`.
pub fn insufficient(pod: &crate::cache::PodInfo, node: &NodeInfo) -> Vec<String> {
    let mut out = Vec::new();
    let (alloc, used, req) = (&node.allocatable, &node.requested, &pod.requests);
    if used.allowed_pods + 1 > alloc.allowed_pods {
        out.push("Too many pods".to_string());
    }
    if req.is_zero() {
        return out;
    }
    if req.milli_cpu > 0 && alloc.milli_cpu < req.milli_cpu + used.milli_cpu {
        out.push("Insufficient cpu".into());
    }
    if req.memory > 0 && alloc.memory < req.memory + used.memory {
        out.push("Insufficient memory".into());
    }
    if req.ephemeral_storage > 0
        && alloc.ephemeral_storage < req.ephemeral_storage + used.ephemeral_storage
    {
        out.push("Insufficient ephemeral-storage".into());
    }
    for (name, want) in &req.scalar {
        if *want == 0 {
            continue;
        }
        let have = alloc.scalar.get(name).copied().unwrap_or(0);
        if have < want + used.scalar.get(name).copied().unwrap_or(0) {
            out.push(format!("Insufficient {name}"));
        }
    }
    out
}

impl Plugin for NodeResourcesFit {
    fn name(&self) -> &'static str {
        NAME
    }
    fn filter(&self, ctx: &Ctx, _: &CycleState, node: &NodeInfo) -> Status {
        let reasons = insufficient(ctx.pod, node);
        if reasons.is_empty() {
            Status::success()
        } else {
            Status {
                code: crate::framework::Code::Unschedulable,
                reasons,
                plugin: NAME,
            }
        }
    }
    /// LeastAllocated over CPU and memory (weight 1 each), counting the pod's non-zero request.
    fn score(&self, ctx: &Ctx, _: &CycleState, node: &NodeInfo) -> i64 {
        let least = |alloc: i64, req: i64| {
            if alloc == 0 || req > alloc {
                0
            } else {
                (alloc - req) * MAX_NODE_SCORE / alloc
            }
        };
        let cpu = least(
            node.allocatable.milli_cpu,
            node.non_zero_requested.milli_cpu + ctx.pod.non_zero.milli_cpu,
        );
        let mem = least(
            node.allocatable.memory,
            node.non_zero_requested.memory + ctx.pod.non_zero.memory,
        );
        (cpu + mem) / 2
    }
}

/// Favours nodes whose CPU and memory utilisation stay balanced after placing the pod.
pub struct BalancedAllocation;

impl Plugin for BalancedAllocation {
    fn name(&self) -> &'static str {
        BALANCED_NAME
    }
    fn score(&self, ctx: &Ctx, _: &CycleState, node: &NodeInfo) -> i64 {
        let frac = |alloc: i64, req: i64| {
            if alloc == 0 {
                1.0
            } else {
                (req as f64 / alloc as f64).min(1.0)
            }
        };
        let cpu = frac(
            node.allocatable.milli_cpu,
            node.non_zero_requested.milli_cpu + ctx.pod.non_zero.milli_cpu,
        );
        let mem = frac(
            node.allocatable.memory,
            node.non_zero_requested.memory + ctx.pod.non_zero.memory,
        );
        let std = (cpu - mem).abs() / 2.0;
        ((1.0 - std) * MAX_NODE_SCORE as f64) as i64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::testing::*;
    use serde_json::{json, Value};

    fn req_pod(name: &str, node: Option<&str>, requests: Value) -> crate::cache::PodInfo {
        pod(
            json!({"metadata": {"name": name}, "spec": {"nodeName": node, "containers": [{"name": "c", "resources": {"requests": requests}}]}}),
        )
    }

    fn n(name: &str, alloc: Value) -> k8s_openapi::api::core::v1::Node {
        serde_json::from_value(
            json!({"metadata": {"name": name}, "status": {"allocatable": alloc}}),
        )
        .unwrap()
    }

    /// (name, pod, expected reasons by node).
    type Case = (
        &'static str,
        crate::cache::PodInfo,
        Vec<(&'static str, Vec<&'static str>)>,
    );

    #[test]
    fn filter_compares_requests_with_allocatable() {
        let nodes = [
            n("small", json!({"cpu": "1", "memory": "1Gi", "pods": "2"})),
            n(
                "big",
                json!({"cpu": "8", "memory": "16Gi", "pods": "110", "example.com/gpu": "2"}),
            ),
        ];
        let existing = vec![req_pod(
            "e",
            Some("small"),
            json!({"cpu": "500m", "memory": "512Mi"}),
        )];
        let c = cache(&nodes, existing);
        let cases: Vec<Case> = vec![
            (
                "fits both",
                req_pod("p", None, json!({"cpu": "500m", "memory": "512Mi"})),
                vec![("big", vec![]), ("small", vec![])],
            ),
            (
                "cpu too big for small",
                req_pod("p", None, json!({"cpu": "600m"})),
                vec![("big", vec![]), ("small", vec!["Insufficient cpu"])],
            ),
            (
                "cpu and memory",
                req_pod("p", None, json!({"cpu": "2", "memory": "2Gi"})),
                vec![
                    ("big", vec![]),
                    ("small", vec!["Insufficient cpu", "Insufficient memory"]),
                ],
            ),
            (
                "extended resource",
                req_pod("p", None, json!({"example.com/gpu": "1"})),
                vec![
                    ("big", vec![]),
                    ("small", vec!["Insufficient example.com/gpu"]),
                ],
            ),
            (
                "too much gpu",
                req_pod("p", None, json!({"example.com/gpu": "3"})),
                vec![
                    ("big", vec!["Insufficient example.com/gpu"]),
                    ("small", vec!["Insufficient example.com/gpu"]),
                ],
            ),
            (
                "init container max",
                pod(
                    json!({"spec": {"containers": [{"name": "c"}], "initContainers": [{"name": "i", "resources": {"requests": {"cpu": "700m"}}}]}}),
                ),
                vec![("big", vec![]), ("small", vec!["Insufficient cpu"])],
            ),
            (
                "overhead",
                pod(
                    json!({"spec": {"containers": [{"name": "c", "resources": {"requests": {"cpu": "400m"}}}], "overhead": {"cpu": "200m"}}}),
                ),
                vec![("big", vec![]), ("small", vec!["Insufficient cpu"])],
            ),
        ];
        for (name, p, want) in cases {
            let got: Vec<(String, Vec<String>)> = filter_all(&NodeResourcesFit, &p, &c)
                .into_iter()
                .map(|(n, s)| (n, s.reasons))
                .collect();
            let want: Vec<(String, Vec<String>)> = want
                .into_iter()
                .map(|(n, r)| (n.to_string(), r.into_iter().map(String::from).collect()))
                .collect();
            assert_eq!(got, want, "{name}");
        }
        // The pods count: a second existing pod fills "small".
        let full = cache(
            &nodes,
            vec![
                req_pod("e1", Some("small"), json!({})),
                req_pod("e2", Some("small"), json!({})),
            ],
        );
        let got = filter_all(&NodeResourcesFit, &req_pod("p", None, json!({})), &full);
        assert_eq!(got[1].1.reasons, vec!["Too many pods"]);
    }

    #[test]
    fn least_allocated_and_balanced_scores() {
        let nodes = [
            n("empty", json!({"cpu": "4", "memory": "4Gi", "pods": "110"})),
            n("busy", json!({"cpu": "4", "memory": "4Gi", "pods": "110"})),
        ];
        let c = cache(
            &nodes,
            vec![req_pod(
                "e",
                Some("busy"),
                json!({"cpu": "3", "memory": "1Gi"}),
            )],
        );
        let p = req_pod("p", None, json!({"cpu": "1", "memory": "1Gi"}));
        // empty: cpu (4-1)/4 = 75, mem (4-1)/4 = 75 → 75; busy: cpu 0, mem 50 → 25.
        assert_eq!(
            score_all(&NodeResourcesFit, &p, &c),
            vec![("busy".to_string(), 25), ("empty".to_string(), 75)]
        );
        // balanced: empty 0.25/0.25 → 100; busy 1.0/0.5 → 75.
        assert_eq!(
            score_all(&BalancedAllocation, &p, &c),
            vec![("busy".to_string(), 75), ("empty".to_string(), 100)]
        );
    }
}
