//! bench-streaming: port-forward throughput and exec round-trip latency through the API server
//! and this kubelet (what `kubectl port-forward` and `kubectl exec` do), next to the same
//! through containerd's own streaming server (CRI PortForward/Exec URLs, SPDY client) and the
//! floors (a direct TCP connection to the pod, ExecSync). Starts its own one-node cluster
//! (API server, private containerd, in-process kubelet); prints figures, asserts nothing.
//!
//!   cargo build --release -p tests --bin bench-streaming && target/release/bench-streaming

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use kubelet::cri::remote::RemoteRuntime;
use kubelet::cri::{v1, Runtime};
use kubelet::streaming::{client, StreamFlags, Tasks};
use serde_json::json;
use tests::node_env::Env;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};

/// Bytes the pod serves per throughput run.
const SIZE: u64 = 256 << 20;
const EXEC_RUNS: usize = 30;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let env = Env::start().await;
    let r = run(&env).await;
    env.stop().await;
    r
}

async fn run(env: &Env) -> anyhow::Result<()> {
    let pod = env
        .create(
            "default",
            json!({"metadata": {"name": "bench"},
                   "spec": {"terminationGracePeriodSeconds": 0, "containers": [
                       {"name": "c", "image": "busybox", "command": ["sh", "-c", format!(
                           "mkdir -p /www && head -c {SIZE} /dev/zero > /www/big && touch /www/ready && exec httpd -f -p 8000 -h /www")]}]}}),
        )
        .await;
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let pod = env
        .wait_pod("default", "bench", 120, |p| {
            p.status.as_ref().and_then(|s| s.pod_ip.as_ref()).is_some()
                && p.status
                    .as_ref()
                    .and_then(|s| s.container_statuses.as_ref())
                    .is_some_and(|c| c.iter().all(|c| c.ready))
        })
        .await;
    let ip = pod.status.unwrap().pod_ip.unwrap();
    let runtime = Arc::new(RemoteRuntime::connect(&env.containerd.endpoint()).await?);
    let rp = kubelet::pods::runtime_pod::get(runtime.as_ref(), &uid).await?;
    let container = rp.latest("c").context("container c")?.id.clone();
    let sandbox = rp.sandbox().context("sandbox")?.id.clone();
    // Wait for the file.
    for _ in 0..600 {
        let r = runtime
            .exec_sync(
                container.clone(),
                vec!["test".into(), "-f".into(), "/www/ready".into()],
                5,
            )
            .await?;
        if r.exit_code == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let tasks = Tasks::default();
    println!(
        "bench-streaming: {} MiB per throughput run, {EXEC_RUNS} exec runs",
        SIZE >> 20
    );
    println!();
    println!(
        "port-forward throughput (HTTP GET of {} MiB from busybox httpd in the pod)",
        SIZE >> 20
    );
    let t = timed_get_tcp(&format!("{ip}:8000")).await?;
    println!(
        "  direct TCP to the pod (floor)                        {:8.1} MB/s",
        t
    );
    let t = via_cri_port_forward(runtime.as_ref(), &sandbox, &tasks).await?;
    println!(
        "  containerd streaming server (CRI PortForward, SPDY)   {:8.1} MB/s",
        t
    );
    for bin in [Some(tests::kubectl_path()), tests::kubectl_127()]
        .into_iter()
        .flatten()
    {
        let label = match bin.to_string_lossy().contains("1.27") {
            true => "kubectl 1.27 port-forward (SPDY)",
            false => "kubectl 1.32 port-forward (SPDY in WebSocket)",
        };
        let t = via_kubectl_port_forward(env, &bin).await?;
        println!("  {label:<52} {t:8.1} MB/s");
    }
    println!();
    println!("exec round trip of `true` (p50 / p99 over {EXEC_RUNS} runs)");
    let sync = measure(|| async {
        runtime
            .exec_sync(container.clone(), vec!["true".into()], 0)
            .await?;
        Ok(())
    })
    .await?;
    print_latency("CRI ExecSync (floor)", &sync);
    let direct = measure(|| async {
        let url = runtime
            .exec(v1::ExecRequest {
                container_id: container.clone(),
                cmd: vec!["true".into()],
                stdout: true,
                stderr: true,
                ..Default::default()
            })
            .await?;
        let s = client::exec(
            &url,
            StreamFlags {
                stdout: true,
                stderr: true,
                ..Default::default()
            },
            &tasks,
        )
        .await?;
        let (mut err, _) = s.error.split();
        let status = err.read_to_end(4096).await;
        if !String::from_utf8_lossy(&status).contains("Success") {
            bail!("exec failed: {}", String::from_utf8_lossy(&status));
        }
        Ok(())
    })
    .await?;
    print_latency("containerd streaming server (CRI Exec URL, SPDY)", &direct);
    for bin in [Some(tests::kubectl_path()), tests::kubectl_127()]
        .into_iter()
        .flatten()
    {
        let label = match bin.to_string_lossy().contains("1.27") {
            true => "kubectl 1.27 exec -- true (SPDY, spliced)",
            false => "kubectl 1.32 exec -- true (WebSocket v5)",
        };
        // Warm the discovery cache first.
        env.cluster
            .kubectl_with(&bin, &["exec", "bench", "--", "true"], None)
            .await;
        let bin2 = bin.clone();
        let lat = measure(|| {
            let bin = bin2.clone();
            async move {
                let o = env
                    .cluster
                    .kubectl_with(&bin, &["exec", "bench", "--", "true"], None)
                    .await;
                if !o.status.success() {
                    bail!(
                        "kubectl exec failed: {}",
                        String::from_utf8_lossy(&o.stderr)
                    );
                }
                Ok(())
            }
        })
        .await?;
        print_latency(label, &lat);
    }
    let floor = measure(|| async {
        let o = env.cluster.kubectl(&["version", "--client"]).await;
        anyhow::ensure!(o.status.success());
        Ok(())
    })
    .await?;
    print_latency("kubectl version --client (process start-up)", &floor);
    Ok(())
}

async fn measure<F, Fut>(mut f: F) -> anyhow::Result<Vec<Duration>>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let mut out = Vec::with_capacity(EXEC_RUNS);
    for _ in 0..EXEC_RUNS {
        let t = Instant::now();
        f().await?;
        out.push(t.elapsed());
    }
    out.sort();
    Ok(out)
}

fn print_latency(label: &str, d: &[Duration]) {
    let p = |q: f64| d[((d.len() as f64 * q).ceil() as usize).clamp(1, d.len()) - 1];
    println!(
        "  {label:<52} {:7.1} ms / {:7.1} ms",
        p(0.5).as_secs_f64() * 1e3,
        p(0.99).as_secs_f64() * 1e3
    );
}

fn mbps(bytes: u64, t: Duration) -> f64 {
    bytes as f64 / 1e6 / t.as_secs_f64()
}

/// GET /big over any byte stream; the body's size and the elapsed time.
async fn get_big<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    mut s: S,
) -> anyhow::Result<(u64, Duration)> {
    let t = Instant::now();
    s.write_all(b"GET /big HTTP/1.0\r\nHost: x\r\n\r\n").await?;
    let mut buf = vec![0u8; 256 * 1024];
    let mut n = 0u64;
    loop {
        let r = s.read(&mut buf).await?;
        if r == 0 {
            break;
        }
        n += r as u64;
    }
    if n < SIZE {
        bail!("short body: {n} bytes");
    }
    Ok((n, t.elapsed()))
}

async fn timed_get_tcp(addr: &str) -> anyhow::Result<f64> {
    let s = tokio::net::TcpStream::connect(addr).await?;
    let (n, t) = get_big(s).await?;
    Ok(mbps(n, t))
}

async fn via_cri_port_forward(
    rt: &dyn Runtime,
    sandbox: &str,
    tasks: &Tasks,
) -> anyhow::Result<f64> {
    let url = rt.port_forward(sandbox.to_string(), vec![8000]).await?;
    let session = client::port_forward(&url, tasks).await?;
    let streams = client::forward_port(&session, 8000, 0).await?;
    let (mut rd, wr) = streams.data.split();
    let t = Instant::now();
    wr.send(b"GET /big HTTP/1.0\r\nHost: x\r\n\r\n").await?;
    let mut n = 0u64;
    while let Some(b) = rd.recv().await {
        n += b.len() as u64;
        if n >= SIZE {
            break;
        }
    }
    let el = t.elapsed();
    if n < SIZE {
        bail!("short body through CRI port-forward: {n} bytes");
    }
    session.shutdown().await;
    Ok(mbps(n, el))
}

async fn via_kubectl_port_forward(env: &Env, bin: &Path) -> anyhow::Result<f64> {
    let mut child = env
        .cluster
        .kubectl_spawn_with(bin, &["port-forward", "pod/bench", ":8000"]);
    let mut lines = tokio::io::BufReader::new(child.stdout.take().context("stdout")?).lines();
    let port: u16 = loop {
        let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await??
            .context("port-forward exited")?;
        if let Some(rest) = line.strip_prefix("Forwarding from 127.0.0.1:") {
            break rest.split_whitespace().next().context("port")?.parse()?;
        }
    };
    let r = timed_get_tcp(&format!("127.0.0.1:{port}")).await;
    child.kill().await?;
    r
}
