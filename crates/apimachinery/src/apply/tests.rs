use super::*;
use crate::patch::{FieldMeta, StaticSchema};

const T0: &str = "2024-01-01T00:00:00Z";
const T1: &str = "2024-01-01T00:01:00Z";

fn schema() -> StaticSchema {
    let protocol = FieldMeta {
        default: Some(json!("TCP")),
        ..FieldMeta::default()
    };
    StaticSchema::from_entries([
        ("metadata", StaticSchema::object()),
        ("metadata.labels", StaticSchema::string_map()),
        ("metadata.annotations", StaticSchema::string_map()),
        ("spec", StaticSchema::object()),
        ("spec.selector", StaticSchema::atomic_object()),
        ("spec.template", StaticSchema::object()),
        ("spec.template.metadata", StaticSchema::object()),
        ("spec.template.metadata.labels", StaticSchema::string_map()),
        ("spec.template.spec", StaticSchema::object()),
        (
            "spec.template.spec.containers",
            StaticSchema::map_list("name"),
        ),
        (
            "spec.template.spec.tolerations",
            StaticSchema::atomic_list(),
        ),
        (
            "spec.template.spec.containers.ports",
            FieldMeta {
                list_map_keys: vec!["containerPort".into(), "protocol".into()],
                ..StaticSchema::map_list("containerPort")
            },
        ),
        ("spec.template.spec.containers.ports.protocol", protocol),
    ])
}

fn deployment(replicas: i64, image: &str) -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default", "labels": {"app": "web"}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "c", "image": image, "ports": [{"containerPort": 80}]}]}
            }
        }
    })
}

fn entries(obj: &Value) -> Vec<(String, String, Value)> {
    obj["metadata"]["managedFields"]
        .as_array()
        .map(|l| {
            l.iter()
                .map(|e| {
                    (
                        e["manager"].as_str().unwrap().to_string(),
                        e["operation"].as_str().unwrap().to_string(),
                        e["fieldsV1"].clone(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn owns(obj: &Value, manager: &str, path: &[&str]) -> bool {
    entries(obj)
        .iter()
        .filter(|(m, _, _)| m == manager)
        .any(|(_, _, f)| {
            let mut cur = f;
            for p in path {
                match cur.get(*p) {
                    Some(n) => cur = n,
                    None => return false,
                }
            }
            true
        })
}

#[test]
fn create_via_apply_records_upstream_fields_v1() {
    let s = schema();
    let got = apply(None, &deployment(2, "nginx:1.25"), "kubectl", false, &s, T0).unwrap();
    let mf = &got["metadata"]["managedFields"];
    assert_eq!(mf.as_array().unwrap().len(), 1);
    let e = &mf[0];
    assert_eq!(
        (
            e["manager"].as_str(),
            e["operation"].as_str(),
            e["apiVersion"].as_str(),
            e["time"].as_str(),
            e["fieldsType"].as_str()
        ),
        (
            Some("kubectl"),
            Some("Apply"),
            Some("apps/v1"),
            Some(T0),
            Some("FieldsV1")
        )
    );
    let want = json!({
        "f:metadata": {"f:labels": {"f:app": {}}},
        "f:spec": {
            "f:replicas": {},
            "f:selector": {},
            "f:template": {
                "f:metadata": {"f:labels": {"f:app": {}}},
                "f:spec": {"f:containers": {"k:{\"name\":\"c\"}": {
                    ".": {}, "f:image": {}, "f:name": {},
                    "f:ports": {"k:{\"containerPort\":80,\"protocol\":\"TCP\"}": {".": {}, "f:containerPort": {}}}
                }}}
            }
        }
    });
    assert_eq!(e["fieldsV1"], want);
    let mut body = got.clone();
    body["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("managedFields");
    assert_eq!(body, deployment(2, "nginx:1.25"));
}

#[test]
fn reapplying_without_a_field_removes_it() {
    let s = schema();
    let mut first = deployment(2, "nginx:1.25");
    first["metadata"]["labels"]["tier"] = json!("fe");
    first["spec"]["template"]["spec"]["containers"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "sidecar", "image": "busybox"}));
    let live = apply(None, &first, "kubectl", false, &s, T0).unwrap();
    let got = apply(
        Some(&live),
        &deployment(2, "nginx:1.25"),
        "kubectl",
        false,
        &s,
        T1,
    )
    .unwrap();
    assert_eq!(got["metadata"]["labels"], json!({"app": "web"}));
    let names: Vec<&str> = got["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["c"]);
    assert_eq!(got["metadata"]["managedFields"][0]["time"], T1);
}

#[test]
fn fields_owned_by_someone_else_survive_when_the_applier_drops_them() {
    let s = schema();
    let live = apply(None, &deployment(2, "nginx:1.25"), "a", false, &s, T0).unwrap();
    let live = apply(Some(&live), &json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"}, "spec": {"replicas": 2}}), "b", false, &s, T0).unwrap();
    let mut without_replicas = deployment(2, "nginx:1.25");
    without_replicas["spec"]
        .as_object_mut()
        .unwrap()
        .remove("replicas");
    let got = apply(Some(&live), &without_replicas, "a", false, &s, T1).unwrap();
    assert_eq!(got["spec"]["replicas"], 2);
    assert!(owns(&got, "b", &["f:spec", "f:replicas"]));
    assert!(!owns(&got, "a", &["f:spec", "f:replicas"]));
}

#[test]
fn conflicts_and_force_between_managers() {
    let s = schema();
    let live = apply(None, &deployment(2, "nginx:1.25"), "a", false, &s, T0).unwrap();

    // Same values: no conflict, shared ownership.
    let shared = apply(
        Some(&live),
        &deployment(2, "nginx:1.25"),
        "b",
        false,
        &s,
        T1,
    )
    .unwrap();
    assert!(
        owns(&shared, "a", &["f:spec", "f:replicas"])
            && owns(&shared, "b", &["f:spec", "f:replicas"])
    );

    // A different value conflicts.
    let err = apply(
        Some(&live),
        &deployment(3, "nginx:1.25"),
        "b",
        false,
        &s,
        T1,
    )
    .unwrap_err();
    assert_eq!(
        err.message(),
        "Apply failed with 1 conflict: conflict with \"a\": .spec.replicas"
    );
    assert_eq!(err.code(), 409);
    let status = err.to_api_error().to_status();
    assert_eq!(status["reason"], "Conflict");
    assert_eq!(
        status["details"]["causes"][0],
        json!({"reason": "FieldManagerConflict", "message": "conflict with \"a\"", "field": ".spec.replicas"})
    );

    // Several conflicts are grouped by manager.
    let err = apply(Some(&live), &deployment(3, "nginx:2"), "b", false, &s, T1).unwrap_err();
    assert_eq!(
        err.message(),
        "Apply failed with 2 conflicts: conflicts with \"a\":\n- .spec.replicas\n- .spec.template.spec.containers[name=\"c\"].image"
    );

    // Forcing moves ownership.
    let forced = apply(Some(&live), &deployment(3, "nginx:1.25"), "b", true, &s, T1).unwrap();
    assert_eq!(forced["spec"]["replicas"], 3);
    assert!(owns(&forced, "b", &["f:spec", "f:replicas"]));
    assert!(!owns(&forced, "a", &["f:spec", "f:replicas"]));
    assert!(owns(&forced, "a", &["f:spec", "f:selector"]));
}

#[test]
fn client_side_apply_then_server_side_apply_conflicts_on_replicas() {
    let s = schema();
    let created = update_managed_fields(
        None,
        &deployment(2, "nginx:1.25"),
        "kubectl-client-side-apply",
        "Update",
        None,
        &s,
        T0,
    );
    let e = &created["metadata"]["managedFields"][0];
    assert_eq!(
        (e["operation"].as_str(), e["apiVersion"].as_str()),
        (Some("Update"), Some("apps/v1"))
    );
    assert_eq!(
        e["fieldsV1"]["f:metadata"],
        json!({"f:labels": {".": {}, "f:app": {}}})
    );
    assert!(
        e["fieldsV1"]["f:spec"].get(".").is_none(),
        "struct fields get no self marker on create"
    );

    let err = apply(
        Some(&created),
        &deployment(3, "nginx:1.25"),
        "kubectl",
        false,
        &s,
        T1,
    )
    .unwrap_err();
    assert_eq!(err.message(), "Apply failed with 1 conflict: conflict with \"kubectl-client-side-apply\" using apps/v1: .spec.replicas");
}

#[test]
fn updates_take_changed_fields_from_other_managers() {
    let s = schema();
    let live = apply(None, &deployment(2, "nginx:1.25"), "kubectl", false, &s, T0).unwrap();
    let mut scaled = live.clone();
    scaled["spec"]["replicas"] = json!(5);
    let got = update_managed_fields(
        Some(&live),
        &scaled,
        "kubectl-scale",
        "Update",
        Some("scale"),
        &s,
        T1,
    );
    assert!(owns(&got, "kubectl-scale", &["f:spec", "f:replicas"]));
    assert!(!owns(&got, "kubectl", &["f:spec", "f:replicas"]));
    let list = got["metadata"]["managedFields"].as_array().unwrap();
    assert_eq!(
        list[0]["operation"], "Apply",
        "Apply entries sort before Update"
    );
    assert_eq!(list[1]["subresource"], "scale");
    assert_eq!(list[1]["time"], T1);

    // A write that changes nothing leaves managedFields alone.
    let again = update_managed_fields(Some(&got), &got, "other", "Update", None, &s, T1);
    assert_eq!(
        again["metadata"]["managedFields"],
        got["metadata"]["managedFields"]
    );

    // A second update by the same manager merges into its entry.
    let mut relabeled = got.clone();
    relabeled["metadata"]["labels"]["x"] = json!("y");
    relabeled["spec"]["replicas"] = json!(6);
    let merged = update_managed_fields(
        Some(&got),
        &relabeled,
        "kubectl-scale",
        "Update",
        Some("scale"),
        &s,
        T1,
    );
    assert_eq!(
        entries(&merged)
            .iter()
            .filter(|(m, _, _)| m == "kubectl-scale")
            .count(),
        1
    );
    assert!(owns(
        &merged,
        "kubectl-scale",
        &["f:metadata", "f:labels", "f:x"]
    ));
    assert!(owns(&merged, "kubectl-scale", &["f:spec", "f:replicas"]));
}

#[test]
fn applied_managed_fields_are_rejected() {
    let s = schema();
    let mut cfg = deployment(1, "x");
    cfg["metadata"]["managedFields"] = json!([]);
    let err = apply(None, &cfg, "kubectl", false, &s, T0).unwrap_err();
    assert_eq!(
        (err.code(), err.message().as_str()),
        (400, "metadata.managedFields must be nil")
    );
}

#[test]
fn apply_merges_map_lists_by_key_in_upstream_order() {
    let s = schema();
    let mut two = deployment(1, "x");
    two["spec"]["template"]["spec"]["containers"] =
        json!([{"name": "a", "image": "1"}, {"name": "b", "image": "1"}]);
    let live = update_managed_fields(None, &two, "creator", "Update", None, &s, T0);
    let cfg = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
        "spec": {"template": {"spec": {"containers": [{"name": "c", "image": "2"}, {"name": "a", "image": "1"}]}}}});
    let got = apply(Some(&live), &cfg, "kubectl", false, &s, T1).unwrap();
    let names: Vec<&str> = got["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["c", "a", "b"]);
}
