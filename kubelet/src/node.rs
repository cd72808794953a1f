//! STUB (being written): the Node object, its Lease heartbeat and status.

use std::net::IpAddr;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Node;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::cri::Runtime;
use crate::{Config, Error};

/// Registers the node, renews its Lease, reports its status, and publishes its podCIDR.
pub struct NodeAgent {
    _config: Arc<Config>,
    _client: kube::Client,
    _runtime: Arc<dyn Runtime>,
    pod_cidr: watch::Sender<Option<String>>,
}

impl NodeAgent {
    pub fn new(config: Arc<Config>, client: kube::Client, runtime: Arc<dyn Runtime>) -> Self {
        let (pod_cidr, _) = watch::channel(config.pod_cidr.clone());
        NodeAgent {
            _config: config,
            _client: client,
            _runtime: runtime,
            pod_cidr,
        }
    }
    /// The node's primary address (the --node-ip flag, or detected).
    pub fn node_ip(&self) -> IpAddr {
        todo!()
    }
    /// The node's podCIDR as the API assigns it (or --pod-cidr).
    pub fn pod_cidr(&self) -> watch::Receiver<Option<String>> {
        self.pod_cidr.subscribe()
    }
    /// Create or update the Node object.
    pub async fn register(&self) -> Result<Node, Error> {
        todo!()
    }
    /// Lease heartbeats, status updates and podCIDR/CNI config until shutdown.
    pub async fn run(self: Arc<Self>, _shutdown: CancellationToken) {
        todo!()
    }
}
