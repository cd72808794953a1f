//! The controller-manager: the core control loops (ReplicaSet, Deployment, and the others in
//! [`controllers`]) against the API server over HTTPS, on the [`framework`] of shared
//! informers, rate-limited work queues and level-triggered reconcilers.
//!
//! [`run`] is the whole process: it serves `/healthz`, `/readyz` and `/metrics` (plain HTTP —
//! meant for loopback; upstream serves HTTPS on 10257), optionally waits for the leader Lease,
//! then starts the selected controllers and runs them until the shutdown token is cancelled.

pub mod config;
pub mod controllers;
pub mod framework;
mod server;

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use tokio_util::sync::CancellationToken;

pub use config::{Args, Config};
use framework::{ControllerContext, Metrics};

/// A started controller-manager.
pub struct Running {
    /// Where `/healthz` and `/metrics` are served.
    pub addr: SocketAddr,
    /// Ends when the process stops (shutdown, or an error such as a lost lease).
    pub task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

/// Run until `shutdown` is cancelled.
pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    start(config, shutdown)
        .await?
        .task
        .await
        .context("controller-manager task panicked")?
}

/// Build the client, bind the admin server and spawn everything; returns once listening.
pub async fn start(config: Config, shutdown: CancellationToken) -> anyhow::Result<Running> {
    let client = config.client().await?;
    let metrics = Arc::new(Metrics::new());
    let listener = tokio::net::TcpListener::bind(config.bind)
        .await
        .with_context(|| format!("binding {}", config.bind))?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, "serving healthz and metrics (HTTP)");
    let server = tokio::spawn(server::serve(listener, metrics.clone(), shutdown.clone()));
    let config = Arc::new(config);
    let task = tokio::spawn(async move {
        let result = if config.leader_elect {
            let le = config.leader_election();
            let (c, m) = (config.clone(), metrics.clone());
            let client2 = client.clone();
            framework::leader::run(
                client,
                le,
                shutdown.clone(),
                metrics.leader.clone(),
                move |token| run_controllers(client2, c, m, token),
            )
            .await
            .map_err(anyhow::Error::from)
        } else {
            metrics.leader.set(1);
            run_controllers(client, config, metrics, shutdown.clone()).await;
            Ok(())
        };
        shutdown.cancel();
        let _ = server.await;
        result
    });
    Ok(Running { addr, task })
}

/// Start every selected controller and wait for all of them to stop.
async fn run_controllers(
    client: kube::Client,
    config: Arc<Config>,
    metrics: Arc<Metrics>,
    token: CancellationToken,
) {
    let ctx = ControllerContext::new(client, config.clone(), metrics, token.clone());
    let mut running = Vec::new();
    for d in controllers::DESCRIPTORS {
        if !framework::is_enabled(d.name, d.enabled_by_default, &config.controllers) {
            tracing::info!(controller = d.name, "controller disabled");
            continue;
        }
        match (d.start)(&ctx) {
            Ok(f) => {
                tracing::info!(controller = d.name, "started controller");
                running.push(tokio::spawn(f));
            }
            Err(e) => {
                tracing::error!(controller = d.name, error = %e, "starting controller failed")
            }
        }
    }
    for r in running {
        let _ = r.await;
    }
}
