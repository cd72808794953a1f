//! The network probes as upstream's `pkg/probe/{http,tcp,grpc}` run them: an HTTP(S) GET with
//! hyper over a tokio `TcpStream` (HTTPS without certificate verification, as upstream), a TCP
//! connect, and the gRPC health check (`grpc.health.v1.Health/Check`) over h2c, framed by hand.
//! Failure messages follow Go's wording so Events read as upstream's do.

use std::future::Future;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::{Buf, Bytes};
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::ServerName;
use rustls::ClientConfig;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

/// The `User-Agent` of probes (upstream: `kube-probe/<major>.<minor>`).
pub const USER_AGENT: &str = "kube-probe/1.32";

/// Result of one probe attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Success,
    /// The probe ran and failed; the message is the Event's.
    Failure(String),
    /// The probe could not run (upstream's `probe.Unknown` with an error).
    Error(String),
}

/// `host:port`, brackets around IPv6 literals (Go's `net.JoinHostPort`).
pub fn join_host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// Go's wording for common socket errors.
fn go_io_error(e: &std::io::Error) -> String {
    use std::io::ErrorKind::*;
    match e.kind() {
        ConnectionRefused => "connection refused".into(),
        ConnectionReset => "connection reset by peer".into(),
        TimedOut => "i/o timeout".into(),
        HostUnreachable => "no route to host".into(),
        NetworkUnreachable => "network is unreachable".into(),
        _ => {
            let s = e.to_string();
            let s = s.split(" (os error").next().unwrap_or(&s).to_string();
            let mut c = s.chars();
            match c.next() {
                Some(f) => f.to_lowercase().chain(c).collect(),
                None => s,
            }
        }
    }
}

async fn dial(host: &str, port: u16) -> Result<TcpStream, String> {
    let addr = join_host_port(host, port);
    let s = TcpStream::connect((host.to_string(), port))
        .await
        .map_err(|e| format!("dial tcp {addr}: connect: {}", go_io_error(&e)))?;
    let _ = s.set_nodelay(true);
    Ok(s)
}

/// `tcpSocket`: connect within `timeout`.
pub async fn tcp_probe(host: &str, port: u16, timeout: Duration) -> Outcome {
    match tokio::time::timeout(timeout, dial(host, port)).await {
        Ok(Ok(_)) => Outcome::Success,
        Ok(Err(e)) => Outcome::Failure(e),
        Err(_) => Outcome::Failure(format!(
            "dial tcp {}: i/o timeout",
            join_host_port(host, port)
        )),
    }
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

fn insecure_tls(h2: bool) -> Arc<ClientConfig> {
    static HTTP1: OnceLock<Arc<ClientConfig>> = OnceLock::new();
    static H2: OnceLock<Arc<ClientConfig>> = OnceLock::new();
    let cell = if h2 { &H2 } else { &HTTP1 };
    cell.get_or_init(|| {
        let provider = component_base::tls::provider();
        let mut config = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .expect("the ring provider supports the default protocol versions")
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(
                component_base::tls::SkipServerVerification(provider),
            ))
            .with_no_client_auth();
        if h2 {
            config.alpn_protocols = vec![b"h2".to_vec()];
        }
        Arc::new(config)
    })
    .clone()
}

async fn connect(host: &str, port: u16, https: bool, h2: bool) -> Result<Box<dyn Io>, String> {
    let tcp = dial(host, port).await?;
    if !https {
        return Ok(Box::new(tcp));
    }
    let name = ServerName::try_from(host.to_string()).map_err(|e| e.to_string())?;
    let tls = tokio_rustls::TlsConnector::from(insecure_tls(h2))
        .connect(name, tcp)
        .await
        .map_err(|e| format!("remote error: tls: {e}"))?;
    Ok(Box::new(tls))
}

/// Poll `work` while `conn` (the connection future) drives the socket; if the connection ends
/// first, `work` still gets to finish from what was buffered.
async fn drive<T>(conn: impl Future, work: impl Future<Output = T>) -> T {
    tokio::pin!(conn);
    tokio::pin!(work);
    tokio::select! {
        r = &mut work => r,
        _ = &mut conn => work.await,
    }
}

/// An HTTP GET as a probe or hook makes it.
#[derive(Clone, Debug)]
pub struct HttpGet {
    pub https: bool,
    pub host: String,
    pub port: u16,
    /// Path and query, starting with `/`.
    pub path: String,
    /// Extra headers (`httpHeaders`); `Host`, `User-Agent` and `Accept` here override ours.
    pub headers: Vec<(String, String)>,
}

impl HttpGet {
    pub fn url(&self) -> String {
        format!(
            "{}://{}{}",
            if self.https { "https" } else { "http" },
            join_host_port(&self.host, self.port),
            self.path
        )
    }
}

/// Upstream's probe path: empty → `/`, otherwise a leading `/`.
pub fn normalize_path(p: Option<&str>) -> String {
    match p.unwrap_or_default() {
        "" => "/".into(),
        p if p.starts_with('/') => p.into(),
        p => format!("/{p}"),
    }
}

fn build_get(req: &HttpGet) -> Result<http::Request<Empty<Bytes>>, http::Error> {
    let mut b = http::Request::get(req.path.as_str());
    let has = |n: &str| req.headers.iter().any(|(k, _)| k.eq_ignore_ascii_case(n));
    if !has("host") {
        b = b.header(http::header::HOST, join_host_port(&req.host, req.port));
    }
    if !has("user-agent") {
        b = b.header(http::header::USER_AGENT, USER_AGENT);
    }
    if !has("accept") {
        b = b.header(http::header::ACCEPT, "*/*");
    }
    for (k, v) in &req.headers {
        // An explicitly empty Accept removes it, as upstream.
        if k.eq_ignore_ascii_case("accept") && v.is_empty() {
            continue;
        }
        b = b.header(k.as_str(), v.as_str());
    }
    b.header(http::header::CONNECTION, "close")
        .body(Empty::<Bytes>::new())
}

/// One request; the status code and the `Location` header.
async fn get_once(req: &HttpGet) -> Result<(u16, Option<String>), String> {
    let url = req.url();
    let io = connect(&req.host, req.port, req.https, false)
        .await
        .map_err(|e| format!("Get {url:?}: {e}"))?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(io))
            .await
            .map_err(|e| format!("Get {url:?}: {e}"))?;
    let request = build_get(req).map_err(|e| format!("Get {url:?}: {e}"))?;
    let resp = drive(conn, sender.send_request(request))
        .await
        .map_err(|e| format!("Get {url:?}: {e}"))?;
    let location = resp
        .headers()
        .get(http::header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    Ok((resp.status().as_u16(), location))
}

/// The request a redirect to `location` makes: `None` when it leaves the host (upstream does
/// not follow those).
fn follow_redirect(req: &HttpGet, location: &str) -> Option<HttpGet> {
    let mut next = req.clone();
    let absolute = location.contains("://");
    if let Some(uri) = absolute
        .then(|| location.parse::<http::Uri>().ok())
        .flatten()
    {
        if let Some(host) = uri.host() {
            let host = host.trim_start_matches('[').trim_end_matches(']');
            if host != req.host {
                return None;
            }
            next.https = uri.scheme_str() == Some("https");
            next.port = uri.port_u16().unwrap_or(if next.https { 443 } else { 80 });
            next.path = uri
                .path_and_query()
                .map_or("/".into(), |p| p.as_str().to_string());
            return Some(next);
        }
    }
    next.path = if location.starts_with('/') {
        location.to_string()
    } else {
        let dir = req.path.rsplit_once('/').map_or("", |(d, _)| d);
        format!("{dir}/{location}")
    };
    Some(next)
}

/// `httpGet` as a probe: 2xx and 3xx succeed; redirects on the same host are followed (at
/// most 10), redirects elsewhere end the probe successfully, as upstream. No timeout here.
pub async fn http_probe(mut req: HttpGet) -> Outcome {
    let first_url = req.url();
    for _ in 0..=10 {
        let (code, location) = match get_once(&req).await {
            Ok(r) => r,
            Err(e) => return Outcome::Failure(e),
        };
        if (300..400).contains(&code) {
            if let Some(next) = location.as_deref().and_then(|l| follow_redirect(&req, l)) {
                req = next;
                continue;
            }
            return Outcome::Success;
        }
        return if (200..400).contains(&code) {
            Outcome::Success
        } else {
            Outcome::Failure(format!("HTTP probe failed with statuscode: {code}"))
        };
    }
    Outcome::Failure(format!("Get {first_url:?}: stopped after 10 redirects"))
}

/// `httpGet` as a lifecycle hook: only transport errors fail (upstream ignores the status).
pub async fn http_hook(req: HttpGet) -> Result<(), String> {
    get_once(&req).await.map(|_| ())
}

const GRPC_CODES: [&str; 17] = [
    "OK",
    "Canceled",
    "Unknown",
    "InvalidArgument",
    "DeadlineExceeded",
    "NotFound",
    "AlreadyExists",
    "PermissionDenied",
    "ResourceExhausted",
    "FailedPrecondition",
    "Aborted",
    "OutOfRange",
    "Unimplemented",
    "Internal",
    "Unavailable",
    "DataLoss",
    "Unauthenticated",
];

/// `HealthCheckRequest{service}` in a gRPC length-prefixed frame.
pub fn health_request_frame(service: &str) -> Bytes {
    let mut msg = Vec::new();
    if !service.is_empty() {
        msg.push(0x0a); // field 1, length-delimited
        let mut n = service.len();
        while n >= 0x80 {
            msg.push((n as u8) | 0x80);
            n >>= 7;
        }
        msg.push(n as u8);
        msg.extend_from_slice(service.as_bytes());
    }
    let mut frame = Vec::with_capacity(5 + msg.len());
    frame.push(0);
    frame.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    frame.extend_from_slice(&msg);
    Bytes::from(frame)
}

/// The `status` (field 1, varint) of a framed `HealthCheckResponse`; 0 (UNKNOWN) if absent.
pub fn health_response_status(mut body: &[u8]) -> Result<u64, String> {
    if body.len() < 5 {
        return Err("short gRPC response".into());
    }
    if body[0] != 0 {
        return Err("compressed gRPC response".into());
    }
    let len = u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize;
    body.advance(5);
    let mut msg = body.get(..len).ok_or("truncated gRPC response")?;
    let varint = |m: &mut &[u8]| -> Result<u64, String> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = *m.first().ok_or("truncated varint")?;
            m.advance(1);
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err("bad varint".into())
    };
    let mut status = 0;
    while !msg.is_empty() {
        let key = varint(&mut msg)?;
        match (key >> 3, key & 7) {
            (1, 0) => status = varint(&mut msg)?,
            (_, 0) => {
                varint(&mut msg)?;
            }
            (_, 2) => {
                let n = varint(&mut msg)? as usize;
                if msg.len() < n {
                    return Err("truncated field".into());
                }
                msg.advance(n);
            }
            (_, 1) if msg.len() >= 8 => msg.advance(8),
            (_, 5) if msg.len() >= 4 => msg.advance(4),
            _ => return Err("malformed HealthCheckResponse".into()),
        }
    }
    Ok(status)
}

fn serving_status_name(s: u64) -> String {
    match s {
        0 => "UNKNOWN".into(),
        1 => "SERVING".into(),
        2 => "NOT_SERVING".into(),
        3 => "SERVICE_UNKNOWN".into(),
        n => n.to_string(),
    }
}

/// `grpc`: `grpc.health.v1.Health/Check` over h2c (or TLS without verification, mode `TLS`);
/// SERVING succeeds.
pub async fn grpc_probe(
    host: &str,
    port: u16,
    service: &str,
    tls: bool,
    timeout: Duration,
) -> Outcome {
    let addr = join_host_port(host, port);
    let secs = timeout.as_secs();
    let io = match tokio::time::timeout(timeout, connect(host, port, tls, true)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            return Outcome::Failure(format!(
                "timeout: failed to connect service {addr:?} within {secs}s: {e}"
            ))
        }
        Err(_) => {
            return Outcome::Failure(format!(
            "timeout: failed to connect service {addr:?} within {secs}s: context deadline exceeded"
        ))
        }
    };
    let call = async {
        let (mut sender, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(io))
                .await
                .map_err(|e| format!("error: health rpc probe failed: {e}"))?;
        let scheme = if tls { "https" } else { "http" };
        let req = http::Request::post(format!("{scheme}://{addr}/grpc.health.v1.Health/Check"))
            .header(http::header::CONTENT_TYPE, "application/grpc")
            .header(http::header::TE, "trailers")
            .header(http::header::USER_AGENT, USER_AGENT)
            .header("grpc-timeout", format!("{}m", timeout.as_millis().max(1)))
            .body(Full::new(health_request_frame(service)))
            .map_err(|e| e.to_string())?;
        // The connection ends once the request handle and the stream are dropped.
        tokio::spawn(conn);
        let fut = async move {
            let resp = sender
                .send_request(req)
                .await
                .map_err(|e| format!("error: health rpc probe failed: {e}"))?;
            let (parts, body) = resp.into_parts();
            let collected = body
                .collect()
                .await
                .map_err(|e| format!("error: health rpc probe failed: {e}"))?;
            let trailers = collected.trailers().cloned();
            let body = collected.to_bytes();
            let header = |n: &'static str| {
                trailers
                    .as_ref()
                    .and_then(|t| t.get(n))
                    .or_else(|| parts.headers.get(n))
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string)
            };
            let code: usize = header("grpc-status")
                .and_then(|s| s.parse().ok())
                .unwrap_or(if parts.status.is_success() { 0 } else { 2 });
            Ok::<_, String>((code, header("grpc-message").unwrap_or_default(), body))
        };
        fut.await
    };
    let (code, message, body) = match tokio::time::timeout(timeout, call).await {
        Err(_) => {
            return Outcome::Failure(format!(
                "timeout: health rpc did not complete within {secs}s"
            ))
        }
        Ok(Err(e)) => return Outcome::Failure(e),
        Ok(Ok(r)) => r,
    };
    match code {
        0 => match health_response_status(&body) {
            Ok(1) => Outcome::Success,
            Ok(s) => Outcome::Failure(format!(
                "service unhealthy (responded with {:?})",
                serving_status_name(s)
            )),
            Err(e) => Outcome::Failure(format!("error: health rpc probe failed: {e}")),
        },
        12 => Outcome::Failure(format!(
            "this server does not implement the grpc health protocol (grpc.health.v1.Health): {message}"
        )),
        4 => Outcome::Failure(format!(
            "timeout: health rpc did not complete within {secs}s"
        )),
        c => Outcome::Failure(format!(
            "error: health rpc probe failed: rpc error: code = {} desc = {message}",
            GRPC_CODES.get(c).copied().unwrap_or("Unknown")
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirects_follow_on_the_same_host_only() {
        let req = HttpGet {
            https: false,
            host: "10.0.0.1".into(),
            port: 8080,
            path: "/a/b?x".into(),
            headers: vec![],
        };
        let p = |l: &str| follow_redirect(&req, l).map(|r| r.url());
        assert_eq!(p("/c").as_deref(), Some("http://10.0.0.1:8080/c"));
        assert_eq!(p("c").as_deref(), Some("http://10.0.0.1:8080/a/c"));
        assert_eq!(
            p("https://10.0.0.1:8443/d").as_deref(),
            Some("https://10.0.0.1:8443/d")
        );
        assert_eq!(
            p("http://10.0.0.1/").as_deref(),
            Some("http://10.0.0.1:80/")
        );
        assert_eq!(p("http://elsewhere/"), None);
    }

    #[test]
    fn go_wording_for_socket_errors() {
        let e = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert_eq!(go_io_error(&e), "connection refused");
        assert_eq!(join_host_port("::1", 80), "[::1]:80");
    }
}
