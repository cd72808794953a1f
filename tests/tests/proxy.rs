//! The proxy against a real API server and real iptables, inside network namespaces of the
//! test's own (the root namespace is never touched): a "node" namespace, where the proxy's
//! iptables-restore, conntrack and ip commands run (`--netns`), linked by a veth pair to an
//! "endpoints" namespace holding two pod addresses (10.244.1.2 and .3) with a busybox httpd on
//! each answering with its name. Connections are made with busybox wget from inside the
//! namespaces: ClusterIP balancing over both endpoints, NodePort on the node's addresses,
//! hairpin (a pod reaching itself through its service), REJECT of services without endpoints
//! (refused, not a timeout), LoadBalancer IPs published by the controller-manager's servicelb,
//! host-gw routes following Nodes, warnings as events, stale chains removed on start and on
//! service deletion, and `proxy --cleanup` (the binary, when built) removing everything.
//! The data-path scenario runs again with `--proxy-mode=nftables` (table `ip kube-proxy`
//! through `nft -f`), which also replaces iptables-mode rules, survives restarts and is
//! removed by `--cleanup`. In both modes, the rules left by partial syncs after services and
//! endpoints change are compared with those a proxy starting from scratch writes.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Event, Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::json;
use tests::{Backend, TestCluster};
use tokio_util::sync::CancellationToken;

// ---------------------------------------------------------------------------------------------
// Network namespaces.

fn run(args: &[&str]) -> std::process::Output {
    Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"))
}

fn must(args: &[&str]) -> String {
    let out = run(args);
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Two namespaces (node, endpoints), their links, and the servers in them; all removed on
/// drop, also when the test fails.
struct Net {
    node: String,
    ep: String,
    servers: Vec<Child>,
    dir: tempfile::TempDir,
}

/// The node's own address (a dummy "eth0"), and the pod addresses.
const NODE_IP: &str = "192.168.77.11";
const POD_GW: &str = "10.244.1.1";
const EP_A: &str = "10.244.1.2";
const EP_B: &str = "10.244.1.3";

impl Net {
    fn new(tag: &str) -> Net {
        let pid = std::process::id();
        let net = Net {
            node: format!("kubrs-px-{pid}-{tag}"),
            ep: format!("kubrs-px-{pid}-{tag}-ep"),
            servers: Vec::new(),
            dir: tempfile::tempdir().unwrap(),
        };
        let (n, e) = (net.node.as_str(), net.ep.as_str());
        must(&["ip", "netns", "add", n]);
        must(&["ip", "netns", "add", e]);
        for ns in [n, e] {
            must(&["ip", "-n", ns, "link", "set", "lo", "up"]);
        }
        must(&[
            "ip", "-n", n, "link", "add", "vn0", "type", "veth", "peer", "name", "ve0", "netns", e,
        ]);
        must(&[
            "ip",
            "-n",
            n,
            "addr",
            "add",
            &format!("{POD_GW}/24"),
            "dev",
            "vn0",
        ]);
        must(&["ip", "-n", n, "link", "set", "vn0", "up"]);
        // The node's "uplink": a veth pair inside the node (the kernel may lack `dummy`).
        must(&[
            "ip",
            "-n",
            n,
            "link",
            "add",
            "eth0",
            "type",
            "veth",
            "peer",
            "name",
            "eth0-peer",
        ]);
        must(&["ip", "-n", n, "link", "set", "eth0-peer", "up"]);
        must(&[
            "ip",
            "-n",
            n,
            "addr",
            "add",
            &format!("{NODE_IP}/24"),
            "dev",
            "eth0",
        ]);
        must(&["ip", "-n", n, "link", "set", "eth0", "up"]);
        must(&[
            "ip",
            "-n",
            n,
            "route",
            "add",
            "default",
            "via",
            "192.168.77.1",
        ]);
        must(&[
            "ip",
            "netns",
            "exec",
            n,
            "sysctl",
            "-qw",
            "net.ipv4.ip_forward=1",
        ]);
        must(&[
            "ip",
            "-n",
            e,
            "addr",
            "add",
            &format!("{EP_A}/24"),
            "dev",
            "ve0",
        ]);
        must(&[
            "ip",
            "-n",
            e,
            "addr",
            "add",
            &format!("{EP_B}/24"),
            "dev",
            "ve0",
        ]);
        must(&["ip", "-n", e, "link", "set", "ve0", "up"]);
        must(&["ip", "-n", e, "route", "add", "default", "via", POD_GW]);
        net
    }

    /// A busybox httpd on `addr:8080` in the endpoints namespace answering `name`.
    fn serve(&mut self, addr: &str, name: &str) {
        let root = self.dir.path().join(name);
        std::fs::create_dir_all(&root).unwrap();
        std::fs::write(root.join("index.html"), format!("{name}\n")).unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", &self.ep, "busybox", "httpd", "-f"])
            .arg("-p")
            .arg(format!("{addr}:8080"))
            .arg("-h")
            .arg(&root)
            .stdin(Stdio::null())
            .spawn()
            .expect("busybox httpd");
        self.servers.push(child);
    }

    fn nat_rules(&self) -> String {
        must(&[
            "ip",
            "netns",
            "exec",
            &self.node,
            "iptables-save",
            "-t",
            "nat",
        ])
    }

    fn filter_rules(&self) -> String {
        must(&[
            "ip",
            "netns",
            "exec",
            &self.node,
            "iptables-save",
            "-t",
            "filter",
        ])
    }

    /// `nft list table ip kube-proxy`, or "" when there is none.
    fn nft_table(&self) -> String {
        let out = run(&[
            "ip",
            "netns",
            "exec",
            &self.node,
            "nft",
            "list",
            "table",
            "ip",
            "kube-proxy",
        ]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn our_routes(&self) -> String {
        must(&["ip", "-n", &self.node, "-4", "route", "show", "proto", "17"])
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for c in &mut self.servers {
            let _ = c.kill();
            let _ = c.wait();
        }
        for ns in [&self.ep, &self.node] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// `busybox wget` of `url` from inside `netns`: the body, or the error text, and how long it
/// took.
async fn fetch(netns: &str, url: &str) -> (Result<String, String>, Duration) {
    let start = Instant::now();
    let out = tokio::process::Command::new("timeout")
        .args([
            "10", "ip", "netns", "exec", netns, "busybox", "wget", "-q", "-O", "-", url,
        ])
        .stdin(Stdio::null())
        .output()
        .await
        .expect("wget runs");
    let took = start.elapsed();
    if out.status.success() {
        (
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_string()),
            took,
        )
    } else {
        (
            Err(format!(
                "{} (status {})",
                String::from_utf8_lossy(&out.stderr).trim(),
                out.status
            )),
            took,
        )
    }
}

/// The set of answers of `n` fetches.
async fn answers(netns: &str, url: &str, n: usize) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    for _ in 0..n {
        match fetch(netns, url).await.0 {
            Ok(body) => {
                seen.insert(body);
            }
            Err(e) => panic!("{url} from {netns}: {e}"),
        }
    }
    seen
}

/// Poll `check` until it returns Ok, for up to 30 s.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match check().await {
            Ok(()) => return,
            Err(e) if Instant::now() > deadline => panic!("{what}: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// API objects.

fn service(name: &str, cluster_ip: &str, type_: &str, node_port: Option<i32>) -> Service {
    let mut port = json!({"name": "http", "port": 80, "protocol": "TCP", "targetPort": "web-port"});
    if let Some(np) = node_port {
        port["nodePort"] = json!(np);
    }
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"type": type_, "clusterIP": cluster_ip, "ports": [port]},
    }))
    .unwrap()
}

fn slice(service: &str, ips: &[&str]) -> EndpointSlice {
    serde_json::from_value(json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": format!("{service}-1"),
            "namespace": "default",
            "labels": {"kubernetes.io/service-name": service},
        },
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": ips.iter().map(|ip| json!({
            "addresses": [ip],
            "nodeName": "node-a",
            "conditions": {"ready": true, "serving": true, "terminating": false},
        })).collect::<Vec<_>>(),
    }))
    .unwrap()
}

fn node(name: &str, ip: &str, pod_cidr: &str) -> Node {
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name},
        "spec": {"podCIDR": pod_cidr, "podCIDRs": [pod_cidr]},
        "status": {
            "addresses": [{"type": "InternalIP", "address": ip}, {"type": "Hostname", "address": name}],
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "ready"}],
        },
    }))
    .unwrap()
}

async fn create_node(client: &Client, n: &Node) {
    let api: Api<Node> = Api::all(client.clone());
    api.create(&PostParams::default(), n).await.unwrap();
    // Make sure the status is there (some servers drop it on create).
    let status = json!({"status": n.status});
    api.patch_status(
        n.metadata.name.as_deref().unwrap(),
        &PatchParams::default(),
        &Patch::Merge(&status),
    )
    .await
    .unwrap();
}

// ---------------------------------------------------------------------------------------------
// The proxy.

struct RunningProxy {
    token: CancellationToken,
    running: proxy::Running,
}

impl RunningProxy {
    async fn start(c: &TestCluster, netns: &str) -> RunningProxy {
        Self::start_with(c, netns, &[]).await
    }

    async fn start_with(c: &TestCluster, netns: &str, extra: &[&str]) -> RunningProxy {
        let mut args = vec![
            "proxy".to_string(),
            format!("--kubeconfig={}", c.kubeconfig.display()),
            format!("--netns={netns}"),
            "--hostname-override=node-a".into(),
            "--cluster-cidr=10.244.0.0/16".into(),
            "--healthz-bind-address=127.0.0.1:0".into(),
            "--metrics-bind-address=127.0.0.1:0".into(),
            "--min-sync-period=100ms".into(),
        ];
        args.extend(extra.iter().map(|a| a.to_string()));
        let args = <proxy::Args as clap::Parser>::try_parse_from(args).expect("proxy flags");
        let config = proxy::Config::try_from(args).expect("proxy config");
        let token = CancellationToken::new();
        let running = proxy::start(config, c.client().await, token.clone())
            .await
            .expect("proxy starts");
        RunningProxy { token, running }
    }

    async fn get(&self, addr: std::net::SocketAddr, path: &str) -> (u16, String) {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        s.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut buf = String::new();
        s.read_to_string(&mut buf).await.unwrap();
        let status = buf
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        (status, buf)
    }

    async fn stop(mut self) {
        self.token.cancel();
        let _ = (&mut self.running.task).await;
    }
}

impl Drop for RunningProxy {
    fn drop(&mut self) {
        self.token.cancel();
    }
}

fn proxy_binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("PROXY_BIN") {
        return Some(p.into());
    }
    // <target>/debug/deps/proxy-<hash> → <target>/debug/proxy
    let exe = std::env::current_exe().ok()?;
    let p = exe.parent()?.parent()?.join("proxy");
    p.is_file().then_some(p)
}

fn has_chain(save: &str, chain: &str) -> bool {
    save.lines().any(|l| l.starts_with(&format!(":{chain} ")))
}

fn svc_chain(name: &str) -> String {
    proxy::rules::svc_chain(&proxy::model::PortKey {
        namespace: "default".into(),
        name: name.into(),
        port_name: "http".into(),
        protocol: proxy::model::Protocol::Tcp,
    })
}

// ---------------------------------------------------------------------------------------------
// Scenarios.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_ip_node_port_hairpin_and_reject_work_through_real_iptables() {
    data_path(proxy::sync::Mode::Iptables).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_ip_node_port_hairpin_and_reject_work_through_real_nftables() {
    data_path(proxy::sync::Mode::Nftables).await;
}

/// Whether the service's rules are in the kernel, in the mode's own terms.
fn programmed(net: &Net, mode: proxy::sync::Mode, name: &str) -> bool {
    let key = proxy::model::PortKey {
        namespace: "default".into(),
        name: name.into(),
        port_name: "http".into(),
        protocol: proxy::model::Protocol::Tcp,
    };
    match mode {
        proxy::sync::Mode::Iptables => has_chain(&net.nat_rules(), &svc_chain(name)),
        proxy::sync::Mode::Nftables => net.nft_table().contains(&format!(
            "chain {} {{",
            proxy::nftables::service_chain(&key)
        )),
    }
}

async fn data_path(mode: proxy::sync::Mode) {
    use proxy::sync::Mode;
    component_base::logging::init("warn");
    let mut net = Net::new(match mode {
        Mode::Iptables => "dp",
        Mode::Nftables => "nf",
    });
    net.serve(EP_A, "ep-a");
    net.serve(EP_B, "ep-b");
    let cluster = TestCluster::start(Backend::Embedded).await.unwrap();
    let client = cluster.client().await;
    let svcs: Api<Service> = Api::namespaced(client.clone(), "default");
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), "default");
    let pp = PostParams::default();
    svcs.create(
        &pp,
        &service("web", "10.96.100.10", "NodePort", Some(30080)),
    )
    .await
    .unwrap();
    slices
        .create(&pp, &slice("web", &[EP_A, EP_B]))
        .await
        .unwrap();
    svcs.create(&pp, &service("empty", "10.96.100.11", "ClusterIP", None))
        .await
        .unwrap();
    svcs.create(&pp, &service("solo", "10.96.100.12", "ClusterIP", None))
        .await
        .unwrap();
    slices.create(&pp, &slice("solo", &[EP_A])).await.unwrap();

    let px = match mode {
        Mode::Iptables => RunningProxy::start(&cluster, &net.node).await,
        Mode::Nftables => {
            RunningProxy::start_with(&cluster, &net.node, &["--proxy-mode=nftables"]).await
        }
    };
    let node = net.node.clone();
    eventually("cluster IP answers", || {
        let node = node.clone();
        async move { fetch(&node, "http://10.96.100.10/").await.0.map(|_| ()) }
    })
    .await;

    // ClusterIP from the node itself (OUTPUT): both endpoints over several connections.
    let seen = answers(&net.node, "http://10.96.100.10/", 24).await;
    assert_eq!(
        seen,
        BTreeSet::from(["ep-a".to_string(), "ep-b".to_string()])
    );

    // NodePort on every node address.
    for addr in [NODE_IP, POD_GW] {
        let seen = answers(&net.node, &format!("http://{addr}:30080/"), 24).await;
        assert_eq!(seen.len(), 2, "node port on {addr}: {seen:?}");
    }

    // Hairpin: the pod behind "solo" reaches itself through the service (from the endpoints
    // namespace, source 10.244.1.2, through the node's PREROUTING); needs the masquerade.
    let seen = answers(&net.ep, "http://10.96.100.12/", 3).await;
    assert_eq!(seen, BTreeSet::from(["ep-a".to_string()]));

    // No endpoints: refused at once, not a timeout.
    let (res, took) = fetch(&net.node, "http://10.96.100.11/").await;
    let err = res.expect_err("a service without endpoints must not answer");
    assert!(err.contains("Connection refused"), "{err}");
    assert!(took < Duration::from_secs(5), "took {took:?}");
    match mode {
        Mode::Iptables => assert!(net
            .filter_rules()
            .contains("\"default/empty:http has no endpoints\"")),
        Mode::Nftables => {
            let table = net.nft_table();
            assert!(
                table.contains("10.96.100.11 . tcp . 80 : goto reject-chain"),
                "{table}"
            );
            // Nothing of the iptables mode.
            assert!(!net.nat_rules().contains("KUBE-"));
        }
    }

    // An endpoint goes: only the other one answers.
    slices
        .replace("web-1", &pp, &{
            let mut s = slice("web", &[EP_B]);
            s.metadata.resource_version =
                slices.get("web-1").await.unwrap().metadata.resource_version;
            s
        })
        .await
        .unwrap();
    let node = net.node.clone();
    eventually("removed endpoint no longer used", || {
        let node = node.clone();
        async move {
            let seen = answers(&node, "http://10.96.100.10/", 12).await;
            if seen == BTreeSet::from(["ep-b".to_string()]) {
                Ok(())
            } else {
                Err(format!("{seen:?}"))
            }
        }
    })
    .await;

    // Health and metrics.
    let (status, _) = px.get(px.running.healthz_addr, "/healthz").await;
    assert_eq!(status, 200);
    let (_, metrics) = px.get(px.running.metrics_addr, "/metrics").await;
    for m in [
        "kubeproxy_sync_proxy_rules_duration_seconds_count",
        "kubeproxy_sync_proxy_rules_last_timestamp_seconds",
        "kubeproxy_sync_proxy_rules_iptables_restore_failures_total 0",
    ] {
        assert!(metrics.contains(m), "{m} missing:\n{metrics}");
    }

    // Deleting the service removes its chains.
    assert!(programmed(&net, mode, "web"));
    svcs.delete("web", &DeleteParams::default()).await.unwrap();
    let n = &net;
    eventually("deleted service's chains removed", || async {
        let (rules, leftover) = match mode {
            Mode::Iptables => {
                let save = n.nat_rules();
                let left = save.contains("default/web:http");
                (save, left)
            }
            Mode::Nftables => {
                let table = n.nft_table();
                let left = table.contains("default/web/") || table.contains("10.96.100.10");
                (table, left)
            }
        };
        if programmed(n, mode, "web") || leftover {
            Err(rules)
        } else {
            Ok(())
        }
    })
    .await;
    // The other services are intact.
    assert!(programmed(&net, mode, "solo"));
    assert_eq!(
        fetch(&net.node, "http://10.96.100.12/").await.0.as_deref(),
        Ok("ep-a")
    );
    px.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_balancer_ips_from_servicelb_answer_and_routes_follow_nodes() {
    component_base::logging::init("warn");
    let mut net = Net::new("lb");
    net.serve(EP_A, "ep-a");
    let cluster = TestCluster::start(Backend::Embedded).await.unwrap();
    let client = cluster.client().await;
    create_node(&client, &node("node-a", NODE_IP, "10.244.1.0/24")).await;
    create_node(&client, &node("node-b", "192.168.77.12", "10.244.2.0/24")).await;

    // The controller-manager with only the service load balancer.
    let cm_args = [
        "controller-manager".to_string(),
        format!("--kubeconfig={}", cluster.kubeconfig.display()),
        "--secure-port=0".into(),
        "--leader-elect=false".into(),
        "--controllers=servicelb".into(),
    ];
    let cm_config = controller_manager::Config::try_from(
        <controller_manager::Args as clap::Parser>::try_parse_from(cm_args).unwrap(),
    )
    .unwrap();
    let cm_token = CancellationToken::new();
    let cm = controller_manager::start(cm_config, cm_token.clone())
        .await
        .unwrap();

    let svcs: Api<Service> = Api::namespaced(client.clone(), "default");
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), "default");
    let pp = PostParams::default();
    svcs.create(
        &pp,
        &service("lb", "10.96.100.20", "LoadBalancer", Some(30090)),
    )
    .await
    .unwrap();
    slices.create(&pp, &slice("lb", &[EP_A])).await.unwrap();
    let s2 = svcs.clone();
    eventually("servicelb publishes both nodes", || {
        let s2 = s2.clone();
        async move {
            let s = s2.get("lb").await.map_err(|e| e.to_string())?;
            let ips: Vec<String> = s
                .status
                .and_then(|s| s.load_balancer)
                .and_then(|l| l.ingress)
                .unwrap_or_default()
                .into_iter()
                .filter_map(|i| i.ip)
                .collect();
            if ips == [NODE_IP, "192.168.77.12"] {
                Ok(())
            } else {
                Err(format!("{ips:?}"))
            }
        }
    })
    .await;

    let px = RunningProxy::start(&cluster, &net.node).await;
    // The LB IP that is this node's address answers on the service port.
    let node_ns = net.node.clone();
    eventually("load-balancer IP answers", || {
        let n = node_ns.clone();
        async move {
            match fetch(&n, &format!("http://{NODE_IP}/")).await.0 {
                Ok(b) if b == "ep-a" => Ok(()),
                other => Err(format!("{other:?}")),
            }
        }
    })
    .await;
    let nat = net.nat_rules();
    assert!(nat.contains("\"default/lb:http loadbalancer IP\""), "{nat}");

    // Host-gw: a route to node-b's pod CIDR, none to our own.
    let n = &net;
    eventually("route to node-b", || async {
        let r = n.our_routes();
        if r.contains("10.244.2.0/24 via 192.168.77.12") && !r.contains("10.244.1.0/24") {
            Ok(())
        } else {
            Err(r)
        }
    })
    .await;

    // Two services claiming the same external IP:port: the younger one is reported and
    // skipped, the older one keeps working.
    let mut a = service("ext-a", "10.96.100.21", "ClusterIP", None);
    a.spec.as_mut().unwrap().external_ips = Some(vec!["192.168.77.50".into()]);
    svcs.create(&pp, &a).await.unwrap();
    slices.create(&pp, &slice("ext-a", &[EP_A])).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await; // distinct creation timestamps
    let mut b = service("ext-b", "10.96.100.22", "ClusterIP", None);
    b.spec.as_mut().unwrap().external_ips = Some(vec!["192.168.77.50".into()]);
    svcs.create(&pp, &b).await.unwrap();
    let events: Api<Event> = Api::namespaced(client.clone(), "default");
    eventually("PortConflict event on ext-b", || {
        let events = events.clone();
        async move {
            let list = events
                .list(&ListParams::default())
                .await
                .map_err(|e| e.to_string())?;
            let found = list.items.iter().any(|e| {
                e.reason.as_deref() == Some("PortConflict")
                    && e.involved_object.name.as_deref() == Some("ext-b")
                    && e.type_.as_deref() == Some("Warning")
                    && e.source.as_ref().and_then(|s| s.component.as_deref()) == Some("kube-proxy")
            });
            if found {
                Ok(())
            } else {
                Err(format!(
                    "{:?}",
                    list.items
                        .iter()
                        .map(|e| (e.reason.clone(), e.message.clone()))
                        .collect::<Vec<_>>()
                ))
            }
        }
    })
    .await;
    let nat = net.nat_rules();
    assert!(nat.contains("\"default/ext-a:http external IP\""), "{nat}");
    assert!(!nat.contains("\"default/ext-b:http external IP\""), "{nat}");
    // ext-b has no endpoints: its cluster IP is rejected, its lost external IP is not touched.
    let filter = net.filter_rules();
    assert!(
        filter.contains("-d 10.96.100.22/32") && !filter.contains("-d 192.168.77.50/32"),
        "{filter}"
    );

    // node-b leaves: its route goes, and servicelb drops its address.
    Api::<Node>::all(client.clone())
        .delete("node-b", &DeleteParams::default())
        .await
        .unwrap();
    eventually("route to node-b removed", || async {
        let r = n.our_routes();
        if r.trim().is_empty() {
            Ok(())
        } else {
            Err(r)
        }
    })
    .await;
    let s2 = svcs.clone();
    eventually("servicelb follows the node", || {
        let s2 = s2.clone();
        async move {
            let s = s2.get("lb").await.map_err(|e| e.to_string())?;
            let ips: Vec<String> = s
                .status
                .and_then(|s| s.load_balancer)
                .and_then(|l| l.ingress)
                .unwrap_or_default()
                .into_iter()
                .filter_map(|i| i.ip)
                .collect();
            (ips == [NODE_IP]).then_some(()).ok_or(format!("{ips:?}"))
        }
    })
    .await;
    // Type changed away from LoadBalancer: the ingress is cleared.
    svcs.patch(
        "lb",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"type": "NodePort"}})),
    )
    .await
    .unwrap();
    eventually("ingress cleared", || {
        let s2 = svcs.clone();
        async move {
            let s = s2.get("lb").await.map_err(|e| e.to_string())?;
            let n = s
                .status
                .and_then(|s| s.load_balancer)
                .and_then(|l| l.ingress)
                .map_or(0, |i| i.len());
            (n == 0).then_some(()).ok_or(format!("{n} ingress entries"))
        }
    })
    .await;
    px.stop().await;
    cm_token.cancel();
    let _ = cm.task.await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_rebuilds_from_scratch_and_cleanup_removes_everything() {
    component_base::logging::init("warn");
    let mut net = Net::new("rs");
    net.serve(EP_A, "ep-a");
    let cluster = TestCluster::start(Backend::Embedded).await.unwrap();
    let client = cluster.client().await;
    let svcs: Api<Service> = Api::namespaced(client.clone(), "default");
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), "default");
    let pp = PostParams::default();
    svcs.create(&pp, &service("web", "10.96.100.30", "ClusterIP", None))
        .await
        .unwrap();
    slices.create(&pp, &slice("web", &[EP_A])).await.unwrap();
    create_node(&client, &node("node-b", "192.168.77.12", "10.244.2.0/24")).await;
    // Leftovers of an earlier run: a service chain nobody wants any more.
    must(&[
        "ip",
        "netns",
        "exec",
        &net.node,
        "iptables",
        "-t",
        "nat",
        "-N",
        "KUBE-SVC-LEFTOVER0000000",
    ]);

    let px = RunningProxy::start(&cluster, &net.node).await;
    let n = &net;
    eventually("first sync", || async {
        match fetch(&n.node, "http://10.96.100.30/").await.0 {
            Ok(_) => Ok(()),
            Err(e) => Err(e),
        }
    })
    .await;
    assert!(!has_chain(&net.nat_rules(), "KUBE-SVC-LEFTOVER0000000"));
    px.stop().await;

    // Stopped: the rules stay (no gap while the proxy restarts).
    assert_eq!(
        fetch(&net.node, "http://10.96.100.30/").await.0.as_deref(),
        Ok("ep-a")
    );
    let before = net.nat_rules();

    // A restart rebuilds the same rules, and the service keeps answering throughout.
    let px = RunningProxy::start(&cluster, &net.node).await;
    let (pn, hz) = (&px, px.running.healthz_addr);
    eventually("restarted proxy synced", || async {
        let (status, body) = pn.get(hz, "/healthz").await;
        (status == 200).then_some(()).ok_or(body)
    })
    .await;
    assert_eq!(
        fetch(&net.node, "http://10.96.100.30/").await.0.as_deref(),
        Ok("ep-a")
    );
    let rules = |s: &str| -> BTreeMap<String, usize> {
        let mut m = BTreeMap::new();
        for l in s.lines().filter(|l| l.starts_with("-A ")) {
            *m.entry(l.to_string()).or_insert(0) += 1;
        }
        m
    };
    assert_eq!(
        rules(&net.nat_rules()),
        rules(&before),
        "jumps must not be duplicated"
    );
    px.stop().await;

    // --cleanup removes every KUBE-* chain, the jumps and our routes.
    assert!(!net.our_routes().trim().is_empty());
    match proxy_binary() {
        Some(bin) => {
            let out = Command::new("ip")
                .args(["netns", "exec", &net.node])
                .arg(&bin)
                .arg("--cleanup")
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "proxy --cleanup: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        None => {
            eprintln!("proxy binary not built (cargo build -p proxy); cleaning up in-process");
            let mut dp = proxy::dataplane::System::new(Some(net.node.clone()));
            proxy::cleanup(&mut dp).unwrap();
        }
    }
    for save in [net.nat_rules(), net.filter_rules()] {
        assert!(!save.contains("KUBE-"), "{save}");
    }
    assert!(net.our_routes().trim().is_empty());
    let (res, _) = fetch(&net.node, "http://10.96.100.30/").await;
    assert!(res.is_err(), "no rules, no service: {res:?}");
}

/// The rules of ours in the kernel, in a form that does not depend on the order chains,
/// sets and elements were created in: per chain its rules in order; per set or map its
/// elements sorted. (iptables-save of nat and filter, or the nftables table.)
fn kernel_rules(net: &Net, mode: proxy::sync::Mode) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    match mode {
        proxy::sync::Mode::Iptables => {
            for (table, save) in [("nat", net.nat_rules()), ("filter", net.filter_rules())] {
                for l in save.lines() {
                    if let Some(c) = l.strip_prefix(':').filter(|c| c.starts_with("KUBE-")) {
                        let chain = c.split_whitespace().next().unwrap_or_default();
                        out.entry(format!("{table} {chain}")).or_default();
                    } else if let Some(rule) = l.strip_prefix("-A ") {
                        let chain = rule.split_whitespace().next().unwrap_or_default();
                        out.entry(format!("{table} {chain}"))
                            .or_default()
                            .push(rule.to_string());
                    }
                }
            }
        }
        proxy::sync::Mode::Nftables => {
            let table = net.nft_table();
            let mut block = String::new();
            for l in table.lines().map(str::trim) {
                if l.ends_with('{') && !l.starts_with("elements") {
                    block = l.to_string();
                    out.entry(block.clone()).or_default();
                } else if l == "}" || l.is_empty() {
                } else {
                    out.entry(block.clone()).or_default().push(l.to_string());
                }
            }
            for (name, lines) in out.iter_mut() {
                if name.starts_with("set ") || name.starts_with("map ") {
                    // Elements are listed in hash order, several to a line.
                    let text = lines.join(" ");
                    let body = text.split_once("elements = {").map_or("", |(_, b)| b);
                    let mut elems: Vec<String> = body
                        .trim_end_matches('}')
                        .split(',')
                        .map(|e| e.trim().to_string())
                        .filter(|e| !e.is_empty())
                        .collect();
                    elems.sort();
                    lines.retain(|l| !l.starts_with("elements") && l.contains(';'));
                    lines.extend(elems);
                }
            }
        }
    }
    out
}

/// Services and endpoints change under a running proxy (partial syncs only: an endpoint
/// moves, a service goes, one comes, one loses its endpoints); its rules must then be exactly
/// those a proxy starting from scratch writes for the same objects, in a second node
/// namespace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partial_syncs_leave_the_rules_a_full_sync_writes_in_both_modes() {
    use proxy::sync::Mode;
    component_base::logging::init("warn");
    for mode in [Mode::Iptables, Mode::Nftables] {
        let (tag, flags): (&str, &[&str]) = match mode {
            Mode::Iptables => ("pi", &[]),
            Mode::Nftables => ("pn", &["--proxy-mode=nftables"]),
        };
        let mut net = Net::new(tag);
        net.serve(EP_A, "ep-a");
        net.serve(EP_B, "ep-b");
        let cluster = TestCluster::start(Backend::Embedded).await.unwrap();
        let client = cluster.client().await;
        let svcs: Api<Service> = Api::namespaced(client.clone(), "default");
        let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), "default");
        let pp = PostParams::default();
        for (name, ip, eps) in [
            ("a", "10.96.100.41", &[EP_A, EP_B][..]),
            ("b", "10.96.100.42", &[EP_A][..]),
            ("c", "10.96.100.43", &[EP_B][..]),
        ] {
            svcs.create(&pp, &service(name, ip, "NodePort", None))
                .await
                .unwrap();
            slices.create(&pp, &slice(name, eps)).await.unwrap();
        }
        let px = RunningProxy::start_with(&cluster, &net.node, flags).await;
        let n = &net;
        eventually("first sync", || async {
            fetch(&n.node, "http://10.96.100.42/").await.0.map(|_| ())
        })
        .await;

        let replace = |name: &'static str, eps: &'static [&'static str]| {
            let slices = slices.clone();
            async move {
                let mut s = slice(name, eps);
                let cur = slices.get(&format!("{name}-1")).await.unwrap();
                s.metadata.resource_version = cur.metadata.resource_version;
                slices
                    .replace(&format!("{name}-1"), &PostParams::default(), &s)
                    .await
                    .unwrap();
            }
        };
        replace("a", &[EP_B]).await;
        svcs.delete("b", &DeleteParams::default()).await.unwrap();
        slices
            .delete("b-1", &DeleteParams::default())
            .await
            .unwrap();
        svcs.create(&pp, &service("d", "10.96.100.44", "NodePort", None))
            .await
            .unwrap();
        slices.create(&pp, &slice("d", &[EP_A])).await.unwrap();
        replace("c", &[]).await;
        eventually("changes applied", || async {
            let d = fetch(&n.node, "http://10.96.100.44/").await.0?;
            let c = fetch(&n.node, "http://10.96.100.43/").await.0;
            if d != "ep-a" || c.is_ok() || programmed(n, mode, "b") {
                return Err(format!("d: {d}, c: {c:?}, b still programmed?"));
            }
            Ok(())
        })
        .await;
        assert_eq!(
            answers(&net.node, "http://10.96.100.41/", 6).await,
            BTreeSet::from(["ep-b".to_string()])
        );

        // A proxy starting from scratch in another node namespace.
        let fresh = Net::new(&format!("{tag}f"));
        let px2 = RunningProxy::start_with(&cluster, &fresh.node, flags).await;
        let want = || kernel_rules(&fresh, mode);
        eventually("fresh proxy synced", || async {
            programmed(&fresh, mode, "d")
                .then_some(())
                .ok_or_else(|| "not yet".to_string())
        })
        .await;
        let mut got = kernel_rules(&net, mode);
        let deadline = Instant::now() + Duration::from_secs(10);
        while got != want() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(200)).await;
            got = kernel_rules(&net, mode);
        }
        assert_eq!(
            got,
            want(),
            "{mode:?}: partial syncs differ from a full sync"
        );
        assert!(got.keys().any(|k| k.contains(&match mode {
            Mode::Iptables => svc_chain("d"),
            Mode::Nftables => "service-".to_string(),
        })));
        px2.stop().await;
        px.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_affinity_and_external_ips_work_in_both_modes() {
    use proxy::sync::Mode;
    component_base::logging::init("warn");
    for mode in [Mode::Iptables, Mode::Nftables] {
        let mut net = Net::new(match mode {
            Mode::Iptables => "sa",
            Mode::Nftables => "sn",
        });
        net.serve(EP_A, "ep-a");
        net.serve(EP_B, "ep-b");
        let cluster = TestCluster::start(Backend::Embedded).await.unwrap();
        let client = cluster.client().await;
        let svcs: Api<Service> = Api::namespaced(client.clone(), "default");
        let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), "default");
        let pp = PostParams::default();
        let mut sticky = service("sticky", "10.96.100.50", "ClusterIP", None);
        let spec = sticky.spec.as_mut().unwrap();
        spec.session_affinity = Some("ClientIP".into());
        spec.external_ips = Some(vec!["192.168.77.50".into()]);
        svcs.create(&pp, &sticky).await.unwrap();
        slices
            .create(&pp, &slice("sticky", &[EP_A, EP_B]))
            .await
            .unwrap();
        let mode_flag = format!("--proxy-mode={}", format!("{mode:?}").to_lowercase());
        let px = RunningProxy::start_with(&cluster, &net.node, &[mode_flag.as_str()]).await;
        let node = net.node.clone();
        eventually("cluster IP answers", || {
            let node = node.clone();
            async move { fetch(&node, "http://10.96.100.50/").await.0.map(|_| ()) }
        })
        .await;
        // ClientIP affinity: every connection from one client goes to the same endpoint,
        // through the cluster IP and through the external IP alike.
        let seen = answers(&net.node, "http://10.96.100.50/", 12).await;
        assert_eq!(seen.len(), 1, "{mode:?}: affinity broken: {seen:?}");
        let ext = answers(&net.node, "http://192.168.77.50/", 6).await;
        assert_eq!(ext, seen, "{mode:?}: external IP");
        if mode == Mode::Nftables {
            // The affinity set of the chosen endpoint holds the client, with a timeout.
            let table = net.nft_table();
            assert!(
                table.contains("set affinity-") && table.contains("expires"),
                "{table}"
            );
        }
        px.stop().await;
    }
}

/// `proxy --cleanup` in the node namespace: the binary when built, else in-process.
fn run_cleanup(net: &Net) {
    match proxy_binary() {
        Some(bin) => {
            let out = Command::new("ip")
                .args(["netns", "exec", &net.node])
                .arg(&bin)
                .arg("--cleanup")
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "proxy --cleanup: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        None => {
            let mut dp = proxy::dataplane::System::new(Some(net.node.clone()));
            proxy::cleanup(&mut dp).unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switching_modes_replaces_the_other_modes_rules_and_nftables_survives_restarts_and_cleanup()
{
    component_base::logging::init("warn");
    let mut net = Net::new("nr");
    net.serve(EP_A, "ep-a");
    let cluster = TestCluster::start(Backend::Embedded).await.unwrap();
    let client = cluster.client().await;
    let svcs: Api<Service> = Api::namespaced(client.clone(), "default");
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), "default");
    let pp = PostParams::default();
    svcs.create(&pp, &service("web", "10.96.100.40", "ClusterIP", None))
        .await
        .unwrap();
    slices.create(&pp, &slice("web", &[EP_A])).await.unwrap();
    let nft = ["--proxy-mode=nftables"];
    let n = &net;
    let answers_ep_a = || async {
        match fetch(&n.node, "http://10.96.100.40/").await.0 {
            Ok(b) if b == "ep-a" => Ok(()),
            other => Err(format!("{other:?}")),
        }
    };

    // The iptables mode first.
    let px = RunningProxy::start(&cluster, &net.node).await;
    eventually("iptables mode answers", answers_ep_a).await;
    assert!(has_chain(&net.nat_rules(), &svc_chain("web")));
    px.stop().await;

    // Switched to nftables: the iptables rules go, the table takes over.
    let px = RunningProxy::start_with(&cluster, &net.node, &nft).await;
    eventually("nftables mode took over", || async {
        let (nat, table) = (n.nat_rules(), n.nft_table());
        if nat.contains("KUBE-") || !table.contains("10.96.100.40 . tcp . 80") {
            Err(format!("{nat}\n{table}"))
        } else {
            Ok(())
        }
    })
    .await;
    eventually("nftables mode answers", answers_ep_a).await;
    let before = net.nft_table();
    px.stop().await;

    // Stopped: the table stays; restarted: the same table, rebuilt in one transaction.
    assert_eq!(
        fetch(&net.node, "http://10.96.100.40/").await.0.as_deref(),
        Ok("ep-a")
    );
    let px = RunningProxy::start_with(&cluster, &net.node, &nft).await;
    let (pn, hz) = (&px, px.running.healthz_addr);
    eventually("restarted proxy synced", || async {
        let (status, body) = pn.get(hz, "/healthz").await;
        (status == 200).then_some(()).ok_or(body)
    })
    .await;
    assert_eq!(
        fetch(&net.node, "http://10.96.100.40/").await.0.as_deref(),
        Ok("ep-a")
    );
    assert_eq!(net.nft_table(), before);
    px.stop().await;

    // And back to iptables: the table goes, the iptables rules take over.
    let px = RunningProxy::start(&cluster, &net.node).await;
    eventually("iptables mode took over again", || async {
        if n.nft_table().is_empty() && has_chain(&n.nat_rules(), &svc_chain("web")) {
            Ok(())
        } else {
            Err(n.nft_table())
        }
    })
    .await;
    eventually("iptables mode answers again", answers_ep_a).await;
    px.stop().await;
    let px = RunningProxy::start_with(&cluster, &net.node, &nft).await;
    eventually("nftables mode answers again", answers_ep_a).await;
    px.stop().await;

    // --cleanup removes the table.
    run_cleanup(&net);
    assert_eq!(net.nft_table(), "");
    let (res, _) = fetch(&net.node, "http://10.96.100.40/").await;
    assert!(res.is_err(), "no rules, no service: {res:?}");
}

fn conntrack_installed() -> bool {
    Command::new("conntrack")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The endpoint addresses UDP conntrack entries to `dst` were DNATed to (reply sources).
fn udp_flows_to(netns: &str, dst: &str) -> BTreeSet<String> {
    let out = run(&["ip", "netns", "exec", netns, "conntrack", "-L", "-p", "udp"]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains(&format!("dst={dst} ")))
        .filter_map(|l| {
            // The second src= is the reply direction's source: the endpoint.
            l.match_indices("src=")
                .nth(1)
                .and_then(|(i, _)| l[i + 4..].split_whitespace().next())
                .map(String::from)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_udp_conntrack_entries_are_deleted_when_endpoints_go() {
    component_base::logging::init("warn");
    if !conntrack_installed() {
        eprintln!("conntrack is not installed (deploy/setup.sh installs it); skipping");
        return;
    }
    let net = Net::new("ct");
    let cluster = TestCluster::start(Backend::Embedded).await.unwrap();
    let client = cluster.client().await;
    let svcs: Api<Service> = Api::namespaced(client.clone(), "default");
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), "default");
    let pp = PostParams::default();
    let svc: Service = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "dns", "namespace": "default"},
        "spec": {"clusterIP": "10.96.100.40", "ports": [{"name": "dns", "port": 53, "protocol": "UDP"}]},
    }))
    .unwrap();
    svcs.create(&pp, &svc).await.unwrap();
    let udp_slice = |ips: &[&str]| -> EndpointSlice {
        let mut s = slice("dns", ips);
        s.ports = Some(vec![k8s_openapi::api::discovery::v1::EndpointPort {
            name: Some("dns".into()),
            port: Some(5353),
            protocol: Some("UDP".into()),
            app_protocol: None,
        }]);
        s
    };
    slices.create(&pp, &udp_slice(&[EP_A, EP_B])).await.unwrap();
    let px = RunningProxy::start(&cluster, &net.node).await;
    let n = &net;
    eventually("UDP service programmed", || async {
        let nat = n.nat_rules();
        if nat.contains("default/dns:dns -> 10.244.1.3:5353") {
            Ok(())
        } else {
            Err(nat)
        }
    })
    .await;
    // Datagrams from new source ports until both endpoints have entries.
    eventually("conntrack entries to both endpoints", || async {
        must(&[
            "ip",
            "netns",
            "exec",
            &n.node,
            "bash",
            "-c",
            "echo hi > /dev/udp/10.96.100.40/53",
        ]);
        let eps = udp_flows_to(&n.node, "10.96.100.40");
        if eps.contains(EP_A) && eps.contains(EP_B) {
            Ok(())
        } else {
            Err(format!("{eps:?}"))
        }
    })
    .await;
    // EP_A goes: its entries are deleted, EP_B's stay.
    let current = slices.get("dns-1").await.unwrap();
    let mut next = udp_slice(&[EP_B]);
    next.metadata.resource_version = current.metadata.resource_version;
    slices.replace("dns-1", &pp, &next).await.unwrap();
    eventually("stale entries deleted", || async {
        let eps = udp_flows_to(&n.node, "10.96.100.40");
        if !eps.contains(EP_A) && eps.contains(EP_B) {
            Ok(())
        } else {
            Err(format!("{eps:?}"))
        }
    })
    .await;
    px.stop().await;
}
