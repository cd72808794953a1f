//! Conversions between a served version and the stored form, for the few kinds served in
//! more than one shape: autoscaling/v1 HorizontalPodAutoscaler (stored as v2) and
//! events.k8s.io/v1 Event (stored as core/v1 Event, as upstream shares them).

use crate::resources::Resource;
use serde_json::{json, Map, Value};

/// Whether objects of `r` served at `version` differ from the stored form.
pub fn needs_conversion(r: &Resource, version: &str) -> bool {
    matches!(
        (r.group, version),
        ("autoscaling", "v1") | ("events.k8s.io", _)
    )
}

/// The apiVersion of the stored form of `r`.
pub fn storage_api_version(r: &Resource) -> String {
    if r.group == "events.k8s.io" {
        "v1".into()
    } else {
        r.api_version(r.storage_version())
    }
}

/// Convert a stored object to the served version.
pub fn from_storage(r: &Resource, version: &str, obj: Value) -> Value {
    match (r.group, version) {
        ("autoscaling", "v1") => hpa_v2_to_v1(obj),
        ("events.k8s.io", _) => core_event_to_events_v1(obj),
        _ => obj,
    }
}

/// Convert an object of the served version to the stored form.
pub fn to_storage(r: &Resource, version: &str, obj: Value) -> Value {
    match (r.group, version) {
        ("autoscaling", "v1") => hpa_v1_to_v2(obj),
        ("events.k8s.io", _) => events_v1_to_core_event(obj),
        _ => obj,
    }
}

fn take(m: &mut Map<String, Value>, k: &str) -> Option<Value> {
    m.remove(k)
}

fn hpa_v2_to_v1(mut obj: Value) -> Value {
    obj["apiVersion"] = json!("autoscaling/v1");
    if let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) {
        let cpu = spec
            .get("metrics")
            .and_then(Value::as_array)
            .and_then(|ms| {
                ms.iter().find_map(|m| {
                    let res = m.get("resource")?;
                    (m.get("type")?.as_str()? == "Resource" && res.get("name")?.as_str()? == "cpu")
                        .then(|| res.get("target")?.get("averageUtilization").cloned())
                        .flatten()
                })
            });
        spec.remove("metrics");
        spec.remove("behavior");
        if let Some(c) = cpu {
            spec.insert("targetCPUUtilizationPercentage".into(), c);
        }
    }
    if let Some(status) = obj.get_mut("status").and_then(Value::as_object_mut) {
        let cpu = status
            .get("currentMetrics")
            .and_then(Value::as_array)
            .and_then(|ms| {
                ms.iter().find_map(|m| {
                    let res = m.get("resource")?;
                    (res.get("name")?.as_str()? == "cpu")
                        .then(|| res.get("current")?.get("averageUtilization").cloned())
                        .flatten()
                })
            });
        status.remove("currentMetrics");
        status.remove("conditions");
        if let Some(c) = cpu {
            status.insert("currentCPUUtilizationPercentage".into(), c);
        }
    }
    obj
}

fn hpa_v1_to_v2(mut obj: Value) -> Value {
    obj["apiVersion"] = json!("autoscaling/v2");
    if let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) {
        if let Some(c) = take(spec, "targetCPUUtilizationPercentage") {
            spec.insert(
                "metrics".into(),
                json!([{"type":"Resource","resource":{"name":"cpu","target":{"type":"Utilization","averageUtilization":c}}}]),
            );
        }
    }
    if let Some(status) = obj.get_mut("status").and_then(Value::as_object_mut) {
        if let Some(c) = take(status, "currentCPUUtilizationPercentage") {
            status.insert(
                "currentMetrics".into(),
                json!([{"type":"Resource","resource":{"name":"cpu","current":{"averageUtilization":c}}}]),
            );
        }
    }
    obj
}

const RENAMES: &[(&str, &str)] = &[
    ("involvedObject", "regarding"),
    ("message", "note"),
    ("source", "deprecatedSource"),
    ("firstTimestamp", "deprecatedFirstTimestamp"),
    ("lastTimestamp", "deprecatedLastTimestamp"),
    ("count", "deprecatedCount"),
    ("reportingComponent", "reportingController"),
];

fn core_event_to_events_v1(mut obj: Value) -> Value {
    if let Some(m) = obj.as_object_mut() {
        for (core, ev) in RENAMES {
            if let Some(v) = m.remove(*core) {
                m.insert((*ev).into(), v);
            }
        }
        m.insert("apiVersion".into(), json!("events.k8s.io/v1"));
    }
    obj
}

fn events_v1_to_core_event(mut obj: Value) -> Value {
    if let Some(m) = obj.as_object_mut() {
        for (core, ev) in RENAMES {
            if let Some(v) = m.remove(*ev) {
                m.insert((*core).into(), v);
            }
        }
        // Upstream's Convert_v1_Event_To_core_Event is a pure rename: `source` comes from
        // `deprecatedSource` only (kubectl falls back to reportingController/Instance itself).
        m.insert("apiVersion".into(), json!("v1"));
    }
    obj
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::lookup;

    #[test]
    fn hpa_round_trips_cpu_target() {
        let r = lookup("autoscaling", "v1", "horizontalpodautoscalers").unwrap();
        let v1 = json!({"apiVersion":"autoscaling/v1","kind":"HorizontalPodAutoscaler","spec":{"maxReplicas":5,"targetCPUUtilizationPercentage":50}});
        let stored = to_storage(r, "v1", v1.clone());
        assert_eq!(
            stored["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"],
            50
        );
        assert_eq!(from_storage(r, "v1", stored), v1);
    }

    #[test]
    fn events_rename_fields() {
        let r = lookup("events.k8s.io", "v1", "events").unwrap();
        let core = json!({"apiVersion":"v1","kind":"Event","involvedObject":{"name":"p"},"message":"hi","count":2});
        let ev = from_storage(r, "v1", core.clone());
        assert_eq!(ev["regarding"]["name"], "p");
        assert_eq!(ev["note"], "hi");
        assert_eq!(to_storage(r, "v1", ev), core);
        let new = json!({"apiVersion":"events.k8s.io/v1","kind":"Event","regarding":{"name":"p"},"reportingController":"c","reportingInstance":"i"});
        let stored = to_storage(r, "v1", new.clone());
        assert_eq!(stored["reportingComponent"], "c");
        assert!(
            stored.get("source").is_none(),
            "upstream derives no source: {stored}"
        );
        assert_eq!(from_storage(r, "v1", stored), new);
    }
}
