//! Public-API tests: request bodies captured from the real kubectl (tests/fixtures, recorded by
//! gen/capture_kubectl.py) and round-trips of objects encoded with the upstream prost types
//! from k8s-pb (a dev-dependency only).

use k8s_pb::api::apps::v1 as apps;
use k8s_pb::api::core::v1 as core;
use k8s_pb::apimachinery::pkg::api::resource::Quantity;
use k8s_pb::apimachinery::pkg::apis::meta::v1 as meta;
use k8s_pb::apimachinery::pkg::runtime::{RawExtension, TypeMeta, Unknown};
use k8s_pb::apimachinery::pkg::util::intstr::IntOrString;
use prost::Message;
use serde_json::{json, Value};
use std::collections::BTreeMap;

fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/fixtures/{name}.pb", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn decode_fixture(name: &str) -> Value {
    let body = fixture(name);
    assert!(protobuf_json::is_protobuf(&body), "{name}");
    protobuf_json::decode(&body)
        .unwrap_or_else(|e| panic!("{name}: {e}"))
        .2
}

/// What upstream's JSON encoder writes for the objects kubectl 1.32 sent (zero-valued non-pointer
/// fields omitted, pointer zeros kept, `creationTimestamp` zero time omitted).
#[test]
fn kubectl_create_bodies_decode_to_upstream_json() {
    let cases = [
        (
            "configmap",
            json!({"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"cfg"},
                   "data":{"a":"b","empty":""}}),
        ),
        (
            "secret",
            json!({"apiVersion":"v1","kind":"Secret","metadata":{"name":"s"},
                   "data":{"bin":"AQI=","k":"dg=="}}),
        ),
        (
            "namespace",
            json!({"apiVersion":"v1","kind":"Namespace","metadata":{"name":"team-a"},
                   "spec":{},"status":{}}),
        ),
        (
            "serviceaccount",
            json!({"apiVersion":"v1","kind":"ServiceAccount","metadata":{"name":"robot"}}),
        ),
        (
            "deployment",
            json!({"apiVersion":"apps/v1","kind":"Deployment",
                   "metadata":{"labels":{"app":"web"},"name":"web"},
                   "spec":{"replicas":3,"selector":{"matchLabels":{"app":"web"}},"strategy":{},
                           "template":{"metadata":{"labels":{"app":"web"}},
                                       "spec":{"containers":[{"image":"nginx:1.27","name":"nginx",
                                                              "ports":[{"containerPort":8080}],
                                                              "resources":{}}]}}},
                   "status":{}}),
        ),
        (
            "job",
            json!({"apiVersion":"batch/v1","kind":"Job","metadata":{"name":"once"},
                   "spec":{"template":{"metadata":{},
                                       "spec":{"containers":[{"command":["echo","hi"],"image":"busybox",
                                                              "name":"once","resources":{}}],
                                               "restartPolicy":"Never"}}},
                   "status":{}}),
        ),
        (
            "cronjob",
            json!({"apiVersion":"batch/v1","kind":"CronJob","metadata":{"name":"tick"},
                   "spec":{"jobTemplate":{"metadata":{"name":"tick"},
                                          "spec":{"template":{"metadata":{},
                                                              "spec":{"containers":[{"command":["date"],
                                                                                     "image":"busybox",
                                                                                     "name":"tick",
                                                                                     "resources":{}}],
                                                                      "restartPolicy":"OnFailure"}}}},
                           "schedule":"*/5 * * * *"},
                   "status":{}}),
        ),
        (
            "service_clusterip",
            json!({"apiVersion":"v1","kind":"Service",
                   "metadata":{"labels":{"app":"web"},"name":"web"},
                   "spec":{"ports":[{"name":"80-8080","port":80,"protocol":"TCP","targetPort":8080},
                                    {"name":"443-https","port":443,"protocol":"TCP","targetPort":"https"}],
                           "selector":{"app":"web"},"type":"ClusterIP"},
                   "status":{"loadBalancer":{}}}),
        ),
        (
            "role",
            json!({"apiVersion":"rbac.authorization.k8s.io/v1","kind":"Role","metadata":{"name":"reader"},
                   "rules":[{"apiGroups":[""],"resources":["pods","configmaps"],"verbs":["get","list"]}]}),
        ),
        (
            "quota",
            json!({"apiVersion":"v1","kind":"ResourceQuota","metadata":{"name":"q"},
                   "spec":{"hard":{"cpu":"1","memory":"1Gi","pods":"10"}},"status":{}}),
        ),
        (
            "pdb",
            json!({"apiVersion":"policy/v1","kind":"PodDisruptionBudget","metadata":{"name":"pdb"},
                   "spec":{"minAvailable":"50%","selector":{"matchLabels":{"app":"web"}}},"status":{}}),
        ),
        (
            "ingress",
            json!({"apiVersion":"networking.k8s.io/v1","kind":"Ingress","metadata":{"name":"ing"},
                   "spec":{"rules":[{"host":"foo.com","http":{"paths":[
                       {"backend":{"service":{"name":"svc","port":{"number":8080}}},
                        "path":"/bar","pathType":"Exact"}]}}]},
                   "status":{"loadBalancer":{}}}),
        ),
        (
            "can_i",
            json!({"apiVersion":"authorization.k8s.io/v1","kind":"SelfSubjectAccessReview","metadata":{},
                   "spec":{"resourceAttributes":{"namespace":"default","resource":"pods","verb":"create"}},
                   "status":{"allowed":false}}),
        ),
        (
            "whoami",
            json!({"apiVersion":"authentication.k8s.io/v1","kind":"SelfSubjectReview","metadata":{},
                   "status":{"userInfo":{}}}),
        ),
    ];
    for (name, want) in cases {
        assert_eq!(decode_fixture(name), want, "{name}");
    }
}

#[test]
fn every_captured_kubectl_body_decodes_with_its_kind() {
    let dir = format!("{}/tests/fixtures", env!("CARGO_MANIFEST_DIR"));
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("pb") {
            continue;
        }
        let body = std::fs::read(&path).unwrap();
        let (api_version, kind, value) =
            protobuf_json::decode(&body).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(value["apiVersion"], api_version.as_str());
        assert_eq!(value["kind"], kind.as_str());
        // The namespace comes from the URL, never from kubectl's body.
        assert!(
            value["metadata"].get("namespace").is_none(),
            "{}",
            path.display()
        );
        seen += 1;
    }
    assert!(seen >= 20, "only {seen} fixtures");
}

#[test]
fn kubectl_bodies_keep_pointer_zeros_and_drop_value_zeros() {
    let v = decode_fixture("deployment_zero");
    assert_eq!(v["spec"]["replicas"], 0, "pointer *int32 zero must survive");
    assert!(v["metadata"].get("generation").is_none());
    assert!(v["spec"].get("minReadySeconds").is_none());
    let svc = decode_fixture("service_nodeport");
    assert_eq!(svc["spec"]["ports"][0]["nodePort"], 30080);
    assert!(svc["spec"].get("healthCheckNodePort").is_none());
    let pc = decode_fixture("priorityclass");
    assert_eq!(pc["value"], 1000);
    assert_eq!(pc["preemptionPolicy"], "PreemptLowerPriority");
    let token = decode_fixture("token");
    assert_eq!(token["spec"]["expirationSeconds"], 600);
    let list = decode_fixture("can_i_list");
    assert_eq!(list["spec"]["namespace"], "default");
    let docker = decode_fixture("secret_docker_registry");
    assert_eq!(docker["type"], "kubernetes.io/dockerconfigjson");
}

fn envelope(api_version: &str, kind: &str, raw: Vec<u8>) -> Vec<u8> {
    let unknown = Unknown {
        type_meta: Some(TypeMeta {
            api_version: Some(api_version.into()),
            kind: Some(kind.into()),
        }),
        raw: Some(raw),
        content_encoding: Some(String::new()),
        content_type: Some(String::new()),
    };
    let mut body = b"k8s\0".to_vec();
    body.extend(unknown.encode_to_vec());
    body
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn deployment_encoded_by_prost_round_trips() {
    let quantity = |s: &str| Quantity {
        string: Some(s.into()),
    };
    let deployment = apps::Deployment {
        metadata: Some(meta::ObjectMeta {
            name: Some("web".into()),
            labels: labels(&[("app", "web")]),
            creation_timestamp: Some(meta::Time {
                seconds: Some(1_700_000_000),
                nanos: Some(0),
            }),
            ..Default::default()
        }),
        spec: Some(apps::DeploymentSpec {
            replicas: Some(2),
            selector: Some(meta::LabelSelector {
                match_labels: labels(&[("app", "web")]),
                match_expressions: vec![meta::LabelSelectorRequirement {
                    key: Some("tier".into()),
                    operator: Some("In".into()),
                    values: vec!["a".into(), "b".into()],
                }],
            }),
            template: Some(core::PodTemplateSpec {
                metadata: Some(meta::ObjectMeta {
                    labels: labels(&[("app", "web")]),
                    ..Default::default()
                }),
                spec: Some(core::PodSpec {
                    containers: vec![core::Container {
                        name: Some("nginx".into()),
                        image: Some("nginx:1.27".into()),
                        ports: vec![core::ContainerPort {
                            container_port: Some(80),
                            protocol: Some("TCP".into()),
                            ..Default::default()
                        }],
                        resources: Some(core::ResourceRequirements {
                            limits: BTreeMap::from([("memory".into(), quantity("128Mi"))]),
                            requests: BTreeMap::from([("cpu".into(), quantity("250m"))]),
                            ..Default::default()
                        }),
                        volume_mounts: vec![core::VolumeMount {
                            name: Some("cfg".into()),
                            mount_path: Some("/etc/cfg".into()),
                            ..Default::default()
                        }],
                        ..Default::default()
                    }],
                    volumes: vec![core::Volume {
                        name: Some("cfg".into()),
                        volume_source: Some(core::VolumeSource {
                            config_map: Some(core::ConfigMapVolumeSource {
                                local_object_reference: Some(core::LocalObjectReference {
                                    name: Some("cfg".into()),
                                }),
                                default_mode: Some(0o644),
                                ..Default::default()
                            }),
                            ..Default::default()
                        }),
                    }],
                    security_context: Some(core::PodSecurityContext {
                        supplemental_groups: vec![1000, 2000],
                        run_as_user: Some(-1),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
            }),
            strategy: Some(apps::DeploymentStrategy {
                r#type: Some("RollingUpdate".into()),
                rolling_update: Some(apps::RollingUpdateDeployment {
                    max_unavailable: Some(IntOrString {
                        r#type: Some(1),
                        int_val: Some(0),
                        str_val: Some("25%".into()),
                    }),
                    max_surge: Some(IntOrString {
                        r#type: Some(0),
                        int_val: Some(1),
                        str_val: Some(String::new()),
                    }),
                }),
            }),
            ..Default::default()
        }),
        status: None,
    };
    let body = envelope("apps/v1", "Deployment", deployment.encode_to_vec());
    let (api_version, kind, value) = protobuf_json::decode(&body).unwrap();
    assert_eq!(
        (api_version.as_str(), kind.as_str()),
        ("apps/v1", "Deployment")
    );
    assert_eq!(
        value,
        json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web", "labels": {"app": "web"},
                         "creationTimestamp": "2023-11-14T22:13:20Z"},
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": {"app": "web"},
                             "matchExpressions": [{"key": "tier", "operator": "In", "values": ["a", "b"]}]},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {
                        "containers": [{
                            "name": "nginx",
                            "image": "nginx:1.27",
                            "ports": [{"containerPort": 80, "protocol": "TCP"}],
                            "resources": {"limits": {"memory": "128Mi"}, "requests": {"cpu": "250m"}},
                            "volumeMounts": [{"name": "cfg", "mountPath": "/etc/cfg"}]
                        }],
                        "volumes": [{"name": "cfg", "configMap": {"name": "cfg", "defaultMode": 420}}],
                        "securityContext": {"supplementalGroups": [1000, 2000], "runAsUser": -1}
                    }
                },
                "strategy": {"type": "RollingUpdate",
                             "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": 1}}
            }
        })
    );
}

#[test]
fn raw_extension_micro_time_and_unknown_kinds() {
    let revision = apps::ControllerRevision {
        metadata: Some(meta::ObjectMeta {
            name: Some("rev".into()),
            ..Default::default()
        }),
        data: Some(RawExtension {
            raw: Some(br#"{"spec":{"template":{"x":[1,2]}}}"#.to_vec()),
        }),
        revision: Some(3),
    };
    let body = envelope("apps/v1", "ControllerRevision", revision.encode_to_vec());
    let value = protobuf_json::decode(&body).unwrap().2;
    assert_eq!(value["data"], json!({"spec": {"template": {"x": [1, 2]}}}));
    assert_eq!(value["revision"], 3);

    let event = k8s_pb::api::events::v1::Event {
        metadata: Some(meta::ObjectMeta {
            name: Some("e".into()),
            ..Default::default()
        }),
        event_time: Some(meta::MicroTime {
            seconds: Some(1_700_000_000),
            nanos: Some(123_456_789),
        }),
        deprecated_first_timestamp: Some(meta::Time::default()),
        reporting_controller: Some("ctl".into()),
        ..Default::default()
    };
    let body = envelope("events.k8s.io/v1", "Event", event.encode_to_vec());
    let value = protobuf_json::decode(&body).unwrap().2;
    assert_eq!(value["eventTime"], "2023-11-14T22:13:20.123456Z");
    assert!(
        value.get("deprecatedFirstTimestamp").is_none(),
        "zero time omitted"
    );

    let body = envelope("apps/v1", "Foo", Vec::new());
    let err = protobuf_json::decode(&body).unwrap_err();
    assert_eq!(err.status_code(), 415);
    assert!(err.to_string().contains("apps/v1, Kind=Foo"), "{err}");
}

#[test]
fn custom_resource_definition_schema_unions_round_trip() {
    use k8s_pb::apiextensions_apiserver::pkg::apis::apiextensions::v1 as ext;
    let string_prop = ext::JsonSchemaProps {
        r#type: Some("string".into()),
        ..Default::default()
    };
    let schema = ext::JsonSchemaProps {
        r#type: Some("object".into()),
        properties: BTreeMap::from([
            ("name".into(), string_prop.clone()),
            (
                "tags".into(),
                ext::JsonSchemaProps {
                    r#type: Some("array".into()),
                    items: Some(Box::new(ext::JsonSchemaPropsOrArray {
                        schema: Some(Box::new(string_prop.clone())),
                        j_son_schemas: vec![],
                    })),
                    ..Default::default()
                },
            ),
        ]),
        additional_properties: Some(Box::new(ext::JsonSchemaPropsOrBool {
            allows: Some(false),
            schema: None,
        })),
        x_kubernetes_preserve_unknown_fields: Some(true),
        default: Some(ext::Json {
            raw: Some(br#"{"name":"x"}"#.to_vec()),
        }),
        ..Default::default()
    };
    let crd = ext::CustomResourceDefinition {
        metadata: Some(meta::ObjectMeta {
            name: Some("widgets.example.com".into()),
            ..Default::default()
        }),
        spec: Some(ext::CustomResourceDefinitionSpec {
            group: Some("example.com".into()),
            scope: Some("Namespaced".into()),
            names: Some(ext::CustomResourceDefinitionNames {
                plural: Some("widgets".into()),
                kind: Some("Widget".into()),
                ..Default::default()
            }),
            versions: vec![ext::CustomResourceDefinitionVersion {
                name: Some("v1".into()),
                served: Some(true),
                storage: Some(true),
                schema: Some(ext::CustomResourceValidation {
                    open_apiv3_schema: Some(schema),
                }),
                ..Default::default()
            }],
            ..Default::default()
        }),
        status: None,
    };
    let body = envelope(
        "apiextensions.k8s.io/v1",
        "CustomResourceDefinition",
        crd.encode_to_vec(),
    );
    let value = protobuf_json::decode(&body).unwrap().2;
    assert_eq!(
        value["spec"]["versions"][0]["schema"]["openAPIV3Schema"],
        json!({
            "type": "object",
            "properties": {"name": {"type": "string"},
                           "tags": {"type": "array", "items": {"type": "string"}}},
            "additionalProperties": false,
            "x-kubernetes-preserve-unknown-fields": true,
            "default": {"name": "x"}
        })
    );
    assert_eq!(value["spec"]["names"]["plural"], "widgets");
}
