//! Records core/v1 Events as upstream's legacy `record.EventRecorder` does: `source.component`
//! (e.g. `deployment-controller`), `involvedObject`, `reason`, `message`, `type`, first/last
//! timestamps, and `count` aggregation — the same event repeated for the same object patches
//! `count` and `lastTimestamp` of the existing Event instead of creating another.
//!
//! Recording never blocks a reconcile: events go through a bounded channel (1000, as
//! upstream's broadcaster; overflow is dropped with a log line) to one writer task per process.

use std::collections::HashMap;

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client, Resource};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// `Normal` or `Warning`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventType {
    Normal,
    Warning,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Normal => "Normal",
            EventType::Warning => "Warning",
        }
    }
}

#[derive(Debug)]
struct Pending {
    component: &'static str,
    object: ObjectReference,
    type_: EventType,
    reason: String,
    message: String,
    at: Timestamp,
}

/// Records events for one component. Cheap to clone.
#[derive(Clone)]
pub struct EventRecorder {
    component: &'static str,
    tx: mpsc::Sender<Pending>,
}

impl EventRecorder {
    /// An event about `obj`.
    pub fn event<K: Resource<DynamicType = ()>>(
        &self,
        obj: &K,
        type_: EventType,
        reason: &str,
        message: impl Into<String>,
    ) {
        self.event_ref(object_reference(obj), type_, reason, message)
    }

    /// An event about an object known by reference.
    pub fn event_ref(
        &self,
        object: ObjectReference,
        type_: EventType,
        reason: &str,
        message: impl Into<String>,
    ) {
        let p = Pending {
            component: self.component,
            object,
            type_,
            reason: reason.to_string(),
            message: message.into(),
            at: Timestamp::now(),
        };
        if let Err(e) = self.tx.try_send(p) {
            tracing::warn!(component = self.component, error = %e, "event channel full, dropping event");
        }
    }
}

/// The `involvedObject` reference of `obj`.
pub fn object_reference<K: Resource<DynamicType = ()>>(obj: &K) -> ObjectReference {
    let m = obj.meta();
    ObjectReference {
        api_version: Some(K::api_version(&()).into_owned()),
        kind: Some(K::kind(&()).into_owned()),
        name: m.name.clone(),
        namespace: m.namespace.clone(),
        uid: m.uid.clone(),
        resource_version: m.resource_version.clone(),
        field_path: None,
    }
}

/// The process-wide event sink: hands out recorders and runs the writer task.
#[derive(Clone)]
pub struct EventSink {
    tx: mpsc::Sender<Pending>,
}

type AggKey = (
    &'static str,
    String,
    String,
    String,
    String,
    &'static str,
    String,
    String,
);

impl EventSink {
    /// Start the writer task; it stops when `token` is cancelled (after draining what is queued).
    pub fn start(client: Client, host: String, token: CancellationToken) -> Self {
        let (tx, mut rx) = mpsc::channel::<Pending>(1000);
        tokio::spawn(async move {
            // (name, namespace, count, first timestamp) of the last Event per aggregation key.
            let mut seen: HashMap<AggKey, (String, String, i32, Timestamp)> = HashMap::new();
            loop {
                let p = tokio::select! {
                    p = rx.recv() => match p { Some(p) => p, None => break },
                    _ = token.cancelled() => match rx.try_recv() { Ok(p) => p, Err(_) => break },
                };
                write_event(&client, &host, &mut seen, p).await;
                if seen.len() > 4096 {
                    seen.clear();
                }
            }
        });
        Self { tx }
    }

    pub fn recorder(&self, component: &'static str) -> EventRecorder {
        EventRecorder {
            component,
            tx: self.tx.clone(),
        }
    }
}

async fn write_event(
    client: &Client,
    host: &str,
    seen: &mut HashMap<AggKey, (String, String, i32, Timestamp)>,
    p: Pending,
) {
    let o = &p.object;
    let ns = o
        .namespace
        .clone()
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "default".into());
    let key: AggKey = (
        p.component,
        o.kind.clone().unwrap_or_default(),
        ns.clone(),
        o.name.clone().unwrap_or_default(),
        o.uid.clone().unwrap_or_default(),
        p.type_.as_str(),
        p.reason.clone(),
        p.message.clone(),
    );
    let api: Api<Event> = Api::namespaced(client.clone(), &ns);
    if let Some((name, _, count, first)) = seen.get(&key).cloned() {
        let patch = serde_json::json!({"count": count + 1, "lastTimestamp": Time(p.at), "firstTimestamp": Time(first)});
        match api
            .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {
                seen.insert(key, (name, ns, count + 1, first));
                return;
            }
            Err(e) => {
                tracing::debug!(event = %name, error = %e, "patching aggregated event failed; creating a new one")
            }
        }
    }
    let nanos = p.at.as_nanosecond();
    let name = format!("{}.{:x}", o.name.as_deref().unwrap_or("unknown"), nanos);
    let ev = Event {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: Some(ns.clone()),
            ..Default::default()
        },
        involved_object: o.clone(),
        reason: Some(p.reason.clone()),
        message: Some(p.message.clone()),
        type_: Some(p.type_.as_str().into()),
        source: Some(EventSource {
            component: Some(p.component.into()),
            host: None,
        }),
        first_timestamp: Some(Time(p.at)),
        last_timestamp: Some(Time(p.at)),
        count: Some(1),
        reporting_component: Some(p.component.into()),
        reporting_instance: Some(host.to_string()),
        ..Default::default()
    };
    match api.create(&PostParams::default(), &ev).await {
        Ok(_) => {
            seen.insert(key, (name, ns, 1, p.at));
        }
        Err(e) => {
            tracing::warn!(reason = %p.reason, object = ?o.name, error = %e, "writing event failed")
        }
    }
}
