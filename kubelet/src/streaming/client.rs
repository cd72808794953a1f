//! The client side towards the runtime's streaming server (containerd's `http://127.0.0.1:<port>/
//! exec|attach|portforward/<token>` URLs from CRI Exec, Attach and PortForward): an upgrade
//! request over a fresh TCP connection, and the SPDY/3.1 exec and port-forward clients built on
//! it. The kubelet uses them to translate what containerd does not speak; the benchmark uses
//! them to measure containerd directly.

use std::io;
use std::time::Duration;

use axum::http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Uri};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::spdy::{self, Session, Stream};
use super::Tasks;

/// How long the runtime may take to accept the connection, answer the upgrade and reply to
/// every stream.
const TIMEOUT: Duration = Duration::from_secs(30);

/// A failed request to the runtime's streaming server.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("invalid streaming URL {0:?}")]
    Url(String),
    #[error("error dialing the runtime's streaming server {addr}: {source}")]
    Dial { addr: String, source: io::Error },
    #[error("{0}")]
    Http(String),
    /// The runtime answered the upgrade with something else than 101.
    #[error("unable to upgrade connection: {body}")]
    Status { code: StatusCode, body: String },
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// Send `method url` with `headers` (which carry the upgrade) over a new connection and return
/// the answer; its `hyper::upgrade::on` yields the upgraded connection after a 101.
pub async fn upgrade_request(
    url: &str,
    method: Method,
    headers: HeaderMap,
    tasks: &Tasks,
) -> Result<Response<Incoming>, ClientError> {
    let uri: Uri = url.parse().map_err(|_| ClientError::Url(url.into()))?;
    if uri.scheme_str() != Some("http") {
        return Err(ClientError::Url(url.into()));
    }
    let authority = uri
        .authority()
        .ok_or_else(|| ClientError::Url(url.into()))?
        .clone();
    let addr = format!(
        "{}:{}",
        authority.host(),
        authority.port_u16().unwrap_or(80)
    );
    let tcp = tokio::time::timeout(TIMEOUT, TcpStream::connect(&addr))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "timed out"))
        .and_then(|r| r)
        .map_err(|source| ClientError::Dial {
            addr: addr.clone(),
            source,
        })?;
    let _ = tcp.set_nodelay(true);
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .map_err(|e| ClientError::Http(e.to_string()))?;
    tasks.spawn(async move {
        let _ = conn.with_upgrades().await;
    });
    let mut req = Request::builder()
        .method(method)
        .uri(uri.path_and_query().map(|p| p.as_str()).unwrap_or("/"))
        .body(Empty::<Bytes>::new())
        .expect("valid request");
    *req.headers_mut() = headers;
    req.headers_mut().insert(
        header::HOST,
        HeaderValue::from_str(authority.as_str()).map_err(|_| ClientError::Url(url.into()))?,
    );
    tokio::time::timeout(TIMEOUT, send.send_request(req))
        .await
        .map_err(|_| ClientError::Http("timed out waiting for the upgrade".into()))?
        .map_err(|e| ClientError::Http(e.to_string()))
}

/// The start of a non-101 answer's body, for error messages.
pub async fn read_body(body: Incoming, limit: usize) -> String {
    let mut out = Vec::new();
    let mut body = body;
    while out.len() < limit {
        match tokio::time::timeout(Duration::from_secs(5), body.frame()).await {
            Ok(Some(Ok(f))) => {
                if let Some(d) = f.data_ref() {
                    out.extend_from_slice(&d[..d.len().min(limit - out.len())]);
                }
            }
            _ => break,
        }
    }
    String::from_utf8_lossy(&out).trim().to_string()
}

/// Upgrade to SPDY/3.1 offering `protocols` (`X-Stream-Protocol-Version`); the client session
/// and the protocol the server chose.
pub async fn connect_spdy(
    url: &str,
    protocols: &[&str],
    tasks: &Tasks,
) -> Result<(Session, String), ClientError> {
    let mut h = HeaderMap::new();
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("SPDY/3.1"));
    for p in protocols {
        h.append(
            super::STREAM_PROTOCOL_HEADER,
            HeaderValue::from_str(p).map_err(|_| ClientError::Url((*p).into()))?,
        );
    }
    let mut resp = upgrade_request(url, Method::POST, h, tasks).await?;
    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        let code = resp.status();
        let body = read_body(resp.into_body(), 4096).await;
        return Err(ClientError::Status { code, body });
    }
    let chosen = resp
        .headers()
        .get(super::STREAM_PROTOCOL_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let io = hyper::upgrade::on(&mut resp)
        .await
        .map_err(|e| ClientError::Http(e.to_string()))?;
    Ok((Session::client(TokioIo::new(io), tasks), chosen))
}

/// Which standard streams an exec or attach carries.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StreamFlags {
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
}

/// The streams of an exec or attach through the runtime (remotecommand v4 over SPDY).
pub struct ExecStreams {
    pub session: Session,
    /// Carries the final `Status` JSON.
    pub error: Stream,
    pub stdin: Option<Stream>,
    pub stdout: Option<Stream>,
    pub stderr: Option<Stream>,
    /// JSON `{"Width":..,"Height":..}` objects (TTY only).
    pub resize: Option<Stream>,
}

fn stream_type(t: &str) -> spdy::Headers {
    vec![("streamtype".into(), t.into())]
}

/// Open an exec or attach at the runtime's streaming `url`: the streams client-go's v4
/// protocol opens (error, stdin, stdout, stderr — none with a TTY —, resize with a TTY), each
/// acknowledged.
pub async fn exec(
    url: &str,
    flags: StreamFlags,
    tasks: &Tasks,
) -> Result<ExecStreams, ClientError> {
    let (session, _) = connect_spdy(url, &["v4.channel.k8s.io"], tasks).await?;
    let open = |t: &'static str, want: bool| {
        let s = &session;
        async move {
            if want {
                s.open(stream_type(t), false).await.map(Some)
            } else {
                Ok(None)
            }
        }
    };
    let mut error = open("error", true).await?.expect("wanted");
    let mut stdin = open("stdin", flags.stdin).await?;
    let mut stdout = open("stdout", flags.stdout).await?;
    let mut stderr = open("stderr", flags.stderr && !flags.tty).await?;
    let mut resize = open("resize", flags.tty).await?;
    let replies = async {
        error.wait_reply().await?;
        for s in [&mut stdin, &mut stdout, &mut stderr, &mut resize]
            .into_iter()
            .flatten()
        {
            s.wait_reply().await?;
        }
        Ok::<_, io::Error>(())
    };
    tokio::time::timeout(TIMEOUT, replies)
        .await
        .map_err(|_| ClientError::Http("timed out waiting for stream replies".into()))??;
    Ok(ExecStreams {
        session,
        error,
        stdin,
        stdout,
        stderr,
        resize,
    })
}

/// One forwarded connection through the runtime's port-forward URL (SPDY
/// `portforward.k8s.io`): the data stream and the error stream, as kubectl opens them.
pub struct PortForwardStreams {
    pub data: Stream,
    pub error: Stream,
}

/// Open a port-forward session at `url` (reuse it for many connections with
/// [`forward_port`]).
pub async fn port_forward(url: &str, tasks: &Tasks) -> Result<Session, ClientError> {
    Ok(connect_spdy(url, &["portforward.k8s.io"], tasks).await?.0)
}

/// Open the data and error streams for connection `request_id` to `port`. The error stream is
/// half-closed at once, as kubectl does.
pub async fn forward_port(
    session: &Session,
    port: u16,
    request_id: u64,
) -> io::Result<PortForwardStreams> {
    let headers = |t: &str| {
        vec![
            ("streamtype".to_string(), t.to_string()),
            ("port".to_string(), port.to_string()),
            ("requestid".to_string(), request_id.to_string()),
        ]
    };
    let mut error = session.open(headers("error"), false).await?;
    error.writer.close().await?;
    let mut data = session.open(headers("data"), false).await?;
    tokio::time::timeout(TIMEOUT, async {
        error.wait_reply().await?;
        data.wait_reply().await
    })
    .await
    .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no stream reply"))??;
    Ok(PortForwardStreams { data, error })
}
