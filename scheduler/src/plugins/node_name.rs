//! NodeName: a pod that names its node fits only there.

use crate::cache::NodeInfo;
use crate::framework::{Ctx, CycleState, Plugin, Status};

pub const NAME: &str = "NodeName";
pub const REASON: &str = "node(s) didn't match the requested node name";

pub struct NodeName;

impl Plugin for NodeName {
    fn name(&self) -> &'static str {
        NAME
    }
    fn filter(&self, ctx: &Ctx, _: &CycleState, node: &NodeInfo) -> Status {
        match ctx.pod.node_name.as_deref() {
            Some(n) if n != node.name => Status::unresolvable(NAME, REASON),
            _ => Status::success(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::testing::*;
    use serde_json::json;

    #[test]
    fn only_the_named_node_fits() {
        let c = cache(
            &[labelled("a", json!({})), labelled("b", json!({}))],
            vec![],
        );
        for (pod_node, want) in [
            (None, vec!["a", "b"]),
            (Some("b"), vec!["b"]),
            (Some("zz"), vec![]),
        ] {
            let mut p = pod(json!({}));
            p.node_name = pod_node.map(String::from);
            assert_eq!(passing(&NodeName, &p, &c), want, "{pod_node:?}");
        }
        let mut p = pod(json!({}));
        p.node_name = Some("b".into());
        assert_eq!(
            filter_all(&NodeName, &p, &c)[0].1,
            Status::unresolvable(NAME, REASON)
        );
    }
}
