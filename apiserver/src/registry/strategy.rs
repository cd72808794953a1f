//! Per-resource behaviour at the REST layer (upstream's `pkg/registry/*/strategy.go`):
//! what the server sets or resets on create, what the main resource and `/status` may change
//! on update, which kinds count generations, and graceful deletion. The generic handler in
//! `registry::mod` calls these hooks; a kind without special rules uses the defaults.

use crate::codec::{meta_mut, name_of};
use crate::resources::Resource;
use serde_json::{json, Map, Value};

/// Which part of an object a write may change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Main,
    Status,
    /// `namespaces/{name}/finalize`: only `spec.finalizers` changes.
    Finalize,
}

fn is(r: &Resource, group: &str, kind: &str) -> bool {
    r.group == group && r.kind == kind
}

/// Kinds whose `metadata.generation` follows spec changes.
pub fn tracks_generation(r: &Resource) -> bool {
    r.storage == crate::resources::Storage::Stored
        && !matches!(
            r.kind,
            "Namespace" | "Node" | "Event" | "Endpoints" | "ConfigMap" | "Secret"
        )
}

/// Server-side fields set on create, after metadata (uid, timestamps) is filled in.
pub fn prepare_for_create(r: &Resource, obj: &mut Value) {
    if r.has_status() && r.kind != "Node" {
        obj.as_object_mut()
            .map(|o| o.insert("status".into(), json!({})));
    }
    match (r.group, r.kind) {
        ("", "Pod") => prepare_pod_create(obj),
        ("", "Namespace") => {
            obj["status"] = json!({"phase": "Active"});
            if obj.get("spec").and_then(|s| s.get("finalizers")).is_none() {
                obj["spec"] = json!({"finalizers": ["kubernetes"]});
            }
            namespace_name_label(obj);
        }
        ("", "PersistentVolumeClaim") | ("", "PersistentVolume") => {
            obj["status"] = json!({"phase": "Pending"})
        }
        ("batch", "Job") => job_selector(obj),
        ("", "Service") => {
            obj["status"] = json!({"loadBalancer": {}});
        }
        _ => {}
    }
}

/// Keep what a write through `scope` may not change, taking it from the stored object.
pub fn prepare_for_update(r: &Resource, scope: Scope, new: &mut Value, old: &Value) {
    match scope {
        Scope::Main => {
            if r.has_status() {
                match old.get("status") {
                    Some(s) => new["status"] = s.clone(),
                    None => {
                        new.as_object_mut().map(|o| o.remove("status"));
                    }
                }
            }
            if is(r, "", "Namespace") {
                // spec.finalizers change only through /finalize.
                if let Some(f) = old.get("spec").and_then(|s| s.get("finalizers")) {
                    new["spec"]["finalizers"] = f.clone();
                }
                namespace_name_label(new);
            }
            if is(r, "batch", "Job") {
                // The generated selector and labels survive a replace that omits them.
                if new.pointer("/spec/selector").is_none() {
                    if let Some(sel) = old.pointer("/spec/selector") {
                        new["spec"]["selector"] = sel.clone();
                    }
                }
                if new.pointer("/spec/template/metadata/labels").is_none() {
                    if let Some(l) = old.pointer("/spec/template/metadata/labels") {
                        new["spec"]["template"]["metadata"]["labels"] = l.clone();
                    }
                }
            }
        }
        Scope::Finalize => {
            let finalizers = new
                .pointer("/spec/finalizers")
                .cloned()
                .unwrap_or(json!([]));
            let mut merged = old.clone();
            merged["spec"]["finalizers"] = finalizers;
            if let (Some(rv), Some(m)) = (
                new.get("metadata")
                    .and_then(|m| m.get("resourceVersion"))
                    .cloned(),
                meta_mut(&mut merged),
            ) {
                m.insert("resourceVersion".into(), rv);
            }
            *new = merged;
        }
        Scope::Status => {
            // Only status (and, as upstream allows, nothing in metadata but what the caller
            // can't change anyway) comes from the request.
            let status = new.get("status").cloned();
            let mut merged = old.clone();
            match status {
                Some(s) => merged["status"] = s,
                None => {
                    merged.as_object_mut().map(|o| o.remove("status"));
                }
            }
            if let (Some(rv), Some(m)) = (
                new.get("metadata")
                    .and_then(|m| m.get("resourceVersion"))
                    .cloned(),
                meta_mut(&mut merged),
            ) {
                m.insert("resourceVersion".into(), rv);
            }
            *new = merged;
        }
    }
}

/// Grace period (seconds) a deletion of `obj` waits for, or 0 to delete at once.
pub fn grace_period(r: &Resource, obj: &Value, requested: Option<i64>) -> i64 {
    if !is(r, "", "Pod") {
        return 0;
    }
    let spec = obj.get("spec");
    let node = spec
        .and_then(|s| s.get("nodeName"))
        .and_then(Value::as_str)
        .unwrap_or("");
    let phase = obj
        .get("status")
        .and_then(|s| s.get("phase"))
        .and_then(Value::as_str)
        .unwrap_or("");
    if node.is_empty() || phase == "Succeeded" || phase == "Failed" {
        return 0;
    }
    let g = requested
        .or_else(|| {
            spec.and_then(|s| s.get("terminationGracePeriodSeconds"))
                .and_then(Value::as_i64)
        })
        .unwrap_or(30);
    // upstream: a requested grace of 0 without force means 1 second, except that kubectl's
    // --force --grace-period=0 sends 0 and expects immediate removal.
    g.max(0)
}

/// Kinds whose PUT creates the object when it does not exist (upstream AllowCreateOnUpdate).
pub fn allow_create_on_update(r: &Resource) -> bool {
    matches!(
        (r.group, r.kind),
        ("", "Endpoints")
            | ("", "Event")
            | ("coordination.k8s.io", "Lease")
            | ("events.k8s.io", "Event")
            | ("", "Node")
            | ("rbac.authorization.k8s.io", _)
            | ("", "LimitRange")
    )
}

fn namespace_name_label(obj: &mut Value) {
    let name = name_of(obj).to_string();
    if let Some(m) = meta_mut(obj) {
        let labels = m
            .entry("labels")
            .or_insert_with(|| Value::Object(Map::new()));
        if let Some(l) = labels.as_object_mut() {
            l.insert("kubernetes.io/metadata.name".into(), Value::String(name));
        }
    }
}

fn prepare_pod_create(obj: &mut Value) {
    let qos = qos_class(obj.get("spec").unwrap_or(&Value::Null));
    obj["status"] = json!({"phase": "Pending", "qosClass": qos});
    let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    // ServiceAccount admission: default account.
    let sa = spec
        .get("serviceAccountName")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .or_else(|| {
            spec.get("serviceAccount")
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
        })
        .unwrap_or("default")
        .to_string();
    spec.insert("serviceAccountName".into(), json!(sa));
    spec.insert("serviceAccount".into(), json!(sa));
    // Priority admission: system classes are built in; others are resolved by the registry.
    if !spec.contains_key("priority") {
        let p = match spec.get("priorityClassName").and_then(Value::as_str) {
            Some("system-node-critical") => 2_000_001_000,
            Some("system-cluster-critical") => 2_000_000_000,
            _ => 0,
        };
        spec.insert("priority".into(), json!(p));
    }
    spec.entry("preemptionPolicy")
        .or_insert(json!("PreemptLowerPriority"));
    // DefaultTolerationSeconds admission.
    let tolerations = spec.entry("tolerations").or_insert_with(|| json!([]));
    if let Some(ts) = tolerations.as_array_mut() {
        for key in [
            "node.kubernetes.io/not-ready",
            "node.kubernetes.io/unreachable",
        ] {
            let has = ts.iter().any(|t| {
                let k = t.get("key").and_then(Value::as_str);
                let op = t.get("operator").and_then(Value::as_str).unwrap_or("Equal");
                let effect = t.get("effect").and_then(Value::as_str).unwrap_or("");
                (k == Some(key) || (k.is_none() && op == "Exists"))
                    && (effect.is_empty() || effect == "NoExecute")
            });
            if !has {
                ts.push(json!({"key": key, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}));
            }
        }
    }
    // ServiceAccount admission: the projected token volume, unless opted out.
    let automount = spec
        .get("automountServiceAccountToken")
        .and_then(Value::as_bool)
        .unwrap_or(true);
    let has_mount = |c: &Value| {
        c.get("volumeMounts")
            .and_then(Value::as_array)
            .is_some_and(|ms| {
                ms.iter().any(|m| {
                    m.get("mountPath").and_then(Value::as_str)
                        == Some("/var/run/secrets/kubernetes.io/serviceaccount")
                })
            })
    };
    if automount {
        let vol_name = format!("kube-api-access-{}", crate::registry::random_suffix());
        let volumes = spec.entry("volumes").or_insert_with(|| json!([]));
        if let Some(vs) = volumes.as_array_mut() {
            vs.push(json!({
                "name": vol_name,
                "projected": {
                    "defaultMode": 420,
                    "sources": [
                        {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                        {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                        {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}}
                    ]
                }
            }));
        }
        for list in ["initContainers", "containers"] {
            if let Some(cs) = spec.get_mut(list).and_then(Value::as_array_mut) {
                for c in cs.iter_mut() {
                    if has_mount(c) {
                        continue;
                    }
                    if let Some(co) = c.as_object_mut() {
                        let mounts = co.entry("volumeMounts").or_insert_with(|| json!([]));
                        if let Some(ms) = mounts.as_array_mut() {
                            ms.push(json!({"name": vol_name, "readOnly": true, "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"}));
                        }
                    }
                }
            }
        }
    }
}

/// Upstream's QoS class: Guaranteed when every container has equal cpu and memory requests
/// and limits, BestEffort when none has any, Burstable otherwise.
pub fn qos_class(spec: &Value) -> &'static str {
    let mut any = false;
    let mut guaranteed = true;
    for list in ["initContainers", "containers"] {
        for c in spec
            .get(list)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let res = c.get("resources");
            let req = res
                .and_then(|r| r.get("requests"))
                .and_then(Value::as_object);
            let lim = res.and_then(|r| r.get("limits")).and_then(Value::as_object);
            for m in [req, lim].into_iter().flatten() {
                if m.keys().any(|k| k == "cpu" || k == "memory") {
                    any = true;
                }
            }
            for k in ["cpu", "memory"] {
                let l = lim.and_then(|l| l.get(k));
                let r = req.and_then(|r| r.get(k)).or(l);
                if l.is_none() || r != l {
                    guaranteed = false;
                }
            }
        }
    }
    if !any {
        "BestEffort"
    } else if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

fn job_selector(obj: &mut Value) {
    let manual = obj
        .get("spec")
        .and_then(|s| s.get("manualSelector"))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    if manual {
        return;
    }
    let uid = obj
        .get("metadata")
        .and_then(|m| m.get("uid"))
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let name = name_of(obj).to_string();
    let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    spec.insert(
        "selector".into(),
        json!({"matchLabels": {"batch.kubernetes.io/controller-uid": uid}}),
    );
    let template = spec.entry("template").or_insert_with(|| json!({}));
    if let Some(t) = template.as_object_mut() {
        let meta = t.entry("metadata").or_insert_with(|| json!({}));
        if let Some(m) = meta.as_object_mut() {
            let labels = m.entry("labels").or_insert_with(|| json!({}));
            if let Some(l) = labels.as_object_mut() {
                l.insert("batch.kubernetes.io/controller-uid".into(), json!(uid));
                l.insert("batch.kubernetes.io/job-name".into(), json!(name));
                l.insert("controller-uid".into(), json!(uid));
                l.insert("job-name".into(), json!(name));
            }
        }
    }
}

/// The `autoscaling/v1 Scale` view of a scalable object.
pub fn to_scale(obj: &Value) -> Value {
    let meta = obj.get("metadata").cloned().unwrap_or_default();
    let selector = obj
        .get("spec")
        .and_then(|s| s.get("selector"))
        .map(|s| {
            if s.get("matchLabels").is_some() || s.get("matchExpressions").is_some() {
                apimachinery::selectors::LabelSelector::from_json(s)
                    .map(|l| l.to_string())
                    .unwrap_or_default()
            } else {
                // ReplicationController: a plain map selector.
                s.as_object()
                    .map(|m| {
                        m.iter()
                            .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                            .collect::<Vec<_>>()
                            .join(",")
                    })
                    .unwrap_or_default()
            }
        })
        .unwrap_or_default();
    let mut scale_meta = Map::new();
    for k in [
        "name",
        "namespace",
        "uid",
        "resourceVersion",
        "creationTimestamp",
    ] {
        if let Some(v) = meta.get(k) {
            scale_meta.insert(k.into(), v.clone());
        }
    }
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": scale_meta,
        "spec": {"replicas": obj.get("spec").and_then(|s| s.get("replicas")).cloned().unwrap_or(json!(1))},
        "status": {
            "replicas": obj.get("status").and_then(|s| s.get("replicas")).cloned().unwrap_or(json!(0)),
            "selector": selector,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::by_kind;

    #[test]
    fn qos_classes() {
        assert_eq!(
            qos_class(&json!({"containers":[{"name":"a"}]})),
            "BestEffort"
        );
        assert_eq!(
            qos_class(&json!({"containers":[{"resources":{"limits":{"cpu":"1","memory":"1Gi"}}}]})),
            "Guaranteed"
        );
        assert_eq!(
            qos_class(&json!({"containers":[{"resources":{"requests":{"cpu":"1"}}}]})),
            "Burstable"
        );
    }

    #[test]
    fn pod_create_sets_status_tolerations_and_token_volume() {
        let r = by_kind("", "Pod").unwrap();
        let mut p = json!({"metadata":{"name":"p"},"spec":{"containers":[{"name":"c","image":"i"}]},"status":{"phase":"Running"}});
        prepare_for_create(r, &mut p);
        assert_eq!(p["status"]["phase"], "Pending");
        assert_eq!(p["spec"]["serviceAccountName"], "default");
        assert_eq!(p["spec"]["tolerations"].as_array().unwrap().len(), 2);
        assert_eq!(
            p["spec"]["containers"][0]["volumeMounts"][0]["mountPath"],
            "/var/run/secrets/kubernetes.io/serviceaccount"
        );
    }

    #[test]
    fn main_update_keeps_status_and_status_update_keeps_spec() {
        let r = by_kind("apps", "Deployment").unwrap();
        let old = json!({"metadata":{"name":"d"},"spec":{"replicas":1},"status":{"replicas":1}});
        let mut new =
            json!({"metadata":{"name":"d"},"spec":{"replicas":3},"status":{"replicas":9}});
        prepare_for_update(r, Scope::Main, &mut new, &old);
        assert_eq!(
            (
                new["spec"]["replicas"].as_i64(),
                new["status"]["replicas"].as_i64()
            ),
            (Some(3), Some(1))
        );
        let mut st = json!({"metadata":{"name":"d"},"spec":{"replicas":7},"status":{"replicas":2}});
        prepare_for_update(r, Scope::Status, &mut st, &old);
        assert_eq!(
            (
                st["spec"]["replicas"].as_i64(),
                st["status"]["replicas"].as_i64()
            ),
            (Some(1), Some(2))
        );
    }

    #[test]
    fn pod_grace_period() {
        let r = by_kind("", "Pod").unwrap();
        assert_eq!(grace_period(r, &json!({"spec":{}}), None), 0);
        assert_eq!(grace_period(r, &json!({"spec":{"nodeName":"n"}}), None), 30);
        assert_eq!(
            grace_period(
                r,
                &json!({"spec":{"nodeName":"n","terminationGracePeriodSeconds":5}}),
                None
            ),
            5
        );
        assert_eq!(
            grace_period(r, &json!({"spec":{"nodeName":"n"}}), Some(0)),
            0
        );
    }
}
