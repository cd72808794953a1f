//! The scheduler's writes to the cluster, behind [`Binder`]: bindings, events, the
//! PodScheduled condition, nominated nodes and preemption victims. [`ApiBinder`] talks to the
//! API server; [`RecordingBinder`] records calls for unit tests and in-process benchmarks.

use crate::cache::PodInfo;
use k8s_openapi::api::core::v1::{Event, Pod};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::json;
use std::future::Future;
use std::sync::Mutex;

/// Why a write failed.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    #[error("pod not found")]
    NotFound,
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("{0}")]
    Api(String),
}

impl From<kube::Error> for BindError {
    fn from(e: kube::Error) -> Self {
        match &e {
            kube::Error::Api(s) if s.code == 404 => BindError::NotFound,
            kube::Error::Api(s) if s.code == 409 => BindError::Conflict(s.message.clone()),
            _ => BindError::Api(e.to_string()),
        }
    }
}

/// An event about a pod (core/v1 Event, as `kubectl describe` shows).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodEvent {
    pub namespace: String,
    pub pod: String,
    pub uid: String,
    /// `Normal` or `Warning`.
    pub type_: &'static str,
    pub reason: &'static str,
    pub message: String,
}

/// Side effects of scheduling decisions.
pub trait Binder: Send + Sync + 'static {
    /// POST pods/binding.
    fn bind(&self, pod: &PodInfo, node: &str)
        -> impl Future<Output = Result<(), BindError>> + Send;
    /// Record an event (best effort).
    fn event(&self, ev: PodEvent) -> impl Future<Output = ()> + Send;
    /// Set PodScheduled=False, reason Unschedulable, with `message` (pods/status).
    fn mark_unschedulable(
        &self,
        pod: &PodInfo,
        message: &str,
    ) -> impl Future<Output = Result<(), BindError>> + Send;
    /// Set `status.nominatedNodeName` (pods/status).
    fn nominate(
        &self,
        pod: &PodInfo,
        node: &str,
    ) -> impl Future<Output = Result<(), BindError>> + Send;
    /// Evict a preemption victim: mark it DisruptionTarget and delete it.
    fn preempt(
        &self,
        victim: &PodInfo,
        preemptor: &PodInfo,
        node: &str,
    ) -> impl Future<Output = Result<(), BindError>> + Send;
}

/// Writes through the API server.
#[derive(Clone)]
pub struct ApiBinder {
    client: Client,
    component: String,
    instance: String,
}

impl ApiBinder {
    pub fn new(client: Client, scheduler_name: &str, instance: &str) -> Self {
        ApiBinder {
            client,
            component: scheduler_name.to_string(),
            instance: instance.to_string(),
        }
    }
    fn pods(&self, ns: &str) -> Api<Pod> {
        Api::namespaced(self.client.clone(), ns)
    }
}

impl Binder for ApiBinder {
    async fn bind(&self, pod: &PodInfo, node: &str) -> Result<(), BindError> {
        let body = json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": pod.name, "namespace": pod.namespace, "uid": pod.uid}, "target": {"apiVersion": "v1", "kind": "Node", "name": node}});
        let _: serde_json::Value = self
            .pods(&pod.namespace)
            .create_subresource("binding", &pod.name, &PostParams::default(), &body)
            .await?;
        Ok(())
    }

    async fn event(&self, ev: PodEvent) {
        let now = chrono::Utc::now();
        let name = format!(
            "{}.{:x}",
            ev.pod,
            now.timestamp_nanos_opt().unwrap_or_default()
        );
        let body = json!({
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"name": name, "namespace": ev.namespace},
            "involvedObject": {"apiVersion": "v1", "kind": "Pod", "namespace": ev.namespace, "name": ev.pod, "uid": ev.uid},
            "reason": ev.reason, "message": ev.message, "type": ev.type_,
            "source": {"component": self.component},
            "reportingComponent": self.component, "reportingInstance": self.instance,
            "action": if ev.reason == "Scheduled" { "Binding" } else { "Scheduling" },
            "firstTimestamp": now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            "lastTimestamp": now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            "count": 1,
        });
        let Ok(event) = serde_json::from_value::<Event>(body) else {
            return;
        };
        let api: Api<Event> = Api::namespaced(self.client.clone(), &ev.namespace);
        if let Err(e) = api.create(&PostParams::default(), &event).await {
            tracing::debug!(pod = %ev.pod, error = %e, "event not recorded");
        }
    }

    async fn mark_unschedulable(&self, pod: &PodInfo, message: &str) -> Result<(), BindError> {
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let patch = json!({"status": {"conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": message, "lastProbeTime": null, "lastTransitionTime": now}]}});
        self.pods(&pod.namespace)
            .patch_status(&pod.name, &PatchParams::default(), &Patch::Strategic(patch))
            .await?;
        Ok(())
    }

    async fn nominate(&self, pod: &PodInfo, node: &str) -> Result<(), BindError> {
        let patch = json!({"status": {"nominatedNodeName": node}});
        self.pods(&pod.namespace)
            .patch_status(&pod.name, &PatchParams::default(), &Patch::Strategic(patch))
            .await?;
        Ok(())
    }

    async fn preempt(
        &self,
        victim: &PodInfo,
        preemptor: &PodInfo,
        node: &str,
    ) -> Result<(), BindError> {
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let msg = format!(
            "{}: preempting to accommodate a higher priority pod",
            self.component
        );
        let patch = json!({"status": {"conditions": [{"type": "DisruptionTarget", "status": "True", "reason": "PreemptionByScheduler", "message": msg, "lastTransitionTime": now}]}});
        let api = self.pods(&victim.namespace);
        match api
            .patch_status(
                &victim.name,
                &PatchParams::default(),
                &Patch::Strategic(patch),
            )
            .await
        {
            Ok(_) => {}
            Err(e) => match BindError::from(e) {
                BindError::NotFound => return Ok(()),
                other => {
                    tracing::debug!(victim = %victim.key, error = %other, "DisruptionTarget condition not set")
                }
            },
        }
        match api.delete(&victim.name, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(e) => match BindError::from(e) {
                BindError::NotFound => return Ok(()),
                other => return Err(other),
            },
        }
        self.event(PodEvent {
            namespace: victim.namespace.clone(),
            pod: victim.name.clone(),
            uid: victim.uid.clone(),
            type_: "Normal",
            reason: "Preempted",
            message: format!("Preempted by pod {} on node {node}", preemptor.uid),
        })
        .await;
        Ok(())
    }
}

/// One recorded call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Call {
    Bind { pod: String, node: String },
    Event(PodEvent),
    Unschedulable { pod: String, message: String },
    Nominate { pod: String, node: String },
    Preempt { victim: String, node: String },
}

/// Records calls; binds fail for pods listed in `fail_binds`.
#[derive(Default)]
pub struct RecordingBinder {
    pub calls: Mutex<Vec<Call>>,
    pub fail_binds: Mutex<Vec<String>>,
}

impl RecordingBinder {
    pub fn calls(&self) -> Vec<Call> {
        self.calls.lock().expect("calls lock").clone()
    }
    fn push(&self, c: Call) {
        self.calls.lock().expect("calls lock").push(c);
    }
}

impl Binder for RecordingBinder {
    async fn bind(&self, pod: &PodInfo, node: &str) -> Result<(), BindError> {
        self.push(Call::Bind {
            pod: pod.key.clone(),
            node: node.into(),
        });
        if self
            .fail_binds
            .lock()
            .expect("fail lock")
            .contains(&pod.key)
        {
            return Err(BindError::Api("injected failure".into()));
        }
        Ok(())
    }
    async fn event(&self, ev: PodEvent) {
        self.push(Call::Event(ev));
    }
    async fn mark_unschedulable(&self, pod: &PodInfo, message: &str) -> Result<(), BindError> {
        self.push(Call::Unschedulable {
            pod: pod.key.clone(),
            message: message.into(),
        });
        Ok(())
    }
    async fn nominate(&self, pod: &PodInfo, node: &str) -> Result<(), BindError> {
        self.push(Call::Nominate {
            pod: pod.key.clone(),
            node: node.into(),
        });
        Ok(())
    }
    async fn preempt(&self, victim: &PodInfo, _: &PodInfo, node: &str) -> Result<(), BindError> {
        self.push(Call::Preempt {
            victim: victim.key.clone(),
            node: node.into(),
        });
        Ok(())
    }
}
