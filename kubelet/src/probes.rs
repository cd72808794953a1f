//! STUB (being written): liveness, readiness and startup probes; lifecycle hooks.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use component_base::events::EventRecorder;
use k8s_openapi::api::core::v1::{LifecycleHandler, Pod};

use crate::cri::Runtime;

pub struct RunningContainer {
    pub name: String,
    pub id: String,
    pub started_at: SystemTime,
}

pub struct ProbeManager;

impl ProbeManager {
    pub fn new(
        _runtime: Arc<dyn Runtime>,
        _recorder: EventRecorder,
        _notify: tokio::sync::mpsc::UnboundedSender<String>,
    ) -> Arc<Self> {
        Arc::new(ProbeManager)
    }
    pub fn sync_pod(&self, _pod: &Pod, _containers: &[RunningContainer], _pod_ip: Option<&str>) {}
    pub fn remove_pod(&self, _uid: &str) {}
    pub fn is_ready(&self, _uid: &str, _container: &str) -> bool {
        true
    }
    pub fn is_started(&self, _uid: &str, _container: &str) -> bool {
        true
    }
    pub fn take_restart_request(&self, _uid: &str, _container_id: &str) -> Option<String> {
        None
    }
}

pub async fn run_handler(
    _runtime: &dyn Runtime,
    _handler: &LifecycleHandler,
    _container_id: &str,
    _pod_ip: Option<&str>,
    _timeout: Duration,
) -> Result<(), String> {
    Ok(())
}
