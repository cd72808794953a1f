//! Selectable fields per resource (upstream's `GetAttrs`/`SelectableFields`): which
//! `fieldSelector` labels each kind supports and how they read an object.

use crate::resources::Resource;
use apimachinery::errors::ApiError;
use serde_json::Value;

fn s(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) => Some(s.clone()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn at<'a>(obj: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(obj, |v, k| v.get(k))
}

/// The fields `fieldSelector` may name for this resource, beyond metadata.name/namespace.
pub fn extra_fields(r: &Resource) -> &'static [&'static str] {
    match (r.group, r.kind) {
        ("", "Pod") => &[
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "spec.hostNetwork",
            "status.phase",
            "status.podIP",
            "status.podIPs",
            "status.nominatedNodeName",
        ],
        ("", "Event") => &[
            "involvedObject.kind",
            "involvedObject.namespace",
            "involvedObject.name",
            "involvedObject.uid",
            "involvedObject.apiVersion",
            "involvedObject.resourceVersion",
            "involvedObject.fieldPath",
            "reason",
            "reportingComponent",
            "source",
            "type",
        ],
        ("events.k8s.io", "Event") => &[
            "regarding.kind",
            "regarding.namespace",
            "regarding.name",
            "regarding.uid",
            "regarding.apiVersion",
            "regarding.resourceVersion",
            "regarding.fieldPath",
            "reason",
            "reportingController",
            "type",
        ],
        ("", "Secret") => &["type"],
        ("", "Namespace") => &["status.phase"],
        ("", "Node") => &["spec.unschedulable"],
        ("", "ReplicationController") | ("apps", "ReplicaSet") => &["status.replicas"],
        ("batch", "Job") => &["status.successful"],
        ("", "Service") => &["spec.clusterIP", "spec.type"],
        ("certificates.k8s.io", "CertificateSigningRequest") => &["spec.signerName"],
        _ => &[],
    }
}

/// Check that every field of a selector is supported, with upstream's message.
pub fn check_supported(r: &Resource, fields: &[&str]) -> Result<(), ApiError> {
    for f in fields {
        if *f != "metadata.name" && *f != "metadata.namespace" && !extra_fields(r).contains(f) {
            return Err(ApiError::bad_request(format!(
                "field label not supported: {f}"
            )));
        }
    }
    Ok(())
}

/// The value of a selectable field of an object, as upstream renders it for matching.
pub fn field_value(r: &Resource, obj: &Value, field: &str) -> Option<String> {
    match field {
        "metadata.name" => return s(at(obj, &["metadata", "name"])),
        "metadata.namespace" => {
            return Some(s(at(obj, &["metadata", "namespace"])).unwrap_or_default())
        }
        _ => {}
    }
    match (r.kind, field) {
        ("Pod", "spec.hostNetwork") => Some(
            at(obj, &["spec", "hostNetwork"])
                .and_then(Value::as_bool)
                .unwrap_or(false)
                .to_string(),
        ),
        ("Pod", "status.podIPs") => Some(
            at(obj, &["status", "podIPs"])
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|p| p.get("ip").and_then(Value::as_str))
                        .collect::<Vec<_>>()
                        .join(",")
                })
                .unwrap_or_default(),
        ),
        ("Event", "source") => Some(
            s(at(obj, &["source", "component"]))
                .or_else(|| s(obj.get("reportingComponent")))
                .unwrap_or_default(),
        ),
        ("Node", "spec.unschedulable") => Some(
            at(obj, &["spec", "unschedulable"])
                .and_then(Value::as_bool)
                .unwrap_or(false)
                .to_string(),
        ),
        ("ReplicationController" | "ReplicaSet", "status.replicas") => Some(
            at(obj, &["status", "replicas"])
                .and_then(Value::as_i64)
                .unwrap_or(0)
                .to_string(),
        ),
        ("Job", "status.successful") => Some(
            at(obj, &["status", "succeeded"])
                .and_then(Value::as_i64)
                .unwrap_or(0)
                .to_string(),
        ),
        ("Secret", "type") => Some(s(obj.get("type")).unwrap_or_else(|| "Opaque".into())),
        _ => {
            let path: Vec<&str> = field.split('.').collect();
            Some(s(at(obj, &path)).unwrap_or_default())
        }
    }
}

/// The JSON paths [`field_value`] reads for `field`, so that a watch can decode only those
/// parts of each event's object (see [`crate::codec::Projection`]). Mirrors `field_value`'s
/// special cases; `every_field_reads_only_its_paths` checks the two agree.
pub fn field_paths(r: &Resource, field: &str) -> Vec<Vec<String>> {
    let p = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    match (r.kind, field) {
        ("Event", "source") => vec![p(&["source", "component"]), p(&["reportingComponent"])],
        ("Job", "status.successful") => vec![p(&["status", "succeeded"])],
        _ => vec![field.split('.').map(str::to_string).collect()],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::by_kind;
    use serde_json::json;

    #[test]
    fn every_field_reads_only_its_paths() {
        use crate::codec::Projection;
        // One object with a value at every path any kind's field selector reads, plus data no
        // selector reads; each field must read the same from the projected decode.
        let obj = json!({
            "metadata": {"name": "n", "namespace": "ns", "labels": {"a": "b"}, "annotations": {"x": "y"}},
            "spec": {"nodeName": "node", "restartPolicy": "Always", "schedulerName": "s", "serviceAccountName": "sa",
                     "hostNetwork": true, "unschedulable": true, "clusterIP": "10.0.0.1", "type": "NodePort",
                     "signerName": "k/s", "containers": [{"name": "c"}]},
            "status": {"phase": "Running", "podIP": "1.2.3.4", "podIPs": [{"ip": "1.2.3.4"}, {"ip": "::1"}],
                       "nominatedNodeName": "nn", "replicas": 3, "succeeded": 2},
            "involvedObject": {"kind": "Pod", "namespace": "ns", "name": "p", "uid": "u", "apiVersion": "v1",
                               "resourceVersion": "5", "fieldPath": "spec"},
            "regarding": {"kind": "Pod", "namespace": "ns", "name": "p", "uid": "u", "apiVersion": "v1",
                          "resourceVersion": "5", "fieldPath": "spec"},
            "reason": "r", "reportingComponent": "rc", "reportingController": "ctl", "type": "Warning",
            "source": {"component": "sc"}
        });
        let mut no_source = obj.clone();
        no_source.as_object_mut().unwrap().remove("source");
        let bytes = [
            serde_json::to_vec(&obj).unwrap(),
            serde_json::to_vec(&no_source).unwrap(),
        ];
        for r in crate::resources::RESOURCES {
            let fields = extra_fields(r)
                .iter()
                .copied()
                .chain(["metadata.name", "metadata.namespace"]);
            for f in fields {
                let mut proj = Projection::default();
                for path in field_paths(r, f) {
                    let path: Vec<&str> = path.iter().map(String::as_str).collect();
                    proj.add(&path);
                }
                for b in &bytes {
                    let full: Value = serde_json::from_slice(b).unwrap();
                    let part = proj.decode(b).unwrap();
                    assert_ne!(part, full, "{} {f}: the projection drops nothing", r.kind);
                    assert_eq!(
                        field_value(r, &part, f),
                        field_value(r, &full, f),
                        "{} {f}",
                        r.kind
                    );
                }
            }
        }
    }

    #[test]
    fn pod_and_event_fields() {
        let pod = by_kind("", "Pod").unwrap();
        let obj = json!({"metadata":{"name":"p","namespace":"d"},"spec":{"nodeName":"n1"},"status":{"phase":"Running"}});
        assert_eq!(
            field_value(pod, &obj, "spec.nodeName").as_deref(),
            Some("n1")
        );
        assert_eq!(
            field_value(pod, &obj, "status.phase").as_deref(),
            Some("Running")
        );
        assert_eq!(
            field_value(pod, &obj, "spec.hostNetwork").as_deref(),
            Some("false")
        );
        assert!(check_supported(pod, &["spec.nodeName", "metadata.name"]).is_ok());
        let err = check_supported(pod, &["spec.bogus"]).unwrap_err();
        assert_eq!(err.message, "field label not supported: spec.bogus");
        let ev = by_kind("", "Event").unwrap();
        let e = json!({"involvedObject":{"uid":"u1","kind":"Pod"}});
        assert_eq!(
            field_value(ev, &e, "involvedObject.uid").as_deref(),
            Some("u1")
        );
        assert_eq!(
            field_value(ev, &e, "involvedObject.name").as_deref(),
            Some("")
        );
    }
}
