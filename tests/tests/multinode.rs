//! A 3-node cluster on this machine, started by `deploy/multinode.sh` (each node a network
//! namespace with its own containerd, kubelet and proxy; one control plane in the host's
//! namespace) and driven with the real kubectl: pods spread over the nodes reach each other by
//! pod IP with their source address intact, a ClusterIP Service reaches pods on every node,
//! cluster DNS answers Service, short and headless names from pods, and NodePort and
//! LoadBalancer Services answer from the host on every node address.
//!
//! One cluster is shared by the scenarios (starting one takes most of the time); a guard runs
//! `multinode.sh down` when the test ends, also when it fails, and keeps the logs of a failed
//! run. Uses the debug binaries next to the test binary (`cargo build --workspace --bins`, as
//! `deploy/test.sh` does) unless `KUBRS_BIN_DIR` names others. Needs root.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use tests::OutputExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const NODES: usize = 3;

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ lives in the workspace")
        .to_path_buf()
}

/// `$KUBRS_BIN_DIR`, else the profile directory of this test binary (`<target>/debug`).
fn bin_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("KUBRS_BIN_DIR") {
        return d.into();
    }
    let exe = std::env::current_exe().expect("current exe");
    exe.parent()
        .and_then(Path::parent)
        .expect("test binary lives in <target>/<profile>/deps")
        .to_path_buf()
}

fn node_ip(i: usize) -> String {
    format!("10.200.0.{}", 10 + i)
}

/// The running cluster; dropping it runs `multinode.sh down` and removes the data directory
/// (kept, with every component's log, when the test failed).
struct Cluster {
    script: PathBuf,
    data: PathBuf,
    bin: PathBuf,
    kubeconfig: PathBuf,
}

impl Cluster {
    fn script_cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new("bash");
        c.arg(&self.script)
            .args(args)
            .env("KUBRS_MN_DATA", &self.data)
            .env("KUBRS_BIN_DIR", &self.bin)
            .env("KUBRS_MN_IMAGES", self.bin.join("multinode-images"))
            .stdin(Stdio::null());
        c
    }

    /// `multinode.sh up NODES` on a free apiserver port.
    async fn up() -> Cluster {
        let bin = bin_dir();
        for b in [
            "apiserver",
            "controller-manager",
            "scheduler",
            "kubelet",
            "proxy",
            "dns",
        ] {
            assert!(
                bin.join(b).is_file(),
                "{}/{b} is missing: run `cargo build --workspace --bins` first",
                bin.display()
            );
        }
        let port = std::net::TcpListener::bind("0.0.0.0:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let data =
            std::env::temp_dir().join(format!("kubrs-multinode-test-{}", std::process::id()));
        let cluster = Cluster {
            script: workspace_root().join("deploy/multinode.sh"),
            kubeconfig: data.join("apiserver/admin.kubeconfig"),
            data,
            bin,
        };
        let started = Instant::now();
        let mut cmd = cluster.script_cmd(&["up", &NODES.to_string()]);
        cmd.env("KUBRS_MN_PORT", port.to_string());
        let out = tokio::process::Command::from(cmd)
            .output()
            .await
            .expect("running multinode.sh");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "multinode.sh up failed ({}):\n{stdout}\n{stderr}",
            out.status
        );
        assert!(
            stdout.contains(&format!(
                "export KUBECONFIG={}",
                cluster.kubeconfig.display()
            )),
            "{stdout}"
        );
        eprintln!(
            "multinode.sh up {NODES}: {:.1}s\n{stderr}",
            started.elapsed().as_secs_f64()
        );
        cluster
    }

    fn kubectl_cmd(&self, args: &[&str]) -> tokio::process::Command {
        let mut c = tokio::process::Command::new(tests::kubectl_path());
        c.arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--request-timeout=20s")
            .args(args)
            .stdin(Stdio::null());
        c
    }

    async fn kubectl(&self, args: &[&str]) -> Output {
        self.kubectl_cmd(args)
            .output()
            .await
            .expect("running kubectl")
    }

    async fn kubectl_stdin(&self, args: &[&str], stdin: &str) -> Output {
        let mut child = self
            .kubectl_cmd(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("running kubectl");
        let mut input = child.stdin.take().unwrap();
        input.write_all(stdin.as_bytes()).await.unwrap();
        drop(input);
        child.wait_with_output().await.unwrap()
    }

    async fn json(&self, args: &[&str]) -> Value {
        let mut a = args.to_vec();
        a.extend(["-o", "json"]);
        serde_json::from_str(&self.kubectl(&a).await.ok()).expect("kubectl -o json")
    }

    /// `kubectl exec POD -- sh -c SCRIPT`, its stdout (panics when it fails).
    async fn sh(&self, pod: &str, script: &str) -> String {
        self.kubectl(&["exec", pod, "--", "sh", "-c", script])
            .await
            .ok()
    }
}

/// Polls `check` every 250 ms until it gives a value.
async fn eventually<T, F, Fut>(what: &str, secs: u64, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {secs}s waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let failed = std::thread::panicking();
        let out = self.script_cmd(&["down"]).output();
        match out {
            Ok(o) if o.status.success() => {}
            Ok(o) => eprintln!(
                "multinode.sh down failed ({}): {}",
                o.status,
                String::from_utf8_lossy(&o.stderr)
            ),
            Err(e) => eprintln!("multinode.sh down: {e}"),
        }
        if failed {
            eprintln!("multinode: logs kept in {}", self.data.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.data);
        }
    }
}

/// A plain HTTP/1.0 GET from the host; the whole response.
async fn http_get(addr: &str) -> Result<String, String> {
    let io = async {
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        s.write_all(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n").await?;
        let mut out = String::new();
        s.read_to_string(&mut out).await?;
        Ok::<_, std::io::Error>(out)
    };
    match tokio::time::timeout(Duration::from_secs(5), io).await {
        Ok(Ok(r)) => Ok(r),
        Ok(Err(e)) => Err(format!("{addr}: {e}")),
        Err(_) => Err(format!("{addr}: timed out")),
    }
}

/// The value of a `key: value` line of demo-web's index page.
fn field<'a>(page: &'a str, key: &str) -> Option<&'a str> {
    page.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(": "))
        .map(str::trim)
}

struct WebPod {
    name: String,
    ip: String,
    node: String,
}

const WEB: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 4
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      topologySpreadConstraints:
        - maxSkew: 1
          topologyKey: kubernetes.io/hostname
          whenUnsatisfiable: DoNotSchedule
          labelSelector:
            matchLabels: {app: web}
      containers:
        - name: kuard
          image: gcr.io/kuar-demo/kuard-amd64:blue
          ports:
            - containerPort: 8080
          readinessProbe:
            httpGet: {path: /ready, port: 8080}
            periodSeconds: 1
---
apiVersion: v1
kind: Service
metadata:
  name: web-headless
spec:
  clusterIP: None
  selector: {app: web}
  ports:
    - port: 8080
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_dns_and_pod_network_span_nodes() {
    let c = Cluster::up().await;

    // ---- nodes: Ready, each its own address and pod CIDR
    let nodes = c.json(&["get", "nodes"]).await;
    let items = nodes["items"].as_array().unwrap();
    assert_eq!(items.len(), NODES, "{nodes}");
    let mut cidrs = BTreeSet::new();
    for (i, n) in items.iter().enumerate() {
        let name = n["metadata"]["name"].as_str().unwrap();
        assert_eq!(name, format!("kubrs-n{}", i + 1));
        let addrs = n["status"]["addresses"].as_array().unwrap();
        assert!(
            addrs
                .iter()
                .any(|a| a["type"] == "InternalIP" && a["address"] == node_ip(i + 1).as_str()),
            "{name}: {addrs:?}"
        );
        let ready = n["status"]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True");
        assert!(ready, "{name} is not Ready");
        cidrs.insert(n["spec"]["podCIDR"].as_str().unwrap().to_string());
    }
    assert_eq!(cidrs.len(), NODES, "pod CIDRs overlap: {cidrs:?}");

    // ---- a Deployment spread over every node
    c.kubectl_stdin(&["apply", "-f", "-"], WEB).await.ok();
    c.kubectl(&["rollout", "status", "deployment/web", "--timeout=90s"])
        .await
        .ok();
    let pods = c.json(&["get", "pods", "-l", "app=web"]).await;
    let web: Vec<WebPod> = pods["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| WebPod {
            name: p["metadata"]["name"].as_str().unwrap().into(),
            ip: p["status"]["podIP"].as_str().unwrap().into(),
            node: p["spec"]["nodeName"].as_str().unwrap().into(),
        })
        .collect();
    assert_eq!(web.len(), 4);
    let mut per_node: BTreeMap<&str, usize> = BTreeMap::new();
    for p in &web {
        *per_node.entry(p.node.as_str()).or_default() += 1;
    }
    assert_eq!(
        per_node.len(),
        NODES,
        "not spread over every node: {per_node:?}"
    );
    assert!(per_node.values().all(|&n| n <= 2), "{per_node:?}");

    // ---- pod to pod across nodes by pod IP, the source pod IP preserved (no NAT)
    for a in &web {
        let others: Vec<&WebPod> = web.iter().filter(|b| b.node != a.node).collect();
        let script = others
            .iter()
            .map(|b| format!("timeout 5 wget -qO- http://{}:8080/ && echo ---", b.ip))
            .collect::<Vec<_>>()
            .join("; ");
        let out = c.sh(&a.name, &script).await;
        let pages: Vec<&str> = out.split("---").filter(|p| !p.trim().is_empty()).collect();
        assert_eq!(pages.len(), others.len(), "{}: {out}", a.name);
        for (b, page) in others.iter().zip(pages) {
            assert_eq!(field(page, "hostname"), Some(b.name.as_str()), "{page}");
            let remote = field(page, "remote").unwrap_or_default();
            assert_eq!(
                remote.rsplit_once(':').map(|(ip, _)| ip),
                Some(a.ip.as_str()),
                "{} → {}: the source was rewritten: {page}",
                a.name,
                b.name
            );
        }
    }

    // ---- the host reaches pods on every node through its pod CIDR routes
    for p in &web {
        let page = http_get(&format!("{}:8080", p.ip)).await.unwrap();
        assert_eq!(field(&page, "hostname"), Some(p.name.as_str()), "{page}");
    }

    // ---- a ClusterIP Service reaches the pods of every node from a pod
    c.kubectl(&[
        "expose",
        "deployment",
        "web",
        "--port=80",
        "--target-port=8080",
    ])
    .await
    .ok();
    let cluster_ip = c
        .kubectl(&["get", "svc", "web", "-o", "jsonpath={.spec.clusterIP}"])
        .await
        .ok();
    let client = &web[0];
    let nodes_reached = eventually("the ClusterIP to reach every node's pods", 30, || async {
            let out = c
                .sh(
                    &client.name,
                    &format!(
                        "for i in $(seq 40); do timeout 5 wget -qO- http://{cluster_ip}/ | grep '^hostname:'; done; true"
                    ),
                )
                .await;
            let reached: BTreeSet<&str> = out
                .lines()
                .filter_map(|l| field(l, "hostname"))
                .filter_map(|h| web.iter().find(|p| p.name == h))
                .map(|p| p.node.as_str())
                .collect();
            (reached.len() == NODES).then_some(reached.len())
        })
        .await;
    assert_eq!(nodes_reached, NODES);

    // ---- cluster DNS, asked from a pod on a node other than the DNS server's
    let dns_node = c
        .kubectl(&[
            "-n",
            "kube-system",
            "get",
            "pods",
            "-l",
            "k8s-app=kube-dns",
            "-o",
            "jsonpath={.items[0].spec.nodeName}",
        ])
        .await
        .ok();
    let asker = web
        .iter()
        .find(|p| p.node != dns_node)
        .expect("a web pod away from the DNS server");
    let resolv = c.sh(&asker.name, "cat /etc/resolv.conf").await;
    assert!(resolv.contains("nameserver 10.96.0.10"), "{resolv}");
    assert!(
        resolv.contains("search default.svc.cluster.local svc.cluster.local cluster.local"),
        "{resolv}"
    );
    assert!(resolv.contains("options ndots:5"), "{resolv}");
    let fqdn = c
        .sh(&asker.name, "nslookup web.default.svc.cluster.local")
        .await;
    assert!(fqdn.contains(&format!("Address: {cluster_ip}")), "{fqdn}");
    // The short name through the search path, as an application uses it.
    let page = c.sh(&asker.name, "timeout 5 wget -qO- http://web/").await;
    assert!(
        field(&page, "hostname").is_some_and(|h| h.starts_with("web-")),
        "{page}"
    );
    let page = c
        .sh(&asker.name, "timeout 5 wget -qO- http://web.default/")
        .await;
    assert!(page.contains("demo-web"), "{page}");
    // A headless Service resolves to every ready pod's address.
    let headless = c
        .sh(
            &asker.name,
            "nslookup web-headless.default.svc.cluster.local",
        )
        .await;
    for p in &web {
        assert!(
            headless.contains(&format!("Address: {}", p.ip)),
            "{}: {headless}",
            p.ip
        );
    }

    // ---- NodePort on every node address, from the host
    c.kubectl(&[
        "expose",
        "deployment",
        "web",
        "--name=web-np",
        "--type=NodePort",
        "--port=80",
        "--target-port=8080",
    ])
    .await
    .ok();
    let node_port = c
        .kubectl(&[
            "get",
            "svc",
            "web-np",
            "-o",
            "jsonpath={.spec.ports[0].nodePort}",
        ])
        .await
        .ok();
    for i in 1..=NODES {
        let addr = format!("{}:{node_port}", node_ip(i));
        let page = eventually(&format!("NodePort {addr}"), 20, || async {
            http_get(&addr).await.ok()
        })
        .await;
        assert!(
            page.starts_with("HTTP/1.") && page.contains("demo-web"),
            "{addr}: {page}"
        );
    }

    // ---- `kubectl expose --type=LoadBalancer` gets EXTERNAL-IPs (the node addresses) that
    // answer from the host
    c.kubectl(&[
        "expose",
        "deployment",
        "web",
        "--name=web-lb",
        "--type=LoadBalancer",
        "--port=8081",
        "--target-port=8080",
    ])
    .await
    .ok();
    let ingress = eventually("the LoadBalancer's EXTERNAL-IP", 30, || async {
        let ips = c
            .kubectl(&[
                "get",
                "svc",
                "web-lb",
                "-o",
                "jsonpath={.status.loadBalancer.ingress[*].ip}",
            ])
            .await
            .ok();
        let ips: BTreeSet<String> = ips.split_whitespace().map(str::to_string).collect();
        (ips.len() == NODES).then_some(ips)
    })
    .await;
    let expected: BTreeSet<String> = (1..=NODES).map(node_ip).collect();
    assert_eq!(ingress, expected);
    let table = c.kubectl(&["get", "svc", "web-lb"]).await.ok();
    assert!(
        table.contains(&expected.iter().cloned().collect::<Vec<_>>().join(",")),
        "{table}"
    );
    for ip in &ingress {
        let addr = format!("{ip}:8081");
        let page = eventually(&format!("LoadBalancer {addr}"), 20, || async {
            http_get(&addr).await.ok()
        })
        .await;
        assert!(page.contains("demo-web"), "{addr}: {page}");
    }

    // ---- a rolling update to a new image and back, seen through the Service from a pod that
    // stays (the web pods are replaced)
    c.kubectl(&[
        "run",
        "client",
        "--image=busybox",
        "--restart=Never",
        "--",
        "sleep",
        "3600",
    ])
    .await
    .ok();
    c.kubectl(&[
        "wait",
        "--for=condition=Ready",
        "pod/client",
        "--timeout=60s",
    ])
    .await
    .ok();
    c.kubectl(&[
        "set",
        "image",
        "deployment/web",
        "kuard=gcr.io/kuar-demo/kuard-amd64:green",
    ])
    .await
    .ok();
    c.kubectl(&["rollout", "status", "deployment/web", "--timeout=90s"])
        .await
        .ok();
    let versions = |want: &'static str| {
        let c = &c;
        let cluster_ip = &cluster_ip;
        async move {
            let out = c
                .sh(
                    "client",
                    &format!(
                        "for i in $(seq 8); do timeout 5 wget -qO- http://{cluster_ip}/ | head -1; done; true"
                    ),
                )
                .await;
            let seen: BTreeSet<&str> = out.lines().filter(|l| l.contains("version")).collect();
            (seen.len() == 1 && seen.iter().all(|l| l.ends_with(want))).then_some(())
        }
    };
    eventually("only green pods behind the Service", 30, || {
        versions("green")
    })
    .await;
    let history = c
        .kubectl(&["rollout", "history", "deployment/web"])
        .await
        .ok();
    assert!(
        history.contains("REVISION") && history.contains('2'),
        "{history}"
    );
    c.kubectl(&["rollout", "undo", "deployment/web"]).await.ok();
    c.kubectl(&["rollout", "status", "deployment/web", "--timeout=90s"])
        .await
        .ok();
    eventually("only blue pods behind the Service", 30, || versions("blue")).await;

    drop(c);
}
