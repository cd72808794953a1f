//! Pods and pod templates: upstream's `SetDefaults_Pod`/`SetDefaults_PodSpec`/`SetDefaults_Container`
//! (and the volume, probe and port defaulters), and `ValidatePodSpec` with its container, port,
//! env, volume, probe and resource checks, `ValidatePodUpdate`'s mutable-field rule and
//! `ValidatePodTemplateSpec` for the workload kinds.

use crate::meta::{validate_annotations, validate_labels};
use crate::util::*;
use apimachinery::errors::Path;
use serde_json::{json, Value};
use std::collections::{BTreeSet, HashSet};

// ---------------------------------------------------------------------------------------------
// Defaults

/// Defaults of a whole Pod: `SetDefaults_Pod` (requests from limits, enableServiceLinks,
/// hostNetwork host ports) plus the pod-spec defaults.
pub(crate) fn default_pod(pod: &mut Value) {
    let Some(spec) = ensure_obj(pod, "spec") else {
        return;
    };
    for key in ["containers", "initContainers"] {
        for c in items_mut(spec, key) {
            default_requests_from_limits(c);
        }
    }
    default_field(spec, "enableServiceLinks", json!(true));
    if boolean(spec, "hostNetwork") {
        for key in ["containers", "initContainers"] {
            for c in items_mut(spec, key) {
                for p in items_mut(c, "ports") {
                    if int(p, "hostPort").unwrap_or(0) == 0 {
                        let cp = int(p, "containerPort").unwrap_or(0);
                        p["hostPort"] = json!(cp);
                    }
                }
            }
        }
    }
    default_pod_spec(spec);
}

fn default_requests_from_limits(c: &mut Value) {
    let Some(limits) = obj(c, "resources")
        .and_then(|r| r.get("limits"))
        .and_then(Value::as_object)
        .cloned()
    else {
        return;
    };
    let Some(res) = ensure_obj(c, "resources") else {
        return;
    };
    let Some(req) = ensure_obj(res, "requests").and_then(Value::as_object_mut) else {
        return;
    };
    for (k, v) in limits {
        req.entry(k).or_insert(v);
    }
}

/// Defaults of a template's `metadata` + `spec` (workloads apply only the pod-spec defaults).
pub(crate) fn default_pod_template(template: &mut Value) {
    if let Some(spec) = ensure_obj(template, "spec") {
        default_pod_spec(spec);
    }
}

/// `SetDefaults_PodSpec` and everything nested in a pod spec.
pub(crate) fn default_pod_spec(spec: &mut Value) {
    default_str(spec, "dnsPolicy", "ClusterFirst");
    default_str(spec, "restartPolicy", "Always");
    default_field(spec, "securityContext", json!({}));
    default_field(spec, "terminationGracePeriodSeconds", json!(30));
    default_str(spec, "schedulerName", "default-scheduler");
    for v in items_mut(spec, "volumes") {
        default_volume(v);
    }
    for key in ["containers", "initContainers", "ephemeralContainers"] {
        for c in items_mut(spec, key) {
            default_container(c);
        }
    }
}

/// The tag `ParseImageName` reports: the part after the last ':' of the last path component,
/// "latest" when there is neither tag nor digest.
fn image_tag(image: &str) -> Option<&str> {
    let (name, digest) = match image.split_once('@') {
        Some((n, d)) => (n, Some(d)),
        None => (image, None),
    };
    let last = name.rsplit('/').next().unwrap_or(name);
    match last.rsplit_once(':') {
        Some((_, tag)) => Some(tag),
        None if digest.is_none() => Some("latest"),
        None => None,
    }
}

fn default_container(c: &mut Value) {
    if unset_str(c, "imagePullPolicy") {
        let policy = if image_tag(st(c, "image")) == Some("latest") {
            "Always"
        } else {
            "IfNotPresent"
        };
        c["imagePullPolicy"] = json!(policy);
    }
    default_str(c, "terminationMessagePath", "/dev/termination-log");
    default_str(c, "terminationMessagePolicy", "File");
    default_field(c, "resources", json!({}));
    for p in items_mut(c, "ports") {
        default_str(p, "protocol", "TCP");
    }
    for e in items_mut(c, "env") {
        if let Some(fr) = child_mut(e, "valueFrom").and_then(|vf| child_mut(vf, "fieldRef")) {
            default_str(fr, "apiVersion", "v1");
        }
    }
    for key in ["livenessProbe", "readinessProbe", "startupProbe"] {
        if let Some(p) = child_mut(c, key) {
            default_nonzero(p, "timeoutSeconds", 1);
            default_nonzero(p, "periodSeconds", 10);
            default_nonzero(p, "successThreshold", 1);
            default_nonzero(p, "failureThreshold", 3);
            default_handler(p);
        }
    }
    if let Some(l) = child_mut(c, "lifecycle") {
        for key in ["postStart", "preStop"] {
            if let Some(h) = child_mut(l, key) {
                default_handler(h);
            }
        }
    }
}

fn default_handler(h: &mut Value) {
    if let Some(g) = child_mut(h, "httpGet") {
        default_str(g, "path", "/");
        default_str(g, "scheme", "HTTP");
    }
    if let Some(g) = child_mut(h, "grpc") {
        default_field(g, "service", json!(""));
    }
}

const VOLUME_TYPES: &[&str] = &[
    "hostPath",
    "emptyDir",
    "gcePersistentDisk",
    "awsElasticBlockStore",
    "gitRepo",
    "secret",
    "nfs",
    "iscsi",
    "glusterfs",
    "persistentVolumeClaim",
    "rbd",
    "flexVolume",
    "cinder",
    "cephfs",
    "flocker",
    "downwardAPI",
    "fc",
    "azureFile",
    "configMap",
    "vsphereVolume",
    "quobyte",
    "azureDisk",
    "photonPersistentDisk",
    "projected",
    "portworxVolume",
    "scaleIO",
    "storageos",
    "csi",
    "ephemeral",
    "image",
];

/// `SetDefaults_Volume` and the per-source defaulters.
pub(crate) fn default_volume(v: &mut Value) {
    if !VOLUME_TYPES.iter().any(|t| get(v, t).is_some()) {
        v["emptyDir"] = json!({});
    }
    if let Some(s) = child_mut(v, "secret") {
        default_field(s, "defaultMode", json!(420));
    }
    if let Some(s) = child_mut(v, "configMap") {
        default_field(s, "defaultMode", json!(420));
    }
    if let Some(s) = child_mut(v, "downwardAPI") {
        default_field(s, "defaultMode", json!(420));
        for item in items_mut(s, "items") {
            if let Some(fr) = child_mut(item, "fieldRef") {
                default_str(fr, "apiVersion", "v1");
            }
        }
    }
    if let Some(s) = child_mut(v, "projected") {
        default_field(s, "defaultMode", json!(420));
        for src in items_mut(s, "sources") {
            if let Some(t) = child_mut(src, "serviceAccountToken") {
                default_field(t, "expirationSeconds", json!(3600));
            }
            if let Some(d) = child_mut(src, "downwardAPI") {
                for item in items_mut(d, "items") {
                    if let Some(fr) = child_mut(item, "fieldRef") {
                        default_str(fr, "apiVersion", "v1");
                    }
                }
            }
        }
    }
    if let Some(s) = child_mut(v, "hostPath") {
        default_field(s, "type", json!(""));
    }
    if let Some(s) = child_mut(v, "iscsi") {
        default_str(s, "iscsiInterface", "default");
    }
    if let Some(s) = child_mut(v, "rbd") {
        default_str(s, "pool", "rbd");
        default_str(s, "user", "admin");
        default_str(s, "keyring", "/etc/ceph/keyring");
    }
    if let Some(s) = child_mut(v, "azureDisk") {
        default_field(s, "cachingMode", json!("ReadWrite"));
        default_field(s, "fsType", json!("ext4"));
        default_field(s, "readOnly", json!(false));
        default_field(s, "kind", json!("Shared"));
    }
    if let Some(s) = child_mut(v, "ephemeral")
        .and_then(|e| child_mut(e, "volumeClaimTemplate"))
        .and_then(|t| child_mut(t, "spec"))
    {
        default_str(s, "volumeMode", "Filesystem");
    }
}

// ---------------------------------------------------------------------------------------------
// Validation

const FILE_MODE_ERR: &str = "must be a number between 0 and 0777 (octal), both inclusive";

/// What a pod spec's containers may refer to.
struct PodCtx {
    volumes: HashSet<String>,
}

/// `ValidatePodCreate`: metadata is checked by the caller.
pub(crate) fn validate_pod(pod: &Value) -> Errs {
    let empty = json!({});
    let spec = pod.get("spec").unwrap_or(&empty);
    let path = Path::new("spec");
    let mut errs = validate_pod_spec(spec, &path);
    if !arr(spec, "ephemeralContainers").is_empty() {
        errs.push(forbidden(
            &path.child("ephemeralContainers"),
            "cannot be set on create",
        ));
    }
    errs
}

/// `ValidatePodTemplateSpec` at `path` (e.g. `spec.template`).
pub(crate) fn validate_pod_template(template: &Value, path: &Path) -> Errs {
    let empty = json!({});
    let meta_path = path.child("metadata");
    let meta = template.get("metadata").unwrap_or(&empty);
    let mut errs = validate_labels(&str_map(meta, "labels"), &meta_path.child("labels"));
    errs.extend(validate_annotations(
        &str_map(meta, "annotations"),
        &meta_path.child("annotations"),
    ));
    let spec = template.get("spec").unwrap_or(&empty);
    let spec_path = path.child("spec");
    errs.extend(validate_pod_spec(spec, &spec_path));
    if !arr(spec, "ephemeralContainers").is_empty() {
        errs.push(forbidden(
            &spec_path.child("ephemeralContainers"),
            "ephemeral containers not allowed in pod template",
        ));
    }
    errs
}

/// `ValidatePodSpec`, in upstream's order.
pub(crate) fn validate_pod_spec(spec: &Value, path: &Path) -> Errs {
    let (mut errs, volumes) = validate_volumes(arr(spec, "volumes"), &path.child("volumes"));
    let ctx = PodCtx { volumes };
    errs.extend(validate_init_containers(
        spec,
        &ctx,
        &path.child("initContainers"),
    ));
    errs.extend(validate_containers(spec, &ctx, &path.child("containers")));
    errs.extend(validate_host_network_deps(spec, path));
    let rp = st(spec, "restartPolicy");
    match rp {
        "Always" | "OnFailure" | "Never" => {}
        "" => errs.push(required(&path.child("restartPolicy"))),
        _ => errs.push(not_supported(
            &path.child("restartPolicy"),
            rp,
            &["Always", "OnFailure", "Never"],
        )),
    }
    let dp = st(spec, "dnsPolicy");
    match dp {
        "ClusterFirstWithHostNet" | "ClusterFirst" | "Default" | "None" => {}
        "" => errs.push(required(&path.child("dnsPolicy"))),
        _ => errs.push(not_supported(
            &path.child("dnsPolicy"),
            dp,
            &["ClusterFirstWithHostNet", "ClusterFirst", "Default", "None"],
        )),
    }
    errs.extend(validate_labels(
        &str_map(spec, "nodeSelector"),
        &path.child("nodeSelector"),
    ));
    errs.extend(validate_pod_security_context(
        spec,
        &path.child("securityContext"),
    ));
    for (i, s) in arr(spec, "imagePullSecrets").iter().enumerate() {
        if unset_str(s, "name") {
            errs.push(required(
                &path.child("imagePullSecrets").index(i).child("name"),
            ));
        }
    }
    errs.extend(validate_dns_config(spec, &path.child("dnsConfig")));
    for (i, g) in arr(spec, "readinessGates").iter().enumerate() {
        let ct = st(g, "conditionType");
        errs.extend(is_qualified_name(ct).into_iter().map(|m| {
            invalid(
                &path.child("readinessGates").index(i).child("conditionType"),
                ct,
                &m,
            )
        }));
    }
    let sa = st(spec, "serviceAccountName");
    if !sa.is_empty() {
        errs.extend(
            is_dns1123_subdomain(sa)
                .into_iter()
                .map(|m| invalid(&path.child("serviceAccountName"), sa, &m)),
        );
    }
    let node = st(spec, "nodeName");
    if !node.is_empty() {
        errs.extend(
            is_dns1123_subdomain(node)
                .into_iter()
                .map(|m| invalid(&path.child("nodeName"), node, &m)),
        );
    }
    if let Some(ads) = int(spec, "activeDeadlineSeconds") {
        if !(1..=i64::from(i32::MAX)).contains(&ads) {
            errs.push(invalid(
                &path.child("activeDeadlineSeconds"),
                ads,
                &inclusive_range_error(1, i64::from(i32::MAX)),
            ));
        }
    }
    for key in ["hostname", "subdomain"] {
        let v = st(spec, key);
        if !v.is_empty() {
            errs.extend(validate_dns1123_label(v, &path.child(key)));
        }
    }
    errs.extend(validate_tolerations(
        arr(spec, "tolerations"),
        &path.child("tolerations"),
    ));
    for (i, ha) in arr(spec, "hostAliases").iter().enumerate() {
        let p = path.child("hostAliases").index(i);
        let ip = st(ha, "ip");
        if !is_valid_ip(ip) {
            errs.push(invalid(
                &p.child("ip"),
                ip,
                "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)",
            ));
        }
        for (j, h) in arr(ha, "hostnames").iter().enumerate() {
            let h = h.as_str().unwrap_or("");
            errs.extend(validate_dns1123_subdomain(
                h,
                &p.child("hostnames").index(j),
            ));
        }
    }
    let pc = st(spec, "priorityClassName");
    if !pc.is_empty() {
        errs.extend(
            is_dns1123_subdomain(pc)
                .into_iter()
                .map(|m| invalid(&path.child("priorityClassName"), pc, &m)),
        );
    }
    if let Some(rc) = get(spec, "runtimeClassName").and_then(Value::as_str) {
        errs.extend(
            is_dns1123_subdomain(rc)
                .into_iter()
                .map(|m| invalid(&path.child("runtimeClassName"), rc, &m)),
        );
    }
    if let Some(pp) = get(spec, "preemptionPolicy").and_then(Value::as_str) {
        if !matches!(pp, "PreemptLowerPriority" | "Never") {
            errs.push(not_supported(
                &path.child("preemptionPolicy"),
                pp,
                &["Never", "PreemptLowerPriority"],
            ));
        }
    }
    if let Some(os) = get(spec, "os") {
        let name = st(os, "name");
        if name.is_empty() {
            errs.push(required(&path.child("os").child("name")));
        } else if !matches!(name, "linux" | "windows") {
            errs.push(not_supported(
                &path.child("os").child("name"),
                name,
                &["linux", "windows"],
            ));
        }
    }
    let mut gates = HashSet::new();
    for (i, g) in arr(spec, "schedulingGates").iter().enumerate() {
        let n = st(g, "name");
        let p = path.child("schedulingGates").index(i);
        errs.extend(is_qualified_name(n).into_iter().map(|m| invalid(&p, n, &m)));
        if !gates.insert(n) {
            errs.push(duplicate(&p, n));
        }
    }
    errs
}

fn validate_volumes(volumes: &[Value], path: &Path) -> (Errs, HashSet<String>) {
    let mut errs = Errs::new();
    let mut names = HashSet::new();
    for (i, v) in volumes.iter().enumerate() {
        let p = path.index(i);
        let name = st(v, "name");
        let mut el = validate_volume_source(v, &p);
        if name.is_empty() {
            el.push(required(&p.child("name")));
        } else {
            el.extend(validate_dns1123_label(name, &p.child("name")));
        }
        if names.contains(name) {
            el.push(duplicate(&p.child("name"), name));
        }
        if el.is_empty() {
            names.insert(name.to_string());
        } else {
            errs.extend(el);
        }
    }
    (errs, names)
}

fn validate_mode(src: &Value, key: &str, path: &Path) -> Errs {
    match int(src, key) {
        Some(m) if !(0..=0o777).contains(&m) => vec![invalid(&path.child(key), m, FILE_MODE_ERR)],
        _ => Vec::new(),
    }
}

fn validate_key_to_paths(src: &Value, path: &Path) -> Errs {
    let mut errs = Errs::new();
    for (i, item) in arr(src, "items").iter().enumerate() {
        let p = path.child("items").index(i);
        if unset_str(item, "key") {
            errs.push(required(&p.child("key")));
        }
        let ip = st(item, "path");
        if ip.is_empty() {
            errs.push(required(&p.child("path")));
        } else {
            errs.extend(validate_local_descending_path(ip, &p.child("path")));
        }
        errs.extend(validate_mode(item, "mode", &p));
    }
    errs
}

fn validate_local_descending_path(target: &str, path: &Path) -> Errs {
    let mut errs = Errs::new();
    if target.starts_with('/') {
        errs.push(invalid(path, target, "must be a relative path"));
    }
    if target.split('/').any(|seg| seg == "..") {
        errs.push(invalid(path, target, "must not contain '..'"));
    }
    errs
}

fn validate_volume_source(v: &Value, path: &Path) -> Errs {
    let mut errs = Errs::new();
    let present: Vec<&str> = VOLUME_TYPES
        .iter()
        .copied()
        .filter(|t| get(v, t).is_some())
        .collect();
    if present.is_empty() {
        return vec![required_d(path, "must specify a volume type")];
    }
    for t in &present[1..] {
        errs.push(forbidden(
            &path.child(t),
            "may not specify more than 1 volume type",
        ));
    }
    let t = present[0];
    let src = &v[t];
    let p = path.child(t);
    match t {
        "hostPath" => {
            if unset_str(src, "path") {
                errs.push(required(&p.child("path")));
            }
            let ty = st(src, "type");
            let ok = [
                "",
                "DirectoryOrCreate",
                "Directory",
                "FileOrCreate",
                "File",
                "Socket",
                "CharDevice",
                "BlockDevice",
            ];
            if !ok.contains(&ty) {
                errs.push(not_supported(&p.child("type"), ty, &ok));
            }
        }
        "emptyDir" => {
            if let Some(m) = get(src, "medium").and_then(Value::as_str) {
                if !matches!(m, "" | "Memory") && !m.starts_with("HugePages") {
                    errs.push(not_supported(
                        &p.child("medium"),
                        m,
                        &["", "Memory", "HugePages"],
                    ));
                }
            }
            if let Some(sl) = get(src, "sizeLimit") {
                if parse_quantity(sl).is_some_and(|q| q < 0.0) {
                    errs.push(forbidden(
                        &p.child("sizeLimit"),
                        "SizeLimit field must be a valid resource quantity",
                    ));
                }
            }
        }
        "secret" => {
            if unset_str(src, "secretName") {
                errs.push(required(&p.child("secretName")));
            }
            errs.extend(validate_mode(src, "defaultMode", &p));
            errs.extend(validate_key_to_paths(src, &p));
        }
        "configMap" => {
            let name = st(src, "name");
            if name.is_empty() {
                errs.push(required(&p.child("name")));
            } else {
                errs.extend(
                    is_dns1123_subdomain(name)
                        .into_iter()
                        .map(|m| invalid(&p.child("name"), name, &m)),
                );
            }
            errs.extend(validate_mode(src, "defaultMode", &p));
            errs.extend(validate_key_to_paths(src, &p));
        }
        "persistentVolumeClaim" if unset_str(src, "claimName") => {
            errs.push(required(&p.child("claimName")))
        }
        "nfs" => {
            if unset_str(src, "server") {
                errs.push(required(&p.child("server")));
            }
            let np = st(src, "path");
            if np.is_empty() {
                errs.push(required(&p.child("path")));
            } else if !np.starts_with('/') {
                errs.push(invalid(&p.child("path"), np, "must be an absolute path"));
            }
        }
        "csi" => {
            let d = st(src, "driver");
            if d.is_empty() {
                errs.push(required(&p.child("driver")));
            }
        }
        "downwardAPI" => {
            errs.extend(validate_mode(src, "defaultMode", &p));
            for (i, item) in arr(src, "items").iter().enumerate() {
                let ip = p.child("items").index(i);
                let fp = st(item, "path");
                if fp.is_empty() {
                    errs.push(required(&ip.child("path")));
                } else {
                    errs.extend(validate_local_descending_path(fp, &ip.child("path")));
                }
                errs.extend(validate_mode(item, "mode", &ip));
            }
        }
        "projected" => {
            errs.extend(validate_mode(src, "defaultMode", &p));
            for (i, s) in arr(src, "sources").iter().enumerate() {
                let sp = p.child("sources").index(i);
                let kinds = [
                    "secret",
                    "downwardAPI",
                    "configMap",
                    "serviceAccountToken",
                    "clusterTrustBundle",
                    "podCertificate",
                ];
                let n = kinds.iter().filter(|k| get(s, k).is_some()).count();
                if n > 1 {
                    errs.push(forbidden(
                        &sp,
                        "may not specify more than 1 volume type per source",
                    ));
                }
                if let Some(t) = get(s, "serviceAccountToken") {
                    let tp = sp.child("serviceAccountToken");
                    if let Some(e) = int(t, "expirationSeconds") {
                        if e < 600 {
                            errs.push(invalid(
                                &tp.child("expirationSeconds"),
                                e,
                                "may not specify a duration less than 10 minutes",
                            ));
                        } else if e > 1 << 32 {
                            errs.push(invalid(
                                &tp.child("expirationSeconds"),
                                e,
                                "may not specify a duration larger than 2^32 seconds",
                            ));
                        }
                    }
                    if unset_str(t, "path") {
                        errs.push(required(&tp.child("path")));
                    }
                }
                for k in ["secret", "configMap"] {
                    if let Some(x) = get(s, k) {
                        errs.extend(validate_key_to_paths(x, &sp.child(k)));
                    }
                }
            }
        }
        _ => {}
    }
    errs
}

fn validate_init_containers(spec: &Value, ctx: &PodCtx, path: &Path) -> Errs {
    let mut errs = Errs::new();
    let mut names: HashSet<&str> = arr(spec, "containers")
        .iter()
        .map(|c| st(c, "name"))
        .collect();
    for (i, c) in arr(spec, "initContainers").iter().enumerate() {
        let p = path.index(i);
        errs.extend(validate_container_common(c, ctx, &p));
        let mut restart_always = false;
        if let Some(rp) = get(c, "restartPolicy").and_then(Value::as_str) {
            if rp == "Always" {
                restart_always = true;
            } else {
                errs.push(not_supported(&p.child("restartPolicy"), rp, &["Always"]));
            }
        }
        let name = st(c, "name");
        if names.contains(name) {
            errs.push(duplicate(&p.child("name"), name));
        } else if !name.is_empty() {
            names.insert(name);
        }
        errs.extend(check_host_port_conflicts(
            std::slice::from_ref(c),
            path,
            Some(i),
        ));
        if restart_always {
            errs.extend(validate_lifecycle_and_probes(c, &p));
        } else {
            for key in [
                "lifecycle",
                "livenessProbe",
                "readinessProbe",
                "startupProbe",
            ] {
                if get(c, key).is_some() {
                    errs.push(forbidden(
                        &p.child(key),
                        "may not be set for init containers without restartPolicy=Always",
                    ));
                }
            }
        }
    }
    errs
}

fn validate_containers(spec: &Value, ctx: &PodCtx, path: &Path) -> Errs {
    let containers = arr(spec, "containers");
    if containers.is_empty() {
        return vec![required(path)];
    }
    let mut errs = Errs::new();
    let mut names = HashSet::new();
    for (i, c) in containers.iter().enumerate() {
        let p = path.index(i);
        errs.extend(validate_container_common(c, ctx, &p));
        let name = st(c, "name");
        if !names.insert(name) {
            errs.push(duplicate(&p.child("name"), name));
        }
        errs.extend(validate_lifecycle_and_probes(c, &p));
        if get(c, "restartPolicy").is_some() {
            errs.push(forbidden(
                &p.child("restartPolicy"),
                "may not be set for non-init containers",
            ));
        }
    }
    errs.extend(check_host_port_conflicts(containers, path, None));
    errs
}

fn validate_lifecycle_and_probes(c: &Value, p: &Path) -> Errs {
    let mut errs = Errs::new();
    if let Some(l) = get(c, "lifecycle") {
        for key in ["postStart", "preStop"] {
            if let Some(h) = get(l, key) {
                errs.extend(validate_handler(h, &p.child("lifecycle").child(key), true));
            }
        }
    }
    for key in ["livenessProbe", "readinessProbe", "startupProbe"] {
        let Some(probe) = get(c, key) else { continue };
        let pp = p.child(key);
        errs.extend(validate_probe(probe, &pp));
        if key == "readinessProbe" {
            if get(probe, "terminationGracePeriodSeconds").is_some() {
                errs.push(invalid(
                    &pp.child("terminationGracePeriodSeconds"),
                    probe["terminationGracePeriodSeconds"].clone(),
                    "must not be set for readinessProbes",
                ));
            }
        } else if let Some(s) = int(probe, "successThreshold") {
            if s != 1 {
                errs.push(invalid(&pp.child("successThreshold"), s, "must be 1"));
            }
        }
    }
    errs
}

fn validate_probe(probe: &Value, path: &Path) -> Errs {
    let mut errs = validate_handler(probe, path, false);
    for key in [
        "initialDelaySeconds",
        "timeoutSeconds",
        "periodSeconds",
        "successThreshold",
        "failureThreshold",
    ] {
        errs.extend(validate_nonnegative(probe, key, path));
    }
    if let Some(t) = int(probe, "terminationGracePeriodSeconds") {
        if t <= 0 {
            errs.push(invalid(
                &path.child("terminationGracePeriodSeconds"),
                t,
                "must be greater than 0",
            ));
        }
    }
    errs
}

fn validate_handler(h: &Value, path: &Path, lifecycle: bool) -> Errs {
    let kinds: &[&str] = if lifecycle {
        &["exec", "httpGet", "tcpSocket", "sleep"]
    } else {
        &["exec", "httpGet", "tcpSocket", "grpc"]
    };
    let mut errs = Errs::new();
    let mut n = 0;
    for k in kinds {
        let Some(x) = get(h, k) else { continue };
        n += 1;
        if n > 1 {
            errs.push(forbidden(
                &path.child(k),
                "may not specify more than 1 handler type",
            ));
            continue;
        }
        let p = path.child(k);
        match *k {
            "exec" if arr(x, "command").is_empty() => errs.push(required(&p.child("command"))),
            "httpGet" => {
                if unset_str(x, "path") {
                    errs.push(required(&p.child("path")));
                }
                errs.extend(validate_port_num_or_name(get(x, "port"), &p.child("port")));
                let scheme = st(x, "scheme");
                if !matches!(scheme, "HTTP" | "HTTPS") {
                    errs.push(not_supported(
                        &p.child("scheme"),
                        scheme,
                        &["HTTP", "HTTPS"],
                    ));
                }
            }
            "tcpSocket" => errs.extend(validate_port_num_or_name(get(x, "port"), &p.child("port"))),
            "grpc" => {
                let port = int(x, "port").unwrap_or(0);
                errs.extend(
                    is_valid_port_num(port)
                        .into_iter()
                        .map(|m| invalid(&p.child("port"), port, &m)),
                );
            }
            "sleep" => {
                let s = int(x, "seconds").unwrap_or(0);
                if s < 0 {
                    errs.push(invalid(&p.child("seconds"), s, "must be non-negative"));
                }
            }
            _ => {}
        }
    }
    if n == 0 {
        errs.push(required_d(path, "must specify a handler type"));
    }
    errs
}

fn validate_container_common(c: &Value, ctx: &PodCtx, path: &Path) -> Errs {
    let mut errs = Errs::new();
    let name = st(c, "name");
    if name.is_empty() {
        errs.push(required(&path.child("name")));
    } else {
        errs.extend(validate_dns1123_label(name, &path.child("name")));
    }
    if unset_str(c, "image") {
        errs.push(required(&path.child("image")));
    }
    let tmp = st(c, "terminationMessagePolicy");
    match tmp {
        "File" | "FallbackToLogsOnError" => {}
        "" => errs.push(required(&path.child("terminationMessagePolicy"))),
        _ => errs.push(not_supported(
            &path.child("terminationMessagePolicy"),
            tmp,
            &["File", "FallbackToLogsOnError"],
        )),
    }
    errs.extend(validate_container_ports(
        arr(c, "ports"),
        &path.child("ports"),
    ));
    errs.extend(validate_env(arr(c, "env"), &path.child("env")));
    errs.extend(validate_env_from(arr(c, "envFrom"), &path.child("envFrom")));
    errs.extend(validate_volume_mounts(c, ctx, &path.child("volumeMounts")));
    let pp = st(c, "imagePullPolicy");
    match pp {
        "Always" | "IfNotPresent" | "Never" => {}
        "" => errs.push(required(&path.child("imagePullPolicy"))),
        _ => errs.push(not_supported(
            &path.child("imagePullPolicy"),
            pp,
            &["Always", "IfNotPresent", "Never"],
        )),
    }
    if let Some(r) = get(c, "resources") {
        errs.extend(validate_resource_requirements(r, &path.child("resources")));
    }
    if let Some(sc) = get(c, "securityContext") {
        errs.extend(validate_security_context(
            sc,
            &path.child("securityContext"),
        ));
    }
    errs
}

fn validate_container_ports(ports: &[Value], path: &Path) -> Errs {
    let mut errs = Errs::new();
    let mut names = HashSet::new();
    for (i, port) in ports.iter().enumerate() {
        let p = path.index(i);
        let name = st(port, "name");
        if !name.is_empty() {
            let msgs = is_valid_port_name(name);
            if !msgs.is_empty() {
                errs.extend(
                    msgs.into_iter()
                        .map(|m| invalid(&p.child("name"), name, &m)),
                );
            } else if !names.insert(name) {
                errs.push(duplicate(&p.child("name"), name));
            }
        }
        let cp = int(port, "containerPort").unwrap_or(0);
        if cp == 0 {
            errs.push(required(&p.child("containerPort")));
        } else {
            errs.extend(
                is_valid_port_num(cp)
                    .into_iter()
                    .map(|m| invalid(&p.child("containerPort"), cp, &m)),
            );
        }
        let hp = int(port, "hostPort").unwrap_or(0);
        if hp != 0 {
            errs.extend(
                is_valid_port_num(hp)
                    .into_iter()
                    .map(|m| invalid(&p.child("hostPort"), hp, &m)),
            );
        }
        errs.extend(validate_protocol(
            st(port, "protocol"),
            &p.child("protocol"),
        ));
    }
    errs
}

pub(crate) fn validate_protocol(proto: &str, path: &Path) -> Errs {
    match proto {
        "TCP" | "UDP" | "SCTP" => Vec::new(),
        "" => vec![required(path)],
        _ => vec![not_supported(path, proto, &["SCTP", "TCP", "UDP"])],
    }
}

fn check_host_port_conflicts(
    containers: &[Value],
    path: &Path,
    index_offset: Option<usize>,
) -> Errs {
    let mut errs = Errs::new();
    let mut seen = HashSet::new();
    for (ci, c) in containers.iter().enumerate() {
        let ci = index_offset.unwrap_or(ci);
        for (pi, port) in arr(c, "ports").iter().enumerate() {
            let hp = int(port, "hostPort").unwrap_or(0);
            if hp == 0 {
                continue;
            }
            let key = format!("{}/{}/{}", st(port, "protocol"), st(port, "hostIP"), hp);
            if !seen.insert(key.clone()) {
                errs.push(duplicate(
                    &path.index(ci).child("ports").index(pi).child("hostPort"),
                    key,
                ));
            }
        }
    }
    errs
}

fn validate_host_network_deps(spec: &Value, path: &Path) -> Errs {
    let mut errs = Errs::new();
    if !boolean(spec, "hostNetwork") {
        return errs;
    }
    for key in ["containers", "initContainers"] {
        for (i, c) in arr(spec, key).iter().enumerate() {
            for (j, port) in arr(c, "ports").iter().enumerate() {
                let hp = int(port, "hostPort").unwrap_or(0);
                if hp != int(port, "containerPort").unwrap_or(0) {
                    errs.push(invalid(
                        &path
                            .child(key)
                            .index(i)
                            .child("ports")
                            .index(j)
                            .child("hostPort"),
                        hp,
                        "must match `containerPort` when `hostNetwork` is true",
                    ));
                }
            }
        }
    }
    errs
}

const FIELD_REF_PATHS: &[&str] = &[
    "metadata.annotations",
    "metadata.labels",
    "metadata.name",
    "metadata.namespace",
    "metadata.uid",
    "spec.nodeName",
    "spec.serviceAccountName",
    "status.hostIP",
    "status.hostIPs",
    "status.podIP",
    "status.podIPs",
];

fn validate_env(env: &[Value], path: &Path) -> Errs {
    let mut errs = Errs::new();
    for (i, ev) in env.iter().enumerate() {
        let p = path.index(i);
        let name = st(ev, "name");
        if name.is_empty() {
            errs.push(required(&p.child("name")));
        } else {
            errs.extend(
                is_relaxed_env_var_name(name)
                    .into_iter()
                    .map(|m| invalid(&p.child("name"), name, &m)),
            );
        }
        if let Some(vf) = get(ev, "valueFrom") {
            errs.extend(validate_env_value_from(ev, vf, &p.child("valueFrom")));
        }
    }
    errs
}

fn validate_env_value_from(ev: &Value, vf: &Value, path: &Path) -> Errs {
    let mut errs = Errs::new();
    let mut n = 0;
    if let Some(fr) = get(vf, "fieldRef") {
        n += 1;
        let p = path.child("fieldRef");
        let av = st(fr, "apiVersion");
        let fp = st(fr, "fieldPath");
        if av.is_empty() {
            errs.push(required(&p.child("apiVersion")));
        } else if fp.is_empty() {
            errs.push(required(&p.child("fieldPath")));
        } else {
            let base = fp.split_once('[').map_or(fp, |(b, _)| b);
            let subscripted = fp.contains('[');
            let ok = if subscripted {
                matches!(base, "metadata.annotations" | "metadata.labels") && fp.ends_with(']')
            } else {
                FIELD_REF_PATHS.contains(&fp)
                    && !matches!(fp, "metadata.annotations" | "metadata.labels")
            };
            if !ok {
                let supported: Vec<&str> = FIELD_REF_PATHS
                    .iter()
                    .copied()
                    .filter(|x| !matches!(*x, "metadata.annotations" | "metadata.labels"))
                    .collect();
                errs.push(not_supported(&p.child("fieldPath"), fp, &supported));
            }
        }
    }
    if let Some(rf) = get(vf, "resourceFieldRef") {
        n += 1;
        let r = st(rf, "resource");
        let p = path.child("resourceFieldRef");
        if r.is_empty() {
            errs.push(required(&p.child("resource")));
        } else {
            let ok = [
                "limits.cpu",
                "limits.memory",
                "limits.ephemeral-storage",
                "requests.cpu",
                "requests.memory",
                "requests.ephemeral-storage",
            ];
            if !ok.contains(&r)
                && !r.starts_with("limits.hugepages-")
                && !r.starts_with("requests.hugepages-")
            {
                errs.push(not_supported(&p.child("resource"), r, &ok));
            }
        }
    }
    for (key, name_key) in [("configMapKeyRef", "name"), ("secretKeyRef", "name")] {
        if let Some(r) = get(vf, key) {
            n += 1;
            let p = path.child(key);
            let name = st(r, name_key);
            if name.is_empty() {
                errs.push(required(&p.child("name")));
            } else {
                errs.extend(
                    is_dns1123_subdomain(name)
                        .into_iter()
                        .map(|m| invalid(&p.child("name"), name, &m)),
                );
            }
            let k = st(r, "key");
            if k.is_empty() {
                errs.push(required(&p.child("key")));
            } else {
                errs.extend(
                    is_config_map_key(k)
                        .into_iter()
                        .map(|m| invalid(&p.child("key"), k, &m)),
                );
            }
        }
    }
    if get(vf, "fileKeyRef").is_some() {
        n += 1;
    }
    if n == 0 {
        errs.push(invalid(path, "", "must specify one of: `fieldRef`, `resourceFieldRef`, `configMapKeyRef` or `secretKeyRef`"));
    } else if !unset_str(ev, "value") {
        errs.push(invalid(
            path,
            "",
            "may not be specified when `value` is not empty",
        ));
    } else if n > 1 {
        errs.push(invalid(
            path,
            "",
            "may not have more than one field specified at a time",
        ));
    }
    errs
}

fn validate_env_from(env_from: &[Value], path: &Path) -> Errs {
    let mut errs = Errs::new();
    for (i, ef) in env_from.iter().enumerate() {
        let p = path.index(i);
        let prefix = st(ef, "prefix");
        if !prefix.is_empty() {
            errs.extend(
                is_relaxed_env_var_name(prefix)
                    .into_iter()
                    .map(|m| invalid(&p.child("prefix"), prefix, &m)),
            );
        }
        let mut n = 0;
        for key in ["configMapRef", "secretRef"] {
            if let Some(r) = get(ef, key) {
                n += 1;
                let name = st(r, "name");
                if name.is_empty() {
                    errs.push(required(&p.child(key).child("name")));
                } else {
                    errs.extend(
                        is_dns1123_subdomain(name)
                            .into_iter()
                            .map(|m| invalid(&p.child(key).child("name"), name, &m)),
                    );
                }
            }
        }
        if n == 0 {
            errs.push(invalid(
                &p,
                "",
                "must specify one of: `configMapRef` or `secretRef`",
            ));
        } else if n > 1 {
            errs.push(invalid(
                &p,
                "",
                "may not have more than one field specified at a time",
            ));
        }
    }
    errs
}

fn validate_volume_mounts(c: &Value, ctx: &PodCtx, path: &Path) -> Errs {
    let mut errs = Errs::new();
    let mut mountpoints = HashSet::new();
    for (i, m) in arr(c, "volumeMounts").iter().enumerate() {
        let p = path.index(i);
        let name = st(m, "name");
        if name.is_empty() {
            errs.push(required(&p.child("name")));
        }
        if !ctx.volumes.contains(name) {
            errs.push(not_found(&p.child("name"), name));
        }
        let mp = st(m, "mountPath");
        if mp.is_empty() {
            errs.push(required(&p.child("mountPath")));
        }
        if !mountpoints.insert(mp) {
            errs.push(invalid(&p.child("mountPath"), mp, "must be unique"));
        }
        let sub = st(m, "subPath");
        if !sub.is_empty() {
            errs.extend(validate_local_descending_path(sub, &path.child("subPath")));
        }
        if get(m, "subPath").is_some()
            && get(m, "subPathExpr").is_some()
            && !sub.is_empty()
            && !unset_str(m, "subPathExpr")
        {
            errs.push(invalid(
                &p.child("subPathExpr"),
                st(m, "subPathExpr"),
                "subPathExpr and subPath are mutually exclusive",
            ));
        }
        if let Some(mpg) = get(m, "mountPropagation").and_then(Value::as_str) {
            if !matches!(mpg, "None" | "HostToContainer" | "Bidirectional") {
                errs.push(not_supported(
                    &p.child("mountPropagation"),
                    mpg,
                    &["Bidirectional", "HostToContainer", "None"],
                ));
            }
        }
    }
    errs
}

const STANDARD_CONTAINER_RESOURCES: &[&str] = &["cpu", "memory", "ephemeral-storage"];

fn validate_container_resource_name(name: &str, path: &Path) -> Errs {
    let mut errs: Errs = is_qualified_name(name)
        .into_iter()
        .map(|m| invalid(path, name, &m))
        .collect();
    if !errs.is_empty() {
        return errs;
    }
    if !name.contains('/') {
        if !STANDARD_CONTAINER_RESOURCES.contains(&name) && !name.starts_with("hugepages-") {
            errs.push(invalid(
                path,
                name,
                "must be a standard resource for containers",
            ));
        }
    } else if !name.contains("kubernetes.io/") && name.starts_with("requests.") {
        errs.push(invalid(
            path,
            name,
            "doesn't follow extended resource name standard",
        ));
    }
    errs
}

fn is_overcommit_allowed(name: &str) -> bool {
    STANDARD_CONTAINER_RESOURCES.contains(&name)
        || (!name.contains('/') && !name.starts_with("hugepages-"))
        || name.starts_with("kubernetes.io/")
}

/// `ValidateContainerResourceRequirements` (requests ≤ limits, extended resources equal).
pub(crate) fn validate_resource_requirements(r: &Value, path: &Path) -> Errs {
    let mut errs = Errs::new();
    let lim_path = path.child("limits");
    let req_path = path.child("requests");
    let limits = obj(r, "limits").cloned().unwrap_or_default();
    let mut lim_keys: Vec<&String> = limits.keys().collect();
    lim_keys.sort();
    for k in lim_keys {
        let p = lim_path.key(k);
        errs.extend(validate_container_resource_name(k, &p));
        errs.extend(validate_quantity_value(k, &limits[k.as_str()], &p));
    }
    let requests = obj(r, "requests").cloned().unwrap_or_default();
    let mut req_keys: Vec<&String> = requests.keys().collect();
    req_keys.sort();
    for k in req_keys {
        let q = &requests[k.as_str()];
        let p = req_path.key(k);
        errs.extend(validate_container_resource_name(k, &p));
        errs.extend(validate_quantity_value(k, q, &p));
        if let Some(l) = limits.get(k.as_str()) {
            let (qv, lv) = (parse_quantity(q), parse_quantity(l));
            if let (Some(qv), Some(lv)) = (qv, lv) {
                if qv != lv && !is_overcommit_allowed(k) {
                    errs.push(invalid(
                        &req_path,
                        quantity_string(q),
                        &format!("must be equal to {k} limit of {}", quantity_string(l)),
                    ));
                } else if qv > lv {
                    errs.push(invalid(
                        &req_path,
                        quantity_string(q),
                        &format!(
                            "must be less than or equal to {k} limit of {}",
                            quantity_string(l)
                        ),
                    ));
                }
            }
        } else if !is_overcommit_allowed(k) {
            errs.push(required_d(
                &lim_path,
                "Limit must be set for non overcommitable resources",
            ));
        }
    }
    errs
}

fn validate_quantity_value(name: &str, q: &Value, path: &Path) -> Errs {
    let mut errs = Errs::new();
    let Some(v) = parse_quantity(q) else {
        return errs;
    };
    if v < 0.0 {
        errs.push(invalid(
            path,
            quantity_string(q),
            "must be greater than or equal to 0",
        ));
    }
    if name != "cpu" && !name.starts_with("requests.cpu") && name.contains('/') && v.fract() != 0.0
    {
        errs.push(invalid(path, quantity_string(q), "must be an integer"));
    }
    errs
}

fn validate_id_range(v: &Value, key: &str, path: &Path) -> Errs {
    match int(v, key) {
        Some(n) if !(0..=i64::from(i32::MAX)).contains(&n) => {
            vec![invalid(
                &path.child(key),
                n,
                &inclusive_range_error(0, i64::from(i32::MAX)),
            )]
        }
        _ => Vec::new(),
    }
}

fn validate_pod_security_context(spec: &Value, path: &Path) -> Errs {
    let mut errs = Errs::new();
    let Some(sc) = get(spec, "securityContext") else {
        return errs;
    };
    for key in ["runAsUser", "runAsGroup", "fsGroup"] {
        errs.extend(validate_id_range(sc, key, path));
    }
    for (i, g) in arr(sc, "supplementalGroups").iter().enumerate() {
        let g = g.as_i64().unwrap_or(0);
        if !(0..=i64::from(i32::MAX)).contains(&g) {
            errs.push(invalid(
                &path.child("supplementalGroups").index(i),
                g,
                &inclusive_range_error(0, i64::from(i32::MAX)),
            ));
        }
    }
    if let Some(p) = get(sc, "fsGroupChangePolicy").and_then(Value::as_str) {
        if !matches!(p, "OnRootMismatch" | "Always") {
            errs.push(not_supported(
                &path.child("fsGroupChangePolicy"),
                p,
                &["OnRootMismatch", "Always"],
            ));
        }
    }
    for (i, s) in arr(sc, "sysctls").iter().enumerate() {
        if unset_str(s, "name") {
            errs.push(required(&path.child("sysctls").index(i).child("name")));
        }
    }
    errs
}

fn validate_security_context(sc: &Value, path: &Path) -> Errs {
    let mut errs = Errs::new();
    for key in ["runAsUser", "runAsGroup"] {
        errs.extend(validate_id_range(sc, key, path));
    }
    if get(sc, "privileged").and_then(Value::as_bool) == Some(true)
        && get(sc, "allowPrivilegeEscalation").and_then(Value::as_bool) == Some(false)
    {
        errs.push(invalid(
            path,
            Value::Null,
            "cannot set `allowPrivilegeEscalation` to false and `privileged` to true",
        ));
    }
    if let Some(pm) = get(sc, "procMount").and_then(Value::as_str) {
        if !matches!(pm, "Default" | "Unmasked") {
            errs.push(not_supported(
                &path.child("procMount"),
                pm,
                &["Default", "Unmasked"],
            ));
        }
    }
    errs
}

fn validate_dns_config(spec: &Value, path: &Path) -> Errs {
    let mut errs = Errs::new();
    let cfg = get(spec, "dnsConfig");
    if st(spec, "dnsPolicy") == "None" {
        match cfg {
            None => errs.push(required_d(
                path,
                "must provide `dnsConfig` when `dnsPolicy` is None",
            )),
            Some(c) if arr(c, "nameservers").is_empty() => errs.push(required_d(
                &path.child("nameservers"),
                "must provide at least one DNS nameserver when `dnsPolicy` is None",
            )),
            _ => {}
        }
    }
    let Some(cfg) = cfg else { return errs };
    let ns = arr(cfg, "nameservers");
    if ns.len() > 3 {
        errs.push(invalid(
            &path.child("nameservers"),
            Value::Array(ns.to_vec()),
            "must not have more than 3 nameservers",
        ));
    }
    for (i, n) in ns.iter().enumerate() {
        let n = n.as_str().unwrap_or("");
        if !is_valid_ip(n) {
            errs.push(invalid(
                &path.child("nameservers").index(i),
                n,
                "must be a valid IP address",
            ));
        }
    }
    let searches = arr(cfg, "searches");
    if searches.len() > 32 {
        errs.push(invalid(
            &path.child("searches"),
            Value::Array(searches.to_vec()),
            "must not have more than 32 search paths",
        ));
    }
    for (i, s) in searches.iter().enumerate() {
        let s = s.as_str().unwrap_or("");
        if s == "." {
            continue;
        }
        let s = s.strip_suffix('.').unwrap_or(s);
        errs.extend(validate_dns1123_subdomain(
            s,
            &path.child("searches").index(i),
        ));
    }
    for (i, o) in arr(cfg, "options").iter().enumerate() {
        if unset_str(o, "name") {
            errs.push(required_d(
                &path.child("options").index(i),
                "Option.Name must not be empty",
            ));
        }
    }
    errs
}

/// `ValidateTolerations`.
pub(crate) fn validate_tolerations(tolerations: &[Value], path: &Path) -> Errs {
    let mut errs = Errs::new();
    for (i, t) in tolerations.iter().enumerate() {
        let p = path.index(i);
        let key = st(t, "key");
        if !key.is_empty() {
            errs.extend(
                is_qualified_name(key)
                    .into_iter()
                    .map(|m| invalid(&p.child("key"), key, &m)),
            );
        }
        let op = st(t, "operator");
        if key.is_empty() && op != "Exists" {
            errs.push(invalid(
                &p.child("operator"),
                op,
                "operator must be Exists when `key` is empty, which means \"match all values and all keys\"",
            ));
        }
        let effect = st(t, "effect");
        if get(t, "tolerationSeconds").is_some() && effect != "NoExecute" {
            errs.push(invalid(
                &p.child("effect"),
                effect,
                "effect must be 'NoExecute' when `tolerationSeconds` is set",
            ));
        }
        match op {
            "" | "Equal" => {
                let v = st(t, "value");
                errs.extend(
                    is_valid_label_value(v)
                        .into_iter()
                        .map(|m| invalid(&p.child("operator"), v, &m)),
                );
            }
            "Exists" => {
                if !unset_str(t, "value") {
                    errs.push(invalid(
                        &p.child("operator"),
                        op,
                        "value must be empty when `operator` is 'Exists'",
                    ));
                }
            }
            _ => errs.push(not_supported(
                &p.child("operator"),
                op,
                &["Equal", "Exists"],
            )),
        }
        if !effect.is_empty() && !matches!(effect, "NoSchedule" | "PreferNoSchedule" | "NoExecute")
        {
            errs.push(not_supported(
                &p.child("effect"),
                effect,
                &["NoSchedule", "PreferNoSchedule", "NoExecute"],
            ));
        }
    }
    errs
}

// ---------------------------------------------------------------------------------------------
// Update

const POD_UPDATE_FORBIDDEN: &str = "pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)";

/// `ValidatePodUpdate` after the metadata checks: the new spec must be valid, and only images,
/// activeDeadlineSeconds (decrease), added tolerations, and the negative-grace fixup may change.
pub(crate) fn validate_pod_update(new: &Value, old: &Value) -> Errs {
    let mut errs = validate_pod_spec(new.get("spec").unwrap_or(&json!({})), &Path::new("spec"));
    let null = Value::Null;
    let new_spec = new.get("spec").unwrap_or(&null);
    let old_spec = old.get("spec").unwrap_or(&null);
    let spec_path = Path::new("spec");

    let ads_path = spec_path.child("activeDeadlineSeconds");
    match (
        int(new_spec, "activeDeadlineSeconds"),
        int(old_spec, "activeDeadlineSeconds"),
    ) {
        (Some(n), _) if !(0..=i64::from(i32::MAX)).contains(&n) => {
            errs.push(invalid(
                &ads_path,
                n,
                &inclusive_range_error(0, i64::from(i32::MAX)),
            ));
            return errs;
        }
        (Some(n), Some(o)) if o < n => {
            errs.push(invalid(
                &ads_path,
                n,
                "must be less than or equal to previous value",
            ));
            return errs;
        }
        (None, Some(_)) => errs.push(invalid(
            &ads_path,
            Value::Null,
            "must not update from a positive integer to nil value",
        )),
        _ => {}
    }

    let old_tol = arr(old_spec, "tolerations");
    let new_tol = arr(new_spec, "tolerations");
    for t in old_tol {
        let kept = new_tol.iter().any(|n| {
            let strip = |v: &Value| {
                let mut v = v.clone();
                if let Some(m) = v.as_object_mut() {
                    m.remove("tolerationSeconds");
                }
                v
            };
            strip(n) == strip(t)
        });
        if !kept {
            errs.push(forbidden(
                &spec_path.child("tolerations"),
                "existing toleration can not be modified except its tolerationSeconds",
            ));
            break;
        }
    }

    let mut munged = new_spec.clone();
    for key in ["containers", "initContainers"] {
        let olds = arr(old_spec, key);
        if let Some(list) = munged.get_mut(key).and_then(Value::as_array_mut) {
            if list.len() == olds.len() {
                for (c, o) in list.iter_mut().zip(olds) {
                    if let Some(m) = c.as_object_mut() {
                        match o.get("image") {
                            Some(img) => m.insert("image".into(), img.clone()),
                            None => m.remove("image"),
                        };
                    }
                }
            }
        }
    }
    if let Some(m) = munged.as_object_mut() {
        for key in [
            "activeDeadlineSeconds",
            "tolerations",
            "ephemeralContainers",
        ] {
            match old_spec.get(key) {
                Some(v) => m.insert(key.into(), v.clone()),
                None => m.remove(key),
            };
        }
        let old_grace = int(old_spec, "terminationGracePeriodSeconds");
        if old_grace.is_some_and(|g| g < 0)
            && int(new_spec, "terminationGracePeriodSeconds") == Some(1)
        {
            m.insert("terminationGracePeriodSeconds".into(), json!(old_grace));
        }
    }
    if &munged != old_spec {
        errs.push(forbidden(
            &spec_path,
            &format!("{POD_UPDATE_FORBIDDEN}\n{}", spec_diff(old_spec, &munged)),
        ));
    }
    errs
}

/// A short description of which top-level spec fields differ (upstream prints a `cmp.Diff`).
fn spec_diff(old: &Value, new: &Value) -> String {
    let empty = serde_json::Map::new();
    let o = old.as_object().unwrap_or(&empty);
    let n = new.as_object().unwrap_or(&empty);
    let keys: BTreeSet<&String> = o.keys().chain(n.keys()).collect();
    let mut out = String::from("  core.PodSpec{\n");
    for k in keys {
        let (a, b) = (o.get(k.as_str()), n.get(k.as_str()));
        if a != b {
            if let Some(a) = a {
                out.push_str(&format!("- \t{k}: {a},\n"));
            }
            if let Some(b) = b {
                out.push_str(&format!("+ \t{k}: {b},\n"));
            }
        }
    }
    out.push_str("  }\n");
    out
}

/// `ValidatePodStatusUpdate` after the metadata checks.
pub(crate) fn validate_pod_status_update(new: &Value, old: &Value) -> Errs {
    let mut errs = Errs::new();
    let null = Value::Null;
    let status_path = Path::new("status");
    let new_node = new.get("spec").map(|s| st(s, "nodeName")).unwrap_or("");
    let old_node = old.get("spec").map(|s| st(s, "nodeName")).unwrap_or("");
    if new_node != old_node {
        errs.push(forbidden(
            &status_path.child("nodeName"),
            "may not be changed directly",
        ));
    }
    let status = new.get("status").unwrap_or(&null);
    let nn = st(status, "nominatedNodeName");
    if !nn.is_empty() {
        errs.extend(
            is_dns1123_subdomain(nn)
                .into_iter()
                .map(|m| invalid(&status_path.child("nominatedNodeName"), nn, &m)),
        );
    }
    let ip_err = "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)";
    for (i, ip) in arr(status, "podIPs").iter().enumerate() {
        let v = st(ip, "ip");
        if !is_valid_ip(v) {
            errs.push(invalid(&status_path.child("podIPs").index(i), v, ip_err));
        }
    }
    for (i, ip) in arr(status, "hostIPs").iter().enumerate() {
        let v = st(ip, "ip");
        if !is_valid_ip(v) {
            errs.push(invalid(&status_path.child("hostIPs").index(i), v, ip_err));
        }
    }
    let restart = old
        .get("spec")
        .map(|s| st(s, "restartPolicy"))
        .unwrap_or("");
    if restart == "Never" {
        let old_status = old.get("status").unwrap_or(&null);
        for (i, cs) in arr(status, "containerStatuses").iter().enumerate() {
            let name = st(cs, "name");
            let was_terminated = arr(old_status, "containerStatuses")
                .iter()
                .find(|o| st(o, "name") == name)
                .is_some_and(|o| o.get("state").and_then(|s| get(s, "terminated")).is_some());
            let is_terminated = cs.get("state").and_then(|s| get(s, "terminated")).is_some();
            if was_terminated && !is_terminated {
                errs.push(forbidden(
                    &status_path
                        .child("containerStatuses")
                        .index(i)
                        .child("state"),
                    "may not be transitioned to non-terminated state",
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

    fn defaulted(mut pod: Value) -> Value {
        default_pod(&mut pod);
        pod
    }

    #[test]
    fn pod_defaults() {
        let pod = defaulted(json!({"spec": {"containers": [
            {"name": "a", "image": "nginx", "ports": [{"containerPort": 80}],
             "livenessProbe": {"httpGet": {"port": 80}},
             "resources": {"limits": {"cpu": "1"}}},
            {"name": "b", "image": "nginx:1.25"},
            {"name": "c", "image": "registry:5000/nginx:latest"},
            {"name": "d", "image": "registry:5000/nginx"},
        ], "volumes": [{"name": "v"}, {"name": "s", "secret": {"secretName": "x"}}, {"name": "h", "hostPath": {"path": "/x"}}]}}));
        let spec = &pod["spec"];
        let cases: &[(&str, Value)] = &[
            ("/restartPolicy", json!("Always")),
            ("/dnsPolicy", json!("ClusterFirst")),
            ("/schedulerName", json!("default-scheduler")),
            ("/terminationGracePeriodSeconds", json!(30)),
            ("/securityContext", json!({})),
            ("/enableServiceLinks", json!(true)),
            ("/containers/0/imagePullPolicy", json!("Always")),
            ("/containers/1/imagePullPolicy", json!("IfNotPresent")),
            ("/containers/2/imagePullPolicy", json!("Always")),
            ("/containers/3/imagePullPolicy", json!("Always")),
            (
                "/containers/0/terminationMessagePath",
                json!("/dev/termination-log"),
            ),
            ("/containers/0/terminationMessagePolicy", json!("File")),
            ("/containers/0/ports/0/protocol", json!("TCP")),
            ("/containers/1/resources", json!({})),
            ("/containers/0/resources/requests/cpu", json!("1")),
            ("/containers/0/livenessProbe/timeoutSeconds", json!(1)),
            ("/containers/0/livenessProbe/periodSeconds", json!(10)),
            ("/containers/0/livenessProbe/successThreshold", json!(1)),
            ("/containers/0/livenessProbe/failureThreshold", json!(3)),
            ("/containers/0/livenessProbe/httpGet/scheme", json!("HTTP")),
            ("/containers/0/livenessProbe/httpGet/path", json!("/")),
            ("/volumes/0/emptyDir", json!({})),
            ("/volumes/1/secret/defaultMode", json!(420)),
            ("/volumes/2/hostPath/type", json!("")),
        ];
        for (ptr, want) in cases {
            assert_eq!(spec.pointer(ptr), Some(want), "{ptr}");
        }
        assert!(
            validate_pod(&pod).is_empty(),
            "{:?}",
            msgs(&validate_pod(&pod))
        );
    }

    #[test]
    fn template_defaults_skip_pod_only_fields() {
        let mut t = json!({"spec": {"containers": [{"name": "a", "image": "x", "resources": {"limits": {"cpu": "1"}}}]}});
        default_pod_template(&mut t);
        assert_eq!(t["spec"].get("enableServiceLinks"), None);
        assert_eq!(
            t["spec"]["containers"][0]["resources"].get("requests"),
            None
        );
        assert_eq!(t["spec"]["restartPolicy"], "Always");
    }

    #[test]
    fn pod_validation_errors() {
        let cases: Vec<(Value, Vec<&str>)> = vec![
            (json!({"containers": [{"name": "a"}]}), vec!["spec.containers[0].image: Required value"]),
            (json!({"containers": []}), vec!["spec.containers: Required value"]),
            (json!({"containers": [{"name": "A_1", "image": "x"}]}), vec!["spec.containers[0].name: Invalid value: \"A_1\": a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"]),
            (json!({"containers": [{"name": "a", "image": "x"}, {"name": "a", "image": "y"}]}), vec!["spec.containers[1].name: Duplicate value: \"a\""]),
            (json!({"restartPolicy": "Sometimes", "containers": [{"name": "a", "image": "x"}]}), vec!["spec.restartPolicy: Unsupported value: \"Sometimes\": supported values: \"Always\", \"OnFailure\", \"Never\""]),
            (json!({"dnsPolicy": "Foo", "containers": [{"name": "a", "image": "x"}]}), vec!["spec.dnsPolicy: Unsupported value: \"Foo\": supported values: \"ClusterFirstWithHostNet\", \"ClusterFirst\", \"Default\", \"None\""]),
            (json!({"containers": [{"name": "a", "image": "x", "ports": [{"containerPort": 70000}]}]}), vec!["spec.containers[0].ports[0].containerPort: Invalid value: 70000: must be between 1 and 65535, inclusive"]),
            (json!({"containers": [{"name": "a", "image": "x", "ports": [{"containerPort": 80, "protocol": "HTTP"}]}]}), vec!["spec.containers[0].ports[0].protocol: Unsupported value: \"HTTP\": supported values: \"SCTP\", \"TCP\", \"UDP\""]),
            (json!({"containers": [{"name": "a", "image": "x", "ports": [{"name": "web", "containerPort": 80}, {"name": "web", "containerPort": 81}]}]}), vec!["spec.containers[0].ports[1].name: Duplicate value: \"web\""]),
            (json!({"containers": [{"name": "a", "image": "x", "env": [{"name": ""}, {"name": "A=B"}]}]}), vec!["spec.containers[0].env[0].name: Required value", "spec.containers[0].env[1].name: Invalid value: \"A=B\": a valid environment variable name must consist only of printable ASCII characters other than '='"]),
            (json!({"containers": [{"name": "a", "image": "x", "volumeMounts": [{"name": "data", "mountPath": "/d"}]}]}), vec!["spec.containers[0].volumeMounts[0].name: Not found: \"data\""]),
            (json!({"volumes": [{"name": "v", "emptyDir": {}}, {"name": "v", "emptyDir": {}}], "containers": [{"name": "a", "image": "x"}]}), vec!["spec.volumes[1].name: Duplicate value: \"v\""]),
            (json!({"volumes": [{"name": "v", "configMap": {}}], "containers": [{"name": "a", "image": "x"}]}), vec!["spec.volumes[0].configMap.name: Required value"]),
            (json!({"containers": [{"name": "a", "image": "x", "resources": {"requests": {"cpu": "2"}, "limits": {"cpu": "1"}}}]}), vec!["spec.containers[0].resources.requests: Invalid value: \"2\": must be less than or equal to cpu limit of 1"]),
            (json!({"containers": [{"name": "a", "image": "x", "resources": {"requests": {"gpu": "1"}}}]}), vec!["spec.containers[0].resources.requests[gpu]: Invalid value: \"gpu\": must be a standard resource for containers"]),
            (json!({"containers": [{"name": "a", "image": "x", "livenessProbe": {"successThreshold": 2, "periodSeconds": 10, "exec": {"command": ["true"]}}}]}), vec!["spec.containers[0].livenessProbe.successThreshold: Invalid value: 2: must be 1"]),
            (json!({"containers": [{"name": "a", "image": "x", "readinessProbe": {}}]}), vec!["spec.containers[0].readinessProbe: Required value: must specify a handler type"]),
            (json!({"initContainers": [{"name": "a", "image": "x", "livenessProbe": {"exec": {"command": ["x"]}}}], "containers": [{"name": "a", "image": "x"}]}), vec!["spec.initContainers[0].name: Duplicate value: \"a\"", "spec.initContainers[0].livenessProbe: Forbidden: may not be set for init containers without restartPolicy=Always"]),
            (json!({"containers": [{"name": "a", "image": "x"}], "tolerations": [{"operator": "Equal", "value": "x"}]}), vec!["spec.tolerations[0].operator: Invalid value: \"Equal\": operator must be Exists when `key` is empty, which means \"match all values and all keys\""]),
        ];
        for (spec, want) in cases {
            let mut pod = json!({"spec": spec});
            default_pod(&mut pod);
            assert_eq!(msgs(&validate_pod(&pod)), want, "{spec}");
        }
    }

    #[test]
    fn pod_update_allows_image_only() {
        let old = defaulted(
            json!({"spec": {"containers": [{"name": "a", "image": "x:1"}], "activeDeadlineSeconds": 30}}),
        );
        let mut new = old.clone();
        new["spec"]["containers"][0]["image"] = json!("x:2");
        new["spec"]["activeDeadlineSeconds"] = json!(20);
        assert!(validate_pod_update(&new, &old).is_empty());

        new["spec"]["containers"][0]["ports"] = json!([{"containerPort": 80, "protocol": "TCP"}]);
        let errs = validate_pod_update(&new, &old);
        assert_eq!(errs.len(), 1);
        assert!(errs[0]
            .message()
            .starts_with(&format!("spec: Forbidden: {POD_UPDATE_FORBIDDEN}\n")));

        let mut new = old.clone();
        new["spec"]["activeDeadlineSeconds"] = json!(40);
        assert_eq!(
            msgs(&validate_pod_update(&new, &old)),
            vec!["spec.activeDeadlineSeconds: Invalid value: 40: must be less than or equal to previous value"]
        );
    }

    #[test]
    fn pod_update_tolerations_additions_only() {
        let old = defaulted(
            json!({"spec": {"containers": [{"name": "a", "image": "x"}], "tolerations": [{"key": "k", "operator": "Exists"}]}}),
        );
        let mut new = old.clone();
        new["spec"]["tolerations"]
            .as_array_mut()
            .unwrap()
            .push(json!({"key": "j", "operator": "Exists"}));
        assert!(validate_pod_update(&new, &old).is_empty());
        new["spec"]["tolerations"] = json!([]);
        assert_eq!(
            msgs(&validate_pod_update(&new, &old)),
            vec!["spec.tolerations: Forbidden: existing toleration can not be modified except its tolerationSeconds"]
        );
    }

    #[test]
    fn image_tags() {
        assert_eq!(image_tag("nginx"), Some("latest"));
        assert_eq!(image_tag("localhost:5000/nginx"), Some("latest"));
        assert_eq!(image_tag("nginx:1.2"), Some("1.2"));
        assert_eq!(image_tag("nginx@sha256:abc"), None);
    }
}
