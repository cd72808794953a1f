//! `/exec` and `/attach`: resolve the running container, get the runtime's one-shot streaming
//! URL (CRI Exec/Attach), then either splice the client's upgrade to it (SPDY, WebSocket v4 and
//! older: containerd speaks them) or terminate WebSocket v5 here and drive the runtime as a
//! SPDY v4 client. See the module docs of [`super`].

use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderMap, Request, Response, StatusCode};
use bytes::{BufMut, Bytes, BytesMut};
use futures::{SinkExt, StreamExt};
use hyper_util::rt::TokioIo;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;

use super::client::{self, ExecStreams, StreamFlags};
use super::spdy::StreamReader;
use super::websocket::{self, Ws};
use super::{Kind, SessionGuard, Streaming, Target};
use crate::cri::v1;

/// SPDY exec protocols containerd's streaming server negotiates.
const RUNTIME_SPDY: &[&str] = &[
    "v4.channel.k8s.io",
    "v3.channel.k8s.io",
    "v2.channel.k8s.io",
    "channel.k8s.io",
];
/// WebSocket exec protocols containerd's streaming server accepts ("" = none offered).
const RUNTIME_WS: &[&str] = &[
    websocket::V4_CHANNEL,
    websocket::V4_BASE64_CHANNEL,
    websocket::CHANNEL,
    websocket::BASE64_CHANNEL,
];

/// The remotecommand options in the query (`input`/`output`/`error`/`tty` = `1`, repeated
/// `command`), as upstream's `remotecommand.NewOptions` reads them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct Options {
    pub flags: StreamFlags,
    pub command: Vec<String>,
}

impl Options {
    pub fn from_query(q: &[(String, String)]) -> Result<Self, String> {
        let on = |keys: &[&str]| {
            q.iter()
                .any(|(k, v)| keys.contains(&k.as_str()) && (v == "1" || v == "true"))
        };
        let mut flags = StreamFlags {
            stdin: on(&["input", "stdin"]),
            stdout: on(&["output", "stdout"]),
            stderr: on(&["error", "stderr"]),
            tty: on(&["tty"]),
        };
        // Upstream: a TTY merges stderr into stdout.
        if flags.tty {
            flags.stderr = false;
        }
        if !flags.stdin && !flags.stdout && !flags.stderr {
            return Err("you must specify at least 1 of stdin, stdout, stderr".into());
        }
        let command = q
            .iter()
            .filter(|(k, _)| k == "command")
            .map(|(_, v)| v.clone())
            .collect();
        Ok(Self { flags, command })
    }
}

/// How the client's upgrade is served.
#[derive(Debug, PartialEq, Eq)]
enum Mode {
    /// WebSocket v5: terminated here.
    V5,
    /// Anything containerd speaks: spliced to its streaming server.
    Splice,
}

/// The mode for the client's upgrade, or the refusal.
fn negotiate(h: &HeaderMap) -> Result<Mode, super::Refused> {
    if websocket::is_websocket(h) {
        let offered = websocket::offered_protocols(h);
        if offered.is_empty() {
            return Ok(Mode::Splice);
        }
        for p in &offered {
            if p == websocket::V5_CHANNEL {
                return Ok(Mode::V5);
            }
            if RUNTIME_WS.contains(&p.as_str()) {
                return Ok(Mode::Splice);
            }
        }
        return Err(Box::new(websocket::forbidden()));
    }
    super::spdy_handshake(h, RUNTIME_SPDY).map(|_| Mode::Splice)
}

pub(super) async fn serve(
    s: &Streaming,
    kind: Kind,
    target: Target,
    mut req: Request<Body>,
) -> Response<Body> {
    let opts = match Options::from_query(&super::query_pairs(&req)) {
        Ok(o) => o,
        Err(m) => return super::text(StatusCode::BAD_REQUEST, m),
    };
    if kind == Kind::Exec && opts.command.is_empty() {
        return super::text(StatusCode::BAD_REQUEST, "you must specify a command");
    }
    let mode = match negotiate(req.headers()) {
        Ok(m) => m,
        Err(r) => return *r,
    };
    if mode == Mode::V5 {
        // Refuse a malformed handshake before any runtime work.
        if let Err(r) = websocket::accept(req.headers(), None) {
            return *r;
        }
    }
    let pod = match s.find_pod(&target) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    let id = match s.running_container(&pod, &target.container).await {
        Ok(id) => id,
        Err(r) => return *r,
    };
    let f = opts.flags;
    let url = match kind {
        Kind::Exec => {
            s.runtime
                .exec(v1::ExecRequest {
                    container_id: id,
                    cmd: opts.command,
                    tty: f.tty,
                    stdin: f.stdin,
                    stdout: f.stdout,
                    stderr: f.stderr,
                })
                .await
        }
        Kind::Attach => {
            s.runtime
                .attach(v1::AttachRequest {
                    container_id: id,
                    stdin: f.stdin,
                    tty: f.tty,
                    stdout: f.stdout,
                    stderr: f.stderr,
                })
                .await
        }
    };
    let url = match url {
        Ok(u) => u,
        Err(e) => return super::cri_error(&e),
    };
    tracing::debug!(pod = %format!("{}/{}", target.namespace, target.pod), container = %target.container, ?kind, ?mode, "streaming");
    match mode {
        Mode::Splice => splice(s, &url, &mut req).await,
        Mode::V5 => v5(s, &url, f, &mut req).await,
    }
}

/// The headers of the client's upgrade that the runtime must see.
fn upgrade_headers(h: &HeaderMap) -> HeaderMap {
    let mut out = HeaderMap::new();
    for (k, v) in h {
        let n = k.as_str();
        if n == "connection"
            || n == "upgrade"
            || n.starts_with("sec-websocket-")
            || n == super::STREAM_PROTOCOL_HEADER.as_str()
        {
            out.append(k.clone(), v.clone());
        }
    }
    out
}

/// Forward the upgrade to the runtime's URL; on 101 join the two connections.
async fn splice(s: &Streaming, url: &str, req: &mut Request<Body>) -> Response<Body> {
    let client_upgrade = hyper::upgrade::on(&mut *req);
    let headers = upgrade_headers(req.headers());
    let method = req.method().clone();
    let mut resp = match client::upgrade_request(url, method, headers, &s.tasks).await {
        Ok(r) => r,
        Err(e) => return super::text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        let (parts, body) = resp.into_parts();
        let body = client::read_body(body, 64 * 1024).await;
        let mut r = super::text(parts.status, body);
        if let Some(ct) = parts.headers.get(header::CONTENT_TYPE) {
            r.headers_mut().insert(header::CONTENT_TYPE, ct.clone());
        }
        return r;
    }
    let backend_upgrade = hyper::upgrade::on(&mut resp);
    let guard = SessionGuard::new(&s.sessions);
    let shutdown = s.shutdown.clone();
    s.tasks.spawn(async move {
        let _guard = guard;
        let (client, backend) = match tokio::try_join!(client_upgrade, backend_upgrade) {
            Ok(x) => x,
            Err(e) => {
                tracing::debug!(error = %e, "streaming upgrade failed");
                return;
            }
        };
        let (mut a, mut b) = (TokioIo::new(client), TokioIo::new(backend));
        tokio::select! {
            r = tokio::io::copy_bidirectional(&mut a, &mut b) => {
                tracing::trace!(result = ?r, "spliced stream ended");
            }
            _ = shutdown.cancelled() => {}
        }
    });
    let mut r = Response::new(Body::empty());
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    *r.headers_mut() = resp.headers().clone();
    r
}

/// WebSocket v5: open the streams at the runtime first (so its errors reach the client as an
/// HTTP answer), then accept the WebSocket and relay.
async fn v5(
    s: &Streaming,
    url: &str,
    flags: StreamFlags,
    req: &mut Request<Body>,
) -> Response<Body> {
    let backend = match client::exec(url, flags, &s.tasks).await {
        Ok(b) => b,
        Err(e) => return super::text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    let resp = match websocket::accept(req.headers(), Some(websocket::V5_CHANNEL)) {
        Ok(r) => r,
        Err(r) => return *r,
    };
    let on = hyper::upgrade::on(&mut *req);
    let guard = SessionGuard::new(&s.sessions);
    let shutdown = s.shutdown.clone();
    s.tasks.spawn(async move {
        let _guard = guard;
        match websocket::server(on).await {
            Ok(ws) => relay_v5(ws, backend, shutdown).await,
            Err(e) => tracing::debug!(error = %e, "WebSocket upgrade failed"),
        }
    });
    resp
}

fn channel_frame(ch: u8, data: &[u8]) -> Message {
    let mut b = BytesMut::with_capacity(data.len() + 1);
    b.put_u8(ch);
    b.put_slice(data);
    Message::Binary(b.freeze())
}

async fn recv_opt(r: &mut Option<StreamReader>) -> Option<Bytes> {
    match r {
        Some(r) => r.recv().await,
        None => std::future::pending().await,
    }
}

/// Relay v5 channels ⇄ the runtime's SPDY streams until the command ends (status on channel 3,
/// then a normal close) or the client goes away (the runtime connection is dropped).
async fn relay_v5(ws: Ws, backend: ExecStreams, shutdown: tokio_util::sync::CancellationToken) {
    let ExecStreams {
        session,
        error,
        stdin,
        stdout,
        stderr,
        resize,
    } = backend;
    let (mut sink, mut source) = ws.split();
    let input = async {
        let mut stdin = stdin.map(|s| s.split().1);
        let resize = resize.map(|s| s.split().1);
        while let Some(msg) = source.next().await {
            let b = match msg {
                Ok(Message::Binary(b)) => b,
                Ok(Message::Close(_)) | Err(_) => break,
                Ok(_) => continue,
            };
            match (b.first(), &stdin) {
                (Some(0), Some(w)) if b.len() > 1 && w.send(&b[1..]).await.is_err() => break,
                (Some(4), _) if b.len() > 1 => {
                    if let Some(w) = &resize {
                        let _ = w.send(&b[1..]).await;
                    }
                }
                // v5's close signal; [255, 0] closes stdin.
                (Some(255), _) if b.get(1) == Some(&0) => {
                    if let Some(w) = stdin.take() {
                        let _ = w.close().await;
                    }
                }
                _ => {}
            }
        }
    };
    let output = async {
        let mut out = stdout.map(|s| s.split().0);
        let mut err = stderr.map(|s| s.split().0);
        let (mut status_rd, _status_wr) = error.split();
        let mut status = Vec::new();
        let mut status_open = true;
        loop {
            tokio::select! {
                d = recv_opt(&mut out), if out.is_some() => match d {
                    Some(b) => if sink.send(channel_frame(1, &b)).await.is_err() { return },
                    None => out = None,
                },
                d = recv_opt(&mut err), if err.is_some() => match d {
                    Some(b) => if sink.send(channel_frame(2, &b)).await.is_err() { return },
                    None => err = None,
                },
                d = status_rd.recv(), if status_open => match d {
                    Some(b) if status.len() < 64 * 1024 => status.extend_from_slice(&b),
                    Some(_) => {}
                    None => status_open = false,
                },
                else => break,
            }
        }
        if !status.is_empty() {
            let _ = sink.send(channel_frame(3, &status)).await;
        }
        let _ = sink
            .send(Message::Close(Some(CloseFrame {
                code: CloseCode::Normal,
                reason: "".into(),
            })))
            .await;
    };
    tokio::pin!(input);
    tokio::select! {
        _ = output => {
            // Give the client a moment to answer the close frame.
            let _ = tokio::time::timeout(Duration::from_secs(1), &mut input).await;
        }
        _ = &mut input => {}
        _ = shutdown.cancelled() => {}
    }
    session.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::{HeaderName, HeaderValue};

    fn q(s: &str) -> Vec<(String, String)> {
        s.split('&')
            .filter(|p| !p.is_empty())
            .map(|p| {
                let (k, v) = p.split_once('=').unwrap_or((p, ""));
                (k.to_string(), v.to_string())
            })
            .collect()
    }

    #[test]
    fn options_follow_remotecommand() {
        let o = Options::from_query(&q("command=sh&command=-c&command=exit+3&error=1&output=1"))
            .unwrap();
        assert_eq!(o.command, ["sh", "-c", "exit+3"]);
        assert_eq!(
            o.flags,
            StreamFlags {
                stdout: true,
                stderr: true,
                ..Default::default()
            }
        );
        let o = Options::from_query(&q("input=1&output=1&error=1&tty=1")).unwrap();
        assert!(o.flags.tty && o.flags.stdin && !o.flags.stderr, "{o:?}");
        assert_eq!(
            Options::from_query(&q("command=ls")).unwrap_err(),
            "you must specify at least 1 of stdin, stdout, stderr"
        );
    }

    #[test]
    fn negotiation_terminates_v5_and_splices_the_rest() {
        let h = |pairs: &[(&str, &str)]| {
            let mut h = HeaderMap::new();
            for (k, v) in pairs {
                h.append(
                    HeaderName::from_bytes(k.as_bytes()).unwrap(),
                    HeaderValue::from_str(v).unwrap(),
                );
            }
            h
        };
        let ws = |p: &str| {
            h(&[
                ("connection", "Upgrade"),
                ("upgrade", "websocket"),
                ("sec-websocket-protocol", p),
            ])
        };
        assert_eq!(negotiate(&ws("v5.channel.k8s.io")).unwrap(), Mode::V5);
        assert_eq!(
            negotiate(&ws("v4.channel.k8s.io, v5.channel.k8s.io")).unwrap(),
            Mode::Splice
        );
        assert_eq!(
            negotiate(&h(&[("connection", "Upgrade"), ("upgrade", "websocket")])).unwrap(),
            Mode::Splice
        );
        assert_eq!(
            negotiate(&ws("v9.channel.k8s.io")).unwrap_err().status(),
            StatusCode::FORBIDDEN
        );
        let spdy = h(&[
            ("connection", "Upgrade"),
            ("upgrade", "SPDY/3.1"),
            ("x-stream-protocol-version", "v5.channel.k8s.io"),
            ("x-stream-protocol-version", "v4.channel.k8s.io"),
        ]);
        assert_eq!(negotiate(&spdy).unwrap(), Mode::Splice);
        let only_v5 = h(&[
            ("connection", "Upgrade"),
            ("upgrade", "SPDY/3.1"),
            ("x-stream-protocol-version", "v5.channel.k8s.io"),
        ]);
        assert_eq!(
            negotiate(&only_v5).unwrap_err().status(),
            StatusCode::FORBIDDEN
        );
        assert_eq!(
            negotiate(&HeaderMap::new()).unwrap_err().status(),
            StatusCode::BAD_REQUEST
        );
    }
}
