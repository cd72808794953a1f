//! `demo-web`: the demo app of the air-gapped image bundle, a small stand-in for the tutorials'
//! kuard (`gcr.io/kuar-demo/kuard-amd64:blue` and friends). One binary serves every tag; the
//! version it reports comes from `KUARD_VERSION` (set in each image's config) or `--app-version`.
//!
//! Endpoints (HTTP on :8080 by default):
//! - `/` a page with the version, hostname and the request as received; `/version` the version;
//! - `/healthy` (liveness) and `/ready` (readiness): 200 `ok` or 500 `fail`, changed with
//!   `?fail=1`, `?ok=1`, `?failnext=N` or a bare POST (toggle), see [`probe`];
//! - `/env` JSON `{"commandLine": [...], "env": {...}}`, as kuard's `/env/api`;
//! - `/fs/...` directory listings and files of the container's filesystem, see [`fs`];
//! - `/memory` (held bytes and RSS), `/memory/alloc?size=300Mi`, `/memory/clear`;
//! - `/cpu?seconds=N&threads=K` burns CPU in the background;
//! - `/exit?code=N` answers, then exits with that status (to show restarts and `logs --previous`).
//!
//! SIGTERM or SIGINT stops it within [`SHUTDOWN_GRACE`] with status 0, also as PID 1 of a
//! container, where signals without a handler are ignored.

pub mod fs;
pub mod knobs;
pub mod probe;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use axum::extract::{ConnectInfo, Path as UrlPath, Query, Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{any, get};
use axum::Router;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// The version reported when neither `--app-version` nor `KUARD_VERSION` is set at run time:
/// `KUARD_VERSION` at build time, else the crate version.
pub const DEFAULT_VERSION: &str = match option_env!("KUARD_VERSION") {
    Some(v) => v,
    None => env!("CARGO_PKG_VERSION"),
};

/// How long open requests may run after a shutdown signal before the process leaves anyway.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);

/// Command-line flags.
#[derive(clap::Parser, Debug, Clone)]
#[command(
    name = "demo-web",
    about = "A kuard-like demo web app: probe toggles, env, filesystem, memory and CPU knobs."
)]
pub struct Args {
    /// Listen address: HOST:PORT, or :PORT for every IPv4 address.
    #[arg(long, env = "KUARD_ADDRESS", default_value = ":8080")]
    pub address: String,
    /// The version this instance reports (each image tag sets KUARD_VERSION: blue, green, purple).
    #[arg(long = "app-version", env = "KUARD_VERSION", default_value = DEFAULT_VERSION)]
    pub app_version: String,
    /// Directory browsed under /fs/.
    #[arg(long, env = "KUARD_FS_ROOT", default_value = "/")]
    pub fs_root: PathBuf,
}

/// Invalid flags.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("--address {0:?} is not HOST:PORT or :PORT")]
    Address(String),
    #[error("--app-version must not be empty")]
    EmptyVersion,
}

/// Validated settings.
#[derive(Debug, Clone)]
pub struct Config {
    pub address: SocketAddr,
    pub version: String,
    pub fs_root: PathBuf,
}

impl TryFrom<Args> for Config {
    type Error = ConfigError;

    fn try_from(args: Args) -> Result<Self, Self::Error> {
        let full = match args.address.strip_prefix(':') {
            Some(port) => format!("0.0.0.0:{port}"),
            None => args.address.clone(),
        };
        let address = full
            .parse()
            .map_err(|_| ConfigError::Address(args.address.clone()))?;
        if args.app_version.trim().is_empty() {
            return Err(ConfigError::EmptyVersion);
        }
        Ok(Self {
            address,
            version: args.app_version.trim().to_string(),
            fs_root: args.fs_root,
        })
    }
}

/// A token cancelled by the first SIGTERM or SIGINT; a second one exits at once (143 / 130).
pub fn shutdown_on_signals() -> std::io::Result<CancellationToken> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let token = CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        let mut received = 0;
        loop {
            let (name, code) = tokio::select! {
                _ = term.recv() => ("SIGTERM", 143),
                _ = int.recv() => ("SIGINT", 130),
            };
            received += 1;
            if received == 1 {
                info!(signal = name, "shutting down");
                cancel.cancel();
            } else {
                warn!(signal = name, "second signal, exiting now");
                std::process::exit(code);
            }
        }
    });
    Ok(token)
}

/// Binds the configured address and serves until `shutdown` is cancelled.
pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(config.address)
        .await
        .with_context(|| format!("listening on {}", config.address))?;
    serve(listener, config, shutdown).await
}

/// Serves on `listener` until `shutdown` is cancelled; requests still running then get
/// [`SHUTDOWN_GRACE`] to finish.
pub async fn serve(
    listener: tokio::net::TcpListener,
    config: Config,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let addr = listener.local_addr()?;
    info!(%addr, version = %config.version, "demo-web listening");
    let app = router(Arc::new(App::new(config)));
    let graceful = shutdown.clone();
    let server = axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move { graceful.cancelled().await });
    tokio::select! {
        r = std::future::IntoFuture::into_future(server) => r?,
        _ = async { shutdown.cancelled().await; tokio::time::sleep(SHUTDOWN_GRACE).await } => {
            warn!("requests still open after the grace period; leaving anyway");
        }
    }
    info!("demo-web stopped");
    Ok(())
}

/// Shared state of the handlers.
pub struct App {
    version: String,
    fs_root: PathBuf,
    started: Instant,
    liveness: Mutex<probe::ProbeState>,
    readiness: Mutex<probe::ProbeState>,
    memory: knobs::Memory,
}

impl App {
    pub fn new(config: Config) -> Self {
        Self {
            version: config.version,
            fs_root: config.fs_root,
            started: Instant::now(),
            liveness: Mutex::default(),
            readiness: Mutex::default(),
            memory: knobs::Memory::default(),
        }
    }
}

/// Every route; the state is shared so tests can inspect it.
pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/version", get(version))
        .route("/healthy", any(healthy))
        .route("/ready", any(ready))
        .route("/env", get(env))
        .route("/fs", get(|| async { Redirect::permanent("/fs/") }))
        .route("/fs/", get(fs_root))
        .route("/fs/{*path}", get(fs_path))
        .route("/memory", get(memory))
        .route("/memory/alloc", any(memory_alloc))
        .route("/memory/clear", any(memory_clear))
        .route("/cpu", any(cpu))
        .route("/exit", any(exit))
        .layer(middleware::from_fn(log_request))
        .with_state(app)
}

async fn log_request(req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let uri = req.uri().clone();
    let remote = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.to_string())
        .unwrap_or_default();
    let resp = next.run(req).await;
    info!(%method, %uri, %remote, status = resp.status().as_u16(), "request");
    resp
}

pub(crate) fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn wants_html(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/html"))
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_default()
}

fn json(status: StatusCode, v: serde_json::Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        format!("{v}\n"),
    )
        .into_response()
}

fn bad_request(msg: impl std::fmt::Display) -> Response {
    (StatusCode::BAD_REQUEST, format!("{msg}\n")).into_response()
}

async fn index(State(app): State<Arc<App>>, req: Request) -> Response {
    let remote = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.to_string())
        .unwrap_or_else(|| "-".into());
    let mut text = format!(
        "demo-web (kuard) version {}\nhostname: {}\npid: {}\nuptime: {}s\n\nrequest: {} {} {:?}\nremote: {}\nheaders:\n",
        app.version,
        hostname(),
        std::process::id(),
        app.started.elapsed().as_secs(),
        req.method(),
        req.uri(),
        req.version(),
        remote,
    );
    for (k, v) in req.headers() {
        text.push_str(&format!(
            "  {k}: {}\n",
            String::from_utf8_lossy(v.as_bytes())
        ));
    }
    text.push_str(
        "\nendpoints: /version /healthy /ready /env /fs/ /memory /memory/alloc?size=N /memory/clear /cpu?seconds=N /exit?code=N\n",
    );
    if wants_html(req.headers()) {
        let body = format!(
            "<!DOCTYPE html>\n<html><head><title>demo-web {0}</title></head><body>\n<h1>demo-web {0}</h1>\n<pre>{1}</pre>\n</body></html>\n",
            html_escape(&app.version),
            html_escape(&text)
        );
        return ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], body).into_response();
    }
    text.into_response()
}

async fn version(State(app): State<Arc<App>>) -> String {
    format!("{}\n", app.version)
}

fn probe_response(
    name: &str,
    state: &Mutex<probe::ProbeState>,
    method: &Method,
    query: &HashMap<String, String>,
) -> Response {
    let controls = match probe::controls(*method == Method::POST, query) {
        Ok(c) => c,
        Err(e) => return bad_request(e),
    };
    let mut s = state.lock().expect("probe lock");
    let healthy = if controls.is_empty() {
        s.check()
    } else {
        let before = s.is_failing();
        for c in controls {
            s.apply(c);
        }
        if before != s.is_failing() {
            info!(probe = name, failing = s.is_failing(), "probe changed");
        }
        !s.is_failing()
    };
    if healthy {
        (StatusCode::OK, "ok\n").into_response()
    } else {
        (StatusCode::INTERNAL_SERVER_ERROR, "fail\n").into_response()
    }
}

async fn healthy(
    State(app): State<Arc<App>>,
    method: Method,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    probe_response("liveness", &app.liveness, &method, &q)
}

async fn ready(
    State(app): State<Arc<App>>,
    method: Method,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    probe_response("readiness", &app.readiness, &method, &q)
}

async fn env() -> Response {
    let vars: BTreeMap<String, String> = std::env::vars_os()
        .map(|(k, v)| {
            (
                k.to_string_lossy().into_owned(),
                v.to_string_lossy().into_owned(),
            )
        })
        .collect();
    let args: Vec<String> = std::env::args_os()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    json(
        StatusCode::OK,
        serde_json::json!({"commandLine": args, "env": vars}),
    )
}

async fn fs_root(State(app): State<Arc<App>>, uri: Uri, headers: HeaderMap) -> Response {
    fs_serve(&app, "", &uri, &headers).await
}

async fn fs_path(
    State(app): State<Arc<App>>,
    UrlPath(path): UrlPath<String>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    fs_serve(&app, &path, &uri, &headers).await
}

async fn fs_serve(app: &App, path: &str, uri: &Uri, headers: &HeaderMap) -> Response {
    let target = match fs::resolve(&app.fs_root, path) {
        Ok(t) => t,
        Err(e) => return bad_request(e),
    };
    let io_error = |e: std::io::Error| {
        let status = match e.kind() {
            std::io::ErrorKind::NotFound => StatusCode::NOT_FOUND,
            std::io::ErrorKind::PermissionDenied => StatusCode::FORBIDDEN,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        (status, format!("{}: {e}\n", target.display())).into_response()
    };
    let meta = match tokio::fs::metadata(&target).await {
        Ok(m) => m,
        Err(e) => return io_error(e),
    };
    if meta.is_dir() {
        if !uri.path().ends_with('/') {
            // Relative links in the listing need the trailing slash.
            return Redirect::permanent(&format!("{}/", uri.path())).into_response();
        }
        return match fs::list(&target).await {
            Ok(entries) if wants_html(headers) => (
                [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
                fs::render_html(uri.path(), &entries),
            )
                .into_response(),
            Ok(entries) => fs::render_text(&entries).into_response(),
            Err(e) => io_error(e),
        };
    }
    match fs::read(&target).await {
        Ok(bytes) => {
            let ct = if std::str::from_utf8(&bytes).is_ok() {
                "text/plain; charset=utf-8"
            } else {
                "application/octet-stream"
            };
            ([(header::CONTENT_TYPE, ct)], bytes).into_response()
        }
        Err(e) => io_error(e),
    }
}

fn memory_status(app: &App) -> serde_json::Value {
    let (held, chunks) = app.memory.held();
    serde_json::json!({"heldBytes": held, "allocations": chunks, "rssBytes": knobs::rss_bytes()})
}

async fn memory(State(app): State<Arc<App>>) -> Response {
    json(StatusCode::OK, memory_status(&app))
}

async fn memory_alloc(
    State(app): State<Arc<App>>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let Some(size) = q.get("size") else {
        return bad_request("size is required, e.g. /memory/alloc?size=300Mi");
    };
    let size = match knobs::parse_size(size) {
        Ok(s) => s,
        Err(e) => return bad_request(e),
    };
    let worker = app.clone();
    // Touching hundreds of MiB takes a while; keep it off the async workers.
    let result = tokio::task::spawn_blocking(move || worker.memory.alloc(size)).await;
    match result {
        Ok(Ok(())) => {
            info!(bytes = size, "allocated memory");
            json(StatusCode::OK, memory_status(&app))
        }
        Ok(Err(e)) => (
            StatusCode::INSUFFICIENT_STORAGE,
            format!("cannot allocate {size} bytes: {e}\n"),
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
    }
}

async fn memory_clear(State(app): State<Arc<App>>) -> Response {
    let freed = app.memory.clear();
    info!(bytes = freed, "freed memory");
    json(StatusCode::OK, memory_status(&app))
}

async fn cpu(Query(q): Query<HashMap<String, String>>) -> Response {
    let seconds: f64 = match q.get("seconds").map(|s| s.parse()) {
        None => 10.0,
        Some(Ok(s)) if s >= 0.0 && f64::is_finite(s) => s,
        Some(_) => return bad_request("seconds must be a non-negative number"),
    };
    let threads: usize = match q.get("threads").map(|s| s.parse()) {
        None => 1,
        Some(Ok(n)) if n >= 1 => n,
        Some(_) => return bad_request("threads must be a positive integer"),
    };
    let duration = Duration::from_secs_f64(seconds.min(knobs::MAX_BURN.as_secs_f64()));
    let threads = threads.min(knobs::MAX_THREADS);
    knobs::burn_cpu(duration, threads);
    info!(seconds = duration.as_secs_f64(), threads, "burning CPU");
    (
        StatusCode::ACCEPTED,
        format!(
            "burning {threads} CPU thread(s) for {}s\n",
            duration.as_secs_f64()
        ),
    )
        .into_response()
}

async fn exit(Query(q): Query<HashMap<String, String>>) -> Response {
    let code: i32 = match q.get("code").map(|s| s.parse()) {
        None => 1,
        Some(Ok(c)) => c,
        Some(Err(_)) => return bad_request("code must be an integer"),
    };
    warn!(code, "exiting on request");
    tokio::spawn(async move {
        // Let the answer reach the client first.
        tokio::time::sleep(Duration::from_millis(100)).await;
        std::process::exit(code);
    });
    format!("exiting with status {code}\n").into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    fn config(fs_root: &std::path::Path) -> Config {
        Config {
            address: "127.0.0.1:0".parse().unwrap(),
            version: "blue".into(),
            fs_root: fs_root.to_path_buf(),
        }
    }

    fn app_with_root(fs_root: &std::path::Path) -> Router {
        router(Arc::new(App::new(config(fs_root))))
    }

    fn app() -> Router {
        app_with_root(std::path::Path::new("/"))
    }

    async fn call(app: &Router, method: &str, uri: &str) -> (StatusCode, String) {
        call_with(app, method, uri, None).await
    }

    async fn call_with(
        app: &Router,
        method: &str,
        uri: &str,
        accept: Option<&str>,
    ) -> (StatusCode, String) {
        let mut req = axum::http::Request::builder().method(method).uri(uri);
        if let Some(a) = accept {
            req = req.header(header::ACCEPT, a);
        }
        let resp = app
            .clone()
            .oneshot(req.body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = resp.status();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    fn args(address: &str, version: &str) -> Args {
        Args {
            address: address.into(),
            app_version: version.into(),
            fs_root: "/".into(),
        }
    }

    #[test]
    fn addresses_accept_kuard_style_port_only() {
        let c = Config::try_from(args(":9090", "green")).unwrap();
        assert_eq!(c.address, "0.0.0.0:9090".parse().unwrap());
        assert_eq!(c.version, "green");
        let c = Config::try_from(args("127.0.0.1:80", "v")).unwrap();
        assert_eq!(c.address, "127.0.0.1:80".parse().unwrap());
        assert!(matches!(
            Config::try_from(args("nope", "v")),
            Err(ConfigError::Address(_))
        ));
        assert!(matches!(
            Config::try_from(args(":80", " ")),
            Err(ConfigError::EmptyVersion)
        ));
    }

    #[tokio::test]
    async fn index_and_version_report_the_version() {
        let app = app();
        assert_eq!(
            call(&app, "GET", "/version").await,
            (StatusCode::OK, "blue\n".into())
        );
        let (status, body) = call(&app, "GET", "/").await;
        assert_eq!(status, StatusCode::OK);
        assert!(body.contains("version blue"), "{body}");
        assert!(
            body.contains(&format!("hostname: {}", hostname())),
            "{body}"
        );
        assert!(body.contains("request: GET /"), "{body}");
        let (_, html) = call_with(&app, "GET", "/", Some("text/html")).await;
        assert!(html.starts_with("<!DOCTYPE html>"), "{html}");
    }

    #[tokio::test]
    async fn liveness_fails_on_request_until_ok() {
        let app = app();
        assert_eq!(call(&app, "GET", "/healthy").await.0, StatusCode::OK);
        assert_eq!(
            call(&app, "GET", "/healthy?fail=1").await,
            (StatusCode::INTERNAL_SERVER_ERROR, "fail\n".into())
        );
        for _ in 0..3 {
            assert_eq!(
                call(&app, "GET", "/healthy").await.0,
                StatusCode::INTERNAL_SERVER_ERROR
            );
        }
        // Readiness is independent.
        assert_eq!(call(&app, "GET", "/ready").await.0, StatusCode::OK);
        assert_eq!(
            call(&app, "GET", "/healthy?ok=1").await,
            (StatusCode::OK, "ok\n".into())
        );
        assert_eq!(call(&app, "GET", "/healthy").await.0, StatusCode::OK);
    }

    #[tokio::test]
    async fn post_toggles_readiness() {
        let app = app();
        assert_eq!(
            call(&app, "POST", "/ready").await.0,
            StatusCode::INTERNAL_SERVER_ERROR
        );
        assert_eq!(
            call(&app, "GET", "/ready").await.0,
            StatusCode::INTERNAL_SERVER_ERROR
        );
        assert_eq!(call(&app, "POST", "/ready").await.0, StatusCode::OK);
        assert_eq!(call(&app, "GET", "/ready").await.0, StatusCode::OK);
    }

    #[tokio::test]
    async fn failnext_fails_that_many_probes() {
        let app = app();
        assert_eq!(
            call(&app, "GET", "/healthy?failnext=2").await.0,
            StatusCode::INTERNAL_SERVER_ERROR
        );
        let mut got = Vec::new();
        for _ in 0..3 {
            got.push(call(&app, "GET", "/healthy").await.0.as_u16());
        }
        assert_eq!(got, [500, 500, 200]);
        assert_eq!(
            call(&app, "GET", "/healthy?failnext=x").await.0,
            StatusCode::BAD_REQUEST
        );
    }

    #[tokio::test]
    async fn env_lists_variables_and_command_line() {
        let (status, body) = call(&app(), "GET", "/env").await;
        assert_eq!(status, StatusCode::OK);
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert!(v["commandLine"].as_array().is_some_and(|a| !a.is_empty()));
        assert_eq!(
            v["env"]["PATH"].as_str(),
            std::env::var("PATH").ok().as_deref()
        );
    }

    #[tokio::test]
    async fn fs_lists_directories_and_serves_files() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("etc")).unwrap();
        std::fs::write(d.path().join("etc/hostname"), "pod-1\n").unwrap();
        let app = app_with_root(d.path());
        assert_eq!(
            call(&app, "GET", "/fs/").await,
            (StatusCode::OK, "etc/\n".into())
        );
        assert_eq!(
            call(&app, "GET", "/fs/etc/").await,
            (StatusCode::OK, "hostname\n".into())
        );
        assert_eq!(
            call(&app, "GET", "/fs/etc").await.0,
            StatusCode::PERMANENT_REDIRECT
        );
        assert_eq!(
            call(&app, "GET", "/fs/etc/hostname").await,
            (StatusCode::OK, "pod-1\n".into())
        );
        assert_eq!(
            call(&app, "GET", "/fs/missing").await.0,
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            call(&app, "GET", "/fs/etc/../..").await.0,
            StatusCode::BAD_REQUEST
        );
        let (_, html) = call_with(&app, "GET", "/fs/etc/", Some("text/html")).await;
        assert!(
            html.contains("<a href=\"hostname\">hostname</a> 6"),
            "{html}"
        );
    }

    #[tokio::test]
    async fn memory_is_allocated_and_cleared() {
        let app = app();
        let (status, body) = call(&app, "POST", "/memory/alloc?size=2Mi").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let (_, body) = call(&app, "GET", "/memory").await;
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["heldBytes"], 2 << 20);
        assert_eq!(v["allocations"], 1);
        assert!(v["rssBytes"].as_u64().is_some_and(|r| r >= 2 << 20), "{v}");
        let (_, body) = call(&app, "GET", "/memory/clear").await;
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["heldBytes"], 0);
        assert_eq!(
            call(&app, "GET", "/memory/alloc").await.0,
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            call(&app, "GET", "/memory/alloc?size=lots").await.0,
            StatusCode::BAD_REQUEST
        );
    }

    #[tokio::test]
    async fn cpu_burn_is_accepted_and_validated() {
        let app = app();
        let (status, body) = call(&app, "GET", "/cpu?seconds=0.01&threads=2").await;
        assert_eq!(status, StatusCode::ACCEPTED);
        assert_eq!(body, "burning 2 CPU thread(s) for 0.01s\n");
        assert_eq!(
            call(&app, "GET", "/cpu?seconds=-1").await.0,
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            call(&app, "GET", "/cpu?threads=0").await.0,
            StatusCode::BAD_REQUEST
        );
    }

    #[tokio::test]
    async fn serve_stops_promptly_when_cancelled() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let d = tempfile::tempdir().unwrap();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(serve(listener, config(d.path()), shutdown.clone()));
        // A real request over TCP, kept alive afterwards, as a probing kubelet would.
        let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        conn.write_all(b"GET /ready HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 256];
        let n = conn.read(&mut buf).await.unwrap();
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
        shutdown.cancel();
        tokio::time::timeout(SHUTDOWN_GRACE + Duration::from_secs(1), task)
            .await
            .expect("server stopped within the grace period")
            .unwrap()
            .unwrap();
    }
}
