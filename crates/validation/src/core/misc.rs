//! The smaller core kinds: ConfigMap, Secret, Namespace, Node, Endpoints, Event,
//! PersistentVolume, PersistentVolumeClaim, ResourceQuota, LimitRange — defaults and validation
//! as upstream's `pkg/apis/core/v1/defaults.go` and `pkg/apis/core/validation`.

use crate::meta::{validate_label_selector, validate_labels};
use crate::util::*;
use apimachinery::errors::Path;
use base64::Engine;
use serde_json::{json, Map, Value};

/// Largest total data size of a ConfigMap or Secret.
const MAX_SECRET_SIZE: usize = 1024 * 1024;
const IMMUTABLE_WHEN_SET: &str = "field is immutable when `immutable` is set";
const IP_ERR: &str = "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)";

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

fn decoded(v: &Value) -> Vec<u8> {
    v.as_str()
        .and_then(|s| b64().decode(s).ok())
        .unwrap_or_default()
}

fn sorted_keys(m: Option<&Map<String, Value>>) -> Vec<(String, Value)> {
    let mut v: Vec<(String, Value)> = m
        .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

pub(crate) fn default(kind: &str, obj: &mut Value) {
    match kind {
        "Secret" => {
            // v1 → internal conversion folds stringData into data before anything else sees it.
            if let Some(sd) = obj.as_object_mut().and_then(|m| m.remove("stringData")) {
                if let Some(sd) = sd.as_object() {
                    if let Some(data) = ensure_obj(obj, "data").and_then(Value::as_object_mut) {
                        for (k, v) in sd {
                            data.insert(k.clone(), json!(b64().encode(v.as_str().unwrap_or(""))));
                        }
                    }
                }
            }
            default_str(obj, "type", "Opaque");
        }
        "Namespace" => {
            let name = obj
                .get("metadata")
                .map(|m| st(m, "name").to_string())
                .unwrap_or_default();
            if !name.is_empty() {
                if let Some(labels) =
                    ensure_obj(obj, "metadata").and_then(|m| ensure_obj(m, "labels"))
                {
                    labels["kubernetes.io/metadata.name"] = json!(name);
                }
            }
            if let Some(s) = ensure_obj(obj, "status") {
                default_str(s, "phase", "Active");
            }
        }
        "Endpoints" => {
            for ss in items_mut(obj, "subsets") {
                for p in items_mut(ss, "ports") {
                    default_str(p, "protocol", "TCP");
                }
            }
        }
        "PersistentVolume" => {
            if let Some(s) = ensure_obj(obj, "spec") {
                default_str(s, "persistentVolumeReclaimPolicy", "Retain");
                default_str(s, "volumeMode", "Filesystem");
            }
            if let Some(s) = ensure_obj(obj, "status") {
                default_str(s, "phase", "Pending");
            }
        }
        "PersistentVolumeClaim" => {
            if let Some(s) = ensure_obj(obj, "spec") {
                default_str(s, "volumeMode", "Filesystem");
            }
            if let Some(s) = ensure_obj(obj, "status") {
                default_str(s, "phase", "Pending");
            }
        }
        "LimitRange" => {
            if let Some(spec) = child_mut(obj, "spec") {
                for item in items_mut(spec, "limits") {
                    default_limit_range_item(item);
                }
            }
        }
        "PodTemplate" => {
            if let Some(t) = ensure_obj(obj, "template") {
                crate::core::pod::default_pod_template(t);
            }
        }
        "ReplicationController" => default_replication_controller(obj),
        "Node" => {
            let cap = obj.pointer("/status/capacity").cloned();
            if let (Some(cap), Some(status)) = (cap, child_mut(obj, "status")) {
                default_field(status, "allocatable", cap);
            }
        }
        _ => {}
    }
}

fn default_replication_controller(obj: &mut Value) {
    let labels = obj
        .pointer("/spec/template/metadata/labels")
        .filter(|l| l.as_object().is_some_and(|m| !m.is_empty()))
        .cloned();
    if let Some(labels) = labels {
        if let Some(spec) = ensure_obj(obj, "spec") {
            if obj_len(spec, "selector") == 0 {
                spec["selector"] = labels.clone();
            }
        }
        if let Some(meta) = ensure_obj(obj, "metadata") {
            if obj_len(meta, "labels") == 0 {
                meta["labels"] = labels;
            }
        }
    }
    if let Some(spec) = ensure_obj(obj, "spec") {
        default_field(spec, "replicas", json!(1));
        if let Some(t) = child_mut(spec, "template") {
            crate::core::pod::default_pod_template(t);
        }
    }
}

fn obj_len(v: &Value, key: &str) -> usize {
    obj(v, key).map_or(0, |m| m.len())
}

fn default_limit_range_item(item: &mut Value) {
    if st(item, "type") != "Container" {
        return;
    }
    let max = obj(item, "max").cloned().unwrap_or_default();
    let min = obj(item, "min").cloned().unwrap_or_default();
    let mut default = obj(item, "default").cloned().unwrap_or_default();
    for (k, v) in max {
        default.entry(k).or_insert(v);
    }
    let mut req = obj(item, "defaultRequest").cloned().unwrap_or_default();
    for (k, v) in default.iter().chain(min.iter()) {
        req.entry(k.clone()).or_insert(v.clone());
    }
    if !default.is_empty() {
        item["default"] = Value::Object(default);
    }
    if !req.is_empty() {
        item["defaultRequest"] = Value::Object(req);
    }
}

pub(crate) fn validate(kind: &str, obj: &Value, old: Option<&Value>) -> Errs {
    match kind {
        "ConfigMap" => validate_config_map(obj, old),
        "PodTemplate" => {
            let empty = json!({});
            crate::core::pod::validate_pod_template(
                obj.get("template").unwrap_or(&empty),
                &Path::new("template"),
            )
        }
        "ReplicationController" => validate_replication_controller(obj, old),
        "Secret" => validate_secret(obj, old),
        "Namespace" => validate_namespace(obj),
        "Node" => validate_node(obj),
        "Endpoints" => validate_endpoints(obj),
        "Event" => validate_event(obj, false),
        "PersistentVolume" => validate_pv(obj),
        "PersistentVolumeClaim" => validate_pvc(obj, old),
        "ResourceQuota" => validate_resource_quota(obj),
        "LimitRange" => validate_limit_range(obj),
        _ => Vec::new(),
    }
}

/// `ValidateReplicationControllerSpec`: a map selector that must be non-empty and match the
/// template, whose restartPolicy must be Always.
fn validate_replication_controller(obj: &Value, old: Option<&Value>) -> Errs {
    let empty = json!({});
    let spec = obj.get("spec").unwrap_or(&empty);
    let sp = Path::new("spec");
    let mut errs = validate_nonnegative(spec, "replicas", &sp);
    errs.extend(validate_nonnegative(spec, "minReadySeconds", &sp));
    let selector = str_map(spec, "selector");
    if selector.is_empty() {
        errs.push(required(&sp.child("selector")));
    } else {
        errs.extend(validate_labels(&selector, &sp.child("selector")));
    }
    let tp = sp.child("template");
    match get(spec, "template") {
        None => errs.push(required(&tp)),
        Some(t) => {
            let labels = t
                .get("metadata")
                .map(|m| str_map(m, "labels"))
                .unwrap_or_default();
            if !selector.is_empty() && !selector.iter().all(|kv| labels.contains(kv)) {
                let raw = match t
                    .get("metadata")
                    .and_then(|m| crate::util::obj(m, "labels"))
                {
                    None => "map[string]string(nil)".to_string(),
                    Some(_) => go_string_map(&labels),
                };
                errs.push(invalid_raw(
                    &tp.child("metadata").child("labels"),
                    &raw,
                    "`selector` does not match template `labels`",
                ));
            }
            errs.extend(crate::core::pod::validate_pod_template(t, &tp));
            let rp = t.get("spec").map(|s| st(s, "restartPolicy")).unwrap_or("");
            if rp != "Always" {
                errs.push(not_supported(
                    &tp.child("spec").child("restartPolicy"),
                    rp,
                    &["Always"],
                ));
            }
            if let Some(ads) = t.get("spec").and_then(|s| int(s, "activeDeadlineSeconds")) {
                errs.push(invalid(
                    &tp.child("spec").child("activeDeadlineSeconds"),
                    ads,
                    "activeDeadlineSeconds in ReplicationController is not Supported",
                ));
            }
        }
    }
    let _ = old;
    errs
}

fn immutable_checks(obj: &Value, old: Option<&Value>, keys: &[&str]) -> Errs {
    let mut errs = Errs::new();
    let Some(old) = old else { return errs };
    if !boolean(old, "immutable") {
        return errs;
    }
    if !boolean(obj, "immutable") {
        errs.push(forbidden(&Path::new("immutable"), IMMUTABLE_WHEN_SET));
    }
    for key in keys {
        let (n, o) = (obj_or_empty(obj, key), obj_or_empty(old, key));
        if n != o {
            errs.push(forbidden(&Path::new(key), IMMUTABLE_WHEN_SET));
        }
    }
    errs
}

fn obj_or_empty(v: &Value, key: &str) -> Map<String, Value> {
    obj(v, key).cloned().unwrap_or_default()
}

fn validate_config_map(obj: &Value, old: Option<&Value>) -> Errs {
    let mut errs = immutable_checks(obj, old, &["data", "binaryData"]);
    let binary = obj_or_empty(obj, "binaryData");
    let mut total = 0;
    for (k, v) in sorted_keys(obj_or_empty(obj, "data").as_object_ref()) {
        let p = Path::new("data").key(&k);
        errs.extend(
            is_config_map_key(&k)
                .into_iter()
                .map(|m| invalid(&p, k.as_str(), &m)),
        );
        if binary.contains_key(&k) {
            errs.push(invalid(
                &p,
                k.as_str(),
                "duplicate of key present in binaryData",
            ));
        }
        total += v.as_str().map_or(0, str::len);
    }
    for (k, v) in sorted_keys(Some(&binary)) {
        let p = Path::new("binaryData").key(&k);
        errs.extend(
            is_config_map_key(&k)
                .into_iter()
                .map(|m| invalid(&p, k.as_str(), &m)),
        );
        total += decoded(&v).len();
    }
    if total > MAX_SECRET_SIZE {
        errs.push(too_long(&Path::new(""), MAX_SECRET_SIZE));
    }
    errs
}

trait AsObjectRef {
    fn as_object_ref(&self) -> Option<&Map<String, Value>>;
}

impl AsObjectRef for Map<String, Value> {
    fn as_object_ref(&self) -> Option<&Map<String, Value>> {
        Some(self)
    }
}

/// Go `encoding/json`'s complaint about `data`, for the docker config secret types.
fn go_json_error(bytes: &[u8]) -> Option<String> {
    match serde_json::from_slice::<Map<String, Value>>(bytes) {
        Ok(_) => None,
        Err(e) if e.is_eof() => Some("unexpected end of JSON input".to_string()),
        Err(e) => {
            let first = bytes.iter().find(|b| !b.is_ascii_whitespace()).copied();
            Some(match first {
                Some(c)
                    if c != b'{'
                        && c != b'['
                        && c != b'"'
                        && !c.is_ascii_digit()
                        && c != b'-'
                        && c != b't'
                        && c != b'f'
                        && c != b'n' =>
                {
                    format!(
                        "invalid character '{}' looking for beginning of value",
                        c as char
                    )
                }
                Some(c) if c != b'{' => {
                    "json: cannot unmarshal into Go value of type map[string]interface {}"
                        .to_string()
                }
                _ => e.to_string(),
            })
        }
    }
}

fn validate_secret(obj: &Value, old: Option<&Value>) -> Errs {
    let mut errs = Errs::new();
    if let Some(old) = old {
        let (n, o) = (st(obj, "type"), st(old, "type"));
        if n != o {
            errs.push(invalid(&Path::new("type"), n, IMMUTABLE));
        }
    }
    errs.extend(immutable_checks(obj, old, &["data"]));
    let data_path = Path::new("data");
    let data = obj_or_empty(obj, "data");
    let mut total = 0;
    for (k, v) in sorted_keys(Some(&data)) {
        errs.extend(
            is_config_map_key(&k)
                .into_iter()
                .map(|m| invalid(&data_path.key(&k), k.as_str(), &m)),
        );
        total += decoded(&v).len();
    }
    if total > MAX_SECRET_SIZE {
        errs.push(too_long(&data_path, MAX_SECRET_SIZE));
    }
    let need = |errs: &mut Errs, key: &str| {
        if !data.contains_key(key) {
            errs.push(required(&data_path.key(key)));
            false
        } else {
            true
        }
    };
    match st(obj, "type") {
        "kubernetes.io/service-account-token" => {
            let anns = obj
                .get("metadata")
                .map(|m| str_map(m, "annotations"))
                .unwrap_or_default();
            let sa = anns
                .iter()
                .find(|(k, _)| k == "kubernetes.io/service-account.name")
                .map(|(_, v)| v.as_str());
            if sa.unwrap_or("").is_empty() {
                errs.push(required(
                    &Path::new("metadata")
                        .child("annotations")
                        .key("kubernetes.io/service-account.name"),
                ));
            }
        }
        t @ ("kubernetes.io/dockercfg" | "kubernetes.io/dockerconfigjson") => {
            let key = if t == "kubernetes.io/dockercfg" {
                ".dockercfg"
            } else {
                ".dockerconfigjson"
            };
            if need(&mut errs, key) {
                if let Some(e) = go_json_error(&decoded(&data[key])) {
                    errs.push(invalid(
                        &data_path.key(key),
                        "<secret contents redacted>",
                        &e,
                    ));
                }
            }
        }
        "kubernetes.io/basic-auth"
            if !data.contains_key("username") && !data.contains_key("password") =>
        {
            errs.push(required(&data_path.key("username")));
            errs.push(required(&data_path.key("password")));
        }
        "kubernetes.io/ssh-auth"
            if data
                .get("ssh-privatekey")
                .map(decoded)
                .unwrap_or_default()
                .is_empty() =>
        {
            errs.push(required(&data_path.key("ssh-privatekey")));
        }
        "kubernetes.io/tls" => {
            need(&mut errs, "tls.crt");
            need(&mut errs, "tls.key");
        }
        _ => {}
    }
    errs
}

fn validate_namespace(obj: &Value) -> Errs {
    let mut errs = Errs::new();
    let empty = json!({});
    let spec = obj.get("spec").unwrap_or(&empty);
    for (i, f) in arr(spec, "finalizers").iter().enumerate() {
        let f = f.as_str().unwrap_or("");
        let p = Path::new("spec").child("finalizers").index(i);
        errs.extend(is_qualified_name(f).into_iter().map(|m| invalid(&p, f, &m)));
        if !f.contains('/') && !matches!(f, "kubernetes" | "orphan" | "foregroundDeletion") {
            errs.push(invalid(
                &p,
                f,
                "name is neither a standard finalizer name nor is it fully qualified",
            ));
        }
    }
    errs
}

fn validate_taint_effect(effect: &str, allow_empty: bool, path: &Path) -> Errs {
    match effect {
        "" if !allow_empty => vec![required(path)],
        "" | "NoSchedule" | "PreferNoSchedule" | "NoExecute" => Vec::new(),
        _ => vec![not_supported(
            path,
            effect,
            &["NoSchedule", "PreferNoSchedule", "NoExecute"],
        )],
    }
}

fn validate_node(obj: &Value) -> Errs {
    let mut errs = Errs::new();
    let empty = json!({});
    let spec = obj.get("spec").unwrap_or(&empty);
    let tp = Path::new("spec").child("taints");
    let mut seen = std::collections::HashSet::new();
    for (i, t) in arr(spec, "taints").iter().enumerate() {
        let p = tp.index(i);
        let key = st(t, "key");
        errs.extend(
            is_qualified_name(key)
                .into_iter()
                .map(|m| invalid(&p.child("key"), key, &m)),
        );
        let value = st(t, "value");
        let msgs = is_valid_label_value(value);
        if !msgs.is_empty() {
            errs.push(invalid(&p.child("value"), value, &msgs.join(";")));
        }
        let effect = st(t, "effect");
        errs.extend(validate_taint_effect(effect, false, &p.child("effect")));
        if !seen.insert((effect, key)) {
            let raw = format!(
                "core.Taint{{Key:{key:?}, Value:{value:?}, Effect:{effect:?}, TimeAdded:<nil>}}"
            );
            let mut e = duplicate_raw(&p, &raw);
            e.detail = format!("{raw}: taints must be unique by key and effect pair");
            errs.push(e);
        }
    }
    for (i, c) in arr(spec, "podCIDRs").iter().enumerate() {
        let c = c.as_str().unwrap_or("");
        if !is_valid_cidr(c) {
            errs.push(invalid(
                &Path::new("spec").child("podCIDRs").index(i),
                c,
                "must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)",
            ));
        }
    }
    errs
}

fn is_valid_cidr(c: &str) -> bool {
    let Some((ip, bits)) = c.split_once('/') else {
        return false;
    };
    let Ok(ip) = ip.parse::<std::net::IpAddr>() else {
        return false;
    };
    let max = if ip.is_ipv4() { 32 } else { 128 };
    bits.parse::<u8>().is_ok_and(|b| b <= max)
}

fn validate_endpoints(obj: &Value) -> Errs {
    let mut errs = Errs::new();
    for (i, ss) in arr(obj, "subsets").iter().enumerate() {
        let p = Path::new("subsets").index(i);
        if arr(ss, "addresses").is_empty() && arr(ss, "notReadyAddresses").is_empty() {
            errs.push(required_d(
                &p,
                "must specify `addresses` or `notReadyAddresses`",
            ));
        }
        for key in ["addresses", "notReadyAddresses"] {
            for (j, a) in arr(ss, key).iter().enumerate() {
                let ap = p.child(key).index(j);
                let ip = st(a, "ip");
                if !is_valid_ip(ip) {
                    errs.push(invalid(&ap.child("ip"), ip, IP_ERR));
                }
                let h = st(a, "hostname");
                if !h.is_empty() {
                    errs.extend(validate_dns1123_label(h, &ap.child("hostname")));
                }
                if let Some(n) = get(a, "nodeName").and_then(Value::as_str) {
                    errs.extend(
                        is_dns1123_subdomain(n)
                            .into_iter()
                            .map(|m| invalid(&ap.child("nodeName"), n, &m)),
                    );
                }
            }
        }
        let ports = arr(ss, "ports");
        for (j, port) in ports.iter().enumerate() {
            let pp = p.child("ports").index(j);
            let name = st(port, "name");
            if ports.len() > 1 && name.is_empty() {
                errs.push(required(&pp.child("name")));
            } else if !name.is_empty() {
                errs.extend(validate_dns1123_label(name, &pp.child("name")));
            }
            let n = int(port, "port").unwrap_or(0);
            errs.extend(
                is_valid_port_num(n)
                    .into_iter()
                    .map(|m| invalid(&pp.child("port"), n, &m)),
            );
            errs.extend(crate::core::pod::validate_protocol(
                st(port, "protocol"),
                &pp.child("protocol"),
            ));
        }
    }
    errs
}

/// Core and `events.k8s.io` Events (`ValidateEventCreate`); `new_api` applies the
/// events.k8s.io/v1 rules. Paths use the internal field names, as upstream.
pub(crate) fn validate_event(obj: &Value, new_api: bool) -> Errs {
    let mut errs = Errs::new();
    let ns = obj
        .get("metadata")
        .map(|m| st(m, "namespace"))
        .unwrap_or("");
    let involved_key = if new_api {
        "regarding"
    } else {
        "involvedObject"
    };
    let inv_ns = obj
        .get(involved_key)
        .map(|o| st(o, "namespace"))
        .unwrap_or("");
    let inv_path = Path::new("involvedObject").child("namespace");
    let event_time_zero = get(obj, "eventTime").is_none();
    if event_time_zero {
        if inv_ns.is_empty() {
            if !ns.is_empty() && ns != "default" {
                errs.push(invalid(&inv_path, inv_ns, "does not match event.namespace"));
            }
        } else if ns != inv_ns {
            errs.push(invalid(&inv_path, inv_ns, "does not match event.namespace"));
        }
    } else {
        if inv_ns.is_empty() && ns != "default" && ns != "kube-system" {
            errs.push(invalid(&inv_path, inv_ns, "does not match event.namespace"));
        }
        let rc = st(obj, "reportingController");
        if rc.is_empty() {
            errs.push(required(&Path::new("reportingController")));
        }
        errs.extend(
            is_qualified_name(rc)
                .into_iter()
                .map(|m| invalid(&Path::new("reportingController"), rc, &m)),
        );
        let ri = st(obj, "reportingInstance");
        if ri.is_empty() {
            errs.push(required(&Path::new("reportingInstance")));
        }
        if ri.len() > 128 {
            errs.push(invalid(
                &Path::new("reportingInstance"),
                "",
                "can have at most 128 characters",
            ));
        }
        let action = st(obj, "action");
        if action.is_empty() {
            errs.push(required(&Path::new("action")));
        }
        if action.len() > 128 {
            errs.push(invalid(
                &Path::new("action"),
                "",
                "can have at most 128 characters",
            ));
        }
        let reason = st(obj, "reason");
        if reason.is_empty() {
            errs.push(required(&Path::new("reason")));
        }
        if reason.len() > 128 {
            errs.push(invalid(
                &Path::new("reason"),
                "",
                "can have at most 128 characters",
            ));
        }
        let note = st(obj, if new_api { "note" } else { "message" });
        if note.len() > 1024 {
            errs.push(invalid(
                &Path::new("message"),
                "",
                "can have at most 1024 characters",
            ));
        }
    }
    errs.extend(
        is_dns1123_subdomain(ns)
            .into_iter()
            .map(|m| invalid(&Path::new("namespace"), ns, &m)),
    );
    if new_api {
        if event_time_zero {
            errs.push(required(&Path::new("eventTime")));
        }
        let ty = st(obj, "type");
        if ty != "Normal" && ty != "Warning" {
            errs.push(invalid(
                &Path::new("type"),
                "",
                &format!("has invalid value: {ty}"),
            ));
        }
        for (ext, int_name) in [
            ("deprecatedFirstTimestamp", "firstTimestamp"),
            ("deprecatedLastTimestamp", "lastTimestamp"),
        ] {
            if get(obj, ext).is_some() {
                errs.push(invalid(&Path::new(int_name), "", "needs to be unset"));
            }
        }
        if int(obj, "deprecatedCount").unwrap_or(0) != 0 {
            errs.push(invalid(&Path::new("count"), "", "needs to be unset"));
        }
        if let Some(src) = get(obj, "deprecatedSource") {
            if !unset_str(src, "component") || !unset_str(src, "host") {
                errs.push(invalid(&Path::new("source"), "", "needs to be unset"));
            }
        }
    }
    errs
}

const ACCESS_MODES: &[&str] = &[
    "ReadOnlyMany",
    "ReadWriteMany",
    "ReadWriteOnce",
    "ReadWriteOncePod",
];

fn validate_access_modes(spec: &Value, path: &Path, required_detail: &str) -> Errs {
    let mut errs = Errs::new();
    let modes: Vec<&str> = arr(spec, "accessModes")
        .iter()
        .map(|m| m.as_str().unwrap_or(""))
        .collect();
    if modes.is_empty() {
        errs.push(required_d(&path.child("accessModes"), required_detail));
    }
    let (mut rwop, mut other) = (false, false);
    for m in &modes {
        if !ACCESS_MODES.contains(m) {
            errs.push(not_supported(&path.child("accessModes"), *m, ACCESS_MODES));
        }
        if *m == "ReadWriteOncePod" {
            rwop = true;
        } else {
            other = true;
        }
    }
    if rwop && other {
        errs.push(forbidden(
            &path.child("accessModes"),
            "may not use ReadWriteOncePod with other access modes",
        ));
    }
    errs
}

fn validate_pv(obj: &Value) -> Errs {
    let empty = json!({});
    let spec = obj.get("spec").unwrap_or(&empty);
    let path = Path::new("spec");
    let mut errs = validate_access_modes(spec, &path, "");
    let cap = obj_or_empty(spec, "capacity");
    if cap.is_empty() {
        errs.push(required(&path.child("capacity")));
    }
    if !cap.contains_key("storage") || cap.len() > 1 {
        let raw = go_string_map(
            &sorted_keys(Some(&cap))
                .into_iter()
                .map(|(k, v)| (k, quantity_string(&v)))
                .collect::<Vec<_>>(),
        )
        .replacen("map[string]string", "core.ResourceList", 1);
        let e = apimachinery::errors::FieldError::new(
            apimachinery::errors::FieldErrorType::NotSupported,
            path.child("capacity").as_str(),
            None,
            format!("{raw}: supported values: \"storage\""),
        );
        errs.push(e);
    }
    for (k, v) in sorted_keys(Some(&cap)) {
        if parse_quantity(&v).is_some_and(|q| q <= 0.0) {
            errs.push(invalid(
                &path.child("capacity").key(&k),
                quantity_string(&v),
                "must be greater than zero",
            ));
        }
    }
    let rp = st(spec, "persistentVolumeReclaimPolicy");
    if !rp.is_empty() && !matches!(rp, "Delete" | "Recycle" | "Retain") {
        errs.push(not_supported(
            &path.child("persistentVolumeReclaimPolicy"),
            rp,
            &["Delete", "Recycle", "Retain"],
        ));
    }
    const SOURCES: &[&str] = &[
        "hostPath",
        "gcePersistentDisk",
        "awsElasticBlockStore",
        "glusterfs",
        "nfs",
        "rbd",
        "quobyte",
        "cephfs",
        "iscsi",
        "cinder",
        "fc",
        "flocker",
        "flexVolume",
        "azureFile",
        "vsphereVolume",
        "azureDisk",
        "photonPersistentDisk",
        "portworxVolume",
        "scaleIO",
        "local",
        "storageos",
        "csi",
    ];
    let n = SOURCES.iter().filter(|s| get(spec, s).is_some()).count();
    if n == 0 {
        errs.push(required_d(&path, "must specify a volume type"));
    }
    if let Some(l) = get(spec, "local") {
        if unset_str(l, "path") {
            errs.push(required(&path.child("local").child("path")));
        }
        if get(spec, "nodeAffinity").is_none() {
            errs.push(required_d(
                &path.child("nodeAffinity"),
                "Local volume requires node affinity",
            ));
        }
    }
    if let Some(h) = get(spec, "hostPath") {
        if unset_str(h, "path") {
            errs.push(required(&path.child("hostPath").child("path")));
        }
    }
    if let Some(c) = get(spec, "csi") {
        if unset_str(c, "driver") {
            errs.push(required(&path.child("csi").child("driver")));
        }
        if unset_str(c, "volumeHandle") {
            errs.push(required(&path.child("csi").child("volumeHandle")));
        }
    }
    let sc = st(spec, "storageClassName");
    if !sc.is_empty() {
        errs.extend(
            is_dns1123_subdomain(sc)
                .into_iter()
                .map(|m| invalid(&path.child("storageClassName"), sc, &m)),
        );
    }
    errs.extend(validate_volume_mode(spec, &path));
    errs
}

fn validate_volume_mode(spec: &Value, path: &Path) -> Errs {
    match get(spec, "volumeMode").and_then(Value::as_str) {
        Some(m) if !matches!(m, "Block" | "Filesystem") => vec![not_supported(
            &path.child("volumeMode"),
            m,
            &["Block", "Filesystem"],
        )],
        _ => Vec::new(),
    }
}

/// `ValidatePersistentVolumeClaimSpec` at `path`.
pub(crate) fn validate_pvc_spec(spec: &Value, path: &Path) -> Errs {
    let mut errs = validate_access_modes(spec, path, "at least 1 access mode is required");
    if let Some(sel) = get(spec, "selector") {
        errs.extend(validate_label_selector(sel, &path.child("selector")));
    }
    let rp = path.child("resources").key("storage");
    match spec
        .get("resources")
        .and_then(|r| obj(r, "requests"))
        .and_then(|r| r.get("storage"))
    {
        None => errs.push(required(&rp)),
        Some(q) => {
            if parse_quantity(q).is_some_and(|v| v <= 0.0) {
                errs.push(invalid(
                    &rp,
                    quantity_string(q),
                    "must be greater than zero",
                ));
            }
        }
    }
    let sc = st(spec, "storageClassName");
    if !sc.is_empty() {
        errs.extend(
            is_dns1123_subdomain(sc)
                .into_iter()
                .map(|m| invalid(&path.child("storageClassName"), sc, &m)),
        );
    }
    errs.extend(validate_volume_mode(spec, path));
    errs
}

fn validate_pvc(obj: &Value, old: Option<&Value>) -> Errs {
    let empty = json!({});
    let spec = obj.get("spec").unwrap_or(&empty);
    let path = Path::new("spec");
    let mut errs = validate_pvc_spec(spec, &path);
    let Some(old) = old else { return errs };
    let old_spec = old.get("spec").unwrap_or(&empty);
    let mut n = spec.clone();
    let mut o = old_spec.clone();
    if unset_str(old_spec, "volumeName") {
        match spec.get("volumeName") {
            Some(v) => o["volumeName"] = v.clone(),
            None => {
                if let Some(m) = o.as_object_mut() {
                    m.remove("volumeName");
                }
            }
        }
    }
    for v in [&mut n, &mut o] {
        if let Some(m) = v.as_object_mut() {
            m.remove("volumeAttributesClassName");
        }
        if let Some(r) = v
            .get_mut("resources")
            .and_then(|r| r.get_mut("requests"))
            .and_then(Value::as_object_mut)
        {
            r.remove("storage");
        }
    }
    if n != o {
        errs.push(forbidden(
            &path,
            &format!("spec is immutable after creation except resources.requests and volumeAttributesClassName for bound claims\n{}", simple_diff(&o, &n)),
        ));
    }
    let size = |v: &Value| {
        v.pointer("/spec/resources/requests/storage")
            .and_then(parse_quantity)
    };
    let status_size = old
        .pointer("/status/capacity/storage")
        .and_then(parse_quantity);
    if let (Some(ns), Some(os)) = (size(obj), size(old)) {
        if ns < os && status_size.is_some_and(|s| ns <= s) {
            errs.push(forbidden(
                &path.child("resources").child("requests").child("storage"),
                "field can not be less than status.capacity",
            ));
        }
    }
    errs
}

fn simple_diff(old: &Value, new: &Value) -> String {
    let empty = Map::new();
    let (o, n) = (
        old.as_object().unwrap_or(&empty),
        new.as_object().unwrap_or(&empty),
    );
    let mut keys: Vec<&String> = o.keys().chain(n.keys()).collect();
    keys.sort();
    keys.dedup();
    let mut out = String::from("  core.PersistentVolumeClaimSpec{\n");
    for k in keys {
        if o.get(k.as_str()) != n.get(k.as_str()) {
            if let Some(a) = o.get(k.as_str()) {
                out.push_str(&format!("- \t{k}: {a},\n"));
            }
            if let Some(b) = n.get(k.as_str()) {
                out.push_str(&format!("+ \t{k}: {b},\n"));
            }
        }
    }
    out.push_str("  }\n");
    out
}

fn validate_resource_quota(o: &Value) -> Errs {
    let mut errs = Errs::new();
    let empty = json!({});
    let spec = o.get("spec").unwrap_or(&empty);
    for (k, v) in sorted_keys(obj(spec, "hard")) {
        let p = Path::new("spec").child("hard").key(&k);
        errs.extend(
            is_qualified_name(&k)
                .into_iter()
                .map(|m| invalid(&p, k.as_str(), &m)),
        );
        if parse_quantity(&v).is_some_and(|q| q < 0.0) {
            errs.push(invalid(
                &p,
                quantity_string(&v),
                "must be greater than or equal to 0",
            ));
        }
    }
    const SCOPES: &[&str] = &[
        "Terminating",
        "NotTerminating",
        "BestEffort",
        "NotBestEffort",
        "PriorityClass",
        "CrossNamespacePodAffinity",
        "VolumeAttributesClass",
    ];
    for s in arr(spec, "scopes") {
        let s = s.as_str().unwrap_or("");
        if !SCOPES.contains(&s) {
            errs.push(invalid(
                &Path::new("spec").child("scopes"),
                s,
                "unsupported scope",
            ));
        }
    }
    errs
}

fn validate_limit_range(o: &Value) -> Errs {
    let mut errs = Errs::new();
    let empty = json!({});
    let spec = o.get("spec").unwrap_or(&empty);
    let mut types = std::collections::HashSet::new();
    for (i, item) in arr(spec, "limits").iter().enumerate() {
        let p = Path::new("spec").child("limits").index(i);
        let ty = st(item, "type");
        errs.extend(
            is_qualified_name(ty)
                .into_iter()
                .map(|m| invalid(&p.child("type"), ty, &m)),
        );
        if !ty.contains('/') && !matches!(ty, "Pod" | "Container" | "PersistentVolumeClaim") {
            errs.push(invalid(
                &p.child("type"),
                ty,
                "must be a standard limit type or fully qualified",
            ));
        }
        if !types.insert(ty) {
            errs.push(duplicate(&p.child("type"), ty));
        }
        let get_q = |key: &str, r: &str| {
            item.get(key)
                .and_then(|m| m.get(r))
                .and_then(|q| parse_quantity(q).map(|v| (v, quantity_string(q))))
        };
        let mut resources: Vec<String> = [
            "max",
            "min",
            "default",
            "defaultRequest",
            "maxLimitRequestRatio",
        ]
        .iter()
        .flat_map(|k| {
            obj(item, k)
                .map(|m| m.keys().cloned().collect::<Vec<_>>())
                .unwrap_or_default()
        })
        .collect();
        resources.sort();
        resources.dedup();
        if ty == "Pod" {
            for key in ["default", "defaultRequest"] {
                if obj(item, key).is_some_and(|m| !m.is_empty()) {
                    errs.push(forbidden(
                        &p.child(key),
                        "may not be specified when `type` is 'Pod'",
                    ));
                }
            }
        }
        for r in resources {
            let (min, max, def, dreq) = (
                get_q("min", &r),
                get_q("max", &r),
                get_q("default", &r),
                get_q("defaultRequest", &r),
            );
            if let (Some((a, sa)), Some((b, sb))) = (&min, &max) {
                if a > b {
                    errs.push(invalid(
                        &p.child("min").key(&r),
                        sa.as_str(),
                        &format!("min value {sa} is greater than max value {sb}"),
                    ));
                }
            }
            if let (Some((a, sa)), Some((b, sb))) = (&dreq, &max) {
                if a > b {
                    errs.push(invalid(
                        &p.child("defaultRequest").key(&r),
                        sa.as_str(),
                        &format!("default request value {sa} is greater than max value {sb}"),
                    ));
                }
            }
            if let (Some((a, sa)), Some((b, sb))) = (&dreq, &def) {
                if a > b {
                    errs.push(invalid(
                        &p.child("defaultRequest").key(&r),
                        sa.as_str(),
                        &format!(
                            "default request value {sa} is greater than default limit value {sb}"
                        ),
                    ));
                }
            }
            if let (Some((a, sa)), Some((b, sb))) = (&min, &dreq) {
                if a > b {
                    errs.push(invalid(
                        &p.child("defaultRequest").key(&r),
                        sb.as_str(),
                        &format!("min value {sa} is greater than default request value {sb}"),
                    ));
                }
            }
            if let (Some((a, sa)), Some((b, sb))) = (&def, &max) {
                if a > b {
                    errs.push(invalid(
                        &p.child("default").key(&r),
                        sa.as_str(),
                        &format!("default value {sa} is greater than max value {sb}"),
                    ));
                }
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

    fn run(kind: &str, mut o: Value, old: Option<Value>) -> Vec<String> {
        default(kind, &mut o);
        msgs(&validate(kind, &o, old.as_ref()))
    }

    #[test]
    fn config_map_keys_and_immutability() {
        assert_eq!(
            run("ConfigMap", json!({"data": {"a b": "x", "ok.key": "y"}}), None),
            vec!["data[a b]: Invalid value: \"a b\": a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')"]
        );
        let big = "x".repeat(MAX_SECRET_SIZE + 1);
        assert_eq!(
            run("ConfigMap", json!({"data": {"k": big}}), None),
            vec![": Too long: may not be more than 1048576 bytes"]
        );
        let old = json!({"immutable": true, "data": {"a": "1"}});
        assert_eq!(
            run(
                "ConfigMap",
                json!({"immutable": true, "data": {"a": "2"}}),
                Some(old.clone())
            ),
            vec!["data: Forbidden: field is immutable when `immutable` is set"]
        );
        assert!(run("ConfigMap", old.clone(), Some(old)).is_empty());
    }

    #[test]
    fn secret_defaults_and_types() {
        let mut s = json!({"stringData": {"a": "hi"}});
        default("Secret", &mut s);
        assert_eq!(s, json!({"type": "Opaque", "data": {"a": "aGk="}}));
        assert_eq!(
            run(
                "Secret",
                json!({"type": "kubernetes.io/tls", "data": {"tls.crt": ""}}),
                None
            ),
            vec!["data[tls.key]: Required value"]
        );
        assert_eq!(
            run(
                "Secret",
                json!({"type": "kubernetes.io/dockerconfigjson", "data": {}}),
                None
            ),
            vec!["data[.dockerconfigjson]: Required value"]
        );
        assert_eq!(
            run("Secret", json!({"type": "kubernetes.io/dockerconfigjson", "data": {".dockerconfigjson": "eA=="}}), None),
            vec!["data[.dockerconfigjson]: Invalid value: \"<secret contents redacted>\": invalid character 'x' looking for beginning of value"]
        );
        assert_eq!(
            run(
                "Secret",
                json!({"type": "kubernetes.io/service-account-token"}),
                None
            ),
            vec!["metadata.annotations[kubernetes.io/service-account.name]: Required value"]
        );
        assert_eq!(
            run(
                "Secret",
                json!({"type": "kubernetes.io/tls", "data": {"tls.crt": "", "tls.key": ""}}),
                Some(json!({"type": "Opaque"}))
            ),
            vec!["type: Invalid value: \"kubernetes.io/tls\": field is immutable"]
        );
    }

    #[test]
    fn namespace_label_default() {
        let mut ns = json!({"metadata": {"name": "dev"}});
        default("Namespace", &mut ns);
        assert_eq!(
            ns["metadata"]["labels"]["kubernetes.io/metadata.name"],
            "dev"
        );
        assert_eq!(ns["status"]["phase"], "Active");
    }

    #[test]
    fn pvc_rules() {
        assert_eq!(
            run("PersistentVolumeClaim", json!({"spec": {}}), None),
            vec![
                "spec.accessModes: Required value: at least 1 access mode is required",
                "spec.resources[storage]: Required value"
            ]
        );
        let old = json!({"spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}, "volumeMode": "Filesystem"}, "status": {"phase": "Pending"}});
        let mut grown = old.clone();
        grown["spec"]["resources"]["requests"]["storage"] = json!("2Gi");
        assert!(run("PersistentVolumeClaim", grown, Some(old.clone())).is_empty());
        let mut changed = old.clone();
        changed["spec"]["accessModes"] = json!(["ReadWriteMany"]);
        let m = run("PersistentVolumeClaim", changed, Some(old));
        assert_eq!(m.len(), 1);
        assert!(m[0].starts_with("spec: Forbidden: spec is immutable after creation except resources.requests and volumeAttributesClassName for bound claims\n"));
    }

    #[test]
    fn pv_rules() {
        assert_eq!(
            run("PersistentVolume", json!({"spec": {"hostPath": {"path": "/x"}}}), None),
            vec![
                "spec.accessModes: Required value",
                "spec.capacity: Required value",
                "spec.capacity: Unsupported value: core.ResourceList{}: supported values: \"storage\"",
            ]
        );
    }

    #[test]
    fn node_taints_and_endpoints() {
        assert_eq!(
            run("Node", json!({"spec": {"taints": [{"key": "k"}]}}), None),
            vec!["spec.taints[0].effect: Required value"]
        );
        assert_eq!(
            run("Endpoints", json!({"subsets": [{"addresses": [{"ip": "x"}], "ports": [{"port": 80}]}]}), None),
            vec!["subsets[0].addresses[0].ip: Invalid value: \"x\": must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)"]
        );
    }

    #[test]
    fn replication_controller_defaults_selector_from_template() {
        let mut rc = json!({"spec": {"template": {"metadata": {"labels": {"app": "x"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}}});
        default("ReplicationController", &mut rc);
        assert_eq!(rc["spec"]["selector"], json!({"app": "x"}));
        assert_eq!(rc["metadata"]["labels"], json!({"app": "x"}));
        assert_eq!(rc["spec"]["replicas"], 1);
        assert!(validate("ReplicationController", &rc, None).is_empty());
        rc["spec"]["selector"] = json!({"app": "y"});
        assert_eq!(
            msgs(&validate("ReplicationController", &rc, None)),
            vec!["spec.template.metadata.labels: Invalid value: map[string]string{\"app\":\"x\"}: `selector` does not match template `labels`"]
        );
    }

    #[test]
    fn limit_range_defaults() {
        let mut lr = json!({"spec": {"limits": [{"type": "Container", "max": {"cpu": "2"}, "min": {"memory": "1Mi"}}]}});
        default("LimitRange", &mut lr);
        assert_eq!(lr["spec"]["limits"][0]["default"], json!({"cpu": "2"}));
        assert_eq!(
            lr["spec"]["limits"][0]["defaultRequest"],
            json!({"cpu": "2", "memory": "1Mi"})
        );
    }
}
