//! Controller-manager benchmark: time from creating a 1,000-replica Deployment until all 1,000
//! pods exist (embedded store), and the controller-manager's RSS with 10,000 pods cached.
//!
//! The API server runs in-process; the controller-manager runs as its own process (the binary
//! next to this one, built with the same profile) so its RSS is its own. The targets are for
//! release builds; a debug build is several times slower:
//! `cargo build --release -p controller-manager && cargo run --release -p tests --bin bench-controllers [-- --pods 10000]`

use std::time::{Duration, Instant};

use clap::Parser;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::Api;
use tests::{Backend, TestCluster};

/// Benchmark flags.
#[derive(Parser)]
struct Args {
    /// Replicas of the timed Deployment.
    #[arg(long, default_value_t = 1000)]
    replicas: i32,
    /// Pods in the cache for the RSS figure.
    #[arg(long, default_value_t = 10_000)]
    pods: i32,
}

async fn count_pods(api: &Api<Pod>) -> usize {
    api.list_metadata(&ListParams::default().labels("app=bench"))
        .await
        .map(|l| l.items.len())
        .unwrap_or(0)
}

fn rss_mib(pid: u32) -> f64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .unwrap_or(0.0)
        / 1024.0
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let cluster = TestCluster::start(Backend::Embedded).await?;
    let client = cluster.client().await;
    let exe = std::env::current_exe()?;
    let bin = exe
        .parent()
        .map(|d| d.join("controller-manager"))
        .filter(|p| p.is_file())
        .ok_or_else(|| {
            anyhow::anyhow!(
                "build the controller-manager binary first, with the same profile \
                 (cargo build --release -p controller-manager)"
            )
        })?;
    let mut cm = tokio::process::Command::new(bin)
        .arg(format!("--kubeconfig={}", cluster.kubeconfig.display()))
        .args(["--secure-port=0", "--leader-elect=false"])
        .env("RUST_LOG", "warn")
        .kill_on_drop(true)
        .spawn()?;
    let pid = cm.id().unwrap_or(0);
    tokio::time::sleep(Duration::from_secs(1)).await;
    println!("controller-manager RSS idle: {:.1} MiB", rss_mib(pid));

    let d: Deployment = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "bench"},
        "spec": {"replicas": args.replicas, "selector": {"matchLabels": {"app": "bench"}},
                 "template": {"metadata": {"labels": {"app": "bench"}}, "spec": {"containers": [{"name": "c", "image": "nginx"}]}}}
    }))?;
    let dapi: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let papi: Api<Pod> = Api::namespaced(client.clone(), "default");
    let t0 = Instant::now();
    dapi.create(&PostParams::default(), &d).await?;
    while count_pods(&papi).await < args.replicas as usize {
        anyhow::ensure!(
            t0.elapsed() < Duration::from_secs(300),
            "pods did not appear within 300 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!(
        "deployment of {} replicas: all pods exist after {:.2} s (target <= 5 s)",
        args.replicas,
        t0.elapsed().as_secs_f64()
    );

    let t1 = Instant::now();
    dapi.patch(
        "bench",
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"spec": {"replicas": args.pods}})),
    )
    .await?;
    while count_pods(&papi).await < args.pods as usize {
        anyhow::ensure!(
            t1.elapsed() < Duration::from_secs(900),
            "pods did not appear within 900 s"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    println!("scaled to {} pods in {:.1} s; controller-manager RSS with {} pods cached: {:.1} MiB (target <= 100 MiB)", args.pods, t1.elapsed().as_secs_f64(), args.pods, rss_mib(pid));
    cm.start_kill()?;
    let _ = cm.wait().await;
    cluster.stop().await;
    Ok(())
}
