//! VolumeBinding (restrictions part): every PersistentVolumeClaim the pod mounts must exist and
//! be bound, and a bound volume's node affinity (local volumes) must match the node.
//!
//! Unbound claims are reported as upstream reports unbound *immediate* claims; delayed
//! (WaitForFirstConsumer) provisioning is not done by this scheduler.

use crate::cache::NodeInfo;
use crate::framework::{Ctx, CycleState, Plugin, Status};
use crate::plugins::node_affinity::terms_match;
use k8s_openapi::api::core::v1::NodeSelectorTerm;

pub const NAME: &str = "VolumeBinding";
pub const REASON_CONFLICT: &str = "node(s) had volume node affinity conflict";
pub const REASON_UNBOUND: &str = "pod has unbound immediate PersistentVolumeClaims";

pub struct VolumeBinding;

/// The required node selector terms of each bound volume.
pub(crate) struct VolumeState(Vec<Vec<NodeSelectorTerm>>);

impl Plugin for VolumeBinding {
    fn name(&self) -> &'static str {
        NAME
    }

    fn pre_filter(&self, ctx: &Ctx, state: &mut CycleState) -> Result<(), Status> {
        if ctx.pod.pvcs.is_empty() {
            return Ok(());
        }
        let mut terms = Vec::new();
        for claim in &ctx.pod.pvcs {
            let key = format!("{}/{claim}", ctx.pod.namespace);
            let Some(pvc) = ctx.cache.volumes.pvcs.get(&key) else {
                return Err(Status::unresolvable(
                    NAME,
                    format!("persistentvolumeclaim \"{claim}\" not found"),
                ));
            };
            if pvc.metadata.deletion_timestamp.is_some() {
                return Err(Status::unresolvable(
                    NAME,
                    format!("persistentvolumeclaim \"{claim}\" is being deleted"),
                ));
            }
            let Some(pv_name) = pvc
                .spec
                .as_ref()
                .and_then(|s| s.volume_name.clone())
                .filter(|v| !v.is_empty())
            else {
                return Err(Status::unresolvable(NAME, REASON_UNBOUND));
            };
            let Some(pv) = ctx.cache.volumes.pvs.get(&pv_name) else {
                return Err(Status::unresolvable(
                    NAME,
                    "pvc(s) bound to non-existent pv(s)",
                ));
            };
            if let Some(t) = pv
                .spec
                .as_ref()
                .and_then(|s| s.node_affinity.as_ref())
                .and_then(|a| a.required.as_ref())
            {
                terms.push(t.node_selector_terms.clone());
            }
        }
        state.volumes = Some(VolumeState(terms));
        Ok(())
    }

    fn filter(&self, _: &Ctx, state: &CycleState, node: &NodeInfo) -> Status {
        let Some(VolumeState(terms)) = &state.volumes else {
            return Status::success();
        };
        if terms
            .iter()
            .all(|t| terms_match(t, &node.name, &node.labels))
        {
            Status::success()
        } else {
            Status::unresolvable(NAME, REASON_CONFLICT)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::testing::*;
    use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
    use serde_json::json;
    use std::sync::Arc;

    #[test]
    fn claims_must_exist_be_bound_and_match_local_volume_affinity() {
        let mut c = cache(
            &[
                labelled("a", json!({"kubernetes.io/hostname": "a"})),
                labelled("b", json!({"kubernetes.io/hostname": "b"})),
            ],
            vec![],
        );
        let pvc = |name: &str, volume: Option<&str>| {
            Arc::new(serde_json::from_value::<PersistentVolumeClaim>(json!({"metadata": {"name": name, "namespace": "d"}, "spec": {"volumeName": volume}})).unwrap())
        };
        c.volumes
            .pvcs
            .insert("d/local".into(), pvc("local", Some("pv-a")));
        c.volumes
            .pvcs
            .insert("d/net".into(), pvc("net", Some("pv-net")));
        c.volumes
            .pvcs
            .insert("d/pending".into(), pvc("pending", None));
        c.volumes
            .pvcs
            .insert("d/dangling".into(), pvc("dangling", Some("gone")));
        let pv_a = json!({"metadata": {"name": "pv-a"}, "spec": {"local": {"path": "/mnt"}, "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In", "values": ["a"]}]}]}}}});
        c.volumes.pvs.insert(
            "pv-a".into(),
            Arc::new(serde_json::from_value::<PersistentVolume>(pv_a).unwrap()),
        );
        c.volumes.pvs.insert(
            "pv-net".into(),
            Arc::new(
                serde_json::from_value::<PersistentVolume>(json!({"metadata": {"name": "pv-net"}}))
                    .unwrap(),
            ),
        );
        let with_claims = |claims: &[&str]| {
            pod(
                json!({"spec": {"volumes": claims.iter().map(|c| json!({"name": c, "persistentVolumeClaim": {"claimName": c}})).collect::<Vec<_>>()}}),
            )
        };
        let cases: [(&str, &[&str], Vec<&str>); 4] = [
            ("no claims", &[], vec!["a", "b"]),
            ("local volume on a", &["local"], vec!["a"]),
            ("network volume", &["net"], vec!["a", "b"]),
            ("both", &["local", "net"], vec!["a"]),
        ];
        for (name, claims, want) in cases {
            assert_eq!(
                passing(&VolumeBinding, &with_claims(claims), &c),
                want,
                "{name}"
            );
        }
        assert_eq!(
            filter_all(&VolumeBinding, &with_claims(&["local"]), &c)[1].1,
            Status::unresolvable(NAME, REASON_CONFLICT)
        );
        for (claim, reason) in [
            ("missing", "persistentvolumeclaim \"missing\" not found"),
            ("pending", REASON_UNBOUND),
            ("dangling", "pvc(s) bound to non-existent pv(s)"),
        ] {
            assert_eq!(
                filter_all(&VolumeBinding, &with_claims(&[claim]), &c)[0].1,
                Status::unresolvable(NAME, reason),
                "{claim}"
            );
        }
    }
}
