//! The garbage collector, namespace, service account, root CA, endpoints, EndpointSlice, node
//! lifecycle and node IPAM controllers against a real API server (embedded store), with an
//! in-process controller-manager. No kubelet exists: pod readiness, node status and node
//! Leases are written through the API as a kubelet would.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{
    ConfigMap, Endpoints, Event, Namespace, Node, Pod, Service, ServiceAccount,
};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams, PropagationPolicy};
use kube::{Api, Client};
use serde_json::json;
use tests::{Backend, TestCluster};
use tokio_util::sync::CancellationToken;

struct Env {
    cluster: TestCluster,
    client: Client,
    token: CancellationToken,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl Env {
    async fn start(extra: &[&str]) -> Self {
        let cluster = TestCluster::start(Backend::Embedded)
            .await
            .expect("start apiserver");
        let kubeconfig = format!("--kubeconfig={}", cluster.kubeconfig.display());
        let mut args = vec![
            "controller-manager",
            kubeconfig.as_str(),
            "--secure-port=0",
            "--bind-address=127.0.0.1",
            "--leader-elect=false",
        ];
        args.extend_from_slice(extra);
        let config = controller_manager::Config::try_from(
            <controller_manager::Args as clap::Parser>::parse_from(args),
        )
        .expect("valid flags");
        let token = CancellationToken::new();
        let running = controller_manager::start(config, token.clone())
            .await
            .expect("start controller-manager");
        let client = cluster.client().await;
        Self {
            cluster,
            client,
            token,
            task: Some(running.task),
        }
    }

    fn api<K>(&self, ns: &str) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    {
        Api::namespaced(self.client.clone(), ns)
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        self.token.cancel();
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

async fn eventually<T, F, Fut>(within: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {within:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn from_json<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> T {
    serde_json::from_value(v).expect("valid object")
}

fn replicaset(name: &str, replicas: i32) -> ReplicaSet {
    from_json(json!({
        "apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": name},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [{"name": "c", "image": "nginx"}]}}}
    }))
}

fn deployment(name: &str, replicas: i32) -> Deployment {
    from_json(json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [{"name": "c", "image": "nginx"}]}}}
    }))
}

async fn pods_of(env: &Env, ns: &str, app: &str) -> Vec<Pod> {
    env.api::<Pod>(ns)
        .list(&ListParams::default().labels(&format!("app={app}")))
        .await
        .expect("list pods")
        .items
}

async fn wait_pods(env: &Env, app: &str, n: usize) -> Vec<Pod> {
    eventually(
        Duration::from_secs(30),
        &format!("{n} pods of {app}"),
        || async move {
            let pods = pods_of(env, "default", app).await;
            (pods.len() == n).then_some(pods)
        },
    )
    .await
}

async fn gone<K>(api: &Api<K>, name: &str, what: &str)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    eventually(Duration::from_secs(30), what, || async move {
        api.get_opt(name)
            .await
            .expect("get")
            .is_none()
            .then_some(())
    })
    .await
}

// ---------------------------------------------------------------------------------------------
// Garbage collection.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn background_cascading_delete_removes_dependents() {
    let env = Env::start(&[]).await;
    let rs_api = env.api::<ReplicaSet>("default");
    rs_api
        .create(&PostParams::default(), &replicaset("bg", 3))
        .await
        .expect("create rs");
    wait_pods(&env, "bg", 3).await;
    rs_api
        .delete("bg", &DeleteParams::background())
        .await
        .expect("delete rs");
    gone(&rs_api, "bg", "replicaset gone").await;
    eventually(Duration::from_secs(30), "pods collected", || async {
        pods_of(&env, "default", "bg")
            .await
            .is_empty()
            .then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreground_delete_waits_for_dependents_then_removes_the_owner() {
    let env = Env::start(&[]).await;
    let rs_api = env.api::<ReplicaSet>("default");
    rs_api
        .create(&PostParams::default(), &replicaset("fg", 2))
        .await
        .expect("create rs");
    let pods = wait_pods(&env, "fg", 2).await;
    // A finalizer on one pod holds the owner in foreground deletion.
    let pod_api = env.api::<Pod>("default");
    let held = pods[0].metadata.name.clone().unwrap();
    pod_api
        .patch(
            &held,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": ["example.com/hold"]}})),
        )
        .await
        .expect("add finalizer");
    rs_api
        .delete("fg", &DeleteParams::foreground())
        .await
        .expect("delete rs");
    // The other pod goes; the owner stays with its finalizer while the held pod exists.
    eventually(
        Duration::from_secs(30),
        "unheld pod deleted and held one terminating",
        || async {
            let pods = pods_of(&env, "default", "fg").await;
            (pods.len() == 1 && pods[0].metadata.deletion_timestamp.is_some()).then_some(())
        },
    )
    .await;
    let rs = rs_api.get("fg").await.expect("owner still there");
    assert!(rs
        .metadata
        .finalizers
        .unwrap_or_default()
        .contains(&"foregroundDeletion".to_string()));
    assert!(rs.metadata.deletion_timestamp.is_some());
    pod_api
        .patch(
            &held,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": null}})),
        )
        .await
        .expect("release pod");
    gone(&rs_api, "fg", "owner removed after its dependents").await;
    assert!(pods_of(&env, "default", "fg").await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orphan_delete_keeps_dependents_without_owner_references() {
    let env = Env::start(&[]).await;
    let rs_api = env.api::<ReplicaSet>("default");
    rs_api
        .create(&PostParams::default(), &replicaset("orph", 2))
        .await
        .expect("create rs");
    wait_pods(&env, "orph", 2).await;
    let dp = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Orphan),
        ..Default::default()
    };
    rs_api.delete("orph", &dp).await.expect("delete rs");
    gone(&rs_api, "orph", "owner removed").await;
    let pods = eventually(Duration::from_secs(30), "orphaned pods", || async {
        let pods = pods_of(&env, "default", "orph").await;
        pods.iter()
            .all(|p| {
                p.metadata
                    .owner_references
                    .as_ref()
                    .is_none_or(Vec::is_empty)
            })
            .then_some(pods)
    })
    .await;
    assert_eq!(pods.len(), 2);
    assert!(pods.iter().all(|p| p.metadata.deletion_timestamp.is_none()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_delete_deployment_cascade_orphan_leaves_the_replicaset() {
    let env = Env::start(&[]).await;
    let d_api = env.api::<Deployment>("default");
    d_api
        .create(&PostParams::default(), &deployment("keep", 1))
        .await
        .expect("create deployment");
    let rs_api = env.api::<ReplicaSet>("default");
    eventually(
        Duration::from_secs(30),
        "replicaset of the deployment",
        || async {
            let l = rs_api
                .list(&ListParams::default().labels("app=keep"))
                .await
                .ok()?;
            (!l.items.is_empty()).then_some(())
        },
    )
    .await;
    let out = env
        .cluster
        .kubectl(&["delete", "deployment", "keep", "--cascade=orphan"])
        .await;
    assert!(
        out.status.success(),
        "kubectl delete: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    gone(&d_api, "keep", "deployment gone").await;
    let rs = eventually(Duration::from_secs(30), "replicaset orphaned", || async {
        let l = rs_api
            .list(&ListParams::default().labels("app=keep"))
            .await
            .ok()?;
        let rs = l.items.into_iter().next()?;
        rs.metadata
            .owner_references
            .as_ref()
            .is_none_or(Vec::is_empty)
            .then_some(rs)
    })
    .await;
    assert!(rs.metadata.deletion_timestamp.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dangling_owner_references_are_removed_or_collected() {
    let env = Env::start(&["--controllers=garbagecollector"]).await;
    let cm_api = env.api::<ConfigMap>("default");
    let owner = cm_api
        .create(
            &PostParams::default(),
            &from_json(json!({"metadata": {"name": "owner"}})),
        )
        .await
        .expect("owner");
    let live = json!({"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner.metadata.uid});
    let ghost = json!({"apiVersion": "v1", "kind": "ConfigMap", "name": "ghost", "uid": "00000000-0000-0000-0000-000000000001"});
    cm_api
        .create(
            &PostParams::default(),
            &from_json(json!({"metadata": {"name": "half", "ownerReferences": [live, ghost]}})),
        )
        .await
        .expect("half");
    cm_api
        .create(
            &PostParams::default(),
            &from_json(
                json!({"metadata": {"name": "orphan-of-ghost", "ownerReferences": [ghost]}}),
            ),
        )
        .await
        .expect("dangling");
    gone(
        &cm_api,
        "orphan-of-ghost",
        "object whose only owner never existed",
    )
    .await;
    eventually(
        Duration::from_secs(30),
        "dangling reference removed",
        || async {
            let cm = cm_api.get("half").await.ok()?;
            let refs = cm.metadata.owner_references.unwrap_or_default();
            (refs.len() == 1 && refs[0].name == "owner").then_some(())
        },
    )
    .await;
}

// ---------------------------------------------------------------------------------------------
// Namespaces, service accounts, root CA.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_namespace_gets_default_service_account_and_root_ca() {
    let env = Env::start(&[]).await;
    let ns_api: Api<Namespace> = Api::all(env.client.clone());
    ns_api
        .create(
            &PostParams::default(),
            &from_json(json!({"metadata": {"name": "team-a"}})),
        )
        .await
        .expect("namespace");
    let sa_api = env.api::<ServiceAccount>("team-a");
    eventually(
        Duration::from_secs(30),
        "default service account",
        || async { sa_api.get_opt("default").await.ok().flatten() },
    )
    .await;
    let cm_api = env.api::<ConfigMap>("team-a");
    let cm = eventually(Duration::from_secs(30), "kube-root-ca.crt", || async {
        cm_api.get_opt("kube-root-ca.crt").await.ok().flatten()
    })
    .await;
    let ca = cm
        .data
        .unwrap_or_default()
        .remove("ca.crt")
        .unwrap_or_default();
    assert!(ca.contains("BEGIN CERTIFICATE"), "{ca}");
    // Deleted or edited, both come back.
    sa_api
        .delete("default", &DeleteParams::default())
        .await
        .expect("delete sa");
    cm_api
        .patch(
            "kube-root-ca.crt",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"ca.crt": "tampered"}})),
        )
        .await
        .expect("tamper");
    eventually(
        Duration::from_secs(30),
        "default service account recreated",
        || async { sa_api.get_opt("default").await.ok().flatten() },
    )
    .await;
    eventually(Duration::from_secs(30), "root CA restored", || async {
        let cm = cm_api.get("kube-root-ca.crt").await.ok()?;
        (cm.data?.get("ca.crt")? == &ca).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespace_deletion_empties_it_and_kubectl_delete_namespace_returns() {
    let env = Env::start(&[]).await;
    let ns_api: Api<Namespace> = Api::all(env.client.clone());
    ns_api
        .create(
            &PostParams::default(),
            &from_json(json!({"metadata": {"name": "doomed"}})),
        )
        .await
        .expect("namespace");
    env.api::<ReplicaSet>("doomed")
        .create(&PostParams::default(), &replicaset("web", 2))
        .await
        .expect("rs");
    env.api::<ConfigMap>("doomed")
        .create(
            &PostParams::default(),
            &from_json(json!({"metadata": {"name": "cfg"}})),
        )
        .await
        .expect("cm");
    env.api::<Service>("doomed")
        .create(&PostParams::default(), &from_json(json!({"metadata": {"name": "svc"}, "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}})))
        .await
        .expect("svc");
    eventually(Duration::from_secs(30), "pods in the namespace", || async {
        (pods_of(&env, "doomed", "web").await.len() == 2).then_some(())
    })
    .await;
    let out = env
        .cluster
        .kubectl(&["delete", "namespace", "doomed"])
        .await;
    assert!(
        out.status.success(),
        "kubectl delete namespace: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        ns_api.get_opt("doomed").await.expect("get").is_none(),
        "kubectl returned before the namespace was gone"
    );
    assert!(env
        .api::<Pod>("doomed")
        .list(&ListParams::default())
        .await
        .expect("list")
        .items
        .is_empty());
    assert!(env
        .api::<ConfigMap>("doomed")
        .list(&ListParams::default())
        .await
        .expect("list")
        .items
        .is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminating_namespace_reports_remaining_content_in_conditions() {
    let env = Env::start(&["--controllers=namespace"]).await;
    let ns_api: Api<Namespace> = Api::all(env.client.clone());
    ns_api
        .create(
            &PostParams::default(),
            &from_json(json!({"metadata": {"name": "stuck"}})),
        )
        .await
        .expect("namespace");
    let cm_api = env.api::<ConfigMap>("stuck");
    cm_api
        .create(
            &PostParams::default(),
            &from_json(json!({"metadata": {"name": "held", "finalizers": ["example.com/hold"]}})),
        )
        .await
        .expect("cm");
    ns_api
        .delete("stuck", &DeleteParams::default())
        .await
        .expect("delete ns");
    let ns = eventually(
        Duration::from_secs(30),
        "content-remaining condition",
        || async {
            let ns = ns_api.get("stuck").await.ok()?;
            let conds = ns.status.as_ref()?.conditions.clone()?;
            conds
                .iter()
                .any(|c| c.type_ == "NamespaceFinalizersRemaining" && c.status == "True")
                .then_some(ns)
        },
    )
    .await;
    let conds = ns.status.unwrap().conditions.unwrap();
    let remaining = conds
        .iter()
        .find(|c| c.type_ == "NamespaceContentRemaining")
        .expect("content condition");
    assert_eq!(remaining.reason.as_deref(), Some("SomeResourcesRemain"));
    assert!(
        remaining
            .message
            .as_deref()
            .unwrap_or("")
            .contains("configmaps has 1 resource instances"),
        "{remaining:?}"
    );
    cm_api
        .patch(
            "held",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": null}})),
        )
        .await
        .expect("release");
    gone(&ns_api, "stuck", "namespace finalized").await;
}

// ---------------------------------------------------------------------------------------------
// Endpoints and EndpointSlices.

async fn set_ready(env: &Env, ns: &str, name: &str, ready: bool, ip: &str) {
    let status = if ready { "True" } else { "False" };
    let patch = json!({"status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}], "conditions": [{"type": "Ready", "status": status}]}});
    env.api::<Pod>(ns)
        .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("patch pod status");
}

fn addresses(ep: &Endpoints) -> (Vec<String>, Vec<String>) {
    let mut ready: Vec<String> = ep
        .subsets
        .iter()
        .flatten()
        .flat_map(|s| s.addresses.iter().flatten().map(|a| a.ip.clone()))
        .collect();
    let mut not_ready: Vec<String> = ep
        .subsets
        .iter()
        .flatten()
        .flat_map(|s| s.not_ready_addresses.iter().flatten().map(|a| a.ip.clone()))
        .collect();
    ready.sort();
    not_ready.sort();
    (ready, not_ready)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_and_slices_follow_pod_readiness() {
    let env = Env::start(&[]).await;
    let pod_api = env.api::<Pod>("default");
    for (name, port) in [("web-1", 8080), ("web-2", 9090)] {
        let pod = json!({"metadata": {"name": name, "labels": {"app": "web"}},
            "spec": {"containers": [{"name": "c", "image": "nginx", "ports": [{"name": "http", "containerPort": port}]}]}});
        pod_api
            .create(&PostParams::default(), &from_json(pod))
            .await
            .expect("pod");
    }
    env.api::<Service>("default")
        .create(&PostParams::default(), &from_json(json!({"metadata": {"name": "web"}, "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}})))
        .await
        .expect("svc");
    set_ready(&env, "default", "web-1", true, "10.244.0.11").await;
    set_ready(&env, "default", "web-2", false, "10.244.0.12").await;
    let ep_api = env.api::<Endpoints>("default");
    let ep = eventually(
        Duration::from_secs(30),
        "endpoints with one ready, one not",
        || async {
            let ep = ep_api.get("web").await.ok()?;
            (addresses(&ep) == (vec!["10.244.0.11".into()], vec!["10.244.0.12".into()]))
                .then_some(ep)
        },
    )
    .await;
    // Named target ports resolved per pod.
    let mut ports: Vec<i32> = ep
        .subsets
        .iter()
        .flatten()
        .flat_map(|s| s.ports.iter().flatten().map(|p| p.port))
        .collect();
    ports.sort();
    assert_eq!(ports, [8080, 9090]);
    let target = ep
        .subsets
        .iter()
        .flatten()
        .flat_map(|s| s.addresses.iter().flatten())
        .next()
        .and_then(|a| a.target_ref.clone())
        .expect("targetRef");
    assert_eq!(
        (target.kind.as_deref(), target.name.as_deref()),
        (Some("Pod"), Some("web-1"))
    );

    let slice_api = env.api::<EndpointSlice>("default");
    let slice_ready = || async {
        let l = slice_api
            .list(&ListParams::default().labels("kubernetes.io/service-name=web"))
            .await
            .ok()?;
        let mut out: Vec<(String, bool)> = Vec::new();
        for s in &l.items {
            let labels = s.metadata.labels.clone().unwrap_or_default();
            assert_eq!(
                labels
                    .get("endpointslice.kubernetes.io/managed-by")
                    .map(String::as_str),
                Some("endpointslice-controller.k8s.io")
            );
            for e in s.endpoints.iter().flatten() {
                out.push((e.addresses[0].clone(), e.conditions.as_ref()?.ready?));
            }
        }
        out.sort();
        Some(out)
    };
    eventually(Duration::from_secs(30), "slices with readiness", || async {
        (slice_ready().await? == [("10.244.0.11".into(), true), ("10.244.0.12".into(), false)])
            .then_some(())
    })
    .await;

    // Readiness flips: both follow.
    set_ready(&env, "default", "web-1", false, "10.244.0.11").await;
    set_ready(&env, "default", "web-2", true, "10.244.0.12").await;
    eventually(
        Duration::from_secs(30),
        "endpoints follow readiness",
        || async {
            let ep = ep_api.get("web").await.ok()?;
            (addresses(&ep) == (vec!["10.244.0.12".into()], vec!["10.244.0.11".into()]))
                .then_some(())
        },
    )
    .await;
    eventually(
        Duration::from_secs(30),
        "slices follow readiness",
        || async {
            (slice_ready().await? == [("10.244.0.11".into(), false), ("10.244.0.12".into(), true)])
                .then_some(())
        },
    )
    .await;

    // A deleted pod leaves both.
    pod_api
        .delete("web-2", &DeleteParams::default())
        .await
        .expect("delete pod");
    eventually(
        Duration::from_secs(30),
        "endpoints without the deleted pod",
        || async {
            let ep = ep_api.get("web").await.ok()?;
            (addresses(&ep) == (vec![], vec!["10.244.0.11".into()])).then_some(())
        },
    )
    .await;
    eventually(
        Duration::from_secs(30),
        "slices without the deleted pod",
        || async { (slice_ready().await? == [("10.244.0.11".into(), false)]).then_some(()) },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn selectorless_service_keeps_hand_written_endpoints_mirrored_to_slices() {
    let env = Env::start(&[]).await;
    env.api::<Service>("default")
        .create(&PostParams::default(), &from_json(json!({"metadata": {"name": "ext"}, "spec": {"ports": [{"name": "db", "port": 5432}]}})))
        .await
        .expect("svc");
    let ep_api = env.api::<Endpoints>("default");
    ep_api
        .create(&PostParams::default(), &from_json(json!({"metadata": {"name": "ext"}, "subsets": [{"addresses": [{"ip": "192.168.10.1"}], "ports": [{"name": "db", "port": 5432}]}]})))
        .await
        .expect("endpoints");
    let slice_api = env.api::<EndpointSlice>("default");
    let slice = eventually(Duration::from_secs(30), "mirrored slice", || async {
        let l = slice_api
            .list(&ListParams::default().labels("kubernetes.io/service-name=ext"))
            .await
            .ok()?;
        l.items
            .into_iter()
            .find(|s| s.endpoints.as_ref().is_some_and(|e| !e.is_empty()))
    })
    .await;
    assert_eq!(
        slice
            .metadata
            .labels
            .unwrap()
            .get("endpointslice.kubernetes.io/managed-by")
            .map(String::as_str),
        Some("endpointslicemirroring-controller.k8s.io")
    );
    assert_eq!(slice.endpoints.unwrap()[0].addresses, ["192.168.10.1"]);
    assert_eq!(slice.ports.unwrap()[0].port, Some(5432));
    // The endpoints controller never touches them.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let ep = ep_api.get("ext").await.expect("endpoints kept");
    assert_eq!(addresses(&ep).0, ["192.168.10.1"]);
}

// ---------------------------------------------------------------------------------------------
// Nodes.

fn node(name: &str) -> Node {
    from_json(json!({"metadata": {"name": name}}))
}

async fn renew_lease(env: &Env, node: &str) {
    let api = env.api::<Lease>("kube-node-lease");
    let now = k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(
        k8s_openapi::jiff::Timestamp::now(),
    );
    let lease = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": node, "namespace": "kube-node-lease"},
        "spec": {"holderIdentity": node, "leaseDurationSeconds": 40, "renewTime": now}});
    api.patch(
        node,
        &PatchParams::apply("test-kubelet").force(),
        &Patch::Apply(&lease),
    )
    .await
    .expect("renew lease");
}

async fn set_node_ready(env: &Env, name: &str) {
    let now =
        k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(k8s_openapi::jiff::Timestamp::now());
    let patch = json!({"status": {"conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady", "lastHeartbeatTime": now, "lastTransitionTime": now}]}});
    let api: Api<Node> = Api::all(env.client.clone());
    api.patch_status(name, &PatchParams::default(), &Patch::Strategic(&patch))
        .await
        .expect("node status");
}

fn taint_keys(n: &Node) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = n
        .spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default()
        .into_iter()
        .map(|t| (t.key, t.effect))
        .collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_lease_expiry_taints_node_and_evicts_pods_after_toleration() {
    let env = Env::start(&[
        "--node-monitor-grace-period=2s",
        "--node-monitor-period=500ms",
    ])
    .await;
    let nodes: Api<Node> = Api::all(env.client.clone());
    nodes
        .create(&PostParams::default(), &node("n1"))
        .await
        .expect("node");
    set_node_ready(&env, "n1").await;
    renew_lease(&env, "n1").await;
    let pod_api = env.api::<Pod>("default");
    let tolerate = |secs: i64| {
        json!([{"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": secs},
               {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": secs}])
    };
    for (name, secs) in [("short", 1), ("long", 3600)] {
        let pod = json!({"metadata": {"name": name}, "spec": {"nodeName": "n1", "tolerations": tolerate(secs), "containers": [{"name": "c", "image": "nginx"}]}});
        pod_api
            .create(&PostParams::default(), &from_json(pod))
            .await
            .expect("pod");
        set_ready(
            &env,
            "default",
            name,
            true,
            if secs == 1 {
                "10.244.1.2"
            } else {
                "10.244.1.3"
            },
        )
        .await;
    }
    // Healthy while the lease is renewed.
    for _ in 0..3 {
        renew_lease(&env, "n1").await;
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    assert!(taint_keys(&nodes.get("n1").await.expect("node")).is_empty());
    // The kubelet stops: Ready=Unknown, unreachable taints, pods not ready, then eviction.
    let n = eventually(Duration::from_secs(30), "node unreachable", || async {
        let n = nodes.get("n1").await.ok()?;
        let ready = n
            .status
            .as_ref()?
            .conditions
            .as_ref()?
            .iter()
            .find(|c| c.type_ == "Ready")?
            .status
            .clone();
        (ready == "Unknown" && !taint_keys(&n).is_empty()).then_some(n)
    })
    .await;
    assert_eq!(
        taint_keys(&n),
        [
            (
                "node.kubernetes.io/unreachable".to_string(),
                "NoExecute".to_string()
            ),
            (
                "node.kubernetes.io/unreachable".to_string(),
                "NoSchedule".to_string()
            )
        ]
    );
    eventually(
        Duration::from_secs(30),
        "short-toleration pod evicted",
        || async {
            let p = pod_api.get_opt("short").await.ok()?;
            p.is_none_or(|p| p.metadata.deletion_timestamp.is_some())
                .then_some(())
        },
    )
    .await;
    // Upstream's events: the node registered and went not ready; the pod was evicted.
    let events: Api<Event> = env.api("default");
    eventually(
        Duration::from_secs(30),
        "node and eviction events",
        || async {
            let reasons: Vec<(String, String)> = events
                .list(&ListParams::default())
                .await
                .ok()?
                .items
                .into_iter()
                .map(|e| {
                    (
                        e.involved_object.name.unwrap_or_default(),
                        e.reason.unwrap_or_default(),
                    )
                })
                .collect();
            let has = |n: &str, r: &str| reasons.iter().any(|(a, b)| a == n && b == r);
            (has("n1", "RegisteredNode")
                && has("n1", "NodeNotReady")
                && has("short", "TaintManagerEviction"))
            .then_some(())
        },
    )
    .await;
    let long = pod_api
        .get("long")
        .await
        .expect("long-toleration pod stays");
    assert!(long.metadata.deletion_timestamp.is_none());
    let ready = long
        .status
        .unwrap()
        .conditions
        .unwrap()
        .into_iter()
        .find(|c| c.type_ == "Ready")
        .unwrap();
    assert_eq!(ready.status, "False");
    // Recovery removes the taints.
    renew_lease(&env, "n1").await;
    set_node_ready(&env, "n1").await;
    eventually(Duration::from_secs(30), "taints removed", || async {
        taint_keys(&nodes.get("n1").await.ok()?)
            .is_empty()
            .then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_get_distinct_pod_cidrs() {
    let env = Env::start(&["--cluster-cidr=10.200.0.0/16", "--allocate-node-cidrs=true"]).await;
    let nodes: Api<Node> = Api::all(env.client.clone());
    for n in ["a", "b", "c"] {
        nodes
            .create(&PostParams::default(), &node(n))
            .await
            .expect("node");
    }
    let cidrs = eventually(Duration::from_secs(30), "pod CIDRs", || async {
        let mut out = BTreeMap::new();
        for n in nodes.list(&ListParams::default()).await.ok()?.items {
            let spec = n.spec?;
            let cidr = spec.pod_cidr?;
            assert_eq!(spec.pod_cidrs.as_deref(), Some(&[cidr.clone()][..]));
            out.insert(n.metadata.name?, cidr);
        }
        (out.len() == 3).then_some(out)
    })
    .await;
    let mut values: Vec<&String> = cidrs.values().collect();
    values.sort();
    values.dedup();
    assert_eq!(values.len(), 3, "{cidrs:?}");
    assert!(
        values
            .iter()
            .all(|c| c.starts_with("10.200.") && c.ends_with(".0/24")),
        "{cidrs:?}"
    );
}
