//! The WebSocket side of streaming: the upgrade handshake (RFC 6455, answered by hand so the
//! kubelet chooses the subprotocol and refuses like upstream does), the subprotocols
//! Kubernetes uses, and [`WsIo`], a byte stream over binary messages for
//! `SPDY/3.1+portforward.k8s.io` (kubectl ≥ 1.31 tunnels SPDY through WebSocket, message
//! boundaries meaning nothing).

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue, Response, StatusCode};
use base64::Engine as _;
use bytes::{Buf, Bytes};
use futures::{Sink, Stream};
use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// Exec/attach with the stdin-close signal (channel 255); kubectl ≥ 1.30 offers only this.
pub const V5_CHANNEL: &str = "v5.channel.k8s.io";
/// Exec/attach (and port-forward channels) without a close signal; kube-rs and older clients.
pub const V4_CHANNEL: &str = "v4.channel.k8s.io";
/// The other channel protocols containerd's streaming server answers for exec/attach.
pub const V4_BASE64_CHANNEL: &str = "v4.base64.channel.k8s.io";
pub const CHANNEL: &str = "channel.k8s.io";
pub const BASE64_CHANNEL: &str = "base64.channel.k8s.io";
/// SPDY/3.1 for port-forward, tunnelled in binary messages (kubectl ≥ 1.31).
pub const SPDY_PORT_FORWARD: &str = "SPDY/3.1+portforward.k8s.io";
/// Port-forward channels (upstream's first WebSocket port-forward protocol).
pub const PORT_FORWARD: &str = "portforward.k8s.io";

const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// The upgraded connection as a WebSocket.
pub type Ws = WebSocketStream<TokioIo<Upgraded>>;

/// `Connection: upgrade` and `Upgrade: websocket`.
pub fn is_websocket(h: &HeaderMap) -> bool {
    super::has_token(h, header::CONNECTION, "upgrade")
        && super::has_token(h, header::UPGRADE, "websocket")
}

/// The subprotocols the client offered, in its order of preference.
pub fn offered_protocols(h: &HeaderMap) -> Vec<String> {
    h.get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|p| p.trim().to_string())
        .filter(|p| !p.is_empty())
        .collect()
}

/// `Sec-WebSocket-Accept` for a client's key.
pub fn accept_key(key: &str) -> String {
    let mut input = key.trim().as_bytes().to_vec();
    input.extend_from_slice(GUID.as_bytes());
    let digest = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, &input);
    base64::engine::general_purpose::STANDARD.encode(digest.as_ref())
}

/// The `101` answer choosing `protocol`, or the `400` a malformed handshake gets.
pub fn accept(h: &HeaderMap, protocol: Option<&str>) -> Result<Response<Body>, super::Refused> {
    let version = h
        .get(header::SEC_WEBSOCKET_VERSION)
        .and_then(|v| v.to_str().ok());
    if version.map(str::trim) != Some("13") {
        let mut r = super::text(StatusCode::BAD_REQUEST, "unsupported WebSocket version");
        r.headers_mut().insert(
            header::SEC_WEBSOCKET_VERSION,
            HeaderValue::from_static("13"),
        );
        return Err(Box::new(r));
    }
    let Some(key) = h
        .get(header::SEC_WEBSOCKET_KEY)
        .and_then(|v| v.to_str().ok())
    else {
        return Err(Box::new(super::text(
            StatusCode::BAD_REQUEST,
            "missing Sec-WebSocket-Key",
        )));
    };
    let mut b = Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::UPGRADE, "websocket")
        .header(header::CONNECTION, "Upgrade")
        .header(header::SEC_WEBSOCKET_ACCEPT, accept_key(key));
    if let Some(p) = protocol.filter(|p| !p.is_empty()) {
        b = b.header(header::SEC_WEBSOCKET_PROTOCOL, p);
    }
    Ok(b.body(Body::empty()).expect("valid response"))
}

/// Upstream's answer to a handshake naming no protocol it serves: 403 with an empty body.
pub fn forbidden() -> Response<Body> {
    let mut r = Response::new(Body::empty());
    *r.status_mut() = StatusCode::FORBIDDEN;
    r
}

/// Limits for the connections the kubelet serves: messages of any practical size, bounded.
pub fn config() -> WebSocketConfig {
    WebSocketConfig::default()
        .max_message_size(Some(16 << 20))
        .max_frame_size(Some(16 << 20))
        .max_write_buffer_size(1 << 20)
}

/// Wait for the upgrade and wrap it as the server side of a WebSocket.
pub async fn server(on: OnUpgrade) -> io::Result<Ws> {
    let io = on.await.map_err(io::Error::other)?;
    Ok(WebSocketStream::from_raw_socket(TokioIo::new(io), Role::Server, Some(config())).await)
}

/// A byte stream over a WebSocket's binary messages: reads concatenate them, each write is one
/// message, shutdown sends a close frame.
pub struct WsIo<S> {
    ws: WebSocketStream<S>,
    pending: Bytes,
    eof: bool,
}

impl<S> WsIo<S> {
    pub fn new(ws: WebSocketStream<S>) -> Self {
        Self {
            ws,
            pending: Bytes::new(),
            eof: false,
        }
    }
}

fn ws_err(e: tokio_tungstenite::tungstenite::Error) -> io::Error {
    io::Error::other(e)
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for WsIo<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            if !self.pending.is_empty() {
                let n = self.pending.len().min(buf.remaining());
                buf.put_slice(&self.pending[..n]);
                self.pending.advance(n);
                return Poll::Ready(Ok(()));
            }
            if self.eof {
                return Poll::Ready(Ok(()));
            }
            match ready!(Pin::new(&mut self.ws).poll_next(cx)) {
                Some(Ok(Message::Binary(b))) => self.pending = b,
                Some(Ok(Message::Close(_))) | None => self.eof = true,
                Some(Ok(_)) => {}
                Some(Err(tokio_tungstenite::tungstenite::Error::ConnectionClosed)) => {
                    self.eof = true
                }
                Some(Err(e)) => return Poll::Ready(Err(ws_err(e))),
            }
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for WsIo<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        ready!(Pin::new(&mut self.ws).poll_ready(cx)).map_err(ws_err)?;
        Pin::new(&mut self.ws)
            .start_send(Message::Binary(Bytes::copy_from_slice(buf)))
            .map_err(ws_err)?;
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.ws).poll_flush(cx).map_err(ws_err)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match ready!(Pin::new(&mut self.ws).poll_close(cx)) {
            Ok(()) | Err(tokio_tungstenite::tungstenite::Error::ConnectionClosed) => {
                Poll::Ready(Ok(()))
            }
            Err(e) => Poll::Ready(Err(ws_err(e))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_key_is_rfc6455s_example() {
        assert_eq!(
            accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn protocols_are_read_in_the_clients_order() {
        let mut h = HeaderMap::new();
        h.append(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static("v5.channel.k8s.io, v4.channel.k8s.io"),
        );
        h.append(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static("channel.k8s.io"),
        );
        assert_eq!(
            offered_protocols(&h),
            ["v5.channel.k8s.io", "v4.channel.k8s.io", "channel.k8s.io"]
        );
    }
}
