//! The HTTPS listener: TLS (rustls) with optional client certificates, HTTP/1.1 and HTTP/2 on
//! one port (HTTP/1.1 `Upgrade` requests — exec, attach, port-forward, proxied WebSockets — are
//! served: the connection is handed to the handler's upgrade), the verified peer identity and
//! the client address handed to every request, and graceful shutdown on the injected token.

use crate::handler::{self, State};
use crate::proxy::RemoteAddr;
use component_base::tls::{client_identity, UserInfo};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::convert::Infallible;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// kube-apiserver's default `--http2-max-streams-per-connection`.
const HTTP2_MAX_STREAMS_PER_CONNECTION: u32 = 1000;

/// Accept connections until `shutdown`, then let in-flight requests finish.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    state: Arc<State>,
    shutdown: CancellationToken,
) {
    let acceptor = TlsAcceptor::from(tls);
    let tracker = TaskTracker::new();
    loop {
        let (tcp, peer_addr) = tokio::select! {
            _ = shutdown.cancelled() => break,
            res = listener.accept() => match res {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let state = state.clone();
        let shutdown = shutdown.clone();
        tracker.spawn(async move {
            let tls = match tokio::time::timeout(std::time::Duration::from_secs(10), acceptor.accept(tcp)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(peer = %peer_addr, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => return,
            };
            let identity: Option<UserInfo> = tls.get_ref().1.peer_certificates().and_then(client_identity);
            let svc = hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(RemoteAddr(peer_addr));
                let state = state.clone();
                let identity = identity.clone();
                async move { Ok::<_, Infallible>(handler::handle(state, req, identity).await) }
            });
            let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            // Clients multiplex every watch of a process over one HTTP/2 connection; allow
            // as many concurrent streams as kube-apiserver does (--http2-max-streams-per-connection).
            builder.http2().max_concurrent_streams(HTTP2_MAX_STREAMS_PER_CONNECTION);
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(tls), svc);
            tokio::pin!(conn);
            tokio::select! {
                res = conn.as_mut() => {
                    if let Err(e) = res {
                        tracing::trace!(peer = %peer_addr, error = %e, "connection ended with error");
                    }
                }
                _ = shutdown.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), conn).await;
                }
            }
        });
    }
    tracker.close();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), tracker.wait()).await;
}
