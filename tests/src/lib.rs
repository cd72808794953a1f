//! The workspace test harness: starts real API servers (embedded store or a real etcd) over TLS
//! on loopback and drives them with the real `kubectl` binary and with `kube` clients.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

pub mod containerd;
pub mod node_env;

pub use storage::testing::EtcdProcess;

/// The kubectl the tests drive: `$KUBECTL`, else `/usr/bin/kubectl`, else `kubectl` on PATH.
pub fn kubectl_path() -> PathBuf {
    if let Ok(p) = std::env::var("KUBECTL") {
        return p.into();
    }
    for p in [
        "/usr/lib/google-cloud-sdk/bin/kubectl.1.32",
        "/usr/bin/kubectl",
        "/usr/local/bin/kubectl",
    ] {
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
    /// The apiserver command line, reused by [`TestCluster::restart`].
    args: Vec<String>,
}

/// Extra settings for [`TestCluster::start_with`].
#[derive(Clone, Debug, Default)]
pub struct StartOptions {
    /// Extra apiserver flags appended to the harness's own.
    pub extra_args: Vec<String>,
    /// Content of a `--token-auth-file` (CSV `token,user,uid,"group1,group2"`), written into
    /// the cluster's directory and passed to the apiserver.
    pub token_auth_csv: Option<String>,
}

impl TestCluster {
    /// Start an API server on a free loopback port.
    pub async fn start(backend: Backend) -> anyhow::Result<Self> {
        Self::start_with(backend, StartOptions::default()).await
    }

    /// Start an API server with extra flags.
    pub async fn start_with(backend: Backend, opts: StartOptions) -> anyhow::Result<Self> {
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
        if let Some(csv) = &opts.token_auth_csv {
            let p = dir.path().join("tokens.csv");
            std::fs::write(&p, csv)?;
            args.push(format!("--token-auth-file={}", p.display()));
        }
        args.extend(opts.extra_args);
        let config = apiserver::Config::try_from(<apiserver::Args as clap::Parser>::parse_from(
            args.clone(),
        ))?;
        let shutdown = CancellationToken::new();
        let running = apiserver::start(config, shutdown.clone()).await?;
        let cache_dir = dir.path().join("kubectl-cache");
        Ok(Self {
            kubeconfig: running.kubeconfig,
            addr: running.addr,
            cache_dir,
            dir,
            shutdown,
            task: Some(running.task),
            args,
        })
    }

    /// Stop this API server and start a new one on the same data directory (and the same etcd
    /// prefix), as a process restart would. The address and kubeconfig are updated; clients
    /// made before must be recreated.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
        // Connections and watches still draining may briefly hold the embedded store's lock.
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let config = apiserver::Config::try_from(
                <apiserver::Args as clap::Parser>::parse_from(self.args.clone()),
            )?;
            let shutdown = CancellationToken::new();
            match apiserver::start(config, shutdown.clone()).await {
                Ok(running) => {
                    self.kubeconfig = running.kubeconfig;
                    self.addr = running.addr;
                    self.shutdown = shutdown;
                    self.task = Some(running.task);
                    return Ok(());
                }
                Err(e) if std::time::Instant::now() < deadline => {
                    tracing::debug!(error = %e, "restart: store still held, retrying");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// The etcd endpoint when the cluster stores objects in etcd.
    pub fn etcd_endpoint(&self) -> Option<&str> {
        self.args
            .iter()
            .position(|a| a == "--etcd-servers")
            .and_then(|i| self.args.get(i + 1))
            .map(String::as_str)
    }

    /// The data directory the API server was started with.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// One HTTPS request as the admin (client certificate), fully read.
    pub async fn raw(
        &self,
        method: &str,
        path: &str,
        content_type: Option<&str>,
        body: impl Into<bytes::Bytes>,
    ) -> RawResponse {
        self.raw_as(&Auth::Admin, method, path, content_type, body)
            .await
    }

    /// One HTTPS request with the given credentials, fully read.
    pub async fn raw_as(
        &self,
        auth: &Auth,
        method: &str,
        path: &str,
        content_type: Option<&str>,
        body: impl Into<bytes::Bytes>,
    ) -> RawResponse {
        use http_body_util::BodyExt;
        let resp = self
            .raw_send(auth, method, path, content_type, body.into(), &[])
            .await;
        let (parts, body) = resp.into_parts();
        let body = tokio::time::timeout(Duration::from_secs(60), body.collect())
            .await
            .expect("response body within 60s")
            .expect("read response body")
            .to_bytes();
        RawResponse {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body,
        }
    }

    /// POST a (large) body as the admin over HTTP/1.1 while reading the answer concurrently,
    /// so a server that rejects the body early (413) is seen even if it stops reading.
    pub async fn raw_upload(&self, path: &str, content_type: &str, body: Vec<u8>) -> RawResponse {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let creds = AdminCreds::read(&self.kubeconfig);
        let tls = component_base::tls::client_config(
            &creds.ca_pem,
            Some((&creds.cert_pem, &creds.key_pem)),
        )
        .expect("client TLS config");
        let tcp = tokio::net::TcpStream::connect(self.addr)
            .await
            .expect("connect to apiserver");
        let stream = tokio_rustls::TlsConnector::from(tls)
            .connect(rustls::pki_types::ServerName::from(self.addr.ip()), tcp)
            .await
            .expect("TLS handshake");
        let (mut rd, mut wr) = tokio::io::split(stream);
        let head = format!("POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", self.addr, body.len());
        let writer = tokio::spawn(async move {
            // The server may stop reading once it has answered: write errors are expected.
            let _ = wr.write_all(head.as_bytes()).await;
            let _ = wr.write_all(&body).await;
            let _ = wr.flush().await;
            wr
        });
        let mut raw = Vec::new();
        let mut buf = [0u8; 8192];
        let parsed = tokio::time::timeout(Duration::from_secs(60), async {
            loop {
                if let Some(r) = parse_http1_response(&raw) {
                    return r;
                }
                match rd.read(&mut buf).await {
                    Ok(0) | Err(_) => {
                        return parse_http1_response(&raw)
                            .expect("a complete HTTP response before the connection closed")
                    }
                    Ok(n) => raw.extend_from_slice(&buf[..n]),
                }
            }
        })
        .await
        .expect("response within 60s");
        writer.abort();
        parsed
    }

    /// GET a watch path as the admin and collect its event lines until `max` events arrived,
    /// the stream ended, or `within` passed. Returns the events and whether the server ended
    /// the stream.
    pub async fn watch_raw(
        &self,
        path: &str,
        max: usize,
        within: Duration,
    ) -> (Vec<serde_json::Value>, bool) {
        use http_body_util::BodyExt;
        let resp = self
            .raw_send(&Auth::Admin, "GET", path, None, bytes::Bytes::new(), &[])
            .await;
        assert_eq!(resp.status().as_u16(), 200, "watch {path} refused");
        let mut body = resp.into_body();
        let (mut events, mut buf) = (Vec::new(), Vec::<u8>::new());
        let deadline = tokio::time::Instant::now() + within;
        loop {
            while let Some(i) = buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = buf.drain(..=i).collect();
                events.push(serde_json::from_slice(&line).unwrap_or_else(|e| {
                    panic!(
                        "watch line is not JSON ({e}): {}",
                        String::from_utf8_lossy(&line)
                    )
                }));
            }
            if events.len() >= max {
                return (events, false);
            }
            match tokio::time::timeout_at(deadline, body.frame()).await {
                Err(_) => return (events, false),
                Ok(None) => return (events, true),
                Ok(Some(Err(e))) => panic!("watch {path}: {e}"),
                Ok(Some(Ok(f))) => {
                    if let Some(d) = f.data_ref() {
                        buf.extend_from_slice(d);
                    }
                }
            }
        }
    }

    async fn raw_send(
        &self,
        auth: &Auth,
        method: &str,
        path: &str,
        content_type: Option<&str>,
        body: bytes::Bytes,
        headers: &[(&str, &str)],
    ) -> http::Response<hyper::body::Incoming> {
        let creds = AdminCreds::read(&self.kubeconfig);
        let identity =
            matches!(auth, Auth::Admin).then(|| (creds.cert_pem.as_str(), creds.key_pem.as_str()));
        let tls =
            component_base::tls::client_config(&creds.ca_pem, identity).expect("client TLS config");
        let tcp = tokio::net::TcpStream::connect(self.addr)
            .await
            .expect("connect to apiserver");
        let name = rustls::pki_types::ServerName::from(self.addr.ip());
        let stream = tokio_rustls::TlsConnector::from(tls)
            .connect(name, tcp)
            .await
            .expect("TLS handshake");
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .expect("HTTP handshake");
        tokio::spawn(conn);
        let mut req = http::Request::builder()
            .method(method)
            .uri(path)
            .header(http::header::HOST, self.addr.to_string());
        if let Some(ct) = content_type {
            req = req.header(http::header::CONTENT_TYPE, ct);
        }
        if let Auth::Bearer(t) = auth {
            req = req.header(http::header::AUTHORIZATION, format!("Bearer {t}"));
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req
            .body(http_body_util::Full::new(body))
            .expect("valid request");
        tokio::time::timeout(Duration::from_secs(60), sender.send_request(req))
            .await
            .expect("response within 60s")
            .expect("send request")
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
        self.kubectl_spawn_with(&kubectl_path(), args)
    }

    /// [`TestCluster::kubectl_spawn`] with a chosen kubectl binary (e.g. [`kubectl_127`]).
    pub fn kubectl_spawn_with(&self, bin: &Path, args: &[&str]) -> tokio::process::Child {
        self.kubectl_command(bin, args)
            .spawn()
            .expect("spawn kubectl")
    }

    /// A kubectl command for this cluster with piped stdout/stderr and no stdin, killed when
    /// dropped; callers may pipe stdin before spawning it.
    pub fn kubectl_command(&self, bin: &Path, args: &[&str]) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(bin);
        cmd.args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .env("KUBECACHEDIR", &self.cache_dir)
            .env("HOME", self.dir.path())
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        cmd
    }

    async fn kubectl_full(
        &self,
        bin: &Path,
        args: &[&str],
        stdin: Option<&str>,
        env: &[(&str, &str)],
    ) -> Output {
        use tokio::io::AsyncWriteExt;
        let mut cmd = tokio::process::Command::new(bin);
        cmd.envs(env.iter().copied());
        cmd.args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .env("KUBECACHEDIR", &self.cache_dir)
            .env("HOME", self.dir.path())
            .env_remove("KUBECTL_EXTERNAL_DIFF")
            .stdin(if stdin.is_some() {
                std::process::Stdio::piped()
            } else {
                std::process::Stdio::null()
            })
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e} (set KUBECTL)", bin.display()));
        if let Some(s) = stdin {
            let mut w = child.stdin.take().expect("piped stdin");
            w.write_all(s.as_bytes())
                .await
                .expect("write kubectl stdin");
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
        let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
            .await
            .expect("kube config");
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
    format!(
        "{}-{}-{n}",
        std::process::id(),
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    )
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
        assert!(
            self.status.success(),
            "kubectl failed ({}):\nstdout:\n{out}\nstderr:\n{err}",
            self.status
        );
        out
    }
    /// Assert a non-zero exit code and return stderr.
    fn fails(&self) -> String {
        let out = String::from_utf8_lossy(&self.stdout);
        let err = String::from_utf8_lossy(&self.stderr).into_owned();
        assert!(
            !self.status.success(),
            "kubectl unexpectedly succeeded:\nstdout:\n{out}\nstderr:\n{err}"
        );
        err
    }
}

/// Credentials for [`TestCluster::raw_as`].
#[derive(Clone, Debug)]
pub enum Auth {
    /// The admin client certificate from the kubeconfig.
    Admin,
    /// No client certificate and no token.
    Anonymous,
    /// `Authorization: Bearer <token>` (no client certificate).
    Bearer(String),
}

/// A fully read HTTP response.
#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: bytes::Bytes,
}

impl RawResponse {
    /// The body as JSON (panics with the body if it is not).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{} body is not JSON ({e}): {}", self.status, self.text()))
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    /// All values of a header.
    pub fn header_all(&self, name: &str) -> Vec<String> {
        self.headers
            .get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap_or_default().to_string())
            .collect()
    }
}

/// A complete `Content-Length` HTTP/1.1 response in `raw`, if there is one yet.
fn parse_http1_response(raw: &[u8]) -> Option<RawResponse> {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&raw[..end]).ok()?;
    let mut lines = head.split("\r\n");
    let status: u16 = lines.next()?.split_whitespace().nth(1)?.parse().ok()?;
    let mut headers = http::HeaderMap::new();
    for l in lines {
        if let Some((k, v)) = l.split_once(':') {
            if let (Ok(k), Ok(v)) = (
                http::HeaderName::from_bytes(k.trim().as_bytes()),
                http::HeaderValue::from_str(v.trim()),
            ) {
                headers.append(k, v);
            }
        }
    }
    let len: usize = headers
        .get(http::header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()?;
    let body = raw.get(end + 4..end + 4 + len)?;
    Some(RawResponse {
        status,
        headers,
        body: bytes::Bytes::copy_from_slice(body),
    })
}

/// The CA and admin identity a kubeconfig written by the apiserver embeds.
struct AdminCreds {
    ca_pem: String,
    cert_pem: String,
    key_pem: String,
}

impl AdminCreds {
    fn read(path: &Path) -> Self {
        use base64::Engine as _;
        let doc: serde_yaml::Value =
            serde_yaml::from_str(&std::fs::read_to_string(path).expect("read kubeconfig"))
                .expect("kubeconfig is YAML");
        let pem = |v: &serde_yaml::Value, k: &str| {
            let b64 = v[k]
                .as_str()
                .unwrap_or_else(|| panic!("kubeconfig lacks {k}"));
            String::from_utf8(
                base64::engine::general_purpose::STANDARD
                    .decode(b64)
                    .expect("base64"),
            )
            .expect("PEM text")
        };
        let (cluster, user) = (&doc["clusters"][0]["cluster"], &doc["users"][0]["user"]);
        Self {
            ca_pem: pem(cluster, "certificate-authority-data"),
            cert_pem: pem(user, "client-certificate-data"),
            key_pem: pem(user, "client-key-data"),
        }
    }
}

/// The `apiserver` binary next to the running test binary (`<target>/debug/apiserver`; built by
/// `cargo build -p apiserver`, which `deploy/test.sh` runs first).
pub fn apiserver_binary() -> PathBuf {
    if let Ok(p) = std::env::var("APISERVER_BIN") {
        return p.into();
    }
    let exe = std::env::current_exe().expect("current exe");
    // <target>/debug/deps/api-<hash> → <target>/debug/apiserver
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test binary lives in <target>/<profile>/deps");
    dir.join("apiserver")
}

/// A real `apiserver` process (for crash tests); killed on drop.
pub struct ApiserverProcess {
    pub addr: SocketAddr,
    pub kubeconfig: PathBuf,
    child: tokio::process::Child,
}

impl ApiserverProcess {
    /// Start `apiserver --data-dir <data_dir>` on a free loopback port and wait until it listens.
    pub async fn spawn(data_dir: &Path) -> anyhow::Result<Self> {
        use tokio::io::AsyncBufReadExt;
        let bin = apiserver_binary();
        anyhow::ensure!(
            bin.is_file(),
            "{} is missing: run `cargo build -p apiserver` first",
            bin.display()
        );
        let mut child = tokio::process::Command::new(&bin)
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--bind-address", "127.0.0.1", "--secure-port", "0"])
            .env("RUST_LOG", "warn")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()?;
        let mut lines =
            tokio::io::BufReader::new(child.stdout.take().expect("piped stdout")).lines();
        let addr = tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(line) = lines.next_line().await? {
                if let Some(a) = line.strip_prefix("API server listening on https://") {
                    return Ok(a.trim().parse::<SocketAddr>()?);
                }
            }
            anyhow::bail!("apiserver exited before listening")
        })
        .await
        .map_err(|_| anyhow::anyhow!("apiserver did not listen within 30s"))??;
        // Keep draining stdout so the child never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(Self {
            addr,
            kubeconfig: data_dir.join("admin.kubeconfig"),
            child,
        })
    }

    /// A `kube` client for this process.
    pub async fn client(&self) -> kube::Client {
        let kc = kube::config::Kubeconfig::read_from(&self.kubeconfig).expect("kubeconfig parses");
        let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
            .await
            .expect("kube config");
        kube::Client::try_from(cfg).expect("kube client")
    }

    /// SIGKILL this process (only it) and reap it.
    pub async fn kill9(mut self) {
        self.child.start_kill().expect("SIGKILL apiserver");
        let _ = self.child.wait().await;
    }
}
