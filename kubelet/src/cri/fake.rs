//! A recording, in-memory [`Runtime`] for unit tests of the kubelet's decision logic.
//!
//! It keeps sandboxes, containers and images as a runtime would (ids, states, timestamps,
//! labels and annotations echoed back), records every call as a short line (`"RunPodSandbox
//! web"`, `"StartContainer app"`), and lets a test inject failures (`fail_next`) and container
//! exits (`exit_container`).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use futures::future::BoxFuture;
use futures::FutureExt;

use super::{v1, CriError, CriResult, Runtime};

#[derive(Default)]
struct State {
    sandboxes: BTreeMap<String, (v1::PodSandboxConfig, v1::PodSandboxState, i64)>,
    containers: BTreeMap<String, FakeContainer>,
    images: HashSet<String>,
    failures: HashMap<&'static str, String>,
    calls: Vec<String>,
}

#[derive(Clone)]
struct FakeContainer {
    sandbox: String,
    config: v1::ContainerConfig,
    state: v1::ContainerState,
    created_at: i64,
    started_at: i64,
    finished_at: i64,
    exit_code: i32,
    reason: String,
}

#[derive(Default)]
pub struct FakeRuntime {
    state: Mutex<State>,
    next_id: AtomicU64,
    clock: AtomicU64,
}

impl FakeRuntime {
    pub fn new() -> Self {
        Self::default()
    }

    /// Images the fake reports as present.
    pub fn with_images(self, images: &[&str]) -> Self {
        self.state
            .lock()
            .unwrap()
            .images
            .extend(images.iter().map(|s| s.to_string()));
        self
    }

    /// The calls made so far, oldest first.
    pub fn calls(&self) -> Vec<String> {
        self.state.lock().unwrap().calls.clone()
    }

    pub fn clear_calls(&self) {
        self.state.lock().unwrap().calls.clear();
    }

    /// Make the next call of `method` (e.g. `"StartContainer"`) fail with `message`.
    pub fn fail_next(&self, method: &'static str, message: &str) {
        self.state
            .lock()
            .unwrap()
            .failures
            .insert(method, message.to_string());
    }

    /// Mark the running container named `name` as exited with `code` (and a reason such as
    /// `OOMKilled`, or empty).
    pub fn exit_container(&self, name: &str, code: i32, reason: &str) {
        let now = self.tick();
        let mut s = self.state.lock().unwrap();
        for c in s.containers.values_mut() {
            let cname = c.config.metadata.as_ref().map(|m| m.name.as_str());
            if cname == Some(name) && c.state == v1::ContainerState::ContainerRunning {
                c.state = v1::ContainerState::ContainerExited;
                c.finished_at = now;
                c.exit_code = code;
                c.reason = reason.to_string();
            }
        }
    }

    fn tick(&self) -> i64 {
        (self.clock.fetch_add(1, Ordering::SeqCst) as i64 + 1) * 1_000_000_000
    }

    fn id(&self, prefix: &str) -> String {
        format!(
            "{prefix}{}",
            self.next_id.fetch_add(1, Ordering::SeqCst) + 1
        )
    }

    fn record(&self, method: &'static str, detail: &str) -> CriResult<()> {
        let mut s = self.state.lock().unwrap();
        s.calls.push(if detail.is_empty() {
            method.to_string()
        } else {
            format!("{method} {detail}")
        });
        match s.failures.remove(method) {
            Some(m) => Err(CriError::Status(tonic::Status::unknown(m))),
            None => Ok(()),
        }
    }

    fn container_name(&self, id: &str) -> String {
        let s = self.state.lock().unwrap();
        s.containers
            .get(id)
            .and_then(|c| c.config.metadata.as_ref())
            .map(|m| m.name.clone())
            .unwrap_or_else(|| id.to_string())
    }

    fn sandbox_name(&self, id: &str) -> String {
        let s = self.state.lock().unwrap();
        s.sandboxes
            .get(id)
            .and_then(|(c, _, _)| c.metadata.as_ref())
            .map(|m| m.name.clone())
            .unwrap_or_else(|| id.to_string())
    }
}

fn not_found(what: &str, id: &str) -> CriError {
    CriError::Status(tonic::Status::not_found(format!("{what} {id:?} not found")))
}

fn ready<T: Send + 'static>(v: CriResult<T>) -> BoxFuture<'static, CriResult<T>> {
    futures::future::ready(v).boxed()
}

fn matches(labels_: &HashMap<String, String>, selector: &HashMap<String, String>) -> bool {
    selector.iter().all(|(k, v)| labels_.get(k) == Some(v))
}

impl Runtime for FakeRuntime {
    fn version(&self) -> BoxFuture<'_, CriResult<v1::VersionResponse>> {
        ready(Ok(v1::VersionResponse {
            version: "0.1.0".into(),
            runtime_name: "fake".into(),
            runtime_version: "0.0.1".into(),
            runtime_api_version: "v1".into(),
        }))
    }

    fn status(&self) -> BoxFuture<'_, CriResult<v1::StatusResponse>> {
        let cond = |t: &str| v1::RuntimeCondition {
            r#type: t.into(),
            status: true,
            ..Default::default()
        };
        ready(Ok(v1::StatusResponse {
            status: Some(v1::RuntimeStatus {
                conditions: vec![cond("RuntimeReady"), cond("NetworkReady")],
            }),
            info: Default::default(),
        }))
    }

    fn run_pod_sandbox(
        &self,
        config: v1::PodSandboxConfig,
        _handler: String,
    ) -> BoxFuture<'_, CriResult<String>> {
        let name = config
            .metadata
            .as_ref()
            .map(|m| m.name.clone())
            .unwrap_or_default();
        let r = self.record("RunPodSandbox", &name).map(|_| {
            let id = self.id("sandbox-");
            let now = self.tick();
            self.state
                .lock()
                .unwrap()
                .sandboxes
                .insert(id.clone(), (config, v1::PodSandboxState::SandboxReady, now));
            id
        });
        ready(r)
    }

    fn stop_pod_sandbox(&self, id: String) -> BoxFuture<'_, CriResult<()>> {
        let name = self.sandbox_name(&id);
        let r = self.record("StopPodSandbox", &name).map(|_| {
            let now = self.tick();
            let mut s = self.state.lock().unwrap();
            if let Some(sb) = s.sandboxes.get_mut(&id) {
                sb.1 = v1::PodSandboxState::SandboxNotready;
            }
            for c in s.containers.values_mut() {
                if c.sandbox == id && c.state == v1::ContainerState::ContainerRunning {
                    c.state = v1::ContainerState::ContainerExited;
                    c.finished_at = now;
                    c.exit_code = 137;
                }
            }
        });
        ready(r)
    }

    fn remove_pod_sandbox(&self, id: String) -> BoxFuture<'_, CriResult<()>> {
        let name = self.sandbox_name(&id);
        let r = self.record("RemovePodSandbox", &name).map(|_| {
            let mut s = self.state.lock().unwrap();
            s.sandboxes.remove(&id);
            s.containers.retain(|_, c| c.sandbox != id);
        });
        ready(r)
    }

    fn pod_sandbox_status(&self, id: String) -> BoxFuture<'_, CriResult<v1::PodSandboxStatus>> {
        let s = self.state.lock().unwrap();
        let r = match s.sandboxes.get(&id) {
            Some((c, st, created)) => Ok(v1::PodSandboxStatus {
                id: id.clone(),
                metadata: c.metadata.clone(),
                state: *st as i32,
                created_at: *created,
                network: Some(v1::PodSandboxNetworkStatus {
                    ip: "10.244.0.10".into(),
                    additional_ips: vec![],
                }),
                labels: c.labels.clone(),
                annotations: c.annotations.clone(),
                ..Default::default()
            }),
            None => Err(not_found("sandbox", &id)),
        };
        ready(r)
    }

    fn list_pod_sandbox(
        &self,
        filter: Option<v1::PodSandboxFilter>,
    ) -> BoxFuture<'_, CriResult<Vec<v1::PodSandbox>>> {
        let s = self.state.lock().unwrap();
        let f = filter.unwrap_or_default();
        let items = s
            .sandboxes
            .iter()
            .filter(|(id, (c, st, _))| {
                (f.id.is_empty() || &f.id == *id)
                    && f.state.as_ref().is_none_or(|v| v.state == *st as i32)
                    && matches(&c.labels, &f.label_selector)
            })
            .map(|(id, (c, st, created))| v1::PodSandbox {
                id: id.clone(),
                metadata: c.metadata.clone(),
                state: *st as i32,
                created_at: *created,
                labels: c.labels.clone(),
                annotations: c.annotations.clone(),
                runtime_handler: String::new(),
            })
            .collect();
        ready(Ok(items))
    }

    fn create_container(
        &self,
        sandbox_id: String,
        config: v1::ContainerConfig,
        _sandbox_config: v1::PodSandboxConfig,
    ) -> BoxFuture<'_, CriResult<String>> {
        let name = config
            .metadata
            .as_ref()
            .map(|m| m.name.clone())
            .unwrap_or_default();
        let r = self.record("CreateContainer", &name).and_then(|_| {
            let now = self.tick();
            let id = self.id("container-");
            let mut s = self.state.lock().unwrap();
            if !s.sandboxes.contains_key(&sandbox_id) {
                return Err(not_found("sandbox", &sandbox_id));
            }
            s.containers.insert(
                id.clone(),
                FakeContainer {
                    sandbox: sandbox_id,
                    config,
                    state: v1::ContainerState::ContainerCreated,
                    created_at: now,
                    started_at: 0,
                    finished_at: 0,
                    exit_code: 0,
                    reason: String::new(),
                },
            );
            Ok(id)
        });
        ready(r)
    }

    fn start_container(&self, id: String) -> BoxFuture<'_, CriResult<()>> {
        let name = self.container_name(&id);
        let r = self.record("StartContainer", &name).and_then(|_| {
            let now = self.tick();
            let mut s = self.state.lock().unwrap();
            let c = s
                .containers
                .get_mut(&id)
                .ok_or_else(|| not_found("container", &id))?;
            c.state = v1::ContainerState::ContainerRunning;
            c.started_at = now;
            Ok(())
        });
        ready(r)
    }

    fn stop_container(&self, id: String, timeout: i64) -> BoxFuture<'_, CriResult<()>> {
        let name = self.container_name(&id);
        let r = self
            .record("StopContainer", &format!("{name} {timeout}"))
            .map(|_| {
                let now = self.tick();
                let mut s = self.state.lock().unwrap();
                if let Some(c) = s.containers.get_mut(&id) {
                    if c.state == v1::ContainerState::ContainerRunning {
                        c.state = v1::ContainerState::ContainerExited;
                        c.finished_at = now;
                        c.exit_code = 137;
                    }
                }
            });
        ready(r)
    }

    fn remove_container(&self, id: String) -> BoxFuture<'_, CriResult<()>> {
        let name = self.container_name(&id);
        let r = self.record("RemoveContainer", &name).map(|_| {
            self.state.lock().unwrap().containers.remove(&id);
        });
        ready(r)
    }

    fn list_containers(
        &self,
        filter: Option<v1::ContainerFilter>,
    ) -> BoxFuture<'_, CriResult<Vec<v1::Container>>> {
        let s = self.state.lock().unwrap();
        let f = filter.unwrap_or_default();
        let items = s
            .containers
            .iter()
            .filter(|(id, c)| {
                (f.id.is_empty() || &f.id == *id)
                    && (f.pod_sandbox_id.is_empty() || f.pod_sandbox_id == c.sandbox)
                    && f.state.as_ref().is_none_or(|v| v.state == c.state as i32)
                    && matches(&c.config.labels, &f.label_selector)
            })
            .map(|(id, c)| v1::Container {
                id: id.clone(),
                pod_sandbox_id: c.sandbox.clone(),
                metadata: c.config.metadata.clone(),
                image: c.config.image.clone(),
                image_ref: c
                    .config
                    .image
                    .as_ref()
                    .map(|i| i.image.clone())
                    .unwrap_or_default(),
                state: c.state as i32,
                created_at: c.created_at,
                labels: c.config.labels.clone(),
                annotations: c.config.annotations.clone(),
                image_id: String::new(),
            })
            .collect();
        ready(Ok(items))
    }

    fn container_status(&self, id: String) -> BoxFuture<'_, CriResult<v1::ContainerStatus>> {
        let s = self.state.lock().unwrap();
        let r = match s.containers.get(&id) {
            Some(c) => Ok(v1::ContainerStatus {
                id: id.clone(),
                metadata: c.config.metadata.clone(),
                state: c.state as i32,
                created_at: c.created_at,
                started_at: c.started_at,
                finished_at: c.finished_at,
                exit_code: c.exit_code,
                image: c.config.image.clone(),
                image_ref: format!(
                    "sha256:{}",
                    c.config.image.as_ref().map(|i| i.image.len()).unwrap_or(0)
                ),
                reason: c.reason.clone(),
                labels: c.config.labels.clone(),
                annotations: c.config.annotations.clone(),
                log_path: c.config.log_path.clone(),
                ..Default::default()
            }),
            None => Err(not_found("container", &id)),
        };
        ready(r)
    }

    fn exec_sync(
        &self,
        id: String,
        cmd: Vec<String>,
        _timeout: i64,
    ) -> BoxFuture<'_, CriResult<v1::ExecSyncResponse>> {
        let name = self.container_name(&id);
        let r = self
            .record("ExecSync", &format!("{name} {}", cmd.join(" ")))
            .map(|_| v1::ExecSyncResponse {
                stdout: vec![],
                stderr: vec![],
                exit_code: 0,
            });
        ready(r)
    }

    fn exec(&self, r: v1::ExecRequest) -> BoxFuture<'_, CriResult<String>> {
        ready(
            self.record("Exec", &r.cmd.join(" "))
                .map(|_| "http://127.0.0.1:1/exec/token".to_string()),
        )
    }

    fn attach(&self, _r: v1::AttachRequest) -> BoxFuture<'_, CriResult<String>> {
        ready(
            self.record("Attach", "")
                .map(|_| "http://127.0.0.1:1/attach/token".to_string()),
        )
    }

    fn port_forward(
        &self,
        _sandbox_id: String,
        _ports: Vec<i32>,
    ) -> BoxFuture<'_, CriResult<String>> {
        ready(
            self.record("PortForward", "")
                .map(|_| "http://127.0.0.1:1/portforward/token".to_string()),
        )
    }

    fn list_container_stats(&self) -> BoxFuture<'_, CriResult<Vec<v1::ContainerStats>>> {
        ready(Ok(vec![]))
    }

    fn image_status(&self, image: String) -> BoxFuture<'_, CriResult<Option<v1::Image>>> {
        let present = {
            let s = self.state.lock().unwrap();
            s.images.contains(&image)
        };
        let r = self.record("ImageStatus", &image).map(|_| {
            present.then(|| v1::Image {
                id: format!("sha256:{}", image.len()),
                repo_tags: vec![image.clone()],
                size: 1,
                ..Default::default()
            })
        });
        ready(r)
    }

    fn pull_image(
        &self,
        image: String,
        _auth: Option<v1::AuthConfig>,
        _sandbox_config: Option<v1::PodSandboxConfig>,
    ) -> BoxFuture<'_, CriResult<String>> {
        let r = self.record("PullImage", &image).map(|_| {
            self.state.lock().unwrap().images.insert(image.clone());
            format!("sha256:{}", image.len())
        });
        ready(r)
    }

    fn list_images(&self) -> BoxFuture<'_, CriResult<Vec<v1::Image>>> {
        let s = self.state.lock().unwrap();
        let v = s
            .images
            .iter()
            .map(|i| v1::Image {
                id: format!("sha256:{}", i.len()),
                repo_tags: vec![i.clone()],
                size: 1,
                ..Default::default()
            })
            .collect();
        ready(Ok(v))
    }

    fn remove_image(&self, image: String) -> BoxFuture<'_, CriResult<()>> {
        let r = self.record("RemoveImage", &image).map(|_| {
            self.state.lock().unwrap().images.remove(&image);
        });
        ready(r)
    }

    fn image_fs_info(&self) -> BoxFuture<'_, CriResult<v1::ImageFsInfoResponse>> {
        ready(Ok(v1::ImageFsInfoResponse::default()))
    }
}
