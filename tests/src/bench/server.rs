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
    /// More command-line arguments for the server (e.g. `--watch-cache=false`).
    pub extra_args: Vec<String>,
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
        cmd.args(&spec.extra_args);
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
                    "apiserver exited during start-up ({status}): {}",
                    exit_reason(&spec.log)
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

    pub fn pid(&self) -> u32 {
        self.pid
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

/// A log file's text without terminal colour codes.
fn read_log(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI sequence: ESC '[' parameters, ended by a letter.
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The last `n` lines of a log file.
pub fn log_tail(path: &Path, n: usize) -> String {
    let text = read_log(path);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Why a server exited: its `Error: …` line (anyhow's report from `main`), else the log tail.
fn exit_reason(path: &Path) -> String {
    let text = read_log(path);
    match text.lines().rev().find(|l| l.starts_with("Error: ")) {
        Some(line) => line.to_string(),
        None => format!("log tail:\n{}", log_tail(path, 30)),
    }
}

/// Warnings, errors and panics in a server log: `(count, a few distinct examples)`.
pub fn log_findings(path: &Path) -> (usize, Vec<String>) {
    let text = read_log(path);
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

/// CPU time used by a few processes over a phase, to show who had the cores.
pub struct CpuMeter {
    procs: Vec<(&'static str, u32, u64)>,
    busy: Option<(u64, u64)>,
    t0: Instant,
}

impl CpuMeter {
    /// Starts measuring the named processes.
    pub fn start(pids: &[(&'static str, u32)]) -> Self {
        Self {
            procs: pids
                .iter()
                .map(|&(name, pid)| (name, pid, cpu_ticks(pid).unwrap_or(0)))
                .collect(),
            busy: busy_ticks(),
            t0: Instant::now(),
        }
    }

    /// "cpu (cores): apiserver 1.52, bench 0.31" since [`CpuMeter::start`].
    pub fn report(&self) -> String {
        let secs = self.t0.elapsed().as_secs_f64().max(1e-9);
        let mut ours = 0;
        let mut parts: Vec<String> = self
            .procs
            .iter()
            .filter_map(|&(name, pid, start)| {
                let used = cpu_ticks(pid)?.saturating_sub(start);
                ours += used;
                Some(format!(
                    "{name} {:.2}",
                    used as f64 / CLOCK_TICKS_PER_SEC / secs
                ))
            })
            .collect();
        // Everything else on the machine (other builds and tests) competes for the same cores.
        // Steal is time the hypervisor gave this VM's cores to someone else: part of "others",
        // shown on its own because no process here can be blamed for it.
        if let (Some((start, steal0)), Some((now, steal1))) = (self.busy, busy_ticks()) {
            let others = now.saturating_sub(start).saturating_sub(ours);
            parts.push(format!(
                "others {:.2} (steal {:.2})",
                others as f64 / CLOCK_TICKS_PER_SEC / secs,
                steal1.saturating_sub(steal0) as f64 / CLOCK_TICKS_PER_SEC / secs
            ));
        }
        format!("cpu (cores): {}", parts.join(", "))
    }

    /// CPU seconds each measured process used since [`CpuMeter::start`].
    pub fn used_secs(&self) -> Vec<(&'static str, f64)> {
        self.procs
            .iter()
            .filter_map(|&(name, pid, start)| {
                let used = cpu_ticks(pid)?.saturating_sub(start);
                Some((name, used as f64 / CLOCK_TICKS_PER_SEC))
            })
            .collect()
    }

    /// "cpu per request: apiserver 0.21 ms, etcd 0.23 ms" for `requests` served since
    /// [`CpuMeter::start`]: where each request's CPU goes, independent of how busy the
    /// machine was (only the measured processes, not "others").
    pub fn per_request(&self, requests: u64) -> String {
        let n = requests.max(1) as f64;
        let parts: Vec<String> = self
            .procs
            .iter()
            .filter_map(|&(name, pid, start)| {
                let used = cpu_ticks(pid)?.saturating_sub(start);
                Some(format!(
                    "{name} {:.3} ms",
                    used as f64 / CLOCK_TICKS_PER_SEC * 1000.0 / n
                ))
            })
            .collect();
        format!("cpu per request: {}", parts.join(", "))
    }
}

/// Linux's USER_HZ, the unit of `/proc/PID/stat` times, is 100 on every architecture we run on.
const CLOCK_TICKS_PER_SEC: f64 = 100.0;

/// utime + stime of `pid`, in clock ticks.
fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name, which may itself contain spaces.
    let rest = stat.get(stat.rfind(')')? + 2..)?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, so 12 and 13 after "pid (comm) ".
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

/// Busy time of all CPUs together (everything but idle and iowait), and the part of it that
/// was steal, in clock ticks.
fn busy_ticks() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let fields: Vec<u64> = stat
        .lines()
        .next()?
        .strip_prefix("cpu ")?
        .split_whitespace()
        .filter_map(|f| f.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is already in user).
    let total: u64 = fields.iter().take(8).sum();
    Some((total - fields.get(3)? - fields.get(4)?, *fields.get(7)?))
}

/// The pid of a descendant of this process whose command name is `comm` (see [`child_pids`]).
pub fn child_pid(comm: &str) -> Option<u32> {
    child_pids(comm).into_iter().next()
}

/// The pids of this process's descendants whose command name is `comm`, found through
/// `/proc`: children, or children's children (`EtcdProcess` runs etcd under a `sh` that kills
/// it when the test process dies).
pub fn child_pids(comm: &str) -> Vec<u32> {
    let me = std::process::id();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    // (pid, parent pid, command name) of every process.
    let procs: Vec<(u32, u32, String)> = dir
        .flatten()
        .filter_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let (open, close) = (stat.find('(')?, stat.rfind(')')?);
            let ppid: u32 = stat
                .get(close + 2..)?
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()?;
            Some((pid, ppid, stat.get(open + 1..close)?.to_string()))
        })
        .collect();
    let children: Vec<u32> = procs.iter().filter(|p| p.1 == me).map(|p| p.0).collect();
    procs
        .iter()
        .filter(|p| p.2 == comm && (p.1 == me || children.contains(&p.1)))
        .map(|p| p.0)
        .collect()
}
