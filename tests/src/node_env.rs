//! A one-node cluster for workspace tests: a real API server, a private containerd (its own
//! root, state and socket) and an in-process kubelet, so pods really run through CRI, runc and
//! CNI. Shared by the kubelet and streaming tests.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::{Api, Client};
use tokio_util::sync::CancellationToken;

use crate::containerd::{image_bundle, ContainerdProcess};
use crate::{Backend, TestCluster};

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// One node: an API server, a private containerd and an in-process kubelet registered as
/// [`Env::node`]. Environments run one at a time per test process (their pods share the host's
/// `cni0` bridge); the lock is held until [`Env::stop`] or drop.
pub struct Env {
    pub cluster: TestCluster,
    pub containerd: ContainerdProcess,
    pub client: Client,
    pub node: String,
    pub dir: tempfile::TempDir,
    kubelet: Option<(CancellationToken, tokio::task::JoinHandle<()>)>,
    pub kubelet_port: u16,
    _serial: tokio::sync::MutexGuard<'static, ()>,
}

/// The node's podCIDR and the address the bridge plugin gives `cni0` for it.
const POD_CIDR: &str = "10.244.77.0/24";
const POD_CIDR_GATEWAY: &str = "10.244.77.1/24";

/// `cni0` left by another run (a benchmark or test with another podCIDR) makes the bridge plugin
/// fail (`cni0 already has an IP address different from ...`). Remove it when no pod is
/// attached to it and its address is not ours.
fn remove_stale_bridge(want: &str) {
    let run = |args: &[&str]| {
        std::process::Command::new("ip")
            .args(args)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    };
    let addr = run(&["-4", "-o", "addr", "show", "dev", "cni0"]);
    if addr.is_empty() || addr.contains(want) {
        return;
    }
    if run(&["-o", "link", "show", "master", "cni0"])
        .trim()
        .is_empty()
    {
        let _ = std::process::Command::new("ip")
            .args(["link", "del", "cni0"])
            .status();
    }
}

/// A free loopback TCP port.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Whether the node reports `Ready=True`.
pub fn node_ready(node: &k8s_openapi::api::core::v1::Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Create `obj` in the `default` namespace unless it already exists.
async fn create_default<K>(client: &kube::Client, obj: serde_json::Value)
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + serde::de::DeserializeOwned
        + serde::Serialize
        + Clone
        + std::fmt::Debug,
    K::DynamicType: Default,
{
    let obj: K = serde_json::from_value(obj).expect("object JSON");
    let res = Api::<K>::namespaced(client.clone(), "default")
        .create(&PostParams::default(), &obj)
        .await;
    if let Err(e) = res {
        assert!(
            matches!(&e, kube::Error::Api(s) if s.code == 409),
            "creating the default {}: {e}",
            K::kind(&Default::default())
        );
    }
}

impl Env {
    /// Start everything with the image bundle imported and wait for the node to be Ready.
    pub async fn start() -> Env {
        let serial = SERIAL.lock().await;
        component_base::logging::init("warn,kubelet=info");
        let bundle = tokio::task::spawn_blocking(image_bundle).await.unwrap();
        remove_stale_bridge(POD_CIDR_GATEWAY);
        let cluster = TestCluster::start(Backend::Embedded).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let containerd = ContainerdProcess::start(&dir.path().join("containerd")).unwrap();
        let client = cluster.client().await;
        // No controller-manager here: create what its serviceaccount and root-ca-publisher
        // controllers would (the `default` service account and the `kube-root-ca.crt`
        // ConfigMap), so pods get their projected token volume as in a real cluster.
        let ca =
            std::fs::read_to_string(cluster.data_dir().join("pki/ca.crt")).expect("cluster CA");
        create_default::<k8s_openapi::api::core::v1::ServiceAccount>(
            &client,
            serde_json::json!({"metadata": {"name": "default"}}),
        )
        .await;
        create_default::<k8s_openapi::api::core::v1::ConfigMap>(
            &client,
            serde_json::json!({"metadata": {"name": "kube-root-ca.crt"}, "data": {"ca.crt": ca}}),
        )
        .await;
        let mut env = Env {
            node: format!("node-{}", std::process::id()),
            cluster,
            containerd,
            client,
            dir,
            kubelet: None,
            kubelet_port: free_port(),
            _serial: serial,
        };
        env.start_kubelet(Some(bundle)).await;
        env.wait_node_ready().await;
        env
    }

    /// Start the in-process kubelet (again), importing `images` first if given.
    pub async fn start_kubelet(&mut self, images: Option<PathBuf>) {
        let d = self.dir.path();
        let mut args: Vec<String> = vec![
            "kubelet".into(),
            format!("--kubeconfig={}", self.cluster.kubeconfig.display()),
            format!("--hostname-override={}", self.node),
            format!(
                "--container-runtime-endpoint={}",
                self.containerd.endpoint()
            ),
            format!("--root-dir={}", d.join("kubelet").display()),
            format!("--pod-log-dir={}", d.join("logs").display()),
            format!("--cni-conf-dir={}", self.containerd.cni_conf_dir.display()),
            format!("--pod-cidr={POD_CIDR}"),
            "--node-ip=127.0.0.1".into(),
            "--address=127.0.0.1".into(),
            format!("--port={}", self.kubelet_port),
            "--healthz-port=0".into(),
            format!("--cgroup-root=/kubrs-test-{}", std::process::id()),
            "--pleg-relist-period=500ms".into(),
            "--sync-frequency=2s".into(),
            format!(
                "--client-ca-file={}",
                self.cluster.data_dir().join("pki/ca.crt").display()
            ),
        ];
        if let Some(i) = images {
            args.push(format!("--image-dir={}", i.display()));
        }
        let config =
            kubelet::Config::try_from(<kubelet::Args as clap::Parser>::parse_from(args)).unwrap();
        let token = CancellationToken::new();
        let client = self.client.clone();
        let runtime: Arc<dyn kubelet::cri::Runtime> = Arc::new(
            kubelet::cri::remote::RemoteRuntime::connect(&self.containerd.endpoint())
                .await
                .unwrap(),
        );
        let t = token.clone();
        let task = tokio::spawn(async move {
            if let Err(e) = kubelet::run_with(config, client, runtime, t).await {
                eprintln!("kubelet stopped: {e}");
            }
        });
        self.kubelet = Some((token, task));
    }

    pub async fn stop_kubelet(&mut self) {
        if let Some((t, task)) = self.kubelet.take() {
            t.cancel();
            let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
        }
    }

    pub async fn wait_node_ready(&self) {
        let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(self.client.clone());
        for _ in 0..200 {
            if nodes.get(&self.node).await.is_ok_and(|n| node_ready(&n)) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("node {} never became Ready", self.node);
    }

    pub fn pods(&self, ns: &str) -> Api<Pod> {
        Api::namespaced(self.client.clone(), ns)
    }

    /// Create a pod bound to this node.
    pub async fn create(&self, ns: &str, pod: serde_json::Value) -> Pod {
        let mut pod: Pod = serde_json::from_value(pod).unwrap();
        pod.spec.as_mut().unwrap().node_name = Some(self.node.clone());
        self.pods(ns)
            .create(&PostParams::default(), &pod)
            .await
            .unwrap()
    }

    /// Poll the pod until `f` holds (up to `secs`), returning it.
    pub async fn wait_pod(&self, ns: &str, name: &str, secs: u64, f: impl Fn(&Pod) -> bool) -> Pod {
        let api = self.pods(ns);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        let mut last = None;
        while tokio::time::Instant::now() < deadline {
            if let Ok(p) = api.get(name).await {
                if f(&p) {
                    return p;
                }
                last = Some(p);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "pod {ns}/{name} did not reach the expected state in {secs}s; last: {}\ncontainerd log: {}",
            serde_json::to_string_pretty(&last.map(|p| p.status)).unwrap(),
            self.containerd.log_tail()
        );
    }

    /// Delete every pod, wait for their tasks to go, stop the kubelet and the API server.
    pub async fn stop(mut self) {
        // Remove every pod so the kubelet tears down sandboxes, then stop everything.
        for p in Api::<Pod>::all(self.client.clone())
            .list(&ListParams::default())
            .await
            .map(|l| l.items)
            .unwrap_or_default()
        {
            let api = self.pods(p.metadata.namespace.as_deref().unwrap_or("default"));
            let _ = api
                .delete(
                    p.metadata.name.as_deref().unwrap_or(""),
                    &DeleteParams {
                        grace_period_seconds: Some(0),
                        ..Default::default()
                    },
                )
                .await;
        }
        for _ in 0..100 {
            let left = self
                .containerd
                .ctr(&["-n", "k8s.io", "tasks", "ls", "-q"])
                .unwrap_or_default();
            if left.trim().is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // The kubelet unmounts a gone pod's volumes after its sandbox is removed: give it a
        // moment, then stop it and unmount whatever is left (a test may end mid-teardown).
        let pods_dir = self.dir.path().join("kubelet/pods");
        for _ in 0..50 {
            let empty = std::fs::read_dir(&pods_dir).map_or(true, |mut d| d.next().is_none());
            if empty {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.stop_kubelet().await;
        // The kubelet leaves its pod masquerade rules in place when it stops (pods outlive it);
        // the test's node goes, so they go too.
        kubelet::masquerade::remove(&kubelet::cni::Cidr::parse(POD_CIDR).unwrap());
        for m in crate::containerd::mounts_under(&self.dir.path().join("kubelet")) {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(&m)
                .stderr(std::process::Stdio::null())
                .status();
        }
        let cg = format!("kubrs-test-{}", std::process::id());
        if let Ok(rd) = std::fs::read_dir("/sys/fs/cgroup") {
            for e in rd.flatten() {
                let p = e.path().join(&cg);
                if p.exists() {
                    let _ = std::process::Command::new("find")
                        .arg(&p)
                        .args(["-depth", "-type", "d", "-exec", "rmdir", "{}", ";"])
                        .status();
                }
            }
        }
        // The CNI bridge plugin created `cni0`; with every sandbox gone nothing uses it, and
        // the tests leave no bridge behind.
        let _ = std::process::Command::new("ip")
            .args(["link", "del", "cni0"])
            .stderr(std::process::Stdio::null())
            .status();
        self.cluster.stop().await;
    }
}
