//! The kubelet's HTTPS API (`--port`, 10250) and its plain-HTTP health endpoint
//! (`--healthz-port`, 10248), as upstream's `pkg/kubelet/server`.
//!
//! TLS uses `--tls-cert-file`/`--tls-private-key-file`, or a self-signed certificate made once
//! under `<root-dir>/pki/kubelet.crt|key` (reissued when it lacks the node's name or IP or is
//! about to expire). Client certificates are verified against `--client-ca-file`; a request
//! without a verified certificate gets 401, except the health endpoints. Without a client CA
//! nothing but health is served.
//!
//! Routes: `/healthz` (+`/healthz/ping`), `/metrics` (the kubelet's Prometheus registry),
//! `/pods` (the pods bound here, as a PodList), `/containerLogs/{ns}/{pod}/{container}` (the
//! query kubectl sends: follow, previous, timestamps, tailLines, sinceSeconds, sinceTime,
//! limitBytes; streamed chunk by chunk), `/stats/summary` (the Summary API) and
//! `/metrics/resource` (what metrics-server scrapes), and the streaming API of
//! [`crate::streaming`]: `/exec`, `/attach`, `/portForward` (upgrades) and `/run`. Shutdown is
//! graceful: accepting stops, followed logs and streaming sessions end, in-flight requests get
//! a few seconds.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{header, HeaderValue, Request, Response, StatusCode};
use axum::routing::{any, get};
use axum::Router;
use chrono::Utc;
use component_base::tls::{client_identity, parse_certs, parse_key, UserInfo};
use hyper_util::rt::{TokioExecutor, TokioIo};
use k8s_openapi::api::core::v1::Pod;
use prometheus_client::registry::Registry;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use crate::cri::{labels, v1, Runtime};
use crate::logs::{self, LogOptions};
use crate::{node, streaming, Config, Error, PodStore};

/// File names of the self-signed serving certificate under `<root-dir>/pki`.
pub const SELF_SIGNED_CERT_FILE: &str = "kubelet.crt";
pub const SELF_SIGNED_KEY_FILE: &str = "kubelet.key";
/// A reused self-signed certificate expiring within this many days is reissued.
const RENEW_BEFORE_DAYS: i64 = 30;
const CERT_VALIDITY_DAYS: i64 = 365;
/// How long in-flight requests get after shutdown.
const DRAIN: Duration = Duration::from_secs(5);

/// What the HTTPS handlers read.
#[derive(Clone)]
pub struct ServerState {
    pub config: Arc<Config>,
    pub runtime: Arc<dyn Runtime>,
    pub pods: PodStore,
}

/// The registry `/metrics` serves: the kubelet registers its metrics (running pods, PLEG relist
/// duration, ...) here and hands it to [`serve_with_metrics`]. Encoded under the lock at each
/// scrape.
pub type MetricsRegistry = Arc<Mutex<Registry>>;

/// Handler state: the public state plus what the server keeps between requests.
struct App {
    state: ServerState,
    metrics: MetricsRegistry,
    shutdown: CancellationToken,
    /// Previous node CPU sample (time, cumulative core-nanoseconds) for usageNanoCores.
    node_cpu: Mutex<Option<(std::time::Instant, u64)>>,
    /// Exec, attach, port-forward and run.
    streaming: streaming::Streaming,
}

/// Serve until shutdown: HTTPS on `config.server_address`, plain `/healthz` on
/// `config.healthz_address` if set. `/metrics` serves an empty registry; see
/// [`serve_with_metrics`].
pub async fn serve(state: ServerState, shutdown: CancellationToken) -> Result<(), Error> {
    serve_with_metrics(state, MetricsRegistry::default(), shutdown).await
}

/// [`serve`] with the kubelet's metrics registry behind `/metrics`.
pub async fn serve_with_metrics(
    state: ServerState,
    metrics: MetricsRegistry,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    let bind_err = |addr: SocketAddr, e: io::Error| Error::Server(format!("binding {addr}: {e}"));
    let addr = state.config.server_address;
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| bind_err(addr, e))?;
    let healthz = match state.config.healthz_address {
        Some(a) => Some(TcpListener::bind(a).await.map_err(|e| bind_err(a, e))?),
        None => None,
    };
    serve_listeners(listener, healthz, state, metrics, shutdown).await
}

/// [`serve`] on listeners the caller bound (tests bind port 0).
pub async fn serve_listeners(
    listener: TcpListener,
    healthz: Option<TcpListener>,
    state: ServerState,
    metrics: MetricsRegistry,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    let tls = tls_config(&state.config)?;
    tracing::info!(addr = %listener.local_addr()?, "kubelet server listening");
    let streaming =
        streaming::Streaming::new(state.runtime.clone(), state.pods.clone(), shutdown.clone());
    streaming.register(&mut metrics.lock().unwrap());
    let app = Arc::new(App {
        state,
        metrics,
        shutdown: shutdown.clone(),
        node_cpu: Mutex::new(None),
        streaming,
    });
    let router = router(app);
    let health = healthz.map(|l| {
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let r = Router::new()
                .route("/healthz", get(healthz_ok))
                .route("/healthz/ping", get(healthz_ok));
            if let Err(e) = axum::serve(l, r)
                .with_graceful_shutdown(async move { shutdown.cancelled().await })
                .await
            {
                tracing::warn!(error = %e, "healthz server failed");
            }
        })
    });
    serve_tls(listener, tls, router, shutdown).await;
    if let Some(h) = health {
        let _ = h.await;
    }
    Ok(())
}

async fn serve_tls(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    router: Router,
    shutdown: CancellationToken,
) {
    let acceptor = TlsAcceptor::from(tls);
    let tracker = TaskTracker::new();
    loop {
        let (tcp, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        let (acceptor, router, shutdown) = (acceptor.clone(), router.clone(), shutdown.clone());
        tracker.spawn(async move {
            let tls =
                match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "TLS handshake failed");
                        return;
                    }
                    Err(_) => return,
                };
            let identity = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(client_identity);
            let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let router = router.clone();
                let identity = identity.clone();
                async move {
                    if let Some(denied) = authorize(req.uri().path(), identity.as_ref()) {
                        return Ok::<_, Infallible>(denied);
                    }
                    router.oneshot(req.map(Body::new)).await
                }
            });
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(tls), svc);
            tokio::pin!(conn);
            tokio::select! {
                r = conn.as_mut() => {
                    if let Err(e) = r {
                        tracing::trace!(%peer, error = %e, "connection ended with error");
                    }
                }
                _ = shutdown.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(DRAIN, conn).await;
                }
            }
        });
    }
    tracker.close();
    let _ = tokio::time::timeout(DRAIN * 2, tracker.wait()).await;
}

fn is_health(path: &str) -> bool {
    matches!(path, "/healthz" | "/healthz/ping")
}

/// 401 for everything but health without a verified client certificate.
fn authorize(path: &str, identity: Option<&UserInfo>) -> Option<Response<Body>> {
    if identity.is_some() || is_health(path) {
        return None;
    }
    Some(text(StatusCode::UNAUTHORIZED, "Unauthorized"))
}

fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/healthz", get(healthz_ok))
        .route("/healthz/ping", get(healthz_ok))
        .route("/metrics", get(metrics))
        .route("/metrics/resource", get(metrics_resource))
        .route("/stats/summary", get(stats_summary))
        .route("/pods", get(pods))
        .route("/pods/", get(pods))
        .route(
            "/containerLogs/{namespace}/{pod}/{container}",
            get(container_logs),
        )
        .route("/exec/{namespace}/{pod}/{container}", any(exec))
        .route("/exec/{namespace}/{pod}/{uid}/{container}", any(exec_uid))
        .route("/attach/{namespace}/{pod}/{container}", any(attach))
        .route(
            "/attach/{namespace}/{pod}/{uid}/{container}",
            any(attach_uid),
        )
        .route("/portForward/{namespace}/{pod}", any(port_forward))
        .route(
            "/portForward/{namespace}/{pod}/{uid}",
            any(port_forward_uid),
        )
        .route("/run/{namespace}/{pod}/{container}", any(run))
        .route("/run/{namespace}/{pod}/{uid}/{container}", any(run_uid))
        .fallback(|| async { text(StatusCode::NOT_FOUND, "404 page not found") })
        .with_state(app)
}

fn text(code: StatusCode, body: impl Into<String>) -> Response<Body> {
    let mut r = Response::new(Body::from(body.into()));
    *r.status_mut() = code;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn json_response(v: &Value) -> Response<Body> {
    let mut r = Response::new(Body::from(serde_json::to_vec(v).unwrap_or_default()));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

async fn healthz_ok() -> Response<Body> {
    text(StatusCode::OK, "ok")
}

fn target(
    namespace: String,
    pod: String,
    uid: Option<String>,
    container: String,
) -> streaming::Target {
    streaming::Target {
        namespace,
        pod,
        uid,
        container,
    }
}

async fn exec(
    State(app): State<Arc<App>>,
    UrlPath((ns, pod, container)): UrlPath<(String, String, String)>,
    req: Request<Body>,
) -> Response<Body> {
    let t = target(ns, pod, None, container);
    app.streaming
        .container_stream(streaming::Kind::Exec, t, req)
        .await
}

async fn exec_uid(
    State(app): State<Arc<App>>,
    UrlPath((ns, pod, uid, container)): UrlPath<(String, String, String, String)>,
    req: Request<Body>,
) -> Response<Body> {
    let t = target(ns, pod, Some(uid), container);
    app.streaming
        .container_stream(streaming::Kind::Exec, t, req)
        .await
}

async fn attach(
    State(app): State<Arc<App>>,
    UrlPath((ns, pod, container)): UrlPath<(String, String, String)>,
    req: Request<Body>,
) -> Response<Body> {
    let t = target(ns, pod, None, container);
    app.streaming
        .container_stream(streaming::Kind::Attach, t, req)
        .await
}

async fn attach_uid(
    State(app): State<Arc<App>>,
    UrlPath((ns, pod, uid, container)): UrlPath<(String, String, String, String)>,
    req: Request<Body>,
) -> Response<Body> {
    let t = target(ns, pod, Some(uid), container);
    app.streaming
        .container_stream(streaming::Kind::Attach, t, req)
        .await
}

async fn port_forward(
    State(app): State<Arc<App>>,
    UrlPath((ns, pod)): UrlPath<(String, String)>,
    req: Request<Body>,
) -> Response<Body> {
    app.streaming
        .port_forward(target(ns, pod, None, String::new()), req)
        .await
}

async fn port_forward_uid(
    State(app): State<Arc<App>>,
    UrlPath((ns, pod, uid)): UrlPath<(String, String, String)>,
    req: Request<Body>,
) -> Response<Body> {
    app.streaming
        .port_forward(target(ns, pod, Some(uid), String::new()), req)
        .await
}

async fn run(
    State(app): State<Arc<App>>,
    UrlPath((ns, pod, container)): UrlPath<(String, String, String)>,
    req: Request<Body>,
) -> Response<Body> {
    app.streaming
        .run(target(ns, pod, None, container), req)
        .await
}

async fn run_uid(
    State(app): State<Arc<App>>,
    UrlPath((ns, pod, uid, container)): UrlPath<(String, String, String, String)>,
    req: Request<Body>,
) -> Response<Body> {
    app.streaming
        .run(target(ns, pod, Some(uid), container), req)
        .await
}

async fn metrics(State(app): State<Arc<App>>) -> Response<Body> {
    let mut out = String::new();
    let res = {
        let reg = app.metrics.lock().unwrap();
        prometheus_client::encoding::text::encode(&mut out, &reg)
    };
    match res {
        Ok(()) => {
            let mut r = text(StatusCode::OK, out);
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                ),
            );
            r
        }
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn pods(State(app): State<Arc<App>>) -> Response<Body> {
    let mut items: Vec<Arc<Pod>> = app.state.pods.state();
    items.sort_by(|a, b| {
        (&a.metadata.namespace, &a.metadata.name).cmp(&(&b.metadata.namespace, &b.metadata.name))
    });
    json_response(&json!({
        "kind": "PodList",
        "apiVersion": "v1",
        "metadata": {},
        "items": items.iter().map(|p| p.as_ref()).collect::<Vec<_>>(),
    }))
}

fn find_pod(store: &PodStore, namespace: &str, name: &str) -> Option<Arc<Pod>> {
    store.state().into_iter().find(|p| {
        p.metadata.name.as_deref() == Some(name)
            && p.metadata.namespace.as_deref().unwrap_or("default") == namespace
    })
}

fn has_container(pod: &Pod, name: &str) -> bool {
    let Some(spec) = pod.spec.as_ref() else {
        return false;
    };
    spec.containers.iter().any(|c| c.name == name)
        || spec
            .init_containers
            .iter()
            .flatten()
            .any(|c| c.name == name)
        || spec
            .ephemeral_containers
            .iter()
            .flatten()
            .any(|c| c.name == name)
}

async fn container_logs(
    State(app): State<Arc<App>>,
    UrlPath((namespace, pod_name, container)): UrlPath<(String, String, String)>,
    Query(query): Query<Vec<(String, String)>>,
) -> Response<Body> {
    let opts = match LogOptions::from_query(&query, Utc::now()) {
        Ok(o) => o,
        Err(e) => return text(StatusCode::BAD_REQUEST, format!("Invalid request. {e}")),
    };
    let Some(pod) = find_pod(&app.state.pods, &namespace, &pod_name) else {
        return text(
            StatusCode::NOT_FOUND,
            format!("pod {pod_name:?} does not exist"),
        );
    };
    if !has_container(&pod, &container) {
        return text(
            StatusCode::NOT_FOUND,
            format!("container {container:?} not found in pod {pod_name:?}"),
        );
    }
    let (attempt, path) = match logs::resolve(
        &app.state.config.pod_log_dir,
        &pod,
        &container,
        opts.previous,
    ) {
        Ok(f) => f,
        Err(e) => return text(StatusCode::BAD_REQUEST, e.to_string()),
    };
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let runtime = app.state.runtime.clone();
    let running: logs::RunningCheck = Box::new(move || {
        let runtime = runtime.clone();
        let (uid, container) = (uid.clone(), container.clone());
        Box::pin(
            async move { container_running(runtime.as_ref(), &uid, &container, attempt).await },
        )
    });
    let rx = logs::stream(path, attempt, opts, running, app.shutdown.clone());
    let body = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    let mut r = Response::new(Body::from_stream(body));
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    r
}

/// Whether the container instance `attempt` of `container` in pod `uid` is running.
async fn container_running(
    runtime: &dyn Runtime,
    uid: &str,
    container: &str,
    attempt: u32,
) -> bool {
    let filter = v1::ContainerFilter {
        label_selector: [
            (labels::POD_UID.to_string(), uid.to_string()),
            (labels::CONTAINER_NAME.to_string(), container.to_string()),
        ]
        .into(),
        ..Default::default()
    };
    match runtime.list_containers(Some(filter)).await {
        Ok(cs) => cs.iter().any(|c| {
            c.state == v1::ContainerState::ContainerRunning as i32
                && c.metadata.as_ref().is_some_and(|m| m.attempt == attempt)
        }),
        // Cannot tell: keep following rather than cut the stream on a runtime hiccup.
        Err(_) => true,
    }
}

// ---------------------------------------------------------------------------------------------
// Stats.

/// Node-level CPU and memory read from /proc.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NodeUsage {
    /// Cumulative CPU time of all cores, in nanoseconds.
    pub cpu_core_nanos: u64,
    pub memory_total: u64,
    pub memory_usage: u64,
    pub memory_working_set: u64,
    pub memory_rss: u64,
    /// Boot time, seconds since the epoch.
    pub boot_time: i64,
}

/// Parse `/proc/stat` and `/proc/meminfo` (USER_HZ is 100 on every Linux ABI).
pub fn parse_node_usage(stat: &str, meminfo: &str) -> NodeUsage {
    let mut u = NodeUsage::default();
    for line in stat.lines() {
        let mut f = line.split_whitespace();
        match f.next() {
            Some("cpu") => {
                let v: Vec<u64> = f.filter_map(|x| x.parse().ok()).collect();
                // user nice system idle iowait irq softirq steal: busy = all but idle and iowait.
                let busy: u64 = v
                    .iter()
                    .take(8)
                    .enumerate()
                    .filter(|(i, _)| *i != 3 && *i != 4)
                    .map(|(_, x)| *x)
                    .sum();
                u.cpu_core_nanos = busy * 10_000_000;
            }
            Some("btime") => u.boot_time = f.next().and_then(|x| x.parse().ok()).unwrap_or(0),
            _ => {}
        }
    }
    let m = node::parse_meminfo(meminfo);
    let get = |k: &str| m.get(k).copied().unwrap_or(0).max(0) as u64;
    u.memory_total = get("MemTotal");
    u.memory_usage = u.memory_total.saturating_sub(get("MemFree"));
    u.memory_working_set = u.memory_usage.saturating_sub(get("Inactive(file)"));
    u.memory_rss = get("AnonPages");
    u
}

fn read_node_usage() -> NodeUsage {
    parse_node_usage(
        &std::fs::read_to_string("/proc/stat").unwrap_or_default(),
        &std::fs::read_to_string("/proc/meminfo").unwrap_or_default(),
    )
}

/// One container's usage, keyed for the per-pod views.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ContainerUsage {
    pub namespace: String,
    pub pod: String,
    pub pod_uid: String,
    pub container: String,
    /// Nanoseconds since the epoch (the CRI's clock) of the sample.
    pub timestamp: i64,
    pub cpu_core_nanos: Option<u64>,
    pub cpu_nano_cores: Option<u64>,
    pub memory_working_set: Option<u64>,
    pub memory_usage: Option<u64>,
    pub memory_rss: Option<u64>,
    pub rootfs_used: Option<u64>,
    /// Creation time (ns) from the container list, if known.
    pub start_time: Option<i64>,
}

/// Per-container usage from CRI stats; sandboxes (no container name label) are skipped.
pub fn container_usages(
    stats: &[v1::ContainerStats],
    containers: &[v1::Container],
) -> Vec<ContainerUsage> {
    let created: BTreeMap<&str, i64> = containers
        .iter()
        .map(|c| (c.id.as_str(), c.created_at))
        .collect();
    let mut out: Vec<ContainerUsage> = stats
        .iter()
        .filter_map(|s| {
            let a = s.attributes.as_ref()?;
            let label = |k: &str| a.labels.get(k).cloned();
            let container = label(labels::CONTAINER_NAME)
                .or_else(|| a.metadata.as_ref().map(|m| m.name.clone()))?;
            if label(labels::CONTAINER_TYPE).as_deref() == Some("podsandbox") {
                return None;
            }
            let cpu = s.cpu.as_ref();
            let mem = s.memory.as_ref();
            Some(ContainerUsage {
                namespace: label(labels::POD_NAMESPACE)?,
                pod: label(labels::POD_NAME)?,
                pod_uid: label(labels::POD_UID).unwrap_or_default(),
                container,
                timestamp: cpu
                    .map(|c| c.timestamp)
                    .filter(|t| *t > 0)
                    .or(mem.map(|m| m.timestamp))
                    .unwrap_or(0),
                cpu_core_nanos: cpu
                    .and_then(|c| c.usage_core_nano_seconds.as_ref())
                    .map(|v| v.value),
                cpu_nano_cores: cpu
                    .and_then(|c| c.usage_nano_cores.as_ref())
                    .map(|v| v.value),
                memory_working_set: mem
                    .and_then(|m| m.working_set_bytes.as_ref())
                    .map(|v| v.value),
                memory_usage: mem.and_then(|m| m.usage_bytes.as_ref()).map(|v| v.value),
                memory_rss: mem.and_then(|m| m.rss_bytes.as_ref()).map(|v| v.value),
                rootfs_used: s
                    .writable_layer
                    .as_ref()
                    .and_then(|w| w.used_bytes.as_ref())
                    .map(|v| v.value),
                start_time: created.get(a.id.as_str()).copied(),
            })
        })
        .collect();
    out.sort_by(|a, b| {
        (&a.namespace, &a.pod, &a.container).cmp(&(&b.namespace, &b.pod, &b.container))
    });
    out
}

fn rfc3339_nanos(ns: i64) -> String {
    chrono::DateTime::from_timestamp(
        ns.div_euclid(1_000_000_000),
        ns.rem_euclid(1_000_000_000) as u32,
    )
    .unwrap_or_default()
    .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn sum<'a>(it: impl Iterator<Item = Option<u64>> + 'a) -> Option<u64> {
    it.fold(None, |acc, v| match (acc, v) {
        (a, None) => a,
        (None, Some(v)) => Some(v),
        (Some(a), Some(v)) => Some(a + v),
    })
}

/// The node's part of a Summary.
#[derive(Debug, Clone, Copy)]
pub struct NodeSample<'a> {
    pub name: &'a str,
    pub usage: &'a NodeUsage,
    /// CPU rate since the previous sample.
    pub nano_cores: Option<u64>,
    pub nodefs: Option<&'a node::FsStats>,
    /// (pid limit, processes).
    pub pids: Option<(u64, u64)>,
}

/// The Summary API document (upstream `stats/v1alpha1.Summary`) from node and container
/// usage.
pub fn summary(
    sample: &NodeSample<'_>,
    containers: &[ContainerUsage],
    pod_start: &dyn Fn(&str, &str) -> Option<String>,
    now: chrono::DateTime<Utc>,
) -> Value {
    let now_s = now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let fs = |f: &node::FsStats| {
        json!({
            "time": now_s,
            "availableBytes": f.available_bytes,
            "capacityBytes": f.capacity_bytes,
            "usedBytes": f.capacity_bytes.saturating_sub(f.available_bytes),
            "inodesFree": f.inodes_free,
            "inodes": f.inodes,
            "inodesUsed": f.inodes.saturating_sub(f.inodes_free),
        })
    };
    let NodeSample {
        name: node_name,
        usage: node,
        nano_cores: node_nano_cores,
        nodefs,
        pids,
    } = *sample;
    let mut node_json = json!({
        "nodeName": node_name,
        "startTime": rfc3339_nanos(node.boot_time * 1_000_000_000),
        "cpu": {"time": now_s, "usageCoreNanoSeconds": node.cpu_core_nanos},
        "memory": {
            "time": now_s,
            "availableBytes": node.memory_total.saturating_sub(node.memory_working_set),
            "usageBytes": node.memory_usage,
            "workingSetBytes": node.memory_working_set,
            "rssBytes": node.memory_rss,
        },
    });
    if let Some(n) = node_nano_cores {
        node_json["cpu"]["usageNanoCores"] = json!(n);
    }
    if let Some(f) = nodefs {
        node_json["fs"] = fs(f);
    }
    if let Some((max, cur)) = pids {
        node_json["rlimit"] = json!({"time": now_s, "maxpid": max, "curproc": cur});
    }

    let mut by_pod: BTreeMap<(&str, &str, &str), Vec<&ContainerUsage>> = BTreeMap::new();
    for c in containers {
        by_pod
            .entry((&c.namespace, &c.pod, &c.pod_uid))
            .or_default()
            .push(c);
    }
    let cpu = |time: &str, core: Option<u64>, nano: Option<u64>| {
        let mut v = json!({"time": time});
        if let Some(c) = core {
            v["usageCoreNanoSeconds"] = json!(c);
        }
        if let Some(n) = nano {
            v["usageNanoCores"] = json!(n);
        }
        v
    };
    let mem = |time: &str, ws: Option<u64>, usage: Option<u64>, rss: Option<u64>| {
        let mut v = json!({"time": time});
        for (k, x) in [
            ("workingSetBytes", ws),
            ("usageBytes", usage),
            ("rssBytes", rss),
        ] {
            if let Some(x) = x {
                v[k] = json!(x);
            }
        }
        v
    };
    let pods: Vec<Value> = by_pod
        .iter()
        .map(|((ns, pod, uid), cs)| {
            let containers: Vec<Value> = cs
                .iter()
                .map(|c| {
                    let t = rfc3339_nanos(c.timestamp);
                    let mut v = json!({
                        "name": c.container,
                        "cpu": cpu(&t, c.cpu_core_nanos, c.cpu_nano_cores),
                        "memory": mem(&t, c.memory_working_set, c.memory_usage, c.memory_rss),
                    });
                    if let Some(s) = c.start_time {
                        v["startTime"] = json!(rfc3339_nanos(s));
                    }
                    if let Some(u) = c.rootfs_used {
                        v["rootfs"] = json!({"time": t, "usedBytes": u});
                    }
                    v
                })
                .collect();
            let t = rfc3339_nanos(cs.iter().map(|c| c.timestamp).max().unwrap_or(0));
            let mut v = json!({
                "podRef": {"name": pod, "namespace": ns, "uid": uid},
                "containers": containers,
                "cpu": cpu(
                    &t,
                    sum(cs.iter().map(|c| c.cpu_core_nanos)),
                    sum(cs.iter().map(|c| c.cpu_nano_cores)),
                ),
                "memory": mem(
                    &t,
                    sum(cs.iter().map(|c| c.memory_working_set)),
                    sum(cs.iter().map(|c| c.memory_usage)),
                    sum(cs.iter().map(|c| c.memory_rss)),
                ),
            });
            if let Some(s) = pod_start(ns, pod) {
                v["startTime"] = json!(s);
            }
            v
        })
        .collect();
    json!({"node": node_json, "pods": pods})
}

fn escape_label(v: &str) -> String {
    v.replace('\\', r"\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The resource metrics text (upstream `/metrics/resource`, what metrics-server scrapes).
pub fn resource_metrics(
    node: &NodeUsage,
    node_time_ms: i64,
    containers: &[ContainerUsage],
    scrape_error: bool,
) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let header = |s: &mut String, name: &str, help: &str, kind: &str| {
        let _ = writeln!(s, "# HELP {name} [STABLE] {help}");
        let _ = writeln!(s, "# TYPE {name} {kind}");
    };
    let secs = |ns: u64| ns as f64 / 1e9;
    let ms = |ns: i64| ns / 1_000_000;

    header(
        &mut s,
        "container_cpu_usage_seconds_total",
        "Cumulative cpu time consumed by the container in core-seconds",
        "counter",
    );
    for c in containers {
        if let Some(v) = c.cpu_core_nanos {
            let _ = writeln!(
                s,
                "container_cpu_usage_seconds_total{{container=\"{}\",namespace=\"{}\",pod=\"{}\"}} {} {}",
                escape_label(&c.container),
                escape_label(&c.namespace),
                escape_label(&c.pod),
                secs(v),
                ms(c.timestamp)
            );
        }
    }
    header(
        &mut s,
        "container_memory_working_set_bytes",
        "Current working set of the container in bytes",
        "gauge",
    );
    for c in containers {
        if let Some(v) = c.memory_working_set {
            let _ = writeln!(
                s,
                "container_memory_working_set_bytes{{container=\"{}\",namespace=\"{}\",pod=\"{}\"}} {} {}",
                escape_label(&c.container),
                escape_label(&c.namespace),
                escape_label(&c.pod),
                v,
                ms(c.timestamp)
            );
        }
    }
    header(
        &mut s,
        "container_start_time_seconds",
        "Start time of the container since unix epoch in seconds",
        "gauge",
    );
    for c in containers {
        if let Some(v) = c.start_time {
            let _ = writeln!(
                s,
                "container_start_time_seconds{{container=\"{}\",namespace=\"{}\",pod=\"{}\"}} {} {}",
                escape_label(&c.container),
                escape_label(&c.namespace),
                escape_label(&c.pod),
                v as f64 / 1e9,
                ms(v)
            );
        }
    }
    header(
        &mut s,
        "node_cpu_usage_seconds_total",
        "Cumulative cpu time consumed by the node in core-seconds",
        "counter",
    );
    let _ = writeln!(
        s,
        "node_cpu_usage_seconds_total {} {node_time_ms}",
        secs(node.cpu_core_nanos)
    );
    header(
        &mut s,
        "node_memory_working_set_bytes",
        "Current working set of the node in bytes",
        "gauge",
    );
    let _ = writeln!(
        s,
        "node_memory_working_set_bytes {} {node_time_ms}",
        node.memory_working_set
    );
    #[derive(Default)]
    struct PodTotals {
        cpu: Option<u64>,
        mem: Option<u64>,
        time: i64,
    }
    let mut pods: BTreeMap<(&str, &str), PodTotals> = BTreeMap::new();
    for c in containers {
        let e = pods.entry((&c.namespace, &c.pod)).or_default();
        e.cpu = sum([e.cpu, c.cpu_core_nanos].into_iter());
        e.mem = sum([e.mem, c.memory_working_set].into_iter());
        e.time = e.time.max(c.timestamp);
    }
    header(
        &mut s,
        "pod_cpu_usage_seconds_total",
        "Cumulative cpu time consumed by the pod in core-seconds",
        "counter",
    );
    for ((ns, pod), PodTotals { cpu, time: t, .. }) in &pods {
        if let Some(v) = cpu {
            let _ = writeln!(
                s,
                "pod_cpu_usage_seconds_total{{namespace=\"{}\",pod=\"{}\"}} {} {}",
                escape_label(ns),
                escape_label(pod),
                secs(*v),
                ms(*t)
            );
        }
    }
    header(
        &mut s,
        "pod_memory_working_set_bytes",
        "Current working set of the pod in bytes",
        "gauge",
    );
    for ((ns, pod), PodTotals { mem, time: t, .. }) in &pods {
        if let Some(v) = mem {
            let _ = writeln!(
                s,
                "pod_memory_working_set_bytes{{namespace=\"{}\",pod=\"{}\"}} {v} {}",
                escape_label(ns),
                escape_label(pod),
                ms(*t)
            );
        }
    }
    header(
        &mut s,
        "resource_scrape_error",
        "1 if there was an error while getting container metrics, 0 otherwise",
        "gauge",
    );
    let _ = writeln!(s, "resource_scrape_error {}", u8::from(scrape_error));
    s
}

async fn collect_usage(runtime: &dyn Runtime) -> Result<Vec<ContainerUsage>, String> {
    let stats = runtime
        .list_container_stats()
        .await
        .map_err(|e| e.to_string())?;
    let containers = runtime.list_containers(None).await.unwrap_or_default();
    Ok(container_usages(&stats, &containers))
}

impl App {
    /// Node usage now, and the CPU rate since the previous call.
    fn node_usage(&self) -> (NodeUsage, Option<u64>) {
        let u = read_node_usage();
        let now = std::time::Instant::now();
        let mut prev = self.node_cpu.lock().unwrap();
        let rate = prev.and_then(|(t, c)| {
            let dt = now.duration_since(t).as_nanos() as f64;
            (dt > 0.0).then(|| (u.cpu_core_nanos.saturating_sub(c) as f64 / dt * 1e9) as u64)
        });
        *prev = Some((now, u.cpu_core_nanos));
        (u, rate)
    }
}

async fn stats_summary(State(app): State<Arc<App>>) -> Response<Body> {
    let containers = match collect_usage(app.state.runtime.as_ref()).await {
        Ok(c) => c,
        Err(e) => {
            return text(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("failed to get container stats: {e}"),
            )
        }
    };
    let (usage, rate) = app.node_usage();
    let nodefs = node::fs_stats(&app.state.config.root_dir);
    let pids = pid_stats();
    let store = app.state.pods.clone();
    let pod_start = move |ns: &str, name: &str| {
        find_pod(&store, ns, name)
            .and_then(|p| p.status.as_ref()?.start_time.clone())
            .map(|t| t.0.to_string())
    };
    let sample = NodeSample {
        name: &app.state.config.node_name,
        usage: &usage,
        nano_cores: rate,
        nodefs: nodefs.as_ref(),
        pids,
    };
    json_response(&summary(&sample, &containers, &pod_start, Utc::now()))
}

fn pid_stats() -> Option<(u64, u64)> {
    let max = std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let load = std::fs::read_to_string("/proc/loadavg").ok()?;
    let cur = load
        .split_whitespace()
        .nth(3)?
        .split_once('/')?
        .1
        .parse()
        .ok()?;
    Some((max, cur))
}

async fn metrics_resource(State(app): State<Arc<App>>) -> Response<Body> {
    let (containers, err) = match collect_usage(app.state.runtime.as_ref()).await {
        Ok(c) => (c, false),
        Err(e) => {
            tracing::debug!(error = %e, "container stats for /metrics/resource");
            (Vec::new(), true)
        }
    };
    let (usage, _) = app.node_usage();
    let mut r = text(
        StatusCode::OK,
        resource_metrics(&usage, Utc::now().timestamp_millis(), &containers, err),
    );
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    r
}

// ---------------------------------------------------------------------------------------------
// TLS.

fn tls_config(config: &Config) -> Result<Arc<rustls::ServerConfig>, Error> {
    let (cert, key) = match (&config.tls_cert_file, &config.tls_private_key_file) {
        (Some(c), Some(k)) => (read(c)?, read(k)?),
        _ => {
            let ip = config.node_ip.unwrap_or_else(node::detect_node_ip);
            load_or_create_self_signed(&config.root_dir.join("pki"), &config.node_name, &[ip])?
        }
    };
    let tls_err = |e: component_base::tls::TlsError| Error::Server(e.to_string());
    match &config.client_ca_file {
        Some(ca) => {
            component_base::tls::server_config_from_pem(&read(ca)?, &cert, &key).map_err(tls_err)
        }
        None => {
            let mut c = rustls::ServerConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::Server(e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(
                parse_certs(&cert, "serving certificate").map_err(tls_err)?,
                parse_key(&key, "serving key").map_err(tls_err)?,
            )
            .map_err(|e| Error::Server(format!("TLS configuration: {e}")))?;
            c.alpn_protocols = component_base::tls::ALPN_PROTOCOLS
                .iter()
                .map(|p| p.to_vec())
                .collect();
            Ok(Arc::new(c))
        }
    }
}

fn read(p: &Path) -> Result<String, Error> {
    std::fs::read_to_string(p).map_err(|e| Error::Server(format!("{}: {e}", p.display())))
}

/// The subject alternative names a self-signed kubelet certificate carries.
fn wanted_sans(node_name: &str, ips: &[IpAddr]) -> Vec<String> {
    let mut sans = vec![node_name.to_string(), "localhost".to_string()];
    sans.extend(ips.iter().map(|ip| ip.to_string()));
    sans.push("127.0.0.1".into());
    sans.dedup();
    sans
}

/// Why an existing certificate cannot be reused, or `None`.
fn cert_problem(cert_pem: &str, wanted: &[String]) -> Option<String> {
    let (_, pem) = match x509_parser::pem::parse_x509_pem(cert_pem.as_bytes()) {
        Ok(p) => p,
        Err(e) => return Some(format!("unreadable: {e}")),
    };
    let cert = match pem.parse_x509() {
        Ok(c) => c,
        Err(e) => return Some(format!("unreadable: {e}")),
    };
    let renew_at = Utc::now().timestamp() + RENEW_BEFORE_DAYS * 86400;
    if cert.validity().not_after.timestamp() < renew_at {
        return Some("expires soon".into());
    }
    let mut present: Vec<String> = Vec::new();
    if let Ok(Some(ext)) = cert.subject_alternative_name() {
        for n in &ext.value.general_names {
            match n {
                x509_parser::extensions::GeneralName::DNSName(d) => present.push(d.to_string()),
                x509_parser::extensions::GeneralName::IPAddress(b) => {
                    let ip = match b.len() {
                        4 => <[u8; 4]>::try_from(*b).ok().map(IpAddr::from),
                        16 => <[u8; 16]>::try_from(*b).ok().map(IpAddr::from),
                        _ => None,
                    };
                    present.extend(ip.map(|i| i.to_string()));
                }
                _ => {}
            }
        }
    }
    let missing: Vec<&String> = wanted.iter().filter(|w| !present.contains(w)).collect();
    (!missing.is_empty()).then(|| format!("lacks {missing:?}"))
}

/// The self-signed serving certificate and key under `dir`, created (or reissued when it lacks
/// a name, does not match its key or expires within 30 days) as needed. Returns PEMs.
pub fn load_or_create_self_signed(
    dir: &Path,
    node_name: &str,
    ips: &[IpAddr],
) -> Result<(String, String), Error> {
    let cert_path = dir.join(SELF_SIGNED_CERT_FILE);
    let key_path = dir.join(SELF_SIGNED_KEY_FILE);
    let wanted = wanted_sans(node_name, ips);
    if let (Ok(cert), Ok(key)) = (
        std::fs::read_to_string(&cert_path),
        std::fs::read_to_string(&key_path),
    ) {
        let matches_key = parse_certs(&cert, "c")
            .ok()
            .zip(parse_key(&key, "k").ok())
            .is_some_and(|(c, k)| {
                rustls::crypto::ring::sign::any_supported_type(&k)
                    .ok()
                    .and_then(|sk| rustls::sign::CertifiedKey::new(c, sk).keys_match().ok())
                    .is_some()
            });
        match cert_problem(&cert, &wanted) {
            None if matches_key => return Ok((cert, key)),
            problem => tracing::info!(
                cert = %cert_path.display(),
                reason = problem.as_deref().unwrap_or("does not match its key"),
                "reissuing self-signed serving certificate"
            ),
        }
    }
    let gen_err = |e: rcgen::Error| Error::Server(format!("generating serving certificate: {e}"));
    let key = rcgen::KeyPair::generate().map_err(gen_err)?;
    let mut params = rcgen::CertificateParams::new(wanted).map_err(gen_err)?;
    params.distinguished_name.push(
        rcgen::DnType::CommonName,
        format!("{node_name}@{}", Utc::now().timestamp()),
    );
    let ymd = |d: chrono::DateTime<Utc>| {
        use chrono::Datelike;
        rcgen::date_time_ymd(d.year(), d.month() as u8, d.day() as u8)
    };
    params.not_before = ymd(Utc::now() - chrono::Duration::days(1));
    params.not_after = ymd(Utc::now() + chrono::Duration::days(CERT_VALIDITY_DAYS));
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::DigitalSignature,
        rcgen::KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let cert = params.self_signed(&key).map_err(gen_err)?;
    let (cert_pem, key_pem) = (cert.pem(), key.serialize_pem());
    let io_err = |p: &Path, e: io::Error| Error::Server(format!("{}: {e}", p.display()));
    std::fs::create_dir_all(dir).map_err(|e| io_err(dir, e))?;
    write_atomic(&key_path, &key_pem, 0o600).map_err(|e| io_err(&key_path, e))?;
    write_atomic(&cert_path, &cert_pem, 0o644).map_err(|e| io_err(&cert_path, e))?;
    Ok((cert_pem, key_pem))
}

fn write_atomic(path: &Path, content: &str, mode: u32) -> io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    let res = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(content.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    res
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cri::fake::FakeRuntime;
    use crate::Args;
    use clap::Parser;
    use http_body_util::BodyExt;
    use kube::runtime::reflector::store::Writer;
    use kube::runtime::watcher::Event;

    fn config(root: &Path, extra: &[&str]) -> Config {
        let mut argv = vec![
            "kubelet".to_string(),
            "--hostname-override".into(),
            "node-a".into(),
            "--node-ip".into(),
            "127.0.0.1".into(),
            "--root-dir".into(),
            root.join("root").display().to_string(),
            "--pod-log-dir".into(),
            root.join("logs").display().to_string(),
        ];
        argv.extend(extra.iter().map(|s| s.to_string()));
        Config::try_from(Args::parse_from(argv)).unwrap()
    }

    fn store(pods: &[Value]) -> PodStore {
        let mut w: Writer<Pod> = Writer::default();
        for p in pods {
            w.apply_watcher_event(&Event::Apply(serde_json::from_value(p.clone()).unwrap()));
        }
        w.as_reader()
    }

    fn pod_json() -> Value {
        json!({
            "metadata": {"name": "web", "namespace": "ns", "uid": "u1"},
            "spec": {"containers": [{"name": "app"}], "initContainers": [{"name": "init"}]},
            "status": {"startTime": "2026-01-01T00:00:00Z"}
        })
    }

    fn app(root: &Path, runtime: Arc<dyn Runtime>) -> Arc<App> {
        let pods = store(&[pod_json()]);
        let shutdown = CancellationToken::new();
        Arc::new(App {
            streaming: streaming::Streaming::new(runtime.clone(), pods.clone(), shutdown.clone()),
            state: ServerState {
                config: Arc::new(config(root, &[])),
                runtime,
                pods,
            },
            metrics: MetricsRegistry::default(),
            shutdown,
            node_cpu: Mutex::new(None),
        })
    }

    async fn get(app: &Arc<App>, uri: &str) -> (StatusCode, String) {
        let resp = router(app.clone())
            .oneshot(Request::get(uri).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = resp.status();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    fn write_log(root: &Path, container: &str, attempt: u32, lines: &str) {
        let dir = logs::container_log_dir(&root.join("logs"), "ns", "web", "u1", container);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("{attempt}.log")), lines).unwrap();
    }

    #[tokio::test]
    async fn routes_answer_as_upstream() {
        let dir = tempfile::tempdir().unwrap();
        let app = app(dir.path(), Arc::new(FakeRuntime::new()));
        write_log(
            dir.path(),
            "app",
            0,
            "2026-01-01T00:00:01Z stdout F crashed\n",
        );
        write_log(
            dir.path(),
            "app",
            1,
            "2026-01-01T00:00:02Z stdout F hello\n2026-01-01T00:00:03Z stderr F world\n",
        );
        let cases: Vec<(&str, StatusCode, &str)> = vec![
            ("/healthz", StatusCode::OK, "ok"),
            ("/healthz/ping", StatusCode::OK, "ok"),
            (
                "/containerLogs/ns/web/app",
                StatusCode::OK,
                "hello\nworld\n",
            ),
            (
                "/containerLogs/ns/web/app?tailLines=1",
                StatusCode::OK,
                "world\n",
            ),
            (
                "/containerLogs/ns/web/app?timestamps=true&limitBytes=26",
                StatusCode::OK,
                "2026-01-01T00:00:02Z hello",
            ),
            (
                "/containerLogs/ns/web/app?previous=true",
                StatusCode::OK,
                "crashed\n",
            ),
            (
                "/containerLogs/ns/web/init",
                StatusCode::BAD_REQUEST,
                r#"container "init" in pod "web" is waiting to start: ContainerCreating"#,
            ),
            (
                "/containerLogs/ns/web/nope",
                StatusCode::NOT_FOUND,
                r#"container "nope" not found in pod "web""#,
            ),
            (
                "/containerLogs/ns/gone/app",
                StatusCode::NOT_FOUND,
                r#"pod "gone" does not exist"#,
            ),
            (
                "/containerLogs/ns/web/app?tailLines=-2",
                StatusCode::BAD_REQUEST,
                "Invalid request. tailLines: Invalid value: -2",
            ),
            (
                "/exec/ns/web/app?command=ls",
                StatusCode::BAD_REQUEST,
                "you must specify at least 1 of stdin, stdout, stderr",
            ),
            (
                "/exec/ns/web/app?command=ls&output=1",
                StatusCode::BAD_REQUEST,
                "unable to upgrade: X-Stream-Protocol-Version is required",
            ),
            (
                "/attach/ns/web/u1/app?output=1",
                StatusCode::BAD_REQUEST,
                "unable to upgrade: X-Stream-Protocol-Version is required",
            ),
            (
                "/portForward/ns/gone",
                StatusCode::NOT_FOUND,
                "pod does not exist",
            ),
            (
                "/portForward/ns/web/u2",
                StatusCode::NOT_FOUND,
                "pod does not exist",
            ),
            (
                "/portForward/ns/web?port=80",
                StatusCode::BAD_REQUEST,
                "unable to upgrade: X-Stream-Protocol-Version is required",
            ),
            ("/run/ns/web/app", StatusCode::BAD_REQUEST, "missing cmd"),
            (
                "/run/ns/web/app?cmd=ls+-l",
                StatusCode::INTERNAL_SERVER_ERROR,
                "container not found (\"app\")",
            ),
            ("/nothing", StatusCode::NOT_FOUND, "404 page not found"),
        ];
        for (uri, code, want) in cases {
            let (got_code, body) = get(&app, uri).await;
            assert_eq!(got_code, code, "{uri}: {body}");
            assert!(body.starts_with(want), "{uri}: {body:?}");
        }
        let (code, body) = get(&app, "/pods").await;
        assert_eq!(code, StatusCode::OK);
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["kind"], "PodList");
        assert_eq!(v["items"][0]["metadata"]["name"], "web");
    }

    #[tokio::test]
    async fn previous_without_an_earlier_container_is_a_bad_request() {
        let dir = tempfile::tempdir().unwrap();
        let app = app(dir.path(), Arc::new(FakeRuntime::new()));
        write_log(dir.path(), "app", 0, "2026-01-01T00:00:01Z stdout F x\n");
        let (code, body) = get(&app, "/containerLogs/ns/web/app?previous=true").await;
        assert_eq!(code, StatusCode::BAD_REQUEST);
        assert_eq!(
            body,
            r#"previous terminated container "app" in pod "web" not found"#
        );
    }

    #[tokio::test]
    async fn follow_ends_once_the_container_is_not_running() {
        let dir = tempfile::tempdir().unwrap();
        // The fake runtime has no such container: the follower drains the file and ends.
        let app = app(dir.path(), Arc::new(FakeRuntime::new()));
        write_log(dir.path(), "app", 0, "2026-01-01T00:00:01Z stdout F bye\n");
        let (code, body) = tokio::time::timeout(
            Duration::from_secs(10),
            get(&app, "/containerLogs/ns/web/app?follow=true"),
        )
        .await
        .expect("follow ends");
        assert_eq!((code, body.as_str()), (StatusCode::OK, "bye\n"));
    }

    #[tokio::test]
    async fn metrics_serves_the_shared_registry() {
        let dir = tempfile::tempdir().unwrap();
        let app = app(dir.path(), Arc::new(FakeRuntime::new()));
        let g = prometheus_client::metrics::gauge::Gauge::<i64>::default();
        g.set(3);
        app.metrics
            .lock()
            .unwrap()
            .register("kubelet_running_pods", "Number of pods running", g);
        let (code, body) = get(&app, "/metrics").await;
        assert_eq!(code, StatusCode::OK);
        assert!(body.contains("kubelet_running_pods 3"), "{body}");
        let (code, body) = get(&app, "/metrics/resource").await;
        assert_eq!(code, StatusCode::OK);
        assert!(body.contains("node_cpu_usage_seconds_total "), "{body}");
        assert!(body.contains("resource_scrape_error 0"), "{body}");
        let (code, body) = get(&app, "/stats/summary").await;
        assert_eq!(code, StatusCode::OK);
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["node"]["nodeName"], "node-a");
        assert!(v["node"]["memory"]["workingSetBytes"].as_u64().unwrap() > 0);
    }

    fn stat(id: &str, pod: &str, container: &str, cpu: u64, mem: u64) -> v1::ContainerStats {
        v1::ContainerStats {
            attributes: Some(v1::ContainerAttributes {
                id: id.into(),
                metadata: None,
                labels: [
                    (labels::POD_NAME.to_string(), pod.to_string()),
                    (labels::POD_NAMESPACE.to_string(), "ns".to_string()),
                    (labels::POD_UID.to_string(), format!("uid-{pod}")),
                    (labels::CONTAINER_NAME.to_string(), container.to_string()),
                ]
                .into(),
                annotations: Default::default(),
            }),
            cpu: Some(v1::CpuUsage {
                timestamp: 1_700_000_000_000_000_000,
                usage_core_nano_seconds: Some(v1::UInt64Value { value: cpu }),
                usage_nano_cores: Some(v1::UInt64Value { value: 5_000_000 }),
            }),
            memory: Some(v1::MemoryUsage {
                timestamp: 1_700_000_000_000_000_000,
                working_set_bytes: Some(v1::UInt64Value { value: mem }),
                ..Default::default()
            }),
            writable_layer: None,
        }
    }

    #[test]
    fn resource_metrics_and_summary_aggregate_per_pod() {
        let stats = vec![
            stat("c1", "web", "app", 1_500_000_000, 1000),
            stat("c2", "web", "sidecar", 500_000_000, 24),
            stat("c3", "db", "pg", 2_000_000_000, 4096),
        ];
        let containers = vec![v1::Container {
            id: "c1".into(),
            created_at: 1_699_999_000_000_000_000,
            ..Default::default()
        }];
        let usage = container_usages(&stats, &containers);
        assert_eq!(usage.len(), 3);
        assert_eq!(usage[0].pod, "db");
        let node = NodeUsage {
            cpu_core_nanos: 10_000_000_000,
            memory_working_set: 1 << 30,
            ..Default::default()
        };
        let text = resource_metrics(&node, 1_700_000_000_000, &usage, false);
        for want in [
            "container_cpu_usage_seconds_total{container=\"app\",namespace=\"ns\",pod=\"web\"} 1.5 1700000000000",
            "container_memory_working_set_bytes{container=\"pg\",namespace=\"ns\",pod=\"db\"} 4096 1700000000000",
            "container_start_time_seconds{container=\"app\",namespace=\"ns\",pod=\"web\"} 1699999000 1699999000000",
            "node_cpu_usage_seconds_total 10 1700000000000",
            "node_memory_working_set_bytes 1073741824 1700000000000",
            "pod_cpu_usage_seconds_total{namespace=\"ns\",pod=\"web\"} 2 1700000000000",
            "pod_memory_working_set_bytes{namespace=\"ns\",pod=\"web\"} 1024 1700000000000",
            "# TYPE pod_cpu_usage_seconds_total counter",
            "resource_scrape_error 0",
        ] {
            assert!(text.contains(want), "missing {want:?} in\n{text}");
        }
        let sample = NodeSample {
            name: "node-a",
            usage: &node,
            nano_cores: Some(7),
            nodefs: None,
            pids: Some((32768, 100)),
        };
        let s = summary(
            &sample,
            &usage,
            &|_, p| (p == "web").then(|| "2026-01-01T00:00:00Z".to_string()),
            Utc::now(),
        );
        assert_eq!(s["node"]["cpu"]["usageNanoCores"], 7);
        assert_eq!(s["node"]["rlimit"]["maxpid"], 32768);
        let web = s["pods"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["podRef"]["name"] == "web")
            .unwrap();
        assert_eq!(web["podRef"]["uid"], "uid-web");
        assert_eq!(web["startTime"], "2026-01-01T00:00:00Z");
        assert_eq!(web["cpu"]["usageCoreNanoSeconds"], 2_000_000_000u64);
        assert_eq!(web["cpu"]["usageNanoCores"], 10_000_000u64);
        assert_eq!(web["memory"]["workingSetBytes"], 1024);
        assert_eq!(web["containers"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn node_usage_parses_proc() {
        let stat = "cpu  100 5 50 1000 20 3 2 0 0 0\ncpu0 1 1 1 1 1 1 1 1\nbtime 1700000000\n";
        let meminfo =
            "MemTotal: 1000 kB\nMemFree: 400 kB\nInactive(file): 100 kB\nAnonPages: 200 kB\n";
        let u = parse_node_usage(stat, meminfo);
        assert_eq!(u.cpu_core_nanos, (100 + 5 + 50 + 3 + 2) * 10_000_000);
        assert_eq!(u.boot_time, 1_700_000_000);
        assert_eq!(u.memory_total, 1000 * 1024);
        assert_eq!(u.memory_usage, 600 * 1024);
        assert_eq!(u.memory_working_set, 500 * 1024);
        assert_eq!(u.memory_rss, 200 * 1024);
    }

    #[test]
    fn self_signed_certificate_is_reused_until_names_change() {
        let dir = tempfile::tempdir().unwrap();
        let ip: IpAddr = "10.0.0.5".parse().unwrap();
        let (c1, k1) = load_or_create_self_signed(dir.path(), "node-a", &[ip]).unwrap();
        let (c2, k2) = load_or_create_self_signed(dir.path(), "node-a", &[ip]).unwrap();
        assert_eq!((&c1, &k1), (&c2, &k2));
        assert!(cert_problem(&c1, &wanted_sans("node-a", &[ip])).is_none());
        let other: IpAddr = "10.0.0.6".parse().unwrap();
        let (c3, _) = load_or_create_self_signed(dir.path(), "node-a", &[other]).unwrap();
        assert_ne!(c1, c3);
        assert!(cert_problem(&c3, &["10.0.0.6".to_string()]).is_none());
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join(SELF_SIGNED_KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    /// One HTTPS GET over a fresh connection, optionally presenting a client certificate.
    async fn https_get(
        addr: SocketAddr,
        path: &str,
        identity: Option<(&str, &str)>,
    ) -> (StatusCode, String) {
        // The kubelet's certificate is self-signed: trust it by reading it from disk is not
        // the point here, so accept any server certificate.
        #[derive(Debug)]
        struct AnyServer;
        impl rustls::client::danger::ServerCertVerifier for AnyServer {
            fn verify_server_cert(
                &self,
                _: &rustls::pki_types::CertificateDer<'_>,
                _: &[rustls::pki_types::CertificateDer<'_>],
                _: &rustls::pki_types::ServerName<'_>,
                _: &[u8],
                _: rustls::pki_types::UnixTime,
            ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
                Ok(rustls::client::danger::ServerCertVerified::assertion())
            }
            fn verify_tls12_signature(
                &self,
                _: &[u8],
                _: &rustls::pki_types::CertificateDer<'_>,
                _: &rustls::DigitallySignedStruct,
            ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error>
            {
                Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
            }
            fn verify_tls13_signature(
                &self,
                _: &[u8],
                _: &rustls::pki_types::CertificateDer<'_>,
                _: &rustls::DigitallySignedStruct,
            ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error>
            {
                Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
            }
            fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
                rustls::crypto::ring::default_provider()
                    .signature_verification_algorithms
                    .supported_schemes()
            }
        }
        let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyServer));
        let cfg = match identity {
            Some((c, k)) => builder
                .with_client_auth_cert(parse_certs(c, "c").unwrap(), parse_key(k, "k").unwrap())
                .unwrap(),
            None => builder.with_no_client_auth(),
        };
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
            .connect("localhost".try_into().unwrap(), tcp)
            .await
            .unwrap();
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .unwrap();
        tokio::spawn(conn);
        let resp = send
            .send_request(
                Request::get(path)
                    .header("host", "localhost")
                    .body(http_body_util::Empty::<bytes::Bytes>::new())
                    .unwrap(),
            )
            .await
            .unwrap();
        let code = resp.status();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (code, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn https_requires_a_verified_client_certificate_except_for_health() {
        let dir = tempfile::tempdir().unwrap();
        let pki = component_base::pki::Pki::load_or_create(&dir.path().join("ca"), &[]).unwrap();
        let ca_file = dir.path().join("ca.crt");
        std::fs::write(&ca_file, pki.ca_cert_pem()).unwrap();
        let cfg = config(dir.path(), &["--client-ca-file", ca_file.to_str().unwrap()]);
        let state = ServerState {
            config: Arc::new(cfg),
            runtime: Arc::new(FakeRuntime::new()),
            pods: store(&[]),
        };
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let health = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let health_addr = health.local_addr().unwrap();
        let stop = CancellationToken::new();
        let server = tokio::spawn(serve_listeners(
            listener,
            Some(health),
            state,
            MetricsRegistry::default(),
            stop.clone(),
        ));

        assert_eq!(
            https_get(addr, "/healthz", None).await,
            (StatusCode::OK, "ok".into())
        );
        assert_eq!(
            https_get(addr, "/pods", None).await.0,
            StatusCode::UNAUTHORIZED
        );
        let (cert, key) = pki
            .issue_client_cert("kube-apiserver-kubelet-client", &["system:masters"])
            .unwrap();
        let (code, body) = https_get(addr, "/pods", Some((&cert, &key))).await;
        assert_eq!(code, StatusCode::OK, "{body}");
        assert!(body.contains("PodList"));

        // The plain-HTTP health port.
        let tcp = tokio::net::TcpStream::connect(health_addr).await.unwrap();
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .unwrap();
        tokio::spawn(conn);
        let resp = send
            .send_request(
                Request::get("/healthz")
                    .header("host", "localhost")
                    .body(http_body_util::Empty::<bytes::Bytes>::new())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);

        stop.cancel();
        tokio::time::timeout(Duration::from_secs(15), server)
            .await
            .expect("server stops")
            .unwrap()
            .unwrap();
        assert!(dir
            .path()
            .join("root/pki")
            .join(SELF_SIGNED_CERT_FILE)
            .exists());
    }
}
