//! The API server's streaming, upgrade-aware reverse proxy: `pods/log` streamed from the
//! kubelet (upstream's `LocationStreamer`), `pods/exec|attach|portforward` and the
//! `pods|services|nodes/proxy` subresources (upstream's `UpgradeAwareHandler`).
//!
//! Guarantees:
//! - bodies are streamed both ways, never buffered: a `logs -f` line reaches the client as soon
//!   as the kubelet sends it, and a client that goes away drops the backend connection with it;
//! - an upgrade request (`Connection: Upgrade`: WebSocket or SPDY/3.1) is forwarded with all its
//!   headers; a `101` from the backend is returned with the backend's headers and then the two
//!   upgraded connections are joined byte for byte until either side closes (or the server shuts
//!   down), which closes both; any other backend answer of 400 and above is relayed as it came;
//! - errors are the `Status` objects upstream answers (`error dialing backend: ...`,
//!   `error trying to reach service: ...`, `no endpoints available for service "web"`).
//!
//! One backend connection per request (HTTP/1.1 over TCP, TLS to kubelets); nothing pooled.

use crate::handler::State;
use crate::kubelet::{self, Failure, LogOptions, Stream, Transport, Upstream};
use crate::request::{Query, Target};
use apimachinery::errors::{ApiError, Reason};
use axum::body::Body;
use bytes::Bytes;
use http::{header, HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode};
use http_body::{Body as _, Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

type Resp = Response<Body>;

/// How long connecting to a backend may take (upstream's dialer timeout).
pub const DIAL_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a TLS handshake with a kubelet may take (Go's `TLSHandshakeTimeout`).
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How much of a failed backend answer becomes the error message.
const MAX_ERROR_BODY: usize = 50_000;

/// The client's address; the server puts it into every request's extensions
/// (`X-Forwarded-For`).
#[derive(Clone, Copy, Debug)]
pub struct RemoteAddr(pub SocketAddr);

/// A `Status` response for a failure.
pub fn failure_response(f: &Failure) -> Resp {
    Response::builder()
        .status(StatusCode::from_u16(f.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CACHE_CONTROL, "no-cache, private")
        .body(Body::from(
            serde_json::to_vec(&f.to_status()).unwrap_or_default(),
        ))
        .expect("static response parts are valid")
}

fn respond(r: Result<Resp, Failure>) -> Resp {
    r.unwrap_or_else(|f| failure_response(&f))
}

fn method_not_allowed() -> Failure {
    ApiError::method_not_allowed("the server does not allow this method on the requested resource")
        .into()
}

fn names(t: &Target) -> (&str, &str) {
    (
        t.namespace.as_deref().unwrap_or(""),
        t.name.as_deref().unwrap_or(""),
    )
}

/// `GET pods/<name>/log`: validate, then stream the kubelet's `/containerLogs` answer.
pub async fn pod_log(state: &Arc<State>, req: Request<Body>, t: &Target) -> Resp {
    respond(pod_log_inner(state, req, t).await)
}

async fn pod_log_inner(
    state: &Arc<State>,
    req: Request<Body>,
    t: &Target,
) -> Result<Resp, Failure> {
    if req.method() != Method::GET {
        return Err(method_not_allowed());
    }
    let (ns, name) = names(t);
    let opts = LogOptions::from_query(&Query::parse(req.uri().query()), name)?;
    let pod = state
        .registry
        .get(&kubelet::target("", "pods", Some(ns)), name)
        .await?;
    let container = kubelet::validate_container(&pod, opts.container.as_deref())?;
    let Some(node) = kubelet::pod_node(&pod) else {
        // Upstream: an unscheduled pod has no log location, which is answered with no content.
        return Ok(Response::builder()
            .status(StatusCode::NO_CONTENT)
            .body(Body::empty())
            .expect("valid response"));
    };
    let addr = state.kubelet.node_address(&state.registry, node).await?;
    let up = state.kubelet.upstream(
        addr,
        format!("/containerLogs/{ns}/{name}/{container}"),
        opts.kubelet_query(),
        opts.insecure_skip_tls_verify_backend,
    );
    let out = Request::get(up.path_and_query())
        .header(header::HOST, up.authority())
        .body(Body::empty())
        .map_err(|e| Failure::unknown(e.to_string()))?;
    let (resp, conn) = send(&up, out)
        .await
        .map_err(|e| Failure::unknown(format!("Get {:?}: {e}", up.url())))?;
    let status = resp.status().as_u16();
    if !(200..=206).contains(&status) {
        let body = read_limited(resp.into_body(), MAX_ERROR_BODY).await;
        return Err(Failure::from_backend(status, &body, "pods/log", name));
    }
    tracing::debug!(pod = %format!("{ns}/{name}"), container = %container, node = %node, follow = opts.follow, "streaming logs");
    Ok(Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "text/plain")
        .header(header::CACHE_CONTROL, "no-cache, private")
        .body(Body::new(Relayed {
            body: resp.into_body(),
            _conn: conn,
        }))
        .expect("valid response"))
}

/// `pods/<name>/exec|attach|portforward`: validate, then proxy the upgrade to the kubelet.
pub async fn pod_stream(
    state: &Arc<State>,
    req: Request<Body>,
    t: &Target,
    stream: Stream,
) -> Resp {
    respond(pod_stream_inner(state, req, t, stream).await)
}

async fn pod_stream_inner(
    state: &Arc<State>,
    req: Request<Body>,
    t: &Target,
    stream: Stream,
) -> Result<Resp, Failure> {
    if !matches!(*req.method(), Method::GET | Method::POST) {
        return Err(method_not_allowed());
    }
    let (ns, name) = names(t);
    let q = Query::parse(req.uri().query());
    let query = stream.kubelet_query(&q)?;
    let pod = state
        .registry
        .get(&kubelet::target("", "pods", Some(ns)), name)
        .await?;
    let path = match stream {
        Stream::Exec | Stream::Attach => {
            let c = kubelet::validate_container(&pod, q.get("container"))?;
            let verb = if stream == Stream::Exec {
                "exec"
            } else {
                "attach"
            };
            format!("/{verb}/{ns}/{name}/{c}")
        }
        Stream::PortForward => format!("/portForward/{ns}/{name}"),
    };
    let Some(node) = kubelet::pod_node(&pod) else {
        return Err(
            ApiError::bad_request(format!("pod {name} does not have a host assigned")).into(),
        );
    };
    let addr = state.kubelet.node_address(&state.registry, node).await?;
    let up = state.kubelet.upstream(addr, path, query, false);
    if !is_upgrade_request(req.headers()) {
        return Err(ApiError::bad_request("Upgrade request required").into());
    }
    tracing::debug!(pod = %format!("{ns}/{name}"), node = %node, kubelet = %up.url(), "proxying stream");
    try_upgrade(state, req, up).await
}

/// `pods|services|nodes/<id>/proxy[/<path>]`: any method, upgrades included.
pub async fn resource_proxy(state: &Arc<State>, req: Request<Body>, t: &Target) -> Resp {
    respond(resource_proxy_inner(state, req, t).await)
}

async fn resource_proxy_inner(
    state: &Arc<State>,
    req: Request<Body>,
    t: &Target,
) -> Result<Resp, Failure> {
    if !matches!(
        *req.method(),
        Method::GET
            | Method::POST
            | Method::PUT
            | Method::PATCH
            | Method::DELETE
            | Method::HEAD
            | Method::OPTIONS
    ) {
        return Err(method_not_allowed());
    }
    let (ns, id) = names(t);
    let reg = &state.registry;
    let mut up = match t.resource.kind {
        "Pod" => state.kubelet.pod_location(reg, ns, id).await?,
        "Service" => state.kubelet.service_location(reg, ns, id).await?,
        "Node" => state.kubelet.node_location(reg, id).await?,
        _ => return Err(crate::request::not_found_path().into()),
    };
    // `/api/v1[/namespaces/<ns>]/<resource>/<id>/proxy`, then the path to forward, unescaped.
    let prefix = 2 + if t.namespace.is_some() { 2 } else { 0 } + 3;
    let sub = raw_subpath(req.uri().path(), prefix);
    up.path = join_preserving_trailing_slash(&up.path, &sub);
    up.query = req.uri().query().unwrap_or("").to_string();
    if is_upgrade_request(req.headers()) {
        return try_upgrade(state, req, up).await;
    }
    let req_path = req.uri().path().to_string();
    if !up.path.ends_with('/') && req_path.ends_with('/') {
        up.path.push('/');
    }
    if up.path.is_empty() && matches!(*req.method(), Method::GET | Method::HEAD) {
        // Upstream redirects an empty path to the same URL with a slash (kubernetes#4958).
        let mut loc = format!("{req_path}/");
        if let Some(q) = req.uri().query().filter(|q| !q.is_empty()) {
            loc.push('?');
            loc.push_str(q);
        }
        return Ok(Response::builder()
            .status(StatusCode::MOVED_PERMANENTLY)
            .header(header::LOCATION, loc)
            .body(Body::empty())
            .expect("valid response"));
    }
    forward(req, up).await
}

/// Plain reverse proxying with upstream's proxy transport: `X-Forwarded-*` headers, CORS
/// headers dropped from the answer, redirects to the backend rewritten through the proxy path.
async fn forward(req: Request<Body>, up: Upstream) -> Result<Resp, Failure> {
    let req_path = req.uri().path().to_string();
    let remote = req.extensions().get::<RemoteAddr>().copied();
    let (parts, body) = req.into_parts();
    let mut headers = parts.headers;
    remove_hop_by_hop(&mut headers);
    // The API server's credentials were for the API server, never for the backend.
    headers.remove(header::AUTHORIZATION);
    let request_host = ensure_host(&mut headers, &parts.uri, &up);
    let prepend = path_prepend(&req_path, &up.path);
    let mut forwarded_uri = clean_path(&format!("{prepend}/{}", up.path));
    if up.path.ends_with('/') && !forwarded_uri.ends_with('/') {
        forwarded_uri.push('/');
    }
    if let Ok(v) = HeaderValue::from_str(&forwarded_uri) {
        headers.insert(HeaderName::from_static("x-forwarded-uri"), v);
    }
    append_forwarded_for(&mut headers, remote);
    let mut out = Request::builder()
        .method(parts.method)
        .uri(up.path_and_query())
        .body(body)
        .map_err(|e| Failure::unknown(e.to_string()))?;
    *out.headers_mut() = headers;
    let (resp, conn) = send(&up, out).await.map_err(|e| {
        Failure::from(ApiError::new(
            Reason::ServiceUnavailable,
            format!("error trying to reach service: {e}"),
        ))
    })?;
    let (mut parts, body) = resp.into_parts();
    remove_hop_by_hop(&mut parts.headers);
    for h in [
        "access-control-allow-credentials",
        "access-control-allow-headers",
        "access-control-allow-methods",
        "access-control-allow-origin",
    ] {
        parts.headers.remove(h);
    }
    if let Some(loc) = parts
        .headers
        .get(header::LOCATION)
        .and_then(|v| v.to_str().ok())
    {
        let rewritten = rewrite_location(loc, &up.authority(), &request_host, &prepend);
        if let Ok(v) = HeaderValue::from_str(&rewritten) {
            parts.headers.insert(header::LOCATION, v);
        }
    }
    Ok(relay(parts.status, parts.headers, body, conn))
}

/// Upstream's `tryUpgrade`: forward the upgrade request; on `101` answer with the backend's
/// headers and join the two connections; relay error answers; anything else is an error.
async fn try_upgrade(
    state: &Arc<State>,
    mut req: Request<Body>,
    up: Upstream,
) -> Result<Resp, Failure> {
    let client_upgrade = hyper::upgrade::on(&mut req);
    let remote = req.extensions().get::<RemoteAddr>().copied();
    let (parts, _) = req.into_parts();
    let mut headers = parts.headers;
    headers.remove(header::AUTHORIZATION);
    headers.remove(header::TRANSFER_ENCODING);
    headers.remove(header::CONTENT_LENGTH);
    ensure_host(&mut headers, &parts.uri, &up);
    append_forwarded_for(&mut headers, remote);
    let mut out = Request::builder()
        .method(parts.method)
        .uri(up.path_and_query())
        .body(Body::empty())
        .map_err(|e| Failure::unknown(e.to_string()))?;
    *out.headers_mut() = headers;
    let (mut resp, conn) = send(&up, out).await.map_err(|e| match e {
        SendError::Dial(m) => Failure::unknown(format!("error dialing backend: {m}")),
        SendError::Http(m) => Failure::unknown(m),
    })?;
    let status = resp.status();
    if status == StatusCode::SWITCHING_PROTOCOLS {
        let backend_upgrade = hyper::upgrade::on(&mut resp);
        let shutdown = state.shutdown.clone();
        let target = up.url();
        tokio::spawn(async move {
            let _conn = conn;
            match tokio::try_join!(client_upgrade, backend_upgrade) {
                Ok((client, backend)) => {
                    join_streams(TokioIo::new(client), TokioIo::new(backend), shutdown).await;
                    tracing::debug!(backend = %target, "upgraded stream closed");
                }
                Err(e) => tracing::debug!(backend = %target, error = %e, "upgrade failed"),
            }
        });
        let mut r = Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .body(Body::empty())
            .expect("valid response");
        *r.headers_mut() = resp.headers().clone();
        return Ok(r);
    }
    if status.as_u16() < 400 {
        return Err(Failure::unknown(format!(
            "invalid upgrade response: status code {}",
            status.as_u16()
        )));
    }
    let (parts, body) = resp.into_parts();
    let mut headers = parts.headers;
    remove_hop_by_hop(&mut headers);
    Ok(relay(parts.status, headers, body, conn))
}

/// Copy bytes both ways until one side is done, then close both.
async fn join_streams<A, B>(a: A, b: B, shutdown: CancellationToken)
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let (mut ar, mut aw) = tokio::io::split(a);
    let (mut br, mut bw) = tokio::io::split(b);
    tokio::select! {
        r = tokio::io::copy(&mut ar, &mut bw) => {
            tracing::trace!(result = ?r, "client side of the stream ended");
        }
        r = tokio::io::copy(&mut br, &mut aw) => {
            tracing::trace!(result = ?r, "backend side of the stream ended");
        }
        _ = shutdown.cancelled() => {}
    }
    let close = async {
        let _ = aw.shutdown().await;
        let _ = bw.shutdown().await;
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), close).await;
}

fn relay(status: StatusCode, headers: HeaderMap, body: Incoming, conn: ConnGuard) -> Resp {
    let mut r = Response::builder()
        .status(status)
        .body(Body::new(Relayed { body, _conn: conn }))
        .expect("valid response");
    *r.headers_mut() = headers;
    r
}

/// Upstream's `httpstream.IsUpgradeRequest`: a `Connection` header naming `upgrade`.
pub fn is_upgrade_request(h: &HeaderMap) -> bool {
    h.get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
}

/// The headers a proxy must not forward (RFC 9110 §7.6.1), including those `Connection` names.
fn remove_hop_by_hop(h: &mut HeaderMap) {
    let named: Vec<String> = h
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .filter(|t| !t.is_empty())
        .collect();
    for n in named {
        h.remove(n.as_str());
    }
    for n in [
        "connection",
        "proxy-connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    ] {
        h.remove(n);
    }
}

/// Keep the client's `Host` (HTTP/2 carries it as the URI authority); returns it.
fn ensure_host(h: &mut HeaderMap, uri: &http::Uri, up: &Upstream) -> String {
    if let Some(v) = h.get(header::HOST).and_then(|v| v.to_str().ok()) {
        return v.to_string();
    }
    let host = uri
        .authority()
        .map(|a| a.to_string())
        .unwrap_or_else(|| up.authority());
    if let Ok(v) = HeaderValue::from_str(&host) {
        h.insert(header::HOST, v);
    }
    host
}

fn append_forwarded_for(h: &mut HeaderMap, remote: Option<RemoteAddr>) {
    let Some(RemoteAddr(addr)) = remote else {
        return;
    };
    let ip = addr.ip().to_string();
    let value = match h
        .get("x-forwarded-for")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty())
    {
        Some(prior) => format!("{prior}, {ip}"),
        None => ip,
    };
    if let Ok(v) = HeaderValue::from_str(&value) {
        h.insert(HeaderName::from_static("x-forwarded-for"), v);
    }
}

/// The part of `path` after its first `skip` segments, with its leading slash (`""` when the
/// path ends right there, `"/"` for a trailing slash). Kept escaped as the client sent it.
fn raw_subpath(path: &str, skip: usize) -> String {
    let parts: Vec<&str> = path.trim_start_matches('/').splitn(skip + 1, '/').collect();
    if parts.len() > skip {
        format!("/{}", parts[skip])
    } else {
        String::new()
    }
}

/// Go's `path.Clean` for the absolute and empty paths used here.
fn clean_path(p: &str) -> String {
    if p.is_empty() {
        return String::new();
    }
    let mut out: Vec<&str> = Vec::new();
    for seg in p.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            s => out.push(s),
        }
    }
    format!("/{}", out.join("/"))
}

/// Upstream's `JoinPreservingTrailingSlash(base, sub)` (both absolute or empty).
fn join_preserving_trailing_slash(base: &str, sub: &str) -> String {
    let joined = match (base.is_empty(), sub.is_empty()) {
        (true, true) => String::new(),
        (false, true) => clean_path(base),
        (true, false) => clean_path(sub),
        (false, false) => clean_path(&format!("{base}/{sub}")),
    };
    let last = if sub.is_empty() { base } else { sub };
    if last.ends_with('/') && !joined.ends_with('/') {
        format!("{joined}/")
    } else {
        joined
    }
}

/// What precedes the backend path in the client's path (upstream's `PathPrepend`).
fn path_prepend(req_path: &str, location_path: &str) -> String {
    let mut suffix = location_path.to_string();
    if req_path.ends_with('/') && !suffix.ends_with('/') {
        suffix.push('/');
    }
    req_path
        .strip_suffix(suffix.as_str())
        .unwrap_or(req_path)
        .to_string()
}

/// Upstream's `Transport.rewriteURL` for a `Location` answer: absolute paths on the backend (or
/// on the client's host) are sent back through the proxy path.
fn rewrite_location(target: &str, backend: &str, request_host: &str, prepend: &str) -> String {
    let (scheme, rest) = match target.split_once("://") {
        Some((s, r)) if !s.contains('/') => (Some(s), r),
        _ => (None, target),
    };
    let (host, path_etc) = match scheme {
        Some(_) => match rest.find(['/', '?', '#']) {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        },
        None => ("", rest),
    };
    let split = path_etc.find(['?', '#']).unwrap_or(path_etc.len());
    let (path, tail) = path_etc.split_at(split);
    if (!host.is_empty() && host != backend && host != request_host) || !path.starts_with('/') {
        return target.to_string();
    }
    // The proxy transport has no scheme or host of its own, so an absolute URL keeps both
    // only when it already names the client's host; otherwise it becomes a path.
    let origin = if host == request_host && !host.is_empty() {
        format!("{}://{host}", scheme.unwrap_or("http"))
    } else {
        String::new()
    };
    if path.starts_with(prepend) {
        return format!("{origin}{path}{tail}");
    }
    let mut p = clean_path(&format!("{prepend}/{path}"));
    if path.ends_with('/') && !p.ends_with('/') {
        p.push('/');
    }
    format!("{origin}{p}{tail}")
}

/// The response body of a backend, holding its connection open while it streams; dropping it
/// (the client went away) closes the backend connection.
struct Relayed {
    body: Incoming,
    _conn: ConnGuard,
}

impl http_body::Body for Relayed {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// Aborts the backend connection's task when dropped.
struct ConnGuard(tokio::task::AbortHandle);

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Why a backend request failed, in Go's words (kubectl users know these).
#[derive(Debug)]
enum SendError {
    /// Connecting (TCP or TLS) failed.
    Dial(String),
    /// The HTTP exchange failed.
    Http(String),
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Dial(m) | Self::Http(m) => f.write_str(m),
        }
    }
}

trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

async fn dial(up: &Upstream) -> Result<Box<dyn Io>, SendError> {
    let authority = up.authority();
    let tcp = match tokio::time::timeout(
        DIAL_TIMEOUT,
        tokio::net::TcpStream::connect((up.host.as_str(), up.port)),
    )
    .await
    {
        Err(_) => {
            return Err(SendError::Dial(format!(
                "dial tcp {authority}: i/o timeout"
            )))
        }
        Ok(Err(e)) => return Err(SendError::Dial(go_dial_error(&authority, &up.host, &e))),
        Ok(Ok(s)) => s,
    };
    let _ = tcp.set_nodelay(true);
    match &up.transport {
        Transport::Http => Ok(Box::new(tcp)),
        Transport::Https(config) => {
            let name = rustls::pki_types::ServerName::try_from(up.host.clone())
                .map_err(|e| SendError::Dial(format!("invalid server name {:?}: {e}", up.host)))?;
            let connector = tokio_rustls::TlsConnector::from(config.clone());
            match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, connector.connect(name, tcp)).await {
                Err(_) => Err(SendError::Dial("net/http: TLS handshake timeout".into())),
                Ok(Err(e)) => Err(SendError::Dial(go_tls_error(&e))),
                Ok(Ok(s)) => Ok(Box::new(s)),
            }
        }
    }
}

/// Connect, send `req` over HTTP/1.1 (upgrades allowed) and return the answer's head.
async fn send<B>(
    up: &Upstream,
    req: Request<B>,
) -> Result<(Response<Incoming>, ConnGuard), SendError>
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let io = dial(up).await?;
    let (mut sender, conn) = hyper::client::conn::http1::Builder::new()
        .handshake(TokioIo::new(io))
        .await
        .map_err(|e| SendError::Http(e.to_string()))?;
    let task = tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::trace!(error = %e, "backend connection ended");
        }
    });
    let guard = ConnGuard(task.abort_handle());
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| SendError::Http(e.to_string()))?;
    Ok((resp, guard))
}

async fn read_limited(mut body: Incoming, limit: usize) -> String {
    let mut out = Vec::new();
    while out.len() < limit {
        match std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
            Some(Ok(f)) => {
                if let Some(d) = f.data_ref() {
                    out.extend_from_slice(d);
                }
            }
            _ => break,
        }
    }
    out.truncate(limit);
    String::from_utf8_lossy(&out).into_owned()
}

/// A connect error as Go's dialer words it (`dial tcp 10.0.0.5:10250: connect: connection
/// refused`).
fn go_dial_error(authority: &str, host: &str, e: &std::io::Error) -> String {
    use std::io::ErrorKind;
    match e.kind() {
        ErrorKind::ConnectionRefused => {
            format!("dial tcp {authority}: connect: connection refused")
        }
        ErrorKind::TimedOut => format!("dial tcp {authority}: i/o timeout"),
        _ if host.parse::<std::net::IpAddr>().is_err() && e.to_string().contains("lookup") => {
            format!("dial tcp: lookup {host}: no such host")
        }
        _ => format!("dial tcp {authority}: connect: {}", plain_io_error(e)),
    }
}

/// `No route to host (os error 113)` → `no route to host`.
fn plain_io_error(e: &std::io::Error) -> String {
    let s = e.to_string();
    let s = match s.find(" (os error") {
        Some(i) => s[..i].to_string(),
        None => s,
    };
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_lowercase().chain(c).collect(),
        None => s,
    }
}

/// A TLS handshake failure as Go's crypto/tls words the common ones.
fn go_tls_error(e: &std::io::Error) -> String {
    use rustls::CertificateError;
    let Some(tls) = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) else {
        return plain_io_error(e);
    };
    match tls {
        // A chain to a different CA of the same name fails on the signature instead.
        rustls::Error::InvalidCertificate(
            CertificateError::UnknownIssuer | CertificateError::BadSignature,
        ) => {
            "tls: failed to verify certificate: x509: certificate signed by unknown authority"
                .into()
        }
        rustls::Error::InvalidCertificate(CertificateError::Expired) => {
            "tls: failed to verify certificate: x509: certificate has expired or is not yet valid"
                .into()
        }
        rustls::Error::InvalidCertificate(CertificateError::NotValidForName)
        | rustls::Error::InvalidCertificate(CertificateError::NotValidForNameContext { .. }) => {
            "tls: failed to verify certificate: x509: certificate is not valid for the requested name".into()
        }
        rustls::Error::InvalidCertificate(c) => {
            format!("tls: failed to verify certificate: {c:?}")
        }
        other => format!("tls: {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subpaths_keep_slashes_as_sent() {
        let p = "/api/v1/namespaces/default/pods/web/proxy";
        assert_eq!(raw_subpath(p, 7), "");
        assert_eq!(raw_subpath(&format!("{p}/"), 7), "/");
        assert_eq!(raw_subpath(&format!("{p}/a/b%20c/"), 7), "/a/b%20c/");
        assert_eq!(raw_subpath("/api/v1/nodes/n1/proxy/healthz", 5), "/healthz");
    }

    #[test]
    fn joins_like_join_preserving_trailing_slash() {
        let cases = [
            ("", "", ""),
            ("", "/", "/"),
            ("", "/a/./b/../c/", "/a/c/"),
            ("", "/../../etc", "/etc"),
            ("/base", "/x", "/base/x"),
            ("/base/", "", "/base/"),
        ];
        for (base, sub, want) in cases {
            assert_eq!(
                join_preserving_trailing_slash(base, sub),
                want,
                "{base:?} {sub:?}"
            );
        }
    }

    #[test]
    fn path_prepend_is_the_proxy_prefix() {
        let pre = "/api/v1/namespaces/default/services/web/proxy";
        assert_eq!(path_prepend(&format!("{pre}/a/b"), "/a/b"), pre);
        assert_eq!(path_prepend(&format!("{pre}/"), "/"), pre);
        assert_eq!(path_prepend(&format!("{pre}/a/"), "/a"), pre);
    }

    #[test]
    fn redirects_are_rewritten_through_the_proxy() {
        let pre = "/api/v1/namespaces/default/services/web/proxy";
        let backend = "10.0.0.7:8080";
        let client = "127.0.0.1:6443";
        let cases = [
            ("/login?next=/", format!("{pre}/login?next=/")),
            ("http://10.0.0.7:8080/x/", format!("{pre}/x/")),
            ("https://example.com/x", "https://example.com/x".to_string()),
            ("relative/path", "relative/path".to_string()),
            (&format!("{pre}/already"), format!("{pre}/already")),
            (
                "https://127.0.0.1:6443/y",
                format!("https://127.0.0.1:6443{pre}/y"),
            ),
        ];
        for (loc, want) in cases {
            assert_eq!(rewrite_location(loc, backend, client, pre), want, "{loc}");
        }
    }

    #[test]
    fn upgrade_requests_and_hop_by_hop_headers() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, Upgrade, X-Secret"),
        );
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("sec-websocket-key", HeaderValue::from_static("k"));
        assert!(is_upgrade_request(&h));
        remove_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("sec-websocket-key"));
        assert!(!is_upgrade_request(&h));
    }

    #[test]
    fn forwarded_for_appends() {
        let mut h = HeaderMap::new();
        append_forwarded_for(&mut h, Some(RemoteAddr("10.1.1.1:5000".parse().unwrap())));
        append_forwarded_for(&mut h, Some(RemoteAddr("[fd00::1]:5000".parse().unwrap())));
        assert_eq!(h["x-forwarded-for"], "10.1.1.1, fd00::1");
    }

    #[test]
    fn dial_errors_read_like_go() {
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert_eq!(
            go_dial_error("10.0.0.5:10250", "10.0.0.5", &refused),
            "dial tcp 10.0.0.5:10250: connect: connection refused"
        );
        let unreach = std::io::Error::from_raw_os_error(113);
        assert_eq!(
            go_dial_error("10.0.0.5:10250", "10.0.0.5", &unreach),
            "dial tcp 10.0.0.5:10250: connect: no route to host"
        );
    }
}
