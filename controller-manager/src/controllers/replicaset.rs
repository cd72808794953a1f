//! ReplicaSet and ReplicationController controller (upstream `pkg/controller/replicaset`): keeps
//! `spec.replicas` active pods matching the selector.
//!
//! Each sync claims pods (adopts matching orphans, releases owned pods that stopped matching,
//! always through ownerReferences with `controller: true`), then — only when the expectations
//! of the previous sync have been observed — creates missing pods in slow-start batches
//! (1, 2, 4, … up to 500 per sync) or deletes surplus ones in upstream's ranking order, and
//! writes status (`replicas`, `fullyLabeledReplicas`, `readyReplicas`, `availableReplicas`
//! honouring `minReadySeconds`, `observedGeneration`, the `ReplicaFailure` condition) through
//! `/status`. The decisions are pure functions below; side effects go through the client.

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use futures::{stream, StreamExt};
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec, ReplicationController};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, Resource};
use serde_json::{json, Value};

use crate::framework::{
    controller_of, new_controller_ref, Action, BoxFuture, Change, Controller, ControllerContext,
    Error, EventRecorder, EventType, Expectations, Informer, InformerKind, ObjectKey,
    ReconcileContext, Reconciler, Result, Selector, WorkQueue,
};

/// Most pods created or deleted in one sync (upstream `BurstReplicas`).
pub const BURST_REPLICAS: usize = 500;
/// Most create/delete requests of one sync in flight at once. Upstream starts a goroutine per
/// pod of a batch but its client rate limiter (20 qps, burst 30) bounds what is in flight; our
/// client has no limiter, and each concurrent request holds its own pooled HTTP/1.1 + TLS
/// connection, so the batch is spread over this many requests at a time.
pub const MAX_IN_FLIGHT: usize = 64;
/// First slow-start batch size (upstream `SlowStartInitialBatchSize`).
pub const SLOW_START_INITIAL_BATCH: usize = 1;
/// Annotation ranking pods for scale-down (lower cost deleted first).
pub const POD_DELETION_COST: &str = "controller.kubernetes.io/pod-deletion-cost";

/// What the controller needs from a ReplicaSet or a ReplicationController.
pub trait ReplicaWorkload:
    InformerKind + Resource<Scope = k8s_openapi::NamespaceResourceScope>
{
    /// `source.component` of its events.
    const COMPONENT: &'static str;
    fn replicas(&self) -> i32;
    fn label_selector(&self) -> Option<LabelSelector>;
    fn template(&self) -> Option<&PodTemplateSpec>;
    fn min_ready_seconds(&self) -> i32;
    /// The current status as JSON (for comparison and conditions).
    fn status_value(&self) -> Value;
}

impl ReplicaWorkload for ReplicaSet {
    const COMPONENT: &'static str = "replicaset-controller";
    fn replicas(&self) -> i32 {
        self.spec.replicas.unwrap_or(1)
    }
    fn label_selector(&self) -> Option<LabelSelector> {
        Some(self.spec.selector.clone())
    }
    fn template(&self) -> Option<&PodTemplateSpec> {
        self.spec.template.as_ref()
    }
    fn min_ready_seconds(&self) -> i32 {
        self.spec.min_ready_seconds.unwrap_or(0)
    }
    fn status_value(&self) -> Value {
        self.status
            .as_ref()
            .map(|s| serde_json::to_value(s).unwrap_or_default())
            .unwrap_or_else(|| json!({}))
    }
}

impl ReplicaWorkload for ReplicationController {
    const COMPONENT: &'static str = "replication-controller";
    fn replicas(&self) -> i32 {
        self.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
    }
    fn label_selector(&self) -> Option<LabelSelector> {
        let spec = self.spec.as_ref()?;
        // An unset selector defaults to the template's labels.
        let labels = spec
            .selector
            .clone()
            .or_else(|| spec.template.as_ref()?.metadata.as_ref()?.labels.clone())?;
        Some(LabelSelector {
            match_labels: Some(labels),
            match_expressions: None,
        })
    }
    fn template(&self) -> Option<&PodTemplateSpec> {
        self.spec.as_ref()?.template.as_ref()
    }
    fn min_ready_seconds(&self) -> i32 {
        self.spec
            .as_ref()
            .and_then(|s| s.min_ready_seconds)
            .unwrap_or(0)
    }
    fn status_value(&self) -> Value {
        self.status
            .as_ref()
            .map(|s| serde_json::to_value(s).unwrap_or_default())
            .unwrap_or_else(|| json!({}))
    }
}

// ---------------------------------------------------------------------------------------------
// Pod predicates (upstream podutil).

/// `Ready=True`.
pub fn is_pod_ready(pod: &Pod) -> bool {
    ready_condition(pod).is_some_and(|c| c.status == "True")
}

fn ready_condition(pod: &Pod) -> Option<&k8s_openapi::api::core::v1::PodCondition> {
    pod.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready")
}

/// When the pod last became ready (if it is ready).
pub fn pod_ready_since(pod: &Pod) -> Option<Timestamp> {
    let c = ready_condition(pod)?;
    (c.status == "True").then(|| c.last_transition_time.as_ref().map(|t| t.0))?
}

/// Ready for at least `min_ready_seconds` at `now` (upstream `IsPodAvailable`).
pub fn is_pod_available(pod: &Pod, min_ready_seconds: i32, now: Timestamp) -> bool {
    if !is_pod_ready(pod) {
        return false;
    }
    if min_ready_seconds <= 0 {
        return true;
    }
    match pod_ready_since(pod) {
        Some(t) => t.as_second() + i64::from(min_ready_seconds) <= now.as_second(),
        None => false,
    }
}

/// Not terminated and not being deleted (upstream `IsPodActive`).
pub fn is_pod_active(pod: &Pod) -> bool {
    let phase = pod
        .status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("");
    phase != "Succeeded" && phase != "Failed" && pod.metadata.deletion_timestamp.is_none()
}

fn phase_rank(pod: &Pod) -> u8 {
    match pod.status.as_ref().and_then(|s| s.phase.as_deref()) {
        Some("Pending") | None => 0,
        Some("Unknown") => 1,
        Some("Running") => 2,
        _ => 3,
    }
}

fn max_restarts(pod: &Pod) -> i32 {
    pod.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .map(|cs| cs.iter().map(|c| c.restart_count).max().unwrap_or(0))
        .unwrap_or(0)
}

fn deletion_cost(pod: &Pod) -> i64 {
    pod.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(POD_DELETION_COST))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn log2_rank(t: Option<Timestamp>, now: Timestamp) -> i64 {
    match t {
        Some(t) => {
            let d = now.as_nanosecond() - t.as_nanosecond();
            if d > 0 {
                (d as f64).log2() as i64
            } else {
                -1
            }
        }
        None => -1,
    }
}

/// Upstream's `afterOrZero`: a zero time sorts first, else the later one first.
fn after_or_zero(a: Option<Timestamp>, b: Option<Timestamp>) -> Ordering {
    match (a, b) {
        (None, None) => Ordering::Equal,
        (None, _) => Ordering::Less,
        (_, None) => Ordering::Greater,
        (Some(a), Some(b)) => b.cmp(&a),
    }
}

/// Upstream's `ActivePodsWithRanks.Less` with `LogarithmicScaleDown`: pods that sort first are
/// deleted first. `rank` is how many related pods share the pod's node.
pub fn compare_for_deletion(a: (&Pod, usize), b: (&Pod, usize), now: Timestamp) -> Ordering {
    let (pa, ra) = a;
    let (pb, rb) = b;
    let node = |p: &Pod| {
        p.spec
            .as_ref()
            .and_then(|s| s.node_name.as_deref())
            .is_some_and(|n| !n.is_empty())
    };
    // 1. Unassigned < assigned.
    if node(pa) != node(pb) {
        return node(pa).cmp(&node(pb));
    }
    // 2. Pending < Unknown < Running.
    if phase_rank(pa) != phase_rank(pb) {
        return phase_rank(pa).cmp(&phase_rank(pb));
    }
    // 3. Not ready < ready.
    if is_pod_ready(pa) != is_pod_ready(pb) {
        return is_pod_ready(pa).cmp(&is_pod_ready(pb));
    }
    // 4. Lower deletion cost first.
    if deletion_cost(pa) != deletion_cost(pb) {
        return deletion_cost(pa).cmp(&deletion_cost(pb));
    }
    // 5. Doubled up (more related pods on the node) first.
    if ra != rb {
        return rb.cmp(&ra);
    }
    // 6. Ready for less time first (logarithmic buckets).
    if is_pod_ready(pa) && is_pod_ready(pb) {
        let (ta, tb) = (pod_ready_since(pa), pod_ready_since(pb));
        if ta != tb {
            if ta.is_none() || tb.is_none() {
                return after_or_zero(ta, tb);
            }
            let diff = log2_rank(ta, now) - log2_rank(tb, now);
            if diff != 0 {
                return diff.cmp(&0);
            }
        }
    }
    // 7. Higher restart count first.
    if max_restarts(pa) != max_restarts(pb) {
        return max_restarts(pb).cmp(&max_restarts(pa));
    }
    // 8. Newer first (logarithmic buckets), ties broken by UID.
    let (ca, cb) = (
        pa.metadata.creation_timestamp.as_ref().map(|t| t.0),
        pb.metadata.creation_timestamp.as_ref().map(|t| t.0),
    );
    if ca != cb {
        if ca.is_none() || cb.is_none() {
            return after_or_zero(ca, cb);
        }
        let diff = log2_rank(ca, now) - log2_rank(cb, now);
        if diff != 0 {
            return diff.cmp(&0);
        }
    }
    pa.metadata.uid.cmp(&pb.metadata.uid)
}

/// The `diff` pods to delete, ranked as upstream (`getPodsToDelete`); `related` are the active
/// pods of every ReplicaSet of the same owner (for the same-node rank).
pub fn pods_to_delete<'a>(
    pods: &[&'a Pod],
    related: &[&Pod],
    diff: usize,
    now: Timestamp,
) -> Vec<&'a Pod> {
    let mut per_node: HashMap<&str, usize> = HashMap::new();
    for p in related {
        if let Some(n) = p.spec.as_ref().and_then(|s| s.node_name.as_deref()) {
            if is_pod_active(p) {
                *per_node.entry(n).or_default() += 1;
            }
        }
    }
    let mut ranked: Vec<(&Pod, usize)> = pods
        .iter()
        .map(|p| {
            (
                *p,
                p.spec
                    .as_ref()
                    .and_then(|s| s.node_name.as_deref())
                    .and_then(|n| per_node.get(n))
                    .copied()
                    .unwrap_or(0),
            )
        })
        .collect();
    if diff < ranked.len() {
        ranked.sort_by(|a, b| compare_for_deletion(*a, *b, now));
    }
    ranked.into_iter().take(diff).map(|(p, _)| p).collect()
}

/// Slow-start batch sizes for `count` creations: 1, 2, 4, … (the last one trimmed).
pub fn slow_start_batches(count: usize, initial: usize) -> Vec<usize> {
    let mut out = Vec::new();
    let (mut remaining, mut size) = (count, initial.max(1));
    while remaining > 0 {
        let b = size.min(remaining);
        out.push(b);
        remaining -= b;
        size *= 2;
    }
    out
}

/// The status upstream's `calculateStatus` computes.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct ComputedStatus {
    pub replicas: i32,
    pub fully_labeled: i32,
    pub ready: i32,
    pub available: i32,
    pub observed_generation: i64,
}

/// Count `pods` (active, owned) for status.
pub fn calculate_status(
    pods: &[&Pod],
    template_labels: Option<&BTreeMap<String, String>>,
    min_ready_seconds: i32,
    generation: i64,
    now: Timestamp,
) -> ComputedStatus {
    let mut s = ComputedStatus {
        replicas: pods.len() as i32,
        observed_generation: generation,
        ..Default::default()
    };
    for p in pods {
        let labels = p.metadata.labels.as_ref();
        if template_labels.is_none_or(|t| {
            t.iter()
                .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
        }) {
            s.fully_labeled += 1;
        }
        if is_pod_ready(p) {
            s.ready += 1;
            if is_pod_available(p, min_ready_seconds, now) {
                s.available += 1;
            }
        }
    }
    s
}

/// The `/status` merge patch taking `current` (JSON) to `s` plus the `ReplicaFailure`
/// condition for `failure` (reason, message); `None` when nothing changes.
pub fn status_patch(
    current: &Value,
    s: &ComputedStatus,
    failure: Option<(&str, &str)>,
    now: Timestamp,
) -> Option<Value> {
    let nz = |v: i32| if v == 0 { Value::Null } else { json!(v) };
    let mut conditions: Vec<Value> = current
        .get("conditions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let has_failure = conditions.iter().any(|c| c["type"] == "ReplicaFailure");
    match failure {
        Some((reason, message)) if !has_failure => conditions.push(json!({
            "type": "ReplicaFailure", "status": "True", "reason": reason, "message": message,
            "lastTransitionTime": k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(now),
        })),
        None if has_failure => conditions.retain(|c| c["type"] != "ReplicaFailure"),
        _ => {}
    }
    let want = json!({
        "replicas": s.replicas,
        "fullyLabeledReplicas": nz(s.fully_labeled),
        "readyReplicas": nz(s.ready),
        "availableReplicas": nz(s.available),
        "observedGeneration": if s.observed_generation == 0 { Value::Null } else { json!(s.observed_generation) },
        "conditions": if conditions.is_empty() { Value::Null } else { Value::Array(conditions) },
    });
    let field = |k: &str| current.get(k).cloned().unwrap_or(Value::Null);
    let changed = want.as_object().is_some_and(|m| {
        m.iter().any(|(k, v)| {
            let cur = field(k);
            // 0 and absent are the same for the counters.
            let norm = |v: Value| {
                if v == json!(0) || v == json!([]) {
                    Value::Null
                } else {
                    v
                }
            };
            if k == "replicas" {
                cur.as_i64().unwrap_or(0) != v.as_i64().unwrap_or(0)
            } else {
                norm(cur) != norm(v.clone())
            }
        })
    });
    changed.then(|| json!({ "status": want }))
}

// ---------------------------------------------------------------------------------------------
// The controller.

struct ReplicaReconciler<K: ReplicaWorkload> {
    client: Client,
    owners: Informer<K>,
    pods: Informer<Pod>,
    expectations: Arc<Expectations>,
    recorder: EventRecorder,
}

/// Start the ReplicaSet controller.
pub fn start_replicaset(ctx: &ControllerContext) -> Result<BoxFuture<'static, ()>> {
    start::<ReplicaSet>(ctx, "replicaset", ctx.config.concurrent_replicaset_syncs)
}

/// Start the ReplicationController controller.
pub fn start_replicationcontroller(ctx: &ControllerContext) -> Result<BoxFuture<'static, ()>> {
    start::<ReplicationController>(ctx, "replicationcontroller", ctx.config.concurrent_rc_syncs)
}

fn start<K: ReplicaWorkload>(
    ctx: &ControllerContext,
    name: &'static str,
    workers: usize,
) -> Result<BoxFuture<'static, ()>> {
    let owners = ctx.informers.informer::<K>();
    let pods = ctx.informers.informer::<Pod>();
    let expectations = Arc::new(Expectations::new());
    let rec = Arc::new(ReplicaReconciler::<K> {
        client: ctx.client.clone(),
        owners: owners.clone(),
        pods: pods.clone(),
        expectations: expectations.clone(),
        recorder: ctx.recorder(K::COMPONENT),
    });
    let controller = Controller::new(name, rec, ctx.metrics.clone());
    let q = controller.queue();
    {
        let (q, exp) = (q.clone(), expectations.clone());
        owners.subscribe(move |c: &Change<K>| {
            let key = ObjectKey::of(&**c.object());
            if let Change::Deleted(_) = c {
                exp.delete(&key);
            }
            q.add(key);
        });
    }
    {
        let (exp, owners) = (expectations.clone(), owners.clone());
        pods.subscribe(move |c: &Change<Pod>| on_pod_change(c, &owners, &exp, &q));
    }
    let synced = async move {
        owners.wait_synced().await;
        pods.wait_synced().await;
    };
    Ok(Box::pin(controller.run(workers, synced, ctx.token.clone())))
}

/// The owners (in the cache) whose selector matches an orphan pod.
fn matching_owners<K: ReplicaWorkload>(owners: &Informer<K>, pod: &Pod) -> Vec<ObjectKey> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("");
    owners
        .list_namespace(ns)
        .into_iter()
        .filter(|o| {
            Selector::from_api(o.label_selector().as_ref())
                .is_ok_and(|s| !s.is_empty() && s.matches(pod.metadata.labels.as_ref()))
        })
        .map(|o| ObjectKey::of(&*o))
        .collect()
}

/// The cached owner a controller reference points at, if it is of kind `K` with that UID.
fn resolve_owner<K: ReplicaWorkload>(owners: &Informer<K>, meta: &ObjectMeta) -> Option<ObjectKey> {
    let r = controller_of(meta)?;
    if r.kind != K::kind(&()) {
        return None;
    }
    let o = owners.get(meta.namespace.as_deref(), &r.name)?;
    (o.meta().uid.as_deref() == Some(r.uid.as_str())).then(|| ObjectKey::of(&*o))
}

fn pod_key(p: &Pod) -> String {
    ObjectKey::of(p).to_string()
}

fn on_pod_change<K: ReplicaWorkload>(
    c: &Change<Pod>,
    owners: &Informer<K>,
    exp: &Expectations,
    q: &WorkQueue<ObjectKey>,
) {
    let deleted = |p: &Pod| {
        if let Some(k) = resolve_owner(owners, &p.metadata) {
            exp.deletion_observed(&k, &pod_key(p));
            q.add(k);
        }
    };
    match c {
        Change::Added(p) => {
            if p.metadata.deletion_timestamp.is_some() {
                return deleted(p);
            }
            if let Some(k) = resolve_owner(owners, &p.metadata) {
                exp.creation_observed(&k);
                q.add(k);
            } else if controller_of(&p.metadata).is_none() {
                for k in matching_owners(owners, p) {
                    q.add(k);
                }
            }
        }
        Change::Updated { old, new } => {
            if old.metadata.resource_version == new.metadata.resource_version {
                return;
            }
            let labels_changed = old.metadata.labels != new.metadata.labels;
            if new.metadata.deletion_timestamp.is_some()
                && old.metadata.deletion_timestamp.is_none()
            {
                deleted(new);
                if labels_changed {
                    deleted(old);
                }
                return;
            }
            let (old_ref, new_ref) = (controller_of(&old.metadata), controller_of(&new.metadata));
            let ref_changed = old_ref.map(|r| &r.uid) != new_ref.map(|r| &r.uid);
            if ref_changed {
                if let Some(k) = resolve_owner(owners, &old.metadata) {
                    q.add(k);
                }
            }
            if let Some(k) = resolve_owner(owners, &new.metadata) {
                q.add(k.clone());
                if !is_pod_ready(old) && is_pod_ready(new) {
                    if let Some(o) = owners.get(k.namespace.as_deref(), &k.name) {
                        let mrs = o.min_ready_seconds();
                        if mrs > 0 {
                            q.add_after(k, Duration::from_secs(mrs as u64 + 1));
                        }
                    }
                }
                return;
            }
            if new_ref.is_none() && (labels_changed || ref_changed) {
                for k in matching_owners(owners, new) {
                    q.add(k);
                }
            }
        }
        Change::Deleted(p) => deleted(p),
    }
}

impl<K: ReplicaWorkload> Reconciler for ReplicaReconciler<K> {
    async fn reconcile(&self, key: &ObjectKey, _ctx: &ReconcileContext) -> Result<Action> {
        let Some(owner) = self.owners.get(key.namespace.as_deref(), &key.name) else {
            self.expectations.delete(key);
            return Ok(Action::done());
        };
        let needs_sync = self.expectations.satisfied(key);
        let selector = match Selector::from_api(owner.label_selector().as_ref()) {
            Ok(s) if !s.is_empty() => s,
            // An invalid or empty selector would match everything: never act on it.
            _ => return Ok(Action::done()),
        };
        let ns = key.ns();
        let all = self.pods.list_namespace(ns);
        let active: Vec<Arc<Pod>> = all.into_iter().filter(|p| is_pod_active(p)).collect();
        let owned = self.claim_pods(&owner, &selector, active).await?;
        let owned_refs: Vec<&Pod> = owned.iter().map(|p| &**p).collect();
        let mut failure: Option<(String, String)> = None;
        let mut manage_err: Option<Error> = None;
        if needs_sync && owner.meta().deletion_timestamp.is_none() {
            if let Err((reason, e)) = self.manage_replicas(&owner, key, &owned_refs).await {
                failure = Some((reason.to_string(), e.to_string()));
                manage_err = Some(e);
            }
        }
        let now = Timestamp::now();
        let template_labels = owner
            .template()
            .and_then(|t| t.metadata.as_ref())
            .and_then(|m| m.labels.as_ref());
        let mrs = owner.min_ready_seconds();
        let status = calculate_status(
            &owned_refs,
            template_labels,
            mrs,
            owner.meta().generation.unwrap_or(0),
            now,
        );
        let current = owner.status_value();
        if let Some(patch) = status_patch(
            &current,
            &status,
            failure.as_ref().map(|(r, m)| (r.as_str(), m.as_str())),
            now,
        ) {
            let api: Api<K> = Api::namespaced(self.client.clone(), ns);
            api.patch_status(&key.name, &PatchParams::default(), &Patch::Merge(&patch))
                .await?;
        }
        if let Some(e) = manage_err {
            return Err(e);
        }
        if mrs > 0 && status.ready == owner.replicas() && status.available != owner.replicas() {
            return Ok(Action::requeue_after(Duration::from_secs(mrs as u64)));
        }
        Ok(Action::done())
    }
}

impl<K: ReplicaWorkload> ReplicaReconciler<K> {
    /// Adopt matching orphans and release non-matching owned pods (upstream
    /// `PodControllerRefManager.ClaimPods`); returns the pods this owner now controls.
    async fn claim_pods(
        &self,
        owner: &K,
        selector: &Selector,
        pods: Vec<Arc<Pod>>,
    ) -> Result<Vec<Arc<Pod>>> {
        let uid = owner.meta().uid.clone().unwrap_or_default();
        let ns = owner.meta().namespace.clone().unwrap_or_default();
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &ns);
        let mut owned = Vec::new();
        let mut fresh_checked: Option<bool> = None;
        for pod in pods {
            let matches = selector.matches(pod.metadata.labels.as_ref());
            match controller_of(&pod.metadata) {
                Some(r) if r.uid == uid => {
                    if matches {
                        owned.push(pod);
                    } else if owner.meta().deletion_timestamp.is_none() {
                        let patch = json!({"metadata": {"ownerReferences": [{"$patch": "delete", "uid": uid}], "uid": pod.metadata.uid}});
                        match api
                            .patch(
                                pod.metadata.name.as_deref().unwrap_or(""),
                                &PatchParams::default(),
                                &Patch::Strategic(&patch),
                            )
                            .await
                        {
                            Ok(_) => {}
                            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 422 => {}
                            Err(e) => return Err(e.into()),
                        }
                    }
                }
                Some(_) => {}
                None => {
                    if !matches
                        || owner.meta().deletion_timestamp.is_some()
                        || pod.metadata.deletion_timestamp.is_some()
                    {
                        continue;
                    }
                    // Re-check with a live read that the owner is not being deleted (upstream
                    // `RecheckDeletionTimestamp`), once per sync.
                    if fresh_checked.is_none() {
                        let oapi: Api<K> = Api::namespaced(self.client.clone(), &ns);
                        let live = oapi
                            .get_opt(owner.meta().name.as_deref().unwrap_or(""))
                            .await?;
                        fresh_checked = Some(live.is_some_and(|l| {
                            l.meta().deletion_timestamp.is_none()
                                && l.meta().uid.as_deref() == Some(uid.as_str())
                        }));
                    }
                    if fresh_checked != Some(true) {
                        continue;
                    }
                    let r = new_controller_ref(owner);
                    let patch =
                        json!({"metadata": {"ownerReferences": [r], "uid": pod.metadata.uid}});
                    match api
                        .patch(
                            pod.metadata.name.as_deref().unwrap_or(""),
                            &PatchParams::default(),
                            &Patch::Strategic(&patch),
                        )
                        .await
                    {
                        Ok(p) => owned.push(Arc::new(p)),
                        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 422 => {}
                        Err(e) => return Err(e.into()),
                    }
                }
            }
        }
        Ok(owned)
    }

    /// Create or delete pods towards `replicas`; on failure returns the ReplicaFailure reason.
    async fn manage_replicas(
        &self,
        owner: &K,
        key: &ObjectKey,
        pods: &[&Pod],
    ) -> Result<(), (&'static str, Error)> {
        let diff = pods.len() as i64 - i64::from(owner.replicas());
        let ns = key.ns();
        let api: Api<Pod> = Api::namespaced(self.client.clone(), ns);
        if diff < 0 {
            let count = ((-diff) as usize).min(BURST_REPLICAS);
            self.expectations.expect_creations(key, count);
            let pod = pod_from_template(owner).map_err(|e| ("FailedCreate", e))?;
            let mut created = 0usize;
            let mut first_err: Option<Error> = None;
            for batch in slow_start_batches(count, SLOW_START_INITIAL_BATCH) {
                let pp = PostParams::default();
                let creates: Vec<_> = (0..batch).map(|_| api.create(&pp, &pod)).collect();
                let results: Vec<_> = stream::iter(creates)
                    .buffer_unordered(MAX_IN_FLIGHT)
                    .collect()
                    .await;
                for r in results {
                    match r {
                        Ok(p) => {
                            created += 1;
                            self.recorder.event(
                                owner,
                                EventType::Normal,
                                "SuccessfulCreate",
                                format!("Created pod: {}", p.metadata.name.unwrap_or_default()),
                            );
                        }
                        Err(e) => {
                            // The failed create will never be observed.
                            self.expectations.creation_observed(key);
                            let terminating = matches!(&e, kube::Error::Api(s) if s.message.contains("being terminated"));
                            if !terminating {
                                self.recorder.event(
                                    owner,
                                    EventType::Warning,
                                    "FailedCreate",
                                    format!("Error creating: {e}"),
                                );
                            }
                            first_err.get_or_insert(e.into());
                        }
                    }
                }
                if first_err.is_some() {
                    break;
                }
            }
            if first_err.is_some() {
                // Batches never attempted will not be observed either (upstream lowers the
                // expectations by the skipped count).
                let mut attempted = 0;
                for b in slow_start_batches(count, SLOW_START_INITIAL_BATCH) {
                    attempted += b;
                    if attempted > created {
                        break;
                    }
                }
                self.expectations
                    .lower_creations(key, count.saturating_sub(attempted));
            }
            if let Some(e) = first_err {
                return Err(("FailedCreate", e));
            }
        } else if diff > 0 {
            let count = (diff as usize).min(BURST_REPLICAS);
            let related_arcs = self.related_pods(owner);
            let related: Vec<&Pod> = related_arcs.iter().map(|p| &**p).collect();
            let victims = pods_to_delete(pods, &related, count, Timestamp::now());
            self.expectations
                .expect_deletions(key, victims.iter().map(|p| pod_key(p)));
            let dp = DeleteParams::default();
            let deletes: Vec<_> = victims
                .iter()
                .map(|p| {
                    let (api, dp) = (&api, &dp);
                    let name = p.metadata.name.clone().unwrap_or_default();
                    let p: &Pod = p;
                    async move { (p, api.delete(&name, dp).await) }
                })
                .collect();
            let results: Vec<_> = stream::iter(deletes)
                .buffer_unordered(MAX_IN_FLIGHT)
                .collect()
                .await;
            let mut first_err = None;
            for (p, r) in results {
                let name = p.metadata.name.as_deref().unwrap_or("");
                match r {
                    Ok(_) => self.recorder.event(
                        owner,
                        EventType::Normal,
                        "SuccessfulDelete",
                        format!("Deleted pod: {name}"),
                    ),
                    Err(e) => {
                        self.expectations.deletion_observed(key, &pod_key(p));
                        if matches!(&e, kube::Error::Api(s) if s.code == 404) {
                            continue;
                        }
                        self.recorder.event(
                            owner,
                            EventType::Warning,
                            "FailedDelete",
                            format!("Error deleting: {e}"),
                        );
                        first_err.get_or_insert(e.into());
                    }
                }
            }
            if let Some(e) = first_err {
                return Err(("FailedDelete", e));
            }
        }
        Ok(())
    }

    /// Active pods of every workload controlled by the same owner (e.g. all ReplicaSets of a
    /// Deployment), for the scale-down rank.
    fn related_pods(&self, owner: &K) -> Vec<Arc<Pod>> {
        let ns = owner.meta().namespace.as_deref().unwrap_or("");
        let Some(grand) = controller_of(owner.meta()).map(|r| r.uid.clone()) else {
            return self
                .pods
                .list_namespace(ns)
                .into_iter()
                .filter(|p| {
                    controller_of(&p.metadata).map(|r| r.uid.as_str())
                        == owner.meta().uid.as_deref()
                })
                .collect();
        };
        let siblings: std::collections::HashSet<String> = self
            .owners
            .list_namespace(ns)
            .into_iter()
            .filter(|o| controller_of(o.meta()).map(|r| &r.uid) == Some(&grand))
            .filter_map(|o| o.meta().uid.clone())
            .collect();
        self.pods
            .list_namespace(ns)
            .into_iter()
            .filter(|p| controller_of(&p.metadata).is_some_and(|r| siblings.contains(&r.uid)))
            .collect()
    }
}

/// The pod a workload creates: its template with `generateName: <owner>-` and a controller
/// reference (upstream `GetPodFromTemplate`).
pub fn pod_from_template<K: ReplicaWorkload>(owner: &K) -> Result<Pod> {
    let t = owner
        .template()
        .ok_or_else(|| Error::msg("workload has no pod template"))?;
    let tm = t.metadata.clone().unwrap_or_default();
    let name = owner.meta().name.clone().unwrap_or_default();
    Ok(Pod {
        metadata: ObjectMeta {
            generate_name: Some(format!("{name}-")),
            namespace: owner.meta().namespace.clone(),
            labels: tm.labels,
            annotations: tm.annotations,
            finalizers: tm.finalizers,
            owner_references: Some(vec![new_controller_ref(owner)]),
            ..Default::default()
        },
        spec: t.spec.clone(),
        status: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{ContainerStatus, PodCondition, PodSpec, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn ts(secs: i64) -> Timestamp {
        Timestamp::from_second(secs).unwrap()
    }

    struct P {
        name: &'static str,
        node: Option<&'static str>,
        phase: &'static str,
        ready_since: Option<i64>,
        created: i64,
        restarts: i32,
    }

    fn pod(p: P) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(p.name.into()),
                uid: Some(p.name.into()),
                creation_timestamp: Some(Time(ts(p.created))),
                labels: Some([("app".to_string(), "web".to_string())].into()),
                ..Default::default()
            },
            spec: Some(PodSpec {
                node_name: p.node.map(Into::into),
                ..Default::default()
            }),
            status: Some(PodStatus {
                phase: Some(p.phase.into()),
                conditions: p.ready_since.map(|t| {
                    vec![PodCondition {
                        type_: "Ready".into(),
                        status: "True".into(),
                        last_transition_time: Some(Time(ts(t))),
                        ..Default::default()
                    }]
                }),
                container_statuses: Some(vec![ContainerStatus {
                    restart_count: p.restarts,
                    ..Default::default()
                }]),
                ..Default::default()
            }),
        }
    }

    fn base(name: &'static str) -> P {
        P {
            name,
            node: Some("n1"),
            phase: "Running",
            ready_since: Some(1000),
            created: 900,
            restarts: 0,
        }
    }

    #[test]
    fn scale_down_ranks_like_upstream() {
        let now = ts(1_000_000);
        // Each case: (a, b) where a must be deleted before b.
        let cases: Vec<(&str, P, P)> = vec![
            (
                "unassigned first",
                P {
                    node: None,
                    ..base("a")
                },
                base("b"),
            ),
            (
                "pending before running",
                P {
                    phase: "Pending",
                    ready_since: None,
                    ..base("a")
                },
                base("b"),
            ),
            (
                "not ready before ready",
                P {
                    ready_since: None,
                    ..base("a")
                },
                base("b"),
            ),
            (
                "ready more recently first",
                P {
                    ready_since: Some(999_000),
                    ..base("a")
                },
                P {
                    ready_since: Some(1000),
                    ..base("b")
                },
            ),
            (
                "more restarts first",
                P {
                    restarts: 5,
                    ..base("a")
                },
                base("b"),
            ),
            (
                "newer first",
                P {
                    created: 999_990,
                    ready_since: Some(1000),
                    ..base("a")
                },
                P {
                    created: 10,
                    ..base("b")
                },
            ),
        ];
        for (what, a, b) in cases {
            let (a, b) = (pod(a), pod(b));
            assert_eq!(
                compare_for_deletion((&a, 0), (&b, 0), now),
                Ordering::Less,
                "{what}"
            );
            assert_eq!(
                compare_for_deletion((&b, 0), (&a, 0), now),
                Ordering::Greater,
                "{what} (reversed)"
            );
        }
        // Same log2 bucket of readiness: falls through to later criteria (UID).
        let (a, b) = (
            pod(P {
                ready_since: Some(1000),
                ..base("a")
            }),
            pod(P {
                ready_since: Some(1001),
                ..base("b")
            }),
        );
        assert_eq!(compare_for_deletion((&a, 0), (&b, 0), now), Ordering::Less);
        // Doubled-up pods go first.
        let (a, b) = (pod(base("z")), pod(base("y")));
        assert_eq!(compare_for_deletion((&a, 3), (&b, 1), now), Ordering::Less);
    }

    #[test]
    fn pods_to_delete_takes_the_lowest_ranked() {
        let now = ts(1_000_000);
        let pods = [
            pod(base("ready")),
            pod(P {
                node: None,
                ready_since: None,
                phase: "Pending",
                ..base("unscheduled")
            }),
            pod(P {
                ready_since: None,
                ..base("notready")
            }),
        ];
        let refs: Vec<&Pod> = pods.iter().collect();
        let got: Vec<_> = pods_to_delete(&refs, &refs, 2, now)
            .iter()
            .map(|p| p.metadata.name.clone().unwrap())
            .collect();
        assert_eq!(got, ["unscheduled", "notready"]);
    }

    #[test]
    fn slow_start_doubles_batches() {
        let cases: [(usize, &[usize]); 4] = [
            (0, &[]),
            (1, &[1]),
            (5, &[1, 2, 2]),
            (500, &[1, 2, 4, 8, 16, 32, 64, 128, 245]),
        ];
        for (n, want) in cases {
            assert_eq!(slow_start_batches(n, 1), want, "{n}");
        }
    }

    #[test]
    fn status_counts_ready_and_available_with_min_ready_seconds() {
        let now = ts(10_000);
        let pods = [
            pod(P {
                ready_since: Some(9_995),
                ..base("fresh")
            }),
            pod(P {
                ready_since: Some(1_000),
                ..base("old")
            }),
            pod(P {
                ready_since: None,
                ..base("notready")
            }),
        ];
        let refs: Vec<&Pod> = pods.iter().collect();
        let labels: BTreeMap<String, String> = [("app".to_string(), "web".to_string())].into();
        let cases = [(0, 2), (10, 1), (100_000, 0)];
        for (mrs, available) in cases {
            let s = calculate_status(&refs, Some(&labels), mrs, 7, now);
            assert_eq!(
                s,
                ComputedStatus {
                    replicas: 3,
                    fully_labeled: 3,
                    ready: 2,
                    available,
                    observed_generation: 7
                },
                "minReadySeconds={mrs}"
            );
        }
        let other: BTreeMap<String, String> = [
            ("app".to_string(), "web".to_string()),
            ("x".to_string(), "y".to_string()),
        ]
        .into();
        assert_eq!(
            calculate_status(&refs, Some(&other), 0, 1, now).fully_labeled,
            0
        );
    }

    #[test]
    fn status_patch_only_when_changed_and_manages_replica_failure() {
        let now = ts(10);
        let s = ComputedStatus {
            replicas: 2,
            fully_labeled: 2,
            ready: 2,
            available: 2,
            observed_generation: 3,
        };
        let cur = json!({"replicas": 2, "fullyLabeledReplicas": 2, "readyReplicas": 2, "availableReplicas": 2, "observedGeneration": 3});
        assert_eq!(status_patch(&cur, &s, None, now), None);
        let p = status_patch(&cur, &s, Some(("FailedCreate", "quota")), now).unwrap();
        assert_eq!(p["status"]["conditions"][0]["type"], "ReplicaFailure");
        assert_eq!(p["status"]["conditions"][0]["reason"], "FailedCreate");
        let mut with = cur.clone();
        with["conditions"] = p["status"]["conditions"].clone();
        assert_eq!(
            status_patch(&with, &s, Some(("FailedCreate", "quota")), now),
            None
        );
        assert_eq!(
            status_patch(&with, &s, None, now).unwrap()["status"]["conditions"],
            Value::Null
        );
        let zero = ComputedStatus {
            replicas: 0,
            observed_generation: 1,
            ..Default::default()
        };
        let p = status_patch(&json!({}), &zero, None, now).unwrap();
        assert_eq!(p["status"]["replicas"], 0);
        assert_eq!(p["status"]["readyReplicas"], Value::Null);
    }
}
