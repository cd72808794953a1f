//! Defaulting and validation of every served kind, matching upstream's `pkg/apis/*/v1/defaults.go`
//! (with the generated defaulters) and `pkg/apis/*/validation`: the same defaults, and field
//! errors with the same paths, types and messages, so the API server's 422 bodies read exactly
//! as kube-apiserver's.
//!
//! Everything is a pure function over objects in their external JSON form. Kinds without
//! dedicated rules get object-metadata validation only.

mod apps;
mod batch;
mod core;
mod meta;
mod others;
mod util;

use apimachinery::errors::FieldError;
use serde_json::Value;
use util::NameRule;

/// How a kind's objects are named and scoped.
struct KindInfo {
    name: NameRule,
    namespaced: bool,
}

fn kind_info(group: &str, kind: &str) -> KindInfo {
    let (name, namespaced) = match (group, kind) {
        ("", "Namespace") => (NameRule::Label, false),
        ("", "Service") => (NameRule::Dns1035, true),
        ("", "Node" | "PersistentVolume") => (NameRule::Subdomain, false),
        ("rbac.authorization.k8s.io", "Role" | "RoleBinding") => (NameRule::PathSegment, true),
        ("rbac.authorization.k8s.io", "ClusterRole" | "ClusterRoleBinding") => {
            (NameRule::PathSegment, false)
        }
        ("autoscaling", "HorizontalPodAutoscaler") => (NameRule::PathSegment, true),
        ("certificates.k8s.io", "CertificateSigningRequest") => (NameRule::PathSegment, false),
        (
            "storage.k8s.io"
            | "scheduling.k8s.io"
            | "networking.k8s.io"
            | "apiextensions.k8s.io"
            | "admissionregistration.k8s.io"
            | "apiregistration.k8s.io"
            | "node.k8s.io"
            | "flowcontrol.apiserver.k8s.io",
            k,
        ) if !matches!(k, "Ingress" | "NetworkPolicy" | "CSIStorageCapacity") => {
            (NameRule::Subdomain, false)
        }
        _ => (NameRule::Subdomain, true),
    };
    KindInfo { name, namespaced }
}

/// Apply upstream's defaulting for group/version/kind, in place.
pub fn default_object(group: &str, version: &str, kind: &str, obj: &mut Value) {
    if !obj.is_object() {
        return;
    }
    match (group, kind) {
        ("", "Pod") => core::pod::default_pod(obj),
        ("", "Service") => core::service::default_service(obj),
        ("", k) => core::misc::default(k, obj),
        ("apps", k) => apps::default(k, obj),
        ("batch", k) => batch::default(k, obj),
        (g, k) => others::default(g, k, version, obj),
    }
}

/// Validate an object on create (`old = None`) or update (`old = Some`).
pub fn validate(
    group: &str,
    _version: &str,
    kind: &str,
    obj: &Value,
    old: Option<&Value>,
) -> Vec<FieldError> {
    let info = kind_info(group, kind);
    let mut errs = match old {
        None => meta::validate_object_meta(obj, info.name, info.namespaced),
        Some(old) => meta::validate_object_meta_update(obj, old),
    };
    match (group, kind, old) {
        ("", "Pod", None) => errs.extend(core::pod::validate_pod(obj)),
        ("", "Pod", Some(old)) => errs.extend(core::pod::validate_pod_update(obj, old)),
        ("", "Service", None) => errs.extend(core::service::validate_service(obj)),
        ("", "Service", Some(old)) => errs.extend(core::service::validate_service_update(obj, old)),
        ("", k, old) => errs.extend(core::misc::validate(k, obj, old)),
        ("apps", k, old) => errs.extend(apps::validate(k, obj, old)),
        ("batch", k, old) => errs.extend(batch::validate(k, obj, old)),
        (g, k, old) => errs.extend(others::validate(g, k, obj, old)),
    }
    dedup(errs)
}

/// Upstream aggregates field errors by message (`ErrorList.ToAggregate`), dropping repeats.
fn dedup(errs: Vec<FieldError>) -> Vec<FieldError> {
    let mut seen = std::collections::HashSet::new();
    errs.into_iter()
        .filter(|e| seen.insert(e.message()))
        .collect()
}

/// Validation of the status subresource on update.
pub fn validate_status_update(
    group: &str,
    _version: &str,
    kind: &str,
    obj: &Value,
    old: &Value,
) -> Vec<FieldError> {
    let mut errs = meta::validate_object_meta_update(obj, old);
    match (group, kind) {
        ("", "Pod") => errs.extend(core::pod::validate_pod_status_update(obj, old)),
        ("", "Service") => errs.extend(core::service::validate_service_status(obj)),
        ("apps", k) => errs.extend(apps::validate_status(k, obj)),
        ("batch", k) => errs.extend(batch::validate_status(k, obj)),
        _ => {}
    }
    dedup(errs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn msgs(errs: &[FieldError]) -> Vec<String> {
        errs.iter().map(FieldError::message).collect()
    }

    #[test]
    fn pod_create_reports_metadata_then_spec_errors() {
        let mut pod =
            json!({"metadata": {"name": "Web_1"}, "spec": {"containers": [{"name": "web"}]}});
        default_object("", "v1", "Pod", &mut pod);
        assert_eq!(
            msgs(&validate("", "v1", "Pod", &pod, None)),
            vec![
                "metadata.name: Invalid value: \"Web_1\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')",
                "spec.containers[0].image: Required value",
            ]
        );
    }

    #[test]
    fn service_names_are_dns1035_labels_and_namespaces_are_labels() {
        let svc = json!({"metadata": {"name": "1svc"}, "spec": {"ports": [{"port": 80}]}});
        let mut svc2 = svc.clone();
        default_object("", "v1", "Service", &mut svc2);
        let m = msgs(&validate("", "v1", "Service", &svc2, None));
        assert_eq!(m.len(), 1);
        assert!(m[0].starts_with("metadata.name: Invalid value: \"1svc\": a DNS-1035 label"));
        let ns = json!({"metadata": {"name": "a.b"}});
        assert!(msgs(&validate("", "v1", "Namespace", &ns, None))[0].contains("RFC 1123 label"));
    }

    #[test]
    fn unknown_kinds_get_metadata_validation_only() {
        let obj = json!({"metadata": {"name": "ok"}, "spec": {"anything": 1}});
        assert!(validate("example.com", "v1", "Widget", &obj, None).is_empty());
        let mut obj2 = obj.clone();
        default_object("example.com", "v1", "Widget", &mut obj2);
        assert_eq!(obj, obj2);
    }

    #[test]
    fn repeated_messages_are_reported_once() {
        let errs = vec![FieldError::required("a", ""), FieldError::required("a", "")];
        assert_eq!(dedup(errs).len(), 1);
    }
}
