//! Public API of the `openapi` crate against the embedded v1.36 document.

use apimachinery::patch::PatchSchema;
use openapi::{
    decode_error_message, strict_decoding_error, unknown_field_warning, FieldMeta, OpenApi,
};
use serde_json::{json, Value};

fn api() -> &'static OpenApi {
    OpenApi::global()
}

#[test]
fn kind_lookup_finds_pod_and_deployment_definitions() {
    let pod = api().kind_schema("", "v1", "Pod").expect("core/v1 Pod");
    assert_eq!(pod.definition(), "io.k8s.api.core.v1.Pod");
    let dep = api()
        .kind_schema("apps", "v1", "Deployment")
        .expect("apps/v1 Deployment");
    assert_eq!(dep.definition(), "io.k8s.api.apps.v1.Deployment");
    assert!(api().kind_schema("apps", "v1", "Pod").is_none());
    assert!(api().kind_schema("", "v1", "Nope").is_none());
}

#[test]
fn pod_containers_merge_on_name() {
    let pod = api().kind_schema("", "v1", "Pod").unwrap();
    let meta = pod.field(&["spec", "containers"]).unwrap();
    assert_eq!(
        meta,
        FieldMeta {
            patch_strategy: Some("merge".into()),
            patch_merge_key: Some("name".into()),
            list_type: Some("map".into()),
            list_map_keys: vec!["name".into()],
            map_type: None,
            is_list: true,
            is_map: false,
            is_object: false,
            default: None,
        }
    );
    // Items are reached through the list's own name.
    let image = pod.field(&["spec", "containers", "image"]).unwrap();
    assert!(!image.is_list && !image.is_map && !image.is_object);
    let ports = pod.field(&["spec", "containers", "ports"]).unwrap();
    assert_eq!(ports.patch_merge_key.as_deref(), Some("containerPort"));
    assert_eq!(ports.list_map_keys, ["containerPort", "protocol"]);
    let protocol = pod
        .field(&["spec", "containers", "ports", "protocol"])
        .unwrap();
    assert_eq!(protocol.default, Some(json!("TCP")));
    assert!(pod.field(&["spec", "containers", "nope"]).is_none());
}

#[test]
fn deployment_reaches_pod_template_containers_through_refs() {
    let dep = api().kind_schema("apps", "v1", "Deployment").unwrap();
    let meta = dep
        .field(&["spec", "template", "spec", "containers"])
        .unwrap();
    assert_eq!(meta.patch_strategy.as_deref(), Some("merge"));
    assert_eq!(meta.patch_merge_key.as_deref(), Some("name"));
    assert!(meta.is_list);
    let env = dep
        .field(&["spec", "template", "spec", "containers", "env"])
        .unwrap();
    assert_eq!(env.patch_merge_key.as_deref(), Some("name"));
    let volumes = dep.field(&["spec", "template", "spec", "volumes"]).unwrap();
    assert_eq!(volumes.patch_strategy.as_deref(), Some("merge,retainKeys"));
    assert!(dep.field(&["spec", "template"]).unwrap().is_object);
}

#[test]
fn kind_schema_serves_strategic_merge_patch_through_the_trait() {
    let dep = api().kind_schema("apps", "v1", "Deployment").unwrap();
    let schema: &dyn PatchSchema = &dep;
    let meta = schema
        .field(&["spec", "template", "spec", "containers"])
        .unwrap();
    assert!(meta.merges());
    assert_eq!(meta.patch_merge_key.as_deref(), Some("name"));
}

#[test]
fn labels_are_a_map_and_selector_is_an_atomic_object() {
    let dep = api().kind_schema("apps", "v1", "Deployment").unwrap();
    let labels = dep.field(&["metadata", "labels"]).unwrap();
    assert!(labels.is_map && !labels.is_object && !labels.is_list);
    let value = dep.field(&["metadata", "labels", "*"]).unwrap();
    assert!(!value.is_map && !value.is_object);
    let selector = dep.field(&["spec", "selector"]).unwrap();
    assert!(selector.is_object);
    assert_eq!(selector.map_type.as_deref(), Some("atomic"));
    let root = dep.field(&[]).unwrap();
    assert!(root.is_object);
    let finalizers = dep.field(&["metadata", "finalizers"]).unwrap();
    assert_eq!(finalizers.patch_strategy.as_deref(), Some("merge"));
    assert_eq!(finalizers.list_type.as_deref(), Some("set"));
    assert_eq!(
        dep.required(&["spec", "template", "spec", "containers"])
            .unwrap(),
        ["name"]
    );
}

#[test]
fn unknown_fields_are_reported_with_upstream_paths() {
    let dep = api().kind_schema("apps", "v1", "Deployment").unwrap();
    let obj = json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "labels": {"app": "web"}, "unknownMeta": 1},
        "spec": {
            "replicas": 2,
            "unknown1": "x",
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [
                    {"name": "a", "image": "nginx"},
                    {"name": "b", "image": "nginx", "unknownNested": true,
                     "resources": {"limits": {"cpu": "1", "memory": 5}}}
                ]}
            },
            "strategy": {"rollingUpdate": {"maxSurge": 1, "maxUnavailable": "25%"}}
        },
        "status": {}
    });
    let mut unknown = api().unknown_fields(&dep, &obj);
    unknown.sort();
    assert_eq!(
        unknown,
        [
            "metadata.unknownMeta",
            "spec.template.spec.containers[1].unknownNested",
            "spec.unknown1",
        ]
    );
    assert_eq!(
        strict_decoding_error(&["spec.unknown1".to_owned()]),
        r#"strict decoding error: unknown field "spec.unknown1""#
    );
    assert_eq!(
        unknown_field_warning("spec.unknown1"),
        r#"unknown field "spec.unknown1""#
    );
    assert!(
        decode_error_message("Deployment", "v1", "x").starts_with("Deployment in version \"v1\"")
    );

    let report = api().check_fields(&dep, &obj);
    assert!(report.type_errors.is_empty(), "{:?}", report.type_errors);
}

#[test]
fn a_valid_pod_has_no_unknown_fields() {
    let pod = api().kind_schema("", "v1", "Pod").unwrap();
    let obj = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "p", "namespace": "default", "annotations": {"a": "b"},
                     "ownerReferences": [{"apiVersion": "v1", "kind": "X", "name": "x", "uid": "u"}],
                     "managedFields": [{"manager": "m", "fieldsV1": {"f:spec": {}}}]},
        "spec": {"containers": [{"name": "c", "image": "i", "ports": [{"containerPort": 80}],
                                 "env": [{"name": "A", "valueFrom": {"fieldRef": {"fieldPath": "x"}}}]}],
                 "nodeSelector": {"a": "b"}, "tolerations": [{"key": "k", "operator": "Exists"}]},
        "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}
    });
    assert_eq!(api().unknown_fields(&pod, &obj), Vec::<String>::new());
    assert_eq!(
        api().check_fields(&pod, &obj).type_errors,
        Vec::<String>::new()
    );
}

#[test]
fn type_mismatches_use_go_decoder_wording() {
    let dep = api().kind_schema("apps", "v1", "Deployment").unwrap();
    let obj =
        json!({"spec": {"replicas": "3", "template": {"spec": {"containers": [{"name": 5}]}}}});
    let report = api().check_fields(&dep, &obj);
    assert_eq!(
        report.type_errors,
        [
            "json: cannot unmarshal string into Go struct field DeploymentSpec.spec.replicas of type int32",
            "json: cannot unmarshal number into Go struct field Container.spec.template.spec.containers.name of type string",
        ]
    );
    let obj = json!({"spec": {"template": "x"}});
    assert_eq!(
        api().check_fields(&dep, &obj).type_errors,
        ["json: cannot unmarshal string into Go struct field DeploymentSpec.spec.template of type v1.PodTemplateSpec"]
    );
}

#[test]
fn v3_root_lists_served_group_versions_with_hashes() {
    let root = api().v3_root(&["api/v1", "apis/apps/v1", "apis/not.a.group/v1"]);
    let paths = root["paths"].as_object().unwrap();
    assert_eq!(paths.len(), 2);
    let url = paths["apis/apps/v1"]["serverRelativeURL"].as_str().unwrap();
    let hash = api().v3_hash("apis/apps/v1").unwrap();
    assert_eq!(url, format!("/openapi/v3/apis/apps/v1?hash={hash}"));
    assert!(hash
        .chars()
        .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_lowercase()));
    assert_ne!(hash, api().v3_hash("api/v1").unwrap());
    assert!(api().v3_hash("apis/nope/v1").is_none());
}

#[test]
fn v3_apps_document_has_deployment_schema_and_patch_with_field_validation() {
    let bytes = api()
        .v3_group_version("apis/apps/v1")
        .expect("apps/v1 document");
    let doc: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(doc["openapi"], "3.0.0");
    assert_eq!(doc["info"]["title"], "Kubernetes");
    assert_eq!(
        doc["components"]["securitySchemes"]["BearerToken"]["type"],
        "apiKey"
    );

    let schemas = doc["components"]["schemas"].as_object().unwrap();
    let dep = &schemas["io.k8s.api.apps.v1.Deployment"];
    assert_eq!(
        dep["x-kubernetes-group-version-kind"],
        json!([{"group": "apps", "kind": "Deployment", "version": "v1"}])
    );
    assert_eq!(
        dep["properties"]["spec"]["allOf"],
        json!([{"$ref": "#/components/schemas/io.k8s.api.apps.v1.DeploymentSpec"}])
    );
    assert!(dep["properties"]["spec"]["description"].is_string());
    let containers = &schemas["io.k8s.api.core.v1.PodSpec"]["properties"]["containers"];
    assert_eq!(containers["x-kubernetes-patch-merge-key"], "name");
    assert_eq!(containers["x-kubernetes-patch-strategy"], "merge");
    assert_eq!(
        containers["items"]["$ref"],
        "#/components/schemas/io.k8s.api.core.v1.Container"
    );
    // Every reference resolves inside the document.
    let text = String::from_utf8(bytes.clone()).unwrap();
    assert!(!text.contains("#/definitions/"));
    for part in text.split("\"#/components/schemas/").skip(1) {
        let name = &part[..part.find('"').unwrap()];
        assert!(schemas.contains_key(name), "dangling reference {name}");
    }

    let paths = doc["paths"].as_object().unwrap();
    assert!(paths.keys().all(|p| p.starts_with("/apis/apps/v1/")));
    let item = &paths["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"];
    let patch = &item["patch"];
    assert_eq!(
        patch["x-kubernetes-group-version-kind"],
        json!({"group": "apps", "kind": "Deployment", "version": "v1"})
    );
    assert_eq!(patch["x-kubernetes-action"], "patch");
    let params = patch["parameters"].as_array().unwrap();
    let fv = params
        .iter()
        .find(|p| p["name"] == "fieldValidation")
        .unwrap();
    assert_eq!(fv["in"], "query");
    assert_eq!(fv["schema"], json!({"type": "string", "uniqueItems": true}));
    assert!(params
        .iter()
        .any(|p| p["name"] == "fieldManager" && p["schema"]["type"] == "string"));
    assert!(params
        .iter()
        .all(|p| p["in"] != "body" && p.get("$ref").is_none()));
    let body = &patch["requestBody"];
    assert_eq!(body["required"], true);
    assert_eq!(
        body["content"]["application/strategic-merge-patch+json"]["schema"]["$ref"],
        "#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.Patch"
    );
    assert_eq!(
        patch["responses"]["200"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/io.k8s.api.apps.v1.Deployment"
    );
    assert!(patch.get("consumes").is_none() && patch.get("schemes").is_none());
    assert!(item["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["name"] == "namespace"));
    for method in ["post", "put"] {
        let op = if method == "post" {
            &paths["/apis/apps/v1/namespaces/{namespace}/deployments"][method]
        } else {
            &item[method]
        };
        assert!(op["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "fieldValidation"));
    }

    // Served again from the cache, byte for byte.
    assert_eq!(api().v3_group_version("apis/apps/v1").unwrap(), bytes);
    assert!(api().v3_group_version("apis/nope/v1").is_none());
}

#[test]
fn v3_core_document_has_pod_with_descriptions_for_explain() {
    let bytes = api().v3_group_version("api/v1").unwrap();
    let doc: Value = serde_json::from_slice(&bytes).unwrap();
    let pod = &doc["components"]["schemas"]["io.k8s.api.core.v1.Pod"];
    assert!(pod["description"]
        .as_str()
        .unwrap()
        .starts_with("Pod is a collection"));
    assert_eq!(pod["x-kubernetes-group-version-kind"][0]["kind"], "Pod");
    assert!(doc["paths"]["/api/v1/namespaces/{namespace}/pods/{name}"]["patch"].is_object());
}

#[test]
fn v2_json_is_the_upstream_document_and_can_be_narrowed() {
    let full: Value = serde_json::from_slice(&api().v2_json()).unwrap();
    assert_eq!(full["swagger"], "2.0");
    let served: Value = serde_json::from_slice(&api().v2_json_served(&["apis/apps/v1"])).unwrap();
    let paths = served["paths"].as_object().unwrap();
    assert!(paths.contains_key("/apis/apps/v1/namespaces/{namespace}/deployments"));
    assert!(paths.contains_key("/apis/apps/"));
    assert!(paths.contains_key("/version/"));
    assert!(!paths.contains_key("/api/v1/pods"));
    assert!(!paths.contains_key("/apis/batch/"));
    let defs = served["definitions"].as_object().unwrap();
    assert!(defs.contains_key("io.k8s.api.apps.v1.Deployment"));
    assert!(defs.contains_key("io.k8s.api.core.v1.Container"));
    assert!(!defs.contains_key("io.k8s.api.batch.v1.Job"));
    assert!(defs.len() < full["definitions"].as_object().unwrap().len());
    assert_eq!(served["securityDefinitions"], full["securityDefinitions"]);
    // Every referenced parameter is present.
    let text = String::from_utf8(api().v2_json_served(&["apis/apps/v1"])).unwrap();
    for part in text.split("\"#/parameters/").skip(1) {
        let name = &part[..part.find('"').unwrap()];
        assert!(served["parameters"].get(name).is_some(), "{name}");
    }
    assert_ne!(api().v2_etag(None), api().v2_etag(Some(&["apis/apps/v1"])));
}

/// A minimal protobuf reader: the fields of one message as `(number, payload)`, where varint
/// payloads are returned as their little-endian bytes.
fn fields(mut buf: &[u8]) -> Vec<(u32, Vec<u8>)> {
    fn varint(buf: &mut &[u8]) -> u64 {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = buf[0];
            *buf = &buf[1..];
            v |= u64::from(b & 0x7f) << shift;
            if b < 0x80 {
                break;
            }
        }
        v
    }
    let mut out = Vec::new();
    while !buf.is_empty() {
        let tag = varint(&mut buf);
        let payload = match tag & 7 {
            0 => varint(&mut buf).to_le_bytes().to_vec(),
            1 => {
                let (v, rest) = buf.split_at(8);
                buf = rest;
                v.to_vec()
            }
            2 => {
                let len = varint(&mut buf) as usize;
                let (v, rest) = buf.split_at(len);
                buf = rest;
                v.to_vec()
            }
            w => panic!("unexpected wire type {w}"),
        };
        out.push(((tag >> 3) as u32, payload));
    }
    out
}

fn field(msg: &[u8], number: u32) -> Vec<Vec<u8>> {
    fields(msg)
        .into_iter()
        .filter(|(n, _)| *n == number)
        .map(|(_, v)| v)
        .collect()
}

fn string(msg: &[u8], number: u32) -> String {
    field(msg, number)
        .first()
        .map(|v| String::from_utf8(v.clone()).unwrap())
        .unwrap_or_default()
}

/// The `(name, value)` entries of a gnostic `Named*` list.
fn named(msg: &[u8], number: u32) -> Vec<(String, Vec<u8>)> {
    field(msg, number)
        .into_iter()
        .map(|entry| (string(&entry, 1), field(&entry, 2).remove(0)))
        .collect()
}

/// A vendor extension's value, parsed from the YAML (here: JSON) text gnostic's `Any` carries.
fn extension(schema: &[u8], number: u32, name: &str) -> Option<Value> {
    named(schema, number)
        .into_iter()
        .find(|(n, _)| n == name)
        .map(|(_, any)| serde_json::from_str(&string(&any, 2)).unwrap())
}

#[test]
fn v2_protobuf_is_a_gnostic_document() {
    let doc = api().v2_protobuf();
    assert_eq!(string(&doc, 1), "2.0");
    let info = field(&doc, 2).remove(0);
    assert_eq!(string(&info, 1), "Kubernetes");

    let definitions = field(&doc, 9).remove(0);
    let defs = named(&definitions, 1);
    assert_eq!(defs.len(), 771);
    let (_, dep) = defs
        .iter()
        .find(|(n, _)| n == "io.k8s.api.apps.v1.Deployment")
        .unwrap();
    assert_eq!(
        extension(dep, 31, "x-kubernetes-group-version-kind").unwrap(),
        json!([{"group": "apps", "kind": "Deployment", "version": "v1"}])
    );
    let type_item = field(dep, 22).remove(0);
    assert_eq!(string(&type_item, 1), "object");
    let props = named(&field(dep, 25).remove(0), 1);
    let (_, spec) = props.iter().find(|(n, _)| n == "spec").unwrap();
    assert_eq!(
        string(spec, 1),
        "#/definitions/io.k8s.api.apps.v1.DeploymentSpec"
    );
    assert!(!string(spec, 4).is_empty(), "description kept");

    let (_, pod_spec) = defs
        .iter()
        .find(|(n, _)| n == "io.k8s.api.core.v1.PodSpec")
        .unwrap();
    let props = named(&field(pod_spec, 25).remove(0), 1);
    let (_, containers) = props.iter().find(|(n, _)| n == "containers").unwrap();
    assert_eq!(
        extension(containers, 31, "x-kubernetes-patch-merge-key").unwrap(),
        "name"
    );
    let items = field(containers, 23).remove(0);
    let item = field(&items, 1).remove(0);
    assert_eq!(
        string(&item, 1),
        "#/definitions/io.k8s.api.core.v1.Container"
    );
    let (_, labels) = named(
        &field(
            &defs
                .iter()
                .find(|(n, _)| n.ends_with("meta.v1.ObjectMeta"))
                .unwrap()
                .1,
            25,
        )
        .remove(0),
        1,
    )
    .into_iter()
    .find(|(n, _)| n == "labels")
    .unwrap();
    let additional = field(&labels, 21).remove(0);
    let value_schema = field(&additional, 1).remove(0);
    assert_eq!(string(&field(&value_schema, 22).remove(0), 1), "string");

    // Paths: the deployment PATCH operation with its inline fieldValidation query parameter.
    let paths = named(&field(&doc, 8).remove(0), 2);
    assert_eq!(paths.len(), 562);
    let (_, item) = paths
        .iter()
        .find(|(n, _)| n == "/apis/apps/v1/namespaces/{namespace}/deployments/{name}")
        .unwrap();
    let patch = field(item, 8).remove(0);
    assert_eq!(string(&patch, 5), "patchAppsV1NamespacedDeployment");
    let query_names: Vec<String> = field(&patch, 8)
        .iter()
        .filter_map(|p| field(p, 1).first().cloned())
        .filter_map(|param| field(&param, 2).first().cloned())
        .filter_map(|non_body| field(&non_body, 3).first().cloned())
        .map(|query| string(&query, 4))
        .collect();
    assert!(
        query_names.contains(&"fieldValidation".to_owned()),
        "{query_names:?}"
    );
    assert_eq!(
        extension(&patch, 13, "x-kubernetes-group-version-kind").unwrap()["kind"],
        "Deployment"
    );

    let narrowed = api().v2_protobuf_served(&["apis/apps/v1"]);
    assert!(narrowed.len() < doc.len());
}
