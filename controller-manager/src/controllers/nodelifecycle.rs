//! Node lifecycle and taint eviction (upstream `pkg/controller/nodelifecycle` and
//! `pkg/controller/tainteviction`).
//!
//! The node monitor (`nodelifecycle`) notes, on this process's monotonic clock, when each node's
//! Lease in `kube-node-lease` (or its Ready heartbeat) last changed. A node silent for longer
//! than `--node-monitor-grace-period` gets its Ready (and pressure) conditions set to `Unknown`
//! through `nodes/status`, and the pods on it are marked Ready=False. Taints follow the Ready
//! condition: `Unknown` → `node.kubernetes.io/unreachable`, `False` →
//! `node.kubernetes.io/not-ready`, each with `NoSchedule` and `NoExecute`; `True` removes them.
//!
//! Taint eviction (`taint-eviction-controller`) deletes a pod on a node with `NoExecute` taints
//! once the pod's matching toleration runs out (`tolerationSeconds`, counted from the taint's
//! `timeAdded`), immediately when a taint is not tolerated at all, never when tolerated without
//! a limit. Both are level-triggered and requeue themselves for the moment something is due, so
//! they are driven by `tokio::time` (testable with `tokio::time::pause()`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, NodeCondition, ObjectReference, Pod, Taint, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::{Api, Client};
use serde_json::json;
use tokio::time::Instant;

use crate::framework::{
    Action, BoxFuture, Change, Controller, ControllerContext, EventRecorder, EventType, Informer,
    ObjectKey, ReconcileContext, Reconciler, Result,
};

/// Namespace of node heartbeat Leases.
pub const NODE_LEASE_NAMESPACE: &str = "kube-node-lease";
pub const TAINT_UNREACHABLE: &str = "node.kubernetes.io/unreachable";
pub const TAINT_NOT_READY: &str = "node.kubernetes.io/not-ready";
const MANAGED_TAINTS: [&str; 2] = [TAINT_UNREACHABLE, TAINT_NOT_READY];
/// Conditions the monitor sets to Unknown with Ready (upstream `nodeConditionTypes`).
const UNKNOWN_CONDITIONS: [&str; 4] = ["Ready", "MemoryPressure", "DiskPressure", "PIDPressure"];

// ---------------------------------------------------------------------------------------------
// Pure decisions.

/// The Ready condition's status, if the node has one.
pub fn ready_status(node: &Node) -> Option<&str> {
    ready_condition(node).map(|c| c.status.as_str())
}

fn ready_condition(node: &Node) -> Option<&NodeCondition> {
    node.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready")
}

/// The taints the node lifecycle controller wants for a Ready status (`None`: leave as is).
pub fn desired_taint_key(ready: Option<&str>) -> Option<Option<&'static str>> {
    match ready {
        Some("True") => Some(None),
        Some("False") => Some(Some(TAINT_NOT_READY)),
        Some(_) => Some(Some(TAINT_UNREACHABLE)),
        None => None,
    }
}

/// `current` taints with the managed ones replaced by `key`'s NoSchedule and NoExecute (keeping
/// `timeAdded` of taints already there); `None` when nothing changes.
pub fn reconcile_taints(
    current: &[Taint],
    key: Option<&str>,
    now: Timestamp,
) -> Option<Vec<Taint>> {
    let mut out: Vec<Taint> = current
        .iter()
        .filter(|t| !MANAGED_TAINTS.contains(&t.key.as_str()))
        .cloned()
        .collect();
    if let Some(key) = key {
        for effect in ["NoSchedule", "NoExecute"] {
            let existing = current.iter().find(|t| t.key == key && t.effect == effect);
            out.push(match existing {
                Some(t) => t.clone(),
                None => Taint {
                    key: key.into(),
                    effect: effect.into(),
                    value: None,
                    time_added: (effect == "NoExecute").then_some(Time(now)),
                },
            });
        }
    }
    let same = out.len() == current.len() && out.iter().all(|t| current.contains(t));
    (!same).then_some(out)
}

/// Upstream `Toleration.ToleratesTaint`.
pub fn tolerates(t: &Toleration, taint: &Taint) -> bool {
    if let Some(e) = t.effect.as_deref().filter(|e| !e.is_empty()) {
        if e != taint.effect {
            return false;
        }
    }
    let key = t.key.as_deref().unwrap_or("");
    if !key.is_empty() && key != taint.key {
        return false;
    }
    match t.operator.as_deref().unwrap_or("Equal") {
        "Exists" => true,
        "Equal" | "" => {
            !key.is_empty()
                && t.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or("")
        }
        _ => false,
    }
}

/// How long until a pod with `tolerations` must be evicted because of the `NoExecute` taints
/// among `taints` (`Some(ZERO)`: now; `None`: never).
pub fn eviction_delay(
    tolerations: &[Toleration],
    taints: &[Taint],
    now: Timestamp,
) -> Option<Duration> {
    let mut deadline: Option<Timestamp> = None;
    for taint in taints.iter().filter(|t| t.effect == "NoExecute") {
        let matching: Vec<&Toleration> =
            tolerations.iter().filter(|t| tolerates(t, taint)).collect();
        if matching.is_empty() {
            return Some(Duration::ZERO);
        }
        // The longest-lived matching toleration wins; unlimited tolerates forever.
        if matching.iter().any(|t| t.toleration_seconds.is_none()) {
            continue;
        }
        let secs = matching
            .iter()
            .filter_map(|t| t.toleration_seconds)
            .max()
            .unwrap_or(0)
            .max(0);
        let added = taint.time_added.as_ref().map(|t| t.0).unwrap_or(now);
        let at = added + Duration::from_secs(secs as u64);
        deadline = Some(deadline.map_or(at, |d| d.min(at)));
    }
    let at = deadline?;
    Some(if at <= now {
        Duration::ZERO
    } else {
        Duration::from_nanos((at.as_nanosecond() - now.as_nanosecond()) as u64)
    })
}

/// The `nodes/status` conditions marking a silent node Unknown; `None` if already so.
pub fn unknown_conditions(node: &Node, now: Timestamp) -> Option<Vec<serde_json::Value>> {
    let conds = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default();
    let mut out = Vec::new();
    for t in UNKNOWN_CONDITIONS {
        let cur = conds.iter().find(|c| c.type_ == t);
        if t != "Ready" && cur.is_none() {
            continue;
        }
        if cur.is_some_and(|c| c.status == "Unknown") {
            continue;
        }
        let (reason, message) = match cur {
            Some(_) => ("NodeStatusUnknown", "Kubelet stopped posting node status."),
            None => (
                "NodeStatusNeverUpdated",
                "Kubelet never posted node status.",
            ),
        };
        let mut c = json!({"type": t, "status": "Unknown", "reason": reason, "message": message, "lastTransitionTime": Time(now)});
        c["lastHeartbeatTime"] = json!(cur
            .and_then(|c| c.last_heartbeat_time.clone())
            .unwrap_or(Time(now)));
        out.push(c);
    }
    (!out.is_empty()).then_some(out)
}

// ---------------------------------------------------------------------------------------------
// Health tracking on the local monotonic clock (immune to clock skew between hosts).

#[derive(Clone, Debug, PartialEq, Eq)]
struct Seen {
    lease_renew: Option<String>,
    heartbeat: Option<String>,
}

/// When each node was last seen alive (lease renewals or Ready heartbeats).
#[derive(Default)]
pub struct HealthTracker {
    nodes: Mutex<HashMap<String, (Seen, Instant)>>,
}

impl HealthTracker {
    /// Record what is visible now; returns when the node was last seen changing (the first
    /// observation counts as a change, so every node gets a full grace period at start).
    pub fn observe(
        &self,
        node: &str,
        lease_renew: Option<String>,
        heartbeat: Option<String>,
    ) -> Instant {
        let seen = Seen {
            lease_renew,
            heartbeat,
        };
        let mut m = self.nodes.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        match m.get_mut(node) {
            Some((s, at)) if *s == seen => *at,
            Some(entry) => {
                *entry = (seen, now);
                now
            }
            None => {
                m.insert(node.to_string(), (seen, now));
                now
            }
        }
    }

    /// Whether `node` has been observed (and not forgotten).
    pub fn knows(&self, node: &str) -> bool {
        self.nodes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(node)
    }

    pub fn forget(&self, node: &str) {
        self.nodes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(node);
    }
}

// ---------------------------------------------------------------------------------------------
// The node monitor.

struct NodeMonitor {
    client: Client,
    nodes: Informer<Node>,
    leases: Informer<Lease>,
    pods: Informer<Pod>,
    health: HealthTracker,
    grace: Duration,
    period: Duration,
    recorder: EventRecorder,
}

impl NodeMonitor {
    async fn mark_pods_not_ready(&self, node: &str) -> Result<()> {
        let now = Timestamp::now();
        for pod in self
            .pods
            .store()
            .state()
            .into_iter()
            .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(node))
        {
            let ready = pod
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
            if !ready || pod.metadata.deletion_timestamp.is_some() {
                continue;
            }
            let (ns, name) = (
                pod.metadata.namespace.as_deref().unwrap_or_default(),
                pod.metadata.name.as_deref().unwrap_or_default(),
            );
            let patch = json!({"status": {"conditions": [{"type": "Ready", "status": "False", "lastTransitionTime": Time(now)}]}});
            match Api::<Pod>::namespaced(self.client.clone(), ns)
                .patch_status(name, &PatchParams::default(), &Patch::Strategic(&patch))
                .await
            {
                Ok(_) => self.recorder.event(
                    &*pod,
                    EventType::Warning,
                    "NodeNotReady",
                    "Node is not ready",
                ),
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }
}

impl Reconciler for NodeMonitor {
    async fn reconcile(&self, key: &ObjectKey, _ctx: &ReconcileContext) -> Result<Action> {
        let Some(node) = self.nodes.get(None, &key.name) else {
            if self.health.knows(&key.name) {
                self.health.forget(&key.name);
                let r = ObjectReference {
                    api_version: Some("v1".into()),
                    kind: Some("Node".into()),
                    name: Some(key.name.clone()),
                    ..Default::default()
                };
                let msg = format!(
                    "Node {0} event: Removing Node {0} from Controller",
                    key.name
                );
                self.recorder
                    .event_ref(r, EventType::Normal, "RemovingNode", msg);
            }
            return Ok(Action::done());
        };
        if !self.health.knows(&key.name) {
            let msg = format!(
                "Node {0} event: Registered Node {0} in Controller",
                key.name
            );
            self.recorder
                .event(&*node, EventType::Normal, "RegisteredNode", msg);
        }
        let lease = self.leases.get(Some(NODE_LEASE_NAMESPACE), &key.name);
        let renew = lease
            .as_ref()
            .and_then(|l| l.spec.as_ref()?.renew_time.as_ref())
            .map(|t| t.0.to_string());
        let heartbeat = ready_condition(&node)
            .and_then(|c| c.last_heartbeat_time.as_ref())
            .map(|t| t.0.to_string());
        let probe = self.health.observe(&key.name, renew, heartbeat);
        let silent_for = probe.elapsed();
        let api: Api<Node> = Api::all(self.client.clone());
        let now = Timestamp::now();
        let mut ready = ready_status(&node).map(str::to_string);
        if silent_for > self.grace {
            if let Some(conds) = unknown_conditions(&node, now) {
                tracing::info!(node = %key.name, silent_for = ?silent_for, "node stopped reporting; marking Ready=Unknown");
                api.patch_status(
                    &key.name,
                    &PatchParams::default(),
                    &Patch::Strategic(json!({"status": {"conditions": conds}})),
                )
                .await?;
                self.recorder.event(
                    &*node,
                    EventType::Normal,
                    "NodeNotReady",
                    format!("Node {} status is now: NodeNotReady", key.name),
                );
            }
            ready = Some("Unknown".into());
        }
        if let Some(key_for) = desired_taint_key(ready.as_deref()) {
            let current = node
                .spec
                .as_ref()
                .and_then(|s| s.taints.clone())
                .unwrap_or_default();
            if let Some(taints) = reconcile_taints(&current, key_for, now) {
                tracing::info!(node = %key.name, ready = ?ready, "updating node lifecycle taints");
                let patch = json!({"metadata": {"resourceVersion": node.metadata.resource_version}, "spec": {"taints": if taints.is_empty() { serde_json::Value::Null } else { json!(taints) }}});
                api.patch(&key.name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await?;
            }
            if key_for.is_some() {
                self.mark_pods_not_ready(&key.name).await?;
            }
        }
        Ok(match self.grace.checked_sub(silent_for) {
            // Look again right after the grace period would run out.
            Some(left) => Action::requeue_after(left + Duration::from_millis(10)),
            None => Action::requeue_after(self.period),
        })
    }
}

/// Start the `nodelifecycle` controller (the node monitor).
pub fn start(ctx: &ControllerContext) -> Result<BoxFuture<'static, ()>> {
    let nodes = ctx.informers.informer::<Node>();
    let leases = ctx.informers.informer::<Lease>();
    let pods = ctx.informers.informer::<Pod>();
    let rec = Arc::new(NodeMonitor {
        client: ctx.client.clone(),
        nodes: nodes.clone(),
        leases: leases.clone(),
        pods: pods.clone(),
        health: HealthTracker::default(),
        grace: ctx.config.node_monitor_grace_period,
        period: ctx.config.node_monitor_period,
        recorder: ctx.recorder("node-controller"),
    });
    let controller = Controller::new("nodelifecycle", rec, ctx.metrics.clone());
    let q = controller.queue();
    nodes.subscribe(move |c: &Change<Node>| {
        q.add(ObjectKey::cluster(
            c.object().metadata.name.as_deref().unwrap_or_default(),
        ))
    });
    let q = controller.queue();
    leases.subscribe(move |c: &Change<Lease>| {
        let m = &c.object().metadata;
        if m.namespace.as_deref() == Some(NODE_LEASE_NAMESPACE) {
            q.add(ObjectKey::cluster(m.name.as_deref().unwrap_or_default()));
        }
    });
    let synced = async move {
        nodes.wait_synced().await;
        leases.wait_synced().await;
        pods.wait_synced().await;
    };
    Ok(Box::pin(controller.run(1, synced, ctx.token.clone())))
}

// ---------------------------------------------------------------------------------------------
// Taint eviction.

struct TaintEviction {
    client: Client,
    nodes: Informer<Node>,
    pods: Informer<Pod>,
    recorder: EventRecorder,
}

impl Reconciler for TaintEviction {
    async fn reconcile(&self, key: &ObjectKey, _ctx: &ReconcileContext) -> Result<Action> {
        let Some(pod) = self.pods.get(key.namespace.as_deref(), &key.name) else {
            return Ok(Action::done());
        };
        if pod.metadata.deletion_timestamp.is_some() {
            return Ok(Action::done());
        }
        let Some(node_name) = pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.as_deref())
            .filter(|n| !n.is_empty())
        else {
            return Ok(Action::done());
        };
        let Some(node) = self.nodes.get(None, node_name) else {
            return Ok(Action::done());
        };
        let taints = node
            .spec
            .as_ref()
            .and_then(|s| s.taints.clone())
            .unwrap_or_default();
        let tolerations = pod
            .spec
            .as_ref()
            .and_then(|s| s.tolerations.clone())
            .unwrap_or_default();
        let Some(delay) = eviction_delay(&tolerations, &taints, Timestamp::now()) else {
            return Ok(Action::done());
        };
        if !delay.is_zero() {
            return Ok(Action::requeue_after(delay));
        }
        let api: Api<Pod> = Api::namespaced(self.client.clone(), key.ns());
        let cond = json!({"status": {"conditions": [{"type": "DisruptionTarget", "status": "True", "reason": "DeletionByTaintManager",
            "message": "Taint manager: deleting due to NoExecute taint", "lastTransitionTime": Time(Timestamp::now())}]}});
        if let Err(e) = api
            .patch_status(&key.name, &PatchParams::default(), &Patch::Strategic(&cond))
            .await
        {
            tracing::debug!(pod = %key, error = %e, "could not add DisruptionTarget condition");
        }
        tracing::info!(pod = %key, node = node_name, "evicting pod from tainted node");
        self.recorder.event(
            &*pod,
            EventType::Normal,
            "TaintManagerEviction",
            format!("Marking for deletion Pod {key}"),
        );
        let dp = DeleteParams {
            preconditions: pod
                .metadata
                .uid
                .clone()
                .map(|uid| kube::api::Preconditions {
                    uid: Some(uid),
                    resource_version: None,
                }),
            ..Default::default()
        };
        match api.delete(&key.name, &dp).await {
            Ok(_) => Ok(Action::done()),
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(Action::done()),
            Err(e) => Err(e.into()),
        }
    }
}

/// Start the `taint-eviction-controller`.
pub fn start_taint_eviction(ctx: &ControllerContext) -> Result<BoxFuture<'static, ()>> {
    let nodes = ctx.informers.informer::<Node>();
    let pods = ctx.informers.informer::<Pod>();
    let rec = Arc::new(TaintEviction {
        client: ctx.client.clone(),
        nodes: nodes.clone(),
        pods: pods.clone(),
        recorder: ctx.recorder("taint-eviction-controller"),
    });
    let controller = Controller::new("taint-eviction-controller", rec, ctx.metrics.clone());
    let q = controller.queue();
    pods.subscribe(move |c: &Change<Pod>| {
        let p = c.object();
        if !matches!(c, Change::Deleted(_))
            && p.spec
                .as_ref()
                .and_then(|s| s.node_name.as_deref())
                .is_some_and(|n| !n.is_empty())
        {
            q.add(ObjectKey::of(&**p));
        }
    });
    let (q, pods2) = (controller.queue(), pods.clone());
    nodes.subscribe(move |c: &Change<Node>| {
        let taints = |n: &Node| {
            n.spec
                .as_ref()
                .and_then(|s| s.taints.clone())
                .unwrap_or_default()
                .into_iter()
                .filter(|t| t.effect == "NoExecute")
                .collect::<Vec<_>>()
        };
        let new = c.object();
        if taints(new).is_empty() || c.old().is_some_and(|o| taints(o) == taints(new)) {
            return;
        }
        let name = new.metadata.name.as_deref();
        for p in pods2
            .store()
            .state()
            .into_iter()
            .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == name)
        {
            q.add(ObjectKey::of(&*p));
        }
    });
    let synced = async move {
        nodes.wait_synced().await;
        pods.wait_synced().await;
    };
    Ok(Box::pin(controller.run(4, synced, ctx.token.clone())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn taint(key: &str, effect: &str, added: Option<Timestamp>) -> Taint {
        Taint {
            key: key.into(),
            effect: effect.into(),
            value: None,
            time_added: added.map(Time),
        }
    }

    fn tol(key: Option<&str>, op: &str, effect: Option<&str>, secs: Option<i64>) -> Toleration {
        Toleration {
            key: key.map(Into::into),
            operator: Some(op.into()),
            effect: effect.map(Into::into),
            toleration_seconds: secs,
            value: None,
        }
    }

    #[test]
    fn taints_follow_the_ready_condition() {
        let now = Timestamp::from_second(1_700_000_000).unwrap();
        let other = taint("dedicated", "NoSchedule", None);
        let unreachable = reconcile_taints(
            std::slice::from_ref(&other),
            desired_taint_key(Some("Unknown")).unwrap(),
            now,
        )
        .unwrap();
        let keys: Vec<(&str, &str)> = unreachable
            .iter()
            .map(|t| (t.key.as_str(), t.effect.as_str()))
            .collect();
        assert_eq!(
            keys,
            [
                ("dedicated", "NoSchedule"),
                (TAINT_UNREACHABLE, "NoSchedule"),
                (TAINT_UNREACHABLE, "NoExecute")
            ]
        );
        assert_eq!(unreachable[2].time_added, Some(Time(now)));
        // Unchanged status: nothing to write (and timeAdded kept).
        assert_eq!(
            reconcile_taints(
                &unreachable,
                Some(TAINT_UNREACHABLE),
                now + Duration::from_secs(5)
            ),
            None
        );
        // Ready=False swaps to not-ready; Ready=True clears.
        let not_ready =
            reconcile_taints(&unreachable, desired_taint_key(Some("False")).unwrap(), now).unwrap();
        assert!(
            not_ready.iter().any(|t| t.key == TAINT_NOT_READY)
                && !not_ready.iter().any(|t| t.key == TAINT_UNREACHABLE)
        );
        assert_eq!(
            reconcile_taints(&not_ready, desired_taint_key(Some("True")).unwrap(), now).unwrap(),
            [other]
        );
        assert_eq!(desired_taint_key(None), None);
    }

    #[test]
    fn eviction_waits_for_the_toleration() {
        let t0 = Timestamp::from_second(1_700_000_000).unwrap();
        let taints = [
            taint(TAINT_UNREACHABLE, "NoExecute", Some(t0)),
            taint(TAINT_UNREACHABLE, "NoSchedule", Some(t0)),
        ];
        let default_tols = [
            tol(
                Some(TAINT_NOT_READY),
                "Exists",
                Some("NoExecute"),
                Some(300),
            ),
            tol(
                Some(TAINT_UNREACHABLE),
                "Exists",
                Some("NoExecute"),
                Some(300),
            ),
        ];
        let cases: Vec<(&str, Vec<Toleration>, u64, Option<Duration>)> = vec![
            (
                "default 300s, just tainted",
                default_tols.to_vec(),
                0,
                Some(Duration::from_secs(300)),
            ),
            (
                "default 300s, 100s later",
                default_tols.to_vec(),
                100,
                Some(Duration::from_secs(200)),
            ),
            (
                "default 300s, expired",
                default_tols.to_vec(),
                301,
                Some(Duration::ZERO),
            ),
            ("not tolerated", vec![], 0, Some(Duration::ZERO)),
            (
                "tolerated forever",
                vec![tol(None, "Exists", None, None)],
                0,
                None,
            ),
            (
                "wrong effect",
                vec![tol(
                    Some(TAINT_UNREACHABLE),
                    "Exists",
                    Some("NoSchedule"),
                    None,
                )],
                0,
                Some(Duration::ZERO),
            ),
            (
                "1s toleration",
                vec![tol(
                    Some(TAINT_UNREACHABLE),
                    "Exists",
                    Some("NoExecute"),
                    Some(1),
                )],
                0,
                Some(Duration::from_secs(1)),
            ),
        ];
        for (name, tols, after, want) in cases {
            assert_eq!(
                eviction_delay(&tols, &taints, t0 + Duration::from_secs(after)),
                want,
                "{name}"
            );
        }
        // No NoExecute taints: nothing to do.
        assert_eq!(eviction_delay(&[], &taints[1..], t0), None);
    }

    #[test]
    fn tolerations_match_like_upstream() {
        let t = Taint {
            key: "k".into(),
            value: Some("v".into()),
            effect: "NoExecute".into(),
            time_added: None,
        };
        let eq = |v: &str| Toleration {
            key: Some("k".into()),
            operator: Some("Equal".into()),
            value: Some(v.into()),
            effect: None,
            toleration_seconds: None,
        };
        assert!(tolerates(&eq("v"), &t));
        assert!(!tolerates(&eq("w"), &t));
        assert!(tolerates(&tol(None, "Exists", None, None), &t));
        assert!(!tolerates(&tol(Some("other"), "Exists", None, None), &t));
    }

    #[test]
    fn silent_nodes_get_unknown_conditions_once() {
        let now = Timestamp::from_second(1_700_000_000).unwrap();
        let never: Node = serde_json::from_value(json!({"metadata": {"name": "n"}})).unwrap();
        let c = unknown_conditions(&never, now).unwrap();
        assert_eq!(
            (c.len(), c[0]["reason"].as_str()),
            (1, Some("NodeStatusNeverUpdated"))
        );
        let posted: Node =
            serde_json::from_value(json!({"metadata": {"name": "n"}, "status": {"conditions": [
            {"type": "Ready", "status": "True"}, {"type": "MemoryPressure", "status": "False"}]}}))
            .unwrap();
        let c = unknown_conditions(&posted, now).unwrap();
        assert_eq!(
            c.iter()
                .map(|c| c["type"].as_str().unwrap())
                .collect::<Vec<_>>(),
            ["Ready", "MemoryPressure"]
        );
        assert_eq!(c[0]["message"], "Kubelet stopped posting node status.");
        let unknown: Node = serde_json::from_value(json!({"metadata": {"name": "n"}, "status": {"conditions": [{"type": "Ready", "status": "Unknown"}]}})).unwrap();
        assert_eq!(unknown_conditions(&unknown, now), None);
    }

    #[tokio::test(start_paused = true)]
    async fn health_is_measured_from_the_last_observed_change() {
        let h = HealthTracker::default();
        let t0 = h.observe("n", Some("r1".into()), None);
        tokio::time::advance(Duration::from_secs(30)).await;
        // Same lease renewal: still silent since t0.
        assert_eq!(h.observe("n", Some("r1".into()), None), t0);
        assert_eq!(t0.elapsed(), Duration::from_secs(30));
        // A renewal resets it.
        let t1 = h.observe("n", Some("r2".into()), None);
        assert!(t1 > t0);
        assert_eq!(t1.elapsed(), Duration::ZERO);
        h.forget("n");
        tokio::time::advance(Duration::from_secs(50)).await;
        assert_eq!(
            h.observe("n", Some("r2".into()), None).elapsed(),
            Duration::ZERO
        );
    }
}
