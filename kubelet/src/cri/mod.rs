//! The kubelet's boundary to the container runtime: the [`Runtime`] trait with the CRI calls the
//! kubelet makes, the gRPC implementation over containerd's unix socket ([`remote`]), and a
//! recording in-memory fake for unit tests ([`fake`]).
//!
//! Everything above this module decides in pure functions and only calls through the trait, so
//! the sync logic is tested without a runtime and the real runtime is exercised by the
//! workspace tests.

pub mod fake;
pub mod remote;

use futures::future::BoxFuture;
pub use proto::v1;

/// Labels and annotations the kubelet puts on sandboxes and containers; upstream's names, so
/// `crictl` users see the familiar keys and a restarted kubelet can adopt what it finds.
pub mod labels {
    pub const POD_NAME: &str = "io.kubernetes.pod.name";
    pub const POD_NAMESPACE: &str = "io.kubernetes.pod.namespace";
    pub const POD_UID: &str = "io.kubernetes.pod.uid";
    pub const CONTAINER_NAME: &str = "io.kubernetes.container.name";
    pub const CONTAINER_TYPE: &str = "io.kubernetes.container.type";
    pub const CONTAINER_HASH: &str = "io.kubernetes.container.hash";
    pub const RESTART_COUNT: &str = "io.kubernetes.container.restartCount";
    pub const TERMINATION_MESSAGE_PATH: &str = "io.kubernetes.container.terminationMessagePath";
    pub const TERMINATION_MESSAGE_POLICY: &str = "io.kubernetes.container.terminationMessagePolicy";
    pub const POD_GRACE_PERIOD: &str = "io.kubernetes.pod.terminationGracePeriod";
    pub const KUBELET_MANAGED: &str = "io.kubernetes.kubelet.managed";
}

/// A failed runtime call. containerd reports most failures as `Unknown` with a message, so
/// callers decide on the message where the code says nothing.
#[derive(Debug, thiserror::Error)]
pub enum CriError {
    #[error("cannot connect to the container runtime at {endpoint}: {message}")]
    Connect { endpoint: String, message: String },
    #[error("{}", .0.message())]
    Status(#[from] tonic::Status),
    #[error("{0}")]
    Other(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

impl CriError {
    pub fn code(&self) -> tonic::Code {
        match self {
            CriError::Status(s) => s.code(),
            CriError::Connect { .. } => tonic::Code::Unavailable,
            CriError::Other(_) | CriError::Io(_) => tonic::Code::Unknown,
        }
    }
    pub fn is_not_found(&self) -> bool {
        self.code() == tonic::Code::NotFound || self.to_string().contains("not found")
    }
}

pub type CriResult<T> = Result<T, CriError>;

/// The CRI calls the kubelet makes (RuntimeService and ImageService of runtime.v1).
pub trait Runtime: Send + Sync + 'static {
    fn version(&self) -> BoxFuture<'_, CriResult<v1::VersionResponse>>;
    fn status(&self) -> BoxFuture<'_, CriResult<v1::StatusResponse>>;

    fn run_pod_sandbox(
        &self,
        config: v1::PodSandboxConfig,
        runtime_handler: String,
    ) -> BoxFuture<'_, CriResult<String>>;
    fn stop_pod_sandbox(&self, id: String) -> BoxFuture<'_, CriResult<()>>;
    fn remove_pod_sandbox(&self, id: String) -> BoxFuture<'_, CriResult<()>>;
    fn pod_sandbox_status(&self, id: String) -> BoxFuture<'_, CriResult<v1::PodSandboxStatus>>;
    fn list_pod_sandbox(
        &self,
        filter: Option<v1::PodSandboxFilter>,
    ) -> BoxFuture<'_, CriResult<Vec<v1::PodSandbox>>>;

    fn create_container(
        &self,
        sandbox_id: String,
        config: v1::ContainerConfig,
        sandbox_config: v1::PodSandboxConfig,
    ) -> BoxFuture<'_, CriResult<String>>;
    fn start_container(&self, id: String) -> BoxFuture<'_, CriResult<()>>;
    /// Stop with a grace period in seconds (0: kill at once).
    fn stop_container(&self, id: String, timeout: i64) -> BoxFuture<'_, CriResult<()>>;
    fn remove_container(&self, id: String) -> BoxFuture<'_, CriResult<()>>;
    fn list_containers(
        &self,
        filter: Option<v1::ContainerFilter>,
    ) -> BoxFuture<'_, CriResult<Vec<v1::Container>>>;
    fn container_status(&self, id: String) -> BoxFuture<'_, CriResult<v1::ContainerStatus>>;

    /// Run a command to completion (probes, hooks); `timeout` in seconds, 0 for none.
    fn exec_sync(
        &self,
        id: String,
        cmd: Vec<String>,
        timeout: i64,
    ) -> BoxFuture<'_, CriResult<v1::ExecSyncResponse>>;
    /// The runtime's streaming URL for an interactive exec.
    fn exec(&self, req: v1::ExecRequest) -> BoxFuture<'_, CriResult<String>>;
    fn attach(&self, req: v1::AttachRequest) -> BoxFuture<'_, CriResult<String>>;
    fn port_forward(&self, sandbox_id: String, ports: Vec<i32>)
        -> BoxFuture<'_, CriResult<String>>;

    fn list_container_stats(&self) -> BoxFuture<'_, CriResult<Vec<v1::ContainerStats>>>;

    /// `None` when the image is not present (CRI answers OK with no image).
    fn image_status(&self, image: String) -> BoxFuture<'_, CriResult<Option<v1::Image>>>;
    /// Pull, returning the image reference (id) the runtime resolved.
    fn pull_image(
        &self,
        image: String,
        auth: Option<v1::AuthConfig>,
        sandbox_config: Option<v1::PodSandboxConfig>,
    ) -> BoxFuture<'_, CriResult<String>>;
    fn list_images(&self) -> BoxFuture<'_, CriResult<Vec<v1::Image>>>;
    fn remove_image(&self, image: String) -> BoxFuture<'_, CriResult<()>>;
    fn image_fs_info(&self) -> BoxFuture<'_, CriResult<v1::ImageFsInfoResponse>>;
}
