//! The apiserver under test as a child process: started from the binary next to the benchmark,
//! timed to its first good `/readyz`, measured through `/proc/PID/status`, and stopped with
//! SIGTERM (then SIGKILL) through its own `Child` handle.
//!
//! Its stdout and stderr go to a log file that the benchmark scans for warnings, errors and
//! panics afterwards.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use http::StatusCode;
use tokio::process::{Child, Command};

use super::client::{Endpoint, Req};

/// How long the server may take to answer `/readyz` before the benchmark gives up.
const READY_TIMEOUT: Duration = Duration::from_secs(180);
/// How long a SIGTERM'd server may take to drain before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(20);

/// What to start.
#[derive(Clone, Debug)]
pub struct ServerSpec {
    pub binary: PathBuf,
    pub data_dir: PathBuf,
    /// `(endpoint, prefix)` of an etcd to store objects in; the embedded store otherwise.
    pub etcd: Option<(String, String)>,
    pub log: PathBuf,
}

/// The `apiserver` binary in the benchmark binary's own directory (same target dir and profile).
pub fn default_binary() -> Result<PathBuf> {
    let exe = std::env::current_exe().context("locating the benchmark binary")?;
    let dir = exe
        .parent()
        .ok_or_else(|| anyhow!("{} has no parent directory", exe.display()))?;
    Ok(dir.join("apiserver"))
}

/// A running apiserver child process.
pub struct ApiServer {
    child: Child,
    pid: u32,
    /// Time from spawning the process to its first 200 from `/readyz`.
    pub ready_after: Duration,
    /// The admin endpoint from the kubeconfig the server wrote.
    pub endpoint: Endpoint,
}

impl ApiServer {
    /// Spawns the server on a free loopback port and waits for `/readyz`.
    pub async fn start(spec: &ServerSpec) -> Result<Self> {
        if !spec.binary.is_file() {
            bail!(
                "apiserver binary not found at {}: build it first with `cargo build --release -p apiserver` \
                 (same profile and target dir as this benchmark), or pass --apiserver PATH",
                spec.binary.display()
            );
        }
        std::fs::create_dir_all(&spec.data_dir)?;
        let port = free_port()?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&spec.log)
            .with_context(|| format!("opening {}", spec.log.display()))?;
        let mut cmd = Command::new(&spec.binary);
        cmd.arg("--data-dir").arg(&spec.data_dir).args([
            "--bind-address",
            "127.0.0.1",
            "--secure-port",
            &port.to_string(),
        ]);
        if let Some((endpoint, prefix)) = &spec.etcd {
            cmd.args(["--etcd-servers", endpoint, "--etcd-prefix", prefix]);
        }
        cmd.env(
            "RUST_LOG",
            std::env::var("BENCH_APISERVER_LOG").unwrap_or_else(|_| "info".into()),
        )
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .kill_on_drop(true);
        let t0 = Instant::now();
        let mut child = cmd
            .spawn()
            .with_context(|| format!("spawning {}", spec.binary.display()))?;
        let pid = child
            .id()
            .ok_or_else(|| anyhow!("apiserver exited immediately"))?;
        let probe = Endpoint::insecure(addr)?;
        loop {
            if let Some(status) = child.try_wait()? {
                bail!(
                    "apiserver exited during start-up ({status}); log tail:\n{}",
                    log_tail(&spec.log, 30)
                );
            }
            if readyz(&probe).await {
                break;
            }
            if t0.elapsed() > READY_TIMEOUT {
                let _ = child.kill().await;
                bail!(
                    "apiserver not ready after {READY_TIMEOUT:?}; log tail:\n{}",
                    log_tail(&spec.log, 30)
                );
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let ready_after = t0.elapsed();
        let endpoint = Endpoint::from_kubeconfig(&spec.data_dir.join("admin.kubeconfig"))?;
        if endpoint.addr() != addr {
            bail!(
                "kubeconfig names {} but the server was started on {addr}",
                endpoint.addr()
            );
        }
        Ok(Self {
            child,
            pid,
            ready_after,
            endpoint,
        })
    }

    /// Resident set size (`VmRSS`) and its peak (`VmHWM`), in bytes.
    pub fn memory(&self) -> Result<(u64, u64)> {
        let path = format!("/proc/{}/status", self.pid);
        let status = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
        let kib = |key: &str| -> Result<u64> {
            status
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|n| n.parse::<u64>().ok())
                .map(|n| n * 1024)
                .ok_or_else(|| anyhow!("{path}: no {key}"))
        };
        Ok((kib("VmRSS:")?, kib("VmHWM:")?))
    }

    /// SIGTERM, wait for the drain, SIGKILL if it takes too long.
    pub async fn stop(mut self) -> Result<()> {
        if self.child.try_wait()?.is_some() {
            bail!("apiserver (pid {}) had already exited", self.pid);
        }
        // std and tokio only send SIGKILL; `kill -TERM` targets exactly our child's pid, which
        // cannot have been reused while we hold its unreaped `Child`.
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if sent {
            if let Ok(status) = tokio::time::timeout(STOP_TIMEOUT, self.child.wait()).await {
                status?;
                return Ok(());
            }
            eprintln!("  apiserver did not stop within {STOP_TIMEOUT:?} of SIGTERM; killing it");
        }
        self.child.kill().await?;
        Ok(())
    }
}

/// One `/readyz` attempt: true on a 200.
async fn readyz(probe: &Endpoint) -> bool {
    let attempt = async {
        let mut conn = probe.connect().await?;
        conn.send(&Req::get("/readyz")).await
    };
    // The listener is bound before the server serves, so a handshake may wait for it; allow
    // that instead of reconnecting in a tight loop.
    matches!(
        tokio::time::timeout(Duration::from_secs(10), attempt).await,
        Ok(Ok(resp)) if resp.status == StatusCode::OK
    )
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// The last `n` lines of a log file.
pub fn log_tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Warnings, errors and panics in a server log: `(count, a few distinct examples)`.
pub fn log_findings(path: &Path) -> (usize, Vec<String>) {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut count = 0;
    let mut examples: Vec<String> = Vec::new();
    for line in text.lines() {
        if !(line.contains(" WARN ") || line.contains("ERROR") || line.contains("panicked")) {
            continue;
        }
        count += 1;
        // Strip the timestamp so repeats of one message collapse.
        let msg: String = line
            .split_once(' ')
            .map_or(line, |(_, rest)| rest)
            .trim()
            .chars()
            .take(240)
            .collect();
        if examples.len() < 8 && !examples.contains(&msg) {
            examples.push(msg);
        }
    }
    (count, examples)
}
