//! `apps/v1`: Deployment, ReplicaSet, StatefulSet, DaemonSet (and ControllerRevision, metadata
//! only) — upstream's `pkg/apis/apps/v1/defaults.go` and `pkg/apis/apps/validation`, with the
//! registry strategies' selector immutability.

use crate::core::pod::{default_pod_template, validate_pod_template};
use crate::meta::*;
use crate::util::*;
use apimachinery::errors::{FieldError, FieldErrorType, Path};
use serde_json::{json, Value};

pub(crate) fn default(kind: &str, obj: &mut Value) {
    let Some(spec) = ensure_obj(obj, "spec") else {
        return;
    };
    match kind {
        "Deployment" => {
            default_field(spec, "replicas", json!(1));
            if let Some(strategy) = ensure_obj(spec, "strategy") {
                default_str(strategy, "type", "RollingUpdate");
                if st(strategy, "type") == "RollingUpdate" {
                    if let Some(ru) = ensure_obj(strategy, "rollingUpdate") {
                        default_field(ru, "maxUnavailable", json!("25%"));
                        default_field(ru, "maxSurge", json!("25%"));
                    }
                }
            }
            default_field(spec, "revisionHistoryLimit", json!(10));
            default_field(spec, "progressDeadlineSeconds", json!(600));
        }
        "ReplicaSet" => default_field(spec, "replicas", json!(1)),
        "StatefulSet" => {
            default_str(spec, "podManagementPolicy", "OrderedReady");
            if let Some(us) = ensure_obj(spec, "updateStrategy") {
                if unset_str(us, "type") {
                    us["type"] = json!("RollingUpdate");
                    default_field(us, "rollingUpdate", json!({}));
                }
                if st(us, "type") == "RollingUpdate" {
                    if let Some(ru) = child_mut(us, "rollingUpdate") {
                        default_field(ru, "partition", json!(0));
                    }
                }
            }
            if let Some(p) = ensure_obj(spec, "persistentVolumeClaimRetentionPolicy") {
                default_str(p, "whenDeleted", "Retain");
                default_str(p, "whenScaled", "Retain");
            }
            default_field(spec, "replicas", json!(1));
            default_field(spec, "revisionHistoryLimit", json!(10));
            for pvc in items_mut(spec, "volumeClaimTemplates") {
                if let Some(s) = ensure_obj(pvc, "spec") {
                    default_str(s, "volumeMode", "Filesystem");
                }
                if let Some(s) = ensure_obj(pvc, "status") {
                    default_str(s, "phase", "Pending");
                }
            }
        }
        "DaemonSet" => {
            if let Some(us) = ensure_obj(spec, "updateStrategy") {
                default_str(us, "type", "RollingUpdate");
                if st(us, "type") == "RollingUpdate" {
                    if let Some(ru) = ensure_obj(us, "rollingUpdate") {
                        default_field(ru, "maxUnavailable", json!(1));
                        default_field(ru, "maxSurge", json!(0));
                    }
                }
            }
            default_field(spec, "revisionHistoryLimit", json!(10));
        }
        _ => return,
    }
    if let Some(t) = ensure_obj(spec, "template") {
        default_pod_template(t);
    }
}

fn not_supported_raw(path: &Path, raw: &str, supported: &[&str]) -> FieldError {
    let list = supported
        .iter()
        .map(|s| format!("{s:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    FieldError::new(
        FieldErrorType::NotSupported,
        path.as_str(),
        None,
        format!("{raw}: supported values: {list}"),
    )
}

/// Selector present, valid and non-empty (`what` names the kind in upstream's message).
fn validate_selector(spec: &Value, path: &Path, what: &str) -> Errs {
    let mut errs = Errs::new();
    let p = path.child("selector");
    match get(spec, "selector") {
        None => errs.push(required(&p)),
        Some(sel) => {
            errs.extend(validate_label_selector(sel, &p));
            if obj(sel, "matchLabels").map_or(0, |m| m.len()) + arr(sel, "matchExpressions").len()
                == 0
            {
                errs.push(invalid_raw(
                    &p,
                    &label_selector_string(Some(sel)),
                    &format!("empty selector is invalid for {what}"),
                ));
            }
        }
    }
    errs
}

/// The template-labels check shared by the workload kinds.
fn validate_selector_matches(spec: &Value, template_path: &Path, skip_empty: bool) -> Errs {
    let sel = spec.get("selector").cloned().unwrap_or(Value::Null);
    let tmeta = spec
        .get("template")
        .and_then(|t| t.get("metadata"))
        .filter(|m| m.is_object());
    let selector_empty = sel.is_null()
        || (obj(&sel, "matchLabels").map_or(0, |m| m.len()) + arr(&sel, "matchExpressions").len()
            == 0);
    if skip_empty && selector_empty {
        return Vec::new();
    }
    match selector_matches(&sel, tmeta) {
        Some(false) => vec![invalid_raw(
            &template_path.child("metadata").child("labels"),
            &labels_go_string(tmeta),
            "`selector` does not match template `labels`",
        )],
        _ => Vec::new(),
    }
}

fn int_or_percent(v: Option<&Value>) -> (i64, bool) {
    match v {
        Some(Value::Number(n)) => (n.as_i64().unwrap_or(0), false),
        Some(Value::String(s)) => match s.strip_suffix('%').and_then(|n| n.parse::<i64>().ok()) {
            Some(n) => (n, true),
            None => (s.parse::<i64>().unwrap_or(0), false),
        },
        _ => (0, false),
    }
}

fn raw_int_or_string(v: Option<&Value>) -> String {
    match v {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => "0".to_string(),
    }
}

fn validate_positive_int_or_percent(v: Option<&Value>, path: &Path) -> Errs {
    match v {
        Some(Value::String(s)) => {
            let ok = s
                .strip_suffix('%')
                .is_some_and(|n| !n.is_empty() && n.bytes().all(|c| c.is_ascii_digit()));
            if ok {
                Vec::new()
            } else {
                vec![invalid_raw(
                    path,
                    s,
                    &regex_error(
                        "a valid percent string must be a numeric string followed by an ending '%'",
                        "[0-9]+%",
                        &["1%", "93%"],
                    ),
                )]
            }
        }
        Some(Value::Number(n)) => {
            let n = n.as_i64().unwrap_or(0);
            if n < 0 {
                vec![invalid(path, n, "must be greater than or equal to 0")]
            } else {
                Vec::new()
            }
        }
        _ => Vec::new(),
    }
}

fn not_more_than_100_percent(v: Option<&Value>, path: &Path) -> Errs {
    let (n, pct) = int_or_percent(v);
    if pct && n > 100 {
        vec![invalid_raw(
            path,
            &raw_int_or_string(v),
            "must not be greater than 100%",
        )]
    } else {
        Vec::new()
    }
}

fn validate_common_counts(spec: &Value, path: &Path) -> Errs {
    let mut errs = validate_nonnegative(spec, "replicas", path);
    errs.extend(validate_nonnegative(spec, "minReadySeconds", path));
    errs
}

/// Template checks for ReplicaSet-like kinds (`ValidatePodTemplateSpecForReplicaSet`).
fn validate_rs_template(spec: &Value, path: &Path, kind: &str) -> Errs {
    let tp = path.child("template");
    let mut errs = validate_selector_matches(spec, &tp, true);
    let empty = json!({});
    let template = spec.get("template").unwrap_or(&empty);
    errs.extend(validate_pod_template(template, &tp));
    let tspec = template.get("spec").unwrap_or(&empty);
    let rp = st(tspec, "restartPolicy");
    if rp != "Always" {
        errs.push(not_supported(
            &tp.child("spec").child("restartPolicy"),
            rp,
            &["Always"],
        ));
    }
    if let Some(ads) = int(tspec, "activeDeadlineSeconds") {
        errs.push(invalid(
            &tp.child("spec").child("activeDeadlineSeconds"),
            ads,
            &format!("activeDeadlineSeconds in {kind} is not Supported"),
        ));
    }
    errs
}

fn validate_deployment_spec(spec: &Value, path: &Path) -> Errs {
    let mut errs = validate_nonnegative(spec, "replicas", path);
    errs.extend(validate_selector(spec, path, "deployment"));
    errs.extend(validate_rs_template(spec, path, "ReplicaSet"));
    let sp = path.child("strategy");
    let empty = json!({});
    let strategy = spec.get("strategy").unwrap_or(&empty);
    let ty = st(strategy, "type");
    match ty {
        "Recreate" => {
            if get(strategy, "rollingUpdate").is_some() {
                errs.push(forbidden(
                    &sp.child("rollingUpdate"),
                    "may not be specified when strategy `type` is 'Recreate'",
                ));
            }
        }
        "RollingUpdate" => match get(strategy, "rollingUpdate") {
            None => errs.push(required_d(
                &sp.child("rollingUpdate"),
                "this should be defaulted and never be nil",
            )),
            Some(ru) => {
                let rp = sp.child("rollingUpdate");
                let (mu, ms) = (get(ru, "maxUnavailable"), get(ru, "maxSurge"));
                errs.extend(validate_positive_int_or_percent(
                    mu,
                    &rp.child("maxUnavailable"),
                ));
                errs.extend(validate_positive_int_or_percent(ms, &rp.child("maxSurge")));
                if int_or_percent(mu).0 == 0 && int_or_percent(ms).0 == 0 {
                    errs.push(invalid_raw(
                        &rp.child("maxUnavailable"),
                        &raw_int_or_string(mu),
                        "may not be 0 when `maxSurge` is 0",
                    ));
                }
                errs.extend(not_more_than_100_percent(mu, &rp.child("maxUnavailable")));
            }
        },
        _ => {
            let raw = format!("apps.DeploymentStrategy{{Type:{ty:?}, RollingUpdate:(*apps.RollingUpdateDeployment)(nil)}}");
            errs.push(not_supported_raw(&sp, &raw, &["Recreate", "RollingUpdate"]));
        }
    }
    errs.extend(validate_nonnegative(spec, "minReadySeconds", path));
    errs.extend(validate_nonnegative(spec, "revisionHistoryLimit", path));
    if let Some(pds) = int(spec, "progressDeadlineSeconds") {
        errs.extend(validate_nonnegative(spec, "progressDeadlineSeconds", path));
        if pds <= int(spec, "minReadySeconds").unwrap_or(0) {
            errs.push(invalid(
                &path.child("progressDeadlineSeconds"),
                pds,
                "must be greater than minReadySeconds",
            ));
        }
    }
    errs
}

fn validate_replicaset_spec(spec: &Value, path: &Path) -> Errs {
    let mut errs = validate_common_counts(spec, path);
    errs.extend(validate_selector(spec, path, "deployment"));
    errs.extend(validate_rs_template(spec, path, "ReplicaSet"));
    errs
}

fn validate_statefulset_spec(spec: &Value, path: &Path) -> Errs {
    let mut errs = Errs::new();
    let pmp = st(spec, "podManagementPolicy");
    match pmp {
        "" => errs.push(required(&path.child("podManagementPolicy"))),
        "OrderedReady" | "Parallel" => {}
        _ => errs.push(invalid(
            &path.child("podManagementPolicy"),
            pmp,
            "must be 'OrderedReady' or 'Parallel'",
        )),
    }
    let up = path.child("updateStrategy");
    let empty = json!({});
    let us = spec.get("updateStrategy").unwrap_or(&empty);
    match st(us, "type") {
        "" => errs.push(required(&up)),
        "OnDelete" => {
            if get(us, "rollingUpdate").is_some() {
                errs.push(invalid_raw(
                    &up.child("rollingUpdate"),
                    &format!("&apps.RollingUpdateStatefulSetStrategy{{Partition:{}, MaxUnavailable:(*intstr.IntOrString)(nil)}}", int(&us["rollingUpdate"], "partition").unwrap_or(0)),
                    "only allowed for updateStrategy 'RollingUpdate'",
                ));
            }
        }
        "RollingUpdate" => {
            if let Some(ru) = get(us, "rollingUpdate") {
                let rp = up.child("rollingUpdate");
                errs.extend(validate_nonnegative(ru, "partition", &rp));
                if let Some(mu) = get(ru, "maxUnavailable") {
                    errs.extend(validate_positive_int_or_percent(
                        Some(mu),
                        &rp.child("maxUnavailable"),
                    ));
                    if int_or_percent(Some(mu)).0 == 0 {
                        errs.push(invalid_raw(
                            &rp.child("maxUnavailable"),
                            &raw_int_or_string(Some(mu)),
                            "cannot be 0",
                        ));
                    }
                    errs.extend(not_more_than_100_percent(
                        Some(mu),
                        &rp.child("maxUnavailable"),
                    ));
                }
            }
        }
        other => {
            let raw = format!("apps.StatefulSetUpdateStrategy{{Type:{other:?}, RollingUpdate:(*apps.RollingUpdateStatefulSetStrategy)(nil)}}");
            errs.push(invalid_raw(
                &up,
                &raw,
                "must be 'RollingUpdate' or 'OnDelete'",
            ));
        }
    }
    if let Some(p) = get(spec, "persistentVolumeClaimRetentionPolicy") {
        let pp = path.child("persistentVolumeClaimRetentionPolicy");
        for key in ["whenDeleted", "whenScaled"] {
            let v = st(p, key);
            if !matches!(v, "Retain" | "Delete") {
                errs.push(not_supported(&pp.child(key), v, &["Retain", "Delete"]));
            }
        }
    }
    errs.extend(validate_common_counts(spec, path));
    if let Some(o) = get(spec, "ordinals") {
        errs.extend(validate_nonnegative(o, "start", &path.child("ordinals")));
    }
    errs.extend(validate_selector(spec, path, "statefulset"));
    let tp = path.child("template");
    errs.extend(validate_selector_matches(spec, &tp, true));
    let tmeta = spec
        .get("template")
        .and_then(|t| t.get("metadata"))
        .unwrap_or(&empty);
    errs.extend(validate_labels(
        &str_map(tmeta, "labels"),
        &tp.child("labels"),
    ));
    errs.extend(validate_annotations(
        &str_map(tmeta, "annotations"),
        &tp.child("annotations"),
    ));
    let tspec = spec
        .get("template")
        .and_then(|t| t.get("spec"))
        .unwrap_or(&empty);
    let rp = st(tspec, "restartPolicy");
    if rp != "Always" {
        errs.push(not_supported(
            &tp.child("spec").child("restartPolicy"),
            rp,
            &["Always"],
        ));
    }
    if get(tspec, "activeDeadlineSeconds").is_some() {
        errs.push(forbidden(
            &tp.child("spec").child("activeDeadlineSeconds"),
            "activeDeadlineSeconds in StatefulSet is not Supported",
        ));
    }
    errs
}

fn validate_daemonset_spec(spec: &Value, path: &Path) -> Errs {
    let mut errs = Errs::new();
    if let Some(sel) = get(spec, "selector") {
        errs.extend(validate_label_selector(sel, &path.child("selector")));
    }
    let tp = path.child("template");
    errs.extend(validate_selector_matches(spec, &tp, false));
    if let Some(sel) = get(spec, "selector") {
        if obj(sel, "matchLabels").map_or(0, |m| m.len()) + arr(sel, "matchExpressions").len() == 0
        {
            let raw = label_selector_string(Some(sel));
            errs.push(invalid_raw(
                &path.child("selector"),
                &raw,
                "empty selector is invalid for daemonset",
            ));
        }
    }
    let empty = json!({});
    let template = spec.get("template").unwrap_or(&empty);
    errs.extend(validate_pod_template(template, &tp));
    let tspec = template.get("spec").unwrap_or(&empty);
    let rp = st(tspec, "restartPolicy");
    if rp != "Always" {
        errs.push(not_supported(
            &tp.child("spec").child("restartPolicy"),
            rp,
            &["Always"],
        ));
    }
    if let Some(ads) = int(tspec, "activeDeadlineSeconds") {
        errs.push(invalid(
            &tp.child("spec").child("activeDeadlineSeconds"),
            ads,
            "activeDeadlineSeconds in DaemonSet is not Supported",
        ));
    }
    errs.extend(validate_nonnegative(spec, "minReadySeconds", path));
    errs.extend(validate_nonnegative(spec, "templateGeneration", path));
    let up = path.child("updateStrategy");
    let us = spec.get("updateStrategy").unwrap_or(&empty);
    match st(us, "type") {
        "OnDelete" => {}
        "RollingUpdate" => match get(us, "rollingUpdate") {
            None => errs.push(required(&up.child("rollingUpdate"))),
            Some(ru) => {
                let rp = up.child("rollingUpdate");
                let (mu, ms) = (get(ru, "maxUnavailable"), get(ru, "maxSurge"));
                errs.extend(validate_positive_int_or_percent(
                    mu,
                    &rp.child("maxUnavailable"),
                ));
                errs.extend(validate_positive_int_or_percent(ms, &rp.child("maxSurge")));
                errs.extend(not_more_than_100_percent(mu, &rp.child("maxUnavailable")));
                errs.extend(not_more_than_100_percent(ms, &rp.child("maxSurge")));
                let (hu, hs) = (int_or_percent(mu).0 != 0, int_or_percent(ms).0 != 0);
                if hu && hs {
                    errs.push(invalid_raw(
                        &rp.child("maxSurge"),
                        &raw_int_or_string(ms),
                        "may not be set when maxUnavailable is non-zero",
                    ));
                } else if !hu && !hs {
                    errs.push(required_d(
                        &rp.child("maxUnavailable"),
                        "cannot be 0 when maxSurge is 0",
                    ));
                }
            }
        },
        other => {
            let raw = format!("apps.DaemonSetUpdateStrategy{{Type:{other:?}, RollingUpdate:(*apps.RollingUpdateDaemonSet)(nil)}}");
            errs.push(not_supported_raw(&up, &raw, &["RollingUpdate", "OnDelete"]));
        }
    }
    errs.extend(validate_nonnegative(spec, "revisionHistoryLimit", path));
    errs
}

fn spec_of(obj: &Value) -> &Value {
    static EMPTY: std::sync::OnceLock<Value> = std::sync::OnceLock::new();
    obj.get("spec")
        .filter(|s| s.is_object())
        .unwrap_or_else(|| EMPTY.get_or_init(|| json!({})))
}

/// Spec validation on create, and on update with the kind's immutable fields.
pub(crate) fn validate(kind: &str, obj: &Value, old: Option<&Value>) -> Errs {
    let spec = spec_of(obj);
    let path = Path::new("spec");
    let mut errs = match kind {
        "Deployment" => validate_deployment_spec(spec, &path),
        "ReplicaSet" => validate_replicaset_spec(spec, &path),
        "StatefulSet" => validate_statefulset_spec(spec, &path),
        "DaemonSet" => validate_daemonset_spec(spec, &path),
        _ => return Vec::new(),
    };
    let Some(old) = old else { return errs };
    let old_spec = spec_of(old);
    if kind == "StatefulSet" {
        let mut clone = spec.clone();
        if let Some(m) = clone.as_object_mut() {
            for key in [
                "replicas",
                "ordinals",
                "template",
                "updateStrategy",
                "minReadySeconds",
                "revisionHistoryLimit",
                "persistentVolumeClaimRetentionPolicy",
            ] {
                match old_spec.get(key) {
                    Some(v) => m.insert(key.to_string(), v.clone()),
                    None => m.remove(key),
                };
            }
        }
        if &clone != old_spec {
            errs.push(forbidden(
                &path,
                "updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', 'updateStrategy', 'revisionHistoryLimit', 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden",
            ));
        }
    } else if get(spec, "selector") != get(old_spec, "selector") {
        errs.push(invalid_raw(
            &path.child("selector"),
            &label_selector_string(get(spec, "selector")),
            IMMUTABLE,
        ));
    }
    errs
}

/// Status validation (`Validate*Status`): counts non-negative and consistent.
pub(crate) fn validate_status(kind: &str, obj: &Value) -> Errs {
    let empty = json!({});
    let status = obj.get("status").unwrap_or(&empty);
    let path = Path::new("status");
    let mut errs = Errs::new();
    let keys: &[&str] = match kind {
        "Deployment" => &[
            "observedGeneration",
            "replicas",
            "updatedReplicas",
            "readyReplicas",
            "availableReplicas",
            "unavailableReplicas",
            "terminatingReplicas",
            "collisionCount",
        ],
        "ReplicaSet" => &[
            "replicas",
            "fullyLabeledReplicas",
            "readyReplicas",
            "availableReplicas",
            "terminatingReplicas",
            "observedGeneration",
        ],
        "StatefulSet" => &[
            "replicas",
            "readyReplicas",
            "currentReplicas",
            "updatedReplicas",
            "availableReplicas",
            "observedGeneration",
            "collisionCount",
        ],
        "DaemonSet" => &[
            "currentNumberScheduled",
            "numberMisscheduled",
            "desiredNumberScheduled",
            "numberReady",
            "observedGeneration",
            "updatedNumberScheduled",
            "numberAvailable",
            "numberUnavailable",
            "collisionCount",
        ],
        _ => return errs,
    };
    for k in keys {
        errs.extend(validate_nonnegative(status, k, &path));
    }
    if kind != "DaemonSet" {
        let replicas = int(status, "replicas").unwrap_or(0);
        let msg = "cannot be greater than status.replicas";
        for k in [
            "updatedReplicas",
            "fullyLabeledReplicas",
            "readyReplicas",
            "availableReplicas",
            "currentReplicas",
        ] {
            if let Some(n) = int(status, k) {
                if n > replicas {
                    errs.push(invalid(&path.child(k), n, msg));
                }
            }
        }
        let ready = int(status, "readyReplicas").unwrap_or(0);
        if let Some(a) = int(status, "availableReplicas") {
            if a > ready {
                errs.push(invalid(
                    &path.child("availableReplicas"),
                    a,
                    "cannot be greater than readyReplicas",
                ));
            }
        }
    }
    errs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msgs(errs: &Errs) -> Vec<String> {
        errs.iter().map(|e| e.message()).collect()
    }

    fn obj_with(kind: &str, spec: Value) -> Value {
        let mut o = json!({"metadata": {"name": "web"}, "spec": spec});
        default(kind, &mut o);
        o
    }

    fn tmpl(labels: Value) -> Value {
        json!({"metadata": {"labels": labels}, "spec": {"containers": [{"name": "c", "image": "nginx"}]}})
    }

    #[test]
    fn workload_defaults() {
        let d = obj_with(
            "Deployment",
            json!({"selector": {"matchLabels": {"app": "x"}}, "template": tmpl(json!({"app": "x"}))}),
        );
        let s = &d["spec"];
        assert_eq!(s["replicas"], 1);
        assert_eq!(
            s["strategy"],
            json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}})
        );
        assert_eq!(s["revisionHistoryLimit"], 10);
        assert_eq!(s["progressDeadlineSeconds"], 600);
        assert_eq!(s["template"]["spec"]["restartPolicy"], "Always");
        assert_eq!(
            s["template"]["spec"]["containers"][0]["imagePullPolicy"],
            "Always"
        );
        assert!(
            validate("Deployment", &d, None).is_empty(),
            "{:?}",
            msgs(&validate("Deployment", &d, None))
        );

        let s = obj_with(
            "StatefulSet",
            json!({"selector": {"matchLabels": {"app": "x"}}, "template": tmpl(json!({"app": "x"})), "volumeClaimTemplates": [{"metadata": {"name": "d"}, "spec": {}}]}),
        );
        let s = &s["spec"];
        assert_eq!(s["podManagementPolicy"], "OrderedReady");
        assert_eq!(
            s["updateStrategy"],
            json!({"type": "RollingUpdate", "rollingUpdate": {"partition": 0}})
        );
        assert_eq!(
            s["persistentVolumeClaimRetentionPolicy"],
            json!({"whenDeleted": "Retain", "whenScaled": "Retain"})
        );
        assert_eq!(s["replicas"], 1);
        assert_eq!(
            s["volumeClaimTemplates"][0]["spec"]["volumeMode"],
            "Filesystem"
        );
        assert_eq!(s["volumeClaimTemplates"][0]["status"]["phase"], "Pending");

        let ds = obj_with(
            "DaemonSet",
            json!({"selector": {"matchLabels": {"app": "x"}}, "template": tmpl(json!({"app": "x"}))}),
        );
        assert_eq!(
            ds["spec"]["updateStrategy"],
            json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}})
        );
        assert!(validate("DaemonSet", &ds, None).is_empty());

        let rs = obj_with(
            "ReplicaSet",
            json!({"selector": {"matchLabels": {"app": "x"}}, "template": tmpl(json!({"app": "x"}))}),
        );
        assert_eq!(rs["spec"]["replicas"], 1);
        assert!(validate("ReplicaSet", &rs, None).is_empty());
    }

    #[test]
    fn workload_errors() {
        let cases: Vec<(&str, Value, Vec<&str>)> = vec![
            ("Deployment", json!({"selector": {"matchLabels": {"app": "y"}}, "template": tmpl(json!({"app": "x"}))}),
             vec!["spec.template.metadata.labels: Invalid value: map[string]string{\"app\":\"x\"}: `selector` does not match template `labels`"]),
            ("Deployment", json!({"template": tmpl(json!({"app": "x"}))}), vec!["spec.selector: Required value"]),
            ("Deployment", json!({"selector": {}, "template": tmpl(json!({"app": "x"}))}),
             vec!["spec.selector: Invalid value: &LabelSelector{MatchLabels:map[string]string{},MatchExpressions:[]LabelSelectorRequirement{},}: empty selector is invalid for deployment"]),
            ("Deployment", json!({"replicas": -1, "selector": {"matchLabels": {"app": "x"}}, "template": tmpl(json!({"app": "x"}))}),
             vec!["spec.replicas: Invalid value: -1: must be greater than or equal to 0"]),
            ("Deployment", json!({"selector": {"matchLabels": {"app": "x"}}, "template": {"metadata": {"labels": {"app": "x"}}, "spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "i"}]}}}),
             vec!["spec.template.spec.restartPolicy: Unsupported value: \"Never\": supported values: \"Always\""]),
            ("Deployment", json!({"strategy": {"rollingUpdate": {"maxUnavailable": 0, "maxSurge": 0}}, "selector": {"matchLabels": {"app": "x"}}, "template": tmpl(json!({"app": "x"}))}),
             vec!["spec.strategy.rollingUpdate.maxUnavailable: Invalid value: 0: may not be 0 when `maxSurge` is 0"]),
            ("Deployment", json!({"selector": {"matchLabels": {"app": "x"}}, "template": {"metadata": {"labels": {"app": "x"}}, "spec": {"containers": [{"name": "c"}]}}}),
             vec!["spec.template.spec.containers[0].image: Required value"]),
            ("StatefulSet", json!({"selector": {"matchLabels": {"app": "x"}}, "template": {"spec": {"containers": [{"name": "c", "image": "i"}]}}}),
             vec!["spec.template.metadata.labels: Invalid value: map[string]string(nil): `selector` does not match template `labels`"]),
            ("DaemonSet", json!({"selector": {"matchLabels": {"app": "x"}}, "updateStrategy": {"rollingUpdate": {"maxUnavailable": 1, "maxSurge": 1}}, "template": tmpl(json!({"app": "x"}))}),
             vec!["spec.updateStrategy.rollingUpdate.maxSurge: Invalid value: 1: may not be set when maxUnavailable is non-zero"]),
        ];
        for (kind, spec, want) in cases {
            let o = obj_with(kind, spec.clone());
            assert_eq!(msgs(&validate(kind, &o, None)), want, "{kind} {spec}");
        }
    }

    #[test]
    fn selector_is_immutable_on_update() {
        let old = obj_with(
            "Deployment",
            json!({"selector": {"matchLabels": {"app": "x"}}, "template": tmpl(json!({"app": "x", "v": "2"}))}),
        );
        let mut new = old.clone();
        new["spec"]["replicas"] = json!(3);
        assert!(validate("Deployment", &new, Some(&old)).is_empty());
        new["spec"]["selector"] = json!({"matchLabels": {"v": "2"}});
        assert_eq!(
            msgs(&validate("Deployment", &new, Some(&old))),
            vec!["spec.selector: Invalid value: &LabelSelector{MatchLabels:map[string]string{v: 2,},MatchExpressions:[]LabelSelectorRequirement{},}: field is immutable"]
        );
    }

    #[test]
    fn statefulset_spec_update_is_restricted() {
        let old = obj_with(
            "StatefulSet",
            json!({"serviceName": "a", "selector": {"matchLabels": {"app": "x"}}, "template": tmpl(json!({"app": "x"}))}),
        );
        let mut new = old.clone();
        new["spec"]["replicas"] = json!(5);
        assert!(validate("StatefulSet", &new, Some(&old)).is_empty());
        new["spec"]["serviceName"] = json!("b");
        assert_eq!(
            msgs(&validate("StatefulSet", &new, Some(&old))),
            vec!["spec: Forbidden: updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', 'updateStrategy', 'revisionHistoryLimit', 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden"]
        );
    }

    #[test]
    fn status_counts() {
        let o = json!({"status": {"replicas": 1, "readyReplicas": 2}});
        assert_eq!(
            msgs(&validate_status("Deployment", &o)),
            vec!["status.readyReplicas: Invalid value: 2: cannot be greater than status.replicas"]
        );
    }
}
