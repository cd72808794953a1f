//! Server-side Table printing: the column definitions and row cells kube-apiserver returns for
//! `Accept: application/json;as=Table;g=meta.k8s.io;v=v1`, which is what `kubectl get` prints.
//!
//! This mirrors upstream's `pkg/printers/internalversion/printers.go` as the API server runs it
//! (always with `GenerateOptions{Wide: true}`, so every row carries the `-o wide` cells too;
//! kubectl hides `priority > 0` columns itself), and `rest.NewDefaultTableConvertor` (Name,
//! Created At) for kinds upstream has no printer for (Role, ClusterRole, LimitRange, ...).
//! Objects are taken as their stored JSON; fields that upstream's defaulting always sets are
//! defaulted the same way when absent.

mod columns;
mod docs;
mod format;
mod rows;

use chrono::{DateTime, TimeDelta, Utc};
use serde_json::Value;

/// Column definitions for a kind (meta.k8s.io/v1 `TableColumnDefinition` JSON objects with
/// `name`, `type`, `format`, `description` and `priority`, all always present as upstream).
pub fn columns(group: &str, kind: &str) -> Vec<Value> {
    columns::columns(Printer::of(group, kind))
}

/// Cells of one row, in column order: strings, integers as JSON numbers and booleans exactly
/// where upstream's printer emits them.
pub fn cells(group: &str, kind: &str, obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    rows::cells(Printer::of(group, kind), obj, now)
}

/// Upstream's `translateTimestampSince`: the [`human_duration`] since `created` (an RFC 3339
/// timestamp), or `<unknown>` when it is absent or unparsable.
pub fn age(created: Option<&str>, now: DateTime<Utc>) -> String {
    match created.and_then(parse_time) {
        Some(t) => human_duration(now - t),
        None => "<unknown>".to_string(),
    }
}

/// Upstream's `duration.HumanDuration`: "5s", "3m2s", "10m", "2h5m", "20h", "2d3h", "45d",
/// "2y30d", "9y"; "0s" for up to a second in the future and "<invalid>" beyond that.
pub fn human_duration(d: TimeDelta) -> String {
    // Go converts to whole units by truncation toward zero; so does integer division here.
    let millis = d.num_milliseconds();
    let seconds = millis / 1000;
    if seconds < -1 {
        return "<invalid>".to_string();
    } else if seconds < 0 {
        return "0s".to_string();
    } else if seconds < 60 * 2 {
        return format!("{seconds}s");
    }
    let minutes = seconds / 60;
    if minutes < 10 {
        let s = seconds % 60;
        if s == 0 {
            return format!("{minutes}m");
        }
        return format!("{minutes}m{s}s");
    } else if minutes < 60 * 3 {
        return format!("{minutes}m");
    }
    let hours = seconds / 3600;
    if hours < 8 {
        let m = minutes % 60;
        if m == 0 {
            return format!("{hours}h");
        }
        format!("{hours}h{m}m")
    } else if hours < 48 {
        format!("{hours}h")
    } else if hours < 24 * 8 {
        let h = hours % 24;
        if h == 0 {
            return format!("{}d", hours / 24);
        }
        format!("{}d{}h", hours / 24, h)
    } else if hours < 24 * 365 * 2 {
        format!("{}d", hours / 24)
    } else if hours < 24 * 365 * 8 {
        let dy = (hours / 24) % 365;
        if dy == 0 {
            return format!("{}y", hours / 24 / 365);
        }
        format!("{}y{}d", hours / 24 / 365, dy)
    } else {
        format!("{}y", hours / 24 / 365)
    }
}

pub(crate) fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// Which upstream print handler serves a kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Printer {
    Pod,
    PodTemplate,
    PodDisruptionBudget,
    ReplicationController,
    ReplicaSet,
    DaemonSet,
    Job,
    CronJob,
    Service,
    Ingress,
    IngressClass,
    StatefulSet,
    Endpoints,
    Node,
    Event,
    Namespace,
    Secret,
    ServiceAccount,
    PersistentVolume,
    PersistentVolumeClaim,
    Deployment,
    HorizontalPodAutoscaler,
    ConfigMap,
    NetworkPolicy,
    RoleBinding,
    ClusterRoleBinding,
    CertificateSigningRequest,
    Lease,
    StorageClass,
    ControllerRevision,
    ResourceQuota,
    PriorityClass,
    EndpointSlice,
    RuntimeClass,
    WebhookConfiguration,
    /// `rest.NewDefaultTableConvertor`: Name, Created At.
    Default,
}

impl Printer {
    fn of(group: &str, kind: &str) -> Self {
        use Printer::*;
        let group = if group == "core" { "" } else { group };
        match (group, kind) {
            ("", "Pod") => Pod,
            ("", "PodTemplate") => PodTemplate,
            ("", "ReplicationController") => ReplicationController,
            ("", "Service") => Service,
            ("", "Endpoints") => Endpoints,
            ("", "Node") => Node,
            ("", "Event") | ("events.k8s.io", "Event") => Event,
            ("", "Namespace") => Namespace,
            ("", "Secret") => Secret,
            ("", "ServiceAccount") => ServiceAccount,
            ("", "PersistentVolume") => PersistentVolume,
            ("", "PersistentVolumeClaim") => PersistentVolumeClaim,
            ("", "ConfigMap") => ConfigMap,
            ("", "ResourceQuota") => ResourceQuota,
            ("apps" | "extensions", "Deployment") => Deployment,
            ("apps" | "extensions", "ReplicaSet") => ReplicaSet,
            ("apps" | "extensions", "DaemonSet") => DaemonSet,
            ("apps", "StatefulSet") => StatefulSet,
            ("apps", "ControllerRevision") => ControllerRevision,
            ("batch", "Job") => Job,
            ("batch", "CronJob") => CronJob,
            ("networking.k8s.io" | "extensions", "Ingress") => Ingress,
            ("networking.k8s.io", "IngressClass") => IngressClass,
            ("networking.k8s.io" | "extensions", "NetworkPolicy") => NetworkPolicy,
            ("coordination.k8s.io", "Lease") => Lease,
            ("discovery.k8s.io", "EndpointSlice") => EndpointSlice,
            ("rbac.authorization.k8s.io", "RoleBinding") => RoleBinding,
            ("rbac.authorization.k8s.io", "ClusterRoleBinding") => ClusterRoleBinding,
            ("storage.k8s.io", "StorageClass") => StorageClass,
            ("autoscaling", "HorizontalPodAutoscaler") => HorizontalPodAutoscaler,
            ("policy", "PodDisruptionBudget") => PodDisruptionBudget,
            ("scheduling.k8s.io", "PriorityClass") => PriorityClass,
            ("certificates.k8s.io", "CertificateSigningRequest") => CertificateSigningRequest,
            ("node.k8s.io", "RuntimeClass") => RuntimeClass,
            (
                "admissionregistration.k8s.io",
                "MutatingWebhookConfiguration" | "ValidatingWebhookConfiguration",
            ) => WebhookConfiguration,
            _ => Default,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn human_duration_matches_upstream_table() {
        let cases = [
            (-5, "<invalid>"),
            (-1, "0s"),
            (0, "0s"),
            (5, "5s"),
            (119, "119s"),
            (120, "2m"),
            (182, "3m2s"),
            (599, "9m59s"),
            (600, "10m"),
            (3 * 3600 - 1, "179m"),
            (3 * 3600, "3h"),
            (3 * 3600 + 5 * 60, "3h5m"),
            (8 * 3600, "8h"),
            (47 * 3600 + 3599, "47h"),
            (48 * 3600, "2d"),
            (2 * 86400 + 3 * 3600, "2d3h"),
            (8 * 86400, "8d"),
            (729 * 86400, "729d"),
            (730 * 86400, "2y"),
            (760 * 86400, "2y30d"),
            (8 * 365 * 86400, "8y"),
        ];
        for (secs, want) in cases {
            assert_eq!(human_duration(TimeDelta::seconds(secs)), want, "{secs}s");
        }
    }

    #[test]
    fn age_is_unknown_without_a_timestamp() {
        let now = Utc.with_ymd_and_hms(2024, 1, 1, 0, 10, 0).unwrap();
        assert_eq!(age(None, now), "<unknown>");
        assert_eq!(age(Some("garbage"), now), "<unknown>");
        assert_eq!(age(Some("2024-01-01T00:00:00Z"), now), "10m");
        assert_eq!(age(Some("2024-01-01T00:09:55Z"), now), "5s");
        assert_eq!(age(Some("2024-01-01T00:09:55.123456Z"), now), "4s");
    }

    #[test]
    fn every_printer_has_a_name_column_with_name_format() {
        let kinds = [
            ("", "Pod"),
            ("", "PodTemplate"),
            ("", "ReplicationController"),
            ("", "Service"),
            ("", "Endpoints"),
            ("", "Node"),
            ("", "Event"),
            ("events.k8s.io", "Event"),
            ("", "Namespace"),
            ("", "Secret"),
            ("", "ServiceAccount"),
            ("", "PersistentVolume"),
            ("", "PersistentVolumeClaim"),
            ("", "ConfigMap"),
            ("", "ResourceQuota"),
            ("", "LimitRange"),
            ("apps", "Deployment"),
            ("apps", "ReplicaSet"),
            ("apps", "DaemonSet"),
            ("apps", "StatefulSet"),
            ("apps", "ControllerRevision"),
            ("batch", "Job"),
            ("batch", "CronJob"),
            ("networking.k8s.io", "Ingress"),
            ("networking.k8s.io", "IngressClass"),
            ("networking.k8s.io", "NetworkPolicy"),
            ("coordination.k8s.io", "Lease"),
            ("discovery.k8s.io", "EndpointSlice"),
            ("rbac.authorization.k8s.io", "Role"),
            ("rbac.authorization.k8s.io", "ClusterRole"),
            ("rbac.authorization.k8s.io", "RoleBinding"),
            ("rbac.authorization.k8s.io", "ClusterRoleBinding"),
            ("storage.k8s.io", "StorageClass"),
            ("autoscaling", "HorizontalPodAutoscaler"),
            ("policy", "PodDisruptionBudget"),
            ("scheduling.k8s.io", "PriorityClass"),
            ("certificates.k8s.io", "CertificateSigningRequest"),
            ("node.k8s.io", "RuntimeClass"),
            (
                "admissionregistration.k8s.io",
                "MutatingWebhookConfiguration",
            ),
            ("example.com", "Widget"),
        ];
        let now = Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).unwrap();
        for (g, k) in kinds {
            let cols = columns(g, k);
            let names: Vec<_> = cols.iter().filter(|c| c["name"] == "Name").collect();
            assert_eq!(names.len(), 1, "{g}/{k}");
            assert_eq!(names[0]["format"], "name", "{g}/{k}");
            for c in &cols {
                for field in ["name", "type", "format", "description", "priority"] {
                    assert!(c.get(field).is_some(), "{g}/{k} column {c} lacks {field}");
                }
            }
            let obj = serde_json::json!({"metadata": {"name": "x"}});
            assert_eq!(cells(g, k, &obj, now).len(), cols.len(), "{g}/{k}");
        }
    }
}
