//! The runtime's view of one pod, gathered from `ListPodSandbox`/`ListContainers`/
//! `ContainerStatus` and keyed by the labels the kubelet sets, so it survives a kubelet restart
//! (adoption) and needs no local state.

use std::collections::HashMap;

use crate::cri::{labels, v1, CriResult, Runtime};

/// One sandbox of a pod (a pod has several over its life when its sandbox dies).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SandboxInfo {
    pub id: String,
    pub attempt: u32,
    pub ready: bool,
    pub created_at: i64,
    pub ip: Option<String>,
    pub additional_ips: Vec<String>,
}

/// One container instance (a container name has one instance per restart).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ContainerInfo {
    pub id: String,
    pub name: String,
    pub sandbox_id: String,
    /// The restart count this instance was created with.
    pub restart_count: i32,
    pub state: State,
    pub created_at: i64,
    pub started_at: i64,
    pub finished_at: i64,
    pub exit_code: i32,
    pub reason: String,
    pub message: String,
    pub image: String,
    pub image_ref: String,
    /// Hash of the container spec it was created from (restart when the spec changes).
    pub hash: String,
    pub log_path: String,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum State {
    Created,
    Running,
    Exited,
    #[default]
    Unknown,
}

impl From<i32> for State {
    fn from(v: i32) -> Self {
        match v1::ContainerState::try_from(v) {
            Ok(v1::ContainerState::ContainerCreated) => State::Created,
            Ok(v1::ContainerState::ContainerRunning) => State::Running,
            Ok(v1::ContainerState::ContainerExited) => State::Exited,
            _ => State::Unknown,
        }
    }
}

/// Everything the runtime has for one pod: sandboxes and containers, newest first.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RuntimePod {
    pub sandboxes: Vec<SandboxInfo>,
    pub containers: Vec<ContainerInfo>,
}

impl RuntimePod {
    /// The newest instance of the container named `name`.
    pub fn latest(&self, name: &str) -> Option<&ContainerInfo> {
        self.containers.iter().find(|c| c.name == name)
    }
    /// The instance before the newest (for `lastState`).
    pub fn previous(&self, name: &str) -> Option<&ContainerInfo> {
        self.containers.iter().filter(|c| c.name == name).nth(1)
    }
    pub fn sandbox(&self) -> Option<&SandboxInfo> {
        self.sandboxes.first()
    }
    pub fn running(&self) -> impl Iterator<Item = &ContainerInfo> {
        self.containers.iter().filter(|c| c.state == State::Running)
    }
}

/// Read the pod's sandboxes and containers from the runtime.
pub async fn get(rt: &dyn Runtime, uid: &str) -> CriResult<RuntimePod> {
    let sel: HashMap<String, String> = [(labels::POD_UID.to_string(), uid.to_string())].into();
    let sandboxes = rt
        .list_pod_sandbox(Some(v1::PodSandboxFilter {
            label_selector: sel.clone(),
            ..Default::default()
        }))
        .await?;
    let mut out = RuntimePod::default();
    for s in sandboxes {
        let ready = s.state == v1::PodSandboxState::SandboxReady as i32;
        let (ip, additional_ips) = if ready {
            match rt.pod_sandbox_status(s.id.clone()).await {
                Ok(st) => {
                    let n = st.network.unwrap_or_default();
                    (
                        Some(n.ip).filter(|i| !i.is_empty()),
                        n.additional_ips.into_iter().map(|i| i.ip).collect(),
                    )
                }
                Err(e) if e.is_not_found() => continue,
                Err(e) => return Err(e),
            }
        } else {
            (None, vec![])
        };
        out.sandboxes.push(SandboxInfo {
            attempt: s.metadata.as_ref().map(|m| m.attempt).unwrap_or(0),
            id: s.id,
            ready,
            created_at: s.created_at,
            ip,
            additional_ips,
        });
    }
    out.sandboxes
        .sort_by_key(|s| std::cmp::Reverse((s.created_at, s.attempt)));
    let containers = rt
        .list_containers(Some(v1::ContainerFilter {
            label_selector: sel,
            ..Default::default()
        }))
        .await?;
    for c in containers {
        let st = match rt.container_status(c.id.clone()).await {
            Ok(s) => s,
            Err(e) if e.is_not_found() => continue,
            Err(e) => return Err(e),
        };
        out.containers.push(from_status(&c.pod_sandbox_id, st));
    }
    out.containers
        .sort_by_key(|c| std::cmp::Reverse((c.restart_count, c.created_at)));
    Ok(out)
}

fn from_status(sandbox_id: &str, s: v1::ContainerStatus) -> ContainerInfo {
    let ann = |k: &str| s.annotations.get(k).cloned().unwrap_or_default();
    ContainerInfo {
        name: s
            .labels
            .get(labels::CONTAINER_NAME)
            .cloned()
            .or_else(|| s.metadata.as_ref().map(|m| m.name.clone()))
            .unwrap_or_default(),
        sandbox_id: sandbox_id.to_string(),
        restart_count: ann(labels::RESTART_COUNT).parse().unwrap_or(0),
        state: State::from(s.state),
        created_at: s.created_at,
        started_at: s.started_at,
        finished_at: s.finished_at,
        exit_code: s.exit_code,
        reason: s.reason,
        message: s.message,
        image: s.image.map(|i| i.image).unwrap_or_default(),
        image_ref: s.image_ref,
        hash: ann(labels::CONTAINER_HASH),
        log_path: s.log_path,
        id: s.id,
    }
}
