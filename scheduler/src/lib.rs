//! The `scheduler` binary's library: watches pending pods whose `spec.schedulerName` is ours and
//! binds each to a node through `pods/binding`, as kube-scheduler does.
//!
//! [`run`] is the whole component: leader election, informers, the scheduling loop and the
//! health/metrics server, all stopped by one cancellation token. In-process callers (tests,
//! benchmarks) use [`run`] or drive a [`scheduler::Scheduler`] directly.

pub mod binder;
pub mod cache;
pub mod framework;
pub mod informers;
pub mod leader;
pub mod metrics;
pub mod plugins;
pub mod preemption;
pub mod queue;
pub mod resources;
pub mod scheduler;
mod server;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The scheduler name pods get by default.
pub const DEFAULT_SCHEDULER_NAME: &str = "default-scheduler";

/// Command-line flags.
#[derive(clap::Parser, Debug, Clone)]
#[command(
    name = "scheduler",
    about = "Places pending pods on nodes, as kube-scheduler does."
)]
pub struct Args {
    /// Kubeconfig to reach the API server (default: $KUBECONFIG, ~/.kube/config, or in-cluster).
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// Schedule pods whose spec.schedulerName is this.
    #[arg(long, default_value = DEFAULT_SCHEDULER_NAME)]
    pub scheduler_name: String,
    /// Address for /healthz, /readyz and /metrics (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:10259")]
    pub bind_address: String,
    /// Elect a leader through a Lease before scheduling.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub leader_elect: bool,
    /// Name of the Lease used for leader election.
    #[arg(long, default_value = "kube-scheduler")]
    pub leader_elect_resource_name: String,
    /// Namespace of the leader election Lease.
    #[arg(long, default_value = "kube-system")]
    pub leader_elect_resource_namespace: String,
    /// Seconds a lease is valid without renewal.
    #[arg(long, default_value_t = 15)]
    pub leader_elect_lease_duration: u64,
    /// Seconds the leader keeps trying to renew before giving up.
    #[arg(long, default_value_t = 10)]
    pub leader_elect_renew_deadline: u64,
    /// Seconds between acquire/renew attempts.
    #[arg(long, default_value_t = 2)]
    pub leader_elect_retry_period: u64,
    /// Percentage of nodes to find feasible before scoring (0: adaptive, as upstream).
    #[arg(long, default_value_t = 0)]
    pub percentage_of_nodes_to_score: u32,
    /// Bindings in flight at once.
    #[arg(long, default_value_t = 64)]
    pub parallel_binds: usize,
}

/// Invalid flags.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("--bind-address {0:?} is not host:port")]
    BindAddress(String),
    #[error("--percentage-of-nodes-to-score must be 0..=100, got {0}")]
    Percentage(u32),
    #[error("leader election needs lease duration > renew deadline > retry period > 0")]
    LeaderTimings,
    #[error("--scheduler-name must not be empty")]
    Name,
}

/// Validated settings.
#[derive(Debug, Clone)]
pub struct Config {
    pub kubeconfig: Option<PathBuf>,
    pub scheduler_name: String,
    pub bind_address: SocketAddr,
    pub leader: Option<leader::LeaderConfig>,
    pub percentage_of_nodes_to_score: u32,
    pub parallel_binds: usize,
}

impl TryFrom<Args> for Config {
    type Error = ConfigError;
    fn try_from(a: Args) -> Result<Self, ConfigError> {
        let bind_address = a
            .bind_address
            .parse()
            .map_err(|_| ConfigError::BindAddress(a.bind_address.clone()))?;
        if a.percentage_of_nodes_to_score > 100 {
            return Err(ConfigError::Percentage(a.percentage_of_nodes_to_score));
        }
        if a.scheduler_name.is_empty() {
            return Err(ConfigError::Name);
        }
        let (ld, rd, rp) = (
            a.leader_elect_lease_duration,
            a.leader_elect_renew_deadline,
            a.leader_elect_retry_period,
        );
        let leader = if a.leader_elect {
            if !(ld > rd && rd > rp && rp > 0) {
                return Err(ConfigError::LeaderTimings);
            }
            let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "scheduler".into());
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0);
            Some(leader::LeaderConfig {
                namespace: a.leader_elect_resource_namespace,
                name: a.leader_elect_resource_name,
                identity: format!("{host}_{:x}{nanos:x}", std::process::id()),
                lease_duration: Duration::from_secs(ld),
                renew_deadline: Duration::from_secs(rd),
                retry_period: Duration::from_secs(rp),
            })
        } else {
            None
        };
        Ok(Config {
            kubeconfig: a.kubeconfig,
            scheduler_name: a.scheduler_name,
            bind_address,
            leader,
            percentage_of_nodes_to_score: a.percentage_of_nodes_to_score,
            parallel_binds: a.parallel_binds,
        })
    }
}

/// Errors that stop the scheduler.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("kubeconfig: {0}")]
    Kubeconfig(String),
    #[error("health server: {0}")]
    Server(#[from] std::io::Error),
    #[error(transparent)]
    Leader(#[from] leader::LeaderError),
}

/// Build a client from the configured kubeconfig (or the usual inference).
pub async fn client(config: &Config) -> Result<kube::Client, Error> {
    component_base::client::from_kubeconfig(config.kubeconfig.as_deref())
        .await
        .map_err(|e| Error::Kubeconfig(e.to_string()))
}

/// Run the scheduler until `shutdown` is cancelled (Ok) or leadership is lost (Err).
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), Error> {
    let client = client(&config).await?;
    run_with_client(config, client, shutdown).await
}

/// [`run`] with a ready client.
pub async fn run_with_client(
    config: Config,
    client: kube::Client,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    let mut framework = plugins::default_framework();
    framework.percentage_of_nodes_to_score = config.percentage_of_nodes_to_score;
    let binder = binder::ApiBinder::new(
        client.clone(),
        &config.scheduler_name,
        config
            .leader
            .as_ref()
            .map(|l| l.identity.as_str())
            .unwrap_or(&config.scheduler_name),
    );
    let sched = Arc::new(scheduler::Scheduler::new(
        &config.scheduler_name,
        framework,
        binder,
        config.parallel_binds,
    ));
    let synced = informers::synced();
    let server = server::serve(
        config.bind_address,
        sched.metrics.clone(),
        sched.queue.clone(),
        synced.clone(),
        shutdown.clone(),
    )
    .await?;
    tracing::info!(addr = %server.addr, name = %config.scheduler_name, "scheduler serving health and metrics");
    let work = shutdown.child_token();
    if let Some(l) = &config.leader {
        if !leader::acquire(&client, l, &shutdown).await {
            work.cancel();
            let _ = server.task.await;
            return Ok(());
        }
    }
    let informers = tokio::spawn(informers::run(
        client.clone(),
        sched.clone(),
        synced.clone(),
        work.clone(),
    ));
    let sched_task = {
        let (sched, synced, work) = (sched.clone(), synced.clone(), work.clone());
        tokio::spawn(async move {
            if synced.wait(&work).await {
                tracing::info!("caches synced; scheduling");
                sched.run(work).await;
            }
        })
    };
    let result = match &config.leader {
        Some(l) => leader::hold(&client, l, &shutdown)
            .await
            .map_err(Error::from),
        None => {
            shutdown.cancelled().await;
            Ok(())
        }
    };
    work.cancel();
    let _ = sched_task.await;
    let _ = informers.await;
    let _ = server.task.await;
    result
}
