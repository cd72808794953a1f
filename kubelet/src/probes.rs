//! Liveness, readiness and startup probes, and lifecycle hooks, as upstream's prober runs them.
//!
//! [`ProbeManager::sync_pod`] keeps one tokio task per (container instance, probe kind). A task
//! waits out `initialDelaySeconds` (counted from the container's start), then probes every
//! `periodSeconds` with `timeoutSeconds`, and only changes the stored result after
//! `successThreshold` / `failureThreshold` equal results in a row. Liveness and readiness wait
//! until the startup probe (if any) has passed. Every failed attempt records an `Unhealthy`
//! Warning event with upstream's message; the pod worker is notified (its uid on `notify`)
//! whenever a stored result changes or a restart is needed. A failed liveness or startup probe
//! leaves a restart request for that container instance and stops probing it, so a container
//! being killed is not probed again. Tasks end when `sync_pod` no longer lists their container
//! instance, or on [`ProbeManager::remove_pod`].

pub mod net;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use component_base::events::{EventRecorder, EventType};
use k8s_openapi::api::core::v1::{
    Container, HTTPGetAction, LifecycleHandler, ObjectReference, Pod, Probe,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::cri::Runtime;
use net::Outcome;

/// A container instance that is running now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunningContainer {
    pub name: String,
    pub id: String,
    pub started_at: SystemTime,
}

/// A container instance to restart after a failed liveness or startup probe.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RestartRequest {
    /// The Killing event's message, e.g. `Container web failed liveness probe, will be restarted`.
    pub message: String,
    /// The failing probe's `terminationGracePeriodSeconds`; `None`: use the pod's.
    pub grace_period: Option<i64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Kind {
    Liveness,
    Readiness,
    Startup,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Liveness => "Liveness",
            Kind::Readiness => "Readiness",
            Kind::Startup => "Startup",
        }
    }
}

struct ContainerProbes {
    id: String,
    /// `None`: no readiness probe.
    ready: Option<bool>,
    /// `None`: no startup probe.
    started: Option<bool>,
    started_tx: watch::Sender<bool>,
    /// Stops every worker of this instance.
    cancel: CancellationToken,
    /// Stops the liveness and startup workers only (pod deletion).
    cancel_liveness: CancellationToken,
}

struct PodProbes {
    pod: Arc<Pod>,
    pod_ip: Option<String>,
    containers: HashMap<String, ContainerProbes>,
    restarts: HashMap<String, RestartRequest>,
}

struct Shared {
    runtime: Arc<dyn Runtime>,
    recorder: EventRecorder,
    notify: mpsc::UnboundedSender<String>,
    pods: Mutex<HashMap<String, PodProbes>>,
}

/// Runs the probes of the node's containers and keeps their results.
pub struct ProbeManager {
    shared: Arc<Shared>,
}

impl ProbeManager {
    pub fn new(
        runtime: Arc<dyn Runtime>,
        recorder: EventRecorder,
        notify: mpsc::UnboundedSender<String>,
    ) -> Arc<Self> {
        Arc::new(ProbeManager {
            shared: Arc::new(Shared {
                runtime,
                recorder,
                notify,
                pods: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// Start/stop probe workers for the pod's containers as they are now. Must be called from
    /// within a tokio runtime.
    pub fn sync_pod(&self, pod: &Pod, containers: &[RunningContainer], pod_ip: Option<&str>) {
        let Some(uid) = pod.metadata.uid.as_deref() else {
            return;
        };
        let deleting = pod.metadata.deletion_timestamp.is_some();
        let mut pods = self.shared.pods.lock().unwrap();
        let st = pods.entry(uid.to_string()).or_insert_with(|| PodProbes {
            pod: Arc::new(pod.clone()),
            pod_ip: None,
            containers: HashMap::new(),
            restarts: HashMap::new(),
        });
        st.pod = Arc::new(pod.clone());
        st.pod_ip = pod_ip.map(str::to_string);

        st.containers.retain(|name, c| {
            let keep = containers.iter().any(|r| &r.name == name && r.id == c.id);
            if !keep {
                c.cancel.cancel();
            }
            keep
        });
        st.restarts
            .retain(|id, _| containers.iter().any(|r| &r.id == id));

        for rc in containers {
            if st.containers.contains_key(&rc.name) {
                continue;
            }
            let Some((spec, sidecar)) = container_spec(pod, &rc.name) else {
                continue;
            };
            let (started_tx, started_rx) = watch::channel(spec.startup_probe.is_none());
            let cancel = CancellationToken::new();
            let cancel_liveness = cancel.child_token();
            let will_restart = sidecar
                || pod.spec.as_ref().and_then(|s| s.restart_policy.as_deref()) != Some("Never");
            let probes = [
                (Kind::Startup, &spec.startup_probe),
                (Kind::Liveness, &spec.liveness_probe),
                (Kind::Readiness, &spec.readiness_probe),
            ];
            for (kind, probe) in probes {
                let Some(probe) = probe.clone() else {
                    continue;
                };
                let token = match kind {
                    Kind::Readiness => cancel.clone(),
                    _ => cancel_liveness.clone(),
                };
                let w = Worker {
                    shared: self.shared.clone(),
                    uid: uid.to_string(),
                    container: spec.clone(),
                    id: rc.id.clone(),
                    kind,
                    probe,
                    started_at: rc.started_at,
                    started: started_rx.clone(),
                    will_restart,
                };
                tokio::spawn(w.run(token));
            }
            st.containers.insert(
                rc.name.clone(),
                ContainerProbes {
                    id: rc.id.clone(),
                    ready: spec.readiness_probe.as_ref().map(|_| false),
                    started: spec.startup_probe.as_ref().map(|_| false),
                    started_tx,
                    cancel,
                    cancel_liveness,
                },
            );
        }

        // A pod being deleted is not restarted: liveness and startup stop, quietly passing.
        if deleting {
            for c in st.containers.values_mut() {
                if !c.cancel_liveness.is_cancelled() {
                    c.cancel_liveness.cancel();
                    if c.started == Some(false) {
                        c.started = Some(true);
                        let _ = c.started_tx.send(true);
                    }
                }
            }
        }
    }

    pub fn remove_pod(&self, uid: &str) {
        if let Some(st) = self.shared.pods.lock().unwrap().remove(uid) {
            for c in st.containers.values() {
                c.cancel.cancel();
            }
        }
    }

    /// Readiness of a container: true if it has no readiness probe and is running (and
    /// started), else the last result (false until the first success).
    pub fn is_ready(&self, uid: &str, container: &str) -> bool {
        self.with_container(uid, container, |c| {
            c.started.unwrap_or(true) && c.ready.unwrap_or(true)
        })
    }

    /// Startup probe passed (or none); false for a container that is not running.
    pub fn is_started(&self, uid: &str, container: &str) -> bool {
        self.with_container(uid, container, |c| c.started.unwrap_or(true))
    }

    /// A failed liveness or startup probe for this container instance: Some(message for the
    /// Killing event, e.g. "Container web failed liveness probe, will be restarted"); consumed
    /// by the caller who restarts the container.
    pub fn take_restart_request(&self, uid: &str, container_id: &str) -> Option<String> {
        self.take_restart(uid, container_id).map(|r| r.message)
    }

    /// [`Self::take_restart_request`] with the probe's grace period.
    pub fn take_restart(&self, uid: &str, container_id: &str) -> Option<RestartRequest> {
        self.shared
            .pods
            .lock()
            .unwrap()
            .get_mut(uid)?
            .restarts
            .remove(container_id)
    }

    fn with_container(
        &self,
        uid: &str,
        name: &str,
        f: impl FnOnce(&ContainerProbes) -> bool,
    ) -> bool {
        let pods = self.shared.pods.lock().unwrap();
        pods.get(uid)
            .and_then(|p| p.containers.get(name))
            .is_some_and(f)
    }
}

/// The spec of container `name`: an app container, or a sidecar (an init container with
/// restartPolicy Always; other init containers have no probes). `true` for sidecars.
fn container_spec(pod: &Pod, name: &str) -> Option<(Container, bool)> {
    let spec = pod.spec.as_ref()?;
    if let Some(c) = spec.containers.iter().find(|c| c.name == name) {
        return Some((c.clone(), false));
    }
    spec.init_containers
        .iter()
        .flatten()
        .find(|c| c.name == name && c.restart_policy.as_deref() == Some("Always"))
        .map(|c| (c.clone(), true))
}

fn seconds(v: Option<i32>, default: i32) -> Duration {
    Duration::from_secs(v.filter(|v| *v > 0).unwrap_or(default) as u64)
}

struct Worker {
    shared: Arc<Shared>,
    uid: String,
    container: Container,
    id: String,
    kind: Kind,
    probe: Probe,
    started_at: SystemTime,
    started: watch::Receiver<bool>,
    will_restart: bool,
}

impl Worker {
    async fn run(mut self, cancel: CancellationToken) {
        cancel.run_until_cancelled(self.probe_loop()).await;
    }

    async fn probe_loop(&mut self) {
        let period = seconds(self.probe.period_seconds, 10);
        let timeout = seconds(self.probe.timeout_seconds, 1);
        let success_threshold = self.probe.success_threshold.unwrap_or(1).max(1) as u32;
        let failure_threshold = self.probe.failure_threshold.unwrap_or(3).max(1) as u32;
        let initial =
            Duration::from_secs(self.probe.initial_delay_seconds.unwrap_or(0).max(0) as u64);
        let running_for = SystemTime::now()
            .duration_since(self.started_at)
            .unwrap_or_default();
        tokio::time::sleep(initial.saturating_sub(running_for)).await;
        if self.kind != Kind::Startup {
            loop {
                let started = *self.started.borrow_and_update();
                if started {
                    break;
                }
                if self.started.changed().await.is_err() {
                    return;
                }
            }
        }
        let mut last: Option<bool> = None;
        let mut run = 0u32;
        loop {
            if let Some(success) = self.probe_once(timeout).await {
                if last == Some(success) {
                    run += 1;
                } else {
                    last = Some(success);
                    run = 1;
                }
                let threshold = if success {
                    success_threshold
                } else {
                    failure_threshold
                };
                if run >= threshold && self.set_result(success) {
                    return;
                }
            }
            tokio::time::sleep(period).await;
        }
    }

    /// One probe with upstream's three tries on errors; records the events. `None`: the probe
    /// errored (the result is thrown away, as upstream).
    async fn probe_once(&self, timeout: Duration) -> Option<bool> {
        let mut outcome = Outcome::Error(String::new());
        for _ in 0..3 {
            let pod_ip = self.pod_ip();
            outcome = run_probe(
                self.shared.runtime.as_ref(),
                &self.probe,
                &self.container,
                &self.id,
                pod_ip.as_deref(),
                timeout,
            )
            .await;
            if !matches!(outcome, Outcome::Error(_)) {
                break;
            }
        }
        let kind = self.kind.as_str();
        match outcome {
            Outcome::Success => Some(true),
            Outcome::Failure(msg) => {
                tracing::debug!(pod_uid = %self.uid, container = %self.container.name, probe = kind, %msg, "probe failed");
                self.event(format!("{kind} probe failed: {msg}"));
                Some(false)
            }
            Outcome::Error(msg) => {
                tracing::debug!(pod_uid = %self.uid, container = %self.container.name, probe = kind, %msg, "probe errored");
                self.event(format!(
                    "{kind} probe errored and resulted in unknown state: {msg}"
                ));
                None
            }
        }
    }

    fn pod_ip(&self) -> Option<String> {
        let pods = self.shared.pods.lock().unwrap();
        pods.get(&self.uid).and_then(|p| p.pod_ip.clone())
    }

    fn event(&self, message: String) {
        let pod = {
            let pods = self.shared.pods.lock().unwrap();
            match pods.get(&self.uid) {
                Some(p) => p.pod.clone(),
                None => return,
            }
        };
        let mut r: ObjectReference = component_base::events::object_reference(pod.as_ref());
        let list = if pod
            .spec
            .as_ref()
            .is_some_and(|s| s.containers.iter().any(|c| c.name == self.container.name))
        {
            "containers"
        } else {
            "initContainers"
        };
        r.field_path = Some(format!("spec.{list}{{{}}}", self.container.name));
        self.shared
            .recorder
            .event_ref(r, EventType::Warning, "Unhealthy", message);
    }

    /// Store a result that crossed its threshold; notify the pod worker when it matters.
    /// Returns whether this worker is done.
    fn set_result(&self, success: bool) -> bool {
        let mut pods = self.shared.pods.lock().unwrap();
        let Some(st) = pods.get_mut(&self.uid) else {
            return true;
        };
        let Some(c) = st
            .containers
            .get_mut(&self.container.name)
            .filter(|c| c.id == self.id)
        else {
            return true;
        };
        let (changed, done) = match (self.kind, success) {
            (Kind::Readiness, ok) => {
                let changed = c.ready != Some(ok);
                c.ready = Some(ok);
                (changed, false)
            }
            (Kind::Startup, true) => {
                c.started = Some(true);
                let _ = c.started_tx.send(true);
                (true, true)
            }
            (Kind::Liveness, true) => (false, false),
            (kind, false) => {
                let what = if kind == Kind::Liveness {
                    "liveness"
                } else {
                    "startup"
                };
                let mut message = format!("Container {} failed {what} probe", self.container.name);
                if self.will_restart {
                    message.push_str(", will be restarted");
                }
                st.restarts.insert(
                    self.id.clone(),
                    RestartRequest {
                        message,
                        grace_period: self.probe.termination_grace_period_seconds,
                    },
                );
                (true, true)
            }
        };
        drop(pods);
        if changed {
            let _ = self.shared.notify.send(self.uid.clone());
        }
        done
    }
}

/// The port of `port` in `container`: a number, or the name of one of its ports.
pub fn resolve_port(port: &IntOrString, container: &Container) -> Result<u16, String> {
    let n = match port {
        IntOrString::Int(n) => *n,
        IntOrString::String(name) => container
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some(name.as_str()))
            .map(|p| p.container_port)
            .or_else(|| name.parse().ok())
            .ok_or_else(|| format!("port {name} not found"))?,
    };
    u16::try_from(n)
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| format!("invalid port number: {n}"))
}

fn http_request(
    h: &HTTPGetAction,
    port: u16,
    pod_ip: Option<&str>,
) -> Result<net::HttpGet, String> {
    let host = h
        .host
        .clone()
        .filter(|h| !h.is_empty())
        .or_else(|| pod_ip.map(str::to_string))
        .ok_or("pod has no IP address yet")?;
    Ok(net::HttpGet {
        https: h
            .scheme
            .as_deref()
            .is_some_and(|s| s.eq_ignore_ascii_case("HTTPS")),
        host,
        port,
        path: net::normalize_path(h.path.as_deref()),
        headers: h
            .http_headers
            .iter()
            .flatten()
            .map(|x| (x.name.clone(), x.value.clone()))
            .collect(),
    })
}

/// Run one probe of `container` (instance `container_id`) within `timeout`.
async fn run_probe(
    runtime: &dyn Runtime,
    probe: &Probe,
    container: &Container,
    container_id: &str,
    pod_ip: Option<&str>,
    timeout: Duration,
) -> Outcome {
    if let Some(e) = &probe.exec {
        let cmd = e.command.clone().unwrap_or_default();
        let display = cmd.join(" ");
        let call = runtime.exec_sync(container_id.to_string(), cmd, timeout.as_secs() as i64);
        // The runtime enforces the timeout; ours is a backstop should it hang.
        return match tokio::time::timeout(timeout + Duration::from_secs(2), call).await {
            Err(_) => Outcome::Failure(format!("command {display:?} timed out")),
            Ok(Err(e)) if e.code() == tonic::Code::DeadlineExceeded => {
                Outcome::Failure(format!("command {display:?} timed out"))
            }
            Ok(Err(e)) => Outcome::Error(e.to_string()),
            Ok(Ok(r)) if r.exit_code == 0 => Outcome::Success,
            Ok(Ok(r)) => {
                let mut out = r.stdout;
                out.extend_from_slice(&r.stderr);
                out.truncate(10 * 1024);
                Outcome::Failure(String::from_utf8_lossy(&out).into_owned())
            }
        };
    }
    if let Some(h) = &probe.http_get {
        let req = match resolve_port(&h.port, container).and_then(|p| http_request(h, p, pod_ip)) {
            Ok(r) => r,
            Err(e) => return Outcome::Error(e),
        };
        let url = req.url();
        return match tokio::time::timeout(timeout, net::http_probe(req)).await {
            Ok(o) => o,
            Err(_) => Outcome::Failure(format!(
                "Get {url:?}: context deadline exceeded (Client.Timeout exceeded while awaiting headers)"
            )),
        };
    }
    if let Some(t) = &probe.tcp_socket {
        let port = match resolve_port(&t.port, container) {
            Ok(p) => p,
            Err(e) => return Outcome::Error(e),
        };
        let Some(host) = t.host.as_deref().filter(|h| !h.is_empty()).or(pod_ip) else {
            return Outcome::Error("pod has no IP address yet".into());
        };
        return net::tcp_probe(host, port, timeout).await;
    }
    if let Some(g) = &probe.grpc {
        let Ok(port) = u16::try_from(g.port) else {
            return Outcome::Error(format!("invalid port number: {}", g.port));
        };
        let Some(host) = pod_ip else {
            return Outcome::Error("pod has no IP address yet".into());
        };
        let service = g.service.as_deref().unwrap_or_default();
        let tls = g.mode.as_deref() == Some("TLS");
        return net::grpc_probe(host, port, service, tls, timeout).await;
    }
    Outcome::Error(format!(
        "missing probe handler for container {}",
        container.name
    ))
}

/// `handler` with named ports replaced by the container's port numbers, for [`run_handler`].
pub fn resolve_handler_ports(
    handler: &LifecycleHandler,
    container: &Container,
) -> Result<LifecycleHandler, String> {
    let mut h = handler.clone();
    if let Some(g) = h.http_get.as_mut() {
        g.port = IntOrString::Int(resolve_port(&g.port, container)?.into());
    }
    if let Some(t) = h.tcp_socket.as_mut() {
        t.port = IntOrString::Int(resolve_port(&t.port, container)?.into());
    }
    Ok(h)
}

/// The FailedPostStartHook / FailedPreStopHook event message for a [`run_handler`] error, as
/// upstream words it (`pod` as `name_namespace(uid)`).
pub fn handler_failure_message(
    handler: &LifecycleHandler,
    container: &str,
    pod: &str,
    err: &str,
) -> String {
    if let Some(e) = &handler.exec {
        let cmd = e.command.clone().unwrap_or_default();
        format!(
            "Exec lifecycle hook ([{}]) for Container {container:?} in Pod {pod:?} failed - {err}",
            cmd.join(" ")
        )
    } else if let Some(h) = &handler.http_get {
        format!(
            "HTTP lifecycle hook ({}) for Container {container:?} in Pod {pod:?} failed - {err}",
            h.path.as_deref().unwrap_or_default()
        )
    } else if handler.sleep.is_some() {
        format!("Sleep lifecycle hook for Container {container:?} in Pod {pod:?} failed - {err}")
    } else {
        format!("Cannot run handler: {err}")
    }
}

/// Run a lifecycle handler (postStart/preStop): exec via ExecSync, httpGet, tcpSocket, sleep;
/// all within `timeout`. Named ports must be resolved first ([`resolve_handler_ports`]). The
/// error is the part after "failed - " of upstream's event message (see
/// [`handler_failure_message`]).
pub async fn run_handler(
    runtime: &dyn Runtime,
    handler: &LifecycleHandler,
    container_id: &str,
    pod_ip: Option<&str>,
    timeout: Duration,
) -> Result<(), String> {
    let port_of = |p: &IntOrString| match p {
        IntOrString::Int(n) => u16::try_from(*n)
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| format!("error: invalid port number: {n}")),
        IntOrString::String(s) => s
            .parse::<u16>()
            .map_err(|_| format!("error: unresolved named port {s:?}")),
    };
    let work = async {
        if let Some(e) = &handler.exec {
            let cmd = e.command.clone().unwrap_or_default();
            let secs = timeout.as_secs() as i64;
            let r = runtime
                .exec_sync(container_id.to_string(), cmd.clone(), secs)
                .await
                .map_err(|e| format!("error: {e}, message: \"\""))?;
            if r.exit_code != 0 {
                let stderr = String::from_utf8_lossy(&r.stderr).into_owned();
                let mut out = r.stdout.clone();
                out.extend_from_slice(&r.stderr);
                return Err(format!(
                    "error: command '{}' exited with {}: {stderr}, message: {:?}",
                    cmd.join(" "),
                    r.exit_code,
                    String::from_utf8_lossy(&out)
                ));
            }
            Ok(())
        } else if let Some(h) = &handler.http_get {
            let port = port_of(&h.port)?;
            let req = http_request(h, port, pod_ip).map_err(|e| format!("error: {e}"))?;
            net::http_hook(req).await.map_err(|e| format!("error: {e}"))
        } else if let Some(t) = &handler.tcp_socket {
            let port = port_of(&t.port)?;
            let host = t
                .host
                .as_deref()
                .filter(|h| !h.is_empty())
                .or(pod_ip)
                .ok_or("error: pod has no IP address yet")?;
            match net::tcp_probe(host, port, timeout).await {
                Outcome::Success => Ok(()),
                Outcome::Failure(e) | Outcome::Error(e) => Err(format!("error: {e}")),
            }
        } else if let Some(s) = &handler.sleep {
            tokio::time::sleep(Duration::from_secs(s.seconds.max(0) as u64)).await;
            Ok(())
        } else {
            Err("invalid handler: no action".to_string())
        }
    };
    match tokio::time::timeout(timeout, work).await {
        Ok(r) => r,
        Err(_) => Err(format!(
            "error: hook did not complete within {}s",
            timeout.as_secs()
        )),
    }
}

#[cfg(test)]
mod tests;
