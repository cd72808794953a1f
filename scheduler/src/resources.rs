//! Resource quantities and pod requests as the scheduler accounts them.
//!
//! Quantities are parsed once into integers (milli-CPU, bytes, counts), rounding up as
//! upstream's `Quantity.MilliValue()`/`Value()` do. A pod's request is upstream's
//! `PodRequests`: the sum of its containers plus restartable (sidecar) init containers, or the
//! largest non-restartable init container plus the sidecars started before it if that is more,
//! plus `spec.overhead`.

use k8s_openapi::api::core::v1::{Container, PodSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use std::collections::BTreeMap;

/// The default CPU request assumed for scoring a container without one (upstream 100m).
pub const DEFAULT_MILLI_CPU_REQUEST: i64 = 100;
/// The default memory request assumed for scoring a container without one (upstream 200 MiB).
pub const DEFAULT_MEMORY_REQUEST: i64 = 200 * 1024 * 1024;

pub use apimachinery::quantity::parse_milli;

/// A quantity in milli-units (CPU).
pub fn milli_value(q: &Quantity) -> i64 {
    parse_milli(&q.0)
        .map(|v| v.clamp(i64::MIN as i128, i64::MAX as i128) as i64)
        .unwrap_or(0)
}

/// A quantity in whole units, rounded up (memory, storage, counts, extended resources).
pub fn value(q: &Quantity) -> i64 {
    parse_milli(&q.0)
        .map(|v| ((v + 999).div_euclid(1000)).clamp(i64::MIN as i128, i64::MAX as i128) as i64)
        .unwrap_or(0)
}

/// A set of resource amounts: CPU in milli-cores, memory and ephemeral storage in bytes, the
/// pod count, and extended/hugepage resources by name in whole units.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Resources {
    pub milli_cpu: i64,
    pub memory: i64,
    pub ephemeral_storage: i64,
    pub allowed_pods: i64,
    pub scalar: BTreeMap<String, i64>,
}

impl Resources {
    /// Read a `ResourceList` (requests, limits, capacity or allocatable).
    pub fn from_list(list: &BTreeMap<String, Quantity>) -> Self {
        let mut r = Resources::default();
        for (name, q) in list {
            r.set(name, q);
        }
        r
    }

    fn set(&mut self, name: &str, q: &Quantity) {
        match name {
            "cpu" => self.milli_cpu = milli_value(q),
            "memory" => self.memory = value(q),
            "ephemeral-storage" => self.ephemeral_storage = value(q),
            "pods" => self.allowed_pods = value(q),
            other if is_scalar(other) => {
                self.scalar.insert(other.to_string(), value(q));
            }
            _ => {}
        }
    }

    pub fn add(&mut self, o: &Resources) {
        self.milli_cpu += o.milli_cpu;
        self.memory += o.memory;
        self.ephemeral_storage += o.ephemeral_storage;
        self.allowed_pods += o.allowed_pods;
        for (k, v) in &o.scalar {
            *self.scalar.entry(k.clone()).or_default() += v;
        }
    }

    pub fn sub(&mut self, o: &Resources) {
        self.milli_cpu -= o.milli_cpu;
        self.memory -= o.memory;
        self.ephemeral_storage -= o.ephemeral_storage;
        self.allowed_pods -= o.allowed_pods;
        for (k, v) in &o.scalar {
            let e = self.scalar.entry(k.clone()).or_default();
            *e -= v;
            if *e == 0 {
                self.scalar.remove(k);
            }
        }
    }

    /// Element-wise maximum.
    pub fn max_with(&mut self, o: &Resources) {
        self.milli_cpu = self.milli_cpu.max(o.milli_cpu);
        self.memory = self.memory.max(o.memory);
        self.ephemeral_storage = self.ephemeral_storage.max(o.ephemeral_storage);
        self.allowed_pods = self.allowed_pods.max(o.allowed_pods);
        for (k, v) in &o.scalar {
            let e = self.scalar.entry(k.clone()).or_default();
            *e = (*e).max(*v);
        }
    }

    pub fn is_zero(&self) -> bool {
        self.milli_cpu == 0
            && self.memory == 0
            && self.ephemeral_storage == 0
            && self.scalar.values().all(|v| *v == 0)
    }
}

/// Extended resources (`example.com/gpu`), hugepages and attachable-volume counts: the
/// resources the scheduler accounts by name (upstream `IsScalarResourceName`).
pub fn is_scalar(name: &str) -> bool {
    name.starts_with("hugepages-")
        || name.starts_with("attachable-volumes-")
        || (name.contains('/')
            && !name.starts_with("kubernetes.io/")
            && !name.starts_with("requests."))
}

fn container_requests(c: &Container, non_zero: bool) -> Resources {
    let mut r = c
        .resources
        .as_ref()
        .and_then(|r| r.requests.as_ref())
        .map(Resources::from_list)
        .unwrap_or_default();
    // Requests default to limits when only limits are set (apiserver defaulting does this, but
    // the scheduler must not depend on it).
    if let Some(limits) = c.resources.as_ref().and_then(|r| r.limits.as_ref()) {
        let reqs = c.resources.as_ref().and_then(|r| r.requests.as_ref());
        for (k, q) in limits {
            if reqs.is_none_or(|m| !m.contains_key(k)) {
                r.set(k, q);
            }
        }
    }
    if non_zero {
        let reqs = c.resources.as_ref().and_then(|r| r.requests.as_ref());
        let has = |k: &str| {
            reqs.is_some_and(|m| m.contains_key(k))
                || c.resources
                    .as_ref()
                    .and_then(|r| r.limits.as_ref())
                    .is_some_and(|m| m.contains_key(k))
        };
        if !has("cpu") {
            r.milli_cpu = DEFAULT_MILLI_CPU_REQUEST;
        }
        if !has("memory") {
            r.memory = DEFAULT_MEMORY_REQUEST;
        }
    }
    r
}

/// The pod's effective request. With `non_zero`, containers without a CPU or memory request
/// count the scoring defaults (upstream `NonZeroRequested`).
pub fn pod_requests(spec: &PodSpec, non_zero: bool) -> Resources {
    let mut sum = Resources::default();
    for c in &spec.containers {
        sum.add(&container_requests(c, non_zero));
    }
    let mut sidecars = Resources::default();
    let mut init_max = Resources::default();
    for c in spec.init_containers.iter().flatten() {
        let r = container_requests(c, non_zero);
        if c.restart_policy.as_deref() == Some("Always") {
            sidecars.add(&r);
            init_max.max_with(&sidecars);
        } else {
            let mut with_sidecars = r;
            with_sidecars.add(&sidecars);
            init_max.max_with(&with_sidecars);
        }
    }
    sum.add(&sidecars);
    sum.max_with(&init_max);
    if let Some(o) = &spec.overhead {
        sum.add(&Resources::from_list(o));
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn quantities_parse_to_milli_units_rounding_up() {
        for (s, want) in [
            ("100m", Some(100)),
            ("1", Some(1000)),
            ("1.5", Some(1500)),
            ("0.0001", Some(1)),
            ("1Ki", Some(1_024_000)),
            ("128Mi", Some(128 * 1024 * 1024 * 1000)),
            ("1G", Some(1_000_000_000_000)),
            ("1e3", Some(1_000_000)),
            ("500k", Some(500_000_000)),
            ("250n", Some(1)),
            ("-1", Some(-1000)),
            ("abc", None),
            ("1Zi", None),
            ("", None),
        ] {
            assert_eq!(parse_milli(s), want, "{s}");
        }
        assert_eq!(value(&Quantity("1.5".into())), 2);
    }

    #[test]
    fn pod_requests_take_max_of_init_containers_sidecars_and_overhead() {
        let spec = |v: serde_json::Value| -> PodSpec { serde_json::from_value(v).unwrap() };
        let c = |name: &str, cpu: &str, mem: &str| json!({"name": name, "resources": {"requests": {"cpu": cpu, "memory": mem}}});
        let cases = [
            (
                "containers sum",
                spec(json!({"containers": [c("a", "100m", "1Mi"), c("b", "200m", "1Mi")]})),
                300,
                2 << 20,
            ),
            (
                "init larger",
                spec(
                    json!({"containers": [c("a", "100m", "1Mi")], "initContainers": [c("i", "1", "1Mi")]}),
                ),
                1000,
                1 << 20,
            ),
            (
                "overhead added",
                spec(json!({"containers": [c("a", "100m", "1Mi")], "overhead": {"cpu": "50m"}})),
                150,
                1 << 20,
            ),
            (
                "sidecar adds to containers",
                spec(
                    json!({"containers": [c("a", "100m", "1Mi")], "initContainers": [{"name": "s", "restartPolicy": "Always", "resources": {"requests": {"cpu": "100m"}}}]}),
                ),
                200,
                1 << 20,
            ),
            (
                "limits only",
                spec(
                    json!({"containers": [{"name": "a", "resources": {"limits": {"cpu": "2", "memory": "1Gi"}}}]}),
                ),
                2000,
                1 << 30,
            ),
        ];
        for (name, s, cpu, mem) in cases {
            let r = pod_requests(&s, false);
            assert_eq!((r.milli_cpu, r.memory), (cpu, mem), "{name}");
        }
        let empty = spec(json!({"containers": [{"name": "a"}]}));
        assert!(pod_requests(&empty, false).is_zero());
        let nz = pod_requests(&empty, true);
        assert_eq!(
            (nz.milli_cpu, nz.memory),
            (DEFAULT_MILLI_CPU_REQUEST, DEFAULT_MEMORY_REQUEST)
        );
    }

    #[test]
    fn extended_resources_are_scalar() {
        let r = Resources::from_list(
            &[
                ("example.com/gpu".to_string(), Quantity("2".into())),
                ("pods".to_string(), Quantity("110".into())),
            ]
            .into_iter()
            .collect(),
        );
        assert_eq!(r.scalar.get("example.com/gpu"), Some(&2));
        assert_eq!(r.allowed_pods, 110);
    }
}
