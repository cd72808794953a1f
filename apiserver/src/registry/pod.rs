//! Pod-only REST operations: `pods/binding` (the scheduler's write) and `pods/eviction`
//! (deletion that honours PodDisruptionBudgets), plus `namespaces/finalize`.

use super::{storage_err, Registry, WriteOptions, Written};
use crate::codec::{self, meta_mut};
use crate::request::Target;
use crate::resources;
use apimachinery::errors::{ApiError, Reason};
use serde_json::{json, Value};

impl Registry {
    /// Assign a pod to a node: sets `spec.nodeName` once (409 if already bound), copies the
    /// binding's annotations and marks PodScheduled=True, as upstream's `assignPod`.
    pub async fn bind_pod(
        &self,
        t: &Target,
        name: &str,
        node: &str,
        binding: &Value,
        o: &WriteOptions,
    ) -> Result<(), ApiError> {
        let r = t.resource;
        let gr = r.group_resource();
        let key = r.key(t.namespace.as_deref(), name);
        for _ in 0..100_000 {
            let cur = self
                .store
                .get(&key)
                .await
                .map_err(|e| storage_err(gr, name, e))?
                .ok_or_else(|| ApiError::not_found(gr, name))?;
            let mut pod = codec::decode_stored(&cur.value, cur.mod_revision)?;
            if let Some(uid) = binding
                .pointer("/metadata/uid")
                .and_then(Value::as_str)
                .filter(|u| !u.is_empty())
            {
                if pod.pointer("/metadata/uid").and_then(Value::as_str) != Some(uid) {
                    return Err(ApiError::conflict(gr, name, &format!("Precondition failed: UID in precondition: {uid}, UID in object meta: {}", pod.pointer("/metadata/uid").and_then(Value::as_str).unwrap_or(""))));
                }
            }
            if pod.pointer("/metadata/deletionTimestamp").is_some() {
                return Err(ApiError::conflict(
                    gr,
                    name,
                    "pod is being deleted, cannot be assigned to a host",
                ));
            }
            if let Some(existing) = pod
                .pointer("/spec/nodeName")
                .and_then(Value::as_str)
                .filter(|n| !n.is_empty())
            {
                return Err(ApiError::conflict(
                    gr,
                    name,
                    &format!("pod {name} is already assigned to node \"{existing}\""),
                ));
            }
            pod["spec"]["nodeName"] = json!(node);
            if let Some(ann) = binding
                .pointer("/metadata/annotations")
                .and_then(Value::as_object)
            {
                let m = meta_mut(&mut pod).expect("object");
                let a = m.entry("annotations").or_insert(json!({}));
                for (k, v) in ann {
                    a[k] = v.clone();
                }
            }
            let conds = pod["status"]
                .as_object_mut()
                .map(|s| s.entry("conditions").or_insert(json!([])));
            if let Some(cs) = conds.and_then(Value::as_array_mut) {
                cs.retain(|c| c.get("type").and_then(Value::as_str) != Some("PodScheduled"));
                cs.push(json!({"type": "PodScheduled", "status": "True", "lastProbeTime": null, "lastTransitionTime": codec::now_rfc3339()}));
            }
            if o.dry_run {
                return Ok(());
            }
            match self
                .store
                .update(&key, codec::encode_for_storage(&pod), cur.mod_revision)
                .await
            {
                Ok(_) => return Ok(()),
                Err(storage::Error::Conflict { .. }) => continue,
                Err(e) => return Err(storage_err(gr, name, e)),
            }
        }
        Err(ApiError::conflict(
            gr,
            name,
            "too many concurrent updates; please retry",
        ))
    }

    /// Evict a pod: refused with 429 while a matching PodDisruptionBudget allows no disruption.
    pub async fn evict_pod(
        &self,
        t: &Target,
        name: &str,
        opts: &Value,
        dry_run: bool,
    ) -> Result<(), ApiError> {
        let pod = self.get(t, name).await?;
        let phase = pod
            .pointer("/status/phase")
            .and_then(Value::as_str)
            .unwrap_or("");
        if phase != "Succeeded"
            && phase != "Failed"
            && pod.pointer("/metadata/deletionTimestamp").is_none()
        {
            let pdbr = resources::by_kind("policy", "PodDisruptionBudget").expect("served");
            let list = self
                .store
                .list(
                    &pdbr.key_prefix(t.namespace.as_deref()),
                    &Default::default(),
                )
                .await
                .map_err(|e| storage_err(pdbr.group_resource(), "", e))?;
            for kv in list.items {
                let pdb: Value = serde_json::from_slice(&kv.value).unwrap_or_default();
                let Some(sel) = pdb.pointer("/spec/selector") else {
                    continue;
                };
                let Ok(sel) = apimachinery::selectors::LabelSelector::from_json(sel) else {
                    continue;
                };
                if sel.is_empty() || !sel.matches(codec::labels_of(&pod)) {
                    continue;
                }
                let allowed = pdb
                    .pointer("/status/disruptionsAllowed")
                    .and_then(Value::as_i64)
                    .unwrap_or(0);
                if allowed <= 0 {
                    return Err(ApiError::new(Reason::TooManyRequests, "Cannot evict pod as it would violate the pod's disruption budget.")
                        .with_details(json!({"causes": [{"reason": "DisruptionBudget", "message": format!("The disruption budget {} needs {} healthy pods and has {} currently", codec::name_of(&pdb), pdb.pointer("/status/desiredHealthy").and_then(Value::as_i64).unwrap_or(0), pdb.pointer("/status/currentHealthy").and_then(Value::as_i64).unwrap_or(0))}]})));
                }
            }
        }
        self.delete(t, name, opts, dry_run).await.map(|_| ())
    }

    /// `namespaces/{name}/finalize`: replace `spec.finalizers`; the namespace is removed once
    /// it is terminating and no finalizer is left.
    pub async fn finalize_namespace(
        &self,
        t: &Target,
        name: &str,
        finalizers: Value,
        o: &WriteOptions,
    ) -> Result<Written, ApiError> {
        let body = json!({"spec": {"finalizers": finalizers}});
        self.update_with(t, name, super::strategy::Scope::Finalize, o, false, |_| {
            Ok(body.clone())
        })
        .await
    }
}
