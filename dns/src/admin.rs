//! The admin listeners, as CoreDNS's `health`, `ready` and `prometheus` plugins: `/health`
//! (and `/healthz`, `/livez`) answers while the process runs; `/ready` (and `/readyz`) once the
//! cluster zone has been built from the API; `/metrics` on its own address (:9153).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;

/// A started listener.
pub struct Running {
    pub addr: SocketAddr,
    pub task: tokio::task::JoinHandle<()>,
}

async fn serve(
    addr: SocketAddr,
    app: Router,
    shutdown: CancellationToken,
) -> std::io::Result<Running> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await
        {
            tracing::error!(error = %e, "admin server failed");
        }
    });
    Ok(Running { addr, task })
}

async fn ready(State(ready): State<Arc<AtomicBool>>) -> impl IntoResponse {
    if ready.load(Ordering::Acquire) {
        (StatusCode::OK, "OK")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "kubernetes")
    }
}

/// Serve `/health`, `/healthz`, `/livez`, `/ready` and `/readyz`.
pub async fn serve_health(
    addr: SocketAddr,
    ready_flag: Arc<AtomicBool>,
    shutdown: CancellationToken,
) -> std::io::Result<Running> {
    let app = Router::new()
        .route("/health", get(|| async { "OK" }))
        .route("/healthz", get(|| async { "OK" }))
        .route("/livez", get(|| async { "OK" }))
        .route("/ready", get(ready))
        .route("/readyz", get(ready))
        .with_state(ready_flag);
    serve(addr, app, shutdown).await
}

/// Serve `/metrics`.
pub async fn serve_metrics(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) -> std::io::Result<Running> {
    let app = Router::new()
        .route(
            "/metrics",
            get(|State(m): State<Arc<Metrics>>| async move {
                (
                    [(
                        header::CONTENT_TYPE,
                        "text/plain; version=0.0.4; charset=utf-8",
                    )],
                    m.encode(),
                )
            }),
        )
        .with_state(metrics);
    serve(addr, app, shutdown).await
}
