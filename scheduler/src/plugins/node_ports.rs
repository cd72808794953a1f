//! NodePorts: a pod's hostPorts must be free on the node (same protocol and port, same IP or
//! either side 0.0.0.0).

use crate::cache::NodeInfo;
use crate::framework::{Ctx, CycleState, Plugin, Status};

pub const NAME: &str = "NodePorts";
pub const REASON: &str = "node(s) didn't have free ports for the requested pod ports";

pub struct NodePorts;

impl Plugin for NodePorts {
    fn name(&self) -> &'static str {
        NAME
    }
    fn filter(&self, ctx: &Ctx, _: &CycleState, node: &NodeInfo) -> Status {
        if ctx
            .pod
            .host_ports
            .iter()
            .any(|want| node.used_ports.iter().any(|u| u.conflicts(want)))
        {
            Status::unschedulable(NAME, REASON)
        } else {
            Status::success()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::testing::*;
    use serde_json::json;

    fn with_port(name: &str, node: Option<&str>, port: serde_json::Value) -> crate::cache::PodInfo {
        pod(
            json!({"metadata": {"name": name}, "spec": {"nodeName": node, "containers": [{"name": "c", "ports": [port]}]}}),
        )
    }

    #[test]
    fn host_ports_conflict_by_protocol_port_and_ip() {
        let existing = vec![
            with_port(
                "e",
                Some("a"),
                json!({"containerPort": 80, "hostPort": 8080}),
            ),
            with_port(
                "f",
                Some("a"),
                json!({"containerPort": 53, "hostPort": 53, "protocol": "UDP", "hostIP": "10.0.0.1"}),
            ),
        ];
        let c = cache(
            &[labelled("a", json!({})), labelled("b", json!({}))],
            existing,
        );
        let cases = [
            (
                "same port",
                json!({"containerPort": 80, "hostPort": 8080}),
                vec!["b"],
            ),
            (
                "other port",
                json!({"containerPort": 80, "hostPort": 8081}),
                vec!["a", "b"],
            ),
            (
                "other protocol",
                json!({"containerPort": 80, "hostPort": 8080, "protocol": "UDP"}),
                vec!["a", "b"],
            ),
            (
                "no host port",
                json!({"containerPort": 8080}),
                vec!["a", "b"],
            ),
            (
                "other ip",
                json!({"containerPort": 53, "hostPort": 53, "protocol": "UDP", "hostIP": "10.0.0.2"}),
                vec!["a", "b"],
            ),
            (
                "wildcard ip",
                json!({"containerPort": 53, "hostPort": 53, "protocol": "UDP"}),
                vec!["b"],
            ),
        ];
        for (name, port, want) in cases {
            assert_eq!(
                passing(&NodePorts, &with_port("p", None, port), &c),
                want,
                "{name}"
            );
        }
    }
}
