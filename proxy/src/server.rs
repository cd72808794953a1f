//! The two admin listeners, as upstream: `/healthz` (and `/livez`, `/readyz`) on
//! `--healthz-bind-address` (127.0.0.1:10256), `/metrics` (and `/healthz`) on
//! `--metrics-bind-address` (127.0.0.1:10249). Healthy means: synced at least once, and no
//! change has waited for a successful sync longer than the health timeout.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;

/// Sync health shared between the loop and the servers.
#[derive(Debug)]
pub struct Health {
    timeout: Duration,
    inner: Mutex<HealthInner>,
}

#[derive(Debug, Default)]
struct HealthInner {
    last_success: Option<Instant>,
    /// The oldest change not yet applied.
    pending_since: Option<Instant>,
}

impl Health {
    pub fn new(timeout: Duration) -> Self {
        Self {
            timeout,
            inner: Mutex::new(HealthInner::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HealthInner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A change arrived.
    pub fn queued(&self) {
        let mut h = self.lock();
        h.pending_since.get_or_insert_with(Instant::now);
    }

    /// A sync that started at `started` succeeded.
    pub fn synced(&self, started: Instant) {
        let mut h = self.lock();
        h.last_success = Some(Instant::now());
        if h.pending_since.is_some_and(|p| p <= started) {
            h.pending_since = None;
        }
    }

    pub fn is_healthy(&self) -> bool {
        let h = self.lock();
        h.last_success.is_some() && h.pending_since.is_none_or(|p| p.elapsed() <= self.timeout)
    }
}

#[derive(Clone)]
struct AppState {
    metrics: Arc<Metrics>,
    health: Arc<Health>,
}

/// A started listener.
pub struct Running {
    pub addr: SocketAddr,
    pub task: tokio::task::JoinHandle<()>,
}

async fn healthz(State(s): State<AppState>) -> impl IntoResponse {
    if s.health.is_healthy() {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "proxy rules not synced")
    }
}

async fn metrics(State(s): State<AppState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        s.metrics.encode(),
    )
}

async fn serve_router(
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

/// Serve `/healthz`, `/livez`, `/readyz`.
pub async fn serve_health(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    shutdown: CancellationToken,
) -> std::io::Result<Running> {
    let app = Router::new()
        .route("/healthz", get(healthz))
        .route("/livez", get(|| async { "ok" }))
        .route("/readyz", get(healthz))
        .with_state(AppState { metrics, health });
    serve_router(addr, app, shutdown).await
}

/// Serve `/metrics` and `/healthz`.
pub async fn serve_metrics(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    shutdown: CancellationToken,
) -> std::io::Result<Running> {
    let app = Router::new()
        .route("/metrics", get(self::metrics))
        .route("/healthz", get(healthz))
        .with_state(AppState { metrics, health });
    serve_router(addr, app, shutdown).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn healthy_after_a_sync_unhealthy_when_changes_wait_too_long() {
        let h = Health::new(Duration::from_millis(50));
        assert!(!h.is_healthy());
        let t = Instant::now();
        h.queued();
        h.synced(t);
        assert!(h.is_healthy());
        h.queued();
        assert!(h.is_healthy());
        std::thread::sleep(Duration::from_millis(80));
        assert!(!h.is_healthy());
        h.synced(Instant::now());
        assert!(h.is_healthy());
    }
}
