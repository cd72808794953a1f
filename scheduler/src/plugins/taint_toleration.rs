//! TaintToleration: NoSchedule/NoExecute taints must be tolerated (filter); untolerated
//! PreferNoSchedule taints lower the score.

use crate::cache::NodeInfo;
use crate::framework::{default_normalize, Ctx, CycleState, Plugin, Status};
use k8s_openapi::api::core::v1::{Taint, Toleration};

pub const NAME: &str = "TaintToleration";

pub struct TaintToleration;

/// Upstream `Toleration.ToleratesTaint`.
pub fn tolerates(t: &Toleration, taint: &Taint) -> bool {
    if let Some(e) = t.effect.as_deref().filter(|e| !e.is_empty()) {
        if e != taint.effect {
            return false;
        }
    }
    let key = t.key.as_deref().unwrap_or("");
    if !key.is_empty() && key != taint.key {
        return false;
    }
    match t.operator.as_deref().unwrap_or("Equal") {
        "Exists" => true,
        "Equal" | "" => t.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or(""),
        _ => false,
    }
}

impl Plugin for TaintToleration {
    fn name(&self) -> &'static str {
        NAME
    }
    fn filter(&self, ctx: &Ctx, _: &CycleState, node: &NodeInfo) -> Status {
        let untolerated = node
            .taints
            .iter()
            .filter(|t| t.effect == "NoSchedule" || t.effect == "NoExecute")
            .find(|taint| !ctx.pod.tolerations.iter().any(|t| tolerates(t, taint)));
        match untolerated {
            Some(t) => Status::unresolvable(
                NAME,
                format!(
                    "node(s) had untolerated taint {{{}: {}}}",
                    t.key,
                    t.value.as_deref().unwrap_or("")
                ),
            ),
            None => Status::success(),
        }
    }
    fn score(&self, ctx: &Ctx, _: &CycleState, node: &NodeInfo) -> i64 {
        if node.taints.is_empty() {
            return 0;
        }
        let prefer: Vec<&Toleration> = ctx
            .pod
            .tolerations
            .iter()
            .filter(|t| {
                t.effect
                    .as_deref()
                    .is_none_or(|e| e.is_empty() || e == "PreferNoSchedule")
            })
            .collect();
        node.taints
            .iter()
            .filter(|t| {
                t.effect == "PreferNoSchedule" && !prefer.iter().any(|tol| tolerates(tol, t))
            })
            .count() as i64
    }
    fn normalize(&self, _: &Ctx, _: &CycleState, scores: &mut [i64]) {
        default_normalize(scores, true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::testing::*;
    use k8s_openapi::api::core::v1::Node;
    use serde_json::json;

    fn tainted(name: &str, taints: serde_json::Value) -> Node {
        serde_json::from_value(json!({"metadata": {"name": name}, "spec": {"taints": taints}}))
            .unwrap()
    }

    #[test]
    fn untolerated_taints_reject_nodes() {
        let c = cache(
            &[
                labelled("clean", json!({})),
                tainted(
                    "gpu",
                    json!([{"key": "gpu", "value": "true", "effect": "NoSchedule"}]),
                ),
                tainted("drain", json!([{"key": "maint", "effect": "NoExecute"}])),
                tainted(
                    "soft",
                    json!([{"key": "spot", "value": "yes", "effect": "PreferNoSchedule"}]),
                ),
            ],
            vec![],
        );
        let cases = [
            ("no tolerations", json!([]), vec!["clean", "soft"]),
            (
                "equal value",
                json!([{"key": "gpu", "operator": "Equal", "value": "true", "effect": "NoSchedule"}]),
                vec!["clean", "gpu", "soft"],
            ),
            (
                "wrong value",
                json!([{"key": "gpu", "value": "false"}]),
                vec!["clean", "soft"],
            ),
            (
                "exists any effect",
                json!([{"key": "maint", "operator": "Exists"}]),
                vec!["clean", "drain", "soft"],
            ),
            (
                "wrong effect",
                json!([{"key": "maint", "operator": "Exists", "effect": "NoSchedule"}]),
                vec!["clean", "soft"],
            ),
            (
                "tolerate all",
                json!([{"operator": "Exists"}]),
                vec!["clean", "drain", "gpu", "soft"],
            ),
        ];
        for (name, tol, want) in cases {
            assert_eq!(
                passing(
                    &TaintToleration,
                    &pod(json!({"spec": {"tolerations": tol}})),
                    &c
                ),
                want,
                "{name}"
            );
        }
        let got = filter_all(&TaintToleration, &pod(json!({})), &c);
        assert_eq!(
            got[2].1,
            Status::unresolvable(NAME, "node(s) had untolerated taint {gpu: true}")
        );
        assert_eq!(
            got[1].1.reasons,
            vec!["node(s) had untolerated taint {maint: }"]
        );
    }

    #[test]
    fn prefer_no_schedule_taints_lower_the_score() {
        let c = cache(
            &[
                labelled("clean", json!({})),
                tainted(
                    "soft",
                    json!([{"key": "spot", "effect": "PreferNoSchedule"}]),
                ),
            ],
            vec![],
        );
        assert_eq!(
            score_all(&TaintToleration, &pod(json!({})), &c),
            vec![("clean".into(), 100), ("soft".into(), 0)]
        );
        let tol = pod(
            json!({"spec": {"tolerations": [{"key": "spot", "operator": "Exists", "effect": "PreferNoSchedule"}]}}),
        );
        assert_eq!(
            score_all(&TaintToleration, &tol, &c),
            vec![("clean".into(), 100), ("soft".into(), 100)]
        );
    }
}
