//! Test support: a throwaway single-member etcd on loopback, for this crate's tests, the API
//! server's tests and benchmarks.
//!
//! [`EtcdProcess::start`] picks free ports, starts `/usr/bin/etcd` (or `$ETCD_BIN`) with a
//! temporary data directory, and returns once etcd reports healthy. Dropping it kills that one
//! child process, waits for it and removes the data directory.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Where Debian's `etcd-server` package installs etcd.
pub const DEFAULT_ETCD_BINARY: &str = "/usr/bin/etcd";

/// Environment variable overriding [`DEFAULT_ETCD_BINARY`].
pub const ETCD_BINARY_ENV: &str = "ETCD_BIN";

const HEALTH_TIMEOUT: Duration = Duration::from_secs(30);
const START_ATTEMPTS: usize = 3;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(
        "etcd binary not found at {0}: install it (`apt-get install etcd-server`) or point ${ETCD_BINARY_ENV} at one"
    )]
    MissingBinary(PathBuf),
    #[error("setting up etcd: {0}")]
    Io(#[from] std::io::Error),
    #[error("etcd exited during startup ({status}); log:\n{log}")]
    Exited {
        status: std::process::ExitStatus,
        log: String,
    },
    #[error("etcd did not become healthy within {HEALTH_TIMEOUT:?}; log:\n{log}")]
    Unhealthy { log: String },
}

/// A running etcd child process; killed and cleaned up on drop.
#[derive(Debug)]
pub struct EtcdProcess {
    /// The client URL, e.g. `http://127.0.0.1:43125`.
    pub endpoint: String,
    child: Child,
    dir: tempfile::TempDir,
}

impl EtcdProcess {
    /// Starts etcd from `$ETCD_BIN` or [`DEFAULT_ETCD_BINARY`].
    pub async fn start() -> Result<Self, StartError> {
        let binary = std::env::var_os(ETCD_BINARY_ENV)
            .map(PathBuf::from)
            .unwrap_or_else(|| DEFAULT_ETCD_BINARY.into());
        Self::start_with(&binary).await
    }

    /// Starts the given etcd binary.
    pub async fn start_with(binary: &Path) -> Result<Self, StartError> {
        if !binary.is_file() {
            return Err(StartError::MissingBinary(binary.to_path_buf()));
        }
        let mut attempt = 1;
        loop {
            match Self::try_start(binary).await {
                // Ports are picked by binding :0 and releasing them, so another process may
                // grab one before etcd binds it; pick new ones.
                Err(StartError::Exited { log, .. })
                    if log.contains("address already in use") && attempt < START_ATTEMPTS =>
                {
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    async fn try_start(binary: &Path) -> Result<Self, StartError> {
        let dir = tempfile::Builder::new().prefix("etcd-test-").tempdir()?;
        let (client_port, peer_port) = (free_port()?, free_port()?);
        let endpoint = format!("http://127.0.0.1:{client_port}");
        let peer = format!("http://127.0.0.1:{peer_port}");
        let log = std::fs::File::create(dir.path().join("etcd.log"))?;
        // etcd runs under a small shell watchdog that kills it when our end of its stdin pipe
        // closes, then removes its directory, so it also dies and leaves nothing behind when
        // the test process exits without dropping us (a `static` shared etcd is never dropped).
        let child = Command::new("sh")
            .arg("-c")
            .arg(r#"exec 3<&0; "$0" "$@" </dev/null & pid=$!; (cat <&3 >/dev/null; kill "$pid" 2>/dev/null; while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done; rm -rf "$KUBRS_ETCD_TEST_DIR") & wait "$pid""#)
            .arg(binary)
            .arg("--name=test")
            .arg(format!("--data-dir={}", dir.path().join("data").display()))
            .arg(format!("--listen-client-urls={endpoint}"))
            .arg(format!("--advertise-client-urls={endpoint}"))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster=test={peer}"))
            .arg("--initial-cluster-state=new")
            .arg("--logger=zap")
            .arg("--log-outputs=stderr")
            .arg("--log-level=warn")
            // etcd reads ETCD_* variables as flags and warns about ours.
            .env_remove(ETCD_BINARY_ENV)
            .env("KUBRS_ETCD_TEST_DIR", dir.path())
            .stdin(Stdio::piped())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        let mut etcd = Self {
            endpoint,
            child,
            dir,
        };
        etcd.wait_healthy(client_port).await?;
        Ok(etcd)
    }

    async fn wait_healthy(&mut self, port: u16) -> Result<(), StartError> {
        let deadline = Instant::now() + HEALTH_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Err(StartError::Exited {
                    status,
                    log: self.log(),
                });
            }
            if healthy(port).await {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(StartError::Unhealthy { log: self.log() });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The endpoint as the list [`crate::etcd::EtcdStore::connect`] takes.
    pub fn endpoints(&self) -> Vec<String> {
        vec![self.endpoint.clone()]
    }

    /// etcd's data directory (removed on drop).
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// What etcd logged so far (warnings and errors).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("etcd.log")).unwrap_or_default()
    }

    /// Kills etcd now (e.g. to test connection loss); dropping afterwards is fine.
    pub fn kill(&mut self) {
        // Closing the watchdog's stdin makes it stop etcd and exit.
        drop(self.child.stdin.take());
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while let Ok(None) = self.child.try_wait() {
            if std::time::Instant::now() > deadline {
                let _ = self.child.kill();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.wait();
    }
}

impl Drop for EtcdProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind(("127.0.0.1", 0))?
        .local_addr()?
        .port())
}

/// etcd's `/health` endpoint answers `{"health":"true"}` once it has a leader.
async fn healthy(port: u16) -> bool {
    let check = async {
        let mut conn = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        conn.write_all(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
            .await?;
        let mut response = Vec::new();
        conn.read_to_end(&mut response).await?;
        std::io::Result::Ok(String::from_utf8_lossy(&response).contains(r#""health":"true""#))
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(2), check).await,
        Ok(Ok(true))
    )
}
