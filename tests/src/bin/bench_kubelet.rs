//! Pod start-up benchmark for the kubelet on a real containerd (issue 5), printing in one run:
//!
//! - the floor: raw CRI RunPodSandbox + CreateContainer + StartContainer for the same image,
//!   straight to containerd;
//! - pod start-up latency p50/p99, one pod at a time: creation through the API to all containers
//!   started, observed by a watch (image present);
//! - a burst of 30 pods: creation to all 30 Running;
//! - RSS of the kubelet idle with 30 pods, and of the whole single-node cluster (apiserver,
//!   controller-manager, scheduler, kubelet, proxy if built) idle, containerd excluded.
//!
//! Every component runs as its own release process, as `deploy/cluster.sh up` starts them:
//! `cargo build --release --workspace --bins && target/release/bench-kubelet` (as root).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{DeleteParams, ListParams, PostParams, WatchEvent, WatchParams};
use kube::{Api, Client};
use kubelet::cri::remote::RemoteRuntime;
use kubelet::cri::{v1, Runtime};
use serde_json::json;
use tests::containerd::{image_bundle, ContainerdProcess};

const NODE: &str = "bench-node";
const BENCH_POD_CIDR: &str = "10.244.99.0/24";
const IMAGE: &str = "docker.io/library/busybox:latest";

struct Proc {
    name: &'static str,
    child: tokio::process::Child,
}

impl Proc {
    /// A `kB` field of `/proc/<pid>/smaps_rollup` (`Rss`, `Pss`, `Anonymous`).
    fn smaps_kib(&self, field: &str) -> u64 {
        let Some(pid) = self.child.id() else { return 0 };
        std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.split(':').next() == Some(field))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|v| v.parse().ok())
            })
            .unwrap_or(0)
    }

    fn rss_kib(&self) -> u64 {
        self.smaps_kib("Rss")
    }

    /// Resident memory with pages shared between processes (libc, ld.so) divided among them.
    fn pss_kib(&self) -> u64 {
        self.smaps_kib("Pss")
    }
}

fn bin_dir() -> PathBuf {
    std::env::current_exe()
        .expect("current exe")
        .parent()
        .expect("bin dir")
        .to_path_buf()
}

fn spawn(name: &'static str, args: &[String], log: &Path) -> Result<Proc> {
    let bin = bin_dir().join(name);
    if !bin.is_file() {
        bail!(
            "{} is missing: cargo build --release --workspace --bins",
            bin.display()
        );
    }
    let child = tokio::process::Command::new(&bin)
        .args(args)
        // BENCH_RUST_LOG (e.g. `kubelet=debug`) to study a run; BENCH_KEEP=1 keeps the logs.
        .env(
            "RUST_LOG",
            std::env::var("BENCH_RUST_LOG").unwrap_or_else(|_| "warn".into()),
        )
        // As deploy/cluster.sh runs them: two glibc malloc arenas instead of eight per core,
        // and a fixed mmap threshold.
        .env("MALLOC_ARENA_MAX", "2")
        .env("MALLOC_MMAP_THRESHOLD_", "131072")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(log.with_extension("out"))?)
        .stderr(std::fs::File::create(log)?)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    Ok(Proc { name, child })
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    if v.is_empty() {
        return f64::NAN;
    }
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i]
}

/// CPU seconds a process has used (user + system, from `/proc/<pid>/stat`).
fn proc_cpu_s(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            // Fields after the command name's closing parenthesis: utime is the 12th, stime
            // the 13th.
            let rest = &s[s.rfind(')')? + 2..];
            let f: Vec<&str> = rest.split_whitespace().collect();
            Some(f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?)
        })
        .map_or(0.0, |ticks| ticks / 100.0)
}

/// CPU used by each named process during a phase. (Not the machine's total: inside a
/// container `/proc/stat` counts the host's CPUs and other tenants.)
struct CpuUse {
    start: Vec<(String, u32, f64)>,
}

impl CpuUse {
    fn start(procs: &[(String, u32)]) -> Self {
        CpuUse {
            start: procs
                .iter()
                .map(|(n, pid)| (n.clone(), *pid, proc_cpu_s(*pid)))
                .collect(),
        }
    }

    /// "CPU s: containerd 1.02, apiserver 0.21, ..." (shims, runc and CNI plugins not counted).
    fn report(&self) -> String {
        let parts: Vec<String> = self
            .start
            .iter()
            .map(|(n, pid, t0)| format!("{n} {:.2}", proc_cpu_s(*pid) - t0))
            .collect();
        format!(
            "CPU s used: {} (shims, runc, CNI plugins not counted)",
            parts.join(", ")
        )
    }
}

fn all_started(p: &Pod) -> bool {
    let spec_n = p.spec.as_ref().map(|s| s.containers.len()).unwrap_or(0);
    let st = p
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .cloned()
        .unwrap_or_default();
    st.len() == spec_n
        && st
            .iter()
            .all(|c| c.state.as_ref().is_some_and(|s| s.running.is_some()))
}

fn pod(name: &str) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"bench": "kubelet"}},
        "spec": {"nodeName": NODE, "terminationGracePeriodSeconds": 0,
                 "automountServiceAccountToken": false,
                 "containers": [{"name": "c", "image": IMAGE, "imagePullPolicy": "IfNotPresent",
                                 "command": ["sh", "-c", "trap 'exit 0' TERM; while :; do sleep 1; done"]}]}
    }))
    .expect("pod json")
}

/// Create the pods and wait (by watch) until each has all containers running; returns each
/// pod's latency from its create request.
async fn start_pods(api: &Api<Pod>, names: &[String]) -> Result<Vec<Duration>> {
    let rv = api
        .list(&ListParams::default().limit(1))
        .await?
        .metadata
        .resource_version
        .unwrap_or_default();
    let mut stream = api
        .watch(
            &WatchParams::default().labels("bench=kubelet").timeout(120),
            &rv,
        )
        .await?
        .boxed();
    let mut sent: BTreeMap<String, Instant> = BTreeMap::new();
    let creates = names.iter().map(|n| {
        let api = api.clone();
        let n = n.clone();
        async move {
            let t = Instant::now();
            api.create(&PostParams::default(), &pod(&n))
                .await
                .map(|_| (n, t))
        }
    });
    for r in futures::future::join_all(creates).await {
        let (n, t) = r?;
        sent.insert(n, t);
    }
    let mut done: BTreeMap<String, Duration> = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while done.len() < names.len() {
        let ev = tokio::time::timeout_at(deadline.into(), stream.next())
            .await
            .context("pods did not start within 120 s")?;
        match ev {
            Some(Ok(WatchEvent::Added(p) | WatchEvent::Modified(p))) => {
                let n = p.metadata.name.clone().unwrap_or_default();
                if let Some(t) = sent.get(&n) {
                    if all_started(&p) && !done.contains_key(&n) {
                        done.insert(n, t.elapsed());
                    }
                }
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => bail!("watch: {e}"),
            None => bail!("watch ended"),
        }
    }
    Ok(done.into_values().collect())
}

async fn delete_all(api: &Api<Pod>) -> Result<()> {
    api.delete_collection(
        &DeleteParams {
            grace_period_seconds: Some(0),
            ..Default::default()
        },
        &ListParams::default().labels("bench=kubelet"),
    )
    .await?;
    for _ in 0..600 {
        if api
            .list(&ListParams::default().labels("bench=kubelet"))
            .await?
            .items
            .is_empty()
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("pods were not deleted within 60 s")
}

/// One pod straight through CRI: RunPodSandbox + CreateContainer + StartContainer. Returns the
/// time it took and what [`raw_teardown`] needs.
async fn raw_start(
    rt: &RemoteRuntime,
    tag: &str,
    i: usize,
    log_dir: &Path,
) -> Result<(f64, RawPod)> {
    let uid = format!("raw-{tag}-{}-{i}", std::process::id());
    let dir = log_dir.join(&uid);
    std::fs::create_dir_all(dir.join("c"))?;
    let sb = v1::PodSandboxConfig {
        metadata: Some(v1::PodSandboxMetadata {
            name: format!("raw-{tag}-{i}"),
            uid: uid.clone(),
            namespace: "bench".into(),
            attempt: 0,
        }),
        hostname: format!("raw-{i}"),
        log_directory: dir.display().to_string(),
        linux: Some(v1::LinuxPodSandboxConfig {
            cgroup_parent: format!("/kubepods/besteffort/pod{uid}"),
            ..Default::default()
        }),
        ..Default::default()
    };
    let t = Instant::now();
    let sandbox = rt.run_pod_sandbox(sb.clone(), String::new()).await?;
    let cc = v1::ContainerConfig {
        metadata: Some(v1::ContainerMetadata {
            name: "c".into(),
            attempt: 0,
        }),
        image: Some(v1::ImageSpec {
            image: IMAGE.into(),
            ..Default::default()
        }),
        command: vec![
            "sh".into(),
            "-c".into(),
            "trap 'exit 0' TERM; while :; do sleep 1; done".into(),
        ],
        log_path: "c/0.log".into(),
        ..Default::default()
    };
    let container = rt.create_container(sandbox.clone(), cc, sb).await?;
    rt.start_container(container.clone()).await?;
    let ms = t.elapsed().as_secs_f64() * 1000.0;
    Ok((
        ms,
        RawPod {
            uid,
            sandbox,
            container,
        },
    ))
}

struct RawPod {
    uid: String,
    sandbox: String,
    container: String,
}

async fn raw_teardown(rt: &RemoteRuntime, pod: RawPod) -> Result<()> {
    rt.stop_container(pod.container.clone(), 0).await?;
    rt.remove_container(pod.container).await?;
    rt.stop_pod_sandbox(pod.sandbox.clone()).await?;
    rt.remove_pod_sandbox(pod.sandbox).await?;
    for ctrl in [
        "cpu", "memory", "pids", "cpuset", "blkio", "devices", "freezer", "cpuacct",
    ] {
        let _ = std::fs::remove_dir(format!(
            "/sys/fs/cgroup/{ctrl}/kubepods/besteffort/pod{}",
            pod.uid
        ));
    }
    Ok(())
}

/// The floor for single pods: `runs` raw CRI pods one after another.
async fn raw_cri(rt: &RemoteRuntime, runs: usize, log_dir: &Path) -> Result<Vec<f64>> {
    let mut out = Vec::new();
    for i in 0..runs {
        let (ms, pod) = raw_start(rt, "seq", i, log_dir).await?;
        out.push(ms);
        raw_teardown(rt, pod).await?;
    }
    Ok(out)
}

/// The floor for a burst: `n` raw CRI pods started concurrently; the time until the last one
/// started.
async fn raw_cri_burst(rt: &RemoteRuntime, n: usize, log_dir: &Path) -> Result<Duration> {
    let t = Instant::now();
    let results =
        futures::future::join_all((0..n).map(|i| raw_start(rt, "burst", i, log_dir))).await;
    let elapsed = t.elapsed();
    let mut first_err = None;
    for r in results {
        match r {
            Ok((_, pod)) => raw_teardown(rt, pod).await?,
            Err(e) => first_err = first_err.or(Some(e)),
        }
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(elapsed),
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    // The bundle's demo app and cache next to this binary (target/release), unless given.
    if std::env::var_os("DEMO_WEB_BIN").is_none() {
        std::env::set_var("DEMO_WEB_BIN", bin_dir().join("demo-web"));
    }
    if std::env::var_os("KUBRS_TEST_IMAGES").is_none() {
        std::env::set_var("KUBRS_TEST_IMAGES", bin_dir().join("bench-images"));
    }
    let tmp = tempfile::tempdir()?;
    let d = tmp.path();
    if std::env::var_os("BENCH_KEEP").is_some() {
        eprintln!("logs kept in {}", d.display());
    }
    let bundle = tokio::task::spawn_blocking(image_bundle).await?;
    let containerd = ContainerdProcess::start(&d.join("containerd"))?;
    containerd.import_dir(&bundle)?;

    let mut procs: Vec<Proc> = Vec::new();
    let port = 20000 + (std::process::id() % 20000) as u16;
    procs.push(spawn(
        "apiserver",
        &[
            "--data-dir".into(),
            d.join("apiserver").display().to_string(),
            "--bind-address".into(),
            "127.0.0.1".into(),
            "--secure-port".into(),
            port.to_string(),
        ],
        &d.join("apiserver.log"),
    )?);
    let kc = d.join("apiserver/admin.kubeconfig");
    for _ in 0..300 {
        if kc.exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let client = {
        let k = kube::config::Kubeconfig::read_from(&kc)?;
        Client::try_from(kube::Config::from_custom_kubeconfig(k, &Default::default()).await?)?
    };
    for _ in 0..300 {
        if client.apiserver_version().await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let kcs = kc.display().to_string();
    procs.push(spawn(
        "controller-manager",
        &[
            "--kubeconfig".into(),
            kcs.clone(),
            "--secure-port".into(),
            "0".into(),
        ],
        &d.join("controller-manager.log"),
    )?);
    procs.push(spawn(
        "scheduler",
        &[
            "--kubeconfig".into(),
            kcs.clone(),
            "--bind-address".into(),
            "127.0.0.1:0".into(),
        ],
        &d.join("scheduler.log"),
    )?);
    procs.push(spawn(
        "kubelet",
        &[
            "--kubeconfig".into(),
            kcs.clone(),
            "--hostname-override".into(),
            NODE.into(),
            "--container-runtime-endpoint".into(),
            containerd.endpoint(),
            "--root-dir".into(),
            d.join("kubelet").display().to_string(),
            "--pod-log-dir".into(),
            d.join("logs").display().to_string(),
            "--cni-conf-dir".into(),
            containerd.cni_conf_dir.display().to_string(),
            "--pod-cidr".into(),
            BENCH_POD_CIDR.into(),
            "--node-ip".into(),
            "127.0.0.1".into(),
            "--address".into(),
            "127.0.0.1".into(),
            "--port".into(),
            (port + 1).to_string(),
            "--healthz-port".into(),
            "0".into(),
            "--client-ca-file".into(),
            d.join("apiserver/pki/ca.crt").display().to_string(),
        ]
        .into_iter()
        // BENCH_KUBELET_ARGS: extra kubelet flags, to compare settings.
        .chain(
            std::env::var("BENCH_KUBELET_ARGS")
                .unwrap_or_default()
                .split_whitespace()
                .map(String::from),
        )
        .collect::<Vec<String>>(),
        &d.join("kubelet.log"),
    )?);
    if bin_dir().join("proxy").is_file() {
        procs.push(spawn(
            "proxy",
            &[
                "--kubeconfig".into(),
                kcs.clone(),
                "--hostname-override".into(),
                NODE.into(),
            ],
            &d.join("proxy.log"),
        )?);
    }

    // Wait for the node to be Ready.
    let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(client.clone());
    let mut ready = false;
    for _ in 0..600 {
        ready = nodes
            .get(NODE)
            .await
            .is_ok_and(|n| tests::node_env::node_ready(&n));
        if ready {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if !ready {
        bail!(
            "node never became Ready; see {}",
            d.join("kubelet.log").display()
        );
    }

    // Idle, no pods yet.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let idle_total: u64 = procs.iter().map(Proc::rss_kib).sum();
    let idle_pss: u64 = procs.iter().map(Proc::pss_kib).sum();
    let idle_each: Vec<(&str, u64, u64)> = procs
        .iter()
        .map(|p| (p.name, p.rss_kib(), p.smaps_kib("Anonymous")))
        .collect();

    let rt: Arc<RemoteRuntime> = Arc::new(RemoteRuntime::connect(&containerd.endpoint()).await?);
    let mut floor = raw_cri(&rt, 10, &d.join("raw-logs")).await?;
    let cpu_procs: Vec<(String, u32)> = std::iter::once(("containerd".to_string(), containerd.pid))
        .chain(
            procs
                .iter()
                .filter_map(|p| Some((p.name.to_string(), p.child.id()?))),
        )
        .collect();
    let cpu = CpuUse::start(&cpu_procs);
    let raw_burst = raw_cri_burst(&rt, 30, &d.join("raw-logs")).await?;
    let raw_burst_cpu = cpu.report();

    let api: Api<Pod> = Api::namespaced(client.clone(), "default");
    // Warm-up (first sandbox pays one-time costs).
    start_pods(&api, &["warmup".to_string()]).await?;
    delete_all(&api).await?;
    let mut single = Vec::new();
    for i in 0..20 {
        let l = start_pods(&api, &[format!("single-{i}")]).await?;
        single.push(l[0].as_secs_f64() * 1000.0);
        delete_all(&api).await?;
    }
    let names: Vec<String> = (0..30).map(|i| format!("burst-{i}")).collect();
    let t = Instant::now();
    let cpu = CpuUse::start(&cpu_procs);
    let burst = start_pods(&api, &names).await?;
    let burst_all = t.elapsed();
    let burst_cpu = cpu.report();
    let mut burst_ms: Vec<f64> = burst.iter().map(|d| d.as_secs_f64() * 1000.0).collect();

    // Idle with 30 pods: let status writes settle, then sample RSS.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let rss: Vec<(&str, u64)> = procs.iter().map(|p| (p.name, p.rss_kib())).collect();
    let kubelet_rss = rss
        .iter()
        .find(|(n, _)| *n == "kubelet")
        .map(|r| r.1)
        .unwrap_or(0);

    println!(
        "kubelet pod start-up (busybox, image present, containerd {}):",
        rt.version().await?.runtime_version
    );
    println!(
        "  floor: raw CRI RunPodSandbox+Create+Start  p50 {:.0} ms  p99 {:.0} ms  (n={})",
        percentile(&mut floor.clone(), 0.5),
        percentile(&mut floor, 0.99),
        10
    );
    println!(
        "  floor: raw CRI burst of 30 pods started concurrently: all started in {:.2} s",
        raw_burst.as_secs_f64()
    );
    println!("    {raw_burst_cpu}");
    println!(
        "  single pods, create -> all containers started (watch)  p50 {:.0} ms  p99 {:.0} ms  (n=20; targets p50 <= 400 ms, p99 <= 1000 ms)",
        percentile(&mut single.clone(), 0.5),
        percentile(&mut single, 0.99)
    );
    println!(
        "  burst of 30 pods: all Running in {:.2} s (target <= 5 s); per pod p50 {:.0} ms p99 {:.0} ms",
        burst_all.as_secs_f64(),
        percentile(&mut burst_ms.clone(), 0.5),
        percentile(&mut burst_ms, 0.99)
    );
    println!("    {burst_cpu}");
    println!("RSS idle with 30 pods (containerd excluded):");
    let mut total = 0;
    for (n, kib) in &rss {
        println!("  {n:<20} {:>7.1} MiB", *kib as f64 / 1024.0);
        total += kib;
    }
    println!(
        "  kubelet {:.1} MiB with 30 pods (target <= 32 MiB); whole cluster {:.1} MiB with 30 pods",
        kubelet_rss as f64 / 1024.0,
        total as f64 / 1024.0
    );
    println!("RSS idle without pods:");
    for (n, rss, anon) in &idle_each {
        println!(
            "  {n:<20} {:>7.1} MiB (anonymous {:.1} MiB)",
            *rss as f64 / 1024.0,
            *anon as f64 / 1024.0
        );
    }
    println!(
        "  whole cluster idle without pods: {:.1} MiB RSS summed (target <= 64 MiB; k3s ~550 MB); {:.1} MiB PSS summed (shared library pages counted once)",
        idle_total as f64 / 1024.0,
        idle_pss as f64 / 1024.0
    );

    delete_all(&api).await?;
    // Let the kubelet tear the sandboxes down through CRI (CNI DEL frees IPs and iptables
    // rules) before its process goes.
    for _ in 0..300 {
        if rt
            .list_pod_sandbox(None)
            .await
            .map(|v| v.is_empty())
            .unwrap_or(true)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(procs);
    drop(containerd);
    // The proxy ran in this network namespace and was killed: remove its rules, as
    // `cluster.sh down` does.
    let proxy = bin_dir().join("proxy");
    if proxy.is_file() {
        let _ = std::process::Command::new(proxy)
            .arg("--cleanup")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
    kubelet::masquerade::remove(
        &kubelet::cni::Cidr::parse(BENCH_POD_CIDR).map_err(anyhow::Error::msg)?,
    );
    // The CNI bridge plugin created `cni0`; with every sandbox gone nothing uses it.
    let _ = std::process::Command::new("ip")
        .args(["link", "del", "cni0"])
        .stderr(Stdio::null())
        .status();
    if std::env::var_os("BENCH_KEEP").is_some() {
        // Leave the directory (logs) behind on purpose.
        let _ = tmp.keep();
    }
    Ok(())
}
