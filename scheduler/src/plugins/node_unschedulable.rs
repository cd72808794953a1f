//! NodeUnschedulable: cordoned nodes (`spec.unschedulable`) take only pods tolerating the
//! `node.kubernetes.io/unschedulable:NoSchedule` taint.

use crate::cache::NodeInfo;
use crate::framework::{Ctx, CycleState, Plugin, Status};
use crate::plugins::taint_toleration::tolerates;
use k8s_openapi::api::core::v1::Taint;

pub const NAME: &str = "NodeUnschedulable";
pub const REASON: &str = "node(s) were unschedulable";
pub const TAINT_KEY: &str = "node.kubernetes.io/unschedulable";

pub struct NodeUnschedulable;

impl Plugin for NodeUnschedulable {
    fn name(&self) -> &'static str {
        NAME
    }
    fn filter(&self, ctx: &Ctx, _: &CycleState, node: &NodeInfo) -> Status {
        if !node.unschedulable {
            return Status::success();
        }
        let taint = Taint {
            key: TAINT_KEY.into(),
            effect: "NoSchedule".into(),
            ..Default::default()
        };
        if ctx.pod.tolerations.iter().any(|t| tolerates(t, &taint)) {
            Status::success()
        } else {
            Status::unresolvable(NAME, REASON)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::testing::*;
    use serde_json::json;

    #[test]
    fn cordoned_nodes_need_the_unschedulable_toleration() {
        let cordoned = serde_json::from_value(
            json!({"metadata": {"name": "c"}, "spec": {"unschedulable": true}}),
        )
        .unwrap();
        let c = cache(&[labelled("a", json!({})), cordoned], vec![]);
        let cases = [
            ("no toleration", json!({}), vec!["a"]),
            (
                "tolerates",
                json!({"spec": {"tolerations": [{"key": TAINT_KEY, "operator": "Exists", "effect": "NoSchedule"}]}}),
                vec!["a", "c"],
            ),
            (
                "tolerates everything",
                json!({"spec": {"tolerations": [{"operator": "Exists"}]}}),
                vec!["a", "c"],
            ),
            (
                "wrong effect",
                json!({"spec": {"tolerations": [{"key": TAINT_KEY, "operator": "Exists", "effect": "NoExecute"}]}}),
                vec!["a"],
            ),
        ];
        for (name, p, want) in cases {
            assert_eq!(passing(&NodeUnschedulable, &pod(p), &c), want, "{name}");
        }
        assert_eq!(
            filter_all(&NodeUnschedulable, &pod(json!({})), &c)[1].1,
            Status::unresolvable(NAME, REASON)
        );
    }
}
