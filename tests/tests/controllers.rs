//! The controller-manager against a real API server (embedded store), both in-process, with
//! pod readiness set through the API (no kubelet yet): ReplicaSet and Deployment behaviour,
//! rollouts and rollbacks through the real kubectl, and leader handover.
//!
//! Scenarios share [`Env`]: a cluster plus one in-process controller-manager, and
//! [`Kubelet`], a stand-in that marks pods Running/Ready through `/status`.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{Event, Pod};
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::json;
use tests::{Backend, OutputExt, TestCluster};
use tokio_util::sync::CancellationToken;

// ---------------------------------------------------------------------------------------------
// Shared helpers (other controller scenarios build on these).

/// A running controller-manager started in-process.
pub struct ControllerManager {
    pub token: CancellationToken,
    pub running: Option<controller_manager::Running>,
}

impl ControllerManager {
    /// Start one against `c` with extra flags (e.g. `--controllers=replicaset`).
    pub async fn start(c: &TestCluster, extra: &[&str]) -> Self {
        let kubeconfig = format!("--kubeconfig={}", c.kubeconfig.display());
        let mut args = vec![
            "controller-manager",
            kubeconfig.as_str(),
            "--secure-port=0",
            "--bind-address=127.0.0.1",
        ];
        if !extra.iter().any(|a| a.starts_with("--leader-elect=")) {
            args.push("--leader-elect=false");
        }
        args.extend_from_slice(extra);
        let args = <controller_manager::Args as clap::Parser>::try_parse_from(args)
            .expect("valid controller-manager flags");
        let config =
            controller_manager::Config::try_from(args).expect("valid controller-manager config");
        let token = CancellationToken::new();
        let running = controller_manager::start(config, token.clone())
            .await
            .expect("start controller-manager");
        Self {
            token,
            running: Some(running),
        }
    }

    /// Stop gracefully and wait for it.
    pub async fn stop(mut self) {
        self.token.cancel();
        if let Some(r) = self.running.take() {
            let _ = tokio::time::timeout(Duration::from_secs(30), r.task).await;
        }
    }
}

impl Drop for ControllerManager {
    fn drop(&mut self) {
        self.token.cancel();
    }
}

/// A cluster with a controller-manager.
pub struct Env {
    pub cluster: TestCluster,
    pub cm: ControllerManager,
    pub client: Client,
}

impl Env {
    pub async fn start() -> Self {
        Self::start_with(&[]).await
    }

    pub async fn start_with(cm_flags: &[&str]) -> Self {
        let cluster = TestCluster::start(Backend::Embedded)
            .await
            .expect("start apiserver");
        let cm = ControllerManager::start(&cluster, cm_flags).await;
        let client = cluster.client().await;
        Self {
            cluster,
            cm,
            client,
        }
    }
}

/// Marks every pod Running and Ready (as a kubelet would) unless `skip` says otherwise.
pub struct Kubelet {
    token: CancellationToken,
}

impl Kubelet {
    pub fn start(client: Client, skip: impl Fn(&Pod) -> bool + Send + Sync + 'static) -> Self {
        let token = CancellationToken::new();
        let t = token.clone();
        tokio::spawn(async move {
            let api: Api<Pod> = Api::all(client.clone());
            while !t.is_cancelled() {
                if let Ok(list) = api.list(&ListParams::default()).await {
                    for p in list.items {
                        let ready = p
                            .status
                            .as_ref()
                            .and_then(|s| s.conditions.as_ref())
                            .is_some_and(|cs| {
                                cs.iter().any(|c| c.type_ == "Ready" && c.status == "True")
                            });
                        if ready || p.metadata.deletion_timestamp.is_some() || skip(&p) {
                            continue;
                        }
                        let _ = set_pod_ready(&client, &p).await;
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        Self { token }
    }
}

impl Drop for Kubelet {
    fn drop(&mut self) {
        self.token.cancel();
    }
}

/// Patch `pod`'s status to Running with Ready=True.
pub async fn set_pod_ready(client: &Client, pod: &Pod) -> kube::Result<Pod> {
    let api: Api<Pod> = Api::namespaced(
        client.clone(),
        pod.metadata.namespace.as_deref().unwrap_or("default"),
    );
    let now =
        k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(k8s_openapi::jiff::Timestamp::now());
    let patch = json!({"status": {"phase": "Running", "conditions": [
        {"type": "Ready", "status": "True", "lastTransitionTime": now},
        {"type": "ContainersReady", "status": "True", "lastTransitionTime": now},
    ]}});
    api.patch_status(
        pod.metadata.name.as_deref().unwrap_or(""),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await
}

/// Poll `f` every 100 ms until it returns `Some`, or panic with `what` after `within`.
pub async fn eventually<T, F, Fut>(within: Duration, what: &str, mut f: F) -> T
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

/// Active (not being deleted) pods in `ns` matching `selector`.
pub async fn active_pods(client: &Client, ns: &str, selector: &str) -> Vec<Pod> {
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    api.list(&ListParams::default().labels(selector))
        .await
        .expect("list pods")
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect()
}

fn replicaset(name: &str, replicas: i32, app: &str) -> ReplicaSet {
    serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "ReplicaSet",
        "metadata": {"name": name},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": app}},
                 "template": {"metadata": {"labels": {"app": app}}, "spec": {"containers": [{"name": "c", "image": "nginx"}]}}}
    }))
    .expect("replicaset")
}

fn deployment(name: &str, replicas: i32, image: &str, extra_spec: serde_json::Value) -> Deployment {
    let mut d = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [{"name": "c", "image": image}]}}}
    });
    if let (Some(spec), Some(extra)) = (d["spec"].as_object_mut(), extra_spec.as_object()) {
        spec.extend(extra.clone());
    }
    serde_json::from_value(d).expect("deployment")
}

async fn scale_rs(client: &Client, name: &str, replicas: i32) {
    let api: Api<ReplicaSet> = Api::namespaced(client.clone(), "default");
    api.patch(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"replicas": replicas}})),
    )
    .await
    .expect("scale replicaset");
}

async fn wait_pod_count(client: &Client, selector: &str, n: usize) -> Vec<Pod> {
    eventually(
        Duration::from_secs(30),
        &format!("{n} pods for {selector}"),
        || async move {
            let pods = active_pods(client, "default", selector).await;
            (pods.len() == n).then_some(pods)
        },
    )
    .await
}

async fn deployment_done(client: &Client, name: &str) -> Deployment {
    let api: Api<Deployment> = Api::namespaced(client.clone(), "default");
    eventually(
        Duration::from_secs(60),
        &format!("deployment {name} complete"),
        || {
            let api = api.clone();
            async move {
                let d = api.get(name).await.ok()?;
                let s = d.status.clone()?;
                let want = d.spec.replicas.unwrap_or(1);
                let done = s.observed_generation >= d.metadata.generation
                    && s.updated_replicas.unwrap_or(0) == want
                    && s.replicas.unwrap_or(0) == want
                    && s.available_replicas.unwrap_or(0) == want
                    && s.conditions.as_ref().is_some_and(|cs| {
                        cs.iter().any(|c| {
                            c.type_.as_deref() == Some("Progressing")
                                && c.reason.as_deref() == Some("NewReplicaSetAvailable")
                        })
                    });
                done.then_some(d)
            }
        },
    )
    .await
}

// ---------------------------------------------------------------------------------------------
// ReplicaSet.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicaset_scales_up_and_down_and_owns_its_pods() {
    let env = Env::start().await;
    let _kubelet = Kubelet::start(env.client.clone(), |_| false);
    let api: Api<ReplicaSet> = Api::namespaced(env.client.clone(), "default");
    let rs = api
        .create(&PostParams::default(), &replicaset("web", 3, "web"))
        .await
        .expect("create rs");
    let pods = wait_pod_count(&env.client, "app=web", 3).await;
    for p in &pods {
        let r = &p.metadata.owner_references.as_ref().expect("owner refs")[0];
        assert_eq!(
            (
                r.kind.as_str(),
                r.name.as_str(),
                r.controller,
                r.block_owner_deletion
            ),
            ("ReplicaSet", "web", Some(true), Some(true))
        );
        assert_eq!(Some(&r.uid), rs.metadata.uid.as_ref());
        assert!(p.metadata.name.as_deref().unwrap().starts_with("web-"));
    }
    eventually(Duration::from_secs(30), "rs status 3 ready", || {
        let api = api.clone();
        async move {
            let s = api.get("web").await.ok()?.status?;
            (s.replicas == 3
                && s.ready_replicas == Some(3)
                && s.available_replicas == Some(3)
                && s.fully_labeled_replicas == Some(3)
                && s.observed_generation == Some(1))
            .then_some(())
        }
    })
    .await;
    scale_rs(&env.client, "web", 1).await;
    wait_pod_count(&env.client, "app=web", 1).await;
    scale_rs(&env.client, "web", 4).await;
    wait_pod_count(&env.client, "app=web", 4).await;
    // Events as upstream records them.
    let events: Api<Event> = Api::namespaced(env.client.clone(), "default");
    let evs = eventually(
        Duration::from_secs(10),
        "SuccessfulCreate/SuccessfulDelete events",
        || {
            let events = events.clone();
            async move {
                let evs = events.list(&ListParams::default()).await.ok()?.items;
                let has = |r: &str| evs.iter().any(|e| e.reason.as_deref() == Some(r));
                (has("SuccessfulCreate") && has("SuccessfulDelete")).then_some(evs)
            }
        },
    )
    .await;
    let create = evs
        .iter()
        .find(|e| e.reason.as_deref() == Some("SuccessfulCreate"))
        .unwrap();
    assert!(
        create
            .message
            .as_deref()
            .unwrap()
            .starts_with("Created pod: web-"),
        "{create:?}"
    );
    assert_eq!(
        create.source.as_ref().and_then(|s| s.component.as_deref()),
        Some("replicaset-controller")
    );
    assert_eq!(create.involved_object.kind.as_deref(), Some("ReplicaSet"));
    // Exactly 4 even after things settle (no double creation).
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        active_pods(&env.client, "default", "app=web").await.len(),
        4
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_owned_pod_recreates_it() {
    let env = Env::start().await;
    let api: Api<ReplicaSet> = Api::namespaced(env.client.clone(), "default");
    api.create(&PostParams::default(), &replicaset("web", 2, "web"))
        .await
        .expect("create rs");
    let pods = wait_pod_count(&env.client, "app=web", 2).await;
    let victim = pods[0].metadata.name.clone().unwrap();
    let papi: Api<Pod> = Api::namespaced(env.client.clone(), "default");
    papi.delete(&victim, &Default::default())
        .await
        .expect("delete pod");
    let after = eventually(Duration::from_secs(30), "replacement pod", || async {
        let pods = active_pods(&env.client, "default", "app=web").await;
        (pods.len() == 2
            && pods
                .iter()
                .all(|p| p.metadata.name.as_deref() != Some(victim.as_str())))
        .then_some(pods)
    })
    .await;
    assert_eq!(after.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicaset_adopts_matching_orphans_and_releases_relabelled_pods() {
    let env = Env::start().await;
    let papi: Api<Pod> = Api::namespaced(env.client.clone(), "default");
    // If the controller's pod informer has not delivered the orphan yet when the ReplicaSet
    // first syncs, it creates two pods, adopts the orphan on the next sync and deletes one of
    // three pods created within the same second, ranked by UID alone (as upstream). The
    // deletion cost keeps that choice off the orphan, so the test checks adoption, not the race.
    let orphan: Pod = serde_json::from_value(json!({"metadata": {"name": "orphan", "labels": {"app": "web"}, "annotations": {"controller.kubernetes.io/pod-deletion-cost": "100"}}, "spec": {"containers": [{"name": "c", "image": "nginx"}]}})).unwrap();
    papi.create(&PostParams::default(), &orphan)
        .await
        .expect("create orphan");
    let api: Api<ReplicaSet> = Api::namespaced(env.client.clone(), "default");
    api.create(&PostParams::default(), &replicaset("web", 2, "web"))
        .await
        .expect("create rs");
    let pods = wait_pod_count(&env.client, "app=web", 2).await;
    let adopted = pods
        .iter()
        .find(|p| p.metadata.name.as_deref() == Some("orphan"))
        .expect("orphan kept and adopted");
    assert_eq!(
        adopted.metadata.owner_references.as_ref().unwrap()[0].name,
        "web"
    );
    // Relabel: the RS releases it and makes a replacement.
    papi.patch(
        "orphan",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"app": "other"}}})),
    )
    .await
    .unwrap();
    wait_pod_count(&env.client, "app=web", 2).await;
    let released = eventually(Duration::from_secs(10), "orphan released", || async {
        let p = papi.get("orphan").await.ok()?;
        p.metadata
            .owner_references
            .as_ref()
            .is_none_or(|r| r.is_empty())
            .then_some(p)
    })
    .await;
    assert_eq!(released.metadata.labels.unwrap()["app"], "other");
}

// ---------------------------------------------------------------------------------------------
// Deployment.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_update_stays_within_max_surge_and_max_unavailable() {
    let env = Env::start().await;
    let _kubelet = Kubelet::start(env.client.clone(), |_| false);
    let dapi: Api<Deployment> = Api::namespaced(env.client.clone(), "default");
    let strategy = json!({"strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 1}}});
    dapi.create(
        &PostParams::default(),
        &deployment("web", 4, "nginx:1", strategy),
    )
    .await
    .expect("create deployment");
    deployment_done(&env.client, "web").await;
    dapi.patch("web", &PatchParams::default(), &Patch::Merge(json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "nginx:2"}]}}}}))).await.unwrap();
    // Sample while the rollout runs.
    let rsapi: Api<ReplicaSet> = Api::namespaced(env.client.clone(), "default");
    let (mut min_ready, mut max_total, mut samples) = (i32::MAX, 0, 0);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let rss = rsapi.list(&ListParams::default()).await.unwrap().items;
        let total: i32 = rss.iter().map(|r| r.spec.replicas.unwrap_or(0)).sum();
        let pods = active_pods(&env.client, "default", "app=web").await;
        let ready = pods
            .iter()
            .filter(|p| {
                p.status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
            })
            .count() as i32;
        min_ready = min_ready.min(ready);
        max_total = max_total.max(total);
        samples += 1;
        let new_done = rss.iter().any(|r| {
            r.spec
                .template
                .as_ref()
                .and_then(|t| t.spec.as_ref())
                .is_some_and(|s| s.containers[0].image.as_deref() == Some("nginx:2"))
                && r.status.as_ref().and_then(|s| s.available_replicas) == Some(4)
        });
        let old_gone = rss
            .iter()
            .filter(|r| {
                r.spec
                    .template
                    .as_ref()
                    .and_then(|t| t.spec.as_ref())
                    .is_some_and(|s| s.containers[0].image.as_deref() == Some("nginx:1"))
            })
            .all(|r| r.spec.replicas == Some(0));
        if new_done && old_gone && pods.len() == 4 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "rollout did not finish: {rss:#?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(samples > 3);
    assert!(
        min_ready >= 3,
        "ready pods dropped to {min_ready} (< replicas - maxUnavailable = 3)"
    );
    assert!(
        max_total <= 5,
        "replica sets summed to {max_total} (> replicas + maxSurge = 5)"
    );
    let d = deployment_done(&env.client, "web").await;
    assert_eq!(
        d.metadata.annotations.unwrap()["deployment.kubernetes.io/revision"],
        "2"
    );
    // ScalingReplicaSet events in upstream's words.
    let events: Api<Event> = Api::namespaced(env.client.clone(), "default");
    let msgs: Vec<String> = events
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some("ScalingReplicaSet"))
        .filter_map(|e| e.message)
        .collect();
    assert!(
        msgs.iter()
            .any(|m| m.starts_with("Scaled up replica set web-") && m.ends_with(" from 0 to 4")),
        "{msgs:?}"
    );
    assert!(
        msgs.iter()
            .any(|m| m.starts_with("Scaled down replica set web-")),
        "{msgs:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn never_ready_rollout_reports_progress_deadline_exceeded() {
    let env = Env::start().await;
    let _kubelet = Kubelet::start(env.client.clone(), |p| {
        p.spec
            .as_ref()
            .is_some_and(|s| s.containers[0].image.as_deref() == Some("never-ready"))
    });
    let dapi: Api<Deployment> = Api::namespaced(env.client.clone(), "default");
    dapi.create(
        &PostParams::default(),
        &deployment(
            "web",
            2,
            "never-ready",
            json!({"progressDeadlineSeconds": 3}),
        ),
    )
    .await
    .expect("create deployment");
    let cond = eventually(
        Duration::from_secs(30),
        "ProgressDeadlineExceeded",
        || async {
            let d = dapi.get("web").await.ok()?;
            d.status?.conditions?.into_iter().find(|c| {
                c.type_.as_deref() == Some("Progressing")
                    && c.reason.as_deref() == Some("ProgressDeadlineExceeded")
            })
        },
    )
    .await;
    assert_eq!(cond.status.as_deref(), Some("False"));
    assert!(
        cond.message
            .as_deref()
            .unwrap()
            .ends_with("has timed out progressing."),
        "{cond:?}"
    );
    let d = dapi.get("web").await.unwrap();
    let avail = d
        .status
        .unwrap()
        .conditions
        .unwrap()
        .into_iter()
        .find(|c| c.type_.as_deref() == Some("Available"))
        .unwrap();
    assert_eq!(
        (avail.status.as_deref(), avail.reason.as_deref()),
        (Some("False"), Some("MinimumReplicasUnavailable"))
    );
    let err = env
        .cluster
        .kubectl(&["rollout", "status", "deployment/web", "--timeout=20s"])
        .await
        .fails();
    assert!(
        err.contains("deployment \"web\" exceeded its progress deadline"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_rollout_status_history_undo_and_scale() {
    let env = Env::start().await;
    let _kubelet = Kubelet::start(env.client.clone(), |_| false);
    let c = &env.cluster;
    c.kubectl(&[
        "create",
        "deployment",
        "web",
        "--image=nginx:1.25",
        "--replicas=2",
    ])
    .await
    .ok();
    let out = c
        .kubectl(&["rollout", "status", "deployment/web", "--timeout=60s"])
        .await
        .ok();
    assert!(
        out.trim_end()
            .ends_with("deployment \"web\" successfully rolled out"),
        "{out}"
    );
    c.kubectl(&[
        "annotate",
        "deployment/web",
        "kubernetes.io/change-cause=first",
    ])
    .await
    .ok();
    c.kubectl(&["set", "image", "deployment/web", "nginx=nginx:1.26"])
        .await
        .ok();
    c.kubectl(&[
        "annotate",
        "deployment/web",
        "kubernetes.io/change-cause=bump to 1.26",
        "--overwrite",
    ])
    .await
    .ok();
    let out = c
        .kubectl(&["rollout", "status", "deployment/web", "--timeout=60s"])
        .await
        .ok();
    assert!(out.contains("successfully rolled out"), "{out}");
    deployment_done(&env.client, "web").await;
    let hist = eventually(
        Duration::from_secs(20),
        "history with both change-causes",
        || async {
            let h = c
                .kubectl(&["rollout", "history", "deployment/web"])
                .await
                .ok();
            (h.contains("bump to 1.26")).then_some(h)
        },
    )
    .await;
    let rows: Vec<Vec<&str>> = hist
        .lines()
        .skip_while(|l| !l.starts_with("REVISION"))
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows.len(), 2, "{hist}");
    assert_eq!(rows[0][0], "1", "{hist}");
    assert_eq!(rows[1][0], "2", "{hist}");
    assert!(
        hist.starts_with("deployment.apps/web \n") || hist.starts_with("deployment.apps/web\n"),
        "{hist}"
    );
    let h2 = c
        .kubectl(&["rollout", "history", "deployment/web", "--revision=2"])
        .await
        .ok();
    assert!(h2.contains("Image:") && h2.contains("nginx:1.26"), "{h2}");

    // Undo: back to the 1.25 template, renumbered revision 3, history keeps the old number.
    let out = c.kubectl(&["rollout", "undo", "deployment/web"]).await.ok();
    assert_eq!(out.trim(), "deployment.apps/web rolled back");
    c.kubectl(&["rollout", "status", "deployment/web", "--timeout=60s"])
        .await
        .ok();
    let d = deployment_done(&env.client, "web").await;
    assert_eq!(
        d.spec.template.spec.as_ref().unwrap().containers[0]
            .image
            .as_deref(),
        Some("nginx:1.25")
    );
    let rsapi: Api<ReplicaSet> = Api::namespaced(env.client.clone(), "default");
    let rss = rsapi.list(&ListParams::default()).await.unwrap().items;
    assert_eq!(rss.len(), 2, "the old ReplicaSet is reused, not recreated");
    let back = rss
        .iter()
        .find(|r| {
            r.spec
                .template
                .as_ref()
                .unwrap()
                .spec
                .as_ref()
                .unwrap()
                .containers[0]
                .image
                .as_deref()
                == Some("nginx:1.25")
        })
        .unwrap();
    let ann: &BTreeMap<String, String> = back.metadata.annotations.as_ref().unwrap();
    assert_eq!(ann["deployment.kubernetes.io/revision"], "3");
    assert_eq!(ann["deployment.kubernetes.io/revision-history"], "1");
    assert_eq!(
        d.metadata.annotations.as_ref().unwrap()["deployment.kubernetes.io/revision"],
        "3"
    );
    let hist = c
        .kubectl(&["rollout", "history", "deployment/web"])
        .await
        .ok();
    let revs: Vec<&str> = hist
        .lines()
        .skip_while(|l| !l.starts_with("REVISION"))
        .skip(1)
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(revs, ["2", "3"], "{hist}");

    // Scale, pause/resume, restart.
    c.kubectl(&["scale", "deployment/web", "--replicas=3"])
        .await
        .ok();
    wait_pod_count(&env.client, "app=web", 3).await;
    assert_eq!(
        c.kubectl(&["rollout", "pause", "deployment/web"])
            .await
            .ok()
            .trim(),
        "deployment.apps/web paused"
    );
    c.kubectl(&["set", "image", "deployment/web", "nginx=nginx:1.27"])
        .await
        .ok();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        rsapi
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .len(),
        2,
        "paused: no new ReplicaSet"
    );
    let dapi: Api<Deployment> = Api::namespaced(env.client.clone(), "default");
    let paused = eventually(
        Duration::from_secs(10),
        "DeploymentPaused condition",
        || async {
            dapi.get("web")
                .await
                .ok()?
                .status?
                .conditions?
                .into_iter()
                .find(|c| c.reason.as_deref() == Some("DeploymentPaused"))
        },
    )
    .await;
    assert_eq!(paused.message.as_deref(), Some("Deployment is paused"));
    assert_eq!(
        c.kubectl(&["rollout", "resume", "deployment/web"])
            .await
            .ok()
            .trim(),
        "deployment.apps/web resumed"
    );
    c.kubectl(&["rollout", "status", "deployment/web", "--timeout=60s"])
        .await
        .ok();
    assert_eq!(
        c.kubectl(&["rollout", "restart", "deployment/web"])
            .await
            .ok()
            .trim(),
        "deployment.apps/web restarted"
    );
    c.kubectl(&["rollout", "status", "deployment/web", "--timeout=60s"])
        .await
        .ok();
    let d = deployment_done(&env.client, "web").await;
    assert_eq!(
        d.metadata.annotations.as_ref().unwrap()["deployment.kubernetes.io/revision"],
        "5"
    );
    let describe = c.kubectl(&["describe", "deployment", "web"]).await.ok();
    assert!(
        describe.contains("ScalingReplicaSet") && describe.contains("deployment-controller"),
        "{describe}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recreate_scales_old_to_zero_before_new() {
    let env = Env::start().await;
    let _kubelet = Kubelet::start(env.client.clone(), |_| false);
    let dapi: Api<Deployment> = Api::namespaced(env.client.clone(), "default");
    dapi.create(
        &PostParams::default(),
        &deployment(
            "web",
            3,
            "nginx:1",
            json!({"strategy": {"type": "Recreate"}}),
        ),
    )
    .await
    .unwrap();
    deployment_done(&env.client, "web").await;
    dapi.patch("web", &PatchParams::default(), &Patch::Merge(json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "nginx:2"}]}}}}))).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let pods = active_pods(&env.client, "default", "app=web").await;
        let images: std::collections::HashSet<_> = pods
            .iter()
            .filter_map(|p| p.spec.as_ref()?.containers[0].image.clone())
            .collect();
        assert!(
            images.len() <= 1,
            "old and new pods coexist under Recreate: {images:?}"
        );
        if pods.len() == 3 && images.contains("nginx:2") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "recreate did not finish"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    deployment_done(&env.client, "web").await;
}

// ---------------------------------------------------------------------------------------------
// Leader election.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_handover_loses_no_work() {
    let cluster = TestCluster::start(Backend::Embedded)
        .await
        .expect("start apiserver");
    let client = cluster.client().await;
    let le = [
        "--leader-elect=true",
        "--leader-elect-lease-duration=4s",
        "--leader-elect-renew-deadline=3s",
        "--leader-elect-retry-period=500ms",
    ];
    let a = ControllerManager::start(&cluster, &le).await;
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> =
        Api::namespaced(client.clone(), "kube-system");
    let holder_a = eventually(Duration::from_secs(20), "a leader", || async {
        leases
            .get("kube-controller-manager")
            .await
            .ok()?
            .spec?
            .holder_identity
    })
    .await;
    let b = ControllerManager::start(&cluster, &le).await;
    let api: Api<ReplicaSet> = Api::namespaced(client.clone(), "default");
    api.create(&PostParams::default(), &replicaset("web", 2, "web"))
        .await
        .unwrap();
    wait_pod_count(&client, "app=web", 2).await;
    // The standby did not act (still exactly one holder, two pods).
    assert_eq!(
        leases
            .get("kube-controller-manager")
            .await
            .unwrap()
            .spec
            .unwrap()
            .holder_identity
            .as_deref(),
        Some(holder_a.as_str())
    );
    a.stop().await;
    scale_rs(&client, "web", 5).await;
    let holder_b = eventually(Duration::from_secs(30), "b takes over", || async {
        let h = leases
            .get("kube-controller-manager")
            .await
            .ok()?
            .spec?
            .holder_identity?;
        (h != holder_a).then_some(h)
    })
    .await;
    assert!(!holder_b.is_empty());
    wait_pod_count(&client, "app=web", 5).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        active_pods(&client, "default", "app=web").await.len(),
        5,
        "no duplicates after handover"
    );
    let lease = leases
        .get("kube-controller-manager")
        .await
        .unwrap()
        .spec
        .unwrap();
    assert!(lease.lease_transitions.unwrap_or(0) >= 1);
    b.stop().await;
    let _ = Arc::new(());
}

// ---------------------------------------------------------------------------------------------
// Admin endpoint.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_and_metrics_are_served() {
    let env = Env::start().await;
    let addr = env.cm.running.as_ref().unwrap().addr;
    let api: Api<ReplicaSet> = Api::namespaced(env.client.clone(), "default");
    api.create(&PostParams::default(), &replicaset("web", 1, "web"))
        .await
        .unwrap();
    wait_pod_count(&env.client, "app=web", 1).await;
    let get = |path: &'static str| async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    };
    assert!(get("/healthz").await.ends_with("ok"));
    let m = get("/metrics").await;
    assert!(m.contains("workqueue_depth{name=\"replicaset\"}"), "{m}");
    assert!(
        m.contains("controller_reconcile_duration_seconds_count{controller=\"replicaset\"}"),
        "{m}"
    );
    assert!(
        m.contains("controller_reconcile_errors_total{controller=\"deployment\"}")
            || m.contains("controller_reconcile_errors_total{controller=\"replicaset\"}"),
        "{m}"
    );
}
