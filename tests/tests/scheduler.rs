//! The scheduler against a real in-process API server (embedded store): Node objects are
//! created through the API (no kubelet) with capacity, allocatable and a Ready condition set
//! through /status, and the scheduler runs in-process through `scheduler::run`.

use k8s_openapi::api::core::v1::{Event, Node, Pod};
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::{json, Value};
use std::time::Duration;
use tests::{Backend, OutputExt, TestCluster};
use tokio_util::sync::CancellationToken;

/// A cluster with a scheduler running against it; the scheduler stops on drop.
struct Env {
    cluster: TestCluster,
    client: Client,
    stop: CancellationToken,
}

impl Drop for Env {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn env() -> Env {
    component_base::logging::init("warn");
    let cluster = TestCluster::start(Backend::Embedded)
        .await
        .expect("apiserver starts");
    let client = cluster.client().await;
    let args = <scheduler::Args as clap::Parser>::parse_from([
        "scheduler",
        "--bind-address",
        "127.0.0.1:0",
        "--kubeconfig",
        cluster.kubeconfig.to_str().unwrap(),
    ]);
    let config = scheduler::Config::try_from(args).expect("valid flags");
    let stop = CancellationToken::new();
    let (c, s) = (client.clone(), stop.clone());
    tokio::spawn(async move {
        if let Err(e) = scheduler::run_with_client(config, c, s).await {
            panic!("scheduler stopped: {e}");
        }
    });
    Env {
        cluster,
        client,
        stop,
    }
}

impl Env {
    /// Create a Ready node with `allocatable` (also its capacity), labels and optional spec.
    async fn node(&self, name: &str, labels: Value, allocatable: Value, spec: Value) {
        let nodes: Api<Node> = Api::all(self.client.clone());
        let mut labels = labels;
        labels["kubernetes.io/hostname"] = json!(name);
        let n: Node = serde_json::from_value(
            json!({"metadata": {"name": name, "labels": labels}, "spec": spec}),
        )
        .unwrap();
        nodes
            .create(&PostParams::default(), &n)
            .await
            .expect("create node");
        let status = json!({"status": {"capacity": allocatable, "allocatable": allocatable, "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady", "lastHeartbeatTime": "2026-01-01T00:00:00Z", "lastTransitionTime": "2026-01-01T00:00:00Z"}]}});
        nodes
            .patch_status(name, &PatchParams::default(), &Patch::Merge(status))
            .await
            .expect("node status");
    }

    async fn pod(&self, v: Value) -> String {
        let mut v = v;
        let spec = v
            .as_object_mut()
            .unwrap()
            .entry("spec")
            .or_insert(json!({}));
        spec.as_object_mut()
            .unwrap()
            .entry("containers")
            .or_insert(json!([{"name": "c", "image": "pause"}]));
        spec.as_object_mut()
            .unwrap()
            .entry("terminationGracePeriodSeconds")
            .or_insert(json!(0));
        let pod: Pod = serde_json::from_value(v).unwrap();
        let name = pod.metadata.name.clone().unwrap();
        self.pods()
            .create(&PostParams::default(), &pod)
            .await
            .expect("create pod");
        name
    }

    fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), "default")
    }

    /// The node the pod is bound to, waiting up to 20 s.
    async fn bound(&self, name: &str) -> String {
        for _ in 0..400 {
            if let Some(n) = self
                .pods()
                .get(name)
                .await
                .expect("get pod")
                .spec
                .and_then(|s| s.node_name)
            {
                return n;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "pod {name} not bound within 20s; events: {:?}",
            self.events(name).await
        );
    }

    /// The PodScheduled=False message once the scheduler gave up on the pod.
    async fn unschedulable(&self, name: &str) -> String {
        for _ in 0..400 {
            let pod = self.pods().get(name).await.expect("get pod");
            assert!(
                pod.spec.as_ref().unwrap().node_name.is_none(),
                "pod {name} was bound"
            );
            let cond = pod
                .status
                .and_then(|s| s.conditions)
                .unwrap_or_default()
                .into_iter()
                .find(|c| c.type_ == "PodScheduled");
            if let Some(c) = cond.filter(|c| c.status == "False") {
                assert_eq!(c.reason.as_deref(), Some("Unschedulable"));
                return c.message.unwrap_or_default();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("pod {name} not marked unschedulable within 20s");
    }

    async fn events(&self, pod: &str) -> Vec<(String, String)> {
        let api: Api<Event> = Api::namespaced(self.client.clone(), "default");
        let lp = ListParams::default().fields(&format!("involvedObject.name={pod}"));
        api.list(&lp)
            .await
            .expect("list events")
            .items
            .into_iter()
            .map(|e| (e.reason.unwrap_or_default(), e.message.unwrap_or_default()))
            .collect()
    }

    async fn wait_event(&self, pod: &str, reason: &str) -> String {
        for _ in 0..400 {
            if let Some((_, m)) = self
                .events(pod)
                .await
                .into_iter()
                .rev()
                .find(|(r, _)| r == reason)
            {
                return m;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("no {reason} event for {pod}: {:?}", self.events(pod).await);
    }
}

fn cpu(n: &str) -> Value {
    json!({"cpu": n, "memory": "8Gi", "pods": "110"})
}

fn requests(name: &str, req: Value) -> Value {
    json!({"metadata": {"name": name}, "spec": {"containers": [{"name": "c", "image": "pause", "resources": {"requests": req}}]}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_bind_to_nodes_with_room_and_get_a_scheduled_event() {
    let e = env().await;
    e.node("small", json!({}), cpu("1"), json!({})).await;
    e.node(
        "big",
        json!({}),
        json!({"cpu": "4", "memory": "8Gi", "pods": "110", "example.com/gpu": "1"}),
        json!({}),
    )
    .await;
    e.pod(requests("needs-2cpu", json!({"cpu": "2"}))).await;
    assert_eq!(e.bound("needs-2cpu").await, "big");
    assert_eq!(
        e.wait_event("needs-2cpu", "Scheduled").await,
        "Successfully assigned default/needs-2cpu to big"
    );
    let gpu = |name: &str| json!({"metadata": {"name": name}, "spec": {"containers": [{"name": "c", "image": "pause", "resources": {"requests": {"example.com/gpu": "1"}, "limits": {"example.com/gpu": "1"}}}]}});
    e.pod(gpu("gpu")).await;
    assert_eq!(e.bound("gpu").await, "big");
    // The only GPU is taken; init containers count at their maximum.
    e.pod(gpu("gpu2")).await;
    assert!(e
        .unschedulable("gpu2")
        .await
        .contains("2 Insufficient example.com/gpu"));
    e.pod(json!({"metadata": {"name": "init"}, "spec": {"initContainers": [{"name": "i", "image": "pause", "resources": {"requests": {"cpu": "3"}}}]}})).await;
    assert_eq!(e.unschedulable("init").await, "0/2 nodes are available: 2 Insufficient cpu. preemption: 0/2 nodes are available: 2 No preemption victims found for incoming pod.");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_scheduling_summarizes_why_each_node_was_rejected() {
    let e = env().await;
    e.node(
        "tainted",
        json!({}),
        cpu("4"),
        json!({"taints": [{"key": "k", "value": "v", "effect": "NoSchedule"}]}),
    )
    .await;
    e.node("a", json!({}), cpu("1"), json!({})).await;
    e.node("b", json!({}), cpu("1"), json!({})).await;
    e.pod(requests("big", json!({"cpu": "2"}))).await;
    let want = "0/3 nodes are available: 1 node(s) had untolerated taint {k: v}, 2 Insufficient cpu. preemption: 0/3 nodes are available: 1 Preemption is not helpful for scheduling, 2 No preemption victims found for incoming pod.";
    assert_eq!(e.unschedulable("big").await, want);
    assert_eq!(e.wait_event("big", "FailedScheduling").await, want);
    // A node that fits arrives: the pending pod is retried because of the event, not a poll.
    e.node("c", json!({}), cpu("4"), json!({})).await;
    assert_eq!(e.bound("big").await, "c");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_filters_cordon_taints_affinity_and_ports() {
    let e = env().await;
    e.node(
        "infra",
        json!({"zone": "a", "disk": "ssd"}),
        cpu("2"),
        json!({"taints": [{"key": "dedicated", "value": "infra", "effect": "NoSchedule"}]}),
    )
    .await;
    e.node("plain", json!({"zone": "a"}), cpu("2"), json!({}))
        .await;
    e.node("zoneb", json!({"zone": "b"}), cpu("2"), json!({}))
        .await;
    e.node(
        "cordoned",
        json!({"zone": "b", "disk": "ssd"}),
        cpu("2"),
        json!({"unschedulable": true}),
    )
    .await;

    e.pod(json!({"metadata": {"name": "ssd"}, "spec": {"nodeSelector": {"disk": "ssd"}}}))
        .await;
    assert_eq!(
        e.unschedulable("ssd").await,
        "0/4 nodes are available: 1 node(s) had untolerated taint {dedicated: infra}, 1 node(s) were unschedulable, 2 node(s) didn't match Pod's node affinity/selector. preemption: 0/4 nodes are available: 4 Preemption is not helpful for scheduling."
    );
    e.pod(json!({"metadata": {"name": "ssd-tolerating"}, "spec": {"nodeSelector": {"disk": "ssd"}, "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "infra", "effect": "NoSchedule"}]}})).await;
    assert_eq!(e.bound("ssd-tolerating").await, "infra");

    let zone_b = json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [{"matchExpressions": [{"key": "zone", "operator": "In", "values": ["b"]}]}]}}});
    e.pod(json!({"metadata": {"name": "in-b"}, "spec": {"affinity": zone_b}}))
        .await;
    assert_eq!(
        e.bound("in-b").await,
        "zoneb",
        "the other zone-b node is cordoned"
    );

    let port = |name: &str| json!({"metadata": {"name": name}, "spec": {"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [{"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}]}}}, "tolerations": [{"operator": "Exists"}], "containers": [{"name": "c", "image": "pause", "ports": [{"containerPort": 80, "hostPort": 8080}]}]}});
    e.pod(port("port1")).await;
    let first = e.bound("port1").await;
    e.pod(port("port2")).await;
    let second = e.bound("port2").await;
    assert_ne!(first, second, "hostPort 8080 is taken on {first}");
    e.pod(port("port3")).await;
    assert!(e
        .unschedulable("port3")
        .await
        .contains("2 node(s) didn't have free ports for the requested pod ports"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_affinity_anti_affinity_and_topology_spread() {
    let e = env().await;
    e.node("a1", json!({"zone": "a"}), cpu("4"), json!({}))
        .await;
    e.node("a2", json!({"zone": "a"}), cpu("4"), json!({}))
        .await;
    e.node("b1", json!({"zone": "b"}), cpu("4"), json!({}))
        .await;
    e.pod(json!({"metadata": {"name": "db", "labels": {"app": "db"}}, "spec": {"nodeSelector": {"kubernetes.io/hostname": "b1"}}})).await;
    assert_eq!(e.bound("db").await, "b1");
    let term = json!([{"labelSelector": {"matchLabels": {"app": "db"}}, "topologyKey": "zone"}]);
    e.pod(json!({"metadata": {"name": "near-db"}, "spec": {"affinity": {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": term}}}})).await;
    assert_eq!(e.bound("near-db").await, "b1");
    e.pod(json!({"metadata": {"name": "away-from-db"}, "spec": {"affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": term}}}})).await;
    assert!(e.bound("away-from-db").await.starts_with('a'));
    let missing =
        json!([{"labelSelector": {"matchLabels": {"app": "cache"}}, "topologyKey": "zone"}]);
    e.pod(json!({"metadata": {"name": "near-cache"}, "spec": {"affinity": {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": missing}}}})).await;
    assert!(e
        .unschedulable("near-cache")
        .await
        .starts_with("0/3 nodes are available: 3 node(s) didn't match pod affinity rules."));

    // DoNotSchedule, maxSkew 1 over zones: zone counts stay within one of each other.
    let spread = |name: &str| json!({"metadata": {"name": name, "labels": {"app": "web"}}, "spec": {"topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": "DoNotSchedule", "labelSelector": {"matchLabels": {"app": "web"}}}]}});
    let mut zones = Vec::new();
    for i in 0..4 {
        let name = format!("web-{i}");
        e.pod(spread(&name)).await;
        let node = e.bound(&name).await;
        zones.push(if node.starts_with('a') { 'a' } else { 'b' });
    }
    let a = zones.iter().filter(|z| **z == 'a').count();
    assert_eq!(a, 2, "zones {zones:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_bound_to_local_volumes_pin_pods_to_their_node() {
    let e = env().await;
    e.node("n1", json!({}), cpu("2"), json!({})).await;
    e.node("n2", json!({}), cpu("2"), json!({})).await;
    let pv = json!({"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": "local-n2"}, "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"], "local": {"path": "/mnt/disk"}, "storageClassName": "local",
        "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In", "values": ["n2"]}]}]}}}});
    e.cluster
        .kubectl_stdin(&["apply", "-f", "-"], &pv.to_string())
        .await
        .ok();
    let pvc = json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "data", "namespace": "default"}, "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "local", "volumeName": "local-n2", "resources": {"requests": {"storage": "1Gi"}}}});
    e.cluster
        .kubectl_stdin(&["apply", "-f", "-"], &pvc.to_string())
        .await
        .ok();
    let with_claim = |name: &str, claim: &str| json!({"metadata": {"name": name}, "spec": {"volumes": [{"name": "v", "persistentVolumeClaim": {"claimName": claim}}]}});
    e.pod(with_claim("uses-local", "data")).await;
    assert_eq!(e.bound("uses-local").await, "n2");
    e.pod(with_claim("no-claim", "nope")).await;
    assert_eq!(e.unschedulable("no-claim").await, "0/2 nodes are available: persistentvolumeclaim \"nope\" not found. preemption: 0/2 nodes are available: 2 Preemption is not helpful for scheduling.");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn high_priority_pods_preempt_lower_priority_ones_sparing_pdb_protected_pods() {
    let e = env().await;
    for (name, value) in [("low", 10), ("lower", 5), ("high", 1000)] {
        let pc = json!({"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass", "metadata": {"name": name}, "value": value});
        e.cluster
            .kubectl_stdin(&["apply", "-f", "-"], &pc.to_string())
            .await
            .ok();
    }
    e.node("n1", json!({}), cpu("1"), json!({})).await;
    e.node("n2", json!({}), cpu("1"), json!({})).await;
    let pod = |name: &str, class: &str, labels: Value| json!({"metadata": {"name": name, "labels": labels}, "spec": {"priorityClassName": class, "containers": [{"name": "c", "image": "pause", "resources": {"requests": {"cpu": "1"}}}]}});
    // "guarded" has the lowest priority but a PDB allowing no disruption.
    e.pod(pod("guarded", "lower", json!({"app": "db"})).clone())
        .await;
    let g = e.bound("guarded").await;
    e.pod(pod("victim", "low", json!({"app": "batch"}))).await;
    let v = e.bound("victim").await;
    assert_ne!(g, v);
    let pdb = json!({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": {"name": "db", "namespace": "default"}, "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "db"}}}});
    e.cluster
        .kubectl_stdin(&["apply", "-f", "-"], &pdb.to_string())
        .await
        .ok();
    tokio::time::sleep(Duration::from_millis(500)).await;

    e.pod(pod("important", "high", json!({}))).await;
    assert_eq!(
        e.bound("important").await,
        v,
        "preempted on the victim's node"
    );
    let pods = e.pods().list(&ListParams::default()).await.unwrap();
    let names: Vec<String> = pods
        .items
        .iter()
        .filter_map(|p| p.metadata.name.clone())
        .collect();
    assert!(
        !names.contains(&"victim".to_string()),
        "victim deleted: {names:?}"
    );
    assert!(
        names.contains(&"guarded".to_string()),
        "PDB-protected pod spared: {names:?}"
    );
    let important = e.pods().get("important").await.unwrap();
    assert_eq!(
        important
            .status
            .and_then(|s| s.nominated_node_name)
            .as_deref(),
        Some(v.as_str())
    );
    assert!(e
        .wait_event("victim", "Preempted")
        .await
        .starts_with("Preempted by pod "));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_describe_shows_failed_scheduling_until_a_node_is_labelled() {
    let e = env().await;
    e.node("worker", json!({}), cpu("2"), json!({})).await;
    let pod = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: wants-ssd\nspec:\n  nodeSelector:\n    disktype: ssd\n  containers:\n  - name: c\n    image: pause\n";
    e.cluster
        .kubectl_stdin(&["apply", "-f", "-"], pod)
        .await
        .ok();
    e.unschedulable("wants-ssd").await;
    let want = "0/1 nodes are available: 1 node(s) didn't match Pod's node affinity/selector. preemption: 0/1 nodes are available: 1 Preemption is not helpful for scheduling.";
    let mut described = String::new();
    for _ in 0..100 {
        described = e
            .cluster
            .kubectl(&["describe", "pod", "wants-ssd"])
            .await
            .ok();
        if described.contains("FailedScheduling") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        described.contains("Warning  FailedScheduling"),
        "{described}"
    );
    assert!(described.contains(want), "{described}");
    assert!(described.contains("PodScheduled   False"), "{described}");
    e.cluster
        .kubectl(&["label", "node", "worker", "disktype=ssd"])
        .await
        .ok();
    assert_eq!(e.bound("wants-ssd").await, "worker");
    let node = e
        .cluster
        .kubectl(&["get", "pod", "wants-ssd", "-o", "jsonpath={.spec.nodeName}"])
        .await
        .ok();
    assert_eq!(node, "worker");
    e.wait_event("wants-ssd", "Scheduled").await;
    let described = e
        .cluster
        .kubectl(&["describe", "pod", "wants-ssd"])
        .await
        .ok();
    assert!(
        described.contains("Successfully assigned default/wants-ssd to worker"),
        "{described}"
    );
}
