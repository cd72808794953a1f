//! Exec, attach and port-forward: the kubelet's streaming API (`/exec`, `/attach`,
//! `/portForward`, `/run` on :10250), as upstream's `pkg/kubelet/server` serves it to the API
//! server, which relays every client's upgrade unchanged (it does not translate WebSocket to
//! SPDY as upstream's 1.30+ API server does). So this kubelet speaks every protocol kubectl
//! 1.27–1.33 and client libraries use:
//!
//! | request | protocol | served by |
//! |---|---|---|
//! | exec, attach | SPDY/3.1 (`X-Stream-Protocol-Version` v4…v1) | containerd's streaming server, proxied byte for byte |
//! | exec, attach | WebSocket `v4.channel.k8s.io` (and v1, base64) | containerd's streaming server, proxied byte for byte |
//! | exec, attach | WebSocket `v5.channel.k8s.io` | translated here: WebSocket frames ⇄ a SPDY v4 client to containerd |
//! | port-forward | SPDY/3.1 `portforward.k8s.io` | here: SPDY server, pod connections dialled by the kubelet |
//! | port-forward | WebSocket `SPDY/3.1+portforward.k8s.io` | here: the same SPDY server over WebSocket binary messages |
//! | port-forward | WebSocket `v4.channel.k8s.io`/`portforward.k8s.io` | here: data/error channel pairs per `port` |
//!
//! Why this split. Exec and attach need the container's stdio, which only the runtime has
//! (containerd's shim fifos); its streaming server already speaks SPDY and WebSocket v4, so for
//! those the cheapest correct kubelet is upstream's: resolve the container, ask CRI for the
//! one-shot URL, and splice the two upgraded connections (no parsing, no re-framing, TCP
//! backpressure end to end). Only WebSocket v5 — what kubectl ≥ 1.30 offers first, and whose
//! stdin-close signal v4 cannot express — is terminated here and re-spoken to containerd as
//! SPDY (where a FIN closes stdin). Port-forward needs no runtime at all: pod IPs are routable
//! from the node, so the kubelet dials `<podIP>:<port>` itself and saves containerd's hop and
//! its re-framing. Upstream's runtimes dial inside the pod's network namespace instead, which
//! differs for ports bound to 127.0.0.1 in the pod: a refused connection is therefore retried
//! through the runtime's own port-forward (CRI PortForward, SPDY client), which dials in the
//! namespace.
//!
//! Errors are upstream's: an unknown pod is `404 pod does not exist`; a container that is not
//! running is `500 container not found ("c")` (kubectl prints `unable to upgrade connection:
//! container not found ("c")`); a WebSocket handshake offering no protocol served here is
//! `403`, and a SPDY one `400`/`403` as `httpstream.Handshake` answers, so clients fall back.
//! Every task a session spawns is counted in [`Tasks`] (`kubelet_streaming_tasks`) and ends
//! when either side disconnects: the runtime's connection is closed, which ends its exec I/O.

pub mod client;
mod exec;
mod portforward;
pub mod spdy;
pub mod websocket;

use std::future::Future;
use std::sync::atomic::AtomicI64;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::Query;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode};
use k8s_openapi::api::core::v1::Pod;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

use crate::cri::{labels, v1, Runtime};
use crate::PodStore;

pub use client::StreamFlags;

/// An HTTP answer refusing a request (boxed: it is the cold path).
pub(crate) type Refused = Box<Response<Body>>;

/// `X-Stream-Protocol-Version`, the SPDY upgrade's subprotocol header.
pub const STREAM_PROTOCOL_HEADER: HeaderName = HeaderName::from_static("x-stream-protocol-version");

/// Live streaming tasks, counted so leaks show (`kubelet_streaming_tasks`). Cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct Tasks {
    live: Gauge<i64, AtomicI64>,
}

struct TaskGuard(Gauge<i64, AtomicI64>);

impl Drop for TaskGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl Tasks {
    /// `tokio::spawn`, counted until the task ends (or is dropped unpolled).
    pub fn spawn<F>(&self, fut: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.live.inc();
        let guard = TaskGuard(self.live.clone());
        tokio::spawn(async move {
            let _guard = guard;
            fut.await
        })
    }

    /// Tasks running now.
    pub fn live(&self) -> i64 {
        self.live.get()
    }
}

/// Which container request: `/exec` or `/attach`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Exec,
    Attach,
}

/// The pod (and container) a request names.
#[derive(Clone, Debug)]
pub struct Target {
    pub namespace: String,
    pub pod: String,
    /// Set when the path carries the pod's UID (`/exec/<ns>/<pod>/<uid>/<container>`).
    pub uid: Option<String>,
    pub container: String,
}

/// The streaming handlers' shared state.
pub struct Streaming {
    runtime: Arc<dyn Runtime>,
    pods: PodStore,
    tasks: Tasks,
    /// Upgraded connections open now (`kubelet_streaming_sessions`).
    sessions: Gauge<i64, AtomicI64>,
    shutdown: CancellationToken,
}

/// Counts one open upgraded connection.
struct SessionGuard(Gauge<i64, AtomicI64>);

impl SessionGuard {
    fn new(g: &Gauge<i64, AtomicI64>) -> Self {
        g.inc();
        Self(g.clone())
    }
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl Streaming {
    pub fn new(runtime: Arc<dyn Runtime>, pods: PodStore, shutdown: CancellationToken) -> Self {
        Self {
            runtime,
            pods,
            tasks: Tasks::default(),
            sessions: Gauge::default(),
            shutdown,
        }
    }

    /// Register `kubelet_streaming_tasks` and `kubelet_streaming_sessions`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "kubelet_streaming_tasks",
            "Tasks serving exec, attach and port-forward connections",
            self.tasks.live.clone(),
        );
        registry.register(
            "kubelet_streaming_sessions",
            "Open exec, attach and port-forward connections",
            self.sessions.clone(),
        );
    }

    pub fn tasks(&self) -> &Tasks {
        &self.tasks
    }

    /// `/exec/...` and `/attach/...`.
    pub async fn container_stream(
        &self,
        kind: Kind,
        target: Target,
        req: Request<Body>,
    ) -> Response<Body> {
        exec::serve(self, kind, target, req).await
    }

    /// `/portForward/<ns>/<pod>[/<uid>]` (`target.container` is unused).
    pub async fn port_forward(&self, target: Target, req: Request<Body>) -> Response<Body> {
        portforward::serve(self, target, req).await
    }

    /// `/run/<ns>/<pod>/<container>?cmd=...`: run a command to completion, answer its output.
    pub async fn run(&self, target: Target, req: Request<Body>) -> Response<Body> {
        let query = query_pairs(&req);
        let cmd: Vec<String> = query
            .iter()
            .filter(|(k, _)| k == "cmd")
            .flat_map(|(_, v)| v.split(' '))
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect();
        if cmd.is_empty() {
            return text(StatusCode::BAD_REQUEST, "missing cmd");
        }
        let pod = match self.find_pod(&target) {
            Ok(p) => p,
            Err(r) => return *r,
        };
        let id = match self.running_container(&pod, &target.container).await {
            Ok(id) => id,
            Err(r) => return *r,
        };
        match self.runtime.exec_sync(id, cmd, 0).await {
            Ok(r) => {
                let mut out = r.stdout;
                out.extend_from_slice(&r.stderr);
                let mut resp = Response::new(Body::from(out));
                resp.headers_mut()
                    .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
                resp
            }
            Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        }
    }

    fn find_pod(&self, t: &Target) -> Result<Arc<Pod>, Refused> {
        self.pods
            .state()
            .into_iter()
            .find(|p| {
                p.metadata.name.as_deref() == Some(t.pod.as_str())
                    && p.metadata.namespace.as_deref().unwrap_or("default") == t.namespace
                    && t.uid
                        .as_ref()
                        .is_none_or(|u| p.metadata.uid.as_deref() == Some(u.as_str()))
            })
            .ok_or_else(|| Box::new(text(StatusCode::NOT_FOUND, "pod does not exist")))
    }

    /// The runtime id of the running instance of `name`, or upstream's `container not found`.
    async fn running_container(&self, pod: &Pod, name: &str) -> Result<String, Refused> {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let filter = v1::ContainerFilter {
            state: Some(v1::ContainerStateValue {
                state: v1::ContainerState::ContainerRunning as i32,
            }),
            label_selector: [
                (labels::POD_UID.to_string(), uid),
                (labels::CONTAINER_NAME.to_string(), name.to_string()),
            ]
            .into(),
            ..Default::default()
        };
        match self.runtime.list_containers(Some(filter)).await {
            Ok(mut cs) => {
                cs.retain(|c| c.state == v1::ContainerState::ContainerRunning as i32);
                cs.sort_by_key(|c| std::cmp::Reverse(c.created_at));
                cs.into_iter().next().map(|c| c.id).ok_or_else(|| {
                    Box::new(text(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        format!("container not found ({name:?})"),
                    ))
                })
            }
            Err(e) => Err(Box::new(cri_error(&e))),
        }
    }
}

/// Upstream's `streaming.WriteError`: NotFound → 404, ResourceExhausted → 429, else 500.
fn cri_error(e: &crate::cri::CriError) -> Response<Body> {
    let code = match e.code() {
        tonic::Code::NotFound => StatusCode::NOT_FOUND,
        tonic::Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    text(code, e.to_string())
}

pub(crate) fn text(code: StatusCode, body: impl Into<String>) -> Response<Body> {
    let mut r = Response::new(Body::from(body.into()));
    *r.status_mut() = code;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// Whether a comma-separated header lists `token` (case-insensitively).
pub(crate) fn has_token(h: &HeaderMap, name: HeaderName, token: &str) -> bool {
    h.get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

fn query_pairs(req: &Request<Body>) -> Vec<(String, String)> {
    Query::<Vec<(String, String)>>::try_from_uri(req.uri())
        .map(|q| q.0)
        .unwrap_or_default()
}

/// `X-Stream-Protocol-Version` values, one per header line (and comma-separated within one).
fn stream_protocols(h: &HeaderMap) -> Vec<String> {
    h.get_all(STREAM_PROTOCOL_HEADER)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

/// Upstream's `httpstream.Handshake` plus the SPDY upgrader's checks: the protocol both sides
/// speak (the client's first one the server accepts), or the answer that refuses.
fn spdy_handshake(h: &HeaderMap, server: &[&str]) -> Result<String, Refused> {
    let client = stream_protocols(h);
    if client.is_empty() {
        return Err(Box::new(text(
            StatusCode::BAD_REQUEST,
            "unable to upgrade: X-Stream-Protocol-Version is required",
        )));
    }
    let Some(chosen) = client.iter().find(|c| server.contains(&c.as_str())) else {
        let mut r = text(
            StatusCode::FORBIDDEN,
            format!(
                "unable to upgrade: unable to negotiate protocol: client supports {}, server accepts {}",
                go_list(&client),
                go_list(server)
            ),
        );
        for s in server {
            r.headers_mut().append(
                HeaderName::from_static("x-accepted-stream-protocol-versions"),
                HeaderValue::from_str(s).expect("protocol names are header-safe"),
            );
        }
        return Err(Box::new(r));
    };
    if !has_token(h, header::CONNECTION, "upgrade") || !has_token(h, header::UPGRADE, "spdy/3.1") {
        return Err(Box::new(text(
            StatusCode::BAD_REQUEST,
            "unable to upgrade: missing upgrade headers in request",
        )));
    }
    Ok(chosen.clone())
}

fn go_list<S: AsRef<str>>(v: &[S]) -> String {
    format!(
        "[{}]",
        v.iter().map(|s| s.as_ref()).collect::<Vec<_>>().join(" ")
    )
}

/// The 101 answer to a SPDY upgrade with the negotiated protocol.
fn spdy_switching(protocol: &str) -> Response<Body> {
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "Upgrade")
        .header(header::UPGRADE, "SPDY/3.1")
        .header(STREAM_PROTOCOL_HEADER, protocol)
        .body(Body::empty())
        .expect("valid response")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn spdy_handshake_answers_like_httpstream() {
        let server = ["portforward.k8s.io"];
        type Case<'a> = (&'a [(&'a str, &'a str)], Result<&'a str, (u16, &'a str)>);
        let cases: &[Case] = &[
            (
                &[("connection", "Upgrade"), ("upgrade", "SPDY/3.1")],
                Err((400, "unable to upgrade: X-Stream-Protocol-Version is required")),
            ),
            (
                &[
                    ("connection", "Upgrade"),
                    ("upgrade", "SPDY/3.1"),
                    ("x-stream-protocol-version", "v4.channel.k8s.io"),
                ],
                Err((
                    403,
                    "unable to upgrade: unable to negotiate protocol: client supports [v4.channel.k8s.io], server accepts [portforward.k8s.io]",
                )),
            ),
            (
                &[("x-stream-protocol-version", "portforward.k8s.io")],
                Err((400, "unable to upgrade: missing upgrade headers in request")),
            ),
            (
                &[
                    ("connection", "keep-alive, Upgrade"),
                    ("upgrade", "spdy/3.1"),
                    ("x-stream-protocol-version", "v9"),
                    ("x-stream-protocol-version", "portforward.k8s.io"),
                ],
                Ok("portforward.k8s.io"),
            ),
        ];
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        for (h, want) in cases {
            let got = spdy_handshake(&headers(h), &server);
            match (got, want) {
                (Ok(p), Ok(w)) => assert_eq!(p, *w),
                (Err(r), Err((code, msg))) => {
                    assert_eq!(r.status().as_u16(), *code);
                    let body = rt.block_on(async {
                        use http_body_util::BodyExt;
                        r.into_body().collect().await.unwrap().to_bytes()
                    });
                    assert_eq!(String::from_utf8_lossy(&body), *msg);
                }
                (got, want) => panic!(
                    "{h:?}: got {:?}, want {want:?}",
                    got.map_err(|r| r.status())
                ),
            }
        }
    }
}
