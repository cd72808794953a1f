//! NodeAffinity: `spec.nodeSelector` and required node affinity as a filter; preferred node
//! affinity as a score (sum of matched weights, normalized).

use crate::cache::{NodeInfo, PodInfo};
use crate::framework::{default_normalize, Ctx, CycleState, Plugin, Status};
use k8s_openapi::api::core::v1::{NodeSelectorRequirement, NodeSelectorTerm};
use std::collections::BTreeMap;

pub const NAME: &str = "NodeAffinity";
pub const REASON: &str = "node(s) didn't match Pod's node affinity/selector";

pub struct NodeAffinity;

fn requirement_matches(r: &NodeSelectorRequirement, get: Option<&str>) -> bool {
    let values = r.values.as_deref().unwrap_or(&[]);
    match r.operator.as_str() {
        "In" => get.is_some_and(|v| values.iter().any(|x| x == v)),
        "NotIn" => get.is_none_or(|v| !values.iter().any(|x| x == v)),
        "Exists" => get.is_some(),
        "DoesNotExist" => get.is_none(),
        op @ ("Gt" | "Lt") => {
            let (Some(Ok(have)), [want]) = (get.map(str::parse::<i64>), values) else {
                return false;
            };
            let Ok(want) = want.parse::<i64>() else {
                return false;
            };
            if op == "Gt" {
                have > want
            } else {
                have < want
            }
        }
        _ => false,
    }
}

/// One node selector term: all expressions on labels and all fields (`metadata.name`) match.
/// A term with neither matches nothing, as upstream.
pub fn term_matches(t: &NodeSelectorTerm, name: &str, labels: &BTreeMap<String, String>) -> bool {
    let exprs = t.match_expressions.as_deref().unwrap_or(&[]);
    let fields = t.match_fields.as_deref().unwrap_or(&[]);
    if exprs.is_empty() && fields.is_empty() {
        return false;
    }
    exprs
        .iter()
        .all(|r| requirement_matches(r, labels.get(&r.key).map(String::as_str)))
        && fields
            .iter()
            .all(|r| r.key == "metadata.name" && requirement_matches(r, Some(name)))
}

/// Required terms are ORed.
pub fn terms_match(
    terms: &[NodeSelectorTerm],
    name: &str,
    labels: &BTreeMap<String, String>,
) -> bool {
    terms.iter().any(|t| term_matches(t, name, labels))
}

/// `nodeSelector` and required node affinity (upstream `RequiredNodeAffinity.Match`).
pub fn pod_matches_node(pod: &PodInfo, node: &NodeInfo) -> bool {
    pod.node_selector
        .iter()
        .all(|(k, v)| node.labels.get(k) == Some(v))
        && pod
            .required_node_affinity
            .as_deref()
            .is_none_or(|t| terms_match(t, &node.name, &node.labels))
}

impl Plugin for NodeAffinity {
    fn name(&self) -> &'static str {
        NAME
    }
    fn filter(&self, ctx: &Ctx, _: &CycleState, node: &NodeInfo) -> Status {
        if pod_matches_node(ctx.pod, node) {
            Status::success()
        } else {
            Status::unresolvable(NAME, REASON)
        }
    }
    fn score(&self, ctx: &Ctx, _: &CycleState, node: &NodeInfo) -> i64 {
        ctx.pod
            .preferred_node_affinity
            .iter()
            .filter(|(_, t)| term_matches(t, &node.name, &node.labels))
            .map(|(w, _)| *w as i64)
            .sum()
    }
    fn normalize(&self, _: &Ctx, _: &CycleState, scores: &mut [i64]) {
        default_normalize(scores, false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::testing::*;
    use serde_json::json;

    fn required(exprs: serde_json::Value) -> serde_json::Value {
        json!({"spec": {"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": exprs}}}}})
    }

    #[test]
    fn node_selector_and_required_affinity_filter() {
        let c = cache(
            &[
                labelled("a", json!({"disk": "ssd", "gen": "3"})),
                labelled("b", json!({"disk": "hdd", "gen": "5"})),
                labelled("c", json!({})),
            ],
            vec![],
        );
        let cases = [
            ("no constraints", json!({}), vec!["a", "b", "c"]),
            (
                "nodeSelector",
                json!({"spec": {"nodeSelector": {"disk": "ssd"}}}),
                vec!["a"],
            ),
            (
                "nodeSelector nobody has",
                json!({"spec": {"nodeSelector": {"disk": "nvme"}}}),
                vec![],
            ),
            (
                "In",
                required(
                    json!([{"matchExpressions": [{"key": "disk", "operator": "In", "values": ["ssd", "hdd"]}]}]),
                ),
                vec!["a", "b"],
            ),
            (
                "NotIn",
                required(
                    json!([{"matchExpressions": [{"key": "disk", "operator": "NotIn", "values": ["ssd"]}]}]),
                ),
                vec!["b", "c"],
            ),
            (
                "Exists",
                required(json!([{"matchExpressions": [{"key": "disk", "operator": "Exists"}]}])),
                vec!["a", "b"],
            ),
            (
                "DoesNotExist",
                required(
                    json!([{"matchExpressions": [{"key": "disk", "operator": "DoesNotExist"}]}]),
                ),
                vec!["c"],
            ),
            (
                "Gt",
                required(
                    json!([{"matchExpressions": [{"key": "gen", "operator": "Gt", "values": ["4"]}]}]),
                ),
                vec!["b"],
            ),
            (
                "Lt",
                required(
                    json!([{"matchExpressions": [{"key": "gen", "operator": "Lt", "values": ["4"]}]}]),
                ),
                vec!["a"],
            ),
            (
                "terms ORed",
                required(
                    json!([{"matchExpressions": [{"key": "disk", "operator": "In", "values": ["ssd"]}]}, {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["c"]}]}]),
                ),
                vec!["a", "c"],
            ),
            ("empty term matches nothing", required(json!([{}])), vec![]),
        ];
        for (name, p, want) in cases {
            assert_eq!(passing(&NodeAffinity, &pod(p), &c), want, "{name}");
        }
        assert_eq!(
            filter_all(
                &NodeAffinity,
                &pod(json!({"spec": {"nodeSelector": {"x": "y"}}})),
                &c
            )[0]
            .1,
            Status::unresolvable(NAME, REASON)
        );
    }

    #[test]
    fn preferred_affinity_scores_matched_weights() {
        let c = cache(
            &[
                labelled("a", json!({"disk": "ssd", "zone": "z1"})),
                labelled("b", json!({"disk": "hdd", "zone": "z1"})),
                labelled("c", json!({})),
            ],
            vec![],
        );
        let p = pod(
            json!({"spec": {"affinity": {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
                {"weight": 80, "preference": {"matchExpressions": [{"key": "disk", "operator": "In", "values": ["ssd"]}]}},
                {"weight": 20, "preference": {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["z1"]}]}}
            ]}}}}),
        );
        assert_eq!(
            score_all(&NodeAffinity, &p, &c),
            vec![("a".into(), 100), ("b".into(), 20), ("c".into(), 0)]
        );
    }
}
