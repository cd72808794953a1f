//! The `kubelet` binary's library: the node agent. It registers its Node, keeps its Lease and
//! status fresh, and runs the pods bound to it through a CRI runtime (containerd), with CNI doing
//! pod networking — as upstream's kubelet does.
//!
//! Layout (see ARCHITECTURE.md): [`cri`] is the runtime boundary (trait, gRPC client, fake);
//! [`pods`] decides and applies per-pod actions (one serialised worker per pod) and reports pod
//! status; [`pleg`] notices runtime changes by relisting; [`volumes`] and [`probes`] prepare
//! volumes and run probes and lifecycle hooks; [`node`] owns the Node object, the Lease and the
//! CNI configuration; [`server`] is the HTTPS API on :10250 (logs, exec, stats) and the
//! health/metrics endpoints.

pub mod cgroups;
pub mod cni;
pub mod config;
pub mod cri;
pub mod images;
pub mod logs;
pub mod masquerade;
pub mod node;
pub mod pleg;
pub mod pods;
pub mod probes;
pub mod server;
pub mod streaming;
pub mod volumes;

pub use config::{Args, Config, ConfigError};

use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use tokio_util::sync::CancellationToken;

/// The kubelet's view of the pods bound to this node (a reflector cache of a watch with
/// `fieldSelector=spec.nodeName=<node>`).
pub type PodStore = kube::runtime::reflector::Store<Pod>;

/// Errors that stop the kubelet.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("kubeconfig: {0}")]
    Kubeconfig(String),
    #[error(transparent)]
    Runtime(#[from] cri::CriError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("node: {0}")]
    Node(String),
    #[error("server: {0}")]
    Server(String),
}

/// Build a client from the configured kubeconfig (or the usual inference).
pub async fn client(config: &Config) -> Result<kube::Client, Error> {
    component_base::client::from_kubeconfig(config.kubeconfig.as_deref())
        .await
        .map_err(|e| Error::Kubeconfig(e.to_string()))
}

/// Run the kubelet until `shutdown` is cancelled. Running pods are left running on shutdown
/// (as upstream does), so a restarted kubelet adopts them.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), Error> {
    let client = client(&config).await?;
    let runtime: Arc<dyn cri::Runtime> =
        Arc::new(cri::remote::RemoteRuntime::connect(&config.container_runtime_endpoint).await?);
    run_with(config, client, runtime, shutdown).await
}

/// [`run`] with a ready client and runtime.
pub async fn run_with(
    config: Config,
    client: kube::Client,
    runtime: Arc<dyn cri::Runtime>,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    pods::Kubelet::start(config, client, runtime, shutdown).await
}
