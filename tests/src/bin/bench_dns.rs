//! Cluster DNS benchmark: queries/s from a pod's network namespace. Prints figures, asserts
//! nothing; run as root (it creates a network namespace and a veth pair, removed at the end).
//!
//! An in-process API server holds 1,000 Services; the release `dns` binary (built next to this
//! one) watches them and listens on the host end of a veth pair, as the kube-dns Service's
//! endpoint on a node; the load generator (this binary re-executed inside the namespace, on
//! one core) keeps a fixed number of A queries for `svc-N.bench.svc.cluster.local` in flight
//! over several UDP sockets and counts answers for a few seconds. The server gets the other
//! core.
//!
//! `cargo build --release -p dns -p tests --bin bench-dns && target/release/bench-dns`

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use k8s_openapi::api::core::v1::{Namespace, Service};
use kube::api::PostParams;
use kube::Api;
use tests::{Backend, TestCluster};
use tokio::net::UdpSocket;

const HOST_IP: &str = "10.251.0.1";
const POD_IP: &str = "10.251.0.2";
const SERVICES: usize = 1000;

#[derive(Parser)]
struct Args {
    /// Seconds of load.
    #[arg(long, default_value_t = 5)]
    secs: u64,
    /// Queries kept in flight (spread over the sockets).
    #[arg(long, default_value_t = 128)]
    inflight: usize,
    /// UDP sockets of the load generator.
    #[arg(long, default_value_t = 8)]
    sockets: usize,
    /// Internal: run as the load generator against this server address.
    #[arg(long, hide = true)]
    generate: Option<SocketAddr>,
}

/// A DNS query for `name` (type A, class IN, recursion desired) with message id `id`.
fn query(id: u16, name: &str) -> Vec<u8> {
    let mut q = Vec::with_capacity(64);
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.trim_end_matches('.').split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    q
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// The load generator: `inflight` queries outstanding over `sockets` sockets for `secs`.
fn generate(server: SocketAddr, secs: u64, inflight: usize, sockets: usize) -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let per_socket = inflight.div_ceil(sockets).max(1);
        let deadline = Instant::now() + Duration::from_secs(secs);
        let mut tasks = Vec::new();
        for s in 0..sockets {
            tasks.push(tokio::spawn(async move {
                let sock = UdpSocket::bind("0.0.0.0:0").await?;
                sock.connect(server).await?;
                let mut sent: HashMap<u16, Instant> = HashMap::new();
                let mut lat = Vec::new();
                let (mut answered, mut errors, mut next) = (0u64, 0u64, 0u16);
                let mut buf = [0u8; 1500];
                let mut send_one = |sent: &mut HashMap<u16, Instant>| {
                    next = next.wrapping_add(1);
                    let svc = (usize::from(next) * 7 + s * 131) % SERVICES;
                    let q = query(next, &format!("svc-{svc}.bench.svc.cluster.local"));
                    sent.insert(next, Instant::now());
                    q
                };
                for _ in 0..per_socket {
                    let q = send_one(&mut sent);
                    sock.send(&q).await?;
                }
                while Instant::now() < deadline {
                    match tokio::time::timeout(Duration::from_millis(500), sock.recv(&mut buf))
                        .await
                    {
                        Ok(Ok(n)) if n >= 12 => {
                            let id = u16::from_be_bytes([buf[0], buf[1]]);
                            let rcode = buf[3] & 0x0f;
                            let ancount = u16::from_be_bytes([buf[6], buf[7]]);
                            if let Some(t) = sent.remove(&id) {
                                lat.push(t.elapsed().as_secs_f64() * 1e6);
                                if rcode == 0 && ancount > 0 {
                                    answered += 1;
                                } else {
                                    errors += 1;
                                }
                                let q = send_one(&mut sent);
                                sock.send(&q).await?;
                            }
                        }
                        Ok(Ok(_)) => errors += 1,
                        Ok(Err(e)) => return Err(anyhow::Error::from(e)),
                        // Lost packets: re-send to keep the window full.
                        Err(_) => {
                            let lost = sent.len();
                            sent.clear();
                            errors += lost as u64;
                            for _ in 0..per_socket {
                                let q = send_one(&mut sent);
                                sock.send(&q).await?;
                            }
                        }
                    }
                }
                Ok::<_, anyhow::Error>((answered, errors, lat))
            }));
        }
        let (mut answered, mut errors, mut lat) = (0, 0, Vec::new());
        for t in tasks {
            let (a, e, l) = t.await??;
            answered += a;
            errors += e;
            lat.extend(l);
        }
        lat.sort_by(f64::total_cmp);
        println!(
            "RESULT qps={:.0} answered={answered} errors={errors} p50_us={:.0} p99_us={:.0}",
            answered as f64 / secs as f64,
            percentile(&lat, 0.5),
            percentile(&lat, 0.99)
        );
        Ok(())
    })
}

fn sh(cmd: &str, args: &[&str]) -> Result<()> {
    let st = std::process::Command::new(cmd)
        .args(args)
        .status()
        .with_context(|| format!("running {cmd}"))?;
    if !st.success() {
        bail!("{cmd} {} failed: {st}", args.join(" "));
    }
    Ok(())
}

/// The pod's network namespace and its veth pair; removed on drop.
struct PodNet {
    ns: String,
}

impl PodNet {
    fn create() -> Result<Self> {
        let ns = format!("kubrs-bdns-{}", std::process::id());
        let host = format!("kbd{}h", std::process::id() % 100_000);
        let pod = format!("kbd{}p", std::process::id() % 100_000);
        sh("ip", &["netns", "add", &ns])?;
        let net = PodNet { ns };
        sh(
            "ip",
            &[
                "link", "add", &host, "type", "veth", "peer", "name", &pod, "netns", &net.ns,
            ],
        )?;
        sh(
            "ip",
            &["addr", "add", &format!("{HOST_IP}/30"), "dev", &host],
        )?;
        sh("ip", &["link", "set", &host, "up"])?;
        let pod_cidr = format!("{POD_IP}/30");
        for args in [
            vec!["addr", "add", &pod_cidr, "dev", pod.as_str()],
            vec!["link", "set", pod.as_str(), "up"],
            vec!["link", "set", "lo", "up"],
        ] {
            let mut full = vec!["netns", "exec", net.ns.as_str(), "ip"];
            full.extend(args);
            sh("ip", &full)?;
        }
        Ok(net)
    }
}

impl Drop for PodNet {
    fn drop(&mut self) {
        // Deleting the namespace deletes the pod end, and with it the host end of the pair.
        let _ = sh("ip", &["netns", "del", &self.ns]);
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

fn main() -> Result<()> {
    let args = Args::parse();
    if let Some(server) = args.generate {
        return generate(server, args.secs, args.inflight, args.sockets);
    }
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?
        .block_on(run(args))
}

async fn run(args: Args) -> Result<()> {
    let bin = std::env::current_exe()?
        .parent()
        .context("bin dir")?
        .join("dns");
    if !bin.is_file() {
        bail!("{} is missing: cargo build --release -p dns", bin.display());
    }
    let cluster = TestCluster::start(Backend::Embedded).await?;
    let client = cluster.client().await;
    let ns: Namespace = serde_json::from_value(serde_json::json!({"metadata": {"name": "bench"}}))?;
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await?;
    let services: Api<Service> = Api::namespaced(client.clone(), "bench");
    for i in 0..SERVICES {
        let svc: Service = serde_json::from_value(serde_json::json!({
            "metadata": {"name": format!("svc-{i}")},
            "spec": {"ports": [{"name": "http", "port": 80}]}
        }))?;
        services.create(&PostParams::default(), &svc).await?;
    }

    let net = PodNet::create()?;
    let log: PathBuf = cluster.dir.path().join("dns.log");
    let mut dns = tokio::process::Command::new(&bin)
        .args([
            "--kubeconfig",
            cluster.kubeconfig.to_str().context("kubeconfig path")?,
            "--listen",
            &format!("{HOST_IP}:53"),
            "--health-address",
            &format!("127.0.0.1:{}", free_port()),
            "--metrics-address",
            &format!("127.0.0.1:{}", free_port()),
        ])
        .env("RUST_LOG", "warn")
        .env("MALLOC_ARENA_MAX", "2")
        .env("MALLOC_MMAP_THRESHOLD_", "131072")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log)?)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;

    // Ready when the last Service resolves.
    let server: SocketAddr = format!("{HOST_IP}:53").parse()?;
    let probe = UdpSocket::bind(format!("{HOST_IP}:0")).await?;
    let mut ready = false;
    for i in 0..200u16 {
        let _ = probe
            .send_to(
                &query(i, &format!("svc-{}.bench.svc.cluster.local", SERVICES - 1)),
                server,
            )
            .await;
        let mut buf = [0u8; 1500];
        if let Ok(Ok((n, _))) =
            tokio::time::timeout(Duration::from_millis(100), probe.recv_from(&mut buf)).await
        {
            if n >= 12 && buf[3] & 0x0f == 0 && u16::from_be_bytes([buf[6], buf[7]]) > 0 {
                ready = true;
                break;
            }
        }
    }
    if !ready {
        bail!("the DNS server never answered; see {}", log.display());
    }

    let me = std::env::current_exe()?;
    let out = tokio::process::Command::new("ip")
        .args(["netns", "exec", &net.ns])
        .arg(&me)
        .args([
            "--generate",
            &server.to_string(),
            "--secs",
            &args.secs.to_string(),
            "--inflight",
            &args.inflight.to_string(),
            "--sockets",
            &args.sockets.to_string(),
        ])
        .output()
        .await?;
    let text = String::from_utf8_lossy(&out.stdout);
    let Some(line) = text.lines().find(|l| l.starts_with("RESULT ")) else {
        bail!(
            "load generator failed: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let field = |k: &str| -> String {
        line.split_whitespace()
            .find_map(|kv| kv.strip_prefix(&format!("{k}=")).map(str::to_string))
            .unwrap_or_default()
    };
    let rss = dns
        .id()
        .and_then(|pid| std::fs::read_to_string(format!("/proc/{pid}/status")).ok())
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<f64>().ok())
        })
        .unwrap_or(0.0);
    println!(
        "cluster DNS from a pod's network namespace ({SERVICES} Services, A queries for svc-N.bench.svc.cluster.local, {} in flight over {} UDP sockets, {} s):",
        args.inflight, args.sockets, args.secs
    );
    println!(
        "  {} queries/s answered (target >= 20,000/s); latency p50 {} us, p99 {} us; {} errors/timeouts; dns RSS {:.1} MiB",
        field("qps"),
        field("p50_us"),
        field("p99_us"),
        field("errors"),
        rss / 1024.0
    );
    let _ = dns.kill().await;
    drop(net);
    drop(cluster);
    Ok(())
}
