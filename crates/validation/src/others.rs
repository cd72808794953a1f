//! Kinds outside core/apps/batch with their own rules: networking (Ingress, IngressClass,
//! NetworkPolicy), RBAC, storage (StorageClass), coordination (Lease), autoscaling (HPA), policy
//! (PodDisruptionBudget), scheduling (PriorityClass), certificates (CSR), discovery
//! (EndpointSlice) and events.k8s.io Events.

use crate::meta::validate_label_selector;
use crate::util::*;
use apimachinery::errors::Path;
use serde_json::{json, Value};

const RBAC_GROUP: &str = "rbac.authorization.k8s.io";

pub(crate) fn default(group: &str, kind: &str, version: &str, obj: &mut Value) {
    match (group, kind) {
        ("networking.k8s.io", "NetworkPolicy") => {
            let Some(spec) = ensure_obj(obj, "spec") else {
                return;
            };
            for key in ["ingress", "egress"] {
                for rule in items_mut(spec, key) {
                    for p in items_mut(rule, "ports") {
                        default_str(p, "protocol", "TCP");
                    }
                }
            }
            if arr(spec, "policyTypes").is_empty() {
                let mut types = vec![json!("Ingress")];
                if !arr(spec, "egress").is_empty() {
                    types.push(json!("Egress"));
                }
                spec["policyTypes"] = Value::Array(types);
            }
        }
        (RBAC_GROUP, "RoleBinding" | "ClusterRoleBinding") => {
            if let Some(r) = ensure_obj(obj, "roleRef") {
                default_str(r, "apiGroup", RBAC_GROUP);
            }
            for s in items_mut(obj, "subjects") {
                if matches!(st(s, "kind"), "User" | "Group") {
                    default_str(s, "apiGroup", RBAC_GROUP);
                }
            }
        }
        ("storage.k8s.io", "StorageClass") => {
            default_field(obj, "reclaimPolicy", json!("Delete"));
            default_field(obj, "volumeBindingMode", json!("Immediate"));
        }
        ("autoscaling", "HorizontalPodAutoscaler") => {
            let Some(spec) = ensure_obj(obj, "spec") else {
                return;
            };
            default_field(spec, "minReplicas", json!(1));
            if version == "v1" {
                return;
            }
            if arr(spec, "metrics").is_empty() {
                spec["metrics"] = json!([{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}}}]);
            }
        }
        ("scheduling.k8s.io", "PriorityClass") => {
            default_field(obj, "preemptionPolicy", json!("PreemptLowerPriority"))
        }
        ("policy", "PodDisruptionBudget") => {}
        ("discovery.k8s.io", "EndpointSlice") => {
            for p in items_mut(obj, "ports") {
                default_field(p, "name", json!(""));
                default_field(p, "protocol", json!("TCP"));
            }
        }
        _ => {}
    }
}

pub(crate) fn validate(group: &str, kind: &str, obj: &Value, old: Option<&Value>) -> Errs {
    let empty = json!({});
    let spec = obj.get("spec").filter(|s| s.is_object()).unwrap_or(&empty);
    let sp = Path::new("spec");
    match (group, kind) {
        ("networking.k8s.io", "Ingress") => validate_ingress(spec, &sp),
        ("networking.k8s.io", "IngressClass") => validate_ingress_class(spec, old, &sp),
        ("networking.k8s.io", "NetworkPolicy") => validate_network_policy(spec, &sp),
        (RBAC_GROUP, "Role" | "ClusterRole") => {
            let mut errs = Errs::new();
            for (i, r) in arr(obj, "rules").iter().enumerate() {
                errs.extend(validate_policy_rule(
                    r,
                    kind == "Role",
                    &Path::new("rules").index(i),
                ));
            }
            errs
        }
        (RBAC_GROUP, "RoleBinding" | "ClusterRoleBinding") => {
            validate_binding(obj, kind == "RoleBinding", old)
        }
        ("storage.k8s.io", "StorageClass") => validate_storage_class(obj, old),
        ("coordination.k8s.io", "Lease") => {
            let mut errs = Errs::new();
            if let Some(d) = int(spec, "leaseDurationSeconds") {
                if d <= 0 {
                    errs.push(invalid(
                        &sp.child("leaseDurationSeconds"),
                        d,
                        "must be greater than 0",
                    ));
                }
            }
            errs.extend(validate_nonnegative(spec, "leaseTransitions", &sp));
            errs
        }
        ("autoscaling", "HorizontalPodAutoscaler") => validate_hpa(spec, &sp),
        ("policy", "PodDisruptionBudget") => validate_pdb(spec, &sp),
        ("scheduling.k8s.io", "PriorityClass") => validate_priority_class(obj, old),
        ("certificates.k8s.io", "CertificateSigningRequest") => validate_csr(spec, old, &sp),
        ("discovery.k8s.io", "EndpointSlice") => validate_endpoint_slice(obj, old),
        ("events.k8s.io", "Event") => crate::core::misc::validate_event(obj, true),
        _ => Vec::new(),
    }
}

fn validate_ingress(spec: &Value, sp: &Path) -> Errs {
    let mut errs = Errs::new();
    let rules = arr(spec, "rules");
    if rules.is_empty() && get(spec, "defaultBackend").is_none() {
        let raw = if spec.get("rules").is_some() {
            "[]networking.IngressRule{}"
        } else {
            "[]networking.IngressRule(nil)"
        };
        errs.push(invalid_raw(
            &sp.child("rules"),
            raw,
            "either `defaultBackend` or `rules` must be specified",
        ));
    }
    if let Some(b) = get(spec, "defaultBackend") {
        errs.extend(validate_ingress_backend(b, &sp.child("defaultBackend")));
    }
    for (i, r) in rules.iter().enumerate() {
        let rp = sp.child("rules").index(i);
        let host = st(r, "host");
        if !host.is_empty() {
            if is_valid_ip(host) {
                errs.push(invalid(
                    &rp.child("host"),
                    host,
                    "must be a DNS name, not an IP address",
                ));
            }
            let check = host.strip_prefix("*.").unwrap_or(host);
            if host.contains('*') && !host.starts_with("*.") {
                errs.extend(
                    is_dns1123_subdomain(host)
                        .into_iter()
                        .map(|m| invalid(&rp.child("host"), host, &m)),
                );
            } else {
                errs.extend(
                    is_dns1123_subdomain(check)
                        .into_iter()
                        .map(|m| invalid(&rp.child("host"), host, &m)),
                );
            }
        }
        let Some(http) = get(r, "http") else { continue };
        let hp = rp.child("http");
        let paths = arr(http, "paths");
        if paths.is_empty() {
            errs.push(required(&hp.child("paths")));
        }
        for (j, p) in paths.iter().enumerate() {
            let pp = hp.child("paths").index(j);
            let path = st(p, "path");
            match get(p, "pathType").and_then(Value::as_str) {
                None => errs.push(required_d(
                    &pp.child("pathType"),
                    "pathType must be specified",
                )),
                Some(t @ ("Exact" | "Prefix")) => {
                    if !path.starts_with('/') {
                        errs.push(invalid(&pp.child("path"), path, "must be an absolute path"));
                    }
                    let _ = t;
                }
                Some("ImplementationSpecific") => {
                    if !path.is_empty() && !path.starts_with('/') {
                        errs.push(invalid(&pp.child("path"), path, "must be an absolute path"));
                    }
                }
                Some(t) => errs.push(not_supported(
                    &pp.child("pathType"),
                    t,
                    &["Exact", "ImplementationSpecific", "Prefix"],
                )),
            }
            match get(p, "backend") {
                Some(b) => errs.extend(validate_ingress_backend(b, &pp.child("backend"))),
                None => errs.push(invalid(
                    &pp.child("backend"),
                    "",
                    "resource or service backend is required",
                )),
            }
        }
    }
    if let Some(c) = get(spec, "ingressClassName").and_then(Value::as_str) {
        errs.extend(
            is_dns1123_subdomain(c)
                .into_iter()
                .map(|m| invalid(&sp.child("ingressClassName"), c, &m)),
        );
    }
    for (i, t) in arr(spec, "tls").iter().enumerate() {
        for (j, h) in arr(t, "hosts").iter().enumerate() {
            let h = h.as_str().unwrap_or("");
            let check = h.strip_prefix("*.").unwrap_or(h);
            errs.extend(
                is_dns1123_subdomain(check)
                    .into_iter()
                    .map(|m| invalid(&sp.child("tls").index(i).child("hosts").index(j), h, &m)),
            );
        }
    }
    errs
}

fn validate_ingress_backend(b: &Value, path: &Path) -> Errs {
    let mut errs = Errs::new();
    let (svc, res) = (get(b, "service"), get(b, "resource"));
    match (svc, res) {
        (Some(_), Some(_)) => errs.push(invalid(
            path,
            "",
            "cannot set both resource and service backends",
        )),
        (None, None) => errs.push(invalid(path, "", "resource or service backend is required")),
        (None, Some(r)) => {
            if unset_str(r, "kind") {
                errs.push(required(&path.child("resource").child("kind")));
            }
            if unset_str(r, "name") {
                errs.push(required(&path.child("resource").child("name")));
            }
        }
        (Some(s), None) => {
            let name = st(s, "name");
            let np = path.child("service").child("name");
            if name.is_empty() {
                errs.push(required(&np));
            } else {
                errs.extend(
                    is_dns1035_label(name)
                        .into_iter()
                        .map(|m| invalid(&np, name, &m)),
                );
            }
            let empty = json!({});
            let port = s.get("port").unwrap_or(&empty);
            let pname = st(port, "name");
            let pnum = int(port, "number").unwrap_or(0);
            let pp = path.child("service").child("port");
            if !pname.is_empty() && pnum != 0 {
                errs.push(invalid(path, "", "cannot set both port name & port number"));
            } else if !pname.is_empty() {
                errs.extend(
                    is_valid_port_name(pname)
                        .into_iter()
                        .map(|m| invalid(&pp.child("name"), pname, &m)),
                );
            } else if pnum != 0 {
                errs.extend(
                    is_valid_port_num(pnum)
                        .into_iter()
                        .map(|m| invalid(&pp.child("number"), pnum, &m)),
                );
            } else {
                errs.push(required_d(path, "port name or number is required"));
            }
        }
    }
    errs
}

fn validate_ingress_class(spec: &Value, old: Option<&Value>, sp: &Path) -> Errs {
    let mut errs = Errs::new();
    let c = st(spec, "controller");
    let cp = sp.child("controller");
    if c.len() > 250 {
        errs.push(too_long(&cp, 250));
    }
    match c.split_once('/') {
        Some((host, _)) => {
            errs.extend(
                is_dns1123_subdomain(host)
                    .into_iter()
                    .map(|m| invalid(&cp, host, &m)),
            );
        }
        None => errs.push(invalid(
            &cp,
            c,
            "must be a domain-prefixed path (such as \"acme.io/foo\")",
        )),
    }
    if let Some(old) = old {
        let oc = old.get("spec").map(|s| st(s, "controller")).unwrap_or("");
        if oc != c {
            errs.push(invalid(&cp, c, IMMUTABLE));
        }
    }
    errs
}

fn validate_network_policy(spec: &Value, sp: &Path) -> Errs {
    let empty = json!({});
    let mut errs = validate_label_selector(
        spec.get("podSelector").unwrap_or(&empty),
        &sp.child("podSelector"),
    );
    for key in ["ingress", "egress"] {
        for (i, rule) in arr(spec, key).iter().enumerate() {
            let rp = sp.child(key).index(i);
            for (j, port) in arr(rule, "ports").iter().enumerate() {
                let pp = rp.child("ports").index(j);
                let proto = st(port, "protocol");
                if !matches!(proto, "TCP" | "UDP" | "SCTP") {
                    errs.push(not_supported(
                        &pp.child("protocol"),
                        proto,
                        &["SCTP", "TCP", "UDP"],
                    ));
                }
                if let Some(p) = get(port, "port") {
                    errs.extend(validate_port_num_or_name(Some(p), &pp.child("port")));
                }
            }
            let peers_key = if key == "ingress" { "from" } else { "to" };
            for (j, peer) in arr(rule, peers_key).iter().enumerate() {
                let pp = rp.child(peers_key).index(j);
                let n = ["podSelector", "namespaceSelector", "ipBlock"]
                    .iter()
                    .filter(|k| get(peer, k).is_some())
                    .count();
                if n == 0 {
                    errs.push(required_d(&pp, "must specify a peer"));
                }
                if let Some(ib) = get(peer, "ipBlock") {
                    if get(peer, "podSelector").is_some()
                        || get(peer, "namespaceSelector").is_some()
                    {
                        errs.push(forbidden(
                            &pp,
                            "may not specify both ipBlock and another peer",
                        ));
                    }
                    let cidr = st(ib, "cidr");
                    if cidr.is_empty() {
                        errs.push(required(&pp.child("ipBlock").child("cidr")));
                    }
                }
                for k in ["podSelector", "namespaceSelector"] {
                    if let Some(s) = get(peer, k) {
                        errs.extend(validate_label_selector(s, &pp.child(k)));
                    }
                }
            }
        }
    }
    let types = arr(spec, "policyTypes");
    for (i, t) in types.iter().enumerate() {
        let t = t.as_str().unwrap_or("");
        if !matches!(t, "Ingress" | "Egress") {
            errs.push(not_supported(
                &sp.child("policyTypes").index(i),
                t,
                &["Ingress", "Egress"],
            ));
        }
    }
    if types.len() > 2 {
        let raw: Vec<&str> = types.iter().filter_map(Value::as_str).collect();
        errs.push(invalid_raw(
            &sp.child("policyTypes"),
            &go_string_slice(&raw),
            "may not specify more than two policyTypes",
        ));
    }
    errs
}

fn validate_policy_rule(r: &Value, namespaced: bool, path: &Path) -> Errs {
    let mut errs = Errs::new();
    if arr(r, "verbs").is_empty() {
        errs.push(required_d(
            &path.child("verbs"),
            "verbs must contain at least one value",
        ));
    }
    let urls: Vec<&str> = arr(r, "nonResourceURLs")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    if !urls.is_empty() {
        let raw = go_string_slice(&urls);
        if namespaced {
            errs.push(invalid_raw(
                &path.child("nonResourceURLs"),
                &raw,
                "namespaced rules cannot apply to non-resource URLs",
            ));
        }
        if !arr(r, "apiGroups").is_empty()
            || !arr(r, "resources").is_empty()
            || !arr(r, "resourceNames").is_empty()
        {
            errs.push(invalid_raw(
                &path.child("nonResourceURLs"),
                &raw,
                "rules cannot apply to both regular resources and non-resource URLs",
            ));
        }
        return errs;
    }
    if arr(r, "apiGroups").is_empty() {
        errs.push(required_d(
            &path.child("apiGroups"),
            "resource rules must supply at least one api group",
        ));
    }
    if arr(r, "resources").is_empty() {
        errs.push(required_d(
            &path.child("resources"),
            "resource rules must supply at least one resource",
        ));
    }
    errs
}

fn role_ref_string(r: Option<&Value>) -> String {
    let empty = json!({});
    let r = r.unwrap_or(&empty);
    format!(
        "rbac.RoleRef{{APIGroup:{:?}, Kind:{:?}, Name:{:?}}}",
        st(r, "apiGroup"),
        st(r, "kind"),
        st(r, "name")
    )
}

fn validate_binding(obj: &Value, namespaced: bool, old: Option<&Value>) -> Errs {
    let mut errs = Errs::new();
    let empty = json!({});
    let rr = obj.get("roleRef").unwrap_or(&empty);
    let rp = Path::new("roleRef");
    if let Some(old) = old {
        if old.get("roleRef") != obj.get("roleRef") {
            errs.push(invalid_raw(
                &rp,
                &role_ref_string(obj.get("roleRef")),
                "cannot change roleRef",
            ));
        }
    }
    let g = st(rr, "apiGroup");
    if g != RBAC_GROUP {
        errs.push(not_supported(&rp.child("apiGroup"), g, &[RBAC_GROUP]));
    }
    let k = st(rr, "kind");
    if namespaced && !matches!(k, "Role" | "ClusterRole") {
        errs.push(not_supported(
            &rp.child("kind"),
            k,
            &["Role", "ClusterRole"],
        ));
    } else if !namespaced && k != "ClusterRole" {
        errs.push(not_supported(&rp.child("kind"), k, &["ClusterRole"]));
    }
    let n = st(rr, "name");
    if n.is_empty() {
        errs.push(required(&rp.child("name")));
    } else {
        errs.extend(
            is_valid_path_segment_name(n, false)
                .into_iter()
                .map(|m| invalid(&rp.child("name"), n, &m)),
        );
    }
    for (i, s) in arr(obj, "subjects").iter().enumerate() {
        let p = Path::new("subjects").index(i);
        let name = st(s, "name");
        if name.is_empty() {
            errs.push(required(&p.child("name")));
        }
        let g = st(s, "apiGroup");
        match st(s, "kind") {
            "ServiceAccount" => {
                if !name.is_empty() {
                    errs.extend(
                        is_dns1123_subdomain(name)
                            .into_iter()
                            .map(|m| invalid(&p.child("name"), name, &m)),
                    );
                }
                if !g.is_empty() {
                    errs.push(not_supported(&p.child("apiGroup"), g, &[""]));
                }
                if !namespaced && unset_str(s, "namespace") {
                    errs.push(required(&p.child("namespace")));
                }
            }
            "User" | "Group" => {
                if g != RBAC_GROUP {
                    errs.push(not_supported(&p.child("apiGroup"), g, &[RBAC_GROUP]));
                }
            }
            other => errs.push(not_supported(
                &p.child("kind"),
                other,
                &["ServiceAccount", "User", "Group"],
            )),
        }
    }
    errs
}

fn validate_storage_class(obj: &Value, old: Option<&Value>) -> Errs {
    let mut errs = Errs::new();
    let prov = st(obj, "provisioner");
    let pp = Path::new("provisioner");
    if prov.is_empty() {
        errs.push(required(&pp));
    } else {
        errs.extend(
            is_qualified_name(&prov.to_lowercase())
                .into_iter()
                .map(|m| invalid(&pp, prov, &m)),
        );
    }
    let params = crate::util::obj(obj, "parameters").map_or(0, |m| m.len());
    if params > 512 {
        errs.push(too_long(&Path::new("parameters"), 512));
    }
    if let Some(rp) = get(obj, "reclaimPolicy").and_then(Value::as_str) {
        if !matches!(rp, "Delete" | "Retain") {
            errs.push(not_supported(
                &Path::new("reclaimPolicy"),
                rp,
                &["Delete", "Retain"],
            ));
        }
    }
    match get(obj, "volumeBindingMode").and_then(Value::as_str) {
        None => errs.push(required(&Path::new("volumeBindingMode"))),
        Some(m) if !matches!(m, "Immediate" | "WaitForFirstConsumer") => errs.push(not_supported(
            &Path::new("volumeBindingMode"),
            m,
            &["Immediate", "WaitForFirstConsumer"],
        )),
        _ => {}
    }
    if let Some(old) = old {
        if obj.get("parameters") != old.get("parameters") {
            errs.push(forbidden(
                &Path::new("parameters"),
                "updates to parameters are forbidden.",
            ));
        }
        if st(obj, "provisioner") != st(old, "provisioner") {
            errs.push(forbidden(&pp, "updates to provisioner are forbidden."));
        }
        if st(obj, "reclaimPolicy") != st(old, "reclaimPolicy") {
            errs.push(forbidden(
                &Path::new("reclaimPolicy"),
                "updates to reclaimPolicy are forbidden.",
            ));
        }
        if st(obj, "volumeBindingMode") != st(old, "volumeBindingMode") {
            errs.push(invalid(
                &Path::new("volumeBindingMode"),
                st(obj, "volumeBindingMode"),
                IMMUTABLE,
            ));
        }
    }
    errs
}

fn validate_hpa(spec: &Value, sp: &Path) -> Errs {
    let mut errs = Errs::new();
    let min = int(spec, "minReplicas");
    if let Some(m) = min {
        if m < 1 {
            errs.push(invalid(
                &sp.child("minReplicas"),
                m,
                "must be greater than or equal to 1",
            ));
        }
    }
    let max = int(spec, "maxReplicas").unwrap_or(0);
    if max < 1 {
        errs.push(invalid(
            &sp.child("maxReplicas"),
            max,
            "must be greater than 0",
        ));
    }
    if min.is_some_and(|m| max < m) {
        errs.push(invalid(
            &sp.child("maxReplicas"),
            max,
            "must be greater than or equal to `minReplicas`",
        ));
    }
    let empty = json!({});
    let r = spec.get("scaleTargetRef").unwrap_or(&empty);
    let rp = sp.child("scaleTargetRef");
    for key in ["kind", "name"] {
        let v = st(r, key);
        if v.is_empty() {
            errs.push(required(&rp.child(key)));
        } else {
            errs.extend(
                is_valid_path_segment_name(v, false)
                    .into_iter()
                    .map(|m| invalid(&rp.child(key), v, &m)),
            );
        }
    }
    if let Some(t) = int(spec, "targetCPUUtilizationPercentage") {
        if t < 1 {
            errs.push(invalid(
                &sp.child("targetCPUUtilizationPercentage"),
                t,
                "must be greater than 0",
            ));
        }
    }
    errs
}

fn validate_pdb(spec: &Value, sp: &Path) -> Errs {
    let mut errs = Errs::new();
    let (min, max) = (get(spec, "minAvailable"), get(spec, "maxUnavailable"));
    if min.is_some() && max.is_some() {
        errs.push(invalid_raw(
            sp,
            "policy.PodDisruptionBudgetSpec{...}",
            "minAvailable and maxUnavailable cannot be both set",
        ));
    }
    for (key, v) in [("minAvailable", min), ("maxUnavailable", max)] {
        let p = sp.child(key);
        match v {
            Some(Value::Number(n)) => {
                let n = n.as_i64().unwrap_or(0);
                if n < 0 {
                    errs.push(invalid(&p, n, "must be greater than or equal to 0"));
                }
            }
            Some(Value::String(s)) => {
                let pct = s
                    .strip_suffix('%')
                    .filter(|n| !n.is_empty() && n.bytes().all(|c| c.is_ascii_digit()));
                match pct {
                    None => errs.push(invalid_raw(
                        &p,
                        s,
                        &regex_error("a valid percent string must be a numeric string followed by an ending '%'", "[0-9]+%", &["1%", "93%"]),
                    )),
                    Some(n) if n.parse::<i64>().unwrap_or(0) > 100 => errs.push(invalid_raw(&p, s, "must not be greater than 100%")),
                    _ => {}
                }
            }
            _ => {}
        }
    }
    if let Some(sel) = get(spec, "selector") {
        errs.extend(validate_label_selector(sel, &sp.child("selector")));
    }
    if let Some(p) = get(spec, "unhealthyPodEvictionPolicy").and_then(Value::as_str) {
        if !matches!(p, "IfHealthyBudget" | "AlwaysAllow") {
            errs.push(not_supported(
                &sp.child("unhealthyPodEvictionPolicy"),
                p,
                &["AlwaysAllow", "IfHealthyBudget"],
            ));
        }
    }
    errs
}

const HIGHEST_USER_DEFINABLE_PRIORITY: i64 = 1_000_000_000;

fn validate_priority_class(obj: &Value, old: Option<&Value>) -> Errs {
    let mut errs = Errs::new();
    let name = obj.get("metadata").map(|m| st(m, "name")).unwrap_or("");
    let system = matches!(name, "system-node-critical" | "system-cluster-critical");
    if name.starts_with("system-") && !system {
        errs.push(forbidden(
            &Path::new("metadata").child("name"),
            "priority class names with 'system-' prefix are reserved",
        ));
    }
    let value = int(obj, "value").unwrap_or(0);
    if !system && value > HIGHEST_USER_DEFINABLE_PRIORITY {
        errs.push(forbidden(
            &Path::new("value"),
            &format!("maximum allowed value of a user defined priority is {HIGHEST_USER_DEFINABLE_PRIORITY}"),
        ));
    }
    if let Some(p) = get(obj, "preemptionPolicy").and_then(Value::as_str) {
        if !matches!(p, "PreemptLowerPriority" | "Never") {
            errs.push(not_supported(
                &Path::new("preemptionPolicy"),
                p,
                &["Never", "PreemptLowerPriority"],
            ));
        }
    }
    if let Some(old) = old {
        if int(old, "value") != int(obj, "value") {
            errs.push(forbidden(
                &Path::new("value"),
                "may not be changed in an update.",
            ));
        }
        if st(old, "preemptionPolicy") != st(obj, "preemptionPolicy") {
            errs.push(invalid(
                &Path::new("preemptionPolicy"),
                st(obj, "preemptionPolicy"),
                IMMUTABLE,
            ));
        }
    }
    errs
}

const KEY_USAGES: &[&str] = &[
    "signing",
    "digital signature",
    "content commitment",
    "key encipherment",
    "key agreement",
    "data encipherment",
    "cert sign",
    "crl sign",
    "encipher only",
    "decipher only",
    "any",
    "server auth",
    "client auth",
    "code signing",
    "email protection",
    "s/mime",
    "ipsec end system",
    "ipsec tunnel",
    "ipsec user",
    "timestamping",
    "ocsp signing",
    "microsoft sgc",
    "netscape sgc",
];

fn validate_csr(spec: &Value, old: Option<&Value>, sp: &Path) -> Errs {
    let mut errs = Errs::new();
    let req = st(spec, "request");
    let pem =
        base64::Engine::decode(&base64::engine::general_purpose::STANDARD, req).unwrap_or_default();
    if !String::from_utf8_lossy(&pem).contains("-----BEGIN CERTIFICATE REQUEST-----") {
        errs.push(invalid_raw(
            &sp.child("request"),
            "[]byte{...}",
            "PEM block type must be CERTIFICATE REQUEST",
        ));
    }
    let signer = st(spec, "signerName");
    if signer.is_empty() {
        errs.push(required(&sp.child("signerName")));
    } else if !signer.contains('/') {
        errs.push(invalid(
            &sp.child("signerName"),
            signer,
            "must be a fully qualified domain and path of the form 'example.com/signer-name'",
        ));
    }
    let usages = arr(spec, "usages");
    if usages.is_empty() && old.is_none() {
        errs.push(required(&sp.child("usages")));
    }
    for (i, u) in usages.iter().enumerate() {
        let u = u.as_str().unwrap_or("");
        if !KEY_USAGES.contains(&u) {
            errs.push(not_supported(&sp.child("usages").index(i), u, KEY_USAGES));
        }
    }
    if let Some(e) = int(spec, "expirationSeconds") {
        if e < 600 {
            errs.push(invalid(
                &sp.child("expirationSeconds"),
                e,
                "may not specify a duration less than 600 seconds (10 minutes)",
            ));
        }
    }
    if let Some(old) = old {
        let os = old.get("spec").cloned().unwrap_or(Value::Null);
        if &os != spec && !os.is_null() {
            errs.push(invalid_raw(
                sp,
                "certificates.CertificateSigningRequestSpec{...}",
                IMMUTABLE,
            ));
        }
    }
    errs
}

fn validate_endpoint_slice(obj: &Value, old: Option<&Value>) -> Errs {
    let mut errs = Errs::new();
    let at = st(obj, "addressType");
    let ap = Path::new("addressType");
    if at.is_empty() {
        errs.push(required(&ap));
    } else if !matches!(at, "IPv4" | "IPv6" | "FQDN") {
        errs.push(not_supported(&ap, at, &["FQDN", "IPv4", "IPv6"]));
    }
    if let Some(old) = old {
        if st(old, "addressType") != at {
            errs.push(invalid(&ap, at, IMMUTABLE));
        }
    }
    let eps = arr(obj, "endpoints");
    if eps.len() > 1000 {
        errs.push(too_many(&Path::new("endpoints"), eps.len(), 1000));
    }
    for (i, ep) in eps.iter().enumerate() {
        let p = Path::new("endpoints").index(i);
        let addrs = arr(ep, "addresses");
        if addrs.is_empty() {
            errs.push(required_d(
                &p.child("addresses"),
                "must contain at least 1 address",
            ));
        } else if addrs.len() > 100 {
            errs.push(too_many(&p.child("addresses"), addrs.len(), 100));
        }
        for (j, a) in addrs.iter().enumerate() {
            let a = a.as_str().unwrap_or("");
            let aj = p.child("addresses").index(j);
            match at {
                "IPv4" if a.parse::<std::net::Ipv4Addr>().is_err() => {
                    errs.push(invalid(&aj, a, "must be a valid IPv4 address"));
                }
                "IPv6" if a.parse::<std::net::Ipv6Addr>().is_err() => {
                    errs.push(invalid(&aj, a, "must be a valid IPv6 address"));
                }
                "FQDN" => errs.extend(validate_dns1123_subdomain(a, &aj)),
                _ => {}
            }
        }
        if let Some(h) = get(ep, "hostname").and_then(Value::as_str) {
            errs.extend(validate_dns1123_label(h, &p.child("hostname")));
        }
    }
    let ports = arr(obj, "ports");
    if ports.len() > 20000 {
        errs.push(too_many(&Path::new("ports"), ports.len(), 20000));
    }
    let mut names = std::collections::HashSet::new();
    for (i, port) in ports.iter().enumerate() {
        let p = Path::new("ports").index(i);
        let name = st(port, "name");
        if !name.is_empty() {
            errs.extend(validate_dns1123_label(name, &p.child("name")));
        }
        if !names.insert(name) {
            errs.push(duplicate(&p.child("name"), name));
        }
        let proto = st(port, "protocol");
        if !matches!(proto, "TCP" | "UDP" | "SCTP") {
            errs.push(not_supported(
                &p.child("protocol"),
                proto,
                &["SCTP", "TCP", "UDP"],
            ));
        }
        if let Some(n) = int(port, "port") {
            errs.extend(
                is_valid_port_num(n)
                    .into_iter()
                    .map(|m| invalid(&p.child("port"), n, &m)),
            );
        }
    }
    errs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(group: &str, kind: &str, mut o: Value, old: Option<Value>) -> Vec<String> {
        default(group, kind, "v1", &mut o);
        validate(group, kind, &o, old.as_ref())
            .iter()
            .map(|e| e.message())
            .collect()
    }

    #[test]
    fn rbac_rules_and_bindings() {
        assert_eq!(
            run(
                RBAC_GROUP,
                "Role",
                json!({"rules": [{"apiGroups": [""], "resources": ["pods"]}]}),
                None
            ),
            vec!["rules[0].verbs: Required value: verbs must contain at least one value"]
        );
        let rb = json!({"roleRef": {"kind": "Role", "name": "r"}, "subjects": [{"kind": "User", "name": "u"}]});
        assert!(run(RBAC_GROUP, "RoleBinding", rb.clone(), None).is_empty());
        let mut old = rb.clone();
        default(RBAC_GROUP, "RoleBinding", "v1", &mut old);
        let mut changed = rb;
        changed["roleRef"]["name"] = json!("other");
        assert_eq!(
            run(RBAC_GROUP, "RoleBinding", changed, Some(old)),
            vec!["roleRef: Invalid value: rbac.RoleRef{APIGroup:\"rbac.authorization.k8s.io\", Kind:\"Role\", Name:\"other\"}: cannot change roleRef"]
        );
    }

    #[test]
    fn storage_class_defaults_and_rules() {
        let mut sc = json!({"provisioner": "kubernetes.io/no-provisioner"});
        default("storage.k8s.io", "StorageClass", "v1", &mut sc);
        assert_eq!(sc["reclaimPolicy"], "Delete");
        assert_eq!(sc["volumeBindingMode"], "Immediate");
        assert_eq!(
            run("storage.k8s.io", "StorageClass", json!({}), None),
            vec!["provisioner: Required value"]
        );
    }

    #[test]
    fn ingress_rules() {
        assert_eq!(
            run("networking.k8s.io", "Ingress", json!({"spec": {}}), None),
            vec!["spec.rules: Invalid value: []networking.IngressRule(nil): either `defaultBackend` or `rules` must be specified"]
        );
        let ing = json!({"spec": {"rules": [{"host": "a.example.com", "http": {"paths": [{"path": "/", "backend": {"service": {"name": "web"}}}]}}]}});
        assert_eq!(
            run("networking.k8s.io", "Ingress", ing, None),
            vec![
                "spec.rules[0].http.paths[0].pathType: Required value: pathType must be specified",
                "spec.rules[0].http.paths[0].backend: Required value: port name or number is required",
            ]
        );
    }

    #[test]
    fn network_policy_defaults() {
        let mut np = json!({"spec": {"podSelector": {}, "egress": [{"ports": [{"port": 53}]}]}});
        default("networking.k8s.io", "NetworkPolicy", "v1", &mut np);
        assert_eq!(np["spec"]["policyTypes"], json!(["Ingress", "Egress"]));
        assert_eq!(np["spec"]["egress"][0]["ports"][0]["protocol"], "TCP");
    }

    #[test]
    fn hpa_pdb_priority() {
        let mut hpa = json!({"spec": {"scaleTargetRef": {"kind": "Deployment", "name": "web"}, "maxReplicas": 0}});
        default("autoscaling", "HorizontalPodAutoscaler", "v2", &mut hpa);
        assert_eq!(hpa["spec"]["minReplicas"], 1);
        assert_eq!(
            hpa["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"],
            80
        );
        let m: Vec<String> = validate("autoscaling", "HorizontalPodAutoscaler", &hpa, None)
            .iter()
            .map(|e| e.message())
            .collect();
        assert_eq!(m, vec!["spec.maxReplicas: Invalid value: 0: must be greater than 0", "spec.maxReplicas: Invalid value: 0: must be greater than or equal to `minReplicas`"]);
        assert_eq!(
            run(
                "policy",
                "PodDisruptionBudget",
                json!({"spec": {"minAvailable": "150%"}}),
                None
            ),
            vec!["spec.minAvailable: Invalid value: 150%: must not be greater than 100%"]
        );
        assert_eq!(
            run(
                "scheduling.k8s.io",
                "PriorityClass",
                json!({"metadata": {"name": "p"}, "value": 2000000000}),
                None
            ),
            vec![
                "value: Forbidden: maximum allowed value of a user defined priority is 1000000000"
            ]
        );
    }

    #[test]
    fn endpoint_slice_rules() {
        assert_eq!(
            run(
                "discovery.k8s.io",
                "EndpointSlice",
                json!({"addressType": "IPv4", "endpoints": [{"addresses": ["::1"]}]}),
                None
            ),
            vec!["endpoints[0].addresses[0]: Invalid value: \"::1\": must be a valid IPv4 address"]
        );
    }
}
