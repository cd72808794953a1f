//! STUB (being written): the kubelet's HTTPS API (:10250) and health endpoints.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::cri::Runtime;
use crate::{Config, Error, PodStore};

/// What the HTTPS handlers read.
#[derive(Clone)]
pub struct ServerState {
    pub config: Arc<Config>,
    pub runtime: Arc<dyn Runtime>,
    pub pods: PodStore,
}

/// Serve until shutdown.
pub async fn serve(_state: ServerState, _shutdown: CancellationToken) -> Result<(), Error> {
    todo!()
}
