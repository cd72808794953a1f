//! Upstream REST semantics through `kube` clients and raw HTTPS, on the embedded store and on a
//! real etcd: CRUD and patch flavours, subresources, deletion, dry-run and field validation,
//! watch, list paging and selectors, bad input, Service allocation, namespace lifecycle,
//! restarts and crash durability. Codes, reasons and messages are the ones kube-apiserver sends.

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v1::Scale;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Service};
use kube::api::{
    Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, Preconditions, WatchEvent,
    WatchParams,
};
use kube::core::Status;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;
use tests::{ApiserverProcess, Auth, Backend, EtcdProcess, StartOptions, TestCluster};
use tokio::sync::OnceCell;

static ETCD: OnceCell<Arc<EtcdProcess>> = OnceCell::const_new();

async fn etcd() -> Arc<EtcdProcess> {
    ETCD.get_or_init(|| async {
        Arc::new(
            EtcdProcess::start()
                .await
                .expect("start etcd (apt install etcd-server)"),
        )
    })
    .await
    .clone()
}

/// The static token every cluster here accepts (`--token-auth-file`).
const TOKEN: &str = "s3cr3t-token";

fn options() -> StartOptions {
    StartOptions {
        token_auth_csv: Some(format!("{TOKEN},alice,1001,\"system:masters,dev\"\n")),
        ..Default::default()
    }
}

async fn cluster(etcd_backend: bool) -> TestCluster {
    let backend = if etcd_backend {
        Backend::Etcd(etcd().await)
    } else {
        Backend::Embedded
    };
    TestCluster::start_with(backend, options())
        .await
        .expect("start apiserver")
}

/// Generate one test per backend for a scenario `async fn name(c: &TestCluster)` (or
/// `&mut TestCluster` for scenarios that restart the server).
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        mod embedded {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let mut c = super::cluster(false).await;
                    super::$name(&mut c).await;
                    c.stop().await;
                }
            )*
        }
        mod etcd {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let mut c = super::cluster(true).await;
                    super::$name(&mut c).await;
                    c.stop().await;
                }
            )*
        }
    };
}

both_backends!(
    typed_crud_sets_metadata_and_answers_upstream_errors,
    deployment_generation_bumps_only_on_spec_changes_and_apply_tracks_managers,
    status_subresource_changes_only_status,
    scale_subresource_reads_and_writes_replicas,
    finalizers_hold_deletion_until_removed_then_watch_sees_deleted,
    propagation_policies_add_gc_finalizers,
    pods_on_nodes_delete_gracefully_and_preconditions_conflict,
    dry_run_persists_nothing,
    field_validation_strict_warn_ignore,
    watch_initial_events_and_replay_in_order,
    watch_label_selector_transitions,
    watch_bookmarks_timeout_and_initial_events_end,
    kube_runtime_watcher_streaming_and_list_watch,
    watch_too_old_resource_version_is_410_expired,
    list_paging_returns_every_object_once_with_remaining_count,
    list_label_and_field_selectors,
    list_resource_version_semantics,
    bad_input_is_rejected_with_status_and_changes_nothing,
    authentication_by_cert_token_and_public_paths,
    services_allocate_distinct_ips_and_node_ports,
    bare_server_has_system_namespaces_and_kubernetes_service,
    namespace_lifecycle_not_found_terminating_and_finalize,
    restart_keeps_objects_and_resource_versions,
);

// ------------------------------------------------------------------------------------ helpers

fn obj<K: serde::de::DeserializeOwned>(v: Value) -> K {
    serde_json::from_value(v).expect("valid object")
}

fn cm(name: &str, data: Value) -> ConfigMap {
    obj(json!({"metadata": {"name": name}, "data": data}))
}

fn cm_labels(name: &str, labels: Value) -> ConfigMap {
    obj(json!({"metadata": {"name": name, "labels": labels}}))
}

fn deployment(name: &str, replicas: i32) -> Deployment {
    obj(json!({
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "c", "image": "nginx:1.25", "env": [{"name": "A", "value": "1"}]}]}
            }
        }
    }))
}

fn pod(name: &str, node: Option<&str>) -> Pod {
    let mut spec = json!({"containers": [{"name": "c", "image": "nginx"}]});
    if let Some(n) = node {
        spec["nodeName"] = json!(n);
    }
    obj(json!({"metadata": {"name": name}, "spec": spec}))
}

async fn make_ns(client: &kube::Client, name: &str) {
    let nss: Api<Namespace> = Api::all(client.clone());
    nss.create(
        &PostParams::default(),
        &obj(json!({"metadata": {"name": name}})),
    )
    .await
    .expect("create namespace");
}

/// The API error a call must fail with.
fn err<T: std::fmt::Debug>(r: kube::Result<T>) -> Box<Status> {
    match r {
        Err(kube::Error::Api(s)) => s,
        other => panic!("expected an API error, got {other:?}"),
    }
}

fn names<K: kube::Resource>(items: &[K]) -> Vec<String> {
    items
        .iter()
        .map(|i| i.meta().name.clone().unwrap_or_default())
        .collect()
}

fn rv_of<K: kube::Resource>(o: &K) -> String {
    o.meta()
        .resource_version
        .clone()
        .expect("resourceVersion set")
}

fn rv_num(rv: &str) -> i64 {
    rv.parse()
        .unwrap_or_else(|_| panic!("resourceVersion {rv:?} is not an integer"))
}

/// Names and resourceVersions of the config maps and pods in a namespace.
async fn snapshot(client: &kube::Client, ns: &str) -> Vec<(String, String)> {
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let mut out: Vec<(String, String)> = cms
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .iter()
        .map(|o| (format!("cm/{}", o.metadata.name.clone().unwrap()), rv_of(o)))
        .collect();
    out.extend(
        pods.list(&Default::default())
            .await
            .unwrap()
            .items
            .iter()
            .map(|o| {
                (
                    format!("pod/{}", o.metadata.name.clone().unwrap()),
                    rv_of(o),
                )
            }),
    );
    out
}

async fn next_event<K, S>(s: &mut S) -> WatchEvent<K>
where
    S: futures::Stream<Item = kube::Result<WatchEvent<K>>> + Unpin,
{
    match tokio::time::timeout(Duration::from_secs(15), s.next()).await {
        Ok(Some(Ok(e))) => e,
        Ok(Some(Err(e))) => panic!("watch failed: {e}"),
        Ok(None) => panic!("watch ended early"),
        Err(_) => panic!("no watch event within 15s"),
    }
}

fn describe<K: kube::Resource>(e: &WatchEvent<K>) -> String {
    match e {
        WatchEvent::Added(o) => format!("ADDED {}", o.meta().name.clone().unwrap_or_default()),
        WatchEvent::Modified(o) => {
            format!("MODIFIED {}", o.meta().name.clone().unwrap_or_default())
        }
        WatchEvent::Deleted(o) => format!("DELETED {}", o.meta().name.clone().unwrap_or_default()),
        WatchEvent::Bookmark(b) => format!("BOOKMARK {}", b.metadata.resource_version),
        WatchEvent::Error(s) => format!("ERROR {} {}", s.code, s.message),
    }
}

fn event_summary(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| {
            format!(
                "{} {}",
                e["type"].as_str().unwrap_or(""),
                e.pointer("/object/metadata/name")
                    .and_then(Value::as_str)
                    .unwrap_or("")
            )
        })
        .collect()
}

// ------------------------------------------------------------------------------------ CRUD

async fn typed_crud_sets_metadata_and_answers_upstream_errors(c: &TestCluster) {
    let client = c.client().await;
    make_ns(&client, "crud").await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "crud");
    let pp = PostParams::default();

    let created = cms
        .create(&pp, &cm("cfg", json!({"a": "1"})))
        .await
        .unwrap();
    assert_eq!(
        created.metadata.uid.as_deref().map(str::len),
        Some(36),
        "uid is a UUID: {:?}",
        created.metadata
    );
    assert!(created.metadata.creation_timestamp.is_some());
    assert_eq!(
        created.metadata.generation, None,
        "config maps have no generation"
    );
    assert_eq!(created.metadata.namespace.as_deref(), Some("crud"));
    let rv1 = rv_of(&created);

    let got = cms.get("cfg").await.unwrap();
    assert_eq!(
        (got.metadata.uid.clone(), rv_of(&got)),
        (created.metadata.uid.clone(), rv1.clone())
    );
    assert_eq!(
        names(&cms.list(&Default::default()).await.unwrap().items),
        ["cfg"]
    );

    let e = err(cms.create(&pp, &cm("cfg", json!({}))).await);
    assert_eq!(
        (e.code, e.reason.as_str(), e.message.as_str()),
        (409, "AlreadyExists", r#"configmaps "cfg" already exists"#)
    );
    let d = e.details.as_ref().expect("details");
    assert_eq!(
        (d.name.as_str(), d.kind.as_str(), d.group.as_str()),
        ("cfg", "configmaps", "")
    );

    let mut upd = got.clone();
    upd.data = Some([("a".to_string(), "2".to_string())].into());
    let replaced = cms.replace("cfg", &pp, &upd).await.unwrap();
    assert!(rv_num(&rv_of(&replaced)) > rv_num(&rv1));
    assert_eq!(replaced.metadata.uid, created.metadata.uid);
    // `upd` still carries the old resourceVersion: a precondition that now fails.
    let e = err(cms.replace("cfg", &pp, &upd).await);
    assert_eq!(
        (e.code, e.reason.as_str(), e.message.as_str()),
        (
            409,
            "Conflict",
            r#"Operation cannot be fulfilled on configmaps "cfg": the object has been modified; please apply your changes to the latest version and try again"#
        )
    );

    let merged = cms
        .patch(
            "cfg",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"b": "2"}})),
        )
        .await
        .unwrap();
    assert_eq!(
        serde_json::to_value(&merged.data).unwrap(),
        json!({"a": "2", "b": "2"})
    );
    let r = c
        .raw(
            "PATCH",
            "/api/v1/namespaces/crud/configmaps/cfg",
            Some("application/json-patch+json"),
            r#"[{"op":"remove","path":"/data/a"},{"op":"add","path":"/data/c","value":"3"}]"#,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["data"], json!({"b": "2", "c": "3"}));
    let r = c
        .raw(
            "PATCH",
            "/api/v1/namespaces/crud/configmaps/cfg",
            Some("application/json-patch+json"),
            r#"[{"op":"test","path":"/data/b","value":"nope"}]"#,
        )
        .await;
    assert_eq!(
        (r.status, r.json()["reason"].as_str()),
        (422, Some("Invalid")),
        "{}",
        r.text()
    );
    let applied = cms.patch("cfg", &PatchParams::apply("tester").force(), &Patch::Apply(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cfg"}, "data": {"d": "4"}}))).await.unwrap();
    assert_eq!(
        applied.data.as_ref().unwrap().get("d").map(String::as_str),
        Some("4")
    );
    assert!(
        applied
            .metadata
            .managed_fields
            .as_ref()
            .unwrap()
            .iter()
            .any(|m| m.manager.as_deref() == Some("tester")
                && m.operation.as_deref() == Some("Apply"))
    );

    let generated = cms
        .create(&pp, &obj(json!({"metadata": {"generateName": "gen-"}})))
        .await
        .unwrap();
    let gname = generated.metadata.name.clone().unwrap();
    assert!(gname.starts_with("gen-") && gname.len() == 9, "{gname}");

    // Deleting a config map answers a Success Status naming it.
    let del = cms.delete("cfg", &DeleteParams::default()).await.unwrap();
    let status = del.right().expect("config map delete answers a Status");
    let d = status.details.expect("details");
    assert_eq!(
        (d.name.as_str(), d.kind.as_str(), d.uid.as_str()),
        (
            "cfg",
            "configmaps",
            created.metadata.uid.as_deref().unwrap()
        )
    );
    let e = err(cms.get("cfg").await);
    assert_eq!(
        (e.code, e.reason.as_str(), e.message.as_str()),
        (404, "NotFound", r#"configmaps "cfg" not found"#)
    );
    let d = e.details.expect("details");
    assert_eq!(
        (d.name.as_str(), d.kind.as_str(), d.group.as_str()),
        ("cfg", "configmaps", "")
    );
    let e = err(cms.delete("cfg", &DeleteParams::default()).await);
    assert_eq!(e.code, 404);
    let e = err(cms
        .patch(
            "cfg",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"a": "1"}})),
        )
        .await);
    assert_eq!(
        (e.code, e.message.as_str()),
        (404, r#"configmaps "cfg" not found"#)
    );
    let e = err(cms.replace("cfg", &pp, &cm("cfg", json!({}))).await);
    assert_eq!(
        (e.code, e.message.as_str()),
        (404, r#"configmaps "cfg" not found"#),
        "config maps are not created on update"
    );

    // Services: allocated on create, kept on replace, deletion answers the object.
    let svcs: Api<Service> = Api::namespaced(client.clone(), "crud");
    let svc = svcs.create(&pp, &obj(json!({"metadata": {"name": "web"}, "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}}))).await.unwrap();
    let ip = svc.spec.as_ref().unwrap().cluster_ip.clone().unwrap();
    let mut svc2 = svc.clone();
    svc2.spec.as_mut().unwrap().ports.as_mut().unwrap()[0].port = 81;
    let svc2 = svcs.replace("web", &pp, &svc2).await.unwrap();
    assert_eq!(
        svc2.spec.as_ref().unwrap().cluster_ip.as_deref(),
        Some(ip.as_str())
    );
    assert_eq!(
        svc2.spec.as_ref().unwrap().ports.as_ref().unwrap()[0].port,
        81
    );
    let gone = svcs
        .delete("web", &DeleteParams::default())
        .await
        .unwrap()
        .left()
        .expect("service delete answers the object");
    assert_eq!(gone.metadata.name.as_deref(), Some("web"));
    assert_eq!(
        err(svcs.get("web").await).message,
        r#"services "web" not found"#
    );
}

async fn deployment_generation_bumps_only_on_spec_changes_and_apply_tracks_managers(
    c: &TestCluster,
) {
    let client = c.client().await;
    let deps: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let d = deps
        .create(&PostParams::default(), &deployment("web", 2))
        .await
        .unwrap();
    assert_eq!(d.metadata.generation, Some(1));
    let uid = d.metadata.uid.clone().unwrap();

    let labeled = deps
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"tier": "front"}}})),
        )
        .await
        .unwrap();
    assert_eq!(
        labeled.metadata.generation,
        Some(1),
        "a label change does not bump generation"
    );
    assert!(rv_num(&rv_of(&labeled)) > rv_num(&rv_of(&d)));

    let scaled = deps
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Strategic(json!({"spec": {"replicas": 3}})),
        )
        .await
        .unwrap();
    assert_eq!(
        (scaled.metadata.generation, scaled.spec.replicas),
        (Some(2), Some(3))
    );

    // Strategic merge: containers merge by name, so env survives an image change.
    let sm = deps.patch("web", &PatchParams::default(), &Patch::Strategic(json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "nginx:1.26"}]}}}}))).await.unwrap();
    let containers = &sm.spec.template.spec.as_ref().unwrap().containers;
    assert_eq!(containers.len(), 1);
    assert_eq!(containers[0].image.as_deref(), Some("nginx:1.26"));
    assert_eq!(
        containers[0].env.as_ref().map(Vec::len),
        Some(1),
        "env kept by strategic merge"
    );
    assert_eq!(sm.metadata.generation, Some(3));

    // A merge patch replaces lists wholesale.
    let mp = deps.patch("web", &PatchParams::default(), &Patch::Merge(json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "nginx:1.27"}]}}}}))).await.unwrap();
    assert_eq!(
        mp.spec.template.spec.as_ref().unwrap().containers[0].env,
        None
    );

    let apply = |replicas: i32| {
        Patch::Apply(
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"}, "spec": {"replicas": replicas}}),
        )
    };
    let a = deps
        .patch("web", &PatchParams::apply("m1").force(), &apply(5))
        .await
        .unwrap();
    assert_eq!(a.spec.replicas, Some(5));
    assert!(a
        .metadata
        .managed_fields
        .as_ref()
        .unwrap()
        .iter()
        .any(|m| m.manager.as_deref() == Some("m1") && m.operation.as_deref() == Some("Apply")));
    let e = err(deps
        .patch("web", &PatchParams::apply("m2"), &apply(6))
        .await);
    assert_eq!(
        (e.code, e.reason.as_str(), e.message.as_str()),
        (
            409,
            "Conflict",
            r#"Apply failed with 1 conflict: conflict with "m1": .spec.replicas"#
        )
    );
    assert_eq!(
        deps.get("web").await.unwrap().spec.replicas,
        Some(5),
        "a conflicting apply changes nothing"
    );
    let forced = deps
        .patch("web", &PatchParams::apply("m2").force(), &apply(6))
        .await
        .unwrap();
    assert_eq!(forced.spec.replicas, Some(6));
    // Apply without a field manager is a 400.
    let r = c
        .raw(
            "PATCH",
            "/apis/apps/v1/namespaces/default/deployments/web",
            Some("application/apply-patch+yaml"),
            "spec:\n  replicas: 1\n",
        )
        .await;
    assert_eq!(
        (r.status, r.json()["message"].as_str()),
        (
            400,
            Some("PATCH requests of type application/apply-patch+yaml must include a fieldManager")
        ),
        "{}",
        r.text()
    );

    let status = deps
        .delete("web", &DeleteParams::default())
        .await
        .unwrap()
        .right()
        .expect("deployment delete answers a Status");
    let d = status.details.unwrap();
    assert_eq!(
        (
            d.name.as_str(),
            d.group.as_str(),
            d.kind.as_str(),
            d.uid.as_str()
        ),
        ("web", "apps", "deployments", uid.as_str())
    );
    let e = err(deps.get("web").await);
    assert_eq!(
        (e.code, e.reason.as_str(), e.message.as_str()),
        (404, "NotFound", r#"deployments.apps "web" not found"#)
    );
    let d = e.details.unwrap();
    assert_eq!(
        (d.name.as_str(), d.group.as_str(), d.kind.as_str()),
        ("web", "apps", "deployments")
    );
}

async fn status_subresource_changes_only_status(c: &TestCluster) {
    let client = c.client().await;
    let deps: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let d = deps
        .create(&PostParams::default(), &deployment("st", 2))
        .await
        .unwrap();

    let mut s = d.clone();
    s.spec.replicas = Some(9);
    s.status = Some(obj(json!({"replicas": 7, "observedGeneration": 1})));
    let after = deps
        .replace_status("st", &PostParams::default(), &s)
        .await
        .unwrap();
    assert_eq!(after.spec.replicas, Some(2), "PUT /status ignores spec");
    assert_eq!(after.status.as_ref().unwrap().replicas, Some(7));
    assert_eq!(after.metadata.generation, Some(1));
    assert!(rv_num(&rv_of(&after)) > rv_num(&rv_of(&d)));

    let mut m = after.clone();
    m.spec.replicas = Some(3);
    m.status = Some(obj(json!({"replicas": 1})));
    let main = deps
        .replace("st", &PostParams::default(), &m)
        .await
        .unwrap();
    assert_eq!(main.spec.replicas, Some(3));
    assert_eq!(
        main.status.as_ref().unwrap().replicas,
        Some(7),
        "main PUT ignores status"
    );
    assert_eq!(main.metadata.generation, Some(2));

    let p = deps.patch_status("st", &PatchParams::default(), &Patch::Merge(json!({"status": {"readyReplicas": 1, "availableReplicas": 1}, "spec": {"replicas": 8}}))).await.unwrap();
    assert_eq!(p.status.as_ref().unwrap().available_replicas, Some(1));
    assert_eq!(p.spec.replicas, Some(3));
    let stored = deps.get("st").await.unwrap();
    assert_eq!(
        (stored.spec.replicas, stored.status.unwrap().replicas),
        (Some(3), Some(7))
    );
}

async fn scale_subresource_reads_and_writes_replicas(c: &TestCluster) {
    let client = c.client().await;
    let deps: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let d = deps
        .create(&PostParams::default(), &deployment("sc", 3))
        .await
        .unwrap();

    let r = c
        .raw(
            "GET",
            "/apis/apps/v1/namespaces/default/deployments/sc/scale",
            None,
            "",
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(
        (v["kind"].as_str(), v["apiVersion"].as_str()),
        (Some("Scale"), Some("autoscaling/v1"))
    );
    assert_eq!(v["metadata"]["uid"], json!(d.metadata.uid.clone().unwrap()));

    let scale = deps.get_scale("sc").await.unwrap();
    assert_eq!(scale.spec.as_ref().unwrap().replicas, Some(3));
    assert_eq!(
        scale.status.as_ref().unwrap().selector.as_deref(),
        Some("app=sc")
    );
    assert_eq!(scale.metadata.resource_version, d.metadata.resource_version);

    let mut want: Scale = scale.clone();
    want.spec.as_mut().unwrap().replicas = Some(4);
    let put = deps
        .replace_scale("sc", &PostParams::default(), &want)
        .await
        .unwrap();
    assert_eq!(put.spec.as_ref().unwrap().replicas, Some(4));
    let dep = deps.get("sc").await.unwrap();
    assert_eq!(
        (dep.spec.replicas, dep.metadata.generation),
        (Some(4), Some(2))
    );
    // `want` still carries the old resourceVersion.
    let e = err(deps
        .replace_scale("sc", &PostParams::default(), &want)
        .await);
    assert_eq!(
        (e.code, e.reason.as_str()),
        (409, "Conflict"),
        "{}",
        e.message
    );

    let patched = deps
        .patch_scale(
            "sc",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 5}})),
        )
        .await
        .unwrap();
    assert_eq!(patched.spec.unwrap().replicas, Some(5));
    assert_eq!(deps.get("sc").await.unwrap().spec.replicas, Some(5));

    let e = err(deps
        .patch_scale(
            "sc",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": -1}})),
        )
        .await);
    assert_eq!(
        (e.code, e.reason.as_str()),
        (422, "Invalid"),
        "{}",
        e.message
    );
    let e = err(deps.get_scale("nope").await);
    assert_eq!(
        (e.code, e.message.as_str()),
        (404, r#"deployments.apps "nope" not found"#)
    );
}

// ------------------------------------------------------------------------------------ deletion

async fn finalizers_hold_deletion_until_removed_then_watch_sees_deleted(c: &TestCluster) {
    let client = c.client().await;
    make_ns(&client, "fin").await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "fin");
    cms.create(
        &PostParams::default(),
        &obj(json!({"metadata": {"name": "held", "finalizers": ["example.com/hold"]}})),
    )
    .await
    .unwrap();

    let pending = cms
        .delete("held", &DeleteParams::default())
        .await
        .unwrap()
        .left()
        .expect("a finalized object is returned, not a Status");
    assert!(pending.metadata.deletion_timestamp.is_some());
    assert_eq!(pending.metadata.deletion_grace_period_seconds, Some(0));
    let still = cms.get("held").await.unwrap();
    assert!(still.metadata.deletion_timestamp.is_some());
    assert_eq!(
        still.metadata.finalizers.as_deref(),
        Some(&["example.com/hold".to_string()][..])
    );
    // Deleting again changes nothing.
    let again = cms
        .delete("held", &DeleteParams::default())
        .await
        .unwrap()
        .left()
        .unwrap();
    assert_eq!(rv_of(&again), rv_of(&still));
    // New finalizers may not be added to an object being deleted... but removing is allowed.
    let mut s = cms
        .watch(&WatchParams::default(), &rv_of(&still))
        .await
        .unwrap()
        .boxed();
    cms.patch(
        "held",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    let ev = next_event(&mut s).await;
    assert_eq!(
        describe(&ev),
        "DELETED held",
        "removing the last finalizer deletes"
    );
    assert_eq!(err(cms.get("held").await).code, 404);
}

async fn propagation_policies_add_gc_finalizers(c: &TestCluster) {
    let client = c.client().await;
    let deps: Api<Deployment> = Api::namespaced(client.clone(), "default");
    deps.create(&PostParams::default(), &deployment("fg", 1))
        .await
        .unwrap();
    deps.create(&PostParams::default(), &deployment("orph", 1))
        .await
        .unwrap();
    deps.create(&PostParams::default(), &deployment("bg", 1))
        .await
        .unwrap();

    let fg = deps
        .delete("fg", &DeleteParams::foreground())
        .await
        .unwrap()
        .left()
        .expect("foreground deletion returns the object");
    assert_eq!(
        fg.metadata.finalizers.as_deref(),
        Some(&["foregroundDeletion".to_string()][..])
    );
    assert!(fg.metadata.deletion_timestamp.is_some());
    assert!(deps
        .get("fg")
        .await
        .unwrap()
        .metadata
        .deletion_timestamp
        .is_some());

    let or = deps
        .delete("orph", &DeleteParams::orphan())
        .await
        .unwrap()
        .left()
        .expect("orphan deletion returns the object");
    assert_eq!(
        or.metadata.finalizers.as_deref(),
        Some(&["orphan".to_string()][..])
    );
    assert!(deps
        .get("orph")
        .await
        .unwrap()
        .metadata
        .deletion_timestamp
        .is_some());

    assert!(
        deps.delete("bg", &DeleteParams::background())
            .await
            .unwrap()
            .is_right(),
        "background deletion removes at once"
    );
    assert_eq!(err(deps.get("bg").await).code, 404);

    let r = c
        .raw(
            "DELETE",
            "/apis/apps/v1/namespaces/default/deployments/fg?propagationPolicy=Sideways",
            None,
            "",
        )
        .await;
    assert_eq!(r.status, 422, "{}", r.text());
    assert_eq!(
        r.json()["details"]["causes"][0]["field"],
        json!("propagationPolicy")
    );

    // The garbage collector's part: removing the finalizer completes the deletion.
    deps.patch(
        "fg",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": []}})),
    )
    .await
    .unwrap();
    assert_eq!(err(deps.get("fg").await).code, 404);
}

async fn pods_on_nodes_delete_gracefully_and_preconditions_conflict(c: &TestCluster) {
    let client = c.client().await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    pods.create(&PostParams::default(), &pod("bound", Some("node-1")))
        .await
        .unwrap();
    pods.create(&PostParams::default(), &pod("unbound", None))
        .await
        .unwrap();

    let first = pods
        .delete("bound", &DeleteParams::default())
        .await
        .unwrap()
        .left()
        .expect("graceful delete returns the pod");
    assert!(first.metadata.deletion_timestamp.is_some());
    assert_eq!(first.metadata.deletion_grace_period_seconds, Some(30));
    let still = pods.get("bound").await.unwrap();
    assert_eq!(still.metadata.deletion_grace_period_seconds, Some(30));
    pods.delete("bound", &DeleteParams::default().grace_period(0))
        .await
        .unwrap();
    assert_eq!(
        err(pods.get("bound").await).code,
        404,
        "gracePeriodSeconds=0 removes the pod"
    );

    // A pod not bound to a node has nothing to wait for.
    pods.delete("unbound", &DeleteParams::default())
        .await
        .unwrap();
    assert_eq!(err(pods.get("unbound").await).code, 404);

    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let cur = cms
        .create(&PostParams::default(), &cm("pre", json!({})))
        .await
        .unwrap();
    let uid = cur.metadata.uid.clone().unwrap();
    let rv = rv_of(&cur);
    let e = err(cms
        .delete(
            "pre",
            &DeleteParams::default().preconditions(Preconditions {
                uid: Some("wrong-uid".into()),
                resource_version: None,
            }),
        )
        .await);
    assert_eq!(
        (e.code, e.reason.as_str(), e.message),
        (
            409,
            "Conflict",
            format!(
                r#"Operation cannot be fulfilled on configmaps "pre": Precondition failed: UID in precondition: wrong-uid, UID in object meta: {uid}"#
            )
        )
    );
    let e = err(cms
        .delete(
            "pre",
            &DeleteParams::default().preconditions(Preconditions {
                uid: None,
                resource_version: Some("1".into()),
            }),
        )
        .await);
    assert_eq!(
        (e.code, e.reason.as_str(), e.message),
        (
            409,
            "Conflict",
            format!(
                r#"Operation cannot be fulfilled on configmaps "pre": Precondition failed: ResourceVersion in precondition: 1, ResourceVersion in object meta: {rv}"#
            )
        )
    );
    assert_eq!(
        rv_of(&cms.get("pre").await.unwrap()),
        rv,
        "failed preconditions change nothing"
    );
    cms.delete(
        "pre",
        &DeleteParams::default().preconditions(Preconditions {
            uid: Some(uid),
            resource_version: Some(rv),
        }),
    )
    .await
    .unwrap();
    assert_eq!(err(cms.get("pre").await).code, 404);
}

// ------------------------------------------------------------------------------------ dry run / validation

async fn dry_run_persists_nothing(c: &TestCluster) {
    let client = c.client().await;
    make_ns(&client, "dry").await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "dry");
    let real = cms
        .create(&PostParams::default(), &cm("real", json!({"a": "1"})))
        .await
        .unwrap();
    let before = snapshot(&client, "dry").await;

    let dry = PostParams {
        dry_run: true,
        ..Default::default()
    };
    let made = cms
        .create(&dry, &cm("ghost", json!({"a": "1"})))
        .await
        .unwrap();
    assert_eq!(made.metadata.name.as_deref(), Some("ghost"));
    assert!(made.metadata.uid.is_some() && made.metadata.creation_timestamp.is_some());
    assert_eq!(
        err(cms.get("ghost").await).code,
        404,
        "dry-run create stores nothing"
    );

    let mut upd = real.clone();
    upd.data = Some([("a".to_string(), "2".to_string())].into());
    let out = cms.replace("real", &dry, &upd).await.unwrap();
    assert_eq!(out.data.as_ref().unwrap()["a"], "2");
    cms.patch(
        "real",
        &PatchParams::default().dry_run(),
        &Patch::Merge(json!({"data": {"b": "3"}})),
    )
    .await
    .unwrap();
    cms.patch("real", &PatchParams::apply("dry").dry_run().force(), &Patch::Apply(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "real"}, "data": {"c": "4"}}))).await.unwrap();
    cms.delete("real", &DeleteParams::default().dry_run())
        .await
        .unwrap();
    let r = c
        .raw(
            "DELETE",
            "/api/v1/namespaces/dry/configmaps?dryRun=All",
            None,
            "",
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());

    let svcs: Api<Service> = Api::namespaced(client.clone(), "dry");
    svcs.create(
        &dry,
        &obj(json!({"metadata": {"name": "s"}, "spec": {"ports": [{"port": 80}]}})),
    )
    .await
    .unwrap();
    assert_eq!(err(svcs.get("s").await).code, 404);

    let now = cms.get("real").await.unwrap();
    assert_eq!(serde_json::to_value(&now.data).unwrap(), json!({"a": "1"}));
    assert_eq!(
        snapshot(&client, "dry").await,
        before,
        "dry runs changed stored objects"
    );
    let r = c
        .raw(
            "POST",
            "/api/v1/namespaces/dry/configmaps?dryRun=Some",
            Some("application/json"),
            r#"{"metadata":{"name":"x"}}"#,
        )
        .await;
    assert_eq!(r.status, 422, "{}", r.text());
}

async fn field_validation_strict_warn_ignore(c: &TestCluster) {
    let body = |name: &str| {
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
            "spec": {"foo": 1, "selector": {"matchLabels": {"app": "a"}}, "template": {"metadata": {"labels": {"app": "a"}}, "spec": {"containers": [{"name": "c", "image": "nginx"}]}}}})
        .to_string()
    };
    let path = "/apis/apps/v1/namespaces/default/deployments";
    let r = c
        .raw(
            "POST",
            &format!("{path}?fieldValidation=Strict"),
            Some("application/json"),
            body("strict"),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text());
    let v = r.json();
    assert_eq!(
        (v["reason"].as_str(), v["message"].as_str()),
        (
            Some("BadRequest"),
            Some(r#"strict decoding error: unknown field "spec.foo""#)
        )
    );
    let r = c.raw("GET", &format!("{path}/strict"), None, "").await;
    assert_eq!(r.status, 404);

    let r = c
        .raw(
            "POST",
            &format!("{path}?fieldValidation=Warn"),
            Some("application/json"),
            body("warn"),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(
        r.header_all("warning"),
        [r#"299 - "unknown field \"spec.foo\"""#]
    );
    assert!(
        r.json()["spec"].get("foo").is_none(),
        "unknown fields are dropped"
    );

    let r = c
        .raw(
            "POST",
            &format!("{path}?fieldValidation=Ignore"),
            Some("application/json"),
            body("ignore"),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert!(r.header_all("warning").is_empty(), "{:?}", r.headers);

    // The same on update and patch.
    let r = c
        .raw(
            "PATCH",
            &format!("{path}/warn?fieldValidation=Strict"),
            Some("application/merge-patch+json"),
            r#"{"spec":{"bar":2}}"#,
        )
        .await;
    assert_eq!(
        (r.status, r.json()["message"].as_str()),
        (
            400,
            Some(r#"strict decoding error: unknown field "spec.bar""#)
        )
    );
    let r = c
        .raw(
            "POST",
            &format!("{path}?fieldValidation=Bogus"),
            Some("application/json"),
            body("bogus"),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text());
}

// ------------------------------------------------------------------------------------ watch

async fn watch_initial_events_and_replay_in_order(c: &TestCluster) {
    let client = c.client().await;
    make_ns(&client, "w").await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "w");
    for n in ["a", "b", "c"] {
        cms.create(&PostParams::default(), &cm(n, json!({})))
            .await
            .unwrap();
    }
    for rv in ["", "&resourceVersion=0"] {
        let (events, _) = c
            .watch_raw(
                &format!("/api/v1/namespaces/w/configmaps?watch=true{rv}"),
                3,
                Duration::from_secs(10),
            )
            .await;
        assert_eq!(
            event_summary(&events),
            ["ADDED a", "ADDED b", "ADDED c"],
            "rv {rv:?}"
        );
    }
    // A watch on one name.
    let (events, _) = c
        .watch_raw(
            "/api/v1/namespaces/w/configmaps?watch=true&fieldSelector=metadata.name%3Db",
            1,
            Duration::from_secs(10),
        )
        .await;
    assert_eq!(event_summary(&events), ["ADDED b"]);

    let list = cms.list(&Default::default()).await.unwrap();
    let from = list.metadata.resource_version.clone().unwrap();
    let mut s = cms
        .watch(&WatchParams::default(), &from)
        .await
        .unwrap()
        .boxed();
    cms.create(&PostParams::default(), &cm("d", json!({})))
        .await
        .unwrap();
    cms.patch(
        "a",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"x": "1"}})),
    )
    .await
    .unwrap();
    cms.delete("b", &DeleteParams::default()).await.unwrap();
    let mut seen = Vec::new();
    let mut last = rv_num(&from);
    for _ in 0..3 {
        let ev = next_event(&mut s).await;
        let rv = match &ev {
            WatchEvent::Added(o) | WatchEvent::Modified(o) | WatchEvent::Deleted(o) => {
                rv_num(&rv_of(o))
            }
            other => panic!("unexpected {}", describe(other)),
        };
        assert!(rv > last, "events in revision order");
        last = rv;
        seen.push(describe(&ev));
    }
    assert_eq!(seen, ["ADDED d", "MODIFIED a", "DELETED b"]);
}

async fn watch_label_selector_transitions(c: &TestCluster) {
    let client = c.client().await;
    make_ns(&client, "wl").await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "wl");
    let list = cms.list(&Default::default()).await.unwrap();
    let mut s = cms
        .watch(
            &WatchParams::default().labels("app=x"),
            &list.metadata.resource_version.unwrap(),
        )
        .await
        .unwrap()
        .boxed();
    cms.create(
        &PostParams::default(),
        &cm_labels("other", json!({"app": "y"})),
    )
    .await
    .unwrap();
    cms.create(&PostParams::default(), &cm_labels("m", json!({"app": "x"})))
        .await
        .unwrap();
    cms.patch(
        "m",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"app": "y"}}})),
    )
    .await
    .unwrap();
    cms.patch(
        "other",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"k": "v"}})),
    )
    .await
    .unwrap();
    cms.patch(
        "m",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"app": "x"}}})),
    )
    .await
    .unwrap();
    cms.patch(
        "m",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"k": "v"}})),
    )
    .await
    .unwrap();
    cms.delete("m", &DeleteParams::default()).await.unwrap();
    let mut seen = Vec::new();
    for _ in 0..5 {
        seen.push(describe(&next_event(&mut s).await));
    }
    assert_eq!(
        seen,
        ["ADDED m", "DELETED m", "ADDED m", "MODIFIED m", "DELETED m"]
    );
}

async fn watch_bookmarks_timeout_and_initial_events_end(c: &TestCluster) {
    let client = c.client().await;
    make_ns(&client, "wb").await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "wb");
    for n in ["a", "b"] {
        cms.create(&PostParams::default(), &cm(n, json!({})))
            .await
            .unwrap();
    }
    // timeoutSeconds ends the stream.
    let t0 = std::time::Instant::now();
    let (events, ended) = c
        .watch_raw(
            "/api/v1/namespaces/wb/configmaps?watch=true&resourceVersion=0&timeoutSeconds=1",
            100,
            Duration::from_secs(10),
        )
        .await;
    assert!(ended, "the server ends the watch after timeoutSeconds");
    assert!(t0.elapsed() < Duration::from_secs(8));
    assert_eq!(event_summary(&events), ["ADDED a", "ADDED b"]);

    // Streaming list: initial ADDEDs, then a BOOKMARK annotated as the end of the initial set.
    let (events, _) = c
        .watch_raw("/api/v1/namespaces/wb/configmaps?watch=true&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true", 3, Duration::from_secs(10))
        .await;
    assert_eq!(event_summary(&events), ["ADDED a", "ADDED b", "BOOKMARK "]);
    let bm = &events[2]["object"];
    assert_eq!(
        bm["metadata"]["annotations"]["k8s.io/initial-events-end"],
        json!("true")
    );
    assert_eq!(
        (bm["kind"].as_str(), bm["apiVersion"].as_str()),
        (Some("ConfigMap"), Some("v1"))
    );
    let list_rv = rv_num(
        &cms.list(&Default::default())
            .await
            .unwrap()
            .metadata
            .resource_version
            .unwrap(),
    );
    assert!(rv_num(bm["metadata"]["resourceVersion"].as_str().unwrap()) <= list_rv);

    // sendInitialEvents needs resourceVersionMatch=NotOlderThan.
    let r = c
        .raw(
            "GET",
            "/api/v1/namespaces/wb/configmaps?watch=true&sendInitialEvents=true",
            None,
            "",
        )
        .await;
    assert_eq!(r.status, 422, "{}", r.text());

    // Periodic bookmarks: upstream sends one shortly before the watch times out.
    let rv = cms
        .list(&Default::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let (events, ended) = c.watch_raw(&format!("/api/v1/namespaces/wb/configmaps?watch=true&resourceVersion={rv}&allowWatchBookmarks=true&timeoutSeconds=3"), 100, Duration::from_secs(15)).await;
    assert!(ended);
    assert_eq!(event_summary(&events), ["BOOKMARK "], "{events:?}");
    assert!(
        rv_num(
            events[0]["object"]["metadata"]["resourceVersion"]
                .as_str()
                .unwrap()
        ) >= rv_num(&rv),
        "{events:?}"
    );
    // Without allowWatchBookmarks there are none.
    let (events, _) = c
        .watch_raw(
            &format!(
                "/api/v1/namespaces/wb/configmaps?watch=true&resourceVersion={rv}&timeoutSeconds=3"
            ),
            100,
            Duration::from_secs(15),
        )
        .await;
    assert!(events.is_empty(), "{events:?}");
}

async fn kube_runtime_watcher_streaming_and_list_watch(c: &TestCluster) {
    use kube::runtime::watcher::{self, Event};
    let client = c.client().await;
    make_ns(&client, "kr").await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "kr");
    for n in ["a", "b"] {
        cms.create(&PostParams::default(), &cm(n, json!({})))
            .await
            .unwrap();
    }
    for cfg in [
        watcher::Config::default(),
        watcher::Config::default().streaming_lists(),
        watcher::Config::default().page_size(1),
    ] {
        let mut s = watcher::watcher(cms.clone(), cfg).boxed();
        let mut init = Vec::new();
        loop {
            let ev = tokio::time::timeout(Duration::from_secs(15), s.try_next())
                .await
                .expect("watcher event within 15s")
                .expect("watcher ok")
                .expect("stream open");
            match ev {
                Event::Init => {}
                Event::InitApply(o) => init.push(o.metadata.name.unwrap()),
                Event::InitDone => break,
                other => panic!("unexpected event before InitDone: {other:?}"),
            }
        }
        init.sort();
        assert_eq!(init, ["a", "b"]);
        let name = format!("n{}", rand_suffix());
        cms.create(&PostParams::default(), &cm(&name, json!({})))
            .await
            .unwrap();
        let ev = tokio::time::timeout(Duration::from_secs(15), s.try_next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        match ev {
            Event::Apply(o) => assert_eq!(o.metadata.name.as_deref(), Some(name.as_str())),
            other => panic!("expected Apply, got {other:?}"),
        }
        cms.delete(&name, &DeleteParams::default()).await.unwrap();
        let ev = tokio::time::timeout(Duration::from_secs(15), s.try_next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert!(
            matches!(ev, Event::Delete(ref o) if o.metadata.name.as_deref() == Some(name.as_str())),
            "{ev:?}"
        );
    }
}

fn rand_suffix() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    N.fetch_add(1, Ordering::Relaxed).to_string()
}

/// The embedded store keeps history only in memory, so after a restart any older revision is
/// gone; etcd needs a compaction, done on a private etcd so that no other test loses history.
async fn watch_too_old_resource_version_is_410_expired(c: &mut TestCluster) {
    if c.etcd_endpoint().is_none() {
        return too_old_after(c).await;
    }
    let private = Arc::new(EtcdProcess::start().await.expect("start etcd"));
    let mut own = TestCluster::start_with(Backend::Etcd(private.clone()), options())
        .await
        .unwrap();
    too_old_after(&mut own).await;
    own.stop().await;
}

async fn too_old_after(c: &mut TestCluster) {
    let client = c.client().await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let first = cms
        .create(&PostParams::default(), &cm("old", json!({})))
        .await
        .unwrap();
    for i in 0..3 {
        cms.patch(
            "old",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"i": i.to_string()}})),
        )
        .await
        .unwrap();
    }
    let old_rv = rv_num(&rv_of(&first));
    let current = rv_num(
        &cms.list(&Default::default())
            .await
            .unwrap()
            .metadata
            .resource_version
            .unwrap(),
    );
    let client = match c.etcd_endpoint() {
        Some(ep) => {
            let mut etcd = etcd_client::Client::connect([ep], None)
                .await
                .expect("connect etcd");
            etcd.compact(current, None).await.expect("compact etcd");
            client
        }
        None => {
            drop((cms, client));
            c.restart().await.expect("restart");
            c.client().await
        }
    };
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let (events, ended) = c
        .watch_raw(
            &format!("/api/v1/namespaces/default/configmaps?watch=true&resourceVersion={old_rv}"),
            1,
            Duration::from_secs(10),
        )
        .await;
    assert_eq!(events.len(), 1, "one ERROR event (ended={ended})");
    assert_eq!(events[0]["type"], json!("ERROR"));
    let st = &events[0]["object"];
    assert_eq!(
        (
            st["kind"].as_str(),
            st["code"].as_i64(),
            st["reason"].as_str(),
            st["status"].as_str()
        ),
        (Some("Status"), Some(410), Some("Expired"), Some("Failure")),
        "{st}"
    );
    assert!(
        st["message"]
            .as_str()
            .unwrap()
            .starts_with(&format!("too old resource version: {old_rv} (")),
        "{st}"
    );
    let mut s = cms
        .watch(&WatchParams::default(), &old_rv.to_string())
        .await
        .unwrap()
        .boxed();
    match next_event(&mut s).await {
        WatchEvent::Error(e) => assert_eq!((e.code, e.reason.as_str()), (410, "Expired")),
        other => panic!("expected ERROR, got {}", describe(&other)),
    }
    // A list at the compacted revision is also 410.
    let e = err(cms
        .list(
            &ListParams::default()
                .at(&old_rv.to_string())
                .matching(kube::api::VersionMatch::Exact),
        )
        .await);
    assert_eq!(
        (e.code, e.reason.as_str()),
        (410, "Expired"),
        "{}",
        e.message
    );
}

// ------------------------------------------------------------------------------------ list

async fn list_paging_returns_every_object_once_with_remaining_count(c: &TestCluster) {
    let client = c.client().await;
    make_ns(&client, "page").await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "page");
    let want: BTreeSet<String> = (0..25).map(|i| format!("cm-{i:02}")).collect();
    futures::stream::iter(want.iter().cloned())
        .for_each_concurrent(8, |n| {
            let cms = cms.clone();
            async move {
                cms.create(&PostParams::default(), &cm(&n, json!({})))
                    .await
                    .unwrap();
            }
        })
        .await;
    let mut got = Vec::new();
    let mut token: Option<String> = None;
    let mut pages = Vec::new();
    loop {
        let mut lp = ListParams::default().limit(10);
        if let Some(t) = &token {
            lp = lp.continue_token(t);
        }
        let page = cms.list(&lp).await.unwrap();
        got.extend(names(&page.items));
        pages.push((page.items.len(), page.metadata.remaining_item_count));
        token = page.metadata.continue_.clone().filter(|t| !t.is_empty());
        // Objects created after the first page do not show up in a consistent paged list.
        if pages.len() == 1 {
            cms.create(&PostParams::default(), &cm("cm-99-late", json!({})))
                .await
                .unwrap();
        }
        if token.is_none() {
            break;
        }
    }
    assert_eq!(pages, [(10, Some(15)), (10, Some(5)), (5, None)]);
    let set: BTreeSet<String> = got.iter().cloned().collect();
    assert_eq!(set.len(), got.len(), "duplicates: {got:?}");
    // Continue tokens carry the first page's revision: the pages are one snapshot (the
    // embedded store serves it from its history ring).
    assert_eq!(set, want, "paged list is a snapshot");
    let r = c
        .raw(
            "GET",
            "/api/v1/namespaces/page/configmaps?limit=10&continue=garbage",
            None,
            "",
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text());
}

async fn list_label_and_field_selectors(c: &TestCluster) {
    let client = c.client().await;
    make_ns(&client, "sel").await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "sel");
    for (n, l) in [
        ("a", json!({"env": "prod", "tier": "web", "rank": "1"})),
        ("b", json!({"env": "dev", "tier": "db", "rank": "5"})),
        ("c", json!({"env": "qa"})),
        ("d", json!({})),
    ] {
        cms.create(&PostParams::default(), &cm_labels(n, l))
            .await
            .unwrap();
    }
    for (sel, want) in [
        ("env=prod", vec!["a"]),
        ("env==prod", vec!["a"]),
        ("env!=prod", vec!["b", "c", "d"]),
        ("env in (prod,dev)", vec!["a", "b"]),
        ("env notin (prod,dev)", vec!["c", "d"]),
        ("tier", vec!["a", "b"]),
        ("!tier", vec!["c", "d"]),
        ("env=prod,tier=web", vec!["a"]),
        ("env,!tier", vec!["c"]),
        ("rank>2", vec!["b"]),
        ("rank<2", vec!["a"]),
        ("env=nothing", vec![]),
    ] {
        let got = names(
            &cms.list(&ListParams::default().labels(sel))
                .await
                .unwrap()
                .items,
        );
        assert_eq!(got, want, "labelSelector {sel:?}");
    }
    let r = c
        .raw(
            "GET",
            "/api/v1/namespaces/sel/configmaps?labelSelector=env%20in%20(",
            None,
            "",
        )
        .await;
    assert_eq!(
        (r.status, r.json()["reason"].as_str()),
        (400, Some("BadRequest")),
        "{}",
        r.text()
    );

    assert_eq!(
        names(
            &cms.list(&ListParams::default().fields("metadata.name=b"))
                .await
                .unwrap()
                .items
        ),
        ["b"]
    );
    assert_eq!(
        names(
            &cms.list(&ListParams::default().fields("metadata.name!=b"))
                .await
                .unwrap()
                .items
        ),
        ["a", "c", "d"]
    );
    assert_eq!(
        names(
            &cms.list(
                &ListParams::default()
                    .fields("metadata.namespace=sel")
                    .labels("tier")
            )
            .await
            .unwrap()
            .items
        ),
        ["a", "b"]
    );

    let pods: Api<Pod> = Api::namespaced(client.clone(), "sel");
    pods.create(&PostParams::default(), &pod("on-n1", Some("n1")))
        .await
        .unwrap();
    pods.create(&PostParams::default(), &pod("pending", None))
        .await
        .unwrap();
    pods.patch_status(
        "on-n1",
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"phase": "Running"}})),
    )
    .await
    .unwrap();
    assert_eq!(
        names(
            &pods
                .list(&ListParams::default().fields("spec.nodeName=n1"))
                .await
                .unwrap()
                .items
        ),
        ["on-n1"]
    );
    assert_eq!(
        names(
            &pods
                .list(&ListParams::default().fields("spec.nodeName="))
                .await
                .unwrap()
                .items
        ),
        ["pending"]
    );
    assert_eq!(
        names(
            &pods
                .list(&ListParams::default().fields("status.phase=Pending"))
                .await
                .unwrap()
                .items
        ),
        ["pending"]
    );
    assert_eq!(
        names(
            &pods
                .list(&ListParams::default().fields("status.phase!=Pending"))
                .await
                .unwrap()
                .items
        ),
        ["on-n1"]
    );

    let events: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(client.clone(), "sel");
    for (n, target) in [("e1", "on-n1"), ("e2", "pending")] {
        events
            .create(&PostParams::default(), &obj(json!({"metadata": {"name": n}, "involvedObject": {"kind": "Pod", "name": target, "namespace": "sel"}, "reason": "Test", "message": "m", "type": "Normal"})))
            .await
            .unwrap();
    }
    assert_eq!(
        names(
            &events
                .list(&ListParams::default().fields("involvedObject.name=pending"))
                .await
                .unwrap()
                .items
        ),
        ["e2"]
    );

    let r = c
        .raw(
            "GET",
            "/api/v1/namespaces/sel/pods?fieldSelector=x%3Dy",
            None,
            "",
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(
        (r.json()["reason"].as_str(), r.json()["message"].as_str()),
        (Some("BadRequest"), Some("field label not supported: x"))
    );
}

async fn list_resource_version_semantics(c: &TestCluster) {
    let client = c.client().await;
    make_ns(&client, "rvs").await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "rvs");
    cms.create(&PostParams::default(), &cm("a", json!({"v": "1"})))
        .await
        .unwrap();
    let l1 = cms.list(&Default::default()).await.unwrap();
    let rv1 = l1.metadata.resource_version.clone().unwrap();
    cms.create(&PostParams::default(), &cm("b", json!({})))
        .await
        .unwrap();
    cms.patch(
        "a",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"v": "2"}})),
    )
    .await
    .unwrap();

    let any = cms.list(&ListParams::default().match_any()).await.unwrap();
    assert_eq!(
        names(&any.items),
        ["a", "b"],
        "resourceVersion=0 serves current data here"
    );
    assert!(rv_num(&any.metadata.resource_version.unwrap()) > rv_num(&rv1));

    let exact = cms
        .list(
            &ListParams::default()
                .at(&rv1)
                .matching(kube::api::VersionMatch::Exact),
        )
        .await
        .unwrap();
    assert_eq!(names(&exact.items), ["a"]);
    assert_eq!(
        exact.items[0].data.as_ref().unwrap()["v"],
        "1",
        "Exact reads the old state"
    );
    assert_eq!(
        exact.metadata.resource_version.as_deref(),
        Some(rv1.as_str())
    );

    let not_older = cms
        .list(
            &ListParams::default()
                .at(&rv1)
                .matching(kube::api::VersionMatch::NotOlderThan),
        )
        .await
        .unwrap();
    assert_eq!(names(&not_older.items), ["a", "b"]);
    let r = c
        .raw(
            "GET",
            "/api/v1/namespaces/rvs/configmaps?resourceVersionMatch=Exact",
            None,
            "",
        )
        .await;
    assert_eq!(
        r.status,
        422,
        "resourceVersionMatch without resourceVersion: {}",
        r.text()
    );
    let r = c.raw("GET", "/api/v1/namespaces/rvs/configmaps?resourceVersion=99999999&resourceVersionMatch=NotOlderThan", None, "").await;
    assert_eq!(
        (r.status, r.json()["reason"].as_str()),
        (504, Some("Timeout")),
        "{}",
        r.text()
    );
}

// ------------------------------------------------------------------------------------ bad input

async fn bad_input_is_rejected_with_status_and_changes_nothing(c: &TestCluster) {
    let client = c.client().await;
    make_ns(&client, "bad").await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "bad");
    cms.create(&PostParams::default(), &cm("keep", json!({"a": "1"})))
        .await
        .unwrap();
    let before = snapshot(&client, "bad").await;
    let cm_path = "/api/v1/namespaces/bad/configmaps";
    let status_of = |r: &tests::RawResponse| {
        let v = r.json();
        assert_eq!(
            (
                v["kind"].as_str(),
                v["apiVersion"].as_str(),
                v["status"].as_str()
            ),
            (Some("Status"), Some("v1"), Some("Failure")),
            "{v}"
        );
        assert_eq!(v["code"].as_u64(), Some(r.status as u64), "{v}");
        (
            r.status,
            v["reason"].as_str().unwrap_or("").to_string(),
            v["message"].as_str().unwrap_or("").to_string(),
        )
    };

    let r = c
        .raw(
            "POST",
            cm_path,
            Some("application/json"),
            r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"x""#,
        )
        .await;
    let (code, reason, msg) = status_of(&r);
    assert_eq!((code, reason.as_str()), (400, "BadRequest"));
    assert!(
        msg.starts_with("couldn't get version/kind; json parse error: "),
        "{msg}"
    );

    let r = c
        .raw(
            "POST",
            cm_path,
            Some("application/yaml"),
            "apiVersion: v1\nkind: ConfigMap\nmetadata: [name: x\n",
        )
        .await;
    let (code, reason, msg) = status_of(&r);
    assert_eq!((code, reason.as_str()), (400, "BadRequest"));
    assert!(
        msg.starts_with("error converting YAML to JSON: yaml: "),
        "{msg}"
    );

    let r = c
        .raw(
            "POST",
            cm_path,
            Some("application/vnd.kubernetes.protobuf"),
            &b"k8s\x00\xff\xfe\x01garbage"[..],
        )
        .await;
    let (code, reason, _) = status_of(&r);
    assert_eq!((code, reason.as_str()), (400, "BadRequest"), "{}", r.text());

    for path in [
        "/api/v1/namespaces/bad/widgets",
        "/apis/nope.example.com/v1/things",
        "/api/v9/pods",
        "/nonsense",
    ] {
        let r = c.raw("GET", path, None, "").await;
        assert_eq!(
            status_of(&r),
            (
                404,
                "NotFound".into(),
                "the server could not find the requested resource".into()
            ),
            "{path}"
        );
    }

    let big = format!(
        r#"{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"big"}},"data":{{"k":"{}"}}}}"#,
        "x".repeat(3 * 1024 * 1024 + 10)
    );
    let r = c
        .raw_upload(cm_path, "application/json", big.into_bytes())
        .await;
    assert_eq!(
        status_of(&r),
        (
            413,
            "RequestEntityTooLarge".into(),
            "Request entity too large: limit is 3145728".into()
        )
    );

    let r = c.raw("POST", "/api/v1/namespaces/bad/pods", Some("application/json"), r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p"},"spec":{"containers":[{"name":"c"}]}}"#).await;
    let (code, reason, msg) = status_of(&r);
    assert_eq!((code, reason.as_str()), (422, "Invalid"));
    assert_eq!(
        msg,
        r#"Pod "p" is invalid: spec.containers[0].image: Required value"#
    );
    let v = r.json();
    assert_eq!(
        (v["details"]["name"].as_str(), v["details"]["kind"].as_str()),
        (Some("p"), Some("Pod"))
    );
    let fields: Vec<&str> = v["details"]["causes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["field"].as_str())
        .collect();
    assert_eq!(fields, ["spec.containers[0].image"]);
    assert_eq!(
        v["details"]["causes"][0]["reason"],
        json!("FieldValueRequired")
    );

    let r = c
        .raw(
            "POST",
            cm_path,
            Some("text/plain"),
            r#"{"metadata":{"name":"t"}}"#,
        )
        .await;
    let (code, reason, _) = status_of(&r);
    assert_eq!((code, reason.as_str()), (415, "UnsupportedMediaType"));

    let r = c
        .raw(
            "PATCH",
            &format!("{cm_path}/keep"),
            Some("application/json"),
            r#"{"data":{"a":"2"}}"#,
        )
        .await;
    assert_eq!(status_of(&r).0, 415);
    let r = c
        .raw(
            "PATCH",
            &format!("{cm_path}/keep"),
            Some("application/merge-patch+json"),
            r#"{"data":"#,
        )
        .await;
    assert_eq!(status_of(&r).0, 400);
    let r = c
        .raw(
            "PUT",
            &format!("{cm_path}/keep"),
            Some("application/json"),
            r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"other"}}"#,
        )
        .await;
    assert_eq!(status_of(&r).0, 400, "name mismatch");
    let r = c
        .raw(
            "POST",
            cm_path,
            Some("application/json"),
            r#"{"apiVersion":"v1","kind":"Secret","metadata":{"name":"k"}}"#,
        )
        .await;
    assert_eq!(status_of(&r).0, 400, "kind mismatch");
    let r = c
        .raw(
            "POST",
            cm_path,
            Some("application/json"),
            r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"k","namespace":"other"}}"#,
        )
        .await;
    let (code, _, msg) = status_of(&r);
    assert_eq!(
        (code, msg.as_str()),
        (
            400,
            "the namespace of the provided object does not match the namespace sent on the request"
        )
    );
    let r = c
        .raw(
            "POST",
            cm_path,
            Some("application/json"),
            r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"Bad_Name"}}"#,
        )
        .await;
    assert_eq!(status_of(&r).0, 422);
    let r = c
        .raw(
            "DELETE",
            &format!("{cm_path}/keep"),
            Some("application/json"),
            r#"{"preconditions":{"uid":"nope"}}"#,
        )
        .await;
    assert_eq!(status_of(&r).0, 409);

    assert_eq!(
        snapshot(&client, "bad").await,
        before,
        "failed requests changed stored objects"
    );
}

async fn authentication_by_cert_token_and_public_paths(c: &TestCluster) {
    for p in ["/healthz", "/livez", "/readyz", "/version"] {
        let r = c.raw_as(&Auth::Anonymous, "GET", p, None, "").await;
        assert_eq!(r.status, 200, "{p}: {}", r.text());
    }
    assert_eq!(
        c.raw_as(&Auth::Anonymous, "GET", "/version", None, "")
            .await
            .json()["major"],
        json!("1")
    );
    for p in ["/api", "/api/v1/namespaces", "/apis/apps/v1/deployments"] {
        let r = c.raw_as(&Auth::Anonymous, "GET", p, None, "").await;
        assert_eq!(r.status, 401, "{p}: {}", r.text());
        let v = r.json();
        assert_eq!(
            (
                v["kind"].as_str(),
                v["reason"].as_str(),
                v["message"].as_str(),
                v["code"].as_u64()
            ),
            (
                Some("Status"),
                Some("Unauthorized"),
                Some("Unauthorized"),
                Some(401)
            )
        );
    }
    let r = c
        .raw_as(
            &Auth::Bearer("wrong".into()),
            "GET",
            "/api/v1/namespaces",
            None,
            "",
        )
        .await;
    assert_eq!(r.status, 401);
    let r = c
        .raw_as(
            &Auth::Bearer(TOKEN.into()),
            "GET",
            "/api/v1/namespaces",
            None,
            "",
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["kind"], json!("NamespaceList"));
    let r = c
        .raw_as(
            &Auth::Bearer(TOKEN.into()),
            "POST",
            "/apis/authentication.k8s.io/v1/selfsubjectreviews",
            Some("application/json"),
            r#"{"apiVersion":"authentication.k8s.io/v1","kind":"SelfSubjectReview"}"#,
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let ui = &r.json()["status"]["userInfo"];
    assert_eq!(ui["username"], json!("alice"));
    assert_eq!(ui["uid"], json!("1001"));
    let groups: Vec<&str> = ui["groups"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        groups.contains(&"dev")
            && groups.contains(&"system:masters")
            && groups.contains(&"system:authenticated"),
        "{groups:?}"
    );
    let r = c
        .raw(
            "POST",
            "/apis/authentication.k8s.io/v1/selfsubjectreviews",
            Some("application/json"),
            r#"{"apiVersion":"authentication.k8s.io/v1","kind":"SelfSubjectReview"}"#,
        )
        .await;
    assert_eq!(
        r.json()["status"]["userInfo"]["username"],
        json!("kubernetes-admin"),
        "{}",
        r.text()
    );
}

// ------------------------------------------------------------------------------------ services

async fn services_allocate_distinct_ips_and_node_ports(c: &TestCluster) {
    let client = c.client().await;
    make_ns(&client, "svc").await;
    let svcs: Api<Service> = Api::namespaced(client.clone(), "svc");
    let made: Vec<Service> = futures::stream::iter(0..40)
        .map(|i| {
            let svcs = svcs.clone();
            async move { svcs.create(&PostParams::default(), &obj(json!({"metadata": {"name": format!("s{i}")}, "spec": {"type": "NodePort", "selector": {"app": "x"}, "ports": [{"port": 80}]}}))).await.unwrap() }
        })
        .buffer_unordered(40)
        .collect()
        .await;
    let mut ips = BTreeSet::new();
    let mut ports = BTreeSet::new();
    for s in &made {
        let spec = s.spec.as_ref().unwrap();
        let ip: std::net::Ipv4Addr = spec.cluster_ip.as_deref().unwrap().parse().unwrap();
        let o = ip.octets();
        assert!(
            o[0] == 10 && (96..112).contains(&o[1]),
            "{ip} outside 10.96.0.0/12"
        );
        assert_ne!(
            ip,
            std::net::Ipv4Addr::new(10, 96, 0, 1),
            "the kubernetes service's IP"
        );
        assert_eq!(spec.cluster_ips.as_deref(), Some(&[ip.to_string()][..]));
        ips.insert(ip);
        let np = spec.ports.as_ref().unwrap()[0].node_port.unwrap();
        assert!((30000..=32767).contains(&np), "{np}");
        ports.insert(np);
    }
    assert_eq!(
        (ips.len(), ports.len()),
        (40, 40),
        "allocations must be distinct"
    );

    // A taken clusterIP / nodePort is refused with the field path.
    let taken = made[0].spec.as_ref().unwrap().cluster_ip.clone().unwrap();
    let e = err(svcs.create(&PostParams::default(), &obj(json!({"metadata": {"name": "dup"}, "spec": {"clusterIP": taken, "ports": [{"port": 80}]}}))).await);
    assert_eq!(
        (e.code, e.reason.as_str()),
        (422, "Invalid"),
        "{}",
        e.message
    );
    assert!(
        e.details
            .as_ref()
            .unwrap()
            .causes
            .iter()
            .any(|c| c.field == "spec.clusterIPs"),
        "{e:?}"
    );
    assert!(
        e.message.contains("provided IP is already allocated"),
        "{}",
        e.message
    );
    let taken_port = made[1].spec.as_ref().unwrap().ports.as_ref().unwrap()[0]
        .node_port
        .unwrap();
    let e = err(svcs.create(&PostParams::default(), &obj(json!({"metadata": {"name": "dupport"}, "spec": {"type": "NodePort", "ports": [{"port": 80, "nodePort": taken_port}]}}))).await);
    assert_eq!(e.code, 422, "{}", e.message);
    assert!(
        e.details
            .as_ref()
            .unwrap()
            .causes
            .iter()
            .any(|c| c.field == "spec.ports[0].nodePort"),
        "{e:?}"
    );
    let e = err(svcs.create(&PostParams::default(), &obj(json!({"metadata": {"name": "outside"}, "spec": {"clusterIP": "192.168.0.10", "ports": [{"port": 80}]}}))).await);
    assert_eq!(e.code, 422, "{}", e.message);

    // Deleting releases both; they can then be requested explicitly.
    for s in &made[..2] {
        svcs.delete(
            s.metadata.name.as_deref().unwrap(),
            &DeleteParams::default(),
        )
        .await
        .unwrap();
    }
    let again = svcs.create(&PostParams::default(), &obj(json!({"metadata": {"name": "reuse"}, "spec": {"type": "NodePort", "clusterIP": taken, "ports": [{"port": 80, "nodePort": taken_port}]}}))).await.unwrap();
    assert_eq!(
        again.spec.as_ref().unwrap().cluster_ip.as_deref(),
        Some(taken.as_str())
    );
    assert_eq!(
        again.spec.as_ref().unwrap().ports.as_ref().unwrap()[0].node_port,
        Some(taken_port)
    );
    // Headless services get no IP.
    let headless = svcs.create(&PostParams::default(), &obj(json!({"metadata": {"name": "headless"}, "spec": {"clusterIP": "None", "ports": [{"port": 80}]}}))).await.unwrap();
    assert_eq!(headless.spec.unwrap().cluster_ip.as_deref(), Some("None"));
}

async fn bare_server_has_system_namespaces_and_kubernetes_service(c: &TestCluster) {
    let client = c.client().await;
    let nss: Api<Namespace> = Api::all(client.clone());
    let all = nss.list(&Default::default()).await.unwrap();
    assert_eq!(
        names(&all.items),
        ["default", "kube-node-lease", "kube-public", "kube-system"]
    );
    for n in &all.items {
        assert_eq!(
            n.status.as_ref().and_then(|s| s.phase.as_deref()),
            Some("Active")
        );
        assert_eq!(
            n.spec.as_ref().and_then(|s| s.finalizers.clone()),
            Some(vec!["kubernetes".to_string()])
        );
    }
    let svc: Api<Service> = Api::namespaced(client.clone(), "default");
    let k = svc.get("kubernetes").await.unwrap();
    let spec = k.spec.unwrap();
    assert_eq!(spec.cluster_ip.as_deref(), Some("10.96.0.1"));
    let p = &spec.ports.unwrap()[0];
    assert_eq!(
        (p.name.as_deref(), p.port, p.protocol.as_deref()),
        (Some("https"), 443, Some("TCP"))
    );
    assert_eq!(
        k.metadata
            .labels
            .unwrap()
            .get("component")
            .map(String::as_str),
        Some("apiserver")
    );
}

// ------------------------------------------------------------------------------------ namespaces

async fn namespace_lifecycle_not_found_terminating_and_finalize(c: &TestCluster) {
    let client = c.client().await;
    let missing: Api<ConfigMap> = Api::namespaced(client.clone(), "missing");
    let e = err(missing
        .create(&PostParams::default(), &cm("x", json!({})))
        .await);
    assert_eq!(
        (e.code, e.reason.as_str(), e.message.as_str()),
        (404, "NotFound", r#"namespaces "missing" not found"#)
    );

    make_ns(&client, "doomed").await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "doomed");
    cms.create(&PostParams::default(), &cm("before", json!({})))
        .await
        .unwrap();
    let nss: Api<Namespace> = Api::all(client.clone());
    let deleted = nss
        .delete("doomed", &DeleteParams::default())
        .await
        .unwrap()
        .left()
        .expect("namespace delete returns the namespace");
    assert_eq!(
        deleted.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Terminating")
    );
    assert!(deleted.metadata.deletion_timestamp.is_some());
    let ns = nss.get("doomed").await.unwrap();
    assert_eq!(
        ns.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Terminating")
    );

    let e = err(cms
        .create(&PostParams::default(), &cm("after", json!({})))
        .await);
    assert_eq!(
        (e.code, e.reason.as_str(), e.message.as_str()),
        (
            403,
            "Forbidden",
            r#"configmaps "after" is forbidden: unable to create new content in namespace doomed because it is being terminated"#
        )
    );
    let d = e.details.unwrap();
    assert_eq!((d.name.as_str(), d.kind.as_str()), ("after", "configmaps"));
    assert!(
        d.causes
            .iter()
            .any(|c| c.reason == "NamespaceTerminating" && c.field == "metadata.namespace"),
        "{:?}",
        d.causes
    );
    // Updates of existing content are still allowed.
    cms.patch(
        "before",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"k": "v"}})),
    )
    .await
    .unwrap();

    // The namespace controller's last step: empty spec.finalizers via /finalize.
    cms.delete("before", &DeleteParams::default())
        .await
        .unwrap();
    let mut fin = ns.clone();
    fin.spec = Some(obj(json!({"finalizers": []})));
    let r = c
        .raw(
            "PUT",
            "/api/v1/namespaces/doomed/finalize",
            Some("application/json"),
            serde_json::to_vec(&fin).unwrap(),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        err(nss.get("doomed").await).code,
        404,
        "finalized namespace is removed"
    );
}

// ------------------------------------------------------------------------------------ restart

async fn restart_keeps_objects_and_resource_versions(c: &mut TestCluster) {
    let client = c.client().await;
    make_ns(&client, "keep").await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "keep");
    let mut before = Vec::new();
    for i in 0..5 {
        before.push(
            cms.create(
                &PostParams::default(),
                &cm(&format!("c{i}"), json!({"i": i.to_string()})),
            )
            .await
            .unwrap(),
        );
    }
    let deps: Api<Deployment> = Api::namespaced(client.clone(), "keep");
    let d = deps
        .create(&PostParams::default(), &deployment("web", 2))
        .await
        .unwrap();
    let list_rv = rv_num(
        &cms.list(&Default::default())
            .await
            .unwrap()
            .metadata
            .resource_version
            .unwrap(),
    );
    drop((cms, deps, client));

    c.restart().await.expect("restart on the same data dir");
    let client = c.client().await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "keep");
    for b in &before {
        let a = cms.get(b.metadata.name.as_deref().unwrap()).await.unwrap();
        assert_eq!(
            (a.metadata.uid.clone(), rv_of(&a), a.data.clone()),
            (b.metadata.uid.clone(), rv_of(b), b.data.clone())
        );
    }
    let deps: Api<Deployment> = Api::namespaced(client.clone(), "keep");
    let d2 = deps.get("web").await.unwrap();
    assert_eq!((rv_of(&d2), d2.metadata.generation), (rv_of(&d), Some(1)));
    let after = cms.list(&Default::default()).await.unwrap();
    assert!(rv_num(&after.metadata.resource_version.unwrap()) >= list_rv);
    // Writes continue with higher revisions; the bootstrap did not duplicate anything.
    let n = cms
        .create(&PostParams::default(), &cm("new", json!({})))
        .await
        .unwrap();
    assert!(rv_num(&rv_of(&n)) > list_rv);
    let svcs: Api<Service> = Api::namespaced(client.clone(), "default");
    assert_eq!(
        svcs.get("kubernetes")
            .await
            .unwrap()
            .spec
            .unwrap()
            .cluster_ip
            .as_deref(),
        Some("10.96.0.1")
    );
}

/// Every create the embedded store acknowledged survives a SIGKILL of the real binary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_store_keeps_every_acknowledged_create_across_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = ApiserverProcess::spawn(&data)
        .await
        .expect("start apiserver binary");
    let client = server.client().await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let acked = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let mut workers = Vec::new();
    for w in 0..6 {
        let (cms, acked) = (cms.clone(), acked.clone());
        workers.push(tokio::spawn(async move {
            for i in 0.. {
                let name = format!("w{w}-{i}");
                match cms
                    .create(
                        &PostParams::default(),
                        &cm(&name, json!({"i": i.to_string()})),
                    )
                    .await
                {
                    Ok(_) => acked.lock().unwrap().push(name),
                    Err(_) => return,
                }
            }
        }));
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while acked.lock().unwrap().len() < 150 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.kill9().await;
    for w in workers {
        let _ = tokio::time::timeout(Duration::from_secs(30), w)
            .await
            .expect("workers stop once the server is gone");
    }
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() >= 50,
        "only {} creates acknowledged before the kill",
        acked.len()
    );

    let server = ApiserverProcess::spawn(&data)
        .await
        .expect("restart apiserver binary on the same data dir");
    let client = server.client().await;
    let cms: Api<ConfigMap> = Api::namespaced(client, "default");
    let stored: BTreeSet<String> = names(&cms.list(&Default::default()).await.unwrap().items)
        .into_iter()
        .collect();
    let lost: Vec<&String> = acked.iter().filter(|n| !stored.contains(*n)).collect();
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged creates lost: {lost:?}",
        lost.len(),
        acked.len()
    );
    server.kill9().await;
}
