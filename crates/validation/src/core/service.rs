//! Services: `SetDefaults_Service` and `ValidateService` / `ValidateServiceUpdate` (ports, type,
//! selector, session affinity, ExternalName, cluster IPs, traffic policies).

use crate::meta::validate_labels;
use crate::util::*;
use apimachinery::errors::Path;
use serde_json::{json, Value};
use std::collections::HashSet;

fn externally_accessible(spec: &Value) -> bool {
    match st(spec, "type") {
        "LoadBalancer" | "NodePort" => true,
        "ClusterIP" => !arr(spec, "externalIPs").is_empty(),
        _ => false,
    }
}

/// `SetDefaults_Service`. Also mirrors `clusterIP` into an empty `clusterIPs`, which upstream's
/// strategy does before validation (`normalizeClusterIPs`).
pub(crate) fn default_service(svc: &mut Value) {
    let Some(spec) = ensure_obj(svc, "spec") else {
        return;
    };
    default_str(spec, "sessionAffinity", "None");
    if st(spec, "sessionAffinity") == "None" {
        if let Some(m) = spec.as_object_mut() {
            m.remove("sessionAffinityConfig");
        }
    }
    if st(spec, "sessionAffinity") == "ClientIP" {
        let has_timeout = get(spec, "sessionAffinityConfig")
            .and_then(|c| get(c, "clientIP"))
            .and_then(|c| get(c, "timeoutSeconds"))
            .is_some();
        if !has_timeout {
            spec["sessionAffinityConfig"] = json!({"clientIP": {"timeoutSeconds": 10800}});
        }
    }
    default_str(spec, "type", "ClusterIP");
    for p in items_mut(spec, "ports") {
        default_str(p, "protocol", "TCP");
        let unset = match p.get("targetPort") {
            None | Some(Value::Null) => true,
            Some(Value::Number(n)) => n.as_i64() == Some(0),
            Some(Value::String(s)) => s.is_empty(),
            _ => false,
        };
        if unset {
            let port = p.get("port").cloned().unwrap_or(json!(0));
            p["targetPort"] = port;
        }
    }
    if externally_accessible(spec) {
        default_str(spec, "externalTrafficPolicy", "Cluster");
    }
    if matches!(st(spec, "type"), "NodePort" | "LoadBalancer" | "ClusterIP") {
        default_field(spec, "internalTrafficPolicy", json!("Cluster"));
    }
    if st(spec, "type") == "LoadBalancer" {
        default_field(spec, "allocateLoadBalancerNodePorts", json!(true));
    }
    let cip = st(spec, "clusterIP").to_string();
    if !cip.is_empty() && arr(spec, "clusterIPs").is_empty() {
        spec["clusterIPs"] = json!([cip]);
    }
}

fn cluster_ips(spec: &Value) -> Vec<&str> {
    arr(spec, "clusterIPs")
        .iter()
        .map(|v| v.as_str().unwrap_or(""))
        .collect()
}

fn is_headless(spec: &Value) -> bool {
    cluster_ips(spec) == ["None"]
}

/// Go's `%#v` of the `core.ServicePort` key used in the duplicate-port check.
fn service_port_key(proto: &str, port: i64) -> String {
    format!(
        "core.ServicePort{{Name:\"\", Protocol:\"{proto}\", AppProtocol:(*string)(nil), Port:{port}, TargetPort:intstr.IntOrString{{Type:0, IntVal:0, StrVal:\"\"}}, NodePort:0}}"
    )
}

const IP_ERR: &str = "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)";

/// `validateServiceFields` (everything but metadata).
pub(crate) fn validate_service(svc: &Value) -> Errs {
    let empty = json!({});
    let spec = svc.get("spec").unwrap_or(&empty);
    let sp = Path::new("spec");
    let mut errs = Errs::new();
    let ty = st(spec, "type");
    let ports = arr(spec, "ports");
    let headless = is_headless(spec);
    if ports.is_empty() && !headless && ty != "ExternalName" {
        errs.push(required(&sp.child("ports")));
    }
    match ty {
        "LoadBalancer" => {
            if headless {
                errs.push(invalid(
                    &sp.child("clusterIPs").index(0),
                    "None",
                    "may not be set to 'None' for LoadBalancer services",
                ));
            }
            for (i, p) in ports.iter().enumerate() {
                if int(p, "port") == Some(10250) {
                    errs.push(invalid(
                        &sp.child("ports").index(i),
                        10250,
                        "may not expose port 10250 externally since it is used by kubelet",
                    ));
                }
            }
        }
        "NodePort" if headless => {
            errs.push(invalid(
                &sp.child("clusterIPs").index(0),
                "None",
                "may not be set to 'None' for NodePort services",
            ));
        }
        "ExternalName" => {
            if !cluster_ips(spec).is_empty() {
                errs.push(forbidden(
                    &sp.child("clusterIPs"),
                    "may not be set for ExternalName services",
                ));
            }
            if !arr(spec, "ipFamilies").is_empty() {
                errs.push(forbidden(
                    &sp.child("ipFamilies"),
                    "may not be set for ExternalName services",
                ));
            }
            if get(spec, "ipFamilyPolicy").is_some() {
                errs.push(forbidden(
                    &sp.child("ipFamilyPolicy"),
                    "may not be set for ExternalName services",
                ));
            }
            let en = st(spec, "externalName");
            let cname = en.strip_suffix('.').unwrap_or(en);
            if cname.is_empty() {
                errs.push(required(&sp.child("externalName")));
            } else {
                errs.extend(validate_dns1123_subdomain(cname, &sp.child("externalName")));
            }
        }
        _ => {}
    }

    let mut names = HashSet::new();
    for (i, p) in ports.iter().enumerate() {
        let pp = sp.child("ports").index(i);
        let name = st(p, "name");
        if ports.len() > 1 && name.is_empty() {
            errs.push(required(&pp.child("name")));
        } else if !name.is_empty() {
            errs.extend(validate_dns1123_label(name, &pp.child("name")));
            if !names.insert(name) {
                errs.push(duplicate(&pp.child("name"), name));
            }
        }
        let port = int(p, "port").unwrap_or(0);
        errs.extend(
            is_valid_port_num(port)
                .into_iter()
                .map(|m| invalid(&pp.child("port"), port, &m)),
        );
        errs.extend(crate::core::pod::validate_protocol(
            st(p, "protocol"),
            &pp.child("protocol"),
        ));
        errs.extend(validate_port_num_or_name(
            get(p, "targetPort"),
            &pp.child("targetPort"),
        ));
        if let Some(ap) = get(p, "appProtocol").and_then(Value::as_str) {
            errs.extend(
                is_qualified_name(ap)
                    .into_iter()
                    .map(|m| invalid(&pp.child("appProtocol"), ap, &m)),
            );
        }
    }

    if get(spec, "selector").is_some() {
        errs.extend(validate_labels(
            &str_map(spec, "selector"),
            &sp.child("selector"),
        ));
    }

    let sa = st(spec, "sessionAffinity");
    match sa {
        "" => errs.push(required(&sp.child("sessionAffinity"))),
        "ClientIP" | "None" => {}
        _ => errs.push(not_supported(
            &sp.child("sessionAffinity"),
            sa,
            &["ClientIP", "None"],
        )),
    }
    let sac_path = sp.child("sessionAffinityConfig");
    if sa == "ClientIP" {
        let detail = "when session affinity type is ClientIP";
        match get(spec, "sessionAffinityConfig") {
            None => errs.push(required_d(&sac_path, detail)),
            Some(c) => match get(c, "clientIP") {
                None => errs.push(required_d(&sac_path.child("clientIP"), detail)),
                Some(ci) => match int(ci, "timeoutSeconds") {
                    None => errs.push(required_d(
                        &sac_path.child("clientIP").child("timeoutSeconds"),
                        detail,
                    )),
                    Some(t) if !(1..=86400).contains(&t) => errs.push(invalid(
                        &sac_path.child("clientIP").child("timeoutSeconds"),
                        t,
                        "must be greater than 0 and less than 86400",
                    )),
                    _ => {}
                },
            },
        }
    } else if sa == "None" && get(spec, "sessionAffinityConfig").is_some() {
        errs.push(forbidden(
            &sac_path,
            "must not be set when session affinity is None",
        ));
    }

    errs.extend(validate_cluster_ips(spec, &sp));

    for (i, ip) in arr(spec, "externalIPs").iter().enumerate() {
        let ip = ip.as_str().unwrap_or("");
        if !is_valid_ip(ip) {
            errs.push(invalid(&sp.child("externalIPs").index(i), ip, IP_ERR));
        }
    }

    match ty {
        "" => errs.push(required(&sp.child("type"))),
        "ClusterIP" | "ExternalName" | "LoadBalancer" | "NodePort" => {}
        _ => errs.push(not_supported(
            &sp.child("type"),
            ty,
            &["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"],
        )),
    }
    if ty == "ClusterIP" {
        for (i, p) in ports.iter().enumerate() {
            if int(p, "nodePort").unwrap_or(0) != 0 {
                errs.push(forbidden(
                    &sp.child("ports").index(i).child("nodePort"),
                    "may not be used when `type` is 'ClusterIP'",
                ));
            }
        }
    }
    let mut node_ports = HashSet::new();
    for (i, p) in ports.iter().enumerate() {
        let np = int(p, "nodePort").unwrap_or(0);
        if np == 0 {
            continue;
        }
        if !node_ports.insert((st(p, "protocol"), np)) {
            errs.push(duplicate(&sp.child("ports").index(i).child("nodePort"), np));
        }
    }
    let mut seen = HashSet::new();
    for (i, p) in ports.iter().enumerate() {
        let key = (st(p, "protocol"), int(p, "port").unwrap_or(0));
        if !seen.insert(key) {
            errs.push(duplicate_raw(
                &sp.child("ports").index(i),
                &service_port_key(key.0, key.1),
            ));
        }
    }
    if !arr(spec, "loadBalancerSourceRanges").is_empty() && ty != "LoadBalancer" {
        errs.push(forbidden(
            &sp.child("loadBalancerSourceRanges"),
            "may only be used when `type` is 'LoadBalancer'",
        ));
    }

    let etp = st(spec, "externalTrafficPolicy");
    if !externally_accessible(spec) {
        if !etp.is_empty() {
            errs.push(invalid(
                &sp.child("externalTrafficPolicy"),
                etp,
                "may only be set for externally-accessible services",
            ));
        }
    } else if etp.is_empty() {
        errs.push(required(&sp.child("externalTrafficPolicy")));
    } else if !matches!(etp, "Cluster" | "Local") {
        errs.push(not_supported(
            &sp.child("externalTrafficPolicy"),
            etp,
            &["Cluster", "Local"],
        ));
    }
    let hc = int(spec, "healthCheckNodePort").unwrap_or(0);
    let needs_hc = ty == "LoadBalancer" && etp == "Local";
    if !needs_hc && hc != 0 {
        errs.push(invalid(
            &sp.child("healthCheckNodePort"),
            hc,
            "may only be set when `type` is 'LoadBalancer' and `externalTrafficPolicy` is 'Local'",
        ));
    }
    match get(spec, "internalTrafficPolicy").and_then(Value::as_str) {
        None if matches!(ty, "NodePort" | "LoadBalancer" | "ClusterIP") => errs.push(required_d(
            &sp.child("internalTrafficPolicy"),
            "must be specified when `type` is 'ClusterIP', 'NodePort', or 'LoadBalancer'",
        )),
        Some(p) if !matches!(p, "Cluster" | "Local") => errs.push(not_supported(
            &sp.child("internalTrafficPolicy"),
            p,
            &["Cluster", "Local"],
        )),
        _ => {}
    }
    errs
}

fn validate_cluster_ips(spec: &Value, sp: &Path) -> Errs {
    let mut errs = Errs::new();
    let cip = st(spec, "clusterIP");
    let ips = cluster_ips(spec);
    let ips_path = sp.child("clusterIPs");
    let raw = go_string_slice(&ips);
    if !cip.is_empty() {
        if ips.is_empty() {
            errs.push(required(&ips_path));
        } else if ips[0] != cip {
            errs.push(invalid_raw(
                &ips_path,
                &raw,
                "first value must match `clusterIP`",
            ));
        }
    } else if !ips.is_empty() {
        errs.push(invalid_raw(
            &ips_path,
            &raw,
            "must be empty when `clusterIP` is not specified",
        ));
    }
    let mut fams = HashSet::new();
    for (i, f) in arr(spec, "ipFamilies").iter().enumerate() {
        let f = f.as_str().unwrap_or("");
        if !matches!(f, "IPv4" | "IPv6") {
            errs.push(not_supported(
                &sp.child("ipFamilies").index(i),
                f,
                &["IPv4", "IPv6"],
            ));
        }
        if !fams.insert(f) {
            errs.push(duplicate(&sp.child("ipFamilies").index(i), f));
        }
    }
    if let Some(p) = get(spec, "ipFamilyPolicy").and_then(Value::as_str) {
        if !matches!(p, "SingleStack" | "PreferDualStack" | "RequireDualStack") {
            errs.push(not_supported(
                &sp.child("ipFamilyPolicy"),
                p,
                &["PreferDualStack", "RequireDualStack", "SingleStack"],
            ));
        }
    }
    for (i, ip) in ips.iter().enumerate() {
        if i == 0 && *ip == "None" {
            if ips.len() > 1 {
                errs.push(invalid_raw(
                    &ips_path,
                    &raw,
                    "'None' must be the first and only value",
                ));
            }
            continue;
        }
        if !is_valid_ip(ip) {
            errs.push(invalid(&ips_path.index(i), *ip, IP_ERR));
        }
    }
    if ips.len() > 2 {
        errs.push(invalid_raw(&ips_path, &raw, "may only hold up to 2 values"));
    }
    errs
}

/// `ValidateServiceUpdate` after the metadata checks: the primary cluster IP and IP family may
/// not change (unless to or from ExternalName), plus the full field validation.
pub(crate) fn validate_service_update(new: &Value, old: &Value) -> Errs {
    let null = Value::Null;
    let ns = new.get("spec").unwrap_or(&null);
    let os = old.get("spec").unwrap_or(&null);
    let sp = Path::new("spec");
    let mut errs = Errs::new();
    if st(ns, "type") != "ExternalName" && st(os, "type") != "ExternalName" {
        let (n, o) = (cluster_ips(ns), cluster_ips(os));
        if !o.is_empty() && !n.is_empty() && n[0] != o[0] {
            errs.push(invalid_raw(
                &sp.child("clusterIPs").index(0),
                &go_string_slice(&n),
                "may not change once set",
            ));
        }
        let nf: Vec<&str> = arr(ns, "ipFamilies")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        let of: Vec<&str> = arr(os, "ipFamilies")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        if !of.is_empty() && !nf.is_empty() && nf[0] != of[0] {
            errs.push(invalid_raw(
                &sp.child("ipFamilies").index(0),
                &go_string_slice(&nf),
                "may not change once set",
            ));
        }
    }
    errs.extend(validate_service(new));
    errs
}

/// `ValidateServiceStatusUpdate` after the metadata checks.
pub(crate) fn validate_service_status(new: &Value) -> Errs {
    let mut errs = Errs::new();
    let path = Path::new("status").child("loadBalancer").child("ingress");
    let empty = json!({});
    let lb = new
        .get("status")
        .and_then(|s| get(s, "loadBalancer"))
        .unwrap_or(&empty);
    for (i, ing) in arr(lb, "ingress").iter().enumerate() {
        let p = path.index(i);
        let ip = st(ing, "ip");
        if !ip.is_empty() && !is_valid_ip(ip) {
            errs.push(invalid(&p.child("ip"), ip, "must be a valid IP address"));
        }
        let host = st(ing, "hostname");
        if !host.is_empty() {
            errs.extend(validate_dns1123_subdomain(host, &p.child("hostname")));
            if is_valid_ip(host) {
                errs.push(invalid(
                    &p.child("hostname"),
                    host,
                    "must be a DNS name, not an IP address",
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

    fn defaulted(spec: Value) -> Value {
        let mut s = json!({"spec": spec});
        default_service(&mut s);
        s
    }

    #[test]
    fn service_defaults() {
        let s = defaulted(json!({"ports": [{"port": 80}], "selector": {"app": "x"}}));
        assert_eq!(s["spec"]["type"], "ClusterIP");
        assert_eq!(s["spec"]["sessionAffinity"], "None");
        assert_eq!(s["spec"]["ports"][0]["protocol"], "TCP");
        assert_eq!(s["spec"]["ports"][0]["targetPort"], 80);
        assert_eq!(s["spec"]["internalTrafficPolicy"], "Cluster");
        assert_eq!(s["spec"].get("externalTrafficPolicy"), None);
        assert!(validate_service(&s).is_empty());

        let s =
            defaulted(json!({"type": "NodePort", "ports": [{"port": 80, "targetPort": "http"}]}));
        assert_eq!(s["spec"]["externalTrafficPolicy"], "Cluster");
        assert_eq!(s["spec"]["ports"][0]["targetPort"], "http");
        let s = defaulted(json!({"type": "LoadBalancer", "ports": [{"port": 80}]}));
        assert_eq!(s["spec"]["allocateLoadBalancerNodePorts"], true);
        let s = defaulted(json!({"type": "ExternalName", "externalName": "example.com"}));
        assert_eq!(s["spec"].get("internalTrafficPolicy"), None);
        assert!(validate_service(&s).is_empty());
        let s = defaulted(json!({"sessionAffinity": "ClientIP", "ports": [{"port": 80}]}));
        assert_eq!(
            s["spec"]["sessionAffinityConfig"]["clientIP"]["timeoutSeconds"],
            10800
        );
    }

    #[test]
    fn service_errors() {
        let cases: Vec<(Value, Vec<&str>)> = vec![
            (json!({}), vec!["spec.ports: Required value"]),
            (json!({"ports": [{"port": 80}, {"port": 81}]}), vec!["spec.ports[0].name: Required value", "spec.ports[1].name: Required value"]),
            (json!({"ports": [{"name": "a", "port": 80}, {"name": "a", "port": 81}]}), vec!["spec.ports[1].name: Duplicate value: \"a\""]),
            (json!({"ports": [{"port": 0}]}), vec!["spec.ports[0].port: Invalid value: 0: must be between 1 and 65535, inclusive", "spec.ports[0].targetPort: Invalid value: 0: must be between 1 and 65535, inclusive"]),
            (json!({"type": "Foo", "ports": [{"port": 80}]}), vec!["spec.type: Unsupported value: \"Foo\": supported values: \"ClusterIP\", \"ExternalName\", \"LoadBalancer\", \"NodePort\""]),
            (json!({"type": "ExternalName"}), vec!["spec.externalName: Required value"]),
            (json!({"ports": [{"port": 80, "nodePort": 30000}]}), vec!["spec.ports[0].nodePort: Forbidden: may not be used when `type` is 'ClusterIP'"]),
            (json!({"selector": {"app": "a b"}, "ports": [{"port": 80}]}), vec!["spec.selector: Invalid value: \"a b\": a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"]),
            (json!({"ports": [{"name": "a", "port": 80}, {"name": "b", "port": 80}]}), vec!["spec.ports[1]: Duplicate value: core.ServicePort{Name:\"\", Protocol:\"TCP\", AppProtocol:(*string)(nil), Port:80, TargetPort:intstr.IntOrString{Type:0, IntVal:0, StrVal:\"\"}, NodePort:0}"]),
            (json!({"clusterIP": "300.1.1.1", "ports": [{"port": 80}]}), vec!["spec.clusterIPs[0]: Invalid value: \"300.1.1.1\": must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)"]),
        ];
        for (spec, want) in cases {
            assert_eq!(
                msgs(&validate_service(&defaulted(spec.clone()))),
                want,
                "{spec}"
            );
        }
    }

    #[test]
    fn cluster_ip_is_immutable() {
        let old = defaulted(json!({"clusterIP": "10.0.0.1", "ports": [{"port": 80}]}));
        let mut new = old.clone();
        new["spec"]["clusterIP"] = json!("10.0.0.2");
        new["spec"]["clusterIPs"] = json!(["10.0.0.2"]);
        assert_eq!(
            msgs(&validate_service_update(&new, &old)),
            vec!["spec.clusterIPs[0]: Invalid value: []string{\"10.0.0.2\"}: may not change once set"]
        );
        let mut new = old.clone();
        new["spec"]["ports"][0]["port"] = json!(81);
        assert!(validate_service_update(&new, &old).is_empty());
    }
}
