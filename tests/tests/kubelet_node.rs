//! The kubelet's node agent (`kubelet::node::NodeAgent`) against a real in-process API server
//! (embedded store), with the recording fake CRI runtime: registration with status, labels and
//! taints from flags, Lease heartbeats, the podCIDR the API assigns turned into the CNI
//! configuration, re-registration after the Node is deleted, and what the real kubectl shows.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use kubelet::cri::fake::FakeRuntime;
use kubelet::node::NodeAgent;
use serde_json::json;
use tests::{Backend, OutputExt, TestCluster};
use tokio_util::sync::CancellationToken;

struct Env {
    cluster: TestCluster,
    client: Client,
    dir: tempfile::TempDir,
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
    Env {
        cluster,
        client,
        dir: tempfile::tempdir().unwrap(),
        stop: CancellationToken::new(),
    }
}

impl Env {
    fn agent(&self, name: &str, extra: &[&str]) -> Arc<NodeAgent> {
        let root = self.dir.path().join(name);
        let mut argv: Vec<String> = vec![
            "kubelet".into(),
            "--hostname-override".into(),
            name.into(),
            "--root-dir".into(),
            root.join("root").display().to_string(),
            "--cni-conf-dir".into(),
            root.join("net.d").display().to_string(),
            "--node-status-update-frequency".into(),
            "500ms".into(),
            // No pods run here: no masquerade rules in the host's nat table.
            "--pod-masquerade=false".into(),
        ];
        argv.extend(extra.iter().map(|s| s.to_string()));
        let config = kubelet::Config::try_from(<kubelet::Args as clap::Parser>::parse_from(argv))
            .expect("valid flags");
        let runtime = Arc::new(
            FakeRuntime::new()
                .with_images(&["docker.io/library/busybox:latest", "localhost/pause:3.10"]),
        );
        Arc::new(NodeAgent::new(
            Arc::new(config),
            self.client.clone(),
            runtime,
        ))
    }

    fn nodes(&self) -> Api<Node> {
        Api::all(self.client.clone())
    }

    async fn wait_node(&self, name: &str, what: &str, f: impl Fn(&Node) -> bool) -> Node {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(n) = self.nodes().get_opt(name).await.unwrap() {
                if f(&n) {
                    return n;
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "node {name}: timed out waiting for {what}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn condition<'a>(n: &'a Node, t: &str) -> Option<&'a k8s_openapi::api::core::v1::NodeCondition> {
    n.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == t)
}

fn ready(n: &Node) -> bool {
    condition(n, "Ready").is_some_and(|c| c.status == "True")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_registers_ready_with_status_labels_taints_and_a_renewed_lease() {
    let env = env().await;
    let agent = env.agent(
        "kn-1",
        &[
            "--node-ip",
            "10.11.12.13",
            "--node-labels",
            "node-role.kubernetes.io/worker=,topology.kubernetes.io/zone=z1",
            "--register-with-taints",
            "dedicated=infra:NoSchedule",
            "--pod-cidr",
            "10.244.9.0/24",
            "--kube-reserved",
            "cpu=100m,memory=64Mi",
            "--max-pods",
            "60",
            "--port",
            "10350",
        ],
    );
    let registered = agent.register().await.expect("node registers");
    assert_eq!(registered.metadata.name.as_deref(), Some("kn-1"));
    tokio::spawn(agent.clone().run(env.stop.clone()));

    let node = env.wait_node("kn-1", "Ready", ready).await;
    let labels = node.metadata.labels.clone().unwrap();
    assert_eq!(labels["kubernetes.io/hostname"], "kn-1");
    assert_eq!(labels["kubernetes.io/os"], "linux");
    assert_eq!(labels["kubernetes.io/arch"], kubelet::node::go_arch());
    assert_eq!(labels["beta.kubernetes.io/os"], "linux");
    assert_eq!(labels["node-role.kubernetes.io/worker"], "");
    assert_eq!(labels["topology.kubernetes.io/zone"], "z1");
    let spec = node.spec.clone().unwrap();
    let taints = spec.taints.unwrap();
    assert_eq!(taints.len(), 1);
    assert_eq!(
        (
            taints[0].key.as_str(),
            taints[0].value.as_deref(),
            taints[0].effect.as_str()
        ),
        ("dedicated", Some("infra"), "NoSchedule")
    );
    assert_eq!(spec.pod_cidr.as_deref(), Some("10.244.9.0/24"));

    let status = node.status.clone().unwrap();
    let addresses: Vec<_> = status
        .addresses
        .iter()
        .flatten()
        .map(|a| (a.type_.as_str(), a.address.as_str()))
        .collect();
    assert_eq!(
        addresses,
        [("InternalIP", "10.11.12.13"), ("Hostname", "kn-1")]
    );
    let cap = status.capacity.clone().unwrap();
    let alloc = status.allocatable.clone().unwrap();
    let machine = agent.machine();
    assert_eq!(cap["cpu"].0, machine.num_cpus.to_string());
    assert_eq!(
        alloc["cpu"].0,
        format!("{}m", machine.num_cpus * 1000 - 100),
        "allocatable cpu is capacity minus --kube-reserved"
    );
    assert_eq!(
        cap["memory"].0,
        kubelet::node::format_bytes(machine.memory_capacity)
    );
    assert_eq!(
        alloc["memory"].0,
        kubelet::node::format_bytes(machine.memory_capacity - (64 << 20) - (100 << 20))
    );
    assert!(cap.contains_key("ephemeral-storage"), "{cap:?}");
    assert!(alloc.contains_key("ephemeral-storage"), "{alloc:?}");
    assert_eq!(cap["pods"].0, "60");
    let info = status.node_info.clone().unwrap();
    assert_eq!(info.kubelet_version, kubelet::node::KUBELET_VERSION);
    assert_eq!(info.container_runtime_version, "fake://0.0.1");
    assert_eq!(info.operating_system, "linux");
    assert_eq!(info.kernel_version, machine.kernel_version);
    assert!(!info.boot_id.is_empty());
    assert!(!info.os_image.is_empty());
    assert_eq!(
        status
            .daemon_endpoints
            .and_then(|d| d.kubelet_endpoint)
            .map(|e| e.port),
        Some(10350)
    );
    // DiskPressure reflects the host's real disk (hard eviction at nodefs.available < 10%): a
    // nearly full build machine must see it reported, as upstream would.
    let disk_reason = if nodefs_below_10_percent(env.dir.path()) {
        "KubeletHasDiskPressure"
    } else {
        "KubeletHasNoDiskPressure"
    };
    for (t, reason) in [
        ("MemoryPressure", "KubeletHasSufficientMemory"),
        ("DiskPressure", disk_reason),
        ("PIDPressure", "KubeletHasSufficientPID"),
        ("Ready", "KubeletReady"),
    ] {
        let c = condition(&node, t).unwrap_or_else(|| panic!("{t} condition"));
        assert_eq!(c.reason.as_deref(), Some(reason), "{t}");
    }
    let images: Vec<String> = status
        .images
        .iter()
        .flatten()
        .flat_map(|i| i.names.clone().unwrap_or_default())
        .collect();
    assert!(
        images.contains(&"docker.io/library/busybox:latest".to_string()),
        "{images:?}"
    );

    // The podCIDR is published and written as the node's CNI configuration.
    assert_eq!(agent.pod_cidr().borrow().as_deref(), Some("10.244.9.0/24"));
    let conflist = env.dir.path().join("kn-1/net.d/10-kubrs.conflist");
    let conf: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&conflist).unwrap()).unwrap();
    assert_eq!(
        conf["plugins"][0]["ipam"]["ranges"][0][0]["subnet"],
        "10.244.9.0/24"
    );

    // The Lease is held by the node, owned by it, and renewed.
    let leases: Api<Lease> = Api::namespaced(env.client.clone(), "kube-node-lease");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let first = loop {
        if let Some(l) = leases.get_opt("kn-1").await.unwrap() {
            break l;
        }
        assert!(tokio::time::Instant::now() < deadline, "lease not created");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let spec = first.spec.clone().unwrap();
    assert_eq!(spec.holder_identity.as_deref(), Some("kn-1"));
    assert_eq!(spec.lease_duration_seconds, Some(40));
    let owner = &first.metadata.owner_references.clone().unwrap()[0];
    assert_eq!((owner.kind.as_str(), owner.name.as_str()), ("Node", "kn-1"));
    assert_eq!(Some(owner.uid.clone()), node.metadata.uid);
    let renewed_at = spec.renew_time.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let l = leases.get("kn-1").await.unwrap();
        if l.spec.unwrap().renew_time.unwrap() > renewed_at {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "lease not renewed");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Unchanged status is not written again (only the Lease is), although it is checked every
    // 500ms here.
    let rv = env
        .nodes()
        .get("kn-1")
        .await
        .unwrap()
        .metadata
        .resource_version;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        env.nodes()
            .get("kn-1")
            .await
            .unwrap()
            .metadata
            .resource_version,
        rv,
        "node status rewritten without a change"
    );

    // The real kubectl shows the node Ready with its address, runtime and version.
    let out = env
        .cluster
        .kubectl(&["get", "nodes", "-o", "wide", "--no-headers"])
        .await
        .ok();
    let cols: Vec<&str> = out
        .lines()
        .find(|l| l.starts_with("kn-1 "))
        .unwrap_or_else(|| panic!("kn-1 not listed:\n{out}"))
        .split_whitespace()
        .collect();
    assert_eq!(cols[1], "Ready", "{out}");
    assert_eq!(cols[2], "worker", "{out}");
    assert_eq!(cols[4], kubelet::node::KUBELET_VERSION, "{out}");
    assert_eq!(cols[5], "10.11.12.13", "{out}");
    assert_eq!(cols[6], "<none>", "{out}");
    assert_eq!(*cols.last().unwrap(), "fake://0.0.1", "{out}");
    assert!(out.contains(&info.kernel_version), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn existing_node_keeps_foreign_labels_and_taints_and_follows_the_assigned_pod_cidr() {
    let env = env().await;
    // Someone registered the node before (an earlier kubelet, or an admin) with labels and a
    // taint of their own, and no podCIDR yet.
    let pre: Node = serde_json::from_value(json!({
        "metadata": {"name": "kn-2", "labels": {"team": "a", "kubernetes.io/hostname": "old"}},
        "spec": {"taints": [{"key": "maintenance", "effect": "NoExecute"}]}
    }))
    .unwrap();
    env.nodes()
        .create(&PostParams::default(), &pre)
        .await
        .unwrap();

    let agent = env.agent(
        "kn-2",
        &[
            "--node-ip",
            "10.11.12.14",
            "--register-with-taints",
            "dedicated=db:NoSchedule",
        ],
    );
    let mut cidr = agent.pod_cidr();
    assert_eq!(*cidr.borrow(), None);
    agent
        .register()
        .await
        .expect("register over an existing node");
    tokio::spawn(agent.clone().run(env.stop.clone()));

    let node = env.wait_node("kn-2", "Ready", ready).await;
    let labels = node.metadata.labels.clone().unwrap();
    assert_eq!(labels["team"], "a");
    assert_eq!(labels["kubernetes.io/hostname"], "kn-2");
    let keys: Vec<_> = node
        .spec
        .clone()
        .unwrap()
        .taints
        .unwrap()
        .into_iter()
        .map(|t| t.key)
        .collect();
    assert_eq!(keys, ["maintenance", "dedicated"]);
    let conflist = env.dir.path().join("kn-2/net.d/10-kubrs.conflist");
    assert!(!conflist.exists(), "no CNI config without a podCIDR");

    // The controller-manager's node IPAM assigns a podCIDR: the kubelet follows it.
    env.nodes()
        .patch(
            "kn-2",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"spec": {"podCIDR": "10.244.3.0/24", "podCIDRs": ["10.244.3.0/24"]}}),
            ),
        )
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(20), cidr.wait_for(|c| c.is_some()))
        .await
        .expect("podCIDR published")
        .unwrap();
    assert_eq!(cidr.borrow().as_deref(), Some("10.244.3.0/24"));
    let conf: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&conflist).unwrap()).unwrap();
    assert_eq!(
        conf["plugins"][0]["ipam"]["ranges"][0][0]["subnet"],
        "10.244.3.0/24"
    );

    // A deleted Node object is registered again by the status loop.
    let old_uid = node.metadata.uid.clone();
    env.nodes()
        .delete("kn-2", &DeleteParams::default())
        .await
        .unwrap();
    let again = env
        .wait_node("kn-2", "re-registration", |n| {
            n.metadata.uid != old_uid && ready(n)
        })
        .await;
    assert_eq!(
        again.metadata.labels.unwrap()["kubernetes.io/hostname"],
        "kn-2"
    );
}

/// Whether the filesystem holding `dir` has less than 10% of its blocks available (`df`).
fn nodefs_below_10_percent(dir: &std::path::Path) -> bool {
    let out = std::process::Command::new("df")
        .args(["--output=avail,size", "-k"])
        .arg(dir)
        .output()
        .expect("df");
    let text = String::from_utf8_lossy(&out.stdout);
    let nums: Vec<u64> = text
        .lines()
        .nth(1)
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|v| v.parse().ok())
        .collect();
    matches!(nums[..], [avail, size] if size > 0 && avail * 10 < size)
}
