use super::*;
use crate::patch::StaticSchema;
use serde_json::json;

/// The merge rules of a Deployment that the cases below exercise, as the upstream schema
/// declares them.
fn deployment_schema() -> StaticSchema {
    let pod = "spec.template.spec";
    StaticSchema::from_entries([
        ("metadata", StaticSchema::object()),
        ("metadata.labels", StaticSchema::string_map()),
        ("metadata.annotations", StaticSchema::string_map()),
        ("metadata.finalizers", StaticSchema::set_list()),
        ("spec", StaticSchema::object()),
        (
            "spec.strategy",
            FieldMeta {
                patch_strategy: Some("retainKeys".into()),
                is_object: true,
                ..FieldMeta::default()
            },
        ),
        (
            "spec.template.metadata.annotations",
            StaticSchema::string_map(),
        ),
        (
            "spec.template.spec.containers",
            StaticSchema::map_list("name"),
        ),
        (
            "spec.template.spec.tolerations",
            StaticSchema::atomic_list(),
        ),
        (
            "spec.template.spec.volumes",
            FieldMeta {
                patch_strategy: Some("merge,retainKeys".into()),
                ..StaticSchema::map_list("name")
            },
        ),
        (
            "spec.template.spec.containers.ports",
            StaticSchema::map_list("containerPort"),
        ),
        (
            "spec.template.spec.containers.env",
            StaticSchema::map_list("name"),
        ),
        (
            "spec.template.spec.containers.args",
            StaticSchema::atomic_list(),
        ),
    ])
    .with(&format!("{pod}.nodeSelector"), StaticSchema::string_map())
}

fn deployment() -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "labels": {"app": "web", "tier": "fe"}},
        "spec": {
            "replicas": 2,
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {
                    "containers": [
                        {"name": "c", "image": "nginx:1.25", "env": [{"name": "A", "value": "1"}],
                         "ports": [{"containerPort": 80}, {"containerPort": 443}]},
                        {"name": "sidecar", "image": "busybox"}
                    ],
                    "tolerations": [{"key": "a", "operator": "Exists"}],
                    "volumes": [{"name": "v1", "emptyDir": {}}]
                }
            }
        }
    })
}

fn containers(v: &Value) -> &Value {
    &v["spec"]["template"]["spec"]["containers"]
}

#[test]
fn patches_produce_upstream_results() {
    let schema = deployment_schema();
    struct Case {
        name: &'static str,
        patch: Value,
        check: fn(&Value),
    }
    let cases = [
        Case {
            // kubectl-wire.md §5.5: second `kubectl apply` with replicas, image and env changed.
            name: "kubectl apply update",
            patch: json!({"metadata":{"annotations":{"kubectl.kubernetes.io/last-applied-configuration":"{}\n"}},
                "spec":{"replicas":3,"template":{"spec":{"$setElementOrder/containers":[{"name":"c"}],
                "containers":[{"env":null,"image":"nginx:1.26","name":"c"}]}}}}),
            check: |v| {
                assert_eq!(v["spec"]["replicas"], 3);
                assert_eq!(
                    v["metadata"]["annotations"]
                        ["kubectl.kubernetes.io/last-applied-configuration"],
                    "{}\n"
                );
                let c = containers(v);
                assert_eq!(c.as_array().unwrap().len(), 2, "server-only sidecar kept");
                assert_eq!(c[0]["name"], "c");
                assert_eq!(c[0]["image"], "nginx:1.26");
                assert!(c[0].get("env").is_none(), "env: null deletes the list");
                assert_eq!(
                    c[0]["ports"][1]["containerPort"], 443,
                    "untouched fields kept"
                );
                assert_eq!(c[1]["name"], "sidecar");
                assert!(v.to_string().find('$').is_none(), "no directive leaks: {v}");
            },
        },
        Case {
            // §5.7 `kubectl set image deployment/x c=nginx:2`.
            name: "kubectl set image",
            patch: json!({"spec":{"template":{"spec":{"$setElementOrder/containers":[{"name":"c"}],
                "containers":[{"image":"nginx:2","name":"c"}]}}}}),
            check: |v| {
                assert_eq!(containers(v)[0]["image"], "nginx:2");
                assert_eq!(containers(v)[1]["image"], "busybox");
            },
        },
        Case {
            // §5.7 `kubectl rollout restart`.
            name: "kubectl rollout restart",
            patch: json!({"spec":{"template":{"metadata":{"annotations":{"kubectl.kubernetes.io/restartedAt":"2024-01-01T00:00:00Z"}}}}}),
            check: |v| {
                assert_eq!(
                    v["spec"]["template"]["metadata"]["annotations"]
                        ["kubectl.kubernetes.io/restartedAt"],
                    "2024-01-01T00:00:00Z"
                );
                assert_eq!(v["spec"]["template"]["metadata"]["labels"]["app"], "web");
            },
        },
        Case {
            name: "label removal and addition",
            patch: json!({"metadata":{"labels":{"tier":null,"edited":"true"}}}),
            check: |v| {
                assert_eq!(
                    v["metadata"]["labels"],
                    json!({"app":"web","edited":"true"})
                )
            },
        },
        Case {
            name:
                "new container goes first, as upstream orders patch items without a live position",
            patch: json!({"spec":{"template":{"spec":{"containers":[{"name":"log","image":"fluent","env":null}]}}}}),
            check: |v| {
                let names: Vec<&str> = containers(v)
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|c| c["name"].as_str().unwrap())
                    .collect();
                assert_eq!(names, ["log", "c", "sidecar"]);
                assert!(
                    containers(v)[0].get("env").is_none(),
                    "nulls in new items are dropped"
                );
            },
        },
        Case {
            name: "setElementOrder reorders the live list",
            patch: json!({"spec":{"template":{"spec":{"$setElementOrder/containers":[{"name":"sidecar"},{"name":"c"}]}}}}),
            check: |v| {
                assert_eq!(containers(v)[0]["name"], "sidecar");
                assert_eq!(containers(v)[1]["name"], "c");
            },
        },
        Case {
            name: "ports merge by containerPort and env by name",
            patch: json!({"spec":{"template":{"spec":{"containers":[{"name":"c",
                "ports":[{"containerPort":8080}],"env":[{"name":"A","value":"2"},{"name":"B","value":"3"}]}]}}}}),
            check: |v| {
                let c = &containers(v)[0];
                assert_eq!(
                    c["ports"],
                    json!([{"containerPort":8080},{"containerPort":80},{"containerPort":443}])
                );
                assert_eq!(
                    c["env"],
                    json!([{"name":"A","value":"2"},{"name":"B","value":"3"}])
                );
            },
        },
        Case {
            name: "$patch delete removes a list item",
            patch: json!({"spec":{"template":{"spec":{"containers":[{"name":"sidecar","$patch":"delete"}]}}}}),
            check: |v| {
                assert_eq!(containers(v).as_array().unwrap().len(), 1);
                assert_eq!(containers(v)[0]["name"], "c");
            },
        },
        Case {
            name: "$patch replace on a list replaces it",
            patch: json!({"spec":{"template":{"spec":{"containers":[{"name":"only","image":"x"},{"$patch":"replace"}]}}}}),
            check: |v| assert_eq!(*containers(v), json!([{"name":"only","image":"x"}])),
        },
        Case {
            name: "$patch replace on a map replaces it",
            patch: json!({"metadata":{"labels":{"$patch":"replace","new":"1"}}}),
            check: |v| assert_eq!(v["metadata"]["labels"], json!({"new":"1"})),
        },
        Case {
            name: "$patch delete on a map empties it",
            patch: json!({"spec":{"strategy":{"$patch":"delete"}}}),
            check: |v| assert_eq!(v["spec"]["strategy"], json!({})),
        },
        Case {
            name: "tolerations are atomic",
            patch: json!({"spec":{"template":{"spec":{"tolerations":[{"key":"b","operator":"Exists"}]}}}}),
            check: |v| {
                assert_eq!(
                    v["spec"]["template"]["spec"]["tolerations"],
                    json!([{"key":"b","operator":"Exists"}])
                )
            },
        },
        Case {
            name: "retainKeys clears keys the directive omits",
            patch: json!({"spec":{"strategy":{"$retainKeys":["type"],"type":"Recreate"}}}),
            check: |v| assert_eq!(v["spec"]["strategy"], json!({"type":"Recreate"})),
        },
        Case {
            name: "retainKeys inside a merged volume",
            patch: json!({"spec":{"template":{"spec":{"volumes":[{"name":"v1","$retainKeys":["name","hostPath"],"hostPath":{"path":"/x"}}]}}}}),
            check: |v| {
                assert_eq!(
                    v["spec"]["template"]["spec"]["volumes"],
                    json!([{"name":"v1","hostPath":{"path":"/x"}}])
                )
            },
        },
        Case {
            name: "finalizers merge as a set and deleteFromPrimitiveList removes",
            patch: json!({"metadata":{"finalizers":["b","c"],"$deleteFromPrimitiveList/finalizers":["a"]}}),
            check: |v| assert_eq!(v["metadata"]["finalizers"], json!(["b", "c"])),
        },
        Case {
            name: "cordon-style scalar set",
            patch: json!({"spec":{"paused":true}}),
            check: |v| assert_eq!(v["spec"]["paused"], true),
        },
        Case {
            name: "unknown fields merge as plain JSON",
            patch: json!({"spec":{"extra":{"list":[3],"m":{"a":1}}}}),
            check: |v| assert_eq!(v["spec"]["extra"], json!({"list":[3],"m":{"a":1}})),
        },
    ];
    for case in cases {
        let mut orig = deployment();
        if case.name.starts_with("finalizers") {
            orig["metadata"]["finalizers"] = json!(["a", "b"]);
        }
        let got = strategic_merge_patch(&orig, &case.patch, &schema)
            .unwrap_or_else(|e| panic!("{}: {e}", case.name));
        (case.check)(&got);
    }
}

#[test]
fn primitive_set_order_follows_patch_then_live() {
    let schema = StaticSchema::new().with("f", StaticSchema::set_list());
    let cases = [
        (
            json!({"f": ["a", "b", "c"]}),
            json!({"f": ["d", "b"]}),
            json!(["d", "a", "b", "c"]),
        ),
        (
            json!({"f": ["a", "b", "c"]}),
            json!({"$setElementOrder/f": ["c", "a", "b"]}),
            json!(["c", "a", "b"]),
        ),
        (
            json!({"f": ["a", "b"]}),
            json!({"$deleteFromPrimitiveList/f": ["a", "x"]}),
            json!(["b"]),
        ),
        (
            json!({}),
            json!({"$deleteFromPrimitiveList/f": ["a"]}),
            Value::Null,
        ),
    ];
    for (orig, patch, want) in cases {
        let got = strategic_merge_patch(&orig, &patch, &schema).unwrap();
        assert_eq!(
            got.get("f").cloned().unwrap_or(Value::Null),
            want,
            "patch {patch}"
        );
    }
}

#[test]
fn malformed_patches_fail_with_upstream_messages() {
    let schema = deployment_schema();
    let cases = [
        (json!({"metadata": {"$patch": "merge"}}), "unknown patch type: merge in map: map[$patch:merge]", 500),
        (
            json!({"spec":{"template":{"spec":{"containers":[{"$patch":"merge","name":"c"}]}}}}),
            "merging lists cannot yet be specified in the patch",
            500,
        ),
        (
            json!({"spec":{"template":{"spec":{"containers":[{"image":"x"}]}}}}),
            "map: map[image:x] does not contain declared merge key: name",
            500,
        ),
        (json!({"spec": {"strategy": {"$retainKeys": "type"}}}), "invalid patch format of retainKeys", 400),
        (
            json!({"spec": {"strategy": {"$retainKeys": ["type"], "rollingUpdate": {}}}}),
            "invalid patch format of retainKeys",
            400,
        ),
        (json!({"metadata": {"$deleteFromPrimitiveList": ["a"]}}), "invalid patch format of primitive list", 400),
        (json!({"$setElementOrderX": []}), "invalid patch format of setElementOrder list", 400),
        (
            json!({"spec":{"template":{"spec":{"$setElementOrder/containers": {"name": "c"}}}}}),
            "expected a []interface {}, but received a map[string]interface {}",
            500,
        ),
        (
            json!({"spec":{"template":{"spec":{"$setElementOrder/containers":[{"name":"c"}],
                "containers":[{"name":"c"},{"name":"sidecar"}]}}}}),
            "the order in patch list:\n[map[name:c] map[name:sidecar]]\n doesn't match $setElementOrder list:\n[map[name:c]]",
            500,
        ),
        (json!({"metadata": {"finalizers": [["a"]]}}), "lists of lists are not supported", 422),
        (json!({"spec": {"$frobnicate": 1}}), "strict decoding error: unknown field \"$frobnicate\"", 422),
        (json!([1]), "json: cannot unmarshal array into Go value of type map[string]interface {}", 400),
    ];
    for (patch, msg, code) in cases {
        let mut orig = deployment();
        orig["metadata"]["finalizers"] = json!(["x"]);
        let err = strategic_merge_patch(&orig, &patch, &schema).unwrap_err();
        assert_eq!(err.to_string(), msg, "patch {patch}");
        assert_eq!(err.code(), code, "patch {patch}");
    }
}

#[test]
fn mixed_element_types_are_rejected() {
    let schema = StaticSchema::new().with("f", StaticSchema::set_list());
    let err = strategic_merge_patch(&json!({"f": ["a"]}), &json!({"f": [1]}), &schema).unwrap_err();
    assert_eq!(
        err.to_string(),
        "list element types are not identical: [[a] [1]]"
    );
}
