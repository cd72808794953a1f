//! One pod's sync: apply the decided actions through the runtime (sandbox, images, env,
//! mounts, create/start with events), terminate gracefully on deletion, clean up what a gone
//! pod left, and report status. Called only from the pod's own worker task, so the steps for
//! one pod never interleave.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use component_base::events::{object_reference, EventRecorder, EventType};
use futures::future::join_all;
use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, PodStatus, Secret, Service};
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, Preconditions};
use kube::Api;
use tracing::{debug, info, warn};

use super::actions::{self, PodActions};
use super::backoff::{go_duration, RestartBackoff};
use super::env::{self, EnvSources, NodeAllocatable};
use super::runtime_pod::{self, ContainerInfo, RuntimePod, State};
use super::spec::{self, ContainerParams, ResolvConf};
use super::status::{self, Waiting};
use crate::cri::{labels, CriError, Runtime};
use crate::images::{self, ImageError, ImageOutcome, PullBackoff};
use crate::probes::{ProbeManager, RunningContainer};
use crate::volumes::{HostVolume, VolumeManager};
use crate::{Config, PodStore};

/// Everything the pod workers share.
pub struct Ctx {
    pub cfg: Arc<Config>,
    pub client: kube::Client,
    pub runtime: Arc<dyn Runtime>,
    pub recorder: EventRecorder,
    pub volumes: VolumeManager,
    pub probes: Arc<ProbeManager>,
    pub store: PodStore,
    pub restart_backoff: RestartBackoff,
    pub pull_backoff: PullBackoff,
    pub host_dns: ResolvConf,
    pub node_ip: String,
    pub node: NodeAllocatable,
    pub runtime_name: String,
}

/// Per-pod memory of the worker between syncs.
#[derive(Default)]
pub struct PodState {
    pub waiting: HashMap<String, Waiting>,
    pub init_failed: bool,
    /// The last status written, to skip identical writes before the watch catches up.
    pub last_status: Option<PodStatus>,
    /// Final delete sent.
    pub deleted: bool,
    /// Sync again this soon (a back-off that ends, a failed step), instead of waiting for
    /// the periodic resync.
    pub retry_after: Option<Duration>,
}

impl PodState {
    fn retry_in(&mut self, d: Duration) {
        self.retry_after = Some(self.retry_after.map_or(d, |r| r.min(d)));
    }
}

fn now_nanos() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

fn container_ref(pod: &Pod, c: &str, init: bool) -> k8s_openapi::api::core::v1::ObjectReference {
    let mut r = object_reference(pod);
    r.field_path = Some(if init {
        format!("spec.initContainers{{{c}}}")
    } else {
        format!("spec.containers{{{c}}}")
    });
    r
}

fn pod_full_name(pod: &Pod) -> String {
    format!(
        "{}_{}({})",
        spec::name(pod),
        spec::namespace(pod),
        spec::uid(pod)
    )
}

fn grace_of(pod: &Pod) -> i64 {
    pod.metadata
        .deletion_grace_period_seconds
        .or_else(|| {
            pod.spec
                .as_ref()
                .and_then(|s| s.termination_grace_period_seconds)
        })
        .unwrap_or(30)
        .max(0)
}

impl Ctx {
    fn event(&self, pod: &Pod, t: EventType, reason: &str, msg: impl Into<String>) {
        self.recorder.event(pod, t, reason, msg);
    }

    fn cevent(
        &self,
        pod: &Pod,
        c: &str,
        init: bool,
        t: EventType,
        reason: &str,
        msg: impl Into<String>,
    ) {
        self.recorder
            .event_ref(container_ref(pod, c, init), t, reason, msg);
    }

    /// Sync a pod that exists in the API and is not being deleted.
    pub async fn sync(&self, pod: &Pod, st: &mut PodState) -> Result<(), CriError> {
        let uid = spec::uid(pod).to_string();
        let terminal = matches!(
            pod.status.as_ref().and_then(|s| s.phase.as_deref()),
            Some("Succeeded" | "Failed")
        );
        if terminal {
            let rp = runtime_pod::get(&*self.runtime, &uid).await?;
            if rp.running().next().is_some() || rp.sandboxes.iter().any(|s| s.ready) {
                self.kill_pod(pod, &rp, grace_of(pod)).await;
            }
            self.probes.remove_pod(&uid);
            return Ok(());
        }

        let volumes = match self.volumes.mount_pod(pod).await {
            Ok(v) => v,
            Err(e) => {
                self.event(pod, EventType::Warning, "FailedMount", e.to_string());
                let rp = runtime_pod::get(&*self.runtime, &uid).await?;
                self.report_status(pod, &rp, st, false).await;
                return Ok(());
            }
        };

        let mut rp = runtime_pod::get(&*self.runtime, &uid).await?;
        let graces = std::cell::RefCell::new(HashMap::new());
        let mut acts = actions::compute(pod, &rp, spec::container_hash, |id| {
            self.probes.take_restart(&uid, id).map(|r| {
                graces.borrow_mut().insert(id.to_string(), r.grace_period);
                r.message
            })
        });
        for k in &mut acts.kill {
            k.grace_period = graces.borrow().get(&k.id).copied().flatten();
        }
        debug!(pod = %pod_full_name(pod), ?acts, "sync");
        if acts.init_failed {
            st.init_failed = true;
        }
        self.apply(pod, &mut rp, &acts, &volumes, st).await?;

        let rp = if acts == PodActions::default() {
            rp
        } else {
            runtime_pod::get(&*self.runtime, &uid).await?
        };
        self.gc_instances(&rp).await;
        match status::attach_hold(pod, &rp, now_nanos()) {
            Some(d) => st.retry_in(d),
            None => self.report_status(pod, &rp, st, false).await,
        }
        let sandbox_ip = rp.sandbox().and_then(|s| s.ip.clone());
        let pod_ip = if spec::host_network(pod) {
            Some(self.node_ip.clone())
        } else {
            sandbox_ip
        };
        let running: Vec<RunningContainer> = rp
            .running()
            .map(|c| RunningContainer {
                name: c.name.clone(),
                id: c.id.clone(),
                started_at: UNIX_EPOCH + Duration::from_nanos(c.started_at.max(0) as u64),
            })
            .collect();
        self.probes.sync_pod(pod, &running, pod_ip.as_deref());
        Ok(())
    }

    async fn apply(
        &self,
        pod: &Pod,
        rp: &mut RuntimePod,
        a: &PodActions,
        volumes: &HashMap<String, HostVolume>,
        st: &mut PodState,
    ) -> Result<(), CriError> {
        let uid = spec::uid(pod).to_string();
        let grace = pod
            .spec
            .as_ref()
            .and_then(|s| s.termination_grace_period_seconds)
            .unwrap_or(30);
        for k in &a.kill {
            self.cevent(
                pod,
                &k.name,
                false,
                EventType::Normal,
                "Killing",
                &k.message,
            );
            self.stop_container(pod, &k.name, &k.id, k.grace_period.unwrap_or(grace))
                .await;
        }
        if a.kill_pod {
            self.kill_pod(pod, rp, grace).await;
        }
        if !a.create_sandbox && a.next_init.is_none() && a.start.is_empty() {
            return Ok(());
        }
        let sandbox_cfg = spec::sandbox_config(pod, a.sandbox_attempt, &self.cfg, &self.host_dns);
        if a.create_sandbox {
            std::fs::create_dir_all(spec::pod_log_dir(&self.cfg, pod))?;
            match self
                .runtime
                .run_pod_sandbox(sandbox_cfg.clone(), String::new())
                .await
            {
                Ok(id) => {
                    debug!(pod = %pod_full_name(pod), sandbox = %id, "sandbox created");
                }
                Err(e) => {
                    self.event(
                        pod,
                        EventType::Warning,
                        "FailedCreatePodSandBox",
                        format!("Failed to create pod sandbox: {e}"),
                    );
                    return Err(e);
                }
            }
            *rp = runtime_pod::get(&*self.runtime, &uid).await?;
        }
        let Some(sandbox) = rp.sandbox().cloned().filter(|s| s.ready) else {
            return Ok(());
        };
        // The sandbox config of the existing sandbox (its attempt) goes with CreateContainer.
        let sandbox_cfg = if a.create_sandbox {
            sandbox_cfg
        } else {
            spec::sandbox_config(pod, sandbox.attempt, &self.cfg, &self.host_dns)
        };
        let pod_ips: Vec<String> = if spec::host_network(pod) {
            vec![self.node_ip.clone()]
        } else {
            sandbox
                .ip
                .iter()
                .cloned()
                .chain(sandbox.additional_ips.iter().cloned())
                .collect()
        };
        let pod_dir = spec::pod_dir(&self.cfg, &uid);
        std::fs::create_dir_all(&pod_dir)?;
        let hosts = pod_dir.join("etc-hosts");
        let content = spec::hosts_file(pod, &pod_ips, &self.cfg.cluster_domain);
        if std::fs::read_to_string(&hosts).ok().as_deref() != Some(content.as_str()) {
            std::fs::write(&hosts, content)?;
        }
        let podspec = pod.spec.clone().unwrap_or_default();
        let env_sources = self.env_sources(pod).await;
        let pod_ip = pod_ips.first().cloned().unwrap_or_default();
        let targets: Vec<(&Container, bool)> = match a.next_init {
            Some(i) => podspec
                .init_containers
                .as_ref()
                .and_then(|v| v.get(i))
                .map(|c| vec![(c, true)])
                .unwrap_or_default(),
            None => a
                .start
                .iter()
                .filter_map(|i| podspec.containers.get(*i))
                .map(|c| (c, false))
                .collect(),
        };
        for (c, init) in targets {
            let r = self
                .start_one(
                    pod,
                    c,
                    init,
                    rp,
                    &sandbox.id,
                    &sandbox_cfg,
                    volumes,
                    &hosts,
                    &env_sources,
                    &pod_ip,
                    st,
                )
                .await;
            match r {
                Ok(()) => {
                    st.waiting.remove(&c.name);
                }
                Err(w) => {
                    if w.reason != "CrashLoopBackOff" {
                        st.retry_in(Duration::from_secs(2));
                    }
                    st.waiting.insert(c.name.clone(), w);
                }
            }
        }
        Ok(())
    }

    /// ConfigMaps, Secrets and Services the pod's environment may refer to.
    async fn env_sources(&self, pod: &Pod) -> EnvSources {
        let ns = spec::namespace(pod);
        let (cms, secrets) = env::referenced(pod);
        let mut src = EnvSources::default();
        let cm_api: Api<ConfigMap> = Api::namespaced(self.client.clone(), ns);
        for n in cms {
            let v = cm_api.get_opt(&n).await.ok().flatten();
            src.config_maps.insert(n, v);
        }
        let s_api: Api<Secret> = Api::namespaced(self.client.clone(), ns);
        for n in secrets {
            let v = s_api.get_opt(&n).await.ok().flatten();
            src.secrets.insert(n, v);
        }
        let links = pod
            .spec
            .as_ref()
            .and_then(|s| s.enable_service_links)
            .unwrap_or(true);
        if links {
            if let Ok(l) = Api::<Service>::namespaced(self.client.clone(), ns)
                .list(&ListParams::default())
                .await
            {
                src.services.extend(l.items);
            }
        }
        if ns != "default" || !links {
            if let Ok(Some(k)) = Api::<Service>::namespaced(self.client.clone(), "default")
                .get_opt("kubernetes")
                .await
            {
                src.services.push(k);
            }
        }
        src
    }

    #[allow(clippy::too_many_arguments)]
    async fn start_one(
        &self,
        pod: &Pod,
        c: &Container,
        init: bool,
        rp: &RuntimePod,
        sandbox_id: &str,
        sandbox_cfg: &crate::cri::v1::PodSandboxConfig,
        volumes: &HashMap<String, HostVolume>,
        hosts: &std::path::Path,
        env_sources: &EnvSources,
        pod_ip: &str,
        st: &mut PodState,
    ) -> Result<(), Waiting> {
        let uid = spec::uid(pod);
        let key = format!("{uid}/{}", c.name);
        let latest = rp.latest(&c.name);
        let restart_count = latest.map(|l| l.restart_count + 1).unwrap_or(0);
        if let Some(l) = latest.filter(|l| l.state == State::Exited) {
            if let Some(left) =
                self.restart_backoff
                    .remaining(&key, l.started_at, l.finished_at, now_nanos())
            {
                st.retry_in(left + Duration::from_millis(50));
                let d = self.restart_backoff.current(&key);
                self.cevent(
                    pod,
                    &c.name,
                    init,
                    EventType::Warning,
                    "BackOff",
                    format!(
                        "Back-off restarting failed container {} in pod {}",
                        c.name,
                        pod_full_name(pod)
                    ),
                );
                return Err(Waiting {
                    reason: "CrashLoopBackOff".into(),
                    message: format!(
                        "back-off {} restarting failed container={} pod={}",
                        go_duration(d),
                        c.name,
                        pod_full_name(pod)
                    ),
                });
            }
            self.restart_backoff.restarted(&key);
        }

        // Image.
        let image = c.image.clone().unwrap_or_default();
        let policy = images::pull_policy(c).to_string();
        let auth = self.pull_auth(pod, &image).await;
        let image_key = format!("{uid}/{image}");
        let image_ref = match images::ensure_image(
            &*self.runtime,
            &self.pull_backoff,
            &image_key,
            &image,
            &policy,
            auth,
            Some(sandbox_cfg.clone()),
        )
        .await
        {
            Ok(ImageOutcome::Present { image_ref }) => {
                self.cevent(
                    pod,
                    &c.name,
                    init,
                    EventType::Normal,
                    "Pulled",
                    format!("Container image {image:?} already present on machine"),
                );
                image_ref
            }
            Ok(ImageOutcome::Pulled {
                image_ref,
                took,
                size,
            }) => {
                self.cevent(
                    pod,
                    &c.name,
                    init,
                    EventType::Normal,
                    "Pulling",
                    format!("Pulling image {image:?}"),
                );
                self.cevent(
                    pod,
                    &c.name,
                    init,
                    EventType::Normal,
                    "Pulled",
                    format!(
                        "Successfully pulled image {image:?} in {:.3}s ({:.3}s including waiting). Image size: {size} bytes.",
                        took.as_secs_f64(),
                        took.as_secs_f64()
                    ),
                );
                image_ref
            }
            Err(e) => {
                st.retry_in(Duration::from_secs(2));
                match &e {
                    ImageError::BackOff(_) => {
                        self.cevent(
                            pod,
                            &c.name,
                            init,
                            EventType::Normal,
                            "BackOff",
                            e.to_string(),
                        );
                    }
                    ImageError::Pull { .. } => {
                        self.cevent(
                            pod,
                            &c.name,
                            init,
                            EventType::Normal,
                            "Pulling",
                            format!("Pulling image {image:?}"),
                        );
                        self.cevent(
                            pod,
                            &c.name,
                            init,
                            EventType::Warning,
                            "Failed",
                            e.to_string(),
                        );
                        self.cevent(
                            pod,
                            &c.name,
                            init,
                            EventType::Warning,
                            "Failed",
                            format!("Error: {}", e.reason()),
                        );
                    }
                    _ => {
                        self.cevent(
                            pod,
                            &c.name,
                            init,
                            EventType::Warning,
                            "ErrImageNeverPull",
                            e.to_string(),
                        );
                    }
                }
                return Err(Waiting {
                    reason: e.reason().into(),
                    message: e.to_string(),
                });
            }
        };

        let config_err = |msg: String| {
            self.cevent(
                pod,
                &c.name,
                init,
                EventType::Warning,
                "Failed",
                format!("Error: {msg}"),
            );
            Waiting {
                reason: "CreateContainerConfigError".into(),
                message: msg,
            }
        };
        let env = env::container_env(pod, c, env_sources, self.node, &self.node_ip, pod_ip)
            .map_err(|e| config_err(e.0))?;
        let term_dir = spec::pod_dir(&self.cfg, uid)
            .join("containers")
            .join(&c.name);
        let term_file: PathBuf = term_dir.join(restart_count.to_string());
        std::fs::create_dir_all(&term_dir)
            .and_then(|_| std::fs::write(&term_file, b""))
            .map_err(|e| config_err(format!("cannot create termination message file: {e}")))?;
        let mounts = spec::mounts(pod, c, volumes, Some(hosts), Some(&term_file))
            .map_err(|e| config_err(e.0))?;
        std::fs::create_dir_all(spec::pod_log_dir(&self.cfg, pod).join(&c.name))
            .map_err(|e| config_err(format!("cannot create log directory: {e}")))?;
        let log_file = spec::pod_log_dir(&self.cfg, pod)
            .join(&c.name)
            .join(format!("{restart_count}.log"));
        // A leftover log of a removed instance with the same attempt would be appended to.
        let _ = std::fs::remove_file(&log_file);
        let cc = spec::container_config(
            pod,
            c,
            ContainerParams {
                restart_count,
                env,
                mounts,
                image_ref,
                memory_capacity: self.node.memory,
            },
        );
        let id = match self
            .runtime
            .create_container(sandbox_id.to_string(), cc, sandbox_cfg.clone())
            .await
        {
            Ok(id) => id,
            Err(e) => {
                self.cevent(
                    pod,
                    &c.name,
                    init,
                    EventType::Warning,
                    "Failed",
                    format!("Error: {e}"),
                );
                return Err(Waiting {
                    reason: "CreateContainerError".into(),
                    message: e.to_string(),
                });
            }
        };
        self.cevent(
            pod,
            &c.name,
            init,
            EventType::Normal,
            "Created",
            format!("Created container {}", c.name),
        );
        if let Err(e) = self.runtime.start_container(id.clone()).await {
            self.cevent(
                pod,
                &c.name,
                init,
                EventType::Warning,
                "Failed",
                format!("Error: {e}"),
            );
            return Err(Waiting {
                reason: "RunContainerError".into(),
                message: e.to_string(),
            });
        }
        self.cevent(
            pod,
            &c.name,
            init,
            EventType::Normal,
            "Started",
            format!("Started container {}", c.name),
        );
        info!(pod = %pod_full_name(pod), container = %c.name, restart_count, "started container");

        if let Some(h) = c.lifecycle.as_ref().and_then(|l| l.post_start.as_ref()) {
            let ip = (!pod_ip.is_empty()).then_some(pod_ip);
            if let Err(msg) =
                crate::probes::run_handler(&*self.runtime, h, &id, ip, Duration::from_secs(30))
                    .await
            {
                self.cevent(
                    pod,
                    &c.name,
                    init,
                    EventType::Warning,
                    "FailedPostStartHook",
                    msg.clone(),
                );
                self.cevent(
                    pod,
                    &c.name,
                    init,
                    EventType::Normal,
                    "Killing",
                    "FailedPostStartHook",
                );
                let _ = self.runtime.stop_container(id, 0).await;
                return Err(Waiting {
                    reason: "PostStartHookError".into(),
                    message: msg,
                });
            }
        }
        Ok(())
    }

    async fn pull_auth(&self, pod: &Pod, image: &str) -> Option<crate::cri::v1::AuthConfig> {
        let names: Vec<String> = pod
            .spec
            .as_ref()
            .and_then(|s| s.image_pull_secrets.clone())
            .unwrap_or_default()
            .into_iter()
            .map(|r| r.name)
            .collect();
        if names.is_empty() {
            return None;
        }
        let api: Api<Secret> = Api::namespaced(self.client.clone(), spec::namespace(pod));
        let mut secrets = Vec::new();
        for n in names {
            if let Ok(Some(s)) = api.get_opt(&n).await {
                secrets.push(s);
            }
        }
        images::auth_for(image, &secrets)
    }

    /// Stop one container: preStop hook within the grace period, then StopContainer with what
    /// is left of it.
    async fn stop_container(&self, pod: &Pod, name: &str, id: &str, grace: i64) {
        let started = std::time::Instant::now();
        let spec_c = pod.spec.as_ref().and_then(|s| {
            s.containers
                .iter()
                .chain(s.init_containers.iter().flatten())
                .find(|c| c.name == name)
                .cloned()
        });
        if let Some(h) = spec_c
            .as_ref()
            .and_then(|c| c.lifecycle.as_ref())
            .and_then(|l| l.pre_stop.as_ref())
        {
            let ip = pod.status.as_ref().and_then(|s| s.pod_ip.clone());
            let budget = Duration::from_secs(grace.max(0) as u64);
            let c = spec_c.as_ref().expect("handler came from the container");
            let run = async {
                let h = crate::probes::resolve_handler_ports(h, c)?;
                crate::probes::run_handler(&*self.runtime, &h, id, ip.as_deref(), budget).await
            };
            match tokio::time::timeout(budget, run).await {
                Ok(Err(err)) => self.cevent(
                    pod,
                    name,
                    false,
                    EventType::Warning,
                    "FailedPreStopHook",
                    crate::probes::handler_failure_message(h, name, &pod_full_name(pod), &err),
                ),
                Err(_) => {
                    warn!(container = %name, "preStop hook did not finish within the grace period")
                }
                Ok(Ok(())) => {}
            }
        }
        let left = (grace - started.elapsed().as_secs() as i64).max(if grace > 0 { 2 } else { 0 });
        if let Err(e) = self.runtime.stop_container(id.to_string(), left).await {
            if !e.is_not_found() {
                warn!(container = %name, error = %e, "stop container failed");
            }
        }
    }

    /// Stop every running container (in parallel, each with its preStop hook) and every sandbox.
    async fn kill_pod(&self, pod: &Pod, rp: &RuntimePod, grace: i64) {
        let running: Vec<&ContainerInfo> = rp.running().collect();
        join_all(running.iter().map(|c| async move {
            self.cevent(
                pod,
                &c.name,
                false,
                EventType::Normal,
                "Killing",
                format!("Stopping container {}", c.name),
            );
            self.stop_container(pod, &c.name, &c.id, grace).await
        }))
        .await;
        for s in rp.sandboxes.iter().filter(|s| s.ready) {
            if let Err(e) = self.runtime.stop_pod_sandbox(s.id.clone()).await {
                warn!(sandbox = %s.id, error = %e, "stop sandbox failed");
            }
        }
    }

    /// Keep the newest two instances of each container (the current one and the one
    /// `logs --previous` shows) and the newest sandbox; remove older ones and their logs.
    async fn gc_instances(&self, rp: &RuntimePod) {
        let mut seen: HashMap<&str, usize> = HashMap::new();
        for c in &rp.containers {
            let n = seen.entry(c.name.as_str()).or_default();
            *n += 1;
            if *n > 2 && c.state != State::Running {
                match self.runtime.remove_container(c.id.clone()).await {
                    // The runtime keeps the log file of a removed container; it goes with it.
                    Ok(()) if !c.log_path.is_empty() => {
                        let _ = std::fs::remove_file(&c.log_path);
                    }
                    Ok(()) => {}
                    Err(e) => debug!(container = %c.id, error = %e, "remove container"),
                }
            }
        }
        for s in rp.sandboxes.iter().skip(1).filter(|s| !s.ready) {
            if rp
                .containers
                .iter()
                .any(|c| c.sandbox_id == s.id && c.state == State::Running)
            {
                continue;
            }
            let _ = self.runtime.remove_pod_sandbox(s.id.clone()).await;
        }
    }

    /// Compute the status and write it when it differs from what the API has.
    pub async fn report_status(
        &self,
        pod: &Pod,
        rp: &RuntimePod,
        st: &mut PodState,
        terminal: bool,
    ) {
        let uid = spec::uid(pod).to_string();
        let probes = &self.probes;
        let ready = |n: &str| probes.is_ready(&uid, n);
        let started = |n: &str| probes.is_started(&uid, n);
        let mut s = status::compute(&status::Input {
            pod,
            rp,
            waiting: &st.waiting,
            ready: &ready,
            started: &started,
            host_ip: &self.node_ip,
            now: Timestamp::now(),
            init_failed: st.init_failed,
            runtime_name: &self.runtime_name,
        });
        if terminal {
            let statuses = s.container_statuses.clone().unwrap_or_default();
            let all_zero = statuses.iter().all(|c| {
                c.state
                    .as_ref()
                    .and_then(|s| s.terminated.as_ref())
                    .is_some_and(|t| t.exit_code == 0)
            });
            s.phase = Some(if all_zero { "Succeeded" } else { "Failed" }.into());
            for c in s.conditions.iter_mut().flatten() {
                if c.type_ == "Ready" || c.type_ == "ContainersReady" {
                    c.status = "False".into();
                    c.reason = Some("PodCompleted".into());
                    c.message = None;
                }
            }
        }
        let current = pod.status.clone().unwrap_or_default();
        if same_status(&current, &s)
            || st
                .last_status
                .as_ref()
                .is_some_and(|l| same_status(l, &s) && same_status(l, &current))
        {
            return;
        }
        let api: Api<Pod> = Api::namespaced(self.client.clone(), spec::namespace(pod));
        let patch = serde_json::json!({ "status": s });
        match api
            .patch_status(
                spec::name(pod),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
        {
            Ok(_) => st.last_status = Some(s),
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => warn!(pod = %pod_full_name(pod), error = %e, "status update failed"),
        }
    }

    /// Deletion requested: stop everything within the grace period, report the terminal
    /// status, then delete the pod object for good (grace 0, uid precondition).
    pub async fn terminate(&self, pod: &Pod, st: &mut PodState) -> Result<(), CriError> {
        let uid = spec::uid(pod).to_string();
        let rp = runtime_pod::get(&*self.runtime, &uid).await?;
        if rp.running().next().is_some() || rp.sandboxes.iter().any(|s| s.ready) {
            self.kill_pod(pod, &rp, grace_of(pod)).await;
        }
        self.probes.remove_pod(&uid);
        let rp = runtime_pod::get(&*self.runtime, &uid).await?;
        if rp.running().next().is_some() {
            return Ok(()); // retried by the next sync
        }
        if st.deleted {
            return Ok(());
        }
        self.report_status(pod, &rp, st, true).await;
        let api: Api<Pod> = Api::namespaced(self.client.clone(), spec::namespace(pod));
        let dp = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: Some(uid.clone()),
                resource_version: None,
            }),
            ..Default::default()
        };
        match api.delete(spec::name(pod), &dp).await {
            Ok(_) => {
                st.deleted = true;
                info!(pod = %pod_full_name(pod), "pod terminated and deleted");
            }
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => st.deleted = true,
            Err(e) => warn!(pod = %pod_full_name(pod), error = %e, "final delete failed"),
        }
        Ok(())
    }

    /// The pod is gone from the API: stop and remove everything the node has of it.
    pub async fn cleanup(&self, uid: &str) -> Result<(), CriError> {
        let rp = runtime_pod::get(&*self.runtime, uid).await?;
        self.probes.remove_pod(uid);
        join_all(rp.running().map(|c| {
            let rt = self.runtime.clone();
            let id = c.id.clone();
            async move {
                let _ = rt.stop_container(id, 2).await;
            }
        }))
        .await;
        for c in &rp.containers {
            let _ = self.runtime.remove_container(c.id.clone()).await;
        }
        for s in &rp.sandboxes {
            self.runtime.stop_pod_sandbox(s.id.clone()).await?;
            self.runtime.remove_pod_sandbox(s.id.clone()).await?;
        }
        if let Err(e) = self.volumes.unmount_pod(uid).await {
            warn!(pod_uid = uid, error = %e, "volume teardown failed");
        }
        let base = std::path::Path::new("/sys/fs/cgroup");
        for (u, parent) in crate::cgroups::pod_cgroups(base, &self.cfg.cgroup_root) {
            if u == uid {
                crate::cgroups::remove_pod_cgroup(base, &parent);
            }
        }
        // Logs go with the pod.
        if let Ok(rd) = std::fs::read_dir(&self.cfg.pod_log_dir) {
            for e in rd.flatten() {
                if e.file_name()
                    .to_string_lossy()
                    .ends_with(&format!("_{uid}"))
                {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
        let _ = std::fs::remove_dir_all(spec::pod_dir(&self.cfg, uid));
        self.restart_backoff.forget_pod(uid);
        Ok(())
    }
}

/// Equal apart from timestamps the kubelet refreshes.
fn same_status(a: &PodStatus, b: &PodStatus) -> bool {
    let strip = |s: &PodStatus| {
        let mut s = s.clone();
        for c in s.conditions.iter_mut().flatten() {
            c.last_probe_time = None;
        }
        s.start_time = None;
        serde_json::to_value(&s).unwrap_or_default()
    };
    strip(a) == strip(b)
}

/// Pod uids that the runtime has sandboxes for.
pub async fn runtime_pod_uids(rt: &dyn Runtime) -> Result<BTreeSet<String>, CriError> {
    Ok(rt
        .list_pod_sandbox(None)
        .await?
        .into_iter()
        .filter_map(|s| s.labels.get(labels::POD_UID).cloned())
        .collect())
}
