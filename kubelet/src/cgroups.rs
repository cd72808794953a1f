//! QoS classes and the cgroup settings derived from them, as upstream's `qos` and `cm`
//! packages compute them: the pod cgroup parent (`<root>/kubepods/<qos>/pod<uid>`, cgroupfs
//! syntax because containerd runs with `SystemdCgroup = false`), CPU shares and CFS quota,
//! oom_score_adj, and removal of pod cgroups (containerd never removes them).

use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{Container, PodSpec};

/// Pod quality-of-service class (`status.qosClass`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QosClass {
    Guaranteed,
    Burstable,
    BestEffort,
}

impl QosClass {
    pub fn as_str(self) -> &'static str {
        match self {
            QosClass::Guaranteed => "Guaranteed",
            QosClass::Burstable => "Burstable",
            QosClass::BestEffort => "BestEffort",
        }
    }
}

fn quantity(c: &Container, limits: bool, name: &str) -> Option<i64> {
    let r = c.resources.as_ref()?;
    let list = if limits {
        r.limits.as_ref()
    } else {
        r.requests.as_ref()
    }?;
    let q = list.get(name)?;
    if name == "cpu" {
        apimachinery::quantity::milli_value(&q.0)
    } else {
        apimachinery::quantity::value(&q.0)
    }
}

/// A container's request, defaulting to its limit as the API server does.
pub fn request(c: &Container, name: &str) -> Option<i64> {
    quantity(c, false, name).or_else(|| quantity(c, true, name))
}

pub fn limit(c: &Container, name: &str) -> Option<i64> {
    quantity(c, true, name)
}

/// Upstream's `GetPodQOS`: Guaranteed when every container has cpu and memory limits equal to
/// its requests; BestEffort when no container requests or limits anything; else Burstable.
pub fn qos_class(spec: &PodSpec) -> QosClass {
    let all = spec
        .init_containers
        .iter()
        .flatten()
        .chain(spec.containers.iter());
    let mut any = false;
    let mut guaranteed = true;
    for c in all {
        for res in ["cpu", "memory"] {
            let (req, lim) = (request(c, res), limit(c, res));
            if req.is_some_and(|v| v > 0) || lim.is_some_and(|v| v > 0) {
                any = true;
            }
            if lim.is_none() || req != lim {
                guaranteed = false;
            }
        }
    }
    if !any {
        QosClass::BestEffort
    } else if guaranteed {
        QosClass::Guaranteed
    } else {
        QosClass::Burstable
    }
}

/// The pod's cgroup parent, cgroupfs syntax: `<root>/kubepods/burstable/pod<uid>`.
pub fn pod_cgroup_parent(root: &str, qos: QosClass, uid: &str) -> String {
    let root = root.trim_end_matches('/');
    match qos {
        QosClass::Guaranteed => format!("{root}/kubepods/pod{uid}"),
        QosClass::Burstable => format!("{root}/kubepods/burstable/pod{uid}"),
        QosClass::BestEffort => format!("{root}/kubepods/besteffort/pod{uid}"),
    }
}

/// CPU shares for a request in millicores (upstream `MilliCPUToShares`, min 2).
pub fn cpu_shares(milli: Option<i64>) -> i64 {
    match milli {
        None | Some(0) => 2,
        Some(m) => (m * 1024 / 1000).max(2),
    }
}

/// CFS period used with quotas (100 ms).
pub const CPU_PERIOD: i64 = 100_000;

/// CFS quota for a limit in millicores (upstream `MilliCPUToQuota`, min 1 ms).
pub fn cpu_quota(milli: Option<i64>) -> i64 {
    match milli {
        None | Some(0) => 0,
        Some(m) => (m * CPU_PERIOD / 1000).max(1000),
    }
}

/// Upstream's `GetContainerOOMScoreAdjust`. The runtime clamps it (`restrict_oom_score_adj`),
/// so negative values end as 0 on machines without CAP_SYS_RESOURCE.
pub fn oom_score_adj(qos: QosClass, c: &Container, memory_capacity: i64) -> i64 {
    match qos {
        QosClass::Guaranteed => -997,
        QosClass::BestEffort => 1000,
        QosClass::Burstable => {
            let req = request(c, "memory").unwrap_or(0);
            if memory_capacity <= 0 {
                return 999;
            }
            let adj = 1000 - (1000 * req) / memory_capacity;
            adj.clamp(3, 999)
        }
    }
}

/// The hierarchies a cgroup path exists in: every v1 controller mount plus the unified one.
fn hierarchies(base: &Path) -> Vec<PathBuf> {
    let Ok(rd) = std::fs::read_dir(base) else {
        return vec![];
    };
    rd.flatten()
        .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
        .map(|e| e.path())
        .collect()
}

/// Remove the pod's cgroup (and any leftover children) from every hierarchy under `base`
/// (normally `/sys/fs/cgroup`). Returns the number of directories removed. Busy cgroups are
/// left (they still hold processes) and retried by the next housekeeping pass.
pub fn remove_pod_cgroup(base: &Path, parent: &str) -> usize {
    let rel = parent.trim_start_matches('/');
    let mut removed = 0;
    for h in hierarchies(base) {
        let dir = h.join(rel);
        if dir.is_dir() {
            removed += rmdir_tree(&dir);
        }
    }
    removed
}

fn rmdir_tree(dir: &Path) -> usize {
    let mut n = 0;
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                n += rmdir_tree(&e.path());
            }
        }
    }
    if std::fs::remove_dir(dir).is_ok() {
        n += 1;
    }
    n
}

/// Pod uids that have a pod cgroup under `<root>/kubepods` in the first hierarchy found.
pub fn pod_cgroups(base: &Path, root: &str) -> Vec<(String, String)> {
    let root = root.trim_end_matches('/').trim_start_matches('/');
    let mut out = Vec::new();
    for h in hierarchies(base) {
        let kp = h.join(root).join("kubepods");
        if !kp.is_dir() {
            continue;
        }
        for (sub, prefix) in [
            ("", ""),
            ("burstable", "/burstable"),
            ("besteffort", "/besteffort"),
        ] {
            if let Ok(rd) = std::fs::read_dir(kp.join(sub)) {
                for e in rd.flatten() {
                    let name = e.file_name().to_string_lossy().to_string();
                    if let Some(uid) = name.strip_prefix("pod") {
                        let root_prefix = if root.is_empty() {
                            String::new()
                        } else {
                            format!("/{root}")
                        };
                        out.push((
                            uid.to_string(),
                            format!("{root_prefix}/kubepods{prefix}/{name}"),
                        ));
                    }
                }
            }
        }
        if !out.is_empty() {
            break;
        }
    }
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ResourceRequirements;
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

    fn c(req: &[(&str, &str)], lim: &[(&str, &str)]) -> Container {
        let list = |v: &[(&str, &str)]| {
            (!v.is_empty()).then(|| {
                v.iter()
                    .map(|(k, q)| (k.to_string(), Quantity(q.to_string())))
                    .collect()
            })
        };
        Container {
            name: "c".into(),
            resources: Some(ResourceRequirements {
                requests: list(req),
                limits: list(lim),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn spec(cs: Vec<Container>) -> PodSpec {
        PodSpec {
            containers: cs,
            ..Default::default()
        }
    }

    #[test]
    fn qos_classes() {
        let cases = [
            (vec![c(&[], &[])], QosClass::BestEffort),
            (vec![c(&[("cpu", "100m")], &[])], QosClass::Burstable),
            (
                vec![c(&[], &[("cpu", "1"), ("memory", "1Gi")])],
                QosClass::Guaranteed,
            ),
            (
                vec![c(
                    &[("cpu", "1"), ("memory", "1Gi")],
                    &[("cpu", "1"), ("memory", "1Gi")],
                )],
                QosClass::Guaranteed,
            ),
            (
                vec![c(
                    &[("cpu", "500m"), ("memory", "1Gi")],
                    &[("cpu", "1"), ("memory", "1Gi")],
                )],
                QosClass::Burstable,
            ),
            (
                vec![c(&[], &[("cpu", "1"), ("memory", "1Gi")]), c(&[], &[])],
                QosClass::Burstable,
            ),
        ];
        for (cs, want) in cases {
            assert_eq!(qos_class(&spec(cs.clone())), want, "{cs:?}");
        }
    }

    #[test]
    fn cgroup_values() {
        assert_eq!(cpu_shares(None), 2);
        assert_eq!(cpu_shares(Some(250)), 256);
        assert_eq!(cpu_quota(Some(500)), 50_000);
        assert_eq!(cpu_quota(Some(1)), 1000);
        assert_eq!(cpu_quota(None), 0);
        assert_eq!(
            pod_cgroup_parent("/", QosClass::BestEffort, "u1"),
            "/kubepods/besteffort/podu1"
        );
        assert_eq!(
            pod_cgroup_parent("/nodeA", QosClass::Guaranteed, "u1"),
            "/nodeA/kubepods/podu1"
        );
        let b = c(&[("memory", "512Mi")], &[]);
        assert_eq!(oom_score_adj(QosClass::Burstable, &b, 1 << 30), 500);
        assert_eq!(oom_score_adj(QosClass::BestEffort, &b, 1 << 30), 1000);
    }

    #[test]
    fn finds_and_removes_pod_cgroups() {
        let d = tempfile::tempdir().unwrap();
        for ctrl in ["memory", "cpu"] {
            std::fs::create_dir_all(d.path().join(ctrl).join("kubepods/besteffort/podabc/ctr"))
                .unwrap();
        }
        let found = pod_cgroups(d.path(), "/");
        assert_eq!(
            found,
            vec![("abc".to_string(), "/kubepods/besteffort/podabc".to_string())]
        );
        assert_eq!(
            remove_pod_cgroup(d.path(), "/kubepods/besteffort/podabc"),
            4
        );
        assert!(pod_cgroups(d.path(), "/").is_empty());
    }
}
