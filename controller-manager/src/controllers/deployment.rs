//! Deployment controller (upstream `pkg/controller/deployment`): rolls a Deployment's pod
//! template out through ReplicaSets.
//!
//! Each sync claims ReplicaSets (adopt/release by selector and controller reference), finds or
//! creates the new ReplicaSet (`<name>-<pod-template-hash>`, revision = max old + 1, reusing an
//! old ReplicaSet whose template matches — rollback renumbers it and records the old number in
//! `revision-history`), then: paused or scaling-only → proportional scaling; `Recreate` → old
//! to zero, wait for their pods to go, new to full size; `RollingUpdate` → new up within
//! `replicas + maxSurge`, old down while `replicas − maxUnavailable` stay available. Status and
//! the Progressing/Available conditions carry upstream's reasons and messages, old
//! ReplicaSets beyond `revisionHistoryLimit` are deleted once the rollout completes, and
//! `ScalingReplicaSet` events are recorded on the Deployment.
//!
//! The pod-template-hash is upstream's shape — FNV-32a over the template plus
//! `collisionCount`, rendered with the "safe" alphabet — but hashes a canonical JSON rendering
//! of the template rather than Go's `spew` dump, so the values differ from a real cluster's.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, ReplicaSetSpec};
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::{Api, Client};
use serde_json::{json, Value};

use crate::framework::{
    controller_of, new_controller_ref, Action, BoxFuture, Change, Controller, ControllerContext,
    Error, EventRecorder, EventType, Informer, ObjectKey, ReconcileContext, Reconciler, Result,
    Selector,
};

pub const REVISION: &str = "deployment.kubernetes.io/revision";
pub const REVISION_HISTORY: &str = "deployment.kubernetes.io/revision-history";
pub const DESIRED_REPLICAS: &str = "deployment.kubernetes.io/desired-replicas";
pub const MAX_REPLICAS: &str = "deployment.kubernetes.io/max-replicas";
pub const POD_TEMPLATE_HASH: &str = "pod-template-hash";
pub const CHANGE_CAUSE: &str = "kubernetes.io/change-cause";
const MAX_REV_HISTORY_CHARS: usize = 2000;
/// Annotations never copied from a Deployment to its ReplicaSets.
const SKIPPED_ANNOTATIONS: &[&str] = &[
    "kubectl.kubernetes.io/last-applied-configuration",
    REVISION,
    REVISION_HISTORY,
    DESIRED_REPLICAS,
    MAX_REPLICAS,
    "deprecated.deployment.rollback.to",
];

// ---------------------------------------------------------------------------------------------
// Pure decision functions.

/// Upstream `GetScaledValueFromIntOrPercent`.
pub fn scaled_value(v: &IntOrString, total: i32, round_up: bool) -> Result<i32> {
    match v {
        IntOrString::Int(i) => Ok(*i),
        IntOrString::String(s) => {
            let p: f64 = s
                .strip_suffix('%')
                .and_then(|n| n.parse().ok())
                .ok_or_else(|| {
                    Error::msg(format!(
                        "invalid value for IntOrString: invalid value {s:?}"
                    ))
                })?;
            let v = p * f64::from(total) / 100.0;
            Ok(if round_up { v.ceil() } else { v.floor() } as i32)
        }
    }
}

/// Upstream `ResolveFenceposts`: (maxSurge rounded up, maxUnavailable rounded down), never
/// both zero.
pub fn resolve_fenceposts(
    max_surge: Option<&IntOrString>,
    max_unavailable: Option<&IntOrString>,
    desired: i32,
) -> Result<(i32, i32)> {
    let quarter = IntOrString::String("25%".into());
    let surge = scaled_value(max_surge.unwrap_or(&quarter), desired, true)?;
    let mut unavailable = scaled_value(max_unavailable.unwrap_or(&quarter), desired, false)?;
    if surge == 0 && unavailable == 0 {
        unavailable = 1;
    }
    Ok((surge, unavailable))
}

fn replicas(d: &Deployment) -> i32 {
    d.spec.replicas.unwrap_or(1)
}

fn is_rolling(d: &Deployment) -> bool {
    d.spec
        .strategy
        .as_ref()
        .and_then(|s| s.type_.as_deref())
        .unwrap_or("RollingUpdate")
        == "RollingUpdate"
}

fn fenceposts(d: &Deployment) -> (i32, i32) {
    let ru = d
        .spec
        .strategy
        .as_ref()
        .and_then(|s| s.rolling_update.as_ref());
    resolve_fenceposts(
        ru.and_then(|r| r.max_surge.as_ref()),
        ru.and_then(|r| r.max_unavailable.as_ref()),
        replicas(d),
    )
    .unwrap_or((0, 1))
}

/// Upstream `MaxSurge`.
pub fn max_surge(d: &Deployment) -> i32 {
    if !is_rolling(d) {
        return 0;
    }
    fenceposts(d).0
}

/// Upstream `MaxUnavailable`.
pub fn max_unavailable(d: &Deployment) -> i32 {
    if !is_rolling(d) || replicas(d) == 0 {
        return 0;
    }
    fenceposts(d).1.min(replicas(d))
}

/// 32-bit FNV-1a.
pub fn fnv32a(data: &[u8]) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in data {
        h ^= u32::from(*b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

/// Upstream `rand.SafeEncodeString`: no vowels, no confusable characters.
pub fn safe_encode(s: &str) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    s.bytes()
        .map(|b| ALPHABET[b as usize % ALPHABET.len()] as char)
        .collect()
}

/// The pod-template-hash label value of `template` with `collision_count` (upstream
/// `ComputeHash`; see the module note on the hash input).
pub fn compute_hash(template: &PodTemplateSpec, collision_count: Option<i32>) -> String {
    let mut data = serde_json::to_vec(&canonical(
        serde_json::to_value(template).unwrap_or_default(),
    ))
    .unwrap_or_default();
    if let Some(c) = collision_count {
        data.extend_from_slice(&(c as u32).to_le_bytes());
    }
    safe_encode(&fnv32a(&data).to_string())
}

/// JSON with object keys sorted (serde_json's map is already ordered; this also drops nulls).
fn canonical(v: Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.into_iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k, canonical(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.into_iter().map(canonical).collect()),
        v => v,
    }
}

/// Upstream `EqualIgnoreHash`: templates equal apart from the pod-template-hash label.
pub fn equal_ignore_hash(a: &PodTemplateSpec, b: &PodTemplateSpec) -> bool {
    let strip = |t: &PodTemplateSpec| {
        let mut t = t.clone();
        if let Some(m) = t.metadata.as_mut() {
            if let Some(l) = m.labels.as_mut() {
                l.remove(POD_TEMPLATE_HASH);
                if l.is_empty() {
                    m.labels = None;
                }
            }
        }
        canonical(serde_json::to_value(t).unwrap_or_default())
    };
    strip(a) == strip(b)
}

/// The numeric revision of a ReplicaSet (0 when absent or invalid).
pub fn revision_of(meta: &ObjectMeta) -> i64 {
    meta.annotations
        .as_ref()
        .and_then(|a| a.get(REVISION))
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

fn rs_replicas(rs: &ReplicaSet) -> i32 {
    rs.spec.replicas.unwrap_or(1)
}
fn rs_available(rs: &ReplicaSet) -> i32 {
    rs.status
        .as_ref()
        .and_then(|s| s.available_replicas)
        .unwrap_or(0)
}
fn rs_ready(rs: &ReplicaSet) -> i32 {
    rs.status
        .as_ref()
        .and_then(|s| s.ready_replicas)
        .unwrap_or(0)
}
fn rs_status_replicas(rs: &ReplicaSet) -> i32 {
    rs.status.as_ref().map(|s| s.replicas).unwrap_or(0)
}
fn created(rs: &ReplicaSet) -> Option<Timestamp> {
    rs.metadata.creation_timestamp.as_ref().map(|t| t.0)
}
fn annotation_i32(rs: &ReplicaSet, k: &str) -> Option<i32> {
    rs.metadata.annotations.as_ref()?.get(k)?.parse().ok()
}

/// Oldest first, ties by name (upstream `ReplicaSetsByCreationTimestamp`).
fn by_creation(a: &ReplicaSet, b: &ReplicaSet) -> std::cmp::Ordering {
    created(a)
        .cmp(&created(b))
        .then_with(|| a.metadata.name.cmp(&b.metadata.name))
}

/// Upstream `NewRSNewReplicas`: the new ReplicaSet's next size.
pub fn new_rs_new_replicas(d: &Deployment, all: &[ReplicaSet], new_rs_replicas: i32) -> i32 {
    if !is_rolling(d) {
        return replicas(d);
    }
    let current: i32 = all.iter().map(rs_replicas).sum();
    let max_total = replicas(d) + max_surge(d);
    if current >= max_total {
        return new_rs_replicas;
    }
    let up = (max_total - current).min(replicas(d) - new_rs_replicas);
    new_rs_replicas + up
}

/// Upstream `cleanupUnhealthyReplicas` + `scaleDownOldReplicaSetsForRollingUpdate`: the new
/// sizes of old ReplicaSets (sorted oldest first) for one rolling step.
pub fn rolling_scale_down(
    d: &Deployment,
    old: &[ReplicaSet],
    new_rs: Option<&ReplicaSet>,
) -> Vec<(String, i32)> {
    let mut old: Vec<ReplicaSet> = old.iter().filter(|r| rs_replicas(r) > 0).cloned().collect();
    old.sort_by(by_creation);
    let old_count: i32 = old.iter().map(rs_replicas).sum();
    if old_count == 0 {
        return vec![];
    }
    let all_count = old_count + new_rs.map(rs_replicas).unwrap_or(0);
    let min_available = replicas(d) - max_unavailable(d);
    let new_unavailable = new_rs
        .map(|r| rs_replicas(r) - rs_available(r))
        .unwrap_or(0);
    let max_scaled_down = all_count - min_available - new_unavailable;
    if max_scaled_down <= 0 {
        return vec![];
    }
    let mut sizes: Vec<(String, i32, i32)> = old
        .iter()
        .map(|r| {
            (
                r.metadata.name.clone().unwrap_or_default(),
                rs_replicas(r),
                rs_available(r),
            )
        })
        .collect();
    // Unhealthy replicas first.
    let mut cleaned = 0;
    for (_, size, avail) in sizes.iter_mut() {
        if cleaned >= max_scaled_down {
            break;
        }
        if *size == 0 || *size == *avail {
            continue;
        }
        let n = (max_scaled_down - cleaned).min(*size - *avail);
        *size -= n;
        cleaned += n;
    }
    // Then available ones while enough stay available.
    let available: i32 = sizes.iter().map(|(_, s, a)| (*a).min(*s)).sum::<i32>()
        + new_rs.map(rs_available).unwrap_or(0);
    if available > min_available {
        let total = available - min_available;
        let mut done = 0;
        for (_, size, _) in sizes.iter_mut() {
            if done >= total {
                break;
            }
            if *size == 0 {
                continue;
            }
            let n = (*size).min(total - done);
            *size -= n;
            done += n;
        }
    }
    old.iter()
        .zip(sizes)
        .filter(|(r, (_, s, _))| rs_replicas(r) != *s)
        .map(|(_, (n, s, _))| (n, s))
        .collect()
}

/// Upstream `scale` for RollingUpdate during a scaling event: new sizes of the active
/// ReplicaSets, spreading the change in proportion to their size (leftover to the largest).
pub fn proportional_scale(d: &Deployment, active: &[ReplicaSet]) -> Vec<(String, i32)> {
    let all_replicas: i32 = active.iter().map(rs_replicas).sum();
    let allowed = if replicas(d) > 0 {
        replicas(d) + max_surge(d)
    } else {
        0
    };
    let to_add = allowed - all_replicas;
    let mut rss: Vec<&ReplicaSet> = active.iter().collect();
    if to_add > 0 {
        // Larger first, newer first on ties.
        rss.sort_by(|a, b| {
            rs_replicas(b)
                .cmp(&rs_replicas(a))
                .then_with(|| created(b).cmp(&created(a)))
        });
    } else {
        // Larger first, older first on ties.
        rss.sort_by(|a, b| {
            rs_replicas(b)
                .cmp(&rs_replicas(a))
                .then_with(|| created(a).cmp(&created(b)))
        });
    }
    let mut added = 0;
    let mut sizes: Vec<(String, i32)> = Vec::new();
    for rs in &rss {
        let mut size = rs_replicas(rs);
        if to_add != 0 {
            let p = proportion(d, rs, to_add, added);
            size += p;
            added += p;
        }
        sizes.push((rs.metadata.name.clone().unwrap_or_default(), size));
    }
    if to_add != 0 {
        if let Some(first) = sizes.first_mut() {
            first.1 = (first.1 + to_add - added).max(0);
        }
    }
    sizes
}

fn proportion(d: &Deployment, rs: &ReplicaSet, to_add: i32, added: i32) -> i32 {
    if rs_replicas(rs) == 0 || to_add == 0 || to_add == added {
        return 0;
    }
    let fraction = if replicas(d) == 0 {
        -rs_replicas(rs)
    } else {
        let deployment_replicas = replicas(d) + max_surge(d);
        let annotated = annotation_i32(rs, MAX_REPLICAS)
            .unwrap_or_else(|| d.status.as_ref().and_then(|s| s.replicas).unwrap_or(0));
        if annotated == 0 {
            0
        } else {
            let v = f64::from(rs_replicas(rs) * deployment_replicas) / f64::from(annotated);
            (v.round() as i32) - rs_replicas(rs)
        }
    };
    let allowed = to_add - added;
    if to_add > 0 {
        fraction.min(allowed)
    } else {
        fraction.max(allowed)
    }
}

/// Old ReplicaSets to delete beyond `revisionHistoryLimit` (upstream `cleanupDeployment`).
pub fn history_to_clean(d: &Deployment, old: &[ReplicaSet]) -> Vec<String> {
    let Some(limit) = d.spec.revision_history_limit else {
        return vec![];
    };
    let mut cleanable: Vec<&ReplicaSet> = old
        .iter()
        .filter(|r| r.metadata.deletion_timestamp.is_none())
        .collect();
    let diff = cleanable.len() as i64 - i64::from(limit);
    if diff <= 0 {
        return vec![];
    }
    cleanable.sort_by(|a, b| {
        revision_of(&a.metadata)
            .cmp(&revision_of(&b.metadata))
            .then_with(|| by_creation(a, b))
    });
    cleanable
        .into_iter()
        .take(diff as usize)
        .filter(|r| {
            rs_status_replicas(r) == 0
                && rs_replicas(r) == 0
                && r.metadata.generation.unwrap_or(0)
                    <= r.status
                        .as_ref()
                        .and_then(|s| s.observed_generation)
                        .unwrap_or(0)
        })
        .filter_map(|r| r.metadata.name.clone())
        .collect()
}

/// A Deployment condition as JSON-able fields.
#[derive(Clone, Debug, PartialEq)]
pub struct Condition {
    pub type_: String,
    pub status: String,
    pub reason: String,
    pub message: String,
    pub last_update: Timestamp,
    pub last_transition: Timestamp,
}

impl Condition {
    pub fn new(type_: &str, status: &str, reason: &str, message: String, now: Timestamp) -> Self {
        Self {
            type_: type_.into(),
            status: status.into(),
            reason: reason.into(),
            message,
            last_update: now,
            last_transition: now,
        }
    }
    fn to_json(&self) -> Value {
        json!({"type": self.type_, "status": self.status, "reason": self.reason, "message": self.message,
               "lastUpdateTime": Time(self.last_update), "lastTransitionTime": Time(self.last_transition)})
    }
}

fn conditions_of(d: &Deployment) -> Vec<Condition> {
    let now = Timestamp::now();
    d.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .map(|cs| {
            cs.iter()
                .map(|c| Condition {
                    type_: c.type_.clone().unwrap_or_default(),
                    status: c.status.clone().unwrap_or_default(),
                    reason: c.reason.clone().unwrap_or_default(),
                    message: c.message.clone().unwrap_or_default(),
                    last_update: c.last_update_time.as_ref().map(|t| t.0).unwrap_or(now),
                    last_transition: c.last_transition_time.as_ref().map(|t| t.0).unwrap_or(now),
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Upstream `SetDeploymentCondition`: no-op when status and reason are unchanged; keeps the
/// transition time when only the reason changes.
pub fn set_condition(conds: &mut Vec<Condition>, mut c: Condition) {
    if let Some(cur) = conds.iter().find(|x| x.type_ == c.type_) {
        if cur.status == c.status && cur.reason == c.reason {
            return;
        }
        if cur.status == c.status {
            c.last_transition = cur.last_transition;
        }
    }
    conds.retain(|x| x.type_ != c.type_);
    conds.push(c);
}

/// The computed status (upstream `calculateStatus`).
#[derive(Clone, Debug, PartialEq)]
pub struct Status {
    pub observed_generation: i64,
    pub replicas: i32,
    pub updated: i32,
    pub ready: i32,
    pub available: i32,
    pub unavailable: i32,
    pub collision_count: Option<i32>,
    pub conditions: Vec<Condition>,
}

impl Status {
    fn to_json(&self) -> Value {
        let nz = |v: i32| if v == 0 { Value::Null } else { json!(v) };
        json!({
            "observedGeneration": self.observed_generation,
            "replicas": nz(self.replicas),
            "updatedReplicas": nz(self.updated),
            "readyReplicas": nz(self.ready),
            "availableReplicas": nz(self.available),
            "unavailableReplicas": nz(self.unavailable),
            "collisionCount": self.collision_count,
            "conditions": if self.conditions.is_empty() { Value::Null } else { Value::Array(self.conditions.iter().map(Condition::to_json).collect()) },
        })
    }
}

fn current_status(d: &Deployment) -> Status {
    let s = d.status.clone().unwrap_or_default();
    Status {
        observed_generation: s.observed_generation.unwrap_or(0),
        replicas: s.replicas.unwrap_or(0),
        updated: s.updated_replicas.unwrap_or(0),
        ready: s.ready_replicas.unwrap_or(0),
        available: s.available_replicas.unwrap_or(0),
        unavailable: s.unavailable_replicas.unwrap_or(0),
        collision_count: s.collision_count,
        conditions: conditions_of(d),
    }
}

pub fn calculate_status(
    d: &Deployment,
    all: &[ReplicaSet],
    new_rs: Option<&ReplicaSet>,
    collision_count: Option<i32>,
    now: Timestamp,
) -> Status {
    let available: i32 = all.iter().map(rs_available).sum();
    let total: i32 = all.iter().map(rs_replicas).sum();
    let mut s = Status {
        observed_generation: d.metadata.generation.unwrap_or(0),
        replicas: all.iter().map(rs_status_replicas).sum(),
        updated: new_rs.map(rs_status_replicas).unwrap_or(0),
        ready: all.iter().map(rs_ready).sum(),
        available,
        unavailable: (total - available).max(0),
        collision_count,
        conditions: conditions_of(d),
    };
    if available >= replicas(d) - max_unavailable(d) {
        set_condition(
            &mut s.conditions,
            Condition::new(
                "Available",
                "True",
                "MinimumReplicasAvailable",
                "Deployment has minimum availability.".into(),
                now,
            ),
        );
    } else {
        set_condition(
            &mut s.conditions,
            Condition::new(
                "Available",
                "False",
                "MinimumReplicasUnavailable",
                "Deployment does not have minimum availability.".into(),
                now,
            ),
        );
    }
    s
}

fn progress_deadline(d: &Deployment) -> Option<i32> {
    d.spec.progress_deadline_seconds.filter(|v| *v != i32::MAX)
}

/// Upstream `DeploymentComplete`.
pub fn deployment_complete(d: &Deployment, s: &Status) -> bool {
    s.updated == replicas(d)
        && s.replicas == replicas(d)
        && s.available == replicas(d)
        && s.observed_generation >= d.metadata.generation.unwrap_or(0)
}

/// Upstream `DeploymentProgressing`.
pub fn deployment_progressing(old: &Status, new: &Status) -> bool {
    new.updated > old.updated
        || (new.replicas - new.updated) < (old.replicas - old.updated)
        || new.ready > old.ready
        || new.available > old.available
}

/// Upstream `DeploymentTimedOut`.
pub fn deployment_timed_out(d: &Deployment, s: &Status, now: Timestamp) -> bool {
    let Some(deadline) = progress_deadline(d) else {
        return false;
    };
    let Some(c) = s.conditions.iter().find(|c| c.type_ == "Progressing") else {
        return false;
    };
    match c.reason.as_str() {
        "NewReplicaSetAvailable" => false,
        "ProgressDeadlineExceeded" => true,
        _ => c.last_update.as_second() + i64::from(deadline) < now.as_second(),
    }
}

/// Upstream `syncRolloutStatus`'s condition logic on top of [`calculate_status`].
pub fn rollout_status(
    d: &Deployment,
    mut s: Status,
    new_rs_name: Option<&str>,
    replica_failure: Option<(String, String)>,
    now: Timestamp,
) -> Status {
    if progress_deadline(d).is_none() {
        s.conditions.retain(|c| c.type_ != "Progressing");
    }
    let current = s
        .conditions
        .iter()
        .find(|c| c.type_ == "Progressing")
        .cloned();
    let complete_before = s.replicas == s.updated
        && current
            .as_ref()
            .is_some_and(|c| c.reason == "NewReplicaSetAvailable");
    if progress_deadline(d).is_some() && !complete_before {
        let old = current_status(d);
        if deployment_complete(d, &s) {
            let msg = match new_rs_name {
                Some(n) => format!("ReplicaSet \"{n}\" has successfully progressed."),
                None => "Deployment has successfully progressed.".into(),
            };
            set_condition(
                &mut s.conditions,
                Condition::new("Progressing", "True", "NewReplicaSetAvailable", msg, now),
            );
        } else if deployment_progressing(&old, &s) {
            let msg = match new_rs_name {
                Some(n) => format!("ReplicaSet \"{n}\" is progressing."),
                None => "Deployment is progressing.".into(),
            };
            let mut c = Condition::new("Progressing", "True", "ReplicaSetUpdated", msg, now);
            if let Some(cur) = &current {
                if cur.status == "True" {
                    c.last_transition = cur.last_transition;
                }
                s.conditions.retain(|x| x.type_ != "Progressing");
            }
            set_condition(&mut s.conditions, c);
        } else if deployment_timed_out(d, &s, now) {
            let msg = match new_rs_name {
                Some(n) => format!("ReplicaSet \"{n}\" has timed out progressing."),
                None => "Deployment has timed out progressing.".into(),
            };
            set_condition(
                &mut s.conditions,
                Condition::new("Progressing", "False", "ProgressDeadlineExceeded", msg, now),
            );
        }
    }
    match replica_failure {
        Some((reason, message)) => set_condition(
            &mut s.conditions,
            Condition::new("ReplicaFailure", "True", &reason, message, now),
        ),
        None => s.conditions.retain(|c| c.type_ != "ReplicaFailure"),
    }
    s
}

/// Upstream `SetNewReplicaSetAnnotations`: copies the Deployment's annotations (incl.
/// change-cause), raises the revision (keeping the previous one in revision-history) and, for a
/// new ReplicaSet, sets desired/max replicas. Returns whether anything changed.
pub fn set_new_rs_annotations(
    d: &Deployment,
    rs_annotations: &mut BTreeMap<String, String>,
    new_revision: i64,
    exists: bool,
) -> bool {
    let mut changed = copy_annotations(d, rs_annotations);
    let old = rs_annotations.get(REVISION).cloned();
    let old_int: i64 = match old.as_deref() {
        None | Some("") => 0,
        Some(v) => match v.parse() {
            Ok(v) => v,
            Err(_) => return changed,
        },
    };
    if old_int < new_revision {
        rs_annotations.insert(REVISION.into(), new_revision.to_string());
        changed = true;
        if let Some(old) = old.filter(|o| !o.is_empty()) {
            let hist = rs_annotations
                .get(REVISION_HISTORY)
                .cloned()
                .unwrap_or_default();
            let mut revs: Vec<String> = if hist.is_empty() {
                vec![]
            } else {
                hist.split(',').map(str::to_string).collect()
            };
            revs.push(old);
            while revs.join(",").len() > MAX_REV_HISTORY_CHARS && revs.len() > 1 {
                revs.remove(0);
            }
            rs_annotations.insert(REVISION_HISTORY.into(), revs.join(","));
        }
    }
    if !exists {
        changed |=
            set_replicas_annotations(rs_annotations, replicas(d), replicas(d) + max_surge(d));
    }
    changed
}

fn copy_annotations(d: &Deployment, to: &mut BTreeMap<String, String>) -> bool {
    let mut changed = false;
    for (k, v) in d.metadata.annotations.iter().flatten() {
        if SKIPPED_ANNOTATIONS.contains(&k.as_str()) {
            continue;
        }
        if to.get(k) != Some(v) {
            to.insert(k.clone(), v.clone());
            changed = true;
        }
    }
    changed
}

fn set_replicas_annotations(a: &mut BTreeMap<String, String>, desired: i32, max: i32) -> bool {
    let mut changed = false;
    for (k, v) in [(DESIRED_REPLICAS, desired), (MAX_REPLICAS, max)] {
        if a.get(k).map(String::as_str) != Some(v.to_string().as_str()) {
            a.insert(k.into(), v.to_string());
            changed = true;
        }
    }
    changed
}

// ---------------------------------------------------------------------------------------------
// The controller.

struct DeploymentReconciler {
    client: Client,
    deployments: Informer<Deployment>,
    replicasets: Informer<ReplicaSet>,
    pods: Informer<Pod>,
    recorder: EventRecorder,
}

/// Start the Deployment controller.
pub fn start(ctx: &ControllerContext) -> Result<BoxFuture<'static, ()>> {
    let deployments = ctx.informers.informer::<Deployment>();
    let replicasets = ctx.informers.informer::<ReplicaSet>();
    let pods = ctx.informers.informer::<Pod>();
    let rec = Arc::new(DeploymentReconciler {
        client: ctx.client.clone(),
        deployments: deployments.clone(),
        replicasets: replicasets.clone(),
        pods: pods.clone(),
        recorder: ctx.recorder("deployment-controller"),
    });
    let controller = Controller::new("deployment", rec, ctx.metrics.clone());
    let q = controller.queue();
    deployments.subscribe(move |c: &Change<Deployment>| q.add(ObjectKey::of(&**c.object())));
    let q = controller.queue();
    let ds = deployments.clone();
    replicasets.subscribe(move |c: &Change<ReplicaSet>| {
        let mut keys = Vec::new();
        if let Some(old) = c.old() {
            if controller_of(&old.metadata).map(|r| &r.uid)
                != controller_of(&c.object().metadata).map(|r| &r.uid)
            {
                keys.extend(owner_deployment(&ds, &old.metadata));
            }
        }
        match owner_deployment(&ds, &c.object().metadata) {
            Some(k) => keys.push(k),
            None if controller_of(&c.object().metadata).is_none()
                && !matches!(c, Change::Deleted(_)) =>
            {
                let rs = c.object();
                let ns = rs.metadata.namespace.as_deref().unwrap_or("");
                for d in ds.list_namespace(ns) {
                    if Selector::from_api(Some(&d.spec.selector))
                        .is_ok_and(|s| !s.is_empty() && s.matches(rs.metadata.labels.as_ref()))
                    {
                        keys.push(ObjectKey::of(&*d));
                    }
                }
            }
            None => {}
        }
        for k in keys {
            q.add(k);
        }
    });
    // Recreate waits for old pods to disappear.
    let q = controller.queue();
    let (ds, rss) = (deployments.clone(), replicasets.clone());
    pods.subscribe(move |c: &Change<Pod>| {
        if let Change::Deleted(p) = c {
            let Some(r) = controller_of(&p.metadata) else {
                return;
            };
            let Some(rs) = rss.get(p.metadata.namespace.as_deref(), &r.name) else {
                return;
            };
            if let Some(k) = owner_deployment(&ds, &rs.metadata) {
                if ds
                    .get(k.namespace.as_deref(), &k.name)
                    .is_some_and(|d| !is_rolling(&d))
                {
                    q.add(k);
                }
            }
        }
    });
    let synced = async move {
        deployments.wait_synced().await;
        replicasets.wait_synced().await;
        pods.wait_synced().await;
    };
    Ok(Box::pin(controller.run(
        ctx.config.concurrent_deployment_syncs,
        synced,
        ctx.token.clone(),
    )))
}

fn owner_deployment(ds: &Informer<Deployment>, meta: &ObjectMeta) -> Option<ObjectKey> {
    let r = controller_of(meta)?;
    if r.kind != "Deployment" {
        return None;
    }
    let d = ds.get(meta.namespace.as_deref(), &r.name)?;
    (d.metadata.uid.as_deref() == Some(r.uid.as_str())).then(|| ObjectKey::of(&*d))
}

impl Reconciler for DeploymentReconciler {
    async fn reconcile(&self, key: &ObjectKey, _ctx: &ReconcileContext) -> Result<Action> {
        let Some(d) = self.deployments.get(key.namespace.as_deref(), &key.name) else {
            return Ok(Action::done());
        };
        let d: Deployment = (*d).clone();
        let selector = match Selector::from_api(Some(&d.spec.selector)) {
            Ok(s) if !s.is_empty() => s,
            Ok(_) => {
                self.recorder.event(
                    &d,
                    EventType::Warning,
                    "SelectingAll",
                    "This deployment is selecting all pods. A non-empty selector is required.",
                );
                return Ok(Action::done());
            }
            Err(e) => return Err(Error::msg(e.to_string())),
        };
        let mut rs_list = self.claim_replicasets(&d, &selector).await?;
        if d.metadata.deletion_timestamp.is_some() {
            let (new_rs, old) = self.get_all(&d, &mut rs_list, false).await?;
            return self.sync_status_only(&d, new_rs.as_ref(), &old).await;
        }
        self.check_paused_conditions(&d).await?;
        if d.spec.paused == Some(true) {
            return self.sync(&d, &mut rs_list).await;
        }
        if self.is_scaling_event(&d, &mut rs_list).await? {
            return self.sync(&d, &mut rs_list).await;
        }
        if is_rolling(&d) {
            self.rollout_rolling(&d, &mut rs_list).await
        } else {
            self.rollout_recreate(&d, &mut rs_list).await
        }
    }
}

impl DeploymentReconciler {
    fn rs_api(&self, ns: &str) -> Api<ReplicaSet> {
        Api::namespaced(self.client.clone(), ns)
    }

    /// Adopt orphan ReplicaSets matching the selector, release owned ones that stopped
    /// matching; returns the owned ones.
    async fn claim_replicasets(
        &self,
        d: &Deployment,
        selector: &Selector,
    ) -> Result<Vec<ReplicaSet>> {
        let ns = d.metadata.namespace.clone().unwrap_or_default();
        let uid = d.metadata.uid.clone().unwrap_or_default();
        let api = self.rs_api(&ns);
        let mut owned = Vec::new();
        for rs in self.replicasets.list_namespace(&ns) {
            let matches = selector.matches(rs.metadata.labels.as_ref());
            let name = rs.metadata.name.clone().unwrap_or_default();
            match controller_of(&rs.metadata) {
                Some(r) if r.uid == uid => {
                    if matches {
                        owned.push((*rs).clone());
                    } else if d.metadata.deletion_timestamp.is_none() {
                        let patch = json!({"metadata": {"ownerReferences": [{"$patch": "delete", "uid": uid}], "uid": rs.metadata.uid}});
                        let _ = api
                            .patch(&name, &PatchParams::default(), &Patch::Strategic(&patch))
                            .await;
                    }
                }
                Some(_) => {}
                None if matches
                    && d.metadata.deletion_timestamp.is_none()
                    && rs.metadata.deletion_timestamp.is_none() =>
                {
                    let patch = json!({"metadata": {"ownerReferences": [new_controller_ref(d)], "uid": rs.metadata.uid}});
                    match api
                        .patch(&name, &PatchParams::default(), &Patch::Strategic(&patch))
                        .await
                    {
                        Ok(r) => owned.push(r),
                        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 422 => {}
                        Err(e) => return Err(e.into()),
                    }
                }
                None => {}
            }
        }
        Ok(owned)
    }

    /// Upstream `getAllReplicaSetsAndSyncRevision`: (new, old).
    async fn get_all(
        &self,
        d: &Deployment,
        rs_list: &mut Vec<ReplicaSet>,
        create: bool,
    ) -> Result<(Option<ReplicaSet>, Vec<ReplicaSet>)> {
        let mut matching: Vec<&ReplicaSet> = rs_list
            .iter()
            .filter(|rs| {
                rs.spec
                    .template
                    .as_ref()
                    .is_some_and(|t| equal_ignore_hash(t, &d.spec.template))
            })
            .collect();
        matching.sort_by(|a, b| by_creation(a, b));
        let existing = matching.first().map(|r| (*r).clone());
        let new_name = existing.as_ref().and_then(|r| r.metadata.name.clone());
        let old: Vec<ReplicaSet> = rs_list
            .iter()
            .filter(|r| r.metadata.name != new_name || new_name.is_none())
            .cloned()
            .collect();
        let max_old = old
            .iter()
            .map(|r| revision_of(&r.metadata))
            .max()
            .unwrap_or(0);
        let new_revision = max_old + 1;
        let ns = d.metadata.namespace.clone().unwrap_or_default();
        let now = Timestamp::now();
        if let Some(mut rs) = existing {
            let mut ann = rs.metadata.annotations.clone().unwrap_or_default();
            let ann_changed = set_new_rs_annotations(d, &mut ann, new_revision, true);
            let mrs_changed =
                rs.spec.min_ready_seconds.unwrap_or(0) != d.spec.min_ready_seconds.unwrap_or(0);
            if ann_changed || mrs_changed {
                let patch = json!({"metadata": {"annotations": ann}, "spec": {"minReadySeconds": d.spec.min_ready_seconds.unwrap_or(0)}});
                rs = self
                    .rs_api(&ns)
                    .patch(
                        rs.metadata.name.as_deref().unwrap_or(""),
                        &PatchParams::default(),
                        &Patch::Merge(&patch),
                    )
                    .await?;
                replace(rs_list, &rs);
            }
            let revision = rs
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(REVISION))
                .cloned()
                .unwrap_or_default();
            self.set_deployment_revision(d, &revision).await?;
            if progress_deadline(d).is_some()
                && !conditions_of(d).iter().any(|c| c.type_ == "Progressing")
            {
                let mut s = current_status(d);
                set_condition(
                    &mut s.conditions,
                    Condition::new(
                        "Progressing",
                        "True",
                        "FoundNewReplicaSet",
                        format!(
                            "Found new replica set \"{}\"",
                            rs.metadata.name.as_deref().unwrap_or("")
                        ),
                        now,
                    ),
                );
                self.write_status(d, &s).await?;
            }
            return Ok((Some(rs), old));
        }
        if !create {
            return Ok((None, old));
        }
        let collision = d.status.as_ref().and_then(|s| s.collision_count);
        let hash = compute_hash(&d.spec.template, collision);
        let mut template = d.spec.template.clone();
        template
            .metadata
            .get_or_insert_with(Default::default)
            .labels
            .get_or_insert_with(Default::default)
            .insert(POD_TEMPLATE_HASH.into(), hash.clone());
        let mut selector: LabelSelector = d.spec.selector.clone();
        selector
            .match_labels
            .get_or_insert_with(Default::default)
            .insert(POD_TEMPLATE_HASH.into(), hash.clone());
        let name = format!("{}-{hash}", d.metadata.name.as_deref().unwrap_or(""));
        let mut labels = template
            .metadata
            .as_ref()
            .and_then(|m| m.labels.clone())
            .unwrap_or_default();
        labels.insert(POD_TEMPLATE_HASH.into(), hash.clone());
        let mut rs = ReplicaSet {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(ns.clone()),
                labels: Some(labels),
                owner_references: Some(vec![new_controller_ref(d)]),
                ..Default::default()
            },
            spec: ReplicaSetSpec {
                replicas: Some(0),
                min_ready_seconds: d.spec.min_ready_seconds,
                selector,
                template: Some(template.clone()),
            },
            status: None,
        };
        let mut all = old.clone();
        all.push(rs.clone());
        let new_replicas = new_rs_new_replicas(d, &all, 0);
        rs.spec.replicas = Some(new_replicas);
        let mut ann = BTreeMap::new();
        set_new_rs_annotations(d, &mut ann, new_revision, false);
        rs.metadata.annotations = Some(ann);
        let api = self.rs_api(&ns);
        let (created, already) = match api.create(&PostParams::default(), &rs).await {
            Ok(r) => (r, false),
            Err(kube::Error::Api(s)) if s.code == 409 => {
                let existing = api.get(&name).await?;
                let ours = controller_of(&existing.metadata)
                    .is_some_and(|r| Some(&r.uid) == d.metadata.uid.as_ref());
                if ours
                    && existing
                        .spec
                        .template
                        .as_ref()
                        .is_some_and(|t| equal_ignore_hash(t, &d.spec.template))
                {
                    (existing, true)
                } else {
                    // Hash collision: bump collisionCount so the next sync picks another name.
                    let mut st = current_status(d);
                    st.collision_count = Some(collision.unwrap_or(0) + 1);
                    self.write_status(d, &st).await?;
                    return Err(Error::msg(format!("hash collision for replica set {name}")));
                }
            }
            Err(e) => {
                let msg = format!("Failed to create new replica set \"{name}\": {e}");
                self.recorder
                    .event(d, EventType::Warning, "FailedCreate", msg.clone());
                if progress_deadline(d).is_some() {
                    let mut st = current_status(d);
                    set_condition(
                        &mut st.conditions,
                        Condition::new("Progressing", "False", "ReplicaSetCreateError", msg, now),
                    );
                    self.write_status(d, &st).await?;
                }
                return Err(e.into());
            }
        };
        if !already && new_replicas > 0 {
            self.recorder.event(
                d,
                EventType::Normal,
                "ScalingReplicaSet",
                format!("Scaled up replica set {name} from 0 to {new_replicas}"),
            );
        }
        self.set_deployment_revision(d, &new_revision.to_string())
            .await?;
        if !already && progress_deadline(d).is_some() {
            let mut st = current_status(d);
            set_condition(
                &mut st.conditions,
                Condition::new(
                    "Progressing",
                    "True",
                    "NewReplicaSetCreated",
                    format!("Created new replica set \"{name}\""),
                    now,
                ),
            );
            self.write_status(d, &st).await?;
        }
        rs_list.push(created.clone());
        Ok((Some(created), old))
    }

    async fn set_deployment_revision(&self, d: &Deployment, revision: &str) -> Result<()> {
        if revision.is_empty()
            || d.metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(REVISION))
                .map(String::as_str)
                == Some(revision)
        {
            return Ok(());
        }
        let api: Api<Deployment> = Api::namespaced(
            self.client.clone(),
            d.metadata.namespace.as_deref().unwrap_or(""),
        );
        let patch = json!({"metadata": {"annotations": {REVISION: revision}}});
        api.patch(
            d.metadata.name.as_deref().unwrap_or(""),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await?;
        Ok(())
    }

    async fn write_status(&self, d: &Deployment, s: &Status) -> Result<()> {
        let api: Api<Deployment> = Api::namespaced(
            self.client.clone(),
            d.metadata.namespace.as_deref().unwrap_or(""),
        );
        let patch = json!({"status": s.to_json()});
        api.patch_status(
            d.metadata.name.as_deref().unwrap_or(""),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await?;
        Ok(())
    }

    /// Scale one ReplicaSet (and stamp desired/max replicas), recording ScalingReplicaSet.
    async fn scale_rs(
        &self,
        d: &Deployment,
        rs_list: &mut [ReplicaSet],
        name: &str,
        size: i32,
    ) -> Result<bool> {
        let Some(rs) = rs_list
            .iter()
            .find(|r| r.metadata.name.as_deref() == Some(name))
            .cloned()
        else {
            return Ok(false);
        };
        let old = rs_replicas(&rs);
        let mut ann = rs.metadata.annotations.clone().unwrap_or_default();
        let ann_changed =
            set_replicas_annotations(&mut ann, replicas(d), replicas(d) + max_surge(d));
        if old == size && !ann_changed {
            return Ok(false);
        }
        let patch = json!({"metadata": {"annotations": ann}, "spec": {"replicas": size}});
        let updated = self
            .rs_api(rs.metadata.namespace.as_deref().unwrap_or(""))
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        replace(rs_list, &updated);
        if old != size {
            let op = if size > old { "up" } else { "down" };
            self.recorder.event(
                d,
                EventType::Normal,
                "ScalingReplicaSet",
                format!("Scaled {op} replica set {name} from {old} to {size}"),
            );
        }
        Ok(old != size)
    }

    async fn check_paused_conditions(&self, d: &Deployment) -> Result<()> {
        if progress_deadline(d).is_none() {
            return Ok(());
        }
        let mut s = current_status(d);
        let cond = s
            .conditions
            .iter()
            .find(|c| c.type_ == "Progressing")
            .cloned();
        let paused = d.spec.paused == Some(true);
        let now = Timestamp::now();
        let changed = if paused && cond.as_ref().is_none_or(|c| c.reason != "DeploymentPaused") {
            set_condition(
                &mut s.conditions,
                Condition::new(
                    "Progressing",
                    "Unknown",
                    "DeploymentPaused",
                    "Deployment is paused".into(),
                    now,
                ),
            );
            true
        } else if !paused
            && cond
                .as_ref()
                .is_some_and(|c| c.reason == "DeploymentPaused")
        {
            set_condition(
                &mut s.conditions,
                Condition::new(
                    "Progressing",
                    "Unknown",
                    "DeploymentResumed",
                    "Deployment is resumed".into(),
                    now,
                ),
            );
            true
        } else {
            false
        };
        if changed {
            self.write_status(d, &s).await?;
        }
        Ok(())
    }

    async fn is_scaling_event(
        &self,
        d: &Deployment,
        rs_list: &mut Vec<ReplicaSet>,
    ) -> Result<bool> {
        let (new_rs, old) = self.get_all(d, rs_list, false).await?;
        let active = new_rs
            .iter()
            .chain(old.iter())
            .filter(|r| rs_replicas(r) > 0);
        Ok(active
            .into_iter()
            .any(|r| annotation_i32(r, DESIRED_REPLICAS).is_some_and(|v| v != replicas(d))))
    }

    /// Scaling (and paused) sync: upstream `sync`.
    async fn sync(&self, d: &Deployment, rs_list: &mut Vec<ReplicaSet>) -> Result<Action> {
        let (new_rs, old) = self.get_all(d, rs_list, false).await?;
        self.scale(d, rs_list, new_rs.as_ref(), &old).await?;
        let (new_rs, old) = split(rs_list, new_rs.as_ref());
        if d.spec.paused == Some(true) {
            self.cleanup(d, &old).await?;
        }
        self.sync_status_only(d, new_rs.as_ref(), &old).await
    }

    async fn scale(
        &self,
        d: &Deployment,
        rs_list: &mut [ReplicaSet],
        new_rs: Option<&ReplicaSet>,
        old: &[ReplicaSet],
    ) -> Result<()> {
        let active: Vec<ReplicaSet> = new_rs
            .into_iter()
            .chain(old.iter())
            .filter(|r| rs_replicas(r) > 0)
            .cloned()
            .collect();
        // One active (or only the latest) ReplicaSet: it simply gets the Deployment's size.
        let target = match active.len() {
            0 => new_rs
                .cloned()
                .or_else(|| old.iter().max_by(|a, b| by_creation(a, b)).cloned()),
            1 => active.first().cloned(),
            _ => None,
        };
        if let Some(t) = target {
            if rs_replicas(&t) != replicas(d) {
                self.scale_rs(
                    d,
                    rs_list,
                    t.metadata.name.as_deref().unwrap_or(""),
                    replicas(d),
                )
                .await?;
            }
            return Ok(());
        }
        if let Some(n) = new_rs {
            let saturated = rs_replicas(n) == replicas(d)
                && annotation_i32(n, DESIRED_REPLICAS) == Some(replicas(d))
                && rs_available(n) == replicas(d);
            if saturated {
                for o in old.iter().filter(|r| rs_replicas(r) > 0) {
                    self.scale_rs(d, rs_list, o.metadata.name.as_deref().unwrap_or(""), 0)
                        .await?;
                }
                return Ok(());
            }
        }
        if is_rolling(d) {
            for (name, size) in proportional_scale(d, &active) {
                self.scale_rs(d, rs_list, &name, size).await?;
            }
        }
        Ok(())
    }

    async fn cleanup(&self, d: &Deployment, old: &[ReplicaSet]) -> Result<()> {
        for name in history_to_clean(d, old) {
            let Some(rs) = old
                .iter()
                .find(|r| r.metadata.name.as_deref() == Some(&name))
            else {
                continue;
            };
            let dp = DeleteParams {
                preconditions: Some(Preconditions {
                    uid: rs.metadata.uid.clone(),
                    resource_version: None,
                }),
                ..Default::default()
            };
            match self
                .rs_api(d.metadata.namespace.as_deref().unwrap_or(""))
                .delete(&name, &dp)
                .await
            {
                Ok(_) => tracing::debug!(rs = %name, "cleaned up old replica set"),
                Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    async fn sync_status_only(
        &self,
        d: &Deployment,
        new_rs: Option<&ReplicaSet>,
        old: &[ReplicaSet],
    ) -> Result<Action> {
        let all: Vec<ReplicaSet> = new_rs
            .into_iter()
            .cloned()
            .chain(old.iter().cloned())
            .collect();
        let s = calculate_status(
            d,
            &all,
            new_rs,
            d.status.as_ref().and_then(|s| s.collision_count),
            Timestamp::now(),
        );
        if s != current_status(d) {
            self.write_status(d, &s).await?;
        }
        Ok(Action::done())
    }

    async fn sync_rollout_status(
        &self,
        d: &Deployment,
        rs_list: &[ReplicaSet],
        new_rs: Option<&ReplicaSet>,
    ) -> Result<Action> {
        let now = Timestamp::now();
        let new_rs =
            new_rs.and_then(|n| rs_list.iter().find(|r| r.metadata.name == n.metadata.name));
        let s = calculate_status(
            d,
            rs_list,
            new_rs,
            d.status.as_ref().and_then(|s| s.collision_count),
            now,
        );
        let failure = replica_failure(rs_list, new_rs);
        let s = rollout_status(
            d,
            s,
            new_rs.and_then(|r| r.metadata.name.as_deref()),
            failure,
            now,
        );
        if s != current_status(d) {
            self.write_status(d, &s).await?;
            return Ok(Action::done());
        }
        // Nothing changed: come back when the progress deadline would pass.
        let Some(deadline) = progress_deadline(d) else {
            return Ok(Action::done());
        };
        let Some(c) = s.conditions.iter().find(|c| c.type_ == "Progressing") else {
            return Ok(Action::done());
        };
        if deployment_complete(d, &s) || c.reason == "ProgressDeadlineExceeded" {
            return Ok(Action::done());
        }
        let after = c.last_update.as_second() + i64::from(deadline) - now.as_second();
        Ok(Action::requeue_after(Duration::from_secs(
            after.max(1) as u64
        )))
    }

    async fn rollout_rolling(
        &self,
        d: &Deployment,
        rs_list: &mut Vec<ReplicaSet>,
    ) -> Result<Action> {
        let (new_rs, _) = self.get_all(d, rs_list, true).await?;
        let new_name = new_rs.as_ref().and_then(|r| r.metadata.name.clone());
        // Scale up the new ReplicaSet.
        if let Some(n) = &new_rs {
            let cur = rs_replicas(n);
            let target = if cur > replicas(d) {
                replicas(d)
            } else {
                new_rs_new_replicas(d, rs_list, cur)
            };
            if target != cur
                && self
                    .scale_rs(d, rs_list, n.metadata.name.as_deref().unwrap_or(""), target)
                    .await?
            {
                return self.sync_rollout_status(d, rs_list, new_rs.as_ref()).await;
            }
        }
        // Scale down old ones.
        let (n, old) = split(rs_list, new_rs.as_ref());
        let mut scaled = false;
        for (name, size) in rolling_scale_down(d, &old, n.as_ref()) {
            scaled |= self.scale_rs(d, rs_list, &name, size).await?;
        }
        let (n, old) = split(rs_list, new_rs.as_ref());
        if scaled {
            return self.sync_rollout_status(d, rs_list, n.as_ref()).await;
        }
        if deployment_complete(d, &current_status(d)) {
            self.cleanup(d, &old).await?;
        }
        let _ = new_name;
        self.sync_rollout_status(d, rs_list, n.as_ref()).await
    }

    async fn rollout_recreate(
        &self,
        d: &Deployment,
        rs_list: &mut Vec<ReplicaSet>,
    ) -> Result<Action> {
        let (new_rs, old) = self.get_all(d, rs_list, false).await?;
        let mut scaled = false;
        for o in old.iter().filter(|r| rs_replicas(r) > 0) {
            scaled |= self
                .scale_rs(d, rs_list, o.metadata.name.as_deref().unwrap_or(""), 0)
                .await?;
        }
        if scaled {
            return self.sync_rollout_status(d, rs_list, new_rs.as_ref()).await;
        }
        // Wait for every pod of the old ReplicaSets to be gone.
        let old_uids: Vec<String> = old.iter().filter_map(|r| r.metadata.uid.clone()).collect();
        let old_status: i32 = old.iter().map(rs_status_replicas).sum();
        let ns = d.metadata.namespace.as_deref().unwrap_or("");
        let old_pods_running = old_status > 0
            || self.pods.list_namespace(ns).iter().any(|p| {
                controller_of(&p.metadata).is_some_and(|r| old_uids.contains(&r.uid))
                    && !matches!(
                        p.status.as_ref().and_then(|s| s.phase.as_deref()),
                        Some("Failed") | Some("Succeeded")
                    )
            });
        if old_pods_running {
            return self.sync_rollout_status(d, rs_list, new_rs.as_ref()).await;
        }
        let new_rs = match new_rs {
            Some(n) => Some(n),
            None => self.get_all(d, rs_list, true).await?.0,
        };
        if let Some(n) = &new_rs {
            if rs_replicas(n) != replicas(d) {
                self.scale_rs(
                    d,
                    rs_list,
                    n.metadata.name.as_deref().unwrap_or(""),
                    replicas(d),
                )
                .await?;
            }
        }
        let (n, old) = split(rs_list, new_rs.as_ref());
        if deployment_complete(d, &current_status(d)) {
            self.cleanup(d, &old).await?;
        }
        self.sync_rollout_status(d, rs_list, n.as_ref()).await
    }
}

fn replace(list: &mut [ReplicaSet], rs: &ReplicaSet) {
    if let Some(slot) = list
        .iter_mut()
        .find(|r| r.metadata.name == rs.metadata.name)
    {
        *slot = rs.clone();
    }
}

/// The current copy of `new_rs` in `list` and the others.
fn split(
    list: &[ReplicaSet],
    new_rs: Option<&ReplicaSet>,
) -> (Option<ReplicaSet>, Vec<ReplicaSet>) {
    let name = new_rs.and_then(|r| r.metadata.name.clone());
    let n = list
        .iter()
        .find(|r| name.is_some() && r.metadata.name == name)
        .cloned();
    let old = list
        .iter()
        .filter(|r| name.is_none() || r.metadata.name != name)
        .cloned()
        .collect();
    (n, old)
}

/// The ReplicaFailure condition of the new ReplicaSet (else any), as (reason, message).
fn replica_failure(all: &[ReplicaSet], new_rs: Option<&ReplicaSet>) -> Option<(String, String)> {
    let of = |r: &ReplicaSet| {
        r.status
            .as_ref()?
            .conditions
            .as_ref()?
            .iter()
            .find(|c| {
                c.type_.as_deref() == Some("ReplicaFailure") && c.status.as_deref() == Some("True")
            })
            .map(|c| {
                (
                    c.reason.clone().unwrap_or_default(),
                    c.message.clone().unwrap_or_default(),
                )
            })
    };
    new_rs.and_then(of).or_else(|| all.iter().find_map(of))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::{
        DeploymentSpec, DeploymentStrategy, ReplicaSetStatus, RollingUpdateDeployment,
    };

    fn ios(s: &str) -> IntOrString {
        match s.parse::<i32>() {
            Ok(i) => IntOrString::Int(i),
            Err(_) => IntOrString::String(s.into()),
        }
    }

    fn deploy(replicas: i32, surge: &str, unavail: &str) -> Deployment {
        Deployment {
            metadata: ObjectMeta {
                name: Some("web".into()),
                generation: Some(1),
                ..Default::default()
            },
            spec: DeploymentSpec {
                replicas: Some(replicas),
                strategy: Some(DeploymentStrategy {
                    type_: Some("RollingUpdate".into()),
                    rolling_update: Some(RollingUpdateDeployment {
                        max_surge: Some(ios(surge)),
                        max_unavailable: Some(ios(unavail)),
                    }),
                }),
                ..Default::default()
            },
            status: None,
        }
    }

    fn rs(name: &str, created: i64, replicas: i32, available: i32) -> ReplicaSet {
        ReplicaSet {
            metadata: ObjectMeta {
                name: Some(name.into()),
                creation_timestamp: Some(Time(Timestamp::from_second(created).unwrap())),
                ..Default::default()
            },
            spec: ReplicaSetSpec {
                replicas: Some(replicas),
                ..Default::default()
            },
            status: Some(ReplicaSetStatus {
                replicas,
                available_replicas: Some(available),
                ready_replicas: Some(available),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn fenceposts_round_like_upstream() {
        // (replicas, maxSurge, maxUnavailable) -> (surge, unavailable)
        let cases = [
            (10, "25%", "25%", (3, 2)),
            (3, "25%", "25%", (1, 0)),
            (1, "0", "0", (0, 1)),
            (4, "1", "0", (1, 0)),
            (5, "50%", "50%", (3, 2)),
            (0, "25%", "25%", (0, 1)),
        ];
        for (r, s, u, want) in cases {
            assert_eq!(
                resolve_fenceposts(Some(&ios(s)), Some(&ios(u)), r).unwrap(),
                want,
                "{r} {s} {u}"
            );
        }
        assert_eq!(max_unavailable(&deploy(1, "0", "5")), 1);
        assert!(scaled_value(&IntOrString::String("x%".into()), 10, true).is_err());
    }

    #[test]
    fn hash_is_fnv32a_rendered_safely_and_changes_with_collision_count() {
        assert_eq!(fnv32a(b""), 0x811c9dc5);
        assert_eq!(fnv32a(b"a"), 0xe40c292c);
        assert_eq!(safe_encode("0123456789"), "456789bcdf");
        let t = PodTemplateSpec {
            metadata: Some(ObjectMeta {
                labels: Some([("app".to_string(), "web".to_string())].into()),
                ..Default::default()
            }),
            spec: None,
        };
        let h = compute_hash(&t, None);
        assert!(
            h.len() >= 8 && h.chars().all(|c| "bcdfghjklmnpqrstvwxz2456789".contains(c)),
            "{h}"
        );
        assert_eq!(h, compute_hash(&t, None));
        assert_ne!(h, compute_hash(&t, Some(1)));
        let mut with_hash = t.clone();
        with_hash
            .metadata
            .as_mut()
            .unwrap()
            .labels
            .as_mut()
            .unwrap()
            .insert(POD_TEMPLATE_HASH.into(), h);
        assert!(equal_ignore_hash(&t, &with_hash));
    }

    #[test]
    fn new_rs_scales_up_within_max_surge() {
        let d = deploy(10, "3", "2");
        // (sizes of all RSes with the new one last) -> new size
        let cases: [(&[i32], i32); 4] =
            [(&[10, 0], 3), (&[10, 3], 3), (&[8, 3], 5), (&[0, 10], 10)];
        for (sizes, want) in cases {
            let all: Vec<ReplicaSet> = sizes
                .iter()
                .enumerate()
                .map(|(i, s)| rs(&format!("r{i}"), i as i64, *s, *s))
                .collect();
            assert_eq!(
                new_rs_new_replicas(&d, &all, *sizes.last().unwrap()),
                want,
                "{sizes:?}"
            );
        }
    }

    #[test]
    fn rolling_scale_down_keeps_min_available() {
        let d = deploy(10, "3", "2");
        // New RS of 3 not yet available: old can only drop by maxUnavailable.
        let old = [rs("old", 1, 10, 10)];
        let new = rs("new", 2, 3, 0);
        assert_eq!(
            rolling_scale_down(&d, &old, Some(&new)),
            vec![("old".to_string(), 8)]
        );
        // New pods available: old drops so that available stays >= 8.
        let new = rs("new", 2, 3, 3);
        assert_eq!(
            rolling_scale_down(&d, &old, Some(&new)),
            vec![("old".to_string(), 5)]
        );
        // Unhealthy old replicas go first, bounded by maxScaledDown (13 - 8 - 3 = 2).
        let old = [rs("old", 1, 10, 6)];
        let new = rs("new", 2, 3, 0);
        assert_eq!(
            rolling_scale_down(&d, &old, Some(&new)),
            vec![("old".to_string(), 8)]
        );
        assert!(rolling_scale_down(&d, &[], Some(&new)).is_empty());
    }

    #[test]
    fn proportional_scaling_spreads_by_size() {
        // 10 replicas, surge 3: old 8, new 5 (sum 13 = allowed); scale to 20 → allowed 23.
        let mut d = deploy(20, "3", "2");
        let mut old = rs("old", 1, 8, 8);
        let mut new = rs("new", 2, 5, 5);
        for r in [&mut old, &mut new] {
            r.metadata.annotations = Some([(MAX_REPLICAS.to_string(), "13".to_string())].into());
        }
        d.status = Some(Default::default());
        let got = proportional_scale(&d, &[old.clone(), new.clone()]);
        let total: i32 = got.iter().map(|(_, s)| s).sum();
        assert_eq!(total, 23);
        assert_eq!(got, vec![("old".to_string(), 14), ("new".to_string(), 9)]);
        // Scaling to zero empties everything.
        let d0 = deploy(0, "3", "2");
        let got = proportional_scale(&d0, &[old, new]);
        assert!(got.iter().all(|(_, s)| *s == 0), "{got:?}");
    }

    #[test]
    fn revision_annotations_reuse_and_history() {
        let mut d = deploy(3, "1", "0");
        d.metadata.annotations = Some(
            [
                (CHANGE_CAUSE.to_string(), "kubectl set image".to_string()),
                (
                    "kubectl.kubernetes.io/last-applied-configuration".to_string(),
                    "{}".to_string(),
                ),
            ]
            .into(),
        );
        let mut fresh = BTreeMap::new();
        assert!(set_new_rs_annotations(&d, &mut fresh, 1, false));
        assert_eq!(fresh.get(REVISION).unwrap(), "1");
        assert_eq!(fresh.get(CHANGE_CAUSE).unwrap(), "kubectl set image");
        assert_eq!(fresh.get(DESIRED_REPLICAS).unwrap(), "3");
        assert_eq!(fresh.get(MAX_REPLICAS).unwrap(), "4");
        assert!(!fresh.contains_key("kubectl.kubernetes.io/last-applied-configuration"));
        // Rolling back to revision 1 when 2 exists renumbers it 3 and remembers 1.
        assert!(set_new_rs_annotations(&d, &mut fresh, 3, true));
        assert_eq!(fresh.get(REVISION).unwrap(), "3");
        assert_eq!(fresh.get(REVISION_HISTORY).unwrap(), "1");
        assert!(!set_new_rs_annotations(&d, &mut fresh, 3, true));
    }

    #[test]
    fn history_cleanup_deletes_oldest_empty_revisions_only() {
        let mut d = deploy(3, "1", "0");
        d.spec.revision_history_limit = Some(1);
        let mk = |name: &str, rev: &str, size: i32| {
            let mut r = rs(name, 1, size, size);
            r.metadata.annotations = Some([(REVISION.to_string(), rev.to_string())].into());
            r
        };
        let old = [mk("r3", "3", 0), mk("r1", "1", 0), mk("r2", "2", 1)];
        assert_eq!(history_to_clean(&d, &old), vec!["r1".to_string()]);
        d.spec.revision_history_limit = Some(5);
        assert!(history_to_clean(&d, &old).is_empty());
    }

    #[test]
    fn progressing_conditions_follow_upstream_reasons() {
        let now = Timestamp::from_second(10_000).unwrap();
        let mut d = deploy(2, "1", "0");
        d.spec.progress_deadline_seconds = Some(30);
        let all = [rs("web-abc", 1, 2, 2)];
        let s = calculate_status(&d, &all, Some(&all[0]), None, now);
        let s = rollout_status(&d, s, Some("web-abc"), None, now);
        let p = s
            .conditions
            .iter()
            .find(|c| c.type_ == "Progressing")
            .unwrap();
        assert_eq!(
            (p.status.as_str(), p.reason.as_str(), p.message.as_str()),
            (
                "True",
                "NewReplicaSetAvailable",
                "ReplicaSet \"web-abc\" has successfully progressed."
            )
        );
        let a = s
            .conditions
            .iter()
            .find(|c| c.type_ == "Available")
            .unwrap();
        assert_eq!(
            (a.status.as_str(), a.reason.as_str()),
            ("True", "MinimumReplicasAvailable")
        );
        // Stuck past the deadline.
        let stuck = [rs("web-abc", 1, 2, 0)];
        let mut d2 = d.clone();
        d2.status = Some(k8s_openapi::api::apps::v1::DeploymentStatus {
            conditions: Some(vec![k8s_openapi::api::apps::v1::DeploymentCondition {
                type_: Some("Progressing".into()),
                status: Some("True".into()),
                reason: Some("ReplicaSetUpdated".into()),
                last_update_time: Some(Time(Timestamp::from_second(9_000).unwrap())),
                last_transition_time: Some(Time(Timestamp::from_second(9_000).unwrap())),
                ..Default::default()
            }]),
            replicas: Some(2),
            updated_replicas: Some(2),
            ..Default::default()
        });
        let s = calculate_status(&d2, &stuck, Some(&stuck[0]), None, now);
        let s = rollout_status(&d2, s, Some("web-abc"), None, now);
        let p = s
            .conditions
            .iter()
            .find(|c| c.type_ == "Progressing")
            .unwrap();
        assert_eq!(
            (p.status.as_str(), p.reason.as_str(), p.message.as_str()),
            (
                "False",
                "ProgressDeadlineExceeded",
                "ReplicaSet \"web-abc\" has timed out progressing."
            )
        );
        let a = s
            .conditions
            .iter()
            .find(|c| c.type_ == "Available")
            .unwrap();
        assert_eq!(
            (a.status.as_str(), a.reason.as_str()),
            ("False", "MinimumReplicasUnavailable")
        );
    }
}
