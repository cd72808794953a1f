//! `/portForward`: the kubelet forwards connections to the pod itself, dialling
//! `<podIP>:<port>` from the node (and, when that is refused, through the runtime's own
//! port-forward, which dials inside the pod's network namespace: ports bound to 127.0.0.1).
//!
//! Protocols: SPDY/3.1 `portforward.k8s.io` (an error and a data stream per forwarded
//! connection, paired by their `requestID` header), the same SPDY tunnelled in WebSocket binary
//! messages (`SPDY/3.1+portforward.k8s.io`), and WebSocket channels (`v4.channel.k8s.io` or
//! `portforward.k8s.io`: channels 2i and 2i+1 carry data and errors for the i-th `port` of the
//! query, each opened by the port number in two little-endian bytes).

use std::collections::HashMap;
use std::io;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, Response, StatusCode};
use bytes::{BufMut, Bytes, BytesMut};
use futures::{SinkExt, StreamExt};
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::Pod;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, Mutex, OnceCell};
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use super::client;
use super::spdy::{self, Session, Stream, StreamReader, StreamWriter};
use super::websocket::{self, Ws, WsIo};
use super::{SessionGuard, Streaming, Target, Tasks};
use crate::cri::Runtime;
use crate::pods::runtime_pod;

const PROTOCOL: &str = "portforward.k8s.io";
/// How long the first stream of a pair waits for its partner (upstream's
/// `streamCreationTimeout`).
const PAIR_TIMEOUT: Duration = Duration::from_secs(30);
const DIAL_TIMEOUT: Duration = Duration::from_secs(10);
const COPY_BUF: usize = 32 * 1024;

pub(super) async fn serve(s: &Streaming, target: Target, mut req: Request<Body>) -> Response<Body> {
    let pod = match s.find_pod(&target) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    let ports = match ports_from_query(&super::query_pairs(&req)) {
        Ok(p) => p,
        Err(m) => return super::text(StatusCode::BAD_REQUEST, m),
    };
    let fwd = Arc::new(Forwarder::new(&pod, s.runtime.clone(), s.tasks.clone()));
    let on = hyper::upgrade::on(&mut req);
    let guard = SessionGuard::new(&s.sessions);
    let (tasks, shutdown) = (s.tasks.clone(), s.shutdown.clone());
    if websocket::is_websocket(req.headers()) {
        let offered = websocket::offered_protocols(req.headers());
        let chosen = if offered.is_empty() {
            Some(String::new())
        } else {
            offered.into_iter().find(|p| {
                [
                    websocket::SPDY_PORT_FORWARD,
                    websocket::V4_CHANNEL,
                    PROTOCOL,
                ]
                .contains(&p.as_str())
            })
        };
        let Some(chosen) = chosen else {
            return websocket::forbidden();
        };
        let tunnel = chosen == websocket::SPDY_PORT_FORWARD;
        if !tunnel && ports.is_empty() {
            return super::text(
                StatusCode::BAD_REQUEST,
                "query parameter \"port\" is required",
            );
        }
        let resp = match websocket::accept(req.headers(), Some(&chosen)) {
            Ok(r) => r,
            Err(r) => return *r,
        };
        s.tasks.spawn(async move {
            let _guard = guard;
            let ws = match websocket::server(on).await {
                Ok(ws) => ws,
                Err(e) => return tracing::debug!(error = %e, "WebSocket upgrade failed"),
            };
            tokio::select! {
                _ = async {
                    if tunnel {
                        serve_spdy(Session::server(WsIo::new(ws), &tasks), fwd, &tasks).await
                    } else {
                        serve_channels(ws, fwd, ports, &tasks).await
                    }
                } => {}
                _ = shutdown.cancelled() => {}
            }
        });
        return resp;
    }
    let protocol = match super::spdy_handshake(req.headers(), &[PROTOCOL]) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    s.tasks.spawn(async move {
        let _guard = guard;
        let io = match on.await {
            Ok(io) => io,
            Err(e) => return tracing::debug!(error = %e, "SPDY upgrade failed"),
        };
        tokio::select! {
            _ = serve_spdy(Session::server(TokioIo::new(io), &tasks), fwd, &tasks) => {}
            _ = shutdown.cancelled() => {}
        }
    });
    super::spdy_switching(&protocol)
}

/// `port` query values, repeated or comma-separated.
fn ports_from_query(q: &[(String, String)]) -> Result<Vec<u16>, String> {
    q.iter()
        .filter(|(k, _)| k == "port" || k == "ports")
        .flat_map(|(_, v)| v.split(','))
        .map(|p| {
            p.trim()
                .parse::<u16>()
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| format!("invalid port {:?}", p.trim()))
        })
        .collect()
}

/// What one forwarded connection talks to.
enum Conn {
    Tcp(TcpStream),
    /// Through the runtime's port-forward: the bridged data and its error stream.
    Runtime {
        io: tokio::io::DuplexStream,
        error: StreamReader,
    },
}

/// Dials the pod's ports for one port-forward request.
struct Forwarder {
    runtime: Arc<dyn Runtime>,
    tasks: Tasks,
    pod_name: String,
    uid: String,
    status_ip: Option<IpAddr>,
    /// The ready sandbox's id and IP, looked up once when needed.
    sandbox: OnceCell<Option<(String, Option<IpAddr>)>>,
    /// The runtime's port-forward session, opened on the first loopback fallback.
    runtime_session: Mutex<Option<Session>>,
    next_request: std::sync::atomic::AtomicU64,
}

impl Forwarder {
    fn new(pod: &Pod, runtime: Arc<dyn Runtime>, tasks: Tasks) -> Self {
        Self {
            runtime,
            tasks,
            pod_name: format!(
                "{}_{}",
                pod.metadata.name.as_deref().unwrap_or_default(),
                pod.metadata.namespace.as_deref().unwrap_or("default")
            ),
            uid: pod.metadata.uid.clone().unwrap_or_default(),
            status_ip: pod
                .status
                .as_ref()
                .and_then(|s| s.pod_ip.as_deref())
                .and_then(|ip| ip.parse().ok()),
            sandbox: OnceCell::new(),
            runtime_session: Mutex::new(None),
            next_request: Default::default(),
        }
    }

    async fn sandbox(&self) -> Option<(String, Option<IpAddr>)> {
        self.sandbox
            .get_or_init(|| async {
                let rp = runtime_pod::get(self.runtime.as_ref(), &self.uid)
                    .await
                    .ok()?;
                let sb = rp.sandboxes.iter().find(|s| s.ready)?;
                Some((sb.id.clone(), sb.ip.as_deref().and_then(|i| i.parse().ok())))
            })
            .await
            .clone()
    }

    fn error(&self, port: u16, e: impl std::fmt::Display) -> String {
        format!(
            "error forwarding port {port} to pod {}, uid {}: {e}",
            self.pod_name, self.uid
        )
    }

    /// Connect to `port` in the pod.
    async fn connect(&self, port: u16) -> Result<Conn, String> {
        let ip = match self.status_ip {
            Some(ip) => ip,
            None => match self.sandbox().await.and_then(|s| s.1) {
                Some(ip) => ip,
                None => return Err(self.error(port, "pod has no IP address")),
            },
        };
        let dial = tokio::time::timeout(DIAL_TIMEOUT, TcpStream::connect((ip, port))).await;
        match dial {
            Ok(Ok(tcp)) => {
                let _ = tcp.set_nodelay(true);
                Ok(Conn::Tcp(tcp))
            }
            Ok(Err(e)) if e.kind() == io::ErrorKind::ConnectionRefused => {
                // Perhaps bound to the pod's loopback: the runtime dials inside its netns.
                let via = tokio::time::timeout(DIAL_TIMEOUT, self.via_runtime(port));
                match via.await.unwrap_or_else(|_| Err("timed out".into())) {
                    Ok(c) => Ok(c),
                    Err(e2) => {
                        tracing::debug!(port, error = %e2, "runtime port-forward fallback failed");
                        Err(self.error(port, format!("failed to connect to {ip}:{port}: {e}")))
                    }
                }
            }
            Ok(Err(e)) => Err(self.error(port, format!("failed to connect to {ip}:{port}: {e}"))),
            Err(_) => Err(self.error(port, format!("timed out connecting to {ip}:{port}"))),
        }
    }

    async fn via_runtime(&self, port: u16) -> Result<Conn, String> {
        let streams = {
            let mut slot = self.runtime_session.lock().await;
            if slot.as_ref().is_none_or(|s| s.is_closed()) {
                let (sandbox, _) = self.sandbox().await.ok_or("pod has no ready sandbox")?;
                let url = self
                    .runtime
                    .port_forward(sandbox, vec![port as i32])
                    .await
                    .map_err(|e| e.to_string())?;
                *slot = Some(
                    client::port_forward(&url, &self.tasks)
                        .await
                        .map_err(|e| e.to_string())?,
                );
            }
            let session = slot.as_ref().expect("set above");
            let id = self
                .next_request
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            client::forward_port(session, port, id)
                .await
                .map_err(|e| e.to_string())?
        };
        let (io, far) = tokio::io::duplex(COPY_BUF);
        let (data_rd, data_wr) = streams.data.split();
        let (error, _) = streams.error.split();
        self.tasks.spawn(async move {
            let (rd, wr) = tokio::io::split(far);
            pump(rd, wr, data_rd, data_wr, None).await;
        });
        Ok(Conn::Runtime { io, error })
    }
}

/// Copy between a connection and a SPDY data stream: the peer's FIN half-closes the
/// connection, the connection's EOF half-closes the stream (and then closes `error`); a reset
/// or a lost session stops both directions.
async fn pump<R, W>(
    mut rd: R,
    mut wr: W,
    mut data_rd: StreamReader,
    data_wr: StreamWriter,
    error: Option<StreamWriter>,
) where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let reset = data_wr.cancelled();
    let up = async {
        while let Some(b) = data_rd.recv().await {
            if wr.write_all(&b).await.is_err() {
                break;
            }
        }
        let _ = wr.shutdown().await;
    };
    let down = async {
        let mut buf = vec![0u8; COPY_BUF];
        loop {
            let n = tokio::select! {
                r = rd.read(&mut buf) => match r {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                },
                _ = reset.cancelled() => break,
            };
            if data_wr.send(&buf[..n]).await.is_err() {
                break;
            }
        }
        let _ = data_wr.close().await;
        // The pod side is done: end the error stream now, as the runtimes do. kubectl < 1.29
        // waits for it before closing its local connection (and so before half-closing).
        if let Some(e) = error {
            let _ = e.close().await;
        }
    };
    tokio::join!(up, down);
}

/// The two streams of one forwarded connection as they arrive.
#[derive(Default)]
struct Pair {
    error: Option<Stream>,
    data: Option<Stream>,
    since: Option<Instant>,
}

/// Upstream's pseudo request id for clients that send none: the error stream's id, or the
/// data stream's id minus 2.
fn request_id(s: &Stream) -> String {
    if let Some(id) = s.header("requestid") {
        return id.to_string();
    }
    match s.header("streamtype") {
        Some("data") => s.id().saturating_sub(2).to_string(),
        _ => s.id().to_string(),
    }
}

async fn serve_spdy(mut session: Session, fwd: Arc<Forwarder>, tasks: &Tasks) {
    let mut pending: HashMap<String, Pair> = HashMap::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        let stream = tokio::select! {
            s = session.accept() => match s {
                Some(s) => s,
                None => break,
            },
            _ = tick.tick() => {
                pending.retain(|_, p| p.since.is_some_and(|t| t.elapsed() < PAIR_TIMEOUT));
                continue;
            }
        };
        let port = stream.header("port").and_then(|p| p.parse::<u16>().ok());
        let kind = stream.header("streamtype").map(str::to_string);
        let (Some(port), Some(kind @ ("error" | "data"))) = (port, kind.as_deref()) else {
            let _ = stream.writer.reset(spdy::status::PROTOCOL_ERROR).await;
            continue;
        };
        if stream.reply().await.is_err() {
            break;
        }
        let id = request_id(&stream);
        let pair = pending.entry(id.clone()).or_default();
        pair.since.get_or_insert_with(Instant::now);
        let slot = if kind == "error" {
            &mut pair.error
        } else {
            &mut pair.data
        };
        if slot.replace(stream).is_some() {
            tracing::debug!(request = %id, "duplicate port-forward stream");
        }
        if pair.error.is_some() && pair.data.is_some() {
            let p = pending.remove(&id).expect("present");
            let fwd = fwd.clone();
            tasks.spawn(forward(
                fwd,
                port,
                p.error.expect("set"),
                p.data.expect("set"),
            ));
        }
    }
}

async fn forward(fwd: Arc<Forwarder>, port: u16, error: Stream, data: Stream) {
    // The client half-closes the error stream at once and never writes to it.
    let (_, error) = error.split();
    let (data_rd, data_wr) = data.split();
    match fwd.connect(port).await {
        Ok(Conn::Tcp(tcp)) => {
            let (rd, wr) = tcp.into_split();
            pump(rd, wr, data_rd, data_wr, Some(error)).await;
        }
        Ok(Conn::Runtime {
            io,
            error: mut runtime_error,
        }) => {
            let (rd, wr) = tokio::io::split(io);
            // The runtime ends its error stream when its side is done, with any message.
            let relay_error = async {
                let msg = runtime_error.read_to_end(64 * 1024).await;
                if !msg.is_empty() {
                    let _ = error.send(&msg).await;
                }
                let _ = error.close().await;
            };
            tokio::join!(pump(rd, wr, data_rd, data_wr, None), relay_error);
        }
        Err(msg) => {
            tracing::debug!(error = %msg, "port-forward failed");
            let _ = error.send(msg.as_bytes()).await;
            let _ = error.close().await;
            let _ = data_wr.close().await;
        }
    }
}

/// WebSocket channels: one connection per query port, opened at once.
async fn serve_channels(ws: Ws, fwd: Arc<Forwarder>, ports: Vec<u16>, tasks: &Tasks) {
    let (mut sink, mut source) = ws.split();
    let (out_tx, mut out_rx) = mpsc::channel::<Message>(16);
    let mut inputs = Vec::new();
    let done = CancellationToken::new();
    let mut handles = Vec::new();
    for (i, port) in ports.iter().copied().enumerate() {
        let (data_ch, err_ch) = ((2 * i) as u8, (2 * i + 1) as u8);
        let (in_tx, mut in_rx) = mpsc::channel::<Bytes>(8);
        inputs.push(in_tx);
        let (out, fwd, done) = (out_tx.clone(), fwd.clone(), done.clone());
        handles.push(tasks.spawn(async move {
            let frame = |ch: u8, d: &[u8]| {
                let mut b = BytesMut::with_capacity(d.len() + 1);
                b.put_u8(ch);
                b.put_slice(d);
                Message::Binary(b.freeze())
            };
            let _ = out.send(frame(data_ch, &port.to_le_bytes())).await;
            let _ = out.send(frame(err_ch, &port.to_le_bytes())).await;
            let tcp = match fwd.connect(port).await {
                Ok(Conn::Tcp(t)) => t,
                Ok(Conn::Runtime { .. }) => {
                    let _ = out
                        .send(frame(
                            err_ch,
                            fwd.error(port, "port not reachable from the node")
                                .as_bytes(),
                        ))
                        .await;
                    return;
                }
                Err(m) => {
                    let _ = out.send(frame(err_ch, m.as_bytes())).await;
                    return;
                }
            };
            let (mut rd, mut wr) = tcp.into_split();
            let up = async {
                while let Some(b) = in_rx.recv().await {
                    if wr.write_all(&b).await.is_err() {
                        break;
                    }
                }
                let _ = wr.shutdown().await;
            };
            let down = async {
                let mut buf = vec![0u8; COPY_BUF];
                loop {
                    let n = tokio::select! {
                        r = rd.read(&mut buf) => match r { Ok(0) | Err(_) => break, Ok(n) => n },
                        _ = done.cancelled() => break,
                    };
                    if out.send(frame(data_ch, &buf[..n])).await.is_err() {
                        break;
                    }
                }
            };
            tokio::select! {
                _ = async { tokio::join!(up, down) } => {}
                _ = done.cancelled() => {}
            }
        }));
    }
    drop(out_tx);
    let writer = async {
        while let Some(m) = out_rx.recv().await {
            if sink.send(m).await.is_err() {
                break;
            }
        }
        let _ = sink.close().await;
    };
    let reader = async {
        while let Some(Ok(m)) = source.next().await {
            match m {
                Message::Binary(b) if b.len() > 1 && b[0] % 2 == 0 => {
                    if let Some(tx) = inputs.get((b[0] / 2) as usize) {
                        let _ = tx.send(b.slice(1..)).await;
                    }
                }
                Message::Close(_) => break,
                _ => {}
            }
        }
    };
    tokio::select! {
        // Every port's connection ended: the writer drains and closes the WebSocket.
        _ = writer => {}
        _ = reader => {}
    }
    done.cancel();
    for h in handles {
        let _ = h.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_come_repeated_or_comma_separated() {
        let q = |s: &[(&str, &str)]| {
            s.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            ports_from_query(&q(&[("port", "80,443"), ("port", "8080")])).unwrap(),
            [80, 443, 8080]
        );
        assert!(ports_from_query(&q(&[])).unwrap().is_empty());
        assert_eq!(
            ports_from_query(&q(&[("port", "http")])).unwrap_err(),
            "invalid port \"http\""
        );
    }
}
