//! The downward API as upstream's `fieldpath` package computes it: pod metadata fields and
//! container resource values (with divisors, and node allocatable standing in for unset
//! limits). Pure functions, shared by downwardAPI volumes and (for the pod worker) env vars.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Pod, ResourceFieldSelector};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

/// What the node can give pods; used for `limits.*` of containers that set none.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NodeAllocatable {
    pub cpu_milli: i64,
    pub memory: i64,
    pub ephemeral_storage: i64,
}

impl NodeAllocatable {
    /// This host's CPUs and memory (ephemeral storage unknown: 0), until the node module knows
    /// better.
    pub fn from_host() -> Self {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as i64;
        let memory = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("MemTotal:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<i64>().ok())
            })
            .map_or(0, |kb| kb * 1024);
        NodeAllocatable {
            cpu_milli: cpus * 1000,
            memory,
            ephemeral_storage: 0,
        }
    }
}

/// The value of a `fieldRef` allowed in downwardAPI volumes (`metadata.name`, `.namespace`,
/// `.uid`, `.labels`, `.annotations`, `.labels['k']`, `.annotations['k']`).
pub fn field_ref_value(pod: &Pod, field_path: &str) -> Result<String, String> {
    let m = &pod.metadata;
    let empty = BTreeMap::new();
    if let Some((map, key)) = subscript(field_path) {
        let src = match map {
            "metadata.labels" => m.labels.as_ref(),
            "metadata.annotations" => m.annotations.as_ref(),
            _ => return Err(format!("unsupported fieldPath: {field_path}")),
        };
        return Ok(src.unwrap_or(&empty).get(key).cloned().unwrap_or_default());
    }
    Ok(match field_path {
        "metadata.name" => m.name.clone().unwrap_or_default(),
        "metadata.namespace" => m.namespace.clone().unwrap_or_default(),
        "metadata.uid" => m.uid.clone().unwrap_or_default(),
        "metadata.labels" => format_map(m.labels.as_ref().unwrap_or(&empty)),
        "metadata.annotations" => format_map(m.annotations.as_ref().unwrap_or(&empty)),
        _ => return Err(format!("unsupported fieldPath: {field_path}")),
    })
}

/// `metadata.labels['key']` → (`metadata.labels`, `key`).
fn subscript(path: &str) -> Option<(&str, &str)> {
    let (map, rest) = path.split_once("['")?;
    Some((map, rest.strip_suffix("']")?))
}

/// Upstream's `FormatMap`: `key="value"` lines in key order, values Go-quoted, no final newline.
pub fn format_map(m: &BTreeMap<String, String>) -> String {
    m.iter()
        .map(|(k, v)| format!("{k}={}", go_quote(v)))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Go's `%q` for a string.
pub fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\u{b}' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            c if c.is_control() => {
                if (c as u32) < 0x10000 {
                    out.push_str(&format!("\\u{:04x}", c as u32))
                } else {
                    out.push_str(&format!("\\U{:08x}", c as u32))
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The container named `name` among the pod's containers and init containers.
pub fn find_container<'a>(pod: &'a Pod, name: &str) -> Option<&'a Container> {
    let spec = pod.spec.as_ref()?;
    spec.containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .find(|c| c.name == name)
}

/// The value of a `resourceFieldRef` (`limits.cpu`, `requests.memory`, `limits.hugepages-2Mi`…)
/// for `container`, divided by the divisor and rounded up, as upstream formats it. Unset
/// cpu, memory and ephemeral-storage limits are the node's allocatable.
pub fn resource_field_value(
    container: &Container,
    sel: &ResourceFieldSelector,
    alloc: &NodeAllocatable,
) -> Result<String, String> {
    let res = container.resources.as_ref();
    let get = |kind: &str, name: &str| -> Option<String> {
        let map = match kind {
            "limits" => res.and_then(|r| r.limits.as_ref()),
            _ => res.and_then(|r| r.requests.as_ref()),
        };
        map.and_then(|m| m.get(name)).map(|q| q.0.clone())
    };
    let divisor = sel
        .divisor
        .as_ref()
        .map(|Quantity(q)| q.as_str())
        .filter(|q| apimachinery::quantity::parse_milli(q).is_some_and(|v| v != 0))
        .unwrap_or("1");
    let (kind, name) = sel
        .resource
        .split_once('.')
        .filter(|(k, _)| *k == "limits" || *k == "requests")
        .ok_or_else(|| format!("unsupported container resource : {}", sel.resource))?;
    let value = get(kind, name);
    let is_cpu = name == "cpu";
    let known = matches!(name, "cpu" | "memory" | "ephemeral-storage");
    if !known && !name.starts_with("hugepages-") {
        return Err(format!("unsupported container resource : {}", sel.resource));
    }
    if is_cpu {
        let v = match value {
            Some(q) => apimachinery::quantity::milli_value(&q).unwrap_or(0),
            None if kind == "limits" => alloc.cpu_milli,
            None => 0,
        };
        let d = apimachinery::quantity::milli_value(divisor).unwrap_or(1000);
        return Ok(div_ceil(v, d).to_string());
    }
    let v = match value {
        Some(q) => apimachinery::quantity::value(&q).unwrap_or(0),
        None if kind == "limits" && name == "memory" => alloc.memory,
        None if kind == "limits" && name == "ephemeral-storage" => alloc.ephemeral_storage,
        None => 0,
    };
    let d = apimachinery::quantity::value(divisor).unwrap_or(1);
    Ok(div_ceil(v, d).to_string())
}

fn div_ceil(v: i64, d: i64) -> i64 {
    if d == 0 {
        return v;
    }
    (v as f64 / d as f64).ceil() as i64
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodSpec, ResourceRequirements};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn pod() -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some("web".into()),
                namespace: Some("default".into()),
                uid: Some("u1".into()),
                labels: Some(BTreeMap::from([
                    ("app".into(), "web".into()),
                    ("tier".into(), "a \"b\"\n".into()),
                ])),
                ..Default::default()
            },
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "c".into(),
                    resources: Some(ResourceRequirements {
                        limits: Some(BTreeMap::from([
                            ("cpu".into(), Quantity("500m".into())),
                            ("memory".into(), Quantity("64Mi".into())),
                        ])),
                        requests: Some(BTreeMap::from([("cpu".into(), Quantity("250m".into()))])),
                        ..Default::default()
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn field_refs_as_upstream_formats_them() {
        let p = pod();
        for (path, want) in [
            ("metadata.name", "web"),
            ("metadata.namespace", "default"),
            ("metadata.uid", "u1"),
            ("metadata.labels", "app=\"web\"\ntier=\"a \\\"b\\\"\\n\""),
            ("metadata.labels['app']", "web"),
            ("metadata.annotations", ""),
            ("metadata.annotations['x']", ""),
        ] {
            assert_eq!(field_ref_value(&p, path).unwrap(), want, "{path}");
        }
        assert_eq!(
            field_ref_value(&p, "spec.nodeName").unwrap_err(),
            "unsupported fieldPath: spec.nodeName"
        );
    }

    #[test]
    fn resource_values_with_divisors_and_allocatable_defaults() {
        let p = pod();
        let c = &p.spec.as_ref().unwrap().containers[0];
        let alloc = NodeAllocatable {
            cpu_milli: 4000,
            memory: 8 << 30,
            ephemeral_storage: 10 << 30,
        };
        let sel = |r: &str, d: Option<&str>| ResourceFieldSelector {
            container_name: Some("c".into()),
            resource: r.into(),
            divisor: d.map(|d| Quantity(d.into())),
        };
        for (r, d, want) in [
            ("limits.cpu", None, "1"),
            ("limits.cpu", Some("1m"), "500"),
            ("requests.cpu", Some("1m"), "250"),
            ("limits.memory", None, "67108864"),
            ("limits.memory", Some("1Mi"), "64"),
            ("requests.memory", None, "0"),
            ("limits.ephemeral-storage", Some("1Gi"), "10"),
            ("limits.hugepages-2Mi", None, "0"),
        ] {
            assert_eq!(
                resource_field_value(c, &sel(r, d), &alloc).unwrap(),
                want,
                "{r} {d:?}"
            );
        }
        let mut no_limits = c.clone();
        no_limits.resources = None;
        assert_eq!(
            resource_field_value(&no_limits, &sel("limits.cpu", None), &alloc).unwrap(),
            "4"
        );
        assert!(resource_field_value(c, &sel("limits.gpu", None), &alloc).is_err());
    }

    #[test]
    fn go_quote_escapes_like_go() {
        assert_eq!(go_quote("a\tb\u{1}é"), "\"a\\tb\\x01é\"");
    }
}
