//! Scheduler benchmark: prints figures, asserts nothing.
//!
//! 1. In-process decisions/s: the default framework over a cache of 1,000 and 5,000 nodes
//!    (decide + assume, no API).
//! 2. End to end: an in-process API server on the embedded store, N simulated nodes (Node
//!    objects with capacity/allocatable, a Ready condition and a node Lease; no kubelet), the
//!    scheduler as a separate process (this binary re-executed), and pods/s from the first
//!    pod creation to the last binding observed by a watch — 1,000 nodes + 5,000 pods, then
//!    5,000 nodes + 25,000 pods, with the CPU each process used per pod (this process: the
//!    API server, the pod-creating clients and the watch) and the scheduler's RSS at the end.
//!
//! `cargo run --release -p tests --bin bench-scheduler [-- --quick]`

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client};
use serde_json::json;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tests::{Backend, TestCluster};

const CHILD_FLAG: &str = "--scheduler-child";

fn node_json(i: usize) -> serde_json::Value {
    let zone = format!("zone-{}", i % 3);
    json!({"metadata": {"name": format!("node-{i}"), "labels": {"kubernetes.io/hostname": format!("node-{i}"), "topology.kubernetes.io/zone": zone}},
           "status": {"allocatable": {"cpu": "32", "memory": "128Gi", "pods": "110"}, "capacity": {"cpu": "32", "memory": "128Gi", "pods": "110"},
                      "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}]}})
}

fn pod_json(i: usize, owner: &str) -> serde_json::Value {
    json!({"metadata": {"name": format!("pod-{i}"), "namespace": "default", "labels": {"app": "bench"},
                        "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "bench", "uid": owner, "controller": true}]},
           "spec": {"containers": [{"name": "c", "image": "pause", "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}}}]}})
}

fn in_process(nodes: usize, pods: usize) -> f64 {
    use scheduler::cache::{Cache, PodInfo};
    use scheduler::framework::Rotor;
    let fw = scheduler::plugins::default_framework();
    let mut cache = Cache::new();
    for i in 0..nodes {
        cache.add_or_update_node(&serde_json::from_value::<Node>(node_json(i)).unwrap());
    }
    let infos: Vec<PodInfo> = (0..pods)
        .map(|i| PodInfo::from_pod(&serde_json::from_value::<Pod>(pod_json(i, "rs-uid")).unwrap()))
        .collect();
    let mut rotor = Rotor::default();
    let start = Instant::now();
    for p in &infos {
        let d = fw.schedule(p, &cache, &mut rotor).expect("fits");
        cache.assume_pod(p, &d.node);
    }
    pods as f64 / start.elapsed().as_secs_f64()
}

async fn for_each_concurrent<F, Fut>(n: usize, limit: usize, f: F)
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    futures::stream::iter(0..n)
        .for_each_concurrent(limit, f)
        .await;
}

async fn create_nodes(client: &Client, from: usize, to: usize) {
    let nodes: Api<Node> = Api::all(client.clone());
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    for_each_concurrent(to - from, 32, |k| {
        let (nodes, leases) = (nodes.clone(), leases.clone());
        async move {
            let i = from + k;
            let v = node_json(i);
            let n: Node = serde_json::from_value(json!({"metadata": v["metadata"]})).unwrap();
            nodes.create(&PostParams::default(), &n).await.expect("create node");
            nodes.patch_status(&format!("node-{i}"), &PatchParams::default(), &Patch::Merge(json!({"status": v["status"]}))).await.expect("node status");
            let now = k8s_openapi::jiff::Timestamp::now();
            let lease: Lease = serde_json::from_value(json!({"metadata": {"name": format!("node-{i}")}, "spec": {"holderIdentity": format!("node-{i}"), "leaseDurationSeconds": 40, "renewTime": now.to_string()}})).unwrap();
            leases.create(&PostParams::default(), &lease).await.expect("create lease");
        }
    })
    .await;
}

/// CPU seconds (user + system) a process has used so far, from /proc/<pid>/stat.
fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the parenthesised command name: state is field 3, utime 14, stime 15.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<u64> = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|v| v.parse().ok())
        .collect();
    // Clock ticks are 100 per second on Linux.
    f.iter().sum::<u64>() as f64 / 100.0
}

fn rss_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |k: &str| {
        status
            .lines()
            .find(|l| l.starts_with(k))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Create `count` pods starting at `first` and return pods/s until all are seen bound.
async fn run_pods(client: &Client, first: usize, count: usize) -> (f64, Duration) {
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let bound = Arc::new(tokio::sync::Notify::new());
    let want: HashSet<String> = (first..first + count).map(|i| format!("pod-{i}")).collect();
    let watch = {
        let pods = pods.clone();
        let bound = bound.clone();
        tokio::spawn(async move {
            let mut seen = HashSet::new();
            let mut s = std::pin::pin!(
                watcher::watcher(pods, watcher::Config::default()).applied_objects()
            );
            while let Ok(Some(p)) = s.try_next().await {
                let name = p.metadata.name.clone().unwrap_or_default();
                if want.contains(&name)
                    && p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some()
                {
                    seen.insert(name);
                    if seen.len() == want.len() {
                        bound.notify_one();
                        return;
                    }
                }
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await; // let the watch list first
    let start = Instant::now();
    for_each_concurrent(count, 64, |k| {
        let pods = pods.clone();
        async move {
            let p: Pod = serde_json::from_value(pod_json(first + k, "rs-uid")).unwrap();
            pods.create(&PostParams::default(), &p)
                .await
                .expect("create pod");
        }
    })
    .await;
    let created = start.elapsed();
    tokio::time::timeout(Duration::from_secs(600), bound.notified())
        .await
        .expect("all pods bound within 10 minutes");
    let took = start.elapsed();
    watch.abort();
    (count as f64 / took.as_secs_f64(), created)
}

async fn child(kubeconfig: &str) -> anyhow::Result<()> {
    component_base::logging::init("warn");
    let args = <scheduler::Args as clap::Parser>::parse_from([
        "scheduler",
        "--kubeconfig",
        kubeconfig,
        "--bind-address",
        "127.0.0.1:0",
        "--leader-elect=false",
    ]);
    let config = scheduler::Config::try_from(args)?;
    scheduler::run(config, component_base::signals::shutdown_token()).await?;
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let argv: Vec<String> = std::env::args().collect();
    if argv.get(1).map(String::as_str) == Some(CHILD_FLAG) {
        return child(&argv[2]).await;
    }
    component_base::logging::init("warn");
    let quick = argv.iter().any(|a| a == "--quick");
    println!(
        "# scheduler benchmark ({} CPUs)",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    );
    for nodes in [1_000, 5_000] {
        let pods = if quick { 2_000 } else { 10_000 };
        println!(
            "in-process decisions/s, {nodes} nodes, {pods} pods: {:.0}",
            in_process(nodes, pods)
        );
    }

    let cluster = TestCluster::start(Backend::Embedded).await?;
    let client = cluster.client().await;
    let plan: &[(usize, usize)] = if quick {
        &[(200, 1_000), (500, 2_000)]
    } else {
        &[(1_000, 5_000), (5_000, 25_000)]
    };
    let mut child_proc = tokio::process::Command::new(std::env::current_exe()?)
        .arg(CHILD_FLAG)
        .arg(&cluster.kubeconfig)
        .kill_on_drop(true)
        .spawn()?;
    let pid = child_proc.id().unwrap_or(0);
    let (mut nodes_made, mut pods_made) = (0, 0);
    for &(nodes, pods) in plan {
        let t = Instant::now();
        create_nodes(&client, nodes_made, nodes).await;
        nodes_made = nodes;
        println!(
            "created {nodes} nodes (+ status + lease) in {:.1}s",
            t.elapsed().as_secs_f64()
        );
        let cpu0 = (cpu_secs(std::process::id()), cpu_secs(pid));
        let (rate, created) = run_pods(&client, pods_made, pods).await;
        let cpu1 = (cpu_secs(std::process::id()), cpu_secs(pid));
        pods_made += pods;
        println!("end to end, {nodes} nodes: {pods} pods created in {:.1}s, all bound and observed by watch at {rate:.0} pods/s ({pods_made} pods in cluster)", created.as_secs_f64());
        let per_pod = |a: f64, b: f64| (b - a) * 1e6 / pods as f64;
        println!(
            "  CPU per pod: API server + clients + watcher {:.0} us, scheduler {:.0} us",
            per_pod(cpu0.0, cpu1.0),
            per_pod(cpu0.1, cpu1.1)
        );
    }
    let (rss, hwm) = rss_kib(pid);
    println!(
        "scheduler RSS with {nodes_made} nodes + {pods_made} pods: {:.1} MiB (peak {:.1} MiB)",
        rss as f64 / 1024.0,
        hwm as f64 / 1024.0
    );
    let _ = child_proc.kill().await;
    cluster.stop().await;
    Ok(())
}
