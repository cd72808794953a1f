//! The cluster DNS server against a real API server, queried with real DNS clients: `dig`
//! (bind9-dnsutils) for every record type over UDP and TCP, and glibc's own stub resolver
//! (`getent`, in a private mount namespace whose /etc/resolv.conf is a pod's: the cluster DNS,
//! `search default.svc.cluster.local svc.cluster.local cluster.local`, `options ndots:5`) for the
//! search-path behaviour pods see. Names outside the cluster domain go to a fake upstream
//! resolver on another loopback port, which counts what reaches it.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dns::proto::op::{Message, OpCode, ResponseCode};
use dns::proto::rr::rdata::{A, SOA};
use dns::proto::rr::{Name, RData, Record, RecordType};
use k8s_openapi::api::core::v1::{Namespace, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{DeleteParams, PostParams};
use kube::{Api, Client};
use serde_json::json;
use tests::{Backend, TestCluster};
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;

// ---------------------------------------------------------------------------------------------
// A fake upstream resolver.

/// Answers `example.test.` (192.0.2.10) and `www.example.test.` (192.0.2.20), NXDOMAIN with an
/// SOA for anything else; remembers every name asked.
struct Upstream {
    addr: SocketAddr,
    asked: Arc<Mutex<Vec<String>>>,
}

impl Upstream {
    async fn start() -> Upstream {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = socket.local_addr().unwrap();
        let asked = Arc::new(Mutex::new(Vec::new()));
        let log = asked.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            loop {
                let Ok((n, peer)) = socket.recv_from(&mut buf).await else {
                    return;
                };
                let Ok(req) = Message::from_vec(&buf[..n]) else {
                    continue;
                };
                let Some(q) = req.queries.first().cloned() else {
                    continue;
                };
                let name = q.name().to_lowercase().to_string();
                log.lock().unwrap().push(name.clone());
                let mut m = Message::response(req.metadata.id, OpCode::Query);
                m.metadata.recursion_desired = req.metadata.recursion_desired;
                m.metadata.recursion_available = true;
                m.add_query(q.clone());
                let ip = match name.as_str() {
                    "example.test." => Some(A::new(192, 0, 2, 10)),
                    "www.example.test." => Some(A::new(192, 0, 2, 20)),
                    _ => None,
                };
                match ip {
                    Some(ip) if q.query_type() == RecordType::A => {
                        m.add_answer(Record::from_rdata(q.name().clone(), 60, RData::A(ip)));
                    }
                    Some(_) => {}
                    None => {
                        m.metadata.response_code = ResponseCode::NXDomain;
                        let n = |s: &str| Name::from_ascii(s).unwrap();
                        m.add_authority(Record::from_rdata(
                            n("test."),
                            60,
                            RData::SOA(SOA::new(n("ns.test."), n("h.test."), 1, 1, 1, 1, 60)),
                        ));
                    }
                }
                let _ = socket.send_to(&m.to_vec().unwrap(), peer).await;
            }
        });
        Upstream { addr, asked }
    }

    fn asked(&self) -> Vec<String> {
        self.asked.lock().unwrap().clone()
    }

    fn count(&self, name: &str) -> usize {
        self.asked().iter().filter(|n| *n == name).count()
    }
}

// ---------------------------------------------------------------------------------------------
// The DNS server, in-process.

struct RunningDns {
    token: CancellationToken,
    running: dns::Running,
}

impl RunningDns {
    async fn start(c: &TestCluster, listen: &str, upstream: SocketAddr) -> RunningDns {
        let args = [
            "dns".to_string(),
            format!("--kubeconfig={}", c.kubeconfig.display()),
            format!("--listen={listen}"),
            format!("--upstream={upstream}"),
            "--health-address=127.0.0.1:0".into(),
            "--metrics-address=127.0.0.1:0".into(),
        ];
        let args = <dns::Args as clap::Parser>::try_parse_from(args).expect("dns flags");
        let config = dns::Config::try_from(args).expect("dns config");
        let token = CancellationToken::new();
        let running = dns::start(config, c.client().await, token.clone())
            .await
            .expect("dns starts");
        let d = RunningDns { token, running };
        eventually("dns ready", || async {
            match http_get(d.running.health_addr, "/ready").await {
                (200, _) => Ok(()),
                (code, body) => Err(format!("/ready: {code} {body}")),
            }
        })
        .await;
        d
    }

    fn addr(&self) -> SocketAddr {
        self.running.dns_addr
    }

    async fn stop(mut self) {
        self.token.cancel();
        let _ = (&mut self.running.task).await;
    }
}

impl Drop for RunningDns {
    fn drop(&mut self) {
        self.token.cancel();
    }
}

async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut s) = tokio::net::TcpStream::connect(addr).await else {
        return (0, String::new());
    };
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
// dig.

/// One dig answer: the status, the header flags and the records of each section, with their
/// whitespace normalised ("name ttl IN type data").
#[derive(Debug, Default)]
struct Dig {
    status: String,
    flags: Vec<String>,
    answer: Vec<String>,
    authority: Vec<String>,
    additional: Vec<String>,
}

impl Dig {
    /// The data of the answer records of `rtype`, sorted.
    fn data(&self, rtype: &str) -> Vec<String> {
        let mut v: Vec<String> = self
            .answer
            .iter()
            .filter_map(|r| {
                let f: Vec<&str> = r.split(' ').collect();
                (f.len() >= 5 && f[3] == rtype).then(|| f[4..].join(" "))
            })
            .collect();
        v.sort();
        v
    }

    fn has_soa(&self) -> bool {
        self.authority
            .iter()
            .any(|r| r.contains(" IN SOA ns.dns.cluster.local. hostmaster.cluster.local. "))
    }
}

async fn dig(server: SocketAddr, args: &[&str]) -> Dig {
    let out = tokio::process::Command::new("dig")
        .arg(format!("@{}", server.ip()))
        .arg("-p")
        .arg(server.port().to_string())
        .args([
            "+tries=1",
            "+time=5",
            "+noall",
            "+comments",
            "+answer",
            "+authority",
            "+additional",
        ])
        .args(args)
        .output()
        .await
        .expect("dig runs (apt-get install bind9-dnsutils, or deploy/setup.sh)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "dig {args:?}: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut d = Dig::default();
    let mut section = "";
    for line in text.lines() {
        if let Some(rest) = line.split("status: ").nth(1) {
            d.status = rest.split(',').next().unwrap_or("").to_string();
        } else if let Some(rest) = line.strip_prefix(";; flags: ") {
            d.flags = rest
                .split(';')
                .next()
                .unwrap_or("")
                .split_whitespace()
                .map(String::from)
                .collect();
        } else if line.starts_with(";; ANSWER SECTION") {
            section = "answer";
        } else if line.starts_with(";; AUTHORITY SECTION") {
            section = "authority";
        } else if line.starts_with(";; ADDITIONAL SECTION") {
            section = "additional";
        } else if line.starts_with(';') || line.trim().is_empty() {
            continue;
        } else {
            let rec = line.split_whitespace().collect::<Vec<_>>().join(" ");
            match section {
                "answer" => d.answer.push(rec),
                "authority" => d.authority.push(rec),
                "additional" => d.additional.push(rec),
                _ => {}
            }
        }
    }
    d
}

// ---------------------------------------------------------------------------------------------
// API objects.

fn obj<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> T {
    serde_json::from_value(v).unwrap()
}

async fn create_service(client: &Client, ns: &str, name: &str, spec: serde_json::Value) -> Service {
    let api: Api<Service> = Api::namespaced(client.clone(), ns);
    api.create(
        &PostParams::default(),
        &obj(json!({"metadata": {"name": name, "namespace": ns}, "spec": spec})),
    )
    .await
    .unwrap_or_else(|e| panic!("create service {ns}/{name}: {e}"))
}

fn cluster_ip(s: &Service) -> String {
    s.spec.as_ref().unwrap().cluster_ip.clone().unwrap()
}

async fn create_namespace(client: &Client, name: &str) {
    let api: Api<Namespace> = Api::all(client.clone());
    api.create(
        &PostParams::default(),
        &obj(json!({"metadata": {"name": name}})),
    )
    .await
    .unwrap();
}

/// The cluster's Services: web (ClusterIP, named ports), db (headless, a StatefulSet-like
/// slice with hostnames, one endpoint not ready), ext (ExternalName to www.example.test), and
/// web in namespace `other`. Returns the cluster IPs of default/web and other/web.
async fn populate(client: &Client) -> (String, String) {
    create_namespace(client, "other").await;
    let web = create_service(
        client,
        "default",
        "web",
        json!({"ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080},
                         {"name": "dns", "port": 53, "protocol": "UDP"}]}),
    )
    .await;
    let other = create_service(client, "other", "web", json!({"ports": [{"port": 80}]})).await;
    create_service(
        client,
        "default",
        "db",
        json!({"clusterIP": "None", "ports": [{"name": "pg", "port": 5432}]}),
    )
    .await;
    create_service(
        client,
        "default",
        "ext",
        json!({"type": "ExternalName", "externalName": "www.example.test"}),
    )
    .await;
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), "default");
    slices
        .create(
            &PostParams::default(),
            &obj(json!({
                "metadata": {"name": "db-abcde", "namespace": "default",
                             "labels": {"kubernetes.io/service-name": "db"}},
                "addressType": "IPv4",
                "endpoints": [
                    {"addresses": ["10.244.1.10"], "hostname": "db-0", "conditions": {"ready": true}},
                    {"addresses": ["10.244.2.11"], "hostname": "db-1", "conditions": {"ready": true}},
                    {"addresses": ["10.244.2.12"], "hostname": "db-2", "conditions": {"ready": false}},
                ],
                "ports": [{"name": "pg", "port": 5432, "protocol": "TCP"}],
            })),
        )
        .await
        .unwrap();
    (cluster_ip(&web), cluster_ip(&other))
}

fn reverse(ip: &str) -> String {
    let ip: IpAddr = ip.parse().unwrap();
    let IpAddr::V4(v4) = ip else { panic!("{ip}") };
    let o = v4.octets();
    format!("{}.{}.{}.{}.in-addr.arpa.", o[3], o[2], o[1], o[0])
}

// ---------------------------------------------------------------------------------------------
// Scenarios.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_record_type_is_answered_over_udp_and_tcp_and_follows_the_api() {
    component_base::logging::init("warn");
    let cluster = TestCluster::start(Backend::Embedded).await.unwrap();
    let client = cluster.client().await;
    let (web_ip, other_ip) = populate(&client).await;
    let upstream = Upstream::start().await;
    let d = RunningDns::start(&cluster, "127.0.0.1:0", upstream.addr).await;
    let s = d.addr();
    eventually("web resolves", || async {
        let r = dig(s, &["web.default.svc.cluster.local", "A"]).await;
        (r.data("A") == vec![web_ip.clone()])
            .then_some(())
            .ok_or(format!("{r:?}"))
    })
    .await;

    // ClusterIP: A (authoritative), NODATA for AAAA with the SOA, SRV for a named port.
    let r = dig(s, &["web.default.svc.cluster.local", "A"]).await;
    assert_eq!(r.status, "NOERROR");
    assert!(r.flags.contains(&"aa".to_string()), "{r:?}");
    assert_eq!(
        r.answer,
        vec![format!("web.default.svc.cluster.local. 30 IN A {web_ip}")]
    );
    let r = dig(s, &["web.default.svc.cluster.local", "AAAA"]).await;
    assert_eq!((r.status.as_str(), r.answer.len()), ("NOERROR", 0), "{r:?}");
    assert!(r.has_soa(), "{r:?}");
    let r = dig(s, &["_http._tcp.web.default.svc.cluster.local", "SRV"]).await;
    assert_eq!(
        r.data("SRV"),
        vec!["0 100 80 web.default.svc.cluster.local."]
    );
    assert_eq!(
        r.additional,
        vec![format!("web.default.svc.cluster.local. 30 IN A {web_ip}")]
    );
    let r = dig(s, &["_dns._udp.web.default.svc.cluster.local", "SRV"]).await;
    assert_eq!(
        r.data("SRV"),
        vec!["0 100 53 web.default.svc.cluster.local."]
    );
    let r = dig(s, &["_dns._tcp.web.default.svc.cluster.local", "SRV"]).await;
    assert_eq!(r.status, "NXDOMAIN", "{r:?}");
    let r = dig(s, &["web.other.svc.cluster.local", "A"]).await;
    assert_eq!(r.data("A"), vec![other_ip.clone()]);

    // Headless: the ready endpoints, their hostnames, one SRV per ready endpoint.
    let r = dig(s, &["db.default.svc.cluster.local", "A"]).await;
    assert_eq!(r.data("A"), vec!["10.244.1.10", "10.244.2.11"]);
    let r = dig(s, &["db-0.db.default.svc.cluster.local", "A"]).await;
    assert_eq!(r.data("A"), vec!["10.244.1.10"]);
    let r = dig(s, &["db-2.db.default.svc.cluster.local", "A"]).await;
    assert_eq!(r.status, "NXDOMAIN", "not ready: {r:?}");
    let r = dig(s, &["_pg._tcp.db.default.svc.cluster.local", "SRV"]).await;
    assert_eq!(
        r.data("SRV"),
        vec![
            "0 50 5432 db-0.db.default.svc.cluster.local.",
            "0 50 5432 db-1.db.default.svc.cluster.local."
        ]
    );
    let mut additional = r.additional.clone();
    additional.sort();
    assert_eq!(
        additional,
        vec![
            "db-0.db.default.svc.cluster.local. 30 IN A 10.244.1.10",
            "db-1.db.default.svc.cluster.local. 30 IN A 10.244.2.11"
        ]
    );

    // ExternalName: the CNAME, and its target resolved through the upstream.
    let r = dig(s, &["ext.default.svc.cluster.local", "A"]).await;
    assert_eq!(r.data("CNAME"), vec!["www.example.test."]);
    assert_eq!(r.data("A"), vec!["192.0.2.20"]);

    // PTR for a cluster IP and for a headless endpoint.
    let r = dig(s, &["-x", &web_ip]).await;
    assert_eq!(r.data("PTR"), vec!["web.default.svc.cluster.local."]);
    assert_eq!(r.answer[0].split(' ').next().unwrap(), reverse(&web_ip));
    let r = dig(s, &["-x", "10.244.1.10"]).await;
    assert_eq!(r.data("PTR"), vec!["db-0.db.default.svc.cluster.local."]);

    // Pod records (insecure mode), the schema version.
    let r = dig(s, &["10-244-7-8.default.pod.cluster.local", "A"]).await;
    assert_eq!(r.data("A"), vec!["10.244.7.8"]);
    let r = dig(s, &["10-244-7-8.nowhere.pod.cluster.local", "A"]).await;
    assert_eq!(r.status, "NXDOMAIN");
    let r = dig(s, &["dns-version.cluster.local", "TXT"]).await;
    assert_eq!(r.data("TXT"), vec!["\"1.1.0\""]);

    // Names that do not exist: NXDOMAIN with the SOA; existing empty names: NODATA.
    for name in [
        "nope.default.svc.cluster.local",
        "web.default.svc.cluster.local.cluster.local",
    ] {
        let r = dig(s, &[name, "A"]).await;
        assert_eq!(r.status, "NXDOMAIN", "{name}: {r:?}");
        assert!(r.has_soa(), "{name}: {r:?}");
    }
    let r = dig(s, &["default.svc.cluster.local", "A"]).await;
    assert_eq!((r.status.as_str(), r.answer.len()), ("NOERROR", 0), "{r:?}");
    assert!(r.has_soa());

    // TCP gives the same answers.
    let r = dig(s, &["+tcp", "_pg._tcp.db.default.svc.cluster.local", "SRV"]).await;
    assert_eq!(r.data("SRV").len(), 2, "{r:?}");
    let r = dig(s, &["+tcp", "web.default.svc.cluster.local", "A"]).await;
    assert_eq!(r.data("A"), vec![web_ip.clone()]);

    // Forwarding: the upstream answers names outside the cluster, once per TTL (cached).
    let r = dig(s, &["example.test", "A"]).await;
    assert_eq!(r.data("A"), vec!["192.0.2.10"]);
    assert!(!r.flags.contains(&"aa".to_string()), "{r:?}");
    let r = dig(s, &["EXAMPLE.test", "A"]).await;
    assert_eq!(r.data("A"), vec!["192.0.2.10"]);
    assert_eq!(upstream.count("example.test."), 1, "{:?}", upstream.asked());
    let r = dig(s, &["nope.example.test", "A"]).await;
    assert_eq!(r.status, "NXDOMAIN");
    // Nothing of the cluster's own reached the upstream.
    assert!(
        upstream
            .asked()
            .iter()
            .all(|n| !n.ends_with("cluster.local.")),
        "{:?}",
        upstream.asked()
    );

    // Changes: a new Service answers, a deleted one stops answering, without a restart.
    let late = create_service(&client, "default", "late", json!({"ports": [{"port": 80}]})).await;
    let late_ip = cluster_ip(&late);
    eventually("late resolves", || async {
        let r = dig(s, &["late.default.svc.cluster.local", "A"]).await;
        (r.data("A") == vec![late_ip.clone()])
            .then_some(())
            .ok_or(format!("{r:?}"))
    })
    .await;
    let svcs: Api<Service> = Api::namespaced(client.clone(), "default");
    svcs.delete("web", &DeleteParams::default()).await.unwrap();
    eventually("web is gone", || async {
        let r = dig(s, &["web.default.svc.cluster.local", "A"]).await;
        (r.status == "NXDOMAIN")
            .then_some(())
            .ok_or(format!("{r:?}"))
    })
    .await;
    let r = dig(s, &["-x", &web_ip]).await;
    assert!(r.data("PTR").is_empty(), "{r:?}");

    // CoreDNS's metric names.
    let (code, text) = http_get(d.running.metrics_addr, "/metrics").await;
    assert_eq!(code, 200);
    for want in [
        "coredns_dns_requests_total{",
        "rcode=\"NXDOMAIN\",plugin=\"kubernetes\"",
        "plugin=\"cache\"",
        "coredns_forward_requests_total{",
    ] {
        assert!(text.contains(want), "{want} missing in\n{text}");
    }
    d.stop().await;
    cluster.stop().await;
}

/// The loopback address the search-path test's server listens on, port 53 (glibc's resolver
/// has no port option); unique per test process.
fn port53_address() -> String {
    let pid = std::process::id();
    format!("127.53.{}.{}", (pid >> 8) & 0xff, (pid & 0xff).max(1))
}

/// `getent ahostsv4 NAME` with glibc's stub resolver configured as in a pod of `default`.
async fn pod_lookup(resolv_conf: &std::path::Path, name: &str) -> Result<Vec<String>, String> {
    let script = format!(
        "mount --bind {} /etc/resolv.conf && exec getent ahostsv4 {name}",
        resolv_conf.display()
    );
    let out = tokio::process::Command::new("unshare")
        .args(["-m", "sh", "-c", &script])
        .output()
        .await
        .expect("unshare runs");
    match out.status.code() {
        Some(0) => {
            let mut ips: Vec<String> = String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter_map(|l| l.split_whitespace().next().map(String::from))
                .collect();
            ips.sort();
            ips.dedup();
            Ok(ips)
        }
        // getent: 2 means "not found".
        Some(2) => Err("not found".into()),
        _ => panic!(
            "getent {name} failed: {:?} {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_search_path_with_ndots_5_resolves_short_names_and_forwards_the_rest() {
    component_base::logging::init("warn");
    let cluster = TestCluster::start(Backend::Embedded).await.unwrap();
    let client = cluster.client().await;
    let (web_ip, other_ip) = populate(&client).await;
    let upstream = Upstream::start().await;
    let ip = port53_address();
    let d = RunningDns::start(&cluster, &format!("{ip}:53"), upstream.addr).await;
    let dir = tempfile::tempdir().unwrap();
    // The resolv.conf the kubelet writes for a ClusterFirst pod in `default`.
    let resolv = dir.path().join("resolv.conf");
    std::fs::write(
        &resolv,
        format!(
            "search default.svc.cluster.local svc.cluster.local cluster.local\nnameserver {ip}\noptions ndots:5\n"
        ),
    )
    .unwrap();
    eventually("web resolves", || async {
        let r = dig(d.addr(), &["web.default.svc.cluster.local", "A"]).await;
        (r.data("A") == vec![web_ip.clone()])
            .then_some(())
            .ok_or(format!("{r:?}"))
    })
    .await;

    // Short names through the search list.
    assert_eq!(pod_lookup(&resolv, "web").await, Ok(vec![web_ip.clone()]));
    assert_eq!(
        pod_lookup(&resolv, "web.default").await,
        Ok(vec![web_ip.clone()])
    );
    assert_eq!(
        pod_lookup(&resolv, "web.other").await,
        Ok(vec![other_ip.clone()])
    );
    assert_eq!(
        pod_lookup(&resolv, "web.other.svc").await,
        Ok(vec![other_ip.clone()])
    );
    assert_eq!(
        pod_lookup(&resolv, "db-1.db").await,
        Ok(vec!["10.244.2.11".to_string()])
    );
    assert_eq!(
        pod_lookup(&resolv, "web.default.svc.cluster.local").await,
        Ok(vec![web_ip.clone()])
    );
    // ExternalName: glibc follows the CNAME the server chased.
    assert_eq!(
        pod_lookup(&resolv, "ext").await,
        Ok(vec!["192.0.2.20".to_string()])
    );
    assert_eq!(pod_lookup(&resolv, "nope").await, Err("not found".into()));

    // An outside name: every search candidate is NXDOMAIN from the cluster zone, so glibc
    // moves on and finally asks for the name itself, which is forwarded.
    assert_eq!(
        pod_lookup(&resolv, "example.test").await,
        Ok(vec!["192.0.2.10".to_string()])
    );
    let asked = upstream.asked();
    assert!(asked.contains(&"example.test.".to_string()), "{asked:?}");
    assert!(asked.contains(&"nope.".to_string()), "{asked:?}");
    assert!(
        asked.iter().all(|n| !n.ends_with("cluster.local.")),
        "search candidates leaked upstream: {asked:?}"
    );
    d.stop().await;
    cluster.stop().await;
}
