//! The workspace test harness: starts real API servers (embedded store or a real etcd) over TLS
//! on loopback and drives them with the real `kubectl` binary and with `kube` clients.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

pub use storage::testing::EtcdProcess;

/// The kubectl the tests drive: `$KUBECTL`, else `/usr/bin/kubectl`, else `kubectl` on PATH.
pub fn kubectl_path() -> PathBuf {
    if let Ok(p) = std::env::var("KUBECTL") {
        return p.into();
    }
    for p in ["/usr/lib/google-cloud-sdk/bin/kubectl.1.32", "/usr/bin/kubectl", "/usr/local/bin/kubectl"] {
        if Path::new(p).exists() {
            return p.into();
        }
    }
    "kubectl".into()
}

/// An older kubectl for compatibility tests, if installed.
pub fn kubectl_127() -> Option<PathBuf> {
    let p = PathBuf::from("/usr/lib/google-cloud-sdk/bin/kubectl.1.27");
    p.exists().then_some(p)
}

/// Which store a test cluster uses.
#[derive(Clone)]
pub enum Backend {
    Embedded,
    Etcd(Arc<EtcdProcess>),
}

/// A running API server with its own data directory and admin kubeconfig.
pub struct TestCluster {
    pub dir: tempfile::TempDir,
    pub kubeconfig: PathBuf,
    pub addr: SocketAddr,
    pub cache_dir: PathBuf,
    shutdown: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl TestCluster {
    /// Start an API server on a free loopback port.
    pub async fn start(backend: Backend) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let mut args = vec![
            "apiserver".to_string(),
            "--data-dir".into(),
            dir.path().join("data").display().to_string(),
            "--bind-address".into(),
            "127.0.0.1".into(),
            "--secure-port".into(),
            "0".into(),
        ];
        if let Backend::Etcd(e) = &backend {
            args.push("--etcd-servers".into());
            args.push(e.endpoint.clone());
            args.push("--etcd-prefix".into());
            args.push(format!("/t{}", uuid_like()));
        }
        let config = apiserver::Config::try_from(<apiserver::Args as clap::Parser>::parse_from(args))?;
        let shutdown = CancellationToken::new();
        let running = apiserver::start(config, shutdown.clone()).await?;
        let cache_dir = dir.path().join("kubectl-cache");
        Ok(Self { kubeconfig: running.kubeconfig, addr: running.addr, cache_dir, dir, shutdown, task: Some(running.task) })
    }

    /// Run kubectl with this cluster's kubeconfig and a private cache dir.
    pub async fn kubectl(&self, args: &[&str]) -> Output {
        self.kubectl_with(&kubectl_path(), args, None).await
    }

    /// Run kubectl and feed `stdin`.
    pub async fn kubectl_stdin(&self, args: &[&str], stdin: &str) -> Output {
        self.kubectl_with(&kubectl_path(), args, Some(stdin)).await
    }

    pub async fn kubectl_with(&self, bin: &Path, args: &[&str], stdin: Option<&str>) -> Output {
        self.kubectl_full(bin, args, stdin, &[]).await
    }

    /// Run kubectl with extra environment variables (e.g. EDITOR for `kubectl edit`).
    pub async fn kubectl_env(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        self.kubectl_full(&kubectl_path(), args, None, env).await
    }

    /// Spawn kubectl without waiting (for `get -w`, `proxy`); killed on drop.
    pub fn kubectl_spawn(&self, args: &[&str]) -> tokio::process::Child {
        tokio::process::Command::new(kubectl_path())
            .args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .env("KUBECACHEDIR", &self.cache_dir)
            .env("HOME", self.dir.path())
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn kubectl")
    }

    async fn kubectl_full(&self, bin: &Path, args: &[&str], stdin: Option<&str>, env: &[(&str, &str)]) -> Output {
        use tokio::io::AsyncWriteExt;
        let mut cmd = tokio::process::Command::new(bin);
        cmd.envs(env.iter().copied());
        cmd.args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .env("KUBECACHEDIR", &self.cache_dir)
            .env("HOME", self.dir.path())
            .env_remove("KUBECTL_EXTERNAL_DIFF")
            .stdin(if stdin.is_some() { std::process::Stdio::piped() } else { std::process::Stdio::null() })
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("cannot run {}: {e} (set KUBECTL)", bin.display()));
        if let Some(s) = stdin {
            let mut w = child.stdin.take().expect("piped stdin");
            w.write_all(s.as_bytes()).await.expect("write kubectl stdin");
            drop(w);
        }
        match tokio::time::timeout(Duration::from_secs(60), child.wait_with_output()).await {
            Ok(o) => o.expect("kubectl ran"),
            Err(_) => panic!("kubectl {args:?} did not finish within 60s"),
        }
    }

    /// A `kube` client authenticated as the admin.
    pub async fn client(&self) -> kube::Client {
        let kc = kube::config::Kubeconfig::read_from(&self.kubeconfig).expect("kubeconfig parses");
        let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await.expect("kube config");
        kube::Client::try_from(cfg).expect("kube client")
    }

    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

fn uuid_like() -> String {
    use std::time::{SystemTime, UNIX_EPOCH};
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{}-{}-{n}", std::process::id(), SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0))
}

/// Output helpers for assertions with readable failures.
pub trait OutputExt {
    fn ok(&self) -> String;
    fn fails(&self) -> String;
}

impl OutputExt for Output {
    /// Assert exit code 0 and return stdout.
    fn ok(&self) -> String {
        let out = String::from_utf8_lossy(&self.stdout).into_owned();
        let err = String::from_utf8_lossy(&self.stderr);
        assert!(self.status.success(), "kubectl failed ({}):\nstdout:\n{out}\nstderr:\n{err}", self.status);
        out
    }
    /// Assert a non-zero exit code and return stderr.
    fn fails(&self) -> String {
        let out = String::from_utf8_lossy(&self.stdout);
        let err = String::from_utf8_lossy(&self.stderr).into_owned();
        assert!(!self.status.success(), "kubectl unexpectedly succeeded:\nstdout:\n{out}\nstderr:\n{err}");
        err
    }
}
