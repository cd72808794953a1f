//! The health and metrics endpoint: /healthz (alive), /readyz (informers synced) and /metrics.

use crate::informers::Synced;
use crate::metrics::Metrics;
use crate::queue::SchedulingQueue;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

#[derive(Clone)]
struct AppState {
    metrics: Arc<Metrics>,
    queue: Arc<SchedulingQueue>,
    synced: Synced,
}

pub struct Running {
    pub addr: SocketAddr,
    pub task: tokio::task::JoinHandle<()>,
}

pub async fn serve(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    queue: Arc<SchedulingQueue>,
    synced: Synced,
    shutdown: CancellationToken,
) -> std::io::Result<Running> {
    let app = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/livez", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_handler))
        .with_state(AppState {
            metrics,
            queue,
            synced,
        });
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await
        {
            tracing::error!(error = %e, "health server failed");
        }
    });
    Ok(Running { addr, task })
}

async fn readyz(State(s): State<AppState>) -> impl IntoResponse {
    if s.synced.is_synced() {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "informers not synced")
    }
}

async fn metrics_handler(State(s): State<AppState>) -> impl IntoResponse {
    s.metrics.set_queue_sizes(s.queue.sizes());
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        s.metrics.encode(),
    )
}
