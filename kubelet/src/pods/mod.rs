//! Pods on this node: the watch of bound pods, one serialised worker per pod, the decision of
//! what to do (pure) and its execution through the runtime, and status reporting.

pub mod runtime_pod;

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::cri::Runtime;
use crate::{Config, Error};

pub struct Kubelet;

impl Kubelet {
    pub async fn start(
        _config: Config,
        _client: kube::Client,
        _runtime: Arc<dyn Runtime>,
        _shutdown: CancellationToken,
    ) -> Result<(), Error> {
        todo!()
    }
}
